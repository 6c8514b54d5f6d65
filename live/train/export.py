"""Export a trained torch module to ONNX the way every shipped model needs it: opset 18, checked against torch on
ONNX Runtime, and moved into place only when whole (a failed export leaves nothing half-written behind).

The file depends only on the graph and the weights: the exporter's debugging metadata (each node's source file
path, line and FX node, the exported program's symbol names) is dropped, so the same training run writes the same
bytes from any checkout.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from live.errors import LiveError

OPSET = 18  # what torch.export emits natively; converting down to 17 fails on Pad


def command_line(kind: str, argv: list[str]) -> str:
    """The exact `live train` command, for a manifest's provenance."""
    return shlex.join(["live", "train", kind, *argv])


def export_onnx(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
                output_names: list[str], dynamic_shapes: Any = None, check: tuple[torch.Tensor, ...] | None = None,
                tolerance: float = 1e-3, dynamic_axes: dict[str, dict[int, str]] | None = None) -> float:
    """Export `module` to `path` and return the max |torch - ORT| difference on `check` (default: `example`).

    Raises LiveError (and writes nothing) if the export fails or ORT disagrees with torch by more than
    `tolerance`. Inputs to `check` may differ in size from `example` to prove dynamic axes work.

    `dynamic_axes` (names -> {axis: name}) takes torch's TorchScript exporter instead of torch.export: the only
    one that writes nn.GRU/nn.LSTM as ONNX's own recurrent operators, so a sequence axis stays dynamic
    (torch.export unrolls the recurrence over the example's length).
    """
    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if dynamic_axes is not None:
                torch.onnx.export(module, example, str(tmp), dynamo=False, opset_version=OPSET,
                                  input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes)
            else:
                program = torch.onnx.export(module, example, dynamo=True, opset_version=OPSET,
                                            input_names=input_names, output_names=output_names,
                                            dynamic_shapes=dynamic_shapes, verbose=False)
                program.save(str(tmp))
        _strip_metadata(tmp)
        inputs = check or example
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {name: t.detach().numpy() for name, t in zip(input_names, inputs)})
        with torch.no_grad():
            want = module(*inputs)
        want = want if isinstance(want, (tuple, list)) else (want,)
        diff = max(float(np.abs(g.astype(np.float64) - w.detach().numpy().astype(np.float64)).max())
                   for g, w in zip(got, want))
        if diff > tolerance:
            raise LiveError(f"ONNX export of {path.name} disagrees with torch by {diff:.3g} (> {tolerance:g})",
                            "report this: an operator exported wrongly")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return diff
    except LiveError:
        raise
    except Exception as err:  # torch.export raises many types; the user needs the one line
        raise LiveError(f"could not export {path.name} to ONNX: {type(err).__name__}: {str(err)[:300]}",
                        "check the model code; set LIVE_DEBUG=1 for the full error") from err
    finally:
        tmp.unlink(missing_ok=True)


def _strip_metadata(path: Path) -> None:
    """Drop the exporter's metadata_props (source paths, line numbers, FX names) from the model, graph and nodes."""
    model = onnx.load(str(path))
    graphs = [model.graph]
    model.ClearField("metadata_props")
    while graphs:
        graph = graphs.pop()
        graph.ClearField("metadata_props")
        for node in graph.node:
            node.ClearField("metadata_props")
            for attribute in node.attribute:  # subgraphs (If, Loop, Scan)
                graphs += ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
    for function in model.functions:
        function.ClearField("metadata_props")
        for node in function.node:
            node.ClearField("metadata_props")
    onnx.save(model, str(path))
