"""One graph built from the show: every part constructed (nothing opened yet) and the parameters they offer.

`live params`, `live check`, `live bench` and the player all start from `build(show)`, so the parameter list and the
parts that answer it can never disagree. The frame path it wires, camera to projector:

    Capture (video/capture.py) -> Mailbox -> ChainThread (video/chain.py: style model, [[stages]], blackout;
    nothing but black while resting)
    -> Mailbox -> the player's output loop -> Outputs (video/output.py: [[outputs]] window, record, ...)

A saved show is applied by `Graph.reload`: a diff of the running graph against the one the new file builds. A new
style model, frame size or provider, and a new synth device or model, are opened beside the running ones on the swap
thread (`Swapper`), so the picture and the sound never wait for a model to load; the frame path changes over at a
frame boundary and the old part closes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import threading
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
from live.music.player import MusicPlayer
from live.params import Event, Param, ParamTree
from live.parts import BasePart, Part, close_in_reverse
from live.show import AudioSection, Show, VideoSection
from live.status_page import StatusPage
from live.video.analysis import VideoAnalysis
from live.video.capture import Capture
from live.video.chain import STAGES, Blackout, ChainThread, Stage
from live.video.frame import Frame
from live.video.output import SINKS, Outputs, output_sections
from live.video.styles import StyleFolder, predictor_of, show_bank
from live.video.stylize import Stylizer


#: [video] keys applied while playing by a swap (`Graph.reload`); of these, STYLE_KEYS need a new style stage.
VIDEO_SWAPPED = ("model", "backend", "providers", "threads", "style_scale", "width", "height")
STYLE_KEYS = ("model", "backend", "providers", "threads", "style_scale")
#: [audio] keys that still need a restart: a recording's sound track was opened at the show's sample rate.
AUDIO_RESTART = ("enabled", "samplerate")
#: How long the swap thread waits for the video chain to reach a frame boundary, and at most for a part it is
#: opening when the show closes.
CHANGE_S = 5.0
CLOSE_S = 5.0


def stylizer_of(show: Show) -> Stylizer:
    """The show's style model stage, from its `[video]` section (opens nothing)."""
    video = show.video
    return Stylizer(show.resolve(video.model), tuple(video.providers), video.threads, video.backend,
                    show_bank=show_bank(show), scale=video.style_scale)


def engine_of(show: Show, surface: ControlSurface, say: Callable[[str], None]) -> AudioEngine:
    """The show's synth from its `[audio]` section, steered by `surface` (opens nothing)."""
    a = show.audio
    return AudioEngine(surface.tree, show.resolve(a.model), a.device or None, a.samplerate, a.blocksize, a.voices,
                       a.pattern, surface.reader(), say, lead_ms=None if a.lead == "auto" else a.lead,
                       follow_input=a.follow_input)


def with_sections(show: Show, **sections) -> Show:
    """`show` with some sections replaced, still naming its file."""
    copy = show.model_copy(update=sections)
    copy._path = show.path
    return copy


def stages_of(show: Show) -> list[Stage]:
    """The video chain as the show lists it: `[[stages]]` routed "before-style" (in order), its style model, the
    other `[[stages]]` in order, then blackout."""
    style = stylizer_of(show)
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
    music_params, music_events = MusicPlayer.params(show.music) if show.music else ([], [])
    params += [*synth_params, *control_params, *AudioIn.params(show.audio_in),
               *VideoAnalysis.params(show.watch), *show.attract.params(), *music_params,
               Param(BLACKOUT, "bool", False, doc="black video and silent audio, until set to 0"),
               Param(REST, "bool", False, doc="rest: black video at 2 frames/s, silent audio, no models run (low "
                                              "CPU); set by [schedule] at its boundaries, or by hand until the next"),
               Param(HUD, "bool", False, doc="show health (fps, latency, cue, tempo, rejected packets) over the "
                                             "window's picture; key h")]
    events += [*synth_events, *control_events, *music_events,
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
    status: StatusPage | None = None  # [status]: the status page and /metrics (port 0: none)
    music: MusicPlayer | None = None  # [music]: generated notes, on the beat, to the synth and/or MIDI out
    say: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.swapper = Swapper(self)
        #: held while `show` and the tree change (a reload on the player's thread, a swap at a frame boundary)
        self._lock = threading.Lock()

    @property
    def tree(self) -> ParamTree:
        return self.surface.tree

    @staticmethod
    def part_names() -> tuple[str, ...]:
        """The graph's parts by name, in the order they open."""
        return ("surface", "audio_in", "watch", "capture", "chain", "styles", "audio", "music", "outputs",
                "swapper", "status")

    @property
    def parts(self) -> list[Part]:
        return [p for p in (getattr(self, name) for name in self.part_names()) if p is not None]

    def reload(self, new: Show) -> list[str]:
        """Apply a saved show while playing, as a diff against the running one; returns what changed. A new
        `[video]` model, size or provider and a new `[audio]` device or model go to the swap thread, which says
        when they play (or why not: then the running ones play on). A part whose settings changed in a way that
        needs a restart keeps running as it was, and so do its parameters (the tree is rebuilt from the parts
        really playing). Raises LiveError, changing nothing, if the new show is invalid."""
        with self._lock:
            old, notes = self.show, []
            swapped_audio = self.audio is not None and new.audio != old.audio and \
                all(getattr(new.audio, key) == getattr(old.audio, key) for key in AUDIO_RESTART)
            restart = [f"[{name}]" for name in ("audio", "audio_in", "stages", "outputs", "styles", "watch", "status",
                                                "music")
                       if getattr(new, name) != getattr(old, name) and not (name == "audio" and swapped_audio)]
            kept = {key: getattr(old.video, key) for key in ("source", *VIDEO_SWAPPED)}
            if new.video.model_copy(update=kept) != old.video:
                restart.insert(0, "[video]")
            swapped_video = any(getattr(new.video, key) != getattr(old.video, key) for key in VIDEO_SWAPPED)
            # what really plays: the new show's control sections over the running parts' settings
            playing = self.playing(new, video=old.video.model_copy(update={"source": new.video.source}))
            controls = None  # a show whose control sections fit the new model only: applied with it, at the change
            try:
                params, events = parameters(playing, self.chain.stages)
                notes += self.surface.reload(playing, params, events)
            except LiveError:
                if not swapped_video:
                    raise
                controls = new
                notes.append("the other sections wait for the new [video] model (they name what only it has)")
            if new.video.source != old.video.source:
                self.capture.switch(new.video.source)
                notes.append(f"[video] source now {new.video.source!r}")
            notes += [f"{section} changed: restart the show to apply it" for section in restart]
            self.show = self.surface.show
        video = old.video.model_copy(update={key: getattr(new.video, key) for key in VIDEO_SWAPPED})
        wanted = (video if swapped_video else None, new.audio if swapped_audio else None)
        if (swapped_video or swapped_audio) and self.swapper.want(*wanted, controls):
            notes += [f"[{name}] opening beside the running one" for name, section in zip(("video", "audio"), wanted)
                      if section is not None]
        return notes

    def playing(self, controls: Show, **parts) -> Show:
        """What plays: the control sections of `controls` over the running parts' settings (some replaced)."""
        running = {name: getattr(self.show, name) for name in ("video", "audio", "audio_in", "stages", "outputs",
                                                                "styles", "watch", "status", "music")}
        return with_sections(controls, **{**running, **parts})

    def swap_video(self, video: VideoSection, controls: Show | None = None) -> str:
        """On the swap thread: a new style stage (if the model or its settings changed) built, opened and run once
        beside the running one; then, at a frame boundary, the tree rebuilt for it (with the control sections of
        `controls`, a saved show's that name what only the new model has), the frame size changed and the stage
        played; then the old one closed. LiveError, the running stage playing on, if the new one cannot play (a
        missing, replaced or corrupt model) or its parameters do not fit the show."""
        show = self.show
        target = with_sections(show, video=video.model_copy(update={"source": show.video.source}))
        old_style = style = style_of(self.chain.stages)
        if any(getattr(video, key) != getattr(show.video, key) for key in STYLE_KEYS):
            style = stylizer_of(target)
            if (style.takes_vectors or old_style.takes_vectors) and \
                    (self.styles is None or not style.takes_vectors or predictor_of(target) != predictor_of(show)):
                raise LiveError(f"{show.path}: [video] model {video.model}: a model fed style vectors by another "
                                "predictor, or none, changes the show's style folder", "restart the show to apply it")
            try:
                opened = style.open()
                style.warm(video.width, video.height)
                self.swapper.check_open()
            except BaseException:
                style.close()
                raise
        stages = [style if stage is old_style else stage for stage in self.chain.stages]

        def apply() -> None:  # on the chain thread, between two frames
            with self._lock:
                playing = self.playing(controls or self.show,
                                       video=video.model_copy(update={"source": self.show.video.source}))
                params, events = parameters(playing, stages)
                self.surface.reload(playing, params, events)
                self.show = self.surface.show
                self.capture.resize(video.width, video.height)
                if self.styles is not None:
                    self.styles.stylizer = style  # pictures becoming styles now go to the model that plays

        try:
            gone = self.chain.swap(stages, apply, CHANGE_S)
        except BaseException:
            if style is not old_style:
                style.close()
            raise
        close_in_reverse(gone, self.say)
        size = f" at {video.width}x{video.height}"
        return f"[video] now plays {style.status()}{size}" + (f" ({opened})" if style is not old_style else "")

    def swap_audio(self, audio: AudioSection, replaced: Callable[[Part, Part], None]) -> str:
        """On the swap thread: a new synth engine opened beside the running one (its own render process), then
        played in its place and the old one closed; `replaced(old, new)` tells the player. Both sound for the
        moment they overlap; on a device change the new device starts as the old one is released, and a server
        or driver may leave a short gap in the sound. LiveError, the running engine playing on, if the new model
        cannot load or the new device is not there."""
        old = self.audio
        assert old is not None
        engine = engine_of(with_sections(self.show, audio=audio), self.surface, self.say)
        line = engine.open()
        try:
            self.swapper.check_open()
            if engine.stats()["device"] is None and (audio.device != "" or old.stats()["device"] is not None):
                what, _, fix = line.removeprefix("Audio: ").partition("; running silent — fix: ")
                raise LiveError(f"{self.show.path}: [audio] device {audio.device!r} did not open: {what}",
                                fix or "check the device with `live doctor`")
            with self._lock:
                playing = self.playing(self.show, audio=audio)
                params, events = parameters(playing, self.chain.stages)
                self.surface.reload(playing, params, events)
                self.show = self.surface.show
                engine.tap.follow(old.tap)
                self.audio = engine
        except BaseException:
            engine.close()
            raise
        replaced(old, engine)
        old.close()
        return f"[audio] now plays {Path(audio.model).stem}: {line.removeprefix('Audio: ')}"


def one_line(text: str) -> str:
    """`text` on one line (ONNX Runtime's messages span several)."""
    return " ".join(text.split())


class Swapper(BasePart):
    """The swap thread: opens a saved show's new style model or synth beside the running one, then changes over
    (`Graph.swap_video`, `Graph.swap_audio`), so loading never holds the picture or the sound. The newest save
    wins: one waiting is replaced by a newer one. What it says goes to `done` and `failed` (the player's: a
    failure is also shown in the HUD); `replaced(old, new)` tells the player which part it closes now."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.done: Callable[[str], None] = graph.say
        self.failed: Callable[[str], None] = graph.say
        self.replaced: Callable[[Part, Part], None] = lambda old, new: None
        self.swaps = 0
        self._wanted: tuple[VideoSection | None, AudioSection | None, Show | None] | None = None
        self._asked: tuple[VideoSection | None, AudioSection | None, Show | None] | None = None  # waiting or doing
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swap", daemon=True)

    def want(self, video: VideoSection | None, audio: AudioSection | None, controls: Show | None = None) -> bool:
        """Play these sections (None: as they are) once open, the new video with the control sections of
        `controls` if given (Graph.swap_video); False if exactly this is already on its way."""
        with self._lock:
            if (video, audio, controls) == self._asked:
                return False
            self._wanted = self._asked = (video, audio, controls)
        self._wake.set()
        return True

    def open(self) -> str:
        self._thread.start()
        return ""

    def check_open(self) -> None:
        """LiveError once the show is closing: a part opened meanwhile is closed, not played."""
        if self._stop.is_set():
            raise LiveError("the show closed while it opened", "")

    def close(self) -> None:
        """Stop, waiting up to CLOSE_S for a part being opened to be closed again (a model or a synth process
        still loading after that is left to a daemon thread and the end of the process)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=CLOSE_S)

    def stats(self) -> dict[str, int]:
        return {"swaps": self.swaps}

    def _run(self) -> None:
        while self._wake.wait() and not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                wanted, self._wanted = self._wanted, None
            if wanted is None:
                continue
            video, audio, controls = wanted
            graph = self.graph
            jobs = (("video", video, graph.show.video, lambda v: graph.swap_video(v, controls)),
                    ("audio", audio, graph.show.audio, lambda a: graph.swap_audio(a, self.replaced)))
            for name, section, playing, swap in jobs:
                if section is None or self._stop.is_set():
                    continue
                if name == "video" and section.model_copy(update={"source": playing.source}) == playing:
                    continue  # already plays (a later save asked for it again)
                if name == "audio" and section == playing:
                    continue
                try:
                    self.done(swap(section))
                    self.swaps += 1
                    return_freed_memory()
                except LiveError as err:
                    if self._stop.is_set():
                        break
                    self.failed(one_line(f"[{name}] not applied, the running one plays on: {err.what}; fix: "
                                         f"{err.fix}"))
                except Exception as err:  # anything a new part raises must leave the show playing
                    self.failed(one_line(f"[{name}] not applied, the running one plays on: {type(err).__name__}: "
                                         f"{err}"))
            with self._lock:
                if self._wanted is None:
                    self._asked = None  # a later save asking for the same again (after a failure) is tried again


def return_freed_memory() -> None:
    """Hand the memory a swapped-out model freed back to the system. glibc's malloc keeps freed memory for reuse, and
    a model's weights and ONNX Runtime's buffers, freed in a swap, rarely fit the next load's holes: 11 swaps of the
    gallery model (live soak --faults model, 6 minutes, a loaded 2-core VM) left the show process 74 MB larger
    without this, 20 MB with the trim alone, 8 MB with a full collection first (some of the old parts' objects are
    in reference cycles). The collection holds every Python thread for 30-100 ms, once per swap, in the swap thread:
    a frame or two at a swap the performer asked for, against memory that grows with every swap of a show running
    for weeks. A no-op trim where the C library has no malloc_trim (not glibc)."""
    gc.collect()
    if hasattr(_PROCESS, "malloc_trim"):
        _PROCESS.malloc_trim(0)


_PROCESS = ctypes.CDLL(None)  # the symbols the process has loaded (the C library's among them): no lookup at start


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
    audio = engine_of(show, surface, say) if show.audio.enabled else None
    sinks = [SINKS.get(section.kind)(section, show) for section in output_sections(show, record, window, say)]
    style = style_of(stages)
    styles = StyleFolder.from_show(show, style, surface.tree, say) if style.takes_vectors else None
    audio_in = None
    if show.audio_in.source != "":
        audio_in = AudioIn(show.audio_in, show.path.parent, surface.tree,
                           surface.clock if show.tempo.source == "audio" else None, say)
    status = StatusPage(show.status, say) if show.status.port else None
    music = MusicPlayer.from_show(show, surface.tree, surface.clock, say) if show.music else None
    return Graph(show, surface, capture, chain, audio, Outputs(sinks, say), captured, stylized, styles, audio_in,
                 watch, status, music, say)


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
    if show.music and show.music.mode != "off":
        manifests.append(show.resolve(show.music.model))
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
