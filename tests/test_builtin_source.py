"""The built-in source is the photograph in live/assets under slow, smooth camera motion that never leaves it, and
the same time since the start gives the same frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from live.video.sources import BuiltinSource, _builtin_photo

SIZES = [(640, 480), (1280, 720), (480, 640), (64, 48)]  # 4:3, 16:9, portrait, the fault tests' tiny show


def photo_match(frame: np.ndarray) -> float:
    """How well `frame`, brought back to about the photo's scale, matches the best place in the photo (normalized
    cross-correlation at quarter size: 1 is identical, unrelated images are near 0)."""
    photo = _builtin_photo()
    (ph, pw), (h, w) = photo.shape[:2], frame.shape[:2]
    scale = max(w / pw, h / ph) * (BuiltinSource.ZOOM_MIN + BuiltinSource.ZOOM_MAX) / 2 * 4
    small = cv2.resize(frame, (round(w / scale), round(h / scale)), interpolation=cv2.INTER_AREA)
    quarter = cv2.resize(photo, (pw // 4, ph // 4), interpolation=cv2.INTER_AREA)
    return cv2.minMaxLoc(cv2.matchTemplate(quarter, small, cv2.TM_CCOEFF_NORMED))[1]


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b).mean())


@pytest.mark.parametrize("width,height", SIZES)
def test_frames_are_the_photo_at_the_shows_size(width, height):
    source = BuiltinSource(width, height)
    frame = source.read()
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
    matches = [photo_match(source.frame(t)) for t in np.arange(0.0, 60.0, 5.0)]
    upside_down = photo_match(np.ascontiguousarray(frame[::-1]))
    print(f"\n{width}x{height}: photo match {min(matches):.3f}..{max(matches):.3f}, upside down {upside_down:.3f}")
    assert min(matches) > 0.8 and upside_down < 0.5


@pytest.mark.parametrize("width,height", SIZES)
def test_motion_is_slow_and_smooth(width, height):
    """A second apart the view has moved, but by a little next to how far it goes within the motion's cycle."""
    source = BuiltinSource(width, height)
    steps = [mean_diff(source.frame(t), source.frame(t + 1.0)) for t in np.arange(0.0, 60.0, 2.5)]
    across = mean_diff(source.frame(0.0), source.frame(BuiltinSource.PAN_PERIOD_S / 2))
    print(f"\n{width}x{height}: mean abs diff a second apart {min(steps):.1f}..{max(steps):.1f}, half a pan apart "
          f"{across:.1f}")
    assert min(steps) > 0.5 and max(steps) < 0.5 * across


@pytest.mark.parametrize("width,height", SIZES)
def test_the_view_never_leaves_the_photo(width, height):
    """No black band at any edge at any time (the photo has black pixels, never a whole edge of them)."""
    source = BuiltinSource(width, height)
    for t in np.arange(0.0, 2 * max(BuiltinSource.PAN_PERIOD_S, BuiltinSource.ZOOM_PERIOD_S), 0.25):
        frame = source.frame(t)
        for edge in (frame[0], frame[-1], frame[:, 0], frame[:, -1]):
            assert edge.max() > 0, f"a black edge at {t:.2f} s"


def test_the_same_time_gives_the_same_frame():
    first, second = BuiltinSource(640, 480), BuiltinSource(640, 480)
    for t in (0.0, 3.7, 100.25):
        assert np.array_equal(first.frame(t), second.frame(t))
    assert not np.array_equal(first.frame(3.7), first.frame(3.8))
