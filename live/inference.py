"""Inference backends, and ONNX Runtime sessions on the best provider that really works here.

`Session.run` is the one door to a model: stages, the synth, the bench and the model checks all go through it, so
a new backend (a remote server, say) is one class with `run` plus one line in BACKENDS.

onnxruntime-gpu lists TensorRT and CUDA even on machines without a GPU; asking for them there logs a screen of
errors and silently falls back to CPU. So we ask, capture what ORT writes to stderr while the session is made,
read back which provider it actually chose, and turn the noise into one line the user can act on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
TRT_CACHE = Path.home() / ".cache" / "live" / "tensorrt"


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

    def describe(self) -> str:
        line = f"ONNX Runtime provider: {self.provider.upper() if self.provider != 'tensorrt' else 'TensorRT'}"
        return f"{line} ({self.fallback})" if self.fallback else line


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
    provider_options = []
    for name in wanted:
        if name == "TensorrtExecutionProvider":
            TRT_CACHE.mkdir(parents=True, exist_ok=True)
            provider_options.append({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(TRT_CACHE),
                                     "trt_fp16_enable": "True"})
        else:
            provider_options.append({})
    try:
        with captured_output() as log:
            session = ort.InferenceSession(str(model), sess_options=options, providers=wanted,
                                           provider_options=provider_options)
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
