"""The GPU tier: IOBinding frame path, TensorRT/CUDA options, fp16 models, the GPU show's bench.

Everything here runs on the CPU provider with the same code the GPU runs; the one test that needs a GPU skips
cleanly without one (scripts/gpu-check.sh runs it where a GPU is lent).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from live.bench import GPU_HEIGHT, GPU_WIDTH, gpu_bench
from live.inference import CACHE, PROVIDERS, model_precision, open_session, provider_options
from live.models import build_fp16
from live.models.manifest import load_manifest
from live.show import load_show
from live.video.capture import BuiltinSource
from live.video.stylize import Stylizer

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "exported_models"
FLOAT, HALF = SHIPPED / "painterly-arbitrary.json", SHIPPED / "painterly-arbitrary-fp16.json"
GPU_SHOW = ROOT / "show_configs" / "gpu.toml"
CAPI = Path(ort.__file__).parent / "capi"


def frames(count: int, width: int = 128, height: int = 96) -> list[np.ndarray]:
    """Distinct frames of the built-in photograph under its camera motion."""
    source = BuiltinSource(width, height)
    return [source.read() for _ in range(count)]


def feeds_for(manifest, image: np.ndarray, style: int, strength: float = 1.0) -> dict[str, np.ndarray]:
    """A style model's inputs for style number `style`, built by the Stylizer from the manifest (input names and
    sizes are never assumed here)."""
    stylizer = Stylizer(manifest.source, ("cpu",))
    name = stylizer.styles[style % len(stylizer.styles)]
    return stylizer.feeds(image, {"/video/style_a": name, "/video/style_b": name, "/video/blend": 0.0,
                                  "/video/strength": strength})


def test_bound_frame_path_is_bit_identical_to_run_and_reuses_its_buffers():
    manifest = load_manifest(FLOAT)
    session = open_session(manifest.onnx_path, ("cpu",), threads=2)
    out = manifest.outputs[0].name
    path = session.frame_path([out])
    assert path.device == "cpu"
    kept, pointers = [], set()
    for i, image in enumerate(frames(4)):
        feeds = feeds_for(manifest, image, style=3 if i < 2 else 17, strength=1.0 if i != 3 else 0.6)
        copies = path.host_copies
        (value,) = path.run(feeds)
        pointers.add(value.data_ptr())
        got = path.host(value)
        # frame up + frame down; a control is copied only on the frame where it changed
        assert path.host_copies - copies == {0: 4, 1: 2, 2: 3, 3: 3}[i]
        want = session.run([out], feeds)[0]
        assert got.dtype == np.uint8 and got.shape == image.shape
        assert np.array_equal(got, want), f"frame {i}: bound run differs from run"
        kept.append((got, want))
    assert len(pointers) == 1  # one output buffer, reused for every frame
    assert path.allocations == len(feeds) + 1  # each input's buffer and the output's, made on the first frame only
    for got, want in kept:  # what was handed out is a copy: later frames never overwrite it
        assert np.array_equal(got, want)
    bigger = frames(1, 160, 120)[0]  # a new frame size: new buffers, same result
    feeds = feeds_for(manifest, bigger, style=5)
    (value,) = path.run(feeds)
    assert value.shape() == [120, 160, 3] and np.array_equal(path.host(value), session.run([out], feeds)[0])
    assert path.allocations == len(feeds) + 1 + 2  # the frame's and the output's buffers, remade once


def test_stylizer_frames_go_through_the_bound_path():
    stylizer = Stylizer(FLOAT, ("cpu",), threads=2)
    stylizer.open()
    values = {"/video/style_a": "umber-oil", "/video/style_b": "starry-blue", "/video/blend": 0.3,
              "/video/strength": 1.0}
    for image in frames(2):
        got = stylizer.process(image, values)
        assert np.array_equal(got, stylizer.session.run(None, stylizer.feeds(image, values))[0])
    controls = len(stylizer.feeds(image, values)) - 1  # style weights and strength: copied once, unchanged since
    assert stylizer.frames.runs == 2 and stylizer.frames.host_copies == 2 * 2 + controls


def test_a_stage_output_feeds_the_next_model_on_the_device():
    """painterly-26 then painterly-arbitrary: the first model's output OrtValue is the second's input, with no
    copy between them; the result equals two plain runs through host memory."""
    first, second = load_manifest(SHIPPED / "painterly-26.json"), load_manifest(FLOAT)
    a = open_session(first.onnx_path, ("cpu",), threads=2)
    b = open_session(second.onnx_path, ("cpu",), threads=2)
    path_a, path_b = a.frame_path([first.outputs[0].name]), b.frame_path([second.outputs[0].name])
    for i, image in enumerate(frames(3)):
        copies = path_a.host_copies + path_b.host_copies
        feeds_a = feeds_for(first, image, style=8)
        (middle,) = path_a.run(feeds_a)
        feeds_b = feeds_for(second, image, style=19)
        feeds_b[second.inputs[0].name] = middle  # stays where it is: bound, not copied
        got = path_b.host(path_b.run(feeds_b)[0])
        if i:
            assert path_a.host_copies + path_b.host_copies - copies == 2  # one frame up, one frame down
        plain = a.run(None, feeds_a)[0]
        want = b.run(None, {**feeds_b, second.inputs[0].name: plain})[0]
        assert np.array_equal(got, want)


def test_provider_options_for_float_half_and_int8_models(tmp_path):
    all_providers = ort.get_all_providers()
    assert set(PROVIDERS.values()) <= set(all_providers)  # real ONNX Runtime provider names
    assert model_precision(load_manifest(FLOAT).onnx_path) == "float32"
    assert model_precision(load_manifest(HALF).onnx_path) == "float16"
    assert model_precision(load_manifest(SHIPPED / "style-predictor.json").onnx_path) == "int8"
    trt, cuda = PROVIDERS["tensorrt"], PROVIDERS["cuda"]
    for name, precision in (("painterly-arbitrary", "float32"), ("painterly-arbitrary-fp16", "float16"),
                            ("style-predictor", "int8")):
        options = provider_options(trt, precision, name, tmp_path)
        assert options["trt_engine_cache_enable"] == options["trt_timing_cache_enable"] == "True"
        assert Path(options["trt_engine_cache_path"]) == Path(options["trt_timing_cache_path"]) == tmp_path / "tensorrt"
        assert options["trt_engine_cache_prefix"] == name  # engines named by model: fp32 and fp16 never collide
        assert options["trt_fp16_enable"] == "True"
        assert options["trt_int8_enable"] == ("True" if precision == "int8" else "False")
    assert provider_options(trt, "float32", "x")["trt_engine_cache_path"] == str(CACHE / "tensorrt")
    assert provider_options(cuda, "float16", "x")["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert provider_options(PROVIDERS["cpu"], "float32", "x") == {}
    # Every option name is one this ONNX Runtime's provider library reads (onnxruntime-gpu builds only).
    for provider, library in ((trt, "libonnxruntime_providers_tensorrt.so"),
                              (cuda, "libonnxruntime_providers_cuda.so")):
        if not (CAPI / library).is_file():
            continue
        strings = (CAPI / library).read_bytes()  # option names are C strings in the library
        for key in provider_options(provider, "int8", "x", tmp_path):
            assert key.encode() + b"\x00" in strings, f"{key} is not an option of {provider}"
        assert b"trt_no_such_option\x00" not in strings


def test_fp16_model_is_built_from_the_shipped_float_model_and_reproducibly(tmp_path):
    half = load_manifest(HALF)
    float_ = load_manifest(FLOAT)
    assert half.tier == "gpu" and half.inputs == float_.inputs and half.outputs == float_.outputs
    assert half.controls == float_.controls and half.licence == float_.licence
    assert half.provenance["from"] == {float_.file: float_.sha256}, "rebuild: make models"
    for suffix in (".json", ".onnx"):
        shutil.copy(FLOAT.with_suffix(suffix), tmp_path / FLOAT.with_suffix(suffix).name)
    (built,) = build_fp16.build(tmp_path, ("painterly-arbitrary",))
    assert built.read_bytes() == half.onnx_path.read_bytes()
    assert json.loads(built.with_suffix(".json").read_text())["sha256"] == half.sha256
    # The wrapper stayed float32: the uint8 frame's first and last nodes are float32 Casts.
    graph = onnx.load(str(built)).graph
    casts = {node.input[0]: node for node in graph.node if node.op_type == "Cast"}
    assert casts["frame"].attribute[0].i == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)


def test_fp16_output_is_close_to_fp32_on_cpu():
    """Stated tolerance: mean difference <= 0.5 grey levels, 99th percentile <= 2, per style."""
    half, float_ = load_manifest(HALF), load_manifest(FLOAT)
    s16 = open_session(half.onnx_path, ("cpu",), threads=2)
    s32 = open_session(float_.onnx_path, ("cpu",), threads=2)
    image = frames(1, 160, 120)[0]
    for style in (1, 10, 19):
        feeds = feeds_for(float_, image, style)
        a = s32.run(None, feeds)[0].astype(np.int16)
        b = s16.run(None, feeds)[0].astype(np.int16)
        diff = np.abs(a - b)
        assert diff.mean() <= 0.5 and np.percentile(diff, 99) <= 2, (style, diff.mean(), diff.max())
        assert np.abs(a - image).mean() > 10  # and both really stylize


def test_gpu_bench_measures_the_bound_path_at_1280x720():
    lines: list[str] = []
    result = gpu_bench(load_show(GPU_SHOW), 0.1, lines.append)
    assert result["model"] == "painterly-arbitrary-fp16" and result["size"] == [GPU_WIDTH, GPU_HEIGHT]
    assert result["provider"] in PROVIDERS and result["frames"] >= 3
    assert result["host_copies_per_frame"] == 2.0  # counted: frame up, frame down, controls unchanged
    assert result["buffers_allocated_while_timed"] == 0
    assert result["plain_run_fps"] > 0 and "plain Session.run on the same frames" in "\n".join(lines)
    assert 0 < result["frame_ms"]["p50"] <= result["frame_ms"]["p99"]
    assert result["fps"] == pytest.approx(1000 / np.mean([result["frame_ms"]["p50"]]), rel=0.6)
    text = "\n".join(lines)
    assert "1280x720" in text and "host copies per frame" in text
    if result["provider"] == "cpu":
        assert "no GPU here: the GPU path ran on the CPU provider" in text


def gpu_provider() -> str | None:
    """"cuda" or "tensorrt" when a session really runs on one here."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    provider = open_session(load_manifest(HALF).onnx_path).provider
    return provider if provider != "cpu" else None


def test_fp16_on_the_gpu_matches_fp32_on_cpu():
    provider = gpu_provider()
    if provider is None:
        pytest.skip("no working CUDA/TensorRT provider on this machine")
    half, float_ = load_manifest(HALF), load_manifest(FLOAT)
    gpu = open_session(half.onnx_path)
    cpu = open_session(float_.onnx_path, ("cpu",))
    path = gpu.frame_path([half.outputs[0].name])
    assert path.device == "cuda"
    for image in frames(3, GPU_WIDTH, GPU_HEIGHT):
        feeds = feeds_for(float_, image, 19)
        got = path.host(path.run(feeds)[0]).astype(np.int16)
        diff = np.abs(got - cpu.run(None, feeds)[0].astype(np.int16))
        assert diff.mean() <= 1.0 and np.percentile(diff, 99) <= 4, (diff.mean(), np.percentile(diff, 99))
