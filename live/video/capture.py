"""Capture: camera, file or URL through OpenCV, or the built-in animated source, into a newest-frame mailbox.

The show always plays: a camera that will not open, or one unplugged mid-show, is replaced by the built-in source
(and retried in the background), and the user is told once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # before cv2 loads: camera probing is noisy at WARN

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from live.mailbox import Mailbox  # noqa: E402
from live.stdio import captured_output  # noqa: E402
from live.video.frame import Frame  # noqa: E402

#: Consecutive failed reads after which a live camera counts as lost.
LOST_AFTER = 15
RETRY_EVERY_S = 2.0


class BuiltinSource:
    """An animated test scene made here (gradient sky, moving shapes, a clock), so a show plays with no camera."""

    name = "built-in animated source"
    paced = True  # frames come as fast as asked: the capture loop paces them

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
    """A camera index, video file or stream URL; files loop and are paced at their own frame rate."""

    def __init__(self, spec: int | str, capture: cv2.VideoCapture) -> None:
        self.spec = spec
        self.cap = capture
        self.is_file = isinstance(spec, str) and Path(spec).is_file()
        self.paced = self.is_file
        self.name = f"camera {spec}" if isinstance(spec, int) else f"'{spec}'"
        self.fps = capture.get(cv2.CAP_PROP_FPS) if self.is_file else 0.0

    def read(self) -> np.ndarray | None:
        ok, img = self.cap.read()
        if not ok and self.is_file:  # end of file: loop
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, img = self.cap.read()
        return img if ok else None

    def close(self) -> None:
        self.cap.release()


def parse_source(spec: int | str) -> int | str:
    """'0' and 0 mean camera 0; anything else is a path or URL."""
    if isinstance(spec, str) and spec.strip().isdigit():
        return int(spec)
    return spec


def open_opencv(spec: int | str, width: int, height: int) -> tuple[OpenCVSource | None, str]:
    """Open a camera/file/URL and read one frame to prove it works; (None, why) when it does not."""
    if isinstance(spec, str) and "://" not in spec and not Path(spec).exists():
        return None, f"no such file: {spec}"
    with captured_output():  # OpenCV backends print their probing failures
        cap = cv2.VideoCapture(spec)
        if isinstance(spec, int) and cap.isOpened():
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        ok = cap.isOpened() and cap.read()[0]
    if not ok:
        cap.release()
        return None, "it did not open" if isinstance(spec, int) else "OpenCV could not read a frame from it"
    if isinstance(spec, str) and Path(spec).is_file():
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return OpenCVSource(spec, cap), ""


class Capture:
    """The capture thread: reads the source, stamps each frame with its capture time, posts it to `out`."""

    def __init__(self, spec: int | str, width: int, height: int, fps: float, out: Mailbox[Frame],
                 say: Callable[[str], None] = print) -> None:
        self.spec = parse_source(spec)
        self.width, self.height, self.fps = width, height, fps
        self.out = out
        self.say = say
        self.frames = 0
        self._stop = threading.Event()
        self._switch: int | str | None = None
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self.source: BuiltinSource | OpenCVSource = self._open_first()

    def _open_first(self) -> BuiltinSource | OpenCVSource:
        if self.spec == "builtin":
            self.say(f"Source: {BuiltinSource.name}")
            return BuiltinSource(self.width, self.height)
        source, why = open_opencv(self.spec, self.width, self.height)
        if source:
            self.say(f"Source: {source.name}")
            return source
        what = f"camera {self.spec}" if isinstance(self.spec, int) else f"source '{self.spec}'"
        self.say(f"Source: {what} unavailable ({why}); playing the built-in animated source instead "
                 f"(fix: connect a camera, or set [video] source / --source to a camera index, file or URL)")
        return BuiltinSource(self.width, self.height)

    def open(self) -> str:
        self._thread.start()
        return ""

    def stats(self) -> dict:
        return {"frames": self.frames, "source": self.source.name, "fallback_s": 0.0}

    def status(self) -> str:
        return f"source {self.source.name}"

    def switch(self, spec: int | str) -> None:
        """Play another source from the next frame on (a re-saved show). It is opened on the capture thread, so
        the picture holds its last frame meanwhile rather than the show waiting for a camera."""
        self._switch = parse_source(spec)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self.source.close()

    def _interval(self) -> float:
        if not self.source.paced:
            return 0.0
        rate = getattr(self.source, "fps", 0.0) or self.fps
        return 1.0 / rate if rate > 0 else 0.0

    def _run(self) -> None:
        failures, next_retry = 0, 0.0
        due = time.perf_counter()
        while not self._stop.is_set():
            if self._switch is not None:
                self.spec, self._switch = self._switch, None
                self.source.close()
                self.source = self._open_first()  # the built-in source, retried, if it will not open
                failures, next_retry, due = 0, 0.0, time.perf_counter()
            interval = self._interval()
            if interval:
                due += interval
                delay = due - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    due = time.perf_counter()  # fell behind: don't burst to catch up
            img = self.source.read()
            captured = time.perf_counter()
            if img is None:
                failures += 1
                if failures >= LOST_AFTER:
                    self.say(f"Source: {self.source.name} lost; playing the built-in source and retrying every "
                             f"{RETRY_EVERY_S:.0f} s")
                    self.source.close()
                    self.source = BuiltinSource(self.width, self.height)
                    next_retry, failures = captured + RETRY_EVERY_S, 0
                continue
            failures = 0
            if isinstance(self.source, BuiltinSource) and self.spec != "builtin" and captured >= next_retry:
                next_retry = captured + RETRY_EVERY_S
                self._reconnect()
            if img.shape[1] != self.width or img.shape[0] != self.height:
                img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
            self.out.put(Frame(img, captured, self.frames))
            self.frames += 1

    def _reconnect(self) -> None:
        source, _ = open_opencv(self.spec, self.width, self.height)
        if source:
            self.source.close()
            self.source = source
            self.say(f"Source: {source.name} is back")
