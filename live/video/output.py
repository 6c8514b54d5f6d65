"""Outputs (sinks): where each finished frame goes. A window on a chosen monitor (fullscreen for a projector), an
.mp4 recording with the show's audio, an NDI source on the network (live/video/ndi.py), a virtual camera
(live/video/virtualcam.py), and whatever kind comes next: the show lists them in `[[outputs]]`, each a kind from SINKS.

`Outputs` hands every frame to each sink and isolates them: a sink that fails (disk full, a peer gone) is closed
and the show plays on with the others.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import Field

os.environ.setdefault("QT_LOGGING_RULES", "*.warning=false")  # OpenCV's Qt HighGUI warns about fonts on every start

import cv2  # noqa: E402

from live.errors import LiveError  # noqa: E402
from live.parts import BasePart, KindSection, Kinds, Part, close_in_reverse, open_in_order  # noqa: E402
from live.video import hud  # noqa: E402
from live.video.ndi import NdiOutput, NdiSection  # noqa: E402
from live.video.record import Recorder, RecordSection  # noqa: E402
from live.video.virtualcam import VirtualCamera, VirtualCamSection  # noqa: E402

if TYPE_CHECKING:
    from live.show import Show

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
    """An OpenCV window; Esc or q in it ends the show, other keys are left in `keys` for the player."""

    hud = True

    def __init__(self, title: str, width: int, height: int, fullscreen: bool, monitor: int) -> None:
        self.title, self.size, self.fullscreen, self.monitor = title, (width, height), fullscreen, monitor
        self.quit = self._open = False
        self.keys: list[str] = []  # keys pressed since the player last looked (it clears the list)

    @classmethod
    def from_show(cls, section: WindowSection, show: Show) -> WindowOutput:
        return cls(section.title, show.video.width, show.video.height, section.fullscreen, section.monitor)

    def open(self) -> str:
        title, (width, height) = self.title, self.size
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)  # no toolbar
        except cv2.error as err:
            raise LiveError(f"could not open a window: {err.msg.strip()}",
                            "check DISPLAY, or record instead with --record FILE.mp4") from None
        self._open = True
        cv2.resizeWindow(title, width, height)
        origin = monitor_origin(self.monitor)
        if origin:
            cv2.moveWindow(title, origin[0], origin[1])
        if self.fullscreen:
            cv2.setWindowProperty(title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
        return f"Output: window '{title}'" + (" (fullscreen)" if self.fullscreen else "")

    def status(self) -> str:
        return f"window '{self.title}'"

    def write(self, image: np.ndarray, t: float) -> None:
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key in QUIT_KEYS:
            self.quit = True
        elif key != 0xFF and len(self.keys) < 16:
            self.keys.append(chr(key))

    def close(self) -> None:
        if self._open:
            self._open = False
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)


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
