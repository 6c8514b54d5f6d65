"""The latent model's own image corpus: abstract compositions drawn from a seed, so the data is ours, reproducible
and free of licences.

Every image is a handful of parameters (palette, background, one or two motifs) rendered with OpenCV, so images
that are near in parameters are near in pixels: a VAE trained on them gets a latent space with meaningful, smooth
directions (hue, brightness, where the horizon is, how many rings) rather than memorised photographs. Detail is
kept coarse (few octaves of cloud noise, a few rings or stripes across the image, a few shapes): a 16-d latent
cannot hold fine texture, and what it cannot hold only adds noise to a short CPU training run.

Image i of seed s depends only on (s, i): corpora of different sizes share their first images.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

RECIPE = ("per image: a 3-colour palette (analogous, complementary or triad hues) over a linear or radial "
          "gradient, then 1-2 motifs from: planet over fractal mountain ridges, soft value-noise clouds, "
          "concentric rings, sine stripes, 1-3 soft filled shapes (circles, rectangles, triangles); rendered with "
          "OpenCV, seeded by (seed, index)")


def palette(rng: np.random.Generator) -> np.ndarray:
    """Three related BGR colours in 0..1: a base hue plus its neighbours, complement or triad."""
    hue = rng.uniform(0, 180)
    spread = rng.choice([15.0, 90.0, 60.0])
    hues = np.array([hue, hue + spread, hue - spread]) % 180
    sat = rng.uniform(80, 255, 3)
    val = np.sort(rng.uniform(40, 255, 3))[::-1]
    hsv = np.stack([hues, sat, val], axis=1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0].astype(np.float32) / 255


def gradient(rng: np.random.Generator, size: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A linear (any angle) or radial blend from colour a to colour b."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) - 0.5
    if rng.random() < 0.6:
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip(x * np.cos(angle) + y * np.sin(angle) + 0.5, 0, 1)
    else:
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        t = np.clip(np.hypot(x - cx, y - cy) * rng.uniform(1.2, 2.2), 0, 1)
    return a + t[..., None] * (b - a)


def value_noise(rng: np.random.Generator, size: int, octaves: int = 5, roughness: float = 0.55) -> np.ndarray:
    """Fractal noise in 0..1: random grids of doubling resolution, bicubically enlarged and summed."""
    total = np.zeros((size, size), np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        grid = rng.random((cells, cells)).astype(np.float32)
        total += amplitude * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        norm += amplitude
        amplitude *= roughness
    total /= norm
    return (total - total.min()) / max(float(np.ptp(total)), 1e-6)


def ridge(rng: np.random.Generator, size: int, base: float, height: float) -> np.ndarray:
    """A fractal mountain skyline: one row of 1-D noise, as pixel heights from the top."""
    line = np.zeros(size, np.float32)
    amplitude = 1.0
    for octave in range(5):
        points = rng.uniform(-1, 1, 2 ** (octave + 1) + 1).astype(np.float32)
        line += amplitude * np.interp(np.linspace(0, len(points) - 1, size), np.arange(len(points)), points)
        amplitude *= 0.5
    return (base - height * line) * size


def landscape(rng: np.random.Generator, image: np.ndarray, colours: np.ndarray) -> None:
    """A planet or sun in the sky and two or three layers of mountains, nearer ones darker."""
    size = image.shape[0]
    mask = np.zeros((size, size), np.float32)
    centre = (int(rng.uniform(0.2, 0.8) * size), int(rng.uniform(0.15, 0.5) * size))
    radius = int(rng.uniform(0.08, 0.3) * size)
    cv2.circle(mask, centre, radius, 1.0, -1, cv2.LINE_AA)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    light = np.clip(1.1 - np.hypot(x - centre[0] + radius / 2, y - centre[1] + radius / 2) / (2 * radius), 0.3, 1)
    disc = colours[0] * light[..., None]
    image[:] = image * (1 - mask[..., None]) + disc * mask[..., None]
    horizon = rng.uniform(0.45, 0.75)
    layers = int(rng.integers(2, 4))
    for layer in range(layers):
        top = ridge(rng, size, horizon + 0.1 * layer, rng.uniform(0.05, 0.2))
        below = (y >= top[None, :]).astype(np.float32)
        shade = colours[2] * (1.0 - 0.25 * layer) + colours[1] * 0.15 * (layers - layer)
        image[:] = image * (1 - below[..., None]) + np.clip(shade, 0, 1) * below[..., None]


def clouds(rng: np.random.Generator, image: np.ndarray, colours: np.ndarray) -> None:
    """Value-noise clouds between two palette colours, blended over the background."""
    size = image.shape[0]
    n = value_noise(rng, size, octaves=3, roughness=rng.uniform(0.3, 0.5))[..., None]
    cover = np.clip((n - rng.uniform(0.2, 0.6)) * 3, 0, 1)
    tint = colours[1] + n * (colours[0] - colours[1])
    image[:] = image * (1 - cover) + tint * cover


def rings(rng: np.random.Generator, image: np.ndarray, colours: np.ndarray) -> None:
    """Concentric rings around a point, alternating two colours, fading outwards."""
    size = image.shape[0]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = rng.uniform(0.2, 0.8, 2)
    r = np.hypot(x - cx, y - cy)
    wave = 0.5 + 0.5 * np.cos(2 * np.pi * r * rng.uniform(2, 5) + rng.uniform(0, 2 * np.pi))
    alpha = np.clip(1.2 - r * rng.uniform(1.2, 2.5), 0, 1) * rng.uniform(0.6, 1)
    tint = colours[0] + wave[..., None] * (colours[2] - colours[0])
    image[:] = image * (1 - alpha[..., None]) + tint * alpha[..., None]


def stripes(rng: np.random.Generator, image: np.ndarray, colours: np.ndarray) -> None:
    """Soft sine stripes at any angle, optionally bent by a slow wave."""
    size = image.shape[0]
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    u = u + rng.uniform(0, 0.15) * np.sin(2 * np.pi * v * rng.uniform(0.5, 2))
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * u * rng.uniform(1.5, 4))
    alpha = (wave ** rng.uniform(0.5, 3))[..., None] * rng.uniform(0.5, 1)
    image[:] = image * (1 - alpha) + colours[1] * alpha


def shapes(rng: np.random.Generator, image: np.ndarray, colours: np.ndarray) -> None:
    """One to three flat circles, rectangles and triangles, slightly softened, in palette colours."""
    size = image.shape[0]
    layer = image.copy()
    for _ in range(int(rng.integers(1, 4))):
        colour = tuple(float(c) for c in colours[int(rng.integers(0, 3))])
        cx, cy = (rng.uniform(0.1, 0.9, 2) * size).astype(int)
        extent = int(rng.uniform(0.08, 0.3) * size)
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(layer, (int(cx), int(cy)), extent, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            w, h = (rng.uniform(0.5, 1.5, 2) * extent).astype(int)
            cv2.rectangle(layer, (int(cx - w), int(cy - h)), (int(cx + w), int(cy + h)), colour, -1, cv2.LINE_AA)
        else:
            angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
            points = np.stack([cx + extent * np.cos(angles), cy + extent * np.sin(angles)], 1).astype(np.int32)
            cv2.fillPoly(layer, [points], colour, cv2.LINE_AA)
    image[:] = cv2.GaussianBlur(layer, (0, 0), size / 64)


Motif = Callable[[np.random.Generator, np.ndarray, np.ndarray], None]
MOTIFS: tuple[Motif, ...] = (landscape, clouds, rings, stripes, shapes)


def render(seed: int, index: int, size: int) -> np.ndarray:
    """One corpus image: uint8 BGR HWC, a pure function of (seed, index, size)."""
    rng = np.random.default_rng([seed, index])
    colours = palette(rng)
    image = gradient(rng, size, colours[int(rng.integers(0, 3))], colours[int(rng.integers(0, 3))] * 0.6)
    first = int(rng.integers(0, len(MOTIFS)))
    MOTIFS[first](rng, image, palette(rng) if rng.random() < 0.3 else colours)
    if rng.random() < 0.25:
        second = (first + int(rng.integers(1, len(MOTIFS)))) % len(MOTIFS)
        MOTIFS[second](rng, image, colours[::-1])
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def corpus(seed: int, count: int, size: int) -> np.ndarray:
    """`count` images [N, size, size, 3] uint8 BGR."""
    return np.stack([render(seed, i, size) for i in range(count)])
