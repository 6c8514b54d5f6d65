"""Who is in the picture: a person mask and faces, from MediaPipe's models converted to ONNX.

`PersonMask` says, per pixel, how sure it is that a person is there (a style can then apply to the person only or
to the background only); `FaceFinder` finds faces with six keypoints each (eyes, nose tip, mouth, ears), sources
for modulation. The models are MediaPipe 0.10.21's selfie segmentation and short-range face detector (BlazeFace),
converted once by live/models/build_mediapipe.py and shipped in exported_models/ with their manifests; both run on
ONNX Runtime through the project's inference backend and cost a few milliseconds on the CPU (figures in the
manifests' provenance.timing_ms), so callers run them off the frame path.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from live.errors import LiveError
from live.inference import BACKENDS, Session
from live.models.manifest import Manifest, load_manifest

EXPORTED = Path(__file__).resolve().parents[2] / "exported_models"
PERSON_MODEL = EXPORTED / "person-segmentation.json"
FACE_MODEL = EXPORTED / "face-detection.json"
REBUILD = ("restore the shipped file (git checkout -- exported_models/) or convert it again with "
           "`make mediapipe-models`")


def open_model(path: Path, kind: str, providers: tuple[str, ...], threads: int, backend: str,
               ) -> tuple[Manifest, Session]:
    """A manifest of `kind` (its sha256 checked) and its session; LiveError naming the file and the fix."""
    try:
        manifest = load_manifest(path)
    except LiveError as err:
        raise LiveError(err.what, REBUILD if Path(path).parent == EXPORTED else err.fix) from None
    if manifest.kind != kind:
        raise LiveError(f"{path} is a {manifest.kind} model, not a {kind} one",
                        f"use exported_models/{PERSON_MODEL.name if kind == 'person-mask' else FACE_MODEL.name}")
    return manifest, BACKENDS.get(backend)(manifest.onnx_path, providers, threads)


class PersonMask:
    """How much of each pixel is a person: MediaPipe's selfie segmentation (general model, 256x256), built for
    people within a few metres of the camera. The model loads when this is constructed."""

    def __init__(self, path: Path = PERSON_MODEL, providers: tuple[str, ...] = ("cpu",), threads: int = 1,
                 backend: str = "onnxruntime") -> None:
        """`threads`: ONNX Runtime's intra-op threads; one by default, so the mask never takes every core from the
        frame path (on the busy 2-core development machine two threads were slower than one)."""
        self.manifest, self.session = open_model(Path(path), "person-mask", providers, threads, backend)
        self.size = tuple(self.manifest.controls["input_size"])  # width, height
        self._input, self._output = self.manifest.inputs[0].name, self.manifest.outputs[0].name

    def mask(self, image_bgr: np.ndarray) -> np.ndarray:
        """float32 HxW in 0..1 (person = 1) at the image's size. The image is stretched to the model's square, as
        MediaPipe does; the mask is stretched back bilinearly."""
        small = cv2.resize(image_bgr, self.size, interpolation=cv2.INTER_AREA)
        (mask,) = self.session.run([self._output], {self._input: small})
        height, width = image_bgr.shape[:2]
        return cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Face:
    """One face, in fractions of the picture's width and height (a face at the edge may reach past 0..1)."""

    score: float
    box: tuple[float, float, float, float]  # left, top, right, bottom
    keypoints: Mapping[str, tuple[float, float]]  # name -> (x, y): right_eye, left_eye, nose_tip, mouth, ...


def anchor_centres(options: Mapping[str, Any], width: int, height: int) -> np.ndarray:
    """The SSD anchors' centres [N, 2] (x, y in 0..1) in the order the model's outputs come.

    Follows the meaning of MediaPipe's SsdAnchorsCalculatorOptions (ssd_anchors_calculator.proto). Consecutive
    layers with the same stride share one grid of ceil(size / stride) cells; each layer puts one anchor per aspect
    ratio in each cell, plus one more when interpolated_scale_aspect_ratio is set, and cells are listed row by
    row with their anchors together. Centres sit at (cell + anchor_offset) / grid. The face detector's figures
    (in its manifest's controls, from face_detection_short_range.pbtxt): strides 8, 16, 16, 16 on 128x128, one
    aspect ratio plus the interpolated one, so 16x16 cells x 2 + 8x8 cells x 6 = 896 anchors. With
    fixed_anchor_size every anchor is 1 x 1, so the layers' scales (min_scale, max_scale) do not change the
    decoding and only centres are needed."""
    if not options["fixed_anchor_size"]:
        raise LiveError("this face detector's anchors are not fixed-size; only fixed-size anchors are decoded",
                        "use exported_models/face-detection.json")
    strides = list(options["strides"])
    per_layer = len(options["aspect_ratios"]) + (1 if options["interpolated_scale_aspect_ratio"] > 0 else 0)
    offset_x, offset_y = options["anchor_offset"]
    centres = []
    first = 0
    while first < len(strides):
        last = first
        while last + 1 < len(strides) and strides[last + 1] == strides[first]:
            last += 1
        stride = strides[first]
        cols, rows = -(-width // stride), -(-height // stride)
        per_cell = per_layer * (last - first + 1)
        ys, xs = np.meshgrid((np.arange(rows) + offset_y) / rows, (np.arange(cols) + offset_x) / cols, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        first = last + 1
    return np.concatenate(centres).astype(np.float32)


class FaceFinder:
    """Faces in a picture: MediaPipe's short-range BlazeFace (faces within about 2 m of the camera), its anchors
    decoded here and overlapping detections merged. The model loads when this is constructed."""

    def __init__(self, path: Path = FACE_MODEL, providers: tuple[str, ...] = ("cpu",), threads: int = 1,
                 backend: str = "onnxruntime", min_score: float | None = None) -> None:
        """`min_score`: the least score a face is reported with (default: the manifest's, MediaPipe's 0.5)."""
        self.manifest, self.session = open_model(Path(path), "face-detector", providers, threads, backend)
        controls = self.manifest.controls
        self.size = tuple(controls["input_size"])  # width, height
        self.anchors = anchor_centres(controls["anchors"], *self.size)
        self.scale = float(controls["box_scale"])
        self.names = tuple(controls["keypoints"])
        self.min_score = float(controls["min_score"] if min_score is None else min_score)
        self.iou = float(controls["nms_iou"])
        self._input = self.manifest.inputs[0].name
        self._outputs = [spec.name for spec in self.manifest.outputs]  # boxes, scores

    def faces(self, image_bgr: np.ndarray) -> list[Face]:
        """The faces in `image_bgr`, best first."""
        small, (pad_x, pad_y) = self._letterbox(image_bgr)
        raw, scores = self.session.run(self._outputs, {self._input: small})
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        # offsets are in model-input pixels relative to each (1 x 1) anchor: centre x, y, width, height, keypoints
        values = raw / self.scale
        points = values.reshape(len(values), -1, 2)  # [n, 2 + keypoints, 2]
        centres = points[:, 0] + anchors
        sizes = points[:, 1]
        keypoints = points[:, 2:] + anchors[:, None, :]
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)  # left, top, right, bottom
        merged = self._merge(boxes, keypoints, scores)
        # from the letterboxed square back to fractions of the picture
        shift, span = np.array([pad_x, pad_y], np.float32), np.array([1 - 2 * pad_x, 1 - 2 * pad_y], np.float32)
        faces = []
        for score, box, points in merged:
            box = (box.reshape(2, 2) - shift) / span
            points = (points - shift) / span
            faces.append(Face(float(score), tuple(float(v) for v in box.ravel()),
                              {name: (float(x), float(y)) for name, (x, y) in zip(self.names, points)}))
        return faces

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """The picture scaled to fit the model's input with black bars (as MediaPipe's keep_aspect_ratio does), and
        the bars' width as a fraction of the input on each side."""
        width, height = self.size
        k = min(width / image.shape[1], height / image.shape[0])
        w, h = round(image.shape[1] * k), round(image.shape[0] * k)
        left, top = (width - w) // 2, (height - h) // 2
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        boxed = cv2.copyMakeBorder(small, top, height - h - top, left, width - w - left, cv2.BORDER_CONSTANT, value=0)
        return boxed, ((width - w) / 2 / width, (height - h) / 2 / height)

    def _merge(self, boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
               ) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """Non-maximum suppression (OpenCV's), then each kept face's box and keypoints averaged, weighted by score,
        over the detections that overlap it, as MediaPipe's WEIGHTED suppression does: neighbouring anchors fire
        on the same face, and their average jitters less from frame to frame than any one of them."""
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.min_score, self.iou)
        out = []
        for i in np.asarray(kept, dtype=int).ravel():
            near = _iou(boxes[i], boxes) > self.iou
            near[i] = True
            weight = scores[near] / scores[near].sum()
            out.append((scores[i], weight @ boxes[near], np.tensordot(weight, keypoints[near], axes=1)))
        return out


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with each of `boxes` (left, top, right, bottom)."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def time_calls(call, image: np.ndarray, repeat: int) -> float:
    """Median milliseconds of `call(image)` over `repeat` calls, after two warm-up calls."""
    for _ in range(2):
        call(image)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main(argv: list[str] | None = None) -> None:
    """`python -m live.video.people`: the time per call of each model on a photo at two camera sizes."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--image", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mask-model", type=Path, default=PERSON_MODEL)
    args = parser.parse_args(argv)
    photo = cv2.imread(str(args.image))
    if photo is None:
        raise SystemExit(f"cannot read {args.image}")
    masker = PersonMask(args.mask_model, threads=args.threads)
    finder = FaceFinder(threads=args.threads)
    for width, height in ((320, 240), (640, 480)):
        image = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
        print(f"{width}x{height}: {masker.manifest.name} {time_calls(masker.mask, image, args.repeat):.2f} ms, "
              f"{finder.manifest.name} {time_calls(finder.faces, image, args.repeat):.2f} ms "
              f"(median of {args.repeat}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
