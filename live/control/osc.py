"""OSC in over UDP and TCP, out as feedback: every packet either applied to the tree or counted, never a crash.

Threads, all fixed at open(): one per transport (UDP; TCP with a selectors loop over both framings and at most
`max_tcp_clients` connections), one scheduler for bundles with a future timetag (a bounded heap, never a sleep in a
receiver) and one feedback sender polling `tree.version`. Nothing is started per packet or per client, and every
buffer is bounded: pending bundles, TCP frames and outboxes, senders' rate buckets, the pattern cache, feedback
clients. A bundle is all or nothing: its parameter writes go through one `tree.update` (readers never see half of
it), then its events and system messages run in order; if any message in it is unknown or carries a bad value,
none of it is applied and the packet is counted once under that problem.

UDP is read in batches (one wait, then what is already queued, at most UDP_BATCH): within a batch a plain write to
a parameter that a later one to the same address overwrites is skipped (counted `superseded`), so under a storm the
thread's time goes to the newest values and to the events between them, not to a backlog of stale ones. Each
datagram carries its kernel arrival time, and its immediate events are for then (the synth places a note by it).
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
import itertools
import selectors
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from live.control.osc_codec import (IMMEDIATELY, AddressPattern, Bundle, FrameTooLarge, LengthDecoder, Message,
                                    OscError, SlipDecoder, check_complete, count_messages, encode_message,
                                    is_pattern, length_encode, ntp_to_unix, parse_packet, slip_encode,
                                    slip_unescape)
from live.control.priority import favour_this_thread
from live.errors import LiveError
from live.params import ParamTree

__all__ = ["OscServer", "OscSection", "SystemHandler", "check_complete", "MAX_DATAGRAM"]

MAX_DATAGRAM = 65536
#: Bound on queued reply bytes per TCP client; replies beyond it are dropped (a client that does not read).
MAX_TCP_OUTBOX = 256 * 1024
PATTERN_CACHE = 256
RATE_BUCKETS = 1024
ALLOW_CACHE = 1024
#: Datagrams handled as one batch at most; the rest stay queued in the kernel for the next one.
UDP_BATCH = 256
#: Linux's kernel receive timestamp: SO_TIMESTAMPNS (and SCM_TIMESTAMPNS, its control message) are 35 in
#: include/uapi/asm-generic/socket.h (x86, ARM, RISC-V); Python's socket module has no name for them. The message
#: is a struct timespec (two C longs) of CLOCK_REALTIME: when the datagram reached the machine. Elsewhere None: the
#: time the read returned stands in.
SO_TIMESTAMPNS = 35 if sys.platform == "linux" else None
_TIMESPEC = struct.Struct("@ll")

#: A system address handler: (arguments, sender "host:port") -> replies [(address, args)] sent back to the sender.
SystemHandler = Callable[[tuple, str], "list[tuple[str, list]] | None"]

#: Every way a packet (or TCP connection) can be refused; each is a counter and `rejected` is their sum.
REJECTIONS = ("malformed", "unknown", "bad_value", "oversize", "far_future", "schedule_full", "not_allowed",
              "rate_limited", "too_many_clients")


def _parse_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(f"allow entry '{entry}' is not an IP address or network like 192.168.1.0/24") from None


def _parse_host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"feedback entry '{entry}' is not host:port (e.g. 192.168.1.20:9001)")
    return host, int(port)


def _enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram's arrival; False where it cannot (the read time stands in)."""
    if SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _arrival(ancdata: list[tuple[int, int, bytes]], offset: float, read: float) -> float:
    """The perf_counter() time a datagram arrived: its kernel stamp (CLOCK_REALTIME) less `offset` (time.time() -
    time.perf_counter()), never after `read`, the time the read returned, which stands in when there is no stamp."""
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
            return min(seconds - offset + nanoseconds * 1e-9, read)
    return read


def _address_of(data: bytes) -> str | None:
    """A message's address, read without parsing the rest (None for a bundle): enough to see which datagrams of a
    batch write the same parameter."""
    end = data.find(b"\0") if data.startswith(b"/") else -1
    return data[:end].decode("utf-8", "replace") if end > 0 else None


class OscSection(BaseModel):
    """The show's [osc] table."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = Field("127.0.0.1", description="address to listen on; 0.0.0.0 opens OSC to the network")
    port: int = Field(9000, ge=0, le=65535, description="UDP port (0 = any free port)")
    tcp_port: int | None = Field(None, ge=0, le=65535, description="TCP port; unset or 0 = no TCP")
    tcp_framing: Literal["slip", "length", "both"] = Field(
        "slip", description="OSC 1.1 SLIP, OSC 1.0 int32 length prefix, or both (length on tcp_port, SLIP on "
                            "tcp_port + 1)")
    allow: list[str] = Field(default_factory=list,
                             description="senders allowed (IPs or networks, e.g. 192.168.1.0/24); empty = any")
    feedback: list[str] = Field(default_factory=list, description="host:port clients sent changed values")
    feedback_hz: float = Field(30.0, gt=0, le=1000, description="most updates per second per feedback client")

    @field_validator("allow", "feedback")
    @classmethod
    def _check_entries(cls, value: list[str], info: ValidationInfo) -> list[str]:
        parse = _parse_network if info.field_name == "allow" else _parse_host_port
        for entry in value:
            parse(entry)
        return value


# ------------------------------------------------------------------------------------------------ internals

class _Reject(Exception):
    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind, self.text = kind, text


@dataclass
class _Group:
    """What one timetag of a packet does: parameter writes (one tree.update), then events and system calls."""

    writes: dict[str, Any] = field(default_factory=dict)
    actions: list[tuple[str, str, tuple]] = field(default_factory=list)  # ("event"|"system", address, args)
    messages: int = 0
    at: float | None = None  # perf_counter() time of a scheduled bundle's timetag: its events are for then


@dataclass
class _Bucket:
    tokens: float
    stamp: float


Reply = Callable[[Sequence[tuple[str, Sequence[Any]]]], None]


class _Sender:
    """Who sent a packet and how to answer: the source string tags tree writes (feedback skips it)."""

    __slots__ = ("host", "port", "transport", "reply", "source")

    def __init__(self, host: str, port: int, transport: str, reply: Reply) -> None:
        self.host, self.port, self.transport, self.reply = host, port, transport, reply
        self.source = f"osc:{host}:{port}"


class _TcpConn:
    __slots__ = ("sock", "host", "port", "framing", "decoder", "outbox", "lock", "sender", "heard")

    def __init__(self, sock: socket.socket, host: str, port: int, framing: str, limit: int, reply: Reply) -> None:
        self.sock, self.host, self.port, self.framing = sock, host, port, framing
        self.decoder = SlipDecoder(limit) if framing == "slip" else LengthDecoder(limit)
        self.outbox = bytearray()
        self.lock = threading.Lock()
        self.sender = _Sender(host, port, "tcp", reply)
        self.heard = time.monotonic()  # when it last sent anything: the longest-silent gives way when full


@dataclass
class _FeedbackClient:
    key: str
    address: tuple
    sources: set[str]
    last: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ the server

class OscServer:
    """Receives OSC on UDP host:port (and optionally TCP), writes parameters / emits events in the tree, answers
    system messages under /live/ and sends changed values to feedback clients.

    `counts` holds packets, messages, applied, superseded (UDP writes skipped for a newer one to the same address
    in the same batch), errors (caught internal exceptions: a bug if ever non-zero), each rejection kind in
    REJECTIONS and `rejected`, their total; `last_problem` says what the last rejection was."""

    def __init__(self, tree: ParamTree, host: str = "127.0.0.1", port: int = 9000, *,
                 tcp_port: int | None = None, tcp_framing: str = "slip", allow: Iterable[str] = (),
                 feedback: Iterable[str] = (), feedback_hz: float = 30.0,
                 system: dict[str, SystemHandler] | None = None, max_packet: int = MAX_DATAGRAM,
                 rate_limit: float | None = 20_000.0, max_pending: int = 1024, max_ahead_s: float = 60.0,
                 max_tcp_clients: int = 16, max_feedback_clients: int = 16, tcp_idle_s: float = 60.0) -> None:
        self.tree, self.host, self.port = tree, host, port
        if tcp_framing not in ("slip", "length", "both"):
            raise LiveError(f"OSC tcp_framing '{tcp_framing}' is not slip, length or both",
                            "set [osc] tcp_framing to \"slip\" (OSC 1.1), \"length\" (OSC 1.0) or \"both\"")
        self.tcp_port, self.tcp_framing = tcp_port, tcp_framing
        try:
            self.allow = tuple(_parse_network(entry) for entry in allow)
            self._feedback_config = [_parse_host_port(entry) for entry in feedback]
        except ValueError as err:
            raise LiveError(f"OSC config: {err}", "fix [osc] allow / feedback in the show") from None
        if feedback_hz <= 0:
            raise LiveError(f"OSC feedback_hz {feedback_hz} must be positive", "set [osc] feedback_hz, e.g. 30")
        self.feedback_hz = feedback_hz
        self.max_packet, self.rate_limit = max_packet, rate_limit or None
        self.max_pending, self.max_ahead_s = max_pending, max_ahead_s
        self.max_tcp_clients, self.max_feedback_clients = max_tcp_clients, max_feedback_clients
        self.tcp_idle_s = tcp_idle_s  # a full server closes a client silent this long to let a new one in
        self.system: dict[str, SystemHandler] = dict(system or {})
        #: the show's parts' one-line statuses, sent after the counters by /live/status (set by the surface)
        self.parts_status: Callable[[], list[str]] = list
        self._builtin: dict[str, Callable[[tuple, _Sender], list | None]] = {
            "/live/status": self._status,
            "/live/feedback/add": self._feedback_add,
            "/live/feedback/remove": self._feedback_remove,
        }
        self.counts: dict[str, int] = {"packets": 0, "messages": 0, "applied": 0, "superseded": 0,
                                       "errors": 0, **{kind: 0 for kind in REJECTIONS}, "rejected": 0}
        self.last_problem = ""
        self.tcp_ports: dict[str, int] = {}  # framing -> bound port
        self._count_lock = threading.Lock()
        self._state_lock = threading.Lock()  # the rate buckets and the pattern cache, shared by UDP and TCP threads
        self._patterns: OrderedDict[str, tuple[tuple[str, ...], tuple[str, ...]]] = OrderedDict()
        self._patterns_generation = tree.generation
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._allowed_cache: dict[str, bool] = {}
        self._heap: list[tuple[float, int, _Group, _Sender]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._feedback: dict[str, _FeedbackClient] = {}
        self._feedback_lock = threading.Lock()
        self._feedback_fresh = threading.Event()
        self._udp: socket.socket | None = None
        self._stamped = False  # whether the kernel stamps each datagram's arrival (SO_TIMESTAMPNS)
        self._listeners: list[tuple[socket.socket, str]] = []
        self._conns: dict[socket.socket, _TcpConn] = {}
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._tcp_thread_id: int | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_section(cls, tree: ParamTree, section: OscSection,
                     system: dict[str, SystemHandler] | None = None, **limits: Any) -> OscServer:
        """A server configured by the show's [osc] table; `limits` passes the other keyword arguments through."""
        return cls(tree, section.host, section.port, tcp_port=section.tcp_port or None,
                   tcp_framing=section.tcp_framing, allow=section.allow, feedback=section.feedback,
                   feedback_hz=section.feedback_hz, system=system, **limits)

    # --------------------------------------------------------------------------------------------- lifecycle

    def open(self) -> str:
        """Bind every socket (LiveError naming the port if it is taken), then start the threads; returns one line
        saying where it listens."""
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            udp = socket.socket(family, socket.SOCK_DGRAM)
            self._udp = udp
            self._bind(udp, self.port, "port")
            try:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # absorb bursts (kernel may cap it)
            except OSError:
                pass
            udp.setblocking(False)  # the receiver waits in a selector; senders never wait on a full buffer
            self._stamped = _enable_timestamps(udp)
            self.port = udp.getsockname()[1]
            if self.tcp_port is not None:
                framings = ("length", "slip") if self.tcp_framing == "both" else (self.tcp_framing,)
                for offset, framing in enumerate(framings):
                    listener = socket.socket(family, socket.SOCK_STREAM)
                    self._listeners.append((listener, framing))
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    port = self.tcp_port + offset if self.tcp_port else 0
                    self._bind(listener, port, "tcp_port")
                    listener.listen(self.max_tcp_clients)
                    listener.setblocking(False)
                    self.tcp_ports[framing] = listener.getsockname()[1]
                self._wake_r, self._wake_w = socket.socketpair()
                self._wake_r.setblocking(False)
                self._wake_w.setblocking(False)
            for host, port in self._feedback_config:
                self.add_feedback(host, port)
        except BaseException:
            self._close_sockets()
            raise
        targets = [(self._udp_loop, "osc-udp"), (self._schedule_loop, "osc-schedule"),
                   (self._feedback_loop, "osc-feedback")]
        if self._listeners:
            targets.append((self._tcp_loop, "osc-tcp"))
        self._stop.clear()
        self._threads = [threading.Thread(target=fn, name=name, daemon=True) for fn, name in targets]
        for thread in self._threads:
            thread.start()
        where = [f"udp://{self.host}:{self.port}"]
        names = {"slip": "OSC 1.1 SLIP", "length": "OSC 1.0 length-prefixed"}
        where += [f"tcp://{self.host}:{port} ({names[framing]})" for framing, port in self.tcp_ports.items()]
        text = f"OSC: listening on {', '.join(where)}"
        if self.allow:
            text += f"; senders allowed: {', '.join(str(n) for n in self.allow)}"
        if self._feedback:
            text += f"; feedback to {', '.join(self._feedback)}"
        return text

    def _bind(self, sock: socket.socket, port: int, key: str) -> None:
        kind = "TCP" if sock.type == socket.SOCK_STREAM else "UDP"
        try:
            sock.bind((self.host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise LiveError(f"OSC {kind} port {port} on {self.host} is already in use (another show or OSC app?)",
                                f"stop the other program, or set [osc] {key} in the show to a free port") from None
            raise LiveError(f"cannot listen for OSC ({kind}) on {self.host}:{port}: {err.strerror or err}",
                            "set [osc] host to 127.0.0.1 or an address of this machine") from None

    def close(self) -> None:
        """Stop every thread and close every socket; safe to call twice."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._wake()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=2.0)
        self._threads = []
        self._close_sockets()

    def _close_sockets(self) -> None:
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        for listener, _ in self._listeners:
            listener.close()
        self._listeners.clear()
        for sock in (self._udp, self._wake_r, self._wake_w):
            if sock:
                sock.close()
        self._udp = self._wake_r = self._wake_w = None

    @property
    def alive(self) -> bool:
        """Whether every thread it started is still running."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def stats(self) -> dict[str, Any]:
        """Counters for the HUD and /live/status: a copy, plus pending bundles and connected clients."""
        with self._count_lock:
            out: dict[str, Any] = dict(self.counts)
        out["pending"] = len(self._heap)
        out["tcp_clients"] = len(self._conns)
        out["feedback_clients"] = len(self._feedback)
        out["last_problem"] = self.last_problem
        return out

    # ----------------------------------------------------------------------------------------------- counting

    def _count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self.counts[key] += n

    def _internal_error(self, err: Exception, where: str = "") -> None:
        self._count("errors")
        self.last_problem = f"{time.strftime('%H:%M:%S')} internal error{where}: {err!r}"

    def _problem(self, kind: str, text: str) -> None:
        with self._count_lock:
            self.counts[kind] += 1
            self.counts["rejected"] += 1
            self.last_problem = f"{time.strftime('%H:%M:%S')} {kind}: {text}"

    # ------------------------------------------------------------------------------------------ packet entry

    def handle(self, data: bytes, host: str = "127.0.0.1", port: int = 0, reply: Reply | None = None,
               transport: str = "udp", at: float | None = None) -> None:
        """One packet from host:port: checks, parse, then apply now or schedule; problems are counted, never
        raised. `reply` sends (address, args) messages back to the sender (default: nowhere). `at` is the
        perf_counter() time the packet arrived: its immediate events are for then (default: when handled)."""
        packet = self._screen(data, host)
        if packet is not None:
            self._run(packet, _Sender(host, port, transport, reply or (lambda _: None)), at)

    def _handle_batch(self, batch: Sequence[tuple[bytes, tuple, float]], reply_to: Callable[[tuple], Reply]) -> None:
        """Datagrams (data, (host, port), arrival) read together, handled in arrival order as by handle(), except
        that a plain write (one message setting one parameter by its exact address) is skipped, and counted
        `superseded`, when a later datagram of the batch writes the same address and passes its checks. Those
        newest writes are checked first, so a refused one supersedes nothing, and an event waits only for what
        came before it."""
        senders: dict[tuple, _Sender] = {}

        def sender_of(address: tuple) -> _Sender:
            sender = senders.get(address)
            if sender is None:
                sender = senders[address] = _Sender(address[0], address[1], "udp", reply_to(address))
            return sender

        def checked(index: int) -> _Group | None:
            data, address, _ = batch[index]
            try:
                packet = self._screen(data, address[0])
                if packet is None:
                    return None
                group = _Group()
                self._plan_message(packet, group, sender_of(address))
                return group
            except _Reject as rejection:
                self._problem(rejection.kind, rejection.text)
            except Exception as err:
                self._internal_error(err)
            return None

        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for index, (data, _, _) in enumerate(batch):
            address = _address_of(data)
            if address is not None and self._plain_write(address):
                first.setdefault(address, index)
                last[address] = index
        newest = {index: checked(index) for address, index in last.items() if first[address] != index}
        wins = {address for address, index in last.items() if newest.get(index) is not None}
        superseded = 0
        for index, (data, address, at) in enumerate(batch):
            try:
                if index in newest:
                    group = newest[index]
                    if group is not None:
                        self._apply(group, sender_of(address))
                    continue
                packet = self._screen(data, address[0])
                if packet is None:
                    continue
                if isinstance(packet, Message) and packet.address in wins and index < last[packet.address]:
                    self._plan_message(packet, _Group(), sender_of(address))  # its refusal is counted as ever
                    superseded += 1
                else:
                    self._run(packet, sender_of(address), at)
            except _Reject as rejection:
                self._problem(rejection.kind, rejection.text)
            except Exception as err:  # never let one packet end the listener
                self._internal_error(err)
        if superseded:
            self._count("superseded", superseded)

    def _plain_write(self, address: str) -> bool:
        """Whether a message to `address` only sets one parameter, so a newer one to it makes it moot."""
        tree = self.tree
        return (address in tree.params and address not in tree.events and not address.startswith("/live/")
                and not is_pattern(address))

    def _screen(self, data: bytes, host: str) -> Message | Bundle | None:
        """The checks every packet passes (allow list, size, rate, syntax), each failure counted: the parsed
        packet, or None."""
        self._count("packets")
        if self.allow and not self._allowed(host):
            self._problem("not_allowed", f"packet from {host}, which is not in [osc] allow")
            return None
        if len(data) > self.max_packet:
            self._problem("oversize", f"packet of {len(data)} bytes from {host} (limit {self.max_packet})")
            return None
        if self.rate_limit and not self._take(host, 1, check_only=True):
            self._problem("rate_limited", f"{host} sends faster than {self.rate_limit:g} messages/s")
            return None
        try:
            packet = parse_packet(data)
        except OscError as err:
            if self.rate_limit:
                self._take(host, 1)
            self._problem("malformed", f"malformed packet ({len(data)} bytes) from {host}: {err}")
            return None
        n = count_messages(packet)
        self._count("messages", n)
        if self.rate_limit and not self._take(host, n):
            self._problem("rate_limited", f"{host} sends faster than {self.rate_limit:g} messages/s")
            return None
        return packet

    def _run(self, packet: Message | Bundle, sender: _Sender, at: float | None) -> None:
        try:
            self._dispatch(packet, sender, at)
        except _Reject as rejection:
            self._problem(rejection.kind, rejection.text)

    def _allowed(self, host: str) -> bool:
        known = self._allowed_cache.get(host)
        if known is None:
            try:
                ip = ipaddress.ip_address(host.split("%")[0])
                if ip.version == 6 and ip.ipv4_mapped:
                    ip = ip.ipv4_mapped
                known = any(ip in net for net in self.allow)
            except ValueError:
                known = False
            if len(self._allowed_cache) >= ALLOW_CACHE:
                self._allowed_cache.clear()
            self._allowed_cache[host] = known
        return known

    def _take(self, host: str, n: int, check_only: bool = False) -> bool:
        """Take `n` tokens from the sender's bucket (refilled for the time since its last packet); False, taking
        none, if it holds fewer. At most RATE_BUCKETS senders are remembered (the least recent is forgotten, which
        only ever gives a sender a full bucket again). UDP and TCP threads share it: under a lock."""
        now = time.monotonic()
        rate = self.rate_limit
        with self._state_lock:
            bucket = self._buckets.get(host)
            if bucket is None:
                bucket = self._buckets[host] = _Bucket(rate, now)
                if len(self._buckets) > RATE_BUCKETS:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(host)
                bucket.tokens = min(rate, bucket.tokens + (now - bucket.stamp) * rate)
                bucket.stamp = now
            if bucket.tokens < n:
                return False
            if not check_only:
                bucket.tokens -= n
            return True

    # --------------------------------------------------------------------------------------- plan and apply

    def _dispatch(self, packet: Message | Bundle, sender: _Sender, at: float | None = None) -> None:
        """Validate the whole packet into groups by time, then apply the due one (its events are for `at`, when
        the packet arrived) and schedule the others; _Reject before anything is applied if any part is bad."""
        if isinstance(packet, Message):
            group = _Group(at=at)
            self._plan_message(packet, group, sender)
            self._apply(group, sender)
            return
        groups: dict[int, _Group] = {}
        self._plan_bundle(packet, IMMEDIATELY, groups, sender)
        now_wall, now_mono, now_perf = time.time(), time.monotonic(), time.perf_counter()
        due_now: list[_Group] = []
        later: list[tuple[float, _Group]] = []
        for timetag, group in groups.items():
            delay = ntp_to_unix(timetag) - now_wall if timetag > IMMEDIATELY else 0.0
            if delay <= 0:
                due_now.append(group)
            elif delay > self.max_ahead_s:
                raise _Reject("far_future", f"bundle {delay:.0f} s ahead from {sender.host} "
                                            f"(limit {self.max_ahead_s:g} s; is its clock right?)")
            else:
                group.at = now_perf + delay
                later.append((now_mono + delay, group))
        if later:
            with self._cond:
                if len(self._heap) + len(later) > self.max_pending:
                    raise _Reject("schedule_full", f"{self.max_pending} bundles already wait for their time")
                for due, group in later:
                    heapq.heappush(self._heap, (due, next(self._seq), group, sender))
                self._cond.notify()
        if due_now:
            merged = due_now[0]
            for group in due_now[1:]:
                merged.writes.update(group.writes)
                merged.actions.extend(group.actions)
                merged.messages += group.messages
            merged.at = at
            self._apply(merged, sender)

    def _plan_bundle(self, bundle: Bundle, outer: int, groups: dict[int, _Group], sender: _Sender) -> None:
        inner = bundle.timetag
        when = outer if inner <= IMMEDIATELY else (inner if outer <= IMMEDIATELY else max(outer, inner))
        for element in bundle.elements:
            if isinstance(element, Bundle):
                self._plan_bundle(element, when, groups, sender)
            else:
                group = groups.get(when)
                if group is None:
                    group = groups[when] = _Group()
                self._plan_message(element, group, sender)

    def _plan_message(self, message: Message, group: _Group, sender: _Sender) -> None:
        address, args = message.address, message.args
        group.messages += 1
        if address.startswith("/live/") and (address in self._builtin or address in self.system):
            group.actions.append(("system", address, args))
            return
        params, events = self._resolve(address)
        if not params and not events:
            raise _Reject("unknown", f"unknown address {address} from {sender.host} (see `live params`)")
        try:
            if params:
                if len(args) != 1:
                    raise ValueError(f"{address}: expects one value, got {len(args)}")
                for target in params:
                    group.writes[target] = self.tree.params[target].coerce(args[0])
            for target in events:
                group.actions.append(("event", target, self.tree.events[target].coerce(args)))
        except ValueError as err:
            raise _Reject("bad_value", str(err)) from None

    def _resolve(self, address: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The parameters and events an address (or pattern) names; compiled patterns' results are cached."""
        if not is_pattern(address):
            return ((address,) if address in self.tree.params else (),
                    (address,) if address in self.tree.events else ())
        with self._state_lock:
            if self._patterns_generation != self.tree.generation:  # a reloaded show: other addresses now
                self._patterns.clear()
                self._patterns_generation = self.tree.generation
            cached = self._patterns.get(address)
            if cached is not None:
                self._patterns.move_to_end(address)
                return cached
        try:
            pattern = AddressPattern(address)
        except OscError as err:
            raise _Reject("malformed", f"address pattern {address[:80]}: {err}") from None
        result = (tuple(a for a in self.tree.params if pattern.matches(a)),
                  tuple(a for a in self.tree.events if pattern.matches(a)))
        with self._state_lock:
            self._patterns[address] = result
            if len(self._patterns) > PATTERN_CACHE:
                self._patterns.popitem(last=False)
        return result

    def _apply(self, group: _Group, sender: _Sender) -> None:
        """Writes first (one atomic update), then events and system messages in packet order."""
        applied = group.messages
        if group.writes:
            try:
                self.tree.update(group.writes, sender.source)
            except (KeyError, ValueError) as err:  # values were coerced when planned: only a changed tree gets here
                self._problem("bad_value", str(err))
                return
        for kind, address, args in group.actions:
            if kind == "event":
                self.tree.emit(address, *args, at=group.at)
                continue
            try:
                builtin = self._builtin.get(address)
                if builtin:
                    replies = builtin(args, sender)
                else:
                    replies = self.system[address](args, f"{sender.host}:{sender.port}")
            except Exception as err:  # a handler's failure is the sender's problem report, never the server's end
                applied -= 1
                self._problem("bad_value", f"{address}: {err}")
                continue
            if replies:
                try:
                    sender.reply(replies)
                except (OSError, TypeError, ValueError) as err:
                    self._problem("bad_value", f"{address}: reply not sent: {err}")
        self._count("applied", applied)

    # --------------------------------------------------------------------------------------- system handlers

    def _status(self, args: tuple, sender: _Sender) -> list[tuple[str, list]]:
        stats = self.stats()
        text = stats.pop("last_problem")
        return [(f"/live/status/{key}", [int(value)]) for key, value in stats.items()] + [
            ("/live/status/last_problem", [text])] + [("/live/status/part", [line]) for line in self.parts_status()]

    def _feedback_add(self, args: tuple, sender: _Sender) -> list[tuple[str, list]]:
        port = self._feedback_port(args, sender)
        key = self.add_feedback(sender.host, port, sender.source)
        return [("/live/feedback/added", [key])]

    def _feedback_remove(self, args: tuple, sender: _Sender) -> list[tuple[str, list]]:
        port = self._feedback_port(args, sender)
        key = f"{sender.host}:{port}"
        with self._feedback_lock:
            removed = self._feedback.pop(key, None)
        return [("/live/feedback/removed", [key if removed else ""])]

    @staticmethod
    def _feedback_port(args: tuple, sender: _Sender) -> int:
        if args:
            port = args[0]
            if isinstance(port, bool) or not isinstance(port, (int, float)) or not 1 <= port <= 65535:
                raise ValueError(f"feedback port must be 1..65535, got {port!r}")
            return int(port)
        if sender.transport != "udp":
            raise ValueError("over TCP, give the UDP port to send feedback to: /live/feedback/add i PORT")
        return sender.port

    def add_feedback(self, host: str, port: int, source: str | None = None) -> str:
        """Send changed values to host:port (UDP) from now on, first all of them; writes tagged `source` (and
        "osc:host:port") are not echoed to it. ValueError when the list is full; LiveError if host is unknown."""
        try:
            family = self._udp.family if self._udp else socket.AF_INET
            address = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)[0][4]
        except (socket.gaierror, UnicodeError) as err:
            raise LiveError(f"OSC feedback host '{host}' cannot be resolved ({err})",
                            "give an IP address or a resolvable name in [osc] feedback") from None
        key = f"{host}:{port}"
        with self._feedback_lock:
            client = self._feedback.get(key)
            if client is None:
                if len(self._feedback) >= self.max_feedback_clients:
                    raise ValueError(f"feedback list is full ({self.max_feedback_clients} clients)")
                client = self._feedback[key] = _FeedbackClient(key, address, {f"osc:{host}:{port}"})
            if source and len(client.sources) < 8:
                client.sources.add(source)
            client.last.clear()  # a (re)registered client gets the whole state once
        self._feedback_fresh.set()
        return key

    # ------------------------------------------------------------------------------------------------ threads

    def _udp_loop(self) -> None:
        """One wait of 0.2 s at most (so close() is prompt), then every datagram already queued, without waiting,
        up to UDP_BATCH, handled as one batch with each one's arrival time. Favoured by the scheduler where
        allowed (priority.py)."""
        favour_this_thread()
        sock = self._udp
        limit = self.max_packet + 1  # one byte more than allowed, so an oversize datagram shows as such
        ancillary = socket.CMSG_SPACE(_TIMESPEC.size) if self._stamped else 0

        def make_reply(address: tuple) -> Reply:
            def reply(messages: Sequence[tuple[str, Sequence[Any]]]) -> None:
                for path, values in messages:
                    sock.sendto(encode_message(path, values), address)
            return reply

        offset: float | None = None
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                try:
                    if not selector.select(0.2):
                        continue
                except OSError:
                    return  # the socket is gone: closing
                received: list[tuple[bytes, list, tuple]] = []
                while len(received) < UDP_BATCH:
                    try:
                        data, ancdata, _, address = sock.recvmsg(limit, ancillary)
                    except (BlockingIOError, InterruptedError):
                        break  # nothing more queued
                    except OSError:
                        if self._stop.is_set() or sock.fileno() < 0:
                            return
                        break  # e.g. an ICMP error surfacing on some platforms: not a reason to stop listening
                    received.append((data, ancdata, address))
                # kernel stamps are wall-clock time, events perf_counter() time: their difference, kept only
                # from reads back to back (another thread run between them would skew every stamp of the batch)
                before, wall, read = time.perf_counter(), time.time(), time.perf_counter()
                if offset is None or read - before < 1e-4:
                    offset = wall - read
                try:
                    self._handle_batch([(data, address, _arrival(ancdata, offset, read))
                                        for data, ancdata, address in received], make_reply)
                except Exception as err:  # each packet's own failure is caught inside: this is the batch's
                    self._internal_error(err)

    def _schedule_loop(self) -> None:
        """Applies scheduled bundles at their time; waits on a condition, so a new earlier bundle wakes it. Favoured
        by the scheduler as the UDP thread is: a bundle's note has only the synth's hand-off margin (1 ms) to reach
        the render process after its time."""
        favour_this_thread()
        while not self._stop.is_set():
            with self._cond:
                while self._heap and self._heap[0][0] <= time.monotonic():
                    due = heapq.heappop(self._heap)
                    break
                else:
                    wait = self._heap[0][0] - time.monotonic() if self._heap else 0.5
                    self._cond.wait(min(max(wait, 0.0), 0.5))
                    continue
            _, _, group, sender = due
            try:
                self._apply(group, sender)
            except Exception as err:
                self._internal_error(err)

    def _feedback_loop(self) -> None:
        """At most feedback_hz rounds a second; each sends every client the parameters that changed since it was
        last sent them (the newest value only), except those it wrote itself."""
        seen_version = -1
        period = 1.0 / self.feedback_hz
        while not self._stop.is_set():
            started = time.monotonic()
            fresh = self._feedback_fresh.is_set()
            version = self.tree.version
            if (version != seen_version or fresh) and self._feedback:
                self._feedback_fresh.clear()
                seen_version = version
                try:
                    self._send_feedback()
                except Exception as err:
                    self._internal_error(err, " in feedback")
            self._stop.wait(max(period - (time.monotonic() - started), 0.001))

    def _send_feedback(self) -> None:
        snapshot, written_by = self.tree.snapshot, self.tree.written_by
        with self._feedback_lock:
            clients = list(self._feedback.values())
        sock = self._udp
        for client in clients:
            for address, value in snapshot.items():
                if address in client.last and client.last[address] == value:
                    continue
                if written_by.get(address) not in client.sources:  # its own move is never echoed (no loop)
                    out = int(value) if isinstance(value, bool) else value
                    try:
                        sock.sendto(encode_message(address, [out]), client.address)
                    except OSError:
                        break  # unreachable now, or the send buffer is full: it gets the changes on a later round
                client.last[address] = value

    # ---------------------------------------------------------------------------------------------------- TCP

    def _wake(self) -> None:
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass

    def _tcp_reply(self, conn: _TcpConn) -> Reply:
        frame = slip_encode if conn.framing == "slip" else length_encode

        def reply(messages: Sequence[tuple[str, Sequence[Any]]]) -> None:
            data = b"".join(frame(encode_message(path, values)) for path, values in messages)
            with conn.lock:
                if len(conn.outbox) + len(data) > MAX_TCP_OUTBOX:
                    return  # the client is not reading its replies; drop these rather than grow
                conn.outbox += data
            if threading.get_ident() != self._tcp_thread_id:
                self._wake()
        return reply

    def _tcp_loop(self) -> None:
        self._tcp_thread_id = threading.get_ident()
        selector = selectors.DefaultSelector()
        for listener, framing in self._listeners:
            selector.register(listener, selectors.EVENT_READ, ("listen", framing))
        selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        try:
            while not self._stop.is_set():
                for key, mask in selector.select(timeout=0.5):
                    kind, extra = key.data
                    try:
                        if kind == "listen":
                            self._accept(key.fileobj, extra, selector)
                        elif kind == "wake":
                            try:
                                self._wake_r.recv(4096)
                            except OSError:
                                pass
                        else:
                            if mask & selectors.EVENT_READ:
                                self._tcp_read(extra, selector)
                            if mask & selectors.EVENT_WRITE and extra.sock.fileno() >= 0:
                                self._tcp_flush(extra, selector)
                    except Exception as err:
                        self._internal_error(err, " in TCP")
                        if kind == "conn":
                            self._tcp_drop(extra, selector)
                for conn in list(self._conns.values()):  # replies queued by other threads
                    if conn.outbox:
                        self._tcp_flush(conn, selector)
        finally:
            selector.close()

    def _accept(self, listener: socket.socket, framing: str, selector: selectors.BaseSelector) -> None:
        try:
            sock, address = listener.accept()
        except OSError:
            return
        host, port = address[0], address[1]
        if self.allow and not self._allowed(host):
            self._problem("not_allowed", f"TCP connection from {host}, which is not in [osc] allow")
            sock.close()
            return
        if len(self._conns) >= self.max_tcp_clients:  # full: the longest-silent client gives way, if silent long
            quiet = min(self._conns.values(), key=lambda c: c.heard)
            if time.monotonic() - quiet.heard >= self.tcp_idle_s:
                self._tcp_drop(quiet, selector)
        if len(self._conns) >= self.max_tcp_clients:
            self._problem("too_many_clients", f"TCP connection from {host}: already {self.max_tcp_clients} clients")
            sock.close()
            return
        sock.setblocking(False)
        conn = _TcpConn(sock, host, port, framing, self.max_packet, lambda _: None)
        conn.sender.reply = self._tcp_reply(conn)
        self._conns[sock] = conn
        selector.register(sock, selectors.EVENT_READ, ("conn", conn))

    def _tcp_drop(self, conn: _TcpConn, selector: selectors.BaseSelector) -> None:
        if self._conns.pop(conn.sock, None) is not None:
            try:
                selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()

    def _tcp_read(self, conn: _TcpConn, selector: selectors.BaseSelector) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        conn.heard = time.monotonic()
        if not chunk:
            self._tcp_drop(conn, selector)
            return
        try:
            frames = conn.decoder.feed(chunk)
        except FrameTooLarge as err:
            self._count("packets")
            self._problem("oversize", f"TCP from {conn.host}: {err}; connection closed")
            self._tcp_drop(conn, selector)
            return
        except OscError as err:
            self._count("packets")
            self._problem("malformed", f"TCP from {conn.host}: {err}; connection closed")
            self._tcp_drop(conn, selector)
            return
        for frame in frames:
            if frame is None:
                self._count("packets")
                self._problem("oversize", f"SLIP frame from {conn.host} over {self.max_packet} bytes")
                continue
            if conn.framing == "slip":
                try:
                    frame = slip_unescape(frame)
                except OscError as err:
                    self._count("packets")
                    self._problem("malformed", f"SLIP frame from {conn.host}: {err}")
                    continue
            self.handle(frame, conn.host, conn.port, conn.sender.reply, "tcp")
        if conn.outbox:
            self._tcp_flush(conn, selector)

    def _tcp_flush(self, conn: _TcpConn, selector: selectors.BaseSelector) -> None:
        if conn.sock not in self._conns:
            return
        with conn.lock:
            try:
                sent = conn.sock.send(conn.outbox) if conn.outbox else 0
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                conn.outbox.clear()
                sent = -1
            if sent > 0:
                del conn.outbox[:sent]
            pending = bool(conn.outbox)
        if sent < 0:
            self._tcp_drop(conn, selector)
            return
        selector.modify(conn.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0),
                        ("conn", conn))
