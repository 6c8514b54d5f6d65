"""The control layer on its own: response curves and clip modes, smoothing readers, the beat clock (tap, MIDI
clock, Link), LFOs and envelopes, scenes and cues. Times are passed in explicitly, so nothing here depends on how
fast the machine is."""

from __future__ import annotations

import math
import time

import pytest

from live.control.modulation import Modulator, ModulatorSection
from live.control.reader import ParamReader
from live.control.scenes import CueSection, SceneEngine, ease
from live.control.tempo import Clock, TempoControl
from live.params import Event, Param, ParamTree


def test_curves_map_positions_and_invert_for_feedback():
    for curve in ("linear", "exp", "log", "s"):
        for lo, hi in ((0.0, 1.0), (20.0, 20000.0), (-1.0, 1.0)):
            p = Param("/x", "float", lo, lo, hi, curve=curve)
            assert p.from_normal(0.0) == pytest.approx(lo) and p.from_normal(1.0) == pytest.approx(hi)
            for u in (0.1, 0.37, 0.5, 0.9):
                assert p.to_normal(p.from_normal(u)) == pytest.approx(u, abs=1e-6), (curve, lo, hi, u)
    freq = Param("/f", "float", 20.0, 20.0, 20000.0, curve="exp")
    assert freq.from_normal(0.5) == pytest.approx(math.sqrt(20 * 20000))  # geometric: equal steps, equal ratios
    assert Param("/x", "float", 0, 0, 1, curve="s").from_normal(0.25) < 0.25  # eases in
    style = Param("/s", "enum", "a", choices=("a", "b", "c"))
    assert [style.from_normal(u) for u in (0.0, 0.5, 0.99)] == ["a", "b", "c"]
    assert style.from_normal(style.to_normal("c")) == "c"


def test_clip_modes():
    def coerce(mode: str, value: float) -> float:
        return Param("/x", "float", 0.0, 0.0, 1.0, clip=mode).coerce(value)

    assert coerce("clip", 1.25) == 1.0 and coerce("clip", -3) == 0.0
    assert coerce("wrap", 1.25) == pytest.approx(0.25) and coerce("wrap", -0.25) == pytest.approx(0.75)
    assert coerce("fold", 1.25) == pytest.approx(0.75) and coerce("fold", -0.25) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="outside"):
        coerce("reject", 1.25)
    assert coerce("reject", 0.5) == 0.5
    with pytest.raises(ValueError, match="clip"):
        Param("/x", "float", 0.0, clip="bounce")


def test_slew_reader_moves_at_its_rate_and_each_reader_keeps_its_own_state():
    tree = ParamTree([Param("/x", "float", 0.0, 0.0, 1.0, smooth="slew", smooth_s=1.0),
                      Param("/plain", "float", 0.0)])
    video, audio = ParamReader(tree), ParamReader(tree)
    assert video.read(10.0)["/x"] == 0.0 and audio.read(10.0)["/x"] == 0.0
    tree.update({"/x": 1.0, "/plain": 1.0})
    assert video.read(10.25)["/x"] == pytest.approx(0.25)  # full range per second
    assert video.read(10.25)["/plain"] == 1.0  # not smoothed: jumps
    for t in (10.01, 10.02, 10.03):
        audio.read(t)  # the synth reads far more often; its glide is its own
    assert audio.read(10.04)["/x"] == pytest.approx(0.04)
    assert video.read(10.5)["/x"] == pytest.approx(0.5)
    assert video.read(12.0)["/x"] == 1.0  # arrives, never overshoots


def test_one_euro_reader_is_steady_when_still_and_follows_fast_moves():
    tree = ParamTree([Param("/x", "float", 0.0, 0.0, 1.0, smooth="euro", smooth_s=0.2)])
    reader = ParamReader(tree)
    reader.read(0.0)
    values, t = [], 0.0
    for i in range(200):  # a noisy held value: +-0.02 jitter around 0.5
        t += 1 / 60
        tree.set("/x", 0.5 + (0.02 if i % 2 else -0.02))
        values.append(reader.read(t)["/x"])
    jitter = max(values[-50:]) - min(values[-50:])
    assert jitter < 0.01 and abs(sum(values[-50:]) / 50 - 0.5) < 0.01
    tree.set("/x", 1.0)  # a fast sweep: reaches most of the way within ~0.1 s
    for _ in range(6):
        t += 1 / 60
        last = reader.read(t)["/x"]
    assert last > 0.9


def test_tap_tempo_sets_bpm_and_downbeat():
    clock = Clock(120.0, now=0.0)
    for t in (10.0, 10.5, 11.0, 11.5):
        clock.tap(t)
    assert clock.bpm == pytest.approx(120.0)
    for t in (20.0, 20.4, 20.8, 21.2):  # a new sequence after a pause: 150 bpm
        clock.tap(t)
    assert clock.bpm == pytest.approx(150.0)
    assert clock.beat_at(21.2) == pytest.approx(round(clock.beat_at(21.2)))  # the last tap is on a beat
    assert clock.next_boundary(21.3, 4) > 21.3


def test_midi_clock_sets_tempo_from_ticks_and_follows_start_stop():
    clock = Clock(100.0, now=0.0)
    clock.midi_start(5.0)
    tick = 60.0 / 125 / 24
    for i in range(1, 49):
        clock.midi_clock(5.0 + i * tick)
    assert clock.bpm == pytest.approx(125.0, rel=1e-6)
    assert clock.beat_at(5.0 + 48 * tick) == pytest.approx(2.0)
    clock.midi_stop()
    held = clock.beat_at(time.perf_counter())
    assert clock.beat_at(time.perf_counter() + 10) == held


def test_tempo_param_and_taps_drive_the_clock_both_ways():
    bpm_params, bpm_events = TempoControl.params(100.0)
    tree = ParamTree(bpm_params, bpm_events)
    clock = Clock(100.0)
    tempo = TempoControl(tree, clock)
    tree.set("/tempo/bpm", 140.0, "osc:test")
    tempo.tick()
    assert clock.bpm == pytest.approx(140.0)
    clock.midi_start(0.0)  # the clock moves (as a MIDI master would): the tree follows, for feedback
    clock.set_bpm(90.0)
    tempo.tick()
    assert tree.get("/tempo/bpm") == pytest.approx(90.0) and tree.written_by["/tempo/bpm"] == "tempo"


def test_ableton_link_sessions_share_tempo():
    first, second = Clock(120.0), Clock(100.0)
    first.follow_link()
    second.follow_link()
    try:
        deadline = time.monotonic() + 8
        while first.link.peers < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        if first.link.peers < 1:
            pytest.skip("Link peers did not discover each other (no multicast on this machine)")
        second.set_bpm(133.0)
        deadline = time.monotonic() + 5
        while abs(first.bpm - 133.0) > 0.01 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.bpm == pytest.approx(133.0, abs=0.01)
        now = time.perf_counter()
        assert first.beat_at(now) % 4 == pytest.approx(second.beat_at(now) % 4, abs=0.05)  # same phase
    finally:
        first.close()
        second.close()


def modulated_tree() -> tuple[ParamTree, Clock]:
    specs = {"wobble": ModulatorSection(target="/x", shape="sine", beats=4, depth=0.25),
             "pump": ModulatorSection(target="/y", beats=1, depth=-0.5, trigger="/hit", attack=0.0)}
    params = [Param("/x", "float", 0.5), Param("/y", "float", 1.0)]
    params += [p for name, spec in specs.items() for p in Modulator.params(name, spec)]
    tree = ParamTree(params, [Event("/hit", ())])
    return tree, Clock(60.0, now=0.0)  # one beat per second


def test_lfo_and_envelope_offsets_on_the_beat():
    tree, clock = modulated_tree()
    mods = [Modulator(n, s, tree, clock) for n, s in (
        ("wobble", ModulatorSection(target="/x", shape="sine", beats=4, depth=0.25)),
        ("pump", ModulatorSection(target="/y", beats=1, depth=-0.5, trigger="/hit", attack=0.0)))]
    reader = ParamReader(tree, lambda: mods)
    assert reader.read(0.0)["/x"] == pytest.approx(0.5)
    assert reader.read(1.0)["/x"] == pytest.approx(0.75)  # a quarter period: the sine's peak
    assert reader.read(3.0)["/x"] == pytest.approx(0.25)
    assert reader.read(3.0)["/y"] == 1.0  # envelope idle until triggered
    tree.emit("/hit")
    assert reader.read(3.0)["/y"] == pytest.approx(0.5)  # full depth at the trigger (no attack)
    assert reader.read(3.5)["/y"] == pytest.approx(0.75)  # halfway down its one-beat decay
    assert reader.read(4.5)["/y"] == 1.0
    tree.set("/mod/wobble/depth", 0.0)  # its own controls are parameters
    assert reader.read(1.0)["/x"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not a number parameter"):
        Modulator("bad", ModulatorSection(target="/nope"), tree, clock)


def scene_tree() -> tuple[ParamTree, SceneEngine, Clock]:
    scenes = {"calm": {"/x": 0.0, "/style": "ink"}, "peak": {"/x": 1.0, "/style": "neon"}}
    cues = [CueSection(scene="calm", fade=0), CueSection(scene="peak", fade=2.0, curve="linear"),
            CueSection(scene="calm", fade=2.0, unit="beats", quantise="bar")]
    params, events = SceneEngine.params(scenes, len(cues))
    tree = ParamTree([Param("/x", "float", 0.5), Param("/style", "enum", "ink", choices=("ink", "neon")),
                      *params], events)
    clock = Clock(120.0)
    return tree, SceneEngine(tree, scenes, cues, clock), clock


def test_cue_fades_with_its_curve_and_enums_switch_at_the_start():
    tree, engine, _ = scene_tree()
    engine.go()
    assert tree.get("/x") == 0.0 and tree.get("/scene/cue") == 1
    engine.go()
    start = engine._fade.start
    assert tree.get("/style") == "neon"  # switched as the fade starts
    engine.tick(start + 1.0)
    assert tree.get("/x") == pytest.approx(0.5)  # linear, halfway
    engine.tick(start + 2.5)
    assert tree.get("/x") == 1.0 and not engine.fading
    assert ease("s", 0.25) < 0.25 < ease("log", 0.25)


def test_quantised_cue_waits_for_the_bar():
    tree, engine, clock = scene_tree()
    engine.goto(1)
    engine.tick(engine._fade.start + 10)
    engine.go()  # cue 3: calm over 2 beats, on the next bar
    fade = engine._fade
    assert fade.seconds == pytest.approx(1.0)  # 2 beats at 120 bpm
    assert clock.beat_at(fade.start) % 4 == pytest.approx(0.0, abs=1e-6)
    engine.tick(fade.start - 0.001)
    assert tree.get("/x") == 1.0  # not yet
    engine.tick(fade.start + 0.5)
    assert 0.0 < tree.get("/x") < 1.0


def test_a_hand_on_a_control_takes_it_out_of_the_fade():
    tree, engine, _ = scene_tree()
    engine.goto(1)
    start = engine._fade.start
    engine.tick(start + 0.5)
    tree.set("/x", 0.1, "midi:fader")
    engine.tick(start + 1.5)
    assert tree.get("/x") == 0.1
    engine.tick(start + 3)
    assert tree.get("/x") == 0.1


def test_go_back_and_cue_from_any_source_and_morph():
    tree, engine, _ = scene_tree()
    tree.emit("/scene/go")
    engine.tick(time.perf_counter())
    assert engine.position == 0
    tree.set("/scene/cue", 2, "osc:127.0.0.1:5000")  # a controller picks cue 2
    engine.tick(time.perf_counter())
    assert engine.position == 1
    tree.emit("/scene/back")
    engine.tick(time.perf_counter())
    assert engine.position == 0
    tree.update({"/scene/a": "calm", "/scene/b": "peak", "/scene/morph": 0.75}, "osc:127.0.0.1:5000")
    engine.tick(time.perf_counter() + 100)
    assert tree.get("/x") == pytest.approx(0.75) and tree.get("/style") == "neon"
    with pytest.raises(ValueError, match="no cue or scene"):
        engine.goto("nowhere")


def test_scene_problems_are_listed_by_key():
    tree, _, _ = scene_tree()
    problems = SceneEngine.check(tree, {"a": {"/nope": 1, "/style": "cubism"}}, [CueSection(scene="b")])
    assert any("[scenes.a] '/nope' is not a parameter" in p for p in problems)
    assert any("[scenes.a]" in p and "cubism" in p for p in problems)
    assert any("scene 'b' is not defined" in p for p in problems)


def test_hud_draws_readable_lines_over_a_darkened_band_and_leaves_the_frame_alone():
    import numpy as np

    from live.video import hud

    frame = np.full((480, 640, 3), 200, np.uint8)
    out = hud.draw(frame, ["live  latency 33 ms", "OSC 10 applied, 3 rejected"])
    assert (frame == 200).all()  # the frame itself (what is recorded) is untouched
    band = out[:50, :200]
    assert (band == 255).any() and (band < 100).mean() > 0.5  # white text on a dark band
    assert (out[200:, 300:] == 200).all()


def test_shipped_tablet_layout_matches_the_vj_show():
    """show_configs/vj-open-stage-control.json is what `live layout` makes of vj.toml: every widget sends to a
    parameter or event the show has, and every mapped control of the show has a widget."""
    import json

    from live.control.layout import open_stage_control
    from fixtures_live import tree_of
    from live.show import DEFAULT_SHOW, load_show

    folder = DEFAULT_SHOW.parent
    show = load_show(folder / "vj.toml")
    shipped = json.loads((folder / "vj-open-stage-control.json").read_text())
    assert shipped == json.loads(json.dumps(open_stage_control(show)))  # regenerate: live layout ... --out ...
    tree = tree_of(show)
    addresses = {w["address"] for w in shipped["content"]["widgets"]}
    assert addresses <= set(tree.params) | set(tree.events)
    assert {m.param for m in show.midi.map} <= addresses
    assert {"/scene/go", "/scene/back", "/tempo/tap", "/live/panic"} <= addresses
    fader = next(w for w in shipped["content"]["widgets"] if w["address"] == "/tempo/bpm")
    assert fader["range"] == {"min": 20.0, "max": 400.0}
