"""`live bench`: the default model at 640x480, measured three ways side by side in one run.

- model only: ONNX Runtime in a tight loop on one frame (the ceiling);
- pipeline: the real capture -> inference -> output threads and mailboxes of `live run`, latency from the
  timestamp each frame carries;
- naive: the sequential loop a user would write first (read, numpy pre-process, run, numpy post-process, show).
Machines here are shared and noisy, so compare the ratios of one run rather than absolute numbers across runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from live.mailbox import Mailbox
from live.player import build_tree, percentile
from live.show import Show
from live.video.capture import BuiltinSource, Capture
from live.video.frame import Frame
from live.video.chain import ChainThread
from live.video.stylize import Stylizer

WIDTH, HEIGHT = 640, 480


def model_only(stylizer: Stylizer, values, seconds: float) -> float:
    image = BuiltinSource(WIDTH, HEIGHT).read()
    feeds = stylizer.feeds(image, values)
    run, output = stylizer.session.session.run, [stylizer.manifest.outputs[0].name]
    run(output, feeds)  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(output, feeds)
        count += 1
    return count / (time.perf_counter() - start)


def pipeline(stylizer: Stylizer, tree, seconds: float, source_fps: float) -> tuple[float, list[float], int]:
    """The threads of `live run` with a null output; the source is paced faster than the model can go."""
    captured: Mailbox[Frame] = Mailbox()
    stylized: Mailbox[Frame] = Mailbox()
    capture = Capture("builtin", WIDTH, HEIGHT, source_fps, captured, say=lambda _: None)
    chain = ChainThread([stylizer], tree, captured, stylized)
    capture.start()
    chain.start()
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        frame = stylized.get(timeout=0.1)
        if frame is not None:
            latencies.append((time.perf_counter() - frame.captured) * 1000)
    elapsed = time.perf_counter() - start
    capture.stop()
    chain.stop()
    return len(latencies) / elapsed, latencies, captured.dropped + stylized.dropped


def naive(stylizer: Stylizer, values, seconds: float) -> float:
    """Read -> numpy float NCHW RGB -> back to the model's input -> run -> numpy post-process, one after another."""
    source = BuiltinSource(WIDTH, HEIGHT)
    run, output = stylizer.session.session.run, [stylizer.manifest.outputs[0].name]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        image = source.read()
        tensor = (image[:, :, ::-1].astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        model_input = np.ascontiguousarray((tensor[0].transpose(1, 2, 0)[:, :, ::-1] * 255.0).astype(np.uint8))
        result = run(output, stylizer.feeds(model_input, values))[0].astype(np.float32) / 255.0  # a float model's
        shown = (result * 255.0).clip(0, 255).astype(np.uint8)  # output, turned back into a displayable image
        count += 1
    return count / (time.perf_counter() - start)


def bench(show: Show, seconds: float = 5.0, print_: Callable[[str], None] = print) -> dict:
    """Measure and print a table; returns the `{"video": {...}}` result."""
    tree = build_tree(show)
    stylizer = Stylizer(show.resolve(show.video.model), tuple(show.video.providers), show.video.threads)
    print_(stylizer.session.describe())
    values = tree.snapshot
    model_fps = model_only(stylizer, values, seconds)
    pipe_fps, latencies, dropped = pipeline(stylizer, tree, seconds, max(show.video.fps, 1.25 * model_fps))
    naive_fps = naive(stylizer, values, seconds)
    latency = {f"p{q}": round(percentile(latencies, q), 2) for q in (50, 95, 99)}
    video = {
        "model": stylizer.manifest.name, "size": [WIDTH, HEIGHT], "provider": stylizer.session.provider,
        "model_only_fps": round(model_fps, 1), "pipeline_fps": round(pipe_fps, 1), "naive_fps": round(naive_fps, 1),
        "latency_ms": latency, "dropped": dropped,
    }
    print_(f"\nvideo: {video['model']} at {WIDTH}x{HEIGHT} on {video['provider']}, {seconds:g} s each")
    print_(f"  {'model only':<12}{model_fps:8.1f} fps")
    print_(f"  {'pipeline':<12}{pipe_fps:8.1f} fps   ({pipe_fps / naive_fps:.2f}x naive)")
    print_(f"  {'naive loop':<12}{naive_fps:8.1f} fps")
    print_(f"  latency capture->output  p50 {latency['p50']:.1f} ms  p95 {latency['p95']:.1f} ms  "
           f"p99 {latency['p99']:.1f} ms")
    print_(f"  dropped {dropped} (source frames superseded before inference: newest frame wins)")
    return {"video": video}
