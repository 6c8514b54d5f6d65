"""How far perf_counter() is from a device's own count of time, pinned by what the device's events prove.

Both the MIDI input (rtmidi's delta times, midi_in.ArrivalClock) and the synth's device ring (frames read,
render_process.ReadClock) count time on a clock of their own and are only seen from Python later, at moments Python
does not choose. Each sighting gives hard bounds on the offset between the two clocks: an event seen at `now` had
happened by then (an upper bound), and one that was not there at an earlier look happened after it (a lower bound).
ClockOffset keeps the tightest: the smallest upper bound seen, allowed to rise by CREEP_S_PER_S (a device clock
slower than perf_counter(), or NTP's slew), and never under the newest lower bound.
"""

from __future__ import annotations

CREEP_S_PER_S = 1e-4  # a device's clock is within 100 ppm of the system's


class ClockOffset:
    """perf_counter() time minus a device's clock; None until the first bounds."""

    def __init__(self) -> None:
        self.value: float | None = None
        self._at = 0.0  # perf_counter() of the last bounds

    def reset(self, value: float, now: float) -> None:
        """Start again from a guess (the device's clock restarted)."""
        self.value, self._at = value, now

    def bound(self, upper: float, lower: float, now: float) -> float:
        """New bounds, seen at perf_counter() time `now`; returns the offset. The upper bound wins where they
        disagree (they cannot, for events that keep the device's own pace)."""
        crept = upper if self.value is None else self.value + CREEP_S_PER_S * (now - self._at)
        self.value, self._at = min(max(crept, lower), upper), now
        return self.value
