"""Audio output devices as PortAudio sees them: listed for `live doctor`, and a show's device spec resolved.

PortAudio enumerates devices once, when it initialises (at `import sounddevice`). A JACK server started after
that is invisible until PortAudio is re-initialised, so listing and resolving re-scan first. Re-scanning
terminates PortAudio, which closes any open stream: do it only while this process has no stream open.

A JACK server that goes away poisons the PortAudio that knew it (measured with PortAudio 19.6 and jackd 1.9.21):
stopping, aborting or closing a stream on it waits for the dead server's process thread and never returns, and
Pa_Terminate asserts (SIGABRT) when its JACK client cannot be deactivated. So a dead stream is abandoned, never
closed; a poisoned PortAudio is never terminated, neither by a re-scan (which loads a fresh copy of the library
instead) nor at exit (sounddevice's exit hook is replaced by one that checks first).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sounddevice as sd

from live.errors import LiveError

JACK_API = "JACK Audio Connection Kit"
DEVICE_FIX = "set [audio] device in the show (`live doctor` lists the outputs) or start JACK"


@dataclass(frozen=True)
class Device:
    """An input or output device as PortAudio lists it (channels: of the direction it was listed for)."""

    index: int
    name: str
    hostapi: str
    channels: int
    samplerate: float  # the device's default rate

    @property
    def label(self) -> str:
        return f"'{self.name}' ({self.hostapi})"


_abandoned: list[Any] = []  # dead streams: referenced forever (PortAudio still points at their C state), never closed
_poisoned = False  # the PortAudio in use lost a stream: terminating it would hang or abort the process
#: The PortAudio library file this process first loaded, the source of each fresh copy: once a copy replaces it, it
#: is unloaded (its last reference gone) and no longer in /proc/self/maps.
_portaudio_file: str | None = None
_libjack: ctypes.CDLL | None | bool = False  # False: not looked up yet; None: not installed
JACK_NO_START_SERVER = 0x01


def abandon(stream: Any) -> None:
    """Give up a stream whose device or server died, without stopping or closing it (both hang on a dead JACK
    server); the PortAudio it belongs to is never terminated, and the next re-scan loads a fresh one."""
    global _poisoned
    _abandoned.append(stream)
    _poisoned = True


#: A stream that takes longer to stop is abandoned: closing never hangs.
CLOSE_TIMEOUT_S = 1.0


def release(stream: Any) -> None:
    """Stop and close a stream, or abandon it if it is dead or does not stop within CLOSE_TIMEOUT_S (stopping a
    stream whose JACK server just went away waits forever inside PortAudio)."""
    if stream.active:
        closer = threading.Thread(target=_stop_and_close, args=(stream,), name="live-audio-close", daemon=True)
        closer.start()
        closer.join(timeout=CLOSE_TIMEOUT_S)
        if not closer.is_alive():
            return
    abandon(stream)


def _stop_and_close(stream: Any) -> None:
    stream.abort(ignore_errors=True)
    stream.close(ignore_errors=True)


def jack_answers() -> bool | None:
    """Whether a JACK server (JACK_DEFAULT_SERVER's, or the default) takes a client now; None without libjack.

    A client is opened and closed at once, never starting a server. This also refreshes libjack's per-process
    state after a server restart: without it, a fresh PortAudio crashed initialising against the new server
    (2 of 2 runs), with it none did. libjack prints its failure to stderr, so stderr is muted meanwhile.
    """
    global _libjack
    if _libjack is False:
        found = ctypes.util.find_library("jack")
        _libjack = ctypes.CDLL(found) if found else None
        if _libjack is not None:
            _libjack.jack_client_open.restype = ctypes.c_void_p
            _libjack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
            _libjack.jack_client_close.argtypes = [ctypes.c_void_p]
    if _libjack is None:
        return None
    status = ctypes.c_int(0)
    with _muted_stderr():
        client = _libjack.jack_client_open(b"live-probe", JACK_NO_START_SERVER, ctypes.byref(status))
        if client:
            _libjack.jack_client_close(client)
    return bool(client)


class _muted_stderr:
    """File descriptor 2 goes to /dev/null for the duration (what sounddevice does around Pa_Initialize)."""

    def __enter__(self) -> None:
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *_: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)


def _may_terminate() -> bool:
    """Pa_Terminate returns: no stream of ours died in this PortAudio and, if it holds a JACK client, the server
    is still there."""
    if _poisoned:
        return False
    has_jack = any(api["name"] == JACK_API for api in sd.query_hostapis())
    return not has_jack or jack_answers() is not False


def _fresh_portaudio() -> None:
    """Load and initialise a private copy of the PortAudio library; the poisoned one is never terminated (that
    would hang), only unloaded once the copy replaces it.

    A copy is needed because the dynamic loader hands the already-loaded library back for the same file.
    """
    global _poisoned, _portaudio_file
    if _portaudio_file is None:
        _portaudio_file = sd._libname if os.path.isabs(sd._libname) else _loaded_path("libportaudio")
    original = _portaudio_file
    if original is None:
        raise sd.PortAudioError("PortAudio lost its device and cannot be restarted in this process")
    folder = tempfile.mkdtemp(prefix="live-portaudio-")
    try:
        copy = Path(folder) / Path(original).name
        shutil.copyfile(original, copy)
        sd._lib = sd._ffi.dlopen(str(copy))  # sounddevice (and rtmixer through it) calls sd._lib at call time
    finally:
        shutil.rmtree(folder)  # the mapping outlives the file
    sd._initialized, _poisoned = 0, False
    sd._initialize()


def _loaded_path(prefix: str) -> str | None:
    """The file of a shared library this process has loaded (Linux), by the start of its name."""
    try:
        with open("/proc/self/maps") as maps:
            paths = (line.split()[-1] for line in maps if "/" in line)
            return next((p for p in paths if Path(p).name.startswith(prefix)), None)
    except OSError:
        return None


def rescan() -> None:
    """Re-initialise PortAudio so devices that appeared since (a JACK server) are listed."""
    if not sd._initialized:
        sd._initialize()
    elif _may_terminate():
        sd._terminate()
        sd._initialize()
    else:
        _fresh_portaudio()


def _exit() -> None:
    """sounddevice's exit hook, minus the hang: terminate PortAudio only when that returns."""
    while sd._initialized and _may_terminate():
        sd._terminate()


atexit.unregister(sd._exit_handler)
atexit.register(_exit)


def _listed(direction: str, scan: bool) -> list[Device]:
    """Every device with at least one `direction` ("input", "output") channel, in PortAudio's order; `scan`:
    PortAudio re-scanned first (a JACK server started since is listed), which closes its open streams."""
    if scan:
        rescan()
    apis, key = sd.query_hostapis(), f"max_{direction}_channels"
    return [Device(d["index"], d["name"], apis[d["hostapi"]]["name"], d[key], d["default_samplerate"])
            for d in sd.query_devices() if d[key] > 0]


def outputs(scan: bool = True) -> list[Device]:
    """Every device with at least one output channel, in PortAudio's order."""
    return _listed("output", scan)


def inputs(scan: bool = True) -> list[Device]:
    """Every device with at least one input channel, in PortAudio's order."""
    found = _listed("input", scan)
    if not found and scan and jack_answers():  # PortAudio's JACK client timed out on a loaded machine: once more
        found = _listed("input", scan)
    return found


def _named(found: list[Device], spec: str | int) -> Device | None:
    """The device `spec` names: its index, or a case-insensitive part of its name (an exact name first)."""
    if isinstance(spec, int):
        match = [d for d in found if d.index == spec]
    else:
        wanted = spec.lower()
        match = sorted((d for d in found if wanted in d.name.lower()), key=lambda d: d.name.lower() != wanted)
    return match[0] if match else None


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


def resolve(spec: str | int | None, scan: bool = True) -> Device:
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
    device = _named(found, spec)
    if device is None:
        raise LiveError(f"no output device {spec!r} (devices: {listing})", DEVICE_FIX)
    return device


def resolve_input(spec: str | int, key: str, fix: str, scan: bool = True) -> Device:
    """The input device a show's `key` names (an index, or a part of its name); LiveError naming it, listing the
    inputs there are, with `fix`. `scan` False in a process whose output stream a re-scan would close."""
    found = inputs(scan)
    device = _named(found, spec)
    if device is None:
        listing = ", ".join(f"{d.index}: {d.label}" for d in found) or "none"
        raise LiveError(f"{key} {spec!r}: no such input device (inputs: {listing})", fix)
    return device


def _default(found: list[Device]) -> Device | None:
    """JACK's default output when a JACK server runs (a performer who started JACK means it), else PortAudio's."""
    jack = [api for api in sd.query_hostapis() if api["name"] == JACK_API]
    preferred = [jack[0]["default_output_device"]] if jack else []
    preferred.append(sd.default.device[1])
    for index in preferred:
        for device in found:
            if device.index == index:
                return device
    return None
