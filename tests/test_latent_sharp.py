"""The sharp latent model: bands over a decoder (exported through the CLI, on ONNX Runtime), the shipped latent-sharp
against the shipped latent-vae at output size (sharper, still smooth), and the latent stage routed before the style
model so the style paints it."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_live import show_with
from live.errors import LiveError
from live.graph import build
from live.inference import open_session
from live.models.latent_metrics import (SIZE, edge_steepness, laplacian_variance, mean_change, played_walk,
                                        straight_walk, values)
from live.models.manifest import load_manifest
from live.show import load_show
from live.train.latent import main
from live.video.latent import LatentLayer
from live.video.stylize import Stylizer

MODELS = Path(__file__).resolve().parent.parent / "exported_models"
OLD, NEW = MODELS / "latent-vae.json", MODELS / "latent-sharp.json"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def decoder() -> Path:
    if not OLD.is_file():
        pytest.skip(f"no shipped model at {OLD}: see its manifest's provenance.command")
    return OLD


def test_the_shipped_command_rebuilds_the_shipped_bytes_from_its_recorded_decoder(decoder: Path, tmp_path: Path):
    """Bands over the exported VAE decoder: the manifest's command, rerun, writes the shipped model byte for byte,
    at the output size, with the decoder's x/y plane and the decoder's identity recorded."""
    if not NEW.is_file():
        pytest.skip(f"no shipped model at {NEW}")
    shipped, base = load_manifest(NEW), load_manifest(decoder)
    argv = shlex.split(shipped.provenance["command"])[3:]
    out = argv.index("--out")
    assert main([*argv[:out + 1], str(tmp_path), *argv[out + 2:]]) == 0
    rebuilt = load_manifest(tmp_path / "latent-sharp.json")
    assert rebuilt.onnx_path.read_bytes() == shipped.onnx_path.read_bytes(), "the command is a recipe"
    assert shipped.provenance["decoder"] == {"model": "latent-vae", "sha256": base.sha256,
                                             "command": base.provenance["command"]}
    assert shipped.controls["plane"] == base.controls["plane"], "x/y keep their meaning: the decoder's own plane"
    assert shipped.controls["size"] == list(SIZE) and shipped.provenance["parity_max_abs_diff_grey_levels"] <= 1
    session = open_session(shipped.onnx_path, ("cpu",), 1)
    frames = session.run(None, {"latent": np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)})[0]
    assert frames.dtype == np.uint8 and frames.shape == (2, SIZE[1], SIZE[0], 3)


def test_bad_decoder_arguments_say_what_to_do(decoder: Path, tmp_path: Path):
    with pytest.raises(LiveError, match="--levels N --export"):
        main(["--decoder", str(decoder), "--out", str(tmp_path), "--export"])
    with pytest.raises(LiveError, match="latent-sharp.json already ends in bands"):
        main(["--decoder", str(NEW), "--levels", "4", "--out", str(tmp_path), "--export"])
    with pytest.raises(LiveError, match="styles-procedural.json is a image-to-image model"):
        main(["--decoder", str(MODELS / "styles-procedural.json"), "--levels", "4", "--out", str(tmp_path),
              "--export"])


@pytest.fixture(scope="module")
def layers() -> Iterator[dict[str, LatentLayer]]:
    for path in (OLD, NEW):
        if not path.is_file():
            pytest.skip(f"no shipped model at {path}: see its manifest's provenance.command")
    opened = {}
    for path in (OLD, NEW):
        opened[path.stem] = LatentLayer(path, *SIZE, threads=1)
        opened[path.stem].open()
    yield opened
    for layer in opened.values():
        layer.close()


def test_shipped_sharp_model_is_sharper_at_output_size_than_the_vae(layers: dict[str, LatentLayer]):
    figures = {}
    for name, layer in layers.items():
        images = [layer.generate(layer.latent(values(seed, x=0.4 * seed - 0.5)), SIZE).copy() for seed in range(3)]
        assert images[0].shape == (SIZE[1], SIZE[0], 3)
        figures[name] = (np.mean([laplacian_variance(i) for i in images]), np.mean([edge_steepness(i) for i in images]))
    (old_hf, old_edge), (new_hf, new_edge) = figures["latent-vae"], figures["latent-sharp"]
    assert new_hf > 8 * old_hf, f"high-frequency energy {new_hf:.2f} vs the VAE's {old_hf:.2f}"
    assert new_edge > 3 * old_edge, f"edge steepness {new_edge:.3f} vs the VAE's {old_edge:.3f}"
    assert new_edge > 0.1, "an edge should cross in a few output pixels"


def test_shipped_sharp_model_walks_smoothly(layers: dict[str, LatentLayer]):
    layer = layers["latent-sharp"]
    rng = np.random.default_rng(5)
    straight = straight_walk(layer, seed=3, steps=12)
    jumps = [mean_change(*(layer.generate(z[None], SIZE).copy() for z in rng.standard_normal((2, 16)).astype(
        np.float32))) for _ in range(3)]
    assert straight.max() / straight.min() < 2.5, f"equal latent steps should change the image evenly: {straight}"
    assert straight.mean() < 0.1 * np.mean(jumps), f"a step changes {straight.mean():.2f}, a jump {np.mean(jumps):.2f}"
    played = played_walk(layer, seed=3, seconds=1.0)
    assert played.min() > 0 and played.max() / played.min() < 4, f"the played walk steps unevenly: {played}"


def stages_for(tmp_path: Path, route: str):
    tmp_path.mkdir()
    path = show_with(tmp_path, stages=[{"kind": "latent", "model": "latent-sharp.json", "route": route}])
    graph = build(load_show(path), window=False, say=lambda _: None)
    stages = graph.chain.stages
    for stage in stages:
        stage.open()
    return stages, dict(graph.tree.snapshot)


def run(stages, values: dict) -> np.ndarray:
    """The chain's output for `values` once the latent layer has rendered their latent."""
    for _ in range(2):
        image = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
        for stage in stages:
            image = stage.process(image, values, 0.0)
        assert all(stage.settle() for stage in stages if isinstance(stage, LatentLayer))
    return image


def test_routed_before_the_style_the_generated_image_is_painted_by_it(tmp_path: Path):
    before, snapshot = stages_for(tmp_path / "before", "before-style")
    after, _ = stages_for(tmp_path / "after", "after-style")
    assert [type(s).__name__ for s in before] == ["LatentLayer", "Stylizer", "Blackout"]
    assert [type(s).__name__ for s in after] == ["Stylizer", "LatentLayer", "Blackout"]
    shown = {**snapshot, "/latent/mix": 1.0, "/latent/seed": 4, "/video/strength": 1.0, "/video/blend": 0.0,
             "/video/stability": 0.0}  # each frame alone: the style is compared with one run of itself
    generated = after[1].generate(after[1].latent(shown), SIZE)
    assert np.array_equal(run(after, shown), generated), "after the style, mix 1 shows the generated image as is"
    painted = run(before, shown)
    style: Stylizer = before[1]
    assert np.array_equal(painted, style.process(generated, shown)), "before the style, the style model paints it"
    assert mean_change(painted, generated) > 10, "the style should visibly change the generated image"
    other = run(before, {**shown, "/video/style_a": "watercolour"})
    assert mean_change(painted, other) > 5, "another style paints it another way"
    for stage in (*before, *after):
        stage.close()


def test_an_unknown_route_names_the_key(tmp_path: Path):
    path = show_with(tmp_path, stages=[{"kind": "latent", "model": "latent-sharp.json", "route": "sideways"}])
    with pytest.raises(LiveError, match="route"):
        load_show(path)
