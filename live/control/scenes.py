"""Scenes and cues: named sets of parameter values, recalled with timed, curved crossfades, in a cue list.

A scene is data from the show file (`[scenes.<name>]`, address = value). A cue says which scene, how long the
fade lasts (seconds or beats), its curve, and whether it waits for the next beat or bar. Go/back/goto move
through the cue list; `/scene/morph` blends any two scenes continuously from a fader. Numbers glide; enums and
booleans switch when the fade starts. A parameter the performer touches during a fade leaves the fade: the hand
wins. The surface's control thread calls `tick()` at 100 Hz; fades write the tree with the source "scene".
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from live.control.tempo import Clock
from live.params import Event, Param, ParamTree, Value

SOURCE = "scene"


class CueSection(BaseModel):
    """One `[[cues]]` entry in a show file."""

    model_config = ConfigDict(extra="forbid")
    scene: str
    fade: float = Field(2.0, ge=0, le=3600, description="crossfade length")
    unit: Literal["s", "beats"] = "s"
    curve: Literal["linear", "s", "exp", "log"] = "s"
    quantise: Literal["none", "beat", "bar"] = Field("none", description="start on the next beat or bar")


def ease(curve: str, t: float) -> float:
    """Fade position 0..1 -> mix 0..1 for each cue curve."""
    t = min(max(t, 0.0), 1.0)
    if curve == "s":
        return t * t * (3 - 2 * t)
    if curve == "exp":
        return t * t
    if curve == "log":
        return 1 - (1 - t) ** 2
    return t


@dataclass
class _Fade:
    start: float  # perf_counter time the fade begins (later than now when quantised)
    seconds: float
    curve: str
    origin: dict[str, float]  # numeric starting values
    target: dict[str, Value]
    switched: bool = False  # enums and bools written


class SceneEngine:
    """Recalls scenes into the tree; go/back/goto through the cue list; morph between two scenes."""

    def __init__(self, tree: ParamTree, scenes: Mapping[str, Mapping[str, Value]], cues: list[CueSection],
                 clock: Clock) -> None:
        self.tree, self.clock = tree, clock
        self.scenes = {name: {a: tree.params[a].coerce(v) for a, v in values.items()}
                       for name, values in scenes.items()}
        self.cues = cues or [CueSection(scene=name) for name in self.scenes]
        self.position = -1  # index of the last cue gone to; -1 = before the first
        self._fade: _Fade | None = None
        self._lock = threading.Lock()
        self._morph_version = self._morph_key()
        self._events: deque = tree.listen("/scene/")

    @staticmethod
    def check(tree: ParamTree, scenes: Mapping[str, Mapping[str, Value]], cues: list[CueSection]) -> list[str]:
        """Every problem in the show's scenes and cues, as 'key: what is wrong' lines (empty = fine)."""
        problems = []
        for name, values in scenes.items():
            for address, value in values.items():
                if address not in tree.params:
                    problems.append(f"[scenes.{name}] '{address}' is not a parameter (see `live params`)")
                    continue
                try:
                    tree.params[address].coerce(value)
                except ValueError as err:
                    problems.append(f"[scenes.{name}] {err}")
        for i, cue in enumerate(cues):
            if cue.scene not in scenes:
                problems.append(f"[[cues]] #{i + 1}: scene '{cue.scene}' is not defined (scenes: "
                                f"{', '.join(scenes) or 'none'})")
        return problems

    @staticmethod
    def params(scenes: Mapping[str, Mapping[str, Value]], cues: int) -> tuple[list[Param], list[Event]]:
        """The scene controls every show has when it has scenes."""
        if not scenes:
            return [], []
        names = tuple(scenes)
        b = names[1] if len(names) > 1 else names[0]
        return ([Param("/scene/cue", "int", 0, 0, max(cues, 1), doc="cue number: writing it goes to that cue "
                       "(0 = none yet)"),
                 Param("/scene/a", "enum", names[0], 0, len(names) - 1, choices=names, doc="morph: scene at 0"),
                 Param("/scene/b", "enum", b, 0, len(names) - 1, choices=names, doc="morph: scene at 1"),
                 Param("/scene/morph", "float", 0.0, doc="blend from scene A to B; moving it writes the blend")],
                [Event("/scene/go", (), doc="next cue"), Event("/scene/back", (), doc="previous cue")])

    # --- cue list ----------------------------------------------------------------------------------------

    def go(self) -> str:
        """The next cue (the last one repeats at the end)."""
        return self.goto(min(self.position + 1, len(self.cues) - 1))

    def back(self) -> str:
        return self.goto(max(self.position - 1, 0))

    def goto(self, cue: int | str) -> str:
        """Go to cue `cue` (0-based index, or a scene name); returns a line saying what happens."""
        if isinstance(cue, str):
            matches = [i for i, c in enumerate(self.cues) if c.scene == cue]
            if not matches and cue in self.scenes:
                return self.recall(cue, CueSection(scene=cue))
            if not matches:
                raise ValueError(f"no cue or scene named '{cue}' (scenes: {', '.join(self.scenes)})")
            cue = matches[0]
        if not 0 <= cue < len(self.cues):
            raise ValueError(f"cue {cue + 1} does not exist (the list has {len(self.cues)})")
        self.position = cue
        if "/scene/cue" in self.tree.params:
            self.tree.set("/scene/cue", cue + 1, SOURCE)
        return self.recall(self.cues[cue].scene, self.cues[cue])

    def recall(self, scene: str, cue: CueSection) -> str:
        """Fade to `scene` as `cue` says."""
        now = time.perf_counter()
        grid = {"none": 0.0, "beat": 1.0, "bar": float(self.clock.beats_per_bar)}[cue.quantise]
        start = self.clock.next_boundary(now, grid) if grid else now
        seconds = cue.fade * 60.0 / self.clock.bpm if cue.unit == "beats" else cue.fade
        target = self.scenes[scene]
        values = self.tree.snapshot
        origin = {a: float(values[a]) for a, v in target.items() if self.tree.params[a].numeric}
        with self._lock:
            self._fade = _Fade(start, seconds, cue.curve, origin, dict(target))
        self._step(now)
        wait = f" on the next {cue.quantise}" if grid else ""
        return f"scene '{scene}': {cue.fade:g} {cue.unit} {cue.curve} fade{wait}"

    def close(self) -> None:
        self.tree.unlisten(self._events)

    def stop_fade(self) -> None:
        """Leave every parameter where the running fade has got it to."""
        with self._lock:
            self._fade = None

    @property
    def fading(self) -> bool:
        return self._fade is not None

    # --- control rate -------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Go/back events, /scene/cue and /scene/morph writes from others, then the running fade."""
        while self._events:
            address, _ = self._events.popleft()
            self.go() if address == "/scene/go" else self.back()
        self._watch_params()
        self._step(now)

    def _morph_key(self) -> int:
        return hash(tuple(self.tree.changed_at.get(a) for a in ("/scene/a", "/scene/b", "/scene/morph")))

    def _watch_params(self) -> None:
        """React to /scene/cue and /scene/morph written by someone else (OSC, MIDI, the UI)."""
        tree = self.tree
        if "/scene/cue" not in tree.params:
            return
        cue = int(tree.snapshot["/scene/cue"])
        if tree.written_by.get("/scene/cue", SOURCE) != SOURCE and cue - 1 != self.position and cue > 0:
            self.goto(cue - 1)
        key = self._morph_key()
        if key != self._morph_version:
            self._morph_version = key
            if tree.written_by.get("/scene/morph", SOURCE) != SOURCE:
                self.morph(str(tree.snapshot["/scene/a"]), str(tree.snapshot["/scene/b"]),
                           float(tree.snapshot["/scene/morph"]))

    def morph(self, a: str, b: str, x: float) -> None:
        """Write the blend of scenes a and b at x (0 = a, 1 = b) for every parameter either sets; a parameter
        only one of them sets keeps its current value on the other side."""
        sa, sb, values = self.scenes[a], self.scenes[b], self.tree.snapshot
        out: dict[str, Value] = {}
        for address in {**sa, **sb}:
            va, vb = sa.get(address, values[address]), sb.get(address, values[address])
            if self.tree.params[address].numeric:
                out[address] = float(va) + (float(vb) - float(va)) * x
            else:
                out[address] = va if x < 0.5 else vb
        with self._lock:
            self._fade = None  # the fader takes over from any running fade
        self.tree.update(out, SOURCE)

    def _step(self, now: float) -> None:
        with self._lock:
            fade = self._fade
            if fade is None or now < fade.start:
                return
            t = 1.0 if fade.seconds <= 0 else (now - fade.start) / fade.seconds
            tree = self.tree
            for address in list(fade.target):  # a hand on the control after the fade began: it leaves the fade
                if tree.written_by.get(address, SOURCE) != SOURCE and tree.changed_at.get(address, 0) > fade.start:
                    fade.target.pop(address)
                    fade.origin.pop(address, None)
            mix = ease(fade.curve, t)
            out: dict[str, Value] = {a: o + (float(fade.target[a]) - o) * mix for a, o in fade.origin.items()}
            if not fade.switched:
                out.update({a: v for a, v in fade.target.items() if a not in fade.origin})
                fade.switched = True
            if t >= 1.0:
                out.update(fade.target)
                self._fade = None
            if out:
                tree.update(out, SOURCE)
