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
  is CLOCK_MONOTONIC, the same in both processes); note -1 is panic. A full ring drops the note, counted;
- sound, child -> show: each rendered block with the time its first frame plays and its render time, for the
  recording tap and the meters; a show that stops reading loses the oldest blocks there, counted, never the sound;
- counters, child -> show: a seqlocked snapshot (blocks, starved, held, xruns, lead, ...);
- lines to say and the device's name, child -> show, and the child's lifetime: a pipe. The child polls its end once
  per loop; the show closing it (close()) or dying (the kernel closes it) reads as end-of-file, and the child stops.
"""

from __future__ import annotations

import gc
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from live.audio.shm_ring import SeqlockFloats, ShmRing
from live.errors import LiveError

LEAD_BLOCKS = (2, 3, 8)  # the lead's floor, start and ceiling, in blocks: 5.3, 8 and 21 ms at 128/48 kHz
QUIET_S = 10.0  # the lead shrinks by a block after this long without a close call
EVENT_MARGIN_S = 0.0005  # a note plays this long after the lead (the child reads notes just before each render, so
#                         the lead alone covers the wait for the next render; this covers the hand-off)
RING_FRAMES = 4096  # the device ring, a power of two well above the highest lead
EVENT_CAPACITY = 512  # note records in flight
PENDING_NOTES = 256  # future-dated notes the child holds (more are lost, counted)
TAP_BLOCKS = 1024  # blocks the show may leave unread (2.7 s at 128/48 kHz) before the oldest are dropped
CATCH_UP_SECONDS = 1.0  # with no device, a stall up to this long is rendered afterwards, not lost
RETRY_S = 1.0  # how often a lost device is looked for
CLOSE_TIMEOUT_S = 1.0  # a stream that takes longer to stop is abandoned: closing never hangs
START_TIMEOUT_S = 30.0  # spawning imports numpy, ONNX Runtime and PortAudio: seconds on a loaded 2-core machine
STOP_TIMEOUT_S = 3.0
PANIC_NOTE = -1
#: Below JACK's own threads (jackd runs its clients' process threads at its -P priority, 10 by default for jackd2):
#: the renderer pre-empts the show's video and control threads and any normal process, never the audio server.
RT_PRIORITY = 5
#: The parameter snapshot's layout.
GAIN, TIMBRE, AUTO, BPM = 0, slice(1, 5), 5, 6
PARAMS = 7
#: The child's counters, a seqlocked snapshot written once per loop.
BLOCKS, STARVED, HELD, XRUNS, LEAD, REALTIME, LATE_NOTES, LOST_NOTES, LOST, REOPENED = range(10)
COUNTERS = 10


def shared_blocks(blocksize: int, names: dict[str, str] | None = None
                  ) -> tuple[ShmRing, ShmRing, SeqlockFloats, SeqlockFloats]:
    """The four shared-memory blocks, one layout for both sides: new ones (names None: the show's side) or the
    show's, attached by their names under "events", "tap", "params" and "counters" (the child's side). Events are
    (time, note, velocity) records; the tap has a block per record: the time its first frame plays, its render
    seconds, then its frames interleaved left/right; params and counters are the snapshots laid out above."""
    names = names or {}
    return (ShmRing(EVENT_CAPACITY, 3, np.float64, name=names.get("events")),
            ShmRing(TAP_BLOCKS, 2 + 2 * blocksize, np.float64, name=names.get("tap")),
            SeqlockFloats(PARAMS, name=names.get("params")), SeqlockFloats(COUNTERS, name=names.get("counters")))


class RenderProcess:
    """The show's Synth (live/audio/synth.py) and output device in a spawned child; see the module docstring.

    Shared memory exists from open() to close(); parameters written before the child starts are what it starts
    with. Not thread-safe on the show's side: set() from one thread, note()/panic() from one at a time (the
    parameter tree's lock serializes its event listeners), drain() and messages() from one.
    """

    def __init__(self, decoder: Path, samplerate: int = 48000, blocksize: int = 128, voices: int = 8,
                 pattern: Sequence[int] = (), device: str | int | None = None, realtime: bool = True,
                 lead_blocks: tuple[int, int, int] = LEAD_BLOCKS) -> None:
        """`decoder`: the synth decoder's .onnx file. `device`: a devices.resolve spec (None: the default output).
        `realtime`: ask for SCHED_FIFO at RT_PRIORITY (granted to root, or with rtkit or an rtprio limit;
        counters say whether it was). `lead_blocks`: the adaptive lead's floor, start and ceiling (all three the
        same: a fixed lead)."""
        self.samplerate, self.blocksize = samplerate, blocksize
        self.config = {"decoder": str(decoder), "samplerate": samplerate, "blocksize": blocksize,
                       "voices": voices, "pattern": tuple(pattern), "device": device, "realtime": realtime,
                       "lead_blocks": lead_blocks}
        self.events: ShmRing | None = None
        self.tap: ShmRing | None = None
        self.params: SeqlockFloats | None = None
        self.counters: SeqlockFloats | None = None
        self._conn: Connection | None = None
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
        assert self.events and self.tap and self.counters
        names = {"events": self.events.name, "tap": self.tap.name, "params": self.params.name,
                 "counters": self.counters.name}
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
        self.process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
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

    def stop(self) -> None:
        """Stop the child in bounded time, keeping the shared memory (a restart reuses it)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.process is not None:
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # stuck in a native call: it must not outlive the show
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
            self.process = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # --- show -> child ---------------------------------------------------------------------------------------

    def set(self, gain: float, timbre: Sequence[float], auto: bool, bpm: float) -> None:
        """Publish the parameters the child reads at its next block."""
        snapshot = self._snapshot
        snapshot[GAIN], snapshot[TIMBRE], snapshot[AUTO], snapshot[BPM] = gain, timbre, float(auto), bpm
        if self.params is not None:
            self.params.write(snapshot)

    def note(self, note: int, velocity: float, at: float) -> bool:
        """A note (velocity 0 releases it) for perf_counter() time `at`, which it plays at plus the lead; False
        if the ring was full or the child is not running (counted in the ring's overflow)."""
        return self.events is not None and self.events.write(np.array([[at, note, velocity]])) == 1

    def panic(self, at: float) -> bool:
        """All notes off, as soon as the child reads it."""
        return self.note(PANIC_NOTE, 0.0, at)

    # --- child -> show ---------------------------------------------------------------------------------------

    def drain(self) -> np.ndarray:
        """The blocks rendered since the last call, as records (time its first frame plays, render seconds, then
        the block's frames interleaved left/right), oldest first."""
        return self.tap.read() if self.tap is not None else np.empty((0, 2 + 2 * self.blocksize))

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
    leaves most of that out (stolen time it does count makes a stretch look shorter: blamed on us)."""

    def __init__(self, at_least: float) -> None:
        self.at_least = at_least
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
        time.sleep(seconds)


class _Renderer:
    """The child's loop: keep the device's ring `lead` ahead of its callback (or, with no device, keep time against
    the clock), taking notes and parameters once per block."""

    def __init__(self, config: dict, conn: Connection) -> None:
        from live.audio.arpeggio import DEFAULT_PATTERN, Arpeggio  # noqa: PLC0415 (child-side imports only)
        from live.audio.synth import Synth  # noqa: PLC0415
        from live.inference import open_session  # noqa: PLC0415

        self.conn = conn
        self.rate, self.block = config["samplerate"], config["blocksize"]
        self.events, self.tap, self.params, self.counters = shared_blocks(self.block, config)
        self.synth = Synth(open_session(Path(config["decoder"]), ("cpu",), threads=1), self.rate, self.block,
                           config["voices"])
        self.arpeggio = Arpeggio(config["pattern"] or DEFAULT_PATTERN, self.rate)
        self.lead = Lead(self.block, *config["lead_blocks"])
        self.device_spec = config["device"]
        self.counts = self.counters.read()  # a restarted child goes on counting where the one before stopped
        self.counts[REALTIME] = config["realtime"] and _realtime()
        self.pending = np.zeros((PENDING_NOTES, 3))  # notes waiting for their block: when, which, how loud
        self.waiting = 0
        self.record = np.zeros((1, self.tap.width))
        self.next_at: float | None = None  # when the block after the last one rendered plays
        self.mixer: Any = None  # rtmixer.Mixer while a device plays; set by the retry thread, dropped by the loop
        self.mapping = [1, 2]
        self.device: Any = None
        self.stop = threading.Event()
        self.retry: threading.Thread | None = None

    def run(self) -> None:
        line = self._open_device()
        self._publish()
        self._send("opened", (line, self.device.name if self.device else None))
        try:
            while not self._stopped():
                if self.mixer is not None:
                    self._feed_device(self.mixer)
                else:
                    self._feed_clock()
        finally:
            self.stop.set()
            if self.mixer is not None:
                _release(self.mixer)

    def _stopped(self) -> bool:
        """The show closed its end of the pipe, or died."""
        try:
            return self.conn.poll()
        except (EOFError, OSError):
            return True

    def _publish(self) -> None:
        self.counts[LEAD] = self.lead.frames
        self.counters.write(self.counts)

    def _send(self, *message: Any) -> None:
        try:
            self.conn.send(message)
        except OSError:  # the show is gone: the loop stops at its next poll
            pass

    # --- one block ---------------------------------------------------------------------------------------------

    def _render(self, at: float) -> np.ndarray:
        """One block that plays at perf_counter() time `at`: take the notes and the parameters, render, and hand the
        block with its time and render time to the show's tap."""
        began = time.perf_counter()
        values = self.params.read()
        self._take_notes()
        self._start_notes(at)
        self.arpeggio.advance(self.synth, bool(values[AUTO]), self.block, float(values[BPM]))
        block = self.synth.render(float(values[GAIN]), values[TIMBRE].astype(np.float32))
        record = self.record[0]
        record[0], record[2:] = at, block.reshape(-1)
        record[1] = time.perf_counter() - began
        self.tap.write(self.record)
        self.counts[BLOCKS] += 1
        self._publish()
        return block

    def _take_notes(self) -> None:
        """Move new note records into the pending list, each due at its time plus the lead (a constant delay while
        the lead holds, so notes keep their spacing to the sample); panic clears everything at once."""
        delay = self.lead.frames / self.rate + EVENT_MARGIN_S
        for when, note, velocity in self.events.read():
            if note == PANIC_NOTE:
                self.waiting = 0
                self.synth.all_notes_off()
            elif self.waiting == PENDING_NOTES:
                self.counts[LOST_NOTES] += 1
            else:
                self.pending[self.waiting] = when + delay, note, velocity
                self.waiting += 1

    def _start_notes(self, at: float) -> None:
        """Start the waiting notes due before this block ends, each at its sample inside the block (a note already
        past is late: it starts at the block's first sample and is counted); the others keep waiting."""
        kept = 0
        for i in range(self.waiting):
            due, note, velocity = self.pending[i]
            offset = round((due - at) * self.rate)
            if offset >= self.block:
                self.pending[kept] = self.pending[i]
                kept += 1
                continue
            if offset < 0:
                self.counts[LATE_NOTES] += 1
            self.synth.note_on(int(note), float(velocity), max(offset, 0))
        self.waiting = kept

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

        ring = rtmixer.RingBuffer(8, RING_FRAMES)  # 8 bytes: one stereo float32 frame
        action, period, retired = None, self.block / self.rate, int(self.counts[XRUNS])
        self.next_at = None
        off_cpu = OffCpu(period)
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
            if queued + self.block <= lead:
                # The callback takes a period at a time, so the block plays up to a period after now + queued: the
                # blocks' own timeline is kept, within that window (a starved ring or clock drift moves it). A note
                # therefore sounds its delay (lead + margin) plus up to a period after its time: the same amount
                # for every note while the timeline holds.
                estimate = time.perf_counter() + queued / self.rate  # read together: a stall in between skews it
                at = estimate if self.next_at is None else min(max(self.next_at, estimate - period), estimate)
                self.next_at = at + period
                if action is not None:
                    self.lead.written(queued, now)
                ring.write(self._render(at))
            elif action is None:
                action = mixer.play_ringbuffer(ring, channels=self.mapping)
            elif not mixer.active:
                self.counts[XRUNS] = retired
                self._lose(mixer)
                return
            else:
                # The callback takes a whole period at once, at a time this loop does not know: sleeping until the
                # ring would have drained evenly can wake just before a callback and then sleep a whole period
                # more, a period late by its own doing. Naps of half a period wake soon after each callback.
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
        start, rendered, behind = time.perf_counter(), 0, False
        self.next_at = None
        while self.mixer is None and not self._stopped():
            now, lead = time.perf_counter(), self.lead.frames
            due = (now - start) * self.rate
            if rendered < due - lead:
                if not behind:
                    self.counts[STARVED] += 1
                behind = True
                if rendered < due - CATCH_UP_SECONDS * self.rate:
                    start, due = now - rendered / self.rate, rendered
            else:
                behind = False
            if rendered + self.block <= due + lead:
                self._render(start + rendered / self.rate)
                rendered += self.block
            else:
                time.sleep((rendered + self.block - due - lead) / self.rate)


def _release(mixer: Any) -> None:
    """Stop and close a stream, or abandon it if it is dead or does not stop within CLOSE_TIMEOUT_S (stopping a
    stream whose JACK server just went away waits forever inside PortAudio)."""
    from live.audio import devices  # noqa: PLC0415

    if mixer.active:
        closer = threading.Thread(target=_stop_and_close, args=(mixer,), name="live-audio-close", daemon=True)
        closer.start()
        closer.join(timeout=CLOSE_TIMEOUT_S)
        if not closer.is_alive():
            return
    devices.abandon(mixer)


def _stop_and_close(mixer: Any) -> None:
    mixer.abort(ignore_errors=True)
    mixer.close(ignore_errors=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), Connection(int(sys.argv[2])))
