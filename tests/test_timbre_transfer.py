"""Live timbre transfer (the follow voice) on real parts: a JACK client of this test sings into the show's input
port on a dummy-clocked JACK server and hears the show's output ports; the render process captures the input with
rtmixer's C callback, follows its pitch and loudness, and plays the decoder. Latency is measured with JACK's own
frame times (the client's last_frame_time in its process callback), end to end through the JACK graph."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jack
import numpy as np
import pytest

from test_audio_recovery import Server, server  # noqa: F401 (a JACK server of the test's own, to kill)

from live.audio.engine import FOLLOW, AudioEngine
from live.audio.pitch import Pitch
from live.params import ParamTree

RATE, BLOCK = 48000, 128
LATENCY_LIMIT_MS = 30.0


def harmonic(f0: np.ndarray, peak_db: float) -> np.ndarray:
    """A sung-like tone: six harmonics falling off, following the per-sample pitch `f0`, at `peak_db` dBFS peak."""
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    tone = sum(0.6 ** (k - 1) * np.sin(k * phase) for k in range(1, 7))
    return (tone / np.abs(tone).max() * 10 ** (peak_db / 20)).astype(np.float32)


def vibrato(hz: float, seconds: float) -> np.ndarray:
    """`hz` with a 5.5 Hz vibrato of +-30 cents, per sample."""
    t = np.arange(int(seconds * RATE)) / RATE
    return hz * 2 ** (30 / 1200 * np.sin(2 * np.pi * 5.5 * t))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


class Singer:
    """A JACK client that plays `signal` into the show's input and records the show's left output, cycle by cycle,
    with each cycle's JACK frame time."""

    def __init__(self, signal: np.ndarray) -> None:
        self.cycles = -(-len(signal) // BLOCK) + int(0.3 * RATE / BLOCK)  # and 0.3 s more to hear the end
        self.signal = np.zeros(self.cycles * BLOCK, np.float32)
        self.signal[:len(signal)] = signal
        self.heard = np.zeros(self.cycles * BLOCK, np.float32)
        self.times = np.full(self.cycles, -1, np.int64)  # JACK frame time of each cycle's first frame
        self.cycle, self.playing = 0, False
        self.client = jack.Client("singer", no_start_server=True)
        self.out = self.client.outports.register("out")
        self.ear = self.client.inports.register("in")
        self.client.set_process_callback(self._process)
        self.client.activate()
        # PortAudio's JACK clients already there (this test process's own, from earlier tests): the engine's is new
        self.before = {port.name.split(":")[0] for port in self.client.get_ports("PortAudio")}

    def _process(self, frames: int) -> None:
        out = self.out.get_array()
        c = self.cycle
        if not self.playing or c >= self.cycles or frames != BLOCK:
            out.fill(0.0)
            return
        out[:] = self.signal[c * BLOCK:(c + 1) * BLOCK]
        self.heard[c * BLOCK:(c + 1) * BLOCK] = self.ear.get_array()
        self.times[c] = self.client.last_frame_time
        self.cycle = c + 1

    def connect(self) -> None:
        """To the engine's render process: the PortAudio client that came since (named PortAudio, or PortAudio-01
        where another process had that name first)."""
        new = {port.name.split(":")[0] for port in self.client.get_ports("PortAudio")} - self.before
        assert len(new) == 1, new
        engine = new.pop()
        self.client.connect(self.out, f"{engine}:in_0")
        self.client.connect(f"{engine}:out_0", self.ear)

    def play(self, timeout: float) -> None:
        self.playing = True
        deadline = time.monotonic() + timeout
        while self.cycle < self.cycles and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.cycle == self.cycles, f"the singer ran {self.cycle} of {self.cycles} cycles"

    def frame_time(self, index: int) -> int:
        """The JACK frame time of sample `index` of the signal (or of what was heard)."""
        return int(self.times[index // BLOCK]) + index % BLOCK

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


# One performance, three parts: (a) pitch, (b) loudness and silence, (c) bursts for the latency
PITCH_S, LOUD_S, BURST_S, GAP_S, BURSTS = 1.0, 0.7, 0.15, 0.25, 12
PARTS = [("pitch", harmonic(np.concatenate([vibrato(220.0, PITCH_S), vibrato(330.0, PITCH_S)]), -12.0)),
         ("quiet", silence(0.3)),
         ("loud", np.concatenate([harmonic(np.full(int(LOUD_S * RATE), 247.0), -20.0),
                                  harmonic(np.full(int(LOUD_S * RATE), 247.0), -6.0)])),
         ("silence", silence(0.6)),
         ("bursts", np.concatenate([np.concatenate([harmonic(np.full(int(BURST_S * RATE), 196.0 * 2 ** (i % 5 / 12)),
                                                             -12.0), silence(GAP_S)]) for i in range(BURSTS)]))]
STARTS = dict(zip([name for name, _ in PARTS], np.cumsum([0] + [len(part) for _, part in PARTS[:-1]])))
SIGNAL = np.concatenate([part for _, part in PARTS])


def following(synth_decoder: Path, follow_input: str, follow: float, **values: float) -> tuple[AudioEngine, list[str]]:
    """An engine playing to JACK's "system" and following `follow_input` at `follow`, with these parameter values
    (addresses under /synth/); the lines it says."""
    tree = ParamTree(*AudioEngine.params())
    tree.set(FOLLOW, follow)
    for name, value in values.items():
        tree.set(f"/synth/{name.replace('_', '/')}", value)
    said: list[str] = []
    return AudioEngine(tree, synth_decoder.with_suffix(".json"), device="system", follow_input=follow_input,
                       say=said.append), said


@pytest.fixture(scope="module")
def performance(jack_server: str, synth_decoder: Path) -> dict:
    """The show follows the singer for the whole SIGNAL; what the singer heard, when, and the engine's stats."""
    # no breath noise: the pitch and onset are the harmonics'
    engine, said = following(synth_decoder, "system", 1.0, auto=False, timbre_d=-1.0)
    singer = Singer(SIGNAL)
    try:
        assert "'system'" in engine.open()
        singer.connect()
        time.sleep(0.5)
        before = engine.stats()
        singer.play(timeout=len(SIGNAL) / RATE + 20)
        after = engine.stats()
    finally:
        singer.close()
        engine.close()
    return {"singer": singer, "before": before, "after": after, "said": said}


def cents(hz: np.ndarray, true: np.ndarray) -> np.ndarray:
    return 1200 * np.log2(hz / true)


def test_the_follow_voice_sings_the_input_pitch_within_20_cents(performance: dict) -> None:
    """(a) 220 Hz then 330 Hz, both with vibrato: the output's pitch (pitch.py over the recording) follows the
    input's true pitch within 20 cents where the input is voiced, at one lag for the whole take (the latency)."""
    singer: Singer = performance["singer"]
    assert any("Audio follow: input 'system'" in line for line in performance["said"]), performance["said"]
    start = STARTS["pitch"]
    true_f0 = np.concatenate([vibrato(220.0, PITCH_S), vibrato(330.0, PITCH_S)])
    pitch, window, hop = Pitch(RATE, 2048), 2048, 256
    # where the output was heard, in JACK frames, against the input's true pitch at that frame minus the lag
    heard_at = np.array([singer.frame_time(i) for i in range(len(singer.heard))])
    sung_from = singer.frame_time(start)
    found, when = [], []
    for end in range(start + window, start + len(true_f0) + int(0.1 * RATE), hop):
        hz, _ = pitch.estimate(singer.heard[end - window:end])
        if hz > 0:
            found.append(hz)
            when.append(heard_at[end - window // 2] - sung_from)  # the window's middle, in frames since the song
    found, when = np.array(found), np.array(when)
    assert len(found) > 0.8 * len(true_f0) / hop, f"voiced in {len(found)} windows only"
    best = None
    for lag_ms in np.arange(0.0, 45.0, 0.5):
        index = when - int(lag_ms * RATE / 1000)
        keep = (index >= 0.1 * RATE) & (index < len(true_f0)) & (np.abs(index - PITCH_S * RATE) > 0.1 * RATE)
        error = np.abs(cents(found[keep], true_f0[index[keep]]))
        if best is None or np.median(error) < np.median(best[1]):
            best = lag_ms, error
    lag_ms, error = best
    assert np.percentile(error, 95) < 20.0, (f"output pitch off the input's by median {np.median(error):.1f}, p95 "
                                             f"{np.percentile(error, 95):.1f} cents at a lag of {lag_ms} ms")


def level_db(audio: np.ndarray) -> float:
    return 20 * np.log10(max(np.sqrt(np.mean(audio.astype(np.float64) ** 2)), 1e-12))


def test_the_follow_voice_follows_the_input_loudness_and_is_silent_in_silence(performance: dict) -> None:
    """(b) a tone at -20 dB then at -6 dB: the output is louder for the louder input; silence in, silence out."""
    heard, start = performance["singer"].heard, STARTS["loud"]
    n = int(LOUD_S * RATE)
    soft = level_db(heard[start + n // 3:start + n - n // 6])  # the middle of each, past the latency
    loud = level_db(heard[start + n + n // 3:start + 2 * n - n // 6])
    quiet = heard[STARTS["silence"] + int(0.2 * RATE):STARTS["bursts"]]
    assert soft > -60.0 and loud > soft + 6.0, (soft, loud)
    assert np.abs(quiet).max() < 1e-5, f"{level_db(quiet):.1f} dBFS out while the input was silent"


def test_input_to_output_latency_through_jack(performance: dict) -> None:
    """(c) tone bursts in, the onset of the follow voice out, both timed in JACK frames: median <= 30 ms; and the
    sound never starved while following."""
    singer: Singer = performance["singer"]
    after, before = performance["after"], performance["before"]
    latencies = []
    for i in range(BURSTS):
        onset = STARTS["bursts"] + int(i * (BURST_S + GAP_S) * RATE)
        heard = np.flatnonzero(np.abs(singer.heard[onset:onset + int(0.1 * RATE)]) > 0.01)  # -40 dBFS
        if len(heard):
            latencies.append((singer.frame_time(onset + int(heard[0])) - singer.frame_time(onset)) / RATE * 1000)
    median, p95 = np.median(latencies), np.percentile(latencies, 95)
    figures = (f"input to output latency through JACK: median {median:.1f} ms, p95 {p95:.1f} ms over "
               f"{len(latencies)} of {BURSTS} bursts ({', '.join(f'{x:.1f}' for x in latencies)}); follow voice "
               f"{after['follow_p50_us']:.0f} us per block median, {after['follow_p99_us']:.0f} us p99; "
               f"{after['follow_late'] - before['follow_late']} blocks late; follow lead {after['follow_lead_ms']} ms, "
               f"lead {after['lead_ms']} ms")
    print(figures)
    assert len(latencies) >= BURSTS - 1 and median <= LATENCY_LIMIT_MS, figures
    assert after["starved"] == before["starved"] == 0, (after, figures)
    assert after["follow_p50_us"] > 0, after


def test_a_missing_input_is_said_once_and_the_synth_plays_on(jack_server: str, synth_decoder: Path) -> None:
    """A follow input that does not exist: one line naming it and listing the inputs there are; the notes play."""
    engine, said = following(synth_decoder, "no-such-mic", 1.0)
    try:
        assert "'system'" in engine.open()
        time.sleep(0.8)
        engine.read_tap()
        time.sleep(0.5)
        tapped = engine.read_tap()[1]
        stats = engine.stats()
    finally:
        engine.close()
    lines = [line for line in said if "follow" in line]
    assert lines == ["Audio follow: [audio] follow_input 'no-such-mic': no such input device (inputs: 0: 'system' "
                     "(JACK Audio Connection Kit)); the synth plays without following — fix: set [audio] "
                     "follow_input to one of the inputs listed (\"\" turns following off), or start JACK"], said
    assert stats["starved"] == 0 and np.sqrt(np.mean(tapped ** 2)) > 0.005  # the arpeggio (at follow 1, its share 0
    # would be silence: with no input there is no follow voice, so the notes keep their whole share)


def test_an_input_lost_mid_show_is_said_once_and_found_again(server: Server, synth_decoder: Path) -> None:
    """The JACK server killed mid-show takes the input (and the output) away: one line says the follow voice is
    silent and looking; once the server is back, the input records again, said in one line."""
    previous = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = server.name  # the render process inherits it
    engine, said = following(synth_decoder, "system", 0.5)
    try:
        assert "'system'" in engine.open()
        time.sleep(0.5)
        server.kill()
        deadline = time.monotonic() + 10
        while not any("is back" in line and "follow" in line for line in said) and time.monotonic() < deadline:
            time.sleep(0.1)
            if server.proc.poll() is not None and any("lost input" in line for line in said):
                server.start()
        stats = engine.stats()
    finally:
        engine.close()
        if previous is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = previous
    follow = [line for line in said if line.startswith("Audio follow")]
    assert follow[1:] == ["Audio follow: lost input 'system' (JACK Audio Connection Kit); the follow voice is silent, "
                          "looking for it every 1 s", follow[2]], said
    assert follow[2].startswith("Audio follow: input 'system' (JACK Audio Connection Kit) is back after "), said
    assert stats["input_lost"] == 1 and stats["input_back"] == 1, stats
