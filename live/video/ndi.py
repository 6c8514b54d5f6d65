"""NDI in and out, through cyndilib (whose wheel bundles the NDI runtime): the show's picture and sound as an NDI source
other software on the network receives (`[[outputs]] kind = "ndi"`), and an NDI sender's picture as the show's camera
(`[video] source = "ndi://NAME"`).

NDI finds sources by mDNS, through avahi-daemon on Linux. Where that cannot work (no avahi-daemon, a network that
drops multicast, a sandbox whose loopback has no multicast), NDI's own configuration lists the senders' IP addresses
instead: `{"ndi": {"networks": {"ips": "192.168.1.20,127.0.0.1"}}}` in ~/.ndi/ndi-config.v1.json, or in the folder
named by NDI_CONFIG_DIR. The finder then asks each address's NDI port (TCP 5960) for its sources directly.

cyndilib's blocking calls (Receiver.receive with a time-out, Finder.wait_for_sources, the Finder's own thread) hold
the GIL while they wait, which would stall every other thread of the show; here only calls that return at once are
made, and the waits between them are Python sleeps.
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from live.errors import LiveError
from live.parts import BasePart, KindSection
from live.video.sources import SOURCES

if TYPE_CHECKING:
    from live.show import Show

#: How long a source is looked for before it counts as not found (the capture then retries in the background).
FIND_S = 3.0
#: The longest one read waits for a frame before saying "no frame now" (the reader counts those to tell a lost one).
READ_WAIT_S = 0.1
POLL_S = 0.005  # between polls of the frame-sync for a new frame
#: A sender's timestamp older than this (or in the future) means another clock: the frame's arrival time is used.
MAX_AGE_S = 1.0
AUDIO_CHUNK = 4800  # samples per NDI audio frame at most (0.1 s at 48 kHz); a longer stretch goes in several
SILENCE_CHUNK = 48000  # samples of silence sent at a time where the audio tap dropped some
FIND_FIX = ("check that the sender runs and its name ('HOST (NAME)' or just NAME); NDI finds sources by mDNS "
            "(avahi-daemon on Linux): where it cannot, list the sender's IP in ndi.networks.ips of "
            "~/.ndi/ndi-config.v1.json (or of $NDI_CONFIG_DIR/ndi-config.v1.json)")


def _ndi() -> Any:
    """cyndilib, imported when NDI is first used: loading the NDI runtime costs a show that never uses it nothing."""
    try:
        import cyndilib
    except ImportError as err:  # a broken install, or a platform without an NDI runtime in the wheel
        raise LiveError(f"NDI is not available: {err}", "pip install cyndilib==0.1.3 (make install)") from None
    return cyndilib


class NdiSection(KindSection):
    """`[[outputs]] kind = "ndi"`: the show as an NDI source on the network."""

    name: str = ""  # the NDI source name; "" = the show's name


class NdiOutput(BasePart):
    """The final frames (as BGRX, NDI's 4-byte BGR) and the show's sound (float planar stereo) to an NDI sender.

    Nothing here waits: the sender is not clocked (the show's own frame loop is the clock), video goes out
    asynchronously, and NDI stamps each frame as it is handed over, which is when the show puts it out (`t`)."""

    def __init__(self, name: str, width: int, height: int, fps: float, samplerate: int | None) -> None:
        self.name, self.width, self.height, self.fps, self.samplerate = name, width, height, fps, samplerate
        self.frames = 0
        self._sender: Any = None
        self._bgrx = np.empty((height, width, 4), np.uint8)
        self._planar = np.empty((2, AUDIO_CHUNK), np.float32)
        self._audio_origin: int | None = None
        self._audio_sent = 0  # samples sent, silence for gaps included

    @classmethod
    def from_show(cls, section: NdiSection, show: Show) -> NdiOutput:
        rate = show.audio.samplerate if show.audio.enabled else None
        return cls(section.name or show.name, show.video.width, show.video.height, show.video.fps, rate)

    def open(self) -> str:
        if self._sender is not None:
            return ""
        ndi = _ndi()
        try:
            sender = ndi.Sender(self.name, clock_video=False, clock_audio=False)
            video = ndi.VideoSendFrame()
            video.set_resolution(self.width, self.height)
            video.set_fourcc(ndi.FourCC.BGRX)
            video.set_frame_rate(Fraction(self.fps).limit_denominator(1001))
            sender.set_video_frame(video)
            if self.samplerate:
                audio = ndi.AudioSendFrame(max_num_samples=AUDIO_CHUNK)
                audio.sample_rate, audio.num_channels = self.samplerate, 2
                sender.set_audio_frame(audio)
            sender.open()
        except Exception as err:  # the runtime's own failures (no memory, no network) come as bare exceptions
            raise LiveError(f"could not start the NDI sender '{self.name}': {type(err).__name__}: {err}",
                            "check the network, or remove the [[outputs]] kind = \"ndi\" table") from None
        self._sender = sender
        sound = f", with the show's sound at {self.samplerate} Hz" if self.samplerate else ""
        return f"Output: NDI source '{sender.name}'{sound}"

    def write(self, image: np.ndarray, t: float) -> None:
        if self._sender is None:
            return
        if image.shape[:2] != (self.height, self.width):
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        cv2.cvtColor(image, cv2.COLOR_BGR2BGRA, dst=self._bgrx)  # one SIMD pass, into a buffer reused every frame
        if not self._sender.write_video_async(self._bgrx.reshape(-1)):
            raise LiveError(f"the NDI sender '{self.name}' stopped", "restart the show")
        self.frames += 1

    def write_audio(self, samples: np.ndarray, position: int) -> None:
        """(frames, 2) float32 samples whose first is at `position` in the tap's timeline; what the tap dropped is
        sent as silence, so receivers keep the sound in step with the picture."""
        if self._sender is None or not self.samplerate or not len(samples):
            return
        if self._audio_origin is None:
            self._audio_origin = position
        gap = position - self._audio_origin - self._audio_sent
        if gap < 0:  # overlaps what was sent: only the new part
            samples = samples[-gap:]
        while gap > 0:
            silence = min(gap, SILENCE_CHUNK)
            self._send_audio(np.zeros((silence, 2), np.float32))
            gap -= silence
        self._send_audio(samples)

    def _send_audio(self, samples: np.ndarray) -> None:
        for start in range(0, len(samples), AUDIO_CHUNK):
            chunk = samples[start:start + AUDIO_CHUNK]
            planar = self._planar[:, :len(chunk)]
            planar[...] = chunk.T
            if not self._sender.write_audio(planar):
                raise LiveError(f"the NDI sender '{self.name}' stopped", "restart the show")
            self._audio_sent += len(chunk)

    def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.close()

    def stats(self) -> dict[str, Any]:
        return {"frames": self.frames, "audio_samples": self._audio_sent}

    def status(self) -> str:
        sender = self._sender
        if sender is None:
            return f"NDI '{self.name}' closed"
        return f"NDI source '{sender.name}', {sender.get_num_connections(0)} receiving"


def match_source(wanted: str, names: list[str]) -> str | None:
    """The NDI source `wanted` names among `names`: its full name 'HOST (NAME)', or just NAME (the first such)."""
    if wanted in names:
        return wanted
    return next((name for name in sorted(names) if name.endswith(")") and name.split(" (", 1)[-1][:-1] == wanted),
                None)


class NdiSource:
    """An NDI sender's video as the show's camera, received as BGRX and stamped with the sender's send time (on
    this machine's clock) where the two clocks agree.

    Frames are taken through NDI's frame-sync, polled: it hands over the newest frame at once, and a new one is told
    by its timestamp. cyndilib gives every Receiver a frame-sync, and NDI's frame-sync takes the frames for itself,
    so the direct capture (Receiver.receive) saw only one frame in three to ten here (none without a time-out) while
    the frame-sync gave 28 of 30 a second."""

    paced = False  # frames come as the sender sends them
    fps = 0.0

    def __init__(self, name: str, finder: Any, receiver: Any) -> None:
        self.name = f"NDI source '{name}'"
        self.captured: float | None = None  # perf_counter() time the last frame read was sent, where known
        self._finder, self._receiver = finder, receiver
        self._frame = _ndi().VideoFrameSync()
        receiver.frame_sync.set_video_frame(self._frame)
        self._last: tuple[float, float] | None = None  # (timestamp, timecode) of the last frame read

    @classmethod
    def open(cls, spec: str | int, width: int, height: int) -> NdiSource:
        """Find the source by name (for up to FIND_S) and connect to it; LiveError naming it and what was seen."""
        wanted = str(spec).split("://", 1)[1]
        ndi = _ndi()
        finder = ndi.Finder()  # not opened: its own thread would wait in NDI holding the GIL; polled here instead
        deadline = time.perf_counter() + FIND_S
        while (found := match_source(wanted, names := finder.update_sources())) is None:
            if time.perf_counter() >= deadline:
                seen = f"sources seen: {', '.join(names)}" if names else "no NDI source seen"
                raise LiveError(f"NDI source '{wanted}' not found in {FIND_S:.0f} s ({seen})", FIND_FIX)
            time.sleep(0.1)
        receiver = ndi.Receiver(color_format=ndi.RecvColorFormat.BGRX_BGRA, bandwidth=ndi.RecvBandwidth.highest,
                                recv_name="live")
        source = cls(found, finder, receiver)
        receiver.set_source(finder.get_source(found))
        return source

    def read(self) -> np.ndarray | None:
        frame, sync = self._frame, self._receiver.frame_sync
        deadline = time.perf_counter() + READ_WAIT_S
        while True:
            sync.capture_video()
            stamp = (frame.get_timestamp_posix(), frame.get_timecode_posix())
            if frame.get_data_size() and stamp != self._last:
                break
            if time.perf_counter() >= deadline:
                return None
            time.sleep(POLL_S)
        arrived, now = time.perf_counter(), time.time()
        self._last = stamp
        width, height = frame.get_resolution()
        stride = frame.get_line_stride()
        data = frame.get_array()
        if stride < width * 4 or data.size < stride * height:  # not the 4-byte BGRX/BGRA asked for
            raise LiveError(f"{self.name} sent a frame in {frame.get_fourcc()!r}, not BGRX", "")
        age = now - stamp[0]
        self.captured = arrived - age if 0.0 <= age <= MAX_AGE_S else arrived
        pixels = data[:stride * height].reshape(height, stride)[:, :width * 4].reshape(height, width, 4)
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)

    def close(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.disconnect()
        self._finder = None


SOURCES.register("ndi", NdiSource.open)
