"""Real MIDI parts for tests: JACK MIDI ports (python-rtmidi's JACK API on the dummy JACK server from
fixtures_audio.py) standing in for a hardware controller and for a device that shows feedback."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Iterator

import pytest
import rtmidi

JACK = rtmidi.API_UNIX_JACK
_serial = itertools.count()


def unique(stem: str) -> str:
    """A JACK client name no other test (or earlier run of this one) uses."""
    return f"{stem}{next(_serial)}x{os.getpid() % 10000}"  # serial first: no name is a prefix of another


class Controller:
    """A virtual MIDI output, like a USB controller's port: other software (ours) connects to it by name."""

    def __init__(self, client: str, port: str = "knobs") -> None:
        self.client, self.port = client, port
        self._out: rtmidi.MidiOut | None = None
        self.plug()

    def plug(self) -> None:
        self._out = rtmidi.MidiOut(JACK, self.client)
        self._out.open_virtual_port(self.port)

    def unplug(self) -> None:
        if self._out is not None:
            self._out.close_port()
            self._out.delete()
            self._out = None

    def send(self, *message: int) -> None:
        self._out.send_message(list(message))

    def cc(self, channel: int, number: int, value: int) -> None:
        self.send(0xB0 | (channel - 1), number, value)

    def settle(self, seconds: float = 0.05) -> None:
        """JACK delivers MIDI once per period (2.7 ms here): give what was sent time to arrive."""
        time.sleep(seconds)


class Monitor:
    """A virtual MIDI input that records everything sent to it (LED rings, motor faders), bounded."""

    def __init__(self, client: str, port: str = "leds") -> None:
        self.client = client
        self.messages: deque[list[int]] = deque(maxlen=10_000)
        self._lock = threading.Lock()
        self._in = rtmidi.MidiIn(JACK, client)
        self._in.set_callback(self._got)
        self._in.open_virtual_port(port)

    def _got(self, event: tuple[list[int], float], _data: object) -> None:
        with self._lock:
            self.messages.append(event[0])

    def take(self) -> list[list[int]]:
        with self._lock:
            out = list(self.messages)
            self.messages.clear()
        return out

    def close(self) -> None:
        self._in.cancel_callback()
        self._in.close_port()
        self._in.delete()


class StandInClock:
    """Records what MIDI clock in forwards, with the contract of live/control/tempo.py's Clock."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float | None]] = []

    def midi_clock(self, now: float) -> None:
        self.calls.append(("clock", now))

    def midi_start(self, now: float) -> None:
        self.calls.append(("start", now))

    def midi_stop(self) -> None:
        self.calls.append(("stop", None))


@pytest.fixture
def controller(jack_server: str) -> Iterator[Controller]:
    ctl = Controller(unique("ctl"))
    yield ctl
    ctl.unplug()


@pytest.fixture
def monitor(jack_server: str) -> Iterator[Monitor]:
    mon = Monitor(unique("mon"))
    yield mon
    mon.close()
