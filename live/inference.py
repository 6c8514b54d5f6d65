"""Inference backends, and ONNX Runtime sessions on the best provider that really works here.

`Session.run` is the one door to a model: stages, the synth, the bench and the model checks all go through it, so
a new backend (a remote server, say) is one class with `run` plus one line in BACKENDS.

onnxruntime-gpu lists TensorRT and CUDA even on machines without a GPU; asking for them there logs a screen of
errors and silently falls back to CPU. So we ask, capture what ORT writes to stderr while the session is made,
read back which provider it actually chose, and turn the noise into one line the user can act on.

The GPU tier's frame path is `Session.frame_path`: a BoundRun keeps a model's inputs and outputs in ONNX Runtime
buffers on the session's device (IOBinding), reused frame after frame, so a frame crosses to the device once and
back once, and one model's output can feed the next with no host copy. On the CPU provider the same code runs with
device "cpu", which is how the tests check it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from live.errors import LiveError
from live.parts import Kinds
from live.stdio import captured_output

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
DEFAULT_ORDER = ("tensorrt", "cuda", "cpu")
#: Per-user cache (XDG): TensorRT engines and timing cache, rebuilt on demand, never shipped.
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "live"
SMALL_INPUT = 4096  # elements: an input this small (a control vector) is copied to the device only when it changes


@dataclass
class Session:
    """A loaded model plus the provider it runs on and, if it fell back, why."""

    _model: ort.InferenceSession
    provider: str  # short name: "tensorrt", "cuda" or "cpu"
    fallback: str = ""  # e.g. "CUDA unavailable: libcublasLt.so.13 missing; using CPU"

    def run(self, outputs: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs (None: all) for one set of inputs."""
        return self._model.run(outputs, feeds)

    def io_binding(self) -> ort.IOBinding:
        """A binding of preallocated input and output buffers, for `run_bound` (no allocation per run)."""
        return self._model.io_binding()

    def run_bound(self, binding: ort.IOBinding) -> None:
        """Run on a binding's buffers: the synth's per-block path, where allocating outputs would cost time."""
        self._model.run_with_iobinding(binding)

    @property
    def device(self) -> str:
        """Where this session's inputs and outputs live for `frame_path`: "cuda" on a GPU provider, else "cpu"."""
        return "cuda" if self.provider in ("cuda", "tensorrt") else "cpu"

    def frame_path(self, outputs: Sequence[str]) -> BoundRun:
        """Reusable device-side buffers for running this model frame after frame (see BoundRun)."""
        return BoundRun(self, outputs)

    def describe(self) -> str:
        line = f"ONNX Runtime provider: {self.provider.upper() if self.provider != 'tensorrt' else 'TensorRT'}"
        return f"{line} ({self.fallback})" if self.fallback else line


_NUMPY = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class BoundRun:
    """One model run frame after frame through IOBinding, with every buffer on the session's device and reused.

    A host array is copied into its device buffer (one host copy; a small control input only when its value
    changed); an OrtValue, e.g. the previous stage's output, is bound as it is, with no copy. Outputs go into
    device buffers allocated once per frame size (their shapes follow the inputs' named dimensions, H and W) and
    stay there until `host` copies one out. `host_copies` counts every copy between host and buffers and
    `allocations` every buffer made, so the bench and tests report what happened, not a claim."""

    def __init__(self, session: Session, outputs: Sequence[str]) -> None:
        model = session._model
        self.session, self.device, self.outputs = session, session.device, list(outputs)
        self._shapes = {a.name: a.shape for a in (*model.get_inputs(), *model.get_outputs())}
        self._dtypes = {a.name: _NUMPY.get(a.type) for a in model.get_outputs()}
        self._binding = model.io_binding()
        self._inputs: dict[str, ort.OrtValue] = {}
        self._controls: dict[str, np.ndarray] = {}  # small inputs' values as last copied
        self._outputs: dict[str, ort.OrtValue] = {}
        self.host_copies = 0
        self.allocations = 0
        self.runs = 0

    def run(self, feeds: Mapping[str, np.ndarray | ort.OrtValue]) -> list[ort.OrtValue]:
        """Run on `feeds`; the outputs, in the order asked for, as OrtValues on the device (valid until the next
        run: copy with `host` or feed them to another BoundRun)."""
        dims: dict[str, int] = {}
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                self._binding.bind_ortvalue_input(name, value)
                self._inputs.pop(name, None)
                self._controls.pop(name, None)
                shape = value.shape()
            else:
                shape = self._upload(name, np.ascontiguousarray(value))
            dims.update({d: size for d, size in zip(self._shapes[name], shape) if isinstance(d, str)})
        for name in self.outputs:
            shape = [dims.get(d) if isinstance(d, str) else d for d in self._shapes[name]]
            if any(not isinstance(d, int) for d in shape) or self._dtypes[name] is None:
                raise LiveError(f"output {name} of {self.session.describe()} has a size or type its inputs do not "
                                "fix, so it cannot be preallocated", "run this model with Session.run")
            if name not in self._outputs or self._outputs[name].shape() != shape:
                self._outputs[name] = ort.OrtValue.ortvalue_from_shape_and_type(shape, self._dtypes[name],
                                                                                self.device, 0)
                self._binding.bind_ortvalue_output(name, self._outputs[name])
                self.allocations += 1
        self._binding.synchronize_inputs()
        self.session._model.run_with_iobinding(self._binding)
        self._binding.synchronize_outputs()
        self.runs += 1
        return [self._outputs[name] for name in self.outputs]

    def _upload(self, name: str, array: np.ndarray) -> tuple[int, ...]:
        """Copy a host array into `name`'s device buffer (a new buffer only when its shape or type changes)."""
        buffer = self._inputs.get(name)
        if buffer is None or buffer.shape() != list(array.shape) or _NUMPY.get(buffer.data_type()) != array.dtype:
            buffer = ort.OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype, self.device, 0)
            self._binding.bind_ortvalue_input(name, buffer)
            self._inputs[name] = buffer
            self._controls.pop(name, None)
            self.allocations += 1
        elif name in self._controls and np.array_equal(self._controls[name], array):
            return array.shape  # an unchanged control: already on the device
        buffer.update_inplace(array)
        self.host_copies += 1
        if array.size <= SMALL_INPUT:
            self._controls[name] = array.copy()
        return array.shape

    def host(self, value: ort.OrtValue) -> np.ndarray:
        """A host copy of an output (the frame that leaves the device), safe to keep after the next run."""
        self.host_copies += 1
        array = value.numpy()  # a copy from a GPU; a view of the buffer on the CPU, which the next run overwrites
        return array.copy() if self.device == "cpu" else array


def model_precision(model: Path) -> str:
    """"int8" when the model is quantized (Q/DQ nodes), "float16" when it holds half-precision weights, else
    "float32"."""
    proto = onnx.load(str(model), load_external_data=False)
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in proto.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return "float16"
    return "float32"


def provider_options(provider: str, precision: str, name: str, cache: Path = CACHE) -> dict[str, str]:
    """ONNX Runtime options for `provider` (its full name) and a model of `precision` named `name`.

    TensorRT: engines and the timing cache are kept in `cache`/tensorrt, so only the first session on a GPU pays
    for the build (minutes); engines are named by model. Every layer may run in fp16 (TensorRT keeps fp32 where fp16
    is not faster; the projector shows 8 bits per channel, and tests/test_gpu_tier.py bounds the fp16 model's
    difference); a quantized (Q/DQ) model also in int8, as its scales say. CUDA: the fastest
    convolution algorithm is searched once per frame size (a show's size is fixed) and the memory arena grows only
    by what is asked. Option names are those of ONNX Runtime 1.31's providers (checked by the tests)."""
    if provider == "TensorrtExecutionProvider":
        folder = str(cache / "tensorrt")
        return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": folder,
                "trt_engine_cache_prefix": name, "trt_timing_cache_enable": "True", "trt_timing_cache_path": folder,
                "trt_fp16_enable": "True",
                "trt_int8_enable": "True" if precision == "int8" else "False"}
    if provider == "CUDAExecutionProvider":
        return {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "True",
                "arena_extend_strategy": "kSameAsRequested"}
    return {}


def _reason(log: str, provider: str) -> str:
    """The first useful cause in ORT's error spam for `provider`, in a few words."""
    if provider == "TensorrtExecutionProvider" and "install TensorRT" in log:
        return "TensorRT libraries not found"
    missing = re.search(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", log)
    need = re.search(r"Require (cuDNN [\d.*]+ and CUDA [\d.*]+)", log)
    if missing:
        return f"{missing.group(1)} not found" + (f" (needs {need.group(1).rstrip('.')})" if need else "")
    if "no CUDA-capable device" in log or "CUDA failure 100" in log:
        return "no CUDA-capable GPU"
    lines = [line.strip() for line in log.splitlines() if "rror" in line]
    return lines[0][-160:] if lines else "not available on this machine"


_LABEL = {"TensorrtExecutionProvider": "TensorRT", "CUDAExecutionProvider": "CUDA"}


def open_session(model: Path, providers: tuple[str, ...] = DEFAULT_ORDER, threads: int = 0) -> Session:
    """Create a session trying `providers` in order; the provider in use is the one ORT reports, not the one asked."""
    unknown = [p for p in providers if p not in PROVIDERS]
    if unknown:
        raise LiveError(f"unknown ONNX Runtime provider(s): {', '.join(unknown)}",
                        f"use some of: {', '.join(PROVIDERS)}")
    available = set(ort.get_available_providers())
    wanted = [PROVIDERS[p] for p in providers if PROVIDERS[p] in available]
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        precision = model_precision(model) if "TensorrtExecutionProvider" in wanted else "float32"
        chosen = [provider_options(name, precision, model.stem) for name in wanted]
        if "TensorrtExecutionProvider" in wanted:
            (CACHE / "tensorrt").mkdir(parents=True, exist_ok=True)
        with captured_output() as log:
            session = ort.InferenceSession(str(model), sess_options=options, providers=wanted,
                                           provider_options=chosen)
    except Exception as err:  # ORT raises its own Fail/InvalidGraph types; all mean the same to the user
        raise LiveError(f"ONNX Runtime could not load {model}: {str(err).strip()[:300]}",
                        "check the file is a valid ONNX model (rebuild or re-export it)") from None
    active = session.get_providers()[0]
    short = next(k for k, v in PROVIDERS.items() if v == active)
    skipped = [name for name in wanted[: wanted.index(active)]]
    fallback = "; ".join(f"{_LABEL[name]} unavailable: {_reason(log[0], name)}" for name in skipped)
    if fallback:
        fallback += f"; using {_LABEL.get(active, 'CPU')}"
    return Session(session, short, fallback)


#: Inference backends by name (`[video] backend`): each opens a model file as a Session.
BACKENDS = Kinds("inference backend", "[video] backend")
BACKENDS.register("onnxruntime", open_session)
