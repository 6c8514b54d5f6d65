"""Outputs (sinks): where each finished frame goes. A window on a chosen monitor (fullscreen for a projector), an
.mp4 recording with the show's audio, an NDI source on the network (live/video/ndi.py), a virtual camera
(live/video/virtualcam.py), and whatever kind comes next: the show lists them in `[[outputs]]`, each a kind from SINKS.

`Outputs` hands every frame to each sink and isolates them: a sink that fails (disk full, a peer gone) is closed
and the show plays on with the others.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import Field

os.environ.setdefault("QT_LOGGING_RULES", "*.warning=false")  # OpenCV's Qt HighGUI warns about fonts on every start

import cv2  # noqa: E402

from live.audio.shm_ring import Seqlock  # noqa: E402
from live.children import end_child  # noqa: E402
from live.errors import LiveError  # noqa: E402
from live.parts import BasePart, KindSection, Kinds, Part, close_in_reverse, open_in_order  # noqa: E402
from live.video import hud  # noqa: E402
from live.video.ndi import NdiOutput, NdiSection  # noqa: E402
from live.video.record import Recorder, RecordSection  # noqa: E402
from live.video.virtualcam import VirtualCamera, VirtualCamSection  # noqa: E402

if TYPE_CHECKING:
    from live.show import Show

QUIT_KEYS = {27, ord("q")}  # Esc, q
WINDOW_START_S = 30.0  # the window's process imports OpenCV and Qt before it answers: seconds on a loaded machine
WINDOW_STOP_S = 2.0


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


class Sink(Part, Protocol):
    """Takes each finished frame, shown at perf_counter() time `t`. A sink that also takes the show's sound has
    `write_audio(samples, position)`; one that shows the HUD to the performer has `hud = True`."""

    def write(self, image: np.ndarray, t: float) -> None: ...


class WindowSection(KindSection):
    """`[[outputs]] kind = "window"`: a window, fullscreen on a monitor for a projector."""

    fullscreen: bool = False
    monitor: int = Field(0, ge=0)
    title: str = "live"


class WindowOutput(BasePart):
    """A window, drawn by a process of its own (live/video/window.py), so a display that goes away fails this sink
    and not the show; Esc or q in it ends the show, other keys are left in `keys` for the player."""

    hud = True

    def __init__(self, title: str, width: int, height: int, fullscreen: bool, monitor: int) -> None:
        self.title, self.size, self.fullscreen, self.monitor = title, (width, height), fullscreen, monitor
        self.quit = False
        self.keys: list[str] = []  # keys pressed since the player last looked (it clears the list)
        self.process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._frame: Seqlock | None = None

    @classmethod
    def from_show(cls, section: WindowSection, show: Show) -> WindowOutput:
        return cls(section.title, show.video.width, show.video.height, section.fullscreen, section.monitor)

    def open(self) -> str:
        width, height = self.size
        self._frame = Seqlock(width * height * 3, dtype=np.uint8)
        config = {"title": self.title, "width": width, "height": height, "fullscreen": self.fullscreen,
                  "monitor": self.monitor, "frame": self._frame.name}
        mine, theirs = socket.socketpair()
        # a plain interpreter running the module (as the synth's render process): spawn would import __main__ again
        self.process = subprocess.Popen([sys.executable, "-m", "live.video.window", json.dumps(config),
                                         str(theirs.fileno())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(mine.detach())
        try:
            word = self._conn.recv() if self._conn.poll(WINDOW_START_S) else ("error", "it did not open in time")
        except (EOFError, OSError):
            word = ("error", f"its process ended (exit code {self.process.wait(WINDOW_STOP_S)})")
        if word[0] != "opened":
            self.close()
            raise LiveError(f"could not open a window: {word[1]}",
                            "check DISPLAY, or record instead with --record FILE.mp4")
        return f"Output: window '{self.title}'" + (" (fullscreen)" if self.fullscreen else "")

    def status(self) -> str:
        return f"window '{self.title}'"

    def write(self, image: np.ndarray, t: float) -> None:
        code = self.process.poll() if self.process else None
        if code is not None:
            raise LiveError(f"window '{self.title}' is gone: its display went away (the window's process ended, "
                            f"exit code {code})", "start the show again once the display is back")
        width, height = self.size
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        self._frame.write(image.reshape(-1))
        try:
            while self._conn.poll(0):
                _, key = self._conn.recv()
                if key in QUIT_KEYS:
                    self.quit = True
                elif len(self.keys) < 16:
                    self.keys.append(chr(key))
        except (EOFError, OSError):  # the process ended: said at the next frame
            pass

    def close(self) -> None:
        """Hang up (the window's process closes its window and ends), waiting at most WINDOW_STOP_S."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.process is not None:
            end_child(self.process, WINDOW_STOP_S)
            self.process = None
        if self._frame is not None:
            self._frame.close()
            self._frame = None


#: Sink kinds for `[[outputs]]`: factory(section, show) -> Sink.
SINKS: Kinds[Callable[[Any, "Show"], Sink]] = Kinds("output", "[[outputs]] kind")
SINKS.register("window", WindowOutput.from_show, WindowSection)
SINKS.register("record", Recorder.from_show, RecordSection)
SINKS.register("ndi", NdiOutput.from_show, NdiSection)
SINKS.register("virtualcam", VirtualCamera.from_show, VirtualCamSection)


def output_sections(show: Show, record: Path | None = None, window: bool | None = None,
                    say: Callable[[str], None] = print) -> list[KindSection]:
    """The show's `[[outputs]]` as this run plays them: `--record` adds a recording, `--no-window` drops windows,
    and with no display a window becomes a recording in recordings/ (said in one line)."""
    sections = [s for s in show.outputs if window is not False or s.kind != "window"]
    if record is not None:
        sections = [s for s in sections if s.kind != "record"] + [RecordSection(kind="record", path=str(record))]
    if any(s.kind == "window" for s in sections) and not has_display():
        sections = [s for s in sections if s.kind != "window"]
        display = os.environ.get("DISPLAY")
        why = f"display {display} does not answer" if display else "no display here"
        if not any(s.kind == "record" for s in sections):
            path = Path("recordings").resolve() / f"{show.name}-{time.strftime('%Y%m%d-%H%M%S')}.mp4"
            sections.append(RecordSection(kind="record", path=str(path)))
            say(f"Output: {why}; recording to {path}")
        else:
            say(f"Output: {why}; no window")
    return sections


class Outputs(BasePart):
    """Every sink of the show, fed each frame in order; a sink that fails is closed, said once, and the show plays
    on with the rest. Opened in order and closed in reverse like any part."""

    def __init__(self, sinks: Sequence[Sink], say: Callable[[str], None] = print) -> None:
        self.sinks, self.say = list(sinks), say
        self.live: list[Sink] = []  # opened and not failed, in order
        self.failed: list[str] = []  # "what: why" of each sink that failed, for the status and the summary

    def open(self) -> str:
        """Open each sink (a path that cannot be written fails the show here, before it plays)."""
        return "\n".join(open_in_order(self.sinks, self.live, self.say))

    @property
    def window(self) -> WindowOutput | None:
        return next((s for s in self.live if isinstance(s, WindowOutput)), None)

    def wants_audio(self) -> bool:
        return any(hasattr(s, "write_audio") for s in self.live)

    def write(self, image: np.ndarray, t: float, audio: tuple[int, np.ndarray] | None = None,
              hud_lines: list[str] | None = None) -> None:
        """`image` to every live sink (with the HUD drawn for those that show it); `audio`, the sound since the last
        frame as (its position in the audio timeline, samples), to those that take it."""
        overlay = None
        for sink in list(self.live):
            try:
                if hud_lines and getattr(sink, "hud", False):
                    overlay = hud.draw(image, hud_lines) if overlay is None else overlay
                    sink.write(overlay, t)
                else:
                    sink.write(image, t)
                if audio is not None and hasattr(sink, "write_audio"):
                    sink.write_audio(audio[1], audio[0])
            except Exception as err:  # any failure of one output (disk full, peer gone) must not stop the show
                self._fail(sink, err)

    def _fail(self, sink: Sink, err: Exception) -> None:
        if isinstance(err, LiveError):  # the sink's own words: it names its file or peer and the fix
            why, fix = err.what, err.fix
        else:
            why, fix = f"{sink.status() or type(sink).__name__} failed: {type(err).__name__}: {err}", ""
        self.live.remove(sink)
        self.failed.append(why)
        self.say(f"Output: {why}; closed it, the show goes on" + (f" (fix: {fix})" if fix else ""))
        try:
            sink.close()
        except Exception as again:  # a broken sink may fail to close too; it is already out of the show
            self.say(f"Output: closing it failed too ({again})")

    def close(self) -> None:
        close_in_reverse(self.live, self.say)

    def stats(self) -> dict[str, Any]:
        return {"sinks": len(self.sinks), "failures": len(self.failed)}

    def status(self) -> str:
        return "; ".join([s.status() for s in self.live] + [f"FAILED {why}" for why in self.failed])
