"""One graph built from the show: every part constructed (nothing opened yet) and the parameters they offer.

`live params`, `live check`, `live bench` and the player all start from `build(show)`, so the parameter list and the
parts that answer it can never disagree. The frame path it wires, camera to projector:

    Capture (video/capture.py) -> Mailbox -> ChainThread (video/chain.py: style model, [[stages]], blackout;
    nothing but black while resting)
    -> Mailbox -> the player's output loop -> Outputs (video/output.py: [[outputs]] window, record, ...)

A saved show is applied by `Graph.reload`: a diff of the running graph against the one the new file builds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from live.audio.engine import AudioEngine
from live.audio.listen import AudioIn
from live.control.schedule import REST
from live.control.surface import BLACKOUT, HUD, PANIC, ControlSurface
from live.errors import LiveError
from live.mailbox import Mailbox
from live.models.manifest import load_manifest
from live.params import Event, Param, ParamTree
from live.parts import Part
from live.show import Show
from live.video.analysis import VideoAnalysis
from live.video.capture import Capture
from live.video.chain import STAGES, Blackout, ChainThread, Stage
from live.video.frame import Frame
from live.video.output import SINKS, Outputs, output_sections
from live.video.styles import StyleFolder, show_bank
from live.video.stylize import Stylizer


def stages_of(show: Show) -> list[Stage]:
    """The video chain as the show lists it: `[[stages]]` routed "before-style" (in order), its style model, the
    other `[[stages]]` in order, then blackout."""
    video = show.video
    style = Stylizer(show.resolve(video.model), tuple(video.providers), video.threads, video.backend,
                     show_bank=show_bank(show), scale=video.style_scale)
    stages = [(getattr(section, "route", "after-style"), STAGES.get(section.kind)(section, show))
              for section in show.stages]
    return [*(s for route, s in stages if route == "before-style"), style,
            *(s for route, s in stages if route != "before-style"), Blackout()]


def style_of(stages: Sequence[Stage]) -> Stylizer:
    """The show's style model among its stages (stages routed before the style come first)."""
    return next(stage for stage in stages if isinstance(stage, Stylizer))


def parameters(show: Show, stages: list[Stage]) -> tuple[list[Param], list[Event]]:
    """Every parameter and event the show offers, from its parts and its control sections, with `[controls]`
    overrides applied; LiveError naming the key for an override of nothing."""
    params, events = [], []
    for stage in stages:
        stage_params, stage_events = stage.params()
        params += stage_params
        events += stage_events
    synth = load_manifest(show.resolve(show.audio.model))
    synth_params, synth_events = AudioEngine.params(synth.controls.get("latent_names", ()))
    control_params, control_events = ControlSurface.params(show)
    params += [*synth_params, *control_params, *AudioIn.params(show.audio_in),
               *VideoAnalysis.params(show.watch), *show.attract.params(),
               Param(BLACKOUT, "bool", False, doc="black video and silent audio, until set to 0"),
               Param(REST, "bool", False, doc="rest: black video at 2 frames/s, silent audio, no models run (low "
                                              "CPU); set by [schedule] at its boundaries, or by hand until the next"),
               Param(HUD, "bool", False, doc="show health (fps, latency, cue, tempo, rejected packets) over the "
                                             "window's picture; key h")]
    events += [*synth_events, *control_events,
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
        known[address] = dataclasses.replace(param, **override.model_dump(exclude_none=True))
    return list(known.values()), events


@dataclass
class Graph:
    """A show's parts, constructed in the order they open; the player opens them and closes them in reverse."""

    show: Show
    surface: ControlSurface  # the parameter tree, modulation, scenes, tempo, and the OSC/OSCQuery/MIDI transports
    capture: Capture
    chain: ChainThread
    audio: AudioEngine | None
    outputs: Outputs
    captured: Mailbox[Frame]
    stylized: Mailbox[Frame]
    styles: StyleFolder | None = None  # pictures becoming styles while the show plays (a style-vector model's)
    audio_in: AudioIn | None = None  # [audio_in]: the input analysed into /in/audio/*
    watch: VideoAnalysis | None = None  # [watch]: the camera analysed off the frame path, as /in/video/*

    @property
    def tree(self) -> ParamTree:
        return self.surface.tree

    @property
    def parts(self) -> list[Part]:
        return [p for p in (self.surface, self.audio_in, self.watch, self.capture, self.chain, self.styles,
                            self.audio, self.outputs) if p is not None]

    def reload(self, new: Show) -> list[str]:
        """Apply a saved show while playing, as a diff against the running one; returns what changed. A part whose
        settings changed in a way that needs a restart keeps running as it was, and so do its parameters (the tree
        is rebuilt from the parts really playing). Raises LiveError, changing nothing, if the new show is invalid."""
        old, notes = self.show, []
        restart = [f"[{name}]" for name in ("audio", "audio_in", "stages", "outputs", "styles", "watch")
                   if getattr(new, name) != getattr(old, name)]
        if new.video.model_copy(update={"source": old.video.source}) != old.video:
            restart.insert(0, "[video]")
        # what really plays: the new show's control sections over the running parts' settings
        playing = new.model_copy(update={"video": old.video.model_copy(update={"source": new.video.source}),
                                         "audio": old.audio, "audio_in": old.audio_in, "stages": old.stages,
                                         "outputs": old.outputs, "styles": old.styles, "watch": old.watch})
        playing._path = new.path
        params, events = parameters(playing, self.chain.stages)
        notes += self.surface.reload(playing, params, events)
        if new.video.source != old.video.source:
            self.capture.switch(new.video.source)
            notes.append(f"[video] source now {new.video.source!r}")
        notes += [f"{section} changed: restart the show to apply it" for section in restart]
        self.show = self.surface.show
        return notes


def build(show: Show, source: str | int | None = None, record: Path | None = None, window: bool | None = None,
          say: Callable[[str], None] = print) -> Graph:
    """Construct every part of `show`: LiveError (naming the file or key) for anything the show gets wrong.
    `source`, `record` and `window` are the command line's overrides (`--source`, `--record`, `--no-window`)."""
    video = show.video
    stages = stages_of(show)
    params, events = parameters(show, stages)
    surface = ControlSurface(show, params, events, say)
    captured: Mailbox[Frame] = Mailbox()
    stylized: Mailbox[Frame] = Mailbox()
    capture = Capture(video.source if source is None else source, video.width, video.height, video.fps, captured,
                      say)
    watch = VideoAnalysis.from_show(show, surface.tree, stages, say)
    chain = ChainThread(stages, surface.reader(), captured, stylized, say, taps=[watch.offer] if watch else [])
    audio = None
    if show.audio.enabled:
        a = show.audio
        audio = AudioEngine(surface.tree, show.resolve(a.model), a.device or None, a.samplerate, a.blocksize,
                            a.voices, a.pattern, surface.reader(), say,
                            lead_ms=None if a.lead == "auto" else a.lead, follow_input=a.follow_input)
    sinks = [SINKS.get(section.kind)(section, show) for section in output_sections(show, record, window, say)]
    style = style_of(stages)
    styles = StyleFolder.from_show(show, style, surface.tree, say) if style.takes_vectors else None
    audio_in = None
    if show.audio_in.source != "":
        audio_in = AudioIn(show.audio_in, show.path.parent, surface.tree,
                           surface.clock if show.tempo.source == "audio" else None, say)
    return Graph(show, surface, capture, chain, audio, Outputs(sinks, say), captured, stylized, styles, audio_in,
                 watch)


def check(show: Show) -> list[str]:
    """Every problem `live check` can find without opening a device: manifests and their models (each parsed and
    checked by ONNX, not just hashed), addresses, values, modulators, scenes and cues."""
    import onnx  # only here: parsing a whole model is for checking, not for playing

    try:
        graph = build(show, window=False, say=lambda _: None)
    except LiveError as err:
        return [str(err)]
    manifests = [show.resolve(show.video.model), *(show.resolve(s.model) for s in show.stages if hasattr(s, "model"))]
    if show.audio.enabled:
        manifests.append(show.resolve(show.audio.model))
    watch = show.watch  # its models are optional while playing (missing: said, at rest); checking says so too
    manifests += [show.resolve(model) for model in (watch.face_model, watch.mask_model) if watch.enabled and model]
    problems = []
    for manifest in manifests:
        try:
            model = load_manifest(manifest).onnx_path
        except LiveError as err:
            problems.append(f"{err.what}; fix: {err.fix}")
            continue
        try:
            onnx.checker.check_model(onnx.load(str(model)))
        except Exception as err:  # onnx raises protobuf DecodeError, ValidationError, ...: all mean "not a model"
            problems.append(f"{model} is not a valid ONNX model ({' '.join(str(err).split())[:200]}); fix: rebuild "
                            "or re-export it (`make models` for the shipped ones)")
    graph.surface.close()  # its clock may hold a Link session
    return problems
