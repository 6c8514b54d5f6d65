"""The person mask and the face finder: MediaPipe's models as converted to ONNX, run on ONNX Runtime's CPU provider
(no mocks), on the photos in live/assets."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from live.errors import LiveError
from live.models.manifest import load_manifest, sha256_of
from live.video.people import FACE_MODEL, PERSON_MODEL, FaceFinder, PersonMask, anchor_centres

ASSETS = Path(__file__).resolve().parents[1] / "live" / "assets"


def photo(name: str) -> np.ndarray:
    image = cv2.imread(str(ASSETS / name))
    assert image is not None, name
    return image


def mean_in(mask: np.ndarray, left: float, top: float, right: float, bottom: float) -> float:
    """The mask's mean over a box given in fractions of the picture."""
    h, w = mask.shape
    return float(mask[int(top * h):int(bottom * h), int(left * w):int(right * w)].mean())


@pytest.fixture(scope="module")
def masker() -> PersonMask:
    return PersonMask()


@pytest.fixture(scope="module")
def finder() -> FaceFinder:
    return FaceFinder()


@pytest.mark.parametrize("path, kind", [(PERSON_MODEL, "person-mask"), (FACE_MODEL, "face-detector")])
def test_manifests_load_with_matching_hash_and_provenance(path: Path, kind: str):
    manifest = load_manifest(path)  # checks the sha256 itself; checked again here so the test can fail alone
    assert manifest.kind == kind
    assert sha256_of(manifest.onnx_path) == manifest.sha256
    source = manifest.provenance
    assert (source["package"], source["version"]) == ("mediapipe", "0.10.21")
    assert len(source["wheel_sha256"]) == 64 and all(len(v) == 64 for v in source["sources"].values())
    assert manifest.licence.startswith("Apache-2.0")
    notice = (path.parent / "NOTICE").read_text()
    assert manifest.onnx_path.name in notice and next(iter(source["sources"])) in notice


def test_mask_covers_the_astronaut_and_not_the_background(masker: PersonMask):
    image = photo("astronaut.jpg")  # 512x512: a woman in an orange suit, a flag top left, a shuttle top right
    mask = masker.mask(image)
    assert mask.shape == image.shape[:2] and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert mean_in(mask, 0.15, 0.55, 0.60, 0.95) > 0.9  # her suit, chest to lap (measured 0.996)
    assert mean_in(mask, 0.38, 0.18, 0.50, 0.32) > 0.9  # her face (1.0)
    assert mean_in(mask, 0.0, 0.0, 0.2, 0.2) < 0.1  # the flag, top left (0.0)
    assert mean_in(mask, 0.75, 0.0, 1.0, 0.25) < 0.1  # the shuttle model, top right (0.0)


def test_mask_comes_back_at_a_camera_frames_size(masker: PersonMask):
    image = cv2.resize(photo("astronaut.jpg"), (320, 240), interpolation=cv2.INTER_AREA)
    mask = masker.mask(image)
    assert mask.shape == (240, 320)
    assert mean_in(mask, 0.15, 0.55, 0.60, 0.95) > 0.9 and mean_in(mask, 0.0, 0.0, 0.2, 0.2) < 0.1


def test_no_person_in_the_rocket_picture(masker: PersonMask):
    assert float(masker.mask(photo("rocket.jpg")).mean()) < 0.05  # measured 1e-7


def test_one_face_on_the_astronaut_with_its_keypoints_in_place(finder: FaceFinder):
    (face,) = finder.faces(photo("astronaut.jpg"))
    left, top, right, bottom = face.box
    assert face.score > 0.8
    assert 0.3 < left < right < 0.6 and 0.1 < top < bottom < 0.4  # her face, by eye on the picture
    assert set(face.keypoints) == {"right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear"}
    for name, (x, y) in face.keypoints.items():
        margin = 0.02 if name.endswith("ear") else 0.0  # the ears' tragions sit on the box's sides (0.0003 out)
        assert left - margin <= x <= right + margin and top - margin <= y <= bottom + margin, name
    eyes = face.keypoints["right_eye"], face.keypoints["left_eye"]
    mouth = face.keypoints["mouth"]
    assert all(y < mouth[1] for _, y in eyes)
    assert eyes[0][0] < face.keypoints["nose_tip"][0] < eyes[1][0]  # her right eye is on the picture's left


def test_face_positions_are_fractions_of_a_wide_picture(finder: FaceFinder):
    """Her head and shoulders on the right half of a black 2:1 canvas: the model sees a letterboxed square, and the
    face must come back where it is on the canvas."""
    image = photo("astronaut.jpg")[40:296, 96:352]  # 256x256 around her face, so it keeps its size in the model
    canvas = np.zeros((256, 512, 3), np.uint8)
    canvas[:, 256:] = image
    (alone,) = finder.faces(image)
    (wide,) = finder.faces(canvas)
    assert wide.box[0] == pytest.approx(0.5 + alone.box[0] / 2, abs=0.02)
    assert wide.box[2] == pytest.approx(0.5 + alone.box[2] / 2, abs=0.02)
    assert wide.box[1] == pytest.approx(alone.box[1], abs=0.03)
    assert wide.keypoints["mouth"][1] == pytest.approx(alone.keypoints["mouth"][1], abs=0.03)


@pytest.mark.parametrize("name", ["rocket.jpg", "coffee.jpg"])
def test_no_face_without_a_person(finder: FaceFinder, name: str):
    assert finder.faces(photo(name)) == []


def test_anchors_follow_the_short_range_options(finder: FaceFinder):
    anchors = anchor_centres(finder.manifest.controls["anchors"], 128, 128)
    assert anchors.shape == (896, 2)
    assert anchors[0] == pytest.approx([0.5 / 16, 0.5 / 16]) and anchors[1] == pytest.approx(anchors[0])
    assert anchors[2] == pytest.approx([1.5 / 16, 0.5 / 16])  # two anchors per cell on the 16x16 grid
    assert anchors[512] == pytest.approx([0.5 / 8, 0.5 / 8]) and anchors[517] == pytest.approx(anchors[512])
    assert anchors[518] == pytest.approx([1.5 / 8, 0.5 / 8])  # six per cell on the 8x8 grid
    assert anchors[-1] == pytest.approx([7.5 / 8, 7.5 / 8])


def copy_model(path: Path, folder: Path) -> Path:
    for suffix in (".json", ".onnx"):
        shutil.copy(path.with_suffix(suffix), folder / path.with_suffix(suffix).name)
    return folder / path.name


def test_a_corrupted_model_is_refused_by_name(tmp_path: Path):
    copy = copy_model(PERSON_MODEL, tmp_path)
    onnx_file = copy.with_suffix(".onnx")
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(LiveError) as err:
        PersonMask(copy)
    assert str(onnx_file) in err.value.what and "sha256" in err.value.what and err.value.fix


def test_a_missing_model_names_the_file_and_the_fix(tmp_path: Path):
    copy = copy_model(FACE_MODEL, tmp_path)
    copy.with_suffix(".onnx").unlink()
    with pytest.raises(LiveError) as err:
        FaceFinder(copy)
    assert "face-detection.onnx" in err.value.what and err.value.fix


def test_the_shipped_models_fix_names_the_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A shipped model that is missing points at git and `make mediapipe-models`."""
    import live.video.people as people

    copy = copy_model(PERSON_MODEL, tmp_path)
    copy.with_suffix(".onnx").unlink()
    monkeypatch.setattr(people, "EXPORTED", tmp_path)
    with pytest.raises(LiveError) as err:
        PersonMask(copy)
    assert "make mediapipe-models" in err.value.fix


def test_a_model_of_another_kind_is_refused():
    with pytest.raises(LiveError, match="face-detector model, not a person-mask"):
        PersonMask(FACE_MODEL)
