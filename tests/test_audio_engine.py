"""The audio engine on a real (dummy-clocked) JACK server, recorded by a JACK client of the test's own."""

from __future__ import annotations

import os
import signal
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
    assert isinstance(stats["xruns"], int) and stats["xruns"] >= 0
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
        audio, elapsed = engine.read_tap()[1], time.monotonic() - started
        assert engine.stats()["device"] is None
    finally:
        engine.close()
    assert audio.shape[1] == 2 and audio.dtype == np.float32
    assert 0.5 * elapsed * RATE <= len(audio) <= 1.5 * elapsed * RATE
    assert np.sqrt(np.mean(audio**2)) > 0.005


def stopping(engine: AudioEngine, seconds: float, after: float = 0.3) -> threading.Thread:
    """Stop the render process for `seconds` (SIGSTOP, then SIGCONT), `after` seconds from now: the machine
    taking the CPU away from it, for real."""
    pid = engine.process.pid

    def stop_and_go() -> None:
        time.sleep(after)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(pid, signal.SIGCONT)

    thread = threading.Thread(target=stop_and_go)
    thread.start()
    return thread


def tap_for(engine: AudioEngine, seconds: float, stall: float) -> tuple[np.ndarray, float]:
    """What the tap holds `seconds` after the engine opened, with its render process stopped for `stall` on the
    way, and the exact time that took."""
    engine.open()
    engine.read_tap()
    started = time.monotonic()
    stopper = stopping(engine, stall)
    time.sleep(seconds)
    stopper.join()
    return engine.read_tap()[1], time.monotonic() - started


def longest_silence(audio: np.ndarray) -> int:
    silent = np.concatenate([[0], (np.abs(audio).max(axis=1) == 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(silent))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


@pytest.mark.parametrize("stall, silence", [(0.3, 0.0), (1.3, 1.3)])
def test_a_stalled_silent_engine_renders_the_backlog_or_keeps_time_with_silence(synth_decoder: Path, stall: float,
                                                                                silence: float) -> None:
    """With no device a short stall loses nothing (the backlog is rendered); one past CATCH_UP_SECONDS is skipped
    and stands in the tap as silence: either way a recording keeps in step with the clock."""
    engine = AudioEngine(synth_tree(auto=True), synth_decoder.with_suffix(".json"), device="no-such-card")
    try:
        audio, elapsed = tap_for(engine, 2.0, stall)
        starved = engine.stats()["starved"]
    finally:
        engine.close()
    assert starved >= 1  # the stop, counted (a loaded machine may add a short hiccup of its own, counted too)
    assert len(audio) == pytest.approx(elapsed * RATE, rel=0.03)  # losing the stall would lose 15 % or 65 %
    assert longest_silence(audio) == pytest.approx(silence * RATE, abs=0.05 * RATE)


def test_a_device_that_stopped_leaves_silence_in_the_tap(jack_server: str, synth_decoder: Path) -> None:
    """The machine stops the render process (and with it the device's callback) for 0.3 s: JACK plays silence;
    the tap (what a recording gets) has that silence in place, so the audio after it does not come early against
    the video, and the device plays on afterwards."""
    engine = AudioEngine(synth_tree(auto=True), synth_decoder.with_suffix(".json"), device="system")
    try:
        audio, elapsed = tap_for(engine, 2.0, 0.3)
        stats = engine.stats()
    finally:
        engine.close()
    assert stats["device"] == "system" and stats["lost"] == 0
    assert len(audio) == pytest.approx(elapsed * RATE, rel=0.03)
    assert longest_silence(audio) == pytest.approx(0.3 * RATE, abs=0.05 * RATE)


def test_a_broken_install_raises(tmp_path: Path) -> None:
    with pytest.raises(LiveError, match="manifest not found"):
        AudioEngine(synth_tree(), tmp_path / "synth-decoder.json")


def test_tap_keeps_the_newest_and_counts_the_dropped() -> None:
    tap = Tap(1000, RATE, 384)
    blocks = [np.full((128, 2), i, dtype=np.float32) for i in range(10)]  # 1280 frames into 1000
    for i, block in enumerate(blocks):
        tap.write(block, i * 128 / RATE)
    position, kept = tap.read()
    assert len(kept) == 1000 and tap.dropped == 280 and tap.silence == 0 and position == 280
    np.testing.assert_array_equal(kept, np.concatenate(blocks)[280:])


def test_tap_puts_silence_where_the_blocks_left_a_gap_and_ignores_jitter() -> None:
    tap = Tap(RATE, RATE, 384)
    ones = np.ones((128, 2), dtype=np.float32)
    tap.write(ones, 10.0)
    tap.write(ones, 10.0 + 128 / RATE + 0.004)  # 4 ms late: scheduling jitter, not a gap
    tap.write(ones, 10.0 + 256 / RATE + 0.100)  # 100 ms late: the device played 4800 frames of silence
    position, kept = tap.read()
    assert len(kept) == 384 + 4800 and tap.silence == 4800 and position == 0
    assert (kept[:256] == 1).all() and (kept[256:256 + 4800] == 0).all() and (kept[-128:] == 1).all()
