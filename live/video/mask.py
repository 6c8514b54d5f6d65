"""The mask stage: the style on the person only, or on the background only.

`[[stages]] kind = "mask"`, placed after the style, composites the picture it is given (styled) with the camera
frame that picture was made from, by the newest person mask: /mask/mode "person" keeps the style where the person
is and the camera picture elsewhere, "background" the other way round, "none" passes the styled picture through.
/mask/feather softens the mask's edge.

The segmentation runs on the video analysis's thread (live/video/analysis.py, `[watch] mask_model`), never here:
this stage takes the newest mask there is (made from this frame, or one a frame or two older while the model is
busy), scales it to the frame and blends, three OpenCV calls. Until a mask exists, or when its model is missing,
the stage passes the styled picture through: the show plays on with the style everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from live.params import Event, Param
from live.parts import BasePart, KindSection

if TYPE_CHECKING:
    from live.show import Show
    from live.video.analysis import VideoAnalysis

MODES = ("none", "person", "background")
#: /mask/feather's top: the edge's blur, as a share of the frame's height (0.1 of 480 lines: sigma 48 pixels).
MAX_FEATHER = 0.1


class MaskSection(KindSection):
    """`[[stages]] kind = "mask"`: needs `[watch] enabled = true` and `mask_model` (the mask is made there)."""


class MaskStage(BasePart):
    """Composites styled and camera pictures by the newest person mask; `watch` is given by the analysis part."""

    def __init__(self) -> None:
        self.watch: VideoAnalysis | None = None
        self.lag = 0  # frames between the one shown and the one its mask was made from, last frame
        self.masked = 0  # frames composited (not passed through)

    @classmethod
    def from_show(cls, section: MaskSection, show: Show) -> MaskStage:
        return cls()

    def params(self) -> tuple[list[Param], list[Event]]:
        return [Param("/mask/mode", "enum", "person", 0, len(MODES) - 1, choices=MODES,
                      doc="where the style shows: person (on the person only), background (around them), none "
                          "(everywhere)"),
                Param("/mask/feather", "float", 0.02, 0.0, MAX_FEATHER, unit="of height",
                      doc="softness of the mask's edge, as a share of the picture's height")], []

    def stats(self) -> dict[str, Any]:
        return {"masked": self.masked, "lag": self.lag}

    def process(self, image: np.ndarray, values: Mapping, t: float) -> np.ndarray:
        mode = values.get("/mask/mode", "none")
        watch = self.watch
        found, camera = (watch.mask, watch.camera) if watch else (None, None)
        if mode == "none" or found is None or camera is None:
            return image
        mask, index = found
        height, width = image.shape[:2]
        unstyled = camera.image
        if unstyled.shape != image.shape:
            unstyled = cv2.resize(unstyled, (width, height), interpolation=cv2.INTER_AREA)
        weight = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
        sigma = float(values.get("/mask/feather", 0.0)) * height
        if sigma >= 0.5:
            weight = cv2.GaussianBlur(weight, (0, 0), sigma)
        if mode == "background":
            weight = 1.0 - weight
        self.lag, self.masked = camera.index - index, self.masked + 1
        return cv2.blendLinear(image, unstyled, weight, 1.0 - weight)
