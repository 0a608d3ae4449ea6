"""Study ``compute_scaling``: MDM, Prime (ℓ = 2 by default, or the best ℓ of a finished
``ell_sweep``) and the autoregressive baseline at ¼, ½, 1 and 2 × the main-job budget (training
steps; same backbone and batch), valid bits/char against training FLOPs on a log axis.

"How many times more compute do the diffusion models need to reach the AR number of a budget?":
for each AR budget, the diffusion curve (valid bits/char against log FLOPs) is **interpolated
piecewise log-linearly** between the measured budgets; the FLOPs where it reaches the AR number,
divided by the AR run's FLOPs, is the factor. No extrapolation: when the diffusion curve never gets
that low within the measured range, the table says "> X×" with X the largest measured ratio.

    mdm-prime experiment compute_scaling [--budget X] [--smoke]
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import (
    AR,
    MAIN_JOB_STEPS,
    MDM,
    PRIME,
    fmt_pm,
    interp_loglinear,
    payload,
    plot_path,
    plt,
    scaled_steps,
    smoke_text_data,
    text_spec,
)
from .runner import run_study
from .runs import RunSpec

NAME = "compute_scaling"
TITLE = "valid bits/char against training compute"
FACTORS = (0.25, 0.5, 1.0, 2.0)
CPU_MINUTES = 160.0
"""Estimated CPU time at budget 1 on 2 AVX2 cores in fp32 (the 1 × runs are shared with
``ell_sweep``), from the measured run at budget 0.125: nine new runs of 1/32-1/8 of the main job,
19.6 min wall (short runs pay proportionally more for their final evaluation)."""


def best_prime_ell(results_dir: str | Path) -> int:
    """ℓ of the Prime row with the lowest valid bits/char in ``results_dir/ell_sweep.json``; 2 when
    there is none."""
    path = Path(results_dir) / "ell_sweep.json"
    if not path.exists():
        return 2
    rows = [r for r in json.loads(path.read_text())["rows"] if r["family"] == PRIME]
    return min(rows, key=lambda r: r["valid_bits_per_char"])["subtokens"] if rows else 2


def specs(smoke: bool = False, budget: float = 1.0, data: str | None = None, ell: int = 2) -> list[RunSpec]:
    base = 4 if smoke else MAIN_JOB_STEPS
    out = []
    for f in FACTORS:
        steps = scaled_steps(base, budget * f)
        for fam, e in ((MDM, 1), (PRIME, ell), (AR, 1)):
            spec = text_spec(fam, e, steps=steps, smoke=smoke, data=data)
            out.append(
                RunSpec(spec.name, spec.preset, spec.overrides, spec.variant, {**spec.labels, "factor": f})
            )
    return out


def run(
    out_root: str | Path, results_dir: str | Path, *, smoke: bool = False, budget: float = 1.0, log=print
) -> dict:
    data = smoke_text_data(out_root) if smoke else None
    ell = best_prime_ell(results_dir)
    rows = run_study(NAME, specs(smoke, budget, data, ell), out_root, log=log)
    for r in rows:
        r["headline"] = False  # the 1× rows are ell_sweep's headline rows; the rest belong to this section
    compute = compute_factors(rows)
    plot = plot_path(results_dir, NAME, smoke)
    _plot(rows, plot)
    return payload(
        NAME,
        smoke=smoke,
        budget=budget,
        rows=rows,
        extra={
            "plots": [plot.name],
            "title": TITLE,
            "prime_ell": ell,
            "compute_factors": compute,
            "interpolation": "piecewise linear in log FLOPs between measured budgets, no extrapolation",
        },
    )


def compute_factors(rows: list[dict]) -> list[dict]:
    """For each AR run and each diffusion family: FLOPs needed to reach the AR valid bits/char
    (interpolated) divided by the AR run's FLOPs; ``factor`` is ``None`` and ``more_than`` set when
    the measured diffusion runs never reach it."""
    out = []
    fams = sorted({r["family"] for r in rows if r["family"] != AR})
    for ar in sorted((r for r in rows if r["family"] == AR), key=lambda r: r["train_flops"]):
        target = ar["valid_bits_per_char"]
        for fam in fams:
            pts = sorted((r["train_flops"], r["valid_bits_per_char"]) for r in rows if r["family"] == fam)
            x = interp_loglinear([p[0] for p in pts], [p[1] for p in pts], target)
            entry = {
                "ar_factor": ar.get("factor"),
                "ar_flops": ar["train_flops"],
                "ar_bits_per_char": target,
                "family": fam,
                "factor": None if x is None else x / ar["train_flops"],
            }
            if x is None:
                best = min(pts, key=lambda p: p[1])
                if best[1] > target:
                    entry["more_than"] = max(p[0] for p in pts) / ar["train_flops"]
                else:
                    entry["less_than"] = min(p[0] for p in pts) / ar["train_flops"]
            out.append(entry)
    return out


def _plot(rows: list[dict], path: Path) -> None:
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 4), dpi=100)
    for fam in (MDM, PRIME, AR):
        pts = sorted((r for r in rows if r["family"] == fam), key=lambda r: r["train_flops"])
        if pts:
            ax.errorbar(
                [r["train_flops"] for r in pts],
                [r["valid_bits_per_char"] for r in pts],
                yerr=[2 * r["valid_stderr_bits_per_char"] for r in pts],
                marker="o",
                capsize=3,
                label=pts[0]["family_label"],
            )
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (3 × forward × tokens)")
    ax.set_ylabel("valid bits/char (± 2 s.e.)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    pyplot.close(fig)


def _factor_text(e: dict) -> str:
    if e["factor"] is not None:
        return f"{e['factor']:.2f}×"
    if "more_than" in e:
        return f"> {e['more_than']:.2f}× (not reached in the measured range)"
    return f"< {e['less_than']:.2f}× (already below at the smallest budget)"


def section(data: dict) -> str:
    scale = data.get("budget", 1.0)  # the factors are of the study's budget; the table shows main jobs
    lines = [
        (
            "| model | budget × main job | valid bits/char ± s.e. | training tokens | training FLOPs | "
            "params | "
            "train wall, min |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(data["rows"], key=lambda r: (r["family"], r["train_flops"])):
        lines.append(
            f"| {r['family_label']} | {r['factor'] * scale:g} | "
            f"{fmt_pm(r['valid_bits_per_char'], r['valid_stderr_bits_per_char'])} | {r['train_tokens']:,} | "
            f"{r['train_flops']:.2e} | {r['params']:,} | {r['train_wall_s'] / 60:.1f} |"
        )
    lines += [
        "",
        f"Compute the diffusion models need to reach the AR number ({data['interpolation']}):",
        "",
        "| AR budget × main job | AR bits/char | family | FLOPs needed / AR FLOPs |",
        "|---:|---:|---|---|",
    ]
    for e in data["compute_factors"]:
        lines.append(
            f"| {e['ar_factor'] * scale:g} | {e['ar_bits_per_char']:.3f} | {e['family']} | {_factor_text(e)} |"
        )
    lines += ["", *[f"![{NAME}](results/{p})" for p in data.get("plots", [])]]
    return "\n".join(lines)


def reading(data: dict) -> list[str]:
    scale = data.get("budget", 1.0)
    out = []
    for fam in (PRIME, MDM):
        es = [e for e in data["compute_factors"] if e["family"] == fam]
        if es:
            out.append(
                f"{'Prime ℓ=' + str(data['prime_ell']) if fam == PRIME else 'MDM'} needs "
                + "; ".join(
                    f"{_factor_text(e)} the AR compute at AR budget {e['ar_factor'] * scale:g} × main job"
                    for e in es
                )
                + " to match the autoregressive valid bits/char (log-linear interpolation)."
            )
    rows = data["rows"]
    for fam in (PRIME, MDM, AR):
        pts = sorted((r for r in rows if r["family"] == fam), key=lambda r: r["train_flops"])
        if len(pts) >= 2:
            d = pts[-1]["valid_bits_per_char"] - pts[0]["valid_bits_per_char"]
            out.append(
                f"{pts[0]['family_label']}: {d:+.3f} bits/char from the smallest to the largest budget "
                f"({pts[-1]['train_flops'] / pts[0]['train_flops']:.0f}× the FLOPs)."
            )
    return out
