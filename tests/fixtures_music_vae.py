"""The shipped music VAE (exported_models/music-vae-*.json, written by `live train music`) for the morph tests: its
two first presets are morph's default melodies A and B."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

EXPORTED = Path(__file__).resolve().parents[1] / "exported_models"
ENCODER, DECODER = EXPORTED / "music-vae-encoder.json", EXPORTED / "music-vae-decoder.json"


@pytest.fixture(scope="session")
def music_vae() -> tuple[Path, Path]:
    """The encoder's and the decoder's manifests."""
    return ENCODER, DECODER


def presets() -> tuple[np.ndarray, np.ndarray]:
    """The decoder manifest's first two presets (two bars of tokens each): A and B."""
    a, b = list(json.loads(DECODER.read_text())["controls"]["presets"].values())[:2]
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def onnx_argmax(encoder: Path, decoder: Path, tokens: np.ndarray) -> np.ndarray:
    """The tokens the VAE reconstructs `tokens` as (argmax each step), run straight on ONNX Runtime."""
    import onnxruntime as ort

    cpu = ["CPUExecutionProvider"]
    (mu,) = ort.InferenceSession(str(encoder.with_suffix(".onnx")), providers=cpu).run(["mu"],
                                                                                      {"tokens": tokens[None]})
    (logits,) = ort.InferenceSession(str(decoder.with_suffix(".onnx")), providers=cpu).run(["logits"], {"z": mu})
    return logits[0].argmax(axis=-1)
