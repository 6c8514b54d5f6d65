"""MIDI in: one message drained from an rtmidi input becomes a parameter write, a note event or a clock tick.

Runs in the midi-in thread (live/control/midi.py drains every input's rtmidi queue there, so no Python runs in
JACK's process thread), so it only parses and writes the tree (a short lock), never waits or does I/O. Per-port
parsing state (14-bit MSBs, the NRPN selection, soft-takeover positions) belongs to the port, and one thread handles
every port, so that state needs no lock either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from live.clock_offset import ClockOffset
from live.control.midi_learn import Mapping
from live.control.midi_map import MidiMap, MidiSection, bend_to_normal, cc_to_normal, relative_ticks, wide_to_normal
from live.params import ParamTree

#: Soft-takeover tolerance in controller travel: within one step of the value counts as "there".
TOL_7BIT, TOL_14BIT = 1 / 127, 1 / 1024
#: Messages the receiver drops unseen: SysEx and active sensing. rtmidi delivers them all the same, because with
#: JACK it loses the delta time of a message it ignores (measured: 0.4 s of 0.6 s went missing between two notes).
DROPPED = (0xF0, 0xFE)


class TempoClock(Protocol):
    """What MIDI clock in needs from live/control/tempo.py's Clock."""

    def midi_clock(self, now: float) -> None: ...
    def midi_start(self, now: float) -> None: ...
    def midi_stop(self) -> None: ...


class Counts:
    """Counters for the HUD, written from the midi-in thread."""

    KEYS = ("in", "applied", "held", "unmapped", "clock", "errors", "feedback")

    def __init__(self) -> None:
        self.values = dict.fromkeys(self.KEYS, 0)
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self.values[key] += 1


class ArrivalClock:
    """When each message of one input port arrived, in perf_counter() time, though it may be drained much later.

    rtmidi stamps each message with the time since the port's previous one, read from the port's own clock in the
    MIDI system's thread (JACK's jack_get_time() in its process callback, the ALSA sequencer's event time), which
    Python's stalls do not delay. Their running sum is the port's clock; what is missing is its offset to
    perf_counter(). A message is never drained before it arrived, so `drained - stamp` bounds the offset from above,
    and the smallest bound seen is the estimate: one message drained promptly pins it, and every later message,
    however long it waited behind the GIL or a busy drain, is timed `stamp + offset`, never later than drained. The
    estimate may grow by 100 µs per second (live/clock_offset.py), so a port clock slower than perf_counter() is followed (a faster
    one lowers the bound by itself). From below, a message drained after the port's queue was found empty at time t
    arrived after t: that catches a sum that lost time (rtmidi drops a message, and its delta, when its queue is
    full). The first message is timed when drained. A fresh clock for every (re)opened port.
    """

    def __init__(self) -> None:
        self.stamp = 0.0  # the port's clock: the sum of every delta so far
        self.offset = ClockOffset()  # perf_counter() minus the port's clock
        self._after = float("-inf")  # the port's queue was found empty after this: what comes next arrived later

    def emptied(self, checked: float) -> None:
        """The port's queue was found empty by a look that began at `checked` (perf_counter())."""
        self._after = checked

    def arrived(self, delta: float, drained: float) -> float:
        """The perf_counter() time a message arrived, from its rtmidi delta time and when it was drained."""
        self.stamp += delta
        return self.stamp + self.offset.bound(drained - self.stamp, self._after - self.stamp, drained)


class InputPort:
    """One open input port (device or virtual), its arrival clock and its parsing state, which only the midi-in
    thread touches."""

    def __init__(self, name: str, midi_in: Any, source: str) -> None:
        self.name, self.midi_in, self.source = name, midi_in, source
        self.arrival = ArrivalClock()
        self.msb14: dict[tuple[int, int], int] = {}  # (channel, CC 0..31) -> last MSB of a 14-bit pair
        self.nrpn: dict[int, list] = {}  # channel -> [select MSB, select LSB, is RPN, data MSB]
        self.takeover: dict[MidiMap, list] = {}  # map -> [last control position, control owns the value]


class Receiver:
    """Turns MIDI messages into tree writes through the mapping, with soft takeover."""

    def __init__(self, tree: ParamTree, section: MidiSection, mapping: Mapping, clock: TempoClock | None,
                 counts: Counts, problem: Callable[[str], None]) -> None:
        self.tree, self.section, self.mapping, self.clock = tree, section, mapping, clock
        self.count, self._problem = counts.add, problem

    def on_message(self, event: tuple[list[int], float], port: InputPort, drained: float) -> None:
        """One message: (message bytes, rtmidi delta time), the port it came in on and the perf_counter() time it
        was drained. Notes and clock ticks carry the time it arrived (the port's ArrivalClock)."""
        message = event[0]
        at = port.arrival.arrived(event[1], drained)
        if message[0] in DROPPED:
            return
        try:
            self._handle(port, message, at)
        except Exception as err:  # a bad value, or a parameter a reloaded show removed: counted, never raised
            self._problem(f"MIDI from '{port.name}': {bytes(message).hex(' ')}: {type(err).__name__}: {err}")

    def _handle(self, port: InputPort, message: list[int], at: float) -> None:
        status = message[0]
        self.count("in")
        if status >= 0xF0:
            if self.clock is not None and status in (0xF8, 0xFA, 0xFB, 0xFC):
                if status == 0xF8:
                    self.clock.midi_clock(at)
                elif status == 0xFC:
                    self.clock.midi_stop()
                else:
                    self.clock.midi_start(at)  # start and continue: the master's next tick is beat 0
                self.count("clock")
            return
        kind, channel = status & 0xF0, (status & 0x0F) + 1
        if len(message) < 3:
            self.count("unmapped")  # program change, channel pressure
        elif kind in (0x80, 0x90):
            self._note(port, channel, message[1], message[2] if kind == 0x90 else 0, at)
        elif kind == 0xB0:
            self._cc(port, channel, message[1], message[2], at)
        elif kind == 0xE0:
            if self.mapping.armed:
                self.mapping.saw("pitchbend", channel, 0)
            self._apply_all(port, self.mapping.find("pitchbend", channel, 0),
                            bend_to_normal(message[1] | message[2] << 7), TOL_14BIT)
        else:
            self.count("unmapped")

    def _note(self, port: InputPort, channel: int, note: int, velocity: int, at: float) -> None:
        if self.mapping.armed and velocity:
            self.mapping.saw("note", channel, note)
        maps = self.mapping.find("note", channel, note)
        if maps:  # a pad mapped to a parameter does not also play the synth
            for m in maps:
                if m.param in self.tree.events:  # a trigger (/scene/go, /tempo/tap): the tree fires it on the
                    self.tree.emit(m.param, velocity, at=at)  # press and ignores the release (velocity 0)
                    continue
                if m.resolved_mode == "toggle":
                    if not velocity:
                        continue
                    param = self.tree.params[m.param]
                    position = 0.0 if param.to_normal(self.tree.snapshot[m.param]) >= 0.5 else 1.0
                else:
                    position = 1.0 if velocity else 0.0
                self.tree.set_normal(m.param, position, port.source)
            self.count("applied")
        elif self.section.notes and self.section.channel in (None, channel):
            self.tree.emit(self.section.notes, note, velocity / 127, at=at)
            self.count("applied")
        else:
            self.count("unmapped")

    def _cc(self, port: InputPort, channel: int, number: int, value: int, at: float) -> None:
        nrpn = port.nrpn.setdefault(channel, [None, None, None, 0])
        if number in (99, 98, 101, 100):  # (N)RPN parameter select: state only
            nrpn[0 if number in (99, 101) else 1] = value
            nrpn[2] = number in (101, 100)
            return
        if number in (6, 38) and nrpn[2] is not None and None not in nrpn[:2] and nrpn[:2] != [127, 127]:
            self._nrpn_data(port, channel, number, value, nrpn)
            return
        if self.mapping.armed:
            self.mapping.saw_cc(port, channel, number, at)
        handled = False
        if number < 32:
            port.msb14[(channel, number)] = value  # kept even unmapped: learn may bind the pair on its LSB
            maps = self.mapping.find("cc14", channel, number)
            if maps:
                self._apply_all(port, maps, wide_to_normal(value << 7), TOL_14BIT)
                handled = True
        elif number < 64:
            maps = self.mapping.find("cc14", channel, number - 32)
            if maps:  # the MSB resets the LSB (MIDI 1.0); the LSB refines the last MSB
                msb = port.msb14.get((channel, number - 32), 0)
                self._apply_all(port, maps, wide_to_normal(msb << 7 | value), TOL_14BIT)
                handled = True
        maps = self.mapping.find("cc", channel, number)
        for m in maps:
            if m.kind == "relative":
                self._step(port, m, relative_ticks(value, m.resolved_mode))
                self.count("applied")
            else:
                self.count("applied" if self._apply(port, m, cc_to_normal(value), TOL_7BIT) else "held")
        if not (handled or maps):
            self.count("unmapped")

    def _nrpn_data(self, port: InputPort, channel: int, number: int, value: int, nrpn: list) -> None:
        if nrpn[2]:  # RPN data (pitch-bend range, tuning) is for synths, not parameters
            self.count("unmapped")
            return
        selected = nrpn[0] << 7 | nrpn[1]
        if number == 6:
            nrpn[3] = value
        if self.mapping.armed:
            self.mapping.saw("nrpn", channel, selected)
        self._apply_all(port, self.mapping.find("nrpn", channel, selected),
                        wide_to_normal(nrpn[3] << 7 | (value if number == 38 else 0)), TOL_14BIT)

    def _apply_all(self, port: InputPort, maps: tuple[MidiMap, ...], position: float, tol: float) -> None:
        if not maps:
            self.count("unmapped")
        for m in maps:
            self.count("applied" if self._apply(port, m, position, tol) else "held")

    def _apply(self, port: InputPort, m: MidiMap, u: float, tol: float) -> bool:
        """Move `m`'s parameter to control position `u` unless soft takeover holds it; True if written.

        pickup: a parameter something else changed stays put until the control crosses its position (or lands
        on it). scale: each move goes the same fraction of the remaining way toward the control's end of travel,
        so control and value meet at the end. Either way the control owns the value again (follows it directly)
        until anything else writes the parameter.
        """
        tree, address = self.tree, m.param
        if address in tree.events:  # a button's CC: the tree fires the trigger on the press, not the release
            tree.emit(address, u)
            return True
        mode = m.takeover or self.section.takeover
        state = port.takeover.setdefault(m, [None, False])
        previous, state[0] = state[0], u
        if mode == "none":
            tree.set_normal(address, u, port.source)
            return True
        if tree.written_by.get(address) != port.source:
            state[1] = False
        if not state[1]:
            param, current = tree.params[address], tree.snapshot[address]
            c = param.to_normal(current)
            crossed = previous is not None and (previous - c) * (u - c) <= 0
            if abs(u - c) <= tol or param.from_normal(u) == current or (mode == "pickup" and crossed):
                state[1] = True
            elif mode == "pickup" or previous is None or u == previous:
                return False
            else:
                if u > previous:
                    target = c + (u - previous) * (1 - c) / (1 - previous)
                else:
                    target = c - (previous - u) * c / previous
                tree.set_normal(address, target, port.source)
                state[1] = abs(target - u) <= tol  # met (at the end of travel): the control owns it again
                return True
        tree.set_normal(address, u, port.source)
        return True

    def _step(self, port: InputPort, m: MidiMap, ticks: int) -> None:
        """A relative encoder: `ticks` steps from the current value, never a jump (no takeover needed)."""
        if not ticks:
            return
        tree, address = self.tree, m.param
        param, current = tree.params[address], tree.snapshot[address]
        if param.type == "enum":
            index = min(max(param.choices.index(current) + ticks, 0), len(param.choices) - 1)
            tree.set(address, param.choices[index], port.source)
        elif param.type == "bool":
            tree.set(address, ticks > 0, port.source)
        elif m.step or param.type == "int":
            step = m.step or max(1, round((param.max - param.min) / 128))
            value = current + ticks * step
            if param.clip not in ("wrap", "fold"):  # an encoder at the end stays there, even for clip = reject
                value = min(max(value, param.min), param.max)
            tree.set(address, value, port.source)
        else:
            tree.set_normal(address, min(max(param.to_normal(current) + ticks / 128, 0.0), 1.0), port.source)
