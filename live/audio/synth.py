"""The neural synth: a polyphonic harmonic-plus-noise voice bank driven by the decoder model at control rate.

Once per block the decoder turns every sounding voice's (pitch, loudness, timbre) into 64 harmonic amplitudes
and 65 noise band gains (one batched ONNX run); numpy then renders the block. Harmonic amplitudes are ramped
linearly across the block and the noise is overlap-added, so control-rate steps never click. Not thread-safe:
one thread calls note_on, note_off and render.

Built for speed (`live bench --only synth` measures it): voices 0..last sounding are processed as one range of
views (new notes take the lowest free voice; a free voice in the range is silent and adds exact zeros), so no
per-block gathers or allocations of voice state; the decoder runs into preallocated buffers (ONNX Runtime IO
binding); a voice's harmonics come from a table of its sin/cos(k w n), already weighted by the amplitude ramp,
made when its note starts (f0 is fixed per note), so the whole block of every voice is one batched matrix product;
the phase advances as a per-voice rotation, not trigonometry; the breath noise is one real inverse DFT per block
(OpenCV's) and is skipped while the breath gives none. A silent synth does no DSP.

A note can start inside a block (`note_on(..., offset=)`): its harmonics stay silent up to that sample and ramp in
from there, so an event's time survives the block grid; its breath noise, made per block, fades in across the
block as any block's noise does. More notes than voices: the new note takes the oldest released voice, else the
oldest held one, which fades out over one block first (no click), so `sounding` never exceeds `voices`.
"""

from __future__ import annotations

import math

import cv2
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
# Breath noise is skipped while every band gain (all voices together) is at most this: noise of at most -74 dBFS
# RMS at full gain (times LEVEL). Breath -1 gives the decoder's floor, 0.1-2e-5 per voice at full loudness (its
# target is build_synth.NOISE_FLOOR), ~88 dB under the voice's own harmonics.
NOISE_GATE = 1e-4

INVERSE_DFT = cv2.DFT_INVERSE | cv2.DFT_ROWS | cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE  # per row, as numpy's irfft

IDLE, ATTACK, HOLD, RELEASE, STEAL = range(5)  # HOLD: decaying to and holding the sustain level


def midi_hz(note: int) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def peak(x: np.ndarray) -> float:
    """The largest magnitude in `x` (float32), a tenth of the time of numpy's max and min."""
    return cv2.norm(x, cv2.NORM_INF)


def soft_limit(x: np.ndarray) -> np.ndarray:
    """Identity below the knee, tanh-shaped above it: loud chords saturate gently instead of wrapping."""
    over = np.abs(x) - LIMIT_KNEE
    bent = np.sign(x) * (LIMIT_KNEE + (1.0 - LIMIT_KNEE) * np.tanh(over / (1.0 - LIMIT_KNEE)))
    return np.where(over > 0.0, bent, x)


class Synth:
    """`voices`-note polyphony; new notes take a free voice, else steal the oldest (released ones first)."""

    def __init__(self, decoder: Session | ort.InferenceSession, samplerate: int = 48000, block: int = 128,
                 voices: int = 8, seed: int = 0) -> None:
        self._decoder = decoder
        self._outputs = ["harmonics", "noise", "amplitude"]
        self.samplerate, self.block, self.voices = samplerate, block, voices
        dt = block / samplerate
        self._attack_step = dt / ATTACK_S
        self._decay = float(np.exp(-dt / DECAY_S))  # Python floats: the envelope loop runs on them
        self._release = 10.0 ** (-4.0 * dt / RELEASE_S)
        self._rng = np.random.default_rng(seed)
        self.blocks = 0  # blocks rendered so far
        self.decodes = 0  # decoder runs so far: one per block with sound, however many voices

        # Per-voice control state as Python lists: the envelope loop reads and writes single voices every block,
        # and a list element costs a tenth of a numpy scalar's access.
        self.note = [-1] * voices
        self.stage = [IDLE] * voices
        self.velocity = [0.0] * voices
        self.level = [0.0] * voices  # a free voice's is 0, so its loudness, amplitudes and sound are exactly 0
        self._age = [0] * voices  # note-on order, for stealing the oldest
        self._count = 0
        self._pending: list[tuple[int, float] | None] = [None] * voices  # note waiting for a stolen voice
        self._pan = np.zeros((voices, 2), dtype=np.float32)  # constant-power L/R gains
        self._built = [-1] * voices  # the note each voice's table, turn and pan were made for

        k = np.arange(1, HARMONICS + 1, dtype=np.float64)
        n = np.arange(1, block + 1, dtype=np.float64)
        self._ik = 1j * k
        self._ramp = (n / block).astype(np.float32)  # 1/block .. 1: interpolation weight of the new value
        self._falling = 1.0 - self._ramp  # and of the old one (both exact in float32)
        self._kn = np.multiply.outer(k, n)  # k n: harmonic number times sample number
        self._phases = np.zeros((HARMONICS, block), dtype=np.float32)  # scratch: a starting note's k w n
        self._gain = np.float32(0.0)
        # Harmonic k at sample n of a block that starts at phase p, its amplitude ramped from a to b:
        # ((1 - r_n) a + r_n b) sin(k p + k w n), and sin(k p + k w n) = cos(k p) sin(k w n) + sin(k p) cos(k w n).
        # A voice's table holds (1 - r_n) sin/cos(k w n) and r_n sin/cos(k w n), fixed while its note lasts (f0
        # is fixed per note; zero rows at and above Nyquist), so its whole block is one vector-matrix product of
        # the weights (a, b) * exp(i k p), and all voices' blocks are one batched matmul (numpy hands each to
        # BLAS; a loop of per-voice products cost twice as much at 16 voices). The weights are complex64, whose
        # float32 view (re, im, re, im, ...) meets the table's rows (sin(w n), cos(w n), sin(2 w n), ...).
        self._table = np.zeros((voices, 2, HARMONICS, 2, block), dtype=np.float32)  # (a, b) x k x (sin, cos)
        self._rows = self._table.reshape(voices, 4 * HARMONICS, block)
        self._amps = np.zeros((voices, 2, HARMONICS), dtype=np.float32)  # (last block's end, this block's end)
        self._weights = np.zeros((voices, 2, HARMONICS), dtype=np.complex64)
        self._flat = self._weights.view(np.float32).reshape(voices, 1, 4 * HARMONICS)
        self._turn = np.ones((voices, HARMONICS), dtype=np.complex128)  # exp(i k p) at this block's start,
        self._turn32 = np.ones((voices, HARMONICS), dtype=np.complex64)  # and as complex64 (half the multiply)
        self._spin = np.ones((voices, HARMONICS), dtype=np.complex128)  # exp(i k w block): one block's turn
        self._waves = np.zeros((voices, 1, block), dtype=np.float32)
        # A note that starts at sample o of its first block ramps in from there: its first block (from amplitude
        # 0, so only the r_n half of the table counts) is multiplied by ramp_o / r_n, ramp_o rising from 0 at
        # sample o to 1 at the block's end. Per voice starting this block: that factor.
        starts = np.arange(block, dtype=np.float64)[:, None]
        onsets = np.clip((n - starts) / (block - starts), 0.0, 1.0)
        self._late_starts = (onsets / (n / block)).astype(np.float32)  # row o: ramp_o / r_n
        self._starting: dict[int, int] = {}  # voice -> start offset (> 0) in the next block
        self._mix = np.zeros((2, block), dtype=np.float32)

        self._breath = BreathNoise(block, self._rng)

        # Decoder rows are voices: f0 is written when a note starts, loudness and timbre every block.
        self._feeds = {name: np.zeros((voices, width), dtype=np.float32)
                       for name, width in (("f0_hz", 1), ("loudness", 1), ("timbre", len(TIMBRE_AXES)))}
        self._loudness = self._feeds["loudness"][:, 0]
        self._results = [np.zeros((voices, width), dtype=np.float32) for width in (HARMONICS, NOISE_BANDS, 1)]
        # Per row count: an IO binding of the buffers above and views of their result rows
        self._bindings: dict[int, tuple[ort.IOBinding, list[np.ndarray]]] = {}
        self._bound = isinstance(decoder, Session)

    # --- notes ---------------------------------------------------------------------------------------------

    def note_on(self, note: int, velocity: float, offset: int = 0) -> None:
        """Start (or retrigger) `note` at sample `offset` of the next block; velocity 0 is a note off, as in MIDI.

        A retrigger or a stolen voice starts at a block edge (the envelope runs at control rate)."""
        if velocity <= 0.0:
            self.note_off(note)
            return
        stage = self.stage
        for v in range(self.voices):
            if self.note[v] == note and stage[v] not in (STEAL, IDLE):  # retrigger from the current level:
                stage[v], self.velocity[v] = ATTACK, velocity  # no phase reset, no click
                self._count += 1
                self._age[v] = self._count
                return
        if IDLE in stage:
            self._start(stage.index(IDLE), note, velocity, min(max(offset, 0), self.block - 1))
            return
        v = self._oldest()
        stage[v], self._pending[v] = STEAL, (note, velocity)  # fade out this block, start the next

    def note_off(self, note: int) -> None:
        for v in range(self.voices):
            if self.note[v] == note and self.stage[v] in (ATTACK, HOLD):
                self.stage[v] = RELEASE
            pending = self._pending[v]
            if pending is not None and pending[0] == note:
                self._pending[v] = None

    def all_notes_off(self) -> None:
        """Release every note and forget stolen-voice notes waiting to start (panic)."""
        self._pending = [None] * self.voices
        self.stage = [RELEASE if s in (ATTACK, HOLD) else s for s in self.stage]

    @property
    def sounding(self) -> int:
        """How many voices are making sound (including releases)."""
        return self.voices - self.stage.count(IDLE)

    def _oldest(self) -> int:
        """The voice to steal: the oldest released one, else the oldest not already being stolen."""
        for wanted in ((RELEASE,), (ATTACK, HOLD)):
            candidates = [v for v in range(self.voices) if self.stage[v] in wanted]
            if candidates:
                return min(candidates, key=self._age.__getitem__)
        return min(range(self.voices), key=self._age.__getitem__)

    def _start(self, v: int, note: int, velocity: float, offset: int = 0) -> None:
        self.note[v], self.stage[v], self.velocity[v], self.level[v] = note, ATTACK, velocity, 0.0
        self._count += 1
        self._age[v] = self._count
        self._feeds["f0_hz"][v] = midi_hz(note)
        if offset:
            self._starting[v] = offset
        else:
            self._starting.pop(v, None)
        self._turn[v], self._turn32[v] = 1.0, 1.0
        self._amps[v] = 0.0
        self._build(v, note)

    def _build(self, v: int, note: int) -> None:
        """Voice v's fixed per-note parts: its table, its per-block phase turn and its pan."""
        f0 = midi_hz(note)
        self._built[v] = note
        step = 2.0 * np.pi * f0 / self.samplerate  # phase advance per sample
        self._spin[v] = np.exp(self._ik * (step * self.block))
        top = min(HARMONICS, math.ceil(self.samplerate / 2 / f0) - 1)  # harmonics below Nyquist: k f0 < rate / 2
        # k w n in turns, reduced to -1/2..1/2 in float64 (k n is exact), then sin and cos in float32: numpy's
        # float32 sin is vectorised, its float64 one is not (a tenth of the time for the 64 x 128 table)
        turns = self._kn[:top] * (f0 / self.samplerate)
        turns -= np.rint(turns)
        phases = self._phases[:top]
        np.multiply(turns, 2.0 * np.pi, out=phases, casting="same_kind")
        table = self._table[v]
        rising, falling = table[1, :top], table[0, :top]  # r_n and (1 - r_n) times (sin, cos)(k w n)
        np.sin(phases, out=rising[:, 0])
        np.cos(phases, out=rising[:, 1])
        np.multiply(rising, self._falling, out=falling)
        rising *= self._ramp
        table[:, top:] = 0.0
        angle = (min(max((note - 60) / 48.0, -0.3), 0.3) + 1.0) * math.pi / 4  # low notes a little left
        self._pan[v] = math.cos(angle), math.sin(angle)

    # --- going back ----------------------------------------------------------------------------------------

    def save(self) -> tuple:
        """Everything the next render() depends on, to go back to with restore(): the render process renders
        ahead of the device and, when a note arrives for a block already rendered, goes back and renders that
        block and the ones after it again. Left out: the noise's random draws (new ones sound the same) and the
        voices' tables, which are made again from their notes where a voice's note changed since."""
        return (self.note[:], self.stage[:], self.velocity[:], self.level[:], self._age[:], self._count,
                self._pending[:], dict(self._starting), self._turn.copy(), self._amps.copy(), self._gain,
                self._breath.save(), self.blocks, self.decodes)

    def restore(self, state: tuple) -> None:
        """Go back to a state save() returned (before the render() that followed it)."""
        (note, stage, velocity, level, age, self._count, pending, starting, turn, amps, self._gain, breath,
         self.blocks, self.decodes) = state
        self.note[:], self.stage[:], self.velocity[:], self.level[:], self._age[:] = note, stage, velocity, level, age
        self._pending[:] = pending
        self._starting = dict(starting)
        np.copyto(self._turn, turn)
        np.copyto(self._turn32, turn, casting="same_kind")
        np.copyto(self._amps, amps)
        self._breath.restore(breath)
        for v, n in enumerate(self.note):
            if n >= 0 and n != self._built[v]:  # a note started on this voice since: its parts were replaced
                self._feeds["f0_hz"][v] = midi_hz(n)
                self._build(v, n)

    def _envelopes(self, active: list[int]) -> None:
        """Advance the sounding voices' envelopes one block (control rate)."""
        level, stage = self.level, self.stage
        for v in active:
            now = stage[v]
            if now == ATTACK:
                level[v] = min(1.0, level[v] + self._attack_step)
                if level[v] >= 1.0:
                    stage[v] = HOLD
            elif now == HOLD:
                level[v] = SUSTAIN + (level[v] - SUSTAIN) * self._decay
            elif now == RELEASE:
                level[v] = level[v] * self._release if level[v] > SILENT else 0.0
            elif now == STEAL:
                level[v] = 0.0

    def _retire(self, active: list[int]) -> None:
        """After a block: voices that reached silence become free; stolen voices start their waiting note.

        Either way the voice's level was 0 for this block, so its amplitudes are now exactly 0: a free voice
        inside the rendered range adds nothing."""
        stage = self.stage
        for v in active:
            if stage[v] == RELEASE and self.level[v] == 0.0:
                stage[v], self.note[v] = IDLE, -1
            elif stage[v] == STEAL:
                pending, self._pending[v] = self._pending[v], None
                if pending is None:
                    stage[v], self.note[v] = IDLE, -1
                else:
                    self._start(v, *pending)

    # --- sound ---------------------------------------------------------------------------------------------

    def render(self, gain: float, timbre: np.ndarray) -> np.ndarray:
        """The next block, (block, 2) float32 in -1..1; gain (and, through the decoder, timbre) ramps across it."""
        stage = self.stage
        active = [v for v in range(self.voices) if stage[v] != IDLE]
        mix = self._mix
        if active:
            self._envelopes(active)
            span = active[-1] + 1  # voices 0..span-1; the free ones among them are silent
            harmonics, noise, amplitude = self._decode(span, timbre)
            self._harmonic(span, harmonics, amplitude, mix)
            if len(active) < span:  # a free voice's row is silent already (loudness 0); make sure
                noise = noise[active]
            gains = noise[0] if len(noise) == 1 else np.sqrt(np.square(noise).sum(axis=0))
            self._noise(gains if cv2.norm(gains, cv2.NORM_INF) > NOISE_GATE else None, mix)
        else:
            mix.fill(0.0)
            if self._breath.live:
                self._noise(None, mix)
        gain = np.float32(gain * LEVEL)
        out = np.empty((self.block, 2), dtype=np.float32)
        if gain == self._gain:
            np.multiply(mix.T, gain, out=out)
        else:
            np.multiply(mix.T, (self._gain + (gain - self._gain) * self._ramp)[:, None], out=out)
            self._gain = gain
        self._retire(active)
        self.blocks += 1
        if peak(out) > LIMIT_KNEE:
            out = soft_limit(out)
        return out

    def decode(self, timbre: np.ndarray) -> list[np.ndarray]:
        """The decoder's outputs (harmonics, noise, amplitude) for voices 0..last sounding at `timbre`, as render
        runs it (one batched run), advancing nothing; views valid until the next run. [] when no voice sounds."""
        active = [v for v in range(self.voices) if self.stage[v] != IDLE]
        return self._decode(active[-1] + 1, timbre) if active else []

    def _decode(self, span: int, timbre: np.ndarray) -> list[np.ndarray]:
        """One decoder run for voices 0..span-1, into preallocated buffers; returns views of their rows."""
        feeds = self._feeds
        self._loudness[:span] = [v * l for v, l in zip(self.velocity[:span], self.level[:span])]
        feeds["timbre"][:span] = timbre
        self.decodes += 1
        if self._bound:
            binding, results = self._bindings.get(span) or self._bind(span)
            self._decoder.run_bound(binding)
            return results
        return self._decoder.run(self._outputs, {name: buffer[:span] for name, buffer in feeds.items()})

    def _bind(self, rows: int) -> tuple[ort.IOBinding, list[np.ndarray]]:
        """An IO binding of the first `rows` rows of the feed and result buffers (they never move), and views of
        those result rows."""
        binding = self._decoder.io_binding()
        for name, buffer in self._feeds.items():
            binding.bind_input(name, "cpu", 0, np.float32, [rows, buffer.shape[1]], buffer.ctypes.data)
        for name, buffer in zip(self._outputs, self._results):
            binding.bind_output(name, "cpu", 0, np.float32, [rows, buffer.shape[1]], buffer.ctypes.data)
        self._bindings[rows] = binding, [result[:rows] for result in self._results]
        return self._bindings[rows]

    def _harmonic(self, span: int, harmonics: np.ndarray, amplitude: np.ndarray, mix: np.ndarray) -> None:
        """Phase-continuous additive synthesis of voices 0..span-1, amplitudes ramped from the last block's,
        panned; writes `mix`."""
        amps, turn, turn32 = self._amps[:span], self._turn[:span], self._turn32[:span]
        np.multiply(harmonics, amplitude, out=amps[:, 1])
        np.multiply(amps, turn32[:, None], out=self._weights[:span])
        amps[:, 0] = amps[:, 1]
        turn *= self._spin[:span]
        np.copyto(turn32, turn, casting="same_kind")
        waves = self._waves[:span]
        np.matmul(self._flat[:span], self._rows[:span], out=waves)
        for v, offset in self._starting.items():  # only in its first block, from amplitude 0
            waves[v, 0] *= self._late_starts[offset]
        self._starting.clear()
        np.matmul(self._pan[:span].T, waves[:, 0], out=mix)

    def _noise(self, band_gains: np.ndarray | None, mix: np.ndarray) -> np.ndarray:
        """The voices' breath noise (their band gains together) added to `mix`; see BreathNoise.add."""
        return self._breath.add(band_gains, mix)


class BreathNoise:
    """Stereo noise shaped by 65 band gains, one block at a time: random-phase spectra, an inverse FFT and a
    windowed overlap-add (frames of two blocks, hop one block, sine window: constant variance). Shared by the note
    voices (all together) and the follow voice (its own, since it renders at another time)."""

    def __init__(self, block: int, rng: np.random.Generator) -> None:
        self.block, self._rng = block, rng
        frame = 2 * block
        self._window = np.sin(np.pi * (np.arange(frame) + 0.5) / frame).astype(np.float32)
        bins = frame // 2 + 1
        position = np.linspace(0.0, NOISE_BANDS - 1, bins)
        lo = np.minimum(position.astype(int), NOISE_BANDS - 2)
        frac = (position - lo).astype(np.float32)
        bands = np.zeros((NOISE_BANDS, bins), dtype=np.float32)  # band gains -> bin gains (linear)
        bands[lo, np.arange(bins)] = 1 - frac
        bands[lo + 1, np.arange(bins)] += frac
        # A frame's spectrum is laid out as OpenCV's real inverse DFT takes it (3x faster than numpy's irfft here):
        # Re 0, Re 1, Im 1, ..., Re N/2, so each bin's gain appears once per part. Each part is a uniform draw with
        # unit variance (mean 0.5 and sqrt(12) removed): 129 such bins sum to Gaussian noise, at a quarter of the
        # cost of normal draws. The scale gives white noise of band gain g an RMS of g.
        parts = np.concatenate([[0], np.repeat(np.arange(1, bins - 1), 2), [bins - 1]])
        self._bands = bands[:, parts] * np.float32(np.sqrt(frame / 2.0) * np.sqrt(12.0))
        self._part_gains = np.zeros(frame, dtype=np.float32)
        self._draws = np.zeros((2, frame), dtype=np.float32)  # per channel: this frame's spectrum
        self._frames = np.zeros((2, 2, frame), dtype=np.float32)  # this block's noise frame and the last one's
        self._frame = 0  # which of the two is the last one
        self.live = False  # the last frame's second half is not silent

    def add(self, band_gains: np.ndarray | None, mix: np.ndarray) -> np.ndarray:
        """Add a block of noise shaped by `band_gains` to `mix` (2, block). None: no new noise, only the last
        frame's tail."""
        last = self._frames[self._frame]
        mix += last[:, self.block:]
        if band_gains is None:
            last[:, self.block:] = 0.0
            self.live = False
            return mix
        self._frame = 1 - self._frame
        frame = self._frames[self._frame]
        np.dot(band_gains, self._bands, out=self._part_gains)
        draws = self._draws
        self._rng.random(out=draws, dtype=np.float32)
        draws -= 0.5
        draws *= self._part_gains
        cv2.dft(draws, frame, flags=INVERSE_DFT)
        frame *= self._window
        mix += frame[:, :self.block]
        self.live = True
        return mix

    def save(self) -> tuple:
        return self._frames.copy(), self._frame, self.live

    def restore(self, state: tuple) -> None:
        frames, self._frame, self.live = state
        np.copyto(self._frames, frames)


class FollowVoice:
    """One more voice of the decoder, whose pitch and loudness follow a live input (timbre transfer).

    Unlike a note voice its f0 changes every block, so it cannot use a note's fixed sin/cos table: a phase
    accumulator integrates a per-sample f0 ramp from the last block's pitch to this one's, and each harmonic is
    sin(k * phase) of that accumulated phase (one float32 sin over harmonics x samples), its amplitude ramped from
    the last block's as the note voices' are. It runs the decoder on its own one-row IO binding rather than in the
    note voices' batch: the render process mixes it in just before the device plays a block (render_process.py),
    later than the note voices render, so there is no batch to join. All buffers are allocated here; render()
    allocates nothing. A silent voice (loudness 0 and nothing left ringing) does no DSP.
    """

    def __init__(self, decoder: Session | ort.InferenceSession, samplerate: int = 48000, block: int = 128,
                 seed: int = 1) -> None:
        self._decoder, self.samplerate, self.block = decoder, samplerate, block
        self._outputs = ["harmonics", "noise", "amplitude"]
        self._feeds = {name: np.zeros((1, width), dtype=np.float32)
                       for name, width in (("f0_hz", 1), ("loudness", 1), ("timbre", len(TIMBRE_AXES)))}
        self._results = [np.zeros((1, width), dtype=np.float32) for width in (HARMONICS, NOISE_BANDS, 1)]
        self._binding: ort.IOBinding | None = None
        if isinstance(decoder, Session):
            self._binding = decoder.io_binding()
            for name, buffer in self._feeds.items():
                self._binding.bind_input(name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)
            for name, buffer in zip(self._outputs, self._results):
                self._binding.bind_output(name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)
        n = np.arange(1, block + 1, dtype=np.float64)
        self._ramp64 = n / block
        self._ramp = self._ramp64.astype(np.float32)
        self._falling = 1.0 - self._ramp
        self._harmonic = np.arange(1, HARMONICS + 1, dtype=np.float32)[:, None]  # k
        self._limit = np.arange(1, HARMONICS + 1, dtype=np.float64)  # k, to find those below Nyquist
        self._step = np.zeros(block, dtype=np.float64)  # phase advance per sample, radians
        self._phase32 = np.zeros((1, block), dtype=np.float32)  # the accumulated phase of each sample
        self._angles = np.zeros((HARMONICS, block), dtype=np.float32)  # k * phase, then its sine
        self._amps = np.zeros((2, HARMONICS), dtype=np.float32)  # (last block's end, this block's end)
        self._sums = np.zeros((2, block), dtype=np.float32)
        self._wave = np.zeros(block, dtype=np.float32)
        self._mix = np.zeros((2, block), dtype=np.float32)
        self._breath = BreathNoise(block, np.random.default_rng(seed))
        self._phase = 0.0  # of the fundamental at the end of the last block, radians in [0, 2 pi)
        self._f0 = 0.0  # pitch at the end of the last block; 0: the voice was silent
        self._pan = np.float32(math.cos(math.pi / 4))  # centre, constant power

    @property
    def sounding(self) -> bool:
        return self._f0 > 0.0 or self._breath.live

    def silence(self) -> None:
        """The voice stops here (a block went by without it): the next one starts from silence, no glide."""
        self._f0 = 0.0
        self._amps.fill(0.0)

    def render(self, hz: float, loudness: float, timbre: np.ndarray) -> np.ndarray | None:
        """The next block, (2, block) float32 (a view, valid until the next call), for pitch `hz` (ramped from
        the last block's) at decoder loudness 0..1; None while silent."""
        if loudness <= SILENT or hz <= 0.0:
            if self._f0 == 0.0 and not self._breath.live:
                return None
            # one more block at the pitch it had ramps the harmonics down to exact zero, then the noise tail ends
            loudness = 0.0
            if self._f0 > 0.0:
                hz = self._f0
            elif hz <= 0.0:  # only the breath's tail is left: any pitch, the harmonics are zero
                hz = 100.0
        start = self._f0 if self._f0 > 0.0 else hz
        feeds = self._feeds
        feeds["f0_hz"][0, 0], feeds["loudness"][0, 0] = hz, loudness
        feeds["timbre"][0] = timbre
        if self._binding is not None:
            self._decoder.run_bound(self._binding)
            harmonics, noise, amplitude = self._results
        else:
            harmonics, noise, amplitude = self._decoder.run(self._outputs, feeds)
        amps = self._amps
        np.multiply(harmonics[0], amplitude[0, 0], out=amps[1])
        top = int(self.samplerate / 2 / max(start, hz))  # harmonics below Nyquist all through the block
        amps[1, top:] = 0.0
        amps[0, top:] = 0.0
        # phase of sample n = phase before the block + the sum of the per-sample steps up to n; float64 for the
        # sum, float32 (reduced to a few turns) for the k x n sines, numpy's vectorised float32 sin
        step = self._step
        np.multiply(self._ramp64, hz - start, out=step)
        step += start
        step *= 2.0 * math.pi / self.samplerate
        np.cumsum(step, out=step)
        step += self._phase
        self._phase = math.fmod(float(step[-1]), 2.0 * math.pi)
        np.copyto(self._phase32[0], step, casting="same_kind")
        np.multiply(self._harmonic, self._phase32, out=self._angles)
        np.sin(self._angles, out=self._angles)
        np.matmul(amps, self._angles, out=self._sums)
        wave = self._wave
        np.multiply(self._sums[0], self._falling, out=wave)
        self._sums[1] *= self._ramp
        wave += self._sums[1]
        wave *= self._pan
        mix = self._mix
        mix[0] = wave
        mix[1] = wave
        gains = noise[0]
        self._breath.add(gains if loudness > 0.0 and cv2.norm(gains, cv2.NORM_INF) > NOISE_GATE else None, mix)
        amps[0] = amps[1]
        self._f0 = hz if loudness > 0.0 else 0.0
        if loudness == 0.0:
            amps.fill(0.0)
        return mix
