"""`live models report`: what each style does to a picture, in a contact sheet and four numbers per style.

Every style of every image-to-image model runs through the player's own Stylizer on procedural test material
made here (three still scenes, one moving clip), so a report needs no data files and repeats exactly:

- style_distance: how far the style moves the image's colour and texture statistics away from the input's.
  Gram matrices (uncentred second moments) of two feature sets, colour (B, G, R) and texture (Sobel x/y of the
  luminance, sharp and blurred by sigma 2), each compared as ||G_out - G_in|| / (||G_out|| + ||G_in||)
  (Frobenius), then averaged. 0 = statistics unchanged, 1 = nothing in common (e.g. texture where there was
  none). It is NOT a distance to a target look: the procedural styles have no style images to compare with.
- edge_correlation: Pearson correlation of the Sobel magnitude of input and output luminance (1 = same edges).
- ssim: mean SSIM of the 4x-downscaled luminance (1 = same structure at a coarse scale).
- warp_error: temporal stability on a moving clip. Optical flow (OpenCV DIS, medium preset) between consecutive
  INPUT frames warps output t-1 onto t; the mean absolute difference to output t over pixels that pass a
  forward-backward flow check (not occluded, not out of frame), 0-255 scale. The input clip's own warp error is
  the floor (interpolation and flow error); a style that flickers or crawls scores well above it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from live.errors import LiveError
from live.models.manifest import atomic_write, load_manifest, manifest_paths

SHEET_BYTES = 1_000_000  # each sheet stays under this
SCENE_NAMES = ("still life", "landscape", "textures")


# --- test material ---------------------------------------------------------------------------------------------

def _noise(height: int, width: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth value noise in [0, 1]: a random grid `cells` across, upscaled with cubic interpolation."""
    grid = rng.random((max(2, cells * height // width), cells)).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def scenes(width: int, height: int) -> list[np.ndarray]:
    """Three BGR stills with different content: flat shapes and text, soft natural forms, fine repeating texture."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    side = min(width, height)

    def at(fx: float, fy: float) -> tuple[int, int]:
        return int(fx * width), int(fy * height)

    still = np.dstack([60 + 150 * u, 90 + 100 * v, 200 - 120 * u * v]).astype(np.uint8)
    cv2.rectangle(still, at(.08, .55), at(.4, .9), (40, 170, 230), -1)
    cv2.circle(still, at(.68, .38), int(.2 * side), (70, 60, 190), -1)
    cv2.circle(still, at(.28, .28), int(.12 * side), (200, 200, 200), -1)
    cv2.fillPoly(still, [np.array([at(.5, .95), at(.72, .58), at(.95, .95)])], (140, 90, 30))
    cv2.putText(still, "LIVE", at(.52, .88), cv2.FONT_HERSHEY_DUPLEX, side / 170, (250, 250, 250),
                max(1, side // 100))

    sky = np.dstack([235 - 60 * v, 190 - 70 * v, 120 - 40 * v])
    land = sky.copy()
    for i, (base, amp, colour) in enumerate(((.55, .08, (90, 140, 110)), (.68, .06, (50, 110, 60)),
                                             (.8, .05, (30, 70, 40)))):
        ridge = base + amp * np.sin(u * (5 + 3 * i) + i) + .03 * _noise(1, width, 8, rng)[0]
        land[v > ridge] = colour
    land = land * (0.8 + 0.4 * _noise(height, width, 24, rng))[..., None]
    landscape = np.clip(land, 0, 255).astype(np.uint8)
    cv2.circle(landscape, at(.78, .22), int(.08 * side), (120, 220, 255), -1)

    bricks_h = max(4, side // 16)
    rows = (y // bricks_h).astype(int)
    mortar = ((y % bricks_h) < 2) | (((x + (rows % 2) * bricks_h) % (2 * bricks_h)) < 2)
    brick = np.where(mortar[..., None], 200, np.array([60, 80, 170]) * (0.7 + 0.6 * _noise(height, width, 40, rng))
                     [..., None])
    rings = 128 + 100 * np.sin(np.hypot(x - .75 * width, y - .5 * height) / side * 60)
    stripes = 128 + 100 * np.sign(np.sin((x + y) / side * 80))
    textures = brick.astype(np.float32)
    right = u > .5
    textures[right] = np.dstack([rings, stripes * .5 + 60, 255 - rings])[right]
    return [still, landscape, np.clip(textures, 0, 255).astype(np.uint8)]


def moving_clip(width: int, height: int, frames: int) -> list[np.ndarray]:
    """A slow hand-held-like camera move over a textured scene: pan along an arc, 5% zoom, 2 degrees of roll."""
    rng = np.random.default_rng(11)
    big_w, big_h = 2 * width, 2 * height
    canvas = scenes(big_w, big_h)[0].astype(np.float32)
    canvas *= (0.7 + 0.6 * _noise(big_h, big_w, 48, rng))[..., None]
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    out = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        centre = (big_w / 2 + 0.12 * width * math.sin(math.pi * t), big_h / 2 + 0.06 * height * (1 - math.cos(
            math.pi * t)))
        matrix = cv2.getRotationMatrix2D(centre, 2.0 * t, 1.0 + 0.05 * t)
        matrix[:, 2] += (width / 2 - centre[0], height / 2 - centre[1])
        out.append(cv2.warpAffine(canvas, matrix, (width, height), flags=cv2.INTER_LINEAR))
    return out


# --- metrics -----------------------------------------------------------------------------------------------------

def luminance(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)


def _sobel(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)


def _gram(features: list[np.ndarray]) -> np.ndarray:
    flat = np.stack([f.ravel() for f in features], axis=1).astype(np.float64)
    return flat.T @ flat / len(flat)


def _features(image: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    colour = list(np.moveaxis(image.astype(np.float32) / 255, 2, 0))
    gray = luminance(image) / 255
    texture = [*_sobel(gray), *_sobel(cv2.GaussianBlur(gray, (0, 0), 2))]
    return colour, texture


def style_distance(inp: np.ndarray, out: np.ndarray) -> float:
    """Mean relative Gram-matrix change of the colour and the texture features (see the module doc)."""
    parts = []
    for a, b in zip(_features(inp), _features(out)):
        gram_a, gram_b = _gram(a), _gram(b)
        parts.append(np.linalg.norm(gram_b - gram_a) / max(np.linalg.norm(gram_a) + np.linalg.norm(gram_b), 1e-12))
    return float(np.mean(parts))


def edge_correlation(inp: np.ndarray, out: np.ndarray) -> float:
    a, b = (np.hypot(*_sobel(luminance(img))) for img in (inp, out))
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def ssim(inp: np.ndarray, out: np.ndarray) -> float:
    """Mean SSIM (Gaussian window, sigma 1.5) of luminance downscaled 4x."""
    a, b = (cv2.resize(luminance(img), (img.shape[1] // 4, img.shape[0] // 4), interpolation=cv2.INTER_AREA)
            .astype(np.float64) for img in (inp, out))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (0, 0), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    index = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


@dataclass
class Warp:
    """Where each pixel of frame t was in frame t-1 (remap maps), and which pixels to trust."""

    map_x: np.ndarray
    map_y: np.ndarray
    valid: np.ndarray


def clip_flows(frames: list[np.ndarray]) -> list[Warp]:
    """DIS flow between consecutive input frames, both ways; a pixel is valid if it stays in frame and the
    backward flow and the forward flow at its target cancel (the usual consistency test, alpha 0.01, beta 0.5)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    height, width = grays[0].shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    warps = []
    for prev, cur in zip(grays, grays[1:]):
        back = dis.calc(cur, prev, None)  # cur(p) ~ prev(p + back(p))
        fwd = dis.calc(prev, cur, None)
        map_x, map_y = x + back[..., 0], y + back[..., 1]
        fwd_there = cv2.remap(fwd, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mismatch = ((back + fwd_there) ** 2).sum(axis=2)
        bound = 0.01 * ((back ** 2).sum(axis=2) + (fwd_there ** 2).sum(axis=2)) + 0.5
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        warps.append(Warp(map_x, map_y, (mismatch < bound) & inside))
    return warps


def warp_error(outputs: list[np.ndarray], warps: list[Warp]) -> float:
    """Mean |output t - warped output t-1| over valid pixels and channels, 0-255 scale, in float arithmetic."""
    total, count = 0.0, 0
    for prev, cur, warp in zip(outputs, outputs[1:], warps):
        warped = cv2.remap(prev.astype(np.float32), warp.map_x, warp.map_y, cv2.INTER_LINEAR)
        diff = np.abs(cur.astype(np.float32) - warped)[warp.valid]
        total += float(diff.sum())
        count += diff.size
    return total / max(count, 1)


# --- the report --------------------------------------------------------------------------------------------------

def _label(tile: np.ndarray, text: str) -> None:
    scale = max(0.4, tile.shape[0] / 400)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(tile, (0, 0), (w + 8, h + base + 8), (0, 0, 0), -1)
    cv2.putText(tile, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def sheet(rows: list[tuple[str, list[np.ndarray]]], tile_width: int) -> bytes:
    """A JPEG contact sheet: one row per label, one column per scene, under SHEET_BYTES."""
    tiles = []
    for label, images in rows:
        scaled = [cv2.resize(img, (tile_width, img.shape[0] * tile_width // img.shape[1]),
                             interpolation=cv2.INTER_AREA) for img in images]
        _label(scaled[0], label)
        tiles.append(np.hstack(scaled))
    image = np.vstack(tiles)
    for quality in range(90, 10, -10):
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        if len(data) < SHEET_BYTES:
            return data
    raise LiveError(f"the report sheet stays over {SHEET_BYTES} bytes", "use a smaller --width")


def _style_models(models_dir: Path, names: list[str] | None) -> list[Path]:
    paths = {p.stem: p for p in manifest_paths(models_dir)}
    unknown = [n for n in names or [] if n not in paths]
    if unknown:
        raise LiveError(f"no model {', '.join(unknown)} in {models_dir}", "`live models` lists the models")
    chosen = [paths[n] for n in names] if names else list(paths.values())
    found = []
    for path in chosen:
        manifest = load_manifest(path)
        if manifest.kind == "image-to-image" and (manifest.controls.get("styles") or
                                                  manifest.controls.get("style_vector_input")):
            found.append(path)
    if not found:
        raise LiveError(f"no image-to-image model with styles in {models_dir}", "build or import a style model")
    return found


def evaluate(model: Path, stills: list[np.ndarray], clip: list[np.ndarray], warps: list[Warp],
             strength: float = 1.0) -> tuple[dict[str, dict[str, float]], list[tuple[str, list[np.ndarray]]]]:
    """Metrics per style of one model (stills averaged), and its stylized stills for the sheet."""
    from live.video.stylize import Stylizer

    stylizer = Stylizer(model, ("cpu",), threads=2)
    stylizer.open()
    metrics, rows = {}, []
    for style in stylizer.styles:
        values = {"/video/style_a": style, "/video/style_b": style, "/video/blend": 0.0,
                  "/video/strength": strength}
        outs = [stylizer.process(img, values) for img in stills]
        moving = [stylizer.process(img, values) for img in clip]
        metrics[style] = {
            "style_distance": float(np.mean([style_distance(a, b) for a, b in zip(stills, outs)])),
            "edge_correlation": float(np.mean([edge_correlation(a, b) for a, b in zip(stills, outs)])),
            "ssim": float(np.mean([ssim(a, b) for a, b in zip(stills, outs)])),
            "warp_error": warp_error(moving, warps),
        }
        rows.append((style, outs))
    return metrics, rows


def _markdown(report: dict, settings: str) -> str:
    lines = ["# Style model report", "", settings, "",
             f"Input clip warp error (the floor for `warp_error`): {report['input_warp_error']:.2f}", "",
             "What the numbers mean (details in `live/models/report.py`):", "",
             "- **style distance**: how far the style moved the colour/texture statistics (Gram matrices) away "
             "from the input's; 0 = unchanged, 1 = nothing in common. Not a distance to a target look.",
             "- **edge corr.**: correlation of input and output Sobel edge maps (1 = same edges).",
             "- **SSIM**: structure kept, on 4x-downscaled luminance (1 = same).",
             "- **warp error**: mean |output t - flow-warped output t-1| on a moving clip, 0-255; near the input's "
             "own value = temporally stable, far above = flicker.", ""]
    for model, styles in report.items():
        if model == "input_warp_error":
            continue
        lines += [f"## {model}", "", f"![{model}]({model}.jpg)", "",
                  "| style | style distance | edge corr. | SSIM | warp error |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {s} | {m['style_distance']:.3f} | {m['edge_correlation']:.3f} | {m['ssim']:.3f} | "
                  f"{m['warp_error']:.2f} |" for s, m in styles.items()]
        lines.append("")
    return "\n".join(lines)


def write_report(models_dir: Path, out_dir: Path, names: list[str] | None = None, width: int = 640,
                 height: int = 480, frames: int = 30, tile_width: int | None = None) -> dict:
    """Write `<model>.jpg` sheets, report.json and report.md into `out_dir`; return the report."""
    if width < 32 or height < 32 or frames < 2:
        raise LiveError(f"report size {width}x{height} with {frames} frames is too small",
                        "use at least 32x32 pixels and 2 frames")
    models = _style_models(models_dir, names)
    stills, clip = scenes(width, height), moving_clip(width, height, frames)
    warps = clip_flows(clip)
    report: dict = {"input_warp_error": warp_error(clip, warps)}
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in models:
        metrics, rows = evaluate(path, stills, clip, warps)
        report[path.stem] = metrics
        atomic_write(out_dir / f"{path.stem}.jpg", sheet([("input", stills), *rows], tile_width or width // 2))
    settings = (f"Stills: {', '.join(SCENE_NAMES)} at {width}x{height}; moving clip: {frames} frames. "
                "Regenerate with `live models report`.")
    atomic_write(out_dir / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write(out_dir / "report.md", _markdown(report, settings).encode())
    return report
