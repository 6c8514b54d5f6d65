"""How sharp and how smooth a latent model's imagery is, measured at output size through the player's own layer.

    python -m live.models.latent_metrics exported_models/latent-vae.json exported_models/latent-sharp.json

prints, per model, side by side in one run:
- sharpness: the variance of the grey image's Laplacian (high-frequency energy; a blurry image has almost none),
  and edge steepness: the mean gradient (grey levels per pixel) of the steepest 1 % of pixels over the image's
  5-95 % grey range, so it says how many pixels an edge takes to cross, whatever the contrast;
- smoothness: the mean absolute change per frame (grey levels) of a straight walk in equal latent steps, and of
  the layer's own /latent/walk at full speed at 30 fps, each with its largest over smallest step;
- cost: milliseconds per render at the output size (the model run, crop and resize), on the given threads, and
  what a frame of a full-speed walk waits for (the render runs on the layer's own thread).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from live.video.latent import LatentLayer

SIZE = (640, 480)
FPS = 30


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)


def laplacian_variance(image: np.ndarray) -> float:
    """High-frequency energy: the variance of the grey image's Laplacian."""
    return float(cv2.Laplacian(grey(image), cv2.CV_32F).var())


def edge_steepness(image: np.ndarray) -> float:
    """The steepest 1 % of the image's gradients over its 5-95 % grey range: about 1 / (pixels an edge spans)."""
    g = grey(image)
    magnitude = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, scale=1 / 8), cv2.Sobel(g, cv2.CV_32F, 0, 1, scale=1 / 8))
    steep = np.sort(magnitude.ravel())[-magnitude.size // 100:].mean()
    low, high = np.percentile(g, (5, 95))
    return float(steep / max(high - low, 1.0))


def mean_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def values(seed: int = 0, walk: float = 0.0, x: float = 0.0, y: float = 0.0) -> dict:
    return {"/latent/seed": seed, "/latent/walk": walk, "/latent/x": x, "/latent/y": y, "/latent/mix": 1.0}


def renders(layer: LatentLayer, latents: np.ndarray) -> list[np.ndarray]:
    """The layer's output-size image for each latent row."""
    return [layer.generate(z[None].astype(np.float32), SIZE).copy() for z in latents]


def straight_walk(layer: LatentLayer, seed: int, steps: int = 24, step: float = 0.04) -> np.ndarray:
    """Image change per step along a straight line in equal latent steps from a seed's base point."""
    rng = np.random.default_rng(seed)
    start = layer.latent(values(seed))[0]
    direction = rng.standard_normal(layer.dims)
    path = start + step * np.arange(steps + 1)[:, None] * direction / np.linalg.norm(direction)
    frames = renders(layer, path)
    return np.array([mean_change(a, b) for a, b in zip(frames, frames[1:])])


def played_walk(layer: LatentLayer, seed: int, seconds: float = 2.0) -> np.ndarray:
    """Image change per frame of the layer's own walk at full speed, as the show plays it at FPS."""
    frame, previous, changes = np.zeros((SIZE[1], SIZE[0], 3), np.uint8), None, []
    moving = values(seed, walk=1.0)
    for t in np.arange(0, seconds, 1 / FPS):
        layer.process(frame, moving, float(t))
        layer.settle()  # every frame's own latent: the sequence a viewer sees when renders keep up
        image = layer.process(frame, moving, float(t)).copy()
        if previous is not None:
            changes.append(mean_change(previous, image))
        previous = image
    return np.array(changes)


def measure(manifest: Path, threads: int = 1, seeds: tuple[int, ...] = (0, 1, 2, 3)) -> dict[str, float]:
    """Every figure for one model: means over `seeds` (sharpness) and the worst seed (step ratios)."""
    layer = LatentLayer(manifest, *SIZE, threads=threads)
    layer.open()
    images = [layer.generate(layer.latent(values(seed)), SIZE).copy() for seed in seeds]
    straight = [straight_walk(layer, seed) for seed in seeds]
    played = [played_walk(layer, seed) for seed in seeds]
    rng = np.random.default_rng(99)
    latents = rng.standard_normal((20, layer.dims)).astype(np.float32)
    started = time.perf_counter()
    for z in latents:
        layer.generate(z[None], SIZE)
    ms = (time.perf_counter() - started) / len(latents) * 1000
    frame, spent = np.zeros((SIZE[1], SIZE[0], 3), np.uint8), []
    for t in np.arange(0, 2.0, 1 / FPS):  # the show's side of a walk: what each frame waits for
        started = time.perf_counter()
        layer.process(frame, values(0, walk=1.0), 10.0 + float(t))
        spent.append(time.perf_counter() - started)
        time.sleep(max(1 / FPS - spent[-1], 0.0))
    layer.close()
    return {"laplacian_variance": float(np.mean([laplacian_variance(i) for i in images])),
            "edge_steepness": float(np.mean([edge_steepness(i) for i in images])),
            "straight_step": float(np.mean(np.concatenate(straight))),
            "straight_max_over_min": float(max(s.max() / s.min() for s in straight)),
            "played_step": float(np.mean(np.concatenate(played))),
            "played_max_over_min": float(max(s.max() / s.min() for s in played)),
            "ms_per_render": ms, "frame_path_ms_in_walk": float(np.mean(spent)) * 1000}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m live.models.latent_metrics", description=__doc__.split("\n")[0])
    p.add_argument("manifests", nargs="+", type=Path, help="latent models' manifests, compared side by side")
    p.add_argument("--threads", type=int, default=1,
                   help="ONNX Runtime threads (default %(default)s, as the show's latent layer runs)")
    args = p.parse_args(argv)
    results = {m.stem: measure(m, args.threads) for m in args.manifests}
    print(f"{'at 640x480':24}" + "".join(f"{name:>16}" for name in results))
    for key in next(iter(results.values())):
        print(f"{key:24}" + "".join(f"{r[key]:16.3f}" for r in results.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
