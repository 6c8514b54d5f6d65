"""A stand-in melody model for tests: the "music-sequence" contract (tokens, positions, state in; logits, state_out
out) as a real ONNX graph: an untrained two-layer GRU the size of the shipped one (live/train/music.py: embedding 64,
256 wide), with seeded random weights, built with onnx.helper in milliseconds (no torch export in the test's time),
so its cost per step is the shipped model's. What it plays is random, so what a test asserts about keys and copies
is the live part's doing (key lock, redraws), never the model's learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from live.models.manifest import write_manifest
from live.music import tokens as tk

EMBED, HIDDEN, LAYERS = 64, 256, 2


def build_stand_in(folder: Path, seed: int = 0) -> Path:
    """`folder/music-stand-in.onnx` and its manifest; returns the manifest's path."""
    rng = np.random.default_rng(seed)
    weights = {
        "embed_token": rng.normal(0, 1, (tk.VOCAB, EMBED)),
        "embed_position": rng.normal(0, 1, (tk.BAR_STEPS, EMBED)),
        "W_out": rng.normal(0, 0.3, (HIDDEN, tk.VOCAB)),
        "b_out": np.r_[0.5, 2.0, np.zeros(tk.VOCAB - 2)],  # rests and holds likelier: notes of a few steps
    }
    for layer in range(LAYERS):
        width = EMBED if layer == 0 else HIDDEN
        weights |= {f"W{layer}": rng.normal(0, 1 / np.sqrt(width), (1, 3 * HIDDEN, width)),
                    f"R{layer}": rng.normal(0, 1 / np.sqrt(HIDDEN), (1, 3 * HIDDEN, HIDDEN)),
                    f"B{layer}": np.zeros((1, 6 * HIDDEN))}
    initializers = [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()]
    initializers += [numpy_helper.from_array(np.array(v, np.int64), name)
                     for name, v in (("axis_1", [1]), ("axis_0", [0]), ("one", [1]), ("two", [2]), ("zero", [0]))]
    nodes = [
        helper.make_node("Gather", ["embed_token", "tokens"], ["tok"]),
        helper.make_node("Gather", ["embed_position", "positions"], ["pos"]),
        helper.make_node("Add", ["tok", "pos"], ["x"]),
        helper.make_node("Transpose", ["x"], ["h0"], perm=[1, 0, 2]),  # [T, 1, E]: ONNX's GRU is sequence-first
    ]
    for layer in range(LAYERS):  # each layer's state is state[layer:layer + 1]
        bounds = ("zero", "one") if layer == 0 else ("one", "two")
        nodes += [helper.make_node("Slice", ["state", *bounds, "axis_0"], [f"s{layer}"]),
                  helper.make_node("GRU", [f"h{layer}", f"W{layer}", f"R{layer}", f"B{layer}", "", f"s{layer}"],
                                   [f"y{layer}", f"last{layer}"], hidden_size=HIDDEN),
                  helper.make_node("Squeeze", [f"y{layer}", "axis_1"], [f"h{layer + 1}"])]
    nodes += [
        helper.make_node("Concat", [f"last{layer}" for layer in range(LAYERS)], ["state_out"], axis=0),
        helper.make_node("Transpose", [f"h{LAYERS}"], ["y_b"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["y_b", "W_out"], ["z"]),
        helper.make_node("Add", ["z", "b_out"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "music-stand-in",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "T"]),
         helper.make_tensor_value_info("positions", TensorProto.INT64, [1, "T"]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [LAYERS, 1, HIDDEN])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "T", tk.VOCAB]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [LAYERS, 1, HIDDEN])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)  # what ORT reads
    onnx.checker.check_model(model)
    path = folder / "music-stand-in.onnx"
    onnx.save(model, str(path))
    return write_manifest(
        path, name="music-stand-in", kind="music-sequence", licence="none (random weights, no data)",
        inputs=[{"name": "tokens", "dtype": "int64", "shape": [1, "T"]},
                {"name": "positions", "dtype": "int64", "shape": [1, "T"]},
                {"name": "state", "dtype": "float32", "shape": [LAYERS, 1, HIDDEN]}],
        outputs=[{"name": "logits", "dtype": "float32", "shape": [1, "T", tk.VOCAB]},
                 {"name": "state_out", "dtype": "float32", "shape": [LAYERS, 1, HIDDEN]}],
        controls={"vocab": tk.VOCAB, "low": tk.LOW, "high": tk.HIGH, "steps_per_beat": tk.STEPS_PER_BEAT,
                  "bar_steps": tk.BAR_STEPS, "state_shape": [LAYERS, 1, HIDDEN]},
        provenance={"built_by": "tests/fixtures_music.py", "seed": seed})


@pytest.fixture(scope="session")
def music_stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stand_in(tmp_path_factory.mktemp("music-model"))
