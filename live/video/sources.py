"""Video sources as kinds: the show's `[video] source` (or `--source`) names one, and its scheme picks the kind.

    builtin                      the built-in animated source (no camera needed)
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

import os
import time
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
#: URL schemes OpenCV's FFmpeg backend reads; each is registered as the OpenCV kind.
OPENCV_SCHEMES = ("file", "http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp", "mms")


class Source(Protocol):
    """What a kind's factory returns. `read` runs on the source's own reader thread and may block; `close` is
    called by that same thread only, once its last `read` has returned."""

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
    """An animated test scene made here (gradient sky, moving shapes, a clock), so a show plays with no camera."""

    name = "built-in animated source"
    paced = True  # frames come as fast as asked: they are made at the show's frame rate
    fps = 0.0

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        self._sky = np.dstack([
            120 + 100 * x / width, 60 + 120 * y / height, 200 - 120 * y / height,
        ]).clip(0, 255).astype(np.uint8)
        self._start = time.perf_counter()

    def read(self) -> np.ndarray:
        t = time.perf_counter() - self._start
        img = self._sky.copy()
        w, h = self.width, self.height
        for i in range(5):
            phase = t * (0.4 + 0.15 * i) + i * 1.3
            centre = (int(w * (0.5 + 0.38 * np.sin(phase))), int(h * (0.5 + 0.33 * np.cos(phase * 1.3))))
            colour = (int(80 + 35 * i), int(220 - 40 * i), int(60 + 45 * i))
            cv2.circle(img, centre, int(h * (0.06 + 0.02 * i)), colour, -1, cv2.LINE_AA)
        angle = t * 40.0
        box = cv2.boxPoints(((w * 0.3, h * 0.7), (w * 0.22, h * 0.12), angle)).astype(np.int32)
        cv2.fillPoly(img, [box], (30, 30, 30), cv2.LINE_AA)
        cv2.putText(img, f"live {t:6.1f}s", (int(w * 0.05), int(h * 0.15)), cv2.FONT_HERSHEY_DUPLEX,
                    h / 320, (255, 255, 255), max(1, h // 240), cv2.LINE_AA)
        return img

    def close(self) -> None:
        pass


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
