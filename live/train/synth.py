"""`live train synth`: train the DDSP synth decoder as an autoencoder through the synth's own DSP, export the decoder.

An encoder summarises each note's timbre (its level-free log-mel shape and pitch) as z in -1..1 (4 numbers);
the decoder maps (f0, loudness, z) per control frame to the synth's controls; ddsp.py renders them exactly as
live/audio/synth.py will, and a multi-scale spectral loss compares the result with the note. Only the decoder
is exported, with the same ONNX contract as the shipped `synth-decoder`, so the engine plays it unchanged.
After training the latent is rescaled so -1..1 spans the training notes (2nd..98th percentile per axis), and
each axis is probed to say what it does.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from live.audio.synth import HARMONICS, NOISE_BANDS, TIMBRE_AXES
from live.errors import LiveError
from live.models.manifest import TensorSpec, write_manifest
from live.train import ddsp
from live.train.export import command_line, export_onnx
from live.train.seeding import TRAIN_THREADS, reproducible
from live.train.synth_data import (BLOCK, FAMILIES, MIDI_RANGE, NOTE_FRAMES, RATE, Note, corpus,
                                   mel_filters, timbre_features, wav_notes)

NAME = "synth-ddsp"
LATENT = len(TIMBRE_AXES)
F0_RANGE = (20.0, 14000.0)
F0_OCTAVES = 1.5  # log2(f0/440) / F0_OCTAVES is the net's pitch input, as in the shipped decoder
OUTPUTS = ("harmonics", "noise", "amplitude")
INPUTS = ("f0_hz", "loudness", "timbre")


@dataclass
class Config:
    """What a run does; the defaults are the real run's, tests shrink them."""

    steps: int = 4000
    seed: int = 0
    notes: int = 384
    batch: int = 8
    clip_frames: int = 64  # 0.17 s of audio per example: room for the 2048-point FFT
    hidden: int = 192
    rate: float = 2e-3
    latent_noise: float = 0.05  # jitter on z while training, so the decoder is smooth between notes
    log_every: int = 100
    threads: int = TRAIN_THREADS  # torch threads: part of the result (reductions split by thread)


class Decoder(nn.Module):
    """(f0_hz [V,1], loudness [V,1], timbre [V,4]) -> harmonics [V,64] (softmax), noise [V,65], amplitude [V,1].

    Two tanh layers over normalised inputs. Noise and amplitude are sigmoids times loudness: within 0..1 and
    silent at loudness 0. `latent_scale`/`latent_shift` map the user's -1..1 onto the encoder's range.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 + LATENT, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, HARMONICS + NOISE_BANDS + 1))
        self.register_buffer("latent_scale", torch.ones(LATENT))
        self.register_buffer("latent_shift", torch.zeros(LATENT))
        head = self.net[-1]
        with torch.no_grad():  # start saw-like (1/k), nearly noiseless, at the reference level
            head.weight.mul_(0.1)
            head.bias.zero_()
            head.bias[:HARMONICS] = -torch.log(torch.arange(1, HARMONICS + 1, dtype=torch.float32))
            head.bias[HARMONICS:HARMONICS + NOISE_BANDS] = -6.0

    def forward(self, f0_hz: torch.Tensor, loudness: torch.Tensor,
                timbre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pitch = torch.log2(torch.clamp(f0_hz, *F0_RANGE) / 440.0) / F0_OCTAVES
        loud = torch.clamp(loudness, 0.0, 1.0)
        latent = torch.clamp(timbre, -1.0, 1.0) * self.latent_scale + self.latent_shift
        heads = self.net(torch.cat([pitch, 2.0 * loud - 1.0, latent], dim=1))
        logits, noise, amplitude = torch.split(heads, [HARMONICS, NOISE_BANDS, 1], dim=1)
        return torch.softmax(logits, dim=1), torch.sigmoid(noise) * loud, torch.sigmoid(amplitude) * loud


class Folded(nn.Module):
    """The decoder as it is exported: the same function, with the input normalisation (log2 pitch scaling,
    2 * loudness - 1, the latent's scale and shift) folded into the first layer's weights, and one sigmoid for the
    noise and amplitude heads. Fewer graph nodes: the engine runs it once per block, where ONNX Runtime's cost per
    node is most of the decoder's time (15 nodes instead of 21, about a fifth faster for one voice)."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        first = decoder.net[0]
        weight, bias = first.weight.detach().double(), first.bias.detach().double()
        per_log = 1.0 / (math.log(2.0) * F0_OCTAVES)  # pitch = (ln f0 - ln 440) * per_log
        folded = torch.cat([weight[:, :1] * per_log, weight[:, 1:2] * 2.0,
                            weight[:, 2:] * decoder.latent_scale.double()], dim=1)
        shift = bias - weight[:, 0] * math.log(440.0) * per_log - weight[:, 1] \
            + weight[:, 2:] @ decoder.latent_shift.double()
        self.first = nn.Linear(first.in_features, first.out_features)
        with torch.no_grad():
            self.first.weight.copy_(folded.float())
            self.first.bias.copy_(shift.float())
        self.rest = nn.Sequential(nn.Tanh(), *decoder.net[2:])

    def forward(self, f0_hz: torch.Tensor, loudness: torch.Tensor,
                timbre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loud = torch.clamp(loudness, 0.0, 1.0)
        inputs = torch.cat([torch.log(torch.clamp(f0_hz, *F0_RANGE)), loud, torch.clamp(timbre, -1.0, 1.0)], dim=1)
        logits, gains = torch.split(self.rest(self.first(inputs)), [HARMONICS, NOISE_BANDS + 1], dim=1)
        noise, amplitude = torch.split(torch.sigmoid(gains) * loud, [NOISE_BANDS, 1], dim=1)
        return torch.softmax(logits, dim=1), noise, amplitude


class Encoder(nn.Module):
    """A note's timbre features -> z in -1..1 (trained with the decoder, never exported)."""

    def __init__(self, features: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, LATENT), nn.Tanh())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


@dataclass
class Data:
    """Notes stacked for fast batching: audio [N, F*BLOCK]; f0, loudness [N, F+1] with a silent frame 0."""

    audio: np.ndarray
    f0: np.ndarray
    loudness: np.ndarray
    features: np.ndarray
    labels: list[str]

    @classmethod
    def of(cls, notes: list[Note]) -> Data:
        filters = mel_filters()
        features = np.stack([timbre_features(n, filters) for n in notes])
        features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-3)  # standardised per column
        return cls(np.stack([n.audio for n in notes]),
                   np.stack([np.concatenate([n.f0[:1], n.f0]) for n in notes]),
                   np.stack([np.concatenate([[0.0], n.loudness]) for n in notes]).astype(np.float32),
                   features.astype(np.float32), [n.label for n in notes])

    def batch(self, rng: np.random.Generator, size: int, frames: int) -> tuple[torch.Tensor, ...]:
        """Random clips: (features [B,M], f0 [B,T+1], loudness [B,T+1], audio [B,T*BLOCK])."""
        index = rng.integers(0, len(self.labels), size)
        start = rng.integers(0, self.f0.shape[1] - frames, size)  # padded frame index of each clip's lead-in
        span = start[:, None] + np.arange(frames + 1)
        samples = (start[:, None] * BLOCK + np.arange(frames * BLOCK))
        return (torch.from_numpy(self.features[index]), torch.from_numpy(self.f0[index[:, None], span]),
                torch.from_numpy(self.loudness[index[:, None], span]),
                torch.from_numpy(self.audio[index[:, None], samples]))


def render(decoder: Decoder, z: torch.Tensor, f0: torch.Tensor, loudness: torch.Tensor,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """What the synth would play for these clips (per-note z broadcast over frames), before its gain stage."""
    batch, frames = f0.shape
    timbre = z[:, None, :].expand(batch, frames, LATENT).reshape(-1, LATENT)
    harmonics, noise, amplitude = decoder(f0.reshape(-1, 1), loudness.reshape(-1, 1), timbre)
    amps = (harmonics * amplitude).view(batch, frames, HARMONICS)
    return ddsp.harmonic(f0, amps, RATE, BLOCK) + ddsp.noise(noise.view(batch, frames, NOISE_BANDS), BLOCK, generator)


def loss_on(decoder: Decoder, encoder: Encoder, clips: tuple[torch.Tensor, ...],
            generator: torch.Generator | None = None, latent_noise: float = 0.0) -> torch.Tensor:
    features, f0, loudness, audio = clips
    z = encoder(features)
    if latent_noise:
        z = z + latent_noise * torch.randn(z.shape, generator=generator)
    return ddsp.spectral_loss(render(decoder, z, f0, loudness, generator), audio)


@dataclass
class Result:
    decoder: Decoder
    encoder: Encoder
    losses: list[float]  # training loss per step
    valid: float  # loss on a fixed held-out batch (fixed noise), after training
    seconds: float


def train(data: Data, config: Config, log: Callable[[str], None] = print) -> Result:
    """Adam on the spectral loss, learning rate cosine-decayed to 5%; one in 16 notes held out for `valid`.

    Repeats bit for bit for the same data and config on the same kind of machine (live.train.seeding).
    """
    generator = reproducible(config.seed, config.threads)
    rng = np.random.default_rng(config.seed)
    held = np.arange(len(data.labels)) % 16 == 15 if len(data.labels) >= 16 else np.zeros(len(data.labels), bool)
    fit, check = _subset(data, ~held), _subset(data, held) if held.any() else data
    decoder, encoder = Decoder(config.hidden), Encoder(data.features.shape[1])
    params = [*decoder.parameters(), *encoder.parameters()]
    optimiser = torch.optim.Adam(params, lr=config.rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s / max(config.steps, 1), 1.0))))
    losses: list[float] = []
    began = time.monotonic()
    for step in range(1, config.steps + 1):
        loss = loss_on(decoder, encoder, fit.batch(rng, config.batch, config.clip_frames), generator,
                       config.latent_noise)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if step % config.log_every == 0 or step == config.steps:
            recent = np.mean(losses[-config.log_every:])
            log(f"step {step}/{config.steps}  loss {recent:.4f}  {time.monotonic() - began:.0f} s")
    with torch.no_grad():
        valid = float(loss_on(decoder, encoder, check.batch(np.random.default_rng(1), 32, config.clip_frames),
                              torch.Generator().manual_seed(1)))
    return Result(decoder.eval(), encoder.eval(), losses, valid, time.monotonic() - began)


def _subset(data: Data, keep: np.ndarray) -> Data:
    return Data(data.audio[keep], data.f0[keep], data.loudness[keep], data.features[keep],
                [label for label, k in zip(data.labels, keep) if k])


# --- after training: span the latent, probe it, export ---------------------------------------------------------------

def span_latent(decoder: Decoder, encoder: Encoder, data: Data) -> np.ndarray:
    """Map -1..1 onto the 2nd..98th percentile of the notes' z per axis; returns the notes' z in the new scale."""
    with torch.no_grad():
        z = encoder(torch.from_numpy(data.features)).numpy()
    lo, hi = np.percentile(z, 2, axis=0), np.percentile(z, 98, axis=0)
    scale = np.maximum((hi - lo) / 2.0, 1e-3)
    decoder.latent_scale.copy_(torch.from_numpy(scale.astype(np.float32)))
    decoder.latent_shift.copy_(torch.from_numpy(((hi + lo) / 2.0).astype(np.float32)))
    return np.clip((z - (hi + lo) / 2.0) / scale, -1.0, 1.0)


def probe(decoder: Decoder, timbre: np.ndarray, f0: float = 220.0, loudness: float = 0.7) -> dict[str, float]:
    """Spectral summary of the decoder at one timbre: centroid (Hz), even/odd balance, noise share of the power."""
    with torch.no_grad():
        harmonics, noise, amplitude = (t[0].numpy().astype(np.float64) for t in decoder(
            torch.tensor([[f0]]), torch.tensor([[loudness]]), torch.tensor(timbre, dtype=torch.float32)[None]))
    k = np.arange(1, HARMONICS + 1)
    power = (harmonics * amplitude[0] * (k * f0 < RATE / 2)) ** 2 / 2.0
    bands = np.linspace(0.0, RATE / 2, NOISE_BANDS)
    noise_power = noise**2 / NOISE_BANDS  # flat gains g make noise of variance g^2: each band holds ~1/65 of it
    freqs = np.concatenate([k * f0, bands])
    weights = np.concatenate([power, noise_power])
    return {"centroid_hz": float((freqs * weights).sum() / weights.sum()),
            "even_odd": float(power[1::2].sum() / max(power[0::2].sum(), 1e-12)),
            "noise_share": float(noise_power.sum() / weights.sum())}


def describe_axes(decoder: Decoder, z: np.ndarray, labels: list[str]) -> list[dict[str, object]]:
    """Per axis: which sources sit at each end (mean z per label) and what -1 -> +1 does to the spectrum."""
    names = sorted(set(labels))
    means = np.array([z[[label == n for label in labels]].mean(axis=0) for n in names])
    axes = []
    for axis in range(LATENT):
        ends = [probe(decoder, np.eye(LATENT)[axis] * sign) for sign in (-1.0, 1.0)]
        low, high = names[int(means[:, axis].argmin())], names[int(means[:, axis].argmax())]
        change = {key: (round(ends[0][key], 3), round(ends[1][key], 3)) for key in ends[0]}
        ratios = {"brighter" if change["centroid_hz"][1] > change["centroid_hz"][0] else "darker":
                  abs(np.log(change["centroid_hz"][1] / change["centroid_hz"][0])),
                  "more even harmonics" if change["even_odd"][1] > change["even_odd"][0] else "more hollow":
                  abs(np.log((change["even_odd"][1] + 1e-3) / (change["even_odd"][0] + 1e-3))) / 3.0,
                  "noisier" if change["noise_share"][1] > change["noise_share"][0] else "purer":
                  abs(np.log((change["noise_share"][1] + 1e-4) / (change["noise_share"][0] + 1e-4))) / 3.0}
        effect = max(ratios, key=ratios.get)
        axes.append({"name": f"{low}-{high} ({effect})", "effect": f"-1 -> +1: {effect}",
                     "family_means": {n: round(float(m[axis]), 2) for n, m in zip(names, means)},
                     "probe_at_f0_220": change})
    return axes


def tensor_specs() -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(name: str, width: int, lo: float, hi: float, doc: str) -> TensorSpec:
        return TensorSpec(name=name, dtype="float32", shape=["voices", width], layout="NC", range=(lo, hi), doc=doc)

    return ([spec("f0_hz", 1, *F0_RANGE, "fundamental frequency per voice (clipped to the range)"),
             spec("loudness", 1, 0.0, 1.0, "envelope x velocity per voice"),
             spec("timbre", LATENT, -1.0, 1.0, "learned timbre latent (see controls.latent_names)")],
            [spec("harmonics", HARMONICS, 0.0, 1.0, "amplitude distribution over harmonics 1..64 (sums to 1)"),
             spec("noise", NOISE_BANDS, 0.0, 1.0,
                  "noise amplitude per band, bands linearly spaced 0..Nyquist (gain on unit-variance white noise)"),
             spec("amplitude", 1, 0.0, 1.0, "overall harmonic amplitude (peak of the summed harmonics)")])


def voices(count: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Example decoder inputs for `count` voices."""
    g = torch.Generator().manual_seed(seed)
    return (40.0 + 2000.0 * torch.rand(count, 1, generator=g), torch.rand(count, 1, generator=g),
            2.0 * torch.rand(count, LATENT, generator=g) - 1.0)


def export(decoder: Decoder, out: Path, provenance: dict[str, object], latent_names: list[str]) -> Path:
    """Write `<out>/synth-ddsp.onnx` and its manifest together: built in a scratch folder, moved when both exist."""
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out, prefix=f".{NAME}."))
    try:
        onnx_path = scratch / f"{NAME}.onnx"
        folded = Folded(decoder).eval()
        with torch.no_grad():
            fold = max(float((a - b).abs().max()) for a, b in zip(folded(*voices(256, 2)), decoder(*voices(256, 2))))
        if fold > 1e-5:
            raise LiveError(f"folding the decoder's input normalisation changed it by {fold:.3g}",
                            "report this: live.train.synth.Folded no longer matches Decoder")
        voices_dim = torch.export.Dim("voices", min=1, max=4096)
        parity = fold + export_onnx(folded, voices(2, 0), onnx_path, list(INPUTS), list(OUTPUTS),
                                    dynamic_shapes={name: {0: voices_dim} for name in INPUTS}, check=voices(3, 1),
                                    tolerance=1e-4)  # a bound on |ONNX - trained decoder|
        inputs, outputs = tensor_specs()
        manifest = write_manifest(
            onnx_path, name=NAME, kind="synth-decoder", tier="cpu", inputs=inputs, outputs=outputs,
            controls={"harmonics": HARMONICS, "noise_bands": NOISE_BANDS, "latent": LATENT,
                      "latent_names": latent_names, "control_rate_hz": RATE // BLOCK},
            provenance={**provenance, "parity_max_abs_diff_v3": parity}, licence="MIT")
        final = out / onnx_path.name
        os.replace(onnx_path, final)
        os.replace(manifest, out / manifest.name)
        return final
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="live train synth", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=Config.steps, help="training steps (default %(default)s)")
    p.add_argument("--seed", type=int, default=Config.seed, help="seed for the corpus and training")
    p.add_argument("--out", type=Path, default=Path("exported_models"), help="where --export writes")
    p.add_argument("--export", action="store_true", help=f"write <out>/{NAME}.onnx and its manifest")
    p.add_argument("--wav", type=Path, metavar="DIR",
                   help="train on the WAVs in DIR instead of the synthesised corpus (PCM WAV, any rate: "
                        "resampled to 48 kHz; pitch by YIN)")
    p.add_argument("--notes", type=int, default=Config.notes, help="corpus size in notes (default %(default)s)")
    p.add_argument("--threads", type=int, default=TRAIN_THREADS,
                   help="torch threads (default %(default)s); the result depends on it, so the manifest's command "
                        "always names it")
    return p.parse_args(argv)


def pinned(argv: list[str], threads: int) -> list[str]:
    """`argv` naming the thread count it ran with, so the manifest's command repeats the run whatever the default."""
    named = any(a == "--threads" or a.startswith("--threads=") for a in argv)
    return argv if named else [*argv, "--threads", str(threads)]


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.steps < 1 or args.notes < 1:
        raise LiveError("--steps and --notes must be at least 1")
    if args.threads < 1:
        raise LiveError("--threads must be at least 1")
    config = Config(steps=args.steps, seed=args.seed, notes=args.notes, threads=args.threads)
    if args.wav:
        notes = wav_notes(args.wav)
        recipe: dict[str, object] = {"wav_folder": str(args.wav), "chunks": len(notes),
                                     "seconds": round(len(notes) * NOTE_FRAMES * BLOCK / RATE, 1),
                                     "pitch": "YIN (threshold 0.15), loudness: RMS"}
    else:
        notes = corpus(args.seed, args.notes)
        recipe = {"corpus": "live.train.synth_data.corpus", "families": list(FAMILIES), "notes": args.notes,
                  "midi": list(MIDI_RANGE), "seconds_per_note": NOTE_FRAMES * BLOCK / RATE, "seed": args.seed}
    print(f"{len(notes)} notes; training {config.steps} steps", flush=True)
    data = Data.of(notes)
    result = train(data, config, log=lambda line: print(line, flush=True))
    z = span_latent(result.decoder, result.encoder, data)
    axes = describe_axes(result.decoder, z, data.labels)
    final = float(np.mean(result.losses[-min(100, len(result.losses)):]))
    print(f"final loss {final:.4f} (held out {result.valid:.4f}) after {result.seconds:.0f} s", flush=True)
    for number, axis in enumerate(axes):
        print(f"latent {number}: {axis['name']}: {axis['effect']}  {axis['probe_at_f0_220']}", flush=True)
    if args.export:
        path = export(result.decoder, args.out, {
            "command": command_line("synth", pinned(argv, args.threads)), "data": recipe, "seed": args.seed,
            "steps": config.steps, "threads": config.threads,
            "method": f"DDSP autoencoder: encoder (log-mel shape + pitch -> z, tanh) and decoder MLP 2x"
                      f"{config.hidden} tanh trained jointly through a torch twin of live/audio/synth.py; "
                      f"multi-scale spectral loss (FFT 2048..128, relative lin + log); Adam {config.rate:g}, "
                      f"batch {config.batch} x {config.clip_frames} frames; exported with the input normalisation "
                      f"folded into the first layer",
            "final_loss": round(final, 4), "held_out_loss": round(result.valid, 4),
            "train_seconds": round(result.seconds), "latent_axes": axes}, [a["name"] for a in axes])
        print(f"wrote {path} and {path.with_suffix('.json').name}", flush=True)
    return 0
