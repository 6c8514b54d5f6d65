"""OSCQuery against a running server: real HTTP requests, a real websocket client, a real zeroconf browser."""

import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import pytest
from pydantic import ValidationError
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fixtures_live import wait_until
from live.control.oscquery import OSC_SERVICE, OSCJSON_SERVICE, POLL_HZ, OscQuerySection, OscQueryServer
from live.errors import LiveError
from live.params import Event, Param, ParamTree

OSC_PORT = 9123


def make_tree() -> ParamTree:
    return ParamTree(
        [
            Param("/video/blend", "float", 0.0, doc="crossfade from style A (0) to style B (1)"),
            Param("/video/style_a", "enum", "ink", choices=("ink", "neon", "pop"), doc="style in slot A"),
            Param("/synth/timbre/a", "float", 0.0, -1.0, 1.0, doc="timbre axis 0", clip="wrap"),
            Param("/synth/cutoff", "float", 1000.0, 20.0, 20000.0, unit="Hz", doc="filter cutoff"),
            Param("/synth/auto", "bool", True, doc="play the built-in arpeggio"),
            Param("/latent/seed", "int", 0, 0, 1023, doc="base point"),
        ],
        [Event("/synth/note", (("note", "int", 0, 127), ("velocity", "float", 0.0, 1.0)), doc="play a note")],
    )


@pytest.fixture
def server():
    srv = OscQueryServer(make_tree(), osc_port=OSC_PORT, port=0, zeroconf=False)
    srv.open()
    yield srv
    srv.close()


@pytest.fixture
def writable():
    """A server whose show allows OSC writes over the websocket (`[oscquery] ws_writes = true`)."""
    srv = OscQueryServer(make_tree(), osc_port=OSC_PORT, port=0, zeroconf=False, ws_writes=True)
    srv.open()
    yield srv
    srv.close()


def get(srv: OscQueryServer, target: str):
    """(status, parsed JSON or None) of one real HTTP GET."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}{target}", timeout=5) as reply:
            body = reply.read()
            assert not body or reply.headers["Content-Type"] == "application/json"
            return reply.status, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        return err.code, None


def listen(ws, srv: OscQueryServer, path: str, command: str = "LISTEN") -> None:
    before = srv.stats()["listening"]
    ws.send(json.dumps({"COMMAND": command, "DATA": path}))
    assert wait_until(lambda: srv.stats()["listening"] == before + (1 if command == "LISTEN" else -1))


def recv_osc(ws, timeout=2.0) -> tuple[str, list]:
    data = ws.recv(timeout=timeout)
    assert isinstance(data, bytes), f"expected a binary OSC message, got {data!r}"
    message = OscMessage(data)
    return message.address, list(message.params)


def osc(address: str, *args) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def walk(node):
    yield node
    for child in node.get("CONTENTS", {}).values():
        yield from walk(child)


# --- HTTP --------------------------------------------------------------------------------------------------------


def test_root_is_the_whole_tree_generated_from_the_params(server):
    status, root = get(server, "/")
    assert status == 200
    assert root["FULL_PATH"] == "/" and "DESCRIPTION" in root
    assert sorted(root["CONTENTS"]) == ["latent", "synth", "video"]
    timbre = root["CONTENTS"]["synth"]["CONTENTS"]["timbre"]
    assert timbre["FULL_PATH"] == "/synth/timbre" and "DESCRIPTION" in timbre and "a" in timbre["CONTENTS"]
    leaves = {}
    for node in walk(root):
        assert {"FULL_PATH", "DESCRIPTION"} <= node.keys()
        if "CONTENTS" in node:
            assert "TYPE" not in node
        else:
            assert {"TYPE", "RANGE", "ACCESS"} <= node.keys()
            leaves[node["FULL_PATH"]] = node
    assert set(leaves) == set(server.tree.params) | set(server.tree.events)
    for address, param in server.tree.params.items():
        assert leaves[address]["ACCESS"] == 3
        assert leaves[address]["VALUE"] == [param.default]
        assert leaves[address]["DESCRIPTION"] == param.doc


def test_leaf_types_ranges_units_and_event(server):
    _, root = get(server, "/")
    synth = root["CONTENTS"]["synth"]["CONTENTS"]
    assert synth["cutoff"] == {
        "FULL_PATH": "/synth/cutoff", "TYPE": "f", "VALUE": [1000.0], "ACCESS": 3, "DESCRIPTION": "filter cutoff",
        "RANGE": [{"MIN": 20.0, "MAX": 20000.0}], "CLIPMODE": ["both"], "UNIT": ["Hz"],
    }
    assert "UNIT" not in synth["timbre"]["CONTENTS"]["a"]
    assert synth["timbre"]["CONTENTS"]["a"]["CLIPMODE"] == ["none"]  # wraps, so not clipped
    assert synth["auto"]["TYPE"] == "T" and synth["auto"]["VALUE"] == [True]
    seed = root["CONTENTS"]["latent"]["CONTENTS"]["seed"]
    assert seed["TYPE"] == "i" and seed["RANGE"] == [{"MIN": 0, "MAX": 1023}] and seed["VALUE"] == [0]
    style = root["CONTENTS"]["video"]["CONTENTS"]["style_a"]
    assert style["TYPE"] == "s" and style["RANGE"] == [{"VALS": ["ink", "neon", "pop"]}] and style["VALUE"] == ["ink"]
    note = synth["note"]
    assert note["TYPE"] == "if" and note["ACCESS"] == 2 and "VALUE" not in note
    assert note["RANGE"] == [{"MIN": 0, "MAX": 127}, {"MIN": 0.0, "MAX": 1.0}]
    assert note["DESCRIPTION"] == "play a note"


def test_node_and_attribute_queries_read_current_values(server):
    status, node = get(server, "/video/blend")
    assert status == 200 and node["FULL_PATH"] == "/video/blend" and node["VALUE"] == [0.0]
    server.tree.set("/video/blend", 0.75)
    server.tree.set("/video/style_a", "neon")
    assert get(server, "/video/blend?VALUE") == (200, {"VALUE": [0.75]})
    assert get(server, "/video/style_a?VALUE") == (200, {"VALUE": ["neon"]})
    assert get(server, "/video/blend?TYPE") == (200, {"TYPE": "f"})
    assert get(server, "/video/blend?RANGE") == (200, {"RANGE": [{"MIN": 0.0, "MAX": 1.0}]})
    assert get(server, "/video/blend?ACCESS") == (200, {"ACCESS": 3})
    assert get(server, "/video/blend/?DESCRIPTION")[1] == {"DESCRIPTION": "crossfade from style A (0) to style B (1)"}
    status, video = get(server, "/video")
    assert status == 200 and sorted(video["CONTENTS"]) == ["blend", "style_a"]
    assert video["CONTENTS"]["blend"]["VALUE"] == [0.75]
    assert get(server, "/synth/note?VALUE") == (204, None)  # write-only: no value to give
    assert get(server, "/video/blend?UNIT") == (204, None)  # a known attribute this node lacks
    assert get(server, "/video/blend?NONSENSE")[0] == 400
    assert get(server, "/video/nothing")[0] == 404
    assert get(server, "/nothing/at/all?VALUE")[0] == 404
    assert server.stats()["http_errors"] == 5


def test_host_info(server):
    status, info = get(server, "/?HOST_INFO")
    assert status == 200
    assert info["NAME"] == "live"
    assert info["OSC_PORT"] == OSC_PORT and info["OSC_TRANSPORT"] == "UDP"
    assert info["WS_PORT"] == server.port and info["WS_IP"] == "127.0.0.1"
    extensions = info["EXTENSIONS"]
    for name in ("ACCESS", "VALUE", "RANGE", "DESCRIPTION", "UNIT", "LISTEN", "PATH_ADDED", "PATH_REMOVED",
                 "PATH_CHANGED"):
        assert extensions[name] is True
    assert extensions["PATH_RENAMED"] is False


def test_port_zero_reports_the_bound_port_and_a_taken_port_is_a_clear_error(server):
    assert server.port > 0
    other = OscQueryServer(server.tree, OSC_PORT, port=server.port, zeroconf=False)
    with pytest.raises(LiveError) as err:
        other.open()
    assert str(server.port) in str(err.value) and "[oscquery] port" in str(err.value)
    other.close()
    fresh = OscQueryServer(server.tree, OSC_PORT, port=0, zeroconf=False)
    try:
        line = fresh.open()
        assert line == f"OSCQuery: http://127.0.0.1:{fresh.port} (ws on the same port)"
    finally:
        fresh.close()


# --- websocket ---------------------------------------------------------------------------------------------------


def test_listen_streams_changes_as_osc_and_ignore_stops_them(server):
    with connect(f"ws://127.0.0.1:{server.port}") as ws:
        listen(ws, server, "/video/blend")
        listen(ws, server, "/synth/auto")
        listen(ws, server, "/video/style_a")
        server.tree.set("/video/blend", 0.5)
        assert recv_osc(ws) == ("/video/blend", [0.5])
        server.tree.set("/synth/auto", False)
        assert recv_osc(ws) == ("/synth/auto", [False])
        server.tree.set("/video/style_a", "pop")
        assert recv_osc(ws) == ("/video/style_a", ["pop"])
        server.tree.set("/latent/seed", 7)  # not listened to
        listen(ws, server, "/video/blend", "IGNORE")
        server.tree.set("/video/blend", 0.25)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        assert server.stats()["sent"] == 3


def test_burst_of_writes_is_coalesced_to_a_few_messages_ending_at_the_final_value(server):
    with connect(f"ws://127.0.0.1:{server.port}") as ws:
        listen(ws, server, "/video/blend")
        start = time.monotonic()
        for i in range(1, 10001):
            server.tree.set("/video/blend", i / 10000)
            if i % 20 == 0:
                time.sleep(0.0005)  # let the server run mid-burst, as a real writer thread would
        received = []
        while not received or received[-1] != 1.0:
            address, args = recv_osc(ws)
            assert address == "/video/blend"
            received.append(args[0])
        elapsed = time.monotonic() - start
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
    assert received == sorted(received)
    assert 1 <= len(received) <= POLL_HZ * elapsed + 2, (len(received), elapsed)


def test_a_reloaded_tree_tells_clients_which_paths_came_went_or_changed(server):
    tree = server.tree
    with connect(f"ws://127.0.0.1:{server.port}") as ws:
        listen(ws, server, "/latent/seed")
        listen(ws, server, "/video/blend")
        params = [p for p in tree.params.values() if p.address not in ("/latent/seed", "/synth/cutoff")]
        params.append(Param("/synth/cutoff", "float", 1000.0, 20.0, 8000.0, unit="Hz"))  # a narrower range
        params.append(Param("/mod/wobble/depth", "float", 0.0))
        tree.reconfigure(params, tree.events.values())  # as a saved show file does
        commands = [json.loads(ws.recv(timeout=2)) for _ in range(3)]
        assert sorted((c["COMMAND"], c["DATA"]) for c in commands) == [
            ("PATH_ADDED", "/mod/wobble/depth"), ("PATH_CHANGED", "/synth/cutoff"), ("PATH_REMOVED", "/latent/seed")]
        assert server.stats()["listening"] == 1  # the removed path is no longer streamed; the others still are
        tree.set("/video/blend", 0.75)
        assert recv_osc(ws) == ("/video/blend", [0.75])
        assert get(server, "/mod/wobble/depth")[0] == 200 and get(server, "/latent/seed")[0] == 404
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)


def test_client_writes_apply_to_the_tree_and_are_not_echoed_to_the_writer(writable):
    server = writable
    with connect(f"ws://127.0.0.1:{server.port}") as writer, connect(f"ws://127.0.0.1:{server.port}") as watcher:
        listen(writer, server, "/video/blend")
        listen(watcher, server, "/video/blend")
        notes = server.tree.listen("/synth/")
        writer.send(osc("/video/blend", 0.4))
        writer.send(osc("/synth/note", 60, 0.9))
        assert wait_until(lambda: server.stats()["applied"] == 2)
        assert server.tree.get("/video/blend") == pytest.approx(0.4)
        host, port = writer.local_address[:2]
        assert server.tree.written_by["/video/blend"] == f"oscquery:{host}:{port}"
        assert list(notes) == [("/synth/note", (60, pytest.approx(0.9)))]
        address, args = recv_osc(watcher)
        assert address == "/video/blend" and args[0] == pytest.approx(0.4)
        with pytest.raises(TimeoutError):
            writer.recv(timeout=0.3)


def test_malformed_input_is_counted_not_fatal(writable):
    server = writable
    with connect(f"ws://127.0.0.1:{server.port}") as ws:
        ws.send(b"\x00\x01garbage")
        ws.send(osc("/video/blend", 0.5)[:-2])  # truncated float
        ws.send(osc("/no/such/address", 1.0))
        ws.send(osc("/video/style_a", "nope"))
        ws.send("not json")
        ws.send(json.dumps({"COMMAND": "EXPLODE", "DATA": "/video/blend"}))
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/synth/note"}))  # events have no value
        assert wait_until(lambda: server.stats()["bad_command"] == 2 and server.stats()["unknown"] == 2)
        stats = server.stats()
        assert (stats["malformed"], stats["bad_value"], stats["applied"]) == (2, 1, 0)
        assert server.tree.get("/video/blend") == 0.0
        listen(ws, server, "/video/blend")  # the connection still works
        server.tree.set("/video/blend", 0.9)
        assert recv_osc(ws) == ("/video/blend", [pytest.approx(0.9)])


def test_clients_beyond_the_limit_are_turned_away():
    srv = OscQueryServer(make_tree(), OSC_PORT, port=0, zeroconf=False, max_clients=2)
    srv.open()
    try:
        with connect(f"ws://127.0.0.1:{srv.port}") as a, connect(f"ws://127.0.0.1:{srv.port}") as b:
            assert wait_until(lambda: srv.stats()["ws_clients"] == 2)
            with connect(f"ws://127.0.0.1:{srv.port}") as c:
                with pytest.raises(ConnectionClosed) as closed:
                    c.recv(timeout=2)
                assert closed.value.rcvd.code == 1013
            assert srv.stats()["ws_rejected"] == 1
            a.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/video/blend"}))
            b.send(json.dumps({"COMMAND": "LISTEN", "DATA": "/video/blend"}))
            assert wait_until(lambda: srv.stats()["listening"] == 2)
    finally:
        srv.close()


def test_close_leaves_no_threads_and_is_idempotent():
    before = set(threading.enumerate())
    srv = OscQueryServer(make_tree(), OSC_PORT, port=0, zeroconf=False)
    srv.open()
    # the client's own keepalive thread would end a moment after the client closes: it is not the server's to join
    with connect(f"ws://127.0.0.1:{srv.port}", ping_interval=None) as ws:
        listen(ws, srv, "/video/blend")
        srv.close()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=2)
    srv.close()
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/", timeout=1)


# --- zeroconf ----------------------------------------------------------------------------------------------------


def multicast_loops_back() -> bool:
    """Whether a multicast datagram sent here comes back here: what two mDNS responders on one machine need."""
    group = "224.0.0.251"
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind(("", 0))
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                      struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("0.0.0.0")))
        rx.settimeout(1.0)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.sendto(b"probe", (group, rx.getsockname()[1]))
        return rx.recv(16) == b"probe"
    except OSError:
        return False
    finally:
        rx.close()
        tx.close()


def test_zeroconf_advertises_both_services_and_withdraws_them_on_close():
    from zeroconf import Zeroconf

    name = f"live-test-{time.monotonic_ns() % 100000}"
    srv = OscQueryServer(make_tree(), OSC_PORT, port=0, name=name, zeroconf=True)
    line = srv.open()
    try:
        assert "zeroconf" in line
        assert wait_until(lambda: srv.stats()["zeroconf"] != "registering", timeout=10)
        state = srv.stats()["zeroconf"]
        oscjson = udp = None
        if state == "registered":
            browser = Zeroconf()
            try:
                oscjson = browser.get_service_info(OSCJSON_SERVICE, f"{name}.{OSCJSON_SERVICE}", timeout=3000)
                udp = browser.get_service_info(OSC_SERVICE, f"{name}.{OSC_SERVICE}", timeout=3000)
            finally:
                browser.close()
        if (state != "registered" or oscjson is None) and not multicast_loops_back():
            pytest.skip(f"multicast does not loop back on this machine, so no mDNS browser here can see the "
                        f"advertisement (server: zeroconf {state})")
        assert state == "registered"
        assert oscjson is not None and oscjson.port == srv.port
        assert oscjson.parsed_addresses() == ["127.0.0.1"]
        assert udp is not None and udp.port == OSC_PORT
    finally:
        srv.close()
    assert srv.stats()["zeroconf"] == "closed"
    browser = Zeroconf()
    try:
        assert browser.get_service_info(OSCJSON_SERVICE, f"{name}.{OSCJSON_SERVICE}", timeout=1000) is None
    finally:
        browser.close()


def test_zeroconf_off_starts_no_responder(server):
    assert server.stats()["zeroconf"] == "off"
    assert server._aiozc is None


# --- config ------------------------------------------------------------------------------------------------------


def test_config_section_defaults_and_rejects_unknown_keys():
    section = OscQuerySection()
    assert (section.enabled, section.host, section.port, section.name, section.zeroconf) == \
        (True, "127.0.0.1", 9001, "live", True)
    assert OscQuerySection(port=0, host="0.0.0.0").port == 0
    with pytest.raises(ValidationError):
        OscQuerySection(prot=9001)
