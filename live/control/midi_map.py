"""MIDI mapping as data: the [midi] show section, one map entry per physical control, and the pure functions that
turn MIDI values into controller positions (0..1) and back.

Kept apart from the port handling in live/control/midi.py so the show file can validate [midi] without opening
anything, and so the value arithmetic (14-bit pairs, pitch-bend centre, relative encoder codings) is testable alone.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from live.errors import LiveError

Kind = Literal["cc", "cc14", "nrpn", "pitchbend", "note", "relative"]
Takeover = Literal["none", "pickup", "scale"]
#: Relative encoder codings: two's complement (1 = +1, 127 = -1), signed bit (1 = +1, 65 = -1), binary offset
#: (65 = +1, 63 = -1); and what a note does to a parameter: momentary (held = max, released = min) or toggle.
Mode = Literal["", "twos", "signed", "offset", "momentary", "toggle"]
DEFAULT_MODE = {"relative": "twos", "note": "momentary"}
MODES = {"relative": ("twos", "signed", "offset"), "note": ("momentary", "toggle")}
NUMBER_MAX = {"cc": 127, "relative": 127, "cc14": 31, "nrpn": 16383, "note": 127, "pitchbend": 0}
APIS = ("default", "alsa", "jack", "coremidi", "windows")


class MidiMap(BaseModel):
    """One physical control bound to one parameter. Frozen, so it can key per-control state."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    param: str = Field(description="parameter address, e.g. /video/blend")
    kind: Kind = "cc"
    channel: int | None = Field(None, ge=1, le=16, description="1..16; unset = [midi] channel, else any channel")
    number: int = Field(0, ge=0, le=16383, description="CC (cc14: the MSB controller 0..31), NRPN or note number")
    mode: Mode = Field("", description="relative: twos | signed | offset; note: momentary | toggle")
    step: float | None = Field(None, gt=0, description="relative: change per encoder tick in the parameter's "
                                                       "units; unset = 1/128 of the travel (one choice for enums)")
    takeover: Takeover | None = Field(None, description="unset = [midi] takeover")
    feedback: bool = Field(True, description="send the value back when something else changes it")

    @model_validator(mode="after")
    def _fits_kind(self) -> MidiMap:
        top = NUMBER_MAX[self.kind]
        if self.number > top:
            what = "pitch bend has no number" if not top else f"{self.kind} numbers go 0..{top}"
            raise ValueError(f"number {self.number} does not fit: {what}")
        if self.mode and self.mode not in MODES.get(self.kind, ()):
            allowed = " | ".join(MODES.get(self.kind, ())) or "no mode"
            raise ValueError(f"mode '{self.mode}' does not apply to {self.kind} (it takes {allowed})")
        return self

    @property
    def resolved_mode(self) -> str:
        return self.mode or DEFAULT_MODE.get(self.kind, "")

    def label(self, default_channel: int | None = None) -> str:
        """The control in words, for `live params`, the HUD and learn messages: 'ch1 CC 7', 'any NRPN 300'."""
        channel = self.channel or default_channel
        where = f"ch{channel}" if channel else "any ch"
        return where + " " + {
            "cc": f"CC {self.number}", "cc14": f"CC {self.number}+{self.number + 32} (14-bit)",
            "nrpn": f"NRPN {self.number}", "pitchbend": "pitch bend",
            "note": f"note {self.number} ({self.resolved_mode})",
            "relative": f"CC {self.number} relative ({self.resolved_mode})"}[self.kind]

    def control(self) -> tuple[str, int]:
        """What the control listens to, channel aside: relative encoders and absolute CCs share CC numbers."""
        return ("cc" if self.kind == "relative" else self.kind, self.number)


class MidiSection(BaseModel):
    """[midi] in a show file: which ports, how controls map to parameters, and where MIDI learn keeps its maps."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    api: Literal["default", "alsa", "jack", "coremidi", "windows"] = Field(
        "default", description="MIDI system; 'default' = the platform's (ALSA, CoreMIDI, Windows MM)")
    inputs: list[str] = Field(default_factory=list, description="port name prefixes to read (case-insensitive)")
    outputs: list[str] = Field(default_factory=list, description="port name prefixes to send feedback to")
    virtual: bool = Field(False, description="also open a virtual input and output other apps connect to")
    virtual_name: str = Field("live", min_length=1, description="name of the virtual ports")
    channel: int | None = Field(None, ge=1, le=16, description="only this channel (1..16) for notes and maps "
                                                               "without one; unset = every channel")
    takeover: Takeover = Field("pickup", description="when a fader disagrees with the value: none (jump), "
                                                     "pickup (wait until it crosses), scale (converge)")
    notes: str = Field("/synth/note", description="event that incoming notes play; '' = none")
    learn_file: str = Field("", description="JSON file for MIDI-learned maps, relative to the show; '' = none")
    feedback_hz: float = Field(60.0, gt=0, le=1000, description="most feedback updates per second")
    map: list[MidiMap] = Field(default_factory=list)


# --- values: MIDI numbers <-> controller positions 0..1 ---------------------------------------------------------

def cc_to_normal(value: int) -> float:
    return value / 127


def normal_to_cc(u: float) -> int:
    return int(round(min(max(u, 0.0), 1.0) * 127))


def wide_to_normal(value: int) -> float:
    """A 14-bit value (14-bit CC pair, NRPN data) as a position."""
    return value / 16383


def normal_to_wide(u: float) -> int:
    return int(round(min(max(u, 0.0), 1.0) * 16383))


def bend_to_normal(value: int) -> float:
    """Pitch bend rests at 8192; that is exactly 0.5 here, so a bipolar parameter (-1..1) rests at 0."""
    return value / 8192 * 0.5 if value <= 8192 else 0.5 + (value - 8192) / 8191 * 0.5


def normal_to_bend(u: float) -> int:
    u = min(max(u, 0.0), 1.0)
    return int(round(u * 2 * 8192)) if u <= 0.5 else 8192 + int(round((u - 0.5) * 2 * 8191))


def relative_ticks(value: int, mode: str) -> int:
    """Encoder ticks (signed) from one relative CC value in the given coding; 0 for the coding's 'no move'."""
    if mode == "signed":
        return -(value - 64) if value > 64 else value % 64
    if mode == "offset":
        return value - 64
    return value - 128 if value >= 64 else value  # twos


def encode_ticks(ticks: int, mode: str) -> int:
    """The CC value an encoder sends for `ticks` (tests and virtual controllers)."""
    ticks = max(-63, min(63, ticks))
    if mode == "signed":
        return 64 + -ticks if ticks < 0 else ticks
    if mode == "offset":
        return 64 + ticks
    return ticks & 0x7F


def feedback_messages(m: MidiMap, u: float, default_channel: int | None) -> list[list[int]]:
    """The MIDI messages that show position `u` on the control `m` (LED ring, motor fader, pad light)."""
    ch = (m.channel or default_channel or 1) - 1
    if m.kind in ("cc", "relative"):
        return [[0xB0 | ch, m.number, normal_to_cc(u)]]
    if m.kind == "cc14":
        v = normal_to_wide(u)
        return [[0xB0 | ch, m.number, v >> 7], [0xB0 | ch, m.number + 32, v & 0x7F]]
    if m.kind == "nrpn":
        v = normal_to_wide(u)
        return [[0xB0 | ch, 99, m.number >> 7], [0xB0 | ch, 98, m.number & 0x7F],
                [0xB0 | ch, 6, v >> 7], [0xB0 | ch, 38, v & 0x7F]]
    if m.kind == "pitchbend":
        v = normal_to_bend(u)
        return [[0xE0 | ch, v & 0x7F, v >> 7]]
    return [[0x90 | ch, m.number, normal_to_cc(u)]]  # note: velocity 0 (= off) lights nothing


# --- learned maps on disk -----------------------------------------------------------------------------------------

def load_learned(path: Path | None) -> list[MidiMap]:
    """The maps MIDI learn saved earlier; none when there is no file yet."""
    if path is None or not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [MidiMap(**entry) for entry in data["learned"]]
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as err:
        raise LiveError(f"MIDI learn file {path} cannot be read: {str(err).splitlines()[0]}",
                        "fix the file by hand, or delete it to forget the learned mappings") from None


def save_learned(path: Path, maps: list[MidiMap]) -> None:
    """Write the learned maps atomically (temporary file, then rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{"param": m.param, "kind": m.kind} | m.model_dump(exclude_defaults=True) for m in maps]
    text = json.dumps({"learned": entries}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
