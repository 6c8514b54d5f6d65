"""The parameter tree: every value a show can be steered by, in one place.

OSC, MIDI, the show file, scenes, LFOs and `live params` all read and write this one tree, so a parameter exists
once. Writers take a short lock and publish a new immutable snapshot; readers (the video and audio threads) read
`tree.snapshot`, a single reference, so they never wait on a writer and always see a consistent set of values.
Writes coalesce: a reader sees the latest value, never a backlog. What a reader does with the targets (smoothing,
modulation) is its own business: see live/control/reader.py.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

Value = float | int | bool | str

#: How many events a listener keeps before the oldest are dropped (a bounded mailbox, never a growing queue).
EVENT_BACKLOG = 256

#: Response curves: how a controller position 0..1 maps onto a number parameter's range. "exp" is geometric
#: (equal steps are equal ratios: frequencies, times) when the range is positive, else quadratic; "log" is its
#: inverse; "s" eases both ends (x^2 (3 - 2x)), for crossfades that should linger near either side.
CURVES = ("linear", "exp", "log", "s")
#: Smoothing a reader applies towards each new value: none (jump), slew (at most the full range per `smooth_s`)
#: or euro (the one-euro filter: heavy smoothing when still, little lag when moving fast).
SMOOTHING = ("none", "slew", "euro")
#: What a number outside the range does: clip to the nearest end, wrap around, fold back, or is refused.
CLIP_MODES = ("clip", "wrap", "fold", "reject")


@dataclass(frozen=True)
class Param:
    """One continuous or discrete control: its address, type, range, default and unit."""

    address: str
    type: str  # "float" | "int" | "bool" | "enum"
    default: Value
    min: float = 0.0
    max: float = 1.0
    unit: str = ""
    doc: str = ""
    choices: tuple[str, ...] = ()
    curve: str = "linear"
    smooth: str = "none"
    smooth_s: float = 0.0
    clip: str = "clip"
    #: Measured, not set: an analysis of the show's input publishes it (`ParamTree.measure`); OSC, MIDI, scenes and
    #: the show file may read it, map it ([mod] source) and watch it, but never write it.
    readonly: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("curve", CURVES), ("smooth", SMOOTHING), ("clip", CLIP_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{self.address}: {name} '{getattr(self, name)}' is not one of {', '.join(allowed)}")

    @property
    def numeric(self) -> bool:
        return self.type in ("float", "int")

    def coerce(self, value: Any) -> Value:
        """Turn an incoming value into this parameter's type, clipped to its range; ValueError if impossible or
        if the parameter is measured (read-only): so OSC, MIDI, scenes and the show file all refuse to write it."""
        if self.readonly:
            raise ValueError(f"{self.address} is read-only: it is measured from the show's input")
        if self.type == "enum":
            if isinstance(value, str):
                if value not in self.choices:
                    raise ValueError(f"{self.address}: '{value}' is not one of {', '.join(self.choices)}")
                return value
            index = _number(self, value)
            return self.choices[int(min(max(round(index), 0), len(self.choices) - 1))]
        if self.type == "bool":
            if isinstance(value, str):
                if value.lower() in ("1", "true", "on", "yes"):
                    return True
                if value.lower() in ("0", "false", "off", "no"):
                    return False
                raise ValueError(f"{self.address}: '{value}' is not a boolean")
            return _number(self, value) >= 0.5
        number = self._limit(_number(self, value))
        return int(round(number)) if self.type == "int" else float(number)

    def _limit(self, x: float) -> float:
        lo, hi = self.min, self.max
        if lo <= x <= hi or hi <= lo:
            return min(max(x, lo), hi)
        if self.clip == "reject" or not math.isfinite(x):
            raise ValueError(f"{self.address}: {x:g} is outside {lo:g}..{hi:g}")
        span = hi - lo
        if self.clip == "wrap":
            return lo + (x - lo) % span
        if self.clip == "fold":
            t = (x - lo) % (2 * span)
            return lo + (t if t <= span else 2 * span - t)
        return min(max(x, lo), hi)

    def from_normal(self, u: float) -> Value:
        """The value at controller position `u` (0..1, clipped) through the response curve; enums and bools step."""
        u = min(max(float(u), 0.0), 1.0)
        if self.type == "enum":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.type == "bool":
            return u >= 0.5
        lo, hi = self.min, self.max
        if self.curve == "s":
            u = u * u * (3 - 2 * u)
        elif self.curve in ("exp", "log") and lo > 0 and hi > 0:  # geometric, or its mirror image
            if self.curve == "exp":
                return self.coerce(lo * (hi / lo) ** u)
            return self.coerce(lo + hi - lo * (hi / lo) ** (1 - u))
        elif self.curve == "exp":
            u = u * u
        elif self.curve == "log":
            u = 1 - (1 - u) ** 2
        return self.coerce(lo + (hi - lo) * u)

    def to_normal(self, value: Value) -> float:
        """The controller position (0..1) that shows `value`: the inverse of `from_normal`, for feedback (LEDs,
        motor faders) and soft takeover."""
        if self.type == "enum":
            return (self.choices.index(value) + 0.5) / len(self.choices) if value in self.choices else 0.0
        if self.type == "bool":
            return 1.0 if value else 0.0
        lo, hi = self.min, self.max
        if hi <= lo:
            return 0.0
        x = min(max(float(value), lo), hi)
        if self.curve in ("exp", "log") and lo > 0 and hi > 0:
            if self.curve == "exp":
                return min(max(math.log(x / lo) / math.log(hi / lo), 0.0), 1.0)
            return min(max(1 - math.log((lo + hi - x) / lo) / math.log(hi / lo), 0.0), 1.0)
        u = (x - lo) / (hi - lo)
        if self.curve == "s":  # invert u^2 (3 - 2u) by bisection: monotonic, and exact enough in 30 steps
            a, b = 0.0, 1.0
            for _ in range(30):
                m = (a + b) / 2
                a, b = (m, b) if m * m * (3 - 2 * m) < u else (a, m)
            return (a + b) / 2
        if self.curve == "exp":
            return math.sqrt(u)
        if self.curve == "log":
            return 1 - math.sqrt(1 - u)
        return u

    def describe(self) -> dict[str, Any]:
        """The parameter as a plain dict (`live params --json`, OSCQuery later)."""
        out: dict[str, Any] = {
            "address": self.address, "type": self.type, "min": self.min, "max": self.max,
            "default": self.default, "unit": self.unit, "doc": self.doc, "curve": self.curve,
            "smooth": self.smooth, "smooth_s": self.smooth_s, "clip": self.clip,
        }
        if self.readonly:
            out["readonly"] = True
        if self.choices:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class Event:
    """A momentary message rather than a held value (a note on/off): queued to listeners, not stored."""

    address: str
    args: tuple[tuple[str, str, float, float], ...]  # (name, "int"|"float", min, max) per argument
    doc: str = ""

    def coerce(self, values: Iterable[Any]) -> tuple[float | int, ...]:
        values = tuple(values)
        if len(values) != len(self.args):
            names = " ".join(name for name, *_ in self.args)
            raise ValueError(f"{self.address}: expects {len(self.args)} arguments ({names}), got {len(values)}")
        out: list[float | int] = []
        for (name, kind, lo, hi), value in zip(self.args, values):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{self.address}: argument '{name}' must be a number, got {value!r}")
            number = min(max(float(value), lo), hi)
            out.append(int(round(number)) if kind == "int" else number)
        return tuple(out)

    def describe(self) -> dict[str, Any]:
        lo, hi = (self.args[0][2], self.args[0][3]) if self.args else (None, None)
        return {
            "address": self.address, "type": "event", "min": lo, "max": hi, "default": None, "unit": "",
            "doc": self.doc,
            "args": [{"name": n, "type": k, "min": a, "max": b} for n, k, a, b in self.args],
        }


def _number(param: Param, value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"{param.address}: expects a {param.type}, got {value!r}")


class ParamTree:
    """All parameters and events of a running show. Thread-safe; reads are lock-free snapshots."""

    def __init__(self, params: Iterable[Param], events: Iterable[Event] = ()) -> None:
        self.params: dict[str, Param] = {p.address: p for p in params}
        self.events: dict[str, Event] = {e.address: e for e in events}
        self._lock = threading.Lock()
        self._listeners: list[tuple[str, deque, bool]] = []
        self._watchers: list[Callable[[], None]] = []
        self.snapshot: Mapping[str, Value] = MappingProxyType({a: p.default for a, p in self.params.items()})
        #: perf_counter() of the last write to each address, so latency to a visible change can be measured.
        self.changed_at: dict[str, float] = {}
        #: Who wrote each address last ("osc:127.0.0.1:5000", "midi:nanoKONTROL2", "scene", ...): feedback skips
        #: the writer, so a controller is never echoed its own move (no feedback loops).
        self.written_by: dict[str, str] = {}
        #: perf_counter() of the last emit of each event address (tap tempo wants when, not just that).
        self.emitted_at: dict[str, float] = {}
        #: Bumped by every write; a feedback sender compares it to know whether anything changed at all.
        self.version = 0
        #: Bumped when a reloaded show swaps the set of parameters (readers rebuild their smoothing then).
        self.generation = 0
        #: perf_counter() time the newest measured values describe, per address (`measure`).
        self.measured_at: dict[str, float] = {}
        self._measure_hooks: list[Callable[[Mapping[str, float], float], None]] = []

    def __contains__(self, address: str) -> bool:
        return address in self.params or address in self.events

    def get(self, address: str) -> Value:
        return self.snapshot[address]

    def set(self, address: str, value: Any, source: str = "") -> Value:
        """Write one value (coerced and clipped); KeyError for an unknown address, ValueError for a bad value."""
        return self.update({address: value}, source)[address]

    def set_normal(self, address: str, position: float, source: str = "") -> Value:
        """Write the value at controller position 0..1 through the parameter's response curve."""
        return self.update({address: self.params[address].from_normal(position)}, source)[address]

    def update(self, values: Mapping[str, Any], source: str = "") -> dict[str, Value]:
        """Write several values as one step (an OSC bundle, a scene): readers see all of them or none; a bad value
        raises and writes nothing."""
        coerced = {}
        for address, value in values.items():
            if address not in self.params:
                raise KeyError(address)
            coerced[address] = self.params[address].coerce(value)
        self._swap(coerced, self.changed_at, time.perf_counter(), source)
        for watcher in self._watchers:
            watcher()
        return coerced

    def measure(self, values: Mapping[str, float], at: float) -> None:
        """Publish an analysis's newest values of read-only parameters (clipped to their ranges), which describe the
        input at perf_counter() time `at`. One snapshot swap, like a write, but it wakes no watcher: measurements
        change at up to 200 Hz, and whoever uses them (a modulator, a feedback sender) reads them at its own rate.
        Addresses the tree does not have (a reload removed them) are skipped. Then each `on_measure` hook runs."""
        params = self.params
        clipped = {}
        for address, value in values.items():
            param = params.get(address)
            if param is not None and param.readonly:
                clipped[address] = min(max(float(value), param.min), param.max)
        if not clipped:
            return
        self._swap(clipped, self.measured_at, at)
        for hook in self._measure_hooks:
            hook(clipped, at)

    def _swap(self, values: Mapping[str, Value], stamps: dict[str, float], at: float,
              writer: str | None = None) -> None:
        """A new snapshot with `values` merged in, published in one step; each address stamped `at` in `stamps`
        (and its writer noted, for a write)."""
        with self._lock:
            merged = dict(self.snapshot)
            merged.update(values)
            self.snapshot = MappingProxyType(merged)
            for address in values:
                stamps[address] = at
                if writer is not None:
                    self.written_by[address] = writer
            self.version += 1

    def on_measure(self, hook: Callable[[Mapping[str, float], float], None]) -> None:
        """Call `hook(values, at)` (quick, non-blocking) after each `measure`, from the analysis thread: where a
        threshold on a measured value fires its event (live/control/modulation.py)."""
        with self._lock:
            self._measure_hooks = [*self._measure_hooks, hook]

    def off_measure(self, hook: Callable[[Mapping[str, float], float], None]) -> None:
        with self._lock:
            self._measure_hooks = [h for h in self._measure_hooks if h != hook]  # bound methods are equal, not identical

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback` (quick, non-blocking) after every write, from the writer's thread."""
        with self._lock:
            self._watchers = [*self._watchers, callback]

    def reconfigure(self, params: Iterable[Param], events: Iterable[Event]) -> None:
        """Swap in the parameters of a reloaded show in one step: an address that remains keeps its current value
        (coerced to its new range), a new one starts at its default; listeners stay subscribed."""
        params = {p.address: p for p in params}
        with self._lock:
            old, values = self.snapshot, {}
            for address, param in params.items():
                try:
                    values[address] = param.coerce(old[address]) if address in old else param.default
                except ValueError:
                    values[address] = param.default
            self.params, self.events = params, {e.address: e for e in events}
            self.snapshot = MappingProxyType(values)
            self.generation += 1
            self.version += 1

    def emit(self, address: str, *args: Any, at: float | None = None) -> tuple[float | int, ...]:
        """Send an event to every listener whose prefix matches; KeyError/ValueError as for `set`. `at` is the
        perf_counter() time the event is for (an OSC bundle's timetag), default now: a timed listener gets it."""
        event = self.events[address]
        if not event.args and len(args) == 1 and isinstance(args[0], (int, float)):
            if args[0] <= 0:
                return ()  # a trigger sent as a button's press (1) and release (0): the release does nothing
            args = ()
        values = event.coerce(args)
        now = time.perf_counter()
        with self._lock:
            self.emitted_at[address] = now
            for prefix, queue, timed in self._listeners:
                if address.startswith(prefix):  # deque(maxlen) drops the oldest when full
                    queue.append((address, values, now if at is None else at) if timed else (address, values))
        return values

    def listen(self, prefix: str, timed: bool = False, into: Any = None) -> Any:
        """A bounded queue of (address, args) for events under `prefix`; the listener pops from the left. `timed`:
        (address, args, at), with the perf_counter() time the event arrived or is for (the synth places notes).
        `into`: any object with append() to deliver to instead of a new deque; it is called under the tree's lock,
        so one writer at a time (the synth hands notes straight to its render process's ring this way)."""
        queue = deque(maxlen=EVENT_BACKLOG) if into is None else into
        with self._lock:
            self._listeners.append((prefix, queue, timed))
        return queue

    def unlisten(self, queue: Any) -> None:
        """Stop delivering to a queue from `listen` (a reloaded show's old scenes and modulators)."""
        with self._lock:
            self._listeners = [(p, q, t) for p, q, t in self._listeners if q is not queue]

    def describe(self) -> list[dict[str, Any]]:
        """Every parameter and event, sorted by address, as plain dicts; a parameter's default is the value the
        show starts it at."""
        items = []
        for item in sorted([*self.params.values(), *self.events.values()], key=lambda i: i.address):
            described = item.describe()
            if item.address in self.snapshot:
                described["default"] = self.snapshot[item.address]
            items.append(described)
        return items
