"""The show's tempo: one beat clock that tap tempo, MIDI clock and Ableton Link can all drive.

Everything beat-synced (LFOs, envelopes, quantised scene changes) asks the clock `beat_at(now)`, a pure function
of a (time, beat, bpm) anchor, so readers in any thread get the same answer without locks: the anchor is one
immutable tuple swapped in whole. Tempo changes re-anchor at the current beat, so the beat never jumps.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from live.params import Event, Param, ParamTree

MIN_BPM, MAX_BPM = 20.0, 400.0
TAP_RESET_S = 2.0  # a gap this long starts a new tap sequence
MIDI_PPQN = 24  # MIDI clock ticks per quarter note (MIDI 1.0 spec)


class TempoSection(BaseModel):
    """[tempo] in a show file."""

    model_config = ConfigDict(extra="forbid")
    bpm: float = Field(120.0, ge=MIN_BPM, le=MAX_BPM, description="starting tempo")
    beats_per_bar: int = Field(4, ge=1, le=16)
    source: Literal["internal", "midi", "link", "audio"] = Field(
        "internal", description="who sets the tempo: taps and /tempo/bpm, a MIDI clock, an Ableton Link session, "
                                "or the beats heard in the audio input ([audio_in])")


class Clock:
    """Beats since the show started, at a tempo that taps, MIDI clock or Link may change."""

    def __init__(self, bpm: float = 120.0, beats_per_bar: int = 4, now: float | None = None) -> None:
        self.beats_per_bar = beats_per_bar
        self._anchor = (time.perf_counter() if now is None else now, 0.0, float(bpm))  # (time, beat, bpm)
        self._taps: deque[float] = deque(maxlen=8)
        self._ticks: deque[float] = deque(maxlen=MIDI_PPQN * 2)  # two beats of MIDI clock: a steady estimate
        self._tick_count = 0
        self.running = True
        self.link: LinkClock | None = None

    @property
    def bpm(self) -> float:
        return self.link.bpm if self.link is not None else self._anchor[2]

    def follow_link(self) -> LinkClock:
        """Join (or start) an Ableton Link session on the LAN; from now on its tempo and beat are the show's."""
        self.link = LinkClock(self.bpm, self.beats_per_bar)
        return self.link

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    def beat_at(self, now: float) -> float:
        """The beat position (0.0 = the first downbeat; fractional) at perf_counter time `now`."""
        if self.link is not None:
            return self.link.beat_at(now)
        t0, beat0, bpm = self._anchor
        return beat0 + (now - t0) * bpm / 60.0 if self.running else beat0

    def set_bpm(self, bpm: float, now: float | None = None) -> float:
        """Change tempo from `now` on; the beat position carries on from where it is."""
        now = time.perf_counter() if now is None else now
        bpm = min(max(float(bpm), MIN_BPM), MAX_BPM)
        self._anchor = (now, self.beat_at(now), bpm)
        if self.link is not None:
            self.link.set_bpm(bpm)
        return bpm

    def tap(self, now: float | None = None) -> float:
        """A tap: from the second tap on, the tempo is the mean interval of the recent taps, and the beat snaps
        so that this tap is a downbeat of the beat grid."""
        now = time.perf_counter() if now is None else now
        if self._taps and now - self._taps[-1] < 60.0 / MAX_BPM:
            return self.bpm  # a bounce, or the same tap seen twice
        if self._taps and now - self._taps[-1] > TAP_RESET_S:
            self._taps.clear()
        self._taps.append(now)
        if len(self._taps) >= 2:
            interval = (self._taps[-1] - self._taps[0]) / (len(self._taps) - 1)
            bpm = min(max(60.0 / interval, MIN_BPM), MAX_BPM)
            self._anchor = (now, float(math.ceil(self.beat_at(now) - 0.5)), bpm)
            if self.link is not None:
                self.link.set_bpm(bpm)
        return self.bpm

    def next_boundary(self, now: float, beats: float) -> float:
        """The perf_counter time of the next multiple of `beats` (1 = beat, beats_per_bar = bar); `now` if 0."""
        if beats <= 0:
            return now
        beat = self.beat_at(now)
        target = math.floor(beat / beats + 1e-9) * beats + beats
        return now + (target - beat) * 60.0 / self.bpm

    def hear_beat(self, at: float, bpm: float) -> None:
        """A beat heard in the audio input at perf_counter time `at`, at `bpm` (live/audio/listen.py, when
        `[tempo] source = "audio"`): the tempo becomes `bpm` and the nearest whole beat moves to `at`, so the show's
        beats fall on the music's."""
        if self.link is not None:
            return
        bpm = min(max(float(bpm), MIN_BPM), MAX_BPM)
        self._anchor = (at, float(round(self.beat_at(at))), bpm)

    # --- MIDI clock in (called by live/control/midi.py) ---------------------------------------------------

    def midi_clock(self, now: float) -> None:
        """One 0xF8 tick (24 per quarter note): the beat follows the line through the ticks of the last two beats
        (least squares), its slope the tempo. A tick's arrival is known only to within the MIDI system's period
        (JACK hands a cycle's messages over together), so anchoring on the last tick alone put the beat grid up to a
        period off, tick by tick; the line spreads that error over two beats (issue 14: notes on the grid within
        an audio block)."""
        self._ticks.append(now)
        self._tick_count += 1
        n = len(self._ticks)
        if n >= MIDI_PPQN // 2:
            middle, mean = (n - 1) / 2, sum(self._ticks) / n
            interval = sum((i - middle) * (t - mean) for i, t in enumerate(self._ticks)) / (n * (n * n - 1) / 12)
            if interval > 0:
                bpm = min(max(60.0 / (interval * MIDI_PPQN), MIN_BPM), MAX_BPM)
                beat = self._tick_count / MIDI_PPQN  # the master's beat position, counted from its start
                self._anchor = (mean + middle * interval, beat, bpm)  # the line at the last tick

    def midi_start(self, now: float) -> None:
        """0xFA (start) or 0xFB (continue): the master's first tick is beat 0."""
        self._ticks.clear()
        self._tick_count = 0
        self.running = True
        self._anchor = (now, 0.0, self.bpm)

    def midi_stop(self) -> None:
        """0xFC: hold the beat where it is until the master starts again."""
        now = time.perf_counter()
        self._anchor = (now, self.beat_at(now), self.bpm)
        self.running = False


class TempoControl:
    """Keeps `/tempo/bpm` and the clock in step both ways, and turns `/tempo/tap` events into taps: tempo is
    one more parameter (OSC, MIDI, scenes, feedback), whoever sets it."""

    SOURCE = "tempo"

    def __init__(self, tree: ParamTree, clock: Clock) -> None:
        self.tree, self.clock = tree, clock
        self._taps = tree.listen("/tempo/tap")
        self._seen = tree.changed_at.get("/tempo/bpm")

    @staticmethod
    def params(bpm: float) -> tuple[list[Param], list[Event]]:
        return ([Param("/tempo/bpm", "float", bpm, MIN_BPM, MAX_BPM, unit="bpm", doc="tempo of the beat clock")],
                [Event("/tempo/tap", (), doc="tap tempo: two or more taps set the tempo and the downbeat")])

    def tick(self) -> None:
        """Taps to the clock, a written tempo to the clock, the clock's tempo back to the tree."""
        tree, clock = self.tree, self.clock
        while self._taps:
            self._taps.popleft()
            clock.tap(tree.emitted_at.get("/tempo/tap"))
        written = tree.changed_at.get("/tempo/bpm")
        if written != self._seen and tree.written_by.get("/tempo/bpm") != self.SOURCE:
            clock.set_bpm(float(tree.snapshot["/tempo/bpm"]))
        if abs(float(tree.snapshot["/tempo/bpm"]) - clock.bpm) > 0.05:
            tree.set("/tempo/bpm", round(clock.bpm, 2), self.SOURCE)
        self._seen = tree.changed_at.get("/tempo/bpm")


class LinkClock:
    """An Ableton Link session (via aalink) as the beat source: peers on the LAN share tempo and phase.

    aalink lives on an asyncio loop, so the clock runs one in a daemon thread; reading the beat is a property
    read and never touches that loop."""

    def __init__(self, bpm: float, beats_per_bar: int) -> None:
        import aalink  # imported here: only shows with source = "link" need it

        async def start() -> aalink.Link:
            link = aalink.Link(bpm)  # binds to the running loop: this thread's
            link.quantum = beats_per_bar
            link.enabled = True
            return link

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link", daemon=True)
        self._thread.start()
        self._link = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=5)

    @property
    def peers(self) -> int:
        return int(self._link.num_peers)

    @property
    def bpm(self) -> float:
        return float(self._link.tempo)

    def beat_at(self, now: float) -> float:
        return float(self._link.beat) + (now - time.perf_counter()) * self._link.tempo / 60.0

    def set_bpm(self, bpm: float) -> None:
        self._link.tempo = bpm

    def close(self) -> None:
        self._link.enabled = False
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=1.0)
        self._loop.close()
