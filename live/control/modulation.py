"""Modulation: a modulator is a target, a depth and a signal that gives a level at a time.

Signals are kinds (SIGNALS): beat-synced LFOs and envelopes today; audio and video analysis next. A signal is read,
never written: analysis that changes at 100 Hz must not write the tree, since each write wakes a re-render.

A modulator never writes the tree: readers add its offset to the target's value when they read (see reader.py),
so a fader, a scene and an LFO on the same parameter combine instead of fighting, and the controller shows the
fader's value, not a wobbling one. Each modulator's depth and period are themselves parameters
(`/mod/<name>/depth`, `/mod/<name>/beats`), so they can be played from OSC and MIDI like anything else.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from live.control.tempo import Clock
from live.params import Param, ParamTree, Value
from live.parts import Kinds

Shape = Literal["sine", "triangle", "saw", "square", "random"]


class ModulatorSection(BaseModel):
    """One `[mod.<name>]` table in a show: an LFO, or an envelope when `trigger` is set."""

    model_config = ConfigDict(extra="forbid")
    target: str = Field(description="address of a float or int parameter")
    signal: str = Field("", description="what moves it: 'lfo', 'envelope' (or another registered signal); "
                                        "'' = an envelope when `trigger` is set, else an LFO")
    shape: Shape = "sine"
    beats: float = Field(4.0, gt=0, le=256, description="LFO period, or envelope length, in beats")
    depth: float = Field(0.25, ge=-1, le=1, description="peak offset as a fraction of the target's range")
    phase: float = Field(0.0, ge=0, lt=1, description="LFO phase offset, in periods")
    trigger: str = Field("", description="envelope: 'beat', 'bar' or an event address (e.g. /synth/note); "
                                         "'' = free-running LFO")
    attack: float = Field(0.05, ge=0, le=1, description="envelope: share of its length spent rising")


def wave(shape: str, x: float) -> float:
    """One period of `shape` at phase x (any real; periodic in 1), in -1..1 ("random" is in Modulator.offset)."""
    x %= 1.0
    if shape == "sine":
        return math.sin(2 * math.pi * x)
    if shape == "triangle":
        return 1 - 4 * abs(x - 0.5)
    if shape == "saw":
        return 2 * x - 1
    if shape == "square":
        return 1.0 if x < 0.5 else -1.0
    raise ValueError(shape)


def _held_random(period: int, seed: int) -> float:
    """A repeatable value in -1..1 for each whole period (the same in every reader thread)."""
    h = (period * 2654435761 + seed * 40503) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 2246822519) & 0xFFFFFFFF
    h ^= h >> 13
    return h / 0x7FFFFFFF - 1.0


class Signal(Protocol):
    """A level at a time: -1..1 for an LFO, 0..1 for an envelope or an analysis value."""

    def level(self, now: float, values: Mapping[str, Value]) -> float: ...

    def close(self) -> None: ...


#: Signal kinds for `[mod.NAME] signal`: factory(name, spec, tree, clock) -> Signal; ValueError for a bad spec.
SIGNALS: Kinds[Callable[[str, ModulatorSection, ParamTree, Clock], Signal]] = Kinds("signal", "[mod] signal")


class Lfo:
    """Free-running on the beat: one period every `/mod/NAME/beats` beats."""

    def __init__(self, name: str, spec: ModulatorSection, tree: ParamTree, clock: Clock) -> None:
        self.spec, self.clock = spec, clock
        self.beats_address = f"/mod/{name}/beats"
        self._seed = sum(map(ord, name))

    def level(self, now: float, values: Mapping[str, Value]) -> float:
        x = self.clock.beat_at(now) / float(values.get(self.beats_address, self.spec.beats)) + self.spec.phase
        return _held_random(math.floor(x), self._seed) if self.spec.shape == "random" else wave(self.spec.shape, x)

    def close(self) -> None:
        pass


class Envelope:
    """Attack-decay, 0..1, `/mod/NAME/beats` long, restarted by each beat, bar or event."""

    def __init__(self, name: str, spec: ModulatorSection, tree: ParamTree, clock: Clock) -> None:
        if spec.trigger not in ("beat", "bar") and spec.trigger not in tree.events:
            raise ValueError(f"[mod.{name}] trigger '{spec.trigger}' is not 'beat', 'bar' or an event "
                             f"({', '.join(tree.events)})")
        self.spec, self.clock, self.tree = spec, clock, tree
        self.beats_address = f"/mod/{name}/beats"
        self._events: deque | None = tree.listen(spec.trigger) if spec.trigger.startswith("/") else None
        self._triggered_beat = -math.inf  # beat position of the last event trigger

    def level(self, now: float, values: Mapping[str, Value]) -> float:
        beat, beats = self.clock.beat_at(now), float(values.get(self.beats_address, self.spec.beats))
        if self._events is not None:
            while self._events:
                self._events.popleft()  # any event (a note on) restarts it
                self._triggered_beat = beat
            age = beat - self._triggered_beat
        else:
            every = 1.0 if self.spec.trigger == "beat" else float(self.clock.beats_per_bar)
            age = beat % every
        t = age / beats
        if t < 0 or t >= 1:
            return 0.0
        attack = self.spec.attack
        return t / attack if t < attack else 1.0 - (t - attack) / (1.0 - attack)

    def close(self) -> None:
        if self._events is not None:
            self.tree.unlisten(self._events)


SIGNALS.register("lfo", Lfo)
SIGNALS.register("envelope", Envelope)


class Modulator:
    """Moves one number parameter by depth x span x its signal's level, read (never written) by each reader."""

    def __init__(self, name: str, spec: ModulatorSection, tree: ParamTree, clock: Clock) -> None:
        if spec.target not in tree.params or not tree.params[spec.target].numeric:
            numbers = ", ".join(a for a, p in tree.params.items() if p.numeric)
            raise ValueError(f"[mod.{name}] target '{spec.target}' is not a number parameter (one of: {numbers})")
        kind = spec.signal or ("envelope" if spec.trigger else "lfo")
        if kind not in SIGNALS:
            raise ValueError(f"[mod.{name}] signal '{kind}' is not a known signal (one of: "
                             f"{', '.join(SIGNALS.names())})")
        self.name, self.spec = name, spec
        self.target = tree.params[spec.target]
        self.depth_address = f"/mod/{name}/depth"
        self.signal = SIGNALS.get(kind)(name, spec, tree, clock)

    @staticmethod
    def params(name: str, spec: ModulatorSection) -> list[Param]:
        """A modulator's own controls, in the tree before the modulator is made."""
        kind = spec.signal or ("envelope" if spec.trigger else "LFO")
        return [Param(f"/mod/{name}/depth", "float", spec.depth, -1.0, 1.0,
                      doc=f"{kind} '{name}' on {spec.target}: peak offset, share of its range"),
                Param(f"/mod/{name}/beats", "float", spec.beats, 0.25, 256.0, unit="beats", curve="exp",
                      doc=f"{kind} '{name}': {'period' if kind == 'LFO' else 'length'} in beats")]

    def close(self) -> None:
        self.signal.close()

    def offset(self, now: float, values: Mapping[str, Value]) -> float:
        """How far (in the target's units) the target moves at time `now`."""
        depth = float(values.get(self.depth_address, self.spec.depth))
        if depth == 0.0:
            return 0.0
        return depth * (self.target.max - self.target.min) * self.signal.level(now, values)
