"""What the show hears, at control rate: a streaming analysis of one mono input, a set of values every hop.

Fed blocks of any size, it analyses every `hop` frames (256 at 44.1/48 kHz: 172/187.5 times a second) the newest
`window` frames (2048: 43 ms) and returns each hop's values with the perf_counter() time of the newest frame they
include. What a value lags behind the sound it describes is stated per feature in LATENCY (in frames).

librosa gives what is fixed: the FFT bin frequencies and the tempo prior (`librosa.feature.tempo` on a tempogram
we hand it, `librosa.autocorrelate`). The per-hop parts are written here because librosa's features take whole
spectrograms, frame the signal themselves and allocate per call, and its onset peak-picking and beat tracker look
ahead into frames that have not been heard yet; each is a few numpy calls into buffers allocated once.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import librosa
import numpy as np

from live.audio.pitch import Pitch

HOP_RATE = 187.5  # hops a second aimed at (the nearest power-of-two hop): control rate, >= 100 Hz
FLOOR_DB = -60.0  # levels map -60..0 dBFS (RMS) to 0..1
GATE_DB = -70.0  # quieter than this (RMS over the window) is silence: every value at rest
BAND_LO, BAND_HI = 40.0, 16000.0
BASS_HZ = 160.0  # the bands wholly below this are the `bass` value
PITCH_MIN, PITCH_MAX = 60.0, 1200.0
ONSET_GAP_S = 0.06  # at most one onset in this long
ONSET_RECENT_S = 0.25  # the adaptive threshold follows the flux of this long
ONSET_DECAY_S = 0.1  # the onset value falls by 1/e in this long
ENVELOPE_S = 6.0  # the tempo is found in this much of the onset envelope
TEMPO_EVERY_S = 0.5  # how often the coarse tempo is estimated again
FIT_BEATS = 16  # the beat grid is fitted to the onsets of the last this many beats
LOCK_ONSETS = 4  # a grid needs this many onsets on it (then it beats)
FLYWHEEL_BEATS = 4  # a grid with no onset on it for this many beats stops (a break, the music's end)
NAMES = ("rms", "loudness", "bass", "onset", "centroid", "flatness", "pitch", "pitch_confidence", "tempo", "beat",
         "beat_phase")


def level(mean_square: float) -> float:
    """A mean square (full scale 1) as 0..1 from FLOOR_DB to 0 dBFS."""
    db = 10.0 * math.log10(max(mean_square, 1e-20))
    return min(max(1.0 - db / FLOOR_DB, 0.0), 1.0)


def band_edges(bands: int) -> np.ndarray:
    """The `bands` + 1 edges (Hz) of the log-spaced bands, BAND_LO to BAND_HI."""
    return np.geomspace(BAND_LO, BAND_HI, bands + 1)


@dataclass
class Hop:
    """One hop's analysis: `values` by name (see NAMES, plus band/0..N-1), at perf_counter() time `at` (the newest
    frame analysed); `onset` and `beat` are the times of an onset or beat heard in this hop, else None."""

    at: float
    values: dict[str, float]
    onset: float | None = None
    beat: float | None = None


class BeatTracker:
    """Tempo and beat phase from the onset envelope and the onset times.

    The coarse tempo is librosa's (its log-normal prior around 120 BPM over the envelope's autocorrelation), at the
    hop's resolution: 1.3 BPM at 120 BPM, 48 kHz. It is refined by a least-squares fit of the recent onsets to a beat
    grid (time = a + period * n), which also gives the phase: written here because librosa's `beat_track` runs
    dynamic programming over the whole signal, future included."""

    def __init__(self, frame_rate: float, samplerate: int, hop: int) -> None:
        self.frame_rate, self.samplerate, self.hop = frame_rate, samplerate, hop
        self.envelope = np.zeros(int(ENVELOPE_S * frame_rate), np.float32)
        self._centred = np.zeros_like(self.envelope)
        self.onsets: deque[float] = deque(maxlen=64)
        self.coarse = 0.0  # BPM from the envelope, 0 until found
        self.period = 0.0  # the fitted grid: beats at anchor + period * n (seconds); period 0 = no grid
        self.anchor = 0.0
        self.last_on_grid = -math.inf  # the time of the newest onset on the grid
        self.last_beat = -math.inf
        self._since_tempo = 0
        # librosa loads its modules lazily (seconds on a loaded machine): now, not at the first onset of the show
        librosa.feature.tempo(tg=librosa.autocorrelate(self.envelope + 1.0)[:, None], sr=samplerate, hop_length=hop)

    @property
    def bpm(self) -> float:
        return 60.0 / self.period if self.period else 0.0

    def hop_done(self, flux: float, onset: float | None, at: float) -> float | None:
        """Add one hop's flux (and its onset, if any); returns the time of a beat that fell in this hop."""
        env = self.envelope
        env[:-1] = env[1:]
        env[-1] = flux
        self._since_tempo += 1
        if onset is not None:
            self.onsets.append(onset)
            if self._since_tempo >= TEMPO_EVERY_S * self.frame_rate or not self.period:
                self._estimate_tempo()
            if self.coarse:
                self._fit(onset)
        if self.period and at - self.last_on_grid > FLYWHEEL_BEATS * self.period:
            self.period = 0.0  # the music stopped, or lost its beat
        if not self.period:
            return None
        n = math.floor((at - self.anchor) / self.period)
        beat = self.anchor + n * self.period
        if beat > self.last_beat + 0.5 * self.period and at - beat < 0.25 * self.period:
            self.last_beat = beat
            return beat
        return None

    def phase(self, at: float) -> float:
        return ((at - self.anchor) / self.period) % 1.0 if self.period else 0.0

    def _estimate_tempo(self) -> None:
        self._since_tempo = 0
        np.subtract(self.envelope, self.envelope.mean(), out=self._centred)
        ac = librosa.autocorrelate(self._centred)
        if ac[0] <= 0:
            self.coarse = 0.0
            return
        np.maximum(ac / ac[0], 0.0, out=ac)  # librosa's prior takes log1p of it: no negative lags
        self.coarse = float(librosa.feature.tempo(tg=ac[:, None], sr=self.samplerate, hop_length=self.hop,
                                                  start_bpm=120.0)[0])

    def _fit(self, newest: float) -> None:
        """Fit the grid to the onsets near it (the coarse period first, then the fitted one, twice)."""
        period = self.period if self.period and abs(self.period * self.coarse / 60.0 - 1.0) < 0.04 \
            else 60.0 / self.coarse
        times = np.fromiter(self.onsets, np.float64, len(self.onsets))
        times = times[times > newest - FIT_BEATS * period]
        anchor = newest if not self.period else self.anchor
        for _ in range(2):
            beats = np.round((times - anchor) / period)
            near = np.abs(times - anchor - beats * period) < 0.1 * period
            n, t = beats[near], times[near]
            if len(np.unique(n)) < LOCK_ONSETS:
                return
            slope, intercept = np.polyfit(n, t, 1)
            if not 0.9 * period < slope < 1.1 * period:
                return
            period, anchor = float(slope), float(intercept)
        if abs(times[-1] - anchor - round((times[-1] - anchor) / period) * period) < 0.1 * period:
            self.last_on_grid = float(times[-1])
        self.period, self.anchor = period, anchor


class Analysis:
    """The streaming analyser of one input: `feed(block, at)` returns the hops completed by that block."""

    def __init__(self, samplerate: int, bands: int = 10) -> None:
        self.samplerate = samplerate
        self.hop = 1 << round(math.log2(samplerate / HOP_RATE))  # 256 at 44.1 and 48 kHz, 512 at 96 kHz
        self.window = 8 * self.hop
        self.onset_window = 2 * self.hop
        self.rate = samplerate / self.hop
        sr, n = samplerate, self.window
        self._buffer = np.zeros(n, np.float32)  # the newest `window` frames
        self._filled = 0  # frames in the current hop
        self._hann = np.hanning(n + 1)[:n].astype(np.float32)
        self._hann_onset = np.hanning(self.onset_window + 1)[:self.onset_window].astype(np.float32)
        self._windowed = np.zeros(n, np.float32)
        self._windowed_onset = np.zeros(self.onset_window, np.float32)
        self._power = np.zeros(n // 2 + 1, np.float32)
        self._log = np.zeros(self.onset_window // 2 + 1, np.float32)
        self._log_before = np.zeros_like(self._log)
        self._rise = np.zeros_like(self._log)
        # each band sums the power of the bins whose frequency lies in it; 2 / (N * sum(w^2)) makes the sum the
        # band's mean square (Parseval, one-sided), so a band reads like loudness
        freqs = librosa.fft_frequencies(sr=sr, n_fft=n)
        self.band_edges = band_edges(bands)
        weights = np.zeros((bands, len(freqs)), np.float32)
        for b in range(bands):
            weights[b, (freqs >= self.band_edges[b]) & (freqs < self.band_edges[b + 1])] = 1.0
        self._bands = weights * np.float32(2.0 / (n * float(np.sum(self._hann.astype(np.float64) ** 2))))
        self._band_power = np.zeros(bands, np.float32)
        self.bass_bands = int(np.sum(self.band_edges[1:] <= BASS_HZ))
        inside = (freqs >= BAND_LO) & (freqs < BAND_HI)
        self._inside = slice(int(np.argmax(inside)), int(len(inside) - np.argmax(inside[::-1])))
        self._freqs = freqs[self._inside].astype(np.float32)
        self.pitch = Pitch(sr, n, PITCH_MIN, PITCH_MAX)
        self.beats = BeatTracker(self.rate, sr, self.hop)
        self._recent_flux = np.zeros(max(3, int(ONSET_RECENT_S * self.rate)), np.float32)
        self._onset_peak = 1e-6  # the largest flux of an onset lately, which scales the onset value
        self._onset_value = 0.0
        self._last_onset = -math.inf
        self._onset_decay = math.exp(-1.0 / (ONSET_DECAY_S * self.rate))
        self.names = (*NAMES, *(f"band/{b}" for b in range(bands)))
        #: how far behind the sound each value is, in frames: half its window plus up to a hop (beats are
        #: predicted from the grid, so a beat's time is the beat's own; it is reported up to a hop later)
        self.latency = {"rms": self.hop * 2, "loudness": self.hop * 2, "onset": self.hop + self.onset_window // 2,
                        "spectrum": self.hop + n // 2, "pitch": self.hop + round(self.pitch.age(PITCH_MIN)),
                        "beat": self.hop}

    def feed(self, block: np.ndarray, at: float) -> list[Hop]:
        """Analyse `block` (mono float32), whose first frame is at perf_counter() time `at`."""
        hops = []
        hop, used = self.hop, 0
        while used < len(block):
            take = min(hop - self._filled, len(block) - used)
            buf = self._buffer
            buf[:-take] = buf[take:]
            buf[-take:] = block[used:used + take]
            used += take
            self._filled += take
            if self._filled == hop:
                self._filled = 0
                hops.append(self._analyse(at + (used - 1) / self.samplerate))
        return hops

    def _analyse(self, at: float) -> Hop:
        """The values of the newest window, whose newest frame is at `at`."""
        x = self._buffer
        values = dict.fromkeys(self.names, 0.0)
        near = x[-4 * self.hop:]
        mean_square = float(np.dot(near, near)) / len(near)
        whole = float(np.dot(x, x)) / len(x)
        onset = None
        if 10.0 * math.log10(max(whole, 1e-20)) < GATE_DB:  # silence: at rest, but a beat carries on over a break
            self._onset_value = 0.0
            self._log[:] = self._log_before[:] = 0.0
            self._recent_flux[:-1] = self._recent_flux[1:]
            self._recent_flux[-1] = 0.0
        else:
            values["rms"] = math.sqrt(mean_square)
            values["loudness"] = level(mean_square)
            self._spectrum(values)
            onset = self._onset(at)
            values["onset"] = self._onset_value
            values["pitch"], values["pitch_confidence"] = self.pitch.estimate(x)
        beat = self.beats.hop_done(self._recent_flux[-1], onset, at)
        values["tempo"] = self.beats.bpm
        values["beat_phase"] = self.beats.phase(at)
        if self.beats.period:
            values["beat"] = max(0.0, 1.0 - (at - self.beats.last_beat) / (0.5 * self.beats.period))
        return Hop(at, values, onset, beat)

    def _spectrum(self, values: dict[str, float]) -> None:
        """Bands, bass, centroid and flatness of the Hann-windowed newest window."""
        np.multiply(self._buffer, self._hann, out=self._windowed)
        spectrum = np.fft.rfft(self._windowed)
        power = self._power
        np.square(spectrum.real, out=power)
        power += np.square(spectrum.imag)
        np.matmul(self._bands, power, out=self._band_power)
        for b, p in enumerate(self._band_power):
            values[f"band/{b}"] = level(float(p))
        values["bass"] = level(float(self._band_power[:self.bass_bands].sum()))
        inside = power[self._inside]
        total = float(inside.sum())
        if total <= 0.0:
            return
        magnitude = np.sqrt(inside)
        centroid = float(np.dot(self._freqs, magnitude) / magnitude.sum())
        # log-spaced like the bands: a sweep moves it evenly per octave (0 = 40 Hz, 1 = 16 kHz)
        values["centroid"] = min(max(math.log(max(centroid, BAND_LO) / BAND_LO) / math.log(BAND_HI / BAND_LO), 0.0),
                                 1.0)
        values["flatness"] = min(float(np.exp(np.mean(np.log(inside + 1e-12)))) * len(inside) / total, 1.0)

    def _onset(self, at: float) -> float | None:
        """Spectral flux on log magnitude of a short window (the rise of every bin since the last hop, summed), an
        onset where it exceeds the recent flux by an adaptive margin; the onset's time is refined to the frame
        where the attack first reaches half its peak. Returns that time, or None."""
        w = self.onset_window
        np.multiply(self._buffer[-w:], self._hann_onset, out=self._windowed_onset)
        magnitude = np.abs(np.fft.rfft(self._windowed_onset))
        self._log_before, self._log = self._log, self._log_before
        np.log1p(magnitude * 100.0, out=self._log)
        np.subtract(self._log, self._log_before, out=self._rise)
        np.maximum(self._rise, 0.0, out=self._rise)
        flux = float(self._rise.sum()) / len(self._rise)
        recent = self._recent_flux
        threshold = 1.5 * float(recent.mean()) + 0.1 * self._onset_peak
        recent[:-1] = recent[1:]
        recent[-1] = flux
        self._onset_value *= self._onset_decay
        self._onset_peak = max(self._onset_peak * 0.9995, 1e-6)
        if flux <= threshold:
            return None
        self._onset_peak = max(self._onset_peak, flux)
        self._onset_value = max(self._onset_value, min(flux / self._onset_peak, 1.0))
        if at - self._last_onset < ONSET_GAP_S:  # the same attack, seen again: its strength, but no new onset
            return None
        attack = np.abs(self._buffer[-w:])
        first = int(np.argmax(attack >= 0.5 * float(attack.max())))
        onset = at - (w - 1 - first) / self.samplerate
        self._last_onset = onset
        return onset
