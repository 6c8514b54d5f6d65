"""The procedural model as teacher: paired examples (frame, the same frame in a style) for the trained style nets.

Gram losses on random features move palette and tone but cannot make hatching, dot screens or lead lines (see
README, Models). So by default the nets learn from `styles-procedural`, built in memory from its source: each
example is a whole augmented frame at the player's reference height, styled by the teacher with one style or a
blend of two, then cropped. The student sees the crop, the blend weights and the crop's window of the screen, and
must reproduce the teacher's pixels: the look, the blend, and where the ink falls.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from live.models.build_styles import REF_HEIGHT, model_bytes
from live.train.style_data import augment_batch
from live.train.style_net import N_STYLES, Screen

FRAME = int(REF_HEIGHT)  # teacher frames are square, at the height the styles' ink periods are designed for
BLEND_SHARE = 0.25  # share of examples that blend two styles, so crossfades are learned, not extrapolated
WEIGHTS = {"l1": 1.0, "edges": 0.5, "range": 10.0}


class Teacher:
    """`styles-procedural` on ONNX Runtime's CPU provider."""

    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the student's training already uses every core
        self.session = ort.InferenceSession(model_bytes(), sess_options=options, providers=["CPUExecutionProvider"])

    def __call__(self, frames: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """frames: [B, 3, H, W] RGB in [0, 1], already on uint8 levels; weights [B, N] -> styled, same layout."""
        bgr = (frames.flip(1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        one = np.ones(1, np.float32)
        styled = [self.session.run(["frame_out"], {"frame": f, "style_weights": w, "strength": one})[0]
                  for f, w in zip(bgr, weights.numpy())]
        return torch.from_numpy(np.stack(styled)).permute(0, 3, 1, 2).flip(1).float() / 255


def style_weights(first: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[B, N]: one-hot on `first`, or (BLEND_SHARE of the time) a mix of it with another style."""
    w = torch.eye(N_STYLES)[first]
    for i in range(len(first)):
        if float(torch.rand(1, generator=gen)) < BLEND_SHARE:
            other = (int(first[i]) + 1 + int(torch.randint(N_STYLES - 1, (1,), generator=gen))) % N_STYLES
            t = 0.2 + 0.6 * float(torch.rand(1, generator=gen))
            w[i, first[i]], w[i, other] = 1 - t, t
    return w


def paired_batch(pool: torch.Tensor, first: torch.Tensor, size: int, gen: torch.Generator, teacher: Teacher,
                 screen: Screen) -> tuple[torch.Tensor, ...]:
    """(content crops, weights, screen windows, teacher crops); `pool` holds FRAME-sized scenes."""
    frames = (augment_batch(pool, len(first), FRAME, gen) * 255).round() / 255  # what a camera hands over
    weights = style_weights(first, gen)
    styled = teacher(frames, weights)
    crops, targets, windows = [], [], []
    for i in range(len(first)):
        top, left = (int(torch.randint(FRAME - size + 1, (1,), generator=gen)) for _ in range(2))
        crops.append(frames[i, :, top:top + size, left:left + size])
        targets.append(styled[i, :, top:top + size, left:left + size])
        windows.append(screen(weights[i:i + 1], top, left, size, size, FRAME)[0])
    return torch.stack(crops), weights, torch.stack(windows), torch.stack(targets)


def paired_loss(y: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weighted terms: pixels (L1), their gradients (L1: keeps lines and dots crisp), and staying in [0, 1]."""
    def grads(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return img[..., 1:, :] - img[..., :-1, :], img[..., :, 1:] - img[..., :, :-1]

    edges = sum((a - b).abs().mean() for a, b in zip(grads(y), grads(target)))
    terms = {"l1": (y - target).abs().mean(), "edges": edges,
             "range": (F.relu(y - 1).square() + F.relu(-y).square()).mean()}
    return {name: WEIGHTS[name] * value for name, value in terms.items()}
