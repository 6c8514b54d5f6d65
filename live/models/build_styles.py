"""Build `styles-procedural.onnx`: eight hand-designed looks in one ONNX graph, the CPU stand-in for trained styles.

Every style is a point in one parameter space. The graph mixes the rows of a constant style table with the
normalised `style_weights` into a single parameter vector that drives ONE pipeline of cheap ops (1x1 convs,
a Sobel conv, a 4x box blur, elementwise maths). So a blend of all eight costs the same as one style, and a
crossfade morphs the look continuously instead of cutting.

Pipeline, in [0,1] floats, NCHW:
  x -> luminance L, gradient-map ramps of L, Sobel edge magnitude e, and a 4x box blur of (x, e)
    -> one 1x1 conv (weights from the table) -> base colour, edge alpha, and the tone of two ink layers
    -> soft posterisation of the base colour
    -> ink where the tone beats a pattern of plane waves (hatching, dot screens) plus a tiled paper grain
    -> ink and edges composited over the base, then `strength` crossfades with the camera image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from live.models.manifest import atomic_write, style_model_fields, write_manifest

NAME = "styles-procedural"
OPSET = 17
IR_VERSION = 8  # opset 17's own IR: onnx 1.23 would stamp IR 14, which ONNX Runtime 1.31 refuses to load

BGR = tuple[float, float, float]
LUMA = np.array([0.114, 0.587, 0.299])  # Rec.601 weights in B, G, R order
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8  # /8: a unit step reads 0.5
BLUR = 4  # box-blur cell, pixels: the blur is an AveragePool by this factor, then a linear Resize back
REF_HEIGHT = 480.0  # ink periods are in pixels of a 480-line frame, so a style looks alike at any size
POSTER_EDGE = 16.0  # steepness of the soft posterisation steps
STOPS = 5  # gradient-map colours, at luminance 0, 1/4, 1/2, 3/4, 1

# Channels of the feature stack the style conv reads.
X, RAMPS, EDGE, X_BLUR, EDGE_BLUR = slice(0, 3), slice(3, 7), 7, slice(8, 11), 11
FEATURES = 12
OUT = 6  # style conv outputs: base colour (3), edge alpha before clipping, ink tone of each layer (2)
LAYERS, WAVES = 2, 2  # ink layers, plane waves per layer
GRAIN_TILE = 256  # pixels; the paper-grain texture repeats with this period
SEED = 20240611  # of the paper-grain texture, the only random thing in the model


@dataclass(frozen=True)
class Wave:
    """Stripes `period` pixels apart; `angle` is the direction across them (0: vertical stripes).
    The amps of a layer's waves should sum to <= 1."""

    period: float
    angle: float
    amp: float = 1.0


@dataclass(frozen=True)
class Ink:
    """One ink layer: ink goes where tone * darkness + coverage beats the pattern (waves + grain, in [0, 1]).
    One wave gives hatching lines, two crossed waves a dot screen; two layers union, e.g. cross-hatching."""

    waves: tuple[Wave, ...] = ()
    grain: float = 0.0  # paper grain added to the waves: irregular edges, specks
    tone: float = 1.0  # 1: darker areas get more ink; 0: the same coverage everywhere
    coverage: float = 0.0
    sharpness: float = 8.0
    opacity: float = 1.0
    colour: BGR = (0.0, 0.0, 0.0)


NO_INK = Ink(tone=0.0, coverage=-1.0, opacity=0.0)


@dataclass(frozen=True)
class Style:
    """A look in human terms; `_row` compiles it into the numbers the graph blends."""

    name: str
    blur: float = 0.0  # share of the blurred image in the colour; negative sharpens
    saturation: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    tint: BGR = (1.0, 1.0, 1.0)  # per-channel gain
    gradient: tuple[BGR, ...] = ()  # STOPS colours mapped from luminance, mixed in by gradient_mix
    gradient_mix: float = 0.0
    levels: float = 4.0  # posterisation steps per channel
    posterize: float = 0.0
    edge_gain: float = 0.0  # sharp Sobel lines
    edge_blur_gain: float = 0.0  # blurred Sobel: thick or glowing lines
    edge_threshold: float = 0.0
    edge_opacity: float = 0.0
    edge_colour: BGR = (0.0, 0.0, 0.0)
    edge_glow: float = 0.0  # edges also light up the base colour (neon)
    ink: tuple[Ink, ...] = ()  # at most LAYERS, composited in order


PAPER = (0.9, 0.95, 0.97)
STYLE_LIST = (
    Style("neon-edges", saturation=1.8, contrast=1.2, brightness=-0.4, tint=(0.7, 0.5, 0.8),
          edge_gain=6.0, edge_blur_gain=5.0, edge_threshold=0.1, edge_opacity=1.0,
          edge_colour=(0.9, 0.2, 0.7), edge_glow=2.5),
    Style("ink-hatching", saturation=0.0, contrast=0.6, brightness=0.45,
          edge_gain=8.0, edge_threshold=0.2, edge_opacity=0.95, edge_colour=(0.1, 0.1, 0.12),
          ink=(Ink((Wave(5.0, 45.0),), grain=0.15, tone=1.4, coverage=-0.35, sharpness=10.0, opacity=0.9,
                   colour=(0.12, 0.1, 0.1)),
               Ink((Wave(5.0, -45.0),), grain=0.15, tone=1.4, coverage=-0.75, sharpness=10.0, opacity=0.9,
                   colour=(0.12, 0.1, 0.1)))),
    Style("pop-art", blur=0.6, saturation=2.4, contrast=1.3, brightness=0.05, levels=2.0, posterize=1.0,
          edge_gain=6.0, edge_blur_gain=2.0, edge_threshold=0.25, edge_opacity=1.0, edge_colour=(0.05, 0.0, 0.1),
          ink=(Ink((Wave(7.0, 45.0, 0.5), Wave(7.0, 135.0, 0.5)), tone=1.2, coverage=-0.55, sharpness=10.0,
                   opacity=0.7, colour=(0.3, 0.0, 0.2)),)),
    Style("watercolour", blur=0.9, saturation=1.3, contrast=0.8, brightness=0.12, levels=4.0, posterize=0.6,
          edge_gain=3.0, edge_blur_gain=3.0, edge_threshold=0.1, edge_opacity=0.6, edge_glow=0.5,
          ink=(Ink(grain=1.0, tone=-1.5, coverage=0.75, sharpness=8.0, opacity=0.85, colour=PAPER),
               Ink(grain=1.0, tone=0.0, coverage=0.12, sharpness=6.0, opacity=0.25, colour=(0.2, 0.15, 0.15)))),
    Style("thermal", gradient_mix=1.0,
          gradient=((0.25, 0.0, 0.0), (0.65, 0.05, 0.35), (0.4, 0.1, 0.95), (0.05, 0.6, 1.0), (0.8, 1.0, 1.0)),
          edge_gain=1.5, edge_threshold=0.05, edge_opacity=0.3, edge_colour=(0.9, 1.0, 1.0)),
    Style("sepia-engraving", blur=-0.5, contrast=1.3, gradient_mix=1.0,
          gradient=((0.08, 0.15, 0.25), (0.2, 0.35, 0.5), (0.45, 0.62, 0.75), (0.68, 0.82, 0.9),
                    (0.86, 0.95, 0.98)),
          edge_gain=6.0, edge_threshold=0.2, edge_opacity=0.8, edge_colour=(0.05, 0.12, 0.2),
          ink=(Ink((Wave(4.0, 80.0),), tone=1.3, coverage=-0.35, sharpness=8.0, opacity=0.85,
                   colour=(0.1, 0.2, 0.3)),)),
    Style("pointillism", blur=0.8, saturation=2.0, contrast=1.15, brightness=0.05,
          ink=(Ink((Wave(9.0, 30.0, 0.5), Wave(9.0, 120.0, 0.5)), grain=0.3, tone=-0.4, coverage=0.6,
                   sharpness=12.0, opacity=0.9, colour=PAPER),)),
    Style("stained-glass", blur=1.0, saturation=2.6, contrast=1.3, brightness=-0.05, levels=3.0, posterize=1.0,
          edge_gain=3.0, edge_blur_gain=10.0, edge_threshold=0.3, edge_opacity=1.0, edge_colour=(0.05, 0.05, 0.05),
          ink=tuple(Ink((Wave(90.0, angle),), grain=0.03, tone=0.0, coverage=0.008, sharpness=80.0, opacity=0.8,
                        colour=(0.06, 0.06, 0.06)) for angle in (60.0, 120.0))),
)
STYLES: tuple[str, ...] = tuple(s.name for s in STYLE_LIST)
IDENTITY = Style("identity")  # what all-zero weights give: the camera image unchanged

# Parameter vector layout: name -> shape. The table rows and the graph's slices both follow it. The fixed
# filters (`luma`, `sobel`, `ramp_*`) are the same in every row: fed as constants, ORT would re-lay their convs
# out in its blocked NCHWc format, which costs ~10x the conv itself on these 1-3 channel images.
LAYOUT: dict[str, tuple[int, ...]] = {
    "luma": (1, 3, 1, 1), "sobel": (2, 1, 3, 3), "ramp_w": (STOPS - 1, 1, 1, 1), "ramp_b": (STOPS - 1,),
    "conv_w": (OUT, FEATURES, 1, 1), "conv_b": (OUT,), "levels": (1,), "posterize": (1,),
    "edge_opacity": (1,), "edge_glow": (1,), "ink_opacity": (1, LAYERS, 1, 1), "colours": (3, LAYERS + 1, 1, 1),
    "wave_kx": (LAYERS, WAVES, 1), "wave_ky": (LAYERS, 1, WAVES), "wave_amp": (LAYERS, 1, WAVES),
    "grain": (1, LAYERS, 1, 1),
}
SIZES = {name: int(np.prod(shape)) for name, shape in LAYOUT.items()}
OFFSETS = dict(zip(LAYOUT, np.cumsum([0, *SIZES.values()]).tolist()))


def _row(style: Style) -> np.ndarray:
    """Compile a Style into one row of the table; everything linear in the pixels folds into the style conv."""
    gray = np.tile(LUMA, (3, 1))
    colour = style.contrast * np.diag(style.tint) @ (style.saturation * np.eye(3) + (1 - style.saturation) * gray)
    w = np.zeros((OUT, FEATURES))
    b = np.zeros(OUT)
    keep = 1 - style.gradient_mix
    w[:3, X] = keep * (1 - style.blur) * colour
    w[:3, X_BLUR] = keep * style.blur * colour
    b[:3] = keep * (0.5 * (1 - style.contrast) + style.brightness)
    if style.gradient:
        # Piecewise-linear map: ramp k is relu(L - k/4), so its weight is the change of slope at that stop.
        slopes = (STOPS - 1) * np.diff(np.array(style.gradient).T, axis=1)  # [3, STOPS - 1]
        w[:3, RAMPS] = style.gradient_mix * np.diff(slopes, axis=1, prepend=0)
        b[:3] += style.gradient_mix * np.array(style.gradient[0])
    w[3, EDGE], w[3, EDGE_BLUR], b[3] = style.edge_gain, style.edge_blur_gain, -style.edge_threshold
    # Ink where sharpness * (tone * (1 - blurred L) + coverage - (0.5 + 0.5 * pattern)) > 0.
    layers = _layers(style)
    for i, layer in enumerate(layers):
        k = layer.sharpness
        w[4 + i, X_BLUR] = -k * layer.tone * LUMA
        b[4 + i] = k * (layer.tone + layer.coverage - 0.5)
    kx, ky, amp, grain = _screen(style)
    values = {
        "luma": LUMA, "sobel": np.stack([SOBEL_X, SOBEL_X.T]), "ramp_w": np.ones(STOPS - 1),
        "ramp_b": -np.arange(STOPS - 1) / (STOPS - 1), "conv_w": w, "conv_b": b,
        "levels": style.levels, "posterize": style.posterize, "edge_opacity": style.edge_opacity,
        "edge_glow": style.edge_glow, "ink_opacity": [layer.opacity for layer in layers],
        "colours": np.array([*(layer.colour for layer in layers), style.edge_colour]).T,
        "wave_kx": kx, "wave_ky": ky, "wave_amp": amp, "grain": grain,
    }
    return np.concatenate([np.ravel(values[name]) for name in LAYOUT]).astype(np.float32)


def _layers(style: Style) -> list[Ink]:
    return list(style.ink) + [NO_INK] * (LAYERS - len(style.ink))


def _screen(style: Style) -> tuple[np.ndarray, ...]:
    """The style's screen: per ink layer, plane-wave frequencies (radians per reference pixel) and amplitudes,
    and the paper-grain gain, all scaled by the layer's sharpness. kx, ky, amp: [LAYERS, WAVES]; grain: [LAYERS]."""
    kx, ky, amp = np.zeros((LAYERS, WAVES)), np.zeros((LAYERS, WAVES)), np.zeros((LAYERS, WAVES))
    grain = np.zeros(LAYERS)
    for i, layer in enumerate(_layers(style)):
        grain[i] = 0.5 * layer.sharpness * layer.grain
        for j, wave in enumerate(layer.waves):
            angle, freq = np.radians(wave.angle), 2 * np.pi / wave.period
            kx[i, j], ky[i, j] = freq * np.cos(angle), freq * np.sin(angle)
            amp[i, j] = 0.5 * layer.sharpness * wave.amp
    return kx, ky, amp, grain


def screen_table() -> dict[str, np.ndarray]:
    """Every style's screen, stacked in STYLES order ([N, LAYERS, WAVES] and [N, LAYERS]), plus the grain tile
    [T, T]: the screen-space ink pattern the trained style nets take as an input, so they ink in the same
    hatching, dot screens and lattices the procedural model draws."""
    kx, ky, amp, grain = (np.stack(parts) for parts in zip(*(_screen(s) for s in STYLE_LIST)))
    return {"kx": kx, "ky": ky, "amp": amp, "grain": grain, "tile": _grain()[0, 0]}


def _grain() -> np.ndarray:
    """Seamless paper-grain tile [1, 1, T, T] in [-1, 1]: seeded uniform noise smoothed by wrap-around box blurs
    (plain sums, no FFT, so the bytes do not depend on the machine's maths library)."""
    def smooth(noise: np.ndarray, radius: int) -> np.ndarray:
        for _ in range(3):
            for axis in (0, 1):
                noise = sum(np.roll(noise, shift, axis) for shift in range(-radius, radius + 1)) / (2 * radius + 1)
        return noise / np.abs(noise).max()

    rng = np.random.default_rng(SEED)
    fine, coarse = (smooth(rng.random((GRAIN_TILE, GRAIN_TILE)) - 0.5, r) for r in (1, 6))
    grain = 0.4 * fine + 0.6 * coarse
    return np.round(grain / np.abs(grain).max() * 1024).astype(np.float32)[None, None] / 1024


class GraphBuilder:
    """Collects nodes and constants with deterministic names, so every build serialises to the same bytes."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, value: float | list | np.ndarray, dtype: type = np.float32) -> str:
        name = f"c{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(list(values), np.int64)

    def op(self, op_type: str, *inputs: str, **attrs: object) -> str:
        name = f"{op_type.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        return name

    def split(self, x: str, sizes: list[int], axis: int) -> list[str]:
        names = [f"split{len(self.nodes)}_{i}" for i in range(len(sizes))]
        self.nodes.append(helper.make_node("Split", [x, self.ints(*sizes)], names, axis=axis))
        return names


def _graph() -> onnx.GraphProto:
    g = GraphBuilder()
    f32 = TensorProto.FLOAT
    zero, one = g.const(0.0), g.const(1.0)

    # Blended parameters: weights normalised by their sum; all-zero weights fall back to the identity look.
    weights = g.op("Relu", "style_weights")
    total = g.op("ReduceSum", weights, g.ints(0), keepdims=1)
    unit = g.op("Div", weights, g.op("Max", total, g.const([1e-6])))
    table = g.const(np.stack([_row(s) for s in STYLE_LIST]))
    blended = g.op("Squeeze", g.op("MatMul", g.op("Unsqueeze", unit, g.ints(0)), table), g.ints(0))
    params = g.op("Where", g.op("Greater", total, g.const([1e-6])), blended, g.const(_row(IDENTITY)))

    def param(name: str) -> str:
        start = OFFSETS[name]
        flat = g.op("Slice", params, g.ints(start), g.ints(start + SIZES[name]))
        return g.op("Reshape", flat, g.ints(*LAYOUT[name]))

    # uint8 HWC -> float NCHW in [0, 1].
    chw = g.op("Unsqueeze", g.op("Transpose", "frame", perm=[2, 0, 1]), g.ints(0))
    x = g.op("Mul", g.op("Cast", chw, to=f32), g.const(1 / 255))
    frame_hw = g.op("Slice", g.op("Shape", "frame"), g.ints(0), g.ints(2))

    # Features: gradient-map ramps of luminance, Sobel magnitude, and a box blur of colour and edges.
    lum = g.op("Conv", x, param("luma"))
    ramps = g.op("Relu", g.op("Conv", lum, param("ramp_w"), param("ramp_b")))
    grad = g.op("Conv", lum, param("sobel"), pads=[1, 1, 1, 1])
    gx2, gy2 = g.split(g.op("Mul", grad, grad), [1, 1], axis=1)
    edge = g.op("Sqrt", g.op("Add", gx2, gy2))
    pool = {"kernel_shape": [BLUR, BLUR], "strides": [BLUR, BLUR], "ceil_mode": 1}
    small = g.op("Concat", g.op("AveragePool", x, **pool), g.op("AveragePool", edge, **pool), axis=1)
    blurred = g.op("Resize", small, "", "", g.op("Concat", g.ints(1, 4), frame_hw, axis=0), mode="linear")
    features = g.op("Concat", x, ramps, edge, blurred, axis=1)

    # One conv gives the base colour, the edge alpha (before clipping) and the ink tone of each layer.
    conv = g.op("Conv", features, param("conv_w"), param("conv_b"))
    base, edge_pre, tone = g.split(conv, [3, 1, LAYERS], axis=1)

    # Soft posterisation: flat at k / levels, a sigmoid step between, mixed in by `posterize`.
    levels = param("levels")
    base = g.op("Clip", base, zero, one)
    scaled = g.op("Mul", base, levels)
    floor = g.op("Floor", scaled)
    frac = g.op("Sub", scaled, floor)
    step = g.op("Sigmoid", g.op("Sub", g.op("Mul", frac, g.const(POSTER_EDGE)), g.const(POSTER_EDGE / 2)))
    poster = g.op("Div", g.op("Add", floor, step), levels)
    base = g.op("Add", base, g.op("Mul", param("posterize"), g.op("Sub", poster, base)))

    # Ink pattern: per layer a sum of plane waves, cos(kx*u + ky*v) = cos(ky v)cos(kx u) - sin(ky v)sin(kx u),
    # so one batched [H, 2*WAVES] @ [2*WAVES, W] MatMul makes the full frame with no per-pixel trigonometry;
    # plus the grain tile, repeated to cover the frame.
    height, width = g.split(g.op("Cast", frame_hw, to=f32), [1, 1], axis=0)
    scale = g.op("Div", g.const([REF_HEIGHT]), height)
    v, u = (g.op("Mul", g.op("Add", g.op("Range", zero, g.op("Squeeze", n), one), g.const(0.5)), scale)
            for n in (height, width))
    amp = param("wave_amp")
    kv = g.op("Mul", g.op("Reshape", v, g.ints(1, -1, 1)), param("wave_ky"))  # [LAYERS, H, WAVES]
    ku = g.op("Mul", param("wave_kx"), g.op("Reshape", u, g.ints(1, 1, -1)))  # [LAYERS, WAVES, W]
    rows = g.op("Concat", g.op("Mul", g.op("Cos", kv), amp), g.op("Neg", g.op("Mul", g.op("Sin", kv), amp)), axis=2)
    cols = g.op("Concat", g.op("Cos", ku), g.op("Sin", ku), axis=1)
    waves = g.op("Unsqueeze", g.op("MatMul", rows, cols), g.ints(0))  # [1, LAYERS, H, W]
    tiles = g.op("Div", g.op("Add", frame_hw, g.ints(GRAIN_TILE - 1)), g.ints(GRAIN_TILE))
    repeats = g.op("Concat", g.ints(1, 1), tiles, axis=0)
    grain = g.op("Slice", g.op("Tile", g.const(_grain()), repeats), g.ints(0, 0), frame_hw, g.ints(2, 3))
    pattern = g.op("Add", waves, g.op("Mul", grain, param("grain")))
    ink = g.op("Mul", g.op("Sigmoid", g.op("Sub", tone, pattern)), param("ink_opacity"))
    ink_a, ink_b = g.split(ink, [1, 1], axis=1)

    # Composite ink A, ink B, then edges over the base; `edge_glow` lets edges light up the base instead.
    # Each layer's weight is its alpha times the clearance of the layers above it.
    edge_alpha = g.op("Mul", g.op("Clip", edge_pre, zero, one), param("edge_opacity"))
    clear_e = g.op("Sub", one, edge_alpha)
    clear_be = g.op("Mul", g.op("Sub", one, ink_b), clear_e)
    keep = g.op("Add", g.op("Mul", g.op("Sub", one, ink_a), clear_be), g.op("Mul", edge_alpha, param("edge_glow")))
    alphas = g.op("Concat", g.op("Mul", ink_a, clear_be), g.op("Mul", ink_b, clear_e), edge_alpha, axis=1)
    styled = g.op("Clip", g.op("Add", g.op("Mul", base, keep), g.op("Conv", alphas, param("colours"))), zero, one)

    # Strength crossfades the camera image and the (clipped) stylized one, then back to uint8 HWC.
    # Both ends lie in [0, 1] and the strength is clamped to it, so the mix needs no clip before the cast.
    strength = g.op("Clip", "strength", zero, one)
    mixed = g.op("Add", x, g.op("Mul", g.op("Sub", styled, x), strength))
    out = g.op("Round", g.op("Mul", mixed, g.const(255.0)))
    out = g.op("Cast", g.op("Squeeze", out, g.ints(0)), to=TensorProto.UINT8)
    g.nodes.append(helper.make_node("Transpose", [out], ["frame_out"], perm=[1, 2, 0]))

    frame_shape = ["H", "W", 3]
    return helper.make_graph(
        g.nodes, NAME,
        [helper.make_tensor_value_info("frame", TensorProto.UINT8, frame_shape),
         helper.make_tensor_value_info("style_weights", f32, [len(STYLES)]),
         helper.make_tensor_value_info("strength", f32, [1])],
        [helper.make_tensor_value_info("frame_out", TensorProto.UINT8, frame_shape)],
        initializer=g.initializers)


def model_bytes() -> bytes:
    """The serialised model: the same bytes on every run. Also the teacher `live train style` learns from."""
    model = helper.make_model(_graph(), opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="live.models.build_styles")
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


def build(out_dir: Path) -> Path:
    """Write the model and its manifest into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{NAME}.onnx"
    atomic_write(path, model_bytes())
    write_manifest(
        path, name=NAME, kind="image-to-image", tier="cpu",
        **style_model_fields(list(STYLES), "weight per style in controls.styles order; normalised by their sum "
                             "inside the graph (all zero = unchanged image), so a mix like 0.3/0.7 crossfades two "
                             "styles"),
        provenance={"command": "python -m live.models.build",
                    "method": "hand-designed parametric filter pipeline (not trained); "
                              "the teacher the trained multi-style networks learn from",
                    "seed": SEED},
        licence="MIT")
    return path
