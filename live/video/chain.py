"""The inference thread: each newest frame through a plain list of stages, in order, capture time carried through.

A stage is a part (live/parts.py) with `params()` (the parameters it offers, known before it opens) and
`process(image, values, t) -> image` (uint8 HWC BGR in and out): the style model, the latent layer, and whatever
comes next. The list reads like the signal path; the chain is itself a part that opens and closes its stages.
Kinds of stage a show can list in `[[stages]]` are in STAGES.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from live.control.reader import ParamReader
from live.control.schedule import REST
from live.errors import LiveError
from live.mailbox import Mailbox
from live.params import Event, Param
from live.parts import BasePart, Kinds, Part, close_in_reverse, open_in_order
from live.video.frame import Frame
from live.video.latent import LatentLayer, LatentSection
from live.video.mask import MaskSection, MaskStage


class Stage(Part, Protocol):
    def params(self) -> tuple[list[Param], list[Event]]: ...

    def process(self, image: np.ndarray, values: Mapping, t: float) -> np.ndarray: ...


#: Stage kinds for `[[stages]]`: factory(section, show) -> Stage. The show's style model ([video] model) is first.
STAGES: Kinds = Kinds("stage", "[[stages]] kind")
STAGES.register("latent", LatentLayer.from_show, LatentSection)
STAGES.register("mask", MaskStage.from_show, MaskSection)


#: Between camera frames, a moved control re-renders the last frame; renders start at most this often (a projector
#: shows no more).
RERENDER_S = 1 / 60
#: While the show rests (/live/rest, live/control/schedule.py) no stage runs: a black frame goes out this often, so
#: the outputs, the recording and the watchdog (live/service.py) see the show alive at almost no cost.
REST_FRAME_S = 0.5


class ChainThread(BasePart):
    """Newest frame in, processed frame out; a stage that fails passes its input through and says so once.

    A control that moves between camera frames re-renders the last frame at once, so a fader answers within one
    inference, not one inference plus the wait for the camera's next frame (33 ms at 30 fps). While the show rests,
    camera frames still go to the taps (the analysis, whose presence may wake the show), but no stage runs: a black
    frame goes out every REST_FRAME_S instead."""

    def __init__(self, stages: Sequence[Stage], reader: ParamReader, inbox: Mailbox[Frame],
                 out: Mailbox[Frame], say: Callable[[str], None] = print,
                 taps: Sequence[Callable[[Frame], None]] = ()) -> None:
        """`taps`: called with each camera frame taken (not a re-render), on this thread, before the stages: each
        must return at once (the video analysis's `offer` is a put into a newest-wins mailbox)."""
        self.stages, self.reader, self.inbox, self.out = list(stages), reader, inbox, out
        self.taps = list(taps)
        self.say = say
        self.errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="video-chain", daemon=True)
        self._opened: list[Stage] = []
        self.rerendered = 0
        self._armed = True  # the next write wakes the thread; then no more until it has rendered
        #: Writes to the tree so far. Not tree.version, which measurements (/in/...) bump too, up to 200 times a
        #: second: a measurement changes no picture by itself, so it must not re-render one.
        self.writes = 0
        self._swap: _Swap | None = None  # stages waiting for the next frame boundary (Graph's swap thread)
        self._swap_lock = threading.Lock()

    def open(self) -> str:
        """Open each stage in order (a LiveError closes those already open), then start the thread."""
        lines = open_in_order(self.stages, self._opened, self.say)
        self.reader.tree.watch(self._changed)
        self._thread.start()
        return "\n".join(lines)

    def _changed(self) -> None:
        """A parameter was written (any thread): wake the render loop once, however many writes follow."""
        self.writes += 1
        if self._armed:
            self._armed = False
            self.inbox.poke()

    def close(self) -> None:
        """Stop the thread (a frame in flight finishes first, bounded by the join), then close the stages."""
        self._stop.set()
        self.inbox.close()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        close_in_reverse(self._opened, self.say)

    def stats(self) -> dict[str, Any]:
        return {"rerendered": self.rerendered, "dropped": self.inbox.dropped + self.out.dropped,
                "failing": sorted(self.errors)}

    def status(self) -> str:
        lines = [line for line in (stage.status() for stage in self.stages) if line]
        lines += [f"{name} FAILING, passed through: {why[:50]}" for name, why in self.errors.items()]
        return "; ".join(lines)

    def swap(self, stages: Sequence[Stage], apply: Callable[[], None], timeout: float) -> list[Stage]:
        """Play `stages` (the new ones already open) from the next frame boundary, after `apply()` (which rebuilds
        the parameter tree for them): both run on this thread between two frames, so no frame meets a stage with
        values meant for another. Returns the stages no longer played (the caller closes them). Raises what
        `apply` raised, or LiveError if the thread took nothing within `timeout`; either way nothing changed."""
        swap = _Swap(list(stages), apply)
        with self._swap_lock:
            self._swap = swap
        self.inbox.poke()
        if not swap.done.wait(timeout):
            with self._swap_lock:
                if self._swap is swap:  # not taken: withdraw it (a late take would play stages about to close)
                    self._swap = None
                    raise LiveError("the video chain took no frame to change over at", "save the show again")
            swap.done.wait()  # taken meanwhile: it is being applied now
        if swap.error is not None:
            raise swap.error
        return swap.gone

    def _take_swap(self) -> None:
        """At a frame boundary, on this thread: the waiting swap's tree, then its stages."""
        with self._swap_lock:
            swap, self._swap = self._swap, None
        if swap is None:
            return
        try:
            swap.apply()
            swap.gone = [stage for stage in self.stages if stage not in swap.stages]
            self._opened = [*(s for s in self._opened if s in swap.stages),
                            *(s for s in swap.stages if s not in self._opened)]
            self.stages = swap.stages
            for stage in swap.gone:
                self.errors.pop(type(stage).__name__, None)
        except Exception as err:  # the new tree did not fit (a LiveError, say): the running stages play on
            swap.error = err
        finally:
            swap.done.set()

    def _run(self) -> None:
        last, seen, began, black = None, -1, 0.0, 0.0
        while not self._stop.is_set():
            if self._swap is not None:
                self._take_swap()
                seen = -1 if last is not None else seen  # the new stages render the last frame at once
            wait = 0.1
            if last is not None and self.writes != seen:  # re-render due once RERENDER_S has passed
                wait = max(RERENDER_S - (time.perf_counter() - began), 0.0)
            frame = self.inbox.get(timeout=wait)
            if frame is None:
                if last is None or self.writes == seen or time.perf_counter() - began < RERENDER_S:
                    continue
                frame = last  # a control moved since the last render: show it now
                self.rerendered += 1
            else:
                for tap in self.taps:
                    tap(frame)
            if self.reader.tree.snapshot.get(REST):
                now = time.perf_counter()
                if now - black >= REST_FRAME_S:
                    black = now
                    self.out.put(Frame(np.zeros_like(frame.image), frame.captured, frame.index, now))
                last, seen = None, self.writes  # waking renders the next camera frame, not a stale one
                self._armed = True
                continue
            last, seen = frame, self.writes
            self._armed = True
            now = began = time.perf_counter()
            values, image = self.reader.read(now), frame.image
            for stage in self.stages:
                try:
                    image = stage.process(image, values, now)
                except Exception as err:  # a stage failing mid-show must not stop the show: skip it
                    name = type(stage).__name__
                    if name not in self.errors:
                        self.errors[name] = str(err)
                        self.say(f"Video: {name} failed on a frame ({err}); passing its input through")
            self.out.put(Frame(image, frame.captured, frame.index, now))


class _Swap:
    """Stages waiting to play, what to do first, and the answer for the thread that asked."""

    def __init__(self, stages: list[Stage], apply: Callable[[], None]) -> None:
        self.stages, self.apply = stages, apply
        self.done = threading.Event()
        self.error: Exception | None = None
        self.gone: list[Stage] = []


class Blackout(BasePart):
    """The last stage: a black frame while /live/blackout is on (the window and outputs stay open). Its parameter
    is a system control, offered by the show itself."""

    def params(self) -> tuple[list[Param], list[Event]]:
        return [], []

    def process(self, image: np.ndarray, values: Mapping, t: float) -> np.ndarray:
        return np.zeros_like(image) if values.get("/live/blackout") else image
