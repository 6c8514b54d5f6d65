"""The procedural style model, built into a temp folder and run on ONNX Runtime's CPU provider (no mocks)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from live.inference import open_session
from live.models.build_styles import STYLES, build
from live.models.manifest import load_manifest, sha256_of

Run = Callable[..., np.ndarray]
ONE_HOT = np.eye(len(STYLES), dtype=np.float32)


def scene(width: int, height: int) -> np.ndarray:
    """A camera-like BGR frame: gradient wall, flat shapes, text, a little sensor noise."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width], np.float32)[:, None, None]
    img = np.dstack([60 + 150 * x, 90 + 100 * y, 200 - 120 * x * y]).astype(np.uint8)
    side = min(width, height)

    def at(fx: float, fy: float) -> tuple[int, int]:
        return int(fx * width), int(fy * height)

    cv2.rectangle(img, at(.08, .55), at(.4, .9), (40, 170, 230), -1)
    cv2.circle(img, at(.68, .38), int(.2 * side), (70, 60, 190), -1)
    cv2.circle(img, at(.28, .28), int(.12 * side), (200, 200, 200), -1)
    cv2.fillPoly(img, [np.array([at(.5, .95), at(.72, .58), at(.95, .95)])], (140, 90, 30))
    cv2.putText(img, "LIVE", at(.52, .88), cv2.FONT_HERSHEY_DUPLEX, side / 170, (250, 250, 250), max(1, side // 100))
    noise = np.random.default_rng(1).normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in grey levels."""
    return float(np.abs(a.astype(np.float32) - b).mean())


def edge_map(img: np.ndarray) -> np.ndarray:
    """Sobel magnitude of the smoothed half-size luminance: object outlines, not ink texture or noise."""
    half = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    gray = cv2.GaussianBlur(cv2.cvtColor(half, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 2)
    return np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def run(model: Path) -> Run:
    session = open_session(model, ("cpu",), threads=2)

    def run(frame: np.ndarray, weights: np.ndarray, strength: float = 1.0) -> np.ndarray:
        feeds = {"frame": frame, "style_weights": np.asarray(weights, np.float32),
                 "strength": np.array([strength], np.float32)}
        return session.run(None, feeds)[0]

    return run


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return scene(640, 480)


@pytest.fixture(scope="module")
def styled(run: Run, frame: np.ndarray) -> list[np.ndarray]:
    return [run(frame, w) for w in ONE_HOT]


@pytest.mark.parametrize("size", [(640, 480), (333, 211)])
def test_uint8_in_same_size_out_and_strength_zero_is_identity(run: Run, size: tuple[int, int]) -> None:
    img = scene(*size)
    for weights in [*ONE_HOT, 0.3 * ONE_HOT[0] + 0.7 * ONE_HOT[5]]:
        out = run(img, weights)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.abs(run(img, weights, 0.0).astype(int) - img).max() <= 1


def test_strength_is_a_linear_crossfade(run: Run, frame: np.ndarray, styled: list[np.ndarray]) -> None:
    for weights, full in zip(ONE_HOT, styled):
        half = run(frame, weights, 0.5).astype(np.float32)
        assert np.abs(half - (frame.astype(np.float32) + full) / 2).max() <= 1  # rounding only


def test_styles_differ_from_the_input_and_from_each_other(frame: np.ndarray, styled: list[np.ndarray]) -> None:
    # Two shots of this scene differ by ~3.4 grey levels on average (its sensor noise); 20 is six times that.
    # The subtlest style (watercolour) is ~29 from the camera image, the closest pair ~30 apart.
    for name, out in zip(STYLES, styled):
        assert mad(out, frame) > 20, name
    for (a, out_a), (b, out_b) in itertools.combinations(zip(STYLES, styled), 2):
        assert mad(out_a, out_b) > 20, (a, b)


def test_styles_keep_the_scene_recognisable(frame: np.ndarray, styled: list[np.ndarray]) -> None:
    # The input's outlines must still be where they were: an unrelated (mirrored) frame scores ~0.05, the
    # styles 0.59 (stained-glass, whose lead lattice adds outlines of its own) to 1.0.
    reference = edge_map(frame)
    assert correlation(reference, edge_map(frame[::-1, ::-1])) < 0.2
    for name, out in zip(STYLES, styled):
        assert correlation(reference, edge_map(out)) > 0.4, name


def test_half_blend_lies_between_the_two_styles(run: Run, frame: np.ndarray, styled: list[np.ndarray]) -> None:
    # Compared at quarter size, where ink patterns average to tone: the look, not the phase of dots and lines.
    def quarter(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)

    for i, j in itertools.combinations(range(len(STYLES)), 2):
        a, b = quarter(styled[i]), quarter(styled[j])
        mix = quarter(run(frame, 0.5 * ONE_HOT[i] + 0.5 * ONE_HOT[j]))
        apart = mad(a, b)
        assert mad(mix, a) < apart and mad(mix, b) < apart, (STYLES[i], STYLES[j])


def test_weights_are_normalised_inside_the_graph(run: Run, frame: np.ndarray, styled: list[np.ndarray]) -> None:
    assert np.array_equal(run(frame, 2 * ONE_HOT[0]), styled[0])
    loose = run(frame, 1.5 * ONE_HOT[2] + 1.0 * ONE_HOT[6])
    assert np.abs(loose.astype(int) - run(frame, 0.6 * ONE_HOT[2] + 0.4 * ONE_HOT[6])).max() <= 1
    # All-zero weights cannot be normalised: they mean "no style", the camera image.
    assert np.abs(run(frame, np.zeros(len(STYLES))).astype(int) - frame).max() <= 1


def test_manifest_matches_and_rebuild_is_byte_identical(model: Path, tmp_path: Path) -> None:
    manifest = load_manifest(model.with_suffix(".json"))
    assert manifest.sha256 == sha256_of(model) and manifest.onnx_path == model.resolve()
    assert manifest.kind == "image-to-image" and manifest.tier == "cpu"
    assert manifest.controls["styles"] == list(STYLES) and len(set(STYLES)) == 8
    assert [t.name for t in manifest.inputs] == ["frame", "style_weights", "strength"]
    assert manifest.input("frame").shape == ["H", "W", 3] and manifest.outputs[0].name == "frame_out"
    again = build(tmp_path)
    assert again.read_bytes() == model.read_bytes()
    assert again.with_suffix(".json").read_text() == model.with_suffix(".json").read_text()
