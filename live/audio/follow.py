"""Live timbre transfer inside the render process: a voice or instrument on an input device drives one more voice
of the decoder (synth.FollowVoice), following its pitch and dynamics.

Why here and not in the show's process: every thread between the input and the output adds its wake-up and its
stalls to the latency, and the show's threads are the ones issue 11 found starved. So the input is captured next to
the synth, by rtmixer's C callback into a ring (no Python in it), and read by the renderer's own loop, which
analyses the newest input and renders the follow voice into the block the device plays next but one (see
_Renderer._commit in render_process.py). The show-side analysis (live/audio/analysis.py, listen.py) is for control
rate; this is for sound, and shares only the pitch estimator (live/audio/pitch.py).

The input is a stream of its own (rtmixer.Recorder), not one duplex stream with the output: the input may be
another device than the output, and losing it (a USB microphone pulled) must not stop the sound; under JACK both
streams run in the same cycle anyway, so the input is just as fresh.

What it hears, each block (Listener): loudness is the RMS of the newest whole pitch periods (at least 256 samples:
a window of whole periods does not ripple with the waveform); pitch is YIN (pitch.py) over the newest 1024 samples
once the sound has lasted that long, and over the longest of 512 or 768 samples that lies inside the sound before
that, so a note is heard 10.7 ms after it starts (at 48 kHz; a 512-sample window finds 188 Hz and up, 768 samples
125 Hz, 1024 samples 94 Hz). Unvoiced or silent input fades the voice out (RELEASE_S), holding the last pitch: no
jumps (RELEASE_S). Nothing in the per-block path allocates but a few small views and scalars.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import sounddevice as sd

from live.audio import devices
from live.audio.pitch import Pitch
from live.errors import LiveError

WINDOWS = (512, 768, 1024)  # pitch windows, shortest first: the longest that lies inside the sound is used
HISTORY = 2048  # input samples kept (a power of two, above the longest window)
INPUT_RING = 4096  # frames rtmixer's callback may write before the loop reads them (85 ms at 48 kHz)
SILENCE_DB = -55.0  # a block of input below this RMS is silence
FULL_DB = -12.0  # input RMS that plays the voice at full loudness; loudness is linear in the RMS below it
LEVEL_SAMPLES = 256  # the loudness window is the fewest whole pitch periods at least this long
RELEASE_S = 0.02  # unvoiced or silent input: the voice's loudness falls by 1/e in this time, to 0 below the
# loudness of input at SILENCE_DB (about 100 ms from full loudness)
RETRY_S = 1.0
INPUT_FIX = "set [audio] follow_input to one of the inputs listed (\"\" turns following off), or start JACK"


class Listener:
    """Pitch and loudness of the newest input, once per block; see the module docstring."""

    def __init__(self, samplerate: int, block: int) -> None:
        self.rate, self.block = samplerate, block
        # Each sample is kept twice, HISTORY apart, so the newest n samples are always one contiguous slice
        self._history = np.zeros(2 * HISTORY, dtype=np.float32)
        self._written = 0
        self._pitch = [(w, Pitch(samplerate, w)) for w in WINDOWS]
        self._floor = 10.0 ** (SILENCE_DB / 20.0)
        self._full = 10.0 ** (FULL_DB / 20.0)
        self._release = math.exp(-block / samplerate / RELEASE_S)
        self.sound = 0  # samples since the input rose above silence (0: silent)
        self.hz = 0.0  # the last confident pitch, held while the voice fades
        self.loudness = 0.0
        self.voiced = False

    def take(self, frames: np.ndarray) -> None:
        """New input samples (mono), oldest first, any count."""
        for at in range(0, len(frames), self.block):
            part = frames[at:at + self.block]
            n = len(part)
            i = self._written % HISTORY
            first = min(n, HISTORY - i)
            for base in (0, HISTORY):
                self._history[base + i:base + i + first] = part[:first]
                if first < n:
                    self._history[base:base + n - first] = part[first:]
            self._written += n
            rms = math.sqrt(float(np.dot(part, part)) / n) if n else 0.0
            if rms < self._floor:
                self.sound = 0
            elif self.sound == 0:  # the sound starts at its first sample above the floor: the pitch windows
                above = np.flatnonzero(np.abs(part) > self._floor)  # must not reach into the silence before it
                self.sound = n - int(above[0]) if len(above) else n
            else:
                self.sound += n

    def newest(self, n: int) -> np.ndarray:
        """The newest `n` (<= HISTORY) input samples, a view."""
        end = self._written % HISTORY + HISTORY
        return self._history[end - n:end]

    def listen(self) -> tuple[float, float]:
        """(pitch Hz, decoder loudness 0..1) for the next block of the follow voice."""
        usable = [(w, pitch) for w, pitch in self._pitch if w <= min(self.sound, self._written)]
        hz = 0.0
        if usable:
            window, pitch = usable[-1]
            hz = pitch.estimate(self.newest(window))[0]
        self.voiced = hz > 0.0
        if self.voiced:
            self.hz = hz
            period = self.rate / hz
            n = min(int(round(period * math.ceil(LEVEL_SAMPLES / period))), HISTORY)
            level = self.newest(n)
            self.loudness = min(math.sqrt(float(np.dot(level, level)) / n) / self._full, 1.0)
        else:
            self.loudness *= self._release
            if self.loudness < self._floor / self._full:
                self.loudness = 0.0
        return self.hz, self.loudness


class Follower:
    """The input device, its ring, the Listener and the FollowVoice, for the render process's loop.

    open() resolves and starts the input (or says why not, in one line, and the synth plays on without following);
    take() moves what the callback recorded into the Listener once per loop and notices a lost stream (says so
    once, the voice goes silent, a thread looks for the device every RETRY_S); render() is the voice's next block.
    `lock` serializes opening streams with the output's retry thread (a PortAudio re-scan closes every stream).
    """

    def __init__(self, spec: str | int, voice: Any, samplerate: int, block: int,
                 say: Callable[[str], None], lock: threading.Lock) -> None:
        self.spec, self.voice, self.rate, self.block = spec, voice, samplerate, block
        self.say, self.lock = say, lock
        self.listener = Listener(samplerate, block)
        self._chunk = np.zeros(INPUT_RING, dtype=np.float32)  # what one read takes out of the ring
        self.stream: Any = None  # rtmixer.Recorder while the input records; set by open() or the retry thread
        self.device: devices.Device | None = None
        self._ring: Any = None
        self._action: Any = None
        self.lost = self.back = self.overruns = 0
        self.stopped = threading.Event()
        self.retry: threading.Thread | None = None

    def open(self) -> tuple[str, bool]:
        """Start following the input: the line to say, and whether it records (never raises)."""
        off = "the synth plays without following — fix:"
        try:
            with self.lock:
                device = devices.resolve_input(self.spec, "[audio] follow_input", INPUT_FIX, scan=False)
                self._start(device)
        except LiveError as err:
            return f"Audio follow: {err.what}; {off} {err.fix}", False
        except (sd.PortAudioError, ValueError) as err:
            return (f"Audio follow: could not open input {self.spec!r} at {self.rate} Hz ({err}); {off} {INPUT_FIX}",
                    False)
        return f"Audio follow: input {device.label} channel 1, pitch and loudness into the synth's follow voice", True

    def _start(self, device: devices.Device) -> None:
        import rtmixer  # noqa: PLC0415

        stream = rtmixer.Recorder(device=device.index, channels=1, samplerate=self.rate, blocksize=self.block,
                                  latency="low")
        stream.start()
        self._ring = rtmixer.RingBuffer(4, INPUT_RING)  # 4 bytes: one mono float32 frame
        self._action = stream.record_ringbuffer(self._ring)
        self.device = device
        self.stream = stream  # last: the loop reads the stream only once everything it needs is there

    def take(self) -> None:
        """Move the recorded input into the Listener; notice a dead stream or a ring the loop let fill."""
        stream = self.stream
        if stream is None:
            return
        try:
            active = stream.active
        except sd.PortAudioError:  # the output's retry re-scanned PortAudio, which closes every stream
            active = False
        if not active:
            self._lose(stream)
            return
        got = self._ring.readinto(self._chunk)
        if got:
            self.listener.take(self._chunk[:got])
        if self._action not in stream.actions:  # the callback found the ring full (the loop was away 85 ms)
            self.overruns += 1
            self._action = stream.record_ringbuffer(self._ring)

    def render(self, timbre: np.ndarray) -> np.ndarray | None:
        """The follow voice's next block (2, block) from the newest input, None while silent."""
        if self.stream is None:
            hz, loudness = self.listener.hz, 0.0
        else:
            hz, loudness = self.listener.listen()
        return self.voice.render(hz, loudness, timbre)

    def _lose(self, stream: Any) -> None:
        from live.audio import devices  # noqa: PLC0415

        devices.abandon(stream)  # a stream on a dead JACK server hangs if stopped or closed
        self.stream = None
        self.listener.sound, self.listener.loudness = 0, 0.0
        self.lost += 1
        label = self.device.label if self.device is not None else repr(self.spec)
        self.say(f"Audio follow: lost input {label}; the follow voice is silent, looking for it every {RETRY_S:g} s")
        self.retry = threading.Thread(target=self._look_for, args=(time.perf_counter(),),
                                      name="live-follow-retry", daemon=True)
        self.retry.start()

    def _look_for(self, since: float) -> None:
        """The retry thread: open the input again every RETRY_S until it records (or the renderer stops)."""
        while not self.stopped.wait(RETRY_S):
            try:
                with self.lock:
                    self._start(devices.resolve_input(self.spec, "[audio] follow_input", INPUT_FIX, scan=False))
            except (LiveError, sd.PortAudioError, ValueError):
                continue
            self.back += 1
            self.say(f"Audio follow: input {self.device.label} is back after {time.perf_counter() - since:.1f} s")
            return

    def close(self) -> None:
        """Stop the retry thread and the input stream (bounded: a dead stream is abandoned, not stopped)."""
        self.stopped.set()
        stream, self.stream = self.stream, None
        if stream is not None:
            devices.release(stream)
