"""Show files while a show plays: `live check`, and saving the file hot-reloads it — a broken save keeps the old
show running and says why, a good one applies at once. Real files rewritten under a running `live run`."""

from __future__ import annotations

import time

import numpy as np

from fixtures_live import LiveProcess, decode_frames, free_port, run_live, show_with


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
