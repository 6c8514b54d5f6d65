"""The show's window, drawn by a process of its own.

Why a process: OpenCV's Qt HighGUI ends the whole process (Qt calls exit()) when its X server goes away, which would
take the show, its recording and its other outputs with it. In a child, a lost display ends only the child; the
show's window sink sees that at its next frame and fails like any other sink, and the show plays on.

The show publishes each frame into a seqlock in shared memory (newest wins: the output loop never waits for the
window) and reads the keys pressed from a socket; the child shows the newest frame and sends each key. Closing the
socket is the signal to stop, both ways: the show's end closes the child, the child's end is seen by the show.

    python -m live.video.window CONFIG_JSON FD    (started by live/video/output.py's WindowOutput)
"""

from __future__ import annotations

import json
import os
import sys
from multiprocessing.connection import Connection

os.environ.setdefault("QT_LOGGING_RULES", "*.warning=false")  # OpenCV's Qt HighGUI warns about fonts on every start

import cv2  # noqa: E402

from live.audio.shm_ring import Seqlock  # noqa: E402

WAIT_MS = 5  # waitKey's wait between looks at the frame: Qt's events and keys are handled in it


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


def serve(config: dict, conn: Connection) -> None:
    """Open the window, say ("opened", "") or ("error", why), then show each new frame until the show hangs up."""
    title, width, height = config["title"], config["width"], config["height"]
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)  # no toolbar
    except cv2.error as err:
        conn.send(("error", err.msg.strip()))
        return
    cv2.resizeWindow(title, width, height)
    origin = monitor_origin(config["monitor"])
    if origin:
        cv2.moveWindow(title, origin[0], origin[1])
    if config["fullscreen"]:
        cv2.setWindowProperty(title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
    frame = Seqlock(width * height * 3, name=config["frame"], dtype="uint8")
    conn.send(("opened", ""))
    shown = 0
    try:
        while not conn.poll(0):  # the show hung up (or wrote, which it never does): stop
            if frame.sequence != shown and frame.sequence % 2 == 0:
                shown = frame.sequence
                cv2.imshow(title, frame.read().reshape(height, width, 3))
            key = cv2.waitKey(WAIT_MS) & 0xFF
            if key != 0xFF:
                conn.send(("key", key))
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        frame.close()
    cv2.destroyWindow(title)
    cv2.waitKey(1)


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]), Connection(int(sys.argv[2])))
