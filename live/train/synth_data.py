"""Training data for the DDSP synth: a corpus we synthesise ourselves (so pitch is known exactly), or a user's WAVs.

Every note comes out the same way: 48 kHz mono audio, and per control frame (one per 128-sample block, the rate
the synth runs its decoder) the pitch and the loudness. Loudness is measured the same way for both sources (a
sine-equivalent RMS level, 1.0 = a sine of peak REF), so a model trained on either plays at the engine's levels.
Pitch comes from the recipe for the corpus and from YIN (implemented here) for WAVs. Only numpy and the stdlib.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.errors import LiveError

RATE = 48000
BLOCK = 128  # samples per control frame: the synth's block, so 375 frames per second
NOTE_FRAMES = 300  # 0.8 s per note
REF = 0.5  # peak of a sine at loudness 1 (the level the current decoder plays at)
MIDI_RANGE = (36.0, 84.0)
FAMILIES = ("pluck", "bowed", "reed", "bell", "fm", "organ")
VOICED = 0.2  # YIN aperiodicity below this counts as pitched
AUDIBLE = 0.03  # loudness below this is treated as silence when looking for pitched audio
MEL_BANDS = 64


@dataclass
class Note:
    """One note: audio [frames*BLOCK] float32, and per frame f0 in Hz and loudness 0..1; label names its source."""

    audio: np.ndarray
    f0: np.ndarray
    loudness: np.ndarray
    label: str


# --- measurements shared by the corpus and WAV folders -----------------------------------------------------------

def loudness(audio: np.ndarray) -> np.ndarray:
    """Per control frame: sqrt(2) * RMS / REF over a 512-sample Hann window ending the frame's block.

    The decoder's output for frame t is the level reached at the end of block t (the synth ramps into it), so
    the window is centred there.
    """
    frames = len(audio) // BLOCK
    window = np.hanning(4 * BLOCK)
    padded = np.pad(audio.astype(np.float64), (BLOCK, 3 * BLOCK))
    starts = np.arange(frames) * BLOCK
    segments = padded[starts[:, None] + np.arange(4 * BLOCK)]
    rms = np.sqrt((segments**2 * window).sum(axis=1) / window.sum())
    return (np.sqrt(2.0) * rms / REF).astype(np.float32)


def yin(audio: np.ndarray, rate: int = RATE, hop: int = BLOCK, fmin: float = 50.0, fmax: float = 2000.0,
        threshold: float = 0.15, window: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """YIN pitch per hop (de Cheveigne & Kawahara 2002): f0 in Hz and aperiodicity (0 = perfectly periodic).

    Difference function via FFT correlation, cumulative-mean-normalised, the first dip under `threshold`
    followed to its local minimum (else the global minimum), then parabolic interpolation of the lag.
    Frames are centred on the middle of each hop.
    """
    tau_max = int(np.ceil(rate / fmin))
    tau_min = max(2, int(rate / fmax))
    span = window + tau_max
    size = 1 << int(np.ceil(np.log2(span)))
    frames = len(audio) // hop
    padded = np.pad(audio.astype(np.float64), (span // 2, span))
    starts = np.arange(frames) * hop + hop // 2
    f0 = np.zeros(frames, dtype=np.float32)
    aperiodicity = np.ones(frames, dtype=np.float32)
    lags = np.arange(tau_max + 1)
    for lo in range(0, frames, 256):  # bounded memory on long files
        x = padded[starts[lo:lo + 256, None] + np.arange(span)]
        squares = np.concatenate([np.zeros((len(x), 1)), np.cumsum(x**2, axis=1)], axis=1)
        energy0 = squares[:, window:window + 1]
        energy_tau = squares[:, lags + window] - squares[:, lags]
        head = np.fft.rfft(x[:, :window], size)
        corr = np.fft.irfft(np.conj(head) * np.fft.rfft(x, size), size)[:, :tau_max + 1]
        diff = np.maximum(energy0 + energy_tau - 2.0 * corr, 0.0)
        running = np.cumsum(diff[:, 1:], axis=1)
        cmnd = np.ones_like(diff)
        cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(running, 1e-12)
        cmnd[running[:, -1] <= 1e-9 * span] = 1.0  # silence: not periodic
        search = cmnd[:, tau_min:tau_max]
        below = search < threshold
        first = np.where(below.any(axis=1), below.argmax(axis=1), -1)
        rising = np.zeros_like(below)
        rising[:, :-1] = search[:, 1:] >= search[:, :-1]
        after = np.arange(search.shape[1]) >= first[:, None]
        dip = (rising & after).argmax(axis=1)
        tau = np.where(first >= 0, dip, search.argmin(axis=1)) + tau_min
        rows = np.arange(len(x))
        left, mid, right = cmnd[rows, tau - 1], cmnd[rows, tau], cmnd[rows, np.minimum(tau + 1, tau_max)]
        curve = left - 2.0 * mid + right
        shift = np.where(curve > 1e-12, 0.5 * (left - right) / np.where(curve > 1e-12, curve, 1.0), 0.0)
        f0[lo:lo + 256] = rate / (tau + np.clip(shift, -1.0, 1.0))
        aperiodicity[lo:lo + 256] = np.clip(mid, 0.0, 1.0)
    return f0, aperiodicity


def mel_filters(bands: int = MEL_BANDS, size: int = 2048, rate: int = RATE) -> np.ndarray:
    """Triangular mel filterbank [bands, size//2+1], 40 Hz..16 kHz."""
    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    edges = 700.0 * (10.0 ** (np.linspace(mel(np.array(40.0)), mel(np.array(16000.0)), bands + 2) / 2595.0) - 1.0)
    bins = np.fft.rfftfreq(size, 1.0 / rate)
    rise = (bins[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    fall = (edges[2:, None] - bins[None]) / (edges[2:, None] - edges[1:-1, None])
    return np.maximum(0.0, np.minimum(rise, fall))


def timbre_features(note: Note, filters: np.ndarray) -> np.ndarray:
    """What the encoder sees: the note's level-free log-mel shape (energy-weighted over frames) and its pitch.

    Subtracting each frame's mean log level leaves the spectral shape, so loud and soft notes of one timbre
    look alike; the pitch is appended because a shape means different things at different pitches.
    """
    size = 2 * (filters.shape[1] - 1)
    hop = size // 4
    audio = np.pad(note.audio.astype(np.float64), (size // 2, size // 2))
    count = 1 + (len(audio) - size) // hop
    frames = audio[np.arange(count)[:, None] * hop + np.arange(size)] * np.hanning(size)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 @ filters.T
    log_mel = np.log(power + 1e-8)
    weight = power.sum(axis=1)
    shape = ((log_mel - log_mel.mean(axis=1, keepdims=True)) * weight[:, None]).sum(axis=0) / max(weight.sum(), 1e-12)
    voiced = note.loudness > AUDIBLE
    pitch = np.log2(np.median(note.f0[voiced] if voiced.any() else note.f0) / 440.0)
    return np.concatenate([shape / 10.0, [pitch]]).astype(np.float32)


# --- the corpus ------------------------------------------------------------------------------------------------------

def _envelope(rng: np.random.Generator, samples: int) -> np.ndarray:
    """A sustained note's gate: attack, a slight settle, hold, release to silence before the note ends."""
    t = np.arange(samples) / RATE
    attack = rng.uniform(0.005, 0.15)
    release_at = rng.uniform(0.45, 0.65)
    release = rng.uniform(0.05, 0.12)
    sustain = rng.uniform(0.6, 1.0)
    rise = np.clip(t / attack, 0.0, 1.0)
    settle = sustain + (1.0 - sustain) * np.exp(-np.maximum(t - attack, 0.0) / 0.1)
    fall = np.clip(1.0 - (t - release_at) / release, 0.0, 1.0)
    return rise * settle * fall


def _formants(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Formant centres (300 Hz..4 kHz), boosts and widths in octaves, for a resonant body."""
    return (np.exp(rng.uniform(np.log(300.0), np.log(4000.0), count)), rng.uniform(1.0, 6.0, count),
            rng.uniform(0.2, 0.6, count))


def _body(freq: np.ndarray, formants: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Gain of the resonant body at `freq`: 1 plus a Gaussian (in log frequency) bump per formant."""
    centre, boost, width = formants
    bumps = boost * np.exp(-0.5 * (np.log2(np.maximum(freq[..., None], 1.0) / centre) / width) ** 2)
    return 1.0 + bumps.sum(axis=-1)


def _additive(f0_track: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    """Sum of harmonics 1..len(amplitudes) of a (possibly gliding) f0, each dropped where it would alias."""
    phase = 2.0 * np.pi * np.cumsum(f0_track) / RATE
    out = np.zeros_like(phase)
    for k, amp in enumerate(amplitudes, start=1):
        if amp:
            out += amp * np.sin(k * phase) * (k * f0_track < 0.45 * RATE)
    return out


def _harmonic_count(f0: float) -> int:
    return int(min(128, 18000.0 / f0))


def _vibrato(rng: np.random.Generator, f0: float, samples: int, depth_max: float) -> np.ndarray:
    """f0 per sample with a vibrato (up to `depth_max` semitones) that fades in after the attack."""
    t = np.arange(samples) / RATE
    depth = rng.uniform(0.0, depth_max) * np.clip((t - 0.15) / 0.2, 0.0, 1.0)
    return f0 * 2.0 ** (depth * np.sin(2 * np.pi * rng.uniform(4.0, 6.5) * t + rng.uniform(0, 2 * np.pi)) / 12.0)


def _filtered_noise(rng: np.random.Generator, samples: int, gain: np.ndarray | None = None,
                    formants: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """White noise through the body (FFT-domain filter), high-passed like breath, scaled to unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freq = np.fft.rfftfreq(samples, 1.0 / RATE)
    shape = (freq / (freq + 1500.0)) * (_body(freq, formants) if formants is not None else 1.0)
    noise = np.fft.irfft(spectrum * shape, samples)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12) * (1.0 if gain is None else gain)


def _pluck(rng: np.random.Generator, f0: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Karplus-Strong: a filtered noise burst in a delay loop with a damping filter and a fractional delay.

    The loop filter is [a, 1-2a, a] (delay 1, larger a = darker and faster-dying highs) convolved with a
    linear interpolator for the fractional part of the period, so the pitch is right to well under 1%.
    The loop only looks back at least `whole` samples, so it runs a period at a time in numpy.
    """
    period = RATE / f0
    whole = int(np.floor(period - 1.0))
    frac = period - 1.0 - whole
    a = rng.uniform(0.05, 0.25)
    taps = np.convolve([a, 1.0 - 2.0 * a, a], [1.0 - frac, frac])
    decay = 10.0 ** (-3.0 / (rng.uniform(0.8, 4.0) * f0))  # loop gain for a 0.8-4 s T60 before damping
    burst = rng.uniform(-1.0, 1.0, int(round(period)))
    smooth = rng.uniform(0.0, 0.8)  # pick softness: a one-pole low-pass on the burst
    for i in range(1, len(burst)):
        burst[i] = (1.0 - smooth) * burst[i] + smooth * burst[i - 1]
    pick = max(1, int(rng.uniform(0.05, 0.45) * len(burst)))  # pick position: a comb on the burst
    burst = burst - np.concatenate([np.zeros(pick), burst[:-pick]])
    pad = whole + len(taps)
    x = np.zeros(pad + samples)
    x[pad:pad + len(burst)] = burst - burst.mean()
    y = np.zeros_like(x)
    for start in range(pad, len(x), whole):
        stop = min(start + whole, len(x))
        back = start - whole
        acc = x[start:stop].copy()
        for j, tap in enumerate(taps):
            acc += decay * tap * y[back - j:back - j + stop - start]
        y[start:stop] = acc
    return y[pad:], np.full(samples, f0)


def _bowed(rng: np.random.Generator, f0: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """A sawtooth with vibrato through a resonant body, with a little bow noise."""
    track = _vibrato(rng, f0, samples, 0.3)
    k = np.arange(1, _harmonic_count(f0) + 1)
    body = _formants(rng, 3)
    tone = _additive(track, _body(k * f0, body) / k ** rng.uniform(0.9, 1.3))
    tone /= np.sqrt(np.mean(tone**2)) + 1e-12
    tone += _filtered_noise(rng, samples, rng.uniform(0.0, 0.1), body)
    return tone * _envelope(rng, samples), track


def _reed(rng: np.random.Generator, f0: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """A pulse wave (duty 10-50%: 50% is clarinet-like, odd harmonics only) with vibrato and breath noise."""
    track = _vibrato(rng, f0, samples, 0.2)
    k = np.arange(1, _harmonic_count(f0) + 1)
    duty = rng.choice([0.5, rng.uniform(0.1, 0.45)])
    body = _formants(rng, 2)
    amps = np.abs(np.sin(np.pi * k * duty)) / k * _body(k * f0, body) * np.exp(-k * f0 / rng.uniform(2e3, 1e4))
    tone = _additive(track, amps)
    tone /= np.sqrt(np.mean(tone**2)) + 1e-12
    tone += _filtered_noise(rng, samples, rng.uniform(0.02, 0.4), body)
    return tone * _envelope(rng, samples), track


def _bell(rng: np.random.Generator, f0: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Inharmonic partials (bell-like ratios, jittered), each decaying, higher ones faster; f0 = the strike note.

    The harmonic decoder can only approximate these: it learns the nearest harmonic spectrum.
    """
    ratios = np.array([1.0, 2.0, 2.4, 3.0, 4.2, 5.4, 6.8, 8.2]) * rng.uniform(0.98, 1.02, 8)
    ratios[0] = 1.0
    t = np.arange(samples) / RATE
    t60 = rng.uniform(0.8, 3.0) * ratios**-0.7
    amps = rng.uniform(0.3, 1.0, 8) / np.sqrt(ratios)
    tone = np.zeros(samples)
    for ratio, amp, life in zip(ratios, amps, t60):
        if ratio * f0 < 0.45 * RATE:
            tone += amp * np.sin(2 * np.pi * ratio * f0 * t + rng.uniform(0, 2 * np.pi)) * 10.0 ** (-3.0 * t / life)
    return tone * np.clip(t / 0.002, 0.0, 1.0), np.full(samples, f0)


def _fm(rng: np.random.Generator, f0: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-operator FM, integer ratio (harmonic spectra); the index follows the envelope: louder is brighter."""
    t = np.arange(samples) / RATE
    ratio = int(rng.choice([1, 2, 3]))
    bandwidth_cap = max(0.3, 16000.0 / (ratio * f0) - 1.0)  # keep the sidebands below Nyquist
    index = min(rng.uniform(0.5, 5.0), bandwidth_cap)
    percussive = rng.random() < 0.5
    envelope = np.exp(-t / rng.uniform(0.15, 0.6)) * np.clip(t / 0.003, 0.0, 1.0) if percussive \
        else _envelope(rng, samples)
    modulator = index * (0.3 + 0.7 * envelope) * np.sin(2 * np.pi * ratio * f0 * t)
    return np.sin(2 * np.pi * f0 * t + modulator) * envelope, np.full(samples, f0)


def _organ(rng: np.random.Generator, f0: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Drawbar organ: fixed harmonics 1, 2, 3, 4, 5, 6, 8 at random levels, gated, with an optional slow tremolo."""
    k = np.zeros(8)
    k[[0, 1, 2, 3, 4, 5, 7]] = rng.uniform(0.0, 1.0, 7) ** 2
    k[0] = max(k[0], 0.3)
    t = np.arange(samples) / RATE
    tremolo = 1.0 + rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(5.0, 7.0) * t)
    tone = _additive(np.full(samples, f0), k) * tremolo
    gate = _envelope(rng, samples)
    return tone * np.where(gate > 0, np.clip(gate * 4.0, 0.0, 1.0), 0.0), np.full(samples, f0)


_MAKERS = {"pluck": _pluck, "bowed": _bowed, "reed": _reed, "bell": _bell, "fm": _fm, "organ": _organ}


def corpus_note(seed: int, index: int) -> Note:
    """Note `index` of the corpus for `seed`: family by index, pitch (MIDI 36-84) and velocity drawn per note.

    Each note has its own generator, so note i is the same whatever the corpus size. The audio is scaled so
    its loudest frame measures the velocity; the frame f0 is the recipe's pitch at the centre of each block.
    """
    rng = np.random.default_rng([seed, index])
    family = FAMILIES[index % len(FAMILIES)]
    f0 = 440.0 * 2.0 ** ((rng.uniform(*MIDI_RANGE) - 69.0) / 12.0)
    samples = NOTE_FRAMES * BLOCK
    audio, track = _MAKERS[family](rng, f0, samples)
    velocity = rng.uniform(0.25, 1.0)
    audio = audio * velocity / max(float(loudness(audio).max()), 1e-9)
    frame_f0 = track[np.arange(NOTE_FRAMES) * BLOCK + BLOCK // 2]
    return Note(audio.astype(np.float32), frame_f0.astype(np.float32), loudness(audio), family)


def corpus(seed: int, notes: int) -> list[Note]:
    return [corpus_note(seed, i) for i in range(notes)]


# --- WAV folders ------------------------------------------------------------------------------------------------------

def resample(audio: np.ndarray, rate: int, target: int = RATE) -> np.ndarray:
    """Band-limited resampling by truncating or zero-padding the spectrum (whole file; fine for clips)."""
    if rate == target:
        return audio
    n_out = int(round(len(audio) * target / rate))
    spectrum = np.fft.rfft(audio)
    keep = min(len(spectrum), n_out // 2 + 1)
    out_spectrum = np.zeros(n_out // 2 + 1, dtype=complex)
    out_spectrum[:keep] = spectrum[:keep]
    return np.fft.irfft(out_spectrum, n_out) * (n_out / len(audio))


def read_wav(path: Path) -> np.ndarray:
    """A PCM WAV (8/16/24/32-bit, any rate, any channels) as mono float64 at 48 kHz; LiveError naming the file."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as err:
        raise LiveError(f"could not read {path} as a WAV file: {err}",
                        "convert it to PCM WAV (16 or 24-bit), e.g. ffmpeg -i IN -c:a pcm_s16le OUT.wav") from None
    if width == 3:
        bytes_ = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        data = (bytes_[:, 0].astype(np.int32) | bytes_[:, 1].astype(np.int32) << 8
                | bytes_[:, 2].astype(np.int8).astype(np.int32) << 16) / 2.0**23
    elif width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / 128.0
    else:
        data = np.frombuffer(raw, {2: "<i2", 4: "<i4"}[width]).astype(np.float64) / 2.0 ** (8 * width - 1)
    if len(data) < channels:
        raise LiveError(f"{path} has no audio in it", "remove it from the folder")
    mono = data[:len(data) // channels * channels].reshape(-1, channels).mean(axis=1)
    return resample(mono, rate)


def wav_notes(folder: Path) -> list[Note]:
    """Every WAV under `folder`, cut into note-length chunks that are mostly pitched; LiveError if none are.

    Each file is scaled so its loudest frame has loudness 1. Pitch is YIN's; in the unpitched frames inside a
    kept chunk it is interpolated from the pitched ones (the decoder still needs an f0 there).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LiveError(f"WAV folder not found: {folder}", "pass --wav a folder of .wav files")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".wav")
    if not paths:
        raise LiveError(f"no .wav files in {folder}", "put some recordings of single notes or melodies there")
    notes: list[Note] = []
    total_frames = pitched_frames = 0
    for path in paths:
        audio = read_wav(path)
        level = loudness(audio)
        if not len(level) or level.max() <= 1e-6:
            total_frames += len(level)
            continue
        audio = audio / level.max()
        level = level / level.max()
        f0, aperiodicity = yin(audio)
        pitched = (aperiodicity < VOICED) & (level > AUDIBLE)
        total_frames += len(level)
        pitched_frames += int(pitched.sum())
        for start in range(0, len(level), NOTE_FRAMES):
            chunk = slice(start, start + NOTE_FRAMES)
            voiced = pitched[chunk]
            if voiced.sum() < max(16, 0.5 * (level[chunk] > AUDIBLE).sum()):
                continue
            frames = np.arange(voiced.size)
            track = np.exp(np.interp(frames, frames[voiced], np.log(f0[chunk][voiced])))
            pad = NOTE_FRAMES - voiced.size
            clip = audio[start * BLOCK:(start + voiced.size) * BLOCK]
            notes.append(Note(np.pad(clip, (0, pad * BLOCK)).astype(np.float32),
                              np.pad(track, (0, pad), mode="edge").astype(np.float32),
                              np.pad(level[chunk], (0, pad)).astype(np.float32), path.stem))
    if not notes:
        share = 100.0 * pitched_frames / max(total_frames, 1)
        raise LiveError(f"no pitched audio in {folder}: {len(paths)} WAV file(s), "
                        f"{total_frames * BLOCK / RATE:.1f} s, YIN found a clear pitch in {share:.0f}% of frames "
                        "(silence, noise or drums cannot teach a harmonic synth)",
                        "use recordings of pitched notes: one instrument or voice, one note at a time")
    return notes
