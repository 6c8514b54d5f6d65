"""The audio engine: a synth thread that keeps a lock-free ring a few blocks ahead of a C audio callback.

No Python runs in the audio callback: rtmixer's C callback only copies from the ring buffer, so a garbage
collection or a busy video thread delays the synth thread, not the sound card (see shared/real-parts.md). The
synth thread renders whenever the ring has room for a block and sleeps otherwise. With no usable device it
runs silent, paced by the clock, so recordings still get audio and a show never fails for want of a card.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rtmixer
import sounddevice as sd

from live.audio import devices
from live.audio.synth import TIMBRE_AXES, Synth
from live.control.reader import ParamReader
from live.errors import LiveError
from live.inference import open_session
from live.models.manifest import load_manifest
from live.params import Event, Param, ParamTree

GAIN = "/synth/gain"
AUTO = "/synth/auto"
NOTE = "/synth/note"
BLACKOUT, PANIC = "/live/blackout", "/live/panic"  # system controls (live/control/surface.py) the synth obeys
TEMPO = "/tempo/bpm"
TIMBRE = tuple(f"/synth/timbre/{letter}" for letter in "abcd")

DEFAULT_PATTERN = (45, 52, 57, 60, 64, 57, 52, 48)
DEFAULT_BPM = 96.0
LEAD_BLOCKS = 6  # how far the synth stays ahead of the callback: 16 ms at 128/48 kHz
RING_FRAMES = 2048  # power of two, comfortably above the lead
TAP_SECONDS = 2.0
TAP_GAP_BLOCKS = 3  # a block this much later than the last one ended was preceded by silence (a dry device)
CATCH_UP_SECONDS = 1.0  # with no device, a stall up to this long is rendered afterwards, not lost
PEAK_FALL_DB_PER_S = 20.0


class Tap:
    """The newest `capacity` stereo frames for a recorder, as a timeline of what was heard.

    Each block comes with the time its first frame plays. A block that starts later than the previous one ended
    (the device ran dry, or a stalled machine skipped ahead) is preceded by that much silence, so a recording
    stays in step with the video instead of drifting early. A reader that falls behind loses the oldest (counted),
    but every read says at which absolute frame position its samples start, so the loss is a gap in the reader's
    timeline (silence in a recording), not a shift of all that follows.
    """

    def __init__(self, capacity: int, samplerate: int, gap_frames: int) -> None:
        self._buffer = np.zeros((capacity, 2), dtype=np.float32)
        self._read = 0  # absolute frame positions; the buffer index is position % capacity
        self._written = 0
        self._lock = threading.Lock()
        self.samplerate, self.gap_frames = samplerate, gap_frames
        self._next_at: float | None = None  # when the frame after the last one written plays
        self.dropped = 0
        self.silence = 0  # frames of silence put in for gaps

    def write(self, block: np.ndarray, at: float) -> None:
        """Add `block`, whose first frame plays at perf_counter() time `at`."""
        capacity = len(self._buffer)
        with self._lock:
            gap = 0 if self._next_at is None else int(round((at - self._next_at) * self.samplerate))
            if gap > self.gap_frames:  # smaller differences are timing jitter, not silence
                self._written += max(gap - capacity, 0)  # silence longer than the ring: positions still move on
                self._put(None, min(gap, capacity))
                self.silence += gap
                self._next_at = at
            elif self._next_at is None:
                self._next_at = at
            self._next_at += len(block) / self.samplerate
            self._put(block, len(block))
            if self._written - self._read > capacity:
                self.dropped += self._written - self._read - capacity
                self._read = self._written - capacity

    def _put(self, block: np.ndarray | None, frames: int) -> None:
        """`frames` frames of `block` (None: of silence) into the ring; the caller holds the lock."""
        capacity = len(self._buffer)
        start = self._written % capacity
        first = min(frames, capacity - start)
        for target, part in ((slice(start, start + first), slice(0, first)), (slice(0, frames - first),
                                                                              slice(first, frames))):
            self._buffer[target] = 0.0 if block is None else block[part]
        self._written += frames

    def read(self) -> tuple[int, np.ndarray]:
        """(absolute position of the first frame, everything written since the last read, oldest first)."""
        capacity = len(self._buffer)
        with self._lock:
            start, self._read = self._read, self._written
            return start, self._buffer[np.arange(start, self._written) % capacity]


class Arpeggio:
    """Eighth notes cycling through a pattern at the show's tempo; timed in rendered frames, so it follows the
    audio clock."""

    def __init__(self, notes: Sequence[int], samplerate: int) -> None:
        bad = [n for n in notes if not 0 <= n <= 127]
        if bad or not notes:
            raise LiveError(f"audio pattern {list(notes)} is not playable", "use MIDI notes 0..127 in [audio] pattern")
        self.notes = tuple(notes)
        self.samplerate = samplerate
        self._due = 0.0  # frames until the next step
        self._index = 0
        self.playing: int | None = None

    def advance(self, synth: Synth, on: bool, frames: int, bpm: float) -> None:
        """Play the steps due within the next `frames` at `bpm`; when switched off, release the sounding note."""
        if not on:
            if self.playing is not None:
                synth.note_off(self.playing)
                self.playing, self._due = None, 0.0
            return
        while self._due <= 0.0:
            if self.playing is not None:
                synth.note_off(self.playing)
            self.playing = self.notes[self._index % len(self.notes)]
            synth.note_on(self.playing, 0.55 if self._index % 4 == 0 else 0.4)  # a soft accent on the beat
            self._index += 1
            self._due += self.samplerate * 60.0 / bpm / 2.0
        self._due -= frames


class AudioEngine:
    """The neural synth on an output device (or silent), steered by the /synth/* parameters."""

    @staticmethod
    def params(latent_names: Sequence[str] = ()) -> tuple[list[Param], list[Event]]:
        """The engine's parameters and events, available before an engine exists (to build the tree).

        `latent_names` (the decoder manifest's controls.latent_names) describe what each timbre axis does in
        that model; a learned latent has its own axes, unlike the analytic decoder's TIMBRE_AXES.
        """
        docs = [f"timbre axis {i}: {name}" for i, name in enumerate(latent_names)] or \
            [f"timbre {name}: {doc}" for name, doc in TIMBRE_AXES]
        params = [Param(GAIN, "float", 0.5, 0.0, 1.0, doc="synth output level (soft-limited)")]
        params += [Param(address, "float", 0.0, -1.0, 1.0, doc=doc) for address, doc in zip(TIMBRE, docs)]
        params.append(Param(AUTO, "bool", True, doc="play the built-in arpeggio, so a show sounds with no controller"))
        note = Event(NOTE, (("note", "int", 0, 127), ("velocity", "float", 0.0, 1.0)),
                     doc="play a note (MIDI number, velocity 0..1); velocity 0 releases it")
        return params, [note]

    def __init__(self, tree: ParamTree, decoder_manifest: Path, device: str | int | None = None,
                 samplerate: int = 48000, blocksize: int = 128, voices: int = 8,
                 pattern: Sequence[int] = (), reader: ParamReader | None = None) -> None:
        """`reader` is the synth thread's smoothed, modulated view of `tree` (default: plain values)."""
        manifest = load_manifest(decoder_manifest)
        if manifest.kind != "synth-decoder":
            raise LiveError(f"{decoder_manifest} is a {manifest.kind} model, not a synth decoder",
                            "set [audio] model to exported_models/synth-decoder.json")
        self.synth = Synth(open_session(manifest.onnx_path, ("cpu",), threads=1), samplerate, blocksize, voices)
        self.tree, self.device_spec = tree, device
        self.samplerate, self.blocksize = samplerate, blocksize
        self.tap = Tap(int(TAP_SECONDS * samplerate), samplerate, TAP_GAP_BLOCKS * blocksize)
        self.status = ""
        self.reader = reader or ParamReader(tree)
        self._events = tree.listen("/synth/")
        self._panic = tree.listen(PANIC)
        self._arpeggio = Arpeggio(pattern or DEFAULT_PATTERN, samplerate)
        self._peak_fall = 10.0 ** (-PEAK_FALL_DB_PER_S / 20.0 * blocksize / samplerate)
        self._mixer: rtmixer.Mixer | None = None
        self._lost = False  # the stream died while playing
        self._mapping: list[int] = [1, 2]
        self._device_name: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._blocks = self._underruns = self._starved = 0
        self._peak = 0.0

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> str:
        """Open the output and start the synth thread; never raises for a missing device: runs silent instead."""
        if self._thread is not None:
            return self.status
        self._device_name = None
        self.status = self._open_device()
        self._stop.clear()
        target = self._feed_device if self._mixer is not None else self._feed_clock
        self._thread = threading.Thread(target=target, name="live-synth", daemon=True)
        self._thread.start()
        return self.status

    def _open_device(self) -> str:
        silent = "running silent — fix:"
        try:
            device = devices.resolve(self.device_spec)
        except LiveError as err:
            return f"Audio: {err.what}; {silent} {err.fix}"
        except sd.PortAudioError as err:
            return f"Audio: PortAudio failed to list devices ({err}); {silent} check the audio system"
        try:
            mixer = rtmixer.Mixer(device=device.index, channels=min(2, device.channels),
                                  samplerate=self.samplerate, blocksize=self.blocksize, latency="low")
            mixer.start()
        except (sd.PortAudioError, ValueError) as err:
            return (f"Audio: could not open {device.label} at {self.samplerate} Hz ({err}); {silent} "
                    f"check [audio] samplerate (the device runs at {device.samplerate:g} Hz) and [audio] device")
        self._mixer, self._device_name = mixer, device.name
        self._mapping = [1, 2] if device.channels >= 2 else [1, 1]  # a mono device gets both channels summed
        return f"Audio: {device.label}, {self.samplerate} Hz, {self.blocksize}-frame blocks"

    def close(self) -> None:
        """Stop the thread and the stream and release the device; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._mixer is not None and not self._lost:  # closing a dead JACK stream hangs inside PortAudio
            self._mixer.abort(ignore_errors=True)
            self._mixer.close(ignore_errors=True)
        self._mixer, self._lost = None, False  # stats() keeps naming the device, for a summary after close

    # --- the synth thread ------------------------------------------------------------------------------------

    def _render(self, at: float) -> np.ndarray:
        """One block that plays at perf_counter() time `at`: take note events and the current parameters, render,
        feed the tap and the meters."""
        values = self.reader.read(time.perf_counter())
        while self._events:
            address, args = self._events.popleft()
            if address == NOTE:
                self.synth.note_on(int(args[0]), float(args[1]))
        if self._panic:
            self._panic.clear()
            self.synth.all_notes_off()
        self._arpeggio.advance(self.synth, bool(values[AUTO]), self.blocksize, float(values.get(TEMPO, DEFAULT_BPM)))
        timbre = np.array([values[a] for a in TIMBRE], dtype=np.float32)
        gain = 0.0 if values.get(BLACKOUT) else float(values[GAIN])  # the synth ramps it: no click
        block = self.synth.render(gain, timbre)
        self.tap.write(block, at)
        self._peak = max(float(np.abs(block).max()), self._peak * self._peak_fall)
        self._blocks += 1
        return block

    def _feed_device(self) -> None:
        """Keep the ring LEAD_BLOCKS ahead of the callback.

        rtmixer's callback retires a ring-buffer action that finds the ring short of a block; that is how a
        starved ring shows, so a retired action is counted and playback is restarted once the lead is rebuilt.
        """
        assert self._mixer is not None
        mixer, ring = self._mixer, rtmixer.RingBuffer(8, RING_FRAMES)  # 8 bytes: one stereo float32 frame
        lead = LEAD_BLOCKS * self.blocksize
        action, retired_underflows = None, 0
        while not self._stop.is_set():
            if action is not None and action not in mixer.actions:
                self._starved += 1
                retired_underflows += action.stats.output_underflows
                action = None
            self._underruns = retired_underflows + (action.stats.output_underflows if action is not None else 0)
            queued = ring.read_available
            if queued + self.blocksize <= lead:
                ring.write(self._render(time.perf_counter() + queued / self.samplerate))
            elif action is None:
                action = mixer.play_ringbuffer(ring, channels=self._mapping)
            elif not mixer.active:  # the stream died under us: JACK server gone, device unplugged
                self._lost, name, self._device_name = True, self._device_name, None
                self.status = (f"Audio: output '{name}' stopped (device or JACK server gone); "
                               "running silent — fix: restart the show once the device is back")
                self._feed_clock()
            else:
                time.sleep((queued + self.blocksize - lead) / self.samplerate)

    def _feed_clock(self) -> None:
        """No device: render in real time against the clock (LEAD_BLOCKS ahead), for the tap and the meters.

        With no device there is no deadline to miss, so a thread that fell behind (a stall on a busy machine)
        counts as starved and renders the backlog: a recording keeps every sample and stays in step with the
        video. Only a stall longer than CATCH_UP_SECONDS (the machine stopped) is skipped rather than rendered.
        """
        lead = LEAD_BLOCKS * self.blocksize
        start, rendered, behind = time.perf_counter(), 0, False
        while not self._stop.is_set():
            now = time.perf_counter()
            due = (now - start) * self.samplerate
            if rendered < due - lead:
                if not behind:
                    self._starved += 1
                behind = True
                if rendered < due - CATCH_UP_SECONDS * self.samplerate:
                    start, due = now - rendered / self.samplerate, rendered
            else:
                behind = False
            if rendered + self.blocksize <= due + lead:
                self._render(start + rendered / self.samplerate)
                rendered += self.blocksize
            else:
                time.sleep((rendered + self.blocksize - due - lead) / self.samplerate)

    # --- what the show reads ---------------------------------------------------------------------------------

    def read_tap(self) -> tuple[int, np.ndarray]:
        """Everything rendered since the last call, (frames, 2) float32 (at most the last TAP_SECONDS), with the
        tap position of its first frame: a reader that was away longer finds the frames it missed as a gap."""
        return self.tap.read()

    def status(self) -> str:
        stats = self.stats()
        return f"audio {stats.get('device') or 'silent'}  starved {stats.get('starved', 0)}"

    def stats(self) -> dict[str, Any]:
        """Counters for the status line; `starved` is ours alone, `underruns` also measures the machine."""
        return {"blocks": self._blocks, "underruns": self._underruns, "starved": self._starved,
                "peak": round(min(self._peak, 1.0), 4), "device": self._device_name,
                "tap_dropped": self.tap.dropped}
