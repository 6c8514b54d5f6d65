"""`live train synth`: the corpus, YIN, the DSP twin, a few real training steps and a real export (no long runs)."""

from __future__ import annotations

import hashlib
import json
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from live.audio.synth import HARMONICS, LEVEL, NOISE_BANDS, Synth, midi_hz
from live.errors import LiveError
from live.models.manifest import load_manifest
from live.train import ddsp
from live.train.synth import Config, Data, Decoder, Folded, main, pinned, train, voices
from live.train.synth_data import BLOCK, FAMILIES, RATE, VOICED, _pluck, corpus, corpus_note, yin

SHIPPED = Path(__file__).resolve().parent.parent / "exported_models" / "synth-ddsp.json"


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def write_wav(path: Path, signal: np.ndarray, rate: int = RATE, channels: int = 1) -> None:
    pcm = np.clip(signal * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm, channels).tobytes())


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def pitched_median(audio: np.ndarray, loudness: np.ndarray) -> float:
    f0, aperiodicity = yin(audio)
    voiced = (aperiodicity < VOICED) & (loudness > 0.1)
    assert voiced.sum() > 10
    return float(np.median(f0[voiced]))


# --- data ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("index", [i for i in range(12) if FAMILIES[i % len(FAMILIES)] != "bell"])
def test_corpus_notes_have_the_pitch_they_claim(index: int) -> None:
    """Bells are left out: their partials are inharmonic, so their 'pitch' is a label, not a period."""
    note = corpus_note(7, index)
    assert len(note.audio) == len(note.f0) * BLOCK == len(note.loudness) * BLOCK
    assert pitched_median(note.audio, note.loudness) == pytest.approx(float(np.median(note.f0)), rel=0.01)


def test_corpus_is_deterministic_and_levelled() -> None:
    first, again = corpus(3, 6), corpus(3, 6)
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(first, again))
    assert [n.label for n in first] == list(FAMILIES)
    assert all(0.25 <= n.loudness.max() <= 1.0 for n in first)


@pytest.mark.parametrize("hz", [65.4, 220.0, 1046.5])
def test_yin_on_a_sine(hz: float) -> None:
    sine = 0.5 * np.sin(2 * np.pi * hz * np.arange(RATE // 2) / RATE)
    f0, aperiodicity = yin(sine)
    middle = slice(20, -20)
    assert np.allclose(f0[middle], hz, rtol=0.002) and (aperiodicity[middle] < 0.05).all()


@pytest.mark.parametrize("hz", [82.4, 659.3])
def test_yin_on_a_plucked_string(hz: float) -> None:
    audio, _ = _pluck(np.random.default_rng(0), hz, RATE // 2)
    f0, aperiodicity = yin(audio)
    assert np.median(f0[10:60]) == pytest.approx(hz, rel=0.01)


def test_yin_hears_no_pitch_in_noise_or_silence() -> None:
    assert (yin(np.random.default_rng(0).standard_normal(RATE // 4))[1] > VOICED).mean() > 0.9
    assert (yin(np.zeros(RATE // 4))[1] == 1.0).all()


# --- the DSP twin and training ---------------------------------------------------------------------------------

class FixedDecoder:
    """Stands in for an ONNX session: the same harmonics for every voice, no noise."""

    def __init__(self, harmonics: np.ndarray, amplitude: float) -> None:
        self.outputs = [harmonics[None].astype(np.float32), np.zeros((1, NOISE_BANDS), np.float32),
                        np.array([[amplitude]], np.float32)]

    def run(self, names, feeds):
        return self.outputs


def test_ddsp_harmonic_matches_the_synth() -> None:
    harmonics = np.exp(-0.3 * np.arange(HARMONICS))
    harmonics /= harmonics.sum()
    synth = Synth(FixedDecoder(harmonics, 0.4), voices=1)
    synth.note_on(60, 1.0)
    blocks = 6
    left = np.concatenate([synth.render(0.25, np.zeros(4, np.float32))[:, 0] for _ in range(blocks)])
    pan = float(synth._pan[0, 0])
    f0 = torch.full((1, blocks + 1), midi_hz(60))
    amps = torch.from_numpy(np.vstack([np.zeros(HARMONICS), np.tile(harmonics * 0.4, (blocks, 1))]))[None].float()
    twin = ddsp.harmonic(f0, amps, RATE, BLOCK)[0].numpy() * pan * 0.25 * LEVEL
    assert np.allclose(left[BLOCK:], twin[BLOCK:], atol=2e-4)  # block 0 differs: the synth's gain ramps from 0


def test_ddsp_noise_has_the_level_of_its_bands() -> None:
    gains = torch.full((4, 201, NOISE_BANDS), 0.01)
    out = ddsp.noise(gains, BLOCK, torch.Generator().manual_seed(0))
    assert out.shape == (4, 200 * BLOCK)
    assert float(out.std()) == pytest.approx(0.01, rel=0.05)  # flat gain g: noise of RMS g
    synth = Synth(FixedDecoder(np.ones(HARMONICS) / HARMONICS, 0.0))
    gains = np.full(NOISE_BANDS, 0.01, np.float32)
    played = np.concatenate([synth._noise(gains, np.zeros((2, BLOCK), np.float32)) for _ in range(200)], axis=1)
    assert float(played[:, BLOCK:].std()) == pytest.approx(0.01, rel=0.05)  # and so does the synth


def test_a_few_steps_lower_the_loss() -> None:
    data = Data.of(corpus(5, 6))
    result = train(data, Config(steps=30, batch=4, clip_frames=24, hidden=64, log_every=1000, threads=1),
                   log=lambda _: None)
    assert np.mean(result.losses[-10:]) < 0.85 * np.mean(result.losses[:10])
    assert np.isfinite(result.valid)


def test_the_exported_form_is_the_same_function() -> None:
    """Export folds the input normalisation and the latent span into the first layer (fewer ONNX nodes)."""
    torch.manual_seed(3)
    decoder = Decoder(32)
    with torch.no_grad():
        decoder.latent_scale.uniform_(0.3, 2.0)
        decoder.latent_shift.uniform_(-0.5, 0.5)
    inputs = voices(64, 4)
    inputs[0][:3] = torch.tensor([[5.0], [20000.0], [440.0]])  # clamped either side, and the reference pitch
    inputs[1][:2] = torch.tensor([[-0.5], [1.5]])
    with torch.no_grad():
        for a, b in zip(Folded(decoder)(*inputs), decoder(*inputs)):
            assert torch.allclose(a, b, atol=1e-6)


# --- the CLI on a WAV folder, the export and the contract ------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`live train synth --wav` on a sine (44.1 kHz stereo: resampled and mixed) and a pluck, exported."""
    folder = tmp_path_factory.mktemp("wavs")
    t = np.arange(int(44100 * 0.8)) / 44100
    write_wav(folder / "sine.wav", 0.4 * np.sin(2 * np.pi * 220.0 * t), rate=44100, channels=2)
    audio, _ = _pluck(np.random.default_rng(1), 330.0, RATE)
    write_wav(folder / "pluck.wav", 0.5 * audio / np.abs(audio).max())
    out = tmp_path_factory.mktemp("out")
    torch.manual_seed(0)
    assert main(["--wav", str(folder), "--steps", "3", "--threads", "1", "--out", str(out), "--export"]) == 0
    return out / "synth-ddsp.onnx"


def test_export_writes_a_loadable_model_and_nothing_else(exported: Path) -> None:
    assert sorted(p.name for p in exported.parent.iterdir()) == ["synth-ddsp.json", "synth-ddsp.onnx"]
    manifest = load_manifest(exported.with_suffix(".json"))
    assert manifest.kind == "synth-decoder"
    assert manifest.controls["harmonics"] == HARMONICS and manifest.controls["noise_bands"] == NOISE_BANDS
    assert manifest.controls["latent"] == 4 and len(manifest.controls["latent_names"]) == 4
    assert manifest.controls["control_rate_hz"] == 375
    assert manifest.provenance["parity_max_abs_diff_v3"] < 1e-4
    assert manifest.provenance["data"]["chunks"] >= 2


# --- reproducibility: the manifest's command rebuilds the same bytes ------------------------------------------------

def test_training_repeats_exactly_and_the_seed_matters() -> None:
    data = Data.of(corpus(5, 6))
    config = Config(steps=6, batch=2, clip_frames=24, hidden=32, log_every=1000, threads=1)
    first, again = (train(data, config, log=lambda _: None) for _ in range(2))
    other = train(data, replace(config, seed=1), log=lambda _: None)
    assert first.losses == again.losses and first.valid == again.valid
    for a, b in zip(first.decoder.state_dict().values(), again.decoder.state_dict().values()):
        assert torch.equal(a, b)
    assert other.losses != first.losses


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny `live train synth --export` twice (seed 0) and once with seed 1, each into its own folder."""
    made = {}
    for name, seed in (("first", 0), ("again", 0), ("other", 1)):
        out = tmp_path_factory.mktemp(name)
        torch.manual_seed(1234 + len(made))  # whatever the process did before must not matter
        assert main(["--notes", "6", "--steps", "3", "--seed", str(seed), "--threads", "1", "--out", str(out),
                     "--export"]) == 0
        made[name] = out / "synth-ddsp.onnx"
    return made


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_command_writes_the_same_bytes(runs: dict[str, Path]) -> None:
    assert sha256(runs["first"]) == sha256(runs["again"])
    manifests = [json.loads(runs[n].with_suffix(".json").read_text()) for n in ("first", "again")]
    assert manifests[0]["sha256"] == manifests[1]["sha256"] == sha256(runs["first"])
    for key in ("final_loss", "held_out_loss", "latent_axes", "threads", "data"):
        assert manifests[0]["provenance"][key] == manifests[1]["provenance"][key]
    assert "--threads 1 " in manifests[0]["provenance"]["command"]


def test_another_seed_writes_other_bytes(runs: dict[str, Path]) -> None:
    assert sha256(runs["other"]) != sha256(runs["first"])


def test_the_export_carries_no_source_paths(runs: dict[str, Path]) -> None:
    """The exporter's debugging metadata names this checkout's files and lines; a checkout elsewhere must write the
    same bytes, so none of it is kept."""
    data = runs["first"].read_bytes()
    assert b"synth.py" not in data and str(Path(__file__).parent.parent).encode() not in data


def test_the_command_always_names_its_threads() -> None:
    assert pinned(["--steps", "5"], 2) == ["--steps", "5", "--threads", "2"]
    assert pinned(["--threads", "1", "--export"], 2) == ["--threads", "1", "--export"]
    assert pinned(["--threads=3"], 2) == ["--threads=3"]


def test_the_shipped_command_pins_its_threads() -> None:
    if not SHIPPED.is_file():
        pytest.skip("no shipped synth-ddsp model")
    provenance = json.loads(SHIPPED.read_text())["provenance"]
    assert "--threads" in provenance["command"].split() and provenance["threads"] >= 1


def models() -> list[str]:
    return ["exported"] + (["shipped"] if SHIPPED.is_file() else [])


@pytest.fixture(params=models())
def model(request: pytest.FixtureRequest, exported: Path) -> Path:
    return exported if request.param == "exported" else SHIPPED.with_suffix(".onnx")


def test_the_contract_holds(model: Path) -> None:
    decoder = session(model)
    rng = np.random.default_rng(0)
    for voices in (1, 3, 8):
        feeds = {"f0_hz": rng.uniform(20, 14000, (voices, 1)).astype(np.float32),
                 "loudness": rng.uniform(0, 1, (voices, 1)).astype(np.float32),
                 "timbre": rng.uniform(-1, 1, (voices, 4)).astype(np.float32)}
        harmonics, noise, amplitude = decoder.run(["harmonics", "noise", "amplitude"], feeds)
        assert harmonics.shape == (voices, HARMONICS) and noise.shape == (voices, NOISE_BANDS)
        assert amplitude.shape == (voices, 1) and harmonics.dtype == np.float32
        assert np.allclose(harmonics.sum(axis=1), 1.0, atol=1e-5) and (harmonics >= 0).all()
        assert (noise >= 0).all() and (noise <= 1).all() and (amplitude >= 0).all() and (amplitude <= 1).all()
    silent = decoder.run(["noise", "amplitude"], {**feeds, "loudness": np.zeros((8, 1), np.float32)})
    assert not any(o.any() for o in silent)


@pytest.mark.parametrize("note", [45, 69])
def test_it_plays_a_tone_at_the_requested_pitch(model: Path, note: int) -> None:
    """The strongest partial of a trained timbre may be a formant-boosted harmonic, so: peak on a harmonic of the
    note (within 2%), and the period YIN hears is the note's."""
    synth = Synth(session(model), voices=4)
    synth.note_on(note, 0.8)
    timbre = np.zeros(4, np.float32)
    audio = np.concatenate([synth.render(0.5, timbre) for _ in range(int(0.6 * RATE / BLOCK))])[RATE // 10:, 0]
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    harmonic = np.fft.rfftfreq(len(audio), 1 / RATE)[np.argmax(spectrum)] / midi_hz(note)
    assert harmonic == pytest.approx(max(1, round(harmonic)), rel=0.02)
    f0, aperiodicity = yin(audio)
    assert np.median(f0[aperiodicity < VOICED]) == pytest.approx(midi_hz(note), rel=0.02)


def test_a_folder_of_noise_is_refused_by_name(tmp_path: Path) -> None:
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        write_wav(noise / name, 0.3 * rng.standard_normal(RATE // 2))
    with pytest.raises(LiveError, match="no pitched audio in .*noise"):
        main(["--wav", str(noise), "--steps", "1", "--threads", "1"])


def test_an_undecodable_wav_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(LiveError, match="broken.wav"):
        main(["--wav", str(tmp_path), "--steps", "1", "--threads", "1"])
