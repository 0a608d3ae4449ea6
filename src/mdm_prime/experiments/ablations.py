"""Study ``ablations``: training objective and carry-over, Prime ℓ = 2 at the main-job budget.

Three runs with the same backbone, tokens and seed: objective ``L_prime`` with carry-over (the
default, docs/method.md §3–4), objective ``L_valid`` with carry-over (§5), and ``L_prime``
**without** carry-over (the loss uses the plain softmax over all C classes, as the paper's released
text models were trained; implemented in :mod:`.runs` as :class:`~.runs.NoCarryOverFamily`, a
diffusion family whose ``loss`` skips carry-over, used only to train this run). All three are *evaluated* the same way, with the valid bound of the
carry-over model: which training choice gives the better valid bound at equal compute?

    mdm-prime experiment ablations [--budget X] [--smoke]
"""

from __future__ import annotations

from pathlib import Path

from .common import (
    MAIN_JOB_STEPS,
    PRIME,
    fmt_pm,
    payload,
    scaled_steps,
    smoke_text_data,
    text_spec,
)
from .runner import run_study
from .runs import RunSpec

NAME = "ablations"
TITLE = "training objective and carry-over (Prime ℓ = 2)"
CPU_MINUTES = 46.0
"""Estimated CPU time at budget 1 on 2 AVX2 cores in fp32 (the default run is shared with
``ell_sweep``), from the measured run at budget 0.25: two new runs, 11.5 min wall."""


def specs(smoke: bool = False, budget: float = 1.0, data: str | None = None) -> list[RunSpec]:
    steps = scaled_steps(4 if smoke else MAIN_JOB_STEPS, budget)
    rows = [
        ("L_prime, carry-over (default)", text_spec(PRIME, 2, steps=steps, smoke=smoke, data=data)),
        (
            "L_valid, carry-over",
            text_spec(PRIME, 2, steps=steps, smoke=smoke, data=data, objective="valid"),
        ),
        (
            "L_prime, no carry-over",
            text_spec(PRIME, 2, steps=steps, smoke=smoke, data=data, carry_over=False),
        ),
    ]
    return [
        RunSpec(s.name, s.preset, s.overrides, s.variant, {**s.labels, "row_label": f"Prime ℓ=2: {label}"})
        for label, s in rows
    ]


def run(
    out_root: str | Path, results_dir: str | Path, *, smoke: bool = False, budget: float = 1.0, log=print
) -> dict:
    data = smoke_text_data(out_root) if smoke else None
    rows = run_study(NAME, specs(smoke, budget, data), out_root, log=log)
    for r in rows:
        r["carry_over"] = r["variant"].get("carry_over", True)
        r["headline"] = r["objective"] != "prime" or not r["carry_over"]  # the default row is in ell_sweep
    return payload(NAME, smoke=smoke, budget=budget, rows=rows, extra={"title": TITLE})


def section(data: dict) -> str:
    lines = [
        (
            "| training | valid bits/char ± s.e. | `L_prime`, nats/token | gap, nats/token | training "
            "FLOPs | "
            "train wall, min |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['row_label']} | {fmt_pm(r['valid_bits_per_char'], r['valid_stderr_bits_per_char'])} | "
            f"{fmt_pm(r['prime_objective_nats_per_token'])} | {fmt_pm(r['gap_nats_per_token'])} | "
            f"{r['train_flops']:.2e} | {r['train_wall_s'] / 60:.1f} |"
        )
    return "\n".join(lines)


def reading(data: dict) -> list[str]:
    rows = data["rows"]
    base = next((r for r in rows if r["objective"] == "prime" and r["carry_over"]), None)
    if base is None:
        return []
    out = []
    for r in rows:
        if r is base:
            continue
        d = r["valid_bits_per_char"] - base["valid_bits_per_char"]
        se = (r["valid_stderr_bits_per_char"] ** 2 + base["valid_stderr_bits_per_char"] ** 2) ** 0.5
        verdict = "indistinguishable (within 2 s.e.)" if abs(d) <= 2 * se else "better" if d < 0 else "worse"
        out.append(
            f"{r['row_label']}: {r['valid_bits_per_char']:.3f} valid bits/char vs "
            f"{base['valid_bits_per_char']:.3f} "
            f"for the default: {verdict} ({d:+.3f} ± {se:.3f})."
        )
    return out
