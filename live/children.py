"""Ending the child processes a show starts (the synth's renderer, a window) in bounded time."""

from __future__ import annotations

import subprocess


def end_child(process: subprocess.Popen, timeout: float) -> int:
    """Wait up to `timeout` for a child that was asked to stop (its pipe hung up, or a signal), and kill it if it
    is stuck (in a native call, a display driver): a child must never outlive the show. Returns its exit code."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout)
