import json

from fixtures_live import run_live


def test_bench_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_live(["bench", "--seconds", "1", "--json", str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    video = json.loads(out.read_text())["video"]
    assert video["size"] == [640, 480] and video["provider"] in ("cpu", "cuda", "tensorrt")
    assert video["model"] == "styles-procedural"
    for key in ("model_only_fps", "pipeline_fps", "naive_fps"):
        assert isinstance(video[key], float) and video[key] > 0
    latency = video["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert isinstance(video["dropped"], int) and video["dropped"] >= 0
    assert "model only" in result.stdout and "naive loop" in result.stdout  # the human table
