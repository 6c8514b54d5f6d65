"""The torch ports of the pinned package's networks against ONNX Runtime running the package's own graphs on the
same input: MobileNetV2 activations at every feature tap and the style vector, and the transfer net's output.
Tolerances are float32 rounding over ~50 layers, measured at 2e-5 (activations in [0, 6]) and 2e-6 (the
transfer net's [0, 1] output); the asserts allow 10x that."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from live.errors import LiveError
from live.models.build_pretrained import dequantize, float_transfer, load_source, package_dir
from live.train.perceptual import PREDICTOR, STYLE_TAPS, MobileNetV2, TransferNet, predictor_weights
from live.train.style_data import content_scene

ACTIVATION_TOLERANCE = 2e-4
VECTOR_TOLERANCE = 1e-4
OUTPUT_TOLERANCE = 2e-5


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def photo_like(h: int, w: int, seed: int) -> np.ndarray:
    """A [1, h, w, 3] RGB [0, 1] NHWC image with edges and flat areas (a generated scene)."""
    return content_scene(seed, seed, max(h, w))[:h, :w][None].astype(np.float32)


def tap_outputs(model: onnx.ModelProto, taps: tuple[str, ...]) -> list[str]:
    """The ONNX tensor after each tap's Conv: its ReLU6 (Clip) output where it has one."""
    consumer = {i: node for node in model.graph.node for i in node.input}
    names = []
    for tap in taps:
        conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1].startswith(f"MobilenetV2/{tap}/"))
        after = consumer.get(conv.output[0])
        names.append(after.output[0] if after is not None and after.op_type == "Clip" else conv.output[0])
    return names


def test_mobilenet_matches_onnx_runtime_at_every_tap_and_the_vector() -> None:
    model = dequantize(load_source(PREDICTOR, package_dir()))
    taps = (*STYLE_TAPS, "expanded_conv_16/project")  # a linear (no ReLU6) output deep in the net too
    names = tap_outputs(model, taps)
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = photo_like(256, 256, 1)
    want = session.run(None, {session.get_inputs()[0].name: image})
    net = MobileNetV2()
    with torch.no_grad():
        x = torch.from_numpy(image).permute(0, 3, 1, 2)
        got, vector = net.features(x, taps), net(x)
    for tap, g, w in zip(taps, got, want[1:]):
        assert g.shape == w.shape, tap
        assert float(np.abs(w).max()) > 1.0, tap  # real activations, not a dead layer compared with itself
        assert np.abs(g.numpy() - w).max() < ACTIVATION_TOLERANCE, tap
    assert np.abs(vector.numpy().ravel() - want[0].ravel()).max() < VECTOR_TOLERANCE


def test_mobilenet_vector_agrees_with_the_shipped_int8_predictor() -> None:
    """exported_models/style-predictor.onnx is the int8 graph behind a resize: our float port describes the same
    style (cosine > 0.995, measured 0.9997) for three pictures whose vectors differ among themselves (0.94)."""
    session = ort.InferenceSession("exported_models/style-predictor.onnx", providers=["CPUExecutionProvider"])
    net, vectors = MobileNetV2(), []
    for seed in (2, 3, 4):
        image = photo_like(256, 256, seed)
        shipped = session.run(["style"], {"frame": (image[0, :, :, ::-1] * 255).round().astype(np.uint8)})[0]
        with torch.no_grad():
            ours = net(torch.from_numpy((image * 255).round() / 255).permute(0, 3, 1, 2))[0].numpy()
        cosine = float(ours @ shipped / np.linalg.norm(ours) / np.linalg.norm(shipped))
        assert cosine > 0.995, cosine
        vectors.append(ours)
    a, b = vectors[0], vectors[1]
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) < 0.98


def test_transfer_net_matches_onnx_runtime() -> None:
    model = float_transfer(package_dir())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = photo_like(96, 128, 5)
    style = np.random.default_rng(0).normal(0, 1, (1, 1, 1, 100)).astype(np.float32)
    content_name, style_name = (i.name for i in session.get_inputs())
    want = session.run(None, {content_name: image, style_name: style})[0]
    with torch.no_grad():
        got = TransferNet()(torch.from_numpy(image).permute(0, 3, 1, 2), torch.from_numpy(style).reshape(1, 100))
    got = got.permute(0, 2, 3, 1).numpy()
    assert np.abs(want - image).mean() > 0.05  # the net restyles: matching it is not matching the input
    assert np.abs(got - want).max() < OUTPUT_TOLERANCE


def test_a_missing_layer_is_one_line_naming_it() -> None:
    weights = dict(predictor_weights())
    del weights["MobilenetV2/expanded_conv_7/project"]
    with pytest.raises(LiveError, match="expanded_conv_7/project"):
        MobileNetV2(weights)
