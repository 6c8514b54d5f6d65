"""The synth decoder model and the synth that plays it: real ONNX Runtime, real numpy DSP, no device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from live.audio.synth import HARMONICS, LEVEL, NOISE_BANDS, NOISE_GATE, TIMBRE_AXES, Synth, midi_hz
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


def summed_sines(stub: ChangingDecoder, notes, blocks: int, gain: float, since: int = 0) -> np.ndarray:
    """The plain formula for `notes`, each (voice, note, first block, start offset, last block), for blocks
    `since`..blocks-1: per sample and harmonic sin(k * phase), the phase counted from the note's first block, the
    amplitude the decoder's for that voice ramped linearly from the last block's value (from 0 at the note's start
    sample in its first block), harmonics at or above Nyquist silent, panned, times the gain, which ramps up from 0
    over block 0."""
    ramp = np.arange(1, BLOCK + 1) / BLOCK
    k = np.arange(1, HARMONICS + 1)
    want = np.zeros(((blocks - since) * BLOCK, 2))
    for voice, note, first, offset, last in notes:
        f0, begin = midi_hz(note), max(first, since)
        amps = np.array([h[voice] * a[voice] for h, a in stub.returned[max(first, since - 1):last + 1]], np.float64)
        amps[:, k * f0 >= RATE / 2] = 0.0
        weights = np.tile(ramp, (last + 1 - begin, 1))
        if begin == first:
            start = np.vstack([np.zeros(HARMONICS), amps[:-1]])
            weights[0] = np.clip((np.arange(1, BLOCK + 1) - offset) / (BLOCK - offset), 0.0, 1.0)
        else:
            start, amps = amps[:-1], amps[1:]
        ramped = (start[:, None, :] + (amps - start)[:, None, :] * weights[:, :, None]).reshape(-1, HARMONICS)
        n = np.arange((begin - first) * BLOCK + 1, (last + 1 - first) * BLOCK + 1)
        turns = np.outer(n, k) * (f0 / RATE) % 1.0  # k n exact: no large angles
        wave = (ramped * np.sin(2 * np.pi * turns)).sum(axis=1)
        angle = (np.clip((note - 60) / 48.0, -0.3, 0.3) + 1.0) * np.pi / 4
        want[(begin - since) * BLOCK:(last + 1 - since) * BLOCK] += np.outer(wave, [np.cos(angle), np.sin(angle)])
    gains = np.full(len(want), gain * LEVEL)
    if since == 0:
        gains[:BLOCK] *= ramp
    return want * gains[:, None]


def test_rendering_equals_summing_sines() -> None:
    """The synth gets to the plain formula through tables and products: equal up to float32 rounding."""
    stub = ChangingDecoder()
    synth = Synth(stub, RATE, BLOCK, voices=4)
    notes = (40, 64, 101)  # 101: 2794 Hz, harmonics 9.. are above Nyquist
    for note in notes:
        synth.note_on(note, 0.9)
    blocks, gain = 40, 0.5
    out = np.concatenate([synth.render(gain, PURE) for _ in range(blocks)])
    assert len(stub.returned) == blocks
    want = summed_sines(stub, [(v, note, 0, 0, blocks - 1) for v, note in enumerate(notes)], blocks, gain)
    assert np.abs(want).max() < 0.8  # below the limiter's knee: the comparison is exact up to rounding
    # float32 tables, weights and sums: ~1e-7 relative per term, a few hundred terms per sample, well under 2e-6
    np.testing.assert_allclose(out, want, atol=2e-6)


def test_late_starts_released_and_stolen_voices_equal_summing_sines() -> None:
    """Notes that start inside a block, later than others, and on a stolen voice: each from its own sample, its
    phase from its own first block; the released voice is the one stolen, the new note starts a block later."""
    stub = ChangingDecoder()
    synth = Synth(stub, RATE, BLOCK, voices=4)
    events = {0: [(40, 0), (64, 0)], 5: [(101, 77)], 10: [(50, 1)], 15: [(72, 0)]}
    blocks, gain, out = 30, 0.25, []
    for b in range(blocks):
        if b == 12:
            synth.note_off(64)  # voice 1: released, so it is stolen before voice 0, which is older
        for note, offset in events.get(b, []):
            synth.note_on(note, 0.9, offset)
        out.append(synth.render(gain, PURE))
    assert synth.note == [40, 72, 101, 50] and synth.sounding == 4
    notes = [(0, 40, 0, 0, blocks - 1), (1, 64, 0, 0, 15), (2, 101, 5, 77, blocks - 1), (3, 50, 10, 1, blocks - 1),
             (1, 72, 16, 0, blocks - 1)]  # 64 fades out over block 15 (its loudness, so amplitude, goes to 0)
    want = summed_sines(stub, notes, blocks, gain)
    assert np.abs(want).max() < 0.8
    np.testing.assert_allclose(np.concatenate(out), want, atol=2e-6)


def test_a_long_note_keeps_its_phase() -> None:
    """After 10,000 blocks (27 s) the phase, carried from block to block as a rotation, still matches the
    formula's (the same rotation rounded to complex64 is 2.5e-5 off by then, 12x the tolerance)."""
    stub = ChangingDecoder()
    synth = Synth(stub, RATE, BLOCK, voices=1)
    synth.note_on(57, 1.0)
    blocks, gain = 10_000, 1.0
    for _ in range(blocks - 4):
        synth.render(gain, PURE)
    out = np.concatenate([synth.render(gain, PURE) for _ in range(4)])
    want = summed_sines(stub, [(0, 57, 0, 0, blocks - 1)], blocks, gain, since=blocks - 4)
    np.testing.assert_allclose(out, want, atol=2e-6)


@pytest.mark.parametrize("offset", [0, 1, 77, 127])
def test_a_note_starts_at_its_sample(decoder, offset: int) -> None:
    synth = Synth(decoder, RATE, BLOCK)
    synth.note_on(60, 0.9, offset)
    first = synth.render(0.5, PURE)
    assert not first[:offset].any() and np.all(first[offset + 1:] != 0.0)
    assert np.abs(first[offset]).max() > 0.0


def test_a_ninth_note_steals_the_released_voice_then_the_oldest_without_a_click(decoder) -> None:
    synth = Synth(decoder, RATE, BLOCK, voices=8)
    chord = (48, 52, 55, 59, 62, 65, 69, 72)
    for note in chord:  # oldest first
        synth.note_on(note, 0.6)
        synth.render(0.5, PURE)
    play(synth, 0.2)
    synth.note_off(62)  # newer than 48, still sounding as it releases
    steady = play(synth, 0.05)
    assert synth.sounding == 8

    def steal(note: int, before: np.ndarray) -> np.ndarray:  # the stolen voice's fade-out block and the new
        synth.note_on(note, 0.6)  # note's first block, after the two samples before them
        return np.concatenate([before[-2:], synth.render(0.5, PURE), synth.render(0.5, PURE)])

    ninth = steal(36, steady)  # takes the released voice; low notes, so their own attack adds little roughness
    assert sorted(synth.note) == sorted({*chord} - {62} | {36}) and synth.sounding == 8
    tenth = steal(38, ninth)  # no released voice left: the oldest held one
    assert sorted(synth.note) == sorted({*chord} - {62, 48} | {36, 38}) and synth.sounding == 8

    def roughness(x: np.ndarray) -> float:  # a click is a jump in the slope: the largest second difference
        return float(np.abs(np.diff(x, n=2, axis=0)).max())

    # Measured over 12 start phases: a steal (one-block fade, then the new note) is 0.55-0.93x the steady chord's
    # roughness; dropping the oldest voice at a block edge instead is 2.4-4.2x.
    assert roughness(ninth) < roughness(steady) and roughness(tenth) < roughness(steady)


def test_breath_noise_is_gaussian_at_its_band_level(decoder) -> None:
    """Uniform draws in the spectrum, summed over 129 bins, make Gaussian noise of the bands' level and shape."""
    synth = Synth(decoder, RATE, BLOCK)
    mix = np.zeros((2, BLOCK), np.float32)
    flat = np.full(NOISE_BANDS, 0.01, np.float32)
    noise = np.concatenate([synth._noise(flat, mix.copy()) for _ in range(400)], axis=1)[:, BLOCK:].ravel()
    assert float(noise.std()) == pytest.approx(0.01, rel=0.03)
    excess_kurtosis = float(np.mean(noise**4) / np.mean(noise**2) ** 2 - 3.0)
    assert abs(excess_kurtosis) < 0.1  # Gaussian: 0 (+-0.015 at this length); uniform samples would be -1.2
    high = np.where(np.arange(NOISE_BANDS) > 40, 0.01, 0.0).astype(np.float32)  # above ~15 kHz only
    shaped = np.concatenate([synth._noise(high, mix.copy()) for _ in range(400)], axis=1)[0, 2 * BLOCK:]
    freqs = np.fft.rfftfreq(len(shaped), 1 / RATE)
    power = np.abs(np.fft.rfft(shaped * np.hanning(len(shaped)))) ** 2
    assert power[freqs < 12000].sum() < 1e-3 * power[freqs > 15000].sum()


def test_no_breath_means_no_noise_path(decoder) -> None:
    """At breath -1 the decoder's noise (its floor) is under the gate even for 16 voices at full loudness, so the
    noise path is skipped: two synths with different random seeds play the same samples."""
    f0 = np.array([30.0, 110.0, 440.0, 1760.0, 8000.0], np.float32)[:, None]
    for timbre in (PURE, [1.0, 1.0, 1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]):
        feeds = {"f0_hz": f0, "loudness": np.ones_like(f0), "timbre": np.tile(np.float32(timbre), (len(f0), 1))}
        assert decoder.run(None, feeds)[1].max() * np.sqrt(16) <= NOISE_GATE  # measured: 8.2e-5
    played = []
    for seed in (1, 2):
        synth = Synth(decoder, RATE, BLOCK, seed=seed)
        synth.note_on(60, 1.0)
        played.append((play(synth, 0.1), play(synth, 0.1, timbre=[0, 0, 0, 0])))
    np.testing.assert_array_equal(played[0][0], played[1][0])
    assert np.abs(played[0][1] - played[1][1]).max() > 1e-3  # with breath the seeds differ


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


def test_going_back_renders_the_same_blocks_again(decoder) -> None:
    """The render process renders ahead and, when a note arrives for a block it already rendered, goes back
    (restore) and renders from there again: the same notes then give the same samples, also where a note stole a
    voice and replaced its table in between (breath off: the noise's draws are new each time)."""
    synth = Synth(decoder, RATE, BLOCK, voices=2)
    synth.note_on(60, 0.8)
    synth.note_on(64, 0.7)
    play(synth, 0.02)
    synth.note_off(60)
    state = synth.save()

    def ahead(notes: dict[int, tuple[int, float, int]]) -> np.ndarray:
        blocks = []
        for b in range(8):
            if b in notes:
                synth.note_on(*notes[b])
            blocks.append(synth.render(0.5, PURE))
        return np.concatenate(blocks)

    stealing = {1: (67, 0.9, 40), 4: (72, 0.6, 5)}  # the released voice is stolen, then the held one
    first = ahead(stealing)
    assert synth.note == [67, 72]
    synth.restore(state)
    assert synth.note == [60, 64]
    plain = ahead({})  # going back to before the notes: the old voices play on, their tables made again
    np.testing.assert_array_equal(plain[:BLOCK], first[:BLOCK])
    assert np.abs(plain[2 * BLOCK:] - first[2 * BLOCK:]).max() > 0.01
    synth.restore(state)
    np.testing.assert_array_equal(ahead(stealing), first)
    synth.restore(state)
    np.testing.assert_array_equal(ahead({}), plain)
