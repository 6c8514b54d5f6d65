"""The YIN pitch estimator on known signals: sines, a sung-like harmonic tone with vibrato, noise and silence."""

import time

import numpy as np
import pytest

from live.audio.pitch import Pitch


def cents(hz: float, true: float) -> float:
    return 1200.0 * np.log2(hz / true)


@pytest.mark.parametrize("samplerate,window", [(48000, 1024), (48000, 2048), (16000, 1024), (44100, 1024)])
def test_sines_within_20_cents(samplerate, window):
    pitch = Pitch(samplerate, window)
    t = np.arange(window) / samplerate
    lowest = max(60.0, 2 * samplerate / window)
    for hz in np.geomspace(lowest * 1.05, 1150.0, 17):
        found, confidence = pitch.estimate((0.5 * np.sin(2 * np.pi * hz * t + 0.7)).astype(np.float32))
        assert found > 0 and abs(cents(found, hz)) < 20, (hz, found)
        assert confidence > 0.9


def test_harmonic_tone_with_vibrato_within_20_cents():
    """220 Hz, 5 Hz vibrato of +-30 cents, six harmonics falling off: each window's pitch against the true
    frequency at the window's centre."""
    sr, window, hop = 48000, 2048, 256
    t = np.arange(sr * 2) / sr
    f = 220.0 * 2 ** (30 / 1200 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    tone = sum(np.sin(k * phase) / k ** 1.2 for k in range(1, 7)).astype(np.float32) * 0.3
    pitch = Pitch(sr, window)
    errors = []
    for end in range(window, len(tone), hop):
        found, confidence = pitch.estimate(tone[end - window:end])
        assert confidence > 0.8
        errors.append(cents(found, f[end - window // 2]))
    assert np.max(np.abs(errors)) < 20, np.max(np.abs(errors))


def test_noise_and_silence_are_unvoiced():
    sr, window = 48000, 1024
    pitch = Pitch(sr, window)
    rng = np.random.default_rng(1)
    for _ in range(20):
        hz, confidence = pitch.estimate(rng.standard_normal(window).astype(np.float32) * 0.3)
        assert hz == 0.0 and confidence < 0.5
    assert pitch.estimate(np.zeros(window, np.float32)) == (0.0, 0.0)


def test_cheap_per_window():
    """Well under the 0.3 ms budget per 1024-sample window (the median, robust to a loaded machine)."""
    pitch = Pitch(48000, 1024)
    x = np.sin(2 * np.pi * 330 * np.arange(1024) / 48000).astype(np.float32)
    times = []
    for _ in range(300):
        start = time.perf_counter()
        pitch.estimate(x)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.3e-3
