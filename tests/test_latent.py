"""The latent model: its corpus, a few real training steps, the exported decoder on ONNX Runtime, the shipped
model's latent space, and the player's latent layer. Training here is tiny (32 px); the shipped model is only read."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from live.inference import Session, open_session
from live.models.manifest import load_manifest
from live.params import ParamTree
from live.train.latent import VAE, main, to_tensor, train
from live.train.latent_data import corpus
from live.video.latent import LatentLayer, crop_to_aspect, latent_params

SHIPPED = Path(__file__).resolve().parent.parent / "exported_models" / "latent-vae.json"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px model trained for a few steps and exported through the CLI."""
    return train_tiny(tmp_path_factory.mktemp("latent"), seed=0)


TINY = ["--size", "32", "--steps", "20", "--images", "32", "--batch", "4", "--threads", "1", "--export"]


def train_tiny(out: Path, seed: int) -> Path:
    assert main([*TINY, "--seed", str(seed), "--out", str(out)]) == 0
    return out / "latent-vae.json"


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_corpus_is_deterministic_and_varied():
    first = corpus(0, 24, 32)
    assert first.dtype == np.uint8 and first.shape == (24, 32, 32, 3)
    assert np.array_equal(first, corpus(0, 24, 32))
    assert np.array_equal(first[:8], corpus(0, 8, 32)), "image i must not depend on the corpus size"
    assert mad(first, corpus(1, 24, 32)) > 20
    pairs = [mad(first[i], first[j]) for i in range(24) for j in range(i + 1, 24)]
    assert min(pairs) > 3 and np.mean(pairs) > 30, "images should all differ, most by a lot"
    assert first.reshape(24, -1, 3).mean(axis=1).std(axis=0).min() > 15, "colours should vary between images"


def test_a_few_steps_of_training_lower_the_reconstruction_error():
    images = corpus(3, 16, 32)
    x = to_tensor(images)

    def error(model: VAE) -> float:
        with torch.no_grad():
            return float((model.decoder(model.encoder(x)[0]) - x).abs().mean())

    torch.manual_seed(0)
    untrained = error(VAE(32).eval())
    model, final = train(images, steps=80, batch=4, seed=0, threads=1, say=lambda *a, **k: None)
    assert set(final) == {"total", "l1", "edges", "colour", "layout", "kl"}
    assert error(model) < 0.85 * untrained


def test_exported_decoder_is_uint8_bgr_hwc_and_matches_torch(tiny_model: Path):
    manifest = load_manifest(tiny_model)
    assert manifest.kind == "latent-to-image" and manifest.tier == "cpu" and manifest.licence == "MIT"
    assert manifest.controls["latent"] == 16 and manifest.controls["size"] == [32, 32]
    assert np.allclose(np.asarray(manifest.controls["plane"]) @ np.asarray(manifest.controls["plane"]).T, np.eye(2),
                       atol=1e-4)
    assert manifest.provenance["parity_max_abs_diff_grey_levels"] <= 1.0
    assert manifest.provenance["command"].startswith("live train latent --size 32")
    assert (manifest.outputs[0].color, manifest.outputs[0].layout) == ("BGR", "NHWC")
    session = open_session(manifest.onnx_path, ("cpu",), 1)
    for batch in (1, 3):
        frame = session.run(None, {"latent": np.zeros((batch, 16), np.float32)})[0]
        assert frame.dtype == np.uint8 and frame.shape == (batch, 32, 32, 3)


def test_the_same_command_trains_the_same_bytes(tiny_model: Path, tmp_path: Path):
    """What makes a manifest's command a recipe: rerun, it gives the same losses and the same .onnx, byte for byte;
    another seed gives another model."""
    def result(manifest_path: Path) -> tuple[str, dict]:
        manifest = load_manifest(manifest_path)
        digest = hashlib.sha256(manifest.onnx_path.read_bytes()).hexdigest()
        assert digest == manifest.sha256
        return digest, manifest.provenance["final_losses_per_image"]

    first = result(tiny_model)
    assert result(train_tiny(tmp_path / "again", seed=0)) == first
    other = result(train_tiny(tmp_path / "other", seed=1))
    assert other[0] != first[0] and other[1] != first[1]


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.is_file():
        pytest.skip(f"no shipped latent model at {SHIPPED}: run `live train latent --export` to make it")
    manifest = load_manifest(SHIPPED)
    session = open_session(manifest.onnx_path, ("cpu",), 1)
    return lambda z: session.run(None, {"latent": np.asarray(z, np.float32)})[0]


def test_shipped_latent_walks_are_smooth(shipped):
    rng = np.random.default_rng(7)
    start, direction = rng.standard_normal(16), rng.standard_normal(16)
    path = start + np.linspace(0, 0.5, 11)[:, None] * direction / np.linalg.norm(direction)  # steps of 0.05
    walk = shipped(path)
    random = shipped(rng.standard_normal((11, 16)))
    step = np.mean([mad(walk[i], walk[i + 1]) for i in range(10)])
    jump = np.mean([mad(random[i], random[i + 1]) for i in range(10)])
    assert step < 0.15 * jump, f"a small latent step changes the image by {step:.1f} vs {jump:.1f} for a jump"


def test_shipped_interpolation_heads_steadily_to_its_end(shipped):
    rng = np.random.default_rng(11)
    for _ in range(3):
        a, b = rng.standard_normal((2, 16))
        frames = shipped(a + np.linspace(0, 1, 11)[:, None] * (b - a))
        distance = np.array([mad(f, frames[-1]) for f in frames])
        assert distance[0] > distance[5] > distance[-1] == 0
        rises = np.diff(distance)
        assert (rises > 0.5).sum() <= 1, f"distance to the endpoint should fall along the path: {distance.round(1)}"


class Counting:
    """An ORT session that counts its runs."""

    def __init__(self, inner) -> None:
        self.inner, self.runs = inner, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.inner.run(*args, **kwargs)


@pytest.fixture
def layer(tiny_model: Path) -> Iterator[LatentLayer]:
    layer = LatentLayer(tiny_model, 64, 48)
    layer.open()
    layer.session = Session(Counting(layer.session._model), "cpu")
    yield layer
    layer.close()


def snapshot(manifest_path: Path, **changes) -> dict:
    tree = ParamTree(latent_params(load_manifest(manifest_path)))
    tree.update({f"/latent/{k}": v for k, v in changes.items()})
    return dict(tree.snapshot)


def test_latent_params_are_the_documented_controls(tiny_model: Path):
    params = {p.address: p for p in latent_params(load_manifest(tiny_model))}
    assert set(params) == {"/latent/mix", "/latent/x", "/latent/y", "/latent/walk", "/latent/seed"}
    assert params["/latent/mix"].default == 0.0 and params["/latent/walk"].default == 0.0
    assert (params["/latent/x"].min, params["/latent/x"].max) == (-1.0, 1.0)
    assert (params["/latent/seed"].type, params["/latent/seed"].max) == ("int", 1023)


def test_mix_zero_passes_the_frame_through_without_running_the_model(layer: LatentLayer, tiny_model: Path):
    frame = np.full((48, 64, 3), 90, np.uint8)
    for t in (0.0, 0.1, 0.2):
        assert layer.process(frame, snapshot(tiny_model, walk=1.0), t) is frame
    assert layer.session._model.runs == 0


def test_mix_one_is_the_generated_image_upscaled_and_cached(layer: LatentLayer, tiny_model: Path):
    frame = np.full((48, 64, 3), 90, np.uint8)
    v = snapshot(tiny_model, mix=1.0, seed=5, x=0.3, y=-0.7)
    first = layer.process(frame, v, 0.0)
    assert np.array_equal(first, layer.generate(layer.latent(snapshot(tiny_model)), (64, 48))), \
        "the frame path never waits: until the render thread has decoded the new latent, the last image shows"
    assert layer.settle()
    out = layer.process(frame, v, 0.0)
    decoded = open_session(layer.manifest.onnx_path, ("cpu",), 1).run(None, {"latent": layer.latent(v)})[0][0]
    assert np.array_equal(out, cv2.resize(crop_to_aspect(decoded, (64, 48)), (64, 48), interpolation=cv2.INTER_LINEAR))
    runs = layer.session._model.runs
    layer.process(frame, v, 0.1)
    assert layer.settle() and layer.session._model.runs == runs, "an unchanged latent must not re-run the model"
    half = layer.process(frame, {**v, "/latent/mix": 0.5}, 0.2)
    assert np.abs(half.astype(int) - (out.astype(int) + 90) / 2).max() <= 1


def test_the_walk_moves_only_when_its_speed_is_above_zero(layer: LatentLayer, tiny_model: Path):
    frame = np.zeros((48, 64, 3), np.uint8)
    still = snapshot(tiny_model, mix=1.0)
    times = np.arange(0, 6, 1 / 30)
    assert all(np.array_equal(layer.latent(still), layer.latent(still)) for _ in range(2))
    outputs = [layer.process(frame, still, t).copy() for t in times]
    assert all(np.array_equal(outputs[0], o) for o in outputs)
    moving = snapshot(tiny_model, mix=1.0, walk=1.0)
    latents, outputs = [], []
    for t in times + 6:
        outputs.append(layer.process(frame, moving, t).copy())
        latents.append(layer.latent(moving)[0])
        assert layer.settle()
    assert not np.array_equal(outputs[0], outputs[-1])
    steps = np.linalg.norm(np.diff(latents, axis=0), axis=1)
    assert steps.min() > 0 and steps.max() < 0.1, "the walk must move, in small steps at 30 fps"
    assert np.linalg.norm(latents[-1] - latents[0]) > 3 * steps.mean()


def test_a_failing_render_is_raised_on_the_next_frame_and_the_layer_renders_again(layer: LatentLayer,
                                                                                  tiny_model: Path):
    """The render thread survives a model that raises (here a real ORT session of another model, which has no
    `latent` input): the next frame raises it, so the chain passes its input through and says so."""
    frame = np.zeros((48, 64, 3), np.uint8)
    working, layer.session = layer.session, open_session(SHIPPED.parent / "styles-procedural.onnx", ("cpu",), 1)
    layer.process(frame, snapshot(tiny_model, mix=1.0, seed=9), 0.0)
    assert layer.settle()
    with pytest.raises(Exception, match="latent"):
        layer.process(frame, snapshot(tiny_model, mix=1.0, seed=9), 0.1)
    layer.session = working
    layer.process(frame, snapshot(tiny_model, mix=1.0, seed=9), 0.2)
    assert layer.settle()
    out = layer.process(frame, snapshot(tiny_model, mix=1.0, seed=9), 0.3)
    assert np.array_equal(out, layer.generate(layer.latent(snapshot(tiny_model, mix=1.0, seed=9)), (64, 48)))
