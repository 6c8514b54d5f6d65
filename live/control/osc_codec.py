"""OSC 1.0/1.1 packets to Python values and back, strictly: a packet is either fully understood or rejected.

Our own codec rather than python-osc's because a live server must (1) refuse a truncated packet instead of reading
missing arguments as zeros, (2) know every OSC 1.0 type tag including the ones python-osc lacks (S, r), (3) bound
the work per packet (nesting depth, pattern size) so a hostile packet costs as little as a good one, and (4) stay
allocation-light on the hot path. Also here: NTP timetags, stream framing (OSC 1.0 length prefix and OSC 1.1 SLIP)
and OSC 1.0 address-pattern matching without regular expressions (no backtracking blow-up).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

#: A bundle may contain bundles; deeper nesting than this is refused (bounded recursion per packet).
MAX_BUNDLE_DEPTH = 8
#: Arrays may nest; deeper than this is refused.
MAX_ARRAY_DEPTH = 8
#: Pattern limits: longer or more wildcard-laden address patterns are refused before any matching.
MAX_PATTERN_LENGTH = 256
MAX_PATTERN_ALTERNATIVES = 64

BUNDLE_TAG = b"#bundle\0"
#: Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2_208_988_800
#: The special timetag 'immediately' (63 zero bits and a one).
IMMEDIATELY = 1

_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_RGBA = struct.Struct(">BBBB")


class OscError(ValueError):
    """A packet that is not valid OSC (truncated, unknown type tag, bad lengths, too deep)."""


class Rgba(NamedTuple):
    """OSC 'r': a 32-bit RGBA colour."""

    r: int
    g: int
    b: int
    a: int


class Midi(NamedTuple):
    """OSC 'm': a 4-byte MIDI message (port id, status byte, data1, data2)."""

    port: int
    status: int
    data1: int
    data2: int


class Timetag(int):
    """OSC 't' (and a bundle's time): a 64-bit NTP time, seconds since 1900 in the high 32 bits."""

    @property
    def unix(self) -> float:
        return ntp_to_unix(self)


class Symbol(str):
    """OSC 'S': an alternate string type (a symbol in Max/Pd)."""


class Char(str):
    """OSC 'c': one ASCII character sent as 32 bits."""


class Double(float):
    """A float to be sent as OSC 'd' (64 bits) rather than the default 'f'."""


class Int64(int):
    """An int to be sent as OSC 'h' (64 bits) rather than 'i'."""


class _Impulse:
    """OSC 'I' (Infinitum / Impulse): an argument without data, a trigger."""

    _instance: _Impulse | None = None

    def __new__(cls) -> _Impulse:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "IMPULSE"


IMPULSE = _Impulse()


class Message(NamedTuple):
    """One OSC message: its address (or address pattern), its type tags (without the comma) and its arguments;
    an array argument is a Python list."""

    address: str
    tags: str
    args: tuple


@dataclass(frozen=True)
class Bundle:
    """An OSC bundle: a timetag and its elements (messages and bundles), in order."""

    timetag: int
    elements: tuple[Message | Bundle, ...]


# ---------------------------------------------------------------------------------------------------------- time

def ntp_to_unix(timetag: int) -> float:
    """An NTP timetag as Unix seconds (fraction kept to the float's precision)."""
    return (timetag >> 32) - NTP_UNIX_OFFSET + (timetag & 0xFFFFFFFF) / 4294967296.0


def unix_to_ntp(seconds: float) -> Timetag:
    """Unix seconds as an NTP timetag (the fraction rounded to the nearest 1/2^32 s)."""
    whole = int(seconds // 1)
    fraction = int(round((seconds - whole) * 4294967296.0))
    if fraction >= 1 << 32:
        whole, fraction = whole + 1, fraction - (1 << 32)
    return Timetag(((whole + NTP_UNIX_OFFSET) << 32) | fraction)


def ntp_now() -> Timetag:
    return unix_to_ntp(time.time())


# ------------------------------------------------------------------------------------------------------- parsing

def _string(data: bytes, pos: int, what: str) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise OscError(f"unterminated {what}")
    after = (end + 4) & ~3
    if after > len(data):
        raise OscError(f"{what} padding runs past the end")
    try:
        return data[pos:end].decode("utf-8"), after
    except UnicodeDecodeError:
        raise OscError(f"{what} is not UTF-8") from None


def parse_message(data: bytes) -> Message:
    """One message that must fill `data` exactly; OscError otherwise."""
    if not data.startswith(b"/"):
        raise OscError("an OSC message starts with '/'")
    address, pos = _string(data, 0, "address")
    if pos == len(data):
        return Message(address, "", ())  # OSC 1.0 allows a message without a type tag string
    if data[pos:pos + 1] != b",":
        raise OscError("no type tag string after the address")
    tags, pos = _string(data, pos, "type tag string")
    tags = tags[1:]
    args: list[Any] = []
    stack: list[list[Any]] = []
    size = len(data)
    for tag in tags:
        if tag == "f":
            if pos + 4 > size:
                raise OscError("truncated float")
            args.append(_F32.unpack_from(data, pos)[0])
            pos += 4
        elif tag == "i":
            if pos + 4 > size:
                raise OscError("truncated int")
            args.append(_I32.unpack_from(data, pos)[0])
            pos += 4
        elif tag == "s" or tag == "S":
            if pos >= size:
                raise OscError("truncated string")
            text, pos = _string(data, pos, "string argument")
            args.append(text if tag == "s" else Symbol(text))
        elif tag == "b":
            if pos + 4 > size:
                raise OscError("truncated blob size")
            length = _I32.unpack_from(data, pos)[0]
            if length < 0 or pos + 4 + length > size:
                raise OscError(f"blob of {length} bytes does not fit the packet")
            args.append(data[pos + 4:pos + 4 + length])
            pos += 4 + ((length + 3) & ~3)
            if pos > size:
                raise OscError("blob padding runs past the end")
        elif tag == "T":
            args.append(True)
        elif tag == "F":
            args.append(False)
        elif tag == "N":
            args.append(None)
        elif tag == "I":
            args.append(IMPULSE)
        elif tag in "hdtcrm":
            width = 8 if tag in "hdt" else 4
            if pos + width > size:
                raise OscError(f"truncated '{tag}' argument")
            if tag == "h":
                args.append(_I64.unpack_from(data, pos)[0])
            elif tag == "d":
                args.append(_F64.unpack_from(data, pos)[0])
            elif tag == "t":
                args.append(Timetag(_U64.unpack_from(data, pos)[0]))
            elif tag == "c":
                code = _U32.unpack_from(data, pos)[0]
                if code > 0x10FFFF:
                    raise OscError(f"char {code} is not a character")
                args.append(Char(chr(code)))
            elif tag == "r":
                args.append(Rgba(*_RGBA.unpack_from(data, pos)))
            else:
                args.append(Midi(*_RGBA.unpack_from(data, pos)))
            pos += width
        elif tag == "[":
            if len(stack) >= MAX_ARRAY_DEPTH:
                raise OscError("arrays nested too deeply")
            stack.append(args)
            args = []
        elif tag == "]":
            if not stack:
                raise OscError("']' without '['")
            inner, args = args, stack.pop()
            args.append(inner)
        else:
            raise OscError(f"unknown type tag {tag!r}")
    if stack:
        raise OscError("'[' without ']'")
    if pos != size:
        raise OscError(f"{size - pos} bytes after the last argument")
    return Message(address, tags, tuple(args))


def parse_packet(data: bytes, depth: int = 0) -> Message | Bundle:
    """A datagram or stream frame: a message or a (possibly nested) bundle; OscError unless all of it is valid."""
    if data[:1] == b"/":
        return parse_message(data)
    if not data.startswith(BUNDLE_TAG):
        raise OscError("neither a message ('/...') nor a bundle ('#bundle')" if data else "empty packet")
    if depth >= MAX_BUNDLE_DEPTH:
        raise OscError("bundles nested too deeply")
    size = len(data)
    if size < 16:
        raise OscError("bundle without a timetag")
    timetag = _U64.unpack_from(data, 8)[0]
    pos, elements = 16, []
    while pos < size:
        if pos + 4 > size:
            raise OscError("truncated bundle element size")
        length = _I32.unpack_from(data, pos)[0]
        pos += 4
        if length <= 0 or length % 4 or pos + length > size:
            raise OscError(f"bundle element of {length} bytes does not fit the bundle")
        elements.append(parse_packet(data[pos:pos + length], depth + 1))
        pos += length
    return Bundle(timetag, tuple(elements))


def check_complete(data: bytes) -> None:
    """Raise ValueError (OscError) unless `data` is one complete, valid OSC packet."""
    parse_packet(data)


def count_messages(packet: Message | Bundle) -> int:
    if isinstance(packet, Message):
        return 1
    return sum(count_messages(e) for e in packet.elements)


# ------------------------------------------------------------------------------------------------------ encoding

def _pad_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if b"\0" in raw:
        raise ValueError("OSC strings cannot contain NUL")
    return raw + b"\0" * (4 - len(raw) % 4)


def _encode_args(args: Iterable[Any], tags: list[str], out: list[bytes]) -> None:
    for arg in args:
        if arg is True:
            tags.append("T")
        elif arg is False:
            tags.append("F")
        elif arg is None:
            tags.append("N")
        elif arg is IMPULSE:
            tags.append("I")
        elif isinstance(arg, Timetag):
            tags.append("t")
            out.append(_U64.pack(arg))
        elif isinstance(arg, Int64) or (isinstance(arg, int) and not -2**31 <= arg < 2**31):
            tags.append("h")
            out.append(_I64.pack(arg))
        elif isinstance(arg, int):
            tags.append("i")
            out.append(_I32.pack(arg))
        elif isinstance(arg, Double):
            tags.append("d")
            out.append(_F64.pack(arg))
        elif isinstance(arg, float):
            tags.append("f")
            out.append(_F32.pack(arg))
        elif isinstance(arg, Char):
            tags.append("c")
            out.append(_U32.pack(ord(arg)))
        elif isinstance(arg, Symbol):
            tags.append("S")
            out.append(_pad_string(arg))
        elif isinstance(arg, str):
            tags.append("s")
            out.append(_pad_string(arg))
        elif isinstance(arg, (bytes, bytearray, memoryview)):
            raw = bytes(arg)
            tags.append("b")
            out.append(_I32.pack(len(raw)) + raw + b"\0" * (-len(raw) % 4))
        elif isinstance(arg, Rgba):
            tags.append("r")
            out.append(_RGBA.pack(*arg))
        elif isinstance(arg, Midi):
            tags.append("m")
            out.append(_RGBA.pack(*arg))
        elif isinstance(arg, (list, tuple)):
            tags.append("[")
            _encode_args(arg, tags, out)
            tags.append("]")
        else:
            raise TypeError(f"no OSC type for {type(arg).__name__} {arg!r}")


def encode_message(address: str, args: Sequence[Any] = ()) -> bytes:
    """A message from Python values: int -> i (h if it needs 64 bits), float -> f, str -> s, bytes -> b,
    bool -> T/F, None -> N, list -> array; Double, Int64, Symbol, Char, Timetag, Rgba, Midi, IMPULSE for the rest."""
    tags: list[str] = [","]
    out: list[bytes] = []
    _encode_args(args, tags, out)
    return _pad_string(address) + _pad_string("".join(tags)) + b"".join(out)


def encode_bundle(timetag: int, elements: Iterable[bytes]) -> bytes:
    """A bundle from already-encoded messages/bundles."""
    parts = [BUNDLE_TAG, _U64.pack(timetag)]
    for element in elements:
        parts.append(_I32.pack(len(element)))
        parts.append(element)
    return b"".join(parts)


# ------------------------------------------------------------------------------------------------------- framing

SLIP_END, SLIP_ESC, SLIP_ESC_END, SLIP_ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
_END, _ESC = bytes([SLIP_END]), bytes([SLIP_ESC])


def slip_encode(packet: bytes) -> bytes:
    """OSC 1.1 stream framing: END, the escaped packet, END (double-END, so a receiver resyncs after noise)."""
    body = packet.replace(_ESC, bytes([SLIP_ESC, SLIP_ESC_ESC])).replace(_END, bytes([SLIP_ESC, SLIP_ESC_END]))
    return _END + body + _END


def slip_unescape(frame: bytes) -> bytes:
    """The packet inside one SLIP frame (without its END bytes); OscError on an invalid escape."""
    if SLIP_ESC not in frame:
        return frame
    out = bytearray()
    it = iter(frame)
    for byte in it:
        if byte != SLIP_ESC:
            out.append(byte)
            continue
        following = next(it, None)
        if following == SLIP_ESC_END:
            out.append(SLIP_END)
        elif following == SLIP_ESC_ESC:
            out.append(SLIP_ESC)
        else:
            raise OscError("invalid SLIP escape")
    return bytes(out)


def length_encode(packet: bytes) -> bytes:
    """OSC 1.0 stream framing: the packet's size as a big-endian int32, then the packet."""
    return _I32.pack(len(packet)) + packet


class FrameTooLarge(OscError):
    """A stream frame over the size limit."""


class LengthDecoder:
    """Splits an OSC 1.0 (length-prefixed) byte stream into packets. Its buffer never holds more than one frame
    of at most `limit` bytes plus one read: a larger declared size raises FrameTooLarge (the stream cannot be
    trusted after that and is closed by the caller)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        packets = []
        while len(self._buf) >= 4:
            size = _I32.unpack_from(self._buf, 0)[0]
            if size < 0:
                raise OscError(f"negative frame size {size}")
            if size > self.limit:
                raise FrameTooLarge(f"frame of {size} bytes is over the {self.limit}-byte limit")
            if len(self._buf) < 4 + size:
                break
            packets.append(bytes(self._buf[4:4 + size]))
            del self._buf[:4 + size]
        return packets


class SlipDecoder:
    """Splits an OSC 1.1 (SLIP) byte stream into frames. Empty frames (the double END) are skipped; a frame that
    grows past `limit` is dropped up to the next END and reported once as None so the caller can count it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> list[bytes | None]:
        """Complete frames (still escaped) in order; None stands for a frame that was too large."""
        frames: list[bytes | None] = []
        parts = chunk.split(_END)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if self._skipping:
                if not last:
                    self._skipping = False  # an END: the oversize frame is over
                continue
            self._buf += part
            if len(self._buf) > 2 * self.limit + 2:  # escaped size: at most twice the packet
                frames.append(None)
                self._buf.clear()
                self._skipping = last
                continue
            if not last:
                if self._buf:
                    frames.append(bytes(self._buf))
                self._buf.clear()
        return frames


# ------------------------------------------------------------------------------------------ address patterns

PATTERN_CHARS = frozenset("*?[]{}")

_LIT, _ONE, _STAR, _CLASS, _ALT = range(5)


class PatternError(OscError):
    """An address pattern that cannot be compiled (unbalanced brackets, too complex)."""


def is_pattern(address: str) -> bool:
    return not PATTERN_CHARS.isdisjoint(address) or "//" in address


def _compile_part(part: str) -> tuple:
    tokens: list[tuple] = []
    literal: list[str] = []
    i, n = 0, len(part)

    def flush() -> None:
        if literal:
            tokens.append((_LIT, "".join(literal)))
            literal.clear()

    while i < n:
        c = part[i]
        if c == "*":
            flush()
            if not tokens or tokens[-1][0] != _STAR:
                tokens.append((_STAR, None))
            i += 1
        elif c == "?":
            flush()
            tokens.append((_ONE, None))
            i += 1
        elif c == "[":
            end = part.find("]", i + 1)
            if end < 0:
                raise PatternError("'[' without ']' in address pattern")
            body = part[i + 1:end]
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            chars: set[str] = set()
            ranges: list[tuple[str, str]] = []
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    ranges.append((body[j], body[j + 2]))
                    j += 3
                else:
                    chars.add(body[j])
                    j += 1
            flush()
            tokens.append((_CLASS, (frozenset(chars), tuple(ranges), negate)))
            i = end + 1
        elif c == "{":
            end = part.find("}", i + 1)
            if end < 0:
                raise PatternError("'{' without '}' in address pattern")
            alternatives = tuple(dict.fromkeys(part[i + 1:end].split(",")))
            if len(alternatives) > MAX_PATTERN_ALTERNATIVES:
                raise PatternError("too many {…} alternatives in address pattern")
            flush()
            tokens.append((_ALT, alternatives))
            i = end + 1
        elif c in "]}":
            raise PatternError(f"'{c}' without its opening bracket in address pattern")
        else:
            literal.append(c)
            i += 1
    flush()
    return tuple(tokens)


def _match_part(tokens: tuple, name: str) -> bool:
    """Set-of-positions simulation: O(len(tokens) * len(name)) whatever the pattern (no backtracking)."""
    positions = {0}
    n = len(name)
    for kind, value in tokens:
        following: set[int] = set()
        if kind == _LIT:
            for p in positions:
                if name.startswith(value, p):
                    following.add(p + len(value))
        elif kind == _STAR:
            following = set(range(min(positions), n + 1))
        elif kind == _ONE:
            following = {p + 1 for p in positions if p < n}
        elif kind == _CLASS:
            chars, ranges, negate = value
            for p in positions:
                if p < n:
                    c = name[p]
                    inside = c in chars or any(lo <= c <= hi for lo, hi in ranges)
                    if inside != negate:
                        following.add(p + 1)
        else:
            for p in positions:
                for alternative in value:
                    if name.startswith(alternative, p):
                        following.add(p + len(alternative))
        if not following:
            return False
        positions = following
    return n in positions


class AddressPattern:
    """An OSC 1.0 address pattern: '?' one character, '*' any run, '[abc]' '[a-z]' '[!a]' a character set,
    '{foo,bar}' alternatives; each matches within one part of the address (never across '/'). OSC 1.1's '//'
    matches any number of whole parts, none included: '//depth' is every address ending in /depth."""

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise PatternError(f"address pattern longer than {MAX_PATTERN_LENGTH} characters")
        if not pattern.startswith("/"):
            raise PatternError("an address pattern starts with '/'")
        self.pattern = pattern
        head, *rest = pattern.split("//")
        if any(not segment or segment.startswith("/") for segment in rest):
            raise PatternError("'//' (any depth) must be followed by a name, and '///' means nothing")
        self._head = tuple(_compile_part(part) for part in head[1:].split("/")) if head else ()
        self._tails = tuple(tuple(_compile_part(part) for part in segment.split("/")) for segment in rest)

    def matches(self, address: str) -> bool:
        names = address[1:].split("/")
        head = self._head
        if not self._tails:
            return len(names) == len(head) and _match_run(head, names, 0)
        if len(names) < len(head) or not _match_run(head, names, 0):
            return False
        at = len(head)
        for parts in self._tails[:-1]:  # each run at its leftmost fit leaves the most room for the rest
            at = next((i + len(parts) for i in range(at, len(names) - len(parts) + 1)
                       if _match_run(parts, names, i)), -1)
            if at < 0:
                return False
        last = len(names) - len(self._tails[-1])  # the last run ends the address
        return last >= at and _match_run(self._tails[-1], names, last)


def _match_run(parts: tuple, names: list[str], at: int) -> bool:
    return all(_match_part(t, n) for t, n in zip(parts, names[at:at + len(parts)]))
