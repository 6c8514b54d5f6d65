"""`live run` end to end, as a user runs it: a video file as the camera, OSC over UDP, a window on Xvfb,
recordings decoded back, bad input answered with one clear message."""

import json
import re
import shutil
import signal
import socket
import subprocess
import time

import cv2
import numpy as np
import pytest
from pythonosc.udp_client import SimpleUDPClient

from fixtures_live import (DEFAULT_SHOW, LiveProcess, audio_of, decode_frames, free_port, headless_env, run_live,
                           screenshot, show_with, wait_until)

from live.params import ParamTree
from live.video.stylize import Stylizer


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference at quarter size: insensitive to H.264 blurring fine dots, not to the image."""
    small = [cv2.resize(x, (x.shape[1] // 4, x.shape[0] // 4), interpolation=cv2.INTER_AREA).astype(np.int16)
             for x in (a, b)]
    return float(np.abs(small[0] - small[1]).mean())


def camera_image(camera_file) -> np.ndarray:
    """The camera file's frame as the show decodes it (compression shifts it a little from `scene()`)."""
    ok, image = cv2.VideoCapture(str(camera_file)).read()
    assert ok
    return image


TEST_MODEL = DEFAULT_SHOW.parent.parent / "exported_models" / "styles-procedural.json"  # what show_with plays


def starting_tree(stylizer: Stylizer) -> ParamTree:
    """The /video/* parameters at show_with's starting values."""
    tree = ParamTree(stylizer.params()[0])
    tree.update({"/video/style_a": "pop-art", "/video/style_b": "watercolour"})
    return tree


def stylized(image: np.ndarray, **values) -> np.ndarray:
    """What the tests' shows' model makes of `image` under the given parameter values."""
    stylizer = Stylizer(TEST_MODEL, ("cpu",))
    stylizer.open()
    tree = starting_tree(stylizer)
    tree.update(values)
    return stylizer.process(image, tree.snapshot)


def test_bounded_show_records_stylized_video_with_audio(tmp_path, camera_file):
    show = show_with(tmp_path, osc={"port": free_port()})
    out = tmp_path / "out.mp4"
    result = run_live(["run", str(show), "--source", str(camera_file), "--for", "4", "--record", str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("Played 4.") and "fps" in summary and "latency p50" in summary
    assert "ONNX Runtime provider:" in result.stdout
    frames = decode_frames(out)
    assert len(frames) > 5  # a loaded 2-core machine plays the full-size model at a few fps
    camera = camera_image(camera_file)
    last = frames[-1][1]
    assert mean_diff(last, camera) > 10  # stylized, not the camera image
    assert mean_diff(last, stylized(camera)) < 4  # and it is what the model makes of the camera image
    sound = audio_of(out)
    assert len(sound) > 48000 and np.sqrt(np.mean(sound ** 2)) > 1e-3  # the synth's auto pattern is audible


def recorded_show(tmp_path, camera_file, seconds: float) -> tuple[LiveProcess, int, object, float]:
    """A silent show on the camera file, recording, with OSC on a free port; returns once it plays."""
    port = free_port()
    show = show_with(tmp_path, osc={"port": port}, audio={"enabled": False})
    out = tmp_path / "out.mp4"
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", str(seconds), "--record", str(out)])
    live.wait_for("Playing")
    return live, port, out, time.monotonic()


def test_osc_from_python_osc_and_oscsend_visibly_changes_the_output(tmp_path, camera_file):
    live, port, out, t0 = recorded_show(tmp_path, camera_file, 7)
    time.sleep(2.0)
    SimpleUDPClient("127.0.0.1", port).send_message("/video/strength", 0.0)  # fade to the camera image
    t_camera = time.monotonic() - t0
    time.sleep(2.0)
    other_style = Stylizer(TEST_MODEL, ("cpu",)).styles[3]
    for args in (["/video/style_a", "s", other_style], ["/video/strength", "f", "1"]):
        subprocess.run([shutil.which("oscsend"), "localhost", str(port), *args], check=True)
    t_other = time.monotonic() - t0
    code, output = live.finish()
    assert code == 0, output
    frames = decode_frames(out)
    before = [img for t, img in frames if t < 1.5]
    camera = [img for t, img in frames if t_camera + 0.7 < t < t_camera + 1.5]
    after = [img for t, img in frames if t > t_other + 0.7]
    assert before and camera and after, [round(t, 2) for t, _ in frames]
    image = camera_image(camera_file)
    assert mean_diff(before[-1], image) > 10  # stylized with the default style
    assert mean_diff(camera[-1], image) < 4  # strength 0 over python-osc: the camera image
    assert mean_diff(after[-1], image) > 10  # oscsend: stylized again...
    assert mean_diff(after[-1], before[-1]) > 10  # ...with another style
    assert mean_diff(after[-1], stylized(image, **{"/video/style_a": other_style})) < 4


def test_window_on_a_display_shows_the_stylized_frame(tmp_path, camera_file, xvfb):
    show = show_with(tmp_path, osc={"port": free_port()}, audio={"enabled": False})
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", "40"],
                       env=headless_env(DISPLAY=xvfb))
    image = camera_image(camera_file)
    expected = stylized(image)
    shot = None

    def on_screen() -> bool:  # a loaded 2-core machine may take seconds to map the window and draw its first frame
        nonlocal shot
        shot = screenshot(xvfb, tmp_path / "screen.png")
        return cv2.matchTemplate(shot, expected, cv2.TM_CCOEFF_NORMED).max() > 0.9

    try:
        live.wait_for("Playing")
        shown = wait_until(on_screen, timeout=20, every=0.5)
    finally:
        live.proc.terminate()
        code, output = live.finish()
    assert code == 0, output
    assert "Output: window 'live'" in output
    match = cv2.matchTemplate(shot, expected, cv2.TM_CCOEFF_NORMED).max()
    assert shown, f"stylized frame not on screen (best match {match:.2f}); the show said:\n{output}"
    camera_match = cv2.matchTemplate(shot, image, cv2.TM_CCOEFF_NORMED).max()
    assert match > camera_match  # it is the stylized frame, not the raw camera


def test_latent_layer_mixes_in_over_osc(tmp_path, camera_file):
    """/latent/mix brings the generated imagery over the stylized camera; at 0 it is absent."""
    live, port, out, t0 = recorded_show(tmp_path, camera_file, 5)
    time.sleep(2.0)
    SimpleUDPClient("127.0.0.1", port).send_message("/latent/mix", 1.0)
    t_mix = time.monotonic() - t0
    code, output = live.finish()
    assert code == 0, output
    frames = decode_frames(out)
    before = [img for t, img in frames if t < 1.5]
    after = [img for t, img in frames if t > t_mix + 0.7]
    image = camera_image(camera_file)
    assert mean_diff(before[-1], stylized(image)) < 4  # no layer yet
    assert mean_diff(after[-1], stylized(image)) > 10  # the generated image replaced it


def test_camera_that_does_not_open_plays_the_builtin_source(tmp_path):
    show = show_with(tmp_path, osc={"port": free_port()}, audio={"enabled": False})
    out = tmp_path / "builtin.mp4"
    result = run_live(["run", str(show), "--source", str(tmp_path / "no-camera.mp4"), "--for", "3", "--record",
                       str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no-camera.mp4" in result.stdout and "built-in animated source" in result.stdout
    frames = decode_frames(out)
    assert len(frames) > 10
    assert mean_diff(frames[2][1], frames[-1][1]) > 1  # animated


@pytest.mark.parametrize("display", [None, ":987"])
def test_no_display_records_and_says_where(tmp_path, display):
    """No DISPLAY, or one naming an X server that is not there (Qt would abort): record instead."""
    show = show_with(tmp_path, osc={"port": free_port()}, audio={"enabled": False})
    env = headless_env(**({"DISPLAY": display} if display else {}))
    result = run_live(["run", str(show), "--source", "builtin", "--for", "2"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    said = "display :987 does not answer" if display else "no display here"
    line = next(l for l in result.stdout.splitlines() if f"{said}; recording to" in l)
    path = DEFAULT_SHOW.parent.parent / line.split("recording to ")[1].strip()
    try:
        assert len(decode_frames(path)) > 5
    finally:
        path.unlink()


def test_ctrl_c_stops_quickly_and_releases_devices(tmp_path):
    port = free_port()
    show = show_with(tmp_path, osc={"port": port}, audio={"enabled": False})
    live = LiveProcess(["run", str(show), "--source", "builtin", "--no-window"])
    live.wait_for("Playing")
    time.sleep(1.0)
    live.proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    code, output = live.finish(timeout=10)
    assert time.monotonic() - sent < 5, "did not stop promptly"
    assert code == 0 and "Played" in output and "Traceback" not in output
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the OSC port was released


def test_audio_plays_through_jack(tmp_path, jack_server):
    show = show_with(tmp_path, osc={"port": free_port()})
    result = run_live(["run", str(show), "--source", "builtin", "--no-window", "--for", "3"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "JACK" in result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    counts = re.search(r"audio: starved (\d+)x \(ours\)(?:, \d+x held off the CPU by the machine)?, (\d+) device "
                       r"xruns, lead ([\d.]+) ms \(adaptive\), render p99 ([\d.]+) ms", summary)
    assert counts, summary
    assert float(counts[3]) > 0 and float(counts[4]) > 0


def test_params_lists_every_address_as_table_and_json():
    result = run_live(["params", "--json"])
    assert result.returncode == 0, result.stderr
    items = {p["address"]: p for p in json.loads(result.stdout)}
    for address in ("/video/style_a", "/video/style_b", "/video/blend", "/video/strength", "/synth/gain",
                    "/synth/note", "/synth/timbre/a"):
        assert {"address", "type", "min", "max", "default"} <= set(items[address])
    table = run_live(["params"]).stdout
    assert all(f"`{address}`" in table for address in items)
    assert table.strip() in (DEFAULT_SHOW.parent.parent / "README.md").read_text()  # README carries this table


def test_bad_input_gets_one_clear_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[video]\nsorce = 1\n")
    result = run_live(["run", str(bad), "--for", "1"])
    assert result.returncode == 2 and "sorce" in result.stderr and "Traceback" not in result.stderr
    missing = show_with(tmp_path, video={"model": str(tmp_path / "gone.json")})
    result = run_live(["run", str(missing), "--for", "1"])
    assert result.returncode == 2 and "gone.json" in result.stderr and "fix:" in result.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = show_with(tmp_path, osc={"port": taken.getsockname()[1]}, audio={"enabled": False})
        result = run_live(["run", str(busy), "--source", "builtin", "--for", "1"])
    assert result.returncode == 2 and "already in use" in result.stderr and "Traceback" not in result.stderr
    nodevice = show_with(tmp_path, osc={"port": free_port()}, audio={"device": "no-such-card"})
    result = run_live(["run", str(nodevice), "--source", "builtin", "--for", "1", "--no-window"])
    assert result.returncode == 0 and "no-such-card" in result.stdout


def test_monitor_geometry_is_read_from_the_display(xvfb, monkeypatch):
    from live.video.output import has_display
    from live.video.window import monitor_origin

    monkeypatch.setenv("DISPLAY", xvfb)
    assert has_display()
    assert monitor_origin(0) == (0, 0, 1280, 720)  # the Xvfb screen the fixture made
    assert monitor_origin(5) == (0, 0, 1280, 720)  # a monitor index past the last falls back to the last
