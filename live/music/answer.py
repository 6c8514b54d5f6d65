"""Answer mode: call and response. The performer plays a phrase; when they stop, the model answers on the next beat.

The phrase is what the performer played in the last `call_bars` bars. When nothing is held any more, the first beat
planned after the release starts the answer (the player plans each beat PLAN_AHEAD_S before it, so the model
decides with everything played up to then): `answer_bars` bars from the melody model primed with the phrase, moved
by octaves next to /music/register (the model hears the phrase in the range it answers in), key-locked to the
phrase's key (or /music/key), starting with a note on that beat.

The answer is drawn as it plays: its first beat and a bar more when it starts, then each beat's steps just before
that beat (DRAWN_AHEAD steps beyond it are always drawn, so a note's length is known when it is sent), so it costs
a few model steps a beat whatever its length, and the controls moved meanwhile shape the rest of it. An opening
that repeats the phrase (the same rhythm with the same intervals, or the same notes) is drawn again, a little
hotter each time, and never played. Playing again stops the answer at the next beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from live.music import tokens as tk
from live.music.model import Line, MusicModel
from live.music.modes import Controls, Heard
from live.music.tokens import Key, Note

DRAWS = 6  # an opening that copies the phrase is drawn again up to this many times
HOTTER = 0.3  # each new draw's temperature rises by this much
LATE_STEPS = 2 * tk.STEPS_PER_BEAT  # a phrase that ended longer ago than this (a mode switched on later) is past
DRAWN_AHEAD = tk.BAR_STEPS  # steps drawn beyond the window planned: a note longer than this is released there


class Answer:
    """One performer's call and the model's response (modes.Mode)."""

    name = "answer"

    def __init__(self, model: MusicModel, seed: int | None = None) -> None:
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.answers = 0  # answers played
        self.redrawn = 0  # openings refused as copies of the phrase
        self.refused = 0  # phrases left unanswered: every draw copied them
        self.key: Key | None = None  # the key of the last answer
        self._answered: float | None = None  # the end (Heard.last_off) of the phrase last answered or passed
        self._line: Line | None = None  # the answer playing
        self._end = 0  # the grid step it ends at
        self._hotter = 0.0  # what its opening's redraws added to the temperature
        self._released = -1  # the grid step at which a note was released for being longer than was drawn

    def plan(self, heard: Heard, start: int, steps: int, controls: Controls) -> list[Note]:
        """The answer's notes in steps start..start+steps; a new answer begins here if a phrase has just ended."""
        if self._line is not None and (heard.held or heard.last_off != self._answered):
            self._end = min(self._end, start)  # the performer plays again: stop
        if not heard.held and heard.last_off is not None and heard.last_off != self._answered \
                and start % tk.STEPS_PER_BEAT == 0:
            self._answered = heard.last_off
            if start - heard.last_off <= LATE_STEPS:
                self._begin(heard.notes, start, controls)
        line = self._line
        if line is None or start >= self._end:
            return []
        hotter = replace(controls, temperature=controls.temperature + self._hotter)
        wanted = min(start + steps + DRAWN_AHEAD, self._end) - line.end
        if wanted > 0:
            line.draw(wanted, hotter, no_hold=line.end == self._released)
        notes = [n for n in tk.decode(line.tokens, line.start) if start <= n.start < min(start + steps, self._end)]
        if notes and notes[-1].start + notes[-1].steps == line.end < self._end:
            self._released = line.end  # sent with the length drawn so far: the line does not hold it on
        return [n._replace(steps=min(n.steps, self._end - n.start)) for n in notes]

    def _begin(self, heard: Sequence[Note], start: int, controls: Controls) -> None:
        """Start the answer at grid step `start` to the phrase in `heard` (the notes of the last call_bars bars
        before it): its opening drawn, and drawn again while it copies the phrase. No phrase, or only copies: no
        answer."""
        self._line = None
        call = controls.call_bars * tk.BAR_STEPS
        phrase = [n for n in heard if n.start + n.steps > start - call and n.start < start]
        if not phrase:
            return
        key = controls.key or tk.key_of(phrase)
        shift = 12 * round((controls.register - float(np.median([n.pitch for n in phrase]))) / 12)
        prime = tk.encode([n._replace(pitch=n.pitch + shift) for n in phrase], call, start - call)
        self._end = start + controls.answer_bars * tk.BAR_STEPS
        opening = min(tk.STEPS_PER_BEAT + DRAWN_AHEAD, self._end - start)
        for draw in range(DRAWS):
            line = self.model.line(prime, start, key, self.rng)
            line.draw(opening, replace(controls, temperature=controls.temperature + HOTTER * draw), first_note=True)
            if not copies(tk.decode(line.tokens, start), phrase):
                self._line, self._hotter, self.key = line, HOTTER * draw, key
                self.answers += 1
                return
            self.redrawn += 1
        self.refused += 1


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
