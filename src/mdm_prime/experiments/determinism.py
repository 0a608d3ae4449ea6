"""Bit-reproducible training: :func:`enable_determinism` and the measurement behind it.

Two runs of one config with the same seed on 2 intra-op threads used to end with different weights
after a few dozen steps (identical on 1 thread): the sub-token embedding's ``weight[y]`` backward is a
multi-threaded ``index_put_(accumulate=True)`` whose float summation order depends on thread
scheduling, amplified by training. The root cause is fixed in ``models/adapter.py`` (``F.embedding``,
whose CPU backward is deterministic), so CPU training is bit-reproducible **without any flag**
(``tests/experiments/test_determinism.py`` checks it on 2 threads).

:func:`enable_determinism` is kept, off by default, for what that fix does not cover: CUDA kernels
that are non-deterministic by design (atomics in scatter/index_add and some cuBLAS paths, which
need ``CUBLAS_WORKSPACE_CONFIG``) and any future op with the same problem; the experiment runner
turns it on for its runs. See ``docs/results.md`` (determinism section) for the measured cost.
"""

from __future__ import annotations

import os

import torch

from .common import AR, MDM, PRIME

__all__ = ["determinism_enabled", "enable_determinism"]


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


# ----------------------------------------------------------------------------- measurement
_MODES = ("default", "deterministic", "deterministic_fill", "f_embedding")
"""``default``: no flag; ``deterministic``: :func:`enable_determinism`; ``deterministic_fill``: the
flag with PyTorch's default NaN-filling of empty tensors; ``f_embedding``: no flag, the adapter's
``weight[y]`` replaced by ``F.embedding`` (the targeted fix proposed for models/adapter.py)."""


def _set_mode(mode: str):
    import torch.nn.functional as F

    from ..models import adapter

    original = adapter.SubTokenEmbedding.forward

    def embedding_forward(self, y):
        if self.variant != "concat":
            return original(self, y)
        batch, n = y.shape
        return F.embedding(y, self.weight).reshape(batch, n // self.length, self.dim)

    torch.use_deterministic_algorithms(mode.startswith("deterministic"))
    torch.utils.deterministic.fill_uninitialized_memory = mode == "deterministic_fill"
    adapter.SubTokenEmbedding.forward = embedding_forward if mode == "f_embedding" else original
    return lambda: (setattr(adapter.SubTokenEmbedding, "forward", original), enable_determinism(False))


def _train(mode: str, overrides: dict, steps: int, warmup: int = 0):
    """Weights after ``steps`` optimizer steps and the mean seconds per step after ``warmup``."""
    import tempfile
    import time

    from ..configs import resolve_config
    from ..train import Trainer

    restore = _set_mode(mode)
    try:
        cfg = resolve_config(
            "text-tiny",
            {
                "max_steps": str(steps),
                "num_preview_samples": "0",
                "eval_every": "0",
                "checkpoint_every": "0",
                **overrides,
            },
        )
        with tempfile.TemporaryDirectory() as d:
            trainer = Trainer(cfg, d, show_progress=False)
            for _ in range(warmup):
                trainer.train_step()
            start = time.perf_counter()
            for _ in range(steps - warmup):
                trainer.train_step()
            per_step = (time.perf_counter() - start) / max(1, steps - warmup)
            weights = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    finally:
        restore()
    return weights, per_step


TINY = {
    "model_size": "mini",
    "model_overrides.dim": "64",
    "batch_size": "16",
    "seq_len": "64",
    "warmup_steps": "5",
    "precision": "fp32",
    "max_train_tokens": "200000",
}


def main(argv=None) -> int:
    """``python -m mdm_prime.experiments.determinism [--steps N] [--reps R] [--out docs/results]``:
    (1) max |Δweight| between two same-seed runs of a tiny config after 40 steps, per family and
    mode, on 2 threads; (2) seconds per step of the main job (``text-tiny``, Prime ℓ = 2) per mode.
    Writes ``determinism.json`` and ``determinism.md`` (the results page appends the latter)."""
    import argparse
    import json
    import platform
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m mdm_prime.experiments.determinism")
    p.add_argument("--steps", type=int, default=43, help="main-job steps per timing (first 3 not timed)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spread = {}
    for fam in (PRIME, MDM, AR):
        for mode in ("default", "deterministic", "f_embedding"):
            ov = {**TINY, "family": fam, "subtokens": "2" if fam == PRIME else "1"}
            a, _ = _train(mode, ov, 40)
            b, _ = _train(mode, ov, 40)
            spread[f"{fam}/{mode}"] = float((a - b).abs().max())
            print(
                f"{fam:6s} {mode:14s} max |w1 - w2| after 40 steps: {spread[f'{fam}/{mode}']:.3g}", flush=True
            )
    timing: dict = {m: [] for m in _MODES}
    for _ in range(args.reps):
        for mode in _MODES:
            _, dt = _train(mode, {"family": PRIME, "subtokens": "2"}, args.steps, warmup=3)
            timing[mode].append(dt)
            print(f"main job, {mode:18s}: {dt * 1000:.0f} ms/step", flush=True)
    best = {m: min(v) for m, v in timing.items()}
    data = {
        "threads": args.threads,
        "tiny_config": TINY,
        "weight_spread_after_40_steps": spread,
        "main_job_seconds_per_step": timing,
        "best_seconds_per_step": best,
        "cost_vs_default": {m: best[m] / best["default"] - 1 for m in best},
        "machine": f"{platform.machine()}, torch {torch.__version__}",
        "command": "python -m mdm_prime.experiments.determinism " + " ".join(argv or []),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "determinism.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "## Determinism",
        "",
        (
            f"`{data['command'].strip()}` ({args.threads} threads; timings measured on a shared, "
            "busy machine: compare the modes with each other, not with other pages)"
        ),
        "",
        "Max |Δ weight| between two runs of one tiny config with the same seed after 40 steps:",
        "",
        "| family | default | `enable_determinism()` | `F.embedding` in the adapter, no flag |",
        "|---|---:|---:|---:|",
    ]
    for fam in (PRIME, MDM, AR):
        lines.append(
            f"| {fam} | "
            + " | ".join(f"{spread[f'{fam}/{m}']:.3g}" for m in ("default", "deterministic", "f_embedding"))
            + " |"
        )
    lines += [
        "",
        (
            "Main job (`text-tiny`, Prime ℓ = 2, batch 32 × L 128), best of "
            f"{args.reps} × {args.steps - 3} timed steps:"
        ),
        "",
        "| mode | ms/step | cost vs default |",
        "|---|---:|---:|",
    ]
    for m in _MODES:
        lines.append(f"| {m} | {best[m] * 1000:.0f} | {data['cost_vs_default'][m]:+.1%} |")
    (out / "determinism.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'determinism.json'} and {out / 'determinism.md'}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
