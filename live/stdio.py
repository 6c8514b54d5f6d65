"""Keep native libraries' console noise away from the user, and keep it for the explanation."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Iterator
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
