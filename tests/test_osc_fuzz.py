"""Fuzzing a running OSC server over real UDP and TCP sockets: it must count every bad packet exactly, apply every
good one, and come out alive, with no more threads and (nearly) no more memory than it went in with."""

import random
import socket
import struct
import threading
import time

import pytest

from fixtures_live import wait_until
from live.bench import OscFuzzer, fuzz_tree, rss_mb, send_paced
from live.control.osc import OscServer
from live.control.osc_codec import encode_message, length_encode, slip_encode

PACKETS = 50_000


@pytest.fixture
def server():
    srv = OscServer(fuzz_tree(), "127.0.0.1", 0, tcp_port=0, tcp_framing="both", rate_limit=None)
    srv.open()
    yield srv
    srv.close()


def still_applies(srv: OscServer, value: float) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(encode_message("/fuzz/a", [value]), ("127.0.0.1", srv.port))
    return wait_until(lambda: srv.tree.get("/fuzz/a") == pytest.approx(value), timeout=10)


def test_fuzzed_datagrams_are_counted_exactly_and_change_nothing_else(server):
    fuzzer = OscFuzzer(seed=1234)
    tally = {"invalid": 0, "valid": 0, "kinds": set()}

    def stream(n):
        for _ in range(n):
            packet, messages = fuzzer.next()
            tally["invalid" if messages == 0 else "valid"] += messages or 1
            yield packet

    send_paced(server, stream(2_000))  # warm-up: caches, buckets, allocator
    threads, rss = threading.active_count(), rss_mb()
    sent = 2_000 + send_paced(server, stream(PACKETS))
    growth = rss_mb() - rss
    stats = server.stats()
    assert stats["packets"] == sent  # none lost: the sender never runs ahead of the server's counter
    assert stats["rejected"] == tally["invalid"] > PACKETS // 2  # every bad packet counted, once
    # every good message applied, or skipped for a newer value to its address that came with it
    assert stats["applied"] + stats["superseded"] == tally["valid"] > PACKETS // 10
    assert stats["messages"] >= tally["valid"]
    for kind in ("malformed", "unknown", "bad_value", "far_future"):
        assert stats[kind] > 0, kind
    assert stats["errors"] == 0 and stats["pending"] == 0
    assert server.alive and threading.active_count() == threads
    assert growth < 10, f"RSS grew {growth:.1f} MB"
    assert still_applies(server, 0.123)


def test_bit_flipped_packets_never_hurt(server):
    """Mutations may be valid or not; each is counted as a packet and the server survives them all."""
    fuzzer = OscFuzzer(seed=99)
    threads = threading.active_count()
    sent = send_paced(server, (fuzzer.mutate() for _ in range(10_000)))
    stats = server.stats()
    assert stats["packets"] == sent and stats["errors"] == 0
    assert stats["rejected"] > 0 and server.alive and threading.active_count() == threads
    assert still_applies(server, 0.5)


def test_tcp_streams_of_junk_are_survived(server):
    """Random bytes, valid frames and broken frames over both framings, with connections coming and going."""
    rng = random.Random(7)
    threads = threading.active_count()
    good = encode_message("/fuzz/b", [42])
    for i in range(120):
        framing = "slip" if i % 2 else "length"
        with socket.create_connection(("127.0.0.1", server.tcp_ports[framing])) as conn:
            frame = slip_encode if framing == "slip" else length_encode
            pieces = [frame(good), rng.randbytes(rng.randrange(0, 400)), frame(rng.randbytes(rng.randrange(1, 64)))]
            if framing == "length" and rng.random() < 0.3:
                pieces.insert(1, struct.pack(">i", rng.choice([-1, 2**31 - 1])))
            rng.shuffle(pieces)
            try:
                conn.sendall(b"".join(pieces))
            except OSError:
                pass  # the server may already have closed a stream it cannot trust
    assert wait_until(lambda: server.stats()["tcp_clients"] == 0, timeout=10)
    assert server.counts["errors"] == 0 and server.alive and threading.active_count() == threads
    assert server.tree.get("/fuzz/b") == 42  # some good frames got through the junk
    assert still_applies(server, 0.25)
