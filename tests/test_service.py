"""Unattended: the systemd unit `live service install` writes, and `live supervise` restarting a real show (a
`live run` child speaking systemd's notify protocol) when it is killed or hangs, backing off a crash loop, with the
history of restarts beside the show."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fixtures_live import ROOT, headless_env, show_with
from live.service import Supervisor, Watchdog, unit_text


def test_the_unit_plays_the_show_with_a_watchdog_and_restarts_it(tmp_path):
    show = show_with(tmp_path)
    unit = unit_text(show, watchdog_s=7)
    assert "Type=notify" in unit and "WatchdogSec=7" in unit and "Restart=always" in unit
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
    assert exec_start.split() == [sys.executable, "-m", "live", "run", str(show.resolve())]
    assert "WantedBy=default.target" in unit
    result = subprocess.run([sys.executable, "-m", "live", "service", "install", str(show), "--folder",
                             str(tmp_path / "units")], cwd=ROOT, env=headless_env(), capture_output=True, text=True)
    assert result.returncode == 0 and "systemctl --user" in result.stdout, result.stderr
    assert (tmp_path / "units" / "live-show.service").read_text() == unit_text(show)
    if shutil.which("systemd-analyze"):  # systemd's own check of the unit, where systemd is installed
        checked = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "units" / "live-show.service")],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr


def test_the_watchdog_pings_at_most_once_a_second(tmp_path, monkeypatch):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(1.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    watchdog = Watchdog()
    watchdog.ready()
    for now in (10.0, 10.2, 10.9, 11.05, 11.5, 12.1):
        watchdog.alive(now)
    got = [listener.recv(100).decode() for _ in range(4)]
    assert got == ["READY=1", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1"]  # at 10.0, 11.05 and 12.1
    listener.close()


def test_supervise_restarts_a_killed_or_hung_show_and_keeps_the_history(tmp_path):
    show = show_with(tmp_path, audio={"enabled": False}, osc={"enabled": False},
                     oscquery={"enabled": False},
                     outputs=[{"kind": "record", "path": str(tmp_path / "out.mp4")}])
    supervisor = subprocess.Popen([sys.executable, "-m", "live", "supervise", str(show), "--stall", "3"], cwd=ROOT,
                                  env=headless_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip() for line in supervisor.stdout), daemon=True)
    reader.start()
    seen = 0

    def wait_for(pattern: str, timeout: float = 60.0) -> re.Match:
        """The next line (after those already matched) that matches."""
        nonlocal seen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while seen < len(lines):
                seen += 1
                found = re.search(pattern, lines[seen - 1])
                if found:
                    return found
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} never said:\n" + "\n".join(lines))

    try:
        first = int(wait_for(r"Supervise: playing show.toml \(pid (\d+)\)").group(1))
        wait_for("Playing")
        time.sleep(2.0)
        os.kill(first, signal.SIGKILL)
        wait_for(r"the show killed by signal 9 after [\d.]+ s; restarting in 1 s \(restart 1\)")
        second = int(wait_for(r"Supervise: playing show.toml \(pid (\d+)\)").group(1))
        assert second != first
        wait_for("Playing")
        time.sleep(2.0)
        os.kill(second, signal.SIGSTOP)  # a hung show: alive, but no frame goes out
        # a second failure within 30 s of the first life's: the wait doubles
        wait_for(r"the show stalled: no frame for 3 s after [\d.]+ s; restarting in 2 s \(restart 2\)", timeout=30)
        wait_for(r"Supervise: playing show.toml \(pid (\d+)\)")
        wait_for("Playing")
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=30)
        reader.join(timeout=5)
    assert supervisor.returncode == 0, "\n".join(lines)
    history = json.loads((tmp_path / "show.restarts.json").read_text())
    assert [h["cause"] for h in history] == ["killed by signal 9", "stalled: no frame for 3 s"]
    for pid in (first, second):  # no show left behind
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_crash_loop_backs_off(tmp_path):
    said: list[str] = []
    show = tmp_path / "show.toml"
    show.write_text("")
    supervisor = Supervisor(show, say=said.append, child=[sys.executable, "-c", "import sys; sys.exit(3)"])
    started = time.monotonic()
    assert supervisor.run(restarts=3) == 3
    waits = [float(re.search(r"restarting in ([\d.]+) s", line).group(1)) for line in said if "restarting" in line]
    assert waits == [1.0, 2.0, 4.0]  # doubling while it keeps failing at once
    assert time.monotonic() - started >= 3.0  # it waited 1 + 2 s between the three lives
    history = json.loads((tmp_path / "show.restarts.json").read_text())
    assert [h["cause"] for h in history] == ["exited with code 3"] * 3
