"""A running show under a storm of bad OSC: 50,000 fuzzed datagrams at `live run`, and the picture and the sound
go on, every packet is counted in /live/status, and the show still obeys a good message afterwards."""

from __future__ import annotations

import random
import socket
import time

import numpy as np

from fixtures_live import LiveProcess, audio_of, decode_frames, free_port, show_with
from live.bench import OscFuzzer
from live.control.osc_codec import parse_packet, encode_message

PACKETS = 50_000


def status(sock: socket.socket, port: int) -> dict[str, object]:
    sock.sendto(encode_message("/live/status"), ("127.0.0.1", port))
    replies: dict[str, object] = {}
    deadline = time.monotonic() + 5
    while "last_problem" not in replies and time.monotonic() < deadline:
        message = parse_packet(sock.recv(65536))
        replies[message.address.rsplit("/", 1)[-1]] = message.args[0] if message.args else None
    return replies


def test_fuzz_storm_is_counted_and_the_show_goes_on(tmp_path, camera_file):
    port = free_port()
    show = show_with(tmp_path, osc={"port": port})
    out = tmp_path / "out.mp4"
    live = LiveProcess(["run", str(show), "--source", str(camera_file), "--for", "40", "--record", str(out)])
    live.wait_for("Playing")
    t0 = time.monotonic()
    time.sleep(2.0)
    fuzzer, rng = OscFuzzer(seed=7), random.Random(7)
    junk = [fuzzer._truncated, fuzzer._bad_tag, fuzzer._huge_blob, fuzzer._far_future, fuzzer._bad_nesting,
            fuzzer._junk, fuzzer._unknown, fuzzer.mutate]
    # The storm's bundles can go past the per-host rate limit, so the status queries come from another loopback
    # address, whose own rate bucket keeps them answered (a limited query would get no reply).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as storm:
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(5)
        storm.bind(("127.0.0.1", 0))
        before = status(sock, port)
        storm_start = time.monotonic() - t0
        for start in range(0, PACKETS, 1000):
            for _ in range(1000):
                packet = rng.choice(junk)()
                storm.sendto(packet if isinstance(packet, bytes) else packet[0], ("127.0.0.1", port))
            while status(sock, port)["packets"] < before["packets"] + start + 1000 + 1:  # paced: no kernel drops
                time.sleep(0.01)
        storm_end = time.monotonic() - t0
        after = status(sock, port)
        sock.sendto(encode_message("/live/blackout", [1]), ("127.0.0.1", port))  # still obeys a good message
        t_black = time.monotonic() - t0
    time.sleep(1.5)
    live.proc.terminate()  # SIGTERM ends the show cleanly, as a service manager would
    code, output = live.finish()
    assert code == 0 and "Traceback" not in output, output
    received = after["packets"] - before["packets"]  # the status queries are packets too, and valid
    queries = received - PACKETS
    assert after["rejected"] - before["rejected"] == PACKETS, (before, after)  # every bad datagram counted
    assert after["applied"] - before["applied"] >= queries - 1 and after["errors"] == 0
    frames = decode_frames(out)
    times = [t for t, _ in frames]
    during = [t for t in times if storm_start <= t <= storm_end]
    assert len(during) > 5 * (storm_end - storm_start)  # the picture went on through the storm
    assert np.diff(times).max() < 0.5
    sound = audio_of(out)  # stereo, 48 kHz: 96,000 values a second
    window = sound[int(storm_start * 96000):int(storm_end * 96000)]
    blocks = window[: len(window) // 24000 * 24000].reshape(-1, 24000)  # quarter seconds
    assert len(blocks) and (np.sqrt((blocks ** 2).mean(axis=1)) > 1e-3).all()  # the synth never stopped
    assert max(float(image.mean()) for t, image in frames if t > t_black + 0.5) < 2
