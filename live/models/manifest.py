"""Model manifests: the JSON sidecar that says what an ONNX file is and how to feed it.

Every `.onnx` in `exported_models/` has a `<name>.json` beside it. The player never guesses a model's layout,
colour order or controls: it reads them here, so shipped models and a user's own load the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from live.errors import LiveError

Kind = Literal["image-to-image", "image-to-style", "latent-to-image", "synth-decoder", "param-map", "person-mask",
               "face-detector", "music-sequence", "music-encoder", "music-decoder"]


class TensorSpec(BaseModel):
    """One graph input or output."""

    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: Literal["uint8", "float32", "float16", "int64"]
    shape: list[int | str]  # a string names a dynamic axis ("H", "W", "voices")
    layout: str = ""  # "HWC", "NCHW", "NC", ...
    color: Literal["", "BGR", "RGB"] = ""
    range: tuple[float, float] | None = None
    doc: str = ""


class Manifest(BaseModel):
    """What a model is: kind, tensors, named controls, tier, provenance, hash and licence."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Kind
    file: str  # the .onnx file, relative to the manifest
    sha256: str
    tier: Literal["cpu", "gpu", "any"] = "any"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    controls: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    licence: str

    #: Set on load: the manifest's own path, so `onnx_path` resolves relative to it.
    source: Path | None = Field(default=None, exclude=True)

    @property
    def onnx_path(self) -> Path:
        base = self.source.parent if self.source else Path.cwd()
        return base / self.file

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)


def style_model_fields(styles: list[str], weights_doc: str) -> dict[str, Any]:
    """The tensors and controls of every style model the player runs (uint8 BGR frame, style_weights, strength
    in; uint8 BGR frame out), for `write_manifest`; one place, so the hand-built and trained models agree."""
    image = {"dtype": "uint8", "shape": ["H", "W", 3], "layout": "HWC", "color": "BGR", "range": (0, 255)}
    return {
        "inputs": [{"name": "frame", **image, "doc": "camera frame, passed as-is"},
                   {"name": "style_weights", "dtype": "float32", "shape": [len(styles)], "doc": weights_doc},
                   {"name": "strength", "dtype": "float32", "shape": [1], "range": (0, 1),
                    "doc": "0 = camera image unchanged, 1 = fully stylized"}],
        "outputs": [{"name": "frame_out", **image, "doc": "stylized frame, same size as the input"}],
        "controls": {"styles": list(styles), "style_input": "style_weights", "strength_input": "strength"},
    }


def vector_model_fields(bank: str, predictor: str, size: int = 100) -> dict[str, Any]:
    """The tensors and controls of a style model fed a style vector (uint8 BGR frame, style [size], strength in;
    uint8 BGR frame out): its styles are a style bank file beside it (live/video/styles.py), and `predictor` is the
    image-to-style model whose vectors it takes, so any picture can become a style."""
    image = {"dtype": "uint8", "shape": ["H", "W", 3], "layout": "HWC", "color": "BGR", "range": (0, 255)}
    return {
        "inputs": [{"name": "frame", **image, "doc": "camera frame, passed as-is"},
                   {"name": "style", "dtype": "float32", "shape": [size],
                    "doc": f"style vector, as {predictor} predicts it (a blend interpolates two)"},
                   {"name": "strength", "dtype": "float32", "shape": [1], "range": (0, 1),
                    "doc": "0 = camera image unchanged, 1 = fully stylized"}],
        "outputs": [{"name": "frame_out", **image, "doc": "stylized frame, same size as the input"}],
        "controls": {"style_vector_input": "style", "style_bank": bank, "style_predictor": predictor,
                     "strength_input": "strength"},
    }


def manifest_paths(folder: Path) -> list[Path]:
    """The model manifests in `folder`, sorted: its .json files less the style banks kept beside the models."""
    from live.video.styles import is_style_bank  # the bank's format lives with the bank

    return [path for path in sorted(folder.glob("*.json")) if not is_style_bank(path)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(path: str | Path, check_hash: bool = True) -> Manifest:
    """Read and validate a manifest; LiveError naming the file and the fix on any problem."""
    path = Path(path)
    if path.suffix == ".onnx":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise LiveError(f"model manifest not found: {path}",
                        "point the show's model key at a .json manifest in exported_models/ "
                        "(run `make models` to rebuild the shipped ones)")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as err:
        raise LiveError(f"model manifest {path} is invalid: {err}", "fix the manifest or rebuild it") from None
    manifest.source = path.resolve()
    onnx_file = manifest.onnx_path
    if not onnx_file.is_file():
        raise LiveError(f"model file missing: {onnx_file} (named by {path})",
                        "restore the .onnx file beside its manifest or rebuild it")
    if check_hash and sha256_of(onnx_file) != manifest.sha256:
        raise LiveError(f"model file {onnx_file} does not match the sha256 in {path}: it is corrupt or was replaced",
                        "restore the original file, or rebuild the model so the manifest is rewritten")
    return manifest


def write_manifest(onnx_path: Path, **fields: Any) -> Path:
    """Write `<model>.json` beside `onnx_path` with its sha256, atomically (no half-written file is ever left)."""
    manifest = Manifest(file=onnx_path.name, sha256=sha256_of(onnx_path), **fields)
    out = onnx_path.with_suffix(".json")
    atomic_write(out, (json.dumps(manifest.model_dump(exclude={"source"}), indent=2) + "\n").encode())
    return out


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; models are read by whoever runs the show
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
