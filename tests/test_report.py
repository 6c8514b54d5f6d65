"""`live models report` on the shipped procedural model, small, plus checks that the metrics measure what they say."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from fixtures_live import ROOT
from live.models.build_styles import STYLES
from live.models.report import clip_flows, evaluate, moving_clip, scenes, warp_error, write_report

MODELS = ROOT / "exported_models"
MODEL = MODELS / "styles-procedural.json"
WIDTH, HEIGHT, FRAMES = 160, 120, 8


@pytest.fixture(scope="module")
def clip():
    frames = moving_clip(WIDTH, HEIGHT, FRAMES)
    return frames, clip_flows(frames)


def test_report_writes_sheet_json_and_markdown(tmp_path):
    report = write_report(MODELS, tmp_path, names=["styles-procedural"], width=WIDTH, height=HEIGHT, frames=FRAMES)
    sheet = tmp_path / "styles-procedural.jpg"
    assert 10_000 < sheet.stat().st_size < 1_000_000
    image = cv2.imread(str(sheet))
    assert image.shape == ((len(STYLES) + 1) * HEIGHT // 2, 3 * WIDTH // 2, 3)  # input + 8 styles x 3 scenes
    assert image.std() > 20
    data = json.loads((tmp_path / "report.json").read_text())
    assert data == json.loads(json.dumps(report))
    assert set(data) == {"styles-procedural", "input_warp_error"}
    assert list(data["styles-procedural"]) == list(STYLES)
    for metrics in data["styles-procedural"].values():
        assert set(metrics) == {"style_distance", "edge_correlation", "ssim", "warp_error"}
        assert all(math.isfinite(v) for v in metrics.values())
        assert 0 < metrics["style_distance"] <= 1 and -1 <= metrics["edge_correlation"] <= 1
    markdown = (tmp_path / "report.md").read_text()
    assert "| neon-edges |" in markdown and "![styles-procedural](styles-procedural.jpg)" in markdown


def test_strength_zero_is_the_identity_on_every_metric(clip):
    frames, warps = clip
    stills = scenes(WIDTH, HEIGHT)
    metrics, rows = evaluate(MODEL, stills, frames, warps, strength=0.0)
    assert all(np.array_equal(a, b) for _, outs in rows for a, b in zip(stills, outs))
    floor = warp_error(frames, warps)
    for values in metrics.values():
        assert values["warp_error"] == pytest.approx(floor, abs=1e-9)
        assert values["style_distance"] == pytest.approx(0, abs=1e-9)
        assert values["ssim"] == pytest.approx(1) and values["edge_correlation"] == pytest.approx(1)


def test_warp_error_follows_motion_and_catches_flicker(clip):
    frames, warps = clip
    stable = warp_error(frames, warps)
    unwarped = np.mean([np.abs(b.astype(np.float32) - a).mean() for a, b in zip(frames, frames[1:])])
    assert stable < 0.3 * unwarped  # the flow really compensates the camera move (wrong direction would not)
    assert np.mean([w.valid.mean() for w in warps]) > 0.8
    rng = np.random.default_rng(3)
    flicker = [np.clip(f + rng.normal(0, 12, f.shape), 0, 255).astype(np.uint8) for f in frames]
    assert warp_error(flicker, warps) > 5 * stable + 5
