"""NDI both ways between a real `live run` and cyndilib in this process, over loopback, and the virtual camera sink.

NDI finds sources by mDNS through avahi-daemon, which a test machine need not run (this sandbox runs none, and its
loopback has no multicast); the tests use NDI's other way, the senders' addresses in its own config file
(ndi.networks.ips = 127.0.0.1 in NDI_CONFIG_DIR), for this process and the shows alike. Frame rates are asserted
loosely: a show on a loaded 2-core machine plays 6-25 fps, and NDI carries what it plays.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from fixtures_live import LiveProcess, decode_frames, free_port, headless_env, scene, show_with
from live.errors import LiveError
from live.show import load_show
from live.video.output import SINKS

FOUND_S = 10.0  # a sender on this machine is found well within this (NDI answers on TCP 5960 at once)


@pytest.fixture(scope="module")
def ndi_config(tmp_path_factory) -> Iterator[str]:
    """NDI_CONFIG_DIR for this process and the shows: find senders at 127.0.0.1 (no mDNS needed)."""
    folder = tmp_path_factory.mktemp("ndi")
    (folder / "ndi-config.v1.json").write_text(json.dumps({"ndi": {"networks": {"ips": "127.0.0.1"}}}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NDI_CONFIG_DIR", str(folder))
        yield str(folder)


def find(ndi, name: str):
    """The cyndilib Source whose stream name is `name`."""
    finder = ndi.Finder()
    deadline = time.monotonic() + FOUND_S
    while time.monotonic() < deadline:
        found = [n for n in finder.update_sources() if n.endswith(f"({name})")]
        if found:
            return finder, finder.get_source(found[0])
        time.sleep(0.05)
    raise AssertionError(f"NDI source '{name}' not found in {FOUND_S} s (seen: {finder.get_source_names()})")


def receive(name: str, seconds: float) -> tuple[list[np.ndarray], list[float], list[tuple[int, np.ndarray]], float]:
    """Frames (BGR), their age on arrival (s, from NDI's per-frame timestamps) and audio blocks (rate, (channels,
    samples)) from the NDI source `name` for `seconds`, through cyndilib's receivers; and the time spent receiving.

    Video comes through NDI's frame-sync, which hands over each new frame (told by its timestamp). cyndilib makes a
    frame-sync for every receiver, and it takes most frames before NDI's direct capture sees them; its audio came
    back silent here, so the sound comes through direct capture on a receiver of its own: a sample of it, not all."""
    import cyndilib as ndi
    from cyndilib.receiver import ReceiveFrameType

    finder, source = find(ndi, name)
    receiver, listener = (ndi.Receiver(color_format=ndi.RecvColorFormat.BGRX_BGRA,
                                       bandwidth=ndi.RecvBandwidth.highest) for _ in range(2))
    video, audio = ndi.VideoFrameSync(), ndi.AudioRecvFrame(max_buffers=64)
    receiver.frame_sync.set_video_frame(video)
    listener.set_audio_frame(audio)
    receiver.set_source(source)
    listener.set_source(source)
    frames, ages, sound, last = [], [], [], None
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        receiver.frame_sync.capture_video()
        stamp = video.get_timestamp_posix()
        if video.get_data_size() and stamp != last:
            last = stamp
            ages.append(time.time() - stamp)
            width, height = video.get_resolution()
            stride = video.get_line_stride()
            pixels = video.get_array()[:stride * height].reshape(height, stride)[:, :width * 4]
            frames.append(cv2.cvtColor(pixels.reshape(height, width, 4), cv2.COLOR_BGRA2BGR))
        if listener.receive(ReceiveFrameType.recv_audio, 10) & ReceiveFrameType.recv_audio:
            sound.append((audio.sample_rate, audio.get_read_data()[0].copy()))
    spent = time.monotonic() - started
    receiver.disconnect()
    listener.disconnect()
    del finder
    return frames, ages, sound, spent


def test_a_show_sends_its_picture_and_sound_over_ndi(tmp_path: Path, camera_file: Path, ndi_config: str) -> None:
    """A show with an NDI output and a recording: what cyndilib receives is the recorded (stylized) picture, at a
    frame rate, stamped when it went out, with the synth's sound at the show's rate (rendered in time with no sound
    card, as here)."""
    name = f"live-test-out-{os.getpid()}"
    show = show_with(tmp_path, outputs=[{"kind": "ndi", "name": name}], osc={"port": free_port()}, stages=[])
    out = tmp_path / "out.mp4"
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--record", str(out), "--for", "6",
                        "--no-window"], env=headless_env(NDI_CONFIG_DIR=ndi_config))
    try:
        said = live.wait_for("Output: NDI source")
        assert f"({name})'" in said and "48000 Hz" in said, said
        live.wait_for("Playing")
        frames, ages, sound, spent = receive(name, 3.5)
        code, output = live.finish(timeout=60)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    assert code == 0, output
    assert "Traceback" not in output and "0 output failures" in output, output
    recorded = [image for _, image in decode_frames(out)]
    fps = len(frames) / spent
    diffs = [min(float(np.abs(f.astype(np.int16) - r).mean()) for r in recorded) for f in frames]
    camera = float(np.mean([np.abs(f.astype(np.int16) - scene()).mean() for f in frames]))
    rates = {rate for rate, _ in sound}
    samples = np.concatenate([s for _, s in sound], axis=1) if sound else np.zeros((2, 0), np.float32)
    print(f"NDI received {len(frames)} frames in {spent:.1f} s ({fps:.1f} fps), age p50 "
          f"{np.median(ages) * 1000:.1f} ms; mean abs diff to the recording p50 {np.median(diffs):.2f} "
          f"(to the camera {camera:.1f}); audio {samples.shape[1] / 48000:.2f} s at {rates}, peak "
          f"{np.abs(samples).max(initial=0):.3f}\n{output.splitlines()[-1]}")
    assert frames and frames[0].shape == (480, 640, 3)
    assert fps > 2.0  # see the module's docstring
    assert np.median(diffs) < 6.0 < camera  # the stylized picture, not the camera's (NDI's SpeedHQ + H.264 apart)
    assert 0.0 <= np.median(ages) < 0.5  # stamped when sent: it arrives within half a second
    assert rates == {48000} and samples.shape[0] == 2 and samples.shape[1] > 4800  # > 0.1 s of stereo at 48 kHz
    assert 0.01 < np.abs(samples).max() <= 1.0  # the synth's arpeggio, not silence


class Pattern:
    """An NDI sender in this process (cyndilib's): a white bar moving over red, then over blue from `switch()` on."""

    WIDTH, HEIGHT = 320, 240

    def __init__(self, name: str) -> None:
        import cyndilib as ndi
        from fractions import Fraction

        self.sender = ndi.Sender(name, clock_video=False)
        frame = ndi.VideoSendFrame()
        frame.set_resolution(self.WIDTH, self.HEIGHT)
        frame.set_fourcc(ndi.FourCC.BGRX)
        frame.set_frame_rate(Fraction(30))
        self.sender.set_video_frame(frame)
        self.colour = (0, 0, 255, 255)  # BGRX red
        self.switched_at: float | None = None
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Pattern:
        self.sender.open()
        self._thread.start()
        return self

    def switch(self) -> None:
        self.colour, self.switched_at = (255, 0, 0, 255), time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sender.close()

    def _run(self) -> None:
        image = np.empty((self.HEIGHT, self.WIDTH, 4), np.uint8)
        due = time.monotonic()
        while not self._stop.is_set():
            image[:] = self.colour
            x = (self.sent * 8) % self.WIDTH
            image[:, x:x + 24] = 255
            self.sender.write_video_async(image.reshape(-1))
            self.sent += 1
            due += 1 / 30
            self._stop.wait(max(0.0, due - time.monotonic()))


def colour_of(image: np.ndarray) -> str:
    b, g, r = image.reshape(-1, 3).mean(axis=0)
    return "red" if r > 120 > b + 40 else "blue" if b > 120 > r + 40 else "other"


def test_a_show_plays_an_ndi_sender_as_its_camera(tmp_path: Path, ndi_config: str) -> None:
    """`live run --source ndi://NAME`: while no such sender runs the show says so in one line and the built-in
    source plays; once the test's sender starts the show plays its frames (red, then blue from a known moment, as
    the recording shows); when the sender stops the show says it stalled and plays on."""
    name = f"live-test-in-{os.getpid()}"
    show = show_with(tmp_path, osc={"port": free_port()}, audio={"enabled": False}, stages=[],
                     params={"/video/strength": 0.0})  # the camera's picture as it is: its colours can be told
    out = tmp_path / "out.mp4"
    live = LiveProcess(["run", str(show), "--source", f"ndi://{name}", "--record", str(out), "--for", "40",
                        "--no-window"], env=headless_env(NDI_CONFIG_DIR=ndi_config))
    pattern = None
    try:
        missing = live.wait_for("not found in")
        assert f"NDI source '{name}' not found in" in missing and "built-in" in missing, missing
        pattern = Pattern(name).start()
        live.wait_for(f"({name})' plays", timeout=20)
        time.sleep(2.0)
        pattern.switch()
        time.sleep(2.0)
        pattern.stop()
        live.wait_for("stalled", timeout=10)
        live.proc.terminate()
        code, output = live.finish(timeout=30)
    finally:
        if pattern is not None and not pattern._stop.is_set():
            pattern.stop()
        if live.proc.poll() is None:
            live.proc.kill()
    assert code == 0, output
    assert "Traceback" not in output, output
    frames = decode_frames(out)
    colours = [(t, colour_of(image)) for t, image in frames]
    reds = [t for t, c in colours if c == "red"]
    blues = [t for t, c in colours if c == "blue"]
    print(f"recorded {len(frames)} frames: {len(reds)} red from {reds[0] if reds else None} s, {len(blues)} blue "
          f"from {blues[0] if blues else None} s; sent {pattern.sent}\n{output.splitlines()[-1]}")
    assert len(reds) >= 3 and len(blues) >= 3, colours
    assert max(reds) < min(blues)  # red until the switch, blue after it: in the order sent
    assert 1.0 < min(blues) - min(reds) < 3.5  # the switch came 2 s after the show said it plays
    assert colours[0][1] == "other"  # the built-in source played while the sender was not there


class Counting:
    """A sink that counts the frames it gets."""

    def __init__(self) -> None:
        self.frames = 0

    def open(self) -> str:
        return ""

    def write(self, image: np.ndarray, t: float) -> None:
        self.frames += 1

    def close(self) -> None:
        pass

    def status(self) -> str:
        return f"{self.frames} frames"


def test_an_ndi_sender_that_stops_is_closed_and_the_other_outputs_play_on(ndi_config: str) -> None:
    """The NDI runtime's sender stopping under a show (as when it fails) is a failing sink like any other."""
    from live.video.ndi import NdiOutput
    from live.video.output import Outputs

    ndi_out, other, said = NdiOutput(f"live-test-fail-{os.getpid()}", 64, 48, 30.0, None), Counting(), []
    outputs = Outputs([ndi_out, other], say=said.append)
    assert "NDI source" in outputs.open()
    image = np.zeros((48, 64, 3), np.uint8)
    outputs.write(image, time.perf_counter())
    assert ndi_out.frames == 1
    ndi_out._sender.close()
    for _ in range(3):
        outputs.write(image, time.perf_counter())
    assert other.frames == 4 and outputs.live == [other] and len(outputs.failed) == 1, said
    outputs.close()
    assert said == [f"Output: the NDI sender 'live-test-fail-{os.getpid()}' stopped; closed it, the show goes on "
                    "(fix: restart the show)"]


def test_a_virtual_camera_without_a_loopback_device_says_how_to_load_one(tmp_path: Path) -> None:
    """`[[outputs]] kind = "virtualcam"` opens a v4l2loopback device; where there is none, one LiveError naming
    the fix. With one, a frame written comes back from the device as a camera."""
    show = load_show(show_with(tmp_path, outputs=[{"kind": "virtualcam"}], osc={"port": free_port()}))
    sink = SINKS.get("virtualcam")(show.outputs[0], show)
    try:
        line = sink.open()
    except LiveError as err:
        assert "cannot open a virtual camera" in err.what and "\n" not in err.what, err.what
        assert "sudo modprobe v4l2loopback" in err.fix, err.fix
        pytest.skip(f"no virtual camera device here: {err.what} (fix: {err.fix})")
    try:
        assert line.startswith("Output: virtual camera /dev/video")
        device = cv2.VideoCapture(line.rsplit(" ", 1)[1])
        image = scene()
        for _ in range(10):
            sink.write(image, time.perf_counter())
            time.sleep(0.03)
        ok, seen = device.read()
        device.release()
        assert ok and np.abs(seen.astype(np.int16) - image).mean() < 8.0
    finally:
        sink.close()
