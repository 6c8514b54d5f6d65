"""The output window's keys, pressed as a person would: real X key events (XTEST) into `live run`'s window on Xvfb.
Space runs the cue list, h shows the HUD, b blacks out the picture."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fixtures_live import LiveProcess, free_port, headless_env, screenshot, show_with, wait_until

Xlib = pytest.importorskip("Xlib", reason="python-xlib (the [test] extra) sends the key presses")
from Xlib import X, XK, display as xdisplay  # noqa: E402
from Xlib.ext import xtest  # noqa: E402


def press(display: str, key: str) -> None:
    """Move the pointer onto the picture (no window manager: focus follows the pointer) and tap `key`."""
    d = xdisplay.Display(display)
    try:
        xtest.fake_input(d, X.MotionNotify, x=320, y=240)
        code = d.keysym_to_keycode(XK.string_to_keysym(key))
        xtest.fake_input(d, X.KeyPress, code)
        d.sync()
        time.sleep(0.05)
        xtest.fake_input(d, X.KeyRelease, code)
        d.sync()
    finally:
        d.close()


def picture(display: str, tmp_path) -> np.ndarray:
    return screenshot(display, tmp_path / "screen.png")[:480, :640].astype(np.float32)


def test_keys_in_the_window_run_cues_hud_and_blackout(tmp_path, camera_file, xvfb):
    show = show_with(tmp_path, osc={"port": free_port()}, audio={"enabled": False})
    show.write_text(show.read_text() + '[scenes.calm]\n"/video/strength" = 0.0\n'
                    '[scenes.loud]\n"/video/strength" = 1.0\n')
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", "40"],
                       env=headless_env(DISPLAY=xvfb))
    try:
        live.wait_for("Playing")
        time.sleep(2.0)
        press(xvfb, "space")
        assert "scene 'calm'" in live.wait_for("Cue:", timeout=10)
        time.sleep(1.0)
        plain = picture(xvfb, tmp_path)
        def level(image: np.ndarray) -> float:
            return float(np.median(image[5:40, 5:150].max(axis=2)))

        def white(image: np.ndarray) -> float:
            return float((image[:40, :150].min(axis=2) > 240).mean())

        with_hud = plain

        def hud_shown() -> bool:  # the key reaches the show within a frame or two; a busy machine is slower
            nonlocal with_hud
            with_hud = picture(xvfb, tmp_path)
            return white(with_hud) > 0.01

        press(xvfb, "h")
        assert wait_until(hud_shown, timeout=15, every=0.1)
        assert level(with_hud) < level(plain) / 2 + 5  # a darkened band, top left ...
        assert white(with_hud) > 0.01 > white(plain)  # ... with white text on it
        press(xvfb, "b")
        time.sleep(1.0)
        assert picture(xvfb, tmp_path)[100:, :].mean() < 3  # black (below the HUD)
    finally:
        live.proc.terminate()
        code, output = live.finish()
    assert code == 0 and "Traceback" not in output, output
