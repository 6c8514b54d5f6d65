"""Show files: TOML, validated before anything opens, with errors that name the file, key and line.

A show is data: which source, which model, which outputs, which ports, and the starting value of any parameter.
Paths in a show are relative to the show file, so a show folder can be copied anywhere.
"""

from __future__ import annotations

import re
import time
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, WrapValidator, field_validator

from live.audio.listen import AudioInSection
from live.control.attract import AttractSection
from live.control.learned_map import MapSection
from live.control.midi_map import MidiSection
from live.control.modulation import ModulatorSection
from live.control.osc import OscSection
from live.control.oscquery import OscQuerySection
from live.control.scenes import CueSection
from live.control.schedule import ScheduleSection
from live.control.tempo import TempoSection
from live.errors import LiveError
from live.music.player import MusicSection
from live.params import CLIP_MODES, CURVES, SMOOTHING
from live.parts import KindSection
from live.status_page import StatusSection
from live.video.analysis import WatchSection
from live.video.chain import STAGES
from live.video.output import SINKS, WindowSection

DEFAULT_SHOW = Path(__file__).resolve().parent.parent / "show_configs" / "default.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoSection(_Section):
    source: int | str = Field(0, description="camera index, video file, URL, or 'builtin'")
    width: int = Field(640, ge=64, le=7680)
    height: int = Field(480, ge=48, le=4320)
    fps: float = Field(30.0, gt=0, le=240)
    model: str = "../exported_models/styles-procedural.json"
    backend: str = Field("onnxruntime", description="inference backend that runs the models")
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = ["tensorrt", "cuda", "cpu"]
    threads: int = Field(0, ge=0, le=64, description="ONNX Runtime intra-op threads; 0 = ORT's choice")
    style_scale: float = Field(1.0, ge=0.05, le=1.0, description="the style model runs at this fraction of each "
                               "side, then edge-aware upsampling (the CPU tier); 1 = full size")


class AudioSection(_Section):
    enabled: bool = True
    device: int | str = ""
    samplerate: Literal[44100, 48000, 96000] = 48000
    blocksize: Literal[64, 128, 256, 512, 1024] = 128
    model: str = "../exported_models/synth-decoder.json"
    voices: int = Field(8, ge=1, le=64)
    pattern: list[int] = Field(default_factory=lambda: [45, 52, 57, 60, 64, 57, 52, 48],
                               description="the arpeggio /synth/auto plays, in eighth notes at the show's tempo")
    lead: str | float = Field(
        "auto", description="how far ahead of the device the synth renders, which covers stalls without delaying "
                            "notes: \"auto\" adapts to what the machine holds (3 to 8 blocks); milliseconds fix "
                            "it, rounded up to whole blocks (less CPU for notes, but a machine that stalls longer "
                            "is heard as a dropout)")

    @field_validator("lead")
    @classmethod
    def _lead(cls, value: str | float) -> str | float:
        if value == "auto" or (isinstance(value, (int, float)) and 0 < value <= 100):
            return value
        raise ValueError(f'{value!r} is neither "auto" nor milliseconds in (0, 100], e.g. lead = 5.3')

    follow_input: int | str = Field(
        "", description="timbre transfer: the input device (PortAudio name or index, e.g. \"system\" under JACK) "
                        "whose pitch and loudness a voice of the synth follows, as much as /synth/follow says; "
                        "\"\" = none")


class StylesSection(_Section):
    """`[styles]`: where the show keeps its own styles (live/video/styles.py)."""

    folder: str = Field("styles", description="the show's style bank, thumbnails and pictures: a picture dropped "
                                              "in becomes a style while the show plays")


class ControlSection(_Section):
    """`[controls."/address"]`: how one parameter responds, overriding its built-in behaviour."""

    curve: Literal[CURVES] = Field("linear", description="controller position -> value: " + ", ".join(CURVES))
    smooth: Literal[SMOOTHING] = Field("none", description="glide towards new values: " + ", ".join(SMOOTHING))
    smooth_s: float = Field(0.0, ge=0, le=60, description="slew: seconds for the full range; euro: time constant")
    clip: Literal[CLIP_MODES] = Field("clip", description="out-of-range values: " + ", ".join(CLIP_MODES))
    unit: str | None = None


class Show(_Section):
    """A whole show file."""

    name: str = "show"
    video: VideoSection = Field(default_factory=VideoSection)
    stages: list[Annotated[KindSection, WrapValidator(STAGES.validate)]] = Field(default_factory=list)
    outputs: list[Annotated[KindSection, WrapValidator(SINKS.validate)]] = Field(
        default_factory=lambda: [WindowSection(kind="window")])
    audio: AudioSection = Field(default_factory=AudioSection)
    audio_in: AudioInSection = Field(default_factory=AudioInSection)
    styles: StylesSection = Field(default_factory=StylesSection)
    osc: OscSection = Field(default_factory=OscSection)
    oscquery: OscQuerySection = Field(default_factory=OscQuerySection)
    midi: MidiSection = Field(default_factory=MidiSection)
    tempo: TempoSection = Field(default_factory=TempoSection)
    watch: WatchSection = Field(default_factory=WatchSection)
    status: StatusSection = Field(default_factory=StatusSection)
    attract: AttractSection = Field(default_factory=AttractSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    params: dict[str, float | int | bool | str] = Field(default_factory=dict)
    controls: dict[str, ControlSection] = Field(default_factory=dict)
    mod: dict[str, ModulatorSection] = Field(default_factory=dict)
    scenes: dict[str, dict[str, float | int | bool | str]] = Field(default_factory=dict)
    cues: list[CueSection] = Field(default_factory=list)
    map: MapSection = Field(default_factory=MapSection)
    music: MusicSection | None = Field(None, description="generated music that plays along (live/music/player.py); "
                                                         "no [music] table = none")

    #: The file this show came from; relative paths in it resolve against its folder.
    _path: Path = PrivateAttr(default=DEFAULT_SHOW)

    @property
    def path(self) -> Path:
        return self._path

    def resolve(self, relative: str) -> Path:
        """A path from the show, relative to the show file's folder."""
        return (self.path.parent / relative).resolve()

    def resolve_inside(self, relative: str, key: str) -> Path:
        """A path the show writes to (MIDI learn's file, the styles folder): it must stay inside the show's
        folder."""
        path = self.resolve(relative)
        if not path.is_relative_to(self.path.parent.resolve()):
            raise LiveError(f"{self.path}: {key} = '{relative}' points outside the show's folder "
                            f"({self.path.parent})", "give a file name next to the show file")
        return path


class ShowFile:
    """Watches a show file for saves. A save is applied once the file has stopped changing between two looks
    (an editor writing it is never read half-way), and an empty file is refused by load_show."""

    CHECK_S = 0.5  # how often the file's modification time and size are looked at

    def __init__(self, path: Path) -> None:
        self.path = path
        self._applied = self._pending = self._stamp()
        self._checked = 0.0

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def saved(self, now: float | None = None) -> Show | None:
        """The newly saved show once it has settled, else None; LiveError (said once per save) if it is invalid."""
        now = time.perf_counter() if now is None else now
        if now - self._checked < self.CHECK_S:
            return None
        self._checked = now
        stamp = self._stamp()
        if stamp is None or stamp == self._applied or stamp != self._pending:
            self._pending = stamp  # changed since the last look: wait until it holds still
            return None
        self._applied = stamp
        return load_show(self.path)


def load_show(path: str | Path) -> Show:
    """Read and validate a show file; LiveError naming the file, key path, line and allowed values."""
    path = Path(path)
    if not path.is_file():
        shows = ", ".join(sorted(p.name for p in DEFAULT_SHOW.parent.glob("*.toml")))
        raise LiveError(f"show file not found: {path}", f"give a path to a .toml show (shipped: {shows})")
    text = path.read_text()
    if not text.strip():  # an editor saving truncates first: an empty show is a half-written one, not a show
        raise LiveError(f"{path} is empty", "write the show into it (see show_configs/default.toml)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise LiveError(f"{path}: not valid TOML: {err}", "fix the syntax at that line") from None
    try:
        show = Show.model_validate(data)
    except ValidationError as err:
        raise LiveError(_explain(err, path, text), "correct the key in the show file") from None
    show._path = path.resolve()
    return show


def _explain(err: ValidationError, path: Path, text: str) -> str:
    """One line per problem: file:line, [table] key, what is wrong, what is allowed."""
    found: dict[str, list[str]] = {}
    for problem in err.errors():
        loc = [str(part) for part in problem["loc"]
               if str(part) not in ("int", "float", "str", "bool") and not str(part).startswith(("literal[", "function"))]
        line = _line_of(text, loc)
        message = problem["msg"].removeprefix("Value error, ")  # a validator's own sentence says it all
        if problem["type"] == "extra_forbidden":
            section = _section_model(loc[:-1])
            allowed = ", ".join(section.model_fields) if section else ""
            message = "unknown key" + (f" (allowed: {allowed})" if allowed else "")
        found.setdefault(f"{path}{f':{line}' if line else ''}: {_where(loc)}", []).append(message)
    lines = []
    for where, messages in found.items():
        kinds = [m.removeprefix("Input should be a valid ") for m in messages]
        if len(messages) > 1 and all(m.startswith("Input should be a valid ") for m in messages):
            messages = ["should be one of: " + ", ".join(kinds)]  # what each type of a union said
        lines.append(f"{where}: {'; '.join(dict.fromkeys(messages))}")
    return "show file is invalid:\n  " + "\n  ".join(lines)


def _where(loc: list[str]) -> str:
    """A key path as the file writes it: `[video] fps`, `[mod.pulse] shape`, `[controls."/video/blend"] speed`,
    `[[cues]] #2 fade`."""
    if len(loc) < 2:
        return loc[0] if loc else "?"
    *table, key = loc
    parts = [f'"{p}"' if "/" in p else p for p in table if not p.isdigit()]
    numbers = [f" #{int(p) + 1}" for p in table if p.isdigit()]
    brackets = ("[[", "]]") if numbers else ("[", "]")
    return f"{brackets[0]}{'.'.join(parts)}{brackets[1]}{''.join(numbers)} {key}"


def _section_model(loc: list[str]) -> type[BaseModel] | None:
    """The model of the table at `loc`, through nested tables, tables of tables ([mod.NAME]) and lists of tables
    ([[midi.map]]): for listing its allowed keys."""
    model: type[BaseModel] = Show
    annotation = None
    for part in loc:
        if annotation is not None and not part.isdigit() and not (isinstance(annotation, type) and
                                                                  issubclass(annotation, BaseModel)):
            annotation = _inner(annotation)  # the NAME of [mod.NAME]: its value's model
        elif annotation is not None and part.isdigit():
            annotation = _inner(annotation)
        else:
            field = model.model_fields.get(part)
            annotation = field.annotation if field else None
            if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # an optional table ([music])
                annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model, annotation = annotation, None
        elif annotation is None:
            return None
    return model if annotation is None else None


def _inner(annotation) -> type | None:
    """dict[str, M] -> M, list[M] -> M."""
    args = typing.get_args(annotation)
    return args[-1] if args else None


def _line_of(text: str, loc: list[str]) -> int | None:
    """The line where the offending key stands, inside its table: `[video]`, `[mod.pulse]`,
    `[controls."/video/blend"]`, or the n-th `[[cues]]` / `[[midi.map]]` for an error in a list of tables."""
    if not loc:
        return None
    *path, key = loc
    if path and path[-1].isdigit():  # an element of an array of tables: find its n-th header
        table, nth, key_in = ".".join(path[:-1]), int(path[-1]), key
    else:
        table, nth, key_in = ".".join(path), None, key
    seen, inside = -1, not table
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[(\[?)([^\]]+)\]", line)
        if header:
            name = header.group(2).strip().replace('"', "").replace("'", "")
            if header.group(1) and name == table and nth is not None:
                seen += 1
                inside = seen == nth
            else:
                inside = name == table and nth is None
            if not table and name == key_in:
                return number
            continue
        if inside and re.match(rf"\s*[\"']?{re.escape(key_in)}[\"']?\s*=", line):
            return number
    return None