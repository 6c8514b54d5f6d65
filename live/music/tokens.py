"""Melodies as tokens on a sixteenth-note grid: the one representation the music models learn and play.

A melody is one line (the highest note sounding wins), read on a grid of STEPS_PER_BEAT steps a beat. Each step is
one token: REST (nothing sounds), HOLD (the note before goes on), or a note starting at a pitch in LOW..HIGH. The
models also get each step's place in its bar (`positions`), so they learn where in the bar notes fall.

Training (live/train/music.py) and the live part (live/music/player.py) both go through here, so a change of grid or
range is made once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

STEPS_PER_BEAT = 4  # sixteenth notes
BEATS_PER_BAR = 4
BAR_STEPS = STEPS_PER_BEAT * BEATS_PER_BAR
LOW, HIGH = 36, 96  # C2..C7: the pitches a token can start (others are moved by octaves into this range)
REST, HOLD = 0, 1
FIRST_PITCH = 2
VOCAB = FIRST_PITCH + HIGH - LOW + 1


class Note(NamedTuple):
    """A note on the grid: the step it starts at, how many steps it lasts, its MIDI pitch."""

    start: int
    steps: int
    pitch: int


def pitch_token(pitch: int) -> int:
    """The token that starts `pitch`, moved by octaves into LOW..HIGH."""
    while pitch < LOW:
        pitch += 12
    while pitch > HIGH:
        pitch -= 12
    return FIRST_PITCH + pitch - LOW


def token_pitch(token: int) -> int | None:
    """The MIDI pitch a token starts, None for REST and HOLD."""
    return LOW + token - FIRST_PITCH if token >= FIRST_PITCH else None


def encode(notes: Iterable[Note], steps: int, start: int = 0) -> np.ndarray:
    """Tokens (int64, `steps` long) for the steps start..start+steps of `notes`. Where notes overlap, the highest
    sounding one is the melody; a note that starts under a higher held note is heard when that one ends only if it
    starts again (one line, no voices)."""
    top = np.full(steps, -1, dtype=np.int64)  # the pitch sounding at each step, -1 = none
    onset = np.zeros(steps, dtype=bool)
    for note in sorted(notes, key=lambda n: (n.start, n.pitch)):
        a, b = max(note.start - start, 0), min(note.start + max(note.steps, 1) - start, steps)
        if a >= b:
            continue
        span = top[a:b]
        higher = span > note.pitch
        if note.start - start == a and not higher[0]:
            onset[a] = True
        span[~higher] = note.pitch
        onset[a + 1:b][~higher[1:]] = False  # the new note covers what it outsounds
    tokens = np.full(steps, REST, dtype=np.int64)
    sounding = top >= 0
    tokens[sounding] = HOLD
    for i in np.flatnonzero(sounding & (onset | np.r_[True, top[1:] != top[:-1]])):
        tokens[i] = pitch_token(int(top[i]))
    return tokens


def decode(tokens: Sequence[int], start: int = 0) -> list[Note]:
    """The notes of a token line, their steps counted from `start`. A HOLD after a REST (a model may write one)
    is a rest."""
    notes: list[Note] = []
    current: list[int] | None = None  # [start, steps, pitch] of the note sounding
    for i, token in enumerate(int(t) for t in tokens):
        if token == HOLD and current is not None:
            current[1] += 1
            continue
        if current is not None:
            notes.append(Note(*current))
            current = None
        pitch = token_pitch(token)
        if pitch is not None:
            current = [start + i, 1, pitch]
    if current is not None:
        notes.append(Note(*current))
    return notes


def positions(steps: int, start: int = 0) -> np.ndarray:
    """Each step's place in its bar (int64, 0..BAR_STEPS-1), for steps start..start+steps."""
    return (np.arange(start, start + steps, dtype=np.int64)) % BAR_STEPS


# Krumhansl & Kessler's key profiles (Krumhansl 1990, "Cognitive Foundations of Musical Pitch", table 2.1): how well
# each pitch class fits a major or a minor key whose tonic is pitch class 0.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor with the raised seventh a minor-key melody leads with


class Key(NamedTuple):
    tonic: int  # pitch class, 0 = C
    minor: bool

    def scale(self) -> frozenset[int]:
        """The pitch classes in this key."""
        return frozenset((self.tonic + step) % 12 for step in (MINOR_SCALE if self.minor else MAJOR_SCALE))

    def name(self) -> str:
        return ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"][self.tonic] + \
            (" minor" if self.minor else " major")


def key_of(notes: Iterable[Note]) -> Key:
    """The key a phrase is most likely in: the Krumhansl-Schmuckler method, each pitch class weighted by how long
    it sounds, correlated with the 24 rotated key profiles. A phrase with no notes is in C major."""
    weights = np.zeros(12)
    for note in notes:
        weights[note.pitch % 12] += max(note.steps, 1)
    if not weights.any():
        return Key(0, False)
    best, found = -2.0, Key(0, False)
    for minor, profile in ((False, MAJOR_PROFILE), (True, MINOR_PROFILE)):
        for tonic in range(12):
            r = np.corrcoef(weights, np.roll(profile, tonic))[0, 1]
            if np.isfinite(r) and r > best:
                best, found = r, Key(tonic, minor)
    return found


def in_key(notes: Iterable[Note], key: Key) -> float:
    """The share of `notes` whose pitch class is in `key` (1.0 for no notes)."""
    notes = list(notes)
    scale = key.scale()
    return sum(n.pitch % 12 in scale for n in notes) / len(notes) if notes else 1.0
