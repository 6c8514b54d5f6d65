"""What a consumer (the video chain, the synth) sees of the tree: smoothed, modulated values at its own clock.

The tree holds targets, written whenever a fader moves. Each consumer owns a `ParamReader` and calls `read(now)`
once per frame or block: it glides each smoothed parameter towards its target at the consumer's own rate (so a
30 fps video and a 375 Hz synth both move smoothly, each without stepping), then adds the modulators' offsets.
Readers share nothing writable, so they need no lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from live.control.modulation import Modulator
from live.params import Param, ParamTree, Value

EURO_BETA = 4.0  # one-euro speed coefficient, per unit of range per second: faster moves, less lag


class _Slew:
    """Moves at most the full range per `smooth_s` seconds towards the target."""

    def __init__(self, param: Param, value: float) -> None:
        self.rate = (param.max - param.min) / max(param.smooth_s, 1e-6)
        self.value = value

    def step(self, target: float, dt: float) -> float:
        limit = self.rate * dt
        self.value += min(max(target - self.value, -limit), limit)
        return self.value


class _OneEuro:
    """The one-euro filter (Casiez, Roussel and Vogel, CHI 2012): a low-pass whose cutoff rises with speed, so
    a still fader is steady and a fast sweep follows with little lag. Min cutoff 1 / (2 pi smooth_s)."""

    def __init__(self, param: Param, value: float) -> None:
        self.min_cutoff = 1.0 / (2 * math.pi * max(param.smooth_s, 1e-3))
        self.beta = EURO_BETA / max(param.max - param.min, 1e-9)
        self.value, self.speed = value, 0.0

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def step(self, target: float, dt: float) -> float:
        if dt <= 0:
            return self.value
        raw_speed = (target - self.value) / dt
        self.speed += self._alpha(1.0, dt) * (raw_speed - self.speed)  # derivative cutoff 1 Hz, as the paper's
        cutoff = self.min_cutoff + self.beta * abs(self.speed)
        self.value += self._alpha(cutoff, dt) * (target - self.value)
        return self.value


class ParamReader:
    """One consumer's smoothed, modulated view of the tree; not thread-safe (one reader per thread)."""

    def __init__(self, tree: ParamTree, modulators: Callable[[], Sequence[Modulator]] = tuple) -> None:
        """`modulators` returns the current modulators (a reloaded show swaps them)."""
        self.tree, self.modulators = tree, modulators
        self._generation = -1
        self._filters: dict[str, _Slew | _OneEuro] = {}
        self._ints: set[str] = set()
        self._last: float | None = None

    def _build(self) -> None:
        """Smoothing state for each smoothed parameter of the tree as it is now."""
        self._generation = self.tree.generation
        self._filters = {a: (_Slew if p.smooth == "slew" else _OneEuro)(p, float(p.default))
                         for a, p in self.tree.params.items() if p.smooth != "none" and p.numeric and p.smooth_s > 0}
        self._ints = {a for a in self._filters if self.tree.params[a].type == "int"}
        self._last = None

    def read(self, now: float) -> Mapping[str, Value]:
        """The values to use for a frame or block at perf_counter time `now`."""
        if self.tree.generation != self._generation:
            self._build()
        values = self.tree.snapshot
        first = self._last is None
        dt = 0.0 if first else min(max(now - self._last, 0.0), 0.5)  # a stall does not become a jump
        self._last = now
        modulators = self.modulators()
        if not self._filters and not modulators:
            return values
        out = dict(values)
        for address, smoother in self._filters.items():
            if address not in values:
                continue  # a reload removed it between our two reads; the next read rebuilds
            target = float(values[address])
            if first:
                smoother.value = target  # start where the show starts, not at the default
            value = smoother.step(target, dt)
            out[address] = round(value) if address in self._ints else value
        for modulator in modulators:
            if modulator.fires:
                continue  # it emits an event where its source is measured; it moves no value
            target = modulator.target
            offset = modulator.offset(now, values) if target.address in values else 0.0
            if offset:
                value = min(max(float(out[target.address]) + offset, target.min), target.max)
                out[target.address] = round(value) if target.type == "int" else value
        return out
