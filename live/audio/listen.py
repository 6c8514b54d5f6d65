"""The show's ears: `[audio_in]`, an input device or a sound file, analysed at control rate into `/in/audio/*`.

A device is recorded by rtmixer's C callback into a ring buffer (no Python in the audio callback, as on the output
side); a sound file stands in for a microphone the way a video file stands in for a camera: read in real time,
paced by perf_counter(), looped. One thread of ours wakes about once a hop, takes whatever the ring (or the file)
has, runs the analysis (live/audio/analysis.py) and publishes each hop's values, read-only, with the time they
describe (`ParamTree.measure`). With `[tempo] source = "audio"` each beat it hears re-anchors the show's clock.

A missing or unreadable file stops the show at open with its path (a show-file mistake, like a missing model); an
input device that is not there, or is lost while playing, is one line with the list of inputs, the values at rest
(0), and a retry every RETRY_S, like the synth's output: the show plays on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from live.audio.analysis import FLOOR_DB, NAMES, Analysis, band_edges
from live.clock_offset import ClockOffset
from live.control.tempo import MAX_BPM, Clock
from live.errors import LiveError
from live.params import Param, ParamTree

if TYPE_CHECKING:
    from live.audio import devices

PREFIX = "/in/audio/"
BANDS = 10
RING_FRAMES = 1 << 15  # 0.68 s at 48 kHz: the thread may stall this long before the ring overflows
RETRY_S = 1.0  # how often a lost input device is looked for
CATCH_UP_S = 1.0  # a file source that fell further behind than this (a stalled machine) skips ahead
CLOSE_TIMEOUT_S = 1.0
FILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".caf", ".w64", ".rf64")
INPUT_FIX = ("set [audio_in] source to one of them (a part of its name, or its index), or to a sound file; or "
             "start JACK (`live doctor` lists the devices)")


class AudioInSection(BaseModel):
    """`[audio_in]`: what the show listens to."""

    model_config = ConfigDict(extra="forbid")
    source: int | str = Field("", description="\"\" = off; an input device (a part of its name, e.g. \"system\" "
                                              "under JACK, or its index); or a sound file, relative to the show, "
                                              "played in real time and looped")
    samplerate: Literal[44100, 48000, 96000] = Field(48000, description="the device's rate (a file plays at its own)")
    blocksize: Literal[64, 128, 256, 512, 1024] = 128
    channels: int = Field(2, ge=1, le=64, description="input channels read, from the first; mixed to mono")


def is_file(source: int | str) -> bool:
    """A source naming a sound file (by its suffix), not a device."""
    return isinstance(source, str) and Path(source).suffix.lower() in FILE_SUFFIXES


class AudioIn:
    """The input Part: opens the device or file, runs the analysis thread, publishes `/in/audio/*`."""

    @staticmethod
    def params(section: AudioInSection) -> list[Param]:
        """The measured values, read-only (none when the input is off)."""
        if section.source == "":
            return []
        edges = band_edges(BANDS)
        level = f"{FLOOR_DB:g}..0 dBFS RMS as 0..1"

        def p(name: str, hi: float, unit: str, doc: str) -> Param:
            return Param(PREFIX + name, "float", 0.0, 0.0, hi, unit=unit, doc=doc, readonly=True)

        return [p("rms", 1.0, "", "RMS of the newest 21 ms of the input (full scale 1)"),
                p("loudness", 1.0, "", f"the input's level, {level}"),
                *(p(f"band/{b}", 1.0, "", f"level of {edges[b]:.0f}..{edges[b + 1]:.0f} Hz, {level}")
                  for b in range(BANDS)),
                p("bass", 1.0, "", f"level of the bands below 160 Hz together, {level}"),
                p("onset", 1.0, "", "onset strength: jumps at each onset (spectral flux over an adaptive "
                                    "threshold), falls by 1/e in 0.1 s"),
                p("centroid", 1.0, "", "spectral centroid, log-spaced: 0 = 40 Hz, 1 = 16 kHz"),
                p("flatness", 1.0, "", "spectral flatness: near 0 for a tone, about 0.56 for white noise"),
                p("pitch", 2000.0, "Hz", "monophonic pitch (YIN); 0 when unvoiced"),
                p("pitch_confidence", 1.0, "", "how periodic the input is: near 1 for a clean tone, near 0 for "
                                               "noise"),
                p("tempo", MAX_BPM, "bpm", "tempo of the beat heard; 0 until one is found"),
                p("beat", 1.0, "", "1 at each beat heard, falling to 0 over half a beat"),
                p("beat_phase", 1.0, "", "where the input is between beats, 0..1")]

    def __init__(self, section: AudioInSection, show_folder: Path, tree: ParamTree, clock: Clock | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.section, self.tree, self.clock, self.say = section, tree, clock, say
        self.path = (show_folder / section.source).resolve() if is_file(section.source) else None
        self._addresses = {name: PREFIX + name for name in (*NAMES, *(f"band/{b}" for b in range(BANDS)))}
        self._rest = dict.fromkeys(self._addresses.values(), 0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Any = None  # rtmixer.Recorder, or None (a file, or a lost device)
        self._action: Any = None  # its recording into the ring
        self._file: Any = None  # soundfile.SoundFile
        self.analysis: Analysis | None = None
        self.label = ""
        # overflows: the ring filled (our thread stalled); xruns: the device's input overflowed (frames lost before
        # they reached the ring); skipped: frames of a file passed over after a stall
        self.counts = {"hops": 0, "onsets": 0, "beats": 0, "overflows": 0, "xruns": 0, "lost": 0, "reopened": 0,
                       "skipped": 0, "loops": 0}
        self.last: dict[str, float] = {}
        self.heard: deque[tuple[str, float]] = deque(maxlen=256)  # the newest ("onset" | "beat", time) heard

    # --- the Part ------------------------------------------------------------------------------------------

    def open(self) -> str:
        if self.path is not None:
            line = self._open_file()
            target = self._run_file
        else:
            line = self._open_first()
            target = self._run_device
        self._thread = threading.Thread(target=target, name="live-audio-in", daemon=True)
        self._thread.start()
        return line

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CLOSE_TIMEOUT_S + 1.0)
            self._thread = None
        if self._stream is not None:
            from live.audio import devices  # noqa: PLC0415

            devices.release(self._stream)
            self._stream = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def stats(self) -> dict[str, Any]:
        analysis, action = self.analysis, self._action
        counts = dict(self.counts)
        if action is not None:
            counts["xruns"] += action.stats.input_overflows
        return {**counts, "source": self.label, "tempo": self.last.get(PREFIX + "tempo", 0.0),
                "latency_ms": {k: round(v / analysis.samplerate * 1000.0, 1) for k, v in analysis.latency.items()}
                if analysis else {}}

    def status(self) -> str:
        if not self.label:
            return ""
        tempo = self.last.get(PREFIX + "tempo", 0.0)
        lost = ", lost" if self.path is None and self._stream is None else ""
        return (f"in {self.label}{lost}: {tempo:.1f} BPM" if tempo else f"in {self.label}{lost}") + \
            (f", {self.counts['overflows']} overflows" if self.counts["overflows"] else "")

    # --- a sound file --------------------------------------------------------------------------------------

    def _open_file(self) -> str:
        import soundfile as sf  # noqa: PLC0415

        assert self.path is not None
        if not self.path.is_file():
            raise LiveError(f"[audio_in] source: no sound file {self.path}",
                            "give a sound file's path relative to the show file, or a device name")
        try:
            self._file = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError) as err:
            raise LiveError(f"[audio_in] source {self.path} is not a sound file soundfile can read ({err})",
                            "convert it to WAV or FLAC") from None
        if self._file.frames == 0:
            self._file.close()
            raise LiveError(f"[audio_in] source {self.path} has no audio", "give a sound file with audio in it")
        rate, channels = self._file.samplerate, self._file.channels
        self.analysis = Analysis(rate, BANDS)
        self._frames = np.zeros((self.analysis.hop * 8, channels), np.float32)
        self._mono = np.zeros(len(self._frames), np.float32)
        self.label = f"'{self.path.name}'"
        return (f"Audio in: {self.path.name}, {rate} Hz, {channels} ch, {self._file.frames / rate:.1f} s looped; "
                f"analysed every {self.analysis.hop} frames ({rate / self.analysis.hop:.1f} Hz)")

    def _run_file(self) -> None:
        """Read the file as if it were playing: the frames due by now, each hop's time the time it 'plays'."""
        file, analysis, frames = self._file, self.analysis, self._frames
        assert file is not None and analysis is not None
        rate, nap = file.samplerate, analysis.hop / file.samplerate
        start, position = time.perf_counter(), 0
        while not self._stop.wait(nap):
            due = int((time.perf_counter() - start) * rate) - position
            if due > CATCH_UP_S * rate:  # the machine stopped us: skip what was missed rather than race through it
                self.counts["skipped"] += due
                file.seek((file.tell() + due) % file.frames)
                position += due
                due = 0
            while due > 0:
                want = min(due, len(frames))
                got = file.read(want, dtype="float32", always_2d=True, out=frames[:want])
                if len(got) == 0:
                    file.seek(0)
                    self.counts["loops"] += 1
                    continue
                mono = self._mono[:len(got)]
                np.mean(got, axis=1, out=mono)
                self._publish(analysis.feed(mono, start + position / rate))
                position += len(got)
                due -= len(got)

    # --- a device ------------------------------------------------------------------------------------------

    def _open_device(self, device: devices.Device) -> str:
        """Start recording `device` into the ring; LiveError if it cannot."""
        import rtmixer  # noqa: PLC0415
        import sounddevice as sd  # noqa: PLC0415

        s = self.section
        channels = min(s.channels, device.channels)
        self.analysis = Analysis(s.samplerate, BANDS)  # first: it takes a while to load, and the ring would fill
        try:
            stream = rtmixer.Recorder(device=device.index, channels=channels, samplerate=s.samplerate,
                                      blocksize=s.blocksize, latency="low")
            stream.start()
        except (sd.PortAudioError, ValueError) as err:
            raise LiveError(f"[audio_in] could not open input '{device.name}' ({device.hostapi}) at "
                            f"{s.samplerate} Hz ({err})", f"check [audio_in] samplerate (the device runs at "
                            f"{device.samplerate:g} Hz) and source") from None
        self._device, self._stream = device, stream
        self._channels = channels
        self._frames = np.zeros((RING_FRAMES, channels), np.float32)
        self._mono = np.zeros(RING_FRAMES, np.float32)
        self._ring = rtmixer.RingBuffer(4 * channels, RING_FRAMES)
        self._arm()
        self.label = f"'{device.name}'"
        latency = stream.latency * 1000.0
        return (f"Audio in: '{device.name}' ({device.hostapi}), {s.samplerate} Hz, {channels} ch, "
                f"{s.blocksize}-frame blocks, input latency {latency:.1f} ms; analysed every "
                f"{self.analysis.hop} frames ({s.samplerate / self.analysis.hop:.1f} Hz)")

    def _open_first(self) -> str:
        """The device, or (none there, or it will not open) one line: the show plays with /in/audio at rest and the
        device is looked for every RETRY_S, as when one is lost."""
        from live.audio import devices  # noqa: PLC0415

        try:
            return self._open_device(devices.resolve_input(self.section.source, "[audio_in] source", INPUT_FIX))
        except LiveError as err:
            if self.analysis is None:
                self.analysis = Analysis(self.section.samplerate, BANDS)
            self._device = devices.Device(-1, str(self.section.source), "", 0, 0.0)
            self._lost_at = time.perf_counter()
            self.label = f"'{self.section.source}'"
            return f"Audio in: {err.what}; /in/audio at rest, looking for it every {RETRY_S:g} s (fix: {err.fix})"

    def _arm(self) -> None:
        """(Re)start recording into an empty ring, and the clock that times its frames."""
        self._retire()
        self._ring.flush()
        self._action = self._stream.record_ringbuffer(self._ring)
        now = time.perf_counter()
        self._offset = ClockOffset()
        self._offset.reset(now, now)  # the first block arrives within a period: a guess the bounds then tighten
        self._received, self._last = 0, now

    def _retire(self) -> None:
        """Keep the count of input overflows (the device's, not the ring's) of the recording action ending."""
        if self._action is not None:
            self.counts["xruns"] += self._action.stats.input_overflows
            self._action = None

    def _run_device(self) -> None:
        """Each wake-up: everything in the ring, timed, analysed and published; a lost device looked for."""
        analysis = self.analysis
        assert analysis is not None
        nap = analysis.hop / self.section.samplerate
        while not self._stop.wait(nap if self._stream is not None else RETRY_S):
            if self._stream is None:
                self._look_for()
            elif self._action not in self._stream.actions:  # the ring was full (we stalled), or the stream died
                if self._stream.active:
                    self.counts["overflows"] += 1
                    self._arm()
                else:
                    self._lose()
            else:
                self._take()

    def _take(self) -> None:
        """Read the ring; frame f arrived by origin + f / rate, when the callback that brought its block ran."""
        rate, block = self.section.samplerate, self.section.blocksize
        now = time.perf_counter()
        n = self._ring.read_available
        if n == 0:
            self._last = now
            return
        frames = self._frames[:n]
        self._ring.readinto(frames)
        seen, self._received = self._received, self._received + n
        # Bounds (live/clock_offset.py): all n frames were in by now; the block after `seen` was not in at the last
        # look. A frame's time is when it arrived less the device's input latency.
        origin = self._offset.bound(now - self._received / rate, self._last - (seen + block) / rate, now)
        self._last = now
        mono = self._mono[:n]
        np.mean(frames, axis=1, out=mono)
        self._publish(self.analysis.feed(mono, origin + (seen + 1) / rate - self._stream.latency))

    def _lose(self) -> None:
        from live.audio import devices  # noqa: PLC0415

        devices.abandon(self._stream)
        self._retire()
        self._stream = None
        self.counts["lost"] += 1
        self._lost_at = time.perf_counter()
        self.tree.measure(self._rest, self._lost_at)
        self.last = dict(self._rest)
        jack = self._device.hostapi == devices.JACK_API
        self.say(f"Audio in: lost '{self._device.name}' ({'the JACK server went away' if jack else 'device gone'}"
                 f"); /in/audio at rest, looking for it every {RETRY_S:g} s")

    def _look_for(self) -> None:
        import sounddevice as sd  # noqa: PLC0415

        from live.audio import devices  # noqa: PLC0415

        if self._device.hostapi == devices.JACK_API and devices.jack_answers() is False:
            return
        try:
            line = self._open_device(devices.resolve_input(self.section.source, "[audio_in] source", INPUT_FIX))
        except (LiveError, sd.PortAudioError):
            return
        self.counts["reopened"] += 1
        self.say(f"{line} (back after {time.perf_counter() - self._lost_at:.1f} s)")

    # --- out -----------------------------------------------------------------------------------------------

    def _publish(self, hops: list) -> None:
        addresses, clock = self._addresses, self.clock
        for hop in hops:
            values = {addresses[name]: value for name, value in hop.values.items()}
            self.tree.measure(values, hop.at)
            if hop.onset is not None:
                self.heard.append(("onset", hop.onset))
                self.counts["onsets"] += 1
            if hop.beat is not None:
                self.heard.append(("beat", hop.beat))
                self.counts["beats"] += 1
                if clock is not None:
                    clock.hear_beat(hop.beat, hop.values["tempo"])
            self.last = values
        self.counts["hops"] += len(hops)

