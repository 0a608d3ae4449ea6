"""Study ``ell_sweep``: MDM (ℓ = 1), Prime ℓ = 2, 4, 8 (b = 16, 4, 2) and the autoregressive
baseline on bytes, the README main job's backbone and token budget (``text-tiny``: 192-wide,
4-block transformer, L = 128, batch 32, 1,700 steps × budget = 6.96 M training bytes).

Columns: the valid bound in bits/char ± s.e. (docs/method.md §5), the Prime objective ``L_prime``
(§4, not a bound for ℓ > 1), the gap ``L_valid − L_prime`` per token (what the paper's metric would
have subtracted), and idle steps at ``T = L`` (§6): the closed form ``T (1 − 1/T)^{L·ℓ}`` and the
sampler's per-sequence counters on 16 samples.

    mdm-prime experiment ell_sweep [--budget X] [--smoke]
"""

from __future__ import annotations

import itertools
from pathlib import Path

from .common import (
    AR,
    ELL_BASES,
    MAIN_JOB_STEPS,
    MDM,
    PRIME,
    fmt_pm,
    payload,
    plot_path,
    plt,
    sample_tokens,
    scaled_steps,
    smoke_text_data,
    text_spec,
)
from .runner import run_study
from .runs import RunSpec

NAME = "ell_sweep"
TITLE = "ℓ sweep on bytes (the main job's backbone and data)"
ELLS = (2, 4, 8)
IDLE_SAMPLES = 16
CPU_MINUTES = 117.0
"""Estimated CPU time at budget 1 on 2 AVX2 cores in fp32, from the measured run at budget 0.25 (29.2
min wall: five runs of 4.2-5.9 min training plus the final evaluation and 16 samples each)."""


def specs(smoke: bool = False, budget: float = 1.0, data: str | None = None) -> list[RunSpec]:
    steps = scaled_steps(4 if smoke else MAIN_JOB_STEPS, budget)
    return (
        [text_spec(MDM, 1, steps=steps, smoke=smoke, data=data)]
        + [text_spec(PRIME, ell, steps=steps, smoke=smoke, data=data) for ell in ELLS]
        + [text_spec(AR, 1, steps=steps, smoke=smoke, data=data)]
    )


def run(
    out_root: str | Path, results_dir: str | Path, *, smoke: bool = False, budget: float = 1.0, log=print
) -> dict:
    from ..sampling import expected_idle_steps
    from .runs import load_model

    data = smoke_text_data(out_root) if smoke else None
    rows = run_study(NAME, specs(smoke, budget, data), out_root, log=log)
    for row in rows:
        L = row["seq_len"]
        if row["family"] == AR:
            row.update(
                idle_steps_closed_form=0.0, idle_steps_measured=0.0, sample_network_calls_mean=float(L)
            )
            continue
        model = load_model(row["run_dir"])
        out = sample_tokens(model, num=4 if smoke else IDLE_SAMPLES, steps=L, seq_len=L, seed=0)
        row.update(
            idle_steps_closed_form=float(expected_idle_steps(L, L * row["subtokens"])),
            idle_steps_measured=out["idle_steps_mean"],
            sample_network_calls_mean=out["network_calls_mean"],
            sample_steps=L,
        )
    plot = plot_path(results_dir, NAME, smoke)
    _plot(rows, plot)
    return payload(NAME, smoke=smoke, budget=budget, rows=rows, extra={"plots": [plot.name], "title": TITLE})


def _plot(
    rows: list[dict], path: Path, *, xlabel: str = "ℓ (sub-tokens per byte)", log2_axis: bool = True
) -> None:
    """Valid bits/char against ℓ (the autoregressive row as a line) and the objective gap against ℓ;
    shared with :mod:`.bpe_setting` (``log2_axis=False``: ℓ = 1, 2, 3, 4 on a linear axis)."""
    pyplot = plt()
    diff = [r for r in rows if r["family"] != AR]
    ells = [r["subtokens"] for r in diff]
    fig, (a, b) = pyplot.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    a.errorbar(
        ells,
        [r["valid_bits_per_char"] for r in diff],
        yerr=[2 * r["valid_stderr_bits_per_char"] for r in diff],
        marker="o",
        capsize=3,
        label="valid bound (diffusion)",
    )
    for r in rows:
        if r["family"] == AR:
            a.axhline(r["valid_bits_per_char"], color="k", ls="--", label="autoregressive (exact)")
    if log2_axis:
        a.set_xscale("log", base=2)
    a.set_xticks(ells, [str(e) for e in ells])
    a.set_xlabel(xlabel)
    a.set_ylabel("valid bits/char (↓ better, ± 2 s.e.)")
    a.legend(fontsize=8)
    b.plot(ells, [r["gap_nats_per_token"] for r in diff], marker="o")
    if log2_axis:
        b.set_xscale("log", base=2)
    b.set_xticks(ells, [str(e) for e in ells])
    b.set_xlabel("ℓ")
    b.set_ylabel("L_valid − L_prime, nats/token")
    b.set_title("what the paper's objective would subtract", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    pyplot.close(fig)


def section(data: dict) -> str:
    r0 = data["rows"][0]
    lines = [
        (
            f"Every row: {data.get('budget', 1.0):g} × the main job's training ({r0['max_steps']:,} steps of "
            f"{r0['batch_size']} × {r0['seq_len']} bytes = {r0['train_tokens']:,} training bytes), the same "
            "backbone, data split, seed and evaluation "
            f"(K = {r0['num_times']} draws on {r0['num_sequences']} validation sequences, EMA weights)."
        ),
        "",
        (
            "| model | b | valid bits/char ± s.e. | `L_prime`, nats/token | gap, nats/token | idle steps "
            "at T = L "
            "(closed form / measured) | params | training tokens | training FLOPs | train wall, min |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        idle = (
            "—"
            if r["family"] == AR
            else f"{r['idle_steps_closed_form']:.1f} / {r['idle_steps_measured']:.1f}"
        )
        lines.append(
            f"| {r['family_label']} | {r['base'] if r['family'] != AR else '—'} | "
            f"{fmt_pm(r['valid_bits_per_char'], r['valid_stderr_bits_per_char'])} | "
            f"{fmt_pm(r['prime_objective_nats_per_token'])} | {fmt_pm(r['gap_nats_per_token'])} | {idle} | "
            f"{r['params']:,} | {r['train_tokens']:,} | {r['train_flops']:.2e} | "
            f"{r['train_wall_s'] / 60:.1f} |"
        )
    lines += ["", *[f"![{NAME}](results/{p})" for p in data.get("plots", [])]]
    return "\n".join(lines)


def _se2(a: dict, b: dict, key: str = "bits_per_char") -> float:
    return (a[f"valid_stderr_{key}"] ** 2 + b[f"valid_stderr_{key}"] ** 2) ** 0.5


def reading(data: dict) -> list[str]:
    rows = data["rows"]
    by = {(r["family"], r["subtokens"]): r for r in rows}
    mdm, ar = by.get((MDM, 1)), by.get((AR, 1))
    primes = sorted((r for r in rows if r["family"] == PRIME), key=lambda r: r["subtokens"])
    if not mdm or not primes:
        return []
    out = []
    best = min(primes, key=lambda r: r["valid_bits_per_char"])
    for p in primes:
        d = p["valid_bits_per_char"] - mdm["valid_bits_per_char"]
        se = _se2(p, mdm)
        if abs(d) <= 2 * se:
            word = "indistinguishable from MDM (within 2 s.e.)"
        elif d < 0:
            word = f"better than MDM by {-d:.3f} bits/char"
        else:
            word = f"worse than MDM by {d:.3f} bits/char: partial masking does not help at this ℓ"
        out.append(
            f"Prime ℓ={p['subtokens']} (b={ELL_BASES.get(p['subtokens'], p['base'])}): "
            f"{p['valid_bits_per_char']:.3f} ± {p['valid_stderr_bits_per_char']:.3f} valid bits/char, "
            f"{word}; "
            f"the paper's objective would have reported {p['gap_nats_per_token']:.3f} nats/token less."
        )
    if ar:
        d = best["valid_bits_per_char"] - ar["valid_bits_per_char"]
        out.append(
            f"The best diffusion model (Prime ℓ={best['subtokens']}) is "
            f"{'behind' if d > 0 else 'ahead of'} the autoregressive baseline "
            f"({ar['valid_bits_per_char']:.3f} bits/char) by {abs(d):.3f} bits/char at equal tokens."
        )
    by_prime = min(primes, key=lambda r: r["prime_objective_nats_per_token"])
    if by_prime is not best:
        out.append(
            f"Ranked by the paper's objective, Prime ℓ={by_prime['subtokens']} would look best "
            f"({by_prime['prime_objective_nats_per_token']:.3f} nats/token against "
            f"{best['prime_objective_nats_per_token']:.3f} for ℓ={best['subtokens']}); the valid bound ranks "
            f"ℓ={best['subtokens']} first."
        )
    else:
        out.append(
            f"The paper's objective and the valid bound agree on the best ℓ here (ℓ={best['subtokens']})."
        )
    gaps = [p["gap_nats_per_token"] for p in primes]
    if len(gaps) > 1:
        trend = "grows" if all(b >= a for a, b in itertools.pairwise(gaps)) else "does not grow monotonically"
        out.append(
            f"The objective gap {trend} with ℓ ({', '.join(f'{g:.3f}' for g in gaps)} nats/token for "
            f"ℓ = {', '.join(str(p['subtokens']) for p in primes)})."
        )
    return out
