"""Audio output devices as PortAudio sees them: listed for `live doctor`, and a show's device spec resolved.

PortAudio enumerates devices once, when it initialises (at `import sounddevice`). A JACK server started after
that is invisible until PortAudio is re-initialised, so listing and resolving re-scan first. Re-scanning
terminates PortAudio, which closes any open stream: do it only while this process has no stream open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sounddevice as sd

from live.errors import LiveError

JACK_API = "JACK Audio Connection Kit"
DEVICE_FIX = "set [audio] device in the show (`live doctor` lists the outputs) or start JACK"


@dataclass(frozen=True)
class OutputDevice:
    index: int
    name: str
    hostapi: str
    channels: int
    samplerate: float  # the device's default rate

    @property
    def label(self) -> str:
        return f"'{self.name}' ({self.hostapi})"


def rescan() -> None:
    """Re-initialise PortAudio so devices that appeared since (a JACK server) are listed."""
    if sd._initialized:
        sd._terminate()
    sd._initialize()


def outputs(scan: bool = True) -> list[OutputDevice]:
    """Every device with at least one output channel, in PortAudio's order."""
    if scan:
        rescan()
    apis = sd.query_hostapis()
    return [OutputDevice(d["index"], d["name"], apis[d["hostapi"]]["name"], d["max_output_channels"],
                         d["default_samplerate"])
            for d in sd.query_devices() if d["max_output_channels"] > 0]


def list_outputs() -> list[dict[str, Any]]:
    """The output devices as plain dicts, the default one marked."""
    found = outputs()
    default = _default(found)
    return [{"index": d.index, "name": d.name, "hostapi": d.hostapi, "channels": d.channels,
             "samplerate": d.samplerate, "default": d == default} for d in found]


def describe() -> list[str]:
    """Human-readable lines: each host API with its output count, then each output device."""
    found = outputs()
    default = _default(found)
    lines = [f"host API {api['name']}: {sum(1 for d in found if d.hostapi == api['name'])} output device(s)"
             for api in sd.query_hostapis()]
    lines += [f"output {d.index}: {d.label}, {d.channels} ch, {d.samplerate:g} Hz"
              + (" (default)" if d == default else "") for d in found]
    return lines


def resolve(spec: str | int | None, scan: bool = True) -> OutputDevice:
    """The device a show asked for: None/"" = default, int = index, str = case-insensitive part of the name.

    Raises LiveError naming what was asked, what exists and the fix.
    """
    found = outputs(scan)
    listing = ", ".join(d.label for d in found) or "none"
    if spec is None or spec == "":
        default = _default(found)
        if default is None:
            raise LiveError(f"no output device (devices: {listing})", DEVICE_FIX)
        return default
    if isinstance(spec, int):
        match = [d for d in found if d.index == spec]
    else:
        wanted = spec.lower()
        match = sorted((d for d in found if wanted in d.name.lower()), key=lambda d: d.name.lower() != wanted)
    if not match:
        raise LiveError(f"no output device {spec!r} (devices: {listing})", DEVICE_FIX)
    return match[0]


def _default(found: list[OutputDevice]) -> OutputDevice | None:
    """JACK's default output when a JACK server runs (a performer who started JACK means it), else PortAudio's."""
    jack = [api for api in sd.query_hostapis() if api["name"] == JACK_API]
    preferred = [jack[0]["default_output_device"]] if jack else []
    preferred.append(sd.default.device[1])
    for index in preferred:
        for device in found:
            if device.index == index:
                return device
    return None
