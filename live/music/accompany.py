"""Accompany: bass and chords under what the performer plays, on the beat.

At each beat where the chords sound (once a bar when sparse, every beat when busy) the chord is chosen again from the
key's diatonic chords: each is scored by how well the pitch classes heard fit its tones (weighted by how long they
sounded, the latest harmonic span most), plus a prior for what usually follows the chord before, measured on Bach's
chorales. The bass plays the root low on beat 1 (and the fifth on beat 3, more as density rises); the chord is voiced
in a middle register below the performer's lowest recent note, moving as little as it can from the last voicing.

Pure and cheap (a few hundred arithmetic steps a beat, no model), so it plans in the music thread with room to spare.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from live.music.modes import Controls, Heard
from live.music.tokens import BAR_STEPS, STEPS_PER_BEAT, Key, Note

BASS_LOW, BASS_HIGH = 36, 52  # the bass's register: roots in C2..B2, fifths up to E3
CHORD_LOW, CHORD_HIGH = 48, 67  # the chords' register, C3..G4
BASS_FLOOR = 28  # E1: the lowest the bass goes to stay under a performer who plays low
TONE_WEIGHTS = (1.0, 1.0, 0.8, 0.3)  # root, third, fifth, seventh: how much hearing each says "this chord"
OFF_CHORD = -0.5  # hearing a pitch class outside the chord counts against it
PRIOR_WEIGHT = 0.15  # the transition prior's weight (log-probability) beside the fit (-0.5..1)
OLDER = 0.35  # what was heard earlier in the bar than the current harmonic span counts this much
SEVENTH_HEARD = 0.15  # the seventh is voiced when it makes up this share of what was heard in the latest span


class Chord(NamedTuple):
    label: str  # roman numeral in its key
    root: int  # pitch class
    intervals: tuple[int, ...]  # semitones above the root: triad, then seventh

    def pitch_classes(self, seventh: bool = False) -> tuple[int, ...]:
        return tuple((self.root + i) % 12 for i in self.intervals[:4 if seventh else 3])


MAJ7, MIN7, DOM7, HALF_DIM7, DIM7 = (0, 4, 7, 11), (0, 3, 7, 10), (0, 4, 7, 10), (0, 3, 6, 10), (0, 3, 6, 9)
# The diatonic chords of a key: (label, root above the tonic, intervals). Minor keys have both the raised-leading-
# tone chords (V, vii°) and the natural VII, as minor-key tunes use both.
MAJOR_CHORDS = (("I", 0, MAJ7), ("ii", 2, MIN7), ("iii", 4, MIN7), ("IV", 5, MAJ7), ("V", 7, DOM7),
                ("vi", 9, MIN7), ("vii°", 11, HALF_DIM7))
MINOR_CHORDS = (("i", 0, MIN7), ("ii°", 2, HALF_DIM7), ("III", 3, MAJ7), ("iv", 5, MIN7), ("V", 7, DOM7),
                ("VI", 8, MAJ7), ("VII", 10, DOM7), ("vii°", 11, DIM7))

# P(next chord | chord) a beat later, rows and columns in the order of MAJOR_CHORDS / MINOR_CHORDS, staying included.
# Measured by live/train/chord_prior.py (music21 10.5.1's 371 Bach chorales, each beat labelled with the best-fitting
# diatonic chord of its local key; 8325 major-key and 3899 minor-key transitions; 0.5 added to every count).
TRANSITIONS = {
    False: np.array([  # I ii iii IV V vi vii°
        [0.499, 0.087, 0.016, 0.187, 0.135, 0.060, 0.017],
        [0.261, 0.041, 0.078, 0.019, 0.523, 0.039, 0.039],
        [0.210, 0.110, 0.034, 0.337, 0.066, 0.190, 0.054],
        [0.407, 0.088, 0.057, 0.150, 0.198, 0.037, 0.062],
        [0.757, 0.011, 0.024, 0.026, 0.121, 0.055, 0.005],
        [0.105, 0.350, 0.048, 0.152, 0.197, 0.081, 0.068],
        [0.721, 0.002, 0.035, 0.047, 0.076, 0.113, 0.006],
    ]),
    True: np.array([  # i ii° III iv V VI VII vii°
        [0.425, 0.091, 0.054, 0.110, 0.174, 0.064, 0.051, 0.030],
        [0.296, 0.019, 0.157, 0.016, 0.445, 0.040, 0.019, 0.009],
        [0.275, 0.071, 0.129, 0.186, 0.027, 0.246, 0.049, 0.017],
        [0.232, 0.060, 0.176, 0.108, 0.240, 0.052, 0.088, 0.044],
        [0.722, 0.002, 0.017, 0.016, 0.153, 0.083, 0.002, 0.005],
        [0.059, 0.215, 0.172, 0.169, 0.088, 0.149, 0.108, 0.039],
        [0.181, 0.014, 0.446, 0.116, 0.095, 0.062, 0.068, 0.019],
        [0.780, 0.005, 0.014, 0.051, 0.098, 0.033, 0.005, 0.014],
    ]),
}
LOG_TRANSITIONS = {minor: np.log(table) for minor, table in TRANSITIONS.items()}


def diatonic_chords(key: Key) -> tuple[Chord, ...]:
    """The chords of `key`, in the order of its transition table."""
    return tuple(Chord(label, (key.tonic + step) % 12, intervals)
                 for label, step, intervals in (MINOR_CHORDS if key.minor else MAJOR_CHORDS))


def chord_fit(chord: Chord, weights: np.ndarray) -> float:
    """How well pitch-class weights (summing to 1) fit `chord`: its tones count for it, the others against it."""
    template = np.full(12, OFF_CHORD)
    for pc, weight in zip(chord.pitch_classes(seventh=True), TONE_WEIGHTS):
        template[pc] = weight
    return float(template @ weights)


def heard_weights(notes: tuple[Note, ...] | list[Note], until: int, span: int, older: float = OLDER) -> np.ndarray:
    """Pitch-class weights (unnormalised) of the notes sounding in the bar before step `until`: each step a note
    sounds in the last `span` steps counts 1, earlier steps in the bar `older`."""
    weights = np.zeros(12)
    recent, bar = until - span, until - max(span, BAR_STEPS)
    for note in notes:
        end = min(note.start + max(note.steps, 1), until)
        weights[note.pitch % 12] += max(end - max(note.start, recent), 0) + \
            older * max(min(end, recent) - max(note.start, bar), 0)
    return weights


def comp_hits(density: float) -> tuple[int, ...]:
    """The steps of the bar where chords and bass sound (and chords may change): the whole bar when sparse, half
    notes in the middle, every beat when busy."""
    if density < 1 / 3:
        return (0,)
    if density < 2 / 3:
        return (0, 2 * STEPS_PER_BEAT)
    return tuple(range(0, BAR_STEPS, STEPS_PER_BEAT))


# What the bass plays at each hit when the chord did not change there (a change always brings the root).
BASS_ROLE = {0: 0, STEPS_PER_BEAT: 0, 2 * STEPS_PER_BEAT: 2, 3 * STEPS_PER_BEAT: 1}  # index into root, third, fifth


def voicings(pitch_classes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every close-position voicing (each inversion, each octave) of the pitch classes inside CHORD_LOW..CHORD_HIGH."""
    found = []
    for inversion in range(len(pitch_classes)):
        order = pitch_classes[inversion:] + pitch_classes[:inversion]
        for octave in range(CHORD_LOW // 12 - 1, CHORD_HIGH // 12 + 1):
            pitches = [octave * 12 + order[0]]
            for pc in order[1:]:
                pitches.append(pitches[-1] + (pc - pitches[-1]) % 12)
            if pitches[0] >= CHORD_LOW and pitches[-1] <= CHORD_HIGH:
                found.append(tuple(pitches))
    return found


def movement(voicing: tuple[int, ...], before: tuple[int, ...]) -> float:
    """How far the voices move from `before` (each new tone to the nearest old one); from the middle of the chord
    register when there was none."""
    if not before:
        return abs(sum(voicing) / len(voicing) - (CHORD_LOW + CHORD_HIGH) / 2)
    return float(sum(min(abs(p - q) for q in before) for p in voicing))


def bass(chord: Chord, role: int, ceiling: int) -> int:
    """The chord's root (role 0), third (1) or fifth (2) in the bass register, under the performer's line."""
    pitch = BASS_LOW + (chord.root - BASS_LOW) % 12 + chord.intervals[role]
    if pitch > BASS_HIGH:
        pitch -= 12
    while pitch >= ceiling and pitch - 12 >= BASS_FLOOR:
        pitch -= 12
    return pitch


class Accompany:
    """Bass and chords under the performer (the live mode "accompany")."""

    name = "accompany"

    def __init__(self, rest_after_bars: int = 2) -> None:
        """`rest_after_bars`: the accompaniment stops when the performer has played nothing for this many bars."""
        self.rest_after = rest_after_bars * BAR_STEPS
        self.chord: Chord | None = None  # the chord sounding, for status
        self._voicing: tuple[int, ...] = ()
        self._decided_at = -1

    def plan(self, heard: Heard, start: int, steps: int, controls: Controls) -> list[Note]:
        """The bass and chord notes starting in start..start+steps (see live.music.modes.Mode)."""
        last = max((n.start + n.steps for n in heard.notes), default=None)
        if not heard.held and (last is None or start - last >= self.rest_after):
            self._voicing = ()
            return []
        key = controls.key or heard.key
        hits = comp_hits(controls.density)
        span = BAR_STEPS // len(hits)
        notes: list[Note] = []
        for step in range(start, start + steps):
            if step % BAR_STEPS not in hits:
                continue
            weights = heard_weights(heard.notes, step, span)
            chord, changed = self._decide(weights, key, step)
            recent = [n.pitch for n in heard.notes if n.start + n.steps > step - BAR_STEPS]
            ceiling = min(recent, default=CHORD_HIGH + 1)
            latest = heard_weights(heard.notes, step, span, older=0.0)
            seventh = latest[chord.pitch_classes(True)[3]] >= SEVENTH_HEARD * max(latest.sum(), 1.0)
            self._voicing = self._voice(chord.pitch_classes(seventh), ceiling)
            notes += [Note(step, span, p) for p in self._voicing]
            notes.append(Note(step, span, bass(chord, 0 if changed else BASS_ROLE[step % BAR_STEPS], ceiling)))
        return notes

    def _decide(self, weights: np.ndarray, key: Key, step: int) -> tuple[Chord, bool]:
        """The chord at `step` (chosen once a step) and whether it changed there."""
        if step == self._decided_at and self.chord is not None:
            return self.chord, False
        self._decided_at = step
        chords = diatonic_chords(key)
        before = self.chord
        previous = next((i for i, c in enumerate(chords) if before and c.root == before.root
                         and c.intervals[:3] == before.intervals[:3]), None)
        if not weights.any():
            self.chord = chords[previous if previous is not None else 0]
        else:
            fit = np.array([chord_fit(c, weights / weights.sum()) for c in chords])
            prior = LOG_TRANSITIONS[key.minor][previous] if previous is not None else 0.0
            self.chord = chords[int(np.argmax(fit + PRIOR_WEIGHT * prior))]
        return self.chord, self.chord != before

    def _voice(self, pitch_classes: tuple[int, ...], ceiling: int) -> tuple[int, ...]:
        """The voicing below `ceiling` (the lowest if none is) that moves least from the last one."""
        candidates = voicings(pitch_classes)
        below = [v for v in candidates if v[-1] < ceiling] or [min(candidates, key=lambda v: v[-1])]
        return min(below, key=lambda v: (movement(v, self._voicing), -v[-1]))
