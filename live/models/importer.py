"""`live models import`: bring a foreign style network in under our own uint8-BGR-HWC contract.

The player hands the camera's bytes to the model and shows what comes back, with no per-pixel Python. A foreign
network wants float RGB NCHW at its own size, so the importer wraps its graph in ONNX pre/post-processing:

    frame uint8 [H, W, 3] BGR -> float -> RGB -> [1, 3, H, W] -> (Resize to the model's fixed size, antialiased)
      -> the foreign graph -> Clip 0..255 -> Resize to H, W -> mix with the input by `strength` -> uint8 BGR HWC

and writes the result beside a manifest like any model we build, after running it once on ONNX Runtime.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, helper, version_converter

from live.errors import LiveError
from live.models.build_styles import GraphBuilder
from live.models.manifest import atomic_write, sha256_of, write_manifest

OPSET = 18  # Resize's `antialias` (a clean downscale to the model's size) arrived in opset 18
MAX_IR = 10  # onnx 1.23 may stamp newer IR versions than ONNX Runtime 1.31 loads
PREFIX = "model/"  # the foreign graph's names, kept apart from the wrapper's
DEFAULT_LICENCE = "unknown (imported; check the model's own licence)"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Preset:
    """A foreign convention: float32 RGB NCHW in 0..255 in and out; `shape` None = any size, fixed or dynamic."""

    doc: str
    input_name: str | None
    shape: tuple[int | None, ...]


PRESETS = {
    "onnx-zoo-style": Preset("ONNX model zoo fast-neural-style: input1 float32 RGB [1, 3, 224, 224] in 0..255, "
                             "output the same layout", "input1", (1, 3, 224, 224)),
    "transformernet": Preset("pytorch/examples fast_neural_style TransformerNet: float32 RGB [1, 3, H, W] in "
                             "0..255 (fixed or dynamic H, W), output the same layout", None, (None, 3, None, None)),
}


def dims(value: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """A tensor's shape: int for a fixed dim, its name (or None) for a dynamic one; None if the rank is unknown."""
    if not value.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]


def graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds: old IR versions also list every initializer as an input."""
    weights = {init.name for init in graph.initializer}
    return [v for v in graph.input if v.name not in weights]


def _describe(value: onnx.ValueInfoProto) -> str:
    kind = TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()
    return f"'{value.name}' {kind} {dims(value)}"


def _fits(shape: list[int | str | None] | None, want: tuple[int | None, ...], dynamic_ok: bool) -> bool:
    """Same rank, batch 1 or dynamic, each wanted dim fixed at its value (or, if `dynamic_ok`, dynamic)."""
    if shape is None or len(shape) != len(want) or isinstance(shape[0], int) and shape[0] != 1:
        return False
    return all(w is None or d == w or dynamic_ok and not isinstance(d, int) for w, d in zip(want, shape))


def _check_preset(src: Path, model: onnx.ModelProto, preset_name: str) -> tuple[int, int] | None:
    """LiveError naming the offending input/output unless the graph follows the preset; the fixed size, if any."""
    preset = PRESETS[preset_name]
    expects = f"the {preset_name} preset expects {preset.doc}"
    inputs, outputs = graph_inputs(model.graph), list(model.graph.output)
    if len(inputs) != 1:
        raise LiveError(f"{src} has {len(inputs)} inputs ({', '.join(_describe(v) for v in inputs)}); {expects}",
                        "import a single-input style network, or pick the preset that matches it")
    image = inputs[0]
    shape = dims(image)
    if (image.type.tensor_type.elem_type != TensorProto.FLOAT or not _fits(shape, preset.shape, dynamic_ok=False)
            or preset.input_name not in (None, image.name)):
        raise LiveError(f"{src}: input {_describe(image)} does not fit; {expects}",
                        "re-export the model in that layout, or pick the preset that matches it")
    fixed = [isinstance(d, int) for d in shape[2:]]
    if any(fixed) and not all(fixed):
        raise LiveError(f"{src}: input {_describe(image)} has one fixed and one dynamic side; {expects}",
                        "re-export with both H and W fixed, or both dynamic")
    out_shape = dims(outputs[0]) if len(outputs) == 1 else None
    if (len(outputs) != 1 or outputs[0].type.tensor_type.elem_type != TensorProto.FLOAT
            or out_shape is not None and not _fits(out_shape, (None, 3, None, None), dynamic_ok=True)):
        raise LiveError(f"{src}: outputs {', '.join(_describe(v) for v in outputs)} do not fit; {expects}",
                        "import a network with one float32 [1, 3, H, W] image output")
    return (shape[2], shape[3]) if all(fixed) else None


def _load(src: Path) -> onnx.ModelProto:
    if not src.is_file():
        raise LiveError(f"model to import not found: {src}", "give the path of an .onnx file")
    try:
        return onnx.load(str(src))
    except Exception as err:  # protobuf DecodeError, missing external data, ...: all mean an unusable file
        raise LiveError(f"{src} is not a readable ONNX model ({type(err).__name__}: {err})",
                        "check the download is complete, or re-export the model") from None


def _upgrade(src: Path, model: onnx.ModelProto) -> onnx.ModelProto:
    """The model at opset >= OPSET (the wrapper's ops need it); newer opsets are kept as they are."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    if version >= OPSET:
        return model
    try:
        return version_converter.convert_version(model, OPSET)
    except Exception as err:
        raise LiveError(f"{src}: cannot convert opset {version} to {OPSET} ({str(err).strip()[:200]})",
                        f"re-export the model at opset {OPSET} or newer") from None


def wrap(model: onnx.ModelProto, size: tuple[int, int] | None) -> onnx.ModelProto:
    """The foreign graph inside our contract: `frame` uint8 BGR HWC + `strength` [1] -> `frame_out` uint8."""
    inner = onnx.compose.add_prefix(model, PREFIX)
    model_in, model_out = graph_inputs(inner.graph)[0].name, inner.graph.output[0].name
    f32 = TensorProto.FLOAT
    g = GraphBuilder()
    zero, one = g.const(0.0), g.const(1.0)

    rgb = g.op("Gather", g.op("Cast", "frame", to=f32), g.ints(2, 1, 0), axis=2)
    x = g.op("Unsqueeze", g.op("Transpose", rgb, perm=[2, 0, 1]), g.ints(0))  # [1, 3, H, W] in 0..255
    frame_size = g.op("Concat", g.ints(1, 3), g.op("Slice", g.op("Shape", "frame"), g.ints(0), g.ints(2)), axis=0)
    fed = g.op("Resize", x, "", "", g.ints(1, 3, *size), mode="linear", antialias=1) if size else x
    g.nodes.append(helper.make_node("Identity", [fed], [model_in]))
    g.nodes.extend(inner.graph.node)

    # Back to the frame's size: undoes the fixed-size resize, and also absorbs a dynamic network whose output
    # is a few pixels off (stride-2 convs then 2x upsampling on a side not divisible by 4).
    styled = g.op("Resize", g.op("Clip", model_out, zero, g.const(255.0)), "", "", frame_size, mode="linear")
    mixed = g.op("Add", x, g.op("Mul", g.op("Sub", styled, x), g.op("Clip", "strength", zero, one)))
    bgr = g.op("Gather", g.op("Squeeze", mixed, g.ints(0)), g.ints(2, 1, 0), axis=0)
    out = g.op("Cast", g.op("Round", bgr), to=TensorProto.UINT8)
    g.nodes.append(helper.make_node("Transpose", [out], ["frame_out"], perm=[1, 2, 0]))

    graph = helper.make_graph(
        g.nodes, "imported",
        [helper.make_tensor_value_info("frame", TensorProto.UINT8, ["H", "W", 3]),
         helper.make_tensor_value_info("strength", f32, [1])],
        [helper.make_tensor_value_info("frame_out", TensorProto.UINT8, ["H", "W", 3])],
        initializer=[*g.initializers, *inner.graph.initializer], value_info=inner.graph.value_info)
    opsets = [o for o in inner.opset_import if o.domain not in ("", "ai.onnx")]
    opsets.append(helper.make_opsetid("", max(OPSET, *(o.version for o in inner.opset_import
                                                        if o.domain in ("", "ai.onnx")))))
    wrapped = helper.make_model(graph, opset_imports=opsets, producer_name="live.models.importer",
                                functions=inner.functions)
    wrapped.ir_version = min(max(inner.ir_version, helper.find_min_ir_version_for(opsets)), MAX_IR)
    return wrapped


def import_model(src: Path, preset: str, out_dir: Path, name: str | None = None, styles: list[str] | None = None,
                 licence: str = DEFAULT_LICENCE, force: bool = False, command: str = "") -> Path:
    """Wrap `src`, verify it on ONNX Runtime, then write `<name>.onnx` and `<name>.json` into `out_dir`.
    Everything is built and checked in a temporary folder first, so a failure leaves `out_dir` untouched."""
    from live.models.verify import verify

    if preset not in PRESETS:
        raise LiveError(f"unknown preset '{preset}'", f"use one of: {', '.join(PRESETS)}")
    name = name or src.stem
    if not NAME_PATTERN.fullmatch(name):
        raise LiveError(f"model name '{name}' is not usable as a file name",
                        "give --name with letters, digits, '.', '_' or '-'")
    styles = styles or [name]
    if len(styles) != 1:
        raise LiveError(f"--styles names {len(styles)} styles, but a {preset} network has exactly one",
                        "give one label, e.g. --styles mosaic")
    original = _load(src)
    manifest_out = out_dir / f"{name}.json"
    if not force and (manifest_out.exists() or manifest_out.with_suffix(".onnx").exists()):
        raise LiveError(f"{manifest_out} already exists", "choose another --name, or pass --force to replace it")
    size = _check_preset(src, original, preset)
    opset = next((o.version for o in original.opset_import if o.domain in ("", "ai.onnx")), 1)
    wrapped = wrap(_upgrade(src, original), size)
    try:
        onnx.checker.check_model(wrapped, full_check=True)
    except Exception as err:
        raise LiveError(f"{src}: the wrapped model is not valid ONNX ({str(err).strip()[:300]})",
                        "check the model runs on ONNX Runtime as it is, or re-export it at a newer opset") from None

    image = {"dtype": "uint8", "shape": ["H", "W", 3], "layout": "HWC", "color": "BGR", "range": (0, 255)}
    with tempfile.TemporaryDirectory(prefix="live-import-") as tmp:
        staged = Path(tmp) / f"{name}.onnx"
        staged.write_bytes(wrapped.SerializeToString())
        staged_manifest = write_manifest(
            staged, name=name, kind="image-to-image", tier="any",
            inputs=[{"name": "frame", **image, "doc": "camera frame, passed as-is"},
                    {"name": "strength", "dtype": "float32", "shape": [1], "range": (0, 1),
                     "doc": "0 = camera image unchanged, 1 = fully stylized"}],
            outputs=[{"name": "frame_out", **image, "doc": "stylized frame, same size as the input"}],
            controls={"styles": styles, "strength_input": "strength"},
            provenance={"command": command, "imported_from": str(src.resolve()), "preset": preset,
                        "original_sha256": sha256_of(src), "original_opset": opset,
                        "model_size": list(size) if size else "dynamic"},
            licence=licence)
        result = verify(staged_manifest)
        if result.problem:
            raise LiveError(f"{src}: the imported model fails its check: {result.problem}",
                            "check the model runs on ONNX Runtime as it is and matches the preset")
        out_dir.mkdir(parents=True, exist_ok=True)
        model_out = manifest_out.with_suffix(".onnx")
        atomic_write(model_out, staged.read_bytes())
        try:
            atomic_write(manifest_out, staged_manifest.read_bytes())
        except BaseException:
            model_out.unlink(missing_ok=True)
            raise
    return manifest_out
