"""A stand-in for the music VAE (live train music): an encoder and a decoder with seeded random weights, exported
and described exactly as the trained ones are (ONNX through live/train/export.py, manifests of kind music-encoder
and music-decoder), so the live modes are tested on real ONNX Runtime sessions before and after training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from live.music.tokens import BAR_STEPS, VOCAB, Note, encode

LATENT = 8
STEPS = 2 * BAR_STEPS
# Two presets: a rising C major line in quarters, and a falling G major arpeggio in eighths.
PRESETS = {
    "rising": [Note(4 * i, 4, p) for i, p in enumerate((60, 62, 64, 65, 67, 69, 71, 72))],
    "falling": [Note(2 * i, 2, p) for i, p in enumerate((79, 74, 71, 67, 74, 71, 67, 62) * 2)],
}


def build_standin_vae(folder: Path, latent: int = LATENT, seed: int = 0) -> tuple[Path, Path]:
    """Write music-vae-encoder.onnx/.json and music-vae-decoder.onnx/.json into `folder`; their manifest paths."""
    import torch

    from live.models.manifest import write_manifest
    from live.train.export import export_onnx

    torch.manual_seed(seed)
    torch.set_num_threads(1)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.mu = torch.nn.Embedding(VOCAB, 4), torch.nn.Linear(STEPS * 4, latent)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.mu(self.embed(tokens).flatten(1))

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = torch.nn.Linear(latent, STEPS * VOCAB)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.logits(z).view(-1, STEPS, VOCAB)

    controls = {"latent": latent, "bars": STEPS // BAR_STEPS,
                "presets": {name: encode(notes, STEPS).tolist() for name, notes in PRESETS.items()}}
    common = {"tier": "cpu", "controls": controls, "licence": "test fixture, no data",
              "provenance": {"made_by": "tests/fixtures_music.py", "weights": f"random, seed {seed}"}}
    encoder, decoder = folder / "music-vae-encoder.onnx", folder / "music-vae-decoder.onnx"
    export_onnx(Encoder(), (torch.zeros(1, STEPS, dtype=torch.int64),), encoder, ["tokens"], ["mu"])
    export_onnx(Decoder(), (torch.zeros(1, latent),), decoder, ["z"], ["logits"])
    tokens = {"name": "tokens", "dtype": "int64", "shape": [1, STEPS]}
    mu = {"name": "mu", "dtype": "float32", "shape": [1, latent]}
    logits = {"name": "logits", "dtype": "float32", "shape": [1, STEPS, VOCAB]}
    return (write_manifest(encoder, name="music-vae-encoder", kind="music-encoder", inputs=[tokens], outputs=[mu],
                           **common),
            write_manifest(decoder, name="music-vae-decoder", kind="music-decoder", inputs=[{**mu, "name": "z"}],
                           outputs=[logits], **common))


@pytest.fixture(scope="module")
def standin_vae(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The stand-in VAE's encoder and decoder manifests, built once per test module."""
    return build_standin_vae(tmp_path_factory.mktemp("music-vae"))


def onnx_argmax(encoder: Path, decoder: Path, tokens: np.ndarray) -> np.ndarray:
    """The tokens the VAE reconstructs `tokens` as (argmax each step), run straight on ONNX Runtime."""
    import onnxruntime as ort

    cpu = ["CPUExecutionProvider"]
    (mu,) = ort.InferenceSession(str(encoder.with_suffix(".onnx")), providers=cpu).run(["mu"],
                                                                                      {"tokens": tokens[None]})
    (logits,) = ort.InferenceSession(str(decoder.with_suffix(".onnx")), providers=cpu).run(["logits"], {"z": mu})
    return logits[0].argmax(axis=-1)
