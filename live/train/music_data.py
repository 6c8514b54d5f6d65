"""The melodies `live train music` learns from: music21's bundled corpus, or a folder of the user's MIDI files.

music21 (PyPI, BSD-3-Clause) ships its corpus inside the wheel, so nothing is downloaded. What its licence files
say (music21 10.5.1: corpus/license.txt and corpus/essenFolksong/license.txt): the encodings are distributed with
the encoders' permission, the music is believed to be in the public domain, and some encodings may restrict
commercial use. The Essen folk songs are the one collection that says so outright (permission "for non-commercial
distribution and use ... in music21"), so they are left out unless asked for. The default collections are works
published between 1782 and 1903 (Bach's chorales, Aird's Airs, Ryan's Mammoth Collection, O'Neill's Music of
Ireland).

A piece becomes one token line (live/music/tokens.py): its top line (a chorale's soprano part, a tune's melody;
the highest note of a chord), starting on a bar line, on the sixteenth grid. The grid's bar is 4/4, so only pieces in
4/4, 2/2 or 2/4 are kept (two 2/4 bars make one grid bar); pickups end on the bar line they lead to, and a bar cut
short before a repeat starts on its own bar line. Pieces with triplets on more than 5 % of their notes are left
out; the rest are rounded to the grid.

Parsing with music21 takes about 60 ms a tune, minutes for the corpus, so the tokens are cached under
~/.cache/live/music/ (XDG_CACHE_HOME), keyed by the music21 version, the collections, the limit and the grid.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from live.errors import LiveError
from live.music import tokens as tk

MUSIC21_VERSION = "10.5.1"  # the corpus is part of the package: another version is another corpus
INSTALL = f"install it: .venv/bin/pip install --no-deps music21=={MUSIC21_VERSION} (make test does)"
#: The collections inside music21's corpus folder, and what each is.
COLLECTIONS = {
    "bach": "J. S. Bach, the four-part chorales (soprano line)",
    "airdsAirs": "James Aird, A Selection of Scotch, English, Irish and Foreign Airs (1782-1803)",
    "ryansMammoth": "Ryan's Mammoth Collection (1883)",
    "oneills1850": "Francis O'Neill, The Music of Ireland: 1850 Melodies (1903)",
    "essenFolksong": "the Essen folk-song collection (licence: non-commercial use only)",
}
DEFAULT_COLLECTIONS = ("bach", "airdsAirs", "ryansMammoth", "oneills1850")
METERS = {"4/4", "2/2", "2/4"}  # bars the 4/4 grid can hold
OFF_GRID = 0.05  # the share of notes allowed off the sixteenth grid (rounded); more: the piece is left out
MIN_NOTES = 8
HELD_OUT = 0.1  # the share of pieces held out (by a hash of the piece's name: the same piece, whatever the run)
CACHE_FORMAT = 2
MIDI_SUFFIXES = (".mid", ".midi")


@dataclass(frozen=True)
class Piece:
    """One melody: `tokens` start on a bar line."""

    name: str  # where it came from: "collection/file#tune" or the MIDI file's path in its folder
    title: str
    tokens: np.ndarray  # int64

    @property
    def held_out(self) -> bool:
        return zlib.crc32(self.name.encode()) % 1000 < HELD_OUT * 1000


@dataclass
class Corpus:
    pieces: list[Piece]
    source: dict[str, Any]  # for the manifest's provenance: where the pieces came from, what was left out
    skipped: dict[str, int] = field(default_factory=dict)

    def split(self) -> tuple[list[Piece], list[Piece]]:
        """(training, held out), split by piece. With few pieces, at least one is held out and one trained on."""
        train = [p for p in self.pieces if not p.held_out]
        held = [p for p in self.pieces if p.held_out]
        if len(self.pieces) >= 2 and (not held or not train):
            ranked = sorted(self.pieces, key=lambda p: zlib.crc32(p.name.encode()))
            held, train = ranked[:1], ranked[1:]
        return train, held


def transpose(tokens: np.ndarray, semitones: int | np.ndarray) -> np.ndarray:
    """The same line(s) `semitones` higher (lower if negative; an array broadcasts, e.g. [B, 1] for one shift a
    row); pitches leaving LOW..HIGH move an octave back in."""
    pitch = tokens - tk.FIRST_PITCH + tk.LOW + np.asarray(semitones)
    pitch = np.where(pitch < tk.LOW, pitch + 12, np.where(pitch > tk.HIGH, pitch - 12, pitch))
    return np.where(tokens >= tk.FIRST_PITCH, pitch - tk.LOW + tk.FIRST_PITCH, tokens)


def music21_module():
    """music21, imported quietly (it warns on stderr that matplotlib, needed only for its plots, is missing)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import music21
    except ModuleNotFoundError as err:
        raise LiveError(f"the music corpus needs music21 {MUSIC21_VERSION}, which is not installed ({err.name} "
                        "is missing)", INSTALL) from None
    if music21.__version__ != MUSIC21_VERSION:
        raise LiveError(f"music21 {music21.__version__} is installed; the corpus is read from {MUSIC21_VERSION}",
                        INSTALL)
    return music21


def corpus_root() -> Path:
    return Path(music21_module().__file__).parent / "corpus"


# --- reading one score ----------------------------------------------------------------------------------------

def _placed_measures(measures: list, bar: float) -> list[float]:
    """Where each measure starts (quarter notes from the first bar line): full bars on bar lines, a pickup
    (first measure, left padding, or after a bar cut short) ending on the next bar line, a short bar before a
    repeat starting on one."""
    starts: list[float] = []
    cursor, after_short = 0.0, False
    eps = 1e-6
    for i, measure in enumerate(measures):
        length = float(measure.duration.quarterLength)
        phase = cursor % bar
        if length >= bar - eps:
            cursor += (bar - phase) if phase > eps else 0.0
            starts.append(cursor)
            cursor += length
            after_short = False
        elif i == 0 or float(measure.paddingLeft or 0) > eps or after_short:
            room = bar - phase if phase > eps else bar
            start = cursor + room - length if room >= length - eps else cursor + room + bar - length
            starts.append(start)
            cursor = start + length
            after_short = False
        else:
            cursor += (bar - phase) if phase > eps else 0.0
            starts.append(cursor)
            cursor += length
            after_short = True
    return starts


def score_tokens(score, soprano: bool) -> tuple[np.ndarray | None, str]:
    """The token line of a music21 score's soprano part (`soprano`) or of its first part, or (None, why it is left
    out)."""
    from music21 import chord, harmony, meter, note, stream

    parts = list(score.parts) if isinstance(score, stream.Score) else [score]
    if soprano:  # a chorale's score may open with a horn or cornet doubling it: the part named Soprano
        parts = [p for p in parts if "soprano" in f"{p.partName} {p.id}".lower()]
    if not parts:
        return None, "no soprano part" if soprano else "no parts"
    written = list(parts[0].getElementsByClass(stream.Measure))  # bar lengths as written (tied notes end there)
    part = parts[0].stripTies(inPlace=False)
    signatures = list(part.recurse().getElementsByClass(meter.TimeSignature))
    if not signatures:
        return None, "no meter"
    first = signatures[0].ratioString
    # ABC's partial bars come with odd signatures (1/32, 1/8): only a real other meter rules a piece out
    others = {s.ratioString for s in signatures if s.numerator > 1 and s.denominator <= 8}
    if first not in METERS or not others <= METERS:
        return None, f"meter {first if first not in METERS else sorted(others - METERS)[0]}"
    bar = float(signatures[0].barDuration.quarterLength)
    measures = list(part.getElementsByClass(stream.Measure))
    if not measures or len(measures) != len(written):
        return None, "no bars"
    notes: list[tk.Note] = []
    off_grid = 0
    end = 0.0
    for start, measure, as_written in zip(_placed_measures(written, bar), measures, written):
        end = max(end, start + float(as_written.duration.quarterLength))
        for n in measure.recurse().notes:
            if isinstance(n, harmony.Harmony) or n.duration.isGrace or not isinstance(n, (note.Note, chord.Chord)):
                continue
            onset = (start + float(n.getOffsetInHierarchy(measure))) * tk.STEPS_PER_BEAT
            length = float(n.duration.quarterLength) * tk.STEPS_PER_BEAT
            off_grid += abs(onset - round(onset)) > 1e-6
            pitch = max(p.midi for p in n.pitches) if isinstance(n, chord.Chord) else n.pitch.midi
            notes.append(tk.Note(round(onset), max(1, round(length)), int(pitch)))
    if len(notes) < MIN_NOTES:
        return None, "too few notes"
    if off_grid > OFF_GRID * len(notes):
        return None, "off the sixteenth grid (triplets)"
    steps = math.ceil(max(end * tk.STEPS_PER_BEAT, max(n.start + n.steps for n in notes)) / tk.BAR_STEPS)
    return tk.encode(notes, steps * tk.BAR_STEPS), ""


def _title(score, fallback: str) -> str:
    title = score.metadata.title if score.metadata is not None else None
    return str(title).strip() if title else fallback


def _read_unit(unit: tuple[str, str, str | None]) -> tuple[str, str, np.ndarray | None, str]:
    """(name, title, tokens or None, why not) for one unit: a score file, or one ABC tune's text. Runs in a
    worker process."""
    name, path, text = unit
    music21 = music21_module()
    chorale = name.startswith("bach/")
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            score = (music21.converter.parse(text, format="abc") if text is not None
                     else music21.converter.parse(path, forceSource=True))  # no pickled copy in a scratch folder
            if isinstance(score, music21.stream.Opus):
                score = score.scores[0]
            tokens, why = score_tokens(score, soprano=chorale)
    except Exception as err:  # music21 raises many types on a malformed encoding; the piece is only left out
        return name, name, None, f"unreadable ({type(err).__name__})"
    return name, _title(score, Path(path).stem), tokens, why


def abc_tunes(path: Path) -> list[str]:
    """The tunes of an ABC file, each with the file's header (the lines before the first X: field)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    starts = [m.start() for m in re.finditer(r"^X:", text, flags=re.MULTILINE)]
    if not starts:
        return [text]
    header = text[:starts[0]]
    return [header + text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def _units(collections: tuple[str, ...], limit: int | None) -> list[tuple[str, str, str | None]]:
    """The pieces to read: (name, file path, ABC text or None), at most `limit` per collection, in file order."""
    root = corpus_root()
    units: list[tuple[str, str, str | None]] = []
    for collection in collections:
        folder = root / collection
        found: list[tuple[str, str, str | None]] = []
        for path in sorted(folder.iterdir()):
            if limit is not None and len(found) >= limit:
                break
            if path.suffix == ".abc":
                found += [(f"{collection}/{path.name}#{i + 1}", str(path), tune)
                          for i, tune in enumerate(abc_tunes(path))]
            elif path.suffix in (".mxl", ".xml", ".musicxml", ".krn"):
                found.append((f"{collection}/{path.name}", str(path), None))
        units += found[:limit]
    return units


# --- the corpus ------------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "live" / "music"


def music21_corpus(collections: tuple[str, ...] = DEFAULT_COLLECTIONS, limit: int | None = None,
                   cache: Path | None = None, workers: int = 2, say: Callable[[str], None] = print) -> Corpus:
    """The melodies of music21's corpus `collections` (at most `limit` tunes or files each), from the cache when
    there. `workers` processes parse in parallel."""
    unknown = [c for c in collections if c not in COLLECTIONS]
    if unknown:
        raise LiveError(f"unknown music21 collection(s): {', '.join(unknown)}",
                        f"choose from {', '.join(COLLECTIONS)}")
    music21_module()
    recipe = {"music21": MUSIC21_VERSION, "collections": list(collections), "limit": limit, "format": CACHE_FORMAT,
              "grid": [tk.STEPS_PER_BEAT, tk.BAR_STEPS, tk.LOW, tk.HIGH], "meters": sorted(METERS),
              "off_grid": OFF_GRID, "min_notes": MIN_NOTES}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    path = (cache or cache_dir()) / f"corpus-{key}.npz"
    if path.is_file():
        return _load(path)
    started = time.perf_counter()
    units = _units(collections, limit)
    say(f"parsing {len(units)} scores and tunes from music21 {MUSIC21_VERSION}'s corpus "
        f"({', '.join(collections)}) with {workers} processes; cached in {path.parent}")
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            read = list(pool.map(_read_unit, units, chunksize=8))
    else:
        read = [_read_unit(unit) for unit in units]
    pieces, skipped, seen = [], {}, set()
    for name, title, tokens, why in read:
        if tokens is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        first = tokens[tokens >= tk.FIRST_PITCH][0]
        digest = hashlib.sha1(transpose(tokens, tk.pitch_token(60) - first).astype(np.int8).tobytes()).digest()
        if digest in seen:  # the same tune in two collections (in any key) would leak across the split
            skipped["duplicate"] = skipped.get("duplicate", 0) + 1
            continue
        seen.add(digest)
        pieces.append(Piece(name, title, tokens))
    seconds = time.perf_counter() - started
    source = {"corpus": f"music21 {MUSIC21_VERSION} (bundled corpus)", "collections": list(collections),
              "limit": limit, "read": len(units), "kept": len(pieces), "skipped": skipped,
              "parse_seconds": round(seconds, 1)}
    if not pieces:
        raise LiveError(f"no usable melodies in music21's {', '.join(collections)} ({len(units)} read: {skipped})",
                        "choose other collections (--collections) or a larger --limit")
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, Corpus(pieces, source, skipped))
    say(f"{len(pieces)} melodies kept of {len(units)} in {seconds:.0f} s; left out: {skipped}")
    return Corpus(pieces, source, skipped)


def _save(path: Path, corpus: Corpus) -> None:
    lengths = np.array([len(p.tokens) for p in corpus.pieces], np.int64)
    meta = json.dumps({"names": [p.name for p in corpus.pieces], "titles": [p.title for p in corpus.pieces],
                       "source": corpus.source, "skipped": corpus.skipped})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.npz")
    np.savez_compressed(tmp, tokens=np.concatenate([p.tokens for p in corpus.pieces]).astype(np.int8),
                        lengths=lengths, meta=np.array(meta))
    os.replace(tmp, path)


def _load(path: Path) -> Corpus:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        lines = np.split(data["tokens"].astype(np.int64), np.cumsum(data["lengths"])[:-1])
    pieces = [Piece(n, t, line) for n, t, line in zip(meta["names"], meta["titles"], lines)]
    return Corpus(pieces, {**meta["source"], "cache": path.name}, meta["skipped"])


def midi_corpus(folder: Path) -> Corpus:
    """The top line of every MIDI file under `folder` (drums left out), read on the grid from the file's beat
    (ticks per beat) with bar lines every four beats from its start. LiveError naming the folder or the file if
    there is nothing to learn or a file cannot be read."""
    import mido

    folder = Path(folder)
    if not folder.is_dir():
        raise LiveError(f"MIDI folder not found: {folder}", "pass --midi a folder of .mid files")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    if not paths:
        raise LiveError(f"no MIDI files (.mid, .midi) in {folder}",
                        "put some standard MIDI files of melodies there, or leave out --midi to use music21's corpus")
    pieces, skipped = [], {}
    for path in paths:
        try:
            midi = mido.MidiFile(str(path))
            notes = _midi_notes(midi)
        except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as err:
            raise LiveError(f"{path} is not a readable MIDI file ({type(err).__name__}: {str(err)[:120]})",
                            f"remove it from {folder} or export it again as a standard MIDI file") from None
        if len(notes) < MIN_NOTES:
            skipped["too few notes"] = skipped.get("too few notes", 0) + 1
            continue
        steps = math.ceil(max(n.start + n.steps for n in notes) / tk.BAR_STEPS) * tk.BAR_STEPS
        pieces.append(Piece(str(path.relative_to(folder)), path.stem, tk.encode(notes, steps)))
    if not pieces:
        raise LiveError(f"no melodies in {folder}: each of its {len(paths)} MIDI file(s) has fewer than "
                        f"{MIN_NOTES} notes", "add MIDI files with whole melodies (at least a few bars each)")
    source = {"corpus": "MIDI folder", "folder": str(folder), "read": len(paths), "kept": len(pieces),
              "skipped": skipped}
    return Corpus(pieces, source, skipped)


def _midi_notes(midi) -> list[tk.Note]:
    """Every pitched note of a mido MidiFile on the grid (steps from the file's ticks per beat)."""
    if midi.ticks_per_beat <= 0:
        raise ValueError("ticks per beat is not positive")
    per_step = midi.ticks_per_beat / tk.STEPS_PER_BEAT
    notes: list[tk.Note] = []
    for track in midi.tracks:
        tick, sounding = 0, {}
        for message in track:
            tick += message.time
            if message.type not in ("note_on", "note_off") or message.channel == 9:  # channel 10: drums
                continue
            key = (message.channel, message.note)
            if message.type == "note_on" and message.velocity > 0:
                sounding.setdefault(key, tick)
            elif key in sounding:
                start = sounding.pop(key)
                notes.append(tk.Note(round(start / per_step), max(1, round((tick - start) / per_step)), message.note))
    return notes
