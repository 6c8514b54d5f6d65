"""One set-up for every `live train` run, so the command in a manifest rebuilds the same weights.

CPU kernels split their reductions by thread, so the thread count changes the last bits of every sum; fixing it
(and asking for deterministic kernels) makes a run repeat exactly on the same kind of machine.
"""

from __future__ import annotations

import os

import torch

TRAIN_THREADS = 2  # the 2-core machine every shipped model is trained and checked on


def reproducible(seed: int, threads: int = TRAIN_THREADS) -> torch.Generator:
    """Seed torch, fix the thread count, ask for deterministic kernels; return a generator for data sampling.

    On CUDA some backward kernels (bilinear upsampling) have no deterministic version: those warn, not fail."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic matmuls
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)
