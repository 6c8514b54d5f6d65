"""MIDI out for generated notes: each note sent at its time, so another instrument plays them on the grid too.

The music thread plans a beat's notes ahead of it and hands each message, dated, to a small child process of ours
(`python -m live.music.midi_out`), which keeps them in a bounded schedule (the earliest first; when it is full, the
newest is dropped and counted) and sends each at its perf_counter() time (CLOCK_MONOTONIC, the same in both
processes). Why a process and not a thread: a thread of the show's waits for the interpreter's lock behind the
video and analysis threads, and on a loaded 2-core machine (CI) the notes went out 20-30 ms after their time
(1038-1486 frames at 48 kHz, tests/test_music_live.py), whatever the thread's priority; the child has its lock to
itself. The hand-over is a socket of datagrams: the music thread never waits on it (a full socket drops the
message, counted). The port is the child's own rtmidi output: connected to the first port whose name starts with
`[music] midi_out`, or, with none named, a virtual port ("live:music") other software connects to. With JACK MIDI
(`[midi] api = "jack"`) it is a JACK client.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable

import rtmidi

from live.children import end_child
from live.control.priority import favour_this_thread

#: Our client is named like the show's MIDI control client ("live"), whose port scan skips its own client's ports
#: (live/control/midi.py: "live:", or "live-01:" once JACK renamed the second): a show reading every input port
#: never hears its own generated notes as the performer's.
CLIENT = "live"
OWN = re.compile(rf"^{CLIENT}(-\d+)?:")
VIRTUAL_PORT = "music"
PENDING = 512  # messages waiting in the child (a few bars of busy melody); more are dropped, counted
MESSAGE = struct.Struct("<dBBBx")  # perf_counter() time, then the three bytes of a note message
IDLE_S = 0.5
START_S = 5.0  # for the child's first word: an interpreter, rtmidi and the MIDI system's client
CLOSE_S = 1.0
LATE_S = 0.005
FLUSH_S = 0.05  # a few cycles of any usual period


class MidiOut:
    """The show's side: one output port, opened and played by a child process."""

    def __init__(self, api: int, port: str, channel: int, say: Callable[[str], None] = print) -> None:
        """`api`: an rtmidi API constant (live/control/midi.py API[...]); `port`: the start of the port's name
        ("" = a virtual port); `channel`: 1..16."""
        self.api, self.port, self.channel = api, port, channel
        self.say = say
        self.name = ""  # the port connected to (or our virtual port), once open
        self.dropped = 0  # messages the socket had no room for (the child counts its own)
        self._child = {"sent": 0, "dropped": 0, "late": 0}
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen | None = None

    def open(self) -> str:
        """Start the child and wait for its word: the port it opened, or one line on why there is none (the notes
        go to the synth alone)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {"api": self.api, "port": self.port}
        # A plain interpreter running this module (as the synth's render process: no re-import of the show's
        # __main__, no copy of its threads' locks).
        self._process = subprocess.Popen([sys.executable, "-m", __name__, json.dumps(config), str(theirs.fileno())],
                                         pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        word = mine.recv(4096) if select.select([mine], [], [], START_S)[0] else b""
        said = json.loads(word) if word else {"line": f"the child process gave no word within {START_S:g} s"}
        if "name" not in said:
            mine.close()
            end_child(self._process, CLOSE_S)
            self._process = None
            fix = f"\n  fix: {said['fix']}" if "fix" in said else ""
            return f"Music MIDI out: {said['line']}; generated notes are not sent{fix}"
        mine.setblocking(False)
        self._socket, self.name = mine, said["name"]
        return f"Music MIDI out: {self.name}, channel {self.channel}"

    def note(self, on: float, off: float, pitch: int, velocity: float) -> None:
        """Send note `pitch` at perf_counter() time `on` and release it at `off`; never waits."""
        status = 0x90 | (self.channel - 1)
        self._put(MESSAGE.pack(on, status, pitch, max(1, min(127, round(velocity * 127)))))
        self._put(MESSAGE.pack(off, status, pitch, 0))

    def _put(self, record: bytes) -> None:
        if self._socket is None:
            return
        try:
            self._socket.send(record)
        except (BlockingIOError, BrokenPipeError, ConnectionError):  # full, or the child is gone: counted
            self.dropped += 1

    def _read(self) -> None:
        """Take in what the child said since: its counters (the newest win) and lines for the performer."""
        while self._socket is not None:
            try:
                word = self._socket.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                word = b""
            if not word:  # the child ended: the port is gone with it
                self.say(f"Music MIDI out: {self.name}: the sender stopped; generated notes are not sent")
                self._socket.close()
                self._socket = None
                return
            said = json.loads(word)
            if "line" in said:
                self.say(f"Music MIDI out: {self.name}: {said['line']}")
            else:
                self._child = said

    def close(self) -> None:
        """Stop sending: the child releases the notes still sounding on the instrument and closes the port; safe
        twice."""
        if self._socket is not None:
            self._read()
        if self._socket is not None:
            self._socket.close()  # the child's end of file
            self._socket = None
        if self._process is not None:
            end_child(self._process, CLOSE_S)
            self._process = None

    def stats(self) -> dict[str, int | str]:
        self._read()
        return {"port": self.name, "sent": self._child["sent"], "dropped": self.dropped + self._child["dropped"],
                "late": self._child["late"]}


# --- the child ---------------------------------------------------------------------------------------------------

def _open_port(api: int, port: str) -> tuple[rtmidi.MidiOut | None, dict[str, str]]:
    """Our output port, and the word for the show: {"name"} or {"line", "fix"}."""
    try:
        out = rtmidi.MidiOut(api, CLIENT)
    except rtmidi.RtMidiError as err:
        return None, {"line": f"unavailable ({str(err).strip()})",
                      "fix": "start the MIDI system (JACK, or the ALSA sequencer), or set [music] output = \"synth\""}
    if not port:
        out.open_virtual_port(VIRTUAL_PORT)
        return out, {"name": f"{CLIENT}:{VIRTUAL_PORT} (virtual)"}
    ports = out.get_ports()
    names = [n for n in ports if not OWN.match(n)]
    match = next((i for i, n in enumerate(ports) if n in names and n.lower().startswith(port.lower())), None)
    if match is None:
        out.delete()
        there = ", ".join(repr(n) for n in names) or "none"
        return None, {"line": f"no output port starting with {port!r} (ports here: {there})",
                      "fix": "connect the instrument, or set [music] midi_out to the start of one of those names "
                             "(\"\" = a virtual port)"}
    out.open_port(match, VIRTUAL_PORT)
    return out, {"name": ports[match]}


def _serve(out: rtmidi.MidiOut, show: socket.socket) -> None:
    """Send each message at its time until the show hangs up, then release the notes still sounding."""
    schedule: list[tuple[float, int, bytes]] = []
    order = itertools.count()
    sounding: set[tuple[int, int]] = set()
    counts = {"sent": 0, "dropped": 0, "late": 0}
    while True:
        wait = schedule[0][0] - time.perf_counter() if schedule else IDLE_S
        if wait > 0 and select.select([show], [], [], wait)[0]:
            word = show.recv(MESSAGE.size)
            if not word:
                break
            at, *message = MESSAGE.unpack(word)
            if len(schedule) < PENDING:
                heapq.heappush(schedule, (at, next(order), bytes(message)))
            else:
                counts["dropped"] += 1
            continue
        sent = False
        while schedule and schedule[0][0] <= time.perf_counter():
            at, _, message = heapq.heappop(schedule)
            counts["late"] += time.perf_counter() - at > LATE_S
            try:
                out.send_message(list(message))
            except rtmidi.RtMidiError as err:  # a device pulled out: the show plays on
                _tell(show, {"line": str(err)})
                continue
            counts["sent"] += 1
            sent = True
            if message[2]:
                sounding.add((message[0], message[1]))
            else:
                sounding.discard((message[0], message[1]))
        if sent:
            _tell(show, counts)
    try:
        for status, pitch in sorted(sounding):
            out.send_message([status, pitch, 0])
    except rtmidi.RtMidiError:  # the device is gone: nothing is left sounding on it
        return
    if sounding:  # rtmidi's JACK port passes messages on at the next cycle: closed before it, they are lost
        time.sleep(FLUSH_S)


def _tell(show: socket.socket, word: dict) -> None:
    """A word for the show, if its socket has room (counters: the next word carries them again)."""
    try:
        show.send(json.dumps(word).encode(), socket.MSG_DONTWAIT)
    except (BlockingIOError, OSError):
        pass


def main(config: dict, fd: int) -> None:
    # The show's Ctrl-C reaches its whole process group: we end when the show hangs up, releasing our notes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    favour_this_thread()  # SCHED_FIFO below the synth's renderer where allowed: a note goes out on its time
    show = socket.socket(fileno=fd)
    out, word = _open_port(config["api"], config["port"])
    show.send(json.dumps(word).encode())
    if out is None:
        return
    try:
        _serve(out, show)
    finally:
        out.close_port()
        out.delete()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), int(sys.argv[2]))
