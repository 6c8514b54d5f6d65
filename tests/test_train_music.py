"""`live train music`: the corpus read from music21's own files, a tiny real training run and export, the shipped
music models against their contract, and a MIDI folder that cannot be used."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np
import pytest
import torch

from live.errors import LiveError
from live.models.manifest import load_manifest
from live.models.verify import verify
from live.music import tokens as tk
from live.train import music
from live.train.music_data import Corpus, Piece, midi_corpus, music21_corpus, music21_module, score_tokens, transpose

SHIPPED = Path(__file__).resolve().parent.parent / "exported_models"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def corpus(cache: Path) -> Corpus:
    """A few chorales and reels, parsed by music21 from the wheel's corpus in 2 processes."""
    return music21_corpus(("bach", "ryansMammoth"), limit=8, cache=cache, workers=2, say=lambda line: None)


def test_corpus_pieces_are_melodies_on_bar_lines(corpus: Corpus, cache: Path) -> None:
    assert len(corpus.pieces) >= 10 and corpus.source["read"] == 16
    train, held = corpus.split()
    assert held and train and not {p.name for p in held} & {p.name for p in train}
    for piece in corpus.pieces:
        assert len(piece.tokens) % tk.BAR_STEPS == 0 and piece.tokens.min() >= 0 and piece.tokens.max() < tk.VOCAB
        assert (piece.tokens >= tk.FIRST_PITCH).sum() >= 8
    chorale = next(p for p in corpus.pieces if p.name.startswith("bach/"))
    pitches = [n.pitch for n in tk.decode(chorale.tokens)]
    assert 59 <= min(pitches) and max(pitches) <= 81  # a soprano's range, not the bass's
    said: list[str] = []
    again = music21_corpus(("bach", "ryansMammoth"), limit=8, cache=cache, say=said.append)
    assert not said and again.source["cache"].startswith("corpus-")  # read back, not parsed again
    assert [p.name for p in again.pieces] == [p.name for p in corpus.pieces]
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(again.pieces, corpus.pieces))


def test_a_pickup_ends_on_the_bar_line_and_ties_hold() -> None:
    m21 = music21_module()
    score = m21.converter.parse("X:1\nT:t\nM:4/4\nL:1/4\nK:C\nG | c d e f- | f2 g a | b4 |]\n", format="abc")
    tokens, why = score_tokens(score, soprano=False)
    assert why == ""
    assert [(n.start, n.steps, n.pitch) for n in tk.decode(tokens)] == [
        (12, 4, 67), (16, 4, 72), (20, 4, 74), (24, 4, 76), (28, 12, 77), (40, 4, 79), (44, 4, 81), (48, 16, 83)]
    assert score_tokens(m21.converter.parse("X:1\nM:6/8\nL:1/8\nK:C\ncde fga|bag fed|c3 c3|c3 c3|]\n",
                                            format="abc"), soprano=False) == (None, "meter 6/8")


def test_transpose_moves_notes_only_and_stays_in_range() -> None:
    line = np.array([tk.REST, tk.HOLD, tk.pitch_token(60), tk.HOLD, tk.pitch_token(tk.HIGH), tk.pitch_token(tk.LOW)])
    up = transpose(line, 2)
    assert [tk.token_pitch(t) for t in up] == [None, None, 62, None, tk.HIGH + 2 - 12, tk.LOW + 2]
    rows = transpose(np.stack([line, line]), np.array([[-1], [1]]))
    assert [tk.token_pitch(t) for t in rows[0]][2] == 59 and [tk.token_pitch(t) for t in rows[1]][2] == 61


def test_tiny_training_run_beats_a_unigram_and_exports_the_contract(corpus: Corpus, tmp_path: Path) -> None:
    config = music.Config(steps=150, batch=16, window=48, hidden=64, layers=1, embed=32, transformer=False,
                          vae_steps=30, vae_batch=32, latent=4, orders=4, samples=2, sample_bars=2, log_every=1000,
                          threads=1)
    report = music.run(corpus, config, tmp_path, ["--test"], say=lambda line: None)
    nll = report["nll_nats_per_token"]
    assert all(np.isfinite(v) and v > 0 for v in nll.values())
    assert nll["gru"] < nll["1-gram"] - 0.05, nll
    assert report["exports"]["music-lm"]["stepwise_max_abs_diff"] < 1e-4
    manifests = {name: load_manifest(tmp_path / f"{name}.json") for name in ("music-lm", "music-vae-encoder",
                                                                             "music-vae-decoder")}
    assert [m.kind for m in manifests.values()] == ["music-sequence", "music-encoder", "music-decoder"]
    assert manifests["music-lm"].controls["state_shape"] == [1, 1, 64]
    assert "music21 10.5.1" in manifests["music-lm"].licence and "--test" in manifests["music-lm"].provenance["command"]
    assert all(not verify(tmp_path / f"{name}.json").problem for name in manifests)
    # the ONNX LM (what the player runs) agrees with torch, and primed all at once with itself step by step
    assert report["exports"]["music-lm"]["parity_max_abs_diff"] < 1e-4
    assert report["stats"]["generated_t1"]["melodies"] == 2
    assert 0 <= report["stats"]["pitch_class_distance"]["generated_vs_held_out"] <= 1
    assert report["vae"]["morph"]["points"] == music.MORPH_STEPS and 0 <= report["vae"]["token_accuracy"] <= 1


def test_the_transformer_scores_each_held_out_token_once(corpus: Corpus) -> None:
    torch.manual_seed(0)
    model = music.CausalTransformer(32, width=16, blocks=1, heads=2).eval()
    lm = music.MelodyLM(16, 1, 8).eval()
    pieces = corpus.pieces[:3]
    total, count = music.transformer_nll(model, pieces, 32)
    assert count == music.lm_nll(lm, pieces)[1] == sum(len(p.tokens) for p in pieces)
    assert np.isfinite(total) and abs(total / count - np.log(tk.VOCAB)) < 1.0  # untrained: near uniform


def write_midi(path: Path, notes: list[tuple[int, int, int]], ticks: int = 480) -> None:
    """(start step, steps, pitch) notes, one track."""
    events = sorted([(s * ticks // 4, 1, p) for s, _, p in notes] + [((s + n) * ticks // 4, 0, p) for s, n, p in notes])
    track, now = mido.MidiTrack(), 0
    for tick, on, pitch in events:
        track.append(mido.Message("note_on" if on else "note_off", note=pitch, velocity=90 if on else 0,
                                  time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=ticks)
    midi.tracks.append(track)
    midi.save(str(path))


def test_a_midi_folder_gives_its_top_line_and_bad_folders_say_what_to_do(tmp_path: Path) -> None:
    melody = [(i * 2, 2, 60 + (i % 5)) for i in range(12)]
    write_midi(tmp_path / "a.mid", melody + [(i * 2, 2, 48) for i in range(12)])  # a bass under it
    found = midi_corpus(tmp_path)
    assert [(n.start, n.steps, n.pitch) for n in tk.decode(found.pieces[0].tokens)] == melody

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LiveError, match="no MIDI files") as error:
        music.main(["--midi", str(empty)])
    assert str(empty) in error.value.what and error.value.fix
    (tmp_path / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01")
    with pytest.raises(LiveError, match="broken.mid is not a readable MIDI file") as error:
        midi_corpus(tmp_path)
    assert str(tmp_path) in error.value.fix


@pytest.mark.parametrize("name,kind", [("music-lm", "music-sequence"), ("music-vae-encoder", "music-encoder"),
                                       ("music-vae-decoder", "music-decoder")])
def test_shipped_music_models_keep_their_contract(name: str, kind: str) -> None:
    manifest = load_manifest(SHIPPED / f"{name}.json")  # checks the sha256
    assert manifest.kind == kind and not verify(SHIPPED / f"{name}.json").problem
    grid = {"vocab": tk.VOCAB, "low": tk.LOW, "high": tk.HIGH, "steps_per_beat": tk.STEPS_PER_BEAT,
            "bar_steps": tk.BAR_STEPS}
    assert {k: manifest.controls[k] for k in grid} == grid
    shapes = {t.name: (t.dtype, t.shape) for t in manifest.inputs + manifest.outputs}
    if kind == "music-sequence":
        state = manifest.controls["state_shape"]
        assert shapes == {"tokens": ("int64", [1, "T"]), "positions": ("int64", [1, "T"]), "state": ("float32", state),
                          "logits": ("float32", [1, "T", tk.VOCAB]), "state_out": ("float32", state)}
        assert music.stepwise_difference(music.onnx_session(manifest.onnx_path), tuple(state)) < 1e-4
    else:
        latent = manifest.controls["latent"]
        assert manifest.controls["bars"] == 2
        want = ({"tokens": ("int64", [1, 32]), "mu": ("float32", [1, latent])} if kind == "music-encoder" else
                {"z": ("float32", [1, latent]), "logits": ("float32", [1, 32, tk.VOCAB])})
        assert shapes == want
    if kind == "music-decoder":
        presets = manifest.controls["presets"]
        assert len(presets) >= 2 and all(len(p) == 32 and 0 <= min(p) and max(p) < tk.VOCAB for p in presets.values())
    report = json.loads((SHIPPED / "report" / "music.json").read_text())
    assert report["nll_nats_per_token"]["gru"] < report["nll_nats_per_token"]["4-gram"]
