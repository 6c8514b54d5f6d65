"""Real parts for end-to-end tests: a video file as the camera, an X server, free UDP ports, `live run` itself."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHOW = ROOT / "show_configs" / "default.toml"


def scene(width: int = 640, height: int = 480) -> np.ndarray:
    """A still test scene with colour, edges and text: what the 'camera' sees."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.dstack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height)) + 60]).astype(
        np.uint8)
    cv2.rectangle(img, (60, 60), (260, 220), (40, 200, 240), -1)
    cv2.circle(img, (450, 300), 110, (200, 60, 160), -1)
    cv2.putText(img, "CAMERA", (80, 420), cv2.FONT_HERSHEY_DUPLEX, 2.2, (255, 255, 255), 4)
    return img


def write_video(path: Path, frames: int = 60, fps: float = 30.0) -> Path:
    """A still-scene video file, written by OpenCV, to stand in for a webcam."""
    img = scene()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (img.shape[1], img.shape[0]))
    for _ in range(frames):
        writer.write(img)
    writer.release()
    return path


@pytest.fixture(scope="session")
def camera_file(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("camera") / "camera.mp4")


@pytest.fixture
def torch_one_thread():
    """Torch on one thread during a test (the same sums in the same order, so runs repeat bit for bit), then as
    it was."""
    import torch  # here: most tests never load it

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def wait_until(condition: Callable[[], object], timeout: float = 5.0, every: float = 0.005) -> bool:
    """Poll `condition` until it is true or `timeout` passes; its last result decides."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return bool(condition())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def show_with(tmp_path: Path, **sections: dict | list) -> Path:
    """A copy of the default show with some keys changed (a list replaces an array of tables such as `outputs`);
    model paths stay pointing at exported_models/."""
    import tomllib

    data = tomllib.loads(DEFAULT_SHOW.read_text())
    data["oscquery"].update(port=0, zeroconf=False)  # tests run shows side by side: no fixed port, no announcing
    data["status"].update(port=0)  # no status page unless a test asks for one (on a free port)
    # tests play the fast procedural model at 640x480 (their pictures and style names); the shipped shows are checked
    # as they are by test_show.py
    data["video"].update(model="styles-procedural.json", width=640, height=480, style_scale=1.0)
    data["params"].update({"/video/style_a": "pop-art", "/video/style_b": "watercolour"})
    for section, values in sections.items():
        if isinstance(values, list):
            data[section] = values
        else:
            data.setdefault(section, {}).update(values)
    for table in (data["video"], data["audio"], *data.get("stages", [])):
        if table.get("model") and not Path(table["model"]).is_absolute():
            table["model"] = str(ROOT / "exported_models" / Path(table["model"]).name)
    def tables(key: str, value) -> list[tuple[str, dict]]:
        if isinstance(value, dict):
            return [(f"[{key}]", value)]
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return [(f"[[{key}]]", v) for v in value]
        return []

    lines = [f"{key} = {_toml(value)}" for key, value in data.items() if not tables(key, value)]
    for key, value in data.items():
        for header, table in tables(key, value):
            lines.append(header)
            lines += [f"{_toml(k) if k.startswith('/') else k} = {_toml(v)}" for k, v in table.items()]
    path = tmp_path / "show.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def headless_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


class LiveProcess:
    """`live run ...` in a subprocess, with its output read line by line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "live", *args], cwd=ROOT, env=env or headless_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip())
            if text in line:
                return line
        raise AssertionError(f"'{text}' never printed; output:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        self.lines += out.splitlines()
        return self.proc.returncode, "\n".join(self.lines)


def run_live(args: list[str], env: dict[str, str] | None = None, timeout: float = 120.0):
    return subprocess.run([sys.executable, "-m", "live", *args], cwd=ROOT, env=env or headless_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """An X server of our own; returns it and its DISPLAY value once it answers. The server picks a free display
    number itself (-displayfd: by its lock files, so two test sessions never share one) and writes it to a pipe."""
    if not shutil.which("Xvfb"):
        pytest.fail("Xvfb is not installed (make test installs the xvfb package)")
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        ready, _, _ = select.select([pipe], [], [], 10)
        number = pipe.readline().strip() if ready else ""
    if not number.isdigit():
        proc.kill()
        pytest.fail("Xvfb did not start")
    return proc, f":{number}"


@pytest.fixture(scope="session")
def xvfb():
    """The session's X server; yields the DISPLAY value."""
    proc, display = start_xvfb()
    yield display
    proc.terminate()
    proc.wait(timeout=5)


def screenshot(display: str, path: Path) -> np.ndarray:
    """The whole X screen as a BGR image, through FFmpeg's x11grab (what a person would see)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "x11grab", "-video_size", "1280x720", "-i", display,
                    "-frames:v", "1", str(path)], check=True, timeout=30)
    return cv2.imread(str(path))


def decode_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    """(time in s, BGR image) for every video frame of a recording."""
    import av

    with av.open(str(path)) as container:
        return [(float(f.time), f.to_ndarray(format="bgr24")) for f in container.decode(video=0)]


def audio_of(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, np.float32)
        chunks = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def tree_of(show):
    """The parameter tree the show's graph builds (nothing opened)."""
    from live.graph import build

    return build(show, window=False, say=lambda _: None).tree
