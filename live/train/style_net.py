"""Multi-style networks with conditional instance normalisation, and the uint8-in/uint8-out wrapper that ships.

One network holds N styles: every instance-norm layer has a (gamma, beta) row per style, and a weight vector
blends the rows, so a crossfade between two styles morphs the look instead of cutting (Dumoulin et al., 2017).

Both tiers also take the styles' screen: the plane-wave and paper-grain pattern the procedural model inks through
(hatching angles, dot screens, lead-line lattices), blended by the same weights. A feed-forward net has no sense of
where on the screen a pixel is, so without it no loss can teach regular hatching or dots; with it, the net learns
where ink goes, how dark, in what colour, and everything else about the look.

Two tiers share that interface:
  * `gpu`: a TransformerNet-shaped net (32/64/128 channels, 5 residual blocks) at full resolution.
  * `cpu`: the CIN net runs at 1/4 resolution and predicts a grid of per-pixel affine transforms of the guide
    [r, g, b, detail, edge, 1] and an ink tone per screen layer; the grid is upsampled bilinearly and applied to
    the FULL-resolution frame, so edges stay as sharp as the camera's (HDRNet-style) while the costly
    convolutions see 1/16 of the pixels; ink goes where the tone beats the full-resolution screen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from live.models.build_styles import LAYERS, REF_HEIGHT, STYLES, screen_table

N_STYLES = len(STYLES)
LUMA_RGB = (0.299, 0.587, 0.114)
CPU_SCALE = 4  # the cpu tier's internal resolution is 1/CPU_SCALE per side
GUIDE = 6  # r, g, b, detail, edge, 1
SOBEL = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


class Screen(nn.Module):
    """The blended screen pattern [B, LAYERS, h, w], each layer scaled into about [-1, 1], for the h x w window at
    (top, left) of a frame `frame_h` pixels high: the same waves and grain the procedural model draws there."""

    def __init__(self) -> None:
        super().__init__()
        for name, value in screen_table().items():
            self.register_buffer(name, torch.from_numpy(value.astype("float32")), persistent=False)

    def forward(self, w: torch.Tensor, top: int, left: int, h: int, width: int, frame_h: int) -> torch.Tensor:
        kx, ky, amp = (torch.einsum("bn,nlk->blk", w, t) for t in (self.kx, self.ky, self.amp))
        grain = w @ self.grain  # [B, LAYERS]
        rows = torch.arange(h, device=w.device) + top
        cols = torch.arange(width, device=w.device) + left
        scale = REF_HEIGHT / frame_h
        v = (rows.to(w.dtype) + 0.5) * scale
        u = (cols.to(w.dtype) + 0.5) * scale
        # cos(kx u + ky v) = cos(ky v) cos(kx u) - sin(ky v) sin(kx u): one matmul, no per-pixel trigonometry.
        kv = ky[:, :, None, :] * v[None, None, :, None]  # [B, L, h, K]
        ku = kx[:, :, :, None] * u[None, None, None, :]  # [B, L, K, w]
        waves = torch.cat([kv.cos() * amp[:, :, None], -kv.sin() * amp[:, :, None]], 3) @ torch.cat(
            [ku.cos(), ku.sin()], 2)
        size = self.tile.shape[0]
        repeats = (left % size + width + size - 1) // size  # whole tiles across, then the window's columns
        tile = self.tile.index_select(0, rows % size).repeat(1, repeats)[:, left % size:left % size + width]
        pattern = waves + grain[:, :, None, None] * tile
        norm = amp.abs().sum(-1) + grain.abs()
        return pattern / norm.clamp(min=1e-3)[:, :, None, None]


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
    """The gpu tier: Johnson et al.'s feed-forward net with CIN, 32/64/128 channels, 5 residual blocks, plus two
    changes that make it learn a look in hundreds of steps instead of tens of thousands: the decoder adds the
    encoder's features at each scale (U-Net), and the output layer, which also sees the frame itself, predicts a
    change to the frame (zero at the start) rather than the frame, so the net starts as the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.ModuleList([ConvCIN(3 + LAYERS, 32, 9), ConvCIN(32, 64, 3, 2), ConvCIN(64, 128, 3, 2)])
        self.res = nn.ModuleList([Residual(ConvCIN(128, 128, 3), ConvCIN(128, 128, 3, relu=False))
                                  for _ in range(5)])
        self.dec = nn.ModuleList([ConvCIN(128, 64, 3), ConvCIN(64, 32, 3)])
        self.out = nn.Conv2d(32 + LAYERS + 3, 3, 9)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor, screen: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] RGB in [0, 1]; w: [B, N] normalised style weights; screen: [B, LAYERS, H, W]
        -> [B, 3, H, W], about [0, 1]. The screen enters at both ends: the encoder sees where ink may go, and the
        full-resolution output layer can draw it sharp."""
        skips = []
        h = torch.cat([x, screen], 1)
        for layer in self.enc:
            skips.append(h)
            h = layer(h, w)
        for block in self.res:
            h = block(h, w)
        for layer, skip in zip(self.dec, reversed(skips[1:])):
            h = layer(_up_to(h, skip), w) + skip
        return x + self.out(F.pad(torch.cat([h, screen, x], 1), (4, 4, 4, 4), mode="reflect"))


class GridNet(nn.Module):
    """The cpu tier: a small U-Net on the 1/4-resolution image predicts per-pixel affine colour transforms of the
    full-resolution guide [r, g, b, detail, edge, 1] and an ink tone per screen layer, after bilinear upsampling.
    Ink goes where the tone beats the screen; its colour, opacity and sharpness are learned per style."""

    def __init__(self) -> None:
        super().__init__()
        self.e1 = ConvCIN(4, 16, 3)
        self.e2 = ConvCIN(16, 32, 3, 2)
        self.e3 = ConvCIN(32, 64, 3, 2)
        self.res = nn.ModuleList([Residual(SepConvCIN(64, 64), SepConvCIN(64, 64, relu=False)) for _ in range(3)])
        self.d2 = SepConvCIN(64, 32)
        self.d1 = SepConvCIN(32, 16)
        self.head = nn.Conv2d(16, 3 * GUIDE, 1)
        self.tone = nn.Conv2d(16, LAYERS, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.tone.weight)
        with torch.no_grad():  # start as the identity transform (out = rgb) with no ink (tone well below the screen)
            self.head.bias.copy_(torch.eye(3, GUIDE).flatten())
            self.tone.bias.fill_(-1.5)
        self.ink_colour = nn.Parameter(torch.full((N_STYLES, LAYERS, 3), 0.5))
        self.ink_opacity = nn.Parameter(torch.zeros(N_STYLES, LAYERS))  # through a sigmoid: starts at 0.5
        self.ink_sharpness = nn.Parameter(torch.full((N_STYLES, LAYERS), 8.0))
        self.register_buffer("sobel", torch.tensor([SOBEL, tuple(zip(*SOBEL))])[:, None] / 8, persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, screen: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] RGB in [0, 1]; w: [B, N] normalised style weights; screen: [B, LAYERS, H, W]
        -> [B, 3, H, W], about [0, 1]."""
        luma = (x * x.new_tensor(LUMA_RGB)[:, None, None]).sum(1, keepdim=True)
        small = F.avg_pool2d(torch.cat([x, luma], 1), CPU_SCALE)  # box filter: antialiased 1/4 image
        detail = luma - F.interpolate(small[:, 3:], size=x.shape[-2:], mode="bilinear", align_corners=False)
        edge = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), self.sobel).square().sum(1, keepdim=True)
        h1 = self.e1(small, w)
        h2 = self.e2(h1, w)
        h = self.e3(h2, w)
        for block in self.res:
            h = block(h, w)
        h = self.d2(_up_to(h, h2), w) + h2
        h = self.d1(_up_to(h, h1), w) + h1
        affine = F.interpolate(self.head(h), size=x.shape[-2:], mode="bilinear", align_corners=False)
        tone = F.interpolate(self.tone(h), size=x.shape[-2:], mode="bilinear", align_corners=False)
        b, _, height, width = affine.shape
        guide = torch.cat([x, detail, edge.add(1e-6).sqrt(), torch.ones_like(detail)], 1)
        out = (affine.view(b, 3, GUIDE, height, width) * guide[:, None]).sum(2)
        sharpness = (w @ self.ink_sharpness)[:, :, None, None]
        alpha = torch.sigmoid(sharpness * (tone - screen)) * torch.sigmoid(w @ self.ink_opacity)[:, :, None, None]
        colour = torch.einsum("bn,nlc->blc", w, self.ink_colour)
        for layer in range(LAYERS):
            a = alpha[:, layer:layer + 1]
            out = out + a * (colour[:, layer, :, None, None] - out)
        return out


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
        self.screen = Screen()
        self.register_buffer("reverse", torch.tensor([2, 1, 0]), persistent=False)

    def forward(self, frame: torch.Tensor, style_weights: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        # Channels are reversed (BGR <-> RGB) by a Gather of whole planes after the transpose: ONNX Runtime's
        # negative-step Slice (what flip exports to) costs several ms a frame at 640x480.
        x = frame.permute(2, 0, 1).index_select(0, self.reverse).unsqueeze(0).to(torch.float32) / 255.0  # RGB
        w, active = normalise_weights(style_weights.unsqueeze(0))
        height, width = frame.shape[0], frame.shape[1]
        y = self.net(x, w, self.screen(w, 0, 0, height, width, height))
        mix = (strength * active).reshape(1, 1, 1, 1)
        out = x + mix * (y - x)
        out = out.mul(255.0).clamp(0.0, 255.0).round()
        return out.squeeze(0).to(torch.uint8).index_select(0, self.reverse).permute(1, 2, 0)
