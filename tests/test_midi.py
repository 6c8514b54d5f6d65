"""MIDI control on real ports: JACK MIDI (python-rtmidi's JACK API on the dummy JACK server) with a virtual port
as the controller and another as the device that shows feedback. Nothing is mocked."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
import time

import pytest
import rtmidi
from pydantic import ValidationError

from fixtures_midi import JACK, Controller, Monitor, StandInClock, controller, monitor, unique  # noqa: F401
from fixtures_audio import JACK_START_TIMEOUT_S
from fixtures_live import wait_until
from live.control.midi import MidiControl, MidiMap, MidiSection
from live.clock_offset import CREEP_S_PER_S as OFFSET_CREEP
from live.control.midi_in import ArrivalClock
from live.control.midi_map import bend_to_normal, encode_ticks, normal_to_bend, relative_ticks
from live.control.tempo import Clock
from live.errors import LiveError
from live.params import Event, Param, ParamTree


def make_tree() -> ParamTree:
    return ParamTree(
        [Param("/a", "float", 0.0), Param("/b", "float", 0.0, -1.0, 1.0), Param("/c", "float", 0.0),
         Param("/i", "int", 0, 0, 1023), Param("/e", "enum", "x", 0, 2, choices=("x", "y", "z")),
         Param("/t", "bool", False), Param("/w", "float", 0.0, clip="wrap")],
        [Event("/synth/note", (("note", "int", 0, 127), ("velocity", "float", 0.0, 1.0)))])


@pytest.fixture
def make(jack_server: str):
    """MidiControl on JACK under a client name of its own, polling ports every 0.2 s; closed after the test."""
    made: list[MidiControl] = []

    def factory(tree: ParamTree, section: MidiSection, **kw) -> MidiControl:
        kw.setdefault("api", "jack")
        kw.setdefault("client_name", unique("lv"))
        kw.setdefault("poll_s", 0.2)
        made.append(MidiControl(tree, section, **kw))
        return made[-1]

    yield factory
    for ctl in made:
        ctl.close()


def deliver(ctl: MidiControl, controller: Controller, *messages: list[int]) -> None:
    """Send messages and wait until the module has taken every one of them in."""
    before = ctl.counts["in"]
    for message in messages:
        controller.send(*message)
    assert wait_until(lambda: ctl.counts["in"] >= before + len(messages)), ctl.stats()


def cc(channel: int, number: int, value: int) -> list[int]:
    return [0xB0 | (channel - 1), number, value]


PERIOD_S = 128 / 48000  # the test JACK server's period: MIDI moves between clients once per cycle
HOLD_S = 0.1  # how long a test keeps the midi-in thread from draining


def test_cc_pitch_bend_notes_and_clock_reach_the_tree(make, controller: Controller) -> None:
    tree, clock = make_tree(), StandInClock()
    notes = tree.listen("/synth/")
    ctl = make(tree, MidiSection(inputs=[controller.client.upper()], takeover="none", map=[
        MidiMap(param="/a", kind="cc", channel=1, number=7),
        MidiMap(param="/b", kind="pitchbend", channel=2)]), clock=clock)
    ctl.open()
    assert ctl.stats()["inputs"] == [f"{controller.client}:knobs"]  # found by a case-insensitive prefix

    deliver(ctl, controller, cc(1, 7, 100))
    assert tree.get("/a") == pytest.approx(100 / 127)
    assert tree.written_by["/a"] == f"midi:{controller.client}:knobs"
    deliver(ctl, controller, cc(3, 7, 5))  # another channel: not this map
    assert tree.get("/a") == pytest.approx(100 / 127)

    deliver(ctl, controller, [0xE1, 0x00, 0x40])  # pitch bend at rest (8192) on channel 2
    assert tree.get("/b") == 0.0
    deliver(ctl, controller, [0xE1, 0x7F, 0x7F])
    assert tree.get("/b") == 1.0
    deliver(ctl, controller, [0xE1, 0x00, 0x00])
    assert tree.get("/b") == -1.0

    deliver(ctl, controller, [0x90, 60, 127], [0x80, 60, 64], [0x95, 61, 0], [0x9F, 62, 1])
    assert [args for _, args in notes] == [(60, 1.0), (60, 0.0), (61, 0.0), (62, pytest.approx(1 / 127))]

    deliver(ctl, controller, [0xF8], [0xF8], [0xF8], [0xFA], [0xF8], [0xFC], [0xFB])
    assert [kind for kind, _ in clock.calls] == ["clock", "clock", "clock", "start", "clock", "stop", "start"]
    times = [t for _, t in clock.calls if t is not None]
    assert times == sorted(times)

    deliver(ctl, controller, cc(1, 8, 1), [0xC0, 5])  # an unmapped CC and a program change
    stats = ctl.stats()
    assert (stats["in"], stats["clock"], stats["errors"]) == (18, 7, 0)
    assert stats["applied"] == 8 and stats["unmapped"] == 3, stats


def test_14bit_pairs_nrpn_and_relative_encoders(make, controller: Controller) -> None:
    tree = make_tree()
    ctl = make(tree, MidiSection(inputs=[controller.client], takeover="none", map=[
        MidiMap(param="/a", kind="cc14", channel=1, number=1),
        MidiMap(param="/b", kind="nrpn", channel=1, number=300),
        MidiMap(param="/c", kind="relative", channel=1, number=16),  # two's complement, 1/128 per tick
        MidiMap(param="/e", kind="relative", channel=1, number=17, mode="signed"),
        MidiMap(param="/i", kind="relative", channel=1, number=18, mode="offset", step=5),
        MidiMap(param="/w", kind="relative", channel=1, number=19, step=0.25)]))
    ctl.open()

    deliver(ctl, controller, cc(1, 1, 64), cc(1, 33, 1))  # MSB then LSB: 8193 of 16383
    assert abs(tree.get("/a") - 8193 / 16383) < 1e-12  # finer than any 7-bit step (64/127 = 0.5039)
    deliver(ctl, controller, cc(1, 1, 127), cc(1, 33, 127))
    assert tree.get("/a") == 1.0

    deliver(ctl, controller, cc(1, 99, 300 >> 7), cc(1, 98, 300 & 0x7F), cc(1, 6, 100), cc(1, 38, 3))
    assert tree.get("/b") == pytest.approx(-1 + 2 * (100 << 7 | 3) / 16383, abs=1e-12)
    before = tree.get("/b")
    deliver(ctl, controller, cc(1, 101, 0), cc(1, 100, 0), cc(1, 6, 2))  # RPN 0 (bend range): not a parameter
    assert tree.get("/b") == before

    deliver(ctl, controller, cc(1, 16, 3))
    assert tree.get("/c") == pytest.approx(3 / 128)
    deliver(ctl, controller, cc(1, 16, 127))  # -1 in two's complement
    assert tree.get("/c") == pytest.approx(2 / 128)
    deliver(ctl, controller, cc(1, 17, 1))  # +1 in signed-bit: one choice on
    assert tree.get("/e") == "y"
    deliver(ctl, controller, cc(1, 17, 65), cc(1, 17, 65))  # -1 twice: stops at the first choice
    assert tree.get("/e") == "x"
    deliver(ctl, controller, cc(1, 18, 66))  # +2 in binary offset, 5 per tick
    assert tree.get("/i") == 10
    deliver(ctl, controller, cc(1, 18, 63))
    assert tree.get("/i") == 5
    deliver(ctl, controller, cc(1, 18, 0))  # -64: held at the bottom, not an error
    assert tree.get("/i") == 0
    deliver(ctl, controller, cc(1, 19, 3), cc(1, 19, 2))  # 0.75 then 1.25: a wrap parameter goes round
    assert tree.get("/w") == pytest.approx(0.25)
    assert ctl.counts["errors"] == 0


def test_soft_takeover_pickup_scale_and_none(make, controller: Controller) -> None:
    tree = make_tree()
    ctl = make(tree, MidiSection(inputs=[controller.client], takeover="pickup", map=[
        MidiMap(param="/a", channel=1, number=7),
        MidiMap(param="/c", channel=1, number=8, takeover="scale"),
        MidiMap(param="/i", channel=1, number=9, takeover="none")]))
    ctl.open()

    tree.set("/a", 0.5, "osc")  # OSC moved it; the fader still sits low
    deliver(ctl, controller, cc(1, 7, 13), cc(1, 7, 40))
    assert tree.get("/a") == 0.5 and ctl.counts["held"] == 2
    deliver(ctl, controller, cc(1, 7, 80))  # crossed 0.5: picked up
    assert tree.get("/a") == pytest.approx(80 / 127)
    deliver(ctl, controller, cc(1, 7, 20))  # now it follows
    assert tree.get("/a") == pytest.approx(20 / 127)
    tree.set("/a", 0.9, "scene")  # a scene jumps it: pick up again
    deliver(ctl, controller, cc(1, 7, 30))
    assert tree.get("/a") == 0.9
    deliver(ctl, controller, cc(1, 7, 114))  # lands within a step of 0.9
    assert tree.get("/a") == pytest.approx(114 / 127)

    tree.set("/c", 0.6, "osc")
    deliver(ctl, controller, cc(1, 8, 0))  # first position: no direction yet
    assert tree.get("/c") == 0.6
    deliver(ctl, controller, cc(1, 8, 64))  # half the fader's remaining travel: half the value's remaining way
    assert tree.get("/c") == pytest.approx(0.6 + (64 / 127) * 0.4)
    deliver(ctl, controller, cc(1, 8, 127))  # both at the end of travel
    assert tree.get("/c") == 1.0
    deliver(ctl, controller, cc(1, 8, 64), cc(1, 8, 30))  # met: the value follows the fader again
    assert tree.get("/c") == pytest.approx(30 / 127)

    tree.set("/i", 500, "osc")
    deliver(ctl, controller, cc(1, 9, 0))  # none: jumps
    assert tree.get("/i") == 0


def test_feedback_is_coalesced_encoded_per_kind_and_never_echoed(make, controller: Controller,
                                                                 monitor: Monitor) -> None:
    tree = make_tree()
    ctl = make(tree, MidiSection(inputs=[controller.client], outputs=[monitor.client], takeover="none", map=[
        MidiMap(param="/a", channel=1, number=7),
        MidiMap(param="/c", kind="cc14", channel=1, number=1),
        MidiMap(param="/b", kind="nrpn", channel=1, number=300),
        MidiMap(param="/b", kind="pitchbend", channel=2),
        MidiMap(param="/t", kind="note", channel=10, number=36, mode="toggle"),
        MidiMap(param="/i", kind="relative", channel=1, number=16),
        MidiMap(param="/w", channel=1, number=10, feedback=False)]))
    ctl.open()
    assert ctl.stats()["outputs"] == [f"{monitor.client}:leds"]

    initial = [[0xB0, 7, 0], [0xB0, 1, 0], [0xB0, 33, 0], [0xB0, 99, 2], [0xB0, 98, 44], [0xB0, 6, 64],
               [0xB0, 38, 0], [0xE1, 0, 64], [0x99, 36, 0], [0xB0, 16, 0]]
    assert wait_until(lambda: len(monitor.messages) >= len(initial))  # a new device is shown every value
    assert sorted(monitor.take()) == sorted(initial)

    tree.set("/a", 0.25, "osc")
    tree.set("/b", 0.5, "osc")
    tree.set("/t", True, "scene")
    tree.set("/w", 0.5, "osc")
    expected = [[0xB0, 7, 32], [0xB0, 99, 2], [0xB0, 98, 44], [0xB0, 6, 95], [0xB0, 38, 127],  # 12287
                [0xE1, 0, 96], [0x99, 36, 127]]  # bend 12288; the pad lit; nothing for /w
    assert wait_until(lambda: len(monitor.messages) >= len(expected))
    controller.settle(0.1)
    assert sorted(monitor.take()) == sorted(expected)

    for k in range(200):  # a burst of writes: the device gets the latest, not a backlog
        tree.set("/a", k / 199, "osc")
    assert wait_until(lambda: [0xB0, 7, 127] in monitor.messages)
    controller.settle(0.2)
    burst = monitor.take()
    assert burst[-1] == [0xB0, 7, 127] and len(burst) <= 15, burst

    deliver(ctl, controller, cc(1, 7, 64), cc(1, 16, 1), [0x99, 36, 100])  # the controller's own moves
    assert tree.get("/a") == pytest.approx(64 / 127) and tree.get("/i") == 8 and tree.get("/t") is False
    controller.settle(0.25)  # 15 feedback periods
    assert monitor.take() == []  # not echoed back
    tree.set("/a", 0.0, "osc")  # while anything else still shows
    assert wait_until(lambda: [0xB0, 7, 0] in monitor.messages)
    assert ctl.counts["errors"] == 0


def test_learn_binds_each_kind_and_survives_a_restart(make, controller: Controller, tmp_path) -> None:
    tree, path = make_tree(), tmp_path / "show" / "learned.json"
    section = MidiSection(inputs=[controller.client], takeover="none",
                          map=[MidiMap(param="/e", channel=1, number=22)])
    ctl = make(tree, section, learn_path=path)
    ctl.open()

    def learned(address: str, *messages: list[int], **kw) -> MidiMap:
        ctl.learn(address, **kw)
        assert ctl.learning == address
        deliver(ctl, controller, *messages)
        got = ctl.wait_learned(timeout=2.0)
        assert got is not None and ctl.learning is None
        return got

    # a CC 0..31 could be a 14-bit MSB: learn waits briefly for its LSB, then takes it as a 7-bit CC
    assert learned("/a", cc(1, 20, 64)) == MidiMap(param="/a", kind="cc", channel=1, number=20)
    assert learned("/c", cc(2, 3, 64), cc(2, 35, 5)) == MidiMap(param="/c", kind="cc14", channel=2, number=3)
    assert tree.get("/c") == pytest.approx((64 << 7 | 5) / 16383)  # the pair's LSB already played
    assert learned("/b", cc(1, 99, 1), cc(1, 98, 2), cc(1, 6, 10), cc(1, 38, 0)) == MidiMap(
        param="/b", kind="nrpn", channel=1, number=130)
    assert learned("/t", [0x99, 36, 90]) == MidiMap(param="/t", kind="note", channel=10, number=36)
    assert learned("/i", cc(1, 21, 65), kind="relative", mode="offset") == MidiMap(
        param="/i", kind="relative", channel=1, number=21, mode="offset")
    assert learned("/w", [0xE2, 0, 64]) == MidiMap(param="/w", kind="pitchbend", channel=3)
    # learning a parameter again moves it; a learned CC 22 hides the show's CC 22 -> /e
    assert learned("/a", cc(1, 22, 0)) == MidiMap(param="/a", kind="cc", channel=1, number=22)

    ctl.learn("/e")
    assert ctl.cancel_learn() and ctl.learning is None
    deliver(ctl, controller, cc(1, 23, 5))
    assert ctl.counts["learned"] == 7 and ctl.wait_learned(0.3) is None

    deliver(ctl, controller, cc(1, 22, 127), cc(1, 20, 0))
    assert tree.get("/a") == 1.0 and tree.get("/e") == "x"  # CC 20 is free again
    assert wait_until(path.exists)
    ctl.close()
    assert [p.name for p in path.parent.iterdir()] == ["learned.json"]  # written whole, no temporary left
    assert len(json.loads(path.read_text())["learned"]) == 6

    tree2 = make_tree()
    again = make(tree2, section, learn_path=path)
    controls = {item["control"]: (item["param"], item["from"]) for item in again.describe()}
    assert controls["ch1 CC 22"] == ("/a", "learned")
    assert controls["ch2 CC 3+35 (14-bit)"] == ("/c", "learned")
    assert controls["ch1 CC 21 relative (offset)"] == ("/i", "learned")
    assert controls["any ch notes"] == ("/synth/note", "show")
    assert "ch1 CC 20" not in controls
    again.open()
    deliver(again, controller, cc(1, 22, 127), [0x99, 36, 1])
    assert tree2.get("/a") == 1.0 and tree2.get("/t") is True


def test_a_missing_controller_connects_when_plugged_and_after_replugging(make, controller: Controller) -> None:
    tree, name = make_tree(), unique("late")
    ctl = make(tree, MidiSection(inputs=[name], takeover="none", map=[MidiMap(param="/a", channel=1, number=7)]))
    told = ctl.open()
    assert f"no input port starting with '{name}'" in told and "still looking" in told
    assert f"'{controller.client}:knobs'" in told  # says which ports there are
    assert ctl.stats()["missing_inputs"] == [name]

    late = Controller(name)
    try:
        assert wait_until(lambda: ctl.stats()["inputs"], timeout=3)
        deliver(ctl, late, cc(1, 7, 127))
        assert tree.get("/a") == 1.0
        late.unplug()
        assert wait_until(lambda: not ctl.stats()["inputs"], timeout=3)
        assert any("is gone" in notice for notice in ctl.notices)
        late.plug()
        assert wait_until(lambda: ctl.stats()["inputs"], timeout=3)
        deliver(ctl, late, cc(1, 7, 0))
        assert tree.get("/a") == 0.0
    finally:
        late.unplug()


def test_virtual_ports_let_other_software_connect(make, jack_server: str) -> None:
    tree, client = make_tree(), unique("lv")
    ctl = make(tree, MidiSection(virtual=True, virtual_name="live", takeover="none",
                                 map=[MidiMap(param="/a", channel=1, number=7)]), client_name=client)
    ctl.open()
    app_out, app_in = rtmidi.MidiOut(JACK, unique("app")), rtmidi.MidiIn(JACK, unique("app"))
    got: list[list[int]] = []
    app_in.set_callback(lambda event, _: got.append(event[0]))
    try:
        ours = [n for n in app_out.get_ports() if n.startswith(client) and n.endswith(":live")]
        assert len(ours) == 1, app_out.get_ports()
        app_out.open_port(app_out.get_ports().index(ours[0]))
        app_in.open_port(app_in.get_ports().index(next(n for n in app_in.get_ports()
                                                        if n.startswith(client) and n.endswith(":live"))))
        app_out.send_message(cc(1, 7, 127))
        assert wait_until(lambda: tree.get("/a") == 1.0)
        tree.set("/a", 0.5, "osc")
        assert wait_until(lambda: [0xB0, 7, 64] in got)
    finally:
        for port in (app_out, app_in):
            port.close_port()
            port.delete()


def test_midi_clock_drives_the_show_tempo(make, controller: Controller) -> None:
    clock = Clock(bpm=90.0)
    ctl = make(make_tree(), MidiSection(inputs=[controller.client]), clock=clock)
    ctl.open()
    controller.settle(0.2)  # the connection open() made takes effect at JACK's next graph change: don't race it
    controller.send(0xFA)
    start = time.perf_counter()
    for tick in range(1, 49):  # two beats at 120 bpm, on a schedule (sleep overshoot does not accumulate)
        time.sleep(max(0.0, start + tick * 60 / 120 / 24 - time.perf_counter()))
        controller.send(0xF8)
    assert wait_until(lambda: ctl.counts["clock"] == 49)
    assert clock.bpm == pytest.approx(120, rel=0.08)


def test_bad_config_is_named_with_its_fix() -> None:
    tree = make_tree()
    with pytest.raises(LiveError, match=r"'/nope' \(ch1 CC 7\) is not a parameter") as err:
        MidiControl(tree, MidiSection(map=[MidiMap(param="/nope", channel=1, number=7)]))
    assert "live params" in str(err.value)
    with pytest.raises(LiveError, match="notes: '/drum/hit' is not an event"):
        MidiControl(tree, MidiSection(notes="/drum/hit"))
    with pytest.raises(LiveError, match="api 'beos'"):
        MidiControl(tree, MidiSection(), api="beos")
    with pytest.raises(ValidationError, match="extra"):
        MidiSection(inputz=["nano"])
    with pytest.raises(ValidationError, match="cc14 numbers go 0..31"):
        MidiMap(param="/a", kind="cc14", number=40)
    with pytest.raises(ValidationError, match="mode 'twos' does not apply to cc"):
        MidiMap(param="/a", kind="cc", number=1, mode="twos")
    ctl = MidiControl(tree, MidiSection())
    with pytest.raises(LiveError, match="'/nope' is not a parameter"):
        ctl.learn("/nope")


def test_a_broken_learn_file_is_named(tmp_path) -> None:
    path = tmp_path / "learned.json"
    path.write_text('{"learned": [{"param": "/a", "kind": "knob"}]}')
    with pytest.raises(LiveError, match=f"{path.name} cannot be read") as err:
        MidiControl(make_tree(), MidiSection(), learn_path=path)
    assert "delete it" in str(err.value)


def test_no_midi_system_is_said_not_raised() -> None:
    """On a machine without the ALSA sequencer (like CI) the show runs on, saying why and how to fix it."""
    ctl = MidiControl(make_tree(), MidiSection(inputs=["nanoKONTROL"]), api="alsa")
    try:
        told = ctl.open()
    finally:
        ctl.close()
    assert ("unavailable" in told and "fix:" in told) or "no input port starting with 'nanoKONTROL'" in told


def test_value_codings() -> None:
    for mode in ("twos", "signed", "offset"):
        assert [relative_ticks(encode_ticks(t, mode), mode) for t in (-63, -5, -1, 1, 7, 63)] == [
            -63, -5, -1, 1, 7, 63]
    assert (relative_ticks(127, "twos"), relative_ticks(65, "signed"), relative_ticks(63, "offset")) == (-1, -1, -1)
    assert bend_to_normal(8192) == 0.5 and bend_to_normal(0) == 0.0 and bend_to_normal(16383) == 1.0
    assert [normal_to_bend(u) for u in (0.0, 0.5, 1.0)] == [0, 8192, 16383]


def test_buttons_and_pads_fire_trigger_events_on_the_press_only(make, controller: Controller) -> None:
    tree = make_tree()
    tree = ParamTree(tree.params.values(), [*tree.events.values(), Event("/scene/go", ()), Event("/tempo/tap", ())])
    go, tap = tree.listen("/scene/go"), tree.listen("/tempo/tap")
    section = MidiSection(inputs=[controller.client], map=[MidiMap(param="/scene/go", kind="note", number=36),
                                                           MidiMap(param="/tempo/tap", number=46)])
    ctl = make(tree, section)
    ctl.open()
    assert wait_until(lambda: ctl.stats()["inputs"])
    deliver(ctl, controller, [0x90, 36, 100], [0x80, 36, 0], cc(1, 46, 127), cc(1, 46, 0), cc(1, 46, 127))
    assert len(go) == 1 and len(tap) == 2  # presses fire, releases do not
    with pytest.raises(LiveError, match="trigger"):
        MidiControl(tree, MidiSection(map=[MidiMap(param="/scene/go", kind="nrpn", number=5)]), api="jack")


# A controller in another process (as hardware is): moves a knob for each line on stdin until one says "play" (the
# first knob the show takes pins the port's arrival clock), then plays 30 notes 10 ms apart and says how many knobs
# it sent and when it sent the first and the last note (perf_counter() is CLOCK_MONOTONIC on Linux: the same clock
# in every process).
KEYS = """
import sys, time, rtmidi
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, sys.argv[1])
out.open_virtual_port("keys")
print("ready", flush=True)
knobs = 0
while sys.stdin.readline().strip() != "play":
    out.send_message([0xB0, 20, 1])
    knobs += 1
time.sleep(0.05)
first = time.perf_counter()
for note in range(60, 90):
    out.send_message([0x90, note, 100])
    time.sleep(0.01)
print("sent", knobs, first, time.perf_counter(), flush=True)
sys.stdin.readline()
out.close_port()
"""


def said(process: subprocess.Popen, word: str) -> list[str] | None:
    """Read the process's output up to a line that starts with `word` (a verbose jackd makes libjack print lines
    of its own there too) and return the rest of that line's words; None if the process ends first."""
    for line in process.stdout:
        if line.split()[:1] == [word]:
            return line.split()[1:]
    return None


def test_a_python_stall_neither_makes_our_jack_client_late_nor_loses_notes(tmp_path, monkeypatch) -> None:
    """This process holds the GIL for 0.5 s while a controller plays 30 notes. No Python runs in JACK's process
    thread, so jackd never finds our client's own code unfinished at a cycle's end ('was not finished, state =
    Running'; a Python callback there waited for the GIL through every cycle of the stall), and rtmidi's queue
    keeps every note for the midi-in thread: all arrive, in order, as soon as the stall ends, each with the time it
    was played."""
    server, client, keys_name = unique("stall"), unique("lv"), unique("keys")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server)  # our own server, to read its log alone
    log = tmp_path / "jackd.log"
    with log.open("w") as out:
        jackd = subprocess.Popen(["jackd", "-v", "-n", server, "-d", "dummy", "-r", "48000", "-p", "128"],
                                 stdout=out, stderr=subprocess.STDOUT)
    keys = None
    try:
        assert wait_until(lambda: "system:playback_1" in subprocess.run(
            ["jack_lsp"], capture_output=True, text=True).stdout, timeout=JACK_START_TIMEOUT_S), log.read_text()
        # bounded: on a busy machine its JACK client was once seen never to open, and said() would wait forever
        keys = subprocess.Popen(["timeout", "30", sys.executable, "-c", KEYS, keys_name], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert said(keys, "ready") is not None
        tree = make_tree()
        notes = tree.listen("/synth/", timed=True)
        threads = set(threading.enumerate())
        ctl = MidiControl(tree, MidiSection(inputs=[keys_name]), api="jack", client_name=client)
        try:
            ctl.open()
            assert ctl.stats()["inputs"] == [f"{keys_name}:keys"]
            for _ in range(20):  # the connection takes effect at JACK's next graph change: a knob says it has
                keys.stdin.write("knob\n")
                keys.stdin.flush()
                if wait_until(lambda: ctl.counts["in"] >= 1, timeout=0.25):
                    break
            keys.stdin.write("play\n")  # the notes start 50 ms from now
            keys.stdin.flush()
            switch = sys.getswitchinterval()
            sys.setswitchinterval(1.0)  # no other thread of ours gets the GIL before we let go of it
            try:
                stall_end = time.perf_counter() + 0.5
                while time.perf_counter() < stall_end:
                    pass
            finally:
                sys.setswitchinterval(switch)
            sent = said(keys, "sent")
            assert sent is not None and float(sent[2]) < stall_end  # all 30 came while the GIL was held
            assert wait_until(lambda: len(notes) >= 30), list(notes)
            got = list(notes)
            assert [args for _, args, _ in got] == [(n, pytest.approx(100 / 127)) for n in range(60, 90)]
            times = [at for _, _, at in got]  # drained after stall_end, timed when played
            first, last = float(sent[1]), float(sent[2])
            assert first - 0.001 <= times[0] and times[-1] < min(last + 0.05, stall_end), (
                [t - first for t in times], last - first, stall_end - first)
            assert all(b - a > 0.01 - PERIOD_S - 0.002 for a, b in zip(times, times[1:])), times  # 10 ms apart
            assert ctl.counts["in"] == int(sent[0]) + 30 and ctl.counts["errors"] == 0
        finally:
            ctl.close()
        assert set(threading.enumerate()) - threads == set()  # the midi and midi-in threads are gone
    finally:
        if keys is not None:
            keys.stdin.write("\n")
            keys.stdin.close()
            keys.wait(timeout=5)
        jackd.terminate()  # never SIGKILL: it would leave its shared memory behind
        jackd.wait(timeout=10)
    ours = re.compile(rf"client = {re.escape(client)}(-\d+)? was not finished, state = Running")
    late = [line for line in log.read_text().splitlines() if ours.search(line)]
    assert late == [], f"{len(late)} late cycles of our own: {late[:3]}"


def held_notes(make, controller: Controller, play) -> tuple[list[tuple[int, float]], float, MidiControl]:
    """Pin the port's arrival clock with messages drained at once, then keep the midi-in thread from draining
    for HOLD_S (it waits for the port lock as it would for the GIL) while `play()` sends; returns each note with
    its time as a timed listener gets it, when the hold ended, and the control."""
    tree = make_tree()
    notes = tree.listen("/synth/", timed=True)
    ctl = make(tree, MidiSection(inputs=[controller.client]))
    ctl.open()
    controller.settle(0.2)  # the connection open() made takes effect at JACK's next graph change
    for value in range(3):
        deliver(ctl, controller, cc(1, 20, value))
    before = ctl.counts["in"]
    with ctl._ports_lock:
        start = time.perf_counter()
        play()
        time.sleep(max(0.0, start + HOLD_S - time.perf_counter()))
        released = time.perf_counter()
    assert wait_until(lambda: ctl.counts["in"] > before)
    controller.settle()
    return [(args[0], at) for _, args, at in notes], released, ctl


def test_a_note_that_waits_to_be_drained_keeps_the_time_it_arrived(make, controller: Controller) -> None:
    sent: list[float] = []

    def play() -> None:
        sent.append(time.perf_counter())
        controller.send(0x90, 60, 100)

    notes, released, ctl = held_notes(make, controller, play)
    [(note, at)] = notes
    # it arrived at the next JACK cycle after it was sent, ~HOLD_S before it was drained
    assert note == 60 and sent[0] - 0.001 <= at <= released - HOLD_S / 2, (at - sent[0], released - at)
    assert ctl.counts["errors"] == 0


def test_notes_drained_together_keep_their_spacing(make, controller: Controller) -> None:
    """Active sensing and SysEx between them count too: rtmidi loses an ignored message's delta time under JACK."""
    sent: list[float] = []

    def play() -> None:
        controller.send(0x90, 61, 100)
        sent.append(time.perf_counter())
        time.sleep(0.008)
        controller.send(0xFE)
        controller.send(0xF0, 0x7D, 0x01, 0x02, 0xF7)
        time.sleep(max(0.0, sent[0] + 0.02 - time.perf_counter()))
        controller.send(0x90, 62, 100)
        sent.append(time.perf_counter())

    notes, released, ctl = held_notes(make, controller, play)
    assert [note for note, _ in notes] == [61, 62]
    spacing = notes[1][1] - notes[0][1]
    assert abs(spacing - (sent[1] - sent[0])) <= PERIOD_S + 0.002, (spacing, sent[1] - sent[0])
    assert notes[1][1] <= released - HOLD_S / 2
    assert ctl.counts["in"] == 5 and ctl.counts["errors"] == 0  # the SysEx and active sensing are dropped


def replay(drift: float, stamps: list[float], lost: dict[int, float], empties: bool) -> list[tuple[float, float]]:
    """Feed an ArrivalClock a port whose clock runs `drift` slower than perf_counter() (the offset grows by
    `drift` per second; negative: faster), messages mostly drained within 1.5 ms, every 10th 0.1 s late (a stall),
    `lost` deltas gone (index: seconds) as when rtmidi drops a message; `empties`: the drain found the queue empty
    within 1 ms before each arrival. Returns (error of the time given, drained - time given) per message."""
    rng = random.Random(11)
    clock, out, previous = ArrivalClock(), [], 0.0
    for k, stamp in enumerate(stamps):
        arrived = 1000.0 + stamp * (1 + drift)  # perf_counter() time, 1000 s after the port's first message
        drained = arrived + (HOLD_S if k % 10 == 9 else rng.uniform(0.0, 0.0015))
        if empties:
            clock.emptied(arrived - rng.uniform(0.0, 0.001))
        at = clock.arrived(stamp - previous - lost.get(k, 0.0), drained)
        previous = stamp
        out.append((at - arrived, drained - at))
    return out


def test_arrival_clock_follows_a_drifting_port_clock() -> None:
    rng = random.Random(3)
    stamps = [0.0]
    while stamps[-1] < 1200:  # 20 minutes of a performer playing every 0.05-0.45 s
        stamps.append(stamps[-1] + rng.uniform(0.05, 0.45))
    first = replay(0.0, stamps, {}, True)[0]
    assert first == (pytest.approx(0.0, abs=0.0016), 0.0)  # the first message is timed when drained
    # a port clock 50 ppm slower than perf_counter() (an NTP frequency correction), the same, 500 ppm faster (the
    # most NTP slews): followed with no help from the empty-queue bound
    for drift in (5e-5, 0.0, -5e-4):
        errors = replay(drift, stamps, {}, False)[1:]
        worst = max(abs(e) for e, _ in errors)
        assert worst < 0.0016 + OFFSET_CREEP * 0.45, (drift, worst)  # stalled messages too: not 0.1 s late
        assert min(late for _, late in errors) > -1e-9  # never after it was drained (but for rounding)
    # the sum lost 0.3 s (a full queue dropped a message) and the port clock is 300 ppm slower, more than the
    # creep follows: the empty-queue bound keeps every time within the drain's ~1 ms of the truth
    errors = replay(3e-4, stamps, {len(stamps) // 2: 0.3}, True)[1:]
    assert max(abs(e) for e, _ in errors) < 0.0016 + OFFSET_CREEP * 0.45
    assert max(abs(e) for e, _ in replay(3e-4, stamps, {}, False)[1:]) > 0.05  # without it: lost
