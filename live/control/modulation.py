"""Modulation: a modulator is a target, a depth and a signal that gives a level at a time.

Signals are kinds (SIGNALS): beat-synced LFOs and envelopes, and sources: any number parameter, above all the values
measured from the show's input (`/in/audio/bass`, `/in/video/motion`), mapped through a range, a curve and
smoothing. A threshold on a source makes it a trigger: each rising crossing restarts an envelope on the target, or
emits the target when that is an event (an onset fires `/scene/go`). Crossings are found where the measurement is
published (ParamTree.measure, in the analysis thread), once, with the time the measurement describes.

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
    source: str = Field("", description="address of a number parameter whose value moves the target, e.g. a "
                                        "measured one such as /in/audio/bass; '' = an LFO or envelope")
    range: tuple[float, float] | None = Field(None, description="source values mapped to 0..1 (below: 0, above: "
                                                                "1); default the source's own range")
    curve: Literal["linear", "exp", "log", "s"] = Field("linear", description="shape of the 0..1 source level")
    smooth: float = Field(0.0, ge=0, le=10, description="source: seconds to follow a rise (one-pole time "
                                                         "constant); 0 = at once")
    release: float | None = Field(None, ge=0, le=10, description="source: seconds to follow a fall; default "
                                                                 "`smooth` (a longer release holds kicks)")
    threshold: float | None = Field(None, description="source: a rise through this value (in the source's units) "
                                                      "fires: an envelope of `beats` on a number target, or the "
                                                      "target itself when it is an event (/scene/go)")
    args: list[float] = Field(default_factory=list, description="a fired event's arguments, e.g. [60, 0.8] for "
                                                                "/synth/note")
    release_args: list[float] | None = Field(None, description="emitted with these arguments when the source falls "
                                                               "back below the threshold after firing, e.g. [60, 0] "
                                                               "releases the note")


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


def attack_decay(t: float, attack: float) -> float:
    """An envelope's level `t` of its length after it started: up for the `attack` share, then down; 0 outside."""
    if t < 0 or t >= 1:
        return 0.0
    return t / attack if t < attack else 1.0 - (t - attack) / (1.0 - attack)


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
        return attack_decay(age / beats, self.spec.attack)

    def close(self) -> None:
        if self._events is not None:
            self.tree.unlisten(self._events)


def shape(curve: str, u: float) -> float:
    """A 0..1 level through a response curve (the same names as a parameter's `curve`)."""
    if curve == "exp":
        return u * u
    if curve == "log":
        return 1 - (1 - u) * (1 - u)
    if curve == "s":
        return u * u * (3 - 2 * u)
    return u


#: Where the measured sources come from, for the error that names a source the show does not measure.
MEASURED_BY = {"/in/audio/": "[audio_in] source", "/in/video/": "[watch] enabled (and face_model or mask_model)"}


def _measured(tree: ParamTree, spec: ModulatorSection) -> str:
    """The measured sources the show has, and which section to turn on for the one asked for."""
    measured = ", ".join(a for a, p in tree.params.items() if p.readonly)
    turn_on = next((f"; {section} gives {prefix}*" for prefix, section in MEASURED_BY.items()
                    if spec.source.startswith(prefix)), "")
    return f" (measured ones: {measured or 'none in this show'}{turn_on})"


class Source:
    """A number parameter's value as a level 0..1: through the range and curve, then followed with separate rise
    and fall times. The follower is advanced by whichever reader asks next (they read at their own rates, in time
    order), so every reader sees the same level for the same time."""

    def __init__(self, name: str, spec: ModulatorSection, tree: ParamTree, clock: Clock) -> None:
        source = tree.params.get(spec.source)
        if source is None or not source.numeric:
            raise ValueError(f"[mod.{name}] source '{spec.source}' is not a number parameter" + _measured(tree, spec))
        self.spec, self.address = spec, spec.source
        self.low, self.high = spec.range if spec.range is not None else (source.min, source.max)
        if self.high == self.low:
            raise ValueError(f"[mod.{name}] range [{self.low:g}, {self.high:g}] is empty: give two values")
        self.rise = spec.smooth
        self.fall = spec.smooth if spec.release is None else spec.release
        self._level, self._at = 0.0, -math.inf

    def target_level(self, values: Mapping[str, Value]) -> float:
        u = (float(values.get(self.address, self.low)) - self.low) / (self.high - self.low)
        return shape(self.spec.curve, min(max(u, 0.0), 1.0))

    def level(self, now: float, values: Mapping[str, Value]) -> float:
        target = self.target_level(values)
        dt, self._at = now - self._at, max(now, self._at)
        if dt <= 0:
            return self._level  # a reader a moment behind another sees the level already reached
        tau = self.rise if target > self._level else self.fall
        self._level += (target - self._level) * (1.0 if tau <= 0 else 1.0 - math.exp(-dt / tau))
        return self._level

    def close(self) -> None:
        pass


class Fired:
    """An attack-decay envelope, 0..1 and `/mod/NAME/beats` long, started by each rising crossing of a source's
    threshold (seen where the source is measured, with the time the measurement describes)."""

    def __init__(self, name: str, spec: ModulatorSection, tree: ParamTree, clock: Clock) -> None:
        self.spec, self.clock = spec, clock
        self.beats_address = f"/mod/{name}/beats"
        self.fired_at = -math.inf

    def fire(self, at: float) -> None:
        self.fired_at = at

    def level(self, now: float, values: Mapping[str, Value]) -> float:
        if self.fired_at == -math.inf:
            return 0.0
        beats = float(values.get(self.beats_address, self.spec.beats))
        return attack_decay((self.clock.beat_at(now) - self.clock.beat_at(self.fired_at)) / beats, self.spec.attack)

    def close(self) -> None:
        pass


class Threshold:
    """Finds the rising crossings of a measured source's threshold, with hysteresis (it re-arms once the source
    falls 10 % of its range below the threshold), and passes each crossing's time to `fire`."""

    def __init__(self, name: str, spec: ModulatorSection, tree: ParamTree, fire: Callable[[float], None],
                 fall: Callable[[float], None] | None = None) -> None:
        source = tree.params.get(spec.source)
        if source is None or not source.readonly:
            raise ValueError(f"[mod.{name}] threshold needs a measured source" + _measured(tree, spec))
        self.address, self.threshold, self.fire, self.fall = spec.source, float(spec.threshold), fire, fall
        self.rearm = self.threshold - 0.1 * (source.max - source.min)
        self.armed = True
        self.fired = 0
        self.tree = tree
        tree.on_measure(self.measured)

    def measured(self, values: Mapping[str, float], at: float) -> None:
        value = values.get(self.address)
        if value is None:
            return
        if self.armed and value >= self.threshold:
            self.armed = False
            self.fired += 1
            self.fire(at)
        elif not self.armed and value < self.rearm:
            self.armed = True
            if self.fall is not None:
                self.fall(at)

    def close(self) -> None:
        self.tree.off_measure(self.measured)


SIGNALS.register("lfo", Lfo)
SIGNALS.register("envelope", Envelope)
SIGNALS.register("source", Source)


def kind_of(spec: ModulatorSection) -> str:
    """Which signal a [mod] table means: its `signal`, else a source, an envelope (trigger) or an LFO."""
    return spec.signal or ("source" if spec.source else "envelope" if spec.trigger else "lfo")


class Modulator:
    """Moves one number parameter by depth x span x its signal's level, read (never written) by each reader; or,
    with a source's threshold and an event as its target, emits that event at each crossing (`fires` is True and
    readers skip it)."""

    def __init__(self, name: str, spec: ModulatorSection, tree: ParamTree, clock: Clock) -> None:
        self.name, self.spec, self.tree = name, spec, tree
        self.depth_address = f"/mod/{name}/depth"
        self.threshold: Threshold | None = None
        self.fires = spec.threshold is not None and spec.target in tree.events
        self.clock, self._emitted_beat = clock, -math.inf
        if self.fires:
            self.target = None
            tree.events[spec.target].coerce(spec.args)  # ValueError naming the arguments it expects
            if spec.release_args is not None:
                tree.events[spec.target].coerce(spec.release_args)
            self.signal: Signal | None = None
            self._fired = False
            self.threshold = Threshold(name, spec, tree, self._emit,
                                       None if spec.release_args is None else self._release)
            return
        if spec.target not in tree.params or not tree.params[spec.target].numeric or tree.params[spec.target].readonly:
            numbers = ", ".join(a for a, p in tree.params.items() if p.numeric and not p.readonly)
            events = ", ".join(tree.events)
            raise ValueError(f"[mod.{name}] target '{spec.target}' is not a number parameter (one of: {numbers})"
                             + (f" or, with a threshold, an event ({events})" if spec.threshold is not None else ""))
        kind = kind_of(spec)
        if kind not in SIGNALS:
            raise ValueError(f"[mod.{name}] signal '{kind}' is not a known signal (one of: "
                             f"{', '.join(SIGNALS.names())})")
        self.target = tree.params[spec.target]
        if spec.threshold is not None:
            if not spec.source:
                raise ValueError(f"[mod.{name}] threshold needs a source (e.g. source = \"/in/audio/onset\")")
            fired = Fired(name, spec, tree, clock)
            self.signal = fired
            self.threshold = Threshold(name, spec, tree, fired.fire)
        else:
            self.signal = SIGNALS.get(kind)(name, spec, tree, clock)

    def _emit(self, at: float) -> None:
        """A crossing fires the target event, unless the depth is 0 (off) or it fired less than `beats` ago."""
        values = self.tree.snapshot
        beat = self.clock.beat_at(at)
        if float(values.get(self.depth_address, self.spec.depth)) == 0.0 or \
                beat - self._emitted_beat < float(values.get(f"/mod/{self.name}/beats", self.spec.beats)):
            return
        self._emitted_beat, self._fired = beat, True
        self.tree.emit(self.spec.target, *self.spec.args, at=at)

    def _release(self, at: float) -> None:
        """The source fell back: `release_args` follow what was fired (a note off after its note)."""
        if self._fired:
            self._fired = False
            self.tree.emit(self.spec.target, *self.spec.release_args, at=at)

    @staticmethod
    def params(name: str, spec: ModulatorSection) -> list[Param]:
        """A modulator's own controls, in the tree before the modulator is made."""
        kind = "trigger" if spec.threshold is not None else kind_of(spec)
        length = {"lfo": "period", "trigger": "envelope length, or the least time between fired events,"}
        depth = Param(f"/mod/{name}/depth", "float", spec.depth, -1.0, 1.0,
                      doc=f"{kind} '{name}' on {spec.target}: peak offset, share of its range (0 = off)")
        beats = Param(f"/mod/{name}/beats", "float", spec.beats, 0.25, 256.0, unit="beats", curve="exp",
                      doc=f"{kind} '{name}': {length.get(kind, 'length')} in beats")
        return [depth] if kind == "source" else [depth, beats]

    def close(self) -> None:
        if self.threshold is not None:
            self.threshold.close()
        if self.signal is not None:
            self.signal.close()

    def offset(self, now: float, values: Mapping[str, Value]) -> float:
        """How far (in the target's units) the target moves at time `now`."""
        depth = float(values.get(self.depth_address, self.spec.depth))
        if depth == 0.0 or self.signal is None:
            return 0.0
        return depth * (self.target.max - self.target.min) * self.signal.level(now, values)
