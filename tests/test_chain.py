"""The inference thread: the newest frame through the stages, and a control moved between camera frames answered at
once by re-rendering the last frame (not after the camera's next frame)."""

from __future__ import annotations

import time

import numpy as np

from live.control.reader import ParamReader
from live.mailbox import Mailbox
from live.params import Param, ParamTree
from live.parts import BasePart
from live.video.chain import RERENDER_S, ChainThread
from live.video.frame import Frame


class Gain(BasePart):
    def process(self, image, values, t):
        return (image * values["/gain"]).astype(np.uint8)


def test_a_moved_control_rerenders_the_last_frame_at_once_and_at_most_at_display_rate():
    tree = ParamTree([Param("/gain", "float", 1.0, 0.0, 2.0)])
    inbox, out = Mailbox(), Mailbox()
    chain = ChainThread([Gain()], ParamReader(tree), inbox, out)
    chain.open()
    try:
        inbox.put(Frame(np.full((4, 4, 3), 100, np.uint8), time.perf_counter(), 7))
        first = out.get(timeout=2)
        assert first is not None and first.image[0, 0, 0] == 100
        time.sleep(RERENDER_S)
        written = time.perf_counter()
        tree.set("/gain", 0.5)  # no new camera frame
        again = out.get(timeout=2)
        assert again is not None and again.index == 7 and again.image[0, 0, 0] == 50
        assert again.values_at >= written and again.captured == first.captured
        assert again.values_at - written < 0.5  # without it, nothing would come until a camera frame
        for i in range(200):  # a storm of writes: re-renders no faster than the display rate
            tree.set("/gain", 1.0 + (i % 2) * 0.01)
            time.sleep(0.0005)
        time.sleep(0.05)
        start, began = chain.rerendered, time.perf_counter()
        for i in range(400):
            tree.set("/gain", 1.0 + (i % 2) * 0.01)
            time.sleep(0.0005)
        elapsed = time.perf_counter() - began + 0.05
        assert chain.rerendered - start <= elapsed / RERENDER_S * 3 + 2
        time.sleep(0.1)
        assert out.get(timeout=0.01) is not None
        assert out.get(timeout=0.1) is None  # nothing changed since: no more renders
    finally:
        chain.close()
