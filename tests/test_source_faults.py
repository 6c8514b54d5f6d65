"""A source that stalls, restarts or hangs never freezes the show; a new source kind is one register line.

The end-to-end tests play real sources through `live run` (an MJPEG server on 127.0.0.1 that pauses with its
connection open; a FIFO whose ffmpeg writer is killed and restarted) with the model at strength 0, so the recording
shows the camera image and the stream's colour can be told from the built-in source's frames.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

from live.errors import LiveError
from live.mailbox import Mailbox
from live.video.capture import CLOSE_S, RECONNECT_AFTER_S, STALL_S, Capture
from live.video.sources import SOURCES
from fixtures_live import LiveProcess, decode_frames, free_port, show_with, wait_until

STREAM_BGR = (30, 40, 220)  # the MJPEG server's solid red
FIFO_BGR = (20, 200, 60)  # the FIFO writer's solid green (ffmpeg's colour source is RGB: 0x3CC814)


def passthrough_show(tmp_path):
    """A silent show whose model passes the camera image through (strength 0), on a free OSC port."""
    return show_with(tmp_path, osc={"port": free_port()}, audio={"enabled": False},
                     params={"/video/strength": 0.0})


def is_colour(image: np.ndarray, bgr: tuple[int, int, int]) -> bool:
    pixels = image.reshape(-1, 3)
    return bool(np.abs(pixels.mean(0) - bgr).max() < 25 and pixels.std(0).max() < 20)


def check_recording(out, bgr, output: str, what: str) -> float:
    """The longest gap between recorded frames (< 1 s); the source's colour, then built-in frames for a while, then
    the colour again; each change said once and no OpenCV console noise."""
    frames = decode_frames(out)
    times = np.array([t for t, _ in frames])
    gap = float(np.diff(times).max())
    said = "\n".join(line for line in output.splitlines() if line.startswith("Source:"))
    print(f"\n{said}\n{what}: {len(frames)} frames, longest gap between output frames {gap * 1000:.0f} ms")
    assert gap < 1.0, f"{what}: the picture froze for {gap:.2f} s"
    ours = [is_colour(image, bgr) for _, image in frames]
    first, last = ours.index(True), len(ours) - 1 - ours[::-1].index(True)
    builtin = [t for (t, _), mine in zip(frames[first:last], ours[first:last]) if not mine]
    assert builtin and builtin[-1] - builtin[0] > 1.0, f"{what}: no built-in frames during the break"
    assert any(ours[first:last + 1][-10:]) and times[last] > builtin[-1], f"{what}: the source never came back"
    assert output.count("stalled") == 1 and output.count("is back") == 1, output
    assert "WARN" not in output and "Stream timeout" not in output and "Traceback" not in output, output
    return gap


class MjpegServer:
    """Solid-colour JPEG frames at 30 fps as multipart/x-mixed-replace on 127.0.0.1; `paused` holds every
    connection open without sending."""

    def __init__(self, bgr: tuple[int, int, int]) -> None:
        jpeg = cv2.imencode(".jpg", np.full((240, 320, 3), bgr, np.uint8))[1].tobytes()
        self.paused = threading.Event()
        paused = self.paused

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while True:
                        while paused.is_set():
                            time.sleep(0.01)
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                         % (len(jpeg), jpeg))
                        time.sleep(1 / 30)
                except OSError:  # the show closed the connection
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_http_stream_that_pauses_with_its_connection_open(tmp_path):
    server = MjpegServer(STREAM_BGR)
    out = tmp_path / "out.mp4"
    try:
        live = LiveProcess(["run", str(passthrough_show(tmp_path)), "--source", server.url, "--record", str(out),
                            "--for", "11", "--no-window"])
        live.wait_for(f"Source: '{server.url}' plays", timeout=30)
        time.sleep(2.0)
        server.paused.set()  # longer than RECONNECT_AFTER_S: a fresh connection is tried beside the stuck one
        live.wait_for("stalled", timeout=5)
        time.sleep(RECONNECT_AFTER_S + 1.5)
        server.paused.clear()
        live.wait_for("is back", timeout=8)
        code, output = live.finish()
    finally:
        server.close()
    assert code == 0, output
    check_recording(out, STREAM_BGR, output, "HTTP stream paused 4.5 s")


def test_fifo_whose_writer_is_killed_and_restarted(tmp_path):
    fifo = tmp_path / "video.fifo"
    os.mkfifo(fifo)
    writer = ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "color=c=0x3CC814:s=320x240:r=30",
              "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", "-y", str(fifo)]
    out = tmp_path / "out.mp4"
    first = subprocess.Popen(writer, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    try:
        live = LiveProcess(["run", str(passthrough_show(tmp_path)), "--source", str(fifo), "--record", str(out),
                            "--for", "9", "--no-window"])
        live.wait_for(f"Source: '{fifo}' plays", timeout=30)
        time.sleep(2.0)
        first.send_signal(signal.SIGKILL)
        live.wait_for("stalled", timeout=5)
        time.sleep(2.0)
        second = subprocess.Popen(writer, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # broken pipe at the end
        live.wait_for("is back", timeout=8)
        code, output = live.finish()
    finally:
        for proc in (first, second):
            if proc:
                proc.kill()
                proc.wait()
    assert code == 0, output
    check_recording(out, FIFO_BGR, output, "FIFO writer restarted after 2 s")


class BlockingSource:
    """A test kind: one frame, then every read blocks until `release` is set; records which thread closed it."""

    made: list[BlockingSource] = []

    def __init__(self, spec, width: int, height: int) -> None:
        self.name, self.paced, self.fps = f"'{spec}'", False, 0.0
        self.release = threading.Event()
        self.reads = 0
        self.reading = False
        self.closed_by: str | None = None
        self.closed_while_reading = False
        BlockingSource.made.append(self)

    def read(self) -> np.ndarray | None:
        self.reads += 1
        if self.reads > 1:
            self.reading = True
            self.release.wait()
            self.reading = False
        return np.full((48, 64, 3), 255, np.uint8)

    def close(self) -> None:
        self.closed_while_reading = self.reading
        self.closed_by = threading.current_thread().name


@pytest.fixture
def blocking_kind():
    BlockingSource.made.clear()
    SOURCES.register("blocking", BlockingSource)
    yield BlockingSource.made
    for source in BlockingSource.made:
        source.release.set()


def test_close_is_bounded_and_the_blocked_reader_releases_its_own_source(blocking_kind):
    out: Mailbox = Mailbox()
    capture = Capture("blocking://x", 64, 48, 30, out, say=lambda _: None)
    capture.open()
    assert wait_until(lambda: capture.stats()["stalls"] == 1, timeout=3)  # its read blocks: declared stalled
    assert wait_until(lambda: capture.stats()["fallback_s"] > 0.3, timeout=3)  # and the built-in fills in
    frame = out.get(1.0)
    assert frame is not None and frame.image.shape == (48, 48 * 4 // 3, 3) and frame.image.std() > 0  # built-in
    source = blocking_kind[0]
    t0 = time.perf_counter()
    capture.close()
    took = time.perf_counter() - t0
    print(f"\nclose() with its source blocked in read(): {took * 1000:.0f} ms")
    assert took < CLOSE_S + 0.5
    assert source.reading and source.closed_by is None  # nobody released it under the read in progress
    capture.close()  # safe twice
    source.release.set()
    assert wait_until(lambda: source.closed_by is not None, timeout=2)
    assert source.closed_by.startswith("source ") and not source.closed_while_reading  # its reader, after the read


def test_a_stuck_reader_is_replaced_once_and_abandoned_readers_do_not_pile_up(blocking_kind):
    out: Mailbox = Mailbox()
    capture = Capture("blocking://y", 64, 48, 30, out, say=lambda _: None)
    capture.open()
    try:
        assert wait_until(lambda: len(blocking_kind) == 2, timeout=RECONNECT_AFTER_S + 2)  # a fresh reader
        time.sleep(2 * RECONNECT_AFTER_S)  # the fresh one blocks too, but the first is still stuck: no third
        stats = capture.stats()
        assert len(blocking_kind) == 2 and stats["reconnects"] == 1 and stats["abandoned"] == 1, stats
        assert stats["state"] == "stalled" and stats["source"] == "built-in animated source"
        assert "stalled" in capture.status() and "built-in playing" in capture.status()
        blocking_kind[1].release.set()  # the fresh connection delivers: it plays again
        assert wait_until(lambda: capture.stats()["state"] == "playing", timeout=2)
        assert capture.stats()["source"] == "'blocking://y'"
        blocking_kind[0].release.set()  # the abandoned one ends by itself and closes its source
        assert wait_until(lambda: blocking_kind[0].closed_by is not None and capture.stats()["abandoned"] == 0)
    finally:
        capture.close()


class PatternSource:
    """A new source kind in a few lines: `testpattern://RRGGBB` plays that solid colour."""

    paced, fps = True, 0.0  # paced at the show's rate

    def __init__(self, spec: str, width: int, height: int) -> None:
        self.name = f"test pattern {spec}"
        rgb = bytes.fromhex(spec.split("://", 1)[1])
        self.image = np.full((height, width, 3), tuple(rgb[::-1]), np.uint8)

    def read(self) -> np.ndarray:
        return self.image

    def close(self) -> None:
        pass


def test_a_new_source_kind_is_one_register_line():
    SOURCES.register("testpattern", PatternSource)
    out: Mailbox = Mailbox()
    said: list[str] = []
    capture = Capture("testpattern://ff8000", 64, 48, 30, out, say=said.append)
    try:
        assert "testpattern://ff8000" in capture.open()
        assert wait_until(lambda: capture.stats()["state"] == "playing", timeout=3)
        frame = out.get(1.0)
        assert frame is not None and tuple(frame.image[0, 0]) == (0, 128, 255)
        assert capture.stats()["source"] == "test pattern testpattern://ff8000"
        assert said == ["Source: test pattern testpattern://ff8000 plays"]
        time.sleep(1.0)
        assert 20 <= capture.stats()["frames"] <= 45  # paced at the show's 30 fps
    finally:
        capture.close()


def test_an_unknown_scheme_says_which_schemes_there_are():
    with pytest.raises(LiveError) as err:
        Capture("nosuch://cam", 64, 48, 30, Mailbox())
    message = str(err.value)
    assert "nosuch://cam" in message and "http://" in message and "rtsp://" in message
    assert "SOURCES.register" in err.value.fix
    said: list[str] = []
    capture = Capture("builtin", 64, 48, 30, Mailbox(), say=said.append)
    capture.switch("nosuch://cam")  # a re-saved show with a bad source: said, and the show plays on
    assert "not switched" in said[0] and "nosuch://cam" in said[0]
    assert capture.stats()["stalls"] == 0 and STALL_S < 1.0
