"""The synth decoder model and the synth that plays it: real ONNX Runtime, real numpy DSP, no device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from live.audio.synth import HARMONICS, NOISE_BANDS, TIMBRE_AXES, Synth, midi_hz
from live.inference import open_session
from live.models.build_synth import build, formant_hz
from live.models.manifest import load_manifest, sha256_of

RATE, BLOCK = 48000, 128
PURE = np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32)  # default timbre without breath noise


@pytest.fixture(scope="module")
def decoder(synth_decoder: Path):
    return open_session(synth_decoder, ("cpu",), threads=1)


def decode(decoder, f0: float, loudness: float, timbre) -> dict[str, np.ndarray]:
    feeds = {"f0_hz": np.array([[f0]], np.float32), "loudness": np.array([[loudness]], np.float32),
             "timbre": np.array([timbre], np.float32)}
    return dict(zip(("harmonics", "noise", "amplitude"), (o[0] for o in decoder.run(None, feeds))))


def play(synth: Synth, seconds: float, timbre=PURE, gain: float = 0.5) -> np.ndarray:
    blocks = int(seconds * RATE / BLOCK)
    return np.concatenate([synth.render(gain, np.asarray(timbre, np.float32)) for _ in range(blocks)])


def spectrum_db(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mono = signal.mean(axis=1)
    magnitude = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return np.fft.rfftfreq(len(mono), 1 / RATE), 20 * np.log10(magnitude / magnitude.max() + 1e-12)


# --- the decoder -----------------------------------------------------------------------------------------------

def test_outputs_are_distributions_and_gains(decoder) -> None:
    rng = np.random.default_rng(1)
    voices = 64
    feeds = {"f0_hz": rng.uniform(30, 8000, (voices, 1)).astype(np.float32),
             "loudness": rng.uniform(0, 1, (voices, 1)).astype(np.float32),
             "timbre": rng.uniform(-1, 1, (voices, len(TIMBRE_AXES))).astype(np.float32)}
    harmonics, noise, amplitude = decoder.run(None, feeds)
    assert harmonics.shape == (voices, HARMONICS) and noise.shape == (voices, NOISE_BANDS)
    assert amplitude.shape == (voices, 1)
    assert (harmonics >= 0).all() and np.allclose(harmonics.sum(axis=1), 1.0, atol=1e-5)
    assert (noise >= 0).all() and (amplitude >= 0).all()


def test_each_timbre_axis_does_what_its_name_says(decoder) -> None:
    def at(axis: int, value: float, f0: float = 220.0) -> dict[str, np.ndarray]:
        timbre = np.zeros(len(TIMBRE_AXES))
        timbre[axis] = value
        return decode(decoder, f0, 0.7, timbre)

    def centroid(out: dict[str, np.ndarray]) -> float:
        return float((out["harmonics"] * np.arange(1, HARMONICS + 1)).sum())

    def even_over_odd(out: dict[str, np.ndarray]) -> float:
        return float(out["harmonics"][1::2].sum() / out["harmonics"][0::2].sum())

    assert centroid(at(0, -1)) * 1.5 < centroid(at(0, 0)) and centroid(at(0, 0)) * 1.5 < centroid(at(0, 1))
    assert even_over_odd(at(1, 1)) < 0.2 * even_over_odd(at(1, -1))
    lowest = at(2, -1, f0=110.0)["harmonics"]
    for value in (-0.5, 0.0, 0.5):  # the most boosted harmonic sits at the formant: 500, 1000, 2000 Hz
        boosted = int(np.argmax(at(2, value, f0=110.0)["harmonics"] / lowest)) + 1
        assert boosted * 110.0 == pytest.approx(formant_hz(np.array(value)), rel=0.25)
    assert at(3, 1)["noise"].sum() > 20 * at(3, -1)["noise"].sum()


def test_a_batch_equals_single_runs(decoder) -> None:
    rng = np.random.default_rng(2)
    f0 = rng.uniform(50, 2000, 8)
    loudness = rng.uniform(0, 1, 8)
    timbre = rng.uniform(-1, 1, (8, 4))
    feeds = {"f0_hz": f0[:, None].astype(np.float32), "loudness": loudness[:, None].astype(np.float32),
             "timbre": timbre.astype(np.float32)}
    batch = decoder.run(None, feeds)
    for v in range(8):
        single = decode(decoder, f0[v], loudness[v], timbre[v])
        for name, out in zip(("harmonics", "noise", "amplitude"), batch):
            np.testing.assert_allclose(out[v], single[name], rtol=1e-5, atol=1e-7)


def test_manifest_describes_the_model(synth_decoder: Path) -> None:
    manifest = load_manifest(synth_decoder.with_suffix(".json"))
    assert manifest.kind == "synth-decoder" and manifest.tier == "cpu"
    assert manifest.sha256 == sha256_of(synth_decoder)
    assert [t.name for t in manifest.inputs] == ["f0_hz", "loudness", "timbre"]
    assert [t.shape for t in manifest.outputs] == [["voices", 64], ["voices", 65], ["voices", 1]]
    assert manifest.controls["latent_names"] == [name for name, _ in TIMBRE_AXES]
    assert manifest.provenance["fit_error"]["harmonics_db"] < 6.0


def test_rebuild_is_byte_identical(synth_decoder: Path, tmp_path: Path) -> None:
    again = build(tmp_path)
    assert again.read_bytes() == synth_decoder.read_bytes()
    assert again.with_suffix(".json").read_bytes() == synth_decoder.with_suffix(".json").read_bytes()


# --- the synth -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("note", [33, 57, 76, 96])
def test_a_note_sounds_at_its_pitch(decoder, note: int) -> None:
    synth = Synth(decoder, RATE, BLOCK)
    synth.note_on(note, 0.8)
    out = play(synth, 0.6)
    assert np.abs(out).max() > 0.05
    freqs, db = spectrum_db(out[RATE // 10:])
    assert freqs[np.argmax(db)] == pytest.approx(midi_hz(note), rel=0.02)


def test_note_off_decays_to_silence(decoder) -> None:
    synth = Synth(decoder, RATE, BLOCK)
    synth.note_on(60, 1.0)
    play(synth, 0.3, timbre=[0, 0, 0, 0.5])  # with breath noise: it must stop too
    synth.note_off(60)
    tail = play(synth, 1.0)
    assert np.abs(tail[:BLOCK * 4]).max() > 0.01  # a release, not a cut
    assert np.abs(tail[-RATE // 10:]).max() == 0.0
    assert synth.sounding == 0


def test_no_clicks_at_block_boundaries(decoder) -> None:
    synth = Synth(decoder, RATE, BLOCK)
    synth.note_on(57, 0.8)
    play(synth, 0.2)  # past the attack: a steady tone from here
    sweep = [np.array([v, 0.0, 0.5 * v, -1.0], np.float32) for v in np.linspace(-1, 1, 120)]
    steady = np.concatenate([play(synth, 0.3), *(synth.render(0.5, t) for t in sweep)])
    jumps = np.abs(np.diff(steady[:, 0]))
    at_boundary = np.zeros_like(jumps, dtype=bool)
    at_boundary[BLOCK - 1::BLOCK] = True  # the step from a block's last sample to the next block's first
    assert jumps[at_boundary].max() <= 1.1 * jumps[~at_boundary].max()


def test_harmonics_above_nyquist_are_absent(decoder) -> None:
    synth = Synth(decoder, RATE, BLOCK)
    note = 120  # 8372 Hz: harmonic 2 at 16.7 kHz is below Nyquist, harmonic 3 at 25.1 kHz is not
    synth.note_on(note, 1.0)
    freqs, db = spectrum_db(play(synth, 0.6, timbre=[1.0, -1.0, 1.0, -1.0])[RATE // 10:])

    def level(hz: float) -> float:
        return float(db[np.abs(freqs - hz) < 100].max())

    f0 = midi_hz(note)
    assert level(f0) > -0.01 and level(2 * f0) > -40
    assert level(RATE - 3 * f0) < -80  # where harmonic 3 would alias to


def test_voices_are_stolen_oldest_first(decoder) -> None:
    synth = Synth(decoder, RATE, BLOCK, voices=4)
    for note in (60, 62, 64, 65):
        synth.note_on(note, 0.7)
        synth.render(0.5, PURE)
    synth.note_on(67, 0.7)
    synth.render(0.5, PURE)  # the stolen voice fades out for one block, then takes the new note
    assert sorted(synth.note) == [62, 64, 65, 67] and synth.sounding == 4


# --- the fast path is the plain formula ------------------------------------------------------------------------

class ChangingDecoder:
    """Stands in for the ONNX session: every run, every row gets another harmonic spectrum; no noise. Keeps what
    it returned, so a test can render the same controls the slow, obvious way."""

    def __init__(self) -> None:
        self.returned: list[tuple[np.ndarray, np.ndarray]] = []

    def run(self, names, feeds):
        rows, k = len(feeds["f0_hz"]), np.arange(1, HARMONICS + 1)
        tilt = 0.05 + 0.1 * ((len(self.returned) + np.arange(rows)) % 7) / 7
        harmonics = np.exp(-np.outer(tilt, k))
        harmonics = (harmonics / harmonics.sum(axis=1, keepdims=True)).astype(np.float32)
        amplitude = (0.3 * feeds["loudness"]).astype(np.float32)
        self.returned.append((harmonics, amplitude))
        return [harmonics, np.zeros((rows, NOISE_BANDS), np.float32), amplitude]


def test_rendering_equals_summing_sines(decoder) -> None:
    """Per sample and harmonic: sin(k * phase), amplitude ramped linearly from the last block's value, harmonics at
    or above Nyquist silent, panned, times the gain ramp. The synth gets there through tables and products."""
    stub = ChangingDecoder()
    synth = Synth(stub, RATE, BLOCK, voices=4)
    notes = (40, 64, 101)  # 101: 2794 Hz, harmonics 9.. are above Nyquist
    for note in notes:
        synth.note_on(note, 0.9)
    blocks, gain = 40, 0.5
    out = np.concatenate([synth.render(gain, PURE) for _ in range(blocks)])
    assert len(stub.returned) == blocks

    n = np.arange(blocks * BLOCK)
    ramp = (np.arange(1, BLOCK + 1) / BLOCK)
    want = np.zeros((blocks * BLOCK, 2))
    for voice, note in enumerate(notes):
        f0 = midi_hz(note)
        amps = np.array([h[voice] * a[voice] for h, a in stub.returned], np.float64)  # (blocks, harmonics)
        amps[:, np.arange(1, HARMONICS + 1) * f0 >= RATE / 2] = 0.0
        start = np.vstack([np.zeros(HARMONICS), amps[:-1]])
        ramped = (start[:, None, :] + (amps - start)[:, None, :] * ramp[None, :, None]).reshape(-1, HARMONICS)
        phase = 2 * np.pi * f0 / RATE * (n + 1)
        wave = (ramped * np.sin(np.outer(phase, np.arange(1, HARMONICS + 1)))).sum(axis=1)
        angle = (np.clip((note - 60) / 48.0, -0.3, 0.3) + 1.0) * np.pi / 4
        want += np.outer(wave, [np.cos(angle), np.sin(angle)])
    gains = np.full(blocks * BLOCK, gain * 2.0)  # LEVEL
    gains[:BLOCK] *= ramp  # the gain ramps up from 0 over the first block
    want *= gains[:, None]
    assert np.abs(want).max() < 0.8  # below the limiter's knee: the comparison is exact up to rounding
    np.testing.assert_allclose(out, want, atol=2e-6)


def test_one_decoder_run_per_block_and_none_when_silent(decoder) -> None:
    synth = Synth(decoder, RATE, BLOCK, voices=8)
    silent = [synth.render(0.5, PURE) for _ in range(5)]
    assert synth.decodes == 0 and not np.any(silent)
    for note in (48, 52, 55, 59, 62, 65, 69, 72):
        synth.note_on(note, 0.7)
    for _ in range(10):
        synth.render(0.5, PURE)
    assert synth.decodes == 10 and synth.blocks == 15  # eight voices, one batched run per block


def test_a_voice_freed_below_others_is_silent(decoder) -> None:
    """Voices 0..last sounding are rendered as one range; a free voice inside it must add nothing."""
    both, alone = Synth(decoder, RATE, BLOCK, voices=4), Synth(decoder, RATE, BLOCK, voices=4)
    both.note_on(50, 0.8)  # voice 0, released to silence
    both.note_on(67, 0.8)  # voice 1, held
    alone.note_on(67, 0.8)  # voice 0, held
    play(both, 0.05)
    play(alone, 0.05)
    both.note_off(50)
    play(both, 0.8)
    play(alone, 0.8)
    assert list(both.stage[:2]) == [0, 2] and both.sounding == 1  # free voice 0 below held voice 1
    np.testing.assert_allclose(play(both, 0.2), play(alone, 0.2), atol=1e-5)


def test_panic_releases_every_note_and_cancels_waiting_ones(decoder) -> None:
    synth = Synth(decoder, voices=2)
    for note in (48, 55, 60):  # the third steals a voice and waits a block
        synth.note_on(note, 0.9)
    synth.all_notes_off()
    tail = play(synth, 0.6)
    assert synth.sounding == 0
    assert np.abs(tail[-4800:]).max() < 1e-4  # silent after the release, and the stolen note never started
    synth.note_on(60, 0.9)  # and it plays again afterwards
    assert np.abs(play(synth, 0.1)).max() > 0.01
