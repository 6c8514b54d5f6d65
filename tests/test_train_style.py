"""The style trainer on tiny inputs: losses fall (teacher and Gram), the export matches torch on ONNX Runtime at a
new size, instance norm survives export, style blending is continuous, the screen the nets take is the procedural
model's, training repeats exactly, and bad user files fail with a LiveError naming them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from live.errors import LiveError
from live.models.build_styles import REF_HEIGHT, STYLES
from live.models.manifest import load_manifest
from live.train import style as style_cli
from live.train.style_data import GENERATORS, augment_batch, content_pool, style_images
from live.train.perceptual import MobileNetFeatures
from live.train.style_loss import RandomBanks, StyleLoss, load_vgg
from live.train.style_net import CondInstanceNorm, GridNet, Screen, StyleModel, make_net
from live.train.style_teacher import FRAME, Teacher, paired_batch, paired_loss

PARITY_GREY_LEVELS = 1  # uint8 outputs: torch and ORT may round one pixel differently by one level
EYE = np.eye(len(STYLES), dtype=np.float32)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def frame(h: int, w: int, seed: int = 0, low: int = 0, high: int = 256) -> np.ndarray:
    """A smooth-ish random BGR frame (random blobs, not white noise, so a style net has structure to work on)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(low, high, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    return np.kron(small, np.ones((8, 8, 1)))[:h, :w].astype(np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """`live train style` run for 6 steps on 64 px crops with --export. The trained net is caught on its way to
    export and its styles spread apart first (6 steps barely move them, and the tests below need styles that
    differ), so the file on disk is what the torch net below computes."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("styles")
    caught: list[torch.nn.Module] = []

    def train_then_spread(args):  # noqa: ANN001, ANN202 - stands in for style_cli.train
        net, losses, steps = real_train(args)
        assert steps == 6 and set(losses) == {"l1", "edges", "range", "total"}
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, CondInstanceNorm):
                    module.beta.add_(0.5 * torch.randn(module.beta.shape, generator=gen))
            net.head.weight.normal_(0, 0.1, generator=gen)
        caught.append(net)
        return net, losses, steps

    real_train = style_cli.train
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(style_cli, "train", train_then_spread)
        assert style_cli.main(["--loss", "teacher", "--tier", "cpu", "--steps", "6", "--size", "64", "--batch", "2", "--seed", "1",
                               "--scenes", "2", "--threads", "1", "--export", "--out", str(out)]) == 0
    return caught[0], out / "styles-cpu.onnx"


def run_onnx(path: Path, image: np.ndarray, weights: np.ndarray, strength: float = 1.0) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["frame_out"], {"frame": image, "style_weights": weights.astype(np.float32),
                                       "strength": np.array([strength], np.float32)})[0]


def run_torch(net: torch.nn.Module, image: np.ndarray, weights: np.ndarray, strength: float = 1.0) -> np.ndarray:
    with torch.no_grad():
        return StyleModel(net)(torch.from_numpy(image), torch.from_numpy(weights.astype(np.float32)),
                               torch.tensor([strength])).numpy()


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def overfit(net: torch.nn.Module, batch: tuple[torch.Tensor, ...], loss: Callable, steps: int) -> list[float]:
    """Train `net` on one batch (content, weights, screen, *loss inputs); the total loss of each step."""
    content, weights, screen, *rest = batch
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    totals = []
    for _ in range(steps):
        total = sum(loss(net(content, weights, screen), *rest).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    return totals


@pytest.mark.parametrize("features", [MobileNetFeatures, RandomBanks])
def test_gram_loss_falls_when_overfitting_one_batch(features: Callable) -> None:
    rng = np.random.default_rng(0)
    styles = [torch.from_numpy(GENERATORS[name](rng, 96)).permute(2, 0, 1).float() for name in STYLES[:2]]
    loss_fn = StyleLoss(styles, features())
    content = augment_batch(content_pool(0, 2), 2, 64, torch.Generator().manual_seed(0))
    index = torch.tensor([0, 1])
    weights = torch.eye(8)[index]
    torch.manual_seed(0)
    totals = overfit(make_net("cpu"), (content, weights, Screen()(weights, 0, 0, 64, 64, 480), content, index),
                     loss_fn, 15)
    assert np.mean(totals[-3:]) < 0.9 * np.mean(totals[:3]), totals


@pytest.fixture(scope="module")
def paired() -> tuple[torch.Tensor, ...]:
    """Two teacher examples: ink-hatching and pointillism (a dot screen), 64 px crops of 480 px frames."""
    pool = content_pool(0, 2, size=FRAME)
    first = torch.tensor([STYLES.index("ink-hatching"), STYLES.index("pointillism")])
    return paired_batch(pool, first, 64, torch.Generator().manual_seed(3), Teacher(), Screen())


@pytest.mark.parametrize("tier", ["cpu", "gpu"])
def test_teacher_loss_falls_when_overfitting_one_batch(paired: tuple[torch.Tensor, ...], tier: str) -> None:
    torch.manual_seed(0)
    totals = overfit(make_net(tier), paired, paired_loss, 25)
    assert np.mean(totals[-3:]) < 0.7 * np.mean(totals[:3]), totals


def test_paired_examples_are_the_teachers_crops(paired: tuple[torch.Tensor, ...]) -> None:
    """The target is the teacher's rendering of the very crop the student sees: restyling the crop alone with the
    same weights gives the same flat colours (the screen's phase differs, so compare ink-free grey levels only
    loosely) and the content is on uint8 levels like a camera frame."""
    content, weights, screen, target = paired
    assert content.shape == target.shape == (2, 3, 64, 64) and screen.shape == (2, 2, 64, 64)
    assert torch.equal(content, (content * 255).round() / 255)
    assert torch.allclose(weights.sum(1), torch.ones(2))
    hatch = target[0].mean(0)  # ink-hatching is grey with dark lines: the target is near-grey, unlike the content
    assert float((target[0] - hatch).abs().max()) < 0.08 < float((content[0] - content[0].mean(0)).abs().max())


def test_screen_windows_tile_the_frame() -> None:
    """What training crops see is exactly the window of what the player computes for the whole frame."""
    screen = Screen()
    weights = torch.tensor([[0.0, 0.3, 0, 0, 0, 0, 0.7, 0]])
    whole = screen(weights, 0, 0, 300, 400, 300)
    window = screen(weights, 37, 290, 50, 110, 300)
    assert torch.allclose(window, whole[..., 37:87, 290:400], atol=1e-4)
    assert float(whole.abs().max()) <= 1.0 + 1e-5 and float(whole.std()) > 0.2


def test_screen_is_where_the_procedural_model_inks() -> None:
    """On a flat mid-grey frame, the teacher's ink-hatching lines lie where the screen is lowest."""
    grey = torch.full((1, 3, FRAME, FRAME), 0.5)
    weights = torch.eye(8)[[STYLES.index("ink-hatching")]]
    styled = Teacher()(grey, weights)[0].mean(0)
    screen = Screen()(weights, 0, 0, FRAME, FRAME, int(REF_HEIGHT))[0].min(0).values
    r = np.corrcoef(styled.flatten().numpy(), screen.flatten().numpy())[0, 1]
    assert r > 0.5, r


def test_training_repeats_exactly() -> None:
    """Same arguments, same weights and losses (the command in a manifest rebuilds the model); another seed
    gives other weights."""
    def run(seed: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        args = style_cli.parse_args(["--loss", "teacher", "--steps", "3", "--size", "48", "--batch", "2", "--scenes", "2", "--seed", seed,
                                     "--threads", "1"])
        net, losses, _ = style_cli.train(args)
        return net.state_dict(), losses

    (a, la), (b, lb), (c, _) = run("5"), run("5"), run("6")
    assert la == lb and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_teacher_loss_refuses_style_images(tmp_path: Path) -> None:
    with pytest.raises(LiveError, match="leave out --loss teacher"):
        style_cli.parse_args(["--loss", "teacher", "--style-image", f"pop-art={tmp_path / 'x.png'}"])
    assert style_cli.parse_args(["--style-image", f"pop-art={tmp_path / 'x.png'}"]).features == "mobilenet"


def test_manifest_matches_the_procedural_contract(exported: tuple[torch.nn.Module, Path]) -> None:
    manifest = load_manifest(exported[1])
    assert manifest.kind == "image-to-image" and manifest.tier == "cpu" and manifest.licence == "MIT"
    assert manifest.controls == {"styles": list(STYLES), "style_input": "style_weights", "strength_input": "strength"}
    assert [t.name for t in manifest.inputs] == ["frame", "style_weights", "strength"]
    assert manifest.provenance["command"].startswith("live train style --loss teacher --tier cpu")
    assert manifest.provenance["parity_max_abs"] <= PARITY_GREY_LEVELS
    assert manifest.provenance["steps"] == 6


def test_onnx_matches_torch_at_a_size_not_traced(exported: tuple[torch.nn.Module, Path]) -> None:
    net, path = exported
    image, weights = frame(90, 154, seed=3), 0.3 * EYE[2] + 0.7 * EYE[5]
    got = run_onnx(path, image, weights)
    assert got.shape == image.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - run_torch(net, image, weights).astype(int)).max() <= PARITY_GREY_LEVELS


def test_instance_norm_is_exported_and_uses_the_frames_own_statistics(
        exported: tuple[torch.nn.Module, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A dark, low-contrast frame has statistics far from 0/1: with IN dropped (or swapped for fixed stats) the
    output differs a lot, so matching torch here proves the exported graph normalises per frame."""
    net, path = exported
    image = frame(64, 96, seed=4, low=20, high=60)
    got = run_onnx(path, image, EYE[1])
    assert np.abs(got.astype(int) - run_torch(net, image, EYE[1]).astype(int)).max() <= PARITY_GREY_LEVELS
    net.train()  # no running statistics: training mode must give the same output
    assert np.array_equal(run_torch(net, image, EYE[1]), got) or mad(run_torch(net, image, EYE[1]), got) < 0.01
    net.eval()
    monkeypatch.setattr(CondInstanceNorm, "forward",
                        lambda self, x, w: x * (w @ self.gamma)[:, :, None, None] + (w @ self.beta)[:, :, None, None])
    assert mad(run_torch(net, image, EYE[1]), got) > 5.0


def test_style_weights_blend_continuously(exported: tuple[torch.nn.Module, Path]) -> None:
    path = exported[1]
    image = frame(64, 80, seed=5)
    a, b = run_onnx(path, image, EYE[0]), run_onnx(path, image, EYE[6])
    half = run_onnx(path, image, 0.5 * EYE[0] + 0.5 * EYE[6])
    near_half = run_onnx(path, image, 0.48 * EYE[0] + 0.52 * EYE[6])
    apart = mad(a, b)
    assert apart > 5.0  # the styles differ
    assert 0 < mad(half, a) < apart and 0 < mad(half, b) < apart  # the mix lies between them
    assert mad(half, near_half) < 0.15 * apart  # a small weight change makes a small output change
    assert np.array_equal(run_onnx(path, image, 2 * EYE[0]), a)  # weights are normalised by their sum


def test_strength_zero_and_no_style_return_the_input(exported: tuple[torch.nn.Module, Path]) -> None:
    image = frame(48, 64, seed=6)
    assert np.array_equal(run_onnx(exported[1], image, EYE[3], strength=0.0), image)
    assert np.array_equal(run_onnx(exported[1], image, np.zeros(len(STYLES))), image)


def test_data_is_deterministic() -> None:
    assert np.array_equal(style_images(STYLES[:2], 7)[1], style_images(STYLES[:2], 7)[1])
    pool = content_pool(7, 3)
    assert torch.equal(pool, content_pool(7, 3))
    batch = augment_batch(pool, 2, 40, torch.Generator().manual_seed(1))
    assert torch.equal(batch, augment_batch(pool, 2, 40, torch.Generator().manual_seed(1)))


def fake_vgg16(path: Path, break_key: str = "") -> Path:
    """A state_dict with torchvision VGG16 `features` key names and shapes, random values."""
    widths = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    state, cin, index = {}, 3, 0
    for width in widths:
        if width == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(width, cin, 3, 3) * 0.05
        state[f"features.{index}.bias"] = torch.zeros(width)
        cin, index = width, index + 2
    if break_key:
        state[break_key] = torch.randn(3, 3)
    torch.save(state, path)
    return path


def test_vgg_weights_load_and_give_a_style_loss(tmp_path: Path) -> None:
    features = load_vgg(fake_vgg16(tmp_path / "vgg16.pth"))
    feats = features(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    loss_fn = StyleLoss([torch.rand(3, 40, 40)], features)
    terms = loss_fn(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), torch.tensor([0]))
    assert torch.isfinite(terms["style"]) and terms["style"] > 0


def test_mismatched_vgg_weights_name_the_file(tmp_path: Path) -> None:
    bad = fake_vgg16(tmp_path / "wrong.pth", break_key="features.10.weight")
    with pytest.raises(LiveError, match="wrong.pth"):
        load_vgg(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(LiveError, match="junk.pth"):
        load_vgg(junk)


def test_undecodable_user_images_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(LiveError, match="broken.png"):
        style_images(STYLES, 0, style_cli.user_styles([f"pop-art={bad}"]))
    with pytest.raises(LiveError, match="not-a-style"):
        style_cli.user_styles([f"not-a-style={bad}"])
    with pytest.raises(LiveError, match=str(tmp_path)):
        content_pool(0, 1, tmp_path)


def test_gpu_tier_is_transformer_net_sized() -> None:
    params = sum(p.numel() for p in make_net("gpu").parameters())
    assert params > 1_500_000  # TransformerNet is ~1.7 M; CIN rows for 8 styles add a little
    assert sum(p.numel() for p in GridNet().parameters()) < params / 10
