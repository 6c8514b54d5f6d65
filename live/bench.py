"""`live bench`: the show's video model and its synth, each measured side by side in one run.

Video, the style model at 640x480 three ways:
- model only: ONNX Runtime in a tight loop on one frame (the ceiling);
- pipeline: the real capture -> inference -> output threads and mailboxes of `live run`, latency from the
  timestamp each frame carries;
- naive: the sequential loop a user would write first (read, numpy pre-process, run, numpy post-process, show).

GPU path (`--only gpu`), the show's style model at 1280x720 through the GPU tier's frame path (IOBinding: the
frame up once, back once, buffers reused): fps, frame time p50/p99, host copies per frame and buffers allocated,
counted; beside it, plain Session.run on the same frames. The goal on
a GPU is 60 fps with p99 <= 16.7 ms; where there is no GPU the same code runs on the CPU provider and says so.

Synth, the show's decoder in the engine's own Synth (one ORT thread, as `live run` opens it), 1, 8 and 16 held notes
with the timbre moving every block (so every block really runs the decoder): the full render (decoder + DSP) and
the decoder alone, per block, as the median of runs of SYNTH_RUN blocks; real time x = block duration / time.
Then beyond the voice count: 16 voices held and a new note every block, each stealing the oldest voice.
Machines here are shared and noisy, so compare the ratios of one run rather than absolute numbers across runs.

Control (`--control`), OSC over UDP loopback: a separate sender process paces "/bench/t d <its perf_counter>" at
CONTROL_RATE for the given seconds; the server's tree notes when each value became visible in its snapshot, so the
latency is measured from a timestamp that travels with the data. Then a fuzz run: datagrams whose fate is known in
advance (OscFuzzer), sent never more than FUZZ_WINDOW ahead of the server's count so none is lost and the counts
must match exactly: rejected == invalid sent, applied == valid messages sent, no crash, memory growth reported.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from live.audio.synth import Synth
from live.control.osc import OscServer
from live.control.osc_codec import encode_bundle, encode_message, unix_to_ntp
from live.graph import Graph, build, style_of
from live.inference import open_session
from live.models.manifest import load_manifest
from live.models.temporal import moving_clip, warp_error
from live.params import Event, Param, ParamTree
from live.player import percentile
from live.show import Show
from live.video.capture import BuiltinSource
from live.video.stability import Stabilizer
from live.video.stylize import Stylizer
from live.video.upsample import downscale

WIDTH, HEIGHT = 640, 480
GPU_WIDTH, GPU_HEIGHT = 1280, 720
GPU_FRAMES = 8  # distinct source frames the GPU path cycles through (read before timing)
SYNTH_VOICES = (1, 8, 16)  # held notes
SYNTH_CHORD = (45, 52, 57, 60, 64, 67, 71, 76, 40, 47, 55, 62, 69, 72, 79, 83)
SYNTH_RUN = 64  # blocks per timed run; the median run is reported (robust to a busy neighbour)
CONTROL_RATE = 10_000  # OSC messages/s the bench's sender aims at
FUZZ_PACKETS = 1_000_000
FLICKER_FRAMES = 12  # frames of the moving clip per style in --flicker
PHOTO = Path(__file__).resolve().parent / "assets" / "astronaut.jpg"
FUZZ_WINDOW = 64  # datagrams in flight at most: the kernel's receive buffer must never drop one (counts are exact)


def model_only(stylizer: Stylizer, values, seconds: float) -> float:
    image = BuiltinSource(WIDTH, HEIGHT).read()
    feeds = stylizer.feeds(image, values)
    run, output = stylizer.session.run, [stylizer.manifest.outputs[0].name]
    run(output, feeds)  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(output, feeds)
        count += 1
    return count / (time.perf_counter() - start)


def stage_only(stylizer: Stylizer, values, seconds: float) -> float:
    """Frames per second through the whole style stage (`Stylizer.process`: the tier's downscale, model,
    stabilizer and upsampling), on one still frame."""
    image = BuiltinSource(WIDTH, HEIGHT).read()
    stylizer.process(image, values)  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        stylizer.process(image, values)
        count += 1
    return count / (time.perf_counter() - start)


def video_graph(show: Show, fps: float) -> Graph:
    """The show's graph as `live run` builds it, on the built-in source at the bench's size and `fps`, with no
    audio and no outputs (the bench reads the last mailbox itself)."""
    video = show.video.model_copy(update={"source": "builtin", "width": WIDTH, "height": HEIGHT, "fps": fps})
    quiet = show.model_copy(update={"video": video, "audio": show.audio.model_copy(update={"enabled": False}),
                                    "outputs": []})
    quiet._path = show.path
    return build(quiet, say=lambda _: None)


def pipeline(graph: Graph, seconds: float) -> tuple[float, list[float], int]:
    """The threads of `live run` (capture, the chain of stages) with a null output; the graph's source is paced
    faster than the model can go."""
    parts = (graph.chain, graph.capture)
    for part in parts:
        part.open()
    latencies, start = [], time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            frame = graph.stylized.get(timeout=0.1)
            if frame is not None:
                latencies.append((time.perf_counter() - frame.captured) * 1000)
        elapsed = time.perf_counter() - start
    finally:
        for part in reversed(parts):
            part.close()
    return len(latencies) / elapsed, latencies, graph.captured.dropped + graph.stylized.dropped


def naive(stylizer: Stylizer, values, seconds: float) -> float:
    """Read -> numpy float NCHW RGB -> back to the model's input -> run -> numpy post-process, one after another."""
    source = BuiltinSource(WIDTH, HEIGHT)
    run, output = stylizer.session.run, [stylizer.manifest.outputs[0].name]
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
    """The synth's cost per block for 1, 8 and 16 held notes: the full voice (decoder + DSP) and the decoder alone;
    returns `{"voices_1": ...}`."""
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
    # Beyond the voice count: all voices held and a new note every block, each stealing the oldest voice (which
    # fades for a block, then starts the note). A note comes back after its voice was stolen: never a retrigger.
    voices = SYNTH_VOICES[-1]
    synth = Synth(session, rate, block, voices=voices)
    cycle = [40 + 2 * n for n in range(2 * voices)]
    for i in range(2 * voices):
        synth.note_on(cycle[i], 0.8)
        synth.render(0.5, timbres[i % len(timbres)])
    steal, steal_cpu = per_block_us(lambda i: (synth.note_on(cycle[i % len(cycle)], 0.8),
                                               synth.render(0.5, timbres[i % len(timbres)])), seconds)
    result["stealing"] = {"voices": voices, "sounding": synth.sounding, "block_us": round(steal, 2),
                          "realtime_x": round(block_us / steal, 1), "block_cpu_us": round(steal_cpu, 2)}
    one, many = result["voices_1"], result[f"voices_{SYNTH_VOICES[-1]}"]
    print_(f"\nsynth: {manifest.name}, {block}-sample blocks at {rate} Hz ({block_us:.1f} µs), CPU, 1 thread; "
           f"median of {SYNTH_RUN}-block runs, {seconds:g} s each")
    print_(f"  {'voices':<8}{'full render (decoder + DSP)':>28}{'decoder only':>15}{'real time (full / decoder)':>30}")
    for key in (f"voices_{v}" for v in SYNTH_VOICES):
        r = result[key]
        print_(f"  {r['voices']:<8}{r['block_us']:>25.1f} µs{r['decoder_us']:>12.1f} µs"
               f"{r['realtime_x']:>20.0f}x / {r['decoder_realtime_x']:.0f}x")
    print_(f"  {many['voices']} voices cost {many['block_us'] / one['block_us']:.2f}x one voice (decoder "
           f"{many['decoder_us'] / one['decoder_us']:.2f}x): {many['decoder_runs_per_block']:g} decoder run per block")
    print_(f"  {voices} voices held and a new note every block, each stealing the oldest: "
           f"{steal:.1f} µs ({block_us / steal:.0f}x real time), CPU {steal_cpu:.1f} µs")
    print_("  this thread's CPU time per block (the wall time less what other processes took): "
           + ", ".join(f"{result[k]['voices']} voice(s) {result[k]['block_cpu_us']:.1f} µs "
                       f"(decoder {result[k]['decoder_cpu_us']:.1f} µs)" for k in (f"voices_{v}" for v in SYNTH_VOICES)))
    return result


def bench(show: Show, seconds: float | None = None, print_: Callable[[str], None] = print,
          parts: tuple[str, ...] = ("video", "synth"), fuzz_packets: int = FUZZ_PACKETS,
          flicker_models: list[Path] | None = None) -> dict:
    """Measure and print tables; returns `{"video": {...}, "synth": {...}, "control": {...}, "flicker": {...}}`
    (the parts asked for). `seconds` defaults to 5 per video measurement (a quarter of it per synth one) and 60
    for control. Flicker measures `flicker_models` (default: the show's style model)."""
    results = {}
    if "flicker" in parts:
        results["flicker"] = flicker_bench(show, flicker_models or [show.resolve(show.video.model)], print_=print_)
    if "video" in parts:
        results["video"] = video_bench(show, seconds or 5.0, print_)
    if "gpu" in parts:
        results["gpu"] = gpu_bench(show, seconds or 5.0, print_)
    if "synth" in parts:
        results["synth"] = synth_bench(show, (seconds or 5.0) / 4, print_)
    if "control" in parts:
        frame = osc_to_frame(show, min(seconds or 20.0, 20.0), print_)  # first: before the fuzz churns memory
        results["control"] = {**control_bench(seconds or 60.0, fuzz_packets, print_), "osc_to_frame_ms": frame}
    return results


def osc_to_frame(show: Show, seconds: float, print_: Callable[[str], None] = print) -> dict:
    """OSC message sent -> the first output frame rendered with the new value, through the threads of `live run`
    (camera-paced built-in source, inference thread, newest-frame mailboxes). A frame carries the time its
    parameters were read, so "showing the change" is exact: the first frame whose values were read after the
    tree held the new value. Compared with the pipeline's own capture -> output latency plus one frame period."""
    graph = video_graph(show, show.video.fps)
    tree, stylized = graph.tree, graph.stylized
    server = OscServer(tree, "127.0.0.1", 0)
    server.open()
    graph.chain.open()
    graph.capture.open()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(0)
    changes: list[tuple[float, float]] = []  # (sent, applied)
    frames: list[tuple[float, float, float]] = []  # (values read, out, captured)
    try:
        start = time.perf_counter()
        next_send, value = start + 1.0, 0.0  # a second to warm up
        while time.perf_counter() - start < seconds + 1.0:
            now = time.perf_counter()
            if now >= next_send:
                value = 1.0 - value
                before = tree.changed_at.get("/video/strength")
                sent = time.perf_counter()
                sock.sendto(encode_message("/video/strength", [value]), ("127.0.0.1", server.port))
                while tree.changed_at.get("/video/strength") == before and time.perf_counter() - sent < 0.1:
                    time.sleep(0.0001)
                changes.append((sent, tree.changed_at.get("/video/strength", sent)))
                next_send = now + rng.uniform(0.2, 0.35)  # not locked to the frame clock
            frame = stylized.get(timeout=0.005)
            if frame is not None:
                frames.append((frame.values_at, time.perf_counter(), frame.captured))
    finally:
        sock.close()
        graph.capture.close()
        graph.chain.close()
        server.close()
    latencies = []
    for sent, applied in changes:
        shown = next((out for read, out, _ in frames if read >= applied), None)
        if shown is not None:
            latencies.append((shown - sent) * 1000)
    # The first output of each camera frame (re-renders of it share its capture time).
    fresh = {cap: out for _, out, cap in reversed(frames)}
    model = [(out - cap) * 1000 for cap, out in fresh.items()]
    outs = sorted(fresh.values())
    period = 1000 * (outs[-1] - outs[0]) / max(len(outs) - 1, 1) if outs else 0.0
    result = {"p50": round(percentile(latencies, 50), 2), "p99": round(percentile(latencies, 99), 2),
              "changes": len(latencies), "pipeline_latency_p50_ms": round(percentile(model, 50), 2),
              "pipeline_latency_p99_ms": round(percentile(model, 99), 2), "frame_ms": round(period, 2)}
    # The bound, p99 against p99: a frame's own capture -> output latency, plus one frame's wait
    result["bound_ms"] = round(result["pipeline_latency_p99_ms"] + period, 2)
    print_(f"  OSC -> first output frame with the change ({len(latencies)} changes, {show.video.model}): "
           f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms; bound: capture -> output p99 "
           f"{result['pipeline_latency_p99_ms']:.1f} ms (p50 {result['pipeline_latency_p50_ms']:.1f}) + one frame "
           f"{period:.1f} ms = {result['bound_ms']:.1f} ms")
    return result


def bilinear_baseline(stylizer: Stylizer, values, seconds: float) -> float:
    """The naive way to a cheap tier: the model at the tier's internal size, its output scaled up bilinearly."""
    source = BuiltinSource(WIDTH, HEIGHT)
    run, output = stylizer.session.run, [stylizer.manifest.outputs[0].name]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        small = downscale(source.read(), stylizer.scale)
        cv2.resize(run(output, stylizer.feeds(small, values))[0], (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        count += 1
    return count / (time.perf_counter() - start)


def video_bench(show: Show, seconds: float, print_: Callable[[str], None] = print) -> dict:
    """The video model three ways (with a [video] style_scale below 1, the pipeline is the CPU tier and the model
    alone at full size is its teacher; then also the bilinear baseline); returns the `"video"` result."""
    graph = video_graph(show, show.video.fps)
    stylizer = style_of(graph.chain.stages)
    print_(stylizer.open())
    values = graph.tree.snapshot
    model_fps = model_only(stylizer, values, seconds)
    # the pipeline's source is paced a little faster than the stage can go (the tier goes several times faster
    # than its model at full size), so the source's pace never caps the figure
    stage_fps = stage_only(stylizer, values, seconds / 2)
    pipe_fps, latencies, dropped = pipeline(video_graph(show, max(show.video.fps, 1.25 * stage_fps)), seconds)
    naive_fps = naive(stylizer, values, seconds)
    tier = stylizer.scale < 1.0
    bilinear_fps = bilinear_baseline(stylizer, values, seconds) if tier else None
    latency = {f"p{q}": round(percentile(latencies, q), 2) for q in (50, 95, 99)}
    video = {
        "model": stylizer.manifest.name, "size": [WIDTH, HEIGHT], "provider": stylizer.session.provider,
        "model_only_fps": round(model_fps, 1), "pipeline_fps": round(pipe_fps, 1), "naive_fps": round(naive_fps, 1),
        "latency_ms": latency, "dropped": dropped, "style_scale": stylizer.scale,
        "tier_to_teacher": round(pipe_fps / model_fps, 2) if tier else None,
        "bilinear_fps": round(bilinear_fps, 1) if tier else None,
    }
    print_(f"\nvideo: {video['model']} at {WIDTH}x{HEIGHT} on {video['provider']}, {seconds:g} s each")
    print_(f"  {'model only':<12}{model_fps:8.1f} fps" + ("   (the full-size teacher)" if tier else ""))
    print_(f"  {'pipeline':<12}{pipe_fps:8.1f} fps   ({pipe_fps / naive_fps:.2f}x naive)"
           + (f"   CPU tier: style at {stylizer.scale:g} of each side, guided upsampling, stability "
              f"{values['/video/stability']:g}" if tier else ""))
    print_(f"  {'naive loop':<12}{naive_fps:8.1f} fps")
    if tier:
        print_(f"  {'bilinear':<12}{bilinear_fps:8.1f} fps   (the model at {stylizer.scale:g}, scaled up bilinearly)")
        print_(f"  tier / teacher: {video['tier_to_teacher']:.2f}x (the figure that counts: machines differ)")
    print_(f"  latency capture->output  p50 {latency['p50']:.1f} ms  p95 {latency['p95']:.1f} ms  "
           f"p99 {latency['p99']:.1f} ms")
    print_(f"  dropped {dropped} (source frames superseded before inference: newest frame wins)")
    return video


def frame_times(step: Callable[[int], object], seconds: float) -> tuple[list[float], float]:
    """`step(i)` for i = 0, 1, ... for `seconds` (at least 3 calls): each call's time in ms, and the total in s."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        began = time.perf_counter()
        step(len(times))
        times.append((time.perf_counter() - began) * 1000)
    return times, time.perf_counter() - start


def gpu_bench(show: Show, seconds: float, print_: Callable[[str], None] = print) -> dict:
    """The show's style model at GPU_WIDTH x GPU_HEIGHT through Stylizer.process (the IOBinding frame path) on the
    show's providers, frame after frame for `seconds` after one warm-up frame (which builds or loads TensorRT's
    engine); then, side by side, plain `Session.run` on the same frames (host arrays in, outputs allocated and
    copied out each run); returns the `"gpu"` result."""
    graph = video_graph(show, show.video.fps)
    stylizer, values = style_of(graph.chain.stages), graph.tree.snapshot
    source = BuiltinSource(GPU_WIDTH, GPU_HEIGHT)
    frames = [source.read() for _ in range(GPU_FRAMES)]
    began = time.perf_counter()
    print_(stylizer.open())
    session, output = stylizer.session, [stylizer.manifest.outputs[0].name]
    try:
        stylizer.process(frames[0], values)
        first_s = time.perf_counter() - began
        path = stylizer.frames
        copies, runs, allocations = path.host_copies, path.runs, path.allocations
        times, elapsed = frame_times(lambda i: stylizer.process(frames[i % GPU_FRAMES], values), seconds)
        plain, plain_elapsed = frame_times(
            lambda i: session.run(output, stylizer.feeds(frames[i % GPU_FRAMES], values)), seconds)
    finally:
        stylizer.close()
    provider = session.provider
    result = {"model": stylizer.manifest.name, "size": [GPU_WIDTH, GPU_HEIGHT], "provider": provider,
              "device": session.device, "fallback": session.fallback, "frames": len(times),
              "fps": round(len(times) / elapsed, 2), "frame_ms": {f"p{q}": round(percentile(times, q), 2)
                                                                for q in (50, 99)},
              "host_copies_per_frame": round((path.host_copies - copies) / (path.runs - runs), 2),
              "buffers_allocated_while_timed": path.allocations - allocations,
              "plain_run_fps": round(len(plain) / plain_elapsed, 2),
              "open_and_first_frame_s": round(first_s, 2)}
    result["goal_met"] = result["fps"] >= 60 and result["frame_ms"]["p99"] <= 16.7
    print_(f"\ngpu path: {result['model']} at {GPU_WIDTH}x{GPU_HEIGHT} on {provider} (IOBinding, device "
           f"{result['device']}), {len(times)} frames in {elapsed:.1f} s")
    if provider == "cpu":
        print_("  no GPU here: the GPU path ran on the CPU provider (same code; the 60 fps goal needs a GPU)")
    print_(f"  {result['fps']:.1f} fps, frame time p50 {result['frame_ms']['p50']:.1f} ms, p99 "
           f"{result['frame_ms']['p99']:.1f} ms (goal: >= 60 fps, p99 <= 16.7 ms: "
           f"{'met' if result['goal_met'] else 'not met'}); {result['host_copies_per_frame']:g} host copies per "
           f"frame, {result['buffers_allocated_while_timed']} buffers allocated; open + first frame {first_s:.1f} s")
    print_(f"  plain Session.run on the same frames: {result['plain_run_fps']:.1f} fps (the IOBinding path "
           f"{result['fps'] / result['plain_run_fps']:.2f}x)")
    return result


class TimedStabilizer(Stabilizer):
    """The stabilizer, adding up the time spent in it (the tier's own, swapped in for the bench)."""

    seconds = 0.0

    def __call__(self, camera: np.ndarray, styled: np.ndarray, amount: float) -> np.ndarray:
        began = time.perf_counter()
        out = super().__call__(camera, styled, amount)
        self.seconds += time.perf_counter() - began
        return out


def flicker_bench(show: Show, models: list[Path], frames: int = FLICKER_FRAMES,
                  print_: Callable[[str], None] = print) -> dict:
    """Warp error on the moving clip (live/models/temporal.py: a photo under known motion, noise, a moving
    subject) for every style of each model: the full-size teacher frame by frame, the show's tier frame by frame
    and stabilized at the /video/stability default; and the stabilizer's share of the tier's frame time (timed
    inside the same frames). Returns `{model name: {...}}`."""
    video = show.video
    clip = moving_clip(cv2.imread(str(PHOTO)), frames, (WIDTH, HEIGHT))
    print_(f"\nflicker: warp error (0-255, lower is steadier) on a {frames}-frame {WIDTH}x{HEIGHT} moving clip "
           f"(camera input itself: {warp_error(clip.frames, clip):.2f}); tier = style at {video.style_scale:g}")
    results = {}
    for path in models:
        teacher = Stylizer(path, tuple(video.providers), video.threads, video.backend)
        tier = Stylizer(path, tuple(video.providers), video.threads, video.backend, scale=video.style_scale)
        teacher.open()
        tier.open()
        defaults = {p.address: p.default for p in tier.params()[0]}
        amount = float(defaults["/video/stability"])
        tier.stabilizer = timed = TimedStabilizer()
        styles, steady_s, stabilizing_s = {}, 0.0, 0.0
        print_(f"  {tier.manifest.name}: {'style':<22}{'teacher':>9}{'tier':>8}{'stable':>8}{'lower':>8}")
        for style in tier.styles:
            values = {**defaults, "/video/style_a": style, "/video/stability": 0.0}
            taught = [teacher.process(frame, values) for frame in clip.frames]
            alone = [tier.process(frame, values) for frame in clip.frames]
            timed.seconds, began = 0.0, time.perf_counter()
            steady = [tier.process(frame, {**values, "/video/stability": amount}) for frame in clip.frames]
            steady_s += time.perf_counter() - began
            stabilizing_s += timed.seconds
            row = {"teacher": warp_error(taught, clip), "tier": warp_error(alone, clip),
                   "stabilized": warp_error(steady, clip)}
            row["lower"] = 1.0 - row["stabilized"] / row["tier"]
            styles[style] = {key: round(value, 3) for key, value in row.items()}
            print_(f"  {'':<{len(tier.manifest.name) + 2}}{style:<22}{row['teacher']:9.2f}{row['tier']:8.2f}"
                   f"{row['stabilized']:8.2f}{row['lower']:8.0%}")
        lower = [row["lower"] for row in styles.values()]
        share = stabilizing_s / steady_s
        name = tier.manifest.name
        results[name] = {"stability": amount, "styles": styles, "lowest_reduction": round(min(lower), 3),
                         "mean_reduction": round(float(np.mean(lower)), 3),
                         "tier_frame_ms": round(1000 * steady_s / (len(styles) * frames), 2),
                         "stabilizer_share_of_frame": round(share, 3),
                         "stabilizer_ms": round(1000 * stabilizing_s / (len(styles) * frames), 2)}
        print_(f"  {name}: warp error lower by {min(lower):.0%} (least) to {max(lower):.0%}, "
               f"mean {np.mean(lower):.0%}, at stability {amount:g}; the stabilizer takes {share:.1%} of the tier's "
               f"frame time ({results[name]['stabilizer_ms']:.1f} of {results[name]['tier_frame_ms']:.1f} ms)")
        for stylizer in (teacher, tier):
            stylizer.close()
    return results


# ------------------------------------------------------------------------------------------------- control


#: The bench's OSC sender, a separate process (a sender in the server's process would share its GIL): datagrams
#: "/bench/t d <perf_counter at send>" paced at `rate` for `seconds`; prints how many it sent and in what time.
#: perf_counter is the system-wide monotonic clock on Linux, macOS and Windows, so the server compares it directly.
_SENDER = r"""
import socket, struct, sys, time
host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
prefix, pack, now = b"/bench/t\0\0\0\0,d\0\0", struct.Struct(">d").pack, time.perf_counter
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent, start = 0, now()
while now() - start < seconds:
    due = int((now() - start) * rate)
    while sent < due:
        sock.sendto(prefix + pack(now()), (host, port))
        sent += 1
    time.sleep(0.001)
print(sent, now() - start)
"""


class _StampedTree(ParamTree):
    """A tree of one parameter, /bench/t, that notes after each write how long ago its value (the sender's
    perf_counter) was taken: the time from sending to the value being visible in the snapshot. Keeps at most
    `capacity` samples."""

    def __init__(self, capacity: int) -> None:
        super().__init__([Param("/bench/t", "float", 0.0, 0.0, 1e12)])
        self.capacity, self.latencies_ms = capacity, array("d")

    def update(self, values, source=""):
        written = super().update(values, source)
        sent = values.get("/bench/t")
        if sent is not None and len(self.latencies_ms) < self.capacity:
            self.latencies_ms.append((time.perf_counter() - sent) * 1000)
        return written


def fuzz_tree() -> ParamTree:
    """The tree the fuzzer aims at: a float, an int, an enum and an event."""
    return ParamTree([Param("/fuzz/a", "float", 0.0), Param("/fuzz/b", "int", 0, 0, 100),
                      Param("/fuzz/c", "enum", "one", choices=("one", "two", "three"))],
                     [Event("/fuzz/note", (("note", "int", 0, 127), ("velocity", "float", 0.0, 1.0)))])


class OscFuzzer:
    """Datagrams whose fate is known before they are sent: `next()` returns (packet, messages), messages > 0 for a
    valid packet (that many messages must be applied) and 0 for one that must be rejected exactly once. Kinds:
    valid messages, patterns and nested bundles; truncated valid packets; bad type tags; blob sizes past the end;
    far-future bundles; nested bundles with bad element lengths; random junk; unknown addresses; bad values.
    `mutate()` flips bits in a valid packet: its fate is unknown, for robustness runs only."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.kinds = [self._valid, self._valid_bundle, self._truncated, self._bad_tag, self._huge_blob,
                      self._far_future, self._bad_nesting, self._junk, self._unknown, self._bad_value]

    def next(self) -> tuple[bytes, int]:
        return self.rng.choice(self.kinds)()

    def _message(self) -> bytes:
        r = self.rng
        choice = r.randrange(6)
        if choice == 0:
            return encode_message("/fuzz/a", [r.random()])
        if choice == 1:
            return encode_message("/fuzz/b", [r.randrange(-50, 200)])
        if choice == 2:
            return encode_message("/fuzz/c", [r.choice(["one", "two", "three", 0, 2, 7])])
        if choice == 3:
            return encode_message(r.choice(["/fuzz/[ab]", "/fuzz/{a,b}", "/fuzz/?", "/f*/[!c]"]), [r.random()])
        if choice == 4:
            return encode_message("/fuzz/note", [r.randrange(128), r.random()])
        return encode_message("/fuzz/a", [r.choice([True, False, 3, -2.5])])

    def _valid(self) -> tuple[bytes, int]:
        return self._message(), 1

    def _bundle(self, depth: int = 0) -> tuple[bytes, int]:
        r = self.rng
        parts, count = [], 0
        for _ in range(r.randint(1, 4)):
            if depth < 3 and r.random() < 0.25:
                inner, n = self._bundle(depth + 1)
            else:
                inner, n = self._message(), 1
            parts.append(inner)
            count += n
        when = r.choice([1, 1, unix_to_ntp(time.time() - r.uniform(0, 1e6))])  # now, or in the past: applied now
        return encode_bundle(when, parts), count

    def _valid_bundle(self) -> tuple[bytes, int]:
        return self._bundle()

    def _truncated(self) -> tuple[bytes, int]:
        packet = self._bundle()[0] if self.rng.random() < 0.5 else self._message()
        cut = self.rng.randrange(1, len(packet))
        if cut % 4 == 0:
            cut -= 1  # valid OSC is 4-byte aligned: a cut elsewhere can never parse
        return packet[:cut], 0

    def _bad_tag(self) -> tuple[bytes, int]:
        packet = bytearray(self._message())
        comma = (packet.index(b"\0") + 4) & ~3  # the type tags follow the padded address (which may hold a ',')
        end = packet.index(b"\0", comma)
        packet[self.rng.randrange(comma + 1, end)] = ord(self.rng.choice("aegjklnopquvwxyzAEGHJKLMOPQRUVWXYZ0!"))
        return bytes(packet), 0

    def _huge_blob(self) -> tuple[bytes, int]:
        size = self.rng.choice([self.rng.randrange(16, 2**31), -self.rng.randrange(1, 2**31), 2**31 - 1])
        return b"/fuzz/a\0,b\0\0" + struct.pack(">i", size) + b"\0" * self.rng.randrange(0, 3) * 4, 0

    def _far_future(self) -> tuple[bytes, int]:
        ahead = self.rng.choice([3600.0, 86400.0 * 365, self.rng.uniform(120, 1e7)])
        return encode_bundle(unix_to_ntp(time.time() + ahead), [self._message()]), 0

    def _bad_nesting(self) -> tuple[bytes, int]:
        inner = encode_bundle(1, [self._message(), self._message()])
        outer = bytearray(encode_bundle(1, [self._message(), inner]))
        # the size field of the nested bundle's first element, or of the nested bundle itself
        first = 16 + 4 + int.from_bytes(outer[16:20], "big")
        at = self.rng.choice([first, first + 4 + 16])
        remaining = len(outer) - at - 4
        bad = self.rng.choice([-4, 0, 6, remaining + 4, 2**31 - 1, remaining - 2 if remaining > 2 else 6])
        struct.pack_into(">i", outer, at, bad)
        return bytes(outer), 0

    def _junk(self) -> tuple[bytes, int]:
        data = bytearray(self.rng.randbytes(self.rng.randrange(0, 200)))
        if data and data[0] in b"/#":
            data[0] = 0
        return bytes(data), 0

    def _unknown(self) -> tuple[bytes, int]:
        return encode_message(f"/fuzz/x{self.rng.randrange(10**6)}", [1.0]), 0

    def _bad_value(self) -> tuple[bytes, int]:
        return self.rng.choice([encode_message("/fuzz/a", ["loud"]), encode_message("/fuzz/c", ["four"]),
                                encode_message("/fuzz/a", [1.0, 2.0]), encode_message("/fuzz/note", [60]),
                                encode_message("/fuzz/b", [None])]), 0

    def mutate(self) -> bytes:
        packet = bytearray(self._bundle()[0] if self.rng.random() < 0.5 else self._message())
        for _ in range(self.rng.randint(1, 4)):
            packet[self.rng.randrange(len(packet))] ^= 1 << self.rng.randrange(8)
        return bytes(packet)


def rss_mb() -> float:
    """This process's resident memory in MB (Linux /proc; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def send_paced(server, packets, window: int = FUZZ_WINDOW) -> int:
    """Send datagrams to the server, never more than `window` ahead of what it has counted (so the kernel never
    drops one and every count is exact); returns how many were sent once all are counted."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        target = ("127.0.0.1", server.port)
        base = server.counts["packets"]
        for packet in packets:
            while sent - (server.counts["packets"] - base) >= window:
                time.sleep(0.0001)
            sock.sendto(packet, target)
            sent += 1
        deadline = time.monotonic() + 10
        while server.counts["packets"] - base < sent and time.monotonic() < deadline:
            time.sleep(0.001)
    return sent


def osc_fuzz(packets: int, seed: int = 0) -> dict:
    """`packets` fuzzed datagrams at a running server (after a tenth as warm-up, not counted in the memory
    growth); every invalid one must be rejected once, every valid one applied or superseded by a newer value, the
    server must survive."""
    server = OscServer(fuzz_tree(), "127.0.0.1", 0, rate_limit=None)
    server.open()
    fuzzer = OscFuzzer(seed)
    tally = {"invalid": 0, "valid_messages": 0}

    def stream(n: int):
        for _ in range(n):
            packet, messages = fuzzer.next()
            tally["invalid" if messages == 0 else "valid_messages"] += messages or 1
            yield packet

    try:
        warm = packets // 10
        send_paced(server, stream(warm))
        rss_before, started = rss_mb(), time.perf_counter()
        send_paced(server, stream(packets - warm))
        elapsed = time.perf_counter() - started
        rss_growth = rss_mb() - rss_before
        alive = server.alive
    finally:
        server.close()
    stats = server.stats()
    return {"packets": packets, "received": stats["packets"], "invalid_sent": tally["invalid"],
            "rejected": stats["rejected"], "valid_messages": tally["valid_messages"], "applied": stats["applied"],
            "superseded": stats["superseded"], "crashes": stats["errors"] + (0 if alive else 1), "rss_growth_mb": round(rss_growth, 2),
            "packets_per_s": round((packets - warm) / elapsed, 0)}


def control_bench(seconds: float, fuzz_packets: int = FUZZ_PACKETS, print_: Callable[[str], None] = print,
                  rate: float = CONTROL_RATE) -> dict:
    """OSC over UDP loopback: a separate sender process at `rate` messages/s for `seconds` (sent, received and
    applied per second; time from send to the value in the tree's snapshot), then `fuzz_packets` fuzzed
    datagrams. `bench` adds osc_to_frame_ms (see osc_to_frame), which needs a show's model."""
    tree = _StampedTree(capacity=int(rate * seconds * 1.5) + 1000)
    server = OscServer(tree, "127.0.0.1", 0, rate_limit=max(20_000.0, 2 * rate))
    server.open()
    try:
        sender = subprocess.run([sys.executable, "-c", _SENDER, "127.0.0.1", str(server.port), str(rate),
                                 str(seconds)], capture_output=True, text=True, check=True, timeout=seconds + 60)
        sent_text, took_text = sender.stdout.split()
        sent, took = int(sent_text), float(took_text)
        deadline = time.monotonic() + 5  # let the server finish what is in its socket buffer
        while server.counts["packets"] < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
    finally:
        server.close()
    stats = server.stats()
    latencies = list(tree.latencies_ms)
    latency = {f"p{q}": round(percentile(latencies, q), 3) for q in (50, 95, 99)} if latencies else {}
    if latencies:
        latency["max"] = round(max(latencies), 3)
    result: dict = {
        "seconds": round(took, 2),
        "osc_msgs_per_s": round(stats["applied"] / took, 1),
        "osc_rates": {"target": rate, "sent": round(sent / took, 1), "received": round(stats["packets"] / took, 1),
                      "applied": round(stats["applied"] / took, 1)},
        "osc_sent": sent, "osc_received": stats["packets"], "osc_applied": stats["applied"],
        "osc_superseded": stats["superseded"],
        "osc_lost": sent - stats["packets"], "osc_rejected": stats["rejected"],
        "osc_to_param_ms": latency, "osc_to_frame_ms": None,
    }
    print_(f"\ncontrol: OSC over UDP loopback, a separate process sending {rate:g} msgs/s for {took:.1f} s")
    rates = result["osc_rates"]
    print_(f"  sent {rates['sent']:.0f}/s, received {rates['received']:.0f}/s, applied {rates['applied']:.0f}/s; "
           f"{stats['superseded']} superseded by a newer value, {result['osc_lost']} lost in the kernel, "
           f"{stats['rejected']} rejected")
    if latencies:
        print_(f"  send -> value in the tree's snapshot: p50 {latency['p50']:.3f} ms, p95 {latency['p95']:.3f} ms, "
               f"p99 {latency['p99']:.3f} ms, max {latency['max']:.2f} ms")
    if not fuzz_packets:
        result["fuzz"] = None
        return result
    fuzz = osc_fuzz(fuzz_packets)
    result["fuzz"] = fuzz
    print_(f"  fuzz: {fuzz['packets']} datagrams ({fuzz['invalid_sent']} invalid, {fuzz['valid_messages']} valid "
           f"messages): {fuzz['rejected']} rejected, {fuzz['applied']} applied, {fuzz['superseded']} superseded, "
           f"{fuzz['crashes']} crashes, "
           f"RSS {fuzz['rss_growth_mb']:+.1f} MB, {fuzz['packets_per_s']:.0f} packets/s")
    return result
