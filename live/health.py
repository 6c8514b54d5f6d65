"""A running show's health as numbers: the problems it said, and its metrics in the Prometheus text format.

Everything is read when asked (a scrape of /metrics, a look at the status page) from counters the player keeps
anyway, so the frame path does no work for it beyond appending what it already records. Each show has its own
registry (not prometheus_client's global one), so several shows in one process never collide.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from live.service import history_path

if TYPE_CHECKING:
    from live.player import Player

#: Capture -> output latency buckets (seconds): every 5 ms up to 100 ms, where a show lives, then coarser to 2 s.
LATENCY_BUCKETS = (*(round(0.005 * i, 3) for i in range(1, 21)), 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
FPS_WINDOW_S = 2.0  # live_fps counts the frames put out in the last this many seconds
RECENT_FRAMES = 300  # live_latency_recent_seconds: quantiles over this many of the newest frames
#: A line the show says that reports something wrong (the show has no log levels: its lines say what happened).
PROBLEM = re.compile(r"^(Control|Close):|^Source: .*unavailable|fail|not applied|not switched|cannot|could not|"
                     r"did not|\blost\b|stalled|stopped|error|refused|missing|goes on|plays on|plays without",
                     re.IGNORECASE)
#: A part whose status line says this is down (live_device_up 0): failing, lost, stalled, retrying, or silent.
DOWN = re.compile(r"FAIL|\blost\b|stalled|retrying|silent")


class Problems:
    """Wraps the show's `say`: every line is said as before; those that report a problem are also kept (the newest
    `keep`) and counted, for the status page and live_problems_total."""

    def __init__(self, say: Callable[[str], None], keep: int = 50) -> None:
        self._say = say
        self.recent: deque[tuple[float, str]] = deque(maxlen=keep)  # (unix time, line)
        self.total = 0
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        self._say(line)
        if PROBLEM.search(line):
            with self._lock:
                self.recent.append((time.time(), line))
                self.total += 1


def restarts(show: Path) -> int:
    """How many restarts `live supervise` recorded beside the show (its history keeps the newest 50); 0 if none."""
    try:
        return len(json.loads(history_path(show).read_text()))
    except (OSError, ValueError, TypeError):
        return 0


def is_up(status: str) -> bool:
    return not DOWN.search(status)


class Metrics:
    """A prometheus_client collector over one player: each scrape reads the player's counters. The latency
    histogram takes in the frames measured since the last scrape (the player keeps the newest 100 000)."""

    def __init__(self, player: Player, refused: Callable[[], int] = lambda: 0) -> None:
        self.player = player
        self.refused = refused  # requests the status page turned away (no or wrong token)
        self.started = time.monotonic()
        self._buckets = np.zeros(len(LATENCY_BUCKETS) + 1, np.int64)  # the last one: above 2 s
        self._sum = 0.0
        self._seen = 0
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _take_latencies(self) -> None:
        """Bucket the latencies measured since the last look (a copy taken in one C call: the frame path appends
        on its own thread)."""
        player = self.player
        with self._lock:
            measured = player.measured
            new = min(measured - self._seen, len(player.latencies))
            if new > 0:
                fresh = np.fromiter(itertools.islice(reversed(player.latencies), new), float, new) / 1000.0
                self._buckets += np.bincount(np.searchsorted(LATENCY_BUCKETS, fresh, side="left"),
                                             minlength=len(self._buckets))
                self._sum += float(fresh.sum())
            self._seen = measured

    def snapshot(self) -> dict[str, Any]:
        """Every number /metrics and the status page show, read now."""
        player, now = self.player, time.perf_counter()
        graph = player.graph
        window = min(FPS_WINDOW_S, max(time.monotonic() - self.started, 1e-3))
        times = list(player.out_times)
        recent = np.fromiter(itertools.islice(reversed(player.latencies), RECENT_FRAMES), float) / 1000.0
        opened = player.parts
        audio = graph.audio.stats() if graph.audio in opened else None
        osc = graph.surface.osc.stats() if graph.surface.osc else {}
        parts = {}
        for name in graph.part_names():
            part = getattr(graph, name)
            if part is not None and part in opened:
                line = part.status()
                parts[name] = {"status": line, "up": is_up(line)}
        return {
            "show": player.show.name,
            "frames": player.frames,
            "dropped": graph.stylized.dropped,
            "skipped": graph.captured.dropped,
            "fps": sum(t > now - window for t in times) / window,
            "latency_p50_s": float(np.percentile(recent, 50)) if recent.size else 0.0,
            "latency_p95_s": float(np.percentile(recent, 95)) if recent.size else 0.0,
            "audio_underruns": audio["starved"] + audio["held"] + audio["xruns"] if audio else 0,
            "osc_ok": osc.get("applied", 0), "osc_error": osc.get("rejected", 0) + osc.get("errors", 0),
            "parts": parts,
            "restarts": restarts(player.show.path),
            "uptime_s": time.monotonic() - self.started,
            "reloads": dict(player.reloads),
            "reload_error": player.reload_error,
            "problems": player.problems.total,
            "recent_problems": [{"at": at, "line": line} for at, line in list(player.problems.recent)],
            "status_refused": self.refused(),
        }

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        self._take_latencies()

        def counter(name: str, doc: str, value: float, labels: dict[str, float] | None = None,
                    label: str = "") -> Metric:
            family = CounterMetricFamily(name, doc, labels=[label] if labels else None)
            if labels:
                for key, v in labels.items():
                    family.add_metric([key], v)
            else:
                family.add_metric([], value)
            return family

        yield counter("live_frames_total", "frames put on the outputs", s["frames"])
        # Two kinds of loss, told apart: a stylized frame replaced before any output took it was rendered and never
        # seen (a stutter); a camera frame replaced before the models took it is how a show slower than its camera
        # keeps its latency (newest wins), and is no fault.
        yield counter("live_frames_dropped_total", "stylized frames never put out (a newer one replaced them)",
                      s["dropped"])
        yield counter("live_camera_frames_skipped_total", "camera frames the models had no time for (newest wins)",
                      s["skipped"])
        yield GaugeMetricFamily("live_fps", f"frames put out per second over the last {FPS_WINDOW_S:g} s", s["fps"])
        with self._lock:
            cumulative = np.cumsum(self._buckets)
            buckets = [(floatToGoString(le), int(n)) for le, n in zip(LATENCY_BUCKETS, cumulative)]
            yield HistogramMetricFamily("live_latency_seconds", "capture to output latency of each new frame",
                                        buckets=[*buckets, ("+Inf", int(cumulative[-1]))], sum_value=self._sum)
        recent = GaugeMetricFamily("live_latency_recent_seconds",
                                   f"capture to output latency over the newest {RECENT_FRAMES} frames",
                                   labels=["quantile"])
        recent.add_metric(["0.5"], s["latency_p50_s"])
        recent.add_metric(["0.95"], s["latency_p95_s"])
        yield recent
        yield counter("live_audio_underruns_total", "times the audio ran dry: starved (ours), held off the CPU, "
                      "device xruns", s["audio_underruns"])
        yield counter("live_osc_messages_total", "OSC messages applied (ok) and refused or failed (error)", 0,
                      {"ok": s["osc_ok"], "error": s["osc_error"]}, "result")
        up = GaugeMetricFamily("live_device_up", "1 while an open part works, 0 when its status says it does not",
                               labels=["part"])
        for name, part in s["parts"].items():
            up.add_metric([name], float(part["up"]))
        yield up
        yield counter("live_restarts_total", "restarts recorded by live supervise beside the show", s["restarts"])
        yield GaugeMetricFamily("live_uptime_seconds", "seconds since the show started", s["uptime_s"])
        yield counter("live_reloads_total", "saved show files applied or refused while playing", 0, s["reloads"],
                      "result")
        yield counter("live_problems_total", "lines the show said that report a problem", s["problems"])
        yield counter("live_status_refused_total", "status page requests refused (no or wrong token)",
                      s["status_refused"])
