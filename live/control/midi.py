"""MIDI control: controllers steer the parameter tree, and the tree's changes come back to their LED rings, motor
faders and pad lights.

Threads. rtmidi calls `_on_message` in its own thread for each input port; that only parses and writes the tree
(or plays a note event, or ticks the tempo clock), so a burst of fader moves never waits on anything slow. One
`midi` thread does the rest: every `poll_s` it compares the port names it is configured for with the ports that
exist (so a controller plugged in late, or unplugged and plugged back, connects by itself), and at `feedback_hz`
at most it sends each mapped value that something else changed (a scene, OSC) to the output ports: the latest
value only, nothing queues, and values written by MIDI itself are not echoed (tree.written_by), so no loops.

The value arithmetic and the [midi] show section live in live/control/midi_map.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import rtmidi

from live.control.midi_map import (MODES, MidiMap, MidiSection, bend_to_normal, cc_to_normal, feedback_messages,
                                   load_learned, relative_ticks, save_learned, wide_to_normal)
from live.errors import LiveError
from live.params import ParamTree

__all__ = ["MidiControl", "MidiMap", "MidiSection", "API"]

API = {"default": rtmidi.API_UNSPECIFIED, "alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
       "coremidi": rtmidi.API_MACOSX_CORE, "windows": rtmidi.API_WINDOWS_MM}
POLL_S = 1.0
#: After a CC 0..31, how long learn waits for its LSB (CC n+32) before binding a plain 7-bit CC.
LEARN_PAIR_S = 0.25
#: Pick-up tolerance in controller travel: within one step of the value counts as "there".
TOL_7BIT, TOL_14BIT = 1 / 127, 1 / 1024
ABSOLUTE = ("cc", "cc14", "nrpn", "pitchbend")


class TempoClock(Protocol):
    """What MIDI clock in needs from live/control/tempo.py's Clock."""

    def midi_clock(self, now: float) -> None: ...
    def midi_start(self, now: float) -> None: ...
    def midi_stop(self) -> None: ...


class _Input:
    """One open input port and the parsing state only its own rtmidi thread touches."""

    def __init__(self, name: str, midi_in: Any, source: str) -> None:
        self.name, self.midi_in, self.source = name, midi_in, source
        self.msb14: dict[tuple[int, int], int] = {}  # (channel, cc 0..31) -> last MSB of a 14-bit pair
        self.nrpn: dict[int, list] = {}  # channel -> [select MSB, select LSB, is RPN, data MSB]
        self.takeover: dict[MidiMap, list] = {}  # map -> [last controller position, locked to the value]


class _Output:
    """One open output port and what was last sent to it per map (to send changes only)."""

    def __init__(self, name: str, midi_out: Any) -> None:
        self.name, self.midi_out = name, midi_out
        self.sent: dict[MidiMap, list[list[int]]] = {}
        self.synced = False  # a freshly connected device gets every value once


def _close_port(port: Any) -> None:
    try:
        if isinstance(port, rtmidi.MidiIn):
            port.cancel_callback()
        port.close_port()
        port.delete()
    except Exception:  # closing a port whose device is gone can fail in the driver; it is gone either way
        pass


class MidiControl:
    """MIDI in (notes, CC, 14-bit CC, NRPN, pitch bend, relative encoders, clock), MIDI learn, soft takeover and
    feedback out, for one show's parameter tree.

    `open()` starts it and `close()` stops it; `learn(address)` binds the next control moved. `api` overrides
    [midi] api ("alsa", "jack", "coremidi", "windows"); `client_name` is the name other MIDI software sees.
    """

    def __init__(self, tree: ParamTree, section: MidiSection, clock: TempoClock | None = None,
                 learn_path: Path | None = None, api: str | None = None, client_name: str = "live",
                 poll_s: float = POLL_S, say: Callable[[str], None] | None = None) -> None:
        self.tree, self.section, self.clock = tree, section, clock
        self.learn_path, self.client_name, self.poll_s = learn_path, client_name, poll_s
        self._say = say or (lambda text: None)
        self.notices: deque[str] = deque(maxlen=32)  # the last things worth telling the user, for the HUD
        api = api or section.api
        if api not in API:
            raise LiveError(f"[midi] api '{api}' is not a MIDI system", f"use one of {', '.join(API)}")
        self.api = api
        if api != "default" and API[api] not in rtmidi.get_compiled_api():
            have = ", ".join(rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api())
            raise LiveError(f"[midi] api '{api}' is not built into this python-rtmidi (it has: {have})",
                            "set [midi] api to 'default' or to one of those")
        for m in section.map:
            if m.param not in tree.params:
                raise LiveError(f"[midi] map: '{m.param}' ({m.label(section.channel)}) is not a parameter of "
                                "this show", "run `live params` for the list of addresses")
        if section.notes and section.notes not in tree.events:
            raise LiveError(f"[midi] notes: '{section.notes}' is not an event of this show",
                            "set [midi] notes to the synth's note event (/synth/note) or to \"\" for none")
        if section.notes and len(tree.events[section.notes].args) != 2:
            raise LiveError(f"[midi] notes: '{section.notes}' does not take (note, velocity)",
                            "set [midi] notes to an event with two arguments, like /synth/note")
        learned = load_learned(learn_path)
        gone = [m for m in learned if m.param not in tree.params]
        if gone:
            self._notice(f"MIDI learn: skipped {len(gone)} learned map(s) to parameters this show does not have: "
                         + ", ".join(sorted({m.param for m in gone})))
        self._learned = [m for m in learned if m.param in tree.params]
        self._lookup: dict[tuple[str, int, int], tuple[MidiMap, ...]] = {}
        self._effective: list[tuple[MidiMap, str]] = []
        self._rebuild()

        self.counts = {"in": 0, "applied": 0, "held": 0, "unmapped": 0, "clock": 0, "errors": 0, "feedback": 0,
                       "learned": 0}
        self.last_problem = ""
        self._count_lock = threading.Lock()
        self._learn_lock = threading.Lock()
        self._learn: tuple[str, str | None, str] | None = None  # (address, kind wanted, mode)
        self._pending: tuple[_Input, int, int, float] | None = None  # a CC 0..31 that may be a 14-bit MSB
        self._learned_event = threading.Event()
        self._last_learned: MidiMap | None = None
        self._dirty = False
        self._inputs: dict[str, _Input] = {}
        self._outputs: dict[str, _Output] = {}
        self._virtual: list[Any] = []
        self._listers: dict[str, Any] = {}
        self._missing: dict[str, list[str]] = {"input": [], "output": []}
        self._sources: set[str] = set()
        self._own = re.compile(rf"^{re.escape(client_name)}(-\d+)?:")
        self._fb_version = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="midi", daemon=True)
        self.unavailable = ""

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> str:
        """Connect to the configured ports that exist now, open the virtual ports, start the `midi` thread.
        Missing ports are not an error: they connect when they appear. Returns what happened, for the console."""
        section = self.section
        try:
            if section.inputs:
                self._listers["input"] = rtmidi.MidiIn(API[self.api], self.client_name)
            if section.outputs:
                self._listers["output"] = rtmidi.MidiOut(API[self.api], self.client_name)
            if section.virtual:
                self._open_virtual()
        except rtmidi.RtMidiError as err:
            self._close_all()
            self.unavailable = str(err).strip()
            fix = ("on Linux load the ALSA sequencer (modprobe snd-seq), or start JACK and set [midi] api = "
                   "\"jack\"" if self.api in ("default", "alsa") else "start the JACK server before the show")
            return f"MIDI: unavailable ({self.unavailable}); running without it\n  fix: {fix}"
        except BaseException:
            self._close_all()
            raise
        if not (self._listers or self._virtual):
            return "MIDI: no ports configured ([midi] inputs, outputs or virtual); MIDI is off"
        self._scan(quiet=True)
        self._thread.start()
        real_outputs = [n for n in self._outputs if not n.endswith("(virtual)")]
        parts = [f"{kind}s {', '.join(repr(n) for n in names) or 'none'}"
                 for kind, names in (("input", list(self._inputs)), ("output", real_outputs))]
        if section.virtual:
            parts.append(f"virtual ports '{section.virtual_name}'")
        maps = f"{len(self._effective)} maps ({len(self._learned)} learned)"
        lines = [f"MIDI ({self.api}): " + "; ".join(parts) + f"; {maps}"]
        for kind in ("input", "output"):
            if self._missing[kind]:
                lines.append(self._missing_text(kind))
        return "\n".join(lines)

    def close(self) -> None:
        """Stop the thread, save what learn bound, close every port; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.cancel_learn()
        self._save_if_dirty()
        self._close_all()

    def __enter__(self) -> MidiControl:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _close_all(self) -> None:
        for port in self._inputs.values():
            _close_port(port.midi_in)
        for out in self._outputs.values():
            _close_port(out.midi_out)
        for port in [*self._virtual, *self._listers.values()]:
            _close_port(port)
        self._inputs, self._outputs, self._virtual, self._listers = {}, {}, [], {}

    def _open_virtual(self) -> None:
        name = self.section.virtual_name
        midi_in = rtmidi.MidiIn(API[self.api], self.client_name)
        self._virtual.append(midi_in)
        port = _Input(f"{name} (virtual)", midi_in, f"midi:{name}")
        self._sources.add(port.source)
        midi_in.ignore_types(sysex=True, timing=False, active_sense=True)
        midi_in.set_error_callback(self._on_error, port.name)
        midi_in.set_callback(self._on_message, port)
        midi_out = rtmidi.MidiOut(API[self.api], self.client_name)
        self._outputs[port.name] = _Output(port.name, midi_out)  # closed with the outputs, once (twice crashes)
        try:
            midi_in.open_virtual_port(name)
            midi_out.open_virtual_port(name)
        except (NotImplementedError, rtmidi.UnsupportedOperationError):
            raise LiveError(f"[midi] virtual: this MIDI system ({self.api}) has no virtual ports",
                            "set [midi] virtual = false and connect through a loopback driver (loopMIDI on "
                            "Windows)") from None

    # --- ports come and go -----------------------------------------------------------------------------------

    def _run(self) -> None:
        next_scan = time.monotonic() + self.poll_s
        while not self._stop.wait(1.0 / self.section.feedback_hz):
            try:
                self._feedback()
                now = time.monotonic()
                if now >= next_scan:
                    next_scan = now + self.poll_s
                    self._scan()
                self._finish_pending_learn()
                self._save_if_dirty()
            except Exception as err:  # the show goes on without MIDI rather than stop: counted and told once
                self._problem(f"MIDI thread: {type(err).__name__}: {err}")

    def _scan(self, quiet: bool = False) -> None:
        """Close ports that vanished and open configured ports that appeared (by case-insensitive prefix)."""
        for kind, prefixes, opened in (("input", self.section.inputs, self._inputs),
                                       ("output", self.section.outputs, self._outputs)):
            lister = self._listers.get(kind)
            if lister is None:
                continue
            try:
                names = [n for n in lister.get_ports() if not self._own.match(n)]
            except rtmidi.RtMidiError as err:
                self._problem(f"MIDI: cannot list {kind} ports: {err}")
                continue
            for name in [n for n in opened if n not in names and not n.endswith("(virtual)")]:
                port = opened[name]
                _close_port(port.midi_in if kind == "input" else port.midi_out)
                self._notice(f"MIDI: {kind} '{name}' is gone; it reconnects when it comes back")
                del opened[name]
            for name in names:
                if name not in opened and any(name.lower().startswith(p.lower()) for p in prefixes):
                    try:
                        opened[name] = self._open_input(name) if kind == "input" else self._open_output(name)
                    except (rtmidi.RtMidiError, ValueError) as err:  # it vanished between listing and opening
                        self._problem(f"MIDI: cannot open {kind} '{name}': {err}; trying again")
                        continue
                    if not quiet:
                        self._notice(f"MIDI: {kind} '{name}' connected")
            missing = [p for p in prefixes if not any(n.lower().startswith(p.lower()) for n in names)]
            if missing != self._missing[kind]:
                self._missing[kind] = missing
                if missing and not quiet:
                    self._notice(self._missing_text(kind, names))

    def _missing_text(self, kind: str, names: list[str] | None = None) -> str:
        if names is None:
            try:
                names = [n for n in self._listers[kind].get_ports() if not self._own.match(n)]
            except rtmidi.RtMidiError:
                names = []
        there = ", ".join(repr(n) for n in names) or "none"
        wanted = ", ".join(repr(p) for p in self._missing[kind])
        return (f"MIDI: no {kind} port starting with {wanted} (ports here: {there}); still looking\n"
                f"  fix: plug the controller in, or set [midi] {kind}s to the start of one of those names")

    def _open_input(self, name: str) -> _Input:
        midi_in = rtmidi.MidiIn(API[self.api], self.client_name)
        port = _Input(name, midi_in, f"midi:{name}")
        try:
            midi_in.ignore_types(sysex=True, timing=False, active_sense=True)  # clock on: MIDI clock in
            midi_in.set_error_callback(self._on_error, name)
            midi_in.set_callback(self._on_message, port)
            midi_in.open_port(midi_in.get_ports().index(name), _local_name("in", name))
        except BaseException:
            _close_port(midi_in)
            raise
        self._sources.add(port.source)
        return port

    def _open_output(self, name: str) -> _Output:
        midi_out = rtmidi.MidiOut(API[self.api], self.client_name)
        try:
            midi_out.set_error_callback(self._on_error, name)
            midi_out.open_port(midi_out.get_ports().index(name), _local_name("out", name))
        except BaseException:
            _close_port(midi_out)
            raise
        return _Output(name, midi_out)

    # --- messages in (rtmidi's threads: parse and write, nothing slow) ----------------------------------------

    def _on_message(self, event: tuple[list[int], float], port: _Input) -> None:
        now = time.perf_counter()
        message = event[0]
        try:
            self._handle(port, message, now)
        except Exception as err:  # a bad value, or a parameter a reloaded show removed: counted, never raised
            self._problem(f"MIDI from '{port.name}': {bytes(message).hex(' ')}: {type(err).__name__}: {err}")

    def _on_error(self, kind: int, text: str, name: str) -> None:
        self._problem(f"MIDI '{name}': {text}")

    def _handle(self, port: _Input, message: list[int], now: float) -> None:
        status = message[0]
        self._count("in")
        if status >= 0xF0:
            if self.clock is not None and status in (0xF8, 0xFA, 0xFB, 0xFC):
                if status == 0xF8:
                    self.clock.midi_clock(now)
                elif status == 0xFC:
                    self.clock.midi_stop()
                else:
                    self.clock.midi_start(now)
                self._count("clock")
            return
        kind, channel = status & 0xF0, (status & 0x0F) + 1
        if kind in (0x80, 0x90) and len(message) >= 3:
            self._note(port, channel, message[1], message[2] if kind == 0x90 else 0, now)
        elif kind == 0xB0 and len(message) >= 3:
            self._cc(port, channel, message[1], message[2], now)
        elif kind == 0xE0 and len(message) >= 3:
            value = message[1] | message[2] << 7
            if self._learn:
                self._bind("pitchbend", channel, 0)
            self._apply_all(port, self._find("pitchbend", channel, 0), bend_to_normal(value), TOL_14BIT)
        else:
            self._count("unmapped")

    def _find(self, kind: str, channel: int, number: int) -> tuple[MidiMap, ...]:
        lookup = self._lookup  # one reference: learn swaps in a new dict, never edits this one
        return lookup.get((kind, channel, number), ()) + lookup.get((kind, 0, number), ())

    def _note(self, port: _Input, channel: int, note: int, velocity: int, now: float) -> None:
        if self._learn and velocity:
            self._bind("note", channel, note)
        maps = self._find("note", channel, note)
        if maps:
            for m in maps:
                param = self.tree.params[m.param]
                if m.resolved_mode == "toggle":
                    if not velocity:
                        continue
                    position = 0.0 if param.to_normal(self.tree.snapshot[m.param]) >= 0.5 else 1.0
                else:
                    position = 1.0 if velocity else 0.0
                self.tree.set_normal(m.param, position, port.source)
            self._count("applied")
        elif self.section.notes and self.section.channel in (None, channel):
            self.tree.emit(self.section.notes, note, velocity / 127)
            self._count("applied")
        else:
            self._count("unmapped")

    def _cc(self, port: _Input, channel: int, number: int, value: int, now: float) -> None:
        nrpn = port.nrpn.setdefault(channel, [None, None, None, 0])
        if number in (99, 98, 101, 100):  # (N)RPN parameter select: state only
            nrpn[0 if number in (99, 101) else 1] = value
            nrpn[2] = number in (101, 100)
            return
        if number in (6, 38) and nrpn[2] is not None and None not in nrpn[:2] and nrpn[:2] != [127, 127]:
            if nrpn[2]:  # RPN data (pitch-bend range, tuning) is not for parameters
                self._count("unmapped")
                return
            selected = nrpn[0] << 7 | nrpn[1]
            if number == 6:
                nrpn[3] = value
            if self._learn:
                self._bind("nrpn", channel, selected)
            maps = self._find("nrpn", channel, selected)
            if maps:
                self._apply_all(port, maps, wide_to_normal(nrpn[3] << 7 | (value if number == 38 else 0)),
                                TOL_14BIT)
            else:
                self._count("unmapped")
            return
        if self._learn:
            self._learn_cc(port, channel, number, now)
        handled = False
        if number < 32:
            port.msb14[(channel, number)] = value  # kept even unmapped: learn may bind the pair on its LSB
            maps = self._find("cc14", channel, number)
            if maps:
                self._apply_all(port, maps, wide_to_normal(value << 7), TOL_14BIT)
                handled = True
        elif number < 64:
            maps = self._find("cc14", channel, number - 32)
            if maps:
                msb = port.msb14.get((channel, number - 32), 0)
                self._apply_all(port, maps, wide_to_normal(msb << 7 | value), TOL_14BIT)
                handled = True
        maps = self._find("cc", channel, number)
        relative = [m for m in maps if m.kind == "relative"]
        if relative:
            for m in relative:
                self._step(port, m, relative_ticks(value, m.resolved_mode))
            self._count("applied")
        absolute = [m for m in maps if m.kind == "cc"]
        if absolute:
            self._apply_all(port, tuple(absolute), cc_to_normal(value), TOL_7BIT)
        if not (handled or maps):
            self._count("unmapped")

    # --- writing values: soft takeover and relative steps ------------------------------------------------------

    def _apply_all(self, port: _Input, maps: tuple[MidiMap, ...], position: float, tol: float) -> None:
        if not maps:
            self._count("unmapped")
            return
        for m in maps:
            self._count("applied" if self._apply(port, m, position, tol) else "held")

    def _apply(self, port: _Input, m: MidiMap, u: float, tol: float) -> bool:
        """Move `m`'s parameter to controller position `u` unless soft takeover holds it; True if written.

        pickup: a parameter something else changed stays put until the control crosses its position (or lands
        on it). scale: each move goes the same fraction of the remaining way toward the control's end of travel,
        so control and value meet at the end. Locked (the control owns the value) until anything else writes it.
        """
        tree, address = self.tree, m.param
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

    def _step(self, port: _Input, m: MidiMap, ticks: int) -> None:
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

    # --- MIDI learn -------------------------------------------------------------------------------------------

    def learn(self, address: str, kind: str | None = None, mode: str = "") -> None:
        """Bind the next control moved (CC, 14-bit pair, NRPN, pitch bend or note-on) to `address`.

        `kind` restricts what binds ("relative" for an endless encoder, whose moves look like any CC; "cc" to
        take a CC 0..31 as 7-bit without waiting for a 14-bit LSB); `mode` is the encoder coding or note mode.
        The new map replaces learned maps of the same control or parameter and is saved to the learn file."""
        if address not in self.tree.params:
            raise LiveError(f"MIDI learn: '{address}' is not a parameter of this show",
                            "run `live params` for the list of addresses")
        if kind is not None and kind not in ("cc", "cc14", "nrpn", "pitchbend", "note", "relative"):
            raise LiveError(f"MIDI learn: '{kind}' is not a kind of control",
                            "use cc, cc14, nrpn, pitchbend, note or relative")
        if mode and mode not in MODES.get(kind or "", ()):
            raise LiveError(f"MIDI learn: mode '{mode}' needs kind relative (twos, signed, offset) or note "
                            "(momentary, toggle)", "give the kind with the mode")
        with self._learn_lock:
            self._learn, self._pending = (address, kind, mode), None
            self._learned_event.clear()
        self._notice(f"MIDI learn: move a control for {address}")

    def cancel_learn(self) -> bool:
        """Stop waiting for a control; True if learn was armed."""
        with self._learn_lock:
            armed, self._learn, self._pending = self._learn is not None, None, None
        return armed

    @property
    def learning(self) -> str | None:
        """The address learn waits to bind, or None."""
        learn = self._learn
        return learn[0] if learn else None

    def wait_learned(self, timeout: float | None = None) -> MidiMap | None:
        """Block until learn binds (for the CLI); the new map, or None on timeout or cancel."""
        return self._last_learned if self._learned_event.wait(timeout) else None

    def _learn_cc(self, port: _Input, channel: int, number: int, now: float) -> None:
        with self._learn_lock:
            if self._learn is None:
                return
            wanted, pending = self._learn[1], self._pending
            if wanted in ("cc", "relative"):
                self._bind_locked(wanted, channel, number)
            elif pending and pending[0] is port and pending[1] == channel and pending[2] == number - 32:
                self._bind_locked("cc14", channel, number - 32)
            elif pending:  # the same MSB again, or another control: the pending one was a plain CC
                self._bind_locked("cc", pending[1], pending[2])
            elif number < 32:
                self._pending = (port, channel, number, now)
            else:
                self._bind_locked("cc", channel, number)

    def _finish_pending_learn(self) -> None:
        pending = self._pending
        if pending and time.perf_counter() - pending[3] > LEARN_PAIR_S:
            with self._learn_lock:
                if self._pending is pending:
                    self._bind_locked("cc", pending[1], pending[2])

    def _bind(self, kind: str, channel: int, number: int) -> bool:
        with self._learn_lock:
            return self._bind_locked(kind, channel, number)

    def _bind_locked(self, kind: str, channel: int, number: int) -> bool:
        if self._learn is None:
            return False
        address, wanted, mode = self._learn
        if wanted is not None and wanted != kind:
            self._pending = None
            return False
        mapping = MidiMap(param=address, kind=kind, channel=channel, number=number,
                          mode=mode if mode in MODES.get(kind, ()) else "")
        self._learned = [m for m in self._learned
                         if m.param != address and (m.control(), m.channel) != (mapping.control(), channel)]
        self._learned.append(mapping)
        self._rebuild()
        self._learn, self._pending, self._last_learned, self._dirty = None, None, mapping, True
        self._learned_event.set()
        self._count("learned")
        return True

    def _save_if_dirty(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        mapping = self._last_learned
        what = f"MIDI learn: {mapping.label()} -> {mapping.param}" if mapping else "MIDI learn"
        if self.learn_path is None:
            self._notice(f"{what} (for this run only: set [midi] learn_file to keep it)")
            return
        try:
            save_learned(self.learn_path, list(self._learned))
        except OSError as err:
            self._problem(f"{what}, but {self.learn_path} cannot be written: {err.strerror}")
            return
        self._notice(f"{what} (saved to {self.learn_path})")

    def _rebuild(self) -> None:
        """The maps in force (a learned map hides a show map on the same control) as one fresh lookup dict."""
        learned = {(m.control(), m.channel or self.section.channel) for m in self._learned}
        effective = [(m, "show") for m in self.section.map
                     if (m.control(), m.channel or self.section.channel) not in learned]
        effective += [(m, "learned") for m in self._learned]
        lookup: dict[tuple[str, int, int], tuple[MidiMap, ...]] = {}
        for m, _ in effective:
            kind, number = m.control()
            key = (kind, m.channel or self.section.channel or 0, number)
            lookup[key] = lookup.get(key, ()) + (m,)
        self._effective, self._lookup = effective, lookup

    # --- feedback out (the midi thread) ------------------------------------------------------------------------

    def _feedback(self) -> None:
        """Send each mapped value that changed since it was last sent; a value MIDI wrote is only noted (the
        control already shows it). A newly connected output gets every value once."""
        outputs = list(self._outputs.values())
        version = self.tree.version
        if not outputs or (version == self._fb_version and all(o.synced for o in outputs)):
            return
        self._fb_version = version
        snapshot, written_by, params = self.tree.snapshot, self.tree.written_by, self.tree.params
        maps = [m for m, _ in self._effective if m.feedback and m.param in snapshot]
        for out in outputs:
            for m in maps:
                messages = feedback_messages(m, params[m.param].to_normal(snapshot[m.param]), self.section.channel)
                if out.sent.get(m) == messages:
                    continue
                out.sent[m] = messages
                if out.synced and written_by.get(m.param) in self._sources:
                    continue  # no echo: the controller that moved it already shows it
                try:
                    for message in messages:
                        out.midi_out.send_message(message)
                    self._count("feedback")
                except rtmidi.RtMidiError as err:
                    self._problem(f"MIDI feedback to '{out.name}': {err}")
            out.synced = True

    # --- what the HUD and CLI read ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and connection state for the HUD: messages in, applied, held by takeover, unmapped, clock
        ticks, errors, feedback sent, maps learned; the ports connected and the prefixes still missing."""
        return {**self.counts, "inputs": list(self._inputs), "outputs": list(self._outputs),
                "missing_inputs": list(self._missing["input"]), "missing_outputs": list(self._missing["output"]),
                "learning": self.learning, "last_problem": self.last_problem, "unavailable": self.unavailable}

    def describe(self) -> list[dict[str, Any]]:
        """The mapping in force, one dict per control ('control' in words, 'param', details), notes first."""
        section = self.section
        items: list[dict[str, Any]] = []
        if section.notes:
            where = f"ch{section.channel}" if section.channel else "any ch"
            items.append({"control": f"{where} notes", "param": section.notes, "kind": "notes", "from": "show"})
        for m, origin in self._effective:
            items.append({"control": m.label(section.channel), "param": m.param, "kind": m.kind,
                          "channel": m.channel or section.channel, "number": m.number, "mode": m.resolved_mode,
                          "takeover": (m.takeover or section.takeover) if m.kind in ABSOLUTE else "",
                          "feedback": m.feedback, "from": origin})
        return items

    # --- bookkeeping ----------------------------------------------------------------------------------------------

    def _count(self, key: str) -> None:
        with self._count_lock:
            self.counts[key] += 1

    def _problem(self, text: str) -> None:
        self._count("errors")
        if text != self.last_problem:
            self.last_problem = text
            self._notice(text)

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        try:
            self._say(text)
        except Exception:
            pass


def _local_name(direction: str, name: str) -> str:
    """Our end of a connection, named after the device (JACK and ALSA show it); no ':' (JACK's separator)."""
    return f"{direction} {re.sub(r'[^A-Za-z0-9 _.()-]+', ' ', name)}"[:60].strip()
