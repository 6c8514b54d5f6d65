"""Multi-style networks with conditional instance normalisation, and the uint8-in/uint8-out wrapper that ships.

One network holds N styles: every instance-norm layer has a (gamma, beta) row per style, and a weight vector
blends the rows, so a crossfade between two styles morphs the look instead of cutting (Dumoulin et al., 2017).

Two tiers share that interface:
  * `gpu`: a TransformerNet-shaped net (32/64/128 channels, 5 residual blocks) at full resolution.
  * `cpu`: the CIN net runs at 1/4 resolution and predicts a grid of per-pixel affine transforms of the guide
    [r, g, b, detail, 1]; the grid is upsampled bilinearly and applied to the FULL-resolution frame, so edges
    stay as sharp as the camera's (HDRNet-style) while the costly convolutions see 1/16 of the pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_STYLES = 8
LUMA_RGB = (0.299, 0.587, 0.114)
CPU_SCALE = 4  # the cpu tier's internal resolution is 1/CPU_SCALE per side
GUIDE = 5  # r, g, b, detail, 1


class CondInstanceNorm(nn.Module):
    """Instance norm whose affine parameters are a weighted mix of per-style rows.

    Statistics always come from the input itself (no running stats), so train and eval behave alike."""

    def __init__(self, channels: int, styles: int = N_STYLES) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(styles, channels))
        self.beta = nn.Parameter(torch.zeros(styles, channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = (x - mean).square().mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * torch.rsqrt(var + 1e-5)
        return x * (w @ self.gamma)[:, :, None, None] + (w @ self.beta)[:, :, None, None]


class ConvCIN(nn.Module):
    """Reflection-padded conv, CIN, optional ReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True, groups: int = 1) -> None:
        super().__init__()
        self.pad = k // 2
        self.conv = nn.Conv2d(cin, cout, k, stride, groups=groups)
        self.norm = CondInstanceNorm(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        x = self.norm(self.conv(x), w)
        return F.relu(x) if self.relu else x


class SepConvCIN(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 with CIN: ~1/9 of a full 3x3 conv's cost, which the cpu tier needs."""

    def __init__(self, cin: int, cout: int, relu: bool = True) -> None:
        super().__init__()
        self.depth = nn.Conv2d(cin, cin, 3, groups=cin)
        self.point = nn.Conv2d(cin, cout, 1)
        self.norm = CondInstanceNorm(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.point(self.depth(F.pad(x, (1, 1, 1, 1), mode="reflect"))), w)
        return F.relu(x) if self.relu else x


class Residual(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x, w), w)


def _up_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest upsampling to `like`'s size: exact for any input size, unlike a fixed x2."""
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class TransformerNet(nn.Module):
    """The gpu tier: Johnson et al.'s feed-forward net with CIN, 32/64/128 channels, 5 residual blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.ModuleList([ConvCIN(3, 32, 9), ConvCIN(32, 64, 3, 2), ConvCIN(64, 128, 3, 2)])
        self.res = nn.ModuleList([Residual(ConvCIN(128, 128, 3), ConvCIN(128, 128, 3, relu=False))
                                  for _ in range(5)])
        self.dec = nn.ModuleList([ConvCIN(128, 64, 3), ConvCIN(64, 32, 3)])
        self.out = nn.Conv2d(32, 3, 9)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] RGB in [0, 1]; w: [B, N] normalised style weights -> [B, 3, H, W] in [0, 1]."""
        skips = []
        h = x
        for layer in self.enc:
            skips.append(h)
            h = layer(h, w)
        for block in self.res:
            h = block(h, w)
        for layer, skip in zip(self.dec, reversed(skips[1:])):
            h = layer(_up_to(h, skip), w)
        return torch.sigmoid(self.out(F.pad(h, (4, 4, 4, 4), mode="reflect")))


class GridNet(nn.Module):
    """The cpu tier: a small U-Net on the 1/4-resolution image predicts per-pixel affine colour transforms,
    which are applied to the full-resolution guide [r, g, b, detail, 1] after bilinear upsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.e1 = ConvCIN(4, 16, 3)
        self.e2 = ConvCIN(16, 32, 3, 2)
        self.e3 = ConvCIN(32, 64, 3, 2)
        self.res = nn.ModuleList([Residual(SepConvCIN(64, 64), SepConvCIN(64, 64, relu=False)) for _ in range(3)])
        self.d2 = SepConvCIN(64, 32)
        self.d1 = SepConvCIN(32, 16)
        self.head = nn.Conv2d(16, 3 * GUIDE, 1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():  # start as the identity transform: out = rgb
            self.head.bias.copy_(torch.eye(3, GUIDE).flatten())

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] RGB in [0, 1]; w: [B, N] normalised style weights -> [B, 3, H, W], about [0, 1]."""
        luma = (x * x.new_tensor(LUMA_RGB)[:, None, None]).sum(1, keepdim=True)
        small = F.avg_pool2d(torch.cat([x, luma], 1), CPU_SCALE)  # box filter: antialiased 1/4 image
        detail = luma - F.interpolate(small[:, 3:], size=x.shape[-2:], mode="bilinear", align_corners=False)
        h1 = self.e1(small, w)
        h2 = self.e2(h1, w)
        h = self.e3(h2, w)
        for block in self.res:
            h = block(h, w)
        h = self.d2(_up_to(h, h2), w) + h2
        h = self.d1(_up_to(h, h1), w) + h1
        grid = F.interpolate(self.head(h), size=x.shape[-2:], mode="bilinear", align_corners=False)
        guide = torch.cat([x, detail, torch.ones_like(detail)], 1)
        b, _, height, width = grid.shape
        return (grid.view(b, 3, GUIDE, height, width) * guide[:, None]).sum(2)


def make_net(tier: str) -> nn.Module:
    return GridNet() if tier == "cpu" else TransformerNet()


def normalise_weights(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights over their sum (negatives count as 0), and 1.0 where any weight is set, 0.0 where all are zero.

    All-zero weights mean "no style": the wrapper then shows the camera image unchanged, as the procedural
    model does, so a show that has not picked a style yet does not flash style 0."""
    weights = weights.clamp(min=0.0)
    total = weights.sum(-1, keepdim=True)
    return weights / total.clamp(min=1e-6), (total > 0).to(weights.dtype)


class StyleModel(nn.Module):
    """What ships: uint8 BGR HWC frame + style_weights [N] + strength [1] -> uint8 BGR HWC frame.

    Every conversion happens inside the graph so the player hands over camera bytes and gets display bytes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, frame: torch.Tensor, style_weights: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        x = frame.to(torch.float32).mul(1.0 / 255.0).flip(-1).permute(2, 0, 1).unsqueeze(0)  # RGB NCHW
        w, active = normalise_weights(style_weights.unsqueeze(0))
        y = self.net(x, w)
        mix = (strength * active).reshape(1, 1, 1, 1)
        out = x + mix * (y - x)
        out = out.mul(255.0).clamp(0.0, 255.0).round()
        return out.squeeze(0).permute(1, 2, 0).flip(-1).to(torch.uint8)
