"""What every live music mode (answer, accompany, morph) is given and must do.

The music player (live/music/player.py) hears the performer's notes, keeps them on the grid, and asks the mode
playing for the notes of each coming beat as late as it can (PLAN_AHEAD_S before the beat), so a mode always plans
with the latest the performer played. A mode runs in the music thread: never on the audio or video path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from live.music.tokens import Key, Note

PLAN_AHEAD_S = 0.03  # a beat's notes are planned this long before it starts (plus the synth's note delay)


@dataclass(frozen=True)
class Controls:
    """The /music/* parameters as a mode reads them, once per planned beat."""

    temperature: float = 0.9  # sampling temperature of the model (lower: safer, more repetitive)
    density: float = 0.5  # 0 = sparse (long notes, rests), 1 = busy (a note on most steps)
    register: int = 72  # the MIDI pitch the generated line centres on
    key_lock: bool = True  # generated notes stay in the key (the performer's, or `key` when set)
    key: Key | None = None  # None: the key heard in the performer's recent notes
    call_bars: int = 2  # how much of what was played an answer listens to
    answer_bars: int = 1  # how long an answer lasts
    morph: float = 0.0  # morph: 0 = melody A, 1 = melody B
    velocity: float = 0.8


@dataclass(frozen=True)
class Heard:
    """What the performer played, on the show's grid (step 0 = beat 0 of the show's clock; STEPS_PER_BEAT a beat)."""

    notes: tuple[Note, ...]  # recent notes, oldest first; a note still held lasts up to `now`
    now: float  # the grid step now (fractional)
    held: bool  # a key is down now
    last_off: float | None  # the grid step (fractional) at which the last note ended, None if none has
    key: Key  # the key of the recent notes (tokens.key_of)


class Mode(Protocol):
    """One live mode."""

    name: str

    def plan(self, heard: Heard, start: int, steps: int, controls: Controls) -> list[Note]:
        """The notes to play that start in grid steps start..start+steps (absolute steps; a note may last past
        the window). Called once per window, in order, PLAN_AHEAD_S before `start`; the answer mode's window that
        got no notes while a key was held is asked again if the key is released before the window starts."""
        ...
