"""Measured values as read-only parameters, and [mod] sources: range, curve, rise and fall, and thresholds that
fire envelopes or events. Times are passed in explicitly (the clock is one beat per second), so nothing here depends
on how fast the machine is; the OSC test goes through a real UDP socket."""

from __future__ import annotations

import math
import time

import pytest
from pythonosc.udp_client import SimpleUDPClient

from live.control.modulation import Modulator, ModulatorSection
from live.control.oscquery import build_namespace
from live.control.reader import ParamReader
from live.control.tempo import Clock
from live.params import Event, Param, ParamTree

BASS, ONSET = "/in/audio/bass", "/in/audio/onset"


def measured_tree(specs: dict[str, ModulatorSection]) -> ParamTree:
    params = [Param("/x", "float", 0.5), Param("/y", "float", 0.0, 0.0, 10.0),
              Param(BASS, "float", 0.0, 0.0, 1.0, readonly=True), Param(ONSET, "float", 0.0, 0.0, 1.0, readonly=True)]
    params += [p for name, spec in specs.items() for p in Modulator.params(name, spec)]
    return ParamTree(params, [Event("/scene/go", ()), Event("/synth/note", (("note", "int", 0, 127),
                                                                          ("velocity", "float", 0, 1)))])


def test_measured_values_are_read_only_clipped_and_timed():
    tree = measured_tree({})
    with pytest.raises(ValueError, match="read-only"):
        tree.set(BASS, 0.5)
    with pytest.raises(ValueError, match="read-only"):
        tree.update({"/x": 0.1, BASS: 0.5})
    assert tree.get("/x") == 0.5  # the bad write wrote nothing
    version = tree.version
    tree.measure({BASS: 1.7, ONSET: 0.25, "/gone": 3.0, "/x": 0.9}, at=12.5)
    assert tree.get(BASS) == 1.0 and tree.get(ONSET) == 0.25  # clipped to the range
    assert tree.get("/x") == 0.5  # measure() writes measured values only
    assert tree.measured_at[BASS] == 12.5 and tree.version == version + 1
    node = build_namespace(tree, tree.snapshot, "t")["CONTENTS"]["in"]["CONTENTS"]["audio"]["CONTENTS"]["bass"]
    assert node["ACCESS"] == 1 and node["VALUE"] == [1.0]


def test_a_source_moves_its_target_through_range_curve_and_smoothing():
    spec = ModulatorSection(target="/y", source=BASS, range=(0.2, 0.6), curve="exp", depth=0.5, smooth=0.1,
                            release=1.0)
    tree, clock = measured_tree({"b": spec}), Clock(60.0, now=0.0)
    mod = Modulator("b", spec, tree, clock)
    reader = ParamReader(tree, lambda: [mod])
    assert reader.read(0.0)["/y"] == 0.0
    tree.measure({BASS: 0.4}, at=0.0)  # halfway through the range; exp curve: level 0.25
    assert reader.read(0.1)["/y"] == pytest.approx(5.0 * 0.25 * (1 - math.exp(-1)), rel=1e-6)  # one rise constant
    assert reader.read(2.0)["/y"] == pytest.approx(5.0 * 0.25, rel=1e-4)
    tree.measure({BASS: 0.9}, at=2.0)  # above the range: full level
    assert reader.read(3.0)["/y"] == pytest.approx(5.0, rel=1e-4)
    tree.measure({BASS: 0.0}, at=3.0)
    assert reader.read(4.0)["/y"] == pytest.approx(5.0 * math.exp(-1), rel=1e-4)  # the slower release
    assert reader.read(3.5)["/y"] == pytest.approx(5.0 * math.exp(-1), rel=1e-4)  # a reader behind: same level
    assert "/mod/b/beats" not in tree.params and "/mod/b/depth" in tree.params


def test_a_threshold_fires_an_envelope_at_the_measurements_time_with_hysteresis():
    spec = ModulatorSection(target="/x", source=ONSET, threshold=0.5, beats=1, depth=-0.5, attack=0.0)
    tree, clock = measured_tree({"kick": spec}), Clock(60.0, now=0.0)
    mod = Modulator("kick", spec, tree, clock)
    reader = ParamReader(tree, lambda: [mod])
    assert reader.read(1.0)["/x"] == 0.5
    tree.measure({ONSET: 0.8}, at=2.0)
    assert reader.read(2.0)["/x"] == pytest.approx(0.0)  # full depth at the onset
    assert reader.read(2.5)["/x"] == pytest.approx(0.25)  # half way through its one-beat decay
    tree.measure({ONSET: 0.45}, at=2.6)  # not far enough below the threshold to re-arm
    tree.measure({ONSET: 0.9}, at=2.7)
    assert reader.read(2.7)["/x"] == pytest.approx(0.5 - 0.5 * 0.3)  # still the first envelope
    tree.measure({ONSET: 0.1}, at=2.8)
    tree.measure({ONSET: 0.7}, at=2.9)
    assert reader.read(2.9)["/x"] == pytest.approx(0.0)  # re-armed and fired again
    assert mod.threshold.fired == 2
    mod.close()
    tree.measure({ONSET: 0.1}, at=5.0)
    tree.measure({ONSET: 0.9}, at=5.1)
    assert mod.threshold.fired == 2  # closed: no longer listening


def test_a_threshold_on_an_event_emits_it_no_more_often_than_its_beats_and_not_at_depth_zero():
    spec = ModulatorSection(target="/synth/note", source=ONSET, threshold=0.5, beats=2, depth=1.0, args=[60, 0.8])
    tree, clock = measured_tree({"hit": spec}), Clock(60.0, now=0.0)
    mod = Modulator("hit", spec, tree, clock)
    notes = tree.listen("/synth/note", timed=True)
    for at in (1.0, 1.5, 3.2, 6.0):  # onsets at these times; the one at 1.5 s is within 2 beats of the first
        tree.measure({ONSET: 0.9}, at=at)
        tree.measure({ONSET: 0.0}, at=at + 0.01)
    assert [(n[1], n[2]) for n in notes] == [((60, 0.8), 1.0), ((60, 0.8), 3.2), ((60, 0.8), 6.0)]
    assert ParamReader(tree, lambda: [mod]).read(7.0)["/x"] == 0.5  # an event trigger moves no value
    tree.set("/mod/hit/depth", 0.0)
    tree.measure({ONSET: 0.9}, at=9.0)
    assert len(notes) == 3


def test_a_fired_note_is_released_when_its_source_falls_back():
    spec = ModulatorSection(target="/synth/note", source=ONSET, threshold=0.5, beats=0.25, depth=1.0, args=[64, 0.7],
                            release_args=[64, 0])
    tree, clock = measured_tree({"cell": spec}), Clock(60.0, now=0.0)
    Modulator("cell", spec, tree, clock)
    notes = tree.listen("/synth/note", timed=True)
    for at, value in ((1.0, 0.2), (1.1, 0.8), (1.2, 0.6), (1.3, 0.3), (1.35, 0.1), (2.0, 0.9), (2.01, 0.95)):
        tree.measure({ONSET: value}, at=at)
    assert [(n[1], n[2]) for n in notes] == [((64, 0.7), 1.1), ((64, 0.0), 1.3), ((64, 0.7), 2.0)]


def test_bad_sources_and_targets_are_named():
    tree, clock = measured_tree({}), Clock(60.0, now=0.0)
    with pytest.raises(ValueError, match=r"source '/in/audio/nope' is not a number parameter.*/in/audio/bass"):
        Modulator("m", ModulatorSection(target="/x", source="/in/audio/nope"), tree, clock)
    with pytest.raises(ValueError, match="threshold needs a measured source"):
        Modulator("m", ModulatorSection(target="/x", source="/y", threshold=1.0), tree, clock)
    with pytest.raises(ValueError, match="target '/in/audio/bass' is not a number parameter"):
        Modulator("m", ModulatorSection(target=BASS, source=ONSET), tree, clock)
    with pytest.raises(ValueError, match="expects 2 arguments"):
        Modulator("m", ModulatorSection(target="/synth/note", source=ONSET, threshold=0.5), tree, clock)


def test_heard_beats_set_the_tempo_and_the_downbeat():
    clock = Clock(120.0, now=0.0)
    clock.hear_beat(10.02, 123.0)  # heard just after beat 20 would have fallen
    assert clock.bpm == 123.0 and clock.beat_at(10.02) == 20.0
    assert clock.beat_at(10.02 + 60 / 123) == pytest.approx(21.0)


def test_osc_cannot_write_a_measured_value_and_its_feedback_sends_it():
    import socket

    from pythonosc.osc_message import OscMessage

    from live.control.osc import OscServer, OscSection

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(3.0)
    tree = measured_tree({})
    server = OscServer.from_section(tree, OscSection(enabled=True, host="127.0.0.1", port=0,
                                                      feedback=[f"127.0.0.1:{listener.getsockname()[1]}"]))
    server.open()
    try:
        tree.measure({BASS: 0.75}, at=time.perf_counter())
        got = {}
        while got.get(BASS) != 0.75:  # the feedback client is sent what was measured, like any changed value
            message = OscMessage(listener.recv(65536))
            got[message.address] = message.params[0]
        client = SimpleUDPClient("127.0.0.1", server.port)
        client.send_message(BASS, 0.5)
        client.send_message("/x", 0.25)
        deadline = time.monotonic() + 3
        while tree.get("/x") != 0.25 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tree.get("/x") == 0.25 and tree.get(BASS) == 0.75  # still what was measured
        assert server.counts["bad_value"] == 1 and "read-only" in server.last_problem
    finally:
        server.close()
        listener.close()


def test_the_hud_shows_what_the_show_hears_and_sees():
    from live.video import hud

    tree = ParamTree([Param("/tempo/bpm", "float", 120.0, 20, 400), Param(BASS, "float", 0.0, readonly=True),
                      Param("/in/audio/band/0", "float", 0.0, readonly=True),
                      Param("/in/video/motion", "float", 0.0, readonly=True)])
    tree.measure({BASS: 0.5, "/in/video/motion": 0.125}, at=1.0)
    lines = hud.lines("t", tree.snapshot, 10.0, 0, [], "")
    assert "audio in: bass 0.50" in lines and "video in: motion 0.12" in lines
    assert not any("band" in line for line in lines)  # the bands are for mapping, too many to read
