"""Bit-reproducible training on CPU: :func:`enable_determinism`.

Without it, two runs of one config with the same seed on 2 intra-op threads end with different
weights after a few dozen steps (identical on 1 thread): a multi-threaded kernel whose float
summation order depends on thread scheduling, amplified by training. See ``docs/results.md``
(determinism section) for the op and the measured cost.
"""

from __future__ import annotations

import os

import torch

__all__ = ["enable_determinism", "determinism_enabled"]


def enable_determinism(enabled: bool = True) -> None:
    """Make every op use its deterministic implementation (``torch.use_deterministic_algorithms``);
    with CUDA also set ``CUBLAS_WORKSPACE_CONFIG`` as cuBLAS requires. ``enabled=False`` restores the
    default. Seeds are not touched (the trainer seeds everything from ``cfg.seed``).

    ``torch.utils.deterministic.fill_uninitialized_memory`` is switched off: by default deterministic
    mode fills every ``torch.empty`` with NaN (thousands of fills per training step), which only
    matters for code that reads memory it never wrote; this package does not."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(enabled))
    torch.utils.deterministic.fill_uninitialized_memory = not enabled


def determinism_enabled() -> bool:
    """Whether deterministic algorithms are on."""
    return torch.are_deterministic_algorithms_enabled()
