"""Models and devices swapped while a show plays: a saved `[video]` model or `[audio]` device/model opens beside the
running one and takes over without a gap; a missing, corrupt or replaced model, or a missing device, keeps the
running one and says why in one line. Real `live run` processes, real ONNX Runtime, a real JACK server."""

from __future__ import annotations

import json
import shutil
import time

import cv2
import jack
import numpy as np

from fixtures_live import ROOT, LiveProcess, decode_frames, free_port, headless_env, show_with, wait_until
from live.models.manifest import sha256_of
from live.video.stylize import Stylizer

MODELS = ROOT / "exported_models"
SIZE = (320, 240)  # small frames: both models keep well above 10 fps on a loaded 2-core machine
NEW_SCALE = 0.5  # the new model's style_scale (a [video] style setting, swapped with it)


def broken_copies(folder):
    """(corrupt, replaced): copies of styles-cpu whose .onnx is not a model (its hash matching), and whose .onnx
    no longer matches the manifest's sha256."""
    paths = []
    for name, damage in (("corrupt", lambda b: b"\x08\x07not a protobuf" * 200), ("replaced", lambda b: b[:-7])):
        (folder / name).mkdir(parents=True)
        model = folder / name / "styles-cpu.onnx"
        model.write_bytes(damage((MODELS / "styles-cpu.onnx").read_bytes()))
        manifest = json.loads((MODELS / "styles-cpu.json").read_text())
        if name == "corrupt":
            manifest["sha256"] = sha256_of(model)  # only ONNX Runtime can tell
        (folder / name / "styles-cpu.json").write_text(json.dumps(manifest))
        paths.append(folder / name / "styles-cpu.json")
    return paths


def expected(camera_file, model: str, scale: float) -> np.ndarray:
    """What `model` makes of the camera's (still) picture at the show's size and starting values."""
    image = cv2.resize(cv2.VideoCapture(str(camera_file)).read()[1], SIZE, interpolation=cv2.INTER_AREA)
    style = Stylizer(MODELS / f"{model}.json", ("cpu",), scale=scale)
    style.open()
    values = {"/video/style_a": "pop-art", "/video/style_b": "watercolour", "/video/blend": 0.0,
              "/video/strength": 1.0}
    try:
        return style.process(image, values).astype(np.float32)
    finally:
        style.close()


def test_a_saved_video_model_plays_without_a_gap_and_a_broken_one_keeps_the_old(tmp_path, camera_file):
    video = {"source": str(camera_file), "width": SIZE[0], "height": SIZE[1]}
    show = show_with(tmp_path, video=video, osc={"port": free_port()}, audio={"enabled": False})
    text = show.read_text()
    old_model = str(MODELS / "styles-procedural.json")
    corrupt, replaced = broken_copies(tmp_path / "broken")
    out = tmp_path / "out.mp4"
    live = LiveProcess(["run", str(show), "--for", "10", "--record", str(out), "--no-window"])
    live.wait_for("Playing")
    t0 = time.monotonic()
    time.sleep(1.0)
    show.write_text(text.replace(old_model, str(corrupt)))
    line = live.wait_for("not applied", timeout=10)
    assert f"{corrupt.with_suffix('.onnx')}" in line and "fix:" in line and "plays on" in line, line
    show.write_text(text.replace(old_model, str(replaced)))
    line = live.wait_for("not applied", timeout=10)
    assert "does not match the sha256" in line and str(replaced) in line and "fix:" in line, line
    t_broken = time.monotonic() - t0
    show.write_text(text.replace(old_model, str(MODELS / "styles-cpu.json"))
                    .replace("style_scale = 1.0", f"style_scale = {NEW_SCALE}"))
    line = live.wait_for("[video] now plays", timeout=15)
    t_swap = time.monotonic() - t0
    assert "styles-cpu" in line
    code, output = live.finish()
    assert code == 0 and "Traceback" not in output and "failed on a frame" not in output, output
    frames = decode_frames(out)
    times = np.array([t for t, _ in frames])
    old, new = expected(camera_file, "styles-procedural", 1.0), expected(camera_file, "styles-cpu", NEW_SCALE)
    assert np.abs(old - new).mean() > 20  # the two models really paint differently

    def nearer_new(image: np.ndarray) -> bool:
        image = image.astype(np.float32)
        return bool(np.abs(image - new).mean() < np.abs(image - old).mean())

    before = [nearer_new(image) for t, image in frames if 0.3 < t < t_broken + 0.2]
    after = [nearer_new(image) for t, image in frames if t > t_swap + 0.5]
    assert len(before) > 10 and len(after) > 10
    assert not any(before)  # the broken saves kept the old model's picture
    assert all(after)  # the saved model's picture, from the change on
    gaps = np.diff(times)
    print(f"{len(frames)} frames, longest gap {gaps.max():.3f} s, swap said at {t_swap:.1f} s; gaps over 0.2 s at "
          f"{[(round(t, 2), round(g, 2)) for t, g in zip(times, gaps) if g > 0.2]}, broken saves until {t_broken:.1f} s")
    assert gaps.max() < 0.5  # the picture never waited for the new model to load


def connections(client: jack.Client, sink: str) -> list[str]:
    """The ports playing into `sink`'s first input."""
    return [port.name for port in client.get_all_connections(f"{sink}:in_1")]


def test_a_saved_audio_device_and_model_play_and_a_missing_device_keeps_the_old(tmp_path, camera_file,
                                                                                 jack_server, synth_decoder):
    listener = jack.Client(f"swap-{time.monotonic_ns() % 100000}", no_start_server=True)
    sink = f"{listener.name}-sink"
    device = jack.Client(sink, no_start_server=True)  # a second output PortAudio lists by its client name
    for i in (1, 2):
        device.inports.register(f"in_{i}")
    device.activate()
    try:
        sections = dict(osc={"port": free_port()}, video={"source": str(camera_file), "width": SIZE[0],
                                                          "height": SIZE[1]})
        show = show_with(tmp_path, audio={"device": "system", "model": str(synth_decoder.with_suffix(".json"))},
                         **sections)
        text = show.read_text()
        live = LiveProcess(["run", str(show), "--for", "30", "--no-window"],
                           env=headless_env(JACK_DEFAULT_SERVER=jack_server))
        try:
            live.wait_for("Playing")
            assert not connections(listener, sink)
            show.write_text(text.replace('device = "system"', f'device = "{sink}"')
                            .replace(str(synth_decoder.with_suffix(".json")), str(MODELS / "synth-ddsp.json")))
            line = live.wait_for("[audio] now plays", timeout=20)
            assert sink in line
            assert wait_until(lambda: len(connections(listener, sink)) == 1, timeout=3)
            playing = show.read_text()
            show.write_text(playing.replace(f'device = "{sink}"', 'device = "nowhere"'))
            line = live.wait_for("not applied", timeout=20)
            assert "[audio]" in line and "'nowhere'" in line and "fix:" in line and "plays on" in line, line
            time.sleep(0.5)
            assert len(connections(listener, sink)) == 1  # still playing there
        finally:
            live.proc.terminate()
            code, output = live.finish(timeout=60)
    finally:
        device.close()
        listener.close()
    assert code == 0 and "Traceback" not in output, output
    assert "synth-ddsp" in output
