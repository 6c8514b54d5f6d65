"""`live train style --from painterly-arbitrary` on tiny inputs: the losses fall, the export matches torch on ONNX
Runtime at a size not traced, the manifest is a style model's with both tuned styles, strength and blending work,
and bad style images or flags are one LiveError line naming them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from live.errors import LiveError
from live.models.manifest import load_manifest
from live.train import style as style_cli
from live.train import style_tune
from live.train.perceptual import MobileNetFeatures, TransferNet
from live.train.style_data import GENERATORS, augment_batch, content_pool
from live.train.style_loss import StyleLoss

PARITY_GREY_LEVELS = 1


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def painting(path: Path, style: str, size: int = 160) -> Path:
    """One of style_data's generated style images, written as a PNG like a user's file."""
    rgb = GENERATORS[style](np.random.default_rng(0), size)
    cv2.imwrite(str(path), cv2.cvtColor((np.clip(rgb, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """Three steps at 64 px with --export, two styles (the second from two images); the tuned model is caught on
    its way to export, so the file is what the torch model below computes."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("tune")
    glass, dots, pop = (painting(tmp / f"{s}.png", s) for s in ("stained-glass", "pointillism", "pop-art"))
    caught: list[torch.nn.Module] = []

    def tune_and_catch(args):  # noqa: ANN001, ANN202 - stands in for style_tune.tune
        model, losses, distances = real_tune(args)
        caught.append(model)
        return model, losses, distances

    real_tune = style_tune.tune
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(style_tune, "tune", tune_and_catch)
        assert style_cli.main(["--from", "painterly-arbitrary", "--style-image", f"glass={glass}",
                               "--style-image", f"dots={dots}", "--style-image", f"dots={pop}", "--steps", "3",
                               "--size", "64", "--scenes", "2", "--threads", "1", "--name", "mine", "--export",
                               "--out", str(tmp)]) == 0
    return caught[0], tmp / "mine.onnx"


def run_onnx(path: Path, image: np.ndarray, weights: list[float], strength: float = 1.0) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["frame_out"], {"frame": image, "style_weights": np.float32(weights),
                                       "strength": np.float32([strength])})[0]


def frame(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    return np.kron(small, np.ones((8, 8, 1)))[:h, :w].astype(np.uint8)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_manifest_is_a_style_models_with_the_tuned_styles(tuned: tuple[torch.nn.Module, Path]) -> None:
    manifest = load_manifest(tuned[1])
    assert manifest.name == "mine" and manifest.kind == "image-to-image" and "Apache-2.0" in manifest.licence
    assert manifest.controls == {"styles": ["glass", "dots"], "style_input": "style_weights",
                                 "strength_input": "strength"}
    assert [t.name for t in manifest.inputs] == ["frame", "style_weights", "strength"]
    assert manifest.provenance["command"].startswith("live train style --from painterly-arbitrary")
    assert manifest.provenance["parity_max_abs"] <= PARITY_GREY_LEVELS
    held_out = manifest.provenance["held_out"]
    for when in ("before", "after"):
        assert len(held_out[when]["gram"]) == len(held_out[when]["content"]) == 2
        assert min(held_out[when]["gram"]) > 0 and min(held_out[when]["content"]) > 0


def test_onnx_matches_torch_at_a_size_not_traced(tuned: tuple[torch.nn.Module, Path]) -> None:
    model, path = tuned
    image = frame(70, 102, 3)  # neither side a multiple of 4: the graph pads and crops
    got = run_onnx(path, image, [0.3, 0.7])
    with torch.no_grad():
        want = model(torch.from_numpy(image), torch.tensor([0.3, 0.7]), torch.tensor([1.0])).numpy()
    assert got.shape == image.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= PARITY_GREY_LEVELS
    assert mad(got, image) > 5.0  # it paints


def test_styles_differ_blend_and_strength_zero_is_the_input(tuned: tuple[torch.nn.Module, Path]) -> None:
    path = tuned[1]
    image = frame(64, 80, 5)
    a, b, half = (run_onnx(path, image, w) for w in ([1, 0], [0, 1], [0.5, 0.5]))
    assert mad(a, b) > 3.0
    assert 0 < mad(half, a) < mad(a, b) and 0 < mad(half, b) < mad(a, b)
    assert np.array_equal(run_onnx(path, image, [1, 0], strength=0.0), image)
    assert np.array_equal(run_onnx(path, image, [0, 0]), image)


def test_tuning_lowers_the_style_loss_on_one_batch(tmp_path: Path) -> None:
    """The net and the style vector train together: the MobileNetV2 Gram loss on a fixed batch falls."""
    features = MobileNetFeatures()
    target, vector = style_tune.load_style([painting(tmp_path / "glass.png", "stained-glass")], features)
    loss_fn = StyleLoss([target], features, style_tune.WEIGHTS)
    model = style_tune.TunedModel(TransferNet(), vector[None])
    content = augment_batch(content_pool(0, 2), 1, 96, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    styles = []
    for _ in range(12):
        terms = loss_fn(model.net(content, model.vectors), content, torch.tensor([0]))
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
        styles.append(terms["style"].item())
    assert np.mean(styles[-3:]) < 0.8 * np.mean(styles[:3]), styles


def test_several_images_make_one_style(tmp_path: Path) -> None:
    """Side by side at one height (their statistics average), their predicted vectors averaged."""
    features = MobileNetFeatures()
    glass, dots = painting(tmp_path / "g.png", "stained-glass"), painting(tmp_path / "d.png", "pointillism", 200)
    (one, v1), (two, v2) = style_tune.load_style([glass], features), style_tune.load_style([dots], features)
    both, v12 = style_tune.load_style([glass, dots], features)
    assert both.shape == (3, one.shape[1], one.shape[2] + two.shape[2])
    assert torch.allclose(v12, (v1 + v2) / 2, atol=1e-5) and float((v1 - v2).abs().max()) > 0.1


def test_bad_style_images_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(LiveError, match="broken.png"):
        style_tune.load_style([broken], MobileNetFeatures())
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((20, 40, 3), np.uint8))
    with pytest.raises(LiveError, match="tiny.png.*too small"):
        style_tune.load_style([tiny], MobileNetFeatures())
    with pytest.raises(LiveError, match="NAME=PATH"):
        style_tune.style_groups(["no-equals-sign.png"])


@pytest.mark.parametrize("flags, message", [
    (["--features", "random"], "MobileNetV2 losses only"),
    (["--loss", "teacher"], "MobileNetV2 losses only"),
    (["--size", "66"], "multiple of 4"),
    (["--name", "../elsewhere"], "not a model file name"),
])
def test_flags_that_do_not_fit_fine_tuning_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(LiveError, match=message):
        style_cli.parse_args(["--from", "painterly-arbitrary", "--style-image", "a=b.png", *flags])


def test_feature_flags(tmp_path: Path) -> None:
    assert style_cli.parse_args(["--loss", "gram"]).features == "mobilenet"
    assert style_cli.parse_args(["--loss", "gram", "--vgg", str(tmp_path / "v.pth")]).features == "vgg"
    with pytest.raises(LiveError, match="--vgg PATH"):
        style_cli.parse_args(["--loss", "gram", "--features", "vgg"])
    with pytest.raises(LiveError, match="leave out --loss teacher"):
        style_cli.parse_args(["--loss", "teacher", "--features", "random"])
    assert style_cli.parse_args([]).loss == "gram" and style_cli.parse_args([]).features == "mobilenet"


def test_tuning_repeats_exactly(tmp_path: Path) -> None:
    """Same command, same weights: the manifest's command rebuilds the model."""
    glass = painting(tmp_path / "glass.png", "stained-glass", size=96)
    args = style_cli.parse_args(["--from", "painterly-arbitrary", "--style-image", f"g={glass}", "--steps", "2",
                                 "--size", "48", "--scenes", "2", "--threads", "1"])
    (a, la, _), (b, lb, _) = style_tune.tune(args), style_tune.tune(args)
    assert la == lb and all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
