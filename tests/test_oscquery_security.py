"""OSCQuery refuses what a web page could do to a show: real sockets, forged Host and Origin headers, real writes.

A browser page from any site can reach 127.0.0.1; these tests are that page (a foreign Origin), a DNS-rebinding
page (its own domain as Host on a connection to 127.0.0.1) and the native clients that must keep working (no
Origin at all).
"""

import http.client
import json
import socket
from contextlib import closing

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from fixtures_live import wait_until
from live.control.oscquery import OscQuerySection, OscQueryServer
from live.errors import LiveError
from live.show import load_show
from test_oscquery import OSC_PORT, listen, make_tree, osc, recv_osc

PAGE = "http://127.0.0.1:8080"  # the one web page the shows below allow


def serve(**section) -> OscQueryServer:
    """A server opened from a show's [oscquery] table, on a free port, not announced."""
    srv = OscQueryServer.from_section(make_tree(), OscQuerySection(port=0, zeroconf=False, **section), OSC_PORT)
    srv.open()
    return srv


@pytest.fixture
def server():
    srv = serve()
    yield srv
    srv.close()


@pytest.fixture
def allowing():
    srv = serve(allow_origins=[PAGE])
    yield srv
    srv.close()


def fetch(port: int, target: str = "/video/blend?VALUE", host: str | None = None, origin: str | None = None,
          address: str = "127.0.0.1") -> tuple[int, http.client.HTTPMessage, object]:
    """(status, headers, parsed JSON) of one GET sent to address:port with exactly these Host and Origin headers."""
    with closing(http.client.HTTPConnection(address, port, timeout=5)) as conn:
        conn.putrequest("GET", target, skip_host=True)
        conn.putheader("Host", f"{address}:{port}" if host is None else host)
        if origin is not None:
            conn.putheader("Origin", origin)
        conn.endheaders()
        reply = conn.getresponse()
        body = reply.read()
        return reply.status, reply.headers, json.loads(body) if body else None


def ws(port: int, host: str = "127.0.0.1", origin: str | None = None) -> ClientConnection:
    """A websocket to 127.0.0.1:port whose handshake names `host` as Host: what a page whose domain was rebound
    to 127.0.0.1 sends."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return connect(f"ws://{host}:{port}", sock=sock, origin=origin, open_timeout=5)
    except BaseException:
        sock.close()
        raise


def refused(port: int, **kwargs: str) -> int:
    """The HTTP status a refused websocket handshake got."""
    with pytest.raises(InvalidStatus) as err:
        ws(port, **kwargs).close()
    return err.value.response.status_code


# --- Host --------------------------------------------------------------------------------------------------------


def test_a_forged_host_is_refused_over_http_and_websocket(server):
    port = server.port
    for host in (f"rebind.evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", f"evil@127.0.0.1:{port}",
                 f"127.0.0.2:{port}", ""):
        status, headers, body = fetch(port, host=host)
        assert status == 403, host
        assert "Host" in body["ERROR"] and "Access-Control-Allow-Origin" not in headers
    assert refused(port, host="rebind.evil.example") == 403
    stats = server.stats()
    assert stats["refused_host"] == 7 and stats["ws_rejected"] == 1 and stats["ws_accepted"] == 0
    assert stats["http_errors"] == 6
    assert "does not name this server" in server.last_problem


def test_loopback_names_with_the_right_port_are_accepted(server):
    server.tree.set("/video/blend", 0.25)
    port = server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost.:{port}", f"[::1]:{port}"):
        assert fetch(port, host=host)[::2] == (200, {"VALUE": [0.25]}), host
    with ws(port, host="localhost") as client:
        listen(client, server, "/video/blend")
        server.tree.set("/video/blend", 0.5)
        assert recv_osc(client) == ("/video/blend", [0.5])
    assert server.stats()["refused_host"] == 0


def test_a_wildcard_bind_accepts_this_machines_names_and_addresses_only():
    srv = OscQueryServer(make_tree(), OSC_PORT, "0.0.0.0", 0, zeroconf=False)
    srv.open()
    try:
        port = srv.port
        assert fetch(port, host=f"{socket.gethostname()}:{port}")[0] == 200
        assert fetch(port, host=f"localhost:{port}")[0] == 200
        outward = [ip for ip in _own_ipv4() if not ip.startswith("127.")]
        for ip in outward[:1]:  # an address other machines reach it on, asked as they would
            assert fetch(port, address=ip)[0] == 200
        assert fetch(port, host=f"rebind.evil.example:{port}")[0] == 403
        assert fetch(port, host=f"192.0.2.254:{port}")[0] == 403  # TEST-NET: never an address of this machine
        assert srv.stats()["refused_host"] == 2
    finally:
        srv.close()


def _own_ipv4() -> list[str]:
    import ifaddr

    return [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4]


# --- Origin and CORS ---------------------------------------------------------------------------------------------


def test_a_foreign_origin_is_refused_and_gets_no_cors(server):
    port = server.port
    for origin in ("http://evil.example", "null", PAGE):  # nothing is allowed by default, not even a local page
        status, headers, body = fetch(port, origin=origin)
        assert status == 403 and "Origin" in body["ERROR"]
        assert "Access-Control-Allow-Origin" not in headers
    assert refused(port, origin="http://evil.example") == 403
    stats = server.stats()
    assert stats["refused_origin"] == 4 and stats["ws_rejected"] == 1 and stats["ws_accepted"] == 0
    assert "allow_origins" in server.last_problem


def test_no_origin_is_a_native_client_and_gets_no_cors(server):
    status, headers, body = fetch(server.port)
    assert (status, body) == (200, {"VALUE": [0.0]})
    assert "Access-Control-Allow-Origin" not in headers
    with ws(server.port) as client:
        listen(client, server, "/video/blend")
    assert server.stats()["ws_accepted"] == 1


def test_an_allowed_origin_works_and_is_echoed_never_a_wildcard(allowing):
    port = allowing.port
    status, headers, body = fetch(port, "/?HOST_INFO", origin=PAGE)
    assert status == 200 and body["EXTENSIONS"]["LISTEN"] is True and body["OSC_PORT"] == OSC_PORT
    assert headers.get_all("Access-Control-Allow-Origin") == [PAGE]
    assert "Origin" in headers["Vary"]
    status, headers, _ = fetch(port, "/nothing", origin=PAGE)  # errors too: the page may read why
    assert status == 404 and headers["Access-Control-Allow-Origin"] == PAGE
    for other in ("http://127.0.0.1:8081", "https://127.0.0.1:8080", "http://evil.example"):
        status, headers, _ = fetch(port, origin=other)
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
    assert refused(port, origin="http://127.0.0.1:8081") == 403
    with ws(port, origin=PAGE) as client:
        listen(client, allowing, "/video/blend")
        allowing.tree.set("/video/blend", 0.75)
        assert recv_osc(client) == ("/video/blend", [0.75])
    assert allowing.stats()["refused_origin"] == 4


# --- websocket writes --------------------------------------------------------------------------------------------


def test_websocket_writes_are_ignored_and_counted_by_default(allowing):
    notes = allowing.tree.listen("/synth/")
    with ws(allowing.port, origin=PAGE) as page, ws(allowing.port) as native:
        listen(page, allowing, "/video/blend")
        page.send(osc("/video/blend", 1.0))  # the blackout a web page must not cause
        native.send(osc("/video/blend", 0.5))
        page.send(osc("/synth/note", 60, 0.9))
        assert wait_until(lambda: allowing.stats()["refused_writes"] == 3)
        assert fetch(allowing.port)[::2] == (200, {"VALUE": [0.0]})
        assert allowing.stats()["applied"] == 0 and list(notes) == []
        assert "ws_writes" in allowing.last_problem
        allowing.tree.set("/video/blend", 0.25)  # streaming out still works on the same connection
        assert recv_osc(page) == ("/video/blend", [0.25])


def test_websocket_writes_apply_when_the_show_allows_them():
    srv = serve(ws_writes=True)
    try:
        with ws(srv.port) as client:
            client.send(osc("/video/blend", 0.5))
            assert wait_until(lambda: srv.stats()["applied"] == 1)
        assert fetch(srv.port)[::2] == (200, {"VALUE": [0.5]})
        assert srv.stats()["refused_writes"] == 0
    finally:
        srv.close()


# --- settings ----------------------------------------------------------------------------------------------------


def test_defaults_are_closed_and_origins_are_compared_as_browsers_send_them():
    section = OscQuerySection()
    assert section.allow_origins == [] and section.ws_writes is False
    assert OscQuerySection(allow_origins=["HTTP://Stage.Example:80", "https://[::1]:443", "http://x:8080"]
                           ).allow_origins == ["http://stage.example", "https://[::1]", "http://x:8080"]


@pytest.mark.parametrize("entry, says", [("*", "every web page"), ("null", "file://"),
                                         ("http://127.0.0.1:8080/", "no path"), ("127.0.0.1:8080", "scheme://"),
                                         ("http://*.example", "scheme://")])
def test_a_bad_origin_in_the_show_names_the_key_and_the_fix(tmp_path, entry, says):
    show = tmp_path / "show.toml"
    show.write_text(f"[oscquery]\nallow_origins = [{json.dumps(entry)}]\n")
    with pytest.raises(LiveError) as err:
        load_show(show)
    assert "[oscquery] allow_origins" in str(err.value) and says in str(err.value) and err.value.fix
    with pytest.raises(LiveError) as err:
        OscQueryServer(make_tree(), OSC_PORT, port=0, zeroconf=False, allow_origins=[entry])
    assert "[oscquery] allow_origins" in err.value.what and "allow_origins" in err.value.fix
