"""The MIDI mapping in force (the show's maps plus what MIDI learn bound) and MIDI learn itself.

Incoming messages look controls up in one dict; learn never edits that dict but swaps in a new one, so the rtmidi
threads read it without a lock. Learned maps are written to the learn file by the `midi` thread, never by an
rtmidi callback (no file I/O where MIDI arrives).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from live.control.midi_map import MODES, MidiMap, MidiSection, load_learned, save_learned
from live.errors import LiveError
from live.params import ParamTree

#: After a CC 0..31, how long learn waits for its LSB (CC n+32) before binding a plain 7-bit CC.
LEARN_PAIR_S = 0.25
KINDS = ("cc", "cc14", "nrpn", "pitchbend", "note", "relative")
ABSOLUTE = ("cc", "cc14", "nrpn", "pitchbend")


class Mapping:
    """Which control drives which parameter, and the learn state machine that adds to it."""

    def __init__(self, tree: ParamTree, section: MidiSection, learn_path: Path | None,
                 notice: Callable[[str], None]) -> None:
        self.tree, self.section, self.learn_path, self._notice = tree, section, learn_path, notice
        triggers = {a for a, e in tree.events.items() if not e.args}  # /scene/go, /tempo/tap, /live/panic
        for m in section.map:
            if m.param in triggers and m.kind not in ("note", "cc"):
                raise LiveError(f"[midi] map: '{m.param}' is a trigger; map it to a note or a button's CC, not "
                                f"{m.kind}", "set kind = \"note\" or \"cc\" for this map")
            if m.param not in tree.params and m.param not in triggers:
                raise LiveError(f"[midi] map: '{m.param}' ({m.label(section.channel)}) is not a parameter of "
                                "this show", "run `live params` for the list of addresses")
            if m.param in tree.params and tree.params[m.param].readonly:
                raise LiveError(f"[midi] map: '{m.param}' is measured from the show's input and cannot be set",
                                "map the controller to a parameter it can move; to let the measurement move one, "
                                "use a [mod] with source = this address")
        learned = load_learned(learn_path)
        gone = sorted({m.param for m in learned if m.param not in tree.params})
        if gone:
            notice(f"MIDI learn: skipped learned maps to parameters this show does not have: {', '.join(gone)}")
        self.learned = [m for m in learned if m.param in tree.params]
        self.lookup: dict[tuple[str, int, int], tuple[MidiMap, ...]] = {}
        self.effective: list[tuple[MidiMap, str]] = []
        self.learned_count = 0
        self._lock = threading.Lock()
        self._armed: tuple[str, str | None, str] | None = None  # (address, kind wanted, mode)
        self._pending: tuple[object, int, int, float] | None = None  # (port, channel, CC 0..31, when)
        self._done = threading.Event()
        self._last: MidiMap | None = None
        self._dirty = False
        self._rebuild()

    def find(self, kind: str, channel: int, number: int) -> tuple[MidiMap, ...]:
        """The maps for one control on `channel`, including those that listen on every channel."""
        lookup = self.lookup  # one reference: learn swaps in a new dict, never edits this one
        return lookup.get((kind, channel, number), ()) + lookup.get((kind, 0, number), ())

    def _rebuild(self) -> None:
        """A learned map hides a show map on the same control; everything in force goes into a fresh dict."""
        channel = self.section.channel
        learned = {(m.control(), m.channel or channel) for m in self.learned}
        effective = [(m, "show") for m in self.section.map if (m.control(), m.channel or channel) not in learned]
        effective += [(m, "learned") for m in self.learned]
        lookup: dict[tuple[str, int, int], tuple[MidiMap, ...]] = {}
        for m, _ in effective:
            kind, number = m.control()
            key = (kind, m.channel or channel or 0, number)
            lookup[key] = lookup.get(key, ()) + (m,)
        self.effective, self.lookup = effective, lookup

    # --- learn: the API ----------------------------------------------------------------------------------------

    @property
    def armed(self) -> bool:
        return self._armed is not None

    @property
    def learning(self) -> str | None:
        armed = self._armed
        return armed[0] if armed else None

    def learn(self, address: str, kind: str | None = None, mode: str = "") -> None:
        if address not in self.tree.params or self.tree.params[address].readonly:
            raise LiveError(f"MIDI learn: '{address}' is not a parameter of this show that a controller can set",
                            "run `live params` for the list of addresses")
        if kind is not None and kind not in KINDS:
            raise LiveError(f"MIDI learn: '{kind}' is not a kind of control", f"use one of {', '.join(KINDS)}")
        if mode and mode not in MODES.get(kind or "", ()):
            raise LiveError(f"MIDI learn: mode '{mode}' needs kind relative (twos, signed, offset) or note "
                            "(momentary, toggle)", "give the kind with the mode")
        with self._lock:
            self._armed, self._pending = (address, kind, mode), None
            self._done.clear()
        self._notice(f"MIDI learn: move a control for {address}")

    def cancel(self) -> bool:
        with self._lock:
            armed, self._armed, self._pending = self._armed is not None, None, None
        return armed

    def wait(self, timeout: float | None) -> MidiMap | None:
        return self._last if self._done.wait(timeout) else None

    # --- learn: what the rtmidi threads report -----------------------------------------------------------------

    def saw(self, kind: str, channel: int, number: int) -> None:
        """A note-on, pitch bend or NRPN data arrived while armed: it binds (if it is the kind wanted)."""
        with self._lock:
            self._bind(kind, channel, number)

    def saw_cc(self, port: object, channel: int, number: int, now: float) -> None:
        """A plain CC arrived while armed. A CC 0..31 may be the MSB of a 14-bit pair: it waits for CC n+32."""
        with self._lock:
            if self._armed is None:
                return
            wanted, pending = self._armed[1], self._pending
            if wanted in ("cc", "relative"):
                self._bind(wanted, channel, number)
            elif pending and pending[0] is port and pending[1] == channel and pending[2] == number - 32:
                self._bind("cc14", channel, number - 32)
            elif pending:  # the same MSB again, or another control: the pending one was a plain CC
                self._bind("cc", pending[1], pending[2])
            elif number < 32:
                self._pending = (port, channel, number, now)
            else:
                self._bind("cc", channel, number)

    def finish_pending(self) -> None:
        """Called often by the `midi` thread: a CC 0..31 whose LSB never came is a 7-bit CC."""
        pending = self._pending
        if pending and time.perf_counter() - pending[3] > LEARN_PAIR_S:
            with self._lock:
                if self._pending is pending:
                    self._bind("cc", pending[1], pending[2])

    def _bind(self, kind: str, channel: int, number: int) -> None:
        if self._armed is None:
            return
        address, wanted, mode = self._armed
        if wanted is not None and wanted != kind:
            self._pending = None
            return
        new = MidiMap(param=address, kind=kind, channel=channel, number=number,
                      mode=mode if mode in MODES.get(kind, ()) else "")
        self.learned = [m for m in self.learned
                        if m.param != address and (m.control(), m.channel) != (new.control(), channel)]
        self.learned.append(new)
        self._rebuild()
        self._armed, self._pending, self._last, self._dirty = None, None, new, True
        self.learned_count += 1
        self._done.set()

    def save_if_dirty(self, problem: Callable[[str], None]) -> None:
        """Write the learned maps if learn bound one since the last save (the `midi` thread, and close)."""
        if not self._dirty:
            return
        self._dirty = False
        last = self._last
        what = f"MIDI learn: {last.label()} -> {last.param}" if last else "MIDI learn"
        if self.learn_path is None:
            self._notice(f"{what} (for this run only: set [midi] learn_file to keep it)")
            return
        try:
            save_learned(self.learn_path, list(self.learned))
        except OSError as err:
            problem(f"{what}, but {self.learn_path} cannot be written: {err.strerror}")
            return
        self._notice(f"{what} (saved to {self.learn_path})")

    def describe(self) -> list[dict[str, Any]]:
        section = self.section
        items: list[dict[str, Any]] = []
        if section.notes:
            where = f"ch{section.channel}" if section.channel else "any ch"
            items.append({"control": f"{where} notes", "param": section.notes, "kind": "notes", "from": "show"})
        for m, origin in self.effective:
            items.append({"control": m.label(section.channel), "param": m.param, "kind": m.kind,
                          "channel": m.channel or section.channel, "number": m.number, "mode": m.resolved_mode,
                          "takeover": (m.takeover or section.takeover) if m.kind in ABSOLUTE else "",
                          "feedback": m.feedback, "from": origin})
        return items
