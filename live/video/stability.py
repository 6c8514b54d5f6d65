"""Flicker removal: each stylized frame blended with the previous output, moved along the camera's motion.

Feed-forward style nets answer sensor noise with boiling brush strokes. Blending every output with the previous
output, warped by the optical flow between the camera frames, keeps the strokes that still fit and lets the scene
move: the blend is a running average that follows the picture. Where the warp is wrong (something appeared, an
occluded part came out, the flow failed), the warped previous camera frame disagrees with the current one, and
there the current stylized frame is shown alone (the occlusion mask); so it is where the output itself jumps
further than boiling does. The flow (OpenCV's DIS, ultrafast preset), the comparison and the mask run on a small
copy; the warp of the output and the blend run at the output's size. The CPU tier stabilizes the model's small
output, before the edge-aware upsampling (video/stylize.py): there this costs a sixteenth, and the edges still come
from the current camera frame.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Width of the small camera copy the flow and the occlusion test run on (the height keeps the aspect).
FLOW_WIDTH = 160
#: Grey-level differences (0-255) between the warped previous and the current camera frame: up to the first a pixel
#: counts as the same surface (webcam noise on the small copy and flow error on texture are a few levels), from
#: the second on as occluded (a moving edge is tens); the weight falls linearly between them.
OCCLUSION_LEVELS = (16.0, 48.0)
#: Jumps of the output itself (0-255, stylized now against the warped previous output): up to the first they are
#: boiling, smoothed; from the second on the old output is dropped (a new surface the camera test missed, of the
#: same colour). Ink styles boil by 100 levels and more: lower bounds cost them their smoothing.
RESTYLE_LEVELS = (96.0, 224.0)
#: The default /video/stability, measured on the moving clip (`live bench --flicker`): on the tier at 0.8 the warp
#: error of some styles falls by only 40 %, at 0.9 by 45-60 % for every style of both painterly models, with no
#: visible trail behind the moving subject. The style faders then follow with a lag of a few frames.
DEFAULT = 0.9


class Stabilizer:
    """Per-stream state (the previous output and the small camera frame); `__call__` once per frame."""

    def __init__(self, flow_width: int = FLOW_WIDTH,
                 occlusion_levels: tuple[float, float] = OCCLUSION_LEVELS,
                 restyle_levels: tuple[float, float] = RESTYLE_LEVELS) -> None:
        self.flow_width, self.occlusion_levels, self.restyle_levels = flow_width, occlusion_levels, restyle_levels
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._previous: tuple[np.ndarray, ...] | None = None  # small camera frame, its grey, the output
        self._grids: dict[tuple[int, int], np.ndarray] = {}

    def reset(self) -> None:
        """Forget the previous frame: the next output is the stylized frame alone."""
        self._previous = None

    def _small(self, camera: np.ndarray) -> np.ndarray:
        height, width = camera.shape[:2]
        size = (self.flow_width, max(8, round(height * self.flow_width / width)))
        return cv2.resize(camera, size, interpolation=cv2.INTER_AREA)

    def _grid(self, height: int, width: int) -> np.ndarray:
        """Every pixel's (x, y), float32 [H, W, 2], made once per size."""
        if (height, width) not in self._grids:
            xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
            self._grids[height, width] = cv2.merge([xs, ys])
        return self._grids[height, width]

    def __call__(self, camera: np.ndarray, styled: np.ndarray, amount: float) -> np.ndarray:
        """The output for this frame: `styled` (uint8 HxWx3, the model's output for `camera`, the same size)
        blended by up to `amount` (0..1) with the previous output warped onto it. 0 returns `styled` itself."""
        if amount <= 0.0:
            self.reset()
            return styled
        small = self._small(camera)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        previous, self._previous = self._previous, None
        if previous is None or previous[0].shape != small.shape or previous[2].shape != styled.shape:
            self._previous = small, grey, styled.copy()  # a model may reuse its output buffer (IOBinding)
            return styled
        before_small, before_grey, before = previous
        flow = self._flow.calc(grey, before_grey, None)  # for each pixel now: where it was in the previous frame
        small_h, small_w = grey.shape
        where = cv2.add(flow, self._grid(small_h, small_w))
        warped_small = cv2.remap(before_small, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        same, occluded = self.occlusion_levels
        # in colour: a grey match between surfaces of different colours is no match
        differ = largest_channel(cv2.absdiff(warped_small, small))
        agree = (occluded - differ) / (occluded - same)
        inside = cv2.inRange(where, (0.0, 0.0), (small_w - 1.0, small_h - 1.0))  # 255 where it was in view
        weight_small = np.clip(agree, 0.0, 1.0) * inside * np.float32(amount / 255.0)
        height, width = styled.shape[:2]
        full = (width, height)
        flow *= (width / small_w, height / small_h)  # in full-size pixels
        where = cv2.add(cv2.resize(flow, full, interpolation=cv2.INTER_LINEAR), self._grid(height, width))
        warped = cv2.remap(before, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight = cv2.resize(weight_small, full, interpolation=cv2.INTER_LINEAR)
        same, changed = self.restyle_levels
        jump = largest_channel(cv2.absdiff(warped, styled))
        weight *= np.clip((changed - jump) / (changed - same), 0.0, 1.0)
        out = cv2.blendLinear(warped, styled, weight, 1.0 - weight)
        self._previous = small, grey, out
        return out


def largest_channel(image: np.ndarray) -> np.ndarray:
    """The largest of the three channels at each pixel, float32 (numpy's max over a 3-long axis is 40x slower)."""
    b, g, r = cv2.split(image)
    return cv2.max(cv2.max(b, g), r).astype(np.float32)
