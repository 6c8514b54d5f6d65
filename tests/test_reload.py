"""Show files while a show plays: `live check`, and saving the file hot-reloads it — a broken save keeps the old
show running and says why, a good one applies at once. Real files rewritten under a running `live run`."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import cv2
import numpy as np
import pytest

from fixtures_live import ROOT, LiveProcess, decode_frames, free_port, run_live, show_with, wait_until
from fixtures_midi import Controller, unique
from live.control.osc_codec import encode_message, parse_packet

ROOT_MODELS = ROOT / "exported_models"


def test_live_check_names_each_problem_and_passes_a_good_show(tmp_path):
    good = show_with(tmp_path)
    result = run_live(["check", str(good)])
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr
    bad = good.read_text() + '[scenes.calm]\n"/video/nope" = 1\n"/video/style_a" = "cubism"\n[[cues]]\nscene = "b"\n'
    good.write_text(bad)
    result = run_live(["check", str(good)])
    assert result.returncode == 1
    assert "[scenes.calm] '/video/nope' is not a parameter" in result.stderr
    assert "cubism" in result.stderr and "scene 'b' is not defined" in result.stderr
    assert "Traceback" not in result.stderr
    good.write_text(good.read_text().replace("[video]", "[video]\nbrightness = 2", 1))
    result = run_live(["check", str(good)])
    assert result.returncode == 2 and "[video] brightness: unknown key" in result.stderr


def test_saving_the_show_reloads_it_and_a_broken_save_keeps_it_running(tmp_path, camera_file):
    show = show_with(tmp_path, osc={"port": free_port()}, audio={"enabled": False})
    original = show.read_text()
    out = tmp_path / "out.mp4"
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", "9", "--record", str(out)])
    live.wait_for("Playing")
    t0 = time.monotonic()
    time.sleep(1.5)
    show.write_text(original + '"/latent/mix" = "loud"\n')  # a typo while the show plays
    line = live.wait_for("not applied", timeout=10)
    assert str(show.name) in line and "/latent/mix" in line
    time.sleep(1.0)
    show.write_text(original + '"/live/blackout" = true\n')
    live.wait_for("reloaded", timeout=10)
    t_black = time.monotonic() - t0
    code, output = live.finish()
    assert code == 0 and "Traceback" not in output, output
    frames = decode_frames(out)
    before = [image for t, image in frames if 0.5 < t < t_black - 1.5]  # after the bad save: still playing
    after = [image for t, image in frames if t > t_black + 0.5]
    assert before and after
    assert min(float(f.mean()) for f in before) > 20
    assert max(float(f.mean()) for f in after) < 2  # blackout applied by the reload
    assert np.diff([t for t, _ in frames]).max() < 1.0  # no gap: the show never stopped


def answers(port: int) -> bool:
    """Whether a show answers /live/status on this UDP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.0)
        sock.sendto(encode_message("/live/status"), ("127.0.0.1", port))
        try:
            return parse_packet(sock.recv(65536)).address.startswith("/live/status")
        except OSError:
            return False


def strength(query: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{query}/video/strength?VALUE", timeout=2) as reply:
        return json.loads(reply.read())["VALUE"][0]


def show_text(folder, **sections) -> str:
    """The text of a show like `show_with`'s, made in its own folder (to be saved over a running show)."""
    folder.mkdir()
    return show_with(folder, **sections).read_text()


def test_saved_osc_and_midi_settings_apply_while_playing(tmp_path, camera_file, jack_server):
    controller = Controller(unique("knobs"))
    old_port, new_port, query = free_port(), free_port(), free_port()
    sections = dict(oscquery={"port": query}, audio={"enabled": False},
                    midi={"api": "jack", "inputs": [controller.client]})
    show = show_with(tmp_path, osc={"port": old_port}, **sections)
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", "40", "--no-window"])
    try:
        live.wait_for("Playing")
        assert answers(old_port)
        controller.cc(1, 21, 0)  # not mapped yet: nothing moves
        controller.settle(0.3)
        assert strength(query) == 1.0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:  # another app holds the port asked for
            taken.bind(("127.0.0.1", 0))
            busy = taken.getsockname()[1]
            show.write_text(show_text(tmp_path / "busy", osc={"port": busy}, **sections))
            line = live.wait_for("not applied", timeout=10)
            assert "[osc]" in line and str(busy) in line and "in use" in line
            assert "[osc] kept as it was" in live.wait_for("reloaded", timeout=10)
            assert answers(old_port)
        mapped = show_text(tmp_path / "new", osc={"port": new_port}, **sections)
        show.write_text(mapped + '[[midi.map]]\nparam = "/video/strength"\nnumber = 21\n')
        line = live.wait_for("reloaded", timeout=10)
        assert "[osc] reopened" in line and "[midi] reopened" in line and "restart" not in line
        assert answers(new_port) and not answers(old_port)
        for value in (127, 127, 0):  # pick-up: the knob takes over once it reaches the value, then drives it
            controller.cc(1, 21, value)
            controller.settle()
        assert wait_until(lambda: strength(query) == 0.0, timeout=3)
    finally:
        live.proc.terminate()
        code, output = live.finish(timeout=60)
        controller.unplug()
    assert code == 0 and "Traceback" not in output, output


def test_a_saved_video_source_plays_at_once(tmp_path, camera_file):
    white = tmp_path / "white.mp4"
    writer = cv2.VideoWriter(str(white), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for _ in range(30):
        writer.write(np.full((480, 640, 3), 255, np.uint8))
    writer.release()
    show = show_with(tmp_path, video={"source": str(camera_file)}, osc={"port": free_port()},
                     audio={"enabled": False})
    out = tmp_path / "out.mp4"
    live = LiveProcess(["run", str(show), "--for", "7", "--record", str(out)])
    live.wait_for("Playing")
    t0 = time.monotonic()
    time.sleep(1.5)
    show.write_text(show.read_text().replace(str(camera_file), str(white)))
    line = live.wait_for("reloaded", timeout=10)
    t_switch = time.monotonic() - t0
    assert "[video] source now" in line and "restart" not in line
    show.write_text(show.read_text().replace("voices = 8", "voices = 4"))
    assert "[audio] changed: restart the show to apply it" in live.wait_for("reloaded", timeout=10)
    code, output = live.finish()
    assert code == 0 and "Traceback" not in output, output
    frames = decode_frames(out)
    before = [float(image.mean()) for t, image in frames if 0.5 < t < t_switch - 0.5]
    after = [float(image.mean()) for t, image in frames if t > t_switch + 1.0]
    assert before and after
    assert min(after) > max(before) + 40  # the white clip is playing
    assert np.diff([t for t, _ in frames]).max() < 1.0  # and the show never stopped for it


def renamed_styles(folder) -> str:
    """A copy of the shipped style model whose styles have other names (the same network): its manifest path."""
    import shutil

    folder.mkdir(exist_ok=True)
    shutil.copy(ROOT / "exported_models" / "styles-procedural.onnx", folder / "styles-procedural.onnx")
    manifest = json.loads((ROOT / "exported_models" / "styles-procedural.json").read_text())
    manifest["controls"]["styles"] = [f"other-{i}" for i in range(len(manifest["controls"]["styles"]))]
    (folder / "styles-procedural.json").write_text(json.dumps(manifest))
    return str(folder / "styles-procedural.json")


def test_a_saved_model_whose_styles_the_show_does_not_have_keeps_the_running_model_and_its_parameters(tmp_path,
                                                                                                        camera_file):
    query = free_port()
    show = show_with(tmp_path, osc={"port": free_port()}, oscquery={"port": query}, audio={"enabled": False},
                     video={"source": str(camera_file)})
    out = tmp_path / "out.mp4"
    live = LiveProcess(["run", str(show), "--for", "7", "--record", str(out)])
    live.wait_for("Playing")
    t0 = time.monotonic()
    time.sleep(1.5)
    show.write_text(show.read_text().replace(str(ROOT_MODELS / "styles-procedural.json"),
                                             renamed_styles(tmp_path / "other")))
    assert "[video] opening beside the running one" in live.wait_for("reloaded", timeout=10)
    line = live.wait_for("not applied", timeout=15)  # the show's [params] name a style the new model lacks
    t_save = time.monotonic() - t0
    assert "[video]" in line and "plays on" in line and "pop-art" in line and "fix:" in line, line
    with urllib.request.urlopen(f"http://127.0.0.1:{query}/video/style_a", timeout=2) as reply:
        assert "pop-art" in json.loads(reply.read())["RANGE"][0]["VALS"]  # the running model's names stay
    code, output = live.finish()
    assert code == 0 and "failed on a frame" not in output and "Traceback" not in output, output
    camera = cv2.VideoCapture(str(camera_file)).read()[1].astype(np.float32)
    frames = decode_frames(out)
    styled = [float(np.abs(image.astype(np.float32) - camera).mean()) for t, image in frames if t > 0.5]
    before = [d for (t, _), d in zip([f for f in frames if f[0] > 0.5], styled) if t < t_save - 0.5]
    after = [d for (t, _), d in zip([f for f in frames if f[0] > 0.5], styled) if t > t_save + 1.0]
    assert before and after and min(after) > 0.5 * np.median(before)  # still stylized: not the camera's picture


def test_live_check_parses_each_model_not_just_its_hash(tmp_path):
    import shutil

    from live.models.manifest import sha256_of

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(ROOT_MODELS / "styles-procedural.json", folder / "styles-procedural.json")
    broken = folder / "styles-procedural.onnx"
    broken.write_bytes(b"\x08\x07not a protobuf at all" * 100)
    manifest = json.loads((folder / "styles-procedural.json").read_text())
    manifest["sha256"] = sha256_of(broken)  # the hash matches: only parsing finds it
    (folder / "styles-procedural.json").write_text(json.dumps(manifest))
    show = show_with(tmp_path, video={"model": str(folder / "styles-procedural.json")})
    result = run_live(["check", str(show)])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{broken} is not a valid ONNX model" in result.stderr and "fix:" in result.stderr


def test_an_empty_or_still_changing_show_file_is_not_applied(tmp_path):
    from live.errors import LiveError
    from live.show import ShowFile

    path = show_with(tmp_path)
    text = path.read_text()
    watch = ShowFile(path)
    path.write_text(text.replace("bpm = 96", "bpm = 100"))
    assert watch.saved(now=10.0) is None  # just changed: wait for it to hold still
    path.write_text(text.replace("bpm = 96", "bpm = 101") + "\n")  # still being written
    assert watch.saved(now=10.6) is None
    assert watch.saved(now=10.7) is None  # looked at most every CHECK_S
    assert watch.saved(now=11.2).tempo.bpm == 101  # unchanged since the last look: applied
    assert watch.saved(now=11.8) is None  # once
    path.write_text("")  # an editor truncating before it writes
    assert watch.saved(now=12.4) is None
    with pytest.raises(LiveError, match="is empty"):
        watch.saved(now=13.0)
