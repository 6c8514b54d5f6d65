"""Plays a show: builds its graph (live/graph.py), opens the parts in order, runs the output loop on the main thread
(where GUI toolkits want it) until the show ends, and closes the parts in reverse.

The frame path, camera to projector:
    video/capture.py (capture thread) -> Mailbox -> video/chain.py (inference thread: the stages) -> Mailbox
    -> this loop -> video/output.py (every sink: window, recording, ...)
The sound path runs beside it and never waits on video: audio/engine.py (synth thread) -> ring -> C callback.
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.audio.engine import counters
from live.errors import LiveError
from live.control.surface import HUD
from live.graph import build
from live.health import Problems
from live.parts import Part, close_in_reverse, open_in_order
from live.service import Watchdog
from live.show import Show, ShowFile
from live.video import hud
from live.video.frame import Frame


def percentile(values, q: float) -> float:
    return float(np.percentile(np.fromiter(values, float), q)) if values else 0.0


@dataclass
class Summary:
    seconds: float
    frames: int
    dropped: int
    latency_ms: dict[str, float]
    audio: dict | None  # the audio engine's stats(); None: the show has no audio
    longest_gap_s: float = 0.0  # the longest time between two output frames (or the start/end and a frame)
    fallback_s: float = 0.0  # time the built-in source played because the show's source was not delivering
    output_failures: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        audio = "no audio" if self.audio is None else \
            f"audio{'' if self.audio['device'] else ' (silent, no device)'}: {counters(self.audio)}"
        return (f"Played {self.seconds:.1f} s: {self.frames} frames, {self.fps:.1f} fps, latency p50 "
                f"{self.latency_ms['p50']:.1f} ms / p95 {self.latency_ms['p95']:.1f} ms, {self.dropped} dropped "
                f"frames, {audio}; longest gap {self.longest_gap_s:.2f} s, {self.fallback_s:.1f} s on the "
                f"built-in source, {self.output_failures} output failures")


#: How long a thread waiting for the GIL waits before the running one must hand it over. Python's 5 ms default is
#: half of a note's 10 ms budget from OSC or MIDI to sound (the OSC thread waits behind the video thread's Python);
#: 1 ms cut the p95 of OSC note -> onset under full video (`live bench --audio`) at a cost the frame rate did not show.
SWITCH_INTERVAL_S = 0.001


class Player:
    """One running show. `start()` opens every part, `run()` plays, `close()` releases every device."""

    def __init__(self, show: Show, source: str | None = None, record: Path | None = None,
                 window: bool | None = None, say=print) -> None:
        self.problems = Problems(say)  # the lines that report a problem, kept for the status page
        self.say = say = self.problems.say
        self.graph = build(show, source, record, window, say)
        self.graph.surface.parts_status = self.part_lines
        swapper = self.graph.swapper
        swapper.done, swapper.failed, swapper.replaced = self._swapped, self._swap_failed, self._replaced
        self.show_file = ShowFile(show.path)
        self.latencies: deque[float] = deque(maxlen=100_000)
        self.measured = 0  # latencies measured so far (the deque keeps the newest)
        self.out_times: deque[float] = deque(maxlen=1024)  # when the newest frames went out (the fps of /metrics)
        self.newest: Frame | None = None  # the newest frame put out (the status page's thumbnail)
        self.frames = 0
        self.reloads = {"applied": 0, "refused": 0}
        self._last_index = -1
        self._last_out: float | None = None
        self.longest_gap = 0.0
        self.reload_error = ""
        self._opened: list[Part] = []
        self._stop = threading.Event()
        self._switch_interval = sys.getswitchinterval()
        self.watchdog = Watchdog()  # systemd's, or `live supervise`'s: told the show plays and that frames go out
        if self.graph.status:
            self.graph.status.attach(self)

    @property
    def show(self) -> Show:
        return self.graph.show

    def start(self) -> None:
        """Open the parts in order; if one fails, close those already open and raise its LiveError."""
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        open_in_order(self.graph.parts, self._opened, self.say, announce=self.say)
        if self.graph.audio:
            self.graph.audio.read_tap()  # recordings start with what plays from now, not with the synth's pre-roll
        self.watchdog.ready()

    def run(self, seconds: float | None = None) -> Summary:
        """Play until `seconds` pass, the window is closed, Ctrl-C, SIGTERM or SIGHUP (a closed terminal); then
        close everything, so a recording is always finished."""
        stop = lambda *_: self._stop.set()  # noqa: E731
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
        started = self._last_out = time.perf_counter()
        try:
            while not self._stop.is_set():
                if seconds is not None and time.perf_counter() - started >= seconds:
                    break
                self.check_reload()
                frame = self.graph.stylized.get(timeout=0.05)
                if frame is None:
                    continue
                self.show_frame(frame)
                window = self.graph.outputs.window
                if window and window.quit:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            summary = self.summary(time.perf_counter() - started)
            self.close()
        return summary

    def check_reload(self, now: float | None = None) -> None:
        """If the show file was saved (and has settled), apply it; an invalid file keeps the running show."""
        try:
            show = self.show_file.saved(now)
            if show is None:
                return
            notes = self.graph.reload(show)
        except LiveError as err:
            self.reload_error = str(err)
            self.reloads["refused"] += 1
            self.say(f"Show: {self.show_file.path.name} was saved but not applied, the show goes on as it was: {err}")
            return
        self.reload_error = ""
        self.reloads["applied"] += 1
        self.say(f"Show: reloaded {self.show_file.path.name}" + (f" ({'; '.join(notes)})" if notes else ""))

    def _swapped(self, line: str) -> None:
        """The swap thread changed over to a saved show's new model or device (graph.Swapper)."""
        self.reload_error = ""
        self.say(f"Show: {line}")

    def _swap_failed(self, line: str) -> None:
        """A saved show's new model or device could not play; the running one plays on (and the HUD says why)."""
        self.reload_error = line
        self.say(f"Show: {self.show_file.path.name}: {line}")

    def _replaced(self, old: Part, new: Part) -> None:
        """A part the swap thread opened in place of `old`, which it closes now: close `new` at the end instead."""
        self._opened = [new if part is old else part for part in self._opened]

    def show_frame(self, frame: Frame) -> None:
        """Put one stylized frame on every output; its latency is measured once it is out."""
        graph = self.graph
        audio = graph.audio.read_tap() if graph.audio and graph.outputs.wants_audio() else None
        lines = self.hud_lines() if graph.tree.get(HUD) else None
        now = time.perf_counter()
        graph.outputs.write(frame.image, now, audio, lines)
        window = graph.outputs.window
        if window and window.keys:
            for key in window.keys:
                graph.surface.key(key)
            window.keys.clear()
        now = time.perf_counter()
        self.longest_gap = max(self.longest_gap, now - self._last_out)
        self._last_out = now
        self.watchdog.alive(now)
        if frame.index != self._last_index:  # a re-render of the same camera frame (a control moved) is not a
            self.latencies.append((now - frame.captured) * 1000)  # new measurement of capture -> output latency
            self.measured += 1
            self._last_index = frame.index
        self.out_times.append(now)
        self.newest = frame
        self.frames += 1

    @property
    def parts(self) -> list[Part]:
        """The parts open now."""
        return list(self._opened)

    def part_lines(self) -> list[str]:
        """Each open part's status line (for /live/status and the HUD)."""
        return [line for part in self._opened for line in part.status().splitlines() if line]

    def hud_lines(self) -> list[str]:
        recent = list(itertools.islice(reversed(self.latencies), 30))  # not a copy of the whole history
        dropped = self.graph.captured.dropped + self.graph.stylized.dropped
        return hud.lines(self.show.name, self.graph.tree.snapshot, percentile(recent, 50), dropped,
                         self.part_lines(), self.reload_error)

    def summary(self, seconds: float) -> Summary:
        graph = self.graph
        latency = {f"p{q}": percentile(self.latencies, q) for q in (50, 95, 99)}
        stats = graph.audio.stats() if graph.audio else None
        gap = max(self.longest_gap, time.perf_counter() - self._last_out) if self._last_out else 0.0
        return Summary(seconds, self.frames, graph.captured.dropped + graph.stylized.dropped, latency, stats,
                       gap, graph.capture.stats()["fallback_s"], len(graph.outputs.failed))

    def close(self) -> None:
        """Close every opened part in reverse order; each is bounded in time, and one failing does not keep the
        others open. Safe to call twice."""
        close_in_reverse(self._opened, self.say)
        sys.setswitchinterval(self._switch_interval)
