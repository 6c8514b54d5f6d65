"""The built-in arpeggio, so a show sounds with no controller; it runs in the synth's render process."""

from __future__ import annotations

from collections.abc import Sequence

from live.audio.synth import Synth
from live.errors import LiveError

DEFAULT_PATTERN = (45, 52, 57, 60, 64, 57, 52, 48)


class Arpeggio:
    """Eighth notes cycling through a pattern at the show's tempo; timed in rendered frames, so it follows the
    audio clock, each step starting at its own sample."""

    def __init__(self, notes: Sequence[int], samplerate: int) -> None:
        bad = [n for n in notes if not 0 <= n <= 127]
        if bad or not notes:
            raise LiveError(f"audio pattern {list(notes)} is not playable", "use MIDI notes 0..127 in [audio] pattern")
        self.notes = tuple(notes)
        self.samplerate = samplerate
        self._due = 0.0  # frames until the next step
        self._index = 0
        self.playing: int | None = None

    def save(self) -> tuple:
        """Where the pattern is, for the render process going back to a block it renders again."""
        return self._due, self._index, self.playing

    def restore(self, state: tuple) -> None:
        self._due, self._index, self.playing = state

    def advance(self, synth: Synth, on: bool, frames: int, bpm: float) -> None:
        """Play the steps due within the next `frames` at `bpm`; when switched off, release the sounding note."""
        if not on:
            if self.playing is not None:
                synth.note_off(self.playing)
                self.playing, self._due = None, 0.0
            return
        while self._due < frames:  # each step at its sample in the block
            if self.playing is not None:
                synth.note_off(self.playing)
            self.playing = self.notes[self._index % len(self.notes)]
            accent = 0.55 if self._index % 4 == 0 else 0.4  # a soft accent on the beat
            synth.note_on(self.playing, accent, max(int(self._due), 0))
            self._index += 1
            self._due += self.samplerate * 60.0 / bpm / 2.0
        self._due -= frames
