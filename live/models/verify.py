"""`live models verify`: does each model file still match its manifest, and does it run?

Checks, in order, stopping at the first problem: the manifest parses; the .onnx matches its sha256; the graph's
inputs and outputs agree with the manifest (names, dtypes, ranks, fixed dims; a manifest string marks a dynamic
dim); and one run on ONNX Runtime CPU, fed inputs made from the manifest alone, returns outputs of the declared
dtype and shape. A model that passes loads in the player exactly as described.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from live.errors import LiveError
from live.inference import open_session
from live.models.importer import dims, graph_inputs
from live.models.manifest import Manifest, TensorSpec, load_manifest, sha256_of
from live.video.styles import model_bank

#: Sizes given to dynamic dims when the model is run once: a small 64x48 frame, two synth voices.
DYNAMIC_SIZES = {"H": 48, "W": 64}
DYNAMIC_DEFAULT = 2
DTYPES = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16,
          "int64": TensorProto.INT64}


@dataclass
class Result:
    name: str
    problem: str = ""  # empty: ok

    def line(self) -> str:
        return f"{self.name}: ok" if not self.problem else f"{self.name}: FAILED {self.problem}"


def _one_line(err: LiveError) -> str:
    what = re.sub(r"\s*For further information visit \S+", "", err.what)
    what = " ".join(what.split())
    return f"{what} (fix: {err.fix})" if err.fix else what


def _fix(manifest: Manifest) -> str:
    command = manifest.provenance.get("command")
    return f"rebuild it: {command}" if command else "rebuild or re-import the model so the manifest is rewritten"


def _compare(manifest: Manifest, model: onnx.ModelProto) -> list[str]:
    """Where the graph's interface and the manifest's disagree, one phrase each."""
    problems = []
    for role, specs, values in (("input", manifest.inputs, graph_inputs(model.graph)),
                                ("output", manifest.outputs, list(model.graph.output))):
        graph = {v.name: v for v in values}
        if set(graph) != {s.name for s in specs}:
            problems.append(f"{role}s are {sorted(graph)} in the graph but {[s.name for s in specs]} in the manifest")
            continue
        for spec in specs:
            value = graph[spec.name]
            if value.type.tensor_type.elem_type != DTYPES[spec.dtype]:
                kind = TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()
                problems.append(f"{role} '{spec.name}' is {kind} in the graph, {spec.dtype} in the manifest")
            shape = dims(value)
            if shape is None:
                continue  # the graph leaves the shape open; the run below checks it
            if len(shape) != len(spec.shape) or any(
                    isinstance(want, int) != isinstance(got, int) or isinstance(want, int) and want != got
                    for want, got in zip(spec.shape, shape)):
                shown = [d if d is not None else "?" for d in shape]
                problems.append(f"{role} '{spec.name}' has shape {shown} in the graph, {spec.shape} in the manifest "
                                "(a string there means a dynamic dim)")
    return problems


def _size(dim: int | str) -> int:
    return dim if isinstance(dim, int) else DYNAMIC_SIZES.get(dim, DYNAMIC_DEFAULT)


def synthesize(manifest: Manifest, spec: TensorSpec) -> np.ndarray:
    """A plausible value for one input from the manifest alone: a colour gradient for images, one-hot style
    weights, the first style vector of the model's style bank, the middle of a declared range, else zeros
    (latents)."""
    shape = [_size(d) for d in spec.shape]
    if spec.dtype == "uint8":
        ramp = np.linspace(0, 255, int(np.prod(shape)), dtype=np.float32)
        return ramp.reshape(shape).astype(np.uint8)
    if spec.name == manifest.controls.get("style_input"):
        return np.eye(1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    if spec.name == manifest.controls.get("style_vector_input"):
        bank = model_bank(manifest.source, manifest.controls)  # LiveError (named, with its fix) if missing
        return next(iter(bank.vectors().values()), np.zeros(shape, np.float32))
    value = sum(spec.range) / 2 if spec.range else 0.0
    return np.full(shape, value, dtype=np.float16 if spec.dtype == "float16" else spec.dtype)


def _run(manifest: Manifest) -> list[str]:
    """Run once on the CPU provider and compare each output with its declaration."""
    session = open_session(manifest.onnx_path, ("cpu",), threads=1)
    feeds = {spec.name: synthesize(manifest, spec) for spec in manifest.inputs}
    try:
        results = session.run([s.name for s in manifest.outputs], feeds)
    except Exception as err:  # ORT's own error types; the message is what matters
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
        return [f"fails on ONNX Runtime with inputs {shapes}: {' '.join(str(err).split())[:300]}"]
    problems = []
    for spec, array in zip(manifest.outputs, results):
        want = [_size(d) for d in spec.shape]
        if str(array.dtype) != spec.dtype or list(array.shape) != want:
            problems.append(f"output '{spec.name}' came out {array.dtype} {list(array.shape)}, "
                            f"the manifest declares {spec.dtype} {want} for these inputs")
        elif array.dtype.kind == "f" and not np.isfinite(array).all():
            problems.append(f"output '{spec.name}' has NaN or infinite values")
    return problems


def verify(path: Path) -> Result:
    """Check one manifest and its model; the problem, if any, names the file and the fix."""
    try:
        manifest = load_manifest(path, check_hash=False)
    except LiveError as err:
        return Result(path.stem, _one_line(err))
    name, onnx_path = manifest.name, manifest.onnx_path
    if sha256_of(onnx_path) != manifest.sha256:
        return Result(name, f"{onnx_path} does not match the sha256 in {path}: it is corrupt or was replaced "
                            f"(fix: restore the file, or {_fix(manifest)})")
    try:
        model = onnx.load(str(onnx_path))
    except Exception as err:  # protobuf DecodeError and friends
        return Result(name, f"{onnx_path} is not a readable ONNX model ({type(err).__name__}) "
                            f"(fix: {_fix(manifest)})")
    problems = _compare(manifest, model)
    if not problems:
        try:
            problems = _run(manifest)
        except LiveError as err:
            problems = [_one_line(err)]
    if problems:
        return Result(name, f"{onnx_path} (described by {path}): {'; '.join(problems)} "
                            f"(fix: {_fix(manifest)}, or correct the manifest)")
    return Result(name)
