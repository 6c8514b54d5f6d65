"""Real audio parts for tests: a clocked JACK server (dummy backend) and a freshly built synth decoder."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sounddevice as sd

from live.models.build_synth import build

JACK_START_TIMEOUT_S = 10.0


def _jack_ports() -> str:
    result = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=5)
    return result.stdout if result.returncode == 0 else ""


@pytest.fixture(scope="session")
def jack_server() -> Iterator[str]:
    """A JACK server clocked like a sound card (48 kHz, 128-frame periods) under a name of its own.

    JACK_DEFAULT_SERVER points this process's clients (PortAudio, the `jack` module, jack_lsp) at it, so a
    JACK server someone else runs on the machine is neither used nor disturbed. Yields the server name.
    """
    missing = [tool for tool in ("jackd", "jack_lsp") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: the audio tests need a JACK server "
                    "(make test installs jackd2)")
    name = f"live-test-{os.getpid()}"
    previous = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "128"],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + JACK_START_TIMEOUT_S
            while "system:playback_1" not in _jack_ports():
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"jackd did not come up within {JACK_START_TIMEOUT_S:g} s; its log:\n"
                                + log.read().decode(errors="replace"))
                time.sleep(0.1)
            yield name
        finally:
            # PortAudio's JACK client must close while the server still runs (else it asserts at exit)
            if sd._initialized:
                sd._terminate()
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            if previous is None:
                os.environ.pop("JACK_DEFAULT_SERVER", None)
            else:
                os.environ["JACK_DEFAULT_SERVER"] = previous
            sd._initialize()


@pytest.fixture(scope="session")
def synth_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synth decoder built from source into a temporary folder (the .onnx path; its manifest beside it)."""
    return build(tmp_path_factory.mktemp("synth-decoder"))
