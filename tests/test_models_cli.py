"""`live models` and `live models verify` on the shipped models and on deliberately broken copies of them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures_live import ROOT, run_live
from live.models.commands import main
from live.models.manifest import manifest_paths, sha256_of

SHIPPED = ROOT / "exported_models"
STYLES, SYNTH = "styles-procedural", "synth-decoder"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """Copies of the two shipped models to break."""
    for name in (STYLES, SYNTH):
        for suffix in (".json", ".onnx"):
            shutil.copy(SHIPPED / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    return tmp_path


def edit_manifest(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_list_shows_every_manifest(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for path in manifest_paths(SHIPPED):  # the style banks beside the models are not models
        assert path.stem in out
    assert "image-to-image" in out and "synth-decoder" in out and " MB" in out
    assert "styles (8): neon-edges, ink-hatching" in out and "controls: harmonics 64" in out
    assert "licence: MIT" in out and "made by: python -m live.models.build" in out


def test_verify_shipped_models_through_the_cli():
    result = run_live(["models", "verify", STYLES, SYNTH])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"{STYLES}: ok", f"{SYNTH}: ok"]


def _append_byte(models: Path) -> None:
    with open(models / f"{STYLES}.onnx", "ab") as f:
        f.write(b"\0")


def _garbage_with_matching_hash(models: Path) -> None:
    onnx_path = models / f"{STYLES}.onnx"
    onnx_path.write_bytes(b"\x0a\xff\xff garbage" * 100)
    edit_manifest(models / f"{STYLES}.json", lambda d: d.update(sha256=sha256_of(onnx_path)))


def _rename_input(models: Path) -> None:
    edit_manifest(models / f"{STYLES}.json", lambda d: d["inputs"][1].update(name="weights"))


def _wrong_dims(models: Path) -> None:
    edit_manifest(models / f"{STYLES}.json", lambda d: d["inputs"][1].update(shape=[9]))


def _dynamic_as_fixed(models: Path) -> None:
    edit_manifest(models / f"{SYNTH}.json", lambda d: d["outputs"][0].update(shape=[2, 64], dtype="float16"))


@pytest.mark.parametrize("breaks, model, needles", [
    (_append_byte, STYLES, [f"{STYLES}.onnx does not match the sha256 in", "python -m live.models.build"]),
    (_garbage_with_matching_hash, STYLES, [f"{STYLES}.onnx is not a readable ONNX model"]),
    (_rename_input, STYLES, ["inputs are ['frame', 'strength', 'style_weights'] in the graph",
                             "'weights'", "or correct the manifest"]),
    (_wrong_dims, STYLES, ["input 'style_weights' has shape [8] in the graph, [9] in the manifest"]),
    (_dynamic_as_fixed, SYNTH, ["output 'harmonics' is float in the graph, float16 in the manifest",
                                "['voices', 64] in the graph, [2, 64]"]),
    (lambda m: (m / f"{STYLES}.json").write_text("{not json"), STYLES, [f"{STYLES}.json is invalid"]),
    (lambda m: edit_manifest(m / f"{STYLES}.json", lambda d: d.update(kind="video")), STYLES,
     [f"{STYLES}.json is invalid", "kind"]),
])
def test_verify_names_the_file_and_the_fix(models, capsys, breaks, model, needles):
    breaks(models)
    assert main(["verify", "--dir", str(models)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    bad = next(line for line in lines if line.startswith(f"{model}: FAILED"))
    assert str(models) in bad and "fix:" in bad
    for needle in needles:
        assert needle in bad
    other = SYNTH if model == STYLES else STYLES
    assert f"{other}: ok" in lines


def test_orphan_model_and_unknown_name_fail(models, capsys):
    (models / f"{SYNTH}.json").unlink()
    assert main(["verify", "--dir", str(models)]) == 1
    assert f"{SYNTH}.onnx has no manifest {SYNTH}.json beside it" in capsys.readouterr().out
    assert main(["verify", "--dir", str(models), "nope"]) == 1
    assert "nope: FAILED model manifest not found" in capsys.readouterr().out


def test_cli_errors_are_one_clean_message(models, tmp_path):
    bad = tmp_path / "downloads" / "broken.onnx"
    bad.parent.mkdir()
    bad.write_bytes(b"junk")
    result = run_live(["models", "import", str(bad), "--preset", "transformernet", "--out", str(models)])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "broken.onnx is not a readable ONNX model" in result.stderr
    _append_byte(models)
    result = run_live(["models", "verify", "--dir", str(models)])
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == 2
