"""`live train music`: train, measure and export to ONNX the melody models the live music modes play.

They learn from music21's bundled corpus or a folder of MIDI files.

Three options are measured on the same pieces, held out by piece (live/train/music_data.py):
- an n-gram over tokens (orders 1..5, Witten-Bell interpolation), the baseline;
- a recurrent LM (GRU, token + place-in-bar embeddings), which ships as `music-lm`: its state carries what was
  played, so an answer costs one run over the phrase and then one small run per generated step;
- a causal transformer of about the same size, trained with the same steps, batch and window. It has no state,
  so each generated step reruns its whole context: it is measured, not shipped.
All three read every piece in the 12 keys (transposed on the fly); held-out likelihood is measured in the pieces'
own keys, on the piece's tokens after one bar of silence (every piece is trained with one before it, so a model
primed from silence is in the music it learned).

A bar VAE (MusicVAE-like, small) learns 2-bar melodies for the morph mode: a convolutional encoder to the latent's
mean and a non-autoregressive decoder back to 32 steps' logits, exported as two graphs; the decoder's manifest
carries a few corpus melodies as morph presets.

The report (printed; JSON and Markdown in <out>/report/music.*) gives held-out NLL per model, the cost of one
generated step on ONNX Runtime (CPU, 1 thread), corpus statistics against melodies sampled from the exported LM
at temperature 1, and the VAE's held-out reconstruction and the smoothness of a walk between two presets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

from live.errors import LiveError
from live.models.manifest import TensorSpec, atomic_write, write_manifest
from live.music import tokens as tk
from live.train.export import command_line, export_onnx
from live.train.music_data import (COLLECTIONS, DEFAULT_COLLECTIONS, MUSIC21_VERSION, Corpus, Piece, midi_corpus,
                                   music21_corpus, transpose)
from live.train.seeding import TRAIN_THREADS, reproducible

LM_NAME, ENCODER_NAME, DECODER_NAME = "music-lm", "music-vae-encoder", "music-vae-decoder"
LEAD = tk.BAR_STEPS  # the bar of silence before every piece
SHIFTS = np.arange(-5, 7)  # the 12 keys every piece is heard in
VAE_STEPS = 2 * tk.BAR_STEPS  # the VAE's melodies: 2 bars
BEATS = VAE_STEPS // tk.STEPS_PER_BEAT
MORPH_STEPS = 17  # points on the line between two presets where the VAE's smoothness is measured
COST_RUNS = 2000


@dataclass
class Config:
    """What a run does; the defaults are the real run's, tests shrink them."""

    seed: int = 0
    threads: int = TRAIN_THREADS
    steps: int = 800  # for the LM and the transformer alike
    batch: int = 32
    window: int = 64  # tokens a training sequence (and the transformer's context)
    hidden: int = 192
    layers: int = 2
    embed: int = 64
    lr: float = 3e-3
    transformer: bool = True
    width: int = 96  # the transformer's model width (4 heads, 4 x width feed-forward): about the GRU's size
    blocks: int = 3
    vae_steps: int = 5000
    vae_batch: int = 64
    latent: int = 16
    beta: float = 0.2
    orders: int = 5  # n-grams 1..orders
    samples: int = 64  # melodies sampled from the exported LM for the statistics
    sample_bars: int = 8
    log_every: int = 100


# --- the n-gram baseline ------------------------------------------------------------------------------------------

class NGram:
    """An interpolated n-gram over tokens (Witten-Bell: each order backs off to the next lower in proportion to how
    many different tokens followed its context), down to a uniform distribution, so every probability is finite.

    Hand-written because none of the n-gram libraries on PyPI is a small dependency for 63 symbols (NLTK's counts
    tens of millions of tokens in pure Python for minutes; KenLM needs a compiler); here it is np.unique on
    integer-coded n-grams and np.searchsorted to look them up."""

    def __init__(self, order: int, lines: list[np.ndarray]) -> None:
        self.order = order
        self.tables = []
        for k in range(1, order + 1):
            codes = np.concatenate([self._codes(line, k, k - 1) for line in lines if len(line) >= k])
            grams, counts = np.unique(codes, return_counts=True)
            contexts, first = np.unique(grams // tk.VOCAB, return_index=True)
            totals = np.add.reduceat(counts, first)
            types = np.diff(np.r_[first, len(grams)])
            self.tables.append((grams, counts, contexts, totals, types))

    @staticmethod
    def _codes(line: np.ndarray, k: int, first: int) -> np.ndarray:
        """The k-gram ending at each target first..len-1, as one integer (base VOCAB)."""
        code = np.zeros(len(line) - first, np.int64)
        for j in range(k):
            code = code * tk.VOCAB + line[first - k + 1 + j:len(line) - k + 1 + j]
        return code

    def log_probs(self, line: np.ndarray, first: int, order: int | None = None) -> np.ndarray:
        """ln p(line[t] | the tokens before it) for t in first..len-1 (first >= order - 1)."""
        p = np.full(len(line) - first, 1.0 / tk.VOCAB)
        for k, (grams, counts, contexts, totals, types) in enumerate(self.tables[:order or self.order], start=1):
            codes = self._codes(line, k, first)
            at = np.minimum(np.searchsorted(contexts, codes // tk.VOCAB), len(contexts) - 1)
            seen = contexts[at] == codes // tk.VOCAB
            where = np.minimum(np.searchsorted(grams, codes), len(grams) - 1)
            count = np.where(grams[where] == codes, counts[where], 0)
            p = np.where(seen, (count + types[at] * p) / (totals[at] + types[at]), p)
        return np.log(p)


# --- the models ---------------------------------------------------------------------------------------------------

class MelodyLM(nn.Module):
    """tokens, places in the bar [1, T] and a state [L, 1, H] -> next-token logits [1, T, VOCAB] and the state after
    them. Batches work too (the state's second axis is the batch)."""

    def __init__(self, hidden: int = 256, layers: int = 2, embed: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.token = nn.Embedding(tk.VOCAB, embed)
        self.position = nn.Embedding(tk.BAR_STEPS, embed)
        self.rnn = nn.GRU(embed, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, tk.VOCAB)
        self.state_shape = (layers, 1, hidden)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor,
                state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, state_out = self.rnn(self.token(tokens) + self.position(positions), state)
        return self.head(self.drop(out)), state_out


class Block(nn.Module):
    """One pre-norm transformer block with causal self-attention, written out so it exports as plain ops."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + mask, dim=-1)
        x = x + self.drop(self.proj((attention @ v).transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class CausalTransformer(nn.Module):
    """tokens, places in the bar [B, T] (T <= context) -> next-token logits [B, T, VOCAB]."""

    def __init__(self, context: int, width: int = 128, blocks: int = 3, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.token = nn.Embedding(tk.VOCAB, width)
        self.position = nn.Embedding(tk.BAR_STEPS, width)
        self.index = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, tk.VOCAB)
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu(1), persistent=False)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.token(tokens) + self.position(positions) + self.index.weight[:t]
        for block in self.blocks:
            x = block(x, self.mask[:t, :t])
        return self.head(self.norm(x))


class BarEncoder(nn.Module):
    """2 bars of tokens [B, 32] -> the latent's mean and log-variance [B, Z]: convolutions down to 8 steps (a beat
    each), then a small MLP."""

    def __init__(self, latent: int, width: int = 128, embed: int = 64) -> None:
        super().__init__()
        self.token = nn.Embedding(tk.VOCAB, embed)
        self.place = nn.Parameter(torch.zeros(VAE_STEPS, embed))
        self.body = nn.Sequential(nn.Conv1d(embed, width, 3, padding=1), nn.GELU(),
                                  nn.Conv1d(width, width, 4, stride=2, padding=1), nn.GELU(),
                                  nn.Conv1d(width, width, 4, stride=2, padding=1), nn.GELU(), nn.Flatten(),
                                  nn.Linear(width * BEATS, 256), nn.GELU(), nn.Linear(256, 2 * latent))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.body((self.token(tokens) + self.place).transpose(1, 2)).chunk(2, dim=1)
        return mean, logvar.clamp(-8, 4)


class BarDecoder(nn.Module):
    """z [B, Z] -> logits of each of the 32 steps [B, 32, VOCAB], all at once (not autoregressive): a small MLP to
    8 beats, then upsampling convolutions to the steps."""

    def __init__(self, latent: int, width: int = 128) -> None:
        super().__init__()
        self.width = width
        self.seed = nn.Sequential(nn.Linear(latent, 256), nn.GELU(), nn.Linear(256, width * BEATS), nn.GELU())
        self.body = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv1d(width, width, 3, padding=1),
                                  nn.GELU(), nn.Upsample(scale_factor=2.0, mode="nearest"),
                                  nn.Conv1d(width, width, 3, padding=1), nn.GELU(),
                                  nn.Conv1d(width, width, 3, padding=1), nn.GELU(), nn.Conv1d(width, tk.VOCAB, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.seed(z).view(-1, self.width, BEATS)).transpose(1, 2)


class MeanOnly(nn.Module):
    """The exported encoder: the latent's mean only (the morph mode needs no sampling)."""

    def __init__(self, encoder: BarEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(tokens)[0]


# --- data ---------------------------------------------------------------------------------------------------------

def with_lead(piece: Piece) -> np.ndarray:
    """The piece after one bar of silence: what the models read."""
    return np.r_[np.full(LEAD, tk.REST, np.int64), piece.tokens]


def stream(pieces: list[Piece]) -> np.ndarray:
    """All pieces, each after its bar of silence, end to end: bar lines stay on multiples of BAR_STEPS."""
    return np.concatenate([with_lead(p) for p in pieces])


def windows(rng: np.random.Generator, line: np.ndarray, batch: int, window: int) -> tuple[torch.Tensor, ...]:
    """A batch of (tokens, positions, targets) [batch, window], each row in a random key."""
    if len(line) <= window + 1:
        raise LiveError(f"the training pieces hold {len(line)} steps, fewer than one window ({window + 1})",
                        "use more pieces (a larger --limit, more --collections, more MIDI files) or a smaller --window")
    starts = rng.integers(0, len(line) - window - 1, batch)
    rows = line[starts[:, None] + np.arange(window + 1)]
    rows = transpose(rows, rng.choice(SHIFTS, (batch, 1)))
    positions = (starts[:, None] + np.arange(window)) % tk.BAR_STEPS
    return torch.from_numpy(rows[:, :-1]), torch.from_numpy(positions), torch.from_numpy(rows[:, 1:])


def bar_windows(pieces: list[Piece]) -> np.ndarray:
    """Every 2-bar stretch of the pieces starting on a bar line with at least 2 note starts [N, 32]. A stretch that
    begins inside a held note begins with that note (a loop starts with what sounds)."""
    found = []
    for piece in pieces:
        line = piece.tokens
        sounding, current = np.empty_like(line), tk.REST  # the note token sounding at each step, or REST
        for i, token in enumerate(line):
            current = token if token >= tk.FIRST_PITCH else (tk.REST if token == tk.REST else current)
            sounding[i] = current
        for i in range(0, len(line) - VAE_STEPS + 1, tk.BAR_STEPS):
            window = line[i:i + VAE_STEPS].copy()
            if window[0] == tk.HOLD:
                window[0] = sounding[i]
            if (window >= tk.FIRST_PITCH).sum() >= 2:
                found.append(window)
    return np.stack(found) if found else np.zeros((0, VAE_STEPS), np.int64)


# --- training -----------------------------------------------------------------------------------------------------

def _optimiser(model: nn.Module, lr: float, steps: int) -> tuple[torch.optim.Optimizer, Any]:
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    return optimiser, schedule


def train_lm(model: nn.Module, line: np.ndarray, config: Config, lr: float, say: Callable[[str], None],
             label: str) -> float:
    """Train an LM (MelodyLM, or CausalTransformer) on windows of `line`; returns the seconds it took."""
    rng = np.random.default_rng(config.seed)
    optimiser, schedule = _optimiser(model, lr, config.steps)
    model.train()
    started, recent = time.perf_counter(), []
    for step in range(1, config.steps + 1):
        tokens, positions, targets = windows(rng, line, config.batch, config.window)
        if isinstance(model, MelodyLM):
            logits, _ = model(tokens, positions, torch.zeros(model.state_shape[0], len(tokens), model.state_shape[2]))
        else:
            logits = model(tokens, positions)
        loss = F.cross_entropy(logits.reshape(-1, tk.VOCAB), targets.reshape(-1))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        recent = (recent + [loss.item()])[-config.log_every:]
        if step % config.log_every == 0 or step == config.steps:
            say(f"{label} step {step}/{config.steps}  loss {np.mean(recent):.3f} nats/token  "
                f"{time.perf_counter() - started:.0f} s")
    model.eval()
    return time.perf_counter() - started


def lm_nll(model: MelodyLM, pieces: list[Piece]) -> tuple[float, int]:
    """(total nats, tokens) of the pieces' tokens after their bar of silence, each piece from a fresh state."""
    total, count = 0.0, 0
    with torch.no_grad():
        for piece in pieces:
            line = torch.from_numpy(with_lead(piece))[None]
            logits, _ = model(line[:, :-1], torch.from_numpy(tk.positions(line.shape[1] - 1))[None],
                              torch.zeros(model.state_shape))
            nll = F.cross_entropy(logits[0, LEAD - 1:], line[0, LEAD:], reduction="sum")
            total, count = total + float(nll), count + line.shape[1] - LEAD
    return total, count


def transformer_nll(model: CausalTransformer, pieces: list[Piece], context: int) -> tuple[float, int]:
    """(total nats, tokens) as lm_nll, reading each piece in windows of `context` half-overlapped: every token
    scored once, with at least half a window before it (or all there is)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for piece in pieces:
            line = with_lead(piece)
            scored, start = LEAD, 0  # the first target not yet scored; the window's first input
            while scored < len(line):
                end = min(start + context, len(line) - 1)
                tokens = torch.from_numpy(line[start:end])[None]
                logits = model(tokens, torch.from_numpy(tk.positions(end - start, start))[None])
                first = scored - start - 1  # logits[i] predicts line[start + i + 1]
                nll = F.cross_entropy(logits[0, first:], torch.from_numpy(line[scored:end + 1]), reduction="sum")
                total, count = total + float(nll), count + end + 1 - scored
                scored, start = end + 1, start + context // 2
    return total, count


def train_vae(train: np.ndarray, config: Config, say: Callable[[str], None]) -> tuple[BarEncoder, BarDecoder, float]:
    encoder, decoder = BarEncoder(config.latent), BarDecoder(config.latent)
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimiser = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=config.vae_steps,
                                                   pct_start=0.1)
    rng = np.random.default_rng(config.seed + 1)
    warmup = max(1, config.vae_steps // 3)  # the KL weight ramps 0 -> beta: the latent is used before it is pulled
    started, recent = time.perf_counter(), []
    for step in range(1, config.vae_steps + 1):
        rows = train[rng.integers(0, len(train), config.vae_batch)]
        x = torch.from_numpy(transpose(rows, rng.choice(SHIFTS, (len(rows), 1))))
        mean, logvar = encoder(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        logits = decoder(z)
        recon = F.cross_entropy(logits.reshape(-1, tk.VOCAB), x.reshape(-1), reduction="sum") / len(x)
        kl = (0.5 * (mean ** 2 + logvar.exp() - 1 - logvar)).sum(dim=1).mean()
        loss = recon + config.beta * min(1.0, step / warmup) * kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        optimiser.step()
        schedule.step()
        recent = (recent + [(recon.item(), kl.item())])[-config.log_every:]
        if step % config.log_every == 0 or step == config.vae_steps:
            r, k = np.mean(recent, axis=0)
            say(f"vae step {step}/{config.vae_steps}  reconstruction {r / VAE_STEPS:.3f} nats/token  "
                f"kl {k:.1f} nats  {time.perf_counter() - started:.0f} s")
    return encoder.eval(), decoder.eval(), time.perf_counter() - started


# --- measuring ----------------------------------------------------------------------------------------------------

def onnx_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def step_cost(session: ort.InferenceSession, feeds: dict[str, np.ndarray], runs: int = COST_RUNS) -> dict[str, float]:
    """Median and 99th percentile ms of one run of `session` on `feeds` (after a warm-up)."""
    for _ in range(20):
        session.run(None, feeds)
    times = np.empty(runs)
    for i in range(runs):
        began = time.perf_counter()
        session.run(None, feeds)
        times[i] = time.perf_counter() - began
    return {"median_ms": round(float(np.median(times)) * 1000, 4), "p99_ms": round(float(np.quantile(times, 0.99)) * 1000, 4)}


def sample_lm(session: ort.InferenceSession, state_shape: tuple[int, ...], count: int, bars: int,
              seed: int, temperature: float = 1.0) -> list[np.ndarray]:
    """`count` melodies of `bars` bars from the exported LM: primed with a bar of silence, then each step drawn
    from softmax(logits / temperature), nothing else steering it."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        logits, state = session.run(None, {"tokens": np.full((1, LEAD), tk.REST, np.int64),
                                           "positions": tk.positions(LEAD)[None], "state": np.zeros(state_shape, np.float32)})
        line = np.empty(bars * tk.BAR_STEPS, np.int64)
        for i in range(len(line)):
            z = logits[0, -1].astype(np.float64) / temperature
            p = np.exp(z - z.max())
            line[i] = rng.choice(tk.VOCAB, p=p / p.sum())
            logits, state = session.run(None, {"tokens": line[i:i + 1][None], "positions": tk.positions(1, i)[None],
                                               "state": state})
        out.append(line)
    return out


def melody_stats(lines: list[np.ndarray]) -> dict[str, Any]:
    """Pitch classes (note starts, each melody turned to its own key's tonic = 0, so keys do not blur it), note
    starts per bar, mean note length in steps, the share of steps silent, the share of notes in the melody's key."""
    histogram = np.zeros(12)
    notes = bars = silent = steps = in_key = 0
    lengths = 0
    for line in lines:
        found = tk.decode(line)
        key = tk.key_of(found)
        for note in found:
            histogram[(note.pitch - key.tonic) % 12] += 1
        notes += len(found)
        lengths += sum(n.steps for n in found)
        in_key += round(tk.in_key(found, key) * len(found))
        bars += len(line) / tk.BAR_STEPS
        silent += int((line == tk.REST).sum())
        steps += len(line)
    return {"melodies": len(lines), "notes": notes, "onsets_per_bar": round(notes / max(bars, 1), 3),
            "mean_note_steps": round(lengths / max(notes, 1), 3), "rest_share": round(silent / max(steps, 1), 3),
            "in_key_share": round(in_key / max(notes, 1), 3),
            "pitch_classes_from_tonic": [round(float(v), 4) for v in histogram / max(histogram.sum(), 1)]}


def histogram_distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Total variation distance of two pitch-class histograms: 0 = the same, 1 = no pitch class in common."""
    return round(0.5 * float(np.abs(np.subtract(a["pitch_classes_from_tonic"], b["pitch_classes_from_tonic"])).sum()), 4)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.asarray(a) != np.asarray(b)).sum())


def vae_measures(encoder: BarEncoder, decoder: BarDecoder, held: np.ndarray,
                 presets: dict[str, list[int]]) -> dict[str, Any]:
    """Held-out reconstruction (from the mean, argmax): all tokens, and note starts; and the walk from the first
    preset to the second: tokens changed between neighbouring points of MORPH_STEPS, against the two ends'
    difference (a smooth walk changes a little at each point and adds up to not much more than the ends)."""
    if len(presets) < 2:
        raise LiveError(f"the corpus gave {len(presets)} 2-bar melody to morph between, the VAE needs two",
                        "use more pieces (a larger --limit, more --collections, more MIDI files)")
    with torch.no_grad():
        x = torch.from_numpy(held)
        guess = torch.cat([decoder(encoder(x[i:i + 512])[0]).argmax(-1) for i in range(0, len(x), 512)])
        onsets = x >= tk.FIRST_PITCH
        names = list(presets)[:2]
        ends = torch.tensor([presets[n] for n in names])
        mu = encoder(ends)[0]
        line = [decoder(mu[:1] + a * (mu[1:] - mu[:1])).argmax(-1)[0].numpy() for a in np.linspace(0, 1, MORPH_STEPS)]
    steps = [hamming(a, b) for a, b in zip(line, line[1:])]
    return {"held_out_windows": len(held), "token_accuracy": round(float((guess == x).float().mean()), 4),
            "onset_accuracy": round(float((guess == x)[onsets].float().mean()), 4) if onsets.any() else None,
            "morph": {"from": names[0], "to": names[1], "points": MORPH_STEPS,
                      "neighbour_tokens_changed": steps, "mean": round(float(np.mean(steps)), 3), "max": max(steps),
                      "ends_tokens_changed": hamming(line[0], line[-1]), "path_over_ends": round(
                          sum(steps) / max(hamming(line[0], line[-1]), 1), 3),
                      "ends_reconstructed": [hamming(line[0], presets[names[0]]), hamming(line[-1], presets[names[1]])]}}


def choose_presets(pieces: list[Piece], count: int = 4) -> dict[str, list[int]]:
    """A few contrasting 2-bar melodies from the corpus, each a piece's first 2 bars that start with a note: the
    busiest and the calmest tune (by note starts; the 90th and 10th percentile, not the extremes, which are
    oddities), then a chorale and a tune in the middle. Named by title."""
    candidates = []
    for piece in pieces:
        line = piece.tokens
        for i in range(0, len(line) - VAE_STEPS + 1, tk.BAR_STEPS):
            window = line[i:i + VAE_STEPS]
            bars = window.reshape(2, -1)
            if window[0] >= tk.FIRST_PITCH and all((b >= tk.FIRST_PITCH).sum() >= 2 for b in bars):
                candidates.append((int((window >= tk.FIRST_PITCH).sum()), piece, i // tk.BAR_STEPS, window))
                break
    if not candidates:
        return {}
    candidates.sort(key=lambda c: (c[0], c[1].name))
    folk = [c for c in candidates if not c[1].name.startswith("bach/")] or candidates
    chorales = [c for c in candidates if c[1].name.startswith("bach/")] or candidates
    picks = [folk[int(0.9 * (len(folk) - 1))], folk[int(0.1 * (len(folk) - 1))],
             chorales[len(chorales) // 2], folk[len(folk) // 2]]
    presets: dict[str, list[int]] = {}
    for onsets, piece, bar, window in picks:
        title = piece.title.removeprefix("T:").strip()  # a few ABC tunes repeat their field name in the title
        name = f"{title} (bars {bar + 1}-{bar + 2})"
        if name not in presets and len(presets) < count:
            presets[name] = [int(t) for t in window]
    return presets


# --- export -------------------------------------------------------------------------------------------------------

def grid_controls() -> dict[str, Any]:
    return {"vocab": tk.VOCAB, "low": tk.LOW, "high": tk.HIGH, "steps_per_beat": tk.STEPS_PER_BEAT,
            "bar_steps": tk.BAR_STEPS, "rest": tk.REST, "hold": tk.HOLD, "first_pitch": tk.FIRST_PITCH}


def export_lm(model: MelodyLM, path: Path) -> dict[str, float]:
    """Write the LM's ONNX graph; check it against torch and that a phrase run at once equals it run step by step
    (the player primes with a phrase, then steps). Returns both differences; LiveError if either is too large."""
    rng = torch.Generator().manual_seed(0)
    example = (torch.randint(0, tk.VOCAB, (1, 24), generator=rng), torch.from_numpy(tk.positions(24, 5))[None],
               torch.zeros(model.state_shape))
    check = (torch.randint(0, tk.VOCAB, (1, 7), generator=rng), torch.from_numpy(tk.positions(7, 3))[None],
             torch.randn(model.state_shape, generator=rng))
    parity = export_onnx(model, example, path, ["tokens", "positions", "state"], ["logits", "state_out"],
                         dynamic_axes={"tokens": {1: "T"}, "positions": {1: "T"}, "logits": {1: "T"}}, tolerance=1e-4,
                         check=check)
    stepwise = stepwise_difference(onnx_session(path), model.state_shape)
    if stepwise > 1e-4:
        path.unlink()
        raise LiveError(f"{path.name}: a phrase run at once and step by step differ by {stepwise:.3g}",
                        "report this: the exported recurrence does not carry its state")
    return {"parity_max_abs_diff": parity, "stepwise_max_abs_diff": stepwise}


def stepwise_difference(session: ort.InferenceSession, state_shape: tuple[int, ...], steps: int = 20) -> float:
    """Max |difference| of logits and final state between one run over `steps` tokens and `steps` runs of one."""
    rng = np.random.default_rng(1)
    line, positions = rng.integers(0, tk.VOCAB, (1, steps)), tk.positions(steps, 3)[None]
    state = np.zeros(state_shape, np.float32)
    whole, whole_state = session.run(None, {"tokens": line, "positions": positions, "state": state})
    parts = []
    for i in range(steps):
        logits, state = session.run(None, {"tokens": line[:, i:i + 1], "positions": positions[:, i:i + 1],
                                           "state": state})
        parts.append(logits)
    return float(max(np.abs(np.concatenate(parts, axis=1) - whole).max(), np.abs(state - whole_state).max()))


def licence(corpus: Corpus) -> str:
    """The manifest's licence line; `corpus_terms` says in full what the corpus's licence files say."""
    if corpus.source.get("corpus", "").startswith("MIDI"):
        return f"MIT (weights); corpus: the MIDI files in {corpus.source['folder']} (their own licences apply)"
    if "essenFolksong" in corpus.source.get("collections", []):
        return (f"MIT (weights); corpus: music21 {MUSIC21_VERSION}'s bundled corpus (BSD-3-Clause) with the Essen "
                "folk songs, whose licence allows non-commercial use only: so does this model's")
    return (f"MIT (weights); corpus: music21 {MUSIC21_VERSION}'s bundled corpus (BSD-3-Clause; the works are public "
            "domain, published 1782-1903; see provenance.corpus_terms)")


def corpus_terms(corpus: Corpus) -> str:
    if corpus.source.get("corpus", "").startswith("MIDI"):
        return "the user's MIDI files"
    return (f"music21 {MUSIC21_VERSION} is BSD-3-Clause (dist-info/licenses/LICENSE). Its corpus/license.txt: the "
            "encodings are distributed with the permission of their encoders, each work is believed to be out of "
            "copyright in the US or licensed for use, some encodings may restrict commercial use. Only "
            "corpus/essenFolksong has a licence file of its own (non-commercial distribution and use in music21), "
            "so it is left out by default. Used here: " + ", ".join(
                f"{c} ({COLLECTIONS[c]})" for c in corpus.source.get("collections", [])) + ".")


def versions() -> dict[str, str]:
    found = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
             "numpy": np.__version__}
    try:
        import music21
        found["music21"] = music21.__version__
    except ModuleNotFoundError:
        pass
    return found


def lm_specs(state_shape: tuple[int, ...]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    shape = list(state_shape)
    return ([TensorSpec(name="tokens", dtype="int64", shape=[1, "T"], doc="tokens (live/music/tokens.py: 0 REST, "
                        "1 HOLD, 2.. a note starting at LOW..HIGH), one per sixteenth step"),
             TensorSpec(name="positions", dtype="int64", shape=[1, "T"], range=(0, tk.BAR_STEPS - 1),
                        doc="each token's step in its bar (tokens.positions)"),
             TensorSpec(name="state", dtype="float32", shape=shape,
                        doc="the GRU state before the first token: zeros for a fresh start, else a state_out")],
            [TensorSpec(name="logits", dtype="float32", shape=[1, "T", tk.VOCAB],
                        doc="unnormalised log-probabilities of the token after each input token"),
             TensorSpec(name="state_out", dtype="float32", shape=shape, doc="the state after the last token")])


def export_all(lm: MelodyLM, encoder: BarEncoder, decoder: BarDecoder, presets: dict[str, list[int]], out: Path,
               provenance: dict[str, Any], corpus: Corpus, latent: int) -> dict[str, Any]:
    """Write the three models and their manifests into `out` together (built in a scratch folder, moved when all
    exist); returns the export checks."""
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out, prefix=".music."))
    terms = licence(corpus)
    try:
        checks = {LM_NAME: export_lm(lm, scratch / f"{LM_NAME}.onnx")}
        inputs, outputs = lm_specs(lm.state_shape)
        write_manifest(scratch / f"{LM_NAME}.onnx", name=LM_NAME, kind="music-sequence", tier="cpu", licence=terms,
                       inputs=inputs, outputs=outputs,
                       controls={**grid_controls(), "state_shape": list(lm.state_shape),
                                 "prime": "a fresh state (zeros) primed with a bar of REST is the start of a piece"},
                       provenance={**provenance, "checks": checks[LM_NAME]})
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, tk.VOCAB, (1, VAE_STEPS), generator=g)
        checks[ENCODER_NAME] = {"parity_max_abs_diff": export_onnx(
            MeanOnly(encoder).eval(), (tokens,), scratch / f"{ENCODER_NAME}.onnx", ["tokens"], ["mu"])}
        checks[DECODER_NAME] = {"parity_max_abs_diff": export_onnx(
            decoder, (torch.randn(1, latent, generator=g),), scratch / f"{DECODER_NAME}.onnx", ["z"], ["logits"])}
        bars = {"latent": latent, "bars": VAE_STEPS // tk.BAR_STEPS, **grid_controls()}
        write_manifest(scratch / f"{ENCODER_NAME}.onnx", name=ENCODER_NAME, kind="music-encoder", tier="cpu",
                       licence=terms,
                       inputs=[TensorSpec(name="tokens", dtype="int64", shape=[1, VAE_STEPS],
                                          doc="2 bars of tokens from a bar line (a held note at the start: its "
                                              "note token)")],
                       outputs=[TensorSpec(name="mu", dtype="float32", shape=[1, latent], layout="NC",
                                           doc="the latent's mean; the prior is N(0, 1) per dimension")],
                       controls={**bars, "decoder": DECODER_NAME},
                       provenance={**provenance, "checks": checks[ENCODER_NAME]})
        write_manifest(scratch / f"{DECODER_NAME}.onnx", name=DECODER_NAME, kind="music-decoder", tier="cpu",
                       licence=terms,
                       inputs=[TensorSpec(name="z", dtype="float32", shape=[1, latent], layout="NC",
                                          doc="a latent point (e.g. between two presets' encoder means)")],
                       outputs=[TensorSpec(name="logits", dtype="float32", shape=[1, VAE_STEPS, tk.VOCAB],
                                           doc="unnormalised log-probabilities of each step's token, independent "
                                               "per step (argmax for the likeliest melody)")],
                       controls={**bars, "encoder": ENCODER_NAME, "presets": presets},
                       provenance={**provenance, "checks": checks[DECODER_NAME]})
        for name in (LM_NAME, ENCODER_NAME, DECODER_NAME):
            for suffix in (".onnx", ".json"):
                os.replace(scratch / f"{name}{suffix}", out / f"{name}{suffix}")
        return checks
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def transformer_cost(model: CausalTransformer, context: int) -> dict[str, float]:
    """The transformer's cost per generated step on ORT (1 thread): one run over a full context (no cache)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "transformer.onnx"
        example = (torch.zeros(1, context, dtype=torch.int64), torch.from_numpy(tk.positions(context))[None])
        export_onnx(model, example, path, ["tokens", "positions"], ["logits"])
        feeds = {"tokens": np.zeros((1, context), np.int64), "positions": tk.positions(context)[None]}
        return step_cost(onnx_session(path), feeds, runs=COST_RUNS // 4)


# --- the run ------------------------------------------------------------------------------------------------------

def run(corpus: Corpus, config: Config, out: Path | None, argv: list[str],
        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, measure and (with `out`) export and write the report; returns the report."""
    reproducible(config.seed, config.threads)
    train, held = corpus.split()
    if not held or not train:
        raise LiveError(f"{len(corpus.pieces)} melody in the corpus: training needs at least two pieces (one held out)",
                        "use more pieces (a larger --limit, more --collections, more MIDI files)")
    line = stream(train)
    held_tokens = sum(len(p.tokens) for p in held)
    say(f"{len(train)} pieces to train on ({len(line)} steps, x12 keys), {len(held)} held out ({held_tokens} steps)")
    report: dict[str, Any] = {"corpus": {**corpus.source, "train_pieces": len(train), "held_out_pieces": len(held),
                                         "train_steps": int(len(line)), "held_out_steps": int(held_tokens)}}
    nll: dict[str, float] = {}

    started = time.perf_counter()
    keys = [transpose(line, s) for s in SHIFTS]
    ngram = NGram(config.orders, keys)
    for order in range(1, config.orders + 1):
        total = sum(-ngram.log_probs(with_lead(p), LEAD, order).sum() for p in held)
        nll[f"{order}-gram"] = float(total / held_tokens)
    del keys
    say(f"n-grams 1..{config.orders} in {time.perf_counter() - started:.0f} s")

    lm = MelodyLM(config.hidden, config.layers, config.embed)
    seconds = {"gru": train_lm(lm, line, config, config.lr, say, "gru")}
    total, count = lm_nll(lm, held)
    nll["gru"] = total / count
    costs: dict[str, Any] = {}
    if config.transformer:
        torch.manual_seed(config.seed)
        transformer = CausalTransformer(config.window, config.width, config.blocks)
        seconds["transformer"] = train_lm(transformer, line, config, config.lr / 3, say, "transformer")
        total, count = transformer_nll(transformer, held, config.window)
        nll["transformer"] = total / count
        costs["transformer"] = {**transformer_cost(transformer, config.window),
                                "what": f"one run over a {config.window}-step context (no state: each step reruns it)"}
    params = {"gru": sum(p.numel() for p in lm.parameters())}
    if config.transformer:
        params["transformer"] = sum(p.numel() for p in transformer.parameters())
    report["nll_nats_per_token"] = {k: round(v, 4) for k, v in nll.items()}
    report["nll_bits_per_token"] = {k: round(v / math.log(2), 4) for k, v in nll.items()}
    report["parameters"] = params
    report["train_seconds"] = {k: round(v, 1) for k, v in seconds.items()}

    vae_train, vae_held = bar_windows(train), bar_windows(held)
    if not len(vae_train) or not len(vae_held):
        raise LiveError("no 2-bar melodies with notes to train the bar VAE on", "use more pieces")
    encoder, decoder, seconds["vae"] = train_vae(vae_train, config, say)
    report["train_seconds"]["vae"] = round(seconds["vae"], 1)
    presets = choose_presets(corpus.pieces)
    report["vae"] = {"latent": config.latent, "beta": config.beta, "train_windows": len(vae_train),
                     **vae_measures(encoder, decoder, vae_held, presets), "presets": list(presets)}

    if out is None:
        return report
    provenance = {"command": command_line("music", argv), "corpus": corpus.source,
                  "corpus_terms": corpus_terms(corpus), "seed": config.seed,
                  "threads": config.threads, "config": {k: v for k, v in vars(config).items()},
                  "libraries": versions(), "held_out_nll_nats_per_token": report["nll_nats_per_token"]}
    report["exports"] = export_all(lm, encoder, decoder, presets, out, provenance, corpus, config.latent)
    session = onnx_session(out / f"{LM_NAME}.onnx")
    feeds = {"tokens": np.array([[tk.FIRST_PITCH + 24]], np.int64), "positions": np.array([[0]], np.int64),
             "state": np.zeros(lm.state_shape, np.float32)}
    costs["gru"] = {**step_cost(session, feeds), "what": "one step: one token and the state in, logits and state out"}
    prime = {"tokens": np.full((1, 2 * tk.BAR_STEPS), tk.FIRST_PITCH + 24, np.int64),
             "positions": tk.positions(2 * tk.BAR_STEPS)[None], "state": feeds["state"]}
    costs["gru_prime_2_bars"] = step_cost(session, prime, runs=COST_RUNS // 4)
    report["cost_per_step_ort_cpu_1_thread"] = costs

    generated = sample_lm(session, lm.state_shape, config.samples, config.sample_bars, config.seed)
    stats = {"held_out": melody_stats([p.tokens for p in held]), "train": melody_stats([p.tokens for p in train]),
             "generated_t1": melody_stats(generated)}
    stats["pitch_class_distance"] = {"generated_vs_held_out": histogram_distance(stats["generated_t1"],
                                                                                  stats["held_out"]),
                                     "train_vs_held_out": histogram_distance(stats["train"], stats["held_out"])}
    report["stats"] = stats
    report["samples"] = [[int(t) for t in g[:2 * tk.BAR_STEPS]] for g in generated[:4]]
    report["choice"] = choice(report)
    return report


def choice(report: dict[str, Any]) -> str:
    nll = report["nll_nats_per_token"]
    gram = min((v, k) for k, v in nll.items() if k.endswith("-gram"))
    text = f"music-lm is the GRU: held-out {nll['gru']:.3f} nats/token against the best n-gram's {gram[0]:.3f} ({gram[1]})"
    if "transformer" in nll:
        costs = report.get("cost_per_step_ort_cpu_1_thread", {})
        text += (f" and the transformer's {nll['transformer']:.3f}; a generated step costs "
                 f"{costs.get('gru', {}).get('median_ms', float('nan')):.3f} ms against the transformer's "
                 f"{costs.get('transformer', {}).get('median_ms', float('nan')):.3f} ms, and only the GRU carries a "
                 "state the player primes once")
    return text


def write_report(report: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "music.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write(folder / "music.md", markdown(report).encode())


def markdown(report: dict[str, Any]) -> str:
    nll, bits = report["nll_nats_per_token"], report["nll_bits_per_token"]
    costs = report.get("cost_per_step_ort_cpu_1_thread", {})
    stats = report.get("stats", {})
    vae = report["vae"]
    lines = ["# Music models report", "",
             f"Corpus: {report['corpus'].get('corpus')} {report['corpus'].get('collections', '')}: "
             f"{report['corpus']['train_pieces']} pieces trained on, {report['corpus']['held_out_pieces']} held out "
             f"({report['corpus']['held_out_steps']} steps). Regenerate with `{report.get('command', 'live train music --export')}`.", "",
             "| model | held-out NLL (nats/token) | bits/token | ms per generated step (ORT CPU, 1 thread) |",
             "| --- | --- | --- | --- |"]
    for name in nll:
        cost = costs.get(name, {}).get("median_ms")
        lines.append(f"| {name} | {nll[name]:.4f} | {bits[name]:.4f} | {'' if cost is None else f'{cost:.3f}'} |")
    if stats:
        lines += ["", "| melodies | note starts per bar | mean note (steps) | rests | in key | pitch classes vs held out |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name in ("train", "held_out", "generated_t1"):
            s = stats[name]
            distance = "" if name == "held_out" else histogram_distance(s, stats["held_out"])
            lines.append(f"| {name} | {s['onsets_per_bar']} | {s['mean_note_steps']} | {s['rest_share']} | "
                         f"{s['in_key_share']} | {distance} |")
    morph = vae["morph"]
    lines += ["", f"Bar VAE (latent {vae['latent']}): held-out 2-bar reconstruction {vae['token_accuracy']:.3f} of "
                  f"tokens, {vae['onset_accuracy']} of note starts; morph {morph['from']} -> {morph['to']} in "
                  f"{morph['points']} points: {morph['mean']} tokens of 32 change between neighbours (max {morph['max']}), "
                  f"path / ends = {morph['path_over_ends']}.", "", report.get("choice", ""), ""]
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    c = Config()
    p = argparse.ArgumentParser(prog="live train music", description=__doc__.split("\n")[0])
    p.add_argument("--midi", type=Path, metavar="DIR", help="train on the MIDI files in DIR (their top line) instead "
                                                             "of music21's corpus")
    p.add_argument("--collections", nargs="+", default=list(DEFAULT_COLLECTIONS), choices=list(COLLECTIONS),
                   metavar="NAME", help=f"music21 collections (default: {' '.join(DEFAULT_COLLECTIONS)}; "
                                        f"all: {' '.join(COLLECTIONS)})")
    p.add_argument("--limit", type=int, help="read at most this many scores or tunes of each collection")
    p.add_argument("--cache", type=Path, help="where the parsed corpus is cached (default ~/.cache/live/music)")
    p.add_argument("--workers", type=int, default=2, help="processes parsing the corpus (default %(default)s)")
    p.add_argument("--steps", type=int, default=c.steps, help="optimiser steps of the LM and the transformer "
                                                               "(default %(default)s)")
    p.add_argument("--batch", type=int, default=c.batch, help="sequences a step (default %(default)s)")
    p.add_argument("--window", type=int, default=c.window, help="steps a sequence (default %(default)s)")
    p.add_argument("--hidden", type=int, default=c.hidden, help="GRU width (default %(default)s)")
    p.add_argument("--layers", type=int, default=c.layers, help="GRU layers (default %(default)s)")
    p.add_argument("--no-transformer", action="store_true", help="skip the transformer comparison")
    p.add_argument("--vae-steps", type=int, default=c.vae_steps, help="bar VAE steps (default %(default)s)")
    p.add_argument("--latent", type=int, default=c.latent, help="bar VAE latent size (default %(default)s)")
    p.add_argument("--beta", type=float, default=c.beta, help="bar VAE KL weight (default %(default)s)")
    p.add_argument("--samples", type=int, default=c.samples, help="melodies sampled for the statistics")
    p.add_argument("--seed", type=int, default=c.seed)
    p.add_argument("--threads", type=int, default=TRAIN_THREADS, help="torch threads (default %(default)s); the "
                                                                      "result depends on it")
    p.add_argument("--out", type=Path, default=Path("exported_models"), help="where --export writes")
    p.add_argument("--export", action="store_true",
                   help=f"write {LM_NAME}, {ENCODER_NAME} and {DECODER_NAME} (.onnx + .json) and report/music.*")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.window <= LEAD:
        raise LiveError(f"--window must be more than {LEAD} steps (a bar of silence comes before every piece)")
    for name in ("steps", "batch", "window", "hidden", "layers", "vae_steps", "latent", "threads", "workers",
                 "samples"):
        if getattr(args, name) < 1:
            raise LiveError(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise LiveError("--limit must be at least 1")
    say = lambda line: print(line, flush=True)  # noqa: E731
    started = time.perf_counter()
    corpus = midi_corpus(args.midi) if args.midi else music21_corpus(
        tuple(args.collections), args.limit, args.cache, args.workers, say)
    config = Config(seed=args.seed, threads=args.threads, steps=args.steps, batch=args.batch, window=args.window,
                    hidden=args.hidden, layers=args.layers, transformer=not args.no_transformer,
                    vae_steps=args.vae_steps, latent=args.latent, beta=args.beta, samples=args.samples)
    argv = argv if any(a.startswith("--threads") for a in argv) else [*argv, "--threads", str(args.threads)]
    report = run(corpus, config, args.out if args.export else None, argv, say)
    report["minutes"] = round((time.perf_counter() - started) / 60, 2)
    print_report(report)
    if args.export:
        write_report({**report, "command": command_line("music", argv)}, args.out / "report")
        say(f"wrote {', '.join(f'{args.out / n}.onnx' for n in (LM_NAME, ENCODER_NAME, DECODER_NAME))}, their "
            f"manifests and {args.out / 'report' / 'music.json'}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    print("held-out NLL (nats/token, bits/token):")
    for name, value in report["nll_nats_per_token"].items():
        print(f"  {name:12s} {value:.4f}  {report['nll_bits_per_token'][name]:.4f}")
    for name, cost in report.get("cost_per_step_ort_cpu_1_thread", {}).items():
        print(f"cost {name}: {cost['median_ms']:.3f} ms median, {cost['p99_ms']:.3f} ms p99 (ORT CPU, 1 thread)")
    for name, s in report.get("stats", {}).items():
        print(f"stats {name}: {s}")
    vae = report["vae"]
    print(f"vae: token accuracy {vae['token_accuracy']}, onset accuracy {vae['onset_accuracy']}, morph {vae['morph']}")
    if "choice" in report:
        print(report["choice"])
