"""Half-precision (fp16) variants of the painterly models for the GPU tier: `<name>-fp16.onnx`, tier "gpu".

Built from the shipped float model (by `make models`, after it), so the variant always matches it: the network's
layers and weights become float16 with ONNX Runtime's own converter; live's wrapper around it (uint8 BGR in and
out, the style-weight normalisation, padding, the strength mix and the final rounding) stays float32, because there
fp16 would cost grey levels for no speed. The network is told from the wrapper by its node names: the converted
package graphs name every node, live's GraphBuilder names none.

Each file is about 430 KB (the float ones 750-800 KB), so they ship in exported_models/ beside their sources.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper
from onnxruntime.transformers.float16 import convert_float_to_float16

from live.models.manifest import atomic_write, load_manifest, write_manifest

SOURCES = ("painterly-arbitrary", "painterly-26")  # float models in exported_models/ that get an fp16 variant
COMMAND = "python -m live.models.build"
METHOD = ("onnxruntime.transformers.float16.convert_float_to_float16 (keep_io_types, default op block list) on the "
          "network's named nodes only, a Cast at each edge; live's unnamed wrapper nodes stay float32")


def _sorted(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where each runs after the nodes making its inputs (ONNX requires it); stable."""
    ordered, pending, ready = [], list(nodes), set(available)
    while pending:
        waiting = []
        for node in pending:
            if all(not name or name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input at {waiting[0].op_type} {waiting[0].name!r}")
        pending = waiting
    return ordered


def half_precision(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its network (named nodes) in float16 and its wrapper (unnamed nodes) in float32."""
    graph = model.graph
    network = [node for node in graph.node if node.name]
    wrapper = [node for node in graph.node if not node.name]
    if not network or not wrapper:
        raise ValueError(f"{graph.name}: no network/wrapper split (named and unnamed nodes) to convert")
    initializers = {t.name: t for t in graph.initializer}
    made = {name for node in network for name in node.output}
    read = {name for node in network for name in node.input if name}
    wrapper_reads = {name for node in wrapper for name in node.input} | {o.name for o in graph.output}
    shared = read & wrapper_reads & set(initializers)
    if shared:
        raise ValueError(f"{graph.name}: initializers read by both network and wrapper: {sorted(shared)[:3]}")
    edge_in = sorted(read - made - set(initializers))
    edge_out = sorted(made & wrapper_reads)
    core = helper.make_model(
        helper.make_graph(network, "network",
                          [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in edge_in],
                          [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in edge_out],
                          [initializers[name] for name in sorted(read & set(initializers))]),
        opset_imports=list(model.opset_import), ir_version=model.ir_version)
    half = convert_float_to_float16(core, keep_io_types=True)
    nodes = _sorted([*wrapper, *half.graph.node], {i.name for i in graph.input} | set(initializers))
    kept = [initializers[name] for name in sorted(wrapper_reads & set(initializers))]
    out = helper.make_model(
        helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), [*kept, *half.graph.initializer]),
        opset_imports=list(model.opset_import), ir_version=model.ir_version, producer_name=model.producer_name)
    onnx.checker.check_model(out, full_check=True)
    return out


def build(out_dir: Path, sources: tuple[str, ...] = SOURCES) -> list[Path]:
    """Write `<name>-fp16.onnx` and its manifest for each float model in `out_dir` (which must be current)."""
    paths = []
    for name in sources:
        source = load_manifest(out_dir / f"{name}.json")
        path = out_dir / f"{name}-fp16.onnx"
        model = half_precision(onnx.load(str(source.onnx_path)))
        atomic_write(path, model.SerializeToString(deterministic=True))
        fields = source.model_dump(include={"kind", "inputs", "outputs", "controls", "licence"})
        write_manifest(path, name=path.stem, tier="gpu", **fields, provenance={
            "command": COMMAND, "method": METHOD, "from": {source.file: source.sha256},
            "source_provenance": source.provenance})
        paths.append(path)
    return paths
