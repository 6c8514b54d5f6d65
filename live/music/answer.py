"""Answer mode: call and response. The performer plays a phrase; when they stop, the model answers on the next beat.

The phrase is what the performer played in the last `call_bars` bars. When nothing is held any more, the first beat
planned after the release starts the answer (the player plans each beat PLAN_AHEAD_S before it, so the model
decides with everything played up to then): `answer_bars` bars drawn from the melody model primed with the phrase,
moved by octaves next to /music/register (the model hears the phrase in the range it answers in), key-locked to
the phrase's key (or /music/key), starting with a note on that beat. An answer that repeats the phrase (the same
rhythm with the same intervals) is drawn again, a little hotter each time, and never played. Playing again stops
the answer at the next beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from live.music import tokens as tk
from live.music.model import MusicModel
from live.music.modes import Controls, Heard
from live.music.tokens import Key, Note

DRAWS = 6  # an answer that copies the phrase is drawn again up to this many times
HOTTER = 0.3  # each new draw's temperature rises by this much
LATE_STEPS = 2 * tk.STEPS_PER_BEAT  # a phrase that ended longer ago than this (a mode switched on later) is past


class Answer:
    """One performer's call and the model's response (modes.Mode)."""

    name = "answer"

    def __init__(self, model: MusicModel, seed: int | None = None) -> None:
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.answers = 0  # answers played
        self.redrawn = 0  # draws refused as copies of the phrase
        self.refused = 0  # phrases left unanswered: every draw copied them
        self.key: Key | None = None  # the key of the last answer
        self._answered: float | None = None  # the end (Heard.last_off) of the phrase last answered or passed
        self._notes: list[Note] = []  # the answer playing, on absolute grid steps

    def plan(self, heard: Heard, start: int, steps: int, controls: Controls) -> list[Note]:
        """The answer's notes in steps start..start+steps; a new answer begins here if a phrase has just ended."""
        if heard.held or heard.last_off != self._answered:
            self._notes = [n for n in self._notes if n.start < start]  # the performer plays again: stop
        if not heard.held and heard.last_off is not None and heard.last_off != self._answered \
                and start % tk.STEPS_PER_BEAT == 0:
            self._answered = heard.last_off
            if start - heard.last_off <= LATE_STEPS:
                self._notes = self.answer(heard.notes, start, controls)
        return [n for n in self._notes if start <= n.start < start + steps]

    def answer(self, heard: Sequence[Note], start: int, controls: Controls) -> list[Note]:
        """The answer starting at grid step `start` to the phrase in `heard` (the notes of the last call_bars bars
        before it); [] if there is no phrase, or if every draw copied it."""
        call = controls.call_bars * tk.BAR_STEPS
        phrase = [n for n in heard if n.start + n.steps > start - call and n.start < start]
        if not phrase:
            return []
        key = controls.key or tk.key_of(phrase)
        shift = 12 * round((controls.register - float(np.median([n.pitch for n in phrase]))) / 12)
        prime = tk.encode([n._replace(pitch=n.pitch + shift) for n in phrase], call, start - call)
        length = controls.answer_bars * tk.BAR_STEPS
        for draw in range(DRAWS):
            hotter = replace(controls, temperature=controls.temperature + HOTTER * draw)
            notes = tk.decode(self.model.generate(prime, start, length, hotter, key, self.rng, first_note=True), start)
            if not copies(notes, phrase):
                self.answers += 1
                self.key = key
                return notes
            self.redrawn += 1
        self.refused += 1
        return []


def copies(answer: Sequence[Note], phrase: Sequence[Note]) -> bool:
    """Whether `answer` repeats `phrase`: its notes have the rhythm (onsets and lengths from the first) of the
    phrase's first or last notes, and the same intervals (three notes or more: a transposed copy is a copy) or the
    same pitch classes (fewer)."""
    k = min(len(answer), len(phrase))
    if k == 0:
        return False
    for part in (phrase[:k], phrase[-k:]):
        rhythm = [(n.start - part[0].start, n.steps) for n in part]
        if rhythm != [(n.start - answer[0].start, n.steps) for n in answer[:k]]:
            continue
        if k >= 3 and np.array_equal(np.diff([n.pitch for n in part]), np.diff([n.pitch for n in answer[:k]])):
            return True
        if [n.pitch % 12 for n in part] == [n.pitch % 12 for n in answer[:k]]:
            return True
    return False
