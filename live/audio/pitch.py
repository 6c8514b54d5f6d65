"""Monophonic pitch of one window of sound, cheap enough to run every hop of a live input.

Hand-written because no well-kept library does this per window at our latency: librosa's `yin` and `pyin` take a
whole signal and frame it themselves (allocating per call), and `pyin`'s Viterbi smoothing needs frames from the
future. This is the YIN estimator (de Cheveigné & Kawahara 2002): the difference function computed through one
FFT correlation, its cumulative mean normalisation, an absolute threshold, and parabolic interpolation of the dip.
Work buffers are allocated once; `estimate` writes into them (numpy >= 2 FFTs take `out=`).
"""

from __future__ import annotations

import numpy as np


class Pitch:
    """YIN pitch of a mono window of `window` samples at `samplerate`.

    The longest period looked for is half the window, so the lowest pitch found is max(fmin, 2 * samplerate /
    window): at 48 kHz a 1024-sample window finds 94 Hz and up, a 2048-sample window 60 Hz and up."""

    def __init__(self, samplerate: float, window: int, fmin: float = 60.0, fmax: float = 1200.0,
                 threshold: float = 0.15) -> None:
        if window < 64:
            raise ValueError(f"pitch window {window} is too short (64 samples or more)")
        if not 0 < fmin < fmax < samplerate / 2:
            raise ValueError(f"pitch range {fmin}..{fmax} Hz must lie within 0..{samplerate / 2} Hz")
        self.samplerate, self.window, self.threshold = float(samplerate), int(window), float(threshold)
        self.tau_max = min(int(np.ceil(samplerate / fmin)) + 1, window // 2)  # longest period, in samples
        self.tau_min = max(2, int(samplerate / fmax))  # shortest period
        self.width = window - self.tau_max  # the integration window of the difference function
        n = 1 << int(np.ceil(np.log2(window)))  # lags reach at most window-1, so no circular wrap at this size
        self._n = n
        self._frame = np.zeros(n, np.float64)
        self._head = np.zeros(n, np.float64)
        self._spec_x = np.zeros(n // 2 + 1, np.complex128)
        self._spec_h = np.zeros(n // 2 + 1, np.complex128)
        self._corr = np.zeros(n, np.float64)
        self._energy = np.zeros(window + 1, np.float64)
        self._diff = np.zeros(self.tau_max + 1, np.float64)
        self._cmnd = np.ones(self.tau_max + 1, np.float64)
        self._taus = np.arange(self.tau_max + 1, dtype=np.float64)
        self._scaled = np.zeros(self.tau_max, np.float64)

    def age(self, hz: float) -> float:
        """How many frames before the window's newest frame the estimate of `hz` describes: the middle of the
        span it compares (the oldest `width` frames and those one period later), not the window's middle."""
        period = self.samplerate / hz if hz > 0 else 0.0
        return self.window - (self.width + period) / 2.0

    def estimate(self, window: np.ndarray) -> tuple[float, float]:
        """(hz, confidence 0..1) of the newest `window` samples; hz is 0.0 when the window is unvoiced.

        Confidence is 1 minus the normalised difference at the chosen period: near 1 for a clean periodic tone,
        near 0 for noise or silence."""
        x = self._frame
        x[:self.window] = window[-self.window:]
        w, tmax = self.width, self.tau_max
        energy = self._energy
        np.square(x[:self.window], out=energy[1:])
        np.cumsum(energy[1:], out=energy[1:])
        if energy[-1] < 1e-10 * self.window:  # silence: no period to find
            return 0.0, 0.0
        if energy[w] < 0.01 * energy[-1] * w / self.window:  # a sound starting late in the window: too little of
            return 0.0, 0.0  # it in the compared part, whose near-zero differences would read as a perfect period
        # r(tau) = sum_{j<w} x_j x_{j+tau}: correlation of the head with the whole window, via the FFT
        head = self._head
        head[:w] = x[:w]
        np.fft.rfft(x, out=self._spec_x)
        np.fft.rfft(head, out=self._spec_h)
        np.conjugate(self._spec_h, out=self._spec_h)
        np.multiply(self._spec_x, self._spec_h, out=self._spec_x)
        np.fft.irfft(self._spec_x, n=self._n, out=self._corr)
        # d(tau) = E(0..w) + E(tau..tau+w) - 2 r(tau)
        d = self._diff
        np.subtract(energy[w:w + tmax + 1], energy[:tmax + 1], out=d)
        d += energy[w]
        d -= 2.0 * self._corr[:tmax + 1]
        np.maximum(d, 0.0, out=d)
        # cumulative mean normalised difference: d'(tau) = d(tau) * tau / sum_{1..tau} d
        c = self._cmnd
        np.cumsum(d[1:], out=c[1:])
        c[0] = 1.0
        np.maximum(c[1:], 1e-12, out=c[1:])
        np.multiply(d[1:], self._taus[1:], out=self._scaled)
        np.divide(self._scaled, c[1:], out=c[1:])
        lo = self.tau_min
        below = np.flatnonzero(c[lo:tmax] < self.threshold)
        if below.size:
            tau = lo + int(below[0])
            while tau + 1 < tmax and c[tau + 1] < c[tau]:  # walk down to the bottom of this dip
                tau += 1
        else:
            tau = lo + int(np.argmin(c[lo:tmax]))
        confidence = float(min(max(1.0 - c[tau], 0.0), 1.0))
        if c[tau] >= self.threshold * 2 or tau <= lo or tau >= tmax - 1:  # no clear dip, or at the range's edge
            return 0.0, confidence
        a, b, e = d[tau - 1], d[tau], d[tau + 1]  # parabola through the difference function's dip
        bend = a - 2.0 * b + e
        shift = 0.5 * (a - e) / bend if bend > 0 else 0.0
        return self.samplerate / (tau + shift), confidence
