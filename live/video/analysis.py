"""Video analysis: what the camera sees, as read-only parameters (`/in/video/*`) a show can modulate from, worked
out on a thread of its own so the picture never waits for it.

The chain thread hands each camera frame it takes to `VideoAnalysis.offer`: a put into a one-slot mailbox, newest
wins, frames the analysis had no time for are counted as skipped. The analysis thread shrinks the frame to a small
copy (SMALL_WIDTH wide, OpenCV) and measures, at most `[watch] rate` times a second:
- motion: how much of the picture changed since the last frame analysed (/in/video/motion), and the same per cell of
  a coarse grid (/in/video/motion/grid/N, row by row from the top left);
- brightness: the mean luma;
- the dominant colour: the peak of a hue histogram of the saturated pixels (hue, saturation, value);
- presence: someone is there (0..1) and roughly how many, from OpenCV's MOG2 background subtractor (blobs that
  moved in front of the learnt background), the person mask and the face detector where their models are set.
With `[watch] face_model` the largest face is a source too (/in/video/face/x, y, size, and the face count); with
`[watch] mask_model` the newest person mask is kept for the mask stage (live/video/mask.py), which composites the
styled picture with the camera's by it. A model that is missing or broken is said in one line at open and its
sources stay at rest; the show plays on.

Each snapshot is published with `tree.measure(values, at)`, `at` the capture time of the frame it describes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from live.errors import LiveError
from live.mailbox import Mailbox
from live.params import Param, ParamTree
from live.parts import BasePart
from live.video.frame import Frame

if TYPE_CHECKING:
    from live.show import Show
    from live.video.people import Face

#: Width of the small copy every measure runs on (the height keeps the aspect): 160 columns still tell a hand from a
#: head, and cost a sixteenth of 640x480.
SMALL_WIDTH = 160
#: Change (0-255, in the colour channel that changed most, so a blue hand on a grey wall of the same luma counts)
#: of a pixel between two analysed frames: up to the first it is sensor and compression noise (a few levels on the
#: small copy, which already averages 16 camera pixels), from the second on it is full motion; the weight rises
#: linearly between. Motion is the mean weight: 0 = still, 1 = every pixel changed a lot.
MOTION_LEVELS = (6.0, 40.0)
#: Hue histogram bins (each 10 degrees) for the dominant colour; a pixel votes only if saturation and value are both
#: at least COLOURFUL (0-255): grey, white and black pixels have no hue worth following.
HUE_BINS = 36
COLOURFUL = 60
#: Fewer voting pixels than this share of the picture: no dominant colour; the hue holds its last value.
MIN_COLOUR_SHARE = 0.01
#: A foreground blob (MOG2) or person-mask region smaller than this share of the picture is noise, not someone.
MIN_BLOB = 0.01
#: Foreground share (blobs, or the person mask) at which presence is full: a person at a few metres covers more.
FULL_PRESENCE = 0.04
#: Seconds over which presence falls from 1 to 0 once nobody is seen: someone standing still a moment stays there.
RELEASE_S = 1.0
#: Seconds of history the background subtractor learns from: someone who stands still longer melts into the
#: background (the face detector and the person mask still see them).
BACKGROUND_S = 10.0
MAX_PEOPLE = 16
#: Width of the copy the person-mask model is fed (it resizes to its own input, 256 square or 256x144): the mask
#: stage scales the result up to the frame and feathers it.
MASK_WIDTH = 256
# The analysis thread keeps the process's nice value. At +5 (to give the frame path the CPU first) it was preempted
# while it held the GIL, and the OSC thread (SCHED_FIFO) waited behind it: `live bench --audio` with every analysis,
# 45 s a phase, 45 notes reached the synth past their margin at +5 and 12 at 0, at 25.8 and 27.3 fps.
POLL_S = 0.1  # the analysis thread's longest wait for a frame, so close() is seen promptly
CLOSE_S = 1.0
COSTS_KEPT = 300  # analyses whose times make the median in stats()


class WatchSection(BaseModel):
    """`[watch]`: video analysis, published as read-only parameters under /in/video/ (see live/video/analysis.py)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="analyse the camera: motion, brightness, colour, presence")
    rate: float = Field(30.0, gt=0, le=240, description="analyses per second at most (frames in between skipped)")
    grid: int = Field(3, ge=1, le=8, description="motion grid: grid x grid cells, /in/video/motion/grid/0.. row "
                                                 "by row from the top left")
    face_model: str = Field("", description="face detector manifest, relative to the show: faces as sources and in "
                                            "the people count; \"\" = off")
    mask_model: str = Field("", description="person segmentation manifest, relative to the show: the mask stage's "
                                            "mask and presence; \"\" = off")


def _in(address: str, doc: str, hi: float = 1.0, unit: str = "", lo: float = 0.0) -> Param:
    return Param(f"/in/video/{address}", "float", 0.0, lo, hi, unit=unit, doc=doc, readonly=True)


def pose(face: Face, width: int, height: int) -> tuple[float, float]:
    """A face's tilt and turn from its landmarks, each -1..1: tilt is the eye line's angle (1 = 45 degrees, the
    head leaning to the picture's right, clockwise), turn where the nose tip lies between the ears (-1 at the ear on
    the picture's left, 1 at the other)."""
    (rx, ry), (lx, ly) = face.keypoints["right_eye"], face.keypoints["left_eye"]  # her right eye: the picture's left
    tilt = math.degrees(math.atan2((ly - ry) * height, (lx - rx) * width)) / 45.0
    left_ear, right_ear = face.keypoints["right_ear"][0], face.keypoints["left_ear"][0]
    half = (right_ear - left_ear) / 2
    turn = (face.keypoints["nose_tip"][0] - (left_ear + half)) / half if half > 1e-6 else 0.0
    return min(max(tilt, -1.0), 1.0), min(max(turn, -1.0), 1.0)


class Analyser:
    """The measures, frame by frame, without a thread (the part runs it on its own; tests and the bench call it
    directly). Each measure is one method, so each can be timed alone."""

    def __init__(self, grid: int = 3, rate: float = 30.0) -> None:
        self.grid = grid
        self._small: np.ndarray | None = None  # the last frame analysed
        history = max(1, round(BACKGROUND_S * rate))
        self._background = cv2.createBackgroundSubtractorMOG2(history=history, detectShadows=True)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._hue = 0.0
        self._presence, self._presence_at = 0.0, 0.0

    @staticmethod
    def small(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        size = (SMALL_WIDTH, max(8, round(height * SMALL_WIDTH / width)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def motion(self, small: np.ndarray) -> tuple[float, np.ndarray]:
        """The share of the picture that changed since the last call (0..1, through MOTION_LEVELS), and the same per
        grid cell, row by row."""
        previous, self._small = self._small, small
        if previous is None or previous.shape != small.shape:
            return 0.0, np.zeros(self.grid * self.grid, np.float32)
        lo, hi = MOTION_LEVELS
        change = cv2.absdiff(small, previous).max(axis=2)
        moved = np.clip((change.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
        cells = cv2.resize(moved, (self.grid, self.grid), interpolation=cv2.INTER_AREA)  # each cell's mean
        return float(moved.mean()), cells.ravel()

    @staticmethod
    def brightness(small: np.ndarray) -> float:
        """Mean luma (Rec. 601, as OpenCV greys), 0..1."""
        return float(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).mean()) / 255.0

    def colour(self, small: np.ndarray) -> tuple[float, float, float]:
        """The dominant colour (hue, saturation, value, each 0..1): the peak of a 36-bin hue histogram of the
        saturated pixels, refined between its neighbours; saturation and value are those pixels' means. A histogram
        rather than k-means: it costs a tenth of a millisecond, gives the same answer for the same frame (k-means
        starts at random and its clusters swap order), and a hue is what a show maps. With no colourful pixels the
        hue holds and saturation and value describe the whole picture."""
        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV_FULL)  # hue 0..255 all round
        hue, sat, val = cv2.split(hsv)
        voters = cv2.bitwise_and(cv2.inRange(sat, COLOURFUL, 255), cv2.inRange(val, COLOURFUL, 255))
        counts = cv2.calcHist([hue], [0], voters, [HUE_BINS], [0, 256]).ravel()
        if counts.sum() < MIN_COLOUR_SHARE * hue.size:
            return self._hue, float(sat.mean()) / 255.0, float(val.mean()) / 255.0
        around = counts + np.roll(counts, 1) + np.roll(counts, -1)  # red wraps round: the bins are a circle
        peak = int(np.argmax(around))
        below, here, above = counts[peak - 1], counts[peak], counts[(peak + 1) % HUE_BINS]
        self._hue = ((peak + 0.5 + (above - below) / max(below + here + above, 1.0)) / HUE_BINS) % 1.0
        bins = (hue.astype(np.int32) * HUE_BINS) >> 8
        near = (((bins - peak + 1) % HUE_BINS) <= 2) & (voters > 0)
        return self._hue, float(sat[near].mean()) / 255.0, float(val[near].mean()) / 255.0

    def foreground(self, small: np.ndarray) -> tuple[float, int]:
        """What moved in front of the learnt background (MOG2, shadows left out): its share of the picture in blobs
        of at least MIN_BLOB, and how many such blobs."""
        mask = self._background.apply(small)
        mask = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)[1]  # 127 is a shadow
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)  # speckle out
        mask = cv2.dilate(mask, self._kernel, iterations=2)  # a body's parts joined into one blob
        return blobs(mask > 0)

    def presence(self, share: float, people: int, at: float) -> float:
        """Someone is there (0..1) from the foreground share, held and released over RELEASE_S."""
        now = min(share / FULL_PRESENCE, 1.0) if people else 0.0
        held = self._presence - (at - self._presence_at) / RELEASE_S
        self._presence, self._presence_at = max(now, held, 0.0), at
        return self._presence


def blobs(mask: np.ndarray) -> tuple[float, int]:
    """Regions of a boolean mask of at least MIN_BLOB of its area: their total share and how many."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:count, cv2.CC_STAT_AREA] / mask.size
    big = areas[areas >= MIN_BLOB]
    return float(big.sum()), int(big.size)


class VideoAnalysis(BasePart):
    """The analysis part: its own thread analyses the newest frame the chain took, at most `rate` times a second,
    and publishes the values with `tree.measure`. `offer` (called by the chain thread) never blocks.

    The mask stage reads `camera` (the camera frame the chain is processing now) and `mask` (the newest person
    mask, with the index of the frame it was made from)."""

    def __init__(self, section: WatchSection, tree: ParamTree, face_model: Path | None = None,
                 mask_model: Path | None = None, say: Callable[[str], None] = print) -> None:
        self.section, self.tree, self.say = section, tree, say
        self.face_model, self.mask_model = face_model, mask_model
        self.inbox: Mailbox[Frame] = Mailbox()
        self.analyser = Analyser(section.grid, section.rate)
        self.faces: Any = None  # live.video.people.FaceFinder, once open
        self.masker: Any = None  # live.video.people.PersonMask, once open
        self.camera: Frame | None = None
        self.mask: tuple[np.ndarray, int] | None = None
        self.analysed = 0
        self.costs: deque[float] = deque(maxlen=COSTS_KEPT)  # wall seconds per analysis
        self.cpu_s = 0.0  # the analysis thread's CPU time so far (with the models on one ORT thread, theirs too)
        self.problems: list[str] = []  # models that did not load, said once at open
        self.failure = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="video-analysis", daemon=True)

    @classmethod
    def from_show(cls, show: Show, tree: ParamTree, stages: Sequence[Any],
                  say: Callable[[str], None] = print) -> VideoAnalysis | None:
        """The show's analysis part, None when `[watch]` is off; the mask stages among `stages` are given it. A
        mask stage without `[watch] enabled` and `mask_model` is a LiveError naming the keys."""
        from live.video.mask import MaskStage  # here: mask.py imports this module's types

        watch, masks = show.watch, [stage for stage in stages if isinstance(stage, MaskStage)]
        if masks and not (watch.enabled and watch.mask_model):
            raise LiveError(f"{show.path}: [[stages]] kind = \"mask\" takes its person mask from the video analysis, "
                            "which is off", "in [watch] set enabled = true and mask_model = "
                            "\"../exported_models/person-segmentation.json\" (or remove the mask stage)")
        if not watch.enabled:
            return None
        part = cls(watch, tree, show.resolve(watch.face_model) if watch.face_model else None,
                   show.resolve(watch.mask_model) if watch.mask_model else None, say)
        for stage in masks:
            stage.watch = part
        return part

    @staticmethod
    def params(section: WatchSection) -> list[Param]:
        """The read-only parameters `[watch]` publishes (none while it is off)."""
        if not section.enabled:
            return []
        grid = section.grid
        params = [
            _in("motion", "how much of the picture moved since the last frame analysed: 0 = still"),
            *(_in(f"motion/grid/{n}", f"motion in cell {n} of the {grid}x{grid} grid (row {n // grid}, column "
                                      f"{n % grid}, from the top left)") for n in range(grid * grid)),
            _in("brightness", "mean luma of the picture: 0 = black, 1 = white"),
            _in("colour/hue", "hue of the dominant colour (0 red, 1/3 green, 2/3 blue, round to 1 red again)"),
            _in("colour/saturation", "saturation of the dominant colour"),
            _in("colour/value", "value (brightness) of the dominant colour"),
            _in("presence", "someone is there: 1 = clearly, falls to 0 within a second once nobody is seen"),
            _in("people", "roughly how many people: moving blobs, person-mask regions and faces, whichever counts "
                          "most", MAX_PEOPLE),
        ]
        if section.face_model:
            params += [
                _in("faces", "how many faces the detector sees", MAX_PEOPLE),
                _in("face/x", "horizontal centre of the largest face: 0 = left edge (holds while none is seen)"),
                _in("face/y", "vertical centre of the largest face: 0 = top edge (holds while none is seen)"),
                _in("face/size", "height of the largest face as a share of the picture's: 0 = no face"),
                _in("face/tilt", "the largest face's tilt from its eyes: 1 = leaning 45 degrees to the picture's "
                                 "right, -1 to its left (holds while none is seen)", lo=-1.0),
                _in("face/turn", "the largest face turned, from where its nose lies between its ears: -1 towards "
                                 "the picture's left, 1 its right (holds while none is seen)", lo=-1.0),
            ]
        if section.mask_model:
            params.append(_in("person/area", "share of the picture the person mask covers"))
        return params

    def open(self) -> str:
        """Load the models that are set (one that fails is said, its sources stay at rest), start the thread."""
        for path, kind, attribute, key in ((self.face_model, "FaceFinder", "faces", "face_model"),
                                           (self.mask_model, "PersonMask", "masker", "mask_model")):
            if path is None:
                continue
            from live.video import people  # here: only a show with models pays for loading them

            try:
                setattr(self, attribute, getattr(people, kind)(path))
            except LiveError as err:
                line = (f"Watch: [watch] {key}: {err.what} (fix: {err.fix}); its sources stay at rest, the show "
                        "plays on")
                self.problems.append(line)
                self.say(line)
        self._thread.start()
        models = [name for name, model in (("faces", self.faces), ("person mask", self.masker)) if model]
        return (f"Watch: analysing up to {self.section.rate:g} frames/s (motion, brightness, colour, presence"
                + "".join(f", {m}" for m in models) + ")")

    def close(self) -> None:
        self._stop.set()
        self.inbox.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(CLOSE_S)

    def stats(self) -> dict[str, Any]:
        costs = sorted(self.costs)
        return {"analysed": self.analysed, "skipped": self.inbox.dropped,
                "cost_ms": round(costs[len(costs) // 2] * 1000, 2) if costs else 0.0,
                "cpu_s": round(self.cpu_s, 3), "failure": self.failure,
                "models_missing": len(self.problems)}

    def status(self) -> str:
        stats = self.stats()
        line = f"watch {stats['analysed']} analysed, {stats['skipped']} skipped, {stats['cost_ms']:.1f} ms each"
        if self.problems:
            line += f"; {len(self.problems)} model(s) missing, at rest"
        return line + (f"; FAILING: {self.failure[:50]}" if self.failure else "")

    def offer(self, frame: Frame) -> None:
        """A frame the chain has just taken (called on the chain thread): kept as the camera picture of the frame in
        flight, and left for the analysis thread, replacing one it has not taken yet. Never blocks."""
        self.camera = frame
        self.inbox.put(frame)

    def analyse(self, frame: Frame) -> dict[str, float]:
        """Every measure of one frame, as the values to publish."""
        a = self.analyser
        small = a.small(frame.image)
        motion, cells = a.motion(small)
        hue, saturation, value = a.colour(small)
        share, people = a.foreground(small)
        values = {"/in/video/motion": motion, "/in/video/brightness": a.brightness(small),
                  "/in/video/colour/hue": hue, "/in/video/colour/saturation": saturation,
                  "/in/video/colour/value": value}
        values.update({f"/in/video/motion/grid/{n}": float(cell) for n, cell in enumerate(cells)})
        if self.masker is not None:
            height, width = frame.image.shape[:2]
            size = (MASK_WIDTH, round(height * MASK_WIDTH / width))
            mask = self.masker.mask(cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA))
            self.mask = (mask, frame.index)
            area, regions = blobs(mask > 0.5)
            values["/in/video/person/area"] = float(mask.mean())
            share, people = max(share, area), max(people, regions)
        if self.faces is not None:
            found = self.faces.faces(frame.image)  # those its manifest's min_score passes
            values["/in/video/faces"] = float(len(found))
            values["/in/video/face/size"] = 0.0
            if found:
                largest = max(found, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                x0, y0, x1, y1 = largest.box
                tilt, turn = pose(largest, frame.image.shape[1], frame.image.shape[0])
                values.update({"/in/video/face/x": (x0 + x1) / 2, "/in/video/face/y": (y0 + y1) / 2,
                               "/in/video/face/size": y1 - y0, "/in/video/face/tilt": tilt,
                               "/in/video/face/turn": turn})
                share = max(share, FULL_PRESENCE)  # a face seen is someone there, still or not
            people = max(people, len(found))
        values["/in/video/presence"] = a.presence(share, people, frame.captured)
        values["/in/video/people"] = float(min(people, MAX_PEOPLE))
        return values

    def _run(self) -> None:
        interval = 1.0 / self.section.rate
        while not self._stop.is_set():
            frame = self.inbox.get(timeout=POLL_S)
            if frame is None:
                continue
            began, cpu = time.perf_counter(), time.thread_time()
            try:
                self.tree.measure(self.analyse(frame), frame.captured)
            except Exception as err:  # a measure failing mid-show must not end the show: said once, tried again
                if not self.failure:
                    self.say(f"Watch: analysis failed on a frame ({type(err).__name__}: {err}); retrying each frame")
                self.failure = f"{type(err).__name__}: {err}"
                continue
            self.failure = ""
            self.analysed += 1
            self.costs.append(time.perf_counter() - began)
            self.cpu_s += time.thread_time() - cpu
            self._stop.wait(max(0.0, began + interval - time.perf_counter()))  # the rate cap: newer frames wait
