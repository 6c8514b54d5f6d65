"""The style trainer on tiny inputs: losses fall, the export matches torch on ONNX Runtime at a new size, instance
norm survives export, style blending is continuous, and bad user files fail with a LiveError naming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from live.errors import LiveError
from live.models.build_styles import STYLES
from live.models.manifest import load_manifest
from live.train import style as style_cli
from live.train.style_data import GENERATORS, augment_batch, content_pool, style_images
from live.train.style_loss import StyleLoss, load_vgg
from live.train.style_net import CondInstanceNorm, GridNet, StyleModel, make_net

PARITY_GREY_LEVELS = 1  # uint8 outputs: torch and ORT may round one pixel differently by one level
EYE = np.eye(len(STYLES), dtype=np.float32)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


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
        assert steps == 6 and set(losses) >= {"style", "content", "tv", "total"}
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
        assert style_cli.main(["--tier", "cpu", "--steps", "6", "--size", "64", "--batch", "2", "--seed", "1",
                               "--export", "--out", str(out)]) == 0
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


def test_loss_falls_when_overfitting_one_batch() -> None:
    rng = np.random.default_rng(0)
    styles = [torch.from_numpy(GENERATORS[name](rng, 96)).permute(2, 0, 1).float() for name in STYLES[:2]]
    loss_fn = StyleLoss(styles)
    content = augment_batch(content_pool(0, 2), 2, 64, torch.Generator().manual_seed(0))
    index = torch.tensor([0, 1])
    torch.manual_seed(0)
    net = make_net("cpu")
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    totals = []
    for _ in range(15):
        total = sum(loss_fn(net(content, torch.eye(8)[index]), content, index).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert np.mean(totals[-3:]) < 0.9 * np.mean(totals[:3]), totals


def test_manifest_matches_the_procedural_contract(exported: tuple[torch.nn.Module, Path]) -> None:
    manifest = load_manifest(exported[1])
    assert manifest.kind == "image-to-image" and manifest.tier == "cpu" and manifest.licence == "MIT"
    assert manifest.controls == {"styles": list(STYLES), "style_input": "style_weights", "strength_input": "strength"}
    assert [t.name for t in manifest.inputs] == ["frame", "style_weights", "strength"]
    assert manifest.provenance["command"].startswith("live train style --tier cpu")
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
