"""Capture: the show's video source into a newest-frame mailbox, and the picture never freezes for it.

Each real source is read on a reader thread of its own that owns it: the reader opens it (which may block: a FIFO
waits for its writer, a server for its first bytes), reads it, reopens it when it is lost, and is the only thread
that ever closes it, once its last read has returned, so nothing is released under a read in progress.

The capture thread takes the reader's frames with a time-out. Whenever the source has been silent for STALL_S (not
open yet, a server that stopped sending, a FIFO whose writer restarts), the built-in animated source plays at the
show's frame rate until the source delivers again, each change said once. A reader stuck in a read for
RECONNECT_AFTER_S is left to end by itself (a daemon thread; at most one such per source at a time) while a fresh
reader connects beside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from live.errors import LiveError
from live.mailbox import Mailbox
from live.video.frame import Frame
from live.video.sources import (  # noqa: F401 (SOURCES, open_opencv: re-exported for plug-ins and `live doctor`)
    SOURCES, BuiltinSource, Source, describe, factory_for, open_opencv, parse_source,
)

#: Silence after which a source counts as stalled and the built-in source fills in: about 15 frames at 30 fps, a
#: hitch an audience barely notices, yet several frame intervals of any live source worth playing (4 fps and up).
STALL_S = 0.5
#: How long a reader stuck in one read may take to resume before a fresh connection is tried beside it.
RECONNECT_AFTER_S = 3.0
#: Pause between attempts to open a source that will not open.
RETRY_EVERY_S = 2.0
#: Consecutive empty reads after which a source counts as lost and is reopened (a FIFO's writer went away).
LOST_AFTER = 15
MISS_WAIT_S = 0.01  # between empty reads, so a source that returns None at once is not spun on
POLL_S = 0.05  # the capture thread's longest wait, so a switch or close is seen promptly
CLOSE_S = 1.0  # the longest close() waits for its threads before leaving them to end by themselves


class Reader:
    """One source on a daemon thread of its own: opens it, reads it into `frames`, reopens it when it is lost, and
    closes it itself, so no other thread ever releases a source under a read in progress."""

    def __init__(self, spec: int | str, factory: Callable[..., Source], width: int, height: int,
                 fps: float) -> None:
        self.spec = spec
        self.name = describe(spec)
        self.frames: Mailbox[tuple[np.ndarray, float]] = Mailbox()  # (image, perf_counter() when read)
        self.problem = ""  # why it is not delivering, while it is not
        self.fix = ""
        self.reading_since: float | None = None  # when the read in progress began
        self._factory = factory
        self.size, self._fps = (width, height), fps  # size: replaced whole (Capture.resize), read once a frame
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source {self.name}", daemon=True)

    def start(self) -> Reader:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask it to end: a read in progress finishes first, then this reader's own thread closes the source."""
        self._stop.set()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(max(0.0, timeout))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                source = self._factory(self.spec, *self.size)
            except LiveError as err:
                self.problem, self.fix = err.what, err.fix
            except Exception as err:  # a kind's or a backend's failure retries; it never ends the show
                self.problem, self.fix = f"{type(err).__name__}: {err}", ""
            else:
                try:
                    delivered = self._play(source)
                finally:
                    source.close()
                if delivered:
                    continue  # it played, then was lost: reopen at once
            self._stop.wait(RETRY_EVERY_S)

    def _play(self, source: Source) -> int:
        """Read until stopped or lost; how many frames it delivered."""
        self.name = source.name
        rate = source.fps or self._fps
        interval = 1.0 / rate if source.paced and rate > 0 else 0.0
        misses = delivered = 0
        due = time.perf_counter()
        while not self._stop.is_set():
            if interval:
                due += interval
                delay = due - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    due = time.perf_counter()  # fell behind: don't burst to catch up
            self.reading_since = time.perf_counter()
            try:
                img = source.read()
            except Exception as err:  # treated as lost: reopened like a source that went away
                self.problem, self.fix = f"reading failed: {type(err).__name__}: {err}", ""
                return delivered
            finally:
                self.reading_since = None
            captured = getattr(source, "captured", None) or time.perf_counter()
            if self._stop.is_set():
                break
            if img is None:
                misses += 1
                if misses >= LOST_AFTER:
                    self.problem, self.fix = "it stopped delivering frames", ""
                    return delivered
                self._stop.wait(MISS_WAIT_S)
                continue
            misses, self.problem = 0, ""
            size = self.size
            if (img.shape[1], img.shape[0]) != size:
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            self.frames.put((img, captured))
            delivered += 1
        return delivered


class Capture:
    """The capture part: the chosen source's frames, stamped with their capture time, into `out`; the built-in
    source's frames at the show's rate while the chosen one is not delivering.

    `Capture(spec, width, height, fps, out, say)` opens nothing (an unknown scheme is a LiveError already);
    `open()` starts it and returns the line saying what plays; `close()` returns within about CLOSE_S."""

    def __init__(self, spec: int | str, width: int, height: int, fps: float, out: Mailbox[Frame],
                 say: Callable[[str], None] = print) -> None:
        self.spec = parse_source(spec)
        self._factory = factory_for(self.spec)
        self.width, self.height, self.fps = width, height, fps
        self.out = out
        self.say = say
        self.builtin = BuiltinSource(width, height)
        self.frames = 0
        self.stalls = 0
        self.reconnects = 0
        self._reader: Reader | None = None
        self._abandoned: list[Reader] = []  # told to stop while blocked in their source; they end by themselves
        self._pending: tuple[int | str, Callable[..., Source]] | None = None
        self._state = "opening"  # "builtin" (the show's choice), "opening", "playing" or "stalled"
        self._last_frame = 0.0  # when the chosen source last delivered, or was chosen
        self._next_reconnect = 0.0
        self._said_problem = False
        self._fallback_total = 0.0
        self._fallback_from: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> str:
        """Start reading; the source itself opens on its reader thread, so a source that hangs never holds this."""
        if self._thread is None:
            self._begin(self.spec, self._factory, time.perf_counter())
            self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
            self._thread.start()
        if self.spec == "builtin":
            return f"Source: {BuiltinSource.name}"
        return (f"Source: opening {describe(self.spec)} in the background; the {BuiltinSource.name} fills in "
                f"whenever it is not delivering")

    def switch(self, spec: int | str) -> None:
        """Play another source from now on (a re-saved show); it opens on its own reader, so nothing waits for it.
        A source no kind plays is said, and the current one plays on."""
        spec = parse_source(spec)
        try:
            self._pending = (spec, factory_for(spec))
        except LiveError as err:
            self.say(f"Source: not switched, {describe(self.spec)} plays on: {err}")

    def resize(self, width: int, height: int) -> None:
        """Deliver frames of this size from the next one on (a re-saved show); the source stays open."""
        self.width, self.height = width, height
        self.builtin = BuiltinSource(width, height)
        reader = self._reader
        if reader is not None:
            reader.size = (width, height)

    def close(self) -> None:
        """Stop, waiting at most about CLOSE_S; a reader still blocked in its source is left to close it itself."""
        deadline = time.perf_counter() + CLOSE_S
        self._stop.set()
        readers = [r for r in (self._reader, *self._abandoned) if r]
        for reader in readers:
            reader.stop()
            reader.frames.close()
        if self._thread and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.perf_counter()))
        for reader in readers:
            reader.join(deadline - time.perf_counter())
        self._end_fallback(time.perf_counter())

    def stats(self) -> dict[str, Any]:
        now = time.perf_counter()
        fallback = self._fallback_total + (now - self._fallback_from if self._fallback_from is not None else 0.0)
        reader = self._reader
        return {
            "frames": self.frames,
            "stalls": self.stalls,
            "fallback_s": round(fallback, 3),
            "source": reader.name if reader and self._state == "playing" else BuiltinSource.name,
            "chosen": describe(self.spec),
            "state": self._state,
            "reconnects": self.reconnects,
            "abandoned": sum(r.alive() for r in self._abandoned),
            "problem": reader.problem if reader else "",
        }

    def status(self) -> str:
        """One line for the HUD."""
        reader = self._reader
        if self._state == "builtin" or reader is None:
            return f"source {BuiltinSource.name}"
        if self._state == "playing":
            return f"source {reader.name}"
        silent = time.perf_counter() - self._last_frame
        what = "stalled" if self._state == "stalled" else "opening"
        why = f" ({reader.problem})" if reader.problem else ""
        playing = ", built-in playing" if silent >= STALL_S else ""
        return f"source {reader.name} {what} {silent:.0f} s{why}{playing}, retrying"

    def _begin(self, spec: int | str, factory: Callable[..., Source], now: float) -> None:
        """Make `spec` the chosen source: a reader of its own starts opening it."""
        self.spec, self._factory = spec, factory
        self._last_frame = now
        self._said_problem = False
        if spec == "builtin":
            self._state, self._reader = "builtin", None
        else:
            self._state = "opening"
            self._reader = Reader(spec, factory, self.width, self.height, self.fps).start()

    def _abandon(self, reader: Reader) -> None:
        reader.stop()
        self._abandoned = [r for r in self._abandoned if r.alive()] + [reader]

    def _run(self) -> None:
        interval = 1.0 / self.fps if self.fps > 0 else 1.0 / 30
        due = time.perf_counter()
        while not self._stop.is_set():
            now = time.perf_counter()
            if self._pending is not None:
                spec, factory = self._pending
                self._pending = None
                if self._reader:
                    self._abandon(self._reader)
                self._end_fallback(now)
                self._begin(spec, factory, now)
            reader = self._reader
            filling = self._state == "builtin" or (
                self._state != "playing" and now - self._last_frame >= STALL_S)
            wake = due if filling else self._last_frame + STALL_S
            timeout = min(max(0.0, wake - now), POLL_S)
            item = reader.frames.get(timeout) if reader else None
            if reader is None:
                self._stop.wait(timeout)
            now = time.perf_counter()
            if item is not None:
                self._deliver(reader, *item, now)
                continue
            if reader:
                self._watch(reader, now)
            if (self._state == "builtin" or now - self._last_frame >= STALL_S) and now >= due:
                if self._state != "builtin" and self._fallback_from is None:
                    self._fallback_from = now
                self._post(self.builtin.read(), now)
                due = due + interval if due + interval > now else now + interval

    def _deliver(self, reader: Reader, img: np.ndarray, captured: float, now: float) -> None:
        if self._state == "stalled":
            self.say(f"Source: {reader.name} is back after {now - self._last_frame:.1f} s")
        elif self._state == "opening":
            self.say(f"Source: {reader.name} plays")
        self._state = "playing"
        self._end_fallback(now)
        self._last_frame = captured
        self._post(img, captured)

    def _watch(self, reader: Reader, now: float) -> None:
        """Declare a stall once; say once why a source does not open; try a fresh reader beside one stuck in a
        read (only if no earlier one of this source is still stuck, so abandoned threads never pile up)."""
        if self._state == "playing" and now - self._last_frame >= STALL_S:
            self._state = "stalled"
            self.stalls += 1
            self._next_reconnect = self._last_frame + RECONNECT_AFTER_S
            self.say(f"Source: {reader.name} stalled (no frame for {STALL_S} s); the {BuiltinSource.name} plays "
                     f"while it is retried in the background")
        elif self._state == "opening" and reader.problem and not self._said_problem:
            self._said_problem = True
            fix = f" (fix: {reader.fix})" if reader.fix else ""
            self.say(f"Source: {describe(self.spec)} unavailable ({reader.problem}); the {BuiltinSource.name} "
                     f"plays, retrying every {RETRY_EVERY_S:.0f} s in the background{fix}")
        stuck_since = reader.reading_since
        if (self._state == "stalled" and now >= self._next_reconnect and stuck_since is not None
                and now - stuck_since >= RECONNECT_AFTER_S
                and not any(r.alive() and r.spec == self.spec for r in self._abandoned)):
            self._abandon(reader)
            self._reader = Reader(self.spec, self._factory, self.width, self.height, self.fps).start()
            self.reconnects += 1
            self._next_reconnect = now + RECONNECT_AFTER_S

    def _post(self, img: np.ndarray, captured: float) -> None:
        self.out.put(Frame(img, captured, self.frames))
        self.frames += 1

    def _end_fallback(self, now: float) -> None:
        if self._fallback_from is not None:
            self._fallback_total += now - self._fallback_from
            self._fallback_from = None
