"""Show files: TOML, validated before anything opens, with errors that name the file, key and line.

A show is data: which source, which model, which outputs, which ports, and the starting value of any parameter.
Paths in a show are relative to the show file, so a show folder can be copied anywhere.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from live.control.midi_map import MidiSection
from live.control.modulation import ModulatorSection
from live.control.osc import OscSection
from live.control.oscquery import OscQuerySection
from live.control.scenes import CueSection
from live.control.tempo import TempoSection
from live.errors import LiveError
from live.params import CLIP_MODES, CURVES, SMOOTHING

DEFAULT_SHOW = Path(__file__).resolve().parent.parent / "show_configs" / "default.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoSection(_Section):
    source: int | str = Field(0, description="camera index, video file, URL, or 'builtin'")
    width: int = Field(640, ge=64, le=7680)
    height: int = Field(480, ge=48, le=4320)
    fps: float = Field(30.0, gt=0, le=240)
    model: str = "../exported_models/styles-procedural.json"
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = ["tensorrt", "cuda", "cpu"]
    threads: int = Field(0, ge=0, le=64, description="ONNX Runtime intra-op threads; 0 = ORT's choice")
    latent: str = Field("", description="a latent-to-image model mixed over the video (/latent/*); '' = none")


class OutputSection(_Section):
    window: bool = True
    fullscreen: bool = False
    monitor: int = Field(0, ge=0)
    title: str = "live"
    record: str = Field("", description="also record to this .mp4 (relative to the show file)")


class AudioSection(_Section):
    enabled: bool = True
    device: int | str = ""
    samplerate: Literal[44100, 48000, 96000] = 48000
    blocksize: Literal[64, 128, 256, 512, 1024] = 128
    model: str = "../exported_models/synth-decoder.json"
    voices: int = Field(8, ge=1, le=64)
    pattern: list[int] = Field(default_factory=lambda: [45, 52, 57, 60, 64, 57, 52, 48],
                               description="the arpeggio /synth/auto plays, in eighth notes at the show's tempo")


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
    output: OutputSection = Field(default_factory=OutputSection)
    audio: AudioSection = Field(default_factory=AudioSection)
    osc: OscSection = Field(default_factory=OscSection)
    oscquery: OscQuerySection = Field(default_factory=OscQuerySection)
    midi: MidiSection = Field(default_factory=MidiSection)
    tempo: TempoSection = Field(default_factory=TempoSection)
    params: dict[str, float | int | bool | str] = Field(default_factory=dict)
    controls: dict[str, ControlSection] = Field(default_factory=dict)
    mod: dict[str, ModulatorSection] = Field(default_factory=dict)
    scenes: dict[str, dict[str, float | int | bool | str]] = Field(default_factory=dict)
    cues: list[CueSection] = Field(default_factory=list)

    #: The file this show came from; relative paths in it resolve against its folder.
    _path: Path = PrivateAttr(default=DEFAULT_SHOW)

    @property
    def path(self) -> Path:
        return self._path

    def resolve(self, relative: str) -> Path:
        """A path from the show, relative to the show file's folder."""
        return (self.path.parent / relative).resolve()

    def resolve_inside(self, relative: str, key: str) -> Path:
        """A path the show writes to (MIDI learn's file): it must stay inside the show's folder."""
        path = self.resolve(relative)
        if not path.is_relative_to(self.path.parent.resolve()):
            raise LiveError(f"{self.path}: {key} = '{relative}' points outside the show's folder "
                            f"({self.path.parent})", "give a file name next to the show file")
        return path


def load_show(path: str | Path) -> Show:
    """Read and validate a show file; LiveError naming the file, key path, line and allowed values."""
    path = Path(path)
    if not path.is_file():
        shows = ", ".join(sorted(p.name for p in DEFAULT_SHOW.parent.glob("*.toml")))
        raise LiveError(f"show file not found: {path}", f"give a path to a .toml show (shipped: {shows})")
    text = path.read_text()
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
    """One line per problem: file:line, [section] key, what is wrong, what is allowed."""
    lines = []
    for problem in err.errors():
        loc = [str(part) for part in problem["loc"] if not str(part).startswith(("int", "str", "literal"))]
        key = loc[-1] if loc else "?"
        where = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else key
        line = _line_of(text, loc)
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            section = _section_model(loc[:-1])
            allowed = ", ".join(section.model_fields) if section else ""
            message = "unknown key" + (f" (allowed: {allowed})" if allowed else "")
        lines.append(f"{path}{f':{line}' if line else ''}: {where}: {message}")
    return "show file is invalid:\n  " + "\n  ".join(dict.fromkeys(lines))


def _section_model(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Show
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _line_of(text: str, loc: list[str]) -> int | None:
    """The line where the offending key stands (inside its [section] when there is one)."""
    if not loc:
        return None
    section, key = (loc[0], loc[-1]) if len(loc) > 1 else (None, loc[0])
    in_section = section is None
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            in_section = section is None or header.group(1).strip() == section
            if section is None and header.group(1).strip() == key:
                return number
            continue
        if in_section and re.match(rf"\s*\"?{re.escape(key)}\"?\s*=", line):
            return number
    return None
