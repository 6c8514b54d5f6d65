"""New kinds of source, stage, sink and signal, each a few lines here, registered from outside the package and played
in a real show (the real capture, chain, ONNX Runtime style model and output loop) with no change to the package."""

from __future__ import annotations

import time

import numpy as np

import socket

from fixtures_live import free_port, show_with
from live.control.osc_codec import encode_message, parse_packet
from live.control.modulation import SIGNALS
from live.params import Param
from live.parts import BasePart, KindSection
from live.player import Player
from live.show import load_show
from live.video.chain import STAGES
from live.video.output import SINKS
from live.video.sources import SOURCES

COLOUR = (40, 90, 160)  # BGR of the test source


class Solid(BasePart):
    """Source kind `solid://`: a flat colour, paced by the capture loop."""

    name, paced, fps = "solid colour", True, 0.0

    def read(self) -> np.ndarray:
        return np.full((48, 64, 3), COLOUR, np.uint8)


class Invert(BasePart):
    """Stage kind `test-invert`: negative of the picture while /test/invert is above 0.5."""

    def __init__(self, section: KindSection, show) -> None:
        pass

    def params(self):
        return [Param("/test/invert", "float", 0.0, 0.0, 1.0, doc="negative above 0.5")], []

    def process(self, image, values, t):
        return 255 - image if values["/test/invert"] > 0.5 else image


class HoldsOne(BasePart):
    """Signal kind `test-one`: a steady full level."""

    def __init__(self, name, spec, tree, clock) -> None:
        pass

    def level(self, now, values) -> float:
        return 1.0


class CollectSection(KindSection):
    fail_after: int = 0  # 0: never


class Collect(BasePart):
    """Sink kind `test-collect`: keeps each frame's mean colour; fails on purpose after `fail_after` frames."""

    def __init__(self, section: CollectSection, show) -> None:
        self.fail_after, self.means, self.closed = section.fail_after, [], 0

    def write(self, image, t) -> None:
        if self.fail_after and len(self.means) >= self.fail_after:
            raise OSError(28, "No space left on device")
        self.means.append(image.reshape(-1, 3).mean(axis=0))

    def close(self) -> None:
        self.closed += 1

    def status(self) -> str:
        return f"collecting, {len(self.means)} frames"


SOURCES.register("solid", lambda spec, width, height: Solid())
STAGES.register("test-invert", Invert)
SIGNALS.register("test-one", HoldsOne)
SINKS.register("test-collect", Collect, CollectSection)


def test_new_kinds_registered_in_a_test_play_in_a_show_and_a_failing_sink_is_isolated(tmp_path):
    path = show_with(tmp_path, video={"source": "solid://", "width": 64, "height": 48},
                     audio={"enabled": False}, osc={"port": free_port()}, oscquery={"enabled": False},
                     params={"/video/strength": 0.0},  # the style model passes the picture through
                     stages=[{"kind": "test-invert"}],
                     outputs=[{"kind": "test-collect"}, {"kind": "test-collect", "fail_after": 5}])
    path.write_text(path.read_text() + '[mod.flip]\ntarget = "/test/invert"\nsignal = "test-one"\ndepth = 1.0\n')
    said: list[str] = []
    player = Player(load_show(path), say=said.append)
    keeps, fails = player.graph.outputs.sinks
    player.start()
    assert any("source solid colour" in line for line in status_parts(player.show.osc.port))  # each part's status
    began = time.perf_counter()
    summary = player.run(3.0)
    assert time.perf_counter() - began < 6
    assert len(keeps.means) > 20, said
    negative = 255 - np.array(COLOUR)
    assert np.abs(keeps.means[-1] - negative).max() < 6  # source -> style (strength 0) -> inverted by the signal
    assert len(fails.means) == 5 and fails.closed >= 1  # failed at its 6th frame, closed, and the show went on
    failure = [line for line in said if "failed" in line]
    assert len(failure) == 1 and "No space left on device" in failure[0] and "the show goes on" in failure[0]
    assert summary.output_failures == 1 and summary.frames == len(keeps.means)
    assert summary.longest_gap_s < 1.0 and summary.fallback_s < 1.0
    assert f"longest gap {summary.longest_gap_s:.2f} s" in summary.line()
    assert keeps.closed == 1  # closed once, at the end


def status_parts(port: int) -> list[str]:
    """The part lines a running show's /live/status replies with."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        sock.sendto(encode_message("/live/status"), ("127.0.0.1", port))
        lines = []
        try:
            while True:
                reply = parse_packet(sock.recv(65536))
                if reply.address == "/live/status/part":
                    lines.append(reply.args[0])
                sock.settimeout(0.3)
        except OSError:
            return lines


def test_a_show_naming_an_unknown_kind_says_which_kinds_there_are(tmp_path):
    import pytest

    from live.errors import LiveError

    path = show_with(tmp_path, outputs=[{"kind": "ndi-someday"}])
    with pytest.raises(LiveError) as err:
        load_show(path)
    assert "show.toml:" in str(err.value) and "[[outputs]] #1 kind" in str(err.value)
    assert "'record'" in str(err.value) and "'window'" in str(err.value)
