"""Data we make: one procedural style image per style name, and procedural content scenes to stylize.

Everything is seeded, so the same seed gives the same pixels. Style images embody their name through texture
and colour (dots, strokes, hatching, cells, palettes), because that is what a Gram-statistics loss can transfer.
Images are float32 RGB HWC in [0, 1]; content batches are torch NCHW.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from live.errors import LiveError

STYLE_SIZE = 384
SCENE_SIZE = 256
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

Image = np.ndarray


def fractal_noise(rng: np.random.Generator, size: int, octaves: int = 5, base: int = 4) -> Image:
    """Smooth multi-octave value noise in [0, 1]: clouds, hills, tone fields."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for octave in range(octaves):
        cells = base * 2 ** octave
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    return (out - out.min()) / max(float(np.ptp(out)), 1e-6)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    """An RGB colour from hue in [0, 1) and saturation, value in [0, 1]."""
    pixel = np.uint8([[[int(h * 180) % 180, int(s * 255), int(v * 255)]]])
    r, g, b = cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    return float(r), float(g), float(b)


def _paper(rng: np.random.Generator, size: int, colour: tuple[float, float, float], grain: float) -> Image:
    return np.clip(np.float32(colour) + grain * (fractal_noise(rng, size, 6, 16)[..., None] - 0.5), 0, 1)


def neon_edges(rng: np.random.Generator, n: int) -> Image:
    """Glowing thin magenta/cyan/green lines on near-black."""
    img = np.zeros((n, n, 3), np.float32) + np.float32([0.02, 0.01, 0.06])
    lines = np.zeros_like(img)
    for _ in range(28):
        colour = _hsv(rng.choice([0.83, 0.5, 0.33, 0.92, 0.58]), 1.0, 1.0)
        pts = rng.integers(0, n, (int(rng.integers(2, 6)), 2)).astype(np.int32)
        if rng.random() < 0.4:
            cv2.circle(lines, tuple(int(v) for v in pts[0]), int(rng.integers(15, n // 4)), colour, 2, cv2.LINE_AA)
        else:
            cv2.polylines(lines, [pts], bool(rng.random() < 0.5), colour, 2, cv2.LINE_AA)
    glow = cv2.GaussianBlur(lines, (0, 0), 6) * 2.5 + cv2.GaussianBlur(lines, (0, 0), 2)
    return np.clip(img + glow + lines, 0, 1)


def ink_hatching(rng: np.random.Generator, n: int) -> Image:
    """Black cross-hatching on white paper: more crossing layers where the tone is darker."""
    tone = fractal_noise(rng, n, 4, 3)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    ink = np.zeros((n, n), np.float32)
    for threshold, angle in ((0.25, 45), (0.45, -45), (0.65, 0), (0.8, 90)):
        t = np.deg2rad(angle)
        u = (x * np.cos(t) + y * np.sin(t) + 3 * fractal_noise(rng, n, 3, 8)) / 6.0
        stripe = (np.abs(u - np.round(u)) < 0.14).astype(np.float32)
        ink = np.maximum(ink, stripe * (tone > threshold))
    outline = np.zeros((n, n), np.float32)
    for _ in range(10):
        pts = rng.integers(0, n, (5, 2)).astype(np.int32)
        cv2.polylines(outline, [pts], False, 1.0, 2, cv2.LINE_AA)
    ink = np.maximum(ink, outline)
    paper = _paper(rng, n, (0.96, 0.95, 0.91), 0.05)
    return np.clip(paper * (1 - 0.92 * ink[..., None]), 0, 1)


def pop_art(rng: np.random.Generator, n: int) -> Image:
    """Kandinsky-like flat primaries: circles, triangles, bars with black outlines, some halftone dots."""
    img = np.zeros((n, n, 3), np.float32) + np.float32([0.98, 0.93, 0.78])
    palette = [(0.95, 0.1, 0.1), (0.1, 0.25, 0.9), (1.0, 0.85, 0.05), (0.05, 0.05, 0.05), (0.1, 0.7, 0.3),
               (1.0, 0.45, 0.0)]
    for _ in range(22):
        colour = palette[int(rng.integers(len(palette)))]
        c = tuple(int(v) for v in rng.integers(0, n, 2))
        kind = rng.integers(3)
        if kind == 0:
            r = int(rng.integers(12, n // 5))
            cv2.circle(img, c, r, colour, -1, cv2.LINE_AA)
            cv2.circle(img, c, r, (0, 0, 0), 3, cv2.LINE_AA)
        elif kind == 1:
            tri = (np.array(c) + rng.integers(-n // 5, n // 5, (3, 2))).astype(np.int32)
            cv2.fillPoly(img, [tri], colour, cv2.LINE_AA)
            cv2.polylines(img, [tri], True, (0, 0, 0), 3, cv2.LINE_AA)
        else:
            end = tuple(int(v) for v in np.array(c) + rng.integers(-n // 3, n // 3, 2))
            cv2.line(img, c, end, (0, 0, 0) if rng.random() < 0.6 else colour, int(rng.integers(2, 9)), cv2.LINE_AA)
    y, x = np.mgrid[0:n, 0:n]
    dots = ((x % 8 - 4) ** 2 + (y % 8 - 4) ** 2 < 5) & (fractal_noise(rng, n, 2, 2) > 0.6)
    img[dots] = np.float32([0.9, 0.2, 0.5])
    return img


def watercolour(rng: np.random.Generator, n: int) -> Image:
    """Soft translucent washes with darker pooled edges over grainy paper."""
    img = _paper(rng, n, (0.97, 0.95, 0.9), 0.06)
    for _ in range(8):
        mask = (fractal_noise(rng, n, 4, 2) > 0.65).astype(np.float32)
        mask = cv2.GaussianBlur(mask, (0, 0), 3)
        edge = np.clip(mask - cv2.GaussianBlur(mask, (0, 0), 5), 0, 1) * 2.0
        alpha = (0.35 * mask + 0.5 * edge)[..., None]
        colour = np.float32(_hsv(float(rng.random()), 0.6, 0.85))
        img = img * (1 - alpha) + img * colour * alpha  # multiply: pigment glazes darken, like paint does
    grain = fractal_noise(rng, n, 3, 64)[..., None]
    return np.clip(img * (0.92 + 0.08 * grain), 0, 1)


THERMAL_STOPS = np.float32([[0, 0, 0.1], [0.35, 0, 0.6], [0.8, 0, 0.4], [1, 0.35, 0], [1, 0.8, 0], [1, 1, 0.9]])


def thermal(rng: np.random.Generator, n: int) -> Image:
    """A thermal-camera palette ramp (black, violet, red, orange, yellow, white) over warm blobs."""
    heat = fractal_noise(rng, n, 4, 3)
    for _ in range(5):  # hot bodies
        c = tuple(int(v) for v in rng.integers(n // 8, n - n // 8, 2))
        blob = np.zeros((n, n), np.float32)
        cv2.ellipse(blob, c, (int(rng.integers(20, 60)), int(rng.integers(30, 90))), float(rng.integers(180)),
                    0, 360, 1.0, -1)
        heat = np.maximum(heat * 0.85, cv2.GaussianBlur(blob, (0, 0), 12))
    heat = np.clip(heat, 0, 1) * (len(THERMAL_STOPS) - 1)
    i = np.minimum(heat.astype(int), len(THERMAL_STOPS) - 2)
    f = (heat - i)[..., None]
    return THERMAL_STOPS[i] * (1 - f) + THERMAL_STOPS[i + 1] * f


def sepia_engraving(rng: np.random.Generator, n: int) -> Image:
    """Fine wavy engraved lines on cream paper, thicker where darker, in brown ink."""
    tone = fractal_noise(rng, n, 4, 3)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    u = (y + 10 * np.sin(x / 23.0) + 14 * fractal_noise(rng, n, 3, 3)) / 4.0
    line = np.abs(u - np.round(u)) * 2  # 0 on a line, 1 between lines
    ink = np.clip((tone * 0.9 - line) * 6 + 0.5, 0, 1)
    paper = _paper(rng, n, (0.93, 0.86, 0.7), 0.06)
    brown = np.float32([0.28, 0.16, 0.06])
    return paper * (1 - ink[..., None]) + brown * ink[..., None]


def pointillism(rng: np.random.Generator, n: int) -> Image:
    """Dense small dots of pure bright hues over a light ground, hue drifting across the picture."""
    img = np.zeros((n, n, 3), np.float32) + np.float32([0.95, 0.93, 0.86])
    field = fractal_noise(rng, n, 3, 2)
    for _ in range(n * n // 18):
        x, y = (int(v) for v in rng.integers(0, n, 2))
        hue = (field[y, x] * 0.7 + rng.normal(0, 0.08)) % 1.0
        cv2.circle(img, (x, y), int(rng.integers(2, 4)), _hsv(hue, 0.85, 0.95), -1, cv2.LINE_AA)
    return img


def stained_glass(rng: np.random.Generator, n: int) -> Image:
    """A Voronoi mosaic of jewel colours with dark lead lines between the cells."""
    seeds = rng.random((70, 2)).astype(np.float32) * n
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    dist = (x[..., None] - seeds[:, 0]) ** 2 + (y[..., None] - seeds[:, 1]) ** 2
    order = np.argsort(dist, -1)
    nearest, second = order[..., 0], order[..., 1]
    d1 = np.sqrt(np.take_along_axis(dist, nearest[..., None], -1)[..., 0])
    d2 = np.sqrt(np.take_along_axis(dist, second[..., None], -1)[..., 0])
    colours = np.float32([_hsv(float(h), 0.9, float(v)) for h, v in
                          zip(rng.choice([0.0, 0.08, 0.15, 0.33, 0.55, 0.62, 0.75], 70), rng.uniform(0.6, 1.0, 70))])
    img = colours[nearest] * (1.1 - 0.35 * (d1 / (d1 + d2 + 1e-6)))[..., None]  # cells brighten at their centre
    lead = np.clip((d2 - d1 - 4.0) / 1.5, 0, 1)[..., None]
    return np.clip(img * lead + 0.04 * (1 - lead), 0, 1)


GENERATORS: dict[str, Callable[[np.random.Generator, int], Image]] = {
    "neon-edges": neon_edges, "ink-hatching": ink_hatching, "pop-art": pop_art, "watercolour": watercolour,
    "thermal": thermal, "sepia-engraving": sepia_engraving, "pointillism": pointillism,
    "stained-glass": stained_glass,
}


def read_image(path: Path, what: str) -> Image:
    """A user's image as float RGB; LiveError naming the file if it does not decode."""
    data = np.fromfile(path, np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise LiveError(f"{what} {path} could not be read as an image", "give a readable .png or .jpg file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def fit_short_side(img: Image, short_side: int) -> Image:
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    size = (max(short_side, round(w * scale)), max(short_side, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def style_images(names: tuple[str, ...], seed: int, user: dict[str, Path] | None = None) -> list[Image]:
    """One style image per name: the user's file where given (short side scaled to STYLE_SIZE), else ours."""
    user = user or {}
    out = []
    for i, name in enumerate(names):
        if name in user:
            out.append(fit_short_side(read_image(user[name], f"style image for {name!r}"), STYLE_SIZE))
        else:
            out.append(GENERATORS[name](np.random.default_rng([seed, i]), STYLE_SIZE).astype(np.float32))
    return out


def _sky_landscape(rng: np.random.Generator, n: int) -> Image:
    y = np.linspace(0, 1, n, dtype=np.float32)[:, None, None]
    sky = np.float32(_hsv(rng.uniform(0.52, 0.66), rng.uniform(0.3, 0.7), 0.95)) * (1 - 0.4 * y)
    img = np.broadcast_to(sky, (n, n, 3)).copy()
    clouds = fractal_noise(rng, n, 5, 3)[..., None]
    img = img * (1 - 0.5 * clouds * (clouds > 0.5)) + 0.5 * clouds * (clouds > 0.5)
    for layer in range(3):  # ridges, far to near: darker and lower
        ridge = fractal_noise(rng, n, 4, 2)[n // 2]
        top = ((0.3 + 0.15 * layer) + 0.25 * (ridge - 0.5)) * n
        mask = (np.arange(n)[:, None] > top[None, :]).astype(np.float32)[..., None]
        colour = np.float32(_hsv(rng.uniform(0.2, 0.4), 0.5, 0.7 - 0.2 * layer))
        tex = fractal_noise(rng, n, 5, 8)[..., None]
        img = img * (1 - mask) + mask * colour * (0.7 + 0.6 * tex)
    return img


def _room(rng: np.random.Generator, n: int) -> Image:
    """A perspective room: back wall, side walls, a tiled floor, a window and a door."""
    img = np.zeros((n, n, 3), np.float32)
    vx, vy = rng.integers(n // 3, 2 * n // 3, 2)
    b = rng.integers(n // 5, n // 3)
    back = np.array([[vx - b, vy - b], [vx + b, vy - b], [vx + b, vy + b], [vx - b, vy + b]], np.int32)
    corners = np.array([[0, 0], [n, 0], [n, n], [0, n]], np.int32)
    walls = [(0, 1), (1, 2), (2, 3), (3, 0)]
    for k, (i, j) in enumerate(walls):
        poly = np.array([corners[i], corners[j], back[j], back[i]], np.int32)
        cv2.fillPoly(img, [poly], _hsv(rng.random(), rng.uniform(0.1, 0.5), 0.4 + 0.15 * k))
    cv2.fillPoly(img, [back], _hsv(rng.random(), 0.3, 0.8))
    for t in np.linspace(0, 1, 9):  # floor tiles: lines to the vanishing point and across
        cv2.line(img, (int(t * n), n), (int(back[3][0] + t * 2 * b), int(back[3][1])), (0.2, 0.2, 0.2), 1, cv2.LINE_AA)
    for t in np.linspace(0, 1, 7) ** 2:
        yy = int(back[3][1] + t * (n - back[3][1]))
        cv2.line(img, (0, yy), (n, yy), (0.2, 0.2, 0.2), 1, cv2.LINE_AA)
    wx, wy = int(vx - b // 2), int(vy - b // 2)
    cv2.rectangle(img, (wx, wy), (wx + b // 2, wy + b // 2), (0.75, 0.9, 1.0), -1)
    cv2.rectangle(img, (int(vx + b // 4), int(vy)), (int(vx + b * 3 // 4), int(vy + b)), (0.35, 0.2, 0.1), -1)
    return img


def _face(rng: np.random.Generator, n: int) -> Image:
    """A face-like figure: skin ellipse, hair, eyes, nose shadow, mouth, shoulders, against a plain wall."""
    img = np.zeros((n, n, 3), np.float32) + np.float32(_hsv(rng.random(), 0.25, rng.uniform(0.4, 0.9)))
    cx, cy = int(n / 2 + rng.integers(-n // 8, n // 8)), int(n * 0.45)
    rx, ry = int(n * rng.uniform(0.18, 0.24)), int(n * rng.uniform(0.25, 0.31))
    skin = _hsv(rng.uniform(0.03, 0.09), rng.uniform(0.3, 0.6), rng.uniform(0.45, 0.95))
    cv2.ellipse(img, (cx, n), (int(rx * 2.2), int(ry * 1.2)), 0, 180, 360, _hsv(rng.random(), 0.6, 0.5), -1)
    cv2.ellipse(img, (cx, cy - ry // 4), (rx + 8, ry), 0, 180, 360, _hsv(0.07, 0.6, rng.uniform(0.1, 0.5)), -1)
    cv2.ellipse(img, (cx, cy), (rx, ry), 0, 0, 360, skin, -1, cv2.LINE_AA)
    for side in (-1, 1):
        ex = cx + side * rx // 2
        cv2.ellipse(img, (ex, cy - ry // 6), (rx // 5, rx // 9), 0, 0, 360, (0.95, 0.95, 0.95), -1, cv2.LINE_AA)
        cv2.circle(img, (ex, cy - ry // 6), rx // 11, (0.15, 0.1, 0.05), -1, cv2.LINE_AA)
    cv2.line(img, (cx, cy), (cx + 4, cy + ry // 4), tuple(0.7 * v for v in skin), 3, cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy + ry // 2), (rx // 3, ry // 10), 0, 0, 180, (0.6, 0.15, 0.2), 4, cv2.LINE_AA)
    shade = cv2.GaussianBlur(img, (0, 0), 2)
    light = np.linspace(1.1, 0.8, n, dtype=np.float32)[None, :, None]
    return np.clip(shade * light, 0, 1)


def _shapes_text(rng: np.random.Generator, n: int) -> Image:
    """A gradient wall with flat shapes and a word: hard edges, flat areas, lettering."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    a, b = np.float32(_hsv(rng.random(), 0.5, 0.8)), np.float32(_hsv(rng.random(), 0.5, 0.5))
    img = a * (1 - x[..., None]) + b * x[..., None] * (0.6 + 0.4 * y[..., None])
    for _ in range(int(rng.integers(3, 8))):
        colour = _hsv(rng.random(), rng.uniform(0.2, 1), rng.uniform(0.2, 1))
        c = tuple(int(v) for v in rng.integers(0, n, 2))
        if rng.random() < 0.5:
            cv2.circle(img, c, int(rng.integers(10, n // 4)), colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, c, tuple(int(v) for v in np.array(c) + rng.integers(10, n // 3, 2)), colour, -1)
    word = "".join(rng.choice(list("LIVESHOWABCXYZ"), int(rng.integers(3, 7))))
    mask = np.zeros((n, n), np.uint8)  # OpenCV draws text into uint8 images only
    cv2.putText(mask, word, (int(rng.integers(0, n // 3)), int(rng.integers(n // 3, n))), cv2.FONT_HERSHEY_DUPLEX,
                float(rng.uniform(0.8, 2.0)), 255, 2, cv2.LINE_AA)
    alpha = (mask.astype(np.float32) / 255)[..., None]
    return img * (1 - alpha) + alpha * np.float32(_hsv(rng.random(), 0.2, float(rng.choice([0.05, 0.95]))))


SCENES = (_sky_landscape, _room, _face, _shapes_text)


def content_scene(seed: int, index: int, n: int = SCENE_SIZE) -> Image:
    """One procedural scene, kinds in rotation, with a little sensor noise."""
    rng = np.random.default_rng([seed, 1000 + index])
    img = SCENES[index % len(SCENES)](rng, n)
    return np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1).astype(np.float32)


def content_pool(seed: int, count: int, folder: Path | None = None, size: int = SCENE_SIZE) -> torch.Tensor:
    """[P, 3, size, size] content images: our scenes, or the decodable photos in `folder` (LiveError if none)."""
    if folder is None:
        images = [content_scene(seed, i, size) for i in range(count)]
    else:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        images = []
        for path in files:
            try:
                img = fit_short_side(read_image(path, "content image"), size)
            except LiveError:
                continue  # a stray unreadable file among many photos is skipped, not fatal
            h, w = img.shape[:2]
            top, left = (h - size) // 2, (w - size) // 2
            images.append(img[top:top + size, left:left + size])
        if not images:
            raise LiveError(f"no readable images in content folder {folder}",
                            f"put photos ({', '.join(IMAGE_SUFFIXES)}) in it, or leave out --content")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def augment_batch(pool: torch.Tensor, batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random crops (scale 0.4-1 of the scene), flips and colour jitter, deterministic under `gen`."""
    out = []
    side = pool.shape[-1]
    for _ in range(batch):
        img = pool[int(torch.randint(len(pool), (1,), generator=gen))]
        crop = int(side * (0.4 + 0.6 * float(torch.rand(1, generator=gen))))
        top, left = (int(torch.randint(side - crop + 1, (1,), generator=gen)) for _ in range(2))
        img = img[:, top:top + crop, left:left + crop][None]
        img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        if float(torch.rand(1, generator=gen)) < 0.5:
            img = img.flip(-1)
        j = torch.rand(6, generator=gen)
        grey = img.mean(0, keepdim=True)
        img = grey + (img - grey) * (0.6 + 0.8 * j[0])  # saturation
        img = (img - 0.5) * (0.7 + 0.6 * j[1]) + 0.5 + 0.3 * (j[2] - 0.5)  # contrast, brightness
        img = img * (0.92 + 0.16 * j[3:6])[:, None, None]  # white balance
        out.append(img.clamp(0, 1))
    return torch.stack(out)
