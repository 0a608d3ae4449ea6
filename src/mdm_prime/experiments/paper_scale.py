"""Study ``paper_scale``: the paper-scale configurations (``owt-small``, ``cifar10``) build and train.

Each preset runs **one** optimizer step on CPU at batch 1 (then its valid-bound evaluation on one
item with K = 2, only to show the path works), on stand-in data of the real shapes, because
OpenWebText and CIFAR-10 are not installed here: a synthetic folder of ``.txt`` documents read with
the GPT-2 tokenizer (L = 1024, C = 50,257, as ``owt:DIR``) and random 3 × 32 × 32 images in the
``cifar-10-batches-py`` format (as ``cifar10:PATH``). The network, sub-tokenizer and objective are
exactly the preset's. Reported: parameters, forward FLOPs per token, the preset's training tokens
(``max_steps × batch × L``) and FLOPs (``3 × forward × tokens``), and the GPU time that would take at
an assumed sustained throughput (:data:`ASSUMED_GPU_FLOPS`).

    mdm-prime experiment paper_scale [--smoke]
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .common import payload
from .runner import run_study
from .runs import RunSpec

NAME = "paper_scale"
TITLE = "paper-scale configurations: one CPU step, parameters, GPU time from FLOPs"
ASSUMED_GPU_FLOPS = 400e12
"""Assumed sustained training throughput of one NVIDIA H100 SXM in bf16: 40 % of its 989 TFLOP/s
dense peak (FLOP/s). GPU hours = training FLOPs / this / 3600."""
CPU_MINUTES = 3.0
"""Estimated CPU time (2 cores): one owt-small step (124 M-parameter class) plus one CIFAR-10 U-Net step."""


def standin_owt(root: Path) -> str:
    """A folder of 48 synthetic ``.txt`` documents (~2,000 words each) as an ``owt:DIR`` spec."""
    folder = root / "standin-owt"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = [
        "the",
        "model",
        "masks",
        "every",
        "digit",
        "of",
        "a",
        "token",
        "and",
        "then",
        "reveals",
        "them",
        "one",
        "step",
        "at",
        "a",
        "time",
        "while",
        "the",
        "bound",
        "stays",
        "valid",
        "for",
        "any",
        "number",
        "of",
        "sub",
        "tokens",
        "in",
        "each",
        "position",
        "of",
        "the",
        "sequence",
    ]
    for i in range(48):
        path = folder / f"doc{i:03d}.txt"
        if not path.exists():
            path.write_text(" ".join(rng.choice(words, 2000)) + ".\n")
    return f"owt:{folder}"


def standin_cifar(root: Path) -> str:
    """Random CIFAR-10-shaped batches (8 images per file) as a ``cifar10:PATH`` spec."""
    folder = root / "standin-cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        path = folder / name
        if not path.exists():
            batch = {
                b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                b"labels": list(rng.integers(0, 10, 8)),
            }
            with open(path, "wb") as f:
                pickle.dump(batch, f)
    return f"cifar10:{folder}"


ONE_STEP = {
    "batch_size": "1",
    "grad_accum": "1",
    "max_steps": "1",
    "warmup_steps": "0",
    "eval_every": "0",
    "checkpoint_every": "0",
    "num_preview_samples": "0",
    "final_eval_sequences": "1",
    "final_eval_num_times": "2",
    "device": "cpu",
}


def specs(out_root: str | Path, smoke: bool = False) -> list[RunSpec]:
    root = Path(out_root) / "standin-data"
    owt, cifar = standin_owt(root), standin_cifar(root)
    owt_ov = {**ONE_STEP, "data": owt}
    cifar_ov = {**ONE_STEP, "data": cifar}
    if smoke:  # the same code path with small widths
        owt_ov.update(
            {
                "seq_len": "64",
                "model_size": "tiny",
                "model_overrides.dim": "32",
                "model_overrides.depth": "1",
                "model_overrides.heads": "2",
            }
        )
        cifar_ov.update(
            {
                "model_size": "toy",
                "model_overrides.base_channels": "8",
                "model_overrides.embed_dim": "8",
                "model_overrides.attention_resolutions": "[]",
            }
        )
    tag = "-smoke" if smoke else ""
    return [
        RunSpec(
            f"owt-small-1step{tag}",
            "owt-small",
            owt_ov,
            labels={"row_label": "owt-small (Prime ℓ=4)", "preset": "owt-small"},
        ),
        RunSpec(
            f"cifar10-1step{tag}",
            "cifar10",
            cifar_ov,
            labels={"row_label": "cifar10 (Prime ℓ=2)", "preset": "cifar10"},
        ),
    ]


def run(
    out_root: str | Path, results_dir: str | Path, *, smoke: bool = False, budget: float = 1.0, log=print
) -> dict:
    from ..configs import resolve_config

    rows = run_study(NAME, specs(out_root, smoke), out_root, log=log)
    for row in rows:
        preset = resolve_config(row["preset"])
        tokens = preset.max_steps * preset.batch_size * preset.seq_len
        if row["preset"] == "cifar10":
            tokens = preset.max_steps * preset.batch_size * 3 * 32 * 32  # seq_len is not used by images
        flops = 3.0 * row["fwd_flops_per_token"] * tokens
        row.update(
            headline=False,
            preset_max_steps=preset.max_steps,
            preset_batch_size=preset.batch_size,
            preset_train_tokens=tokens,
            preset_train_flops=flops,
            gpu_hours_at_assumed=flops / ASSUMED_GPU_FLOPS / 3600,
            cpu_step_wall_s=row["train_wall_s"],
        )
    return payload(
        NAME,
        smoke=smoke,
        budget=budget,
        rows=rows,
        extra={
            "title": TITLE,
            "assumed_gpu_flops": ASSUMED_GPU_FLOPS,
            "assumed_gpu": "one H100 SXM, bf16, 40 % of 989 TFLOP/s dense peak",
        },
    )


def section(data: dict) -> str:
    lines = [
        (
            "Stand-in data of the real shapes (OpenWebText and CIFAR-10 are not installed); assumed GPU "
            "throughput "
            f"{data['assumed_gpu_flops'] / 1e12:.0f} TFLOP/s sustained ({data['assumed_gpu']})."
        ),
        "",
        (
            "| preset | params | forward FLOPs/token | one CPU step (batch 1), s | loss finite | preset's "
            "training "
            "tokens | training FLOPs | GPU hours (assumed) |"
        ),
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['row_label']} | {r['params']:,} | {r['fwd_flops_per_token']:.3g} | "
            f"{r['cpu_step_wall_s']:.1f} |"
            f" {'yes' if r['valid_nats_per_token'] == r['valid_nats_per_token'] else 'no'} | "
            f"{r['preset_train_tokens']:.3g} | {r['preset_train_flops']:.3g} | "
            f"{r['gpu_hours_at_assumed']:,.0f} |"
        )
    return "\n".join(lines)


def reading(data: dict) -> list[str]:
    out = []
    for r in data["rows"]:
        out.append(
            f"{r['row_label']}: {r['params'] / 1e6:.1f} M parameters, builds and takes a training step on "
            "CPU "
            f"({r['cpu_step_wall_s']:.1f} s at batch 1); its full schedule is {r['preset_train_flops']:.2g} "
            f"training FLOPs, about {r['gpu_hours_at_assumed']:,.0f} GPU-hours at the assumed throughput."
        )
    return out
