"""Video sources as kinds: the show's `[video] source` (or `--source`) names one, and its scheme picks the kind.

    builtin                      the built-in animated source: a photo under slow camera motion (no camera needed)
    0, "1", ...                  a camera index                      } all through OpenCV
    clip.mp4, /tmp/fifo          a file path (a FIFO too)            }
    http://, rtsp://, udp://...  a stream URL OpenCV's FFmpeg reads  }

A kind is a factory in `SOURCES`:

    factory(spec: str | int, width: int, height: int) -> Source

It opens the source (it may block: the capture calls it on a reader thread of its own) and returns it, or raises
LiveError(what, fix) saying why it would not open. A new kind is one line, also from outside the package:
`SOURCES.register("myscheme", factory)` makes `myscheme://...` playable.
"""

from __future__ import annotations

import functools
import os
import time
from importlib import resources
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from live.errors import LiveError
from live.parts import Kinds
from live.stdio import captured_output

# Sources open and read on their own threads, where OpenCV's console prints (camera probing, FFmpeg's "Stream
# timeout") cannot be set aside without hiding every other thread's output too; each failure is said in one line of
# ours instead. cv2 may already be loaded by another module, so its level is set here, not only in the environment;
# OPENCV_LOG_LEVEL=INFO (and OPENCV_FFMPEG_LOGLEVEL=32) bring OpenCV's and FFmpeg's own messages back for debugging.
_LOG_LEVELS = {"SILENT": 0, "FATAL": 1, "ERROR": 2, "WARNING": 3, "WARN": 3, "INFO": 4, "DEBUG": 5, "VERBOSE": 6}
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when the FFmpeg backend first opens
cv2.utils.logging.setLogLevel(_LOG_LEVELS.get(os.environ["OPENCV_LOG_LEVEL"].upper(), 0))

#: Bounds on a stream URL's blocking calls inside FFmpeg, so a reader left blocked by a dead server ends by itself.
STREAM_OPEN_TIMEOUT_MS = 10_000
STREAM_READ_TIMEOUT_MS = 5_000
#: The built-in source's photograph, in live/assets (its provenance and licence are in the README there).
BUILTIN_PHOTO = "astronaut.jpg"
#: URL schemes OpenCV's FFmpeg backend reads; each is registered as the OpenCV kind.
OPENCV_SCHEMES = ("file", "http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp", "mms")


class Source(Protocol):
    """What a kind's factory returns. `read` runs on the source's own reader thread and may block; `close` is
    called by that same thread only, once its last `read` has returned. A source that knows when its frames were
    captured (an NDI sender stamps each) also sets `captured`, the perf_counter() time of the frame `read` just
    returned; for the others the time `read` returned is used."""

    name: str  # how the user is told about it: "camera 0", "'http://...'"
    paced: bool  # frames come as fast as asked (a file, a generator): the reader paces it to `fps`
    fps: float  # its own frame rate when paced; 0 = the show's

    def read(self) -> np.ndarray | None:
        """The next uint8 HWC BGR image (any size: it is resized to the show's), or None for no frame now."""
        ...

    def close(self) -> None: ...


SOURCES: Kinds = Kinds("source", "[video] source")


def parse_source(spec: int | str) -> int | str:
    """'0' and 0 mean camera 0; anything else is a name, path or URL."""
    if isinstance(spec, str) and spec.strip().isdigit():
        return int(spec)
    return spec


def describe(spec: int | str) -> str:
    """The source as the user is told about it."""
    return BuiltinSource.name if spec == "builtin" else (
        f"camera {spec}" if isinstance(spec, int) else f"'{spec}'")


def kind_of(spec: int | str) -> str:
    """The kind that plays `spec`: 'builtin', 'camera', 'file', or the URL scheme before '://'."""
    if spec == "builtin":
        return "builtin"
    if isinstance(spec, int):
        return "camera"
    if "://" in spec:
        return spec.split("://", 1)[0].lower()
    return "file"


def factory_for(spec: int | str):
    """The factory of `spec`'s kind; LiveError naming the spec and the schemes there are if none plays it."""
    kind = kind_of(spec)
    if kind not in SOURCES:
        schemes = ", ".join(f"{name}://" for name in SOURCES.names() if name not in ("builtin", "camera", "file"))
        raise LiveError(f"[video] source '{spec}': no source kind plays '{kind}://' URLs",
                        f"use 'builtin', a camera index, a file path or a URL with one of {schemes}; or register "
                        f"the kind first (live.video.sources.SOURCES.register(\"{kind}\", factory))")
    return SOURCES.get(kind)


class BuiltinSource:
    """A real photograph with a person in it (NASA's portrait of Eileen Collins, public domain: live/assets/README.md)
    under slow camera motion, so a show plays with no camera and still shows what its art does to a real scene.

    The motion is a Ken Burns pan and zoom that never leaves the photo; a frame depends only on the time since the
    source started (`frame(t)`), so two sources at the same time agree."""

    name = "built-in animated source"
    paced = True  # frames come as fast as asked: they are made at the show's frame rate
    fps = 0.0

    #: The view's zoom over the photo's cover fit swings between these (the lower one leaves room to pan sideways).
    ZOOM_MIN, ZOOM_MAX = 1.08, 1.13
    ZOOM_PERIOD_S = 29.0
    #: The view's centre runs an ellipse this big (a fraction of the view, capped by the room the zoom leaves).
    PAN = 0.04
    PAN_PERIOD_S = 41.0  # not a multiple of the zoom's: the motion does not visibly repeat
    #: Where in the photo (fractions of its width and height) the view centres, as far as the photo allows: the face
    #: sits high in this portrait, and a wide show's crop of it would otherwise cut the top of the head.
    FOCUS = (0.5, 0.4)

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        photo = _builtin_photo()
        # Shrunk once to about the most zoomed view's size: each frame then samples it near 1:1, so INTER_LINEAR
        # neither aliases a small show's frames nor spends time on pixels it skips. A large show keeps the original.
        shrink = min(1.0, max(width / photo.shape[1], height / photo.shape[0]) * self.ZOOM_MAX)
        self._photo = photo if shrink == 1.0 else cv2.resize(
            photo, (round(photo.shape[1] * shrink), round(photo.shape[0] * shrink)), interpolation=cv2.INTER_AREA)
        self._start = time.perf_counter()

    def read(self) -> np.ndarray:
        return self.frame(time.perf_counter() - self._start)

    def frame(self, t: float) -> np.ndarray:
        """The view `t` seconds after the start: the photo cropped and scaled to the show's size."""
        ph, pw = self._photo.shape[:2]
        zoom = self.ZOOM_MIN + (self.ZOOM_MAX - self.ZOOM_MIN) * 0.5 * (1 - np.cos(2 * np.pi * t / self.ZOOM_PERIOD_S))
        step = 1 / (max(self.width / pw, self.height / ph) * zoom)  # photo pixels per output pixel
        view_w, view_h = self.width * step, self.height * step
        angle = 2 * np.pi * t / self.PAN_PERIOD_S
        centre = []
        for size, view, focus, swing in ((pw, view_w, self.FOCUS[0], np.sin(angle)),
                                         (ph, view_h, self.FOCUS[1], np.cos(angle))):
            room = (size - view) / 2  # how far the view's centre may stray from the photo's and stay inside it
            reach = min(self.PAN * view, 0.9 * room)
            centre.append(size / 2 + np.clip(focus * size - size / 2, reach - room, room - reach) + reach * swing)
        cx, cy = centre
        # Output pixel centre i + 0.5 lands on photo coordinate left + (i + 0.5) * step; OpenCV indexes pixel centres.
        left, top = cx - view_w / 2, cy - view_h / 2
        to_photo = np.array([[step, 0, left + 0.5 * step - 0.5], [0, step, top + 0.5 * step - 0.5]])
        return cv2.warpAffine(self._photo, to_photo, (self.width, self.height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)

    def close(self) -> None:
        pass


@functools.cache
def _builtin_photo() -> np.ndarray:
    """The built-in source's photograph as BGR, decoded once per process (a capture makes a source per start)."""
    data = (resources.files("live") / "assets" / BUILTIN_PHOTO).read_bytes()  # works from a wheel or a zip too
    photo = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    photo.flags.writeable = False  # shared by every source
    return photo


class OpenCVSource:
    """A camera index, video file, FIFO or stream URL through cv2.VideoCapture; files loop at their own rate."""

    def __init__(self, spec: int | str, capture: cv2.VideoCapture) -> None:
        self.spec = spec
        self.cap = capture
        self.is_file = isinstance(spec, str) and Path(spec).is_file()  # not a FIFO: that is a live stream
        self.paced = self.is_file
        self.name = describe(spec)
        self.fps = capture.get(cv2.CAP_PROP_FPS) if self.is_file else 0.0

    @classmethod
    def open(cls, spec: int | str, width: int, height: int) -> OpenCVSource:
        """Open it and read one frame to prove it plays; LiveError saying why not. May block (a FIFO waits for
        its writer, a server for its first bytes)."""
        spec = parse_source(spec)
        if isinstance(spec, str) and "://" not in spec and not Path(spec).exists():
            raise LiveError(f"no such file: {spec}", "check the path in [video] source / --source")
        if isinstance(spec, str) and "://" in spec:
            cap = cv2.VideoCapture(spec, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_OPEN_TIMEOUT_MS,
                                                       cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_READ_TIMEOUT_MS])
        else:
            cap = cv2.VideoCapture(spec)
        if isinstance(spec, int) and cap.isOpened():
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if not (cap.isOpened() and cap.read()[0]):
            cap.release()
            if isinstance(spec, int):
                raise LiveError(f"camera {spec} did not open", "connect a camera, or set [video] source / "
                                "--source to another camera index, a file, a URL or 'builtin'")
            raise LiveError(f"OpenCV could not read a frame from '{spec}'",
                            "check that it plays in another player (ffplay), or that its server is sending")
        if isinstance(spec, str) and Path(spec).is_file():
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return cls(spec, cap)

    def read(self) -> np.ndarray | None:
        ok, img = self.cap.read()
        if not ok and self.is_file:  # end of file: loop
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, img = self.cap.read()
        return img if ok else None

    def close(self) -> None:
        self.cap.release()


def open_opencv(spec: int | str, width: int, height: int) -> tuple[OpenCVSource | None, str]:
    """A synchronous probe for the main thread (`live doctor`): the source, or (None, why), with the backends'
    console output set aside."""
    with captured_output():
        try:
            return OpenCVSource.open(spec, width, height), ""
        except LiveError as err:
            return None, err.what


SOURCES.register("builtin", lambda spec, width, height: BuiltinSource(width, height))
for _kind in ("camera", "file", *OPENCV_SCHEMES):
    SOURCES.register(_kind, OpenCVSource.open)
