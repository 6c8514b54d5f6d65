"""Running a show unattended: under systemd (`live service install`), or under our own supervisor (`live supervise`)
where there is none.

Both speak systemd's notify protocol (sd_notify, through the `sdnotify` library): the show says READY=1 once its
parts are open and WATCHDOG=1 from its output loop, at most once a second, while frames go out. systemd restarts a
show that exits or whose pings stop for WatchdogSec; the supervisor does the same with a notify socket of its own,
backs off when the show keeps failing, and keeps a short history of restarts and their causes beside the show.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import sdnotify

from live.children import end_child
from live.errors import LiveError

PING_S = 1.0  # the output loop pings the watchdog at most this often
WATCHDOG_S = 10.0  # no ping for this long: the show hangs (systemd's WatchdogSec, the supervisor's stall time)
START_S = 120.0  # a show that has not said READY=1 this long after it started is stalled (models load first)
BACKOFF_S = (1.0, 60.0)  # the wait before a restart: doubles after each restart within QUICK_S, up to the second
QUICK_S = 30.0  # a show that ran less than this before it failed counts towards the crash loop
HISTORY = 50  # restarts kept in the history file


class Watchdog:
    """The show's side: READY=1 when it plays, WATCHDOG=1 while frames go out. Silent without NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self._pinged = 0.0

    def ready(self) -> None:
        if self._notifier is not None:
            self._notifier.notify("READY=1")

    def alive(self, now: float) -> None:
        """A frame went out at perf_counter time `now`: ping, at most every PING_S."""
        if self._notifier is not None and now - self._pinged >= PING_S:
            self._pinged = now
            self._notifier.notify("WATCHDOG=1")


def command(show: Path) -> list[str]:
    """How the service or the supervisor starts the show: this Python, `live run`, no window if there is no
    display is the show's own business."""
    return [sys.executable, "-m", "live", "run", str(show.resolve())]


def unit_text(show: Path, watchdog_s: float = WATCHDOG_S) -> str:
    """A systemd unit that plays `show` from boot: restarted whenever it exits, and when its watchdog pings stop."""
    return "\n".join([
        "[Unit]",
        f"Description=live show {show.stem} ({show.resolve()})",
        "After=network-online.target sound.target graphical-session.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={shlex.join(command(show))}",
        f"WorkingDirectory={show.resolve().parent}",
        "Restart=always",
        "RestartSec=2",
        f"WatchdogSec={watchdog_s:g}",
        f"TimeoutStartSec={START_S:g}",
        "Environment=PYTHONUNBUFFERED=1",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


def install(show: Path, folder: Path | None = None, watchdog_s: float = WATCHDOG_S) -> tuple[Path, str]:
    """Write the show's user unit (default ~/.config/systemd/user/); returns its path and how to enable it."""
    if not show.is_file():
        raise LiveError(f"show file not found: {show}", "give the path of the show the service plays")
    folder = folder or Path.home() / ".config" / "systemd" / "user"
    name = f"live-{''.join(c if c.isalnum() or c in '-_' else '-' for c in show.stem)}.service"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(unit_text(show, watchdog_s))
    except OSError as err:
        raise LiveError(f"cannot write {folder / name} ({err.strerror})", "give a folder you can write with --folder")
    how = (f"systemctl --user daemon-reload && systemctl --user enable --now {name}   "
           f"(and `loginctl enable-linger {os.environ.get('USER', 'USER')}` to start it at boot without a login)")
    return folder / name, how


def history_path(show: Path) -> Path:
    """Where `live supervise` keeps a show's restarts and their causes: SHOW.restarts.json beside it."""
    show = show.resolve()
    return show.with_name(f"{show.stem}.restarts.json")


class Supervisor:
    """Plays the show as a child and restarts it when it exits or stalls (no READY within START_S, or no WATCHDOG
    ping for `stall_s`), waiting longer each time it fails quickly; each restart and its cause go to the history
    file beside the show."""

    def __init__(self, show: Path, stall_s: float = WATCHDOG_S, say: Callable[[str], None] = print,
                 child: list[str] | None = None) -> None:
        self.show, self.stall_s, self.say = show.resolve(), stall_s, say
        self.child = child or command(show)
        self.history_path = history_path(self.show)
        self.history: deque[dict] = deque(self._load(), maxlen=HISTORY)
        self.restarts = 0
        self._stop = False

    def _load(self) -> list[dict]:
        try:
            return list(json.loads(self.history_path.read_text()))[-HISTORY:]
        except (OSError, ValueError, TypeError):
            return []

    def stop(self, *_: object) -> None:
        self._stop = True

    def run(self, restarts: int | None = None) -> int:
        """Supervise until SIGTERM/SIGINT (or `restarts` restarts, for tests); returns the child's last exit code."""
        with tempfile.TemporaryDirectory(prefix="live-supervise-") as folder:
            address = str(Path(folder) / "notify")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(address)
            previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
            wait, code = BACKOFF_S[0], 0
            try:
                while not self._stop:
                    started = time.monotonic()
                    cause, code = self._play(sock, address)
                    if self._stop:
                        break
                    ran = time.monotonic() - started
                    wait = min(wait * 2, BACKOFF_S[1]) if ran < QUICK_S and self.restarts else BACKOFF_S[0]
                    self._record(cause, ran, wait)
                    if restarts is not None and self.restarts >= restarts:
                        break
                    deadline = time.monotonic() + wait
                    while not self._stop and time.monotonic() < deadline:
                        time.sleep(0.05)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                sock.close()
        return code

    def _play(self, sock: socket.socket, address: str) -> tuple[str, int]:
        """One life of the show: until it exits or stalls; returns the cause and its exit code."""
        env = {**os.environ, "NOTIFY_SOCKET": address, "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(self.child, env=env)
        self.say(f"Supervise: playing {self.show.name} (pid {child.pid})")
        ready, last = False, time.monotonic()
        try:
            while True:
                if self._stop:
                    return "stopped", self._end(child)
                code = child.poll()
                if code is not None:
                    return f"exited with code {code}" if code >= 0 else f"killed by signal {-code}", code
                sock.settimeout(0.2)
                try:
                    message = sock.recv(4096).decode(errors="replace")
                except TimeoutError:
                    message = ""
                if "READY=1" in message:
                    ready, last = True, time.monotonic()
                elif "WATCHDOG=1" in message:
                    last = time.monotonic()
                limit = self.stall_s if ready else START_S
                if time.monotonic() - last > limit:
                    self._end(child)
                    return (f"stalled: no frame for {limit:g} s" if ready else
                            f"stalled: not playing {limit:g} s after it started"), -1
        finally:
            if child.poll() is None:
                self._end(child)

    @staticmethod
    def _end(child: subprocess.Popen) -> int:
        """Stop the child: SIGTERM (the show closes its outputs, a recording stays playable), SIGKILL after 5 s."""
        child.terminate()
        return end_child(child, 5.0)

    def _record(self, cause: str, ran: float, wait: float) -> None:
        self.restarts += 1
        self.history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cause": cause, "ran_s": round(ran, 1)})
        try:
            self.history_path.write_text(json.dumps(list(self.history), indent=1) + "\n")
        except OSError as err:
            self.say(f"Supervise: cannot write {self.history_path} ({err.strerror}); the history stays in memory")
        self.say(f"Supervise: the show {cause} after {ran:.1f} s; restarting in {wait:g} s "
                 f"(restart {self.restarts})")
