"""Keep native libraries' console noise away from the user, and keep it for the explanation."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout


@contextmanager
def captured_output() -> Iterator[list[str]]:
    """Send fds 1 and 2, and Python's sys.stdout/sys.stderr, aside for the duration; the list receives what was
    written once the block ends.

    ONNX Runtime's C++ logger and OpenCV's backends write straight to the file descriptors; ORT's provider
    fallback notice is a Python print.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    python_text = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        captured: list[str] = []
        try:
            with redirect_stdout(python_text), redirect_stderr(python_text):
                yield captured
        finally:
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace") + python_text.getvalue())


def console() -> Callable[[str], None]:
    """A line printer on a private copy of this process's stdout. `captured_output` sets the whole process's
    stdout aside while a native library loads (a model opening on one thread), and a line another thread says
    meanwhile ("Source: ... is back") would vanish with it; this copy is never set aside."""
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding=sys.stdout.encoding,
                       errors="replace")

    def say(line: str) -> None:
        try:
            stream.write(f"{line}\n")
        except (OSError, ValueError):  # the terminal was closed (SIGHUP): the show and its recording go on
            pass

    return say
