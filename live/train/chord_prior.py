"""Measure the chord-to-chord prior of live/music/accompany.py (TRANSITIONS) on the Bach chorales music21 ships.

`python -m live.train.chord_prior [--limit N]` (music21 is a train extra) prints the table to paste into
accompany.py. Each chorale is read on the live grid (sixteenths) and beat by beat, the way accompany hears a
performer at one chord a beat: the beat's pitch classes, weighted by how long they sound in it (accompany's
heard_weights), are given the diatonic chord that fits them best (accompany's chord_fit, no prior) in the local key
(tokens.key_of over the two bars around the beat). Two beats in a row in the same local key, both fitting a chord
by at least MIN_FIT, count as one transition (staying included); a beat that fits no chord that well (passing
harmony, a chromatic chord) breaks the chain. Rows are smoothed with PSEUDO counts and normalised.
"""

from __future__ import annotations

import argparse

import numpy as np

from live.music.accompany import MAJOR_CHORDS, MINOR_CHORDS, chord_fit, diatonic_chords, heard_weights
from live.music.tokens import BAR_STEPS, STEPS_PER_BEAT, Key, Note, key_of

MIN_FIT = 0.5  # a full triad in four voices fits at about 0.9; a beat of passing notes much lower
PSEUDO = 0.5  # per cell, so a transition never seen keeps a small probability


def chorale_notes(name: str) -> list[Note]:
    """A corpus score's notes on the live grid (every part, ties joined, grace notes dropped)."""
    from music21 import corpus

    score = corpus.parse(name).stripTies()
    notes = []
    for element in score.flatten().notes:
        steps = round(float(element.duration.quarterLength) * STEPS_PER_BEAT)
        start = round(float(element.offset) * STEPS_PER_BEAT)
        notes += [Note(start, steps, p.midi) for p in element.pitches if steps > 0]
    return notes


def beat_chords(notes: list[Note]) -> list[tuple[Key, int] | None]:
    """Each beat's (local key, index of the best-fitting diatonic chord), None where no chord fits MIN_FIT."""
    end = max(n.start + n.steps for n in notes)
    labels: list[tuple[Key, int] | None] = []
    for beat in range(0, end, STEPS_PER_BEAT):
        weights = heard_weights(notes, beat + STEPS_PER_BEAT, STEPS_PER_BEAT, older=0.0)
        if not weights.any():
            labels.append(None)
            continue
        around = [n for n in notes if n.start < beat + BAR_STEPS and n.start + n.steps > beat - BAR_STEPS]
        key = key_of(around)
        fits = [chord_fit(chord, weights / weights.sum()) for chord in diatonic_chords(key)]
        best = int(np.argmax(fits))
        labels.append((key, best) if fits[best] >= MIN_FIT else None)
    return labels


def measure(limit: int | None = None) -> tuple[dict[bool, np.ndarray], int]:
    """Transition counts by mode (False: major, True: minor) over the chorales, and how many were read."""
    from music21 import corpus

    counts = {False: np.zeros((len(MAJOR_CHORDS),) * 2), True: np.zeros((len(MINOR_CHORDS),) * 2)}
    names = list(corpus.chorales.Iterator(returnType="filename"))[:limit]
    for name in names:
        labels = beat_chords(chorale_notes(name))
        for before, after in zip(labels, labels[1:]):
            if before and after and before[0] == after[0]:
                counts[before[0].minor][before[1], after[1]] += 1
    return counts, len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="read only the first N chorales")
    args = parser.parse_args()
    counts, read = measure(args.limit)
    print(f"# {read} chorales; transitions counted: major {int(counts[False].sum())}, minor "
          f"{int(counts[True].sum())}")
    for minor, chords in ((False, MAJOR_CHORDS), (True, MINOR_CHORDS)):
        table = (counts[minor] + PSEUDO) / (counts[minor] + PSEUDO).sum(axis=1, keepdims=True)
        print(f"    {minor}: np.array([  # " + " ".join(label for label, _, _ in chords))
        for row in table:
            print("        [" + ", ".join(f"{p:.3f}" for p in row) + "],")
        print("    ]),")


if __name__ == "__main__":
    main()
