"""The neural synth: a polyphonic harmonic-plus-noise voice bank driven by the decoder model at control rate.

Once per block the decoder turns every sounding voice's (pitch, loudness, timbre) into 64 harmonic amplitudes
and 65 noise band gains (one batched ONNX run); numpy then renders the block. Harmonic amplitudes are ramped
linearly across the block and the noise is overlap-added, so control-rate steps never click. Not thread-safe:
one thread calls note_on, note_off and render.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from live.inference import Session

HARMONICS = 64
NOISE_BANDS = 65  # linearly spaced 0..Nyquist
#: The decoder's four timbre inputs, in order: (name, what -1..+1 does). The model builder implements them.
TIMBRE_AXES: tuple[tuple[str, str], ...] = (
    ("brightness", "spectral tilt: dark (-1) to bright (+1)"),
    ("hollow", "odd/even balance: saw-like (-1) to hollow, clarinet-like (+1)"),
    ("formant", "resonance position: low, ~250 Hz (-1) to high, ~4 kHz (+1)"),
    ("breath", "breath noise: none (-1) to breathy (+1)"),
)

ATTACK_S = 0.01
DECAY_S = 0.08  # time constant of the fall to the sustain level
SUSTAIN = 0.7
RELEASE_S = 0.5  # time to fall 80 dB, after which the voice is silent and free
SILENT = 1e-4
LIMIT_KNEE = 0.8  # the output is exact below this and bends smoothly towards +-1 above it
LEVEL = 2.0  # so gain 0.5 puts one full-velocity voice near -12 dBFS, leaving the limiter for chords

IDLE, ATTACK, HOLD, RELEASE, STEAL = range(5)  # HOLD: decaying to and holding the sustain level


def midi_hz(note: int) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def soft_limit(x: np.ndarray) -> np.ndarray:
    """Identity below the knee, tanh-shaped above it: loud chords saturate gently instead of wrapping."""
    over = np.abs(x) - LIMIT_KNEE
    bent = np.sign(x) * (LIMIT_KNEE + (1.0 - LIMIT_KNEE) * np.tanh(over / (1.0 - LIMIT_KNEE)))
    return np.where(over > 0.0, bent, x)


class Synth:
    """`voices`-note polyphony; new notes take a free voice, else steal the oldest (released ones first)."""

    def __init__(self, decoder: Session | ort.InferenceSession, samplerate: int = 48000, block: int = 128,
                 voices: int = 8, seed: int = 0) -> None:
        self._decoder = decoder.session if isinstance(decoder, Session) else decoder
        self._outputs = ["harmonics", "noise", "amplitude"]
        self.samplerate, self.block, self.voices = samplerate, block, voices
        dt = block / samplerate
        self._attack_step = dt / ATTACK_S
        self._decay = np.exp(-dt / DECAY_S)
        self._release = 10.0 ** (-4.0 * dt / RELEASE_S)
        self._rng = np.random.default_rng(seed)

        self.note = np.full(voices, -1)
        self.stage = np.full(voices, IDLE)
        self.velocity = np.zeros(voices)
        self.level = np.zeros(voices)
        self._age = np.zeros(voices, dtype=np.int64)  # note-on order, for stealing the oldest
        self._count = 0
        self._pending: list[tuple[int, float] | None] = [None] * voices  # note waiting for a stolen voice
        self._f0 = np.zeros(voices)
        self._phase = np.zeros(voices)  # fundamental phase at the end of the last block, radians
        self._below_nyquist = np.zeros((voices, HARMONICS), dtype=np.float32)
        self._pan = np.zeros((voices, 2), dtype=np.float32)  # constant-power L/R gains
        self._amp = np.zeros((voices, HARMONICS), dtype=np.float32)  # harmonic amplitudes at the last block end

        self._k = np.arange(1, HARMONICS + 1, dtype=np.float32)[:, None]
        self._n = np.arange(1, block + 1, dtype=np.float64)
        self._ramp = (self._n / block).astype(np.float32)  # 1/block .. 1: interpolation weight of the new value
        self._gain = np.float32(0.0)

        frame = 2 * block  # noise frames of two blocks, hop one block, sine window: constant variance
        self._window = np.sin(np.pi * (np.arange(frame) + 0.5) / frame).astype(np.float32)
        bins = frame // 2 + 1
        position = np.linspace(0.0, NOISE_BANDS - 1, bins)
        self._band_lo = np.minimum(position.astype(int), NOISE_BANDS - 2)
        self._band_frac = (position - self._band_lo).astype(np.float32)
        self._noise_scale = np.float32(np.sqrt(frame / 2.0))
        self._noise_tail = np.zeros((2, block), dtype=np.float32)

    # --- notes ---------------------------------------------------------------------------------------------

    def note_on(self, note: int, velocity: float) -> None:
        """Start (or retrigger) `note`; velocity 0 is a note off, as in MIDI."""
        if velocity <= 0.0:
            self.note_off(note)
            return
        same = np.flatnonzero((self.note == note) & (self.stage != STEAL) & (self.stage != IDLE))
        if same.size:  # retrigger from the current level: no phase reset, no click
            v = int(same[0])
            self.stage[v], self.velocity[v] = ATTACK, velocity
            self._count += 1
            self._age[v] = self._count
            return
        idle = np.flatnonzero(self.stage == IDLE)
        if idle.size:
            self._start(int(idle[0]), note, velocity)
            return
        v = self._oldest()
        self.stage[v], self._pending[v] = STEAL, (note, velocity)  # fade out this block, start the next

    def note_off(self, note: int) -> None:
        for v in np.flatnonzero(self.note == note):
            if self.stage[v] in (ATTACK, HOLD):
                self.stage[v] = RELEASE
        for v, pending in enumerate(self._pending):
            if pending is not None and pending[0] == note:
                self._pending[v] = None

    @property
    def sounding(self) -> int:
        """How many voices are making sound (including releases)."""
        return int(np.count_nonzero(self.stage != IDLE))

    def _oldest(self) -> int:
        candidates = np.flatnonzero(self.stage == RELEASE)
        if not candidates.size:
            candidates = np.flatnonzero(self.stage != STEAL)
        if not candidates.size:
            candidates = np.arange(self.voices)
        return int(candidates[np.argmin(self._age[candidates])])

    def _start(self, v: int, note: int, velocity: float) -> None:
        f0 = midi_hz(note)
        self.note[v], self.stage[v], self.velocity[v], self.level[v] = note, ATTACK, velocity, 0.0
        self._count += 1
        self._age[v] = self._count
        self._f0[v], self._phase[v] = f0, 0.0
        self._amp[v] = 0.0
        self._below_nyquist[v] = (self._k[:, 0] * f0 < self.samplerate / 2).astype(np.float32)
        angle = (np.clip((note - 60) / 48.0, -0.3, 0.3) + 1.0) * np.pi / 4  # low notes a little left
        self._pan[v] = np.cos(angle), np.sin(angle)

    def _envelopes(self) -> None:
        """Advance every envelope one block (control rate)."""
        for v in range(self.voices):
            stage = self.stage[v]
            if stage == ATTACK:
                self.level[v] = min(1.0, self.level[v] + self._attack_step)
                if self.level[v] >= 1.0:
                    self.stage[v] = HOLD
            elif stage == HOLD:
                self.level[v] = SUSTAIN + (self.level[v] - SUSTAIN) * self._decay
            elif stage == RELEASE:
                self.level[v] = self.level[v] * self._release if self.level[v] > SILENT else 0.0
            elif stage == STEAL:
                self.level[v] = 0.0

    def _retire(self) -> None:
        """After a block: voices that reached silence become free; stolen voices start their waiting note."""
        for v in range(self.voices):
            if self.stage[v] == RELEASE and self.level[v] == 0.0:
                self.stage[v], self.note[v] = IDLE, -1
            elif self.stage[v] == STEAL:
                pending, self._pending[v] = self._pending[v], None
                if pending is None:
                    self.stage[v], self.note[v] = IDLE, -1
                else:
                    self._start(v, *pending)

    # --- sound ---------------------------------------------------------------------------------------------

    def render(self, gain: float, timbre: np.ndarray) -> np.ndarray:
        """The next block, (block, 2) float32 in -1..1; gain (and, through the decoder, timbre) ramps across it."""
        self._envelopes()
        active = np.flatnonzero(self.stage != IDLE)
        mix = np.zeros((2, self.block), dtype=np.float32)
        noise_power = np.zeros(NOISE_BANDS, dtype=np.float32)
        if active.size:
            harmonics, noise, amplitude = self._decode(active, timbre)
            mix += self._harmonic(active, harmonics * amplitude)
            noise_power = np.square(noise).sum(axis=0)
        mix += self._noise(np.sqrt(noise_power))
        gain = np.float32(gain * LEVEL)
        gain_ramp = self._gain + (gain - self._gain) * self._ramp
        self._gain = gain
        self._retire()
        return np.ascontiguousarray(soft_limit(mix * gain_ramp).T, dtype=np.float32)

    def _decode(self, active: np.ndarray, timbre: np.ndarray) -> list[np.ndarray]:
        """One decoder run for all sounding voices."""
        loudness = (self.velocity[active] * self.level[active]).astype(np.float32)[:, None]
        timbres = np.broadcast_to(np.asarray(timbre, dtype=np.float32), (active.size, len(TIMBRE_AXES)))
        feeds = {"f0_hz": self._f0[active].astype(np.float32)[:, None], "loudness": loudness,
                 "timbre": np.ascontiguousarray(timbres)}
        return self._decoder.run(self._outputs, feeds)

    def _harmonic(self, active: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
        """Phase-continuous additive synthesis, amplitudes ramped from the last block's; returns (2, block)."""
        new = amplitudes * self._below_nyquist[active]
        top = int(self._below_nyquist[active].sum(axis=1).max())  # no work for harmonics no voice can have
        step = 2.0 * np.pi * self._f0[active] / self.samplerate
        phase = np.mod(self._phase[active, None] + step[:, None] * self._n, 2.0 * np.pi)
        waves = np.sin(self._k[:top] * phase.astype(np.float32)[:, None, :])  # (voices, harmonics, block)
        ends = np.stack([self._amp[active, :top], new[:, :top]], axis=1)  # (voices, 2, harmonics)
        old_and_new = np.matmul(ends, waves)  # each voice's block at the old and at the new amplitudes
        voice = old_and_new[:, 0] + (old_and_new[:, 1] - old_and_new[:, 0]) * self._ramp
        self._amp[active] = new
        self._phase[active] = phase[:, -1]
        return self._pan[active].T @ voice

    def _noise(self, band_gains: np.ndarray) -> np.ndarray:
        """Stereo noise shaped by the band gains: random-phase spectra, inverse FFT, windowed overlap-add."""
        gains = band_gains[self._band_lo] * (1 - self._band_frac) + band_gains[self._band_lo + 1] * self._band_frac
        bins = gains.size
        spectrum = self._rng.standard_normal((2, bins), dtype=np.float32) \
            + 1j * self._rng.standard_normal((2, bins), dtype=np.float32)
        frame = np.fft.irfft(spectrum * (gains * self._noise_scale), n=2 * self.block).astype(np.float32)
        frame *= self._window
        out = self._noise_tail + frame[:, :self.block]
        self._noise_tail = frame[:, self.block:]
        return out
