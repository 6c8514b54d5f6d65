"""The control surface of a show: the parameter tree and everything that reads or writes it.

Built from the show file as data: the parameters its parts offer (given by live/graph.py), the show's modulators
(`[mod]`), scenes and cues, tempo, the system actions (blackout, panic, cue keys), and the transports that carry
control in and out: OSC, OSCQuery and MIDI, opened in that order (OSCQuery announces the OSC port). A saved show
file is applied by `reload()` without stopping; a transport whose settings changed is reopened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from live.control import learned_map
from live.control.attract import Attract
from live.control.learned_map import LearnedMap
from live.control.midi import MidiControl
from live.control.modulation import Modulator
from live.control.osc import OscServer
from live.control.oscquery import OscQueryServer
from live.control.reader import ParamReader
from live.control.scenes import CueSection, SceneEngine
from live.control.schedule import Schedule
from live.control.tempo import Clock, TempoControl
from live.errors import LiveError
from live.params import Event, Param, ParamTree
from live.show import Show

BLACKOUT, PANIC, HUD = "/live/blackout", "/live/panic", "/live/hud"
TICK_S = 0.01  # control rate of fades, tempo sync and panic handling: 100 Hz
TRANSPORTS = ("osc", "oscquery", "midi")  # opened in this order (OSCQuery announces the OSC port)
#: Keys in the output window: a performer at the laptop can run the cue list without a controller.
KEYS = {" ": "go", "\x08": "back", "b": "blackout", "p": "panic", "h": "hud"}


def apply_params(tree: ParamTree, show: Show, values: dict) -> None:
    for address, value in values.items():
        try:
            tree.set(address, value, "show")
        except KeyError:
            raise LiveError(f"{show.path}: [params] '{address}' is not a parameter of this show",
                            "run `live params` for the list of addresses") from None
        except ValueError as err:
            raise LiveError(f"{show.path}: [params] {err}", "use a value of the parameter's type and range") from None


def _modulators(show: Show, tree: ParamTree, clock: Clock) -> tuple[Modulator, ...]:
    try:
        return tuple(Modulator(name, spec, tree, clock) for name, spec in show.mod.items())
    except ValueError as err:
        raise LiveError(f"{show.path}: {err}", "fix that key of the [mod] table (`live params` lists the "
                                               "addresses)") from None


def _checked_tree(show: Show, params: list[Param], events: list[Event], clock: Clock) -> ParamTree:
    """A tree of `params` at the show's starting values, its modulators and scenes checked against it."""
    tree = ParamTree(params, events)
    apply_params(tree, show, show.params)
    for modulator in _modulators(show, tree, clock):
        modulator.close()
    learned_map.check(show, tree)
    problems = SceneEngine.check(tree, show.scenes, show.cues)
    if problems:
        raise LiveError(f"{show.path}: " + "; ".join(problems), "fix the scene or cue in the show file")
    show.attract.check(show.path, tree, show.scenes, show.watch.enabled)
    for key, scene in show.schedule.scenes():
        if scene not in show.scenes:
            raise LiveError(f"{show.path}: {key} names scene '{scene}', which this show does not have (scenes: "
                            f"{', '.join(show.scenes) or 'none'})", "add a [scenes.NAME] table or name another scene")
    return tree


class ControlSurface:
    """The tree plus scenes, tempo, modulators and transports of one running show; a part (live/parts.py)."""

    @staticmethod
    def params(show: Show) -> tuple[list[Param], list[Event]]:
        """The parameters and events of the show's control sections: tempo, scenes and cues, modulators."""
        tempo_params, tempo_events = TempoControl.params(show.tempo.bpm)
        scene_params, scene_events = SceneEngine.params(show.scenes, len(show.cues))
        mod_params = [p for name, spec in show.mod.items() for p in Modulator.params(name, spec)]
        map_params, map_events = LearnedMap.params(show.map)
        return [*tempo_params, *scene_params, *mod_params, *map_params], [*tempo_events, *scene_events, *map_events]

    def __init__(self, show: Show, params: list[Param], events: list[Event],
                 say: Callable[[str], None] = print) -> None:
        self.show, self.say = show, say
        self.clock = Clock(show.tempo.bpm, show.tempo.beats_per_bar)
        self.tree = _checked_tree(show, params, events, self.clock)
        self._modulators = _modulators(show, self.tree, self.clock)
        self.scenes = SceneEngine(self.tree, show.scenes, show.cues, self.clock) if show.scenes else None
        self.tempo = TempoControl(self.tree, self.clock)
        self.learned = LearnedMap(show, self.tree, say)
        self.schedule, self.attract = self._unattended(show)
        self._panic = self.tree.listen(PANIC)
        self.osc: OscServer | None = None
        self.oscquery: OscQueryServer | None = None
        self.midi: MidiControl | None = None
        #: each part's one-line status, for /live/status (the player sets it to the graph's parts)
        self.parts_status: Callable[[], list[str]] = list
        self.last_error = ""  # the control thread's last failure, said once
        self._lock = threading.Lock()  # scenes and tempo swap on reload while the thread ticks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    def _unattended(self, show: Show) -> tuple[Schedule | None, Attract | None]:
        """The show's opening hours and attract mode, where it has them."""
        def goto(scene: str, fade: bool) -> str:  # self.scenes is replaced on reload: looked up at each call
            if not self.scenes:
                return "no scenes in this show"
            return self.scenes.goto(scene) if fade else self.scenes.recall(scene, CueSection(scene=scene, fade=0))

        schedule = Schedule(show.schedule, self.tree, goto, self.say) if show.schedule.enabled else None
        rests = lambda: schedule is not None and schedule.mode == "rest"  # noqa: E731
        attract = Attract(show.attract, self.tree, goto, self.say, rests) if show.attract.enabled else None
        return schedule, attract

    def _tick_unattended(self, now: float) -> None:
        """The schedule, then attract mode, which re-applies its state at a boundary of the schedule."""
        boundary = self.schedule is not None and self.schedule.tick(now)
        if self.attract:
            if boundary and self.schedule.mode == "play":  # a scene the schedule names holds until its end
                self.attract.apply()
            self.attract.tick(now)

    def modulators(self) -> tuple[Modulator, ...]:
        return self._modulators

    def reader(self) -> ParamReader:
        """A smoothed, modulated view of the tree for one consumer thread."""
        return ParamReader(self.tree, self.modulators)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def open(self) -> str:
        """Start the control thread and open the transports; LiveError (naming the port) if one cannot open."""
        lines = []
        if self.show.tempo.source == "link":
            link = self.clock.follow_link()
            lines.append(f"Tempo: Ableton Link at {link.bpm:.1f} bpm, {link.peers} peer(s)")
        self._tick_unattended(time.perf_counter())  # a show that opens in its rest hours shows no picture at all
        self._thread.start()
        lines.append(self.learned.open())
        for section in TRANSPORTS:
            lines.append(self._open_transport(section, self.show))
        return "\n".join(line for line in lines if line)

    def _open_transport(self, section: str, show: Show) -> str:
        """Open the show's OSC, OSCQuery or MIDI (if enabled) and say where; LiveError if it cannot."""
        if section == "osc" and show.osc.enabled:
            self.osc = OscServer.from_section(self.tree, show.osc, system=self.system_handlers())
            self.osc.parts_status = lambda: self.parts_status()
            return self.osc.open()
        if section == "oscquery" and show.oscquery.enabled:
            self.oscquery = OscQueryServer.from_section(self.tree, show.oscquery,
                                                        self.osc.port if self.osc else show.osc.port,
                                                        osc_host=show.osc.host)
            return self.oscquery.open()
        if section == "midi" and show.midi.enabled:
            learned = show.resolve_inside(show.midi.learn_file, "[midi] learn_file") if show.midi.learn_file else None
            clock = self.clock if show.tempo.source == "midi" else None
            self.midi = MidiControl(self.tree, show.midi, clock, learned, say=self.say)
            return self.midi.open()
        return ""

    def close(self) -> None:
        for section in reversed(TRANSPORTS):
            transport = getattr(self, section)
            if transport is not None:
                transport.close()
                setattr(self, section, None)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self.learned.close()
        self.clock.close()

    def stats(self) -> dict[str, Any]:
        return {section: getattr(self, section).stats() for section in TRANSPORTS if getattr(self, section)}

    def status(self) -> str:
        """OSC and MIDI health: what a performer checks when a controller seems ignored."""
        lines = []
        if self.osc:
            counts = self.osc.stats()
            superseded = f", {counts['superseded']} superseded" if counts.get("superseded") else ""
            lines.append(f"OSC {counts.get('applied', 0)} applied{superseded}, {counts.get('rejected', 0)} rejected")
            if counts.get("last_problem"):
                lines.append(f"  {str(counts['last_problem'])[:70]}")
        if self.midi:
            counts = self.midi.stats()
            line = f"MIDI {counts.get('in', 0)} in, {counts.get('applied', 0)} applied"
            if counts.get("missing_inputs"):
                line += f", waiting for {', '.join(counts['missing_inputs'])}"
            if counts.get("learning"):
                line += f", LEARN {counts['learning']}: move a control"
            lines.append(line)
        if self.learned.enabled:
            lines.append(self.learned.status())
        if self.last_error:
            lines.append(f"control: {self.last_error[:60]}")
        return "\n".join(lines)

    def _run(self) -> None:
        """One thread at control rate: panic, tempo sync, scene fades. A failure is counted, never fatal."""
        while not self._stop.wait(TICK_S):
            try:
                with self._lock:
                    if self._panic:
                        self._panic.clear()
                        self._calm()
                    self.tempo.tick()
                    now = time.perf_counter()
                    self._tick_unattended(now)
                    if self.scenes:
                        self.scenes.tick(now)
            except Exception as err:  # e.g. a scene value a reload made invalid: keep ticking, say it once
                if str(err) != self.last_error:
                    self.last_error = str(err)
                    self.say(f"Control: {err}")

    # --- system actions (OSC /live/*, keyboard) --------------------------------------------------------

    def go(self) -> str:
        return self.scenes.go() if self.scenes else "no scenes in this show"

    def back(self) -> str:
        return self.scenes.back() if self.scenes else "no scenes in this show"

    def goto(self, cue: int | str) -> str:
        """Cue number (1-based, as shown to people) or scene name."""
        if not self.scenes:
            return "no scenes in this show"
        return self.scenes.goto(cue - 1 if isinstance(cue, int) else cue)

    def blackout(self, on: bool) -> None:
        self.tree.set(BLACKOUT, on, "system")

    def panic(self) -> None:
        """Every note off (the synth hears /live/panic), fades stopped, blackout off: from any thread."""
        self.tree.emit(PANIC)

    def _calm(self) -> None:
        if self.scenes:
            self.scenes.stop_fade()
        self.tree.set(BLACKOUT, False, "system")

    def key(self, key: str) -> None:
        """A key pressed in the output window (KEYS): cue go/back, blackout, panic, HUD."""
        action = KEYS.get(key)
        if action == "go":
            self.say(f"Cue: {self.go()}")
        elif action == "back":
            self.say(f"Cue: {self.back()}")
        elif action == "blackout":
            self.blackout(not self.tree.get(BLACKOUT))
        elif action == "panic":
            self.panic()
        elif action == "hud":
            self.tree.set(HUD, not self.tree.get(HUD), "keyboard")

    def system_handlers(self) -> dict:
        """OSC's /live/* actions that are not parameters or events of the tree; each replies to its sender."""
        def cue(action):
            def handle(args: tuple, sender: str) -> list:
                try:
                    return [("/live/scene", [action(*args)])]
                except (ValueError, TypeError) as err:
                    return [("/live/error", [str(err)])]
            return handle

        return {"/live/scene/go": cue(self.go), "/live/scene/back": cue(self.back),
                "/live/scene/goto": cue(lambda target: self.goto(target if isinstance(target, str) else int(target))),
                "/live/learn": self._learn, "/live/learn/state": self._learn_state,
                learned_map.STATE: lambda args, sender: self.learned.state()}

    def _learn(self, args: tuple, sender: str) -> list:
        """/live/learn s ADDRESS: the next MIDI control moved binds to ADDRESS (no argument: stop learning)."""
        if not self.midi:
            return [("/live/error", ["MIDI learn: this show has no MIDI ([midi] enabled = false)"])]
        if not args:
            self.midi.cancel_learn()
            return [("/live/learn/state", ["idle"])]
        try:
            self.midi.learn(str(args[0]))
        except LiveError as err:
            return [("/live/error", [str(err)])]
        self.say(f"MIDI learn: move the control for {args[0]}")
        return self._learn_state((), sender)

    def _learn_state(self, args: tuple, sender: str) -> list:
        if not self.midi:
            return [("/live/learn/state", ["off"])]
        if self.midi.learning:
            return [("/live/learn/state", [f"learning {self.midi.learning}"])]
        return [("/live/learn/state", ["idle " + (self.midi.notices[-1] if self.midi.notices else "")])]

    # --- hot reload ------------------------------------------------------------------------------------

    def reload(self, show: Show, params: list[Param], events: list[Event]) -> list[str]:
        """Apply a re-saved show: parameters, controls, modulators, scenes, cues and tempo change in place, at
        once; values the file did not change keep their live state; a transport whose settings changed is
        reopened. Raises LiveError (and changes nothing) if the new show is invalid. Returns what changed."""
        _checked_tree(show, params, events, self.clock)
        old = self.show
        changed = {a: v for a, v in show.params.items() if old.params.get(a) != v}
        with self._lock:
            for old_part in (*self._modulators, self.scenes):
                if old_part:
                    old_part.close()
            self.tree.reconfigure(params, events)
            self.tree.update(changed, "show")
            self._modulators = _modulators(show, self.tree, self.clock)
            self.scenes = SceneEngine(self.tree, show.scenes, show.cues, self.clock) if show.scenes else None
            if show.tempo.bpm != old.tempo.bpm:
                self.tree.set("/tempo/bpm", show.tempo.bpm, "show")
            if (show.schedule, show.attract) != (old.schedule, old.attract):
                self.schedule, self.attract = self._unattended(show)
        show, notes = self._reopen_transports(old, show)
        if show.map != old.map:  # a new [map]: its examples and mapping load from the files it names
            self.learned.close()
            self.learned = LearnedMap(show, self.tree, self.say)
            notes.append(self.learned.open() or "[map] off")
        self.show = show
        notes = ([f"{len(changed)} value(s) changed"] if changed else []) + notes
        notes += [f"[{name}] applied" for name in ("schedule", "attract") if getattr(show, name) != getattr(old, name)]
        if show.tempo.source != old.tempo.source:
            notes.append("[tempo] source changed: restart the show to apply it")
        return notes

    def _reopen_transports(self, old: Show, new: Show) -> tuple[Show, list[str]]:
        """Each changed [osc], [oscquery] or [midi] is closed and opened with its new settings. One that cannot
        open (a port taken) goes back to its old settings and says why; returns the show as it now runs."""
        changed = [s for s in TRANSPORTS if getattr(old, s) != getattr(new, s)
                   or (s == "oscquery" and old.osc != new.osc)]  # OSCQuery tells clients the OSC port
        notes = []
        for section in changed:
            current = getattr(self, section)
            if current is not None:
                current.close()
                setattr(self, section, None)
            try:
                self._open_transport(section, new)
                notes.append(f"[{section}] " + ("reopened" if getattr(new, section).enabled else "closed"))
            except LiveError as err:
                path = new.path
                new = new.model_copy(update={section: getattr(old, section)})
                new._path = path
                self.say(f"Show: [{section}] not applied: {err}")
                try:
                    self._open_transport(section, new)
                    notes.append(f"[{section}] kept as it was")
                except LiveError as again:  # the old settings no longer open either: play on without it
                    self.say(f"Show: [{section}] as it was does not open either: {again}")
                    notes.append(f"[{section}] off until the show restarts")
        return new, notes
