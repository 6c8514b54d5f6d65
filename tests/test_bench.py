import json

import pytest

from pathlib import Path

from fixtures_live import DEFAULT_SHOW, run_live
from live.show import load_show


def test_bench_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_live(["bench", "--seconds", "1", "--json", str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads(out.read_text())
    video = written["video"]
    assert video["size"] == [640, 480] and video["provider"] in ("cpu", "cuda", "tensorrt")
    assert video["model"] == Path(load_show(DEFAULT_SHOW).video.model).stem  # the default show's style model
    for key in ("model_only_fps", "pipeline_fps", "naive_fps"):
        assert isinstance(video[key], float) and video[key] > 0
    latency = video["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert isinstance(video["dropped"], int) and video["dropped"] >= 0
    assert "model only" in result.stdout and "naive loop" in result.stdout  # the human table
    # the default show plays the CPU tier: its pipeline over the full-size teacher, and the bilinear baseline
    assert video["style_scale"] == load_show(DEFAULT_SHOW).video.style_scale < 1
    assert video["tier_to_teacher"] == pytest.approx(video["pipeline_fps"] / video["model_only_fps"], rel=0.1)
    assert video["bilinear_fps"] > 0 and "tier / teacher" in result.stdout
    assert_synth_section(written["synth"])
    assert "full render" in result.stdout and "decoder only" in result.stdout


def assert_synth_section(synth: dict) -> None:
    """Sane numbers, never a speed threshold: machines here are shared."""
    assert synth["model"] == "synth-ddsp" and synth["samplerate"] == 48000 and synth["block"] == 128
    assert synth["block_duration_us"] == pytest.approx(128 / 48000 * 1e6, abs=0.1)
    for voices in (1, 8, 16):
        r = synth[f"voices_{voices}"]
        assert r["voices"] == voices and r["sounding"] == voices  # the notes were really held
        assert r["block_us"] > 0 and r["decoder_us"] > 0
        assert r["realtime_x"] == pytest.approx(synth["block_duration_us"] / r["block_us"], rel=0.02, abs=0.1)
        assert r["decoder_realtime_x"] == pytest.approx(synth["block_duration_us"] / r["decoder_us"], rel=0.02,
                                                        abs=0.1)
        assert r["decoder_runs_per_block"] == 1.0  # batched: one run per block however many voices
        assert r["block_cpu_us"] > 0 and r["decoder_cpu_us"] > 0


def test_bench_can_measure_only_the_synth(tmp_path):
    out = tmp_path / "bench.json"
    result = run_live(["bench", "--only", "synth", "--seconds", "0.4", "--json", str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads(out.read_text())
    assert list(written) == ["synth"]
    assert_synth_section(written["synth"])
    assert "naive loop" not in result.stdout
