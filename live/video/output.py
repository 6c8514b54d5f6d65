"""Outputs: a window on a chosen monitor (fullscreen for a projector); the .mp4 recorder is in record.py."""

from __future__ import annotations

import os
import socket
import sys

import numpy as np

os.environ.setdefault("QT_LOGGING_RULES", "*.warning=false")  # OpenCV's Qt HighGUI warns about fonts on every start

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
