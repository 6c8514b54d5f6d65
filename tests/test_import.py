"""`live models import`: tiny stand-ins for the foreign conventions, built here with onnx.helper, wrapped, then run
by the player's own Stylizer and by `live run`; every output is checked against numpy arithmetic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fixtures_live import ROOT, decode_frames, free_port, run_live, scene, show_with
from live.errors import LiveError
from live.models.importer import import_model
from live.models.manifest import load_manifest
from live.video.stylize import Stylizer

# Zoo stand-in: RGB -> (255 - B, 255 - G, 255 - R): channels swapped and inverted, always within 0..255.
ZOO_W, ZOO_B = -np.eye(3)[::-1], np.full(3, 255.0)
# TransformerNet stand-in: R' = 2G - 100, G' = R, B' = B / 2 + 200: leaves 0..255, so the wrapper must clip.
NET_W, NET_B = np.array([[0, 2, 0], [1, 0, 0], [0, 0, 0.5]]), np.array([-100.0, 0, 200])


def stand_in(path: Path, weight: np.ndarray, bias: np.ndarray, shape: list, opset: int, ir_version: int,
             input_name: str = "input1", dtype: int = TensorProto.FLOAT, reshape: list[int] | None = None) -> Path:
    """A 1x1-conv 'style network' in a foreign layout; weights also listed as inputs, as old exporters did."""
    weights = [numpy_helper.from_array(weight.reshape(3, 3, 1, 1).astype(np.float32), "w"),
               numpy_helper.from_array(bias.astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", [input_name, "w", "b"], ["output1"])]
    if reshape:  # a graph that only runs at one size, to make the import's own check fail
        weights.append(numpy_helper.from_array(np.array(reshape, np.int64), "fixed"))
        nodes = [helper.make_node("Reshape", [input_name, "fixed"], ["r"]),
                 helper.make_node("Conv", ["r", "w", "b"], ["output1"])]
    graph = helper.make_graph(
        nodes, "stand-in",
        [helper.make_tensor_value_info(input_name, dtype, shape),
         *(helper.make_tensor_value_info(w.name, w.data_type, list(w.dims)) for w in weights)],
        [helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, 3, None, None])], initializer=weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version), path)
    return path


def zoo(tmp_path: Path, **kwargs) -> Path:
    return stand_in(tmp_path / "mosaic.onnx", ZOO_W, ZOO_B, [1, 3, 224, 224], opset=9, ir_version=4, **kwargs)


def net(tmp_path: Path, **kwargs) -> Path:
    return stand_in(tmp_path / "candy.onnx", NET_W, NET_B, ["batch", 3, "height", "width"], opset=11,
                    ir_version=6, input_name="input", **kwargs)


def resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """ONNX Resize, linear, half-pixel, as a matrix: antialiased (triangle stretched by 1/scale) when shrinking;
    taps past the border read the edge pixel."""
    scale = n_out / n_in
    centre = (np.arange(n_out) + 0.5) / scale - 0.5
    reach = int(np.ceil(1 / scale)) + 1
    taps = np.arange(-reach, n_in + reach)
    weights = np.maximum(0, 1 - np.abs(taps[None] - centre[:, None]) * min(scale, 1.0))
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (slice(None), np.clip(taps, 0, n_in - 1)), weights)
    return matrix


def expected(image: np.ndarray, weight: np.ndarray, bias: np.ndarray, size: tuple[int, int] | None,
             strength: float = 1.0) -> np.ndarray:
    """What the wrapped model must output, in float64 numpy."""
    rgb = image[..., ::-1].astype(np.float64)
    x = rgb
    if size:  # the stand-in is affine per pixel, so it commutes with the (affine) resizes around it
        height, width = image.shape[:2]
        down = np.einsum("yi,ijc,xj->yxc", resize_matrix(size[0], height), rgb, resize_matrix(size[1], width),
                         optimize=True)
        x = np.einsum("yi,ijc,xj->yxc", resize_matrix(height, size[0]), down, resize_matrix(width, size[1]),
                      optimize=True)
    styled = np.clip(x @ weight.T + bias, 0, 255)
    return np.round(rgb + (styled - rgb) * strength)[..., ::-1]


def stylize(manifest: Path, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
    stylizer = Stylizer(manifest, ("cpu",), threads=2)
    stylizer.open()
    style = stylizer.styles[0]
    values = {"/video/style_a": style, "/video/style_b": style, "/video/blend": 0.0, "/video/strength": strength}
    return stylizer.process(image, values)


def test_zoo_model_at_opset_9_is_wrapped_resized_and_matches_numpy(tmp_path):
    out = tmp_path / "models"
    manifest_path = import_model(zoo(tmp_path), "onnx-zoo-style", out, styles=["mosaic"])
    manifest = load_manifest(manifest_path)
    assert manifest.kind == "image-to-image" and manifest.name == "mosaic"
    assert manifest.controls == {"styles": ["mosaic"], "strength_input": "strength"}
    assert [t.name for t in manifest.inputs] == ["frame", "strength"]
    assert manifest.provenance["preset"] == "onnx-zoo-style" and manifest.provenance["original_opset"] == 9
    assert manifest.licence.startswith("unknown")
    model = onnx.load(str(manifest.onnx_path))
    assert model.ir_version <= 10

    image = scene()
    for strength in (1.0, 0.5):
        got = stylize(manifest_path, image, strength).astype(int)
        assert got.shape == image.shape
        assert np.abs(got - expected(image, ZOO_W, ZOO_B, (224, 224), strength)).max() <= 1


def test_dynamic_transformernet_runs_at_frame_size_and_clips(tmp_path):
    manifest_path = import_model(net(tmp_path), "transformernet", tmp_path / "models", name="candy")
    image = scene()
    got = stylize(manifest_path, image).astype(int)
    want = expected(image, NET_W, NET_B, None)
    assert np.abs(got - want).max() <= 1
    assert (want == 255).any() and (want == 0).any()  # the clip really was exercised


def test_imported_model_plays_in_a_show(tmp_path, camera_file):
    manifest = import_model(zoo(tmp_path), "onnx-zoo-style", tmp_path / "models")
    show = show_with(tmp_path, video={"model": str(manifest)}, osc={"port": free_port()}, audio={"enabled": False},
                     params={"/video/style_a": "mosaic", "/video/style_b": "mosaic"})
    # show_with points every model at exported_models/; this one lives in tmp_path.
    show.write_text(show.read_text().replace(str(ROOT / "exported_models" / manifest.name), str(manifest)))
    record = tmp_path / "out.mp4"
    result = run_live(["run", str(show), "--source", str(camera_file), "--for", "2", "--record", str(record)])
    assert result.returncode == 0, result.stdout + result.stderr
    frames = decode_frames(record)
    assert len(frames) > 5
    ok, camera = cv2.VideoCapture(str(camera_file)).read()
    assert ok
    last = frames[-1][1].astype(int)
    assert np.abs(last - camera).mean() > 60  # inverted colours, not the camera image
    assert np.abs(last - expected(camera, ZOO_W, ZOO_B, (224, 224))).mean() < 4  # H.264 noise only


@pytest.mark.parametrize("make, preset, needle", [
    (lambda p: zoo(p, input_name="image"), "onnx-zoo-style", "'image'"),
    (net, "onnx-zoo-style", "[1, 3, 224, 224]"),
    (lambda p: net(p, dtype=TensorProto.UINT8), "transformernet", "uint8"),
])
def test_input_not_matching_the_preset_is_named(tmp_path, make, preset, needle):
    out = tmp_path / "models"
    with pytest.raises(LiveError) as err:
        import_model(make(tmp_path), preset, out)
    message = str(err.value)
    assert needle in message and f"the {preset} preset expects" in message
    assert not out.exists()


def test_corrupt_file_and_failing_model_leave_nothing_behind(tmp_path):
    out = tmp_path / "models"
    out.mkdir()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not a model" * 50)
    with pytest.raises(LiveError, match="bad.onnx is not a readable ONNX model"):
        import_model(bad, "transformernet", out)
    # Fits the preset on paper, but only runs at 224x224: the run on a small frame fails before anything is written.
    fragile = net(tmp_path, reshape=[1, 3, 224, 224])
    with pytest.raises(LiveError, match="fails its check"):
        import_model(fragile, "transformernet", out)
    assert list(out.iterdir()) == []


def test_existing_name_needs_force(tmp_path):
    out = tmp_path / "models"
    import_model(zoo(tmp_path), "onnx-zoo-style", out)
    with pytest.raises(LiveError, match="already exists"):
        import_model(zoo(tmp_path), "onnx-zoo-style", out)
    import_model(zoo(tmp_path), "onnx-zoo-style", out, licence="CC-BY-4.0", force=True)
    assert load_manifest(out / "mosaic.json").licence == "CC-BY-4.0"
