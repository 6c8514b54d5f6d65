"""Morph: a fader moves through a bar VAE's latent space between two stored melodies, and the two bars it decodes
loop.

Melodies A and B (two bars of tokens, live/music/tokens.py) are encoded once, when stored, to their latent means; the
fader (Controls.morph) mixes the two linearly and the decoder turns the mix back into two bars: the most likely token
each step, with out-of-key note starts masked when the key is locked, moved by octaves towards the register. The
loop is decoded again only at its start (every LOOP_STEPS of the show's grid, a bar line) and only if something
changed (fader, key, register, a stored melody), so a fader moved mid-loop is heard from the next loop on, the loop
never jumps mid-phrase, and a beat between loop starts costs a list filter.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from live.errors import LiveError
from live.inference import BACKENDS, Session
from live.models.manifest import Manifest, load_manifest
from live.music.modes import Controls, Heard
from live.music.tokens import (BAR_STEPS, FIRST_PITCH, VOCAB, Key, Note, decode, encode, key_of,
                               pitch_token, token_pitch)

EXPORTED = Path(__file__).resolve().parents[2] / "exported_models"
ENCODER = EXPORTED / "music-vae-encoder.json"
DECODER = EXPORTED / "music-vae-decoder.json"
LOOP_STEPS = 2 * BAR_STEPS  # the VAE's melodies are two bars
RETRAIN = "train the music VAE with `live train music` (it writes the encoder, the decoder and their manifests)"


def open_model(path: Path, kind: str, providers: tuple[str, ...], threads: int, backend: str,
               ) -> tuple[Manifest, Session]:
    """A manifest of `kind` (its sha256 checked) and its session; LiveError naming the file and the fix."""
    try:
        manifest = load_manifest(path)
    except LiveError as err:
        raise LiveError(err.what, RETRAIN if path.parent == EXPORTED else err.fix) from None
    if manifest.kind != kind:
        raise LiveError(f"{path} is a {manifest.kind} model, not a {kind} one",
                        f"use exported_models/{ENCODER.name if kind == 'music-encoder' else DECODER.name}")
    return manifest, BACKENDS.get(backend)(manifest.onnx_path, providers, threads)


@functools.cache
def out_of_key(key: Key) -> np.ndarray:
    """The tokens that start a note outside `key` (a mask over the vocabulary)."""
    scale = key.scale()
    mask = np.array([(pitch := token_pitch(t)) is not None and pitch % 12 not in scale for t in range(VOCAB)])
    mask.flags.writeable = False  # shared by every call for this key
    return mask


def towards(notes: list[Note], register: int) -> list[Note]:
    """`notes` moved by whole octaves so their mean pitch (weighted by length) is nearest `register`, each kept in
    LOW..HIGH."""
    if not notes:
        return notes
    mean = sum(n.pitch * n.steps for n in notes) / sum(n.steps for n in notes)
    shift = 12 * round((register - mean) / 12)
    return [n._replace(pitch=token_pitch(pitch_token(n.pitch + shift))) for n in notes]


class Morph:
    """The live mode "morph": the loop between melodies A and B that the fader chooses."""

    name = "morph"

    def __init__(self, encoder: Path = ENCODER, decoder: Path = DECODER, a: Sequence[int] | None = None,
                 b: Sequence[int] | None = None, providers: tuple[str, ...] = ("cpu",), threads: int = 1,
                 backend: str = "onnxruntime") -> None:
        """`a`, `b`: the two melodies, LOOP_STEPS tokens each (default: the first two presets in the manifests).
        One ONNX Runtime thread on the CPU by default: the models are small and run once a loop at most."""
        encoder_manifest, self._encoder = open_model(Path(encoder), "music-encoder", providers, threads, backend)
        decoder_manifest, self._decoder = open_model(Path(decoder), "music-decoder", providers, threads, backend)
        controls = {**encoder_manifest.controls, **decoder_manifest.controls}
        self.latent = int(controls.get("latent", 0))
        shapes = {f"{m.kind} {t.name}": t.shape for m in (encoder_manifest, decoder_manifest)
                  for t in (*m.inputs, *m.outputs)}
        needed = {"music-encoder tokens": [1, LOOP_STEPS], "music-encoder mu": [1, self.latent],
                  "music-decoder z": [1, self.latent], "music-decoder logits": [1, LOOP_STEPS, VOCAB]}
        if controls.get("bars") != LOOP_STEPS // BAR_STEPS or any(shapes.get(k) != v for k, v in needed.items()):
            raise LiveError(f"{encoder} and {decoder} have {controls.get('bars')} bars and tensors {shapes}; the "
                            f"live part needs {LOOP_STEPS // BAR_STEPS} bars and {needed}", RETRAIN)
        presets = list(controls.get("presets", {}).values())
        if (a is None or b is None) and len(presets) < 2:
            raise LiveError(f"{encoder} has {len(presets)} preset melodies and morph needs two (A and B)",
                            "give the mode melodies A and B, or " + RETRAIN)
        self.melodies: dict[str, np.ndarray] = {}
        self._means: dict[str, np.ndarray] = {}
        for which, tokens in (("a", presets[0] if a is None else a), ("b", presets[1] if b is None else b)):
            self._set(which, np.asarray(tokens, dtype=np.int64), f"melody {which.upper()}")
        self._loop: list[Note] = []  # the loop's notes, steps counted from its start
        self._loop_start: int | None = None
        self._made_with: tuple | None = None  # what the loop was decoded from
        self.decodes = 0

    def store(self, which: str, notes: Iterable[Note], start: int) -> None:
        """Make the two bars of `notes` from grid step `start` melody A or B (heard from the next loop start)."""
        if which not in ("a", "b"):
            raise LiveError(f"morph can store melody 'a' or 'b', not {which!r}", "store as 'a' or 'b'")
        tokens = encode(notes, LOOP_STEPS, start)
        if not (tokens >= FIRST_PITCH).any():
            raise LiveError(f"nothing to store as melody {which.upper()}: no note starts in steps "
                            f"{start}..{start + LOOP_STEPS}", "play a phrase, then store it")
        self._set(which, tokens, f"melody {which.upper()}")

    def _set(self, which: str, tokens: np.ndarray, what: str) -> None:
        if tokens.shape != (LOOP_STEPS,) or tokens.min() < 0 or tokens.max() >= VOCAB:
            raise LiveError(f"{what} must be {LOOP_STEPS} tokens in 0..{VOCAB - 1}, got shape {tokens.shape}",
                            "give two bars of tokens from live.music.tokens.encode")
        (mean,) = self._encoder.run(["mu"], {"tokens": tokens[None]})
        self.melodies = {**self.melodies, which: tokens}  # replaced whole: plan may read them from another thread
        self._means = {**self._means, which: mean[0].astype(np.float32)}
        self._melodies_key = key_of([n for tokens in self.melodies.values() for n in decode(tokens)])

    def plan(self, heard: Heard, start: int, steps: int, controls: Controls) -> list[Note]:
        """The loop's notes starting in start..start+steps (see live.music.modes.Mode)."""
        end, planned = start + steps, []
        loop = start - start % LOOP_STEPS
        while loop < end:
            if loop != self._loop_start:  # a loop starts (or the first one): decode again if anything changed
                self._loop_start = loop
                self._refresh(heard, controls)
            planned += [Note(loop + n.start, n.steps, n.pitch) for n in self._loop if start <= loop + n.start < end]
            loop += LOOP_STEPS
        return planned

    def key(self, heard: Heard, controls: Controls) -> Key:
        """The key notes are locked to: the show's, else the performer's when playing, else that of A and B."""
        if controls.key is not None:
            return controls.key
        if heard.notes:
            return heard.key
        return self._melodies_key

    def _refresh(self, heard: Heard, controls: Controls) -> None:
        morph = min(max(float(controls.morph), 0.0), 1.0)
        key = self.key(heard, controls) if controls.key_lock else None
        wanted = (morph, key, controls.register, self._means["a"].tobytes(), self._means["b"].tobytes())
        if wanted == self._made_with:
            return
        self._made_with = wanted
        self._loop = self.decode((1 - morph) * self._means["a"] + morph * self._means["b"], key, controls.register)

    def decode(self, z: np.ndarray, key: Key | None, register: int) -> list[Note]:
        """The two bars latent `z` decodes to: the likeliest token each step (note starts outside `key` masked
        when a key is given), moved by octaves towards `register`; steps counted from the loop's start."""
        (logits,) = self._decoder.run(["logits"], {"z": z.astype(np.float32)[None]})
        logits = logits[0]
        if key is not None:
            logits = np.where(out_of_key(key), -np.inf, logits)
        self.decodes += 1
        return towards(decode(logits.argmax(axis=-1)), register)
