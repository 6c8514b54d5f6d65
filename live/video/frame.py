"""The unit that travels from camera to projector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """A uint8 HWC BGR image and the perf_counter() time it was captured, carried unchanged through every stage
    so latency is measured at the output, not guessed."""

    image: np.ndarray
    captured: float
    index: int
    values_at: float = 0.0  # when the inference thread read the parameters it rendered with (OSC -> frame latency)
