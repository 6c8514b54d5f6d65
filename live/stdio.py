"""Keep native libraries' console noise away from the user, and keep it for the explanation."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def captured_output() -> Iterator[list[str]]:
    """Send fds 1 and 2 to a file for the duration; the list receives what was written once the block ends.

    ONNX Runtime's C++ logger and OpenCV's backends write straight to the file descriptors, past sys.stdout.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        captured: list[str] = []
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))
