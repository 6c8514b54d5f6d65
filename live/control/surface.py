"""The control surface of a show: the parameter tree and everything that reads or writes it.

Built from the show file as data: the engines' parameters, the show's overrides (`[controls]`), modulators
(`[mod]`), scenes and cues, tempo, and the system controls (`/live/blackout`, `/live/panic`). The transports
(OSC, OSCQuery, MIDI) are opened by `open()`; a saved show file is applied by `reload()` without stopping.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from live.audio.engine import AudioEngine
from live.control.modulation import Modulator
from live.control.reader import ParamReader
from live.control.scenes import SceneEngine
from live.control.tempo import Clock, TempoControl
from live.errors import LiveError
from live.models.manifest import load_manifest
from live.params import Event, Param, ParamTree
from live.show import Show
from live.video.latent import latent_params
from live.video.stylize import video_params

BLACKOUT, PANIC, HUD = "/live/blackout", "/live/panic", "/live/hud"
TICK_S = 0.01  # control rate of fades, tempo sync and panic handling: 100 Hz


def show_params(show: Show) -> tuple[list[Param], list[Event]]:
    """Every parameter and event the show offers, with its `[controls]` overrides; nothing is opened."""
    manifest = load_manifest(show.resolve(show.video.model))
    layer = latent_params(load_manifest(show.resolve(show.video.latent))) if show.video.latent else []
    synth = load_manifest(show.resolve(show.audio.model))
    synth_params, synth_events = AudioEngine.params(synth.controls.get("latent_names", ()))
    tempo_params, tempo_events = TempoControl.params(show.tempo.bpm)
    scene_params, scene_events = SceneEngine.params(show.scenes, len(show.cues))
    params = [*video_params(manifest), *layer, *synth_params, *tempo_params, *scene_params,
              Param(BLACKOUT, "bool", False, doc="black video and silent audio, until set to 0"),
              Param(HUD, "bool", False, doc="show health (fps, latency, cue, tempo, rejected packets) over the "
                                            "window's picture; key h"),
              *(p for name, spec in show.mod.items() for p in Modulator.params(name, spec))]
    events = [*synth_events, *tempo_events, *scene_events,
              Event(PANIC, (), doc="every note off, fades stopped, blackout off: back to a safe state")]
    known = {p.address: p for p in params}
    for address, override in show.controls.items():
        if address not in known:
            raise LiveError(f"{show.path}: [controls] '{address}' is not a parameter of this show",
                            "run `live params` for the list of addresses")
        param = known[address]
        if not param.numeric and (override.curve != "linear" or override.smooth != "none"):
            raise LiveError(f"{show.path}: [controls] '{address}' is a {param.type}; curves and smoothing apply "
                            "to float and int parameters only", "remove curve/smooth for this address")
        changes = override.model_dump(exclude_none=True)
        known[address] = dataclasses.replace(param, **changes)
    return list(known.values()), events


def build_tree(show: Show) -> ParamTree:
    """The show's tree at its starting values (`[params]`); LiveError naming the key for a bad value."""
    tree = ParamTree(*show_params(show))
    apply_params(tree, show, show.params)
    return tree


def apply_params(tree: ParamTree, show: Show, values: dict) -> None:
    for address, value in values.items():
        try:
            tree.set(address, value, "show")
        except KeyError:
            raise LiveError(f"{show.path}: [params] '{address}' is not a parameter of this show",
                            "run `live params` for the list of addresses") from None
        except ValueError as err:
            raise LiveError(f"{show.path}: [params] {err}", "use a value of the parameter's type and range") from None


def check(show: Show) -> list[str]:
    """Every problem `live check` can find without opening a device: manifests, addresses, values, scenes."""
    try:
        tree = build_tree(show)
        _modulators(show, tree)
    except LiveError as err:
        return [str(err)]
    return [f"{show.path}: {problem}" for problem in SceneEngine.check(tree, show.scenes, show.cues)]


def _modulators(show: Show, tree: ParamTree, clock: Clock | None = None) -> tuple[Modulator, ...]:
    clock = clock or Clock(show.tempo.bpm, show.tempo.beats_per_bar)
    try:
        return tuple(Modulator(name, spec, tree, clock) for name, spec in show.mod.items())
    except ValueError as err:
        raise LiveError(f"{show.path}: {err}", "point the modulator at a float or int parameter") from None


class ControlSurface:
    """The tree plus scenes, tempo and modulators of one running show."""

    def __init__(self, show: Show, say: Callable[[str], None] = print) -> None:
        self.show, self.say = show, say
        self.clock = Clock(show.tempo.bpm, show.tempo.beats_per_bar)
        self.tree = build_tree(show)
        self._modulators = _modulators(show, self.tree, self.clock)
        problems = SceneEngine.check(self.tree, show.scenes, show.cues)
        if problems:
            raise LiveError(f"{show.path}: " + "; ".join(problems), "fix the scene or cue in the show file")
        self.scenes = SceneEngine(self.tree, show.scenes, show.cues, self.clock) if show.scenes else None
        self.tempo = TempoControl(self.tree, self.clock)
        self._panic = self.tree.listen(PANIC)
        self.last_error = ""  # the control thread's last failure, said once
        self._lock = threading.Lock()  # scenes and tempo swap on reload while the thread ticks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    def modulators(self) -> tuple[Modulator, ...]:
        return self._modulators

    def reader(self) -> ParamReader:
        """A smoothed, modulated view of the tree for one consumer thread."""
        return ParamReader(self.tree, self.modulators)

    def open(self) -> None:
        if self.show.tempo.source == "link":
            link = self.clock.follow_link()
            self.say(f"Tempo: Ableton Link at {link.bpm:.1f} bpm, {link.peers} peer(s)")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self.clock.close()

    def _run(self) -> None:
        """One thread at control rate: panic, tempo sync, scene fades. A failure is counted, never fatal."""
        while not self._stop.wait(TICK_S):
            try:
                with self._lock:
                    if self._panic:
                        self._panic.clear()
                        self._calm()
                    self.tempo.tick()
                    if self.scenes:
                        self.scenes.tick(time.perf_counter())
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

    # --- hot reload ------------------------------------------------------------------------------------

    def reload(self, show: Show) -> list[str]:
        """Apply a re-saved show: parameters, controls, modulators, scenes, cues and tempo change in place, at
        once; values the file did not change keep their live state. Raises LiveError (and changes nothing) if
        the new show is invalid. Returns what changed, and what needs a restart. Devices and transports are the
        player's to reopen."""
        params, events = show_params(show)
        trial = ParamTree(params, events)
        apply_params(trial, show, show.params)
        _modulators(show, trial, self.clock)  # validates targets and triggers against the new tree
        problems = SceneEngine.check(trial, show.scenes, show.cues)
        if problems:
            raise LiveError(f"{show.path}: " + "; ".join(problems), "fix the scene or cue in the show file")
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
        self.show = show
        notes = [f"{len(changed)} value(s) changed"] if changed else []
        if show.tempo.source != old.tempo.source:
            notes.append("[tempo] source changed: restart the show to apply it")
        return notes
