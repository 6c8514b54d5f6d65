"""Learned mappings the way a performer makes one: over real OSC on 127.0.0.1, set the inputs and the outputs by
hand, record, train, run; the mapping is real scikit-learn, exported to ONNX and run on ONNX Runtime."""

import json
import socket
import time

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from fixtures_live import show_with, wait_until
from live.cli import main
from live.control.learned_map import RECORD, RUN, STATE
from live.errors import LiveError
from live.graph import build
from live.show import load_show

IN1, IN2 = "/video/blend", "/video/strength"
OUT1, OUT2 = "/latent/mix", "/synth/gain"
REGRESSION = {"inputs": [IN1, IN2], "outputs": [OUT1, OUT2]}


def learned(in1: float, in2: float) -> tuple[float, float]:
    return in1, 1 - in2


class Performer:
    """A show's control surface opened (OSC on a free port), and a python-osc client playing it."""

    def __init__(self, show_path) -> None:
        self.lines: list[str] = []
        self.graph = build(load_show(show_path), window=False, say=self.lines.append)
        self.surface = self.graph.surface
        self.lines.append(self.surface.open())
        self.tree = self.surface.tree
        self.client = SimpleUDPClient("127.0.0.1", self.surface.osc.port)

    def set(self, **values: float) -> None:
        """Send values by OSC and wait until the tree holds them."""
        addresses = {"in1": IN1, "in2": IN2, "out1": OUT1, "out2": OUT2, "x": "/latent/x", "y": "/latent/y"}
        for name, value in values.items():
            self.client.send_message(addresses[name], value)
        assert wait_until(lambda: all(self.tree.get(addresses[n]) == pytest.approx(v, abs=1e-6)
                                      for n, v in values.items()))

    def record(self, seconds: float = 0.12) -> None:
        before = self.surface.learned.count
        self.client.send_message(RECORD, 1)
        assert wait_until(lambda: self.surface.learned.count >= before + 3)
        time.sleep(seconds)
        self.client.send_message(RECORD, 0)
        assert wait_until(lambda: not self.tree.get(RECORD))

    def train(self) -> str:
        said = len(self.lines)
        self.client.send_message("/live/map/train", [])
        assert wait_until(lambda: any(line.startswith("Map:") for line in self.lines[said:]), timeout=60)
        return next(line for line in self.lines[said:] if line.startswith("Map:"))

    def close(self) -> None:
        self.surface.close()


@pytest.fixture
def performer_of(tmp_path):
    opened = []

    def open_show(**map_section) -> Performer:
        path = show_with(tmp_path, osc={"port": 0}, map=map_section)
        performer = Performer(path)
        opened.append(performer)
        return performer

    yield open_show
    for performer in opened:
        performer.close()


def test_record_train_run_over_osc_and_the_mapping_reloads_with_the_show(tmp_path, performer_of):
    p = performer_of(**REGRESSION)
    assert "no mapping trained yet" in p.lines[0]
    points = [(a, b) for a in (0.1, 0.5, 0.9) for b in (0.1, 0.5, 0.9)]
    for in1, in2 in points:
        out1, out2 = learned(in1, in2)
        p.set(in1=in1, in2=in2, out1=out1, out2=out2)
        p.record()
    examples = p.surface.learned.count
    assert examples >= 3 * len(points)
    x, y = p.surface.learned.examples()
    assert np.allclose(y[:, 0], x[:, 0]) and np.allclose(y[:, 1], 1 - x[:, 1])  # each example as it was shown

    line = p.train()
    assert line.startswith(f"Map: trained regression (2 -> 2) on {examples} examples in "), line
    print(line)
    for name in ("show-map.onnx", "show-map.json", "show-map.npz"):
        assert (tmp_path / name).is_file(), name
    manifest = json.loads((tmp_path / "show-map.json").read_text())
    assert manifest["kind"] == "param-map" and manifest["controls"]["inputs"] == [IN1, IN2]
    assert manifest["provenance"]["examples"] == examples and manifest["provenance"]["score"] < 0.05

    p.set(out1=0.0, out2=0.0)  # the outputs somewhere else: the mapping must move them
    p.client.send_message(RUN, 1)
    for in1, in2 in [(0.9, 0.1), (0.3, 0.7), (0.6, 0.2)]:  # a recorded point, then two it never saw
        p.set(in1=in1, in2=in2)
        want = learned(in1, in2)
        assert wait_until(lambda: p.tree.get(OUT1) == pytest.approx(want[0], abs=0.08)
                          and p.tree.get(OUT2) == pytest.approx(want[1], abs=0.08)), (in1, in2, p.tree.get(OUT1),
                                                                                      p.tree.get(OUT2))
        assert p.tree.written_by[OUT1] == "map"
    time.sleep(0.3)
    stats = p.surface.learned.stats()
    print(f"per-tick run cost: mean {stats['run_us_mean']:.0f} us, max {stats['run_us_max']:.0f} us "
          f"over {stats['runs']} ticks")
    assert stats["runs"] > 5 and stats["run_us_mean"] < 5000
    p.client.send_message(RUN, 0)
    assert wait_until(lambda: not p.tree.get(RUN))
    here = p.tree.get(OUT1)
    p.set(in1=0.1)
    time.sleep(0.1)
    assert p.tree.get(OUT1) == here  # off: the inputs no longer move the outputs
    p.close()

    # the show opened again with `[map] run = true`: the saved mapping (hash checked) plays at once
    again = performer_of(**REGRESSION, run=True)
    assert "mapping from show-map.onnx" in again.lines[0] and f"{examples} example(s)" in again.lines[0]
    again.set(in1=0.2, in2=0.4)
    assert wait_until(lambda: again.tree.get(OUT1) == pytest.approx(0.2, abs=0.08)
                      and again.tree.get(OUT2) == pytest.approx(0.6, abs=0.08))


def test_classification_recalls_three_presets_from_three_poses(tmp_path, performer_of):
    p = performer_of(inputs=[IN1, IN2], outputs=["/latent/x", "/latent/y"], model="classification")
    poses = {(0.1, 0.1): (-1.0, 0.5), (0.9, 0.1): (0.2, -0.4), (0.5, 0.9): (0.8, 0.8)}
    for (in1, in2), (x, y) in poses.items():
        for jitter in (-0.03, 0.0, 0.03):  # a pose is never held quite still
            p.set(in1=in1 + jitter, in2=in2 - jitter, x=x, y=y)
            p.record(0.05)
    line = p.train()
    assert "trained classification (3 presets)" in line and "100.0% of examples recalled" in line, line
    p.set(x=0.0, y=0.0)
    p.client.send_message(RUN, 1)
    for (in1, in2), (x, y) in [*poses.items(), *poses.items()]:
        p.set(in1=in1 + 0.05, in2=in2 + 0.04)
        assert wait_until(lambda: (p.tree.get("/latent/x"), p.tree.get("/latent/y"))
                          == (pytest.approx(x), pytest.approx(y))), (in1, in2)


def test_a_mapping_to_an_address_the_show_lacks_names_the_key_and_nearby_addresses(tmp_path):
    path = show_with(tmp_path, map={"inputs": ["/video/blnd"], "outputs": [OUT1]})
    with pytest.raises(LiveError) as err:
        build(load_show(path), window=False, say=lambda _: None)
    assert "[map] inputs: '/video/blnd' is not a parameter of this show (nearby: /video/blend" in str(err.value)
    path = show_with(tmp_path, map={"inputs": [IN1], "outputs": ["/video/style_a"]})
    with pytest.raises(LiveError, match=r"\[map\] outputs: '/video/style_a' is a enum, not a number"):
        build(load_show(path), window=False, say=lambda _: None)
    path = show_with(tmp_path, map={"inputs": [IN1], "outputs": [OUT1], "file": "../elsewhere.onnx"})
    with pytest.raises(LiveError, match=r"\[map\] file = '../elsewhere.onnx' points outside the show's folder"):
        build(load_show(path), window=False, say=lambda _: None)


def test_too_few_examples_and_a_corrupt_mapping_are_one_line_and_the_show_plays_on(tmp_path, performer_of):
    p = performer_of(**REGRESSION)
    line = p.train()
    assert line.startswith("Map: 0 example(s) recorded; training needs at least 2, nothing changed"), line
    assert not (tmp_path / "show-map.onnx").exists()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # what a tablet asks: the state, and why
        sock.settimeout(3.0)
        sock.sendto(OscMessageBuilder(STATE).build().dgram, ("127.0.0.1", p.surface.osc.port))
        reply = OscMessage(sock.recv(65536))
    assert reply.address == STATE and reply.params[0].startswith("Map no mapping: 0 examples; Map: 0 example(s)")
    p.set(in1=0.2, in2=0.3, out1=0.2, out2=0.7)
    p.record()
    p.set(in1=0.8, in2=0.6, out1=0.8, out2=0.4)
    p.record()
    assert p.train().startswith("Map: trained regression")
    p.close()

    model = tmp_path / "show-map.onnx"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")  # the file changed behind the manifest's back
    again = performer_of(**REGRESSION, run=True)
    assert "mapping off: Map:" not in again.lines[0]
    assert "does not match the sha256" in again.lines[0] and "mapping off" in again.lines[0]
    assert again.surface.learned.runner is None
    again.set(in1=0.5, out1=0.1)  # the show plays on, mapping off: OSC still sets values, nothing overrides them
    time.sleep(0.1)
    assert again.tree.get(OUT1) == pytest.approx(0.1)
    assert "Map no mapping" in again.surface.status()


def test_live_map_train_and_info_from_the_saved_examples(tmp_path, performer_of, capsys):
    p = performer_of(**REGRESSION)
    for in1, in2 in [(0.1, 0.2), (0.5, 0.5), (0.9, 0.8)]:
        out1, out2 = learned(in1, in2)
        p.set(in1=in1, in2=in2, out1=out1, out2=out2)
        p.record()
    p.train()
    p.close()
    show = str(tmp_path / "show.toml")
    before = (tmp_path / "show-map.json").stat().st_mtime_ns
    assert main(["map", "train", show]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Map: trained regression (2 -> 2) on ") and "show-map.json" in out
    assert (tmp_path / "show-map.json").stat().st_mtime_ns != before
    assert main(["map", "info", show]) == 0
    out = capsys.readouterr().out
    assert f"{IN1}, {IN2} -> {OUT1}, {OUT2} (regression" in out and "(sha256 checked)" in out
    assert main(["map", "info", str(show_with(tmp_path / "..", osc={"port": 0}))]) == 2
    assert "has no [map]" in capsys.readouterr().err


def test_a_saved_show_with_another_map_swaps_it_and_a_bad_one_changes_nothing(tmp_path, performer_of):
    p = performer_of(**REGRESSION)
    p.set(in1=0.2, in2=0.3, out1=0.2, out2=0.7)
    p.record()
    before = p.surface.learned
    with pytest.raises(LiveError, match=r"\[map\] outputs: '/synth/gian' is not a parameter.*nearby: /synth/gain"):
        p.graph.reload(load_show(show_with(tmp_path, osc={"port": 0},
                                           map={"inputs": [IN1], "outputs": ["/synth/gian"]})))
    assert p.surface.learned is before and before.count > 0
    p.client.send_message(RECORD, 1)  # the old map still records
    assert wait_until(lambda: before.count > 10)
    p.client.send_message(RECORD, 0)
    notes = p.graph.reload(load_show(show_with(tmp_path, osc={"port": 0}, map={"inputs": [IN1], "outputs": [OUT2]})))
    assert any(n.startswith("Map: 1 input(s) -> 1 output(s), regression, 0 example(s)") for n in notes), notes
    assert p.surface.learned is not before and not before._thread.is_alive()


def test_a_measured_input_drives_the_mapping(tmp_path):
    """A read-only parameter an analysis publishes (ParamTree.measure) is an input like any other."""
    from live.control.surface import ControlSurface
    from live.graph import parameters, stages_of
    from live.params import Param

    show = load_show(show_with(tmp_path, osc={"port": 0}, map={"inputs": ["/in/audio/rms"], "outputs": [OUT1]}))
    params, events = parameters(show, stages_of(show))
    lines: list[str] = []
    surface = ControlSurface(show, [*params, Param("/in/audio/rms", "float", 0.0, readonly=True)], events,
                             lines.append)
    surface.open()
    try:
        learned, tree = surface.learned, surface.tree
        for rms in (0.0, 0.25, 0.5, 0.75, 1.0):
            tree.measure({"/in/audio/rms": rms}, time.perf_counter())
            tree.set(OUT1, 1 - rms, "test")
            tree.set(RECORD, True, "test")
            before = learned.count
            assert wait_until(lambda: learned.count >= before + 3)
            tree.set(RECORD, False, "test")
        tree.emit("/live/map/train")
        assert wait_until(lambda: learned.runner is not None, timeout=60), lines
        tree.set(RUN, True, "test")
        for rms in (0.1, 0.6, 0.9):
            tree.measure({"/in/audio/rms": rms}, time.perf_counter())
            assert wait_until(lambda: tree.get(OUT1) == pytest.approx(1 - rms, abs=0.08)), (rms, tree.get(OUT1))
    finally:
        surface.close()
    show = load_show(show_with(tmp_path, osc={"port": 0}, map={"inputs": [IN1], "outputs": ["/in/audio/rms"]}))
    with pytest.raises(LiveError, match=r"\[map\] outputs: '/in/audio/rms' is measured \(read-only\)"):
        ControlSurface(show, [*params, Param("/in/audio/rms", "float", 0.0, readonly=True)], events)
