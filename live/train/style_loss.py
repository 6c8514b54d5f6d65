"""Style-transfer losses over a feature bank: the pretrained style predictor's MobileNetV2 (perceptual.py, the
default), fixed random-weight conv banks that need no pretrained network, or a user's VGG.

Style: Gram matrices of the bank's features, relative per layer, plus a colour mean/covariance match.
Content: the bank's `content_layer` features where it has one (MobileNetV2), else luminance at 1/4 resolution, so
the style is free to repaint fine texture but not to move objects.
Regularisers: total variation, a penalty on low-frequency hue swings where the content is flat (the "rainbow
sky" artifact random-feature losses are prone to), and a range penalty for nets whose output is not squashed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from live.errors import LiveError
from live.train.style_net import LUMA_RGB

LOSS_SEED = 1234  # the random banks are part of the loss's definition, not of the training run
BANKS = ((1, 3, 64), (1, 7, 96), (2, 7, 128), (4, 7, 128), (8, 5, 64))  # (downscale, kernel, filters)
BANK_WEIGHTS = (2.0, 1.5, 1.0, 0.75, 0.5)  # fine scales count more: they carry strokes, dots and lines
INPUT_SHIFT = 0.45
WEIGHTS = {"style": 1.0, "colour": 5.0, "content": 0.1, "tv": 0.05, "flat_hue": 2.0, "range": 10.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def gram(f: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, C], normalised by the pixel count so any image size compares."""
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


def downscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Antialiased downscale: plain average pooling leaves block artifacts the net learns to copy."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(max(1, h // factor), max(1, w // factor)), mode="bilinear", antialias=True,
                         align_corners=False)


def luma(x: torch.Tensor) -> torch.Tensor:
    return (x * x.new_tensor(LUMA_RGB)[:, None, None]).sum(1, keepdim=True)


class RandomBanks(nn.Module):
    """Fixed Gaussian unit-norm filters, half of them mean-free (edge-like), one conv layer per scale."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(LOSS_SEED)
        self.scales = [down for down, _, _ in BANKS]
        for i, (_, k, n) in enumerate(BANKS):
            w = torch.randn(n, 3, k, k, generator=gen)
            w[: n // 2] -= w[: n // 2].mean(dim=(1, 2, 3), keepdim=True)
            self.register_buffer(f"w{i}", w / w.flatten(1).norm(dim=1)[:, None, None, None])
        self.layer_weights = BANK_WEIGHTS

    def forward(self, x: torch.Tensor, gen: torch.Generator | None = None) -> list[torch.Tensor]:
        """Feature maps per scale; with `gen`, each downscale starts at a random pixel offset (no fixed grid)."""
        feats = []
        for i, down in enumerate(self.scales):
            xi = x
            if gen is not None and down > 1:
                dy, dx = (int(torch.randint(down, (1,), generator=gen)) for _ in range(2))
                xi = x[:, :, dy:, dx:]
            feats.append(F.relu(F.conv2d(downscale(xi, down) - INPUT_SHIFT, getattr(self, f"w{i}"))))
        return feats


VGG_CONFIGS = {  # conv widths per block; "16"/"19" as in torchvision's vgg16/vgg19 `features`
    "16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512)),
    "19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512)),
}
VGG_TAPS = ((1, 2), (2, 2), (3, 3), (4, 3))  # relu1_2, relu2_2, relu3_3, relu4_3 as (block, conv)


class VGGFeatures(nn.Module):
    """torchvision's VGG `features` stack up to relu4_3, with its `features.N` numbering kept for loading."""

    def __init__(self, state: dict[str, torch.Tensor], source: Path) -> None:
        super().__init__()
        variant = "19" if "features.34.weight" in state else "16"
        self.layers: list[tuple[str, int]] = []  # ("conv", index) | ("pool", index) | ("tap", index)
        self.convs = nn.ModuleDict()
        index, cin = 0, 3
        for block, widths in enumerate(VGG_CONFIGS[variant], 1):
            if block > 1:
                self.layers.append(("pool", index))
                index += 1
            for conv, cout in enumerate(widths, 1):
                layer = nn.Conv2d(cin, cout, 3, padding=1)
                for name, param in (("weight", layer.weight), ("bias", layer.bias)):
                    key = f"features.{index}.{name}"
                    if key not in state:
                        raise LiveError(f"VGG weights {source} lack {key} (not a torchvision VGG16/19 state_dict)",
                                        "save torchvision.models.vgg16(weights=...).state_dict() with torch.save")
                    if tuple(state[key].shape) != tuple(param.shape):
                        raise LiveError(f"VGG weights {source}: {key} has shape {tuple(state[key].shape)}, "
                                        f"VGG{variant} needs {tuple(param.shape)}",
                                        "use an unmodified torchvision VGG16 or VGG19 state_dict")
                    param.data.copy_(state[key].float())
                self.convs[str(index)] = layer.requires_grad_(False)
                self.layers.append(("conv", index))
                if (block, conv) in VGG_TAPS:
                    self.layers.append(("tap", index))
                index += 2  # conv, relu
                cin = cout
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None])
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None])
        self.layer_weights = (1.0,) * len(VGG_TAPS)

    def forward(self, x: torch.Tensor, gen: torch.Generator | None = None) -> list[torch.Tensor]:
        h, feats = (x - self.mean) / self.std, []
        for kind, index in self.layers:
            if kind == "pool":
                h = F.max_pool2d(h, 2)
            elif kind == "conv":
                h = F.relu(self.convs[str(index)](h))
            else:
                feats.append(h)
        return feats


def load_vgg(path: Path) -> VGGFeatures:
    """A torchvision-layout VGG16/19 state_dict from `path`; LiveError naming the file if it is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # missing file, pickle with code, truncated zip: all one fix for the user
        raise LiveError(f"could not load VGG weights {path}: {type(err).__name__}: {str(err)[:200]}",
                        "give a file saved with torch.save(vgg.state_dict(), PATH)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LiveError(f"VGG weights {path} are not a state_dict of tensors",
                        "give a file saved with torch.save(vgg.state_dict(), PATH)")
    return VGGFeatures(state, path)


def colour_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image RGB mean [B, 3] and covariance [B, 3, 3]."""
    flat = x.flatten(2)
    mean = flat.mean(-1)
    centred = flat - mean[..., None]
    return mean, centred @ centred.transpose(1, 2) / flat.shape[-1]


def flat_hue_swing(y: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Squared gradient of the output's chroma at 1/8 scale, weighted by how flat the content is there.

    Dots and strokes average out at 1/8 scale; what is left is slow hue drift, which in a flat wall or sky reads
    as rainbow banding, not as style."""
    small_y, small_c = downscale(y, 8), downscale(content, 8)
    r, g, b = small_y.unbind(1)
    chroma = torch.stack([r - g, 0.5 * (r + g) - b], 1)
    lum = luma(small_c)
    grad_c = (lum[..., 1:, 1:] - lum[..., :-1, 1:]).abs() + (lum[..., 1:, 1:] - lum[..., 1:, :-1]).abs()
    flat = torch.exp(-grad_c / 0.03)
    swing = ((chroma[..., 1:, 1:] - chroma[..., :-1, 1:]).square()
             + (chroma[..., 1:, 1:] - chroma[..., 1:, :-1]).square())
    return (flat * swing.sum(1, keepdim=True)).mean() * 10.0


class StyleLoss(nn.Module):
    """All loss terms for a batch whose sample i is styled with style `index[i]`."""

    def __init__(self, styles: list[torch.Tensor], features: nn.Module | None = None,
                 weights: dict[str, float] | None = None) -> None:
        """styles: one [3, h, w] RGB image in [0, 1] per style; features: RandomBanks() unless given; weights:
        each term's, WEIGHTS unless given."""
        super().__init__()
        self.weights = weights or WEIGHTS
        self.features = features if features is not None else RandomBanks()
        with torch.no_grad():
            per_style = [[gram(f)[0] for f in self.features(s[None])] for s in styles]
            for i in range(len(per_style[0])):
                self.register_buffer(f"g{i}", torch.stack([grams[i] for grams in per_style]))
            stats = [colour_stats(s[None]) for s in styles]
            self.register_buffer("mean", torch.cat([m for m, _ in stats]))
            self.register_buffer("cov", torch.cat([c for _, c in stats]))
        self.n_layers = len(per_style[0])

    def forward(self, y: torch.Tensor, content: torch.Tensor, index: torch.Tensor,
                gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Weighted terms by name; their sum is the training objective."""
        yc = y.clamp(0, 1)
        style = y.new_zeros(())
        feats = self.features(yc, gen)
        for i, (f, weight) in enumerate(zip(feats, self.features.layer_weights)):
            target = getattr(self, f"g{i}")[index]
            rel = (gram(f) - target).square().sum((1, 2)) / target.square().sum((1, 2)).clamp(min=1e-8)
            style = style + weight * rel.mean()
        mean, cov = colour_stats(yc)
        colour = (mean - self.mean[index]).square().sum(1).mean() + (cov - self.cov[index]).square().sum((1, 2)).mean()
        content_layer = getattr(self.features, "content_layer", None)
        if content_layer is None:
            lum_y, lum_c = downscale(luma(y), 4), downscale(luma(content), 4)
            content_term = (lum_y - lum_c).square().mean() / lum_c.var().clamp(min=1e-4)
        else:
            with torch.no_grad():
                want = self.features(content)[content_layer]
            content_term = (feats[content_layer] - want).square().mean() / want.square().mean().clamp(min=1e-8)
        tv = (y[..., 1:, :] - y[..., :-1, :]).abs().mean() + (y[..., :, 1:] - y[..., :, :-1]).abs().mean()
        out_of_range = (F.relu(y - 1).square() + F.relu(-y).square()).mean()
        terms = {"style": style / sum(self.features.layer_weights), "colour": colour, "content": content_term,
                 "tv": tv, "flat_hue": flat_hue_swing(y, content), "range": out_of_range}
        return {name: self.weights[name] * value for name, value in terms.items()}
