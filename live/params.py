"""The parameter tree: every value a show can be steered by, in one place.

OSC, the show file, `live params` and (later) MIDI, scenes and LFOs all read and write this one tree, so a
parameter exists once. Writers take a short lock and publish a new immutable snapshot; readers (the video and
audio threads) just read `tree.snapshot`, a single reference, so they never wait on a writer and always see a
consistent set of values.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

Value = float | int | bool | str

#: How many events a listener keeps before the oldest are dropped (a bounded mailbox, never a growing queue).
EVENT_BACKLOG = 256


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

    def coerce(self, value: Any) -> Value:
        """Turn an incoming value into this parameter's type, clipped to its range; ValueError if impossible."""
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
        number = min(max(_number(self, value), self.min), self.max)
        return int(round(number)) if self.type == "int" else float(number)

    def describe(self) -> dict[str, Any]:
        """The parameter as a plain dict (`live params --json`, OSCQuery later)."""
        out: dict[str, Any] = {
            "address": self.address, "type": self.type, "min": self.min, "max": self.max,
            "default": self.default, "unit": self.unit, "doc": self.doc,
        }
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
        lo, hi = self.args[0][2], self.args[0][3]
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
        self._listeners: list[tuple[str, deque]] = []
        self.snapshot: Mapping[str, Value] = MappingProxyType({a: p.default for a, p in self.params.items()})
        #: perf_counter() of the last write to each address, so latency to a visible change can be measured.
        self.changed_at: dict[str, float] = {}

    def __contains__(self, address: str) -> bool:
        return address in self.params or address in self.events

    def get(self, address: str) -> Value:
        return self.snapshot[address]

    def set(self, address: str, value: Any) -> Value:
        """Write one value (coerced and clipped); KeyError for an unknown address, ValueError for a bad value."""
        return self.update({address: value})[address]

    def update(self, values: Mapping[str, Any]) -> dict[str, Value]:
        """Write several values as one step: readers see all of them or none."""
        coerced = {}
        for address, value in values.items():
            if address not in self.params:
                raise KeyError(address)
            coerced[address] = self.params[address].coerce(value)
        now = time.perf_counter()
        with self._lock:
            merged = dict(self.snapshot)
            merged.update(coerced)
            self.snapshot = MappingProxyType(merged)
            for address in coerced:
                self.changed_at[address] = now
        return coerced

    def emit(self, address: str, *args: Any) -> tuple[float | int, ...]:
        """Send an event to every listener whose prefix matches; KeyError/ValueError as for `set`."""
        values = self.events[address].coerce(args)
        with self._lock:
            for prefix, queue in self._listeners:
                if address.startswith(prefix):
                    queue.append((address, values))  # deque(maxlen) drops the oldest when full
        return values

    def listen(self, prefix: str) -> deque:
        """A bounded queue of (address, args) for events under `prefix`; the listener pops from the left."""
        queue: deque = deque(maxlen=EVENT_BACKLOG)
        with self._lock:
            self._listeners.append((prefix, queue))
        return queue

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
