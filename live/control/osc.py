"""OSC in over UDP: one thread, one socket, every packet parsed and either applied to the tree or counted.

python-osc parses; we own the socket loop so a malformed packet is counted instead of vanishing, a bundle's
timetag never makes the receiver sleep, and no thread is started per packet.
"""

from __future__ import annotations

import errno
import socket
import threading
import time

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_packet import OscPacket

from live.errors import LiveError
from live.params import ParamTree

MAX_DATAGRAM = 65536


_FIXED = {"i": 4, "f": 4, "c": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8}
_EMPTY = set("TFNI[]")


def _padded_string_end(data: bytes, start: int) -> int:
    end = data.index(b"\0", start)  # ValueError if unterminated
    return (end + 4) & ~3


def check_complete(data: bytes) -> None:
    """Raise ValueError unless a message's arguments exactly fill the datagram.

    python-osc reads a missing trailing float as 0.0; a truncated packet must be rejected, not applied.
    """
    tags_at = _padded_string_end(data, 0)
    if tags_at >= len(data) or data[tags_at:tags_at + 1] != b",":
        if tags_at == len(data):
            return  # no type tag string: a message without arguments
        raise ValueError("no type tag string")
    pos = _padded_string_end(data, tags_at)
    for tag in data[tags_at + 1:data.index(b"\0", tags_at)].decode("ascii"):
        if tag in _FIXED:
            pos += _FIXED[tag]
        elif tag in "sS":
            pos = _padded_string_end(data, pos)
        elif tag == "b":
            size = int.from_bytes(data[pos:pos + 4], "big")
            pos += 4 + ((size + 3) & ~3)
        elif tag not in _EMPTY:
            raise ValueError(f"unknown type tag '{tag}'")
        if pos > len(data):
            raise ValueError("truncated arguments")
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes after the last argument")


class OscServer:
    """Receives OSC on host:port and writes parameters / emits events in the tree."""

    def __init__(self, tree: ParamTree, host: str = "127.0.0.1", port: int = 9000) -> None:
        self.tree, self.host, self.port = tree, host, port
        self.counts = {"packets": 0, "messages": 0, "applied": 0, "malformed": 0, "unknown": 0, "bad_value": 0}
        self.last_problem = ""
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="osc", daemon=True)

    def open(self) -> str:
        """Bind the socket (LiveError naming the port if it is taken) and start receiving."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            if err.errno == errno.EADDRINUSE:
                raise LiveError(f"OSC port {self.port} on {self.host} is already in use (another show or OSC app?)",
                                "stop the other program, or set [osc] port in the show to a free port") from None
            raise LiveError(f"cannot listen for OSC on {self.host}:{self.port}: {err.strerror}",
                            "set [osc] host to 127.0.0.1 or an address of this machine") from None
        sock.settimeout(0.1)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._thread.start()
        return f"OSC: listening on udp://{self.host}:{self.port}"

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        if self._sock:
            self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self._sock.recvfrom(MAX_DATAGRAM)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.counts["packets"] += 1
            self.handle(data)

    def handle(self, data: bytes) -> None:
        """Parse one datagram and apply every message in it; problems are counted, never raised."""
        try:
            if OscBundle.dgram_is_bundle(data):
                messages = [timed.message for timed in OscPacket(data).messages]
                for message in messages:
                    check_complete(message.dgram)
            else:
                check_complete(data)
                messages = [OscMessage(data)]
        except Exception as err:  # python-osc raises several unrelated types on junk; all mean 'malformed'
            self._problem("malformed", f"malformed packet ({len(data)} bytes): {err}")
            return
        for message in messages:
            self.apply(message.address, list(message.params))

    def apply(self, address: str, args: list) -> None:
        self.counts["messages"] += 1
        try:
            if address in self.tree.events:
                self.tree.emit(address, *args)
            elif address in self.tree.params:
                if len(args) != 1:
                    raise ValueError(f"{address}: expects one value, got {len(args)}")
                self.tree.set(address, args[0])
            else:
                self._problem("unknown", f"unknown address {address} (see `live params`)")
                return
        except ValueError as err:
            self._problem("bad_value", str(err))
            return
        self.counts["applied"] += 1

    def _problem(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        self.last_problem = f"{time.strftime('%H:%M:%S')} {text}"
