"""MIDI out for generated notes: each note sent at its time, so another instrument plays them on the grid too.

The music thread plans a beat's notes ahead of it; they wait here in a bounded schedule (the earliest first; when it
is full, the newest note is dropped and counted) and one thread of ours sends each at its perf_counter() time, so
the music thread never waits on MIDI. The port is our own rtmidi output: connected to the first port whose name
starts with `[music] midi_out`, or, with none named, a virtual port ("live:music") other software connects to. With
JACK MIDI (`[midi] api = "jack"`) it is a JACK client.
"""

from __future__ import annotations

import heapq
import itertools
import re
import threading
import time
from collections.abc import Callable

import rtmidi

from live.control.midi import API
from live.control.priority import favour_this_thread

#: Our client is named like the show's MIDI control client ("live"), whose port scan skips its own client's ports
#: (live/control/midi.py: "live:", or "live-01:" once JACK renamed the second): a show reading every input port
#: never hears its own generated notes as the performer's.
CLIENT = "live"
OWN = re.compile(rf"^{CLIENT}(-\d+)?:")
VIRTUAL_PORT = "music"
PENDING = 512  # messages waiting to be sent (a few bars of busy melody); more are dropped, counted
IDLE_S = 0.5
CLOSE_S = 1.0


class MidiOut:
    """One output port and the thread that sends scheduled notes on it."""

    def __init__(self, api: str, port: str, channel: int, say: Callable[[str], None] = print) -> None:
        self.api, self.port, self.channel = api, port, channel
        self.say = say
        self.name = ""  # the port connected to (or our virtual port), once open
        self.sent = self.dropped = self.late = 0
        self._out: rtmidi.MidiOut | None = None
        self._schedule: list[tuple[float, int, list[int]]] = []
        self._order = itertools.count()
        self._sounding: set[int] = set()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="music-midi-out", daemon=True)

    def open(self) -> str:
        """Open the port (a missing one is one line: the notes go to the synth alone) and start sending."""
        try:
            out = rtmidi.MidiOut(API[self.api], CLIENT)
        except rtmidi.RtMidiError as err:
            return (f"Music MIDI out: unavailable ({str(err).strip()}); generated notes are not sent\n"
                    "  fix: start the MIDI system (JACK, or the ALSA sequencer), or set [music] output = \"synth\"")
        if self.port:
            ports = out.get_ports()
            names = [n for n in ports if not OWN.match(n)]
            match = next((i for i, n in enumerate(ports) if n in names and n.lower().startswith(self.port.lower())),
                         None)
            if match is None:
                out.delete()
                there = ", ".join(repr(n) for n in names) or "none"
                return (f"Music MIDI out: no output port starting with {self.port!r} (ports here: {there}); generated "
                        "notes are not sent\n  fix: connect the instrument, or set [music] midi_out to the start of "
                        "one of those names (\"\" = a virtual port)")
            self.name = ports[match]
            out.open_port(match, VIRTUAL_PORT)
        else:
            out.open_virtual_port(VIRTUAL_PORT)
            self.name = f"{CLIENT}:{VIRTUAL_PORT} (virtual)"
        self._out = out
        self._thread.start()
        return f"Music MIDI out: {self.name}, channel {self.channel}"

    def note(self, on: float, off: float, pitch: int, velocity: float) -> None:
        """Send note `pitch` at perf_counter() time `on` and release it at `off`."""
        status = 0x90 | (self.channel - 1)
        self._put(on, [status, pitch, max(1, min(127, round(velocity * 127)))])
        self._put(off, [status, pitch, 0])

    def _put(self, at: float, message: list[int]) -> None:
        with self._wake:
            if self._out is None:
                return
            if len(self._schedule) >= PENDING:
                self.dropped += 1
                return
            heapq.heappush(self._schedule, (at, next(self._order), message))
            if self._schedule[0][2] is message:
                self._wake.notify()

    def _run(self) -> None:
        favour_this_thread()
        while True:
            with self._wake:
                while not self._stop:
                    wait = self._schedule[0][0] - time.perf_counter() if self._schedule else IDLE_S
                    if wait <= 0:
                        break
                    self._wake.wait(min(wait, IDLE_S))
                if self._stop:
                    return
                at, _, message = heapq.heappop(self._schedule)
            self.late += time.perf_counter() - at > 0.005
            self._send(message)

    def _send(self, message: list[int]) -> None:
        try:
            self._out.send_message(message)
        except rtmidi.RtMidiError as err:  # a device pulled out: the show plays on
            self.say(f"Music MIDI out: {self.name}: {err}")
            return
        self.sent += 1
        if message[2]:
            self._sounding.add(message[1])
        else:
            self._sounding.discard(message[1])

    def close(self) -> None:
        """Stop sending, release the notes still sounding on the instrument, close the port; safe twice."""
        with self._wake:
            self._stop = True
            self._schedule.clear()
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=CLOSE_S)
        out, self._out = self._out, None
        if out is not None:
            try:
                for pitch in sorted(self._sounding):
                    out.send_message([0x90 | (self.channel - 1), pitch, 0])
            except rtmidi.RtMidiError:  # the device is gone: nothing is left sounding on it
                pass
            out.close_port()
            out.delete()

    def stats(self) -> dict[str, int | str]:
        return {"port": self.name, "sent": self.sent, "dropped": self.dropped, "late": self.late}
