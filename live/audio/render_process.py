"""The synth and its output device in a child process of their own, out of reach of the show's Python threads.

Why a process: issue 11 found the synth thread starved by the show's other threads (an OSC storm took the GIL from
it hundreds of times a minute) and by the CPU (video, a busy neighbour). Measured side by side (60 s runs, 2-core
VM, JACK dummy backend at 128 frames, a style model looping and a 5,000 msg/s OSC storm; branch synth-process,
bench_gil.py): the synth thread starved 161 times a minute, the same thread at SCHED_FIFO 77, a child process whose
sound a thread of the show fed to the device 32, a SCHED_FIFO child playing the device itself 0. This module is that
last design: the child renders, owns the device (rtmixer's C callback copies from a ring, no Python in it), loses
and finds it again, and keeps playing whatever the show's process does.

Hand-off (live/audio/shm_ring.py: shared memory, one writer and one reader each, no locks, never waiting):
- parameters, show -> child: gain, the four timbre axes, the arpeggio switch and the tempo, one seqlocked snapshot
  the child reads once per block;
- notes, show -> child: (time, note, velocity) records, time the perf_counter() instant the note is for (the clock
  is CLOCK_MONOTONIC, the same in both processes); note -1 is panic. A full ring drops the note, counted. Each
  note also bumps an eventfd, which ends the child's nap at once: it plays note_delay() after its time, whatever
  the lead (see _Renderer);
- sound, child -> show: each block once final (the device has reached it) with the time its first frame plays and
  its render time, for the recording tap and the meters; a show that stops reading loses the oldest blocks there,
  counted, never the sound;
- counters, child -> show: a seqlocked snapshot (blocks, starved, held, xruns, lead, ..., blocks rendered again);
- lines to say and the device's name, child -> show, and the child's lifetime: a pipe. The child polls its end once
  per loop; the show closing it (close()) or dying (the kernel closes it) reads as end-of-file, and the child stops.
"""

from __future__ import annotations

import gc
import json
import math
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from live.audio.shm_ring import Seqlock, ShmRing
from live.children import end_child
from live.clock_offset import ClockOffset
from live.errors import LiveError

LEAD_BLOCKS = (3, 4, 8)  # the lead's floor, start and ceiling, in blocks: 8, 10.7 and 21 ms at 128/48 kHz
QUIET_S = 10.0  # the lead shrinks by a block after this long without a close call
NOTE_MARGIN_S = 0.001  # the hand-off of a note from the show's OSC or MIDI thread to the render process
RING_FRAMES = 4096  # the device ring, a power of two well above the highest lead
EVENT_CAPACITY = 512  # note records in flight
REDO_BURST = 2  # leads' worth of blocks the child may render again at once for late-arriving notes
PENDING_NOTES = 256  # future-dated notes the child holds (more are lost, counted)
TAP_BLOCKS = 1024  # blocks the show may leave unread (2.7 s at 128/48 kHz) before the oldest are dropped
CATCH_UP_SECONDS = 1.0  # with no device, a stall up to this long is rendered afterwards, not lost
RETRY_S = 1.0  # how often a lost device is looked for
START_TIMEOUT_S = 30.0  # spawning imports numpy, ONNX Runtime and PortAudio: seconds on a loaded 2-core machine
STOP_TIMEOUT_S = 3.0
PANIC_NOTE = -1
#: Below JACK's own threads (jackd runs its clients' process threads at its -P priority, 10 by default for jackd2):
#: the renderer pre-empts the show's video and control threads and any normal process, never the audio server.
RT_PRIORITY = 5
#: The parameter snapshot's layout.
GAIN, TIMBRE, AUTO, BPM, FOLLOW = 0, slice(1, 5), 5, 6, 7
PARAMS = 8
TAP_HEAD = 3  # a tap record's fields before its frames: play time, render seconds, follow seconds
#: The child's counters, a seqlocked snapshot written once per loop.
(BLOCKS, STARVED, HELD, XRUNS, LEAD, REALTIME, LATE_NOTES, LOST_NOTES, LOST, REOPENED, REDONE, FOLLOW_LATE, INPUT_LOST,
 INPUT_BACK, FOLLOW_LEAD) = range(15)
COUNTERS = 15
#: The follow voice (live/audio/follow.py) goes into the block this many blocks after the one the device may be
#: reading now, from the newest input (see _Renderer._commit): floor, start and ceiling of an adaptive Lead. 1 is the
#: last moment a block surely can still change (17.7 ms input to output through JACK, measured); a block the loop
#: missed (the machine kept it away a period) adds one (2.7 ms more), QUIET_S without a miss takes it back.
FOLLOW_AHEAD = (1, 1, 3)
FOLLOW_SLOTS = RING_FRAMES // 64  # a block's follow voice is kept until the block is final (at most the ring's)


def note_delay(blocksize: int, samplerate: int) -> float:
    """How long after its time every note plays, whatever the lead: two blocks and the hand-off margin.

    The render process can change every block the device has not reached but the next one (the callback may be
    reading that one already), so a note arriving just after a callback can start two blocks on at the earliest.
    A constant delay keeps notes' spacing to the sample instead of snapping them to blocks."""
    return 2 * blocksize / samplerate + NOTE_MARGIN_S


def shared_blocks(blocksize: int, names: dict[str, str] | None = None
                  ) -> tuple[ShmRing, ShmRing, Seqlock, Seqlock]:
    """The four shared-memory blocks, one layout for both sides: new ones (names None: the show's side) or the
    show's, attached by their names under "events", "tap", "params" and "counters" (the child's side). Events are
    (time, note, velocity) records; the tap has a block per record: the time its first frame plays, its render
    seconds, the follow voice's seconds, then its frames interleaved left/right; params and counters are the
    snapshots laid out above."""
    names = names or {}
    return (ShmRing(EVENT_CAPACITY, 3, np.float64, name=names.get("events")),
            ShmRing(TAP_BLOCKS, TAP_HEAD + 2 * blocksize, np.float64, name=names.get("tap")),
            Seqlock(PARAMS, name=names.get("params")), Seqlock(COUNTERS, name=names.get("counters")))


class RenderProcess:
    """The show's Synth (live/audio/synth.py) and output device in a spawned child; see the module docstring.

    Shared memory exists from open() to close(); parameters written before the child starts are what it starts
    with. Not thread-safe on the show's side: set() from one thread, note()/panic() from one at a time (the
    parameter tree's lock serializes its event listeners), drain() and messages() from one.
    """

    def __init__(self, decoder: Path, samplerate: int = 48000, blocksize: int = 128, voices: int = 8,
                 pattern: Sequence[int] = (), device: str | int | None = None, realtime: bool = True,
                 lead_blocks: tuple[int, int, int] = LEAD_BLOCKS, follow_input: str | int = "") -> None:
        """`decoder`: the synth decoder's .onnx file. `device`: a devices.resolve spec (None: the default output).
        `follow_input`: the input device whose pitch and loudness the follow voice plays (live/audio/follow.py;
        "": none).
        `realtime`: ask for SCHED_FIFO at RT_PRIORITY (granted to root, or with rtkit or an rtprio limit;
        counters say whether it was). `lead_blocks`: the adaptive lead's floor, start and ceiling (all three the
        same: a fixed lead)."""
        self.samplerate, self.blocksize = samplerate, blocksize
        self.config = {"decoder": str(decoder), "samplerate": samplerate, "blocksize": blocksize,
                       "voices": voices, "pattern": tuple(pattern), "device": device, "realtime": realtime,
                       "lead_blocks": lead_blocks, "follow_input": follow_input}
        self.events: ShmRing | None = None
        self.tap: ShmRing | None = None
        self.params: Seqlock | None = None
        self.counters: Seqlock | None = None
        self._conn: Connection | None = None
        self._wake: int | None = None  # an eventfd: a note written tells the child at once
        self.process: subprocess.Popen | None = None
        self._snapshot = np.zeros(PARAMS)
        self._snapshot[GAIN], self._snapshot[BPM] = 0.5, 96.0
        self._last = np.zeros(COUNTERS)
        self._last_dropped = (0, 0)

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> tuple[str, str | None]:
        """Spawn the child and wait until it plays (or runs silent); returns its line about the device and the
        device's name (None: silent). Raises LiveError if it cannot start. Called again after the child died, it
        starts a fresh one on the same memory."""
        if self.params is None:
            self.events, self.tap, self.params, self.counters = shared_blocks(self.blocksize)
            self.params.write(self._snapshot)
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        assert self.events and self.tap and self.counters
        names = {"events": self.events.name, "tap": self.tap.name, "params": self.params.name,
                 "counters": self.counters.name, "wake_fd": self._wake}
        for attempt in (1, 2):  # libjack has crashed a client starting beside another that was closing
            kind, said = self._spawn({**self.config, **names})
            if kind == "opened":
                return said
            self.stop()
            if attempt == 2 or not str(said).startswith("signal"):
                break
        self.close()
        raise LiveError(f"the synth's render process did not start ({said})", "check [audio] model and `live doctor`")

    def _spawn(self, config: dict) -> tuple[str, Any]:
        """Start a child and wait for its first word: ("opened", (line, device)) or ("error", why)."""
        mine, theirs = socket.socketpair()
        # A plain interpreter running this module, not multiprocessing's spawn: spawn would import the show's
        # __main__ again in the child (a user's script, pytest), and a fork would copy the show's threads' locks.
        command = [sys.executable, "-m", __name__, json.dumps(config), str(theirs.fileno())]
        self.process = subprocess.Popen(command, pass_fds=(theirs.fileno(), config["wake_fd"]),
                                        stdin=subprocess.DEVNULL)
        theirs.close()  # only the child holds that end now: its end-of-file is this process's end
        self._conn = Connection(mine.detach())
        if not self._conn.poll(START_TIMEOUT_S):
            return "error", f"no word within {START_TIMEOUT_S:g} s"
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            code = self.process.wait(STOP_TIMEOUT_S)
            return "error", f"signal {-code}" if code < 0 else f"exit code {code}"

    def close(self) -> None:
        """Stop the child (closing the pipe is the signal) and free the shared memory; safe to call twice."""
        self.stop()
        self._last, self._last_dropped = self.read_counters(), self.dropped
        for block in (self.events, self.tap, self.params, self.counters):
            if block is not None:
                block.close()
        self.events = self.tap = self.params = self.counters = None
        if self._wake is not None:
            os.close(self._wake)
            self._wake = None

    def stop(self) -> None:
        """Stop the child in bounded time, keeping the shared memory (a restart reuses it)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.process is not None:
            end_child(self.process, STOP_TIMEOUT_S)
            self.process = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # --- show -> child ---------------------------------------------------------------------------------------

    def set(self, gain: float, timbre: Sequence[float], auto: bool, bpm: float, follow: float = 0.0) -> None:
        """Publish the parameters the child reads at its next block (`follow`: how much of the sound is the
        follow voice, 0..1)."""
        snapshot = self._snapshot
        snapshot[GAIN], snapshot[TIMBRE], snapshot[AUTO], snapshot[BPM] = gain, timbre, float(auto), bpm
        snapshot[FOLLOW] = follow
        if self.params is not None:
            self.params.write(snapshot)

    def note(self, note: int, velocity: float, at: float) -> bool:
        """A note (velocity 0 releases it) for perf_counter() time `at`, which plays note_delay() later; False
        if the ring was full or the child is not running (counted in the ring's overflow)."""
        if self.events is None or self.events.write(np.array([[at, note, velocity]])) != 1:
            return False
        try:
            os.eventfd_write(self._wake, 1)  # never blocks: a counter that would overflow already wakes the child
        except BlockingIOError:
            pass
        return True

    def panic(self, at: float) -> bool:
        """All notes off at `at` plus note_delay(), and the notes not rendered yet never start."""
        return self.note(PANIC_NOTE, 0.0, at)

    # --- child -> show ---------------------------------------------------------------------------------------

    def drain(self) -> np.ndarray:
        """The blocks rendered since the last call, as records (time its first frame plays, render seconds, follow
        voice seconds, then the block's frames interleaved left/right), oldest first."""
        return self.tap.read() if self.tap is not None else np.empty((0, TAP_HEAD + 2 * self.blocksize))

    def messages(self) -> list[tuple[str, Any]]:
        """What the child said since the last call: ("say", line) for the performer, ("device", name or None) when
        the device comes or goes, ("gone", what) when it went away."""
        got = []
        try:
            while self._conn is not None and self._conn.poll():
                got.append(self._conn.recv())
        except (EOFError, OSError):  # the child died; alive says so
            pass
        return got

    def read_counters(self) -> np.ndarray:
        """The child's counters (see the layout above); the last ones read after close()."""
        return self.counters.read() if self.counters is not None else self._last.copy()

    @property
    def dropped(self) -> tuple[int, int]:
        """(notes dropped by a full event ring, blocks dropped by a show that did not read them); the last ones
        after close()."""
        if self.events is None or self.tap is None:
            return self._last_dropped
        return self.events.overflow, self.tap.overflow


def realtime_granted() -> bool:
    """Whether this system lets the calling thread take SCHED_FIFO at RT_PRIORITY (it is put back at once)."""
    result: list[bool] = []
    probe = threading.Thread(target=lambda: result.append(_realtime()), name="live-rt-probe")
    probe.start()  # a thread of its own: the policy is per thread and dies with it
    probe.join()
    return result[0]


def _realtime() -> bool:
    """Ask for SCHED_FIFO for the calling thread; whether the system granted it."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    except (OSError, AttributeError):  # not permitted, or not Linux
        return False
    return True


# --- the child ---------------------------------------------------------------------------------------------


def main(config: dict, conn: Connection) -> None:
    """The render process's main: open the synth and the device, then play until the pipe says the show is gone."""
    try:
        renderer = _Renderer(config, conn)
    except Exception as err:  # one line for the show's LiveError, not a traceback on stderr
        try:
            conn.send(("error", f"{type(err).__name__}: {err}"))
        except OSError:  # the show is gone already
            pass
        sys.exit(1)
    # No cycle collector in here: a full collection over everything numpy, ONNX Runtime and PortAudio brought in
    # stops the loop for milliseconds at a time it cannot choose, and the loop makes no reference cycles (its
    # arrays are freed by reference counting). What exists now is frozen out of any later collection.
    gc.collect()
    gc.freeze()
    gc.disable()
    renderer.run()


class Lead:
    """How far ahead of the device the child renders, adapted to what the machine holds.

    A close call (a block written when the ring held less than a block: one more period late and the device would
    have found it empty) or a starved ring adds a block; QUIET_S in which a block less would still have had no close
    call takes one away. So a quiet machine gets the floor, a loaded one as much as it needs, up to the ceiling.
    """

    def __init__(self, blocksize: int, floor: int, start: int, ceiling: int) -> None:
        self.block, self.floor, self.ceiling = blocksize, floor * blocksize, ceiling * blocksize
        self.frames = start * blocksize
        self._since = time.perf_counter()
        self._least = self.frames  # the least the ring held at a write since the last change

    def written(self, queued: int, now: float) -> None:
        """A block is written while the ring holds `queued` frames."""
        self._least = min(self._least, queued)
        if queued < self.block:
            self._change(self.block, now)
        elif now - self._since >= QUIET_S:
            self._change(-self.block if self._least >= 2 * self.block else 0, now)

    def starved(self, now: float) -> None:
        self._change(self.block, now)

    def _change(self, by: int, now: float) -> None:
        self.frames = min(max(self.frames + by, self.floor), self.ceiling)
        self._since, self._least = now, self.frames


class OffCpu:
    """When the calling thread last wanted the CPU for `at_least` seconds on end and did not get it: the wall time
    between two wake-ups less the thread's own CPU time and the sleep it asked for. At SCHED_FIFO above every thread
    but the audio server's, that is the machine's doing; measured on this project's 2-core VM, a hypervisor took the
    CPU from a SCHED_FIFO thread for up to 9 ms every few seconds under load (its steal time), and thread_time()
    leaves most of that out (stolen time it does count makes a stretch look shorter: blamed on us). `nap` sleeps
    (it may return early)."""

    def __init__(self, at_least: float, nap: Callable[[float], Any] = time.sleep) -> None:
        self.at_least, self.nap = at_least, nap
        self._wall, self._cpu, self._slept = time.perf_counter(), time.thread_time(), 0.0
        self.last = -math.inf  # perf_counter() when the last such stretch ended

    def woke(self) -> float:
        """Account the stretch since the last wake-up; returns perf_counter() now."""
        wall, cpu = time.perf_counter(), time.thread_time()
        if wall - self._wall - (cpu - self._cpu) - self._slept >= self.at_least:
            self.last = wall
        self._wall, self._cpu, self._slept = wall, cpu, 0.0
        return wall

    def sleep(self, seconds: float) -> None:
        self._slept = seconds
        self.nap(seconds)


class ReadClock:
    """When the device reads each frame, from when the loop sees its ring's read position move.

    The device's callback reads a block at a time, at moments the loop does not see: frame f is read at origin +
    f / rate. A loop that wakes at `now` and finds the position moved from `seen` (at its wake-up before, `last`)
    to `reader` knows two things: the block before `reader` was read by now (origin <= now - (reader - block) /
    rate) and frame `seen` was not read before `last` (origin >= last - seen / rate). The origin is the tightest
    such bounds allow (live/clock_offset.py): a wake-up just after a callback pins it, a device clock slower than
    this one is followed, and the lower bound lifts it past a stretch the device skipped (the whole process
    stopped, a server that dropped cycles). Until the first read it is the latest the first read can be: the
    callback's next period."""

    def __init__(self, rate: int, block: int) -> None:
        self.rate, self.block = rate, block
        self.offset = ClockOffset()
        self._seen, self._last = -1, 0.0

    def restart(self, reader: int, now: float) -> float:
        """The device starts (again) reading at frame `reader`, within a period from `now`."""
        self.offset.reset(now + (self.block - reader) / self.rate, now)
        self._seen, self._last = reader, now
        return self.origin

    @property
    def origin(self) -> float:
        return self.offset.value if self.offset.value is not None else 0.0

    def saw(self, reader: int, now: float) -> float:
        """The read position is `reader` at `now`; returns the origin."""
        if reader > self._seen:
            self.offset.bound(now - (reader - self.block) / self.rate, self._last - self._seen / self.rate, now)
            self._seen = reader
        self._last = now
        return self.origin


class _Renderer:
    """The child's loop: keep the device's ring `lead` ahead of its callback (or, with no device, keep time against
    the clock), taking parameters at each block and notes as they arrive.

    Every block is rendered into one stream of frames: `position` is where the next block starts, `origin` the
    perf_counter() time frame 0 plays (the device's read time, or the clock's). A note plays note_delay() after its
    time, at its own frame, whatever the lead: when that frame is in a block already rendered but not yet reached by
    the device (the lead's blocks but the next one, which the callback may be reading), the loop goes back to that
    block (the synth's saved state) and renders it and the ones after it again, each written over its old place in
    the ring. So the lead protects the sound from stalls without delaying the notes. A block becomes final once the
    device reaches it: then it goes to the show's tap.

    The follow voice (timbre transfer, live/audio/follow.py) does not render with the lead: input can only shape
    blocks rendered after it arrived, so a lead of blocks would add a lead to its latency. It is mixed into each
    block at the last moment that block can still change (_commit: the block after the one the device may be
    reading), from the newest input, and kept apart (follow_parts) so a note that sends the loop back re-renders the
    note voices only and mixes the same follow voice in again. So the follow voice never re-renders (its state only
    moves forward, no save/restore), costs one render per block, and reaches the device two blocks after its input
    arrived, whatever the lead; the price is that a loop kept off its CPU past that point misses the block (the
    block plays without it, counted as follow_late, and the voice starts again from silence), after which the
    follow lead (FOLLOW_AHEAD) mixes a block further ahead until the machine has been quiet for QUIET_S.
    """

    def __init__(self, config: dict, conn: Connection) -> None:
        from live.audio import synth  # noqa: PLC0415 (child-side imports only)
        from live.audio.arpeggio import DEFAULT_PATTERN, Arpeggio  # noqa: PLC0415
        from live.audio.follow import Follower  # noqa: PLC0415
        from live.inference import open_session  # noqa: PLC0415

        self.conn = conn
        self.rate, self.block = config["samplerate"], config["blocksize"]
        self.events, self.tap, self.params, self.counters = shared_blocks(self.block, config)
        self.wake = config["wake_fd"]
        session = open_session(Path(config["decoder"]), ("cpu",), threads=1)
        self.synth = synth.Synth(session, self.rate, self.block, config["voices"])
        self.arpeggio = Arpeggio(config["pattern"] or DEFAULT_PATTERN, self.rate)
        self.lead = Lead(self.block, *config["lead_blocks"])
        self.delay = note_delay(self.block, self.rate)
        self.device_spec = config["device"]
        self.counts = self.counters.read()  # a restarted child goes on counting where the one before stopped
        self.counts[REALTIME] = config["realtime"] and _realtime()
        # Notes waiting to start or in blocks that may still change: the frame each starts at, which note, how
        # loud, and the frame it asked for (a later one: it came too late for that)
        self.pending = np.zeros((PENDING_NOTES, 4))
        self.waiting = 0
        self.record = np.zeros((1, self.tap.width))
        self.position = 0
        self.origin = time.perf_counter()
        # Rendered blocks the device has not reached: (first frame, synth and arpeggio state before it, block,
        # render seconds), in order
        self.queued: deque[tuple[int, tuple, np.ndarray, float]] = deque()
        self.rewrite: Callable[[int, np.ndarray], None] = lambda start, block: None  # a block rendered again
        self.most_credit = REDO_BURST * self.lead.ceiling // self.block
        self.credit = self.most_credit  # blocks it may render again now (_go_back)
        self.mixer: Any = None  # rtmixer.Mixer while a device plays; set by the retry thread, dropped by the loop
        self.mapping = [1, 2]
        self.device: Any = None
        self.stop = threading.Event()
        self.retry: threading.Thread | None = None
        self.portaudio = threading.Lock()  # the retry threads open streams and re-scan one at a time
        self.follower = Follower(config["follow_input"], synth.FollowVoice(session, self.rate, self.block),
                                 self.rate, self.block, lambda line: self._send("say", line),
                                 self.portaudio) if config["follow_input"] not in ("", None) else None
        # The follow voice of each block in flight, as mixed in (gain and follow amount applied), the note voices'
        # share of it (1 - the follow amount, per frame), and its render seconds; by block number modulo the slots
        self.follow_parts = np.zeros((FOLLOW_SLOTS, self.block, 2), dtype=np.float32)
        self.note_shares = np.ones((FOLLOW_SLOTS, self.block, 1), dtype=np.float32)
        self.follow_seconds = np.zeros(FOLLOW_SLOTS)
        self.follow_mixed = np.zeros(FOLLOW_SLOTS, dtype=bool)  # whether a slot's block has a follow voice
        self.followed = 0  # every block before this frame had its follow voice mixed in (or missed it)
        self.follow_amount = self.follow_gain = 0.0  # at the end of the last block mixed: ramped from there
        self.follow_lead = Lead(self.block, *FOLLOW_AHEAD)
        self.timbre = np.zeros(4, dtype=np.float32)
        self.ramp = (np.arange(1, self.block + 1) / self.block).astype(np.float32)
        self.scratch = np.zeros(self.block, dtype=np.float32)
        self.soft_limit, self.knee, self.level, self.peak = synth.soft_limit, synth.LIMIT_KNEE, synth.LEVEL, synth.peak

    def run(self) -> None:
        line = self._open_device()
        following = None
        if self.follower is not None:
            following, found = self.follower.open()
            if not found:  # the notes play on as they would without a follow input, at their whole share
                self.follower = None
        self._publish()
        self._send("opened", (line, self.device.name if self.device else None))
        if following is not None:  # the show's first word must be "opened"; this one it says as it comes
            self._send("say", following)
        try:
            while not self._stopped():
                if self.mixer is not None:
                    self._feed_device(self.mixer)
                else:
                    self._feed_clock()
        finally:
            self.stop.set()
            if self.follower is not None:
                self.follower.close()
            if self.mixer is not None:
                from live.audio import devices  # noqa: PLC0415

                devices.release(self.mixer)

    def _stopped(self) -> bool:
        """The show closed its end of the pipe, or died."""
        try:
            return self.conn.poll()
        except (EOFError, OSError):
            return True

    def _publish(self) -> None:
        self.counts[LEAD] = self.lead.frames
        if self.follower is not None:
            self.counts[INPUT_LOST], self.counts[INPUT_BACK] = self.follower.lost, self.follower.back
            self.counts[FOLLOW_LEAD] = self.follow_lead.frames
        self.counters.write(self.counts)

    def _send(self, *message: Any) -> None:
        try:
            self.conn.send(message)
        except OSError:  # the show is gone: the loop stops at its next poll
            pass

    def _nap(self, seconds: float) -> None:
        """Sleep up to `seconds`; a note from the show (its eventfd) ends the nap at once."""
        if select.select([self.wake], [], [], max(seconds, 0.0))[0]:
            try:
                os.eventfd_read(self.wake)
            except BlockingIOError:
                pass

    # --- the stream --------------------------------------------------------------------------------------------

    def _render(self) -> np.ndarray:
        """The block at `position`: take the parameters and start the notes due in it, render, and queue it."""
        began = time.perf_counter()
        values = self.params.read()
        state = self.synth.save(), self.arpeggio.save()
        self._start_notes(self.position)
        self.arpeggio.advance(self.synth, bool(values[AUTO]), self.block, float(values[BPM]))
        block = self.synth.render(float(values[GAIN]), values[TIMBRE].astype(np.float32))
        slot = self.position // self.block % FOLLOW_SLOTS
        if self.position < self.followed and self.follow_mixed[slot]:  # rendered again after its follow voice
            block = self._mix(block, self.follow_parts[slot], self.note_shares[slot])  # went in: the same again
        self.queued.append((self.position, state, block, time.perf_counter() - began))
        self.position += self.block
        return block

    def _settle(self, reader: int) -> None:
        """The device reads frame `reader` next: the blocks from there on that it may be reading now are final.
        Each goes to the show's tap, with the time its first frame plays and its render time; the notes in them
        are done."""
        while self.queued and self.queued[0][0] < reader + self.block:
            start, _, block, seconds = self.queued.popleft()
            if start >= self.followed:  # final before its follow voice went in: the loop was kept away
                self.followed = start + self.block
                self.follow_seconds[start // self.block % FOLLOW_SLOTS] = 0.0
                self.follow_mixed[start // self.block % FOLLOW_SLOTS] = False
                if self.follower is not None and self.follow_amount > 0.0 and self.follower.voice.sounding:
                    self.counts[FOLLOW_LATE] += 1
                    self.follower.voice.silence()
                    self.follow_lead.starved(time.perf_counter())
            record = self.record[0]
            record[0], record[1] = self.origin + start / self.rate, seconds
            record[2], record[TAP_HEAD:] = self.follow_seconds[start // self.block % FOLLOW_SLOTS], block.reshape(-1)
            self.tap.write(self.record)
            self.counts[BLOCKS] += 1
            self.credit = min(self.credit + 1, self.most_credit)
        first = self.queued[0][0] if self.queued else self.position
        frame, note, _, asked = self.pending[:self.waiting].T
        done = frame < first
        self.counts[LATE_NOTES] += np.count_nonzero(done & (frame != asked) & (note != PANIC_NOTE))
        self._keep(~done)
        self._publish()

    def _take_notes(self) -> None:
        """New note records into the pending list at their frames (their time plus the note delay). Notes for
        blocks already rendered send the loop back to the earliest of them; a note too late for every block that
        can still change starts at the first that can (late: counted once its block is final). Panic also drops
        the notes not rendered yet."""
        first = self.queued[0][0] if self.queued else self.position  # the first frame that can still change
        batch: list[tuple[int, float, float, int]] = []
        for when, note, velocity in self.events.read():
            frame = round((when + self.delay - self.origin) * self.rate)
            if note == PANIC_NOTE:  # the notes not rendered yet never start
                self._keep(self.pending[:self.waiting, 0] < self.position)
                batch = [b for b in batch if b[0] < self.position]
            batch.append((max(frame, first), note, velocity, frame))
        room = PENDING_NOTES - self.waiting
        self.counts[LOST_NOTES] += max(len(batch) - room, 0)
        batch = batch[:room]
        if not batch:
            return
        new = self.pending[self.waiting:self.waiting + len(batch)]
        new[:] = batch
        self.waiting += len(batch)
        back = min(b[0] for b in batch)
        if back < self.position and not self._go_back(back):  # too many blocks to render again: these notes
            np.maximum(new[:, 0], self.position, out=new[:, 0])  # start in the next new block instead (late)

    def _keep(self, which: np.ndarray) -> None:
        """Keep the pending notes where `which` (one flag per waiting note) is true, in order."""
        kept = self.pending[:self.waiting][which]
        self.pending[:len(kept)] = kept
        self.waiting = len(kept)

    def _commit(self, upto: int, reader: int | None = None) -> None:
        """Mix the follow voice into the queued blocks that start at or before frame `upto` and do not have it yet:
        each its next block from the newest input, the note voices faded by the follow amount, both ramped across
        the block from the last one's; written over the block's place in the ring. With no follow input, or the
        follow amount at 0 and the voice silent, blocks are left as they are (no cost). `reader`: the frame the
        device reads next, for the adaptive follow lead (None: no device)."""
        if self.followed > upto or self.follower is None:
            return
        for i, (start, state, block, seconds) in enumerate(self.queued):
            if start > upto:
                break
            if start < self.followed:
                continue
            began = time.perf_counter()
            self.followed = start + self.block
            if reader is not None:
                self.follow_lead.written(start - reader, began)
            slot = start // self.block % FOLLOW_SLOTS
            values = self.params.read()
            amount, gain = float(values[FOLLOW]), float(values[GAIN]) * self.level
            self.follow_mixed[slot] = amount > 0.0 or self.follow_amount > 0.0
            if not self.follow_mixed[slot]:
                self.follow_seconds[slot] = 0.0
                if self.follower.voice.sounding:
                    self.follower.voice.silence()  # unheard (amount 0): the next start is from silence
                continue
            np.copyto(self.timbre, values[TIMBRE], casting="same_kind")
            voice = self.follower.render(self.timbre)
            part, share, ramp = self.follow_parts[slot], self.note_shares[slot], self.scratch
            np.multiply(self.ramp, amount - self.follow_amount, out=share[:, 0])
            share += self.follow_amount  # the follow amount across the block
            if voice is None:
                part.fill(0.0)
            else:
                np.multiply(self.ramp, gain - self.follow_gain, out=ramp)
                ramp += self.follow_gain
                ramp *= share[:, 0]  # gain x follow amount across the block
                np.multiply(voice.T, ramp[:, None], out=part)
            np.subtract(1.0, share, out=share)
            self.follow_amount, self.follow_gain = amount, gain
            mixed = self._mix(block, part, share)
            self.queued[i] = (start, state, mixed, seconds)
            self.rewrite(start, mixed)
            self.follow_seconds[slot] = time.perf_counter() - began

    def _mix(self, block: np.ndarray, part: np.ndarray, share: np.ndarray) -> np.ndarray:
        """The note voices' `block` (fresh from the synth: changed in place) at `share`, plus the follow `part`,
        soft-limited as the synth's own output is."""
        block *= share
        block += part
        if self.peak(block) > self.knee:
            block = self.soft_limit(block)
        return block

    def _go_back(self, frame: int) -> bool:
        """Render again from the queued block that holds `frame` to the last one, with the notes and parameters as
        they are now, each block written over its old place; False if that is more than the credit allows. The
        credit bounds the cost: one block again per block played (REDO_BURST leads at once), so a storm of notes
        cannot take a CPU from the show."""
        first = (frame - self.queued[0][0]) // self.block
        again = len(self.queued) - first
        if again > self.credit:
            return False
        self.credit -= again
        synth, arpeggio = self.queued[first][1]
        self.synth.restore(synth)
        self.arpeggio.restore(arpeggio)
        for _ in range(again):
            self.queued.pop()
        self.position -= again * self.block
        for _ in range(again):
            start = self.position
            self.rewrite(start, self._render())
        self.counts[REDONE] += again
        return True

    def _follow(self, upto: int, reader: int | None = None) -> None:
        """The newest input into the follower, and the follow voice into the blocks up to frame `upto`: with a
        device, the block after the one it reads next (the first that surely can still change)."""
        if self.follower is not None:
            self.follower.take()
            self._commit(upto, reader)

    def _start_notes(self, start: int) -> None:
        """Start the pending notes in the block that begins at frame `start`, each at its frame inside it, in the
        order they came (panic releases what sounds then)."""
        for i in range(self.waiting):
            frame, note, velocity, _ = self.pending[i]
            if start <= frame < start + self.block:
                if note == PANIC_NOTE:
                    self.synth.all_notes_off()
                else:
                    self.synth.note_on(int(note), float(velocity), int(frame) - start)

    # --- the device ----------------------------------------------------------------------------------------

    def _open_device(self) -> str:
        """Resolve the device and start a stream on it; the line to say either way (never raises: runs silent)."""
        import sounddevice as sd  # noqa: PLC0415

        from live.audio import devices  # noqa: PLC0415

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
            return (f"Audio: could not open {device.label} at {self.rate} Hz ({err}); {silent} "
                    f"check [audio] samplerate (the device runs at {device.samplerate:g} Hz) and [audio] device")
        return f"Audio: {device.label}, {self.rate} Hz, {self.block}-frame blocks"

    def _start(self, device: Any) -> None:
        """A running stream on `device`, handed to the loop through self.mixer."""
        import rtmixer  # noqa: PLC0415

        mixer = rtmixer.Mixer(device=device.index, channels=min(2, device.channels), samplerate=self.rate,
                              blocksize=self.block, latency="low")
        mixer.start()
        self.mapping = [1, 2] if device.channels >= 2 else [1, 1]  # a mono device gets both channels summed
        self.device, self.mixer = device, mixer

    def _feed_device(self, mixer: Any) -> None:
        """Keep the ring `lead` ahead of the callback until stopped or the stream dies.

        rtmixer's callback retires a ring-buffer action that finds the ring short of a block: that is a starved
        ring, counted, and playback restarts once the lead is rebuilt (a fresh lead, never a backlog). A dead stream
        (JACK server gone, device unplugged) leaves the ring full and the stream inactive.
        """
        import rtmixer  # noqa: PLC0415

        self._settle(self.position)  # what the clock rendered ahead never reaches this device
        frames = np.zeros((RING_FRAMES, 2), dtype=np.float32)  # the ring's memory, so a block can be written again
        ring = rtmixer.RingBuffer(8, buffer=frames)  # 8 bytes: one stereo float32 frame
        base = self.position  # the frame at the ring's index 0

        def rewrite(start: int, block: np.ndarray) -> None:
            index = np.arange(start - base, start - base + len(block)) % RING_FRAMES
            frames[index] = block

        self.rewrite = rewrite
        action, period, retired = None, self.block / self.rate, int(self.counts[XRUNS])
        clock = ReadClock(self.rate, self.block)
        off_cpu = OffCpu(period, self._nap)
        while not self._stopped():
            now = off_cpu.woke()
            if action is not None and action not in mixer.actions:
                # Held off its CPU for a period or more, at real-time priority, within the time the lead covers
                # (the ring runs dry up to a lead and a period after a stall: the loop may write a block or two
                # between): only the machine does that (a hypervisor taking the virtual CPU away, the kernel, the
                # audio server's own threads).
                held = now - off_cpu.last <= self.lead.frames / self.rate + period
                self.counts[HELD if self.counts[REALTIME] and held else STARVED] += 1
                self.lead.starved(now)
                retired += action.stats.output_underflows
                action = None
            self.counts[XRUNS] = retired + (action.stats.output_underflows if action else 0)
            queued, lead = ring.read_available, self.lead.frames
            reader = self.position - queued  # the frame the device reads next
            if action is not None:
                self.origin = clock.saw(reader, now)
            self._settle(reader)
            self._take_notes()
            playing = reader if action is not None else None  # the follow lead learns from a playing device only
            self._follow(reader + self.follow_lead.frames, playing)
            if queued + self.block <= lead:
                if action is not None:
                    self.lead.written(queued, now)
                ring.write(self._render())
                self._commit(reader + self.follow_lead.frames, playing)  # a ring run short: it may be the one
            elif action is None:
                action = mixer.play_ringbuffer(ring, channels=self.mapping)
                self.origin = clock.restart(reader, time.perf_counter())
            elif not mixer.active:
                self.counts[XRUNS] = retired
                self._settle(self.position)
                self._lose(mixer)
                return
            else:
                # The callback takes a whole period at once, at a time this loop does not know: sleeping until the
                # ring would have drained evenly can wake just before a callback and then sleep a whole period
                # more, a period late by its own doing. Naps of half a period wake soon after each callback (and
                # keep the read clock tight); a note ends a nap at once.
                off_cpu.sleep(min(queued + self.block - lead, self.block // 2) / self.rate)

    def _lose(self, mixer: Any) -> None:
        """The stream died: abandon it, say so once, go silent and start looking for the device."""
        from live.audio import devices  # noqa: PLC0415

        devices.abandon(mixer)
        device, self.device, self.mixer = self.device, None, None
        jack = device.hostapi == devices.JACK_API
        self.counts[LOST] += 1
        self._send("device", None)
        self._send("gone", "JACK server gone" if jack else f"output {device.name} gone")
        self._send("say", f"Audio: lost {device.label} ({'the JACK server went away' if jack else 'device gone'}); "
                  f"running silent, looking for it every {RETRY_S:g} s")
        self.retry = threading.Thread(target=self._look_for, args=(device, time.perf_counter()),
                                      name="live-audio-retry", daemon=True)
        self.retry.start()

    def _look_for(self, lost: Any, since: float) -> None:
        """The retry thread: every RETRY_S, open the device again; once it plays, hand it to the loop.

        For a JACK device a cheap client probe comes first, so PortAudio is only re-scanned once the server is
        back (a re-scan loads a fresh PortAudio, see devices.py). The loop keeps time meanwhile.
        """
        import sounddevice as sd  # noqa: PLC0415

        from live.audio import devices  # noqa: PLC0415

        while not self.stop.wait(RETRY_S) and not self._stopped():
            if lost.hostapi == devices.JACK_API and devices.jack_answers() is False:
                continue
            try:
                with self.portaudio:  # a re-scan closes every stream: not while the follow input opens one
                    self._start(devices.resolve(self.device_spec))
            except (LiveError, sd.PortAudioError, ValueError):
                continue
            self.counts[REOPENED] += 1
            self._send("device", self.device.name)
            self._send("say", f"Audio: {self.device.label} is back after {time.perf_counter() - since:.1f} s")
            return

    def _feed_clock(self) -> None:
        """No device: render in real time against the clock (the lead ahead), for the tap and the meters.

        With no device there is no deadline to miss, so a loop that fell behind (the machine stopped it) counts
        as starved and renders the backlog: a recording keeps every sample and stays in step with the video. Only a
        stall longer than CATCH_UP_SECONDS is skipped rather than rendered. Returns when stopped or when the retry
        thread has a device playing again; the device then starts from a fresh lead, never from this backlog.
        """
        self.origin = max(self.origin, time.perf_counter() - self.position / self.rate)  # time never goes back
        self.rewrite = lambda start, block: None  # the tap takes blocks once final: nothing to write over
        behind = False
        while self.mixer is None and not self._stopped():
            now, lead = time.perf_counter(), self.lead.frames
            reader = int((now - self.origin) * self.rate)  # the frame playing now
            if self.position < reader - lead:
                if not behind:
                    self.counts[STARVED] += 1
                behind = True
                if self.position < reader - CATCH_UP_SECONDS * self.rate:
                    self.origin, reader = now - self.position / self.rate, self.position
            else:
                behind = False
            self._settle(reader)
            self._take_notes()
            if self.position + self.block <= reader + lead:
                self._render()
                self._follow(self.position)  # no device to be late for: the follow voice goes in as blocks render
            else:
                self._nap((self.position + self.block - reader - lead) / self.rate)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), Connection(int(sys.argv[2])))
