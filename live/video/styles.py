"""Style banks: any picture becomes a style, as the 100-number vector a style-vector model (painterly-arbitrary) takes.

A bank is one JSON file (BANK_FORMAT): per style its name, vector, the pictures it was predicted from (path and
sha256), a small JPEG thumbnail and a note on where it came from. A model ships its own bank beside it
(exported_models/painterly-styles.json); a show keeps its own in its styles folder (`[styles] folder`, default
`styles/` beside the show file: `bank.json`, `thumbs/`, and pictures). `live styles add NAME PICTURE...` writes it;
while a show plays, `StyleFolder` turns a picture dropped into the folder, or the camera frame on OSC
`/video/style/grab`, into a new style: predicted on its own thread, never on the frame path.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from live.errors import LiveError
from live.models.manifest import atomic_write, load_manifest, sha256_of
from live.params import Event, ParamTree
from live.parts import BasePart

if TYPE_CHECKING:
    from live.show import Show
    from live.video.stylize import Stylizer

BANK_FORMAT = "live-style-bank"
BANK_NAME = "bank.json"  # a show's bank, inside its styles folder
THUMBS = "thumbs"  # the bank's thumbnails, in a folder beside it
THUMB_SIDE = 128  # thumbnails fit in this square
MIN_SIDE = 64  # a smaller picture has too little texture to predict a style from
PICTURES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # what OpenCV reads
POLL_S = 1.0  # how often a playing show looks into its styles folder
SLOTS = ("/video/style_a", "/video/style_b")
GRAB = "/video/style/grab"
GRAB_SLOTS = 16
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
NAME_RULE = "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64"
DECIMALS = 6  # vectors are stored rounded: the same bank writes the same bytes
NUMBERS = re.compile(r"\[\s*(-?[0-9][-0-9.e+]*(?:,\s*-?[0-9][-0-9.e+]*)*)\s*\]")  # a vector: on one line


class Source(BaseModel):
    """A file a style was made from: its path (relative to the bank's folder when inside it) and sha256."""

    model_config = ConfigDict(extra="forbid")
    path: str
    sha256: str


class BankEntry(BaseModel):
    """One style."""

    model_config = ConfigDict(extra="forbid")
    name: str
    vector: list[float]
    sources: list[Source] = []
    thumbnail: str = ""  # a JPEG, relative to the bank's folder; "" = none
    note: str = ""  # how it was made


class BankFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["live-style-bank"]
    version: Literal[1] = 1
    styles: list[BankEntry]


def is_style_bank(path: Path) -> bool:
    """Whether a .json file is a style bank (so `live models` does not take it for a model manifest)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == BANK_FORMAT


def check_name(name: str, where: str) -> str:
    if not NAME.fullmatch(name):
        raise LiveError(f"{where}: '{name}' is not a usable style name", f"use {NAME_RULE} characters")
    return name


def name_for(stem: str) -> str:
    """A style name from a picture's file name: 'Starry Night (1).jpg' -> 'starry-night-1'."""
    return re.sub(r"[^a-z0-9._]+", "-", stem.lower()).strip("-._")[:64] or "picture"


def read_picture(path: Path) -> np.ndarray:
    """A picture as uint8 BGR; LiveError naming the file when it cannot be read or is too small to be a style."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        what = "does not exist" if not path.exists() else "is not a readable picture"
        raise LiveError(f"style picture {path} {what}",
                        f"give a JPEG, PNG, BMP, WebP or TIFF file ({', '.join(PICTURES)})")
    return check_size(image, str(path))


def check_size(image: np.ndarray, what: str) -> np.ndarray:
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise LiveError(f"style picture {what} is only {width}x{height} pixels: too small to read a style from",
                        f"use a picture at least {MIN_SIDE} pixels on each side (a few hundred is best)")
    return image


def thumbnail(image: np.ndarray) -> bytes:
    """A small JPEG of `image`, fitting in THUMB_SIDE x THUMB_SIDE."""
    scale = THUMB_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


class StylePredictor:
    """An image-to-style model (style-predictor: any picture -> the style vector), on the CPU with one thread so
    it never competes with the frame path for long. Opened on first use."""

    def __init__(self, manifest_path: Path) -> None:
        from live.inference import open_session

        self.manifest = load_manifest(manifest_path)
        if self.manifest.kind != "image-to-style":
            raise LiveError(f"{manifest_path} is a {self.manifest.kind} model, not an image-to-style one",
                            "name style-predictor.json as the style model's controls.style_predictor")
        self._session = open_session(self.manifest.onnx_path, ("cpu",), threads=1)
        self._input, self._output = self.manifest.inputs[0].name, self.manifest.outputs[0].name

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self._session.run([self._output], {self._input: image})[0].astype(np.float32).reshape(-1)


class StyleBank:
    """A bank file's styles, in order. Nothing is written until `save`, which replaces the file atomically."""

    def __init__(self, path: Path, entries: Iterable[BankEntry] = ()) -> None:
        self.path = path
        self.entries: list[BankEntry] = list(entries)

    @classmethod
    def load(cls, path: Path) -> StyleBank:
        """The bank at `path`; an empty one if there is no file yet; LiveError naming the file if it is broken."""
        if not path.exists():
            return cls(path)
        try:
            bank = BankFile.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError, ValidationError) as err:
            first = str(err).splitlines()
            raise LiveError(f"style bank {path} is not readable: {' '.join(first[:3])[:300]}",
                            "restore it from a copy, or delete it and add the styles again with `live styles add`")
        sizes = {len(entry.vector) for entry in bank.styles}
        if len(sizes) > 1:
            raise LiveError(f"style bank {path} mixes vectors of lengths {sorted(sizes)}",
                            "remove the styles made by another predictor (`live styles remove NAME`)")
        return cls(path, bank.styles)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entries = [e.model_copy(update={"vector": [round(v, DECIMALS) for v in e.vector]}) for e in self.entries]
        text = json.dumps(BankFile(format=BANK_FORMAT, styles=entries).model_dump(), indent=1) + "\n"
        one_line = NUMBERS.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
        atomic_write(self.path, one_line.encode())

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def entry(self, name: str) -> BankEntry:
        """The style called `name`; LiveError listing the bank's names if there is none."""
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise LiveError(f"no style '{name}' in {self.path}",
                        f"use one of: {', '.join(self.names()) or '(none yet)'}; `live styles list` shows them")

    def vector(self, name: str) -> np.ndarray:
        return np.asarray(self.entry(name).vector, np.float32)

    def vectors(self) -> dict[str, np.ndarray]:
        return {entry.name: np.asarray(entry.vector, np.float32) for entry in self.entries}

    def put(self, entry: BankEntry) -> None:
        """Add `entry`, or replace the style of the same name where it stands."""
        names = self.names()
        if entry.name in names:
            self.entries[names.index(entry.name)] = entry
        else:
            self.entries.append(entry)

    def add(self, name: str, pictures: Sequence[Path], predictor: StylePredictor, note: str = "") -> BankEntry:
        """Predict a style from `pictures` (several average into one vector), write its thumbnail (of the first)
        and put it in the bank; `save` writes the bank."""
        check_name(name, str(self.path))
        if not pictures:
            raise LiveError(f"style '{name}': no pictures given", "name one or more pictures after the style's name")
        images = [read_picture(Path(p)) for p in pictures]
        vector = np.mean([predictor.predict(image) for image in images], axis=0)
        entry = self.entry_for(name, vector, [Path(p) for p in pictures], images[0],
                               note or f"mean of style-predictor's vectors of {len(images)} picture(s)")
        self.put(entry)
        return entry

    def entry_for(self, name: str, vector: np.ndarray, pictures: Sequence[Path], thumb: np.ndarray,
                  note: str) -> BankEntry:
        """An entry for `vector`, its sources hashed and its thumbnail written beside the bank."""
        folder = self.path.parent.resolve()
        sources = []
        for picture in pictures:
            path = picture.resolve()
            shown = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)
            sources.append(Source(path=shown, sha256=sha256_of(path)))
        thumbs = folder / THUMBS
        thumbs.mkdir(parents=True, exist_ok=True)
        atomic_write(thumbs / f"{name}.jpg", thumbnail(thumb))
        return BankEntry(name=name, vector=[float(v) for v in vector], sources=sources,
                         thumbnail=f"{THUMBS}/{name}.jpg", note=note)

    def remove(self, name: str) -> BankEntry:
        """Take the style out of the bank and delete its thumbnail; `save` writes the bank."""
        entry = self.entry(name)
        self.entries.remove(entry)
        if entry.thumbnail:
            (self.path.parent / entry.thumbnail).unlink(missing_ok=True)
        return entry

    def source_of(self, relative: str) -> BankEntry | None:
        """The style made from the file at `relative` (to the bank's folder), if any."""
        return next((e for e in self.entries if any(s.path == relative for s in e.sources)), None)


# --- a show's styles -------------------------------------------------------------------------------------


def model_bank(manifest_path: Path, controls: dict[str, Any]) -> StyleBank:
    """The bank a style-vector model ships with (its manifest's controls.style_bank, beside the manifest)."""
    name = controls.get("style_bank")
    if not name:
        raise LiveError(f"{manifest_path} takes a style vector but names no style bank (controls.style_bank)",
                        "add controls.style_bank to the manifest, or rebuild the model (`make models`)")
    path = manifest_path.parent / name
    if not path.is_file():
        raise LiveError(f"style bank {path} (named by {manifest_path}) is missing",
                        "restore it beside the model, or rebuild the models (`make models`)")
    return StyleBank.load(path)


def show_folder(show: Show) -> Path:
    """The show's styles folder (`[styles] folder`, inside the show's folder)."""
    return show.resolve_inside(show.styles.folder, "[styles] folder")


def show_bank(show: Show) -> StyleBank:
    return StyleBank.load(show_folder(show) / BANK_NAME)


def predictor_of(show: Show) -> Path:
    """The image-to-style model whose vectors the show's style model takes; LiveError if it takes none."""
    model = show.resolve(show.video.model)
    manifest = load_manifest(model, check_hash=False)
    if not manifest.controls.get("style_vector_input"):
        raise LiveError(f"{show.path}: [video] model {manifest.name} takes no style vectors, so pictures cannot "
                        "become its styles", 'set [video] model = "../exported_models/painterly-arbitrary.json"')
    return manifest.source.parent / manifest.controls.get("style_predictor", "style-predictor.json")


def grab_event() -> Event:
    return Event(GRAB, (("slot", "int", 1, GRAB_SLOTS),),
                 doc="the camera's current frame becomes style grab-SLOT, saved in the show's styles folder")


class StyleFolder(BasePart):
    """The show's styles folder while it plays. Every POLL_S it looks for pictures dropped in (one that has stopped
    changing for a poll becomes a style named after its file), and for `live styles add` having changed the bank;
    `/video/style/grab SLOT` saves the camera's frame as `grab-SLOT.png` and makes it a style. Predictions run on
    this part's thread; the stylizer gets the vector in one reference swap and the style slots' choices grow, so
    the frame path never waits. A problem (a picture that cannot be read, a missing predictor) is said once."""

    def __init__(self, folder: Path, predictor: Path, stylizer: Stylizer, tree: ParamTree,
                 say: Callable[[str], None] = print) -> None:
        self.folder, self.bank_path = folder, folder / BANK_NAME
        self.stylizer, self.tree, self.say = stylizer, tree, say
        self._predictor_path = predictor
        self._predictor: StylePredictor | None = None
        self._grabs = tree.listen(GRAB)
        self._seen: dict[Path, tuple[int, int]] = {}  # each file's (mtime, size) at the last poll
        self._done: dict[Path, tuple[int, int]] = {}  # ... when it was last handled (added, known or said)
        self._bank_stamp = self._stamp(self.bank_path)
        self.added = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="styles", daemon=True)

    @classmethod
    def from_show(cls, show: Show, stylizer: Stylizer, tree: ParamTree,
                  say: Callable[[str], None] = print) -> StyleFolder:
        return cls(show_folder(show), predictor_of(show), stylizer, tree, say)

    def open(self) -> str:
        self._thread.start()
        return (f"Styles: {len(self.stylizer.styles)} ({self.folder}: drop a picture in, or send {GRAB} SLOT, "
                "to add one)")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def stats(self) -> dict[str, Any]:
        return {"added": self.added, "problems": len(self.problems)}

    def status(self) -> str:
        return f"styles: {self.problems[-1][:70]}" if self.problems else ""

    # --- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = 0.0
        while not self._stop.wait(0.05):
            try:
                while self._grabs:
                    _, (slot,) = self._grabs.popleft()
                    self._grab(int(slot))
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + POLL_S
                    self._poll()
            except LiveError as err:
                self._problem(f"{err.what} (fix: {err.fix})" if err.fix else err.what)
            except Exception as err:  # never fatal to the show: said once, the current styles play on
                self._problem(f"{type(err).__name__}: {err}")

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems = [*self.problems[-19:], text]
            self.say(f"Styles: {text}")

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int] | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def predictor(self) -> StylePredictor:
        if self._predictor is None:
            self._predictor = StylePredictor(self._predictor_path)
        return self._predictor

    def _poll(self) -> None:
        stamp = self._stamp(self.bank_path)
        if stamp != self._bank_stamp:  # `live styles add` wrote the bank while the show plays
            self._bank_stamp = stamp
            self._play(StyleBank.load(self.bank_path).entries, "added to the bank")
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.iterdir()):
            stamp = self._stamp(path)
            if path.name.startswith(".") or path.name == BANK_NAME or not path.is_file() or stamp is None:
                continue  # hidden and half-written files (ours are dot-files until renamed), the bank itself
            if self._seen.get(path) != stamp:
                self._seen[path] = stamp  # new or still changing: handled once it holds still for a poll
                continue
            if self._done.get(path) == stamp:
                continue
            self._done[path] = stamp
            if path.suffix.lower() not in PICTURES:
                self._problem(f"{path} is not a picture, so it is not a style (fix: move it out of {self.folder}, "
                              f"or save it as {'/'.join(s[1:] for s in PICTURES[:3])})")
                continue
            try:
                self._picture(path)
            except LiveError as err:
                self._problem(f"{err.what} (fix: {err.fix})")

    def _picture(self, path: Path) -> None:
        """A picture in the folder: a style already made from exactly these bytes is left alone; else it is
        predicted and saved under its file's name (or the name of the style it was made into before), never over
        another of the show's styles."""
        bank = StyleBank.load(self.bank_path)
        before = bank.source_of(path.name)
        digest = sha256_of(path)
        if before is not None and any(s.sha256 == digest for s in before.sources):
            return
        image = read_picture(path)
        name = before.name if before else name_for(path.stem)
        if before is None and name in bank.names():  # another style has that name (a.jpg beside a.png): a-png
            name = name_for(path.name)
        self._save(bank, name, image, path, f"style-predictor's vector of {path.name}, dropped into the folder")

    def _grab(self, slot: int) -> None:
        image = self.stylizer.last_frame
        if image is None:
            raise LiveError(f"{GRAB} {slot}: no camera frame yet", "send it again once the picture plays")
        check_size(image, f"from the camera ({GRAB} {slot})")
        name = f"grab-{slot}"
        path = self.folder / f"{name}.png"
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, cv2.imencode(".png", image)[1].tobytes())
        self._seen[path] = self._done[path] = self._stamp(path)  # the poll must not take it for a new picture
        self._save(StyleBank.load(self.bank_path), name, image, path,
                   f"style-predictor's vector of the camera frame grabbed by {GRAB} {slot} at "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}")

    def _save(self, bank: StyleBank, name: str, image: np.ndarray, path: Path, note: str) -> None:
        vector = self.predictor().predict(image)
        entry = bank.entry_for(name, vector, [path], image, note)
        bank.put(entry)
        bank.save()
        self._bank_stamp = self._stamp(self.bank_path)
        self._play([entry], f"from {path.name}")

    def _play(self, entries: Sequence[BankEntry], how: str) -> None:
        """Hand new or changed vectors to the stylizer, then let the style slots offer the new names."""
        changed = [e for e in entries if self.stylizer.add_style(e.name, np.asarray(e.vector, np.float32))]
        if not changed:
            return
        self.added += len(changed)
        styles = tuple(self.stylizer.styles)
        if any(p.address in SLOTS and p.choices != styles for p in self.tree.params.values()):
            # the same parameters with more choices: values stay, OSCQuery clients hear PATH_CHANGED
            self.tree.reconfigure([dataclasses.replace(p, choices=styles, max=len(styles) - 1)
                                   if p.address in SLOTS else p for p in self.tree.params.values()],
                                  self.tree.events.values())
        for entry in changed:
            self.say(f"Styles: {entry.name} {how}; play it with /video/style_a s {entry.name}")


# --- `live styles` -------------------------------------------------------------------------------------------


def add_command(show: Show, name: str, pictures: Sequence[Path]) -> str:
    check_name(name, "live styles add")
    bank = show_bank(show)
    entry = bank.add(name, pictures, StylePredictor(predictor_of(show)))
    bank.save()
    return f"Added style {name} ({len(entry.sources)} picture(s)) to {bank.path}"


def remove_command(show: Show, name: str) -> str:
    bank = show_bank(show)
    entry = bank.remove(name)
    bank.save()
    folder = bank.path.parent.resolve()
    gone = [s.path for s in entry.sources if (folder / s.path).resolve().parent == folder]
    for relative in gone:  # a picture in the folder would come back as a style at the next show
        (bank.path.parent / relative).unlink(missing_ok=True)
    deleted = f" and deleted {', '.join(gone)} from the styles folder" if gone else ""
    return f"Removed style {name} from {bank.path}{deleted}"


def list_lines(show: Show) -> list[str]:
    """The show's styles: its model's, then its own with their sources."""
    model = show.resolve(show.video.model)
    manifest = load_manifest(model, check_hash=False)
    if not manifest.controls.get("style_vector_input"):
        styles = manifest.controls.get("styles", [])
        return [f"{manifest.name} ({len(styles)} styles, fixed): {', '.join(styles)}",
                "pictures cannot become styles with this model: use painterly-arbitrary"]
    shipped = model_bank(manifest.source, manifest.controls)
    bank = show_bank(show)
    lines = [f"{manifest.name} ({len(shipped)} styles, from {shipped.path.name}): {', '.join(shipped.names())}",
             f"the show's ({len(bank)} in {bank.path}):"]
    for entry in bank.entries:
        sources = ", ".join(f"{s.path} (sha256 {s.sha256[:12]})" for s in entry.sources)
        lines.append(f"  {entry.name}: {sources or 'no source'}" + (f"; thumbnail {entry.thumbnail}"
                                                                     if entry.thumbnail else ""))
    if not bank.entries:
        lines.append("  none yet: `live styles add NAME PICTURE...`, or drop a picture into the folder")
    return lines
