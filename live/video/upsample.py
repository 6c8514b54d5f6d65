"""Edge-aware upsampling for the CPU tier: a style model's low-resolution output brought to full resolution along
the camera image's own edges.

The tier runs the style model on a small copy of the frame (a quarter of each side costs a sixteenth). Scaling its
output back up bilinearly blurs every edge. Instead, in the manner of the guided filter (He et al., "Guided Image
Filtering", 2010/2013) and its use for upsampling in HDRNet (Gharbi et al., 2017), we fit, around every
low-resolution pixel, the local affine colour map that turns the small camera image into the small stylized image
(a 3x3 matrix and an offset per pixel, from box-filter statistics with a small ridge), scale the coefficients up
bilinearly (they vary slowly), and apply them to the full-resolution camera image: its edges, the painting's
colours. Everything is cv2 box filters, resizes and per-plane multiply-adds; the 3x3 solves are closed-form.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Window radius, in low-resolution pixels, of the local colour fits. Measured against the full-size teacher
#: (painterly-arbitrary, 6 styles, 640x480, scale 0.25 and 0.3): radius 2 is 9 % closer than bilinear, radius 1 6 %.
RADIUS = 2
#: Ridge on the guide's covariance, in (0-255 units)^2: where the camera varies less than about 8 levels the fit
#: falls back to the window's mean stylized colour instead of amplifying sensor noise (4 to 256 differ by < 1 %).
EPS = 64.0

_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # the covariance's distinct entries


def fit_affine(guide: np.ndarray, target: np.ndarray, radius: int = RADIUS, eps: float = EPS) -> np.ndarray:
    """Per-pixel affine maps from `guide` to `target` (both uint8 or float HxWx3, 0-255 units, the same size),
    fitted over (2 radius + 1)^2 windows and averaged over the windows covering each pixel: float32 [H, W, 12],
    channel 3 i + c holds A[i, c] (input channel i into output channel c), channel 9 + c the offset b[c]."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(image: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(image, -1, size, borderType=cv2.BORDER_REFLECT)

    g = guide.astype(np.float32)
    p = target.astype(np.float32)
    mean_g, mean_p = box(g), box(p)
    gg = box(cv2.merge([g[..., i] * g[..., j] for i, j in _PAIRS]))
    gp = box(cv2.merge([g[..., i] * p[..., c] for i in range(3) for c in range(3)]))
    # the solve in float64: grey or flat windows are nearly singular, and float32 cofactors cancel there
    mean_g, mean_p, gg, gp = (x.astype(np.float64) for x in (mean_g, mean_p, gg, gp))
    cov = {}
    for n, (i, j) in enumerate(_PAIRS):
        cov[i, j] = cov[j, i] = gg[..., n] - mean_g[..., i] * mean_g[..., j] + (eps if i == j else 0.0)
    # the inverse of the symmetric 3x3 covariance by cofactors (np.linalg.solve is 10x slower on many tiny systems)
    co = {(i, j): cov[(i + 1) % 3, (j + 1) % 3] * cov[(i + 2) % 3, (j + 2) % 3]
          - cov[(i + 1) % 3, (j + 2) % 3] * cov[(i + 2) % 3, (j + 1) % 3] for i in range(3) for j in range(3)}
    inv_det = 1.0 / (cov[0, 0] * co[0, 0] + cov[0, 1] * co[0, 1] + cov[0, 2] * co[0, 2])
    coefs = np.empty((*guide.shape[:2], 12), np.float32)
    for c in range(3):
        cross = [gp[..., 3 * i + c] - mean_g[..., i] * mean_p[..., c] for i in range(3)]
        offset = mean_p[..., c].copy()
        for i in range(3):
            a = (co[i, 0] * cross[0] + co[i, 1] * cross[1] + co[i, 2] * cross[2]) * inv_det
            coefs[..., 3 * i + c] = a
            offset -= a * mean_g[..., i]
        coefs[..., 9 + c] = offset
    return box(coefs)


def apply_affine(coefs: np.ndarray, image: np.ndarray) -> np.ndarray:
    """`image` (uint8 HxWx3) through the per-pixel affine maps `coefs` ([h, w, 12], any h, w: scaled up
    bilinearly to the image's size): uint8 HxWx3."""
    height, width = image.shape[:2]
    small = cv2.split(coefs)  # one plane at a time: the full-size work stays in cv2, plane by plane
    channels = [plane.astype(np.float32) for plane in cv2.split(image)]
    out = []
    for c in range(3):
        plane = cv2.resize(small[9 + c], (width, height), interpolation=cv2.INTER_LINEAR)
        for i in range(3):
            cv2.accumulateProduct(channels[i], cv2.resize(small[3 * i + c], (width, height),
                                                          interpolation=cv2.INTER_LINEAR), plane)
        out.append(cv2.convertScaleAbs(cv2.max(plane, 0.0)))  # rounds and saturates at 255; negatives are 0
    return cv2.merge(out)


def guided_upsample(small: np.ndarray, styled: np.ndarray, full: np.ndarray, radius: int = RADIUS,
                    eps: float = EPS) -> np.ndarray:
    """The stylized image at `full`'s size: `styled` (the model's output for `small`, a downscaled copy of `full`;
    uint8 HxWx3) carried to `full` (uint8) by the local colour maps from `small` to `styled`."""
    return apply_affine(fit_affine(small, styled, radius, eps), full)


def downscale(image: np.ndarray, scale: float, multiple: int = 4) -> np.ndarray:
    """`image` at `scale` of each side (area-averaged, so no aliasing), each side a multiple of `multiple` (strided
    style nets want even sizes)."""
    height, width = image.shape[:2]
    size = (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
