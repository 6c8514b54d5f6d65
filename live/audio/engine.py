"""The audio engine: the show's side of the synth, which renders and plays in a process of its own.

The synth and the output device live in a child process (render_process.py), so no thread of the show (video, an
OSC storm, the HUD) can take the GIL or a lock from the sound. This side only steers and listens, none of it on the
sound's path:
- notes and panic go from the parameter tree's emit straight into the child's note ring (no thread of ours in
  between, so a busy show delays a note by no more than its own OSC or MIDI thread does);
- a control thread, once per block period, reads the smoothed, modulated parameters and publishes them, moves the
  rendered blocks into the recording tap and the meters, says what the child says (device lost, back), and starts
  a new child if the one playing died;
- stats() and status() read the child's counters.

If the show's process stalls, the child plays on; the blocks rendered meanwhile wait in shared memory for the tap
(TAP_BLOCKS of them, each with the time it plays, so a longer stall is a gap of silence in a recording, not a shift).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from live.audio import render_process as rp
from live.audio.arpeggio import Arpeggio
from live.audio.synth import TIMBRE_AXES
from live.control.reader import ParamReader
from live.control.schedule import REST  # resting: silent, and the arpeggio stops
from live.errors import LiveError
from live.models.manifest import load_manifest
from live.params import Event, Param, ParamTree

GAIN = "/synth/gain"
AUTO = "/synth/auto"
FOLLOW = "/synth/follow"
NOTE = "/synth/note"
MUSIC_NOTE = "/music/note"  # the notes the music part generates (live/music/player.py), played like NOTE
BLACKOUT, PANIC = "/live/blackout", "/live/panic"  # system controls (live/control/surface.py) the synth obeys
TEMPO = "/tempo/bpm"
TIMBRE = tuple(f"/synth/timbre/{letter}" for letter in "abcd")

DEFAULT_BPM = 96.0
TAP_SECONDS = 2.0
TAP_GAP_BLOCKS = 3  # a block this much later than the last one ended was preceded by silence (a dry device)
PEAK_FALL_DB_PER_S = 20.0
RENDER_TIMES = 1024  # the render-time p99 is over the last this many blocks (about 2.7 s at 128/48 kHz)
RESTART_S = 5.0  # a render process that died is started again at most this often
#: The control thread's period while the show rests (silent): the tap holds 2.7 s of blocks, and waking takes this long
REST_PERIOD_S = 0.05
CLOSE_TIMEOUT_S = 1.0


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

    def follow(self, other: Tap) -> None:
        """Go on with `other`'s timeline (this engine replaces that one while the show plays): positions continue
        from where it ends, and the time between its last block and this tap's next one is silence, so a recording
        stays in step across the change. What this tap held before is dropped (it played beside the old one)."""
        with other._lock:
            written, next_at = other._written, other._next_at
        with self._lock:
            self._read = self._written = written
            self._next_at = next_at

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
        params.append(Param(FOLLOW, "float", 0.0, 0.0, 1.0,
                            doc="timbre transfer: how much of the sound is the voice following [audio] follow_input "
                                "(its pitch and loudness through the decoder); 0 = off, the notes only"))
        note = Event(NOTE, (("note", "int", 0, 127), ("velocity", "float", 0.0, 1.0)),
                     doc="play a note (MIDI number, velocity 0..1); velocity 0 releases it")
        return params, [note]

    def __init__(self, tree: ParamTree, decoder_manifest: Path, device: str | int | None = None,
                 samplerate: int = 48000, blocksize: int = 128, voices: int = 8,
                 pattern: Sequence[int] = (), reader: ParamReader | None = None,
                 say: Callable[[str], None] = print, realtime: bool = True, lead_ms: float | None = None,
                 follow_input: str | int = "") -> None:
        """`reader` is the control thread's smoothed, modulated view of `tree` (default: plain values); `say`
        tells the performer, once each, that the device was lost and that it is back. `realtime`: the render
        process asks for SCHED_FIFO (live doctor says whether the system grants it). `lead_ms`: None adapts the
        lead to the machine (rp.LEAD_BLOCKS); a number fixes it, rounded up to whole blocks (the show's
        [audio] lead). `follow_input`: the input device the follow voice follows (live/audio/follow.py; "": none),
        played as much as /synth/follow says."""
        manifest = load_manifest(decoder_manifest)
        if manifest.kind != "synth-decoder":
            raise LiveError(f"{decoder_manifest} is a {manifest.kind} model, not a synth decoder",
                            "set [audio] model to exported_models/synth-decoder.json")
        if pattern:
            Arpeggio(pattern, samplerate)  # a pattern it cannot play is said here, before any process starts
        fixed = None if lead_ms is None else max(math.ceil(lead_ms / 1000 * samplerate / blocksize - 1e-6), 1)
        blocks = rp.LEAD_BLOCKS if fixed is None else (fixed, fixed, fixed)
        self.process = rp.RenderProcess(manifest.onnx_path, samplerate, blocksize, voices, pattern, device, realtime,
                                        blocks, follow_input)
        self.follow_input = follow_input
        self.lead_fixed = lead_ms is not None
        self.tree = tree
        self.samplerate, self.blocksize = samplerate, blocksize
        self.tap = Tap(int(TAP_SECONDS * samplerate), samplerate, TAP_GAP_BLOCKS * blocksize)
        self.reader, self.say = reader or ParamReader(tree), say
        self._notes = _Notes(self.process)
        self._listening: list[Any] = []
        self._peak_fall = 10.0 ** (-PEAK_FALL_DB_PER_S / 20.0 * blocksize / samplerate)
        self._peak = 0.0
        self._device: str | None = None  # what plays now, as the render process says; None while silent
        self._gone = ""  # what went away, while the render process looks for it
        self._opened = ""  # what open() said
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._resting = False  # /live/rest as last steered: the control thread slows down
        self._render_s = np.zeros(RENDER_TIMES)  # the last RENDER_TIMES render times (a ring: no allocation)
        self._timed = 0
        self._follow_s = np.zeros(RENDER_TIMES)  # and the follow voice's, of the blocks that had it
        self._followed = 0
        self._restarts = 0

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> str:
        """Start the render process (which opens the output, or runs silent: a missing device never raises) and
        the control thread; LiveError only if the render process cannot start at all."""
        if self._thread is not None:
            return self._opened
        self._stop.clear()
        self._steer(time.perf_counter())
        self._opened, self._device = self.process.open()
        self._listening = [self.tree.listen(prefix, timed=True, into=self._notes)
                           for prefix in ("/synth/", MUSIC_NOTE, PANIC)]
        self._thread = threading.Thread(target=self._control, name="live-synth-control", daemon=True)
        self._thread.start()
        return self._opened

    def close(self) -> None:
        """Stop the control thread and the render process (which releases the device), in bounded time; safe to
        call twice. stats() keeps the last figures, for a summary after close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CLOSE_TIMEOUT_S)
        self._thread = None
        for queue in self._listening:
            self.tree.unlisten(queue)
        self._listening = []
        self.process.stop()
        self._collect()
        self.process.close()

    @property
    def lead_frames(self) -> int:
        """How far the render process plays ahead of the device now (it adapts to what the machine holds)."""
        lead = int(self.process.read_counters()[rp.LEAD])
        return lead or self.process.config["lead_blocks"][1] * self.blocksize

    @property
    def event_delay(self) -> float:
        """How long after its time a note plays: two blocks and a margin, whatever the lead (rp.note_delay)."""
        return rp.note_delay(self.blocksize, self.samplerate)

    # --- the control thread ----------------------------------------------------------------------------------

    def _control(self) -> None:
        """Once per block period (REST_PERIOD_S while resting): publish the parameters, collect the rendered blocks
        and the child's words, and start a new render process if the one playing died (at most every RESTART_S)."""
        period, last_try = self.blocksize / self.samplerate, 0.0
        while not self._stop.wait(REST_PERIOD_S if self._resting else period):
            now = time.perf_counter()
            self._steer(now)
            self._collect()
            if not self.process.alive and now - last_try >= RESTART_S:
                last_try = now
                self._restart()

    def _steer(self, now: float) -> None:
        values = self.reader.read(now)
        resting = self._resting = bool(values.get(REST))
        gain = 0.0 if values.get(BLACKOUT) or resting else float(values[GAIN])  # the synth ramps it: no click
        self.process.set(gain, [values[a] for a in TIMBRE], bool(values[AUTO]) and not resting,
                         float(values.get(TEMPO, DEFAULT_BPM)),
                         float(values.get(FOLLOW, 0.0)))

    def _collect(self) -> None:
        """Rendered blocks into the tap, the peak meter and the render-time ring; the child's lines said."""
        for record in self.process.drain():
            block = record[rp.TAP_HEAD:].reshape(-1, 2).astype(np.float32)
            self.tap.write(block, float(record[0]))
            self._peak = max(float(np.abs(block).max()), self._peak * self._peak_fall)
            self._render_s[self._timed % RENDER_TIMES] = record[1]
            self._timed += 1
            if record[2] > 0.0:
                self._follow_s[self._followed % RENDER_TIMES] = record[2]
                self._followed += 1
        for kind, value in self.process.messages():
            if kind == "say":
                self.say(value)
            elif kind == "device":
                self._device = value
                self._gone = "" if value else self._gone
            elif kind == "gone":
                self._gone = value

    def _restart(self) -> None:
        """The render process died (a crash in native code, or killed): say so once and start a fresh one."""
        code = self.process.process.poll() if self.process.process is not None else None
        self.process.stop()
        self._restarts += 1
        self.say(f"Audio: the synth's render process stopped (exit code {code}); starting it again")
        try:
            line, self._device = self.process.open()
            self.say(line)
        except LiveError as err:
            self.say(str(err))

    # --- what the show reads ---------------------------------------------------------------------------------

    def read_tap(self) -> tuple[int, np.ndarray]:
        """Everything rendered since the last call, (frames, 2) float32 (at most the last TAP_SECONDS), with the
        tap position of its first frame: a reader that was away longer finds the frames it missed as a gap."""
        return self.tap.read()

    def render_p99_ms(self) -> float:
        """The 99th percentile of the render process's time per block over the last RENDER_TIMES blocks."""
        times = self._render_s[:min(self._timed, RENDER_TIMES)]
        return float(np.percentile(times, 99)) * 1000 if len(times) else 0.0

    def follow_us(self) -> tuple[float, float]:
        """The follow voice's time per block (input analysis, decoder, DSP and mixing), median and 99th
        percentile in microseconds, over the last RENDER_TIMES blocks that had it; (0, 0) before any."""
        times = self._follow_s[:min(self._followed, RENDER_TIMES)]
        if not len(times):
            return 0.0, 0.0
        p50, p99 = np.percentile(times, [50, 99]) * 1e6
        return float(p50), float(p99)

    def stats(self) -> dict[str, Any]:
        """Counters for the summary, /live/status and the HUD, each cause apart: `starved` counts the times the
        device found the ring empty by our doing (without a device, the times the renderer fell behind the clock);
        `held` the times it ran empty because the machine kept the real-time render process off its CPU for a
        period or more; `xruns` are PortAudio's underflow flags, which measure the machine and the audio server;
        `lead_ms` is how far the synth renders ahead now (`lead_fixed`: set by the show, else adaptive);
        `render_p99_ms` its time per block; `realtime` whether it runs at SCHED_FIFO. `late_notes` came too late for
        their block and started at the first block that could still change; `redone` counts blocks rendered again
        because a note arrived for them after they were rendered (the cost of a lead that does not delay notes);
        `lost_notes` found no room; `lost` and
        `reopened` count the device going away and coming back; `restarts` the render process started again after
        it died. With a follow input: `follow_late` counts blocks that played without the follow voice because the
        render process was kept from mixing it in in time, `input_lost`/`input_back` the input going and coming
        back, `follow_p50_us`/`follow_p99_us` the follow voice's time per block, `follow_lead_ms` how far ahead of
        the device it is mixed in (it adapts, rp.FOLLOW_AHEAD)."""
        c = self.process.read_counters()
        notes_dropped, blocks_dropped = self.process.dropped
        return {"blocks": int(c[rp.BLOCKS]), "starved": int(c[rp.STARVED]), "held": int(c[rp.HELD]),
                "xruns": int(c[rp.XRUNS]), "lead_ms": round(self.lead_frames / self.samplerate * 1000, 2),
                "lead_fixed": self.lead_fixed,
                "render_p99_ms": round(self.render_p99_ms(), 3), "late_notes": int(c[rp.LATE_NOTES]),
                "redone": int(c[rp.REDONE]),
                "lost_notes": int(c[rp.LOST_NOTES]) + notes_dropped, "peak": round(min(self._peak, 1.0), 4),
                "device": self._device, "tap_dropped": self.tap.dropped + blocks_dropped * self.blocksize,
                "lost": int(c[rp.LOST]), "reopened": int(c[rp.REOPENED]), "realtime": bool(c[rp.REALTIME]),
                "restarts": self._restarts, "follow_input": self.follow_input,
                "follow_late": int(c[rp.FOLLOW_LATE]), "input_lost": int(c[rp.INPUT_LOST]),
                "input_back": int(c[rp.INPUT_BACK]),
                "follow_lead_ms": round(c[rp.FOLLOW_LEAD] / self.samplerate * 1000, 2),
                **dict(zip(("follow_p50_us", "follow_p99_us"), (round(t, 1) for t in self.follow_us())))}

    def status(self) -> str:
        """One line for the HUD and /live/status: where the sound goes, then the counters."""
        stats = self.stats()
        if stats["device"] is not None:
            where = f"audio {stats['device']} {self.samplerate / 1000:g} kHz"
        elif self._gone:
            where = f"audio: {self._gone}, silent, retrying"
        else:
            where = "audio: silent (no device)"
        priority = "" if stats["realtime"] else " (no real-time priority: see live doctor)"
        return f"{where}; {counters(stats)}{priority}"


class _Notes:
    """The tree's listener for notes (the performer's and the music part's) and panic: each event straight into the
    render process's note ring (called under the tree's lock, so the ring has one writer at a time)."""

    def __init__(self, process: rp.RenderProcess) -> None:
        self.process = process

    def append(self, event: tuple[str, tuple, float]) -> None:
        address, args, at = event
        if address in (NOTE, MUSIC_NOTE):
            self.process.note(int(args[0]), float(args[1]), at)
        elif address == PANIC:
            self.process.panic(at)


def counters(stats: dict[str, Any]) -> str:
    """The engine's counters in words, one cause each (for the status line and the show's summary);
    `starved` counts the times the ring ran dry (each a stretch of silence), not blocks; held and late notes are
    said once there are any."""
    machine = f", {stats['held']}x held off the CPU by the machine" if stats["held"] else ""
    late = f", {stats['late_notes']} notes late" if stats["late_notes"] else ""
    lead = "fixed" if stats["lead_fixed"] else "adaptive"
    follow = (f", following {stats['follow_input']!r} ({stats['follow_late']} blocks late, p99 "
              f"{stats['follow_p99_us'] / 1000:.2f} ms)") if stats.get("follow_input") else ""
    return (f"starved {stats['starved']}x (ours){machine}{late}, {stats['xruns']} device xruns, "
            f"lead {stats['lead_ms']:.1f} ms ({lead}), render p99 {stats['render_p99_ms']:.2f} ms{follow}")
