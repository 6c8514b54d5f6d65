"""A moving clip with known motion, and the warp error that measures flicker on it.

Flicker is what changes between frames that the scene did not: output t against output t-1 moved along the true
motion. To know the true motion, the clip is made, not filmed: a real photo under a slow handheld pan and zoom,
a patch of it moving over it as a subject, then webcam-like noise (Gaussian per pixel plus a small gain flicker
per frame), which is what makes feed-forward styles boil. Everything follows from `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NOISE_LEVELS = 3.0  # Gaussian sensor noise, standard deviation in 0-255 levels
GAIN_FLICKER = 0.01  # per-frame exposure gain, standard deviation (1 % is a webcam's auto-exposure hunting)
EDGE_BAND = 2  # pixels each side of the subject's outline left out of the masks (blended, neither layer)


@dataclass
class Clip:
    """Frames (uint8 BGR) and, for t >= 1, the true backward flow and where it holds."""

    frames: list[np.ndarray]
    flows: list[np.ndarray | None]  # flows[t][y, x] = (dx, dy): pixel (x, y) of frame t was at (x+dx, y+dy) in t-1
    masks: list[np.ndarray | None]  # bool [H, W]: visible in both frames and inside frame t-1 (not occluded)


def _camera(photo_size: tuple[int, int], size: tuple[int, int], frames: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    """Per frame, the 2x3 affine map from frame pixels to photo pixels: a slow zoom in, a pan, a small sub-pixel
    hand tremor; the view stays inside the photo."""
    photo_w, photo_h = photo_size
    width, height = size
    fit = min(photo_w / width, photo_h / height) * 0.8  # photo pixels per frame pixel, with room to move
    centre = np.array([photo_w / 2, photo_h / 2]) + rng.uniform(-0.03, 0.03, 2) * (photo_w, photo_h)
    pan = rng.uniform(-1.0, 1.0, 2) * fit * 0.8  # photo pixels per frame: under a frame pixel
    tremor_hz = rng.uniform(0.05, 0.12, 2)  # cycles per frame
    maps = []
    for t in range(frames):
        zoom = fit / (1.0 + 0.003 * t)  # 0.3 % per frame
        shake = 0.4 * fit * np.sin(2 * np.pi * tremor_hz * t + (0.0, 1.3))
        middle = centre + pan * t + shake
        maps.append(np.array([[zoom, 0.0, middle[0] - zoom * width / 2],
                              [0.0, zoom, middle[1] - zoom * height / 2]]))
    return maps


def _subject(photo: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The moving subject: a quarter-size patch from near the photo's centre, and its soft-edged oval mask."""
    width, height = size
    sub_w, sub_h = width // 4, height // 3
    photo_h, photo_w = photo.shape[:2]
    crop_w, crop_h = photo_w // 3, photo_h // 3
    x0, y0 = photo_w // 2 - crop_w // 2, photo_h // 4
    patch = cv2.resize(photo[y0:y0 + crop_h, x0:x0 + crop_w], (sub_w, sub_h), interpolation=cv2.INTER_AREA)
    alpha = np.zeros((sub_h, sub_w), np.float32)
    cv2.ellipse(alpha, (sub_w // 2, sub_h // 2), (sub_w // 2 - 2, sub_h // 2 - 2), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    return patch, alpha


def moving_clip(photo: np.ndarray, frames: int = 24, size: tuple[int, int] = (640, 480), seed: int = 0) -> Clip:
    """`frames` frames of `size` (w, h) from `photo` (uint8 BGR, any size): camera motion, a moving subject and
    sensor noise, with the true flow and occlusion masks."""
    rng = np.random.default_rng(seed)
    width, height = size
    # the photo at the clip's scale first (area-averaged), so the per-frame warps resample it about 1:1 and
    # add no aliasing of their own
    shrink = 1.25 * max(width / photo.shape[1], height / photo.shape[0])  # then 0.8 of it fills the frame
    photo = cv2.resize(photo, (round(photo.shape[1] * shrink), round(photo.shape[0] * shrink)),
                       interpolation=cv2.INTER_AREA if shrink < 1 else cv2.INTER_CUBIC)
    cameras = _camera((photo.shape[1], photo.shape[0]), size, frames, rng)
    patch, alpha = _subject(photo, size)
    start = np.array([width * rng.uniform(0.15, 0.3), height * rng.uniform(0.25, 0.45)])
    velocity = np.array([width, height * 0.5]) * rng.uniform(0.002, 0.004)  # about 2 px per frame at 640 wide
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    out_frames, flows, masks = [], [None], [None]
    previous_alpha = None
    for t in range(frames):
        background = cv2.warpAffine(photo, cameras[t], size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        where = start + velocity * t + (0.0, 6.0 * np.sin(0.25 * t))  # top-left corner, sub-pixel
        place = np.array([[1.0, 0.0, where[0]], [0.0, 1.0, where[1]]])
        subject = cv2.warpAffine(patch, place, size, flags=cv2.INTER_LINEAR).astype(np.float32)
        cover = cv2.warpAffine(alpha, place, size, flags=cv2.INTER_LINEAR)
        frame = background + cover[..., None] * (subject - background)
        gain = 1.0 + GAIN_FLICKER * rng.standard_normal()
        frame = frame * gain + rng.normal(0.0, NOISE_LEVELS, frame.shape)
        out_frames.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
        if t >= 1:
            # background: frame t -> photo -> frame t-1; subject: back along its own step
            a, b = cameras[t], np.linalg.inv(np.vstack([cameras[t - 1], (0, 0, 1)]))[:2]
            photo_x, photo_y = a[0, 0] * xs + a[0, 2], a[1, 1] * ys + a[1, 2]
            back_x, back_y = b[0, 0] * photo_x + b[0, 2], b[1, 1] * photo_y + b[1, 2]
            step = where - previous_where
            on_subject = cover > 0.999
            flow_x = np.where(on_subject, -step[0], back_x - xs)
            flow_y = np.where(on_subject, -step[1], back_y - ys)
            then_x, then_y = (xs + flow_x).astype(np.float32), (ys + flow_y).astype(np.float32)
            was_cover = cv2.remap(previous_alpha, then_x, then_y, cv2.INTER_LINEAR, borderValue=0.0)
            band = cv2.dilate((cover > 0.001).astype(np.uint8) - (cover > 0.999).astype(np.uint8),
                              np.ones((2 * EDGE_BAND + 1,) * 2, np.uint8)).astype(bool)
            inside = (then_x >= 0) & (then_x <= width - 1) & (then_y >= 0) & (then_y <= height - 1)
            same_layer = np.where(on_subject, was_cover > 0.999, was_cover < 0.001)
            flows.append(np.dstack([flow_x, flow_y]).astype(np.float32))
            masks.append(inside & same_layer & ~band)
        previous_alpha, previous_where = cover, where
    return Clip(out_frames, flows, masks)


def warp_error(outputs: list[np.ndarray], clip: Clip) -> float:
    """Mean absolute difference (0-255) between output t and output t-1 moved along the clip's true flow, over
    the pixels its masks keep, averaged over t >= 1: 0 for outputs that move exactly with the scene."""
    height, width = outputs[0].shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    errors = []
    for t in range(1, len(outputs)):
        flow, mask = clip.flows[t], clip.masks[t]
        warped = cv2.remap(outputs[t - 1].astype(np.float32), xs + flow[..., 0], ys + flow[..., 1],
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        errors.append(float(np.abs(outputs[t].astype(np.float32) - warped)[mask].mean()))
    return float(np.mean(errors))
