"""The audio engine on a real (dummy-clocked) JACK server, recorded by a JACK client of the test's own."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import jack
import numpy as np
import pytest

from live.audio.engine import AudioEngine, Tap
from live.errors import LiveError
from live.params import ParamTree

RATE = 48000


def synth_tree(auto: bool = False) -> ParamTree:
    tree = ParamTree(*AudioEngine.params())
    tree.set("/synth/auto", auto)
    tree.set("/synth/timbre/d", -1.0)  # no breath noise: a clean pitch to measure
    return tree


def dominant_hz(audio: np.ndarray) -> float:
    mono = audio.mean(axis=1)
    magnitude = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / RATE)[np.argmax(magnitude)])


class Recorder:
    """A JACK client with two inputs wired from our PortAudio outputs; records `seconds` once started."""

    def __init__(self, seconds: float) -> None:
        self.audio = np.zeros((int(seconds * RATE), 2), dtype=np.float32)
        self.frames = 0
        self.done = threading.Event()
        self.client = jack.Client("live-test-recorder", no_start_server=True)
        self.inputs = [self.client.inports.register(f"in_{i}") for i in (1, 2)]
        self.client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        take = min(frames, len(self.audio) - self.frames)
        for channel, port in enumerate(self.inputs):
            self.audio[self.frames:self.frames + take, channel] = port.get_array()[:take]
        self.frames += take
        if self.frames == len(self.audio):
            self.done.set()

    def connect_to_engine(self) -> None:
        ours = [p for p in self.client.get_ports(is_output=True, is_audio=True) if not p.name.startswith("system:")]
        assert len(ours) == 2, f"expected our two PortAudio outputs, JACK has: {[p.name for p in ours]}"
        for source, sink in zip(ours, self.inputs):
            self.client.connect(source, sink)

    def __enter__(self) -> Recorder:
        self.client.activate()
        return self

    def __exit__(self, *_: object) -> None:
        self.client.deactivate()
        self.client.close()


def test_plays_a_note_through_jack(jack_server: str, synth_decoder: Path) -> None:
    tree = synth_tree()
    engine = AudioEngine(tree, synth_decoder.with_suffix(".json"), device="system")
    try:
        status = engine.open()
        assert "'system' (JACK Audio Connection Kit), 48000 Hz, 128-frame blocks" in status
        assert engine.stats()["device"] == "system"
        blocks_before, started = engine.stats()["blocks"], time.monotonic()
        tree.emit("/synth/note", 57, 0.8)
        with Recorder(1.5) as recorder:
            recorder.connect_to_engine()
            assert recorder.done.wait(10), "the JACK recorder never filled: is the server running?"
        elapsed = time.monotonic() - started
        stats = engine.stats()
    finally:
        engine.close()
    heard = recorder.audio[RATE // 4:]  # skip the connection moment and the attack
    assert np.sqrt(np.mean(heard**2)) > 0.01
    assert dominant_hz(heard) == pytest.approx(220.0, rel=0.02)
    assert isinstance(stats["underruns"], int) and stats["underruns"] >= 0
    assert isinstance(stats["starved"], int) and stats["starved"] >= 0
    assert stats["blocks"] - blocks_before >= 0.5 * elapsed * RATE / 128
    assert 0.0 < stats["peak"] <= 1.0

    again = AudioEngine(synth_tree(), synth_decoder.with_suffix(".json"), device="SYST")  # the device was released
    try:
        assert "'system'" in again.open()
        assert again.stats()["device"] == "system"
    finally:
        again.close()
        again.close()


def test_missing_device_runs_silent_in_real_time(synth_decoder: Path) -> None:
    tree = synth_tree(auto=True)  # the built-in arpeggio: sound with no controller
    engine = AudioEngine(tree, synth_decoder.with_suffix(".json"), device="no-such-card")
    try:
        status = engine.open()
        assert "no output device 'no-such-card'" in status and "running silent" in status and "fix:" in status
        engine.read_tap()
        started = time.monotonic()
        time.sleep(1.0)
        audio, elapsed = engine.read_tap(), time.monotonic() - started
        assert engine.stats()["device"] is None
    finally:
        engine.close()
    assert audio.shape[1] == 2 and audio.dtype == np.float32
    assert 0.5 * elapsed * RATE <= len(audio) <= 1.5 * elapsed * RATE
    assert np.sqrt(np.mean(audio**2)) > 0.005


def test_a_stalled_silent_engine_renders_the_backlog(synth_decoder: Path) -> None:
    """With no device a stall loses nothing: a recording keeps every sample, in step with the clock."""
    engine = AudioEngine(synth_tree(auto=True), synth_decoder.with_suffix(".json"), device="no-such-card")
    render, calls = engine.synth.render, [0]

    def stalls_once(*args: object) -> np.ndarray:  # the thread stops 0.3 s, as on a machine under a storm
        calls[0] += 1
        if calls[0] == 40:
            time.sleep(0.3)
        return render(*args)

    engine.synth.render = stalls_once
    try:
        engine.open()
        engine.read_tap()
        started = time.monotonic()
        time.sleep(1.5)
        audio, elapsed = engine.read_tap(), time.monotonic() - started
        starved = engine.stats()["starved"]
    finally:
        engine.close()
    assert starved == 1
    assert len(audio) == pytest.approx(elapsed * RATE, rel=0.05)  # skipping the stall would lose 20 %


def test_a_broken_install_raises(tmp_path: Path) -> None:
    with pytest.raises(LiveError, match="manifest not found"):
        AudioEngine(synth_tree(), tmp_path / "synth-decoder.json")


def test_tap_keeps_the_newest_and_counts_the_dropped() -> None:
    tap = Tap(1000)
    blocks = [np.full((128, 2), i, dtype=np.float32) for i in range(10)]  # 1280 frames into 1000
    for block in blocks:
        tap.write(block)
    kept = tap.read()
    assert len(kept) == 1000 and tap.dropped == 280
    np.testing.assert_array_equal(kept, np.concatenate(blocks)[280:])
    tap.write(blocks[0])
    assert len(tap.read()) == 128 and len(tap.read()) == 0
