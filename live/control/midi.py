"""MIDI control: controllers steer the parameter tree, and the tree's changes come back to their LED rings, motor
faders and pad lights.

Threads. No Python runs in rtmidi's threads: with JACK MIDI, rtmidi reads input in JACK's real-time process thread,
and a Python callback there must first take the GIL, so any thread of ours that holds it (video, OSC) made our JACK
clients late (issue 11). Instead rtmidi keeps each input's messages in its own bounded C++ queue, and one `midi-in`
thread drains every open input with get_message() about every DRAIN_S, passing each message to
live/control/midi_in.py, which only parses and writes the tree (or plays a note event, or ticks the tempo clock),
so a burst of fader moves never waits on anything slow. One `midi` thread does the rest: every `poll_s` it compares
the port names it is configured for with the ports that exist (so a controller plugged in late, or unplugged and
plugged back, connects by itself), and at `feedback_hz` at most it sends each mapped value that something else
changed (a scene, OSC) to the output ports: the latest value only, nothing queues, and values MIDI wrote itself are
not echoed (tree.written_by), so no loops.

Config and value codings: midi_map.py; the mapping in force and MIDI learn: midi_learn.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rtmidi

from live.control.midi_in import Counts, InputPort, Receiver, TempoClock
from live.control.midi_learn import Mapping
from live.control.midi_map import MidiMap, MidiSection, feedback_messages
from live.control.priority import favour_this_thread
from live.errors import LiveError
from live.params import ParamTree

__all__ = ["API", "MidiControl", "MidiMap", "MidiSection", "TempoClock"]

API = {"default": rtmidi.API_UNSPECIFIED, "alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
       "coremidi": rtmidi.API_MACOSX_CORE, "windows": rtmidi.API_WINDOWS_MM}
POLL_S = 0.25  # port scan: a controller pulled and plugged back faster than this would be missed
VIRTUAL = " (virtual)"  # suffix of the virtual ports' names among the open ports
DRAIN_S = 0.001  # the midi-in thread's sleep between passes: a message waits up to ~1 ms to be handed on
# rtmidi's per-input queue (it holds one less): ~1 s of a DIN MIDI cable's top rate (~1,000 messages/s), so a stall
# of the Python side that long loses nothing. When it is full, rtmidi drops the newest message and says so only on
# stderr ("MidiInJack: message queue limit reached!!"): it gives Python no count of drops.
QUEUE_LIMIT = 1024


class _Output:
    """One open output port and what was last sent to it per map (to send changes only)."""

    def __init__(self, name: str, midi_out: Any) -> None:
        self.name, self.midi_out = name, midi_out
        self.sent: dict[MidiMap, list[list[int]]] = {}
        self.synced = False  # a freshly connected device gets every value once


def _close_port(port: Any) -> None:
    """Close and free one rtmidi object. Call once per object: a second close after delete() crashes rtmidi."""
    try:
        port.close_port()
        port.delete()
    except Exception:  # closing a port whose device is gone can fail in the driver; it is gone either way
        pass


class MidiControl:
    """MIDI in (notes, CC, 14-bit CC, NRPN, pitch bend, relative encoders, clock), MIDI learn, soft takeover and
    feedback out, for one show's parameter tree.

    `open()` starts it and `close()` stops it; `learn(address)` binds the next control moved. `clock` receives
    MIDI clock (live/control/tempo.py's Clock). `learn_path` is the resolved [midi] learn_file. `api` overrides
    [midi] api; `client_name` is the name other MIDI software sees; `say` hears connects, disconnects and learns
    as they happen (from the `midi` thread).
    """

    def __init__(self, tree: ParamTree, section: MidiSection, clock: TempoClock | None = None,
                 learn_path: Path | None = None, api: str | None = None, client_name: str = "live",
                 poll_s: float = POLL_S, say: Callable[[str], None] | None = None) -> None:
        self.tree, self.section, self.client_name, self.poll_s = tree, section, client_name, poll_s
        self._say = say or (lambda text: None)
        self.notices: deque[str] = deque(maxlen=32)  # the last things worth telling the user, for the HUD
        api = api or section.api
        if api not in API:
            raise LiveError(f"[midi] api '{api}' is not a MIDI system", f"use one of {', '.join(API)}")
        if api != "default" and API[api] not in rtmidi.get_compiled_api():
            have = ", ".join(rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api())
            raise LiveError(f"[midi] api '{api}' is not built into this python-rtmidi (it has: {have})",
                            "set [midi] api to 'default' or to one of those")
        self.api = api
        if section.notes and section.notes not in tree.events:
            raise LiveError(f"[midi] notes: '{section.notes}' is not an event of this show",
                            "set [midi] notes to the synth's note event (/synth/note) or to \"\" for none")
        if section.notes and len(tree.events[section.notes].args) != 2:
            raise LiveError(f"[midi] notes: '{section.notes}' does not take (note, velocity)",
                            "set [midi] notes to an event with two arguments, like /synth/note")
        self.mapping = Mapping(tree, section, learn_path, self._notice)
        self._counts = Counts()
        self.receiver = Receiver(tree, section, self.mapping, clock, self._counts, self._problem)
        self.last_problem = ""
        self.unavailable = ""
        self._inputs: dict[str, InputPort] = {}
        self._outputs: dict[str, _Output] = {}
        self._virtual_in: InputPort | None = None
        self._ports_lock = threading.Lock()  # the midi-in thread reads an input only while no one closes it
        self._listers: dict[str, Any] = {}
        self._missing: dict[str, list[str]] = {"input": [], "output": []}
        self._sources: set[str] = set()  # every "midi:<port>" this module ever wrote as
        self._own = re.compile(rf"^{re.escape(client_name)}(-\d+)?:")  # our own ports (JACK adds -01, -02)
        self._fb_version = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="midi", daemon=True)
        self._drainer = threading.Thread(target=self._drain, name="midi-in", daemon=True)

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
        if not (self._listers or self._virtual_in):
            return "MIDI: no ports configured ([midi] inputs, outputs or virtual); MIDI is off"
        self._scan(quiet=True)
        self._drainer.start()
        self._thread.start()
        real_outputs = [n for n in self._outputs if not n.endswith(VIRTUAL)]
        parts = [f"{kind}s {', '.join(repr(n) for n in names) or 'none'}"
                 for kind, names in (("input", list(self._inputs)), ("output", real_outputs))]
        if section.virtual:
            parts.append(f"virtual ports '{section.virtual_name}'")
        maps = f"{len(self.mapping.effective)} maps ({len(self.mapping.learned)} learned)"
        lines = [f"MIDI ({self.api}): " + "; ".join(parts) + f"; {maps}"]
        for kind in ("input", "output"):
            if self._missing[kind]:
                lines.append(self._missing_text(kind))
        return "\n".join(lines)

    def close(self) -> None:
        """Stop the threads, save what learn bound, close every port; safe to call twice."""
        self._stop.set()
        for thread in (self._thread, self._drainer):
            if thread.is_alive():
                thread.join(timeout=2.0)
        self.cancel_learn()
        self.mapping.save_if_dirty(self._problem)
        self._close_all()

    def __enter__(self) -> MidiControl:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _close_all(self) -> None:
        with self._ports_lock:
            inputs = self._open_inputs()
            self._inputs, self._virtual_in = {}, None
        for port in inputs:
            _close_port(port.midi_in)
        for out in self._outputs.values():
            _close_port(out.midi_out)
        for lister in self._listers.values():
            _close_port(lister)
        self._outputs, self._listers = {}, {}

    def _open_virtual(self) -> None:
        name = self.section.virtual_name
        midi_in = rtmidi.MidiIn(API[self.api], self.client_name, queue_size_limit=QUEUE_LIMIT)
        port = self._virtual_in = InputPort(name + VIRTUAL, midi_in, f"midi:{name}")
        self._sources.add(port.source)
        midi_in.ignore_types(sysex=False, timing=False, active_sense=False)  # every delta time: midi_in.DROPPED
        midi_in.set_error_callback(self._on_error, port.name)
        midi_out = rtmidi.MidiOut(API[self.api], self.client_name)
        self._outputs[port.name] = _Output(port.name, midi_out)  # closed with the other outputs
        try:
            midi_in.open_virtual_port(name)
            midi_out.open_virtual_port(name)
        except (NotImplementedError, rtmidi.UnsupportedOperationError):
            raise LiveError(f"[midi] virtual: this MIDI system ({self.api}) has no virtual ports",
                            "set [midi] virtual = false and connect through a loopback driver (loopMIDI on "
                            "Windows)") from None

    # --- MIDI in (the midi-in thread) ----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Hand every queued input message to the receiver, port by port in arrival order, then sleep DRAIN_S.

        Each message is handed on with the time it was drained, and the port's ArrivalClock (midi_in.py) turns
        that and rtmidi's delta time into the time it arrived: a note that sat in the queue while this thread slept
        or waited for the GIL (video, an OSC burst) is still placed when it was played, so the synth's constant
        delay stays constant (a note timed when drained sounded up to the wait late). Each pass also tells the clock
        when it found a port's queue empty: whatever is drained later arrived after that. Polling costs ~1-2 % of one
        core with nothing coming in (measured beside a JACK server, three inputs); rtmidi offers nothing to block on.
        Favoured by the scheduler where allowed (priority.py)."""
        favour_this_thread()
        while not self._stop.is_set():
            try:
                with self._ports_lock:
                    for port in self._open_inputs():
                        checked = time.perf_counter()
                        for _ in range(QUEUE_LIMIT):  # bounded: one chatty port cannot hold the others back
                            event = port.midi_in.get_message()
                            if event is None:
                                port.arrival.emptied(checked)
                                break
                            self.receiver.on_message(event, port, time.perf_counter())
            except Exception as err:  # as in the midi thread: counted and told, the show goes on
                self._problem(f"MIDI in: {type(err).__name__}: {err}")
            time.sleep(DRAIN_S)

    def _open_inputs(self) -> list[InputPort]:
        """Every input to drain: the devices' and the virtual one (call holding _ports_lock)."""
        return [*self._inputs.values(), *([self._virtual_in] if self._virtual_in is not None else [])]

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
                self.mapping.finish_pending()
                self.mapping.save_if_dirty(self._problem)
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
                names = self._foreign(lister.get_ports())
            except rtmidi.RtMidiError as err:
                self._problem(f"MIDI: cannot list {kind} ports: {err}")
                continue
            for name in [n for n in opened if n not in names and not n.endswith(VIRTUAL)]:
                self._notice(f"MIDI: {kind} '{name}' is gone; it reconnects when it comes back")
                with self._ports_lock:  # out of the midi-in thread's reach before it is closed
                    port = opened.pop(name)
                _close_port(port.midi_in if kind == "input" else port.midi_out)
            for name in names:
                if name not in opened and any(name.lower().startswith(p.lower()) for p in prefixes):
                    try:
                        port = self._open_input(name) if kind == "input" else self._open_output(name)
                    except (rtmidi.RtMidiError, ValueError) as err:  # it vanished between listing and opening
                        self._problem(f"MIDI: cannot open {kind} '{name}': {err}; trying again")
                        continue
                    with self._ports_lock:
                        opened[name] = port
                    if not quiet:
                        self._notice(f"MIDI: {kind} '{name}' connected")
            missing = [p for p in prefixes if not any(n.lower().startswith(p.lower()) for n in names)]
            if missing != self._missing[kind]:
                self._missing[kind] = missing
                if missing and not quiet:
                    self._notice(self._missing_text(kind, names))

    def _foreign(self, names: list[str]) -> list[str]:
        """Port names without our own: JACK and ALSA list them as '<client_name>:...', CoreMIDI shows our virtual
        ports by their bare name. Never connect to ourselves."""
        virtual = self.section.virtual_name if self._virtual_in is not None else None
        return [n for n in names if not self._own.match(n) and n != virtual]

    def _missing_text(self, kind: str, names: list[str] | None = None) -> str:
        if names is None:
            try:
                names = self._foreign(self._listers[kind].get_ports())
            except rtmidi.RtMidiError:
                names = []
        there = ", ".join(repr(n) for n in names) or "none"
        wanted = ", ".join(repr(p) for p in self._missing[kind])
        return (f"MIDI: no {kind} port starting with {wanted} (ports here: {there}); still looking\n"
                f"  fix: plug the controller in, or set [midi] {kind}s to the start of one of those names")

    def _open_input(self, name: str) -> InputPort:
        midi_in = rtmidi.MidiIn(API[self.api], self.client_name, queue_size_limit=QUEUE_LIMIT)
        port = InputPort(name, midi_in, f"midi:{name}")
        try:
            midi_in.ignore_types(sysex=False, timing=False, active_sense=False)  # every delta time: midi_in.DROPPED
            midi_in.set_error_callback(self._on_error, name)
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
        maps = [m for m, _ in self.mapping.effective if m.feedback and m.param in snapshot]
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
                    self._counts.add("feedback")
                except rtmidi.RtMidiError as err:
                    self._problem(f"MIDI feedback to '{out.name}': {err}")
            out.synced = True

    # --- MIDI learn ------------------------------------------------------------------------------------------

    def learn(self, address: str, kind: str | None = None, mode: str = "") -> None:
        """Bind the next control moved (CC, 14-bit pair, NRPN, pitch bend or note-on) to `address`.

        `kind` restricts what binds: "relative" for an endless encoder (whose moves look like any CC), "cc" to
        take a CC 0..31 as 7-bit without waiting for a 14-bit LSB; `mode` is the encoder coding or note mode.
        The new map replaces learned maps of the same control or parameter and is saved to the learn file.
        LiveError for an unknown address (the Player answers /live/learn with it)."""
        self.mapping.learn(address, kind, mode)

    def cancel_learn(self) -> bool:
        """Stop waiting for a control; True if learn was armed."""
        return self.mapping.cancel()

    @property
    def learning(self) -> str | None:
        """The address learn waits to bind, or None."""
        return self.mapping.learning

    def wait_learned(self, timeout: float | None = None) -> MidiMap | None:
        """Block until learn binds (for the CLI); the new map, or None on timeout or cancel."""
        return self.mapping.wait(timeout)

    # --- what the HUD and CLI read ------------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        return {**self._counts.values, "learned": self.mapping.learned_count}

    def stats(self) -> dict[str, Any]:
        """Counters and connection state for the HUD: messages in, applied, held by takeover, unmapped, clock
        ticks, errors, feedback sent, maps learned; the ports connected and the prefixes still missing."""
        return {**self.counts, "inputs": list(self._inputs), "outputs": list(self._outputs),
                "missing_inputs": list(self._missing["input"]), "missing_outputs": list(self._missing["output"]),
                "virtual": self.section.virtual_name if self._virtual_in is not None else "",
                "learning": self.learning, "last_problem": self.last_problem, "unavailable": self.unavailable}

    def describe(self) -> list[dict[str, Any]]:
        """The mapping in force, one dict per control ('control' in words, 'param', 'kind', 'channel', 'number',
        'mode', 'takeover', 'feedback', 'from' show|learned), the notes route first. Needs no open()."""
        return self.mapping.describe()

    # --- bookkeeping ----------------------------------------------------------------------------------------------

    def _on_error(self, kind: int, text: str, name: str) -> None:
        self._problem(f"MIDI '{name}': {text}")

    def _problem(self, text: str) -> None:
        self._counts.add("errors")
        if text != self.last_problem:
            self.last_problem = text
            self._notice(text)

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        try:
            self._say(text)
        except Exception:  # a broken console must not stop MIDI
            pass


def _local_name(direction: str, name: str) -> str:
    """Our end of a connection, named after the device (JACK and ALSA show it); no ':' (JACK's separator)."""
    return f"{direction} {re.sub(r'[^A-Za-z0-9 _.()-]+', ' ', name)}"[:60].strip()
