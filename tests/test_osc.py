import shutil
import socket
import subprocess
import time

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from live.control.osc import OscServer
from live.errors import LiveError
from live.params import Event, Param, ParamTree


@pytest.fixture
def server():
    tree = ParamTree([Param("/video/blend", "float", 0.0), Param("/video/strength", "float", 1.0),
                      Param("/video/style_a", "enum", "ink", choices=("ink", "neon"))],
                     [Event("/synth/note", (("note", "int", 0, 127), ("velocity", "float", 0.0, 1.0)))])
    srv = OscServer(tree, "127.0.0.1", 0)
    srv.open()
    yield srv
    srv.close()


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_python_osc_client_sets_parameters_and_events(server):
    notes = server.tree.listen("/synth/")
    client = SimpleUDPClient("127.0.0.1", server.port)
    client.send_message("/video/blend", 0.75)
    client.send_message("/video/style_a", "neon")
    client.send_message("/synth/note", [60, 0.9])
    assert wait_until(lambda: server.counts["applied"] == 3)
    assert server.tree.get("/video/blend") == 0.75
    assert server.tree.get("/video/style_a") == "neon"
    assert list(notes) == [("/synth/note", (60, pytest.approx(0.9)))]


def test_liblo_oscsend_sets_a_parameter(server):
    oscsend = shutil.which("oscsend")
    assert oscsend, "liblo's oscsend is missing (make test installs liblo-tools)"
    subprocess.run([oscsend, "localhost", str(server.port), "/video/strength", "f", "0.25"], check=True)
    assert wait_until(lambda: server.tree.get("/video/strength") == 0.25)


def test_bundle_applies_all_messages(server):
    bundle = OscBundleBuilder(IMMEDIATELY)
    for address, value in (("/video/blend", 0.3), ("/video/strength", 0.6)):
        msg = OscMessageBuilder(address)
        msg.add_arg(value)
        bundle.add_content(msg.build())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(bundle.build().dgram, ("127.0.0.1", server.port))
    assert wait_until(lambda: server.tree.get("/video/strength") == pytest.approx(0.6))
    assert server.tree.get("/video/blend") == pytest.approx(0.3)


def test_bad_packets_are_counted_and_the_server_keeps_going(server):
    client = SimpleUDPClient("127.0.0.1", server.port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        address = b"/video/blend\x00\x00\x00\x00"
        for junk in (b"\x00\x01garbage", address + b",f\x00\x00", address + b",f\x00\x00\x01", b"#bundle\x00\xff"):
            s.sendto(junk, ("127.0.0.1", server.port))
    client.send_message("/no/such", 1.0)
    client.send_message("/video/blend", "loud")
    client.send_message("/video/blend", 0.5)
    assert wait_until(lambda: server.tree.get("/video/blend") == 0.5)
    assert server.counts["malformed"] == 4
    assert server.counts["unknown"] == 1 and server.counts["bad_value"] == 1
    assert "/video/blend" in server.last_problem or "/no/such" in server.last_problem


def test_port_in_use_is_a_clear_error(server):
    other = OscServer(server.tree, "127.0.0.1", server.port)
    with pytest.raises(LiveError) as err:
        other.open()
    assert str(server.port) in str(err.value) and "[osc] port" in str(err.value)
