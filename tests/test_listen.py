"""What the show hears: the analysis on known signals, then the input Part on real parts (a JACK client playing
into our PortAudio input; a sound file the test writes), its timing, and its errors."""

from __future__ import annotations

import threading
import re
import time
from pathlib import Path

import jack
import numpy as np
import pytest
import soundfile as sf

from live.audio.analysis import Analysis
from live.audio.listen import AudioIn, AudioInSection
from live.control.tempo import Clock
from live.errors import LiveError
from live.params import ParamTree
from tests.fixtures_audio import jack_server  # noqa: F401  (a fixture)

RATE, BLOCK = 48000, 128
BPM = 123.0
IN = "/in/audio/"


def cents(hz: float | np.ndarray, true: float | np.ndarray) -> np.ndarray:
    return 1200.0 * np.log2(np.asarray(hz) / true)


def click_track(seconds: float, bpm: float = BPM, start: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Short 2 kHz bursts (5 ms decay) at `bpm`; returns (signal, the frame each click starts at)."""
    x = np.zeros(int(seconds * RATE), np.float32)
    n = np.arange(240)
    burst = (0.8 * np.sin(2 * np.pi * 2000 * n / RATE) * np.exp(-n / 48)).astype(np.float32)
    starts = np.arange(start * RATE, len(x) - 240, 60.0 / bpm * RATE).round().astype(int)
    for s in starts:
        x[s:s + 240] += burst
    return x, starts


def sweep(seconds: float, f0: float = 110.0, f1: float = 880.0) -> tuple[np.ndarray, np.ndarray]:
    """An exponential sine sweep; returns (signal, its instantaneous frequency per frame)."""
    t = np.arange(int(seconds * RATE)) / RATE
    f = f0 * (f1 / f0) ** (t / seconds)
    return (0.5 * np.sin(2 * np.pi * np.cumsum(f) / RATE)).astype(np.float32), f


def sung(seconds: float, hz: float = 220.0) -> tuple[np.ndarray, np.ndarray]:
    """A sung-like tone: `hz` with a 5 Hz vibrato of +-30 cents and six harmonics falling off."""
    t = np.arange(int(seconds * RATE)) / RATE
    f = hz * 2 ** (30 / 1200 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f) / RATE
    return (0.3 * sum(np.sin(k * phase) / k ** 1.2 for k in range(1, 7))).astype(np.float32), f


def analyse(x: np.ndarray) -> tuple[Analysis, list]:
    analysis, hops = Analysis(RATE), []
    for start in range(0, len(x) - BLOCK + 1, BLOCK):
        hops += analysis.feed(x[start:start + BLOCK], start / RATE)
    return analysis, hops


def pitch_errors(hops: list, analysis: Analysis, frequency_at) -> np.ndarray:
    """Cents off the true frequency at the time each confident hop's pitch describes."""
    return np.array([cents(h.values["pitch"], frequency_at(h.at - analysis.pitch.age(h.values["pitch"]) / RATE))
                     for h in hops if h.values["pitch_confidence"] > 0.8 and h.values["pitch"] > 0])


# --- the analysis alone, on known signals ------------------------------------------------------------------

def test_click_track_tempo_onsets_and_beats():
    x, starts = click_track(10.0)
    analysis, hops = analyse(x)
    assert analysis.rate >= 100
    onsets = np.array([h.onset for h in hops if h.onset is not None]) * RATE
    assert len(onsets) == len(starts)
    assert np.max(np.abs(onsets - starts)) < BLOCK  # each onset within one block of its click
    eighth = starts[7] / RATE
    after = [h.values["tempo"] for h in hops if eighth < h.at < eighth + 0.05]
    assert after and all(abs(t - BPM) < 1.0 for t in after)  # within 1 BPM after 8 beats
    assert abs(hops[-1].values["tempo"] - BPM) < 0.1
    beats = np.array([h.beat for h in hops if h.beat is not None]) * RATE
    assert len(beats) >= len(starts) - 5
    assert np.max(np.abs(beats[:, None] - starts[None, :]).min(axis=1)) < BLOCK  # beats fall on the clicks


def test_sweep_pitch_and_centroid_rise():
    x, f = sweep(4.0)
    analysis, hops = analyse(x)
    errors = pitch_errors(hops, analysis, lambda t: f[int(round(t * RATE))])
    assert len(errors) > 0.9 * len(hops) and np.max(np.abs(errors)) < 20
    centroid = np.array([h.values["centroid"] for h in hops[10:]])
    assert np.mean(np.diff(centroid) > 0) > 0.9 and centroid[-1] > centroid[0] + 0.25
    pitch = np.array([h.values["pitch"] for h in hops[10:]])
    assert np.mean(np.diff(pitch) > 0) > 0.9


def test_sung_tone_with_vibrato_within_20_cents():
    x, f = sung(3.0)
    analysis, hops = analyse(x)
    errors = pitch_errors(hops, analysis, lambda t: f[int(round(t * RATE))])
    assert len(errors) > 0.95 * len(hops) and np.max(np.abs(errors)) < 20
    assert not any(h.beat for h in hops)


def test_silence_at_rest_and_noise_without_pitch_or_beats():
    _, hops = analyse(np.zeros(2 * RATE, np.float32))
    assert all(v == 0.0 for h in hops for v in h.values.values())
    noise = (0.3 * np.random.default_rng(3).standard_normal(8 * RATE)).astype(np.float32)
    _, hops = analyse(noise)
    assert all(h.values["pitch"] == 0.0 and h.values["pitch_confidence"] < 0.5 for h in hops)
    assert not any(h.beat for h in hops) and all(h.values["tempo"] == 0.0 for h in hops)
    assert sum(h.onset is not None for h in hops) <= 1  # the noise starting, at most
    assert np.mean([h.values["loudness"] for h in hops]) > 0.7  # noise is heard, though


def test_cost_per_hop():
    """The analysis of one hop costs well under the hop's 5.3 ms (median, robust to a loaded machine)."""
    analysis, _ = analyse(click_track(3.0)[0])
    block = np.zeros(analysis.hop, np.float32)
    block[::97] = 0.1
    times = []
    for i in range(300):
        start = time.perf_counter()
        analysis.feed(block, 10.0 + i * analysis.hop / RATE)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 1e-3


# --- the input Part on real parts --------------------------------------------------------------------------

class Player:
    """A JACK client that plays a signal into our PortAudio input, once, noting in perf_counter() time when each
    cycle's frames count as captured: a client is handed in cycle N what was captured during cycle N-1, so frame k
    of a cycle was captured at (the cycle's start - one period) + k / rate. Each cycle is timed on its own: the
    dummy server on a loaded machine does not keep to its nominal rate."""

    def __init__(self, signal: np.ndarray) -> None:
        self.signal = signal
        self.position = 0
        self.cycles: list[tuple[int, float]] = []  # (the signal's frame at the cycle's start, its capture time)
        self.done = threading.Event()
        self.client = jack.Client("live-test-player", no_start_server=True)
        self.out = self.client.outports.register("out")
        self.client.set_process_callback(self._process)
        self.xruns: list[float] = []  # when the server reported one (a client, often this Python one, was late)
        self.client.set_xrun_callback(lambda _: self.xruns.append(time.perf_counter()))

    def _process(self, frames: int) -> None:
        buf = self.out.get_array()
        buf[:] = 0.0
        take = min(frames, len(self.signal) - self.position)
        if take <= 0:
            self.done.set()
            return
        self.cycles.append((self.position,
                            time.perf_counter() - (self.client.frames_since_cycle_start + frames) / RATE))
        buf[:take] = self.signal[self.position:self.position + take]
        self.position += take

    def time_of(self, frames: np.ndarray) -> np.ndarray:
        """When each frame of the signal was captured (perf_counter() time)."""
        starts, times = np.array(self.cycles).T
        i = np.searchsorted(starts, frames, side="right") - 1
        return times[i] + (frames - starts[i]) / RATE

    def frame_at(self, at: np.ndarray) -> np.ndarray:
        """The signal's frame captured at each perf_counter() time (clipped to the signal)."""
        starts, times = np.array(self.cycles).T
        i = np.clip(np.searchsorted(times, at, side="right") - 1, 0, len(times) - 1)
        return np.round(starts[i] + (at - times[i]) * RATE).astype(int)

    def __enter__(self) -> Player:
        self.client.activate()
        ours = [p for p in self.client.get_ports(is_input=True, is_audio=True)
                if not p.name.startswith(("system:", "live-test-player:"))]
        assert ours, "our PortAudio input is not in the JACK graph"
        for port in ours:
            for other in self.client.get_all_connections(port):
                self.client.disconnect(other, port)  # the system capture PortAudio connected: silence, not ours
            self.client.connect(self.out, port)
        return self

    def __exit__(self, *_: object) -> None:
        self.client.deactivate()
        self.client.close()


class Heard:
    """Every published hop of an AudioIn, with the perf_counter() time it reached the tree."""

    def __init__(self, tree: ParamTree) -> None:
        self.hops: list[tuple[float, float, dict]] = []  # (at, arrived, values)
        tree.on_measure(lambda values, at: self.hops.append((at, time.perf_counter(), dict(values))))

    def series(self, name: str, since: float = 0.0) -> np.ndarray:
        return np.array([(at, v[IN + name]) for at, _, v in self.hops if at >= since])


def listening(section: AudioInSection, folder: Path = Path("."), clock: Clock | None = None):
    tree = ParamTree(AudioIn.params(section))
    return AudioIn(section, folder, tree, clock, say=lambda _: None), tree


def play(signal: np.ndarray, tail: float = 0.3) -> tuple[AudioIn, Heard, Player]:
    part, tree = listening(AudioInSection(source="system", channels=1))
    heard = Heard(tree)
    line = part.open()
    try:
        assert "'system' (JACK Audio Connection Kit), 48000 Hz" in line
        with Player(signal) as player:
            assert player.done.wait(len(signal) / RATE + 10.0)
            time.sleep(tail)
    finally:
        part.close()
    assert part.counts["overflows"] == 0 and part.counts["lost"] == 0
    return part, heard, player


def heard(part: AudioIn, kind: str) -> np.ndarray:
    return np.array([t for k, t in part.heard if k == kind])


def rises(heard: Heard, name: str) -> np.ndarray:
    """When each rise of a value (an onset, a beat) reached the tree."""
    series = np.array([(arrived, v[IN + name]) for _, arrived, v in heard.hops])
    up = np.flatnonzero(np.diff(series[:, 1]) > 0.05) + 1
    return series[up, 0]


def test_click_track_through_jack(jack_server):  # noqa: F811
    x, starts = click_track(6.0)
    part, tree_heard, player = play(x)
    clicks = player.time_of(starts)
    onsets = heard(part, "onset")
    assert len(onsets) == len(clicks)
    error = (onsets - clicks) * RATE
    print(f"onset time - click time: {np.round(error).astype(int).tolist()} frames "
          f"({len(player.xruns)} server xruns)")
    clean = np.array([not any(abs(x - c) < 0.02 for x in player.xruns) for c in clicks], bool)  # see within_20_cents
    assert clean.sum() >= 8 and np.max(np.abs(error[clean])) < BLOCK  # within one block
    arrived = rises(tree_heard, "onset")  # from the click in the input to its onset value in the tree
    latency = np.array([arrived[arrived > c][0] - c for c in clicks])
    print(f"click to /in/audio/onset in the tree: median {np.median(latency) * 1000:.1f} ms, "
          f"max {np.max(latency) * 1000:.1f} ms")
    assert np.all(latency > 0) and np.median(latency) < 0.05
    # the tempo from the 8th beat on: within 1 BPM of the clicks as the (dummy, jittery) JACK server delivered
    # them, and of the track's own tempo when the server kept its clock
    played = 60.0 / np.mean(np.diff(clicks))
    tempo = tree_heard.series("tempo", since=clicks[7] + 0.01)
    assert len(tempo) and np.all(np.abs(tempo[:, 1] - played) < 1.0), (played, tempo[:, 1].min(), tempo[:, 1].max())
    assert abs(played - BPM) < 3.0  # the server ran near its clock (it falls behind when the machine is loaded)
    beats = heard(part, "beat")
    assert len(beats) >= len(clicks) - 5
    # A beat is the grid's prediction from the clicks before it: after a cycle the server missed, the clicks come
    # late and the grid takes a few beats to follow. Beats on clicks with no missed cycle in the second before
    # are held to two blocks (the analysis alone, without JACK, is held to one for every beat).
    steady = np.array([not any(c - 1.0 < x < c + 0.02 for x in player.xruns) for c in clicks], bool)
    distance = np.abs(beats[:, None] - clicks[None, :])
    on_steady = steady[distance.argmin(axis=1)]
    assert np.all(distance.min(axis=1)[on_steady] < 2 * BLOCK / RATE)


def glitched(at: np.ndarray, part: AudioIn, player: Player) -> np.ndarray:
    """Which hops (by time) analysed a window holding a cycle the server reported late: the loaded dummy server,
    or this test's Python client, missing a cycle is a glitch in the waveform (real-parts.md), not our doing."""
    window = part.analysis.window / RATE  # the xrun callback runs a while after the cycle it reports: 50 ms
    return np.array([any(a - window - 0.01 <= x <= a + 0.05 for x in player.xruns) for a in at], bool)


def within_20_cents(errors: np.ndarray, at: np.ndarray, part: AudioIn, player: Player) -> bool:
    """Every hop within 20 cents but the glitched ones, left out and counted; at least 100 hops (half a second)
    must be left. The analysis alone, without JACK, is held to every hop."""
    bad = glitched(at, part, player)
    far = np.abs(errors) >= 20
    print(f"pitch error: median {np.median(np.abs(errors)):.2f} cents; {int(far.sum())} of {len(errors)} hops 20 "
          f"or more, {int((far & bad).sum())} of them glitched ({len(player.xruns)} server xruns, "
          f"{part.counts['xruns']} input xruns)")
    return not np.any(far & ~bad) and np.sum(~bad) >= 100


def test_sweep_through_jack(jack_server):  # noqa: F811
    x, f = sweep(3.0)
    part, tree_heard, player = play(x)
    series = np.array([(at, v[IN + "pitch"], v[IN + "pitch_confidence"], v[IN + "centroid"])
                       for at, _, v in tree_heard.hops])
    age = np.array([part.analysis.pitch.age(hz) for hz in series[:, 1]]) / RATE
    frame = player.frame_at(series[:, 0] - age)
    inside = (frame >= part.analysis.window) & (frame < len(f) - part.analysis.window) & (series[:, 2] > 0.8)
    assert inside.sum() > 0.9 * 2.5 * part.analysis.rate
    errors = cents(series[inside, 1], f[frame[inside]])
    assert within_20_cents(errors, series[inside, 0], part, player)
    assert np.mean(np.diff(series[inside, 1]) > 0) > 0.9 and np.mean(np.diff(series[inside, 3]) > 0) > 0.8


def test_sung_tone_through_jack(jack_server):  # noqa: F811
    x, f = sung(2.0)
    part, tree_heard, player = play(x)
    series = np.array([(at, v[IN + "pitch"], v[IN + "pitch_confidence"]) for at, _, v in tree_heard.hops])
    age = np.array([part.analysis.pitch.age(hz) for hz in series[:, 1]]) / RATE
    frame = player.frame_at(series[:, 0] - age)
    inside = (frame >= part.analysis.window) & (frame < len(f) - part.analysis.window)
    assert inside.sum() > 1.5 * part.analysis.rate
    assert np.all((series[inside, 2] > 0.8) | glitched(series[inside, 0], part, player))
    errors = cents(series[inside, 1], f[frame[inside]])
    assert within_20_cents(errors, series[inside, 0], part, player)


def test_silence_and_noise_through_jack(jack_server):  # noqa: F811
    noise = (0.3 * np.random.default_rng(5).standard_normal(3 * RATE)).astype(np.float32)
    signal = np.concatenate([np.zeros(RATE, np.float32), noise])
    part, tree_heard, player = play(signal, tail=0.0)
    start = player.time_of(np.array([0]))[0]
    silent = [v for at, _, v in tree_heard.hops if at < start + 0.9]
    assert len(silent) > 50 and all(value == 0.0 for v in silent for value in v.values())
    noisy = [v for at, _, v in tree_heard.hops if at > start + 1.1]
    assert len(noisy) > 300
    assert all(v[IN + "pitch"] == 0.0 and v[IN + "pitch_confidence"] < 0.5 for v in noisy)
    assert all(v[IN + "tempo"] == 0.0 and v[IN + "beat"] == 0.0 for v in noisy)
    assert np.mean([v[IN + "loudness"] for v in noisy]) > 0.7 and not len(heard(part, "beat"))


# --- a sound file, the show's clock, and errors -------------------------------------------------------------

def test_file_source_drives_the_show_clock(tmp_path):
    """A WAV of exactly 8 beats, looped in real time: the analysis finds its tempo and the clock follows
    ([tempo] source = "audio"), beats landing on the clicks."""
    x, starts = click_track(8 * 60.0 / BPM, start=0.0)
    sf.write(tmp_path / "clicks.wav", x, RATE)
    clock = Clock(bpm=90.0)
    part, tree = listening(AudioInSection(source="clicks.wav"), tmp_path, clock)
    line = part.open()
    try:
        assert "clicks.wav, 48000 Hz, 1 ch, 3.9 s looped" in line
        deadline = time.perf_counter() + 12.0
        while time.perf_counter() < deadline and not (part.counts["beats"] >= 8 and part.counts["loops"] >= 1):
            time.sleep(0.1)
        assert part.counts["beats"] >= 8 and part.counts["loops"] >= 1, part.stats()
        assert abs(tree.get(IN + "tempo") - BPM) < 1.0
        assert abs(clock.bpm - BPM) < 1.0
        beat = heard(part, "beat")[-1]
        assert abs(clock.beat_at(beat) - round(clock.beat_at(beat))) < 0.02  # the clock's beats are the music's
        assert part.counts["overflows"] == 0 and "in 'clicks.wav'" in part.status()
    finally:
        part.close()


def test_a_missing_file_or_device_is_one_line_with_the_fix(tmp_path, jack_server):  # noqa: F811
    part, _ = listening(AudioInSection(source="nothing.wav"), tmp_path)
    with pytest.raises(LiveError, match="no sound file .*nothing.wav") as err:
        part.open()
    assert "relative to the show file" in err.value.fix
    (tmp_path / "text.wav").write_text("not audio")
    part, _ = listening(AudioInSection(source="text.wav"), tmp_path)
    with pytest.raises(LiveError, match="not a sound file"):
        part.open()
    part.close()  # safe on a part that never opened
    part, tree = listening(AudioInSection(source="no-such-microphone"))
    try:  # no such device: the show plays on, the source at rest, and the device is looked for
        line = part.open()
        assert re.search(r"no-such-microphone': no such input device .*'system'.*at rest, looking for it", line)
        assert "fix: " in line and "[audio_in] source" in line
        time.sleep(1.5)  # a look or two for it
        assert tree.get(IN + "rms") == 0.0 and part.counts["hops"] == 0 and "lost" in part.status()
    finally:
        part.close()


def test_show_section_and_parameters(tmp_path):
    from live.show import load_show

    (tmp_path / "show.toml").write_text('[audio_in]\nsource = "music.wav"\n\n[tempo]\nsource = "audio"\n')
    show = load_show(tmp_path / "show.toml")
    assert show.audio_in.source == "music.wav" and show.tempo.source == "audio"
    params = {p.address: p for p in AudioIn.params(show.audio_in)}
    assert all(p.readonly for p in params.values()) and len(params) == 11 + 10
    assert "40..73 Hz" in params[IN + "band/0"].doc and params[IN + "pitch"].unit == "Hz"
    assert AudioIn.params(AudioInSection()) == []  # off: nothing offered
    (tmp_path / "bad.toml").write_text('[audio_in]\nsorce = "x"\n')
    with pytest.raises(LiveError, match="unknown key"):
        load_show(tmp_path / "bad.toml")
