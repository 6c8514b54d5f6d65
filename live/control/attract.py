"""Attract mode (`[attract]`): the idle scene while nobody is there, the active scene once someone is.

Presence is a parameter (by default the camera analysis's /in/video/presence, `[watch]`): at or above `threshold`
someone is there. The state changes only after it has held: `active_after` seconds of presence (a flicker of the
background is nobody), `idle_after` seconds without (a visitor standing still a moment has not left). A change
recalls its scene through the scene engine (the scene's cue fade, live/control/scenes.py) and is published as the
read-only /live/attract (1 active, 0 idle), so OSC feedback, OSCQuery and the HUD show it. Ticked by the control
thread (live/control/surface.py).

`idle = "rest"` rests the show while nobody is there (/live/rest: black, silent, no models run) and presence wakes
it, unless the schedule (live/control/schedule.py) is in its rest hours: the camera analysis keeps running while the
show rests, so the show can still see someone arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from live.control.schedule import REST
from live.errors import LiveError
from live.params import Param, ParamTree

STATE = "/live/attract"
SOURCE = "attract"
IDLE, ACTIVE = 0, 1


class AttractSection(BaseModel):
    """`[attract]`: switch between an idle (attract) scene and an active one on presence."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    source: str = Field("/in/video/presence", description="the parameter that says someone is there")
    threshold: float = Field(0.5, description="someone is there while source >= threshold")
    active: str = Field("", description="scene played while someone is there")
    idle: str = Field("", description="scene played while nobody is (the attract mode); \"rest\" = the show rests "
                                      "until someone comes")
    idle_after: float = Field(60.0, ge=0, le=86400, description="seconds without presence before going idle")
    active_after: float = Field(0.5, ge=0, le=3600, description="seconds of presence before going active")

    def params(self) -> list[Param]:
        if not self.enabled:
            return []
        return [Param(STATE, "float", 0.0, 0.0, 1.0, readonly=True,
                      doc=f"attract mode: 1 = someone is there (scene '{self.active}'), 0 = idle "
                          f"('{self.idle}')")]

    def check(self, path, tree: ParamTree, scenes: Mapping, watching: bool) -> None:
        """LiveError naming the key and the fix for an attract mode that cannot work in this show."""
        if not self.enabled:
            return
        if self.source.startswith("/in/video/") and not watching:
            raise LiveError(f"{path}: [attract] reads {self.source}, which [watch] publishes, but [watch] is off",
                            "set enabled = true under [watch], or give [attract] another source")
        param = tree.params.get(self.source)
        if param is None or not param.numeric:
            raise LiveError(f"{path}: [attract] source '{self.source}' is not a number parameter of this show",
                            "run `live params` for the list of addresses")
        for key in ("active", "idle"):
            name = getattr(self, key)
            if name not in scenes and not (key == "idle" and name == "rest"):
                raise LiveError(f"{path}: [attract] {key} = '{name}' is not a scene of this show (scenes: "
                                f"{', '.join(scenes) or 'none'})", f"name a [scenes.NAME] table as {key}"
                                + (' (or "rest")' if key == "idle" else ""))


class Attract:
    """The presence state machine; `tick(now)` at control rate."""

    def __init__(self, section: AttractSection, tree: ParamTree, goto: Callable[[str, bool], str],
                 say: Callable[[str], None] = print, schedule_rests: Callable[[], bool] = lambda: False) -> None:
        """`goto(scene, fade)` recalls a scene (with its cue's fade, or at once); `schedule_rests`: whether the
        schedule is in its rest hours now (then presence does not wake the show)."""
        self.section, self.tree, self.goto, self.say = section, tree, goto, say
        self.schedule_rests = schedule_rests
        self.state: int | None = None
        self._since: float | None = None  # when the presence began to disagree with the state

    def tick(self, now: float) -> None:
        s = self.section
        present = float(self.tree.snapshot.get(s.source, 0.0)) >= s.threshold
        want = ACTIVE if present else IDLE
        if self.state is None:  # the show starts idle, at once (no fade from the [params]): nobody is seen yet
            self._switch(IDLE, now, fade=False)
        if want == self.state:
            self._since = None
            return
        if self._since is None:
            self._since = now
        if now - self._since >= (s.active_after if want == ACTIVE else s.idle_after):
            self._switch(want, now)

    def _switch(self, state: int, now: float, fade: bool = True) -> None:
        self.state, self._since = state, None
        self.tree.measure({STATE: float(state)}, now)
        self.say(f"Attract: {'active' if state == ACTIVE else 'idle'}, {self.apply(fade)}")

    def apply(self, fade: bool = True) -> str:
        """Recall the state's scene, or rest / wake for `idle = "rest"`; also when the schedule has just changed its
        mode (its rest hours over, the show rests again if nobody is there). Returns what it did."""
        if self.state is None:
            return ""
        idle, resting = self.section.idle, self.schedule_rests()
        if self.state == IDLE and idle == "rest":
            self.tree.set(REST, True, SOURCE)
            return "resting"
        if idle == "rest" and not resting:
            self.tree.set(REST, False, SOURCE)
        return self.goto(self.section.active if self.state == ACTIVE else idle, fade)
