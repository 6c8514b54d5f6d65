"""The live music modes accompany and morph, planned beat by beat as the music player calls them (once a beat, with
what the performer played so far). Morph runs the shipped bar VAE on ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_music_vae import music_vae, onnx_argmax, presets  # noqa: F401 (a fixture)

from live.errors import LiveError
from live.music.accompany import BASS_HIGH, Accompany
from live.music.modes import Controls, Heard
from live.music.morph import LOOP_STEPS, Morph
from live.music.tokens import BAR_STEPS, STEPS_PER_BEAT, Key, Note, decode, encode, in_key, key_of

C_MAJOR = Key(0, False)
# A C major phrase outlining C, F, G, C, one bar each, in quarters; its lowest note in the G bar is D4 (62).
PHRASE = [Note(BAR_STEPS * bar + STEPS_PER_BEAT * i, STEPS_PER_BEAT, pitch)
          for bar, pitches in enumerate([(60, 64, 67, 64), (65, 69, 72, 69), (62, 67, 71, 67), (64, 67, 72, 67)])
          for i, pitch in enumerate(pitches)]


def heard_at(step: int, notes: list[Note] = PHRASE) -> Heard:
    """What the player hears just before `step`: the notes begun by then, a held note cut at `step`."""
    played = tuple(Note(n.start, min(n.steps, step - n.start), n.pitch) for n in notes if n.start < step)
    last_off = max((n.start + n.steps for n in played), default=None)
    return Heard(played, step - 0.1, bool(played) and last_off == step, last_off, key_of(played))


def play(mode: Accompany, beats: range, controls: Controls) -> list[Note]:
    """Plan beat after beat as the music player does; every planned note, checked to start inside its window."""
    planned = []
    for beat in beats:
        start = beat * STEPS_PER_BEAT
        window = mode.plan(heard_at(start), start, STEPS_PER_BEAT, controls)
        assert all(isinstance(n.start, int) and start <= n.start < start + STEPS_PER_BEAT for n in window)
        planned += window
    return planned


def at(notes: list[Note], step: int) -> list[int]:
    return sorted(n.pitch for n in notes if n.start == step)


def test_accompany_follows_the_harmony_in_key_under_the_line() -> None:
    planned = play(Accompany(), range(1, 5 * 4), Controls(density=0.0))  # one chord a bar, heard key
    assert {n.pitch % 12 for n in planned} <= C_MAJOR.scale()
    # Each bar's chord is the harmony the bar before outlined: C, F, G, C; the bass (lowest) on the root.
    for bar, root, triad in ((1, 0, {0, 4, 7}), (2, 5, {5, 9, 0}), (3, 7, {7, 11, 2}), (4, 0, {0, 4, 7})):
        bass, *chord = at(planned, bar * BAR_STEPS)
        assert bass % 12 == root and bass <= BASS_HIGH, (bar, bass)
        assert {p % 12 for p in chord} == triad, (bar, chord)
        assert max(chord) < min(n.pitch for n in PHRASE[4 * (bar - 1):4 * bar]), (bar, chord)  # under the line
        assert all(p > bass for p in chord)
    # Nothing starts off the bar line at density 0; nothing is played before the performer plays.
    assert all(n.start % BAR_STEPS == 0 for n in planned)
    assert Accompany().plan(heard_at(0), 0, STEPS_PER_BEAT, Controls()) == []


def test_accompany_density_sets_the_rhythm_and_windows_are_kept() -> None:
    counts = []
    for density in (0.0, 0.5, 1.0):
        planned = play(Accompany(), range(4, 4 * 4), Controls(density=density))
        counts.append(len(planned))
        hits = {n.start % BAR_STEPS for n in planned}
        assert hits == ({0} if density == 0 else {0, 8} if density == 0.5 else {0, 4, 8, 12}), density
    assert counts[0] < counts[1] < counts[2], counts
    # A window that is not a beat: only the notes starting inside it, and none twice.
    mode, controls = Accompany(), Controls(density=1.0)
    odd = mode.plan(heard_at(30), 30, 3, controls) + mode.plan(heard_at(33), 33, 5, controls)
    assert sorted({n.start for n in odd}) == [32, 36] and len(odd) == len(set(odd))


def loop_of(mode: Morph, loop: int, controls: Controls | list[Controls], heard: Heard | None = None) -> list[Note]:
    """The notes morph plans for the loop `loop`, beat by beat, steps counted from the loop's start."""
    heard = heard or Heard((), 0.0, False, None, C_MAJOR)
    beats = LOOP_STEPS // STEPS_PER_BEAT
    planned = []
    for beat in range(beats):
        start = loop * LOOP_STEPS + beat * STEPS_PER_BEAT
        window = mode.plan(heard, start, STEPS_PER_BEAT, controls[beat] if isinstance(controls, list) else controls)
        assert all(start <= n.start < start + STEPS_PER_BEAT for n in window)
        planned += [n._replace(start=n.start - loop * LOOP_STEPS) for n in window]
    return planned


def shape(notes: list[Note]) -> list[tuple[int, int, int]]:
    """Onsets, lengths and pitch classes: what a melody is, whatever octave the register put it in."""
    return [(n.start, n.steps, n.pitch % 12) for n in notes]


def test_morph_fader_moves_between_the_melodies_at_loop_starts(music_vae) -> None:  # noqa: F811
    encoder, decoder = music_vae
    mode = Morph(encoder, decoder)
    a, b = presets()
    assert np.array_equal(mode.melodies["a"], a) and np.array_equal(mode.melodies["b"], b)
    free = Controls(key_lock=False)
    reconstruction = {name: shape(decode(onnx_argmax(encoder, decoder, tokens))) for name, tokens in
                      (("a", a), ("b", b))}
    # The fader goes to 1 on the fourth beat: the loop playing stays A to its end; the next loop is B.
    first = loop_of(mode, 0, [free] * 3 + [Controls(key_lock=False, morph=1.0)] * 5)
    assert shape(first) == reconstruction["a"]
    assert shape(loop_of(mode, 1, Controls(key_lock=False, morph=1.0))) == reconstruction["b"]
    middle = shape(loop_of(mode, 2, Controls(key_lock=False, morph=0.5)))
    assert middle and middle != reconstruction["a"] and middle != reconstruction["b"]
    assert mode.decodes == 3  # once a loop, and only when the fader moved
    loop_of(mode, 3, Controls(key_lock=False, morph=0.5))
    assert mode.decodes == 3
    # Register: the same melody an octave or more lower or higher, by octaves.
    low, high = (loop_of(mode, 4 + i, Controls(key_lock=False, morph=0.5, register=r)) for i, r in enumerate((48, 84)))
    assert shape(low) == shape(high) == middle
    assert np.mean([n.pitch for n in high]) - np.mean([n.pitch for n in low]) >= 24


def test_morph_key_lock_and_store(music_vae) -> None:  # noqa: F811
    encoder, decoder = music_vae
    mode = Morph(encoder, decoder)
    a, b = presets()
    theirs = key_of(decode(a) + decode(b))
    far = Key((theirs.tonic + 6) % 12, False)  # a key a tritone away shares few notes with the melodies'
    free = loop_of(mode, 0, Controls(key=far, key_lock=False, morph=0.5))
    locked = loop_of(mode, 1, Controls(key=far, key_lock=True, morph=0.5))
    assert in_key(free, far) < 0.9 and locked and in_key(locked, far) == 1.0
    # Without a key set or a performer, the lock follows the key of A and B.
    assert in_key(loop_of(mode, 2, Controls(morph=0.5)), theirs) == 1.0
    # Store two bars the performer played (steps 64..96) as A: heard from the next loop start on.
    played = [Note(64 + 6 * i, 3, pitch) for i, pitch in enumerate((72, 67, 64, 60, 64, 67))]
    before = loop_of(mode, 3, Controls(key_lock=False))
    mode.store("a", played, 64)
    assert np.array_equal(mode.melodies["a"], encode(played, LOOP_STEPS, 64))
    assert shape(mode.plan(Heard((), 0.0, False, None, C_MAJOR), 3 * LOOP_STEPS + 4, 28, Controls(key_lock=False))) \
        == shape([n._replace(start=n.start + 3 * LOOP_STEPS) for n in before if n.start >= 4])
    stored = shape(loop_of(mode, 4, Controls(key_lock=False)))
    assert stored == shape(decode(onnx_argmax(encoder, decoder, mode.melodies["a"]))) and stored != shape(before)
    with pytest.raises(LiveError, match="'a' or 'b'"):
        mode.store("c", played, 64)
    with pytest.raises(LiveError, match="nothing to store"):
        mode.store("b", played, 0)
    with pytest.raises(LiveError, match="music-decoder model, not a music-encoder"):
        Morph(decoder, decoder)


def test_chord_prior_labels_four_voice_beats() -> None:
    """The labeller the transition prior was measured with (live/train/chord_prior.py) on a four-voice I IV V I
    cadence in C, and a beat of passing notes that fits no chord."""
    from live.train.chord_prior import beat_chords

    voicings = [(48, 64, 67, 72), (53, 65, 69, 72), (55, 62, 67, 71), (48, 64, 67, 72), (49, 51, 54, 56)]
    notes = [Note(STEPS_PER_BEAT * beat, STEPS_PER_BEAT, p) for beat, chord in enumerate(voicings) for p in chord]
    assert beat_chords(notes) == [(C_MAJOR, 0), (C_MAJOR, 3), (C_MAJOR, 4), (C_MAJOR, 0), None]
