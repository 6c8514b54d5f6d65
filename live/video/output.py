"""Outputs: a window on a chosen monitor (fullscreen for a projector) and an .mp4 recorder with the show's audio."""

from __future__ import annotations

import os
import socket
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_LOGGING_RULES", "*.warning=false")  # OpenCV's Qt HighGUI warns about fonts on every start

import av  # noqa: E402
import cv2  # noqa: E402

from live.errors import LiveError  # noqa: E402

QUIT_KEYS = {27, ord("q")}  # Esc, q


def has_display() -> bool:
    """Whether a window can be shown: on Linux, a Wayland display or an X server that answers.

    Qt aborts the whole process when DISPLAY names an X server that is not there, so it is tried first.
    """
    if not sys.platform.startswith("linux"):
        return True
    if os.environ.get("WAYLAND_DISPLAY"):
        return True
    display = os.environ.get("DISPLAY", "")
    return bool(display) and _x_server_answers(display)


def _x_server_answers(display: str) -> bool:
    host, _, screen = display.rpartition(":")
    number = screen.split(".")[0]
    if not number.isdigit():
        return False
    try:
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1.0)
                sock.connect(f"/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + int(number)), timeout=1.0).close()
    except OSError:
        return False
    return True


def monitor_origin(index: int) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of monitor `index`, or None when it cannot be told."""
    try:
        import screeninfo

        monitors = screeninfo.get_monitors()
    except Exception:  # screeninfo raises its own error types per platform when it finds no monitor
        return None
    if not monitors:
        return None
    m = monitors[min(index, len(monitors) - 1)]
    return m.x, m.y, m.width, m.height


class WindowOutput:
    """An OpenCV window; Esc or q in it ends the show."""

    def __init__(self, title: str, width: int, height: int, fullscreen: bool, monitor: int) -> None:
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)  # no toolbar
        except cv2.error as err:
            raise LiveError(f"could not open a window: {err.msg.strip()}",
                            "check DISPLAY, or record instead with --record FILE.mp4") from None
        cv2.resizeWindow(title, width, height)
        origin = monitor_origin(monitor)
        if origin:
            cv2.moveWindow(title, origin[0], origin[1])
        if fullscreen:
            cv2.setWindowProperty(title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
        self.quit = False
        self.keys: list[str] = []  # keys pressed since the player last looked (it clears the list)

    def write(self, image: np.ndarray) -> None:
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key in QUIT_KEYS:
            self.quit = True
        elif key != 0xFF and len(self.keys) < 16:
            self.keys.append(chr(key))

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)


class Recorder:
    """H.264 + AAC into an .mp4. Video is stamped by wall-clock time, audio by its sample count, so they stay in
    sync when frames are dropped; the audio tap has silence wherever the sound stopped, so it never runs early."""

    def __init__(self, path: Path, width: int, height: int, fps: float, samplerate: int | None) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(path), "w")
        except (OSError, av.FFmpegError) as err:
            raise LiveError(f"cannot record to {path}: {err}", "choose a writable .mp4 path") from None
        self.video = self.container.add_stream("libx264", rate=round(fps))
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        self.video.options = {"preset": "ultrafast", "tune": "zerolatency"}
        self.video.codec_context.time_base = Fraction(1, 1000)
        self.audio = None
        if samplerate:
            self.audio = self.container.add_stream("aac", rate=samplerate)
            self.audio.layout = "stereo"
        self.samplerate = samplerate
        self._audio_pts = 0
        self._start: float | None = None
        self._last_ms = -1
        self.frames = 0

    def write(self, image: np.ndarray, t: float) -> None:
        """Add a frame shown at perf_counter() time `t`."""
        if self._start is None:
            self._start = t
        ms = int((t - self._start) * 1000)
        if ms <= self._last_ms:  # two frames in one millisecond: keep the stream strictly increasing
            ms = self._last_ms + 1
        self._last_ms = ms
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = ms, Fraction(1, 1000)
        self.container.mux(self.video.encode(frame))
        self.frames += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Append (frames, 2) float32 samples."""
        if self.audio is None or not len(samples):
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T, np.float32), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts = self.samplerate, self._audio_pts
        self._audio_pts += len(samples)
        self.container.mux(self.audio.encode(frame))

    def close(self) -> None:
        self.container.mux(self.video.encode())
        if self.audio is not None:
            self.container.mux(self.audio.encode())
        self.container.close()
