"""The feature space is the style predictor's real MobileNetV2, its distances measure what they say, and
`live models report` on a tiny subset writes a sheet, report.json and report.md with finite, telling numbers."""

from __future__ import annotations

import json
import math
from itertools import combinations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fixtures_live import ROOT
from live.errors import LiveError

MODELS = ROOT / "exported_models"
WIDTH, HEIGHT, FRAMES = 128, 96, 4
PAINTERLY = ["umber-oil", "starry-blue", "black-ink-outline", "green-fauve"]  # four looks far apart


from live.models import temporal
from live.models.features import (LAYERS, FeatureSpace, content_distance, feature_distance,
                                  style_distance)
from live.models import build_pretrained  # noqa: E402
from live.models.report import has_tier, naive, open_stylizer, photos, style_values, write_report  # noqa: E402


@pytest.fixture(scope="module")
def space() -> FeatureSpace:
    return FeatureSpace(MODELS / "style-predictor.json")


@pytest.fixture(scope="module")
def shots() -> list[np.ndarray]:
    return photos(WIDTH, HEIGHT, ("astronaut", "chelsea"))


def test_features_are_the_predictors_own_mobilenet_activations(space):
    """The float extractor gives the int8 predictor's activations (read at its dequantized tensors) at every layer."""
    model = onnx.load(str(MODELS / "style-predictor.onnx"))
    quantized_names = {f"MobilenetV2/{b}/expand/Relu6" for b in LAYERS}
    read = {node.input[0].split("/")[1]: node.output[0] for node in model.graph.node
            if node.op_type == "DequantizeLinear" and node.input[0] in quantized_names}
    assert set(read) == set(LAYERS)
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in read.values())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = photos(256, 256, ("chelsea",))[0]  # the predictor's own input size: its crop and resize do nothing
    quantized = session.run(list(read.values()), {"frame": image})
    ours = space(image)
    for layer, q in zip(read, quantized):
        assert ours.maps[layer].shape == (q.shape[1], q.shape[2] * q.shape[3])
        assert np.corrcoef(ours.maps[layer].ravel(), q.ravel())[0, 1] > 0.99, layer
    flat = space(np.full((256, 256, 3), 128, np.uint8))
    assert feature_distance(ours, flat) > 0.5  # a photo is far from a grey card: the features see content


def test_content_distance_sees_stylization_not_noise(space, shots):
    stylizer = open_stylizer(MODELS / "painterly-26.json")
    rng = np.random.default_rng(0)
    for photo in shots:
        noisy = np.clip(photo + rng.normal(0, 4, photo.shape), 0, 255).astype(np.uint8)
        painted = stylizer.process(photo, style_values("umber-oil"))
        clean = space(photo)
        assert content_distance(clean, space(photo)) == pytest.approx(0, abs=1e-6)
        assert content_distance(clean, space(painted)) > 2 * content_distance(clean, space(noisy))
    stylizer.close()


def test_each_style_is_nearest_its_own_reference_and_styles_differ(space, shots):
    """painterly-arbitrary's output on a photo is closer (Gram) to its own style's reference (painterly-26's test
    card in that style) than to the other styles'; distinct styles have distinct Gram signatures, far apart
    compared with moving the picture."""
    card, painter = build_pretrained.test_card(), open_stylizer(MODELS / "painterly-26.json")
    refs = {style: space(painter.process(card, style_values(style))) for style in PAINTERLY}
    stylizer = open_stylizer(MODELS / "painterly-arbitrary.json")
    outs = {style: stylizer.process(shots[1], style_values(style)) for style in PAINTERLY}
    feats = {style: space(out) for style, out in outs.items()}
    for style, f in feats.items():
        own = style_distance(f, refs[style])
        assert own < min(style_distance(f, refs[s]) for s in PAINTERLY if s != style), style
    for a, b in combinations(PAINTERLY, 2):
        moved = style_distance(feats[a], space(np.roll(outs[a], 16, axis=1)))
        assert style_distance(feats[a], feats[b]) > 3 * moved, (a, b)
    painter.close()
    stylizer.close()


def test_report_on_a_tiny_subset(tmp_path, space, shots):
    styles = [*PAINTERLY[:3], "neon-edges", "pop-art"]
    report = write_report(MODELS, tmp_path, names=["painterly-arbitrary", "styles-procedural"], width=WIDTH,
                          height=HEIGHT, frames=FRAMES, styles=styles, photo_names=("astronaut", "chelsea"))
    params = open_stylizer(MODELS / "styles-procedural.json").params()[0]
    stability = next((p for p in params if p.address == "/video/stability"), None)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data == json.loads(json.dumps(report))
    assert list(data["models"]) == ["painterly-arbitrary", "styles-procedural"]
    assert list(data["models"]["painterly-arbitrary"]) == [s for s in build_pretrained.STYLES if s in PAINTERLY[:3]]
    assert list(data["models"]["styles-procedural"]) == ["neon-edges", "pop-art"]
    assert data["settings"]["tier"] == has_tier()
    for model, rows in data["models"].items():
        sheet = cv2.imread(str(tmp_path / f"{model}.jpg"))
        assert sheet.shape == ((len(rows) + 1) * HEIGHT // 2, 3 * WIDTH // 2, 3)  # input + styles; ref + 2 photos
        assert (tmp_path / f"{model}.jpg").stat().st_size < 1_000_000 and sheet.std() > 20
        for metrics in rows.values():
            assert metrics["teacher_tier"] is None if not has_tier() else math.isfinite(metrics["teacher_tier"])
            assert (metrics["warp_error_stable"] is None) == (stability is None)
            if stability is not None:
                assert metrics["warp_error_stable"] < metrics["warp_error"]
            numbers = [v for k, v in metrics.items() if k not in ("teacher_tier", "warp_error_stable")]
            assert all(math.isfinite(v) for v in numbers) and all(0 <= v for v in numbers)
            assert 0 < metrics["style_distance"] < 1 and 0 < metrics["content_distance"] < 1
    for metrics in data["models"]["painterly-arbitrary"].values():
        assert metrics["recognised"] == 1.0 and metrics["warp_error"] > data["input_warp_error"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| starry-blue |" in markdown and "![styles-procedural](styles-procedural.jpg)" in markdown
    assert "| painterly-arbitrary |" in markdown  # the all-models table, old and new side by side


def test_teacher_distances_and_identity(space, shots):
    """At strength 0 a style is the photo: no content change, the clip's own warp error; the naive baseline at
    scale 1 is the teacher itself, and at 1/4 it is not."""
    clip = temporal.moving_clip(shots[0], frames=FRAMES, size=(WIDTH, HEIGHT))
    stylizer = open_stylizer(MODELS / "painterly-26.json")
    values = {**style_values("starry-blue"), "/video/strength": 0.0}
    assert all(np.array_equal(stylizer.process(p, values), p) for p in shots)
    assert temporal.warp_error([stylizer.process(f, values) for f in clip.frames], clip) == pytest.approx(
        temporal.warp_error(clip.frames, clip))
    teacher = space(stylizer.process(shots[0], style_values("starry-blue")))
    assert feature_distance(teacher, space(naive(stylizer, shots[0], style_values("starry-blue"), 1.0))) == \
        pytest.approx(0, abs=1e-6)
    assert feature_distance(teacher, space(naive(stylizer, shots[0], style_values("starry-blue"), 0.25))) > 0.1
    stylizer.close()


def test_bad_input_is_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(LiveError, match="no style not-a-style"):
        write_report(MODELS, tmp_path, names=["styles-procedural"], styles=["not-a-style"])
    with pytest.raises(LiveError, match="tier scale 0"):
        write_report(MODELS, tmp_path, tier_scale=0)
    monkeypatch.setattr("live.models.report.ASSETS", tmp_path)
    with pytest.raises(LiveError, match=f"{tmp_path}/astronaut.jpg is missing"):
        photos(WIDTH, HEIGHT)
