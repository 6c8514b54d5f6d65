"""The audio engine: a synth thread that keeps a lock-free ring a few blocks ahead of a C audio callback.

No Python runs in the audio callback: rtmixer's C callback only copies from the ring buffer, so a garbage
collection or a busy video thread delays the synth thread, not the sound card (see shared/real-parts.md). The
synth thread renders whenever the ring has room for a block and sleeps otherwise. With no usable device it
runs silent, paced by the clock, so recordings still get audio and a show never fails for want of a card.

A device that dies mid-show (JACK server killed, card unplugged) is noticed by the synth thread within a block,
said once, and abandoned (see devices.py: a dead JACK stream cannot be closed); the synth thread goes on against
the clock, and a retry thread opens the device again when it is back, which is said once too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
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
RETRY_S = 1.0  # how often a lost device is looked for
CLOSE_TIMEOUT_S = 1.0  # a stream that takes longer to stop is abandoned: close() never hangs
RENDER_TIMES = 1024  # the render-time p99 is over the last this many blocks (about 2.7 s at 128/48 kHz)
PENDING_NOTES = 256  # note events waiting for the block they play in (a full list drops the newest)


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

    def time_at(self, position: int) -> float:
        """When the frame at absolute `position` plays (perf_counter() time), on the timeline since the last gap:
        lines a tap position up with an event's time."""
        with self._lock:
            assert self._next_at is not None, "nothing written yet"
            return self._next_at - (self._written - position) / self.samplerate

    def read(self) -> tuple[int, np.ndarray]:
        """(absolute position of the first frame, everything written since the last read, oldest first)."""
        capacity = len(self._buffer)
        with self._lock:
            start, self._read = self._read, self._written
            return start, self._buffer[np.arange(start, self._written) % capacity]


class Arpeggio:
    """Eighth notes cycling through a pattern at the show's tempo; timed in rendered frames, so it follows the
    audio clock, each step starting at its own sample."""

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
        while self._due < frames:  # each step at its sample in the block
            if self.playing is not None:
                synth.note_off(self.playing)
            self.playing = self.notes[self._index % len(self.notes)]
            accent = 0.55 if self._index % 4 == 0 else 0.4  # a soft accent on the beat
            synth.note_on(self.playing, accent, max(int(self._due), 0))
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
                 pattern: Sequence[int] = (), reader: ParamReader | None = None,
                 say: Callable[[str], None] = print) -> None:
        """`reader` is the synth thread's smoothed, modulated view of `tree` (default: plain values); `say`
        tells the performer, once each, that the device was lost and that it is back."""
        manifest = load_manifest(decoder_manifest)
        if manifest.kind != "synth-decoder":
            raise LiveError(f"{decoder_manifest} is a {manifest.kind} model, not a synth decoder",
                            "set [audio] model to exported_models/synth-decoder.json")
        self.synth = Synth(open_session(manifest.onnx_path, ("cpu",), threads=1), samplerate, blocksize, voices)
        self.tree, self.device_spec = tree, device
        self.samplerate, self.blocksize = samplerate, blocksize
        self.tap = Tap(int(TAP_SECONDS * samplerate), samplerate, TAP_GAP_BLOCKS * blocksize)
        self.reader, self.say = reader or ParamReader(tree), say
        self._events = tree.listen("/synth/", timed=True)
        self._panic = tree.listen(PANIC)
        self._arpeggio = Arpeggio(pattern or DEFAULT_PATTERN, samplerate)
        self._peak_fall = 10.0 ** (-PEAK_FALL_DB_PER_S / 20.0 * blocksize / samplerate)
        self._mixer: rtmixer.Mixer | None = None  # set by open() and the retry thread, dropped by the synth thread
        self._mapping: list[int] = [1, 2]
        self._device: devices.OutputDevice | None = None  # what plays now; None while silent
        self._opened = ""  # what open() said
        self._gone = ""  # what went away, while it is being looked for
        self._thread: threading.Thread | None = None
        self._retry: threading.Thread | None = None
        self._stop = threading.Event()
        self._blocks = self._xruns = self._starved = self._retired_xruns = 0
        self._lost = self._reopened = 0
        self._peak = 0.0
        self.lead_frames = LEAD_BLOCKS * blocksize  # how far the synth renders ahead of what plays
        # A note plays this long after it arrived (or after its OSC bundle's time): a constant delay, so notes
        # keep their spacing to the sample instead of snapping to blocks; a block more than the lead, so a note
        # that arrives just after a render is still ahead of the next block.
        self.event_delay = (self.lead_frames + blocksize) / samplerate
        self._due = np.zeros(PENDING_NOTES)  # notes waiting for their block: when, which, how loud
        self._due_note = np.zeros(PENDING_NOTES, dtype=np.int64)
        self._due_velocity = np.zeros(PENDING_NOTES)
        self._waiting = 0
        self._late_notes = self._lost_notes = 0  # played at a block's start because it was rendered late; no room
        self._render_s = np.zeros(RENDER_TIMES)  # the last RENDER_TIMES render times (a ring: no allocation)
        self._next_at: float | None = None  # when the block after the last one rendered plays

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> str:
        """Open the output and start the synth thread; never raises for a missing device: runs silent instead."""
        if self._thread is not None:
            return self._opened
        self._stop.clear()
        self._device = None
        self._opened = self._open_device()
        self._thread = threading.Thread(target=self._play, name="live-synth", daemon=True)
        self._thread.start()
        return self._opened

    def _open_device(self) -> str:
        """Resolve the device and start a stream on it (self._mixer); the line to say either way."""
        silent = "running silent — fix:"
        try:
            device = devices.resolve(self.device_spec)
        except LiveError as err:
            return f"Audio: {err.what}; {silent} {err.fix}"
        except sd.PortAudioError as err:
            return f"Audio: PortAudio failed to list devices ({err}); {silent} check the audio system"
        try:
            self._start(device)
        except (sd.PortAudioError, ValueError) as err:
            return (f"Audio: could not open {device.label} at {self.samplerate} Hz ({err}); {silent} "
                    f"check [audio] samplerate (the device runs at {device.samplerate:g} Hz) and [audio] device")
        return f"Audio: {device.label}, {self.samplerate} Hz, {self.blocksize}-frame blocks"

    def _start(self, device: devices.OutputDevice) -> None:
        """A running stream on `device`, handed to the synth thread through self._mixer."""
        mixer = rtmixer.Mixer(device=device.index, channels=min(2, device.channels),
                              samplerate=self.samplerate, blocksize=self.blocksize, latency="low")
        mixer.start()
        self._mapping = [1, 2] if device.channels >= 2 else [1, 1]  # a mono device gets both channels summed
        self._device, self._mixer = device, mixer

    def close(self) -> None:
        """Stop the threads and the stream and release the device, in bounded time; safe to call twice."""
        self._stop.set()
        for thread in (self._thread, self._retry):
            if thread is not None:
                thread.join(timeout=CLOSE_TIMEOUT_S)
        self._thread = self._retry = None
        if self._mixer is not None:
            _release(self._mixer)
        self._mixer = None  # stats() keeps naming the device, for a summary after close

    # --- the synth thread ------------------------------------------------------------------------------------

    def _render(self, at: float) -> np.ndarray:
        """One block that plays at perf_counter() time `at`: take note events and the current parameters, render,
        feed the tap and the meters (the time it took goes into the render-time ring)."""
        started = time.perf_counter()
        values = self.reader.read(started)
        while self._events:
            address, args, when = self._events.popleft()
            if address != NOTE:
                continue
            if self._waiting == PENDING_NOTES:
                self._lost_notes += 1
                continue
            i = self._waiting
            self._due[i], self._due_note[i], self._due_velocity[i] = when + self.event_delay, args[0], args[1]
            self._waiting += 1
        if self._panic:
            self._panic.clear()
            self._waiting = 0
            self.synth.all_notes_off()
        self._start_notes(at)
        self._arpeggio.advance(self.synth, bool(values[AUTO]), self.blocksize, float(values.get(TEMPO, DEFAULT_BPM)))
        timbre = np.array([values[a] for a in TIMBRE], dtype=np.float32)
        gain = 0.0 if values.get(BLACKOUT) else float(values[GAIN])  # the synth ramps it: no click
        block = self.synth.render(gain, timbre)
        self.tap.write(block, at)
        self._peak = max(float(np.abs(block).max()), self._peak * self._peak_fall)
        self._render_s[self._blocks % RENDER_TIMES] = time.perf_counter() - started
        self._blocks += 1
        return block

    def _start_notes(self, at: float) -> None:
        """Start the waiting notes due before this block ends, each at its sample inside the block (a note already
        past is late: it starts at the block's first sample and is counted); the others keep waiting."""
        kept = 0
        for i in range(self._waiting):
            offset = round((self._due[i] - at) * self.samplerate)
            if offset >= self.blocksize:
                self._due[kept], self._due_note[kept], self._due_velocity[kept] = \
                    self._due[i], self._due_note[i], self._due_velocity[i]
                kept += 1
                continue
            if offset < 0:
                self._late_notes += 1
            self.synth.note_on(int(self._due_note[i]), float(self._due_velocity[i]), max(offset, 0))
        self._waiting = kept

    def _play(self) -> None:
        """The synth thread: to the device while there is one, else against the clock until one is back."""
        while not self._stop.is_set():
            if self._mixer is not None:
                self._feed_device(self._mixer)
            else:
                self._feed_clock()

    def _feed_device(self, mixer: rtmixer.Mixer) -> None:
        """Keep the ring LEAD_BLOCKS ahead of the callback until stopped or the stream dies.

        rtmixer's callback retires a ring-buffer action that finds the ring short of a block; that is how a
        starved ring shows, so a retired action is counted and playback is restarted once the lead is rebuilt.
        A dead stream (JACK server gone, device unplugged) leaves the ring full and the stream inactive.
        """
        ring = rtmixer.RingBuffer(8, RING_FRAMES)  # 8 bytes: one stereo float32 frame
        action, period = None, self.blocksize / self.samplerate
        self._next_at = None
        while not self._stop.is_set():
            if action is not None and action not in mixer.actions:
                self._starved += 1
                self._retired_xruns += action.stats.output_underflows
                action = None
            self._xruns = self._retired_xruns + (action.stats.output_underflows if action else 0)
            queued, lead = ring.read_available, self.lead_frames
            if queued + self.blocksize <= lead:
                # The callback takes a period at a time, so now + queued is late by up to a period: the blocks'
                # own timeline is kept, within that window (a starved ring or clock drift moves it).
                estimate = time.perf_counter() + queued / self.samplerate
                at = estimate if self._next_at is None else min(max(self._next_at, estimate - period), estimate)
                self._next_at = at + period
                ring.write(self._render(at))
            elif action is None:
                action = mixer.play_ringbuffer(ring, channels=self._mapping)
            elif not mixer.active:
                self._retired_xruns = self._xruns
                self._lose(mixer)
                return
            else:
                time.sleep((queued + self.blocksize - lead) / self.samplerate)

    def _lose(self, mixer: rtmixer.Mixer) -> None:
        """The stream died: abandon it, say so once, go silent and start looking for the device."""
        devices.abandon(mixer)
        device, self._device, self._mixer = self._device, None, None
        assert device is not None
        jack = device.hostapi == devices.JACK_API
        self._gone = "JACK server gone" if jack else f"output {device.name} gone"
        self._lost += 1
        self.say(f"Audio: lost {device.label} ({'the JACK server went away' if jack else 'device gone'}); "
                 f"running silent, looking for it every {RETRY_S:g} s")
        self._retry = threading.Thread(target=self._look_for, args=(device, time.perf_counter()),
                                       name="live-audio-retry", daemon=True)
        self._retry.start()

    def _look_for(self, lost: devices.OutputDevice, since: float) -> None:
        """The retry thread: every RETRY_S, open the device again; once it plays, hand it to the synth thread.

        For a JACK device a cheap client probe comes first, so PortAudio is only re-scanned once the server is
        back (a re-scan loads a fresh PortAudio, see devices.py). Nothing here runs in the synth thread, which
        keeps time meanwhile.
        """
        while not self._stop.wait(RETRY_S):
            if lost.hostapi == devices.JACK_API and devices.jack_answers() is False:
                continue
            try:
                self._start(devices.resolve(self.device_spec))
            except (LiveError, sd.PortAudioError, ValueError):
                continue
            self._reopened += 1
            assert self._device is not None
            self._gone = ""
            self.say(f"Audio: {self._device.label} is back after {time.perf_counter() - since:.1f} s")
            return

    def _feed_clock(self) -> None:
        """No device: render in real time against the clock (LEAD_BLOCKS ahead), for the tap and the meters.

        With no device there is no deadline to miss, so a thread that fell behind (a stall on a busy machine)
        counts as starved and renders the backlog: a recording keeps every sample and stays in step with the
        video. Only a stall longer than CATCH_UP_SECONDS (the machine stopped) is skipped rather than rendered.
        Returns when stopped or when the retry thread has a device playing again.
        """
        start, rendered, behind = time.perf_counter(), 0, False
        self._next_at = None
        while not self._stop.is_set() and self._mixer is None:
            now, lead = time.perf_counter(), self.lead_frames
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

    def render_p99_ms(self) -> float:
        """The 99th percentile of the synth thread's time per block over the last RENDER_TIMES blocks."""
        times = self._render_s[:min(self._blocks, RENDER_TIMES)]
        return float(np.percentile(times, 99)) * 1000 if len(times) else 0.0

    def stats(self) -> dict[str, Any]:
        """Counters for the summary, /live/status and the HUD, each cause apart: `starved` blocks are ours alone
        (the ring ran dry, or without a device the thread fell behind the clock); `xruns` are PortAudio's
        underflow flags, which also measure the machine and the audio server; `lead_ms` is how far the synth
        renders ahead; `render_p99_ms` its time per block. `late_notes` started at a block edge because their
        block was rendered after their time; `lost` and `reopened` count the device going away and coming back."""
        return {"blocks": self._blocks, "starved": self._starved, "xruns": self._xruns,
                "lead_ms": round(self.lead_frames / self.samplerate * 1000, 2),
                "render_p99_ms": round(self.render_p99_ms(), 3), "late_notes": self._late_notes,
                "lost_notes": self._lost_notes, "peak": round(min(self._peak, 1.0), 4),
                "device": self._device.name if self._device else None, "tap_dropped": self.tap.dropped,
                "lost": self._lost, "reopened": self._reopened}

    def status(self) -> str:
        """One line for the HUD and /live/status: where the sound goes, then the counters."""
        device = self._device
        if device is not None:
            where = f"audio {device.name} {self.samplerate / 1000:g} kHz"
        elif self._gone:
            where = f"audio: {self._gone}, silent, retrying"
        else:
            where = "audio: silent (no device)"
        return f"{where}; {counters(self.stats())}"


def counters(stats: dict[str, Any]) -> str:
    """The engine's counters in words, one cause each (for the status line and the show's summary);
    `starved` counts the times the ring ran dry (each a stretch of silence), not blocks."""
    return (f"starved {stats['starved']}x (ours), {stats['xruns']} device xruns, lead {stats['lead_ms']:.1f} ms, "
            f"render p99 {stats['render_p99_ms']:.2f} ms")


def _release(mixer: rtmixer.Mixer) -> None:
    """Stop and close a stream, or abandon it if it is dead or does not stop within CLOSE_TIMEOUT_S (stopping a
    stream whose JACK server just went away waits forever inside PortAudio)."""
    if mixer.active:
        closer = threading.Thread(target=_stop_and_close, args=(mixer,), name="live-audio-close", daemon=True)
        closer.start()
        closer.join(timeout=CLOSE_TIMEOUT_S)
        if not closer.is_alive():
            return
    devices.abandon(mixer)


def _stop_and_close(mixer: rtmixer.Mixer) -> None:
    mixer.abort(ignore_errors=True)
    mixer.close(ignore_errors=True)
