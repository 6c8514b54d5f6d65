"""`live bench`: the show's video model and its synth, each measured side by side in one run.

Video, the style model at 640x480 three ways:
- model only: ONNX Runtime in a tight loop on one frame (the ceiling);
- pipeline: the real capture -> inference -> output threads and mailboxes of `live run`, latency from the
  timestamp each frame carries;
- naive: the sequential loop a user would write first (read, numpy pre-process, run, numpy post-process, show).

Synth, the show's decoder in the engine's own Synth (one ORT thread, as `live run` opens it), 1 and 8 held notes
with the timbre moving every block (so every block really runs the decoder): the full render (decoder + DSP) and
the decoder alone, per block, as the median of runs of SYNTH_RUN blocks; real time x = block duration / time.
Machines here are shared and noisy, so compare the ratios of one run rather than absolute numbers across runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from live.audio.synth import Synth
from live.inference import open_session
from live.mailbox import Mailbox
from live.models.manifest import load_manifest
from live.control.reader import ParamReader
from live.control.surface import build_tree
from live.player import percentile
from live.show import Show
from live.video.capture import BuiltinSource, Capture
from live.video.frame import Frame
from live.video.chain import ChainThread
from live.video.stylize import Stylizer

WIDTH, HEIGHT = 640, 480
SYNTH_VOICES = (1, 8)  # held notes
SYNTH_CHORD = (45, 52, 57, 60, 64, 67, 71, 76)
SYNTH_RUN = 64  # blocks per timed run; the median run is reported (robust to a busy neighbour)


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
    chain = ChainThread([stylizer], ParamReader(tree), captured, stylized)
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


def per_block_us(step: Callable[[int], object], seconds: float) -> tuple[float, float]:
    """Median over runs of SYNTH_RUN calls of `step(i)` of the wall time and of this thread's CPU time per call, in
    µs (CPU time leaves out what the machine gave to other processes); runs for about `seconds`."""
    for i in range(SYNTH_RUN):  # warm-up
        step(i)
    wall, cpu, i, start = [], [], 0, time.perf_counter()
    while len(wall) < 3 or time.perf_counter() - start < seconds:
        began, began_cpu = time.perf_counter(), time.thread_time()
        for _ in range(SYNTH_RUN):
            step(i)
            i += 1
        wall.append((time.perf_counter() - began) / SYNTH_RUN * 1e6)
        cpu.append((time.thread_time() - began_cpu) / SYNTH_RUN * 1e6)
    return float(np.median(wall)), float(np.median(cpu))


def synth_bench(show: Show, seconds: float, print_: Callable[[str], None] = print) -> dict:
    """The synth's cost per block for 1 and 8 held notes, full render and decoder only; returns `{"voices_1": ...}`."""
    manifest = load_manifest(show.resolve(show.audio.model))
    session = open_session(manifest.onnx_path, ("cpu",), threads=1)  # as the audio engine opens it
    rate, block = show.audio.samplerate, show.audio.blocksize
    block_us = block / rate * 1e6
    sweep = np.linspace(0.0, 2.0 * np.pi, 97, endpoint=False)  # the timbre circles slowly: new inputs every block
    timbres = np.stack([np.sin(sweep), np.cos(sweep), np.sin(2 * sweep), -np.cos(sweep)], axis=1).astype(np.float32)
    result: dict = {"model": manifest.name, "samplerate": rate, "block": block, "block_duration_us": round(block_us, 1)}
    for voices in SYNTH_VOICES:
        synth = Synth(session, rate, block, voices=max(voices, show.audio.voices))
        for note in SYNTH_CHORD[:voices]:
            synth.note_on(note, 0.8)
        for i in range(int(0.1 * rate / block)):  # past the attack: every note held at its sustain level
            synth.render(0.5, timbres[i % len(timbres)])
        blocks, decodes = synth.blocks, synth.decodes
        full, full_cpu = per_block_us(lambda i: synth.render(0.5, timbres[i % len(timbres)]), seconds)
        runs_per_block = (synth.decodes - decodes) / (synth.blocks - blocks)
        decoder, decoder_cpu = per_block_us(lambda i: synth.decode(timbres[i % len(timbres)]), seconds)
        result[f"voices_{voices}"] = {
            "voices": voices, "sounding": synth.sounding, "block_us": round(full, 2), "decoder_us": round(decoder, 2),
            "realtime_x": round(block_us / full, 1), "decoder_realtime_x": round(block_us / decoder, 1),
            "decoder_runs_per_block": round(runs_per_block, 3),
            "block_cpu_us": round(full_cpu, 2), "decoder_cpu_us": round(decoder_cpu, 2)}
    one, many = result["voices_1"], result[f"voices_{SYNTH_VOICES[-1]}"]
    print_(f"\nsynth: {manifest.name}, {block}-sample blocks at {rate} Hz ({block_us:.1f} µs), CPU, 1 thread; "
           f"median of {SYNTH_RUN}-block runs, {seconds:g} s each")
    print_(f"  {'voices':<8}{'full render':>14}{'decoder only':>15}{'real time (full / decoder)':>30}")
    for key in (f"voices_{v}" for v in SYNTH_VOICES):
        r = result[key]
        print_(f"  {r['voices']:<8}{r['block_us']:>11.1f} µs{r['decoder_us']:>12.1f} µs"
               f"{r['realtime_x']:>20.0f}x / {r['decoder_realtime_x']:.0f}x")
    print_(f"  {many['voices']} voices cost {many['block_us'] / one['block_us']:.2f}x one voice (decoder "
           f"{many['decoder_us'] / one['decoder_us']:.2f}x): {many['decoder_runs_per_block']:g} decoder run per block")
    print_("  this thread's CPU time per block (the wall time less what other processes took): "
           + ", ".join(f"{result[k]['voices']} voice(s) {result[k]['block_cpu_us']:.1f} µs "
                       f"(decoder {result[k]['decoder_cpu_us']:.1f} µs)" for k in (f"voices_{v}" for v in SYNTH_VOICES)))
    return result


def bench(show: Show, seconds: float = 5.0, print_: Callable[[str], None] = print,
          parts: tuple[str, ...] = ("video", "synth")) -> dict:
    """Measure and print tables; returns `{"video": {...}, "synth": {...}}` (the parts asked for)."""
    results = {}
    if "video" in parts:
        results["video"] = video_bench(show, seconds, print_)
    if "synth" in parts:
        results["synth"] = synth_bench(show, seconds / 4, print_)
    return results


def video_bench(show: Show, seconds: float, print_: Callable[[str], None] = print) -> dict:
    """The video model three ways; returns the `"video"` result."""
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
    return video
