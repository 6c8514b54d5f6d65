"""A JACK server killed and restarted mid-show: said once, silent meanwhile, audio back, and exit never hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fixtures_live import LiveProcess, decode_frames, headless_env, show_with
from live.audio.engine import AudioEngine
from live.params import ParamTree

SERVER_UP_S = 10.0


class Server:
    """A jackd (dummy backend, clocked like a card) under a name of the test's own, to kill and start again."""

    def __init__(self, name: str) -> None:
        self.name, self.proc = name, None

    def ports(self) -> str:
        env = dict(os.environ, JACK_DEFAULT_SERVER=self.name)
        result = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=5, env=env)
        return result.stdout if result.returncode == 0 else ""

    def start(self) -> float:
        """Start it; returns when system:playback_1 is listed, the time it was."""
        self.proc = subprocess.Popen(["jackd", "-n", self.name, "-d", "dummy", "-r", "48000", "-p", "128"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + SERVER_UP_S
        while "system:playback_1" not in self.ports():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"jackd did not come up: {self.proc.communicate()[0][-2000:]}")
            time.sleep(0.05)
        self.proc.stdout.close()  # from here on its log is not read: a full pipe must not block it
        return time.monotonic()

    def kill(self) -> float:
        """SIGKILL, as a crash would; the restart under the same name frees its slot in JACK's registry."""
        self.proc.kill()
        self.proc.wait()
        return time.monotonic()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    jack = Server(f"live-recovery-{os.getpid()}")
    jack.start()
    try:
        yield jack
    finally:
        if jack.proc.poll() is not None:  # killed and not restarted: start it once more to free its registry slot
            jack.start()
        jack.stop()


def engine_recovers(name: str, decoder: Path) -> str:
    """The engine-level check against a server of its own (the render process it starts inherits the name:
    PortAudio, which keeps per-process state about the JACK servers it has seen, lives only there). Raises
    AssertionError; returns the measured figures."""
    os.environ["JACK_DEFAULT_SERVER"] = name
    server = Server(name)
    server.start()
    said: list[tuple[float, str]] = []
    tree = ParamTree(*AudioEngine.params())
    engine = AudioEngine(tree, decoder, device="system", say=lambda line: said.append((time.monotonic(), line)))
    try:
        assert "'system'" in engine.open()
        assert engine.status().startswith("audio system 48 kHz; starved 0x (ours), ")
        time.sleep(0.5)
        engine.read_tap()
        tapped, done = [0], threading.Event()

        def drain_and_play() -> None:  # a recorder reading the tap, and a performer playing on throughout
            for i, _ in enumerate(iter(lambda: done.wait(0.2), True)):
                tapped[0] += len(engine.read_tap()[1])
                tree.emit("/synth/note", 60 + i % 12, 0.5 * (tapped[0] // 9600 % 2))

        drain = threading.Thread(target=drain_and_play)
        drain.start()
        killed = server.kill()  # (the counters move just before the line is said: wait for both)
        assert wait_for(lambda: engine.stats()["lost"] == 1 and said, 3.0), f"the loss was never noticed: {said}"
        detected = said[0][0] - killed
        assert engine.status().startswith("audio: JACK server gone, silent, retrying; ")
        time.sleep(1.5)
        restarted = server.start()
        assert wait_for(lambda: engine.stats()["reopened"] == 1 and len(said) >= 2, 5.0), f"audio never came back: {said}"
        back = said[-1][0] - restarted
        assert wait_for(lambda: "PortAudio:out_0" in server.ports(), 2.0), server.ports()
        done.set()
        drain.join()
        tapped[0] += len(engine.read_tap()[1])
        elapsed = time.monotonic() - killed
        stats = engine.stats()
        # and again: each return loads a fresh copy of PortAudio, the second from the file the first came from
        server.kill()
        assert wait_for(lambda: engine.stats()["lost"] == 2, 3.0), f"the second loss was never noticed: {said}"
        time.sleep(1.0)
        server.start()
        assert wait_for(lambda: engine.stats()["reopened"] == 2 and len(said) >= 4, 5.0), f"audio never came back again: {said}"
        closing = time.monotonic()
    finally:
        engine.close()
        server.stop()
    closed = time.monotonic() - closing
    engine.close()
    assert [line for _, line in said][0].startswith("Audio: lost 'system' (JACK Audio Connection Kit)")
    assert "is back after" in said[1][1] and "is back after" in said[3][1] and len(said) == 4
    assert detected < 1.0 and back < 2.5 and closed < 1.5
    assert stats["device"] == "system" and stats["lost"] == 1 and stats["reopened"] == 1
    assert engine.status().startswith("audio system")
    assert tapped[0] == pytest.approx(elapsed * 48000, rel=0.05)  # the tap (a recording) kept time throughout
    # notes played through the loss and the return at their time: none held back to burst out late when the
    # server came back (at most one at each change of clock may start a block early), none lost
    assert stats["late_notes"] <= 2 and stats["lost_notes"] == 0, stats
    return f"detected after {detected:.3f} s, back {back:.3f} s after the server, close {closed:.3f} s; {said}"


def test_engine_goes_silent_keeps_time_and_comes_back(synth_decoder: Path) -> None:
    previous = os.environ.get("JACK_DEFAULT_SERVER")
    try:
        print(engine_recovers(f"live-engine-{os.getpid()}", synth_decoder.with_suffix(".json")))
    finally:
        if previous is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = previous


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


@pytest.mark.parametrize("ending", ["bounded", "sigterm"])
def test_a_show_outlives_its_jack_server_and_exits_on_time(server: Server, camera_file: Path,
                                                          tmp_path: Path, ending: str) -> None:
    """`live run --record --for 12`: the server is killed at ~3 s and restarted at ~6 s. The video never waits,
    audio comes back, and the show ends on time with its summary (or at once on SIGTERM)."""
    show = show_with(tmp_path, audio={"device": "system"}, osc={"enabled": False}, midi={"enabled": False})
    out, seconds = tmp_path / "out.mp4", 12
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--record", str(out), "--for",
                        str(seconds), "--no-window"], env=headless_env(JACK_DEFAULT_SERVER=server.name))
    try:
        live.wait_for("Audio: 'system'")
        started = time.monotonic()
        time.sleep(3.0)
        server.kill()
        live.wait_for("Audio: lost 'system'", timeout=5)
        time.sleep(1.5)
        server.start()
        live.wait_for("is back after", timeout=5)
        assert wait_for(lambda: "PortAudio:out_0" in server.ports(), 2.0), server.ports()
        if ending == "sigterm":
            server.kill()  # and exit with the stream dead: the case that hung in Pa_Terminate
            live.wait_for("Audio: lost 'system'", timeout=5)
            live.proc.send_signal(signal.SIGTERM)
            deadline = 5.0
        else:
            deadline = seconds - (time.monotonic() - started) + 5.0
        code, output = live.finish(timeout=deadline)
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
    ended = time.monotonic() - started
    print(output)
    assert code == 0, output
    assert "Played " in output and output.count("Audio: lost") == (2 if ending == "sigterm" else 1)
    times = np.array([t for t, _ in decode_frames(out)])
    gap = float(np.diff(times).max())
    print(f"{ending}: ended {ended:.1f} s after the show began, longest gap between frames {gap:.3f} s")
    assert gap < 1.0
    if ending == "bounded":
        assert ended < seconds + 5.0
