"""MIDI learn the way a performer does it: a show plays, `live learn ADDRESS` arms it over OSC, a knob is turned on
a (JACK MIDI) controller, and from then on that knob moves the parameter; the binding is saved beside the show."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from fixtures_live import ROOT, LiveProcess, free_port, headless_env, show_with, wait_until
from fixtures_midi import Controller, unique


def value_of(port: int, address: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{address}?VALUE", timeout=2) as reply:
        return json.loads(reply.read())["VALUE"][0]


def test_live_learn_binds_the_next_knob_turned(tmp_path, camera_file, jack_server):
    controller = Controller(unique("knobs"))
    osc, query = free_port(), free_port()
    show = show_with(tmp_path, osc={"port": osc}, oscquery={"port": query}, audio={"enabled": False},
                     midi={"api": "jack", "inputs": [controller.client], "learn_file": "learned.json"})
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", "25", "--no-window"])
    try:
        live.wait_for("Playing")
        learn = subprocess.Popen([sys.executable, "-m", "live", "learn", "/video/strength", "--port", str(osc),
                                  "--timeout", "15"], cwd=ROOT, env=headless_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        assert "Move the MIDI control for /video/strength" in learn.stdout.readline()
        controller.cc(1, 21, 5)  # the knob is turned: this binds it
        out, _ = learn.communicate(timeout=20)
        assert learn.returncode == 0, out
        assert "21" in out and "/video/strength" in out  # says which control it bound
        for value in (0, 40, 127, 127):  # sweep: pick-up takeover engages, then the knob drives the value
            controller.cc(1, 21, value)
            controller.settle()
        assert wait_until(lambda: value_of(query, "/video/strength") == 1.0, timeout=3)
        controller.cc(1, 21, 0)
        assert wait_until(lambda: value_of(query, "/video/strength") == 0.0, timeout=3)
        saved = json.loads((tmp_path / "learned.json").read_text())
        assert "/video/strength" in json.dumps(saved) and "21" in json.dumps(saved)
    finally:
        live.proc.terminate()  # SIGTERM: the show stops cleanly
        _, output = live.finish(timeout=60)
        controller.unplug()
    assert "Traceback" not in output, output
    assert "MIDI learn: move the control for /video/strength" in output
