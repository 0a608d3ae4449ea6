"""Study ``what_helps``: the principled levers of docs/method.md, each against its control at equal
compute (issue 22, study 3).

Setting: the data-constrained regime of :mod:`.data_constrained` (the same 1 MiB of training bytes,
held-out validation documents, the main job's backbone) at ``EPOCHS × budget`` epochs, Prime ℓ = 2.
Every row changes **one** thing from the control (Prime ℓ = 2, ``index`` code, linear schedule, ELBO
weight, seed 0) and trains the same steps on the same data, so training FLOPs are equal:

* codes (docs/method.md §1b): ``shuffle``, ``frequency``, ``cluster``;
* a per-digit schedule (§2b): ``leading:2`` (the leading digit revealed earlier);
* training weights (§4b): ``unweighted``, ``mixture`` (½ ``L_prime`` + ½ ``L_valid``);
* the control again with seed 1: the seed-to-seed spread that the Monte Carlo standard error does not
  contain.

Every row is scored by the valid bound (§5, 256 validation sequences × 32 draws, EMA weights) and, on the
first ``DECODING_SEQUENCES`` of them, by the exact NLL of the confidence decoding order (§5b) beside it.
A change is called *better* only when it beats the control by more than 2 standard errors (Monte
Carlo s.e. of both rows combined) **and** by more than the seed-to-seed difference of the control.

    mdm-prime experiment what_helps [--budget X] [--smoke]
"""

from __future__ import annotations

import math
from pathlib import Path

from .common import PRIME, fmt_pm, payload, plot_path, plt, smoke_text_data
from .data_constrained import SMOKE_TRAIN_TOKENS, TRAIN_BYTES
from .data_constrained import specs as data_constrained_specs
from .runner import run_study
from .runs import RunSpec

NAME = "what_helps"
TITLE = "what helps Prime ℓ = 2: codes, per-digit schedules, training weights (data-constrained setting)"
EPOCHS = 8
DECODING_SEQUENCES = 64
DECODING_ORDER = "confidence"
CONTROL = "control"
VARIANTS: tuple[tuple[str, str, dict], ...] = (
    (CONTROL, "control: index code, linear schedule, ELBO weight", {}),
    ("seed1", "control, seed 1", {"seed": "1"}),
    ("shuffle", "code: shuffle", {"codes": "shuffle"}),
    ("frequency", "code: frequency", {"codes": "frequency"}),
    ("cluster", "code: cluster", {"codes": "cluster"}),
    ("leading2", "schedule: leading:2 (leading digit first)", {"schedule": "leading:2"}),
    ("unweighted", "weight: unweighted", {"loss_weighting": "unweighted"}),
    ("mixture", "weight: mixture ½ L_prime + ½ L_valid", {"loss_weighting": "mixture", "loss_mix": "0.5"}),
)
"""``(key, label, overrides)`` per row; the first is the control."""
CPU_MINUTES = 105.0
"""Estimated wall minutes at budget 1 on 2 Zen 4 cores (bf16 autocast), from the measured run at budget
0.25 (31 min of training wall for eight runs of 512 steps, partly beside other jobs, + 8 min for the
decoding NLLs): over the 90-minute study limit, so run it at ``--budget 0.75`` or less."""
CPU_MINUTES_MACHINE = "2 Zen 4 cores with AVX512-BF16, bf16 autocast"


def specs(smoke: bool = False, budget: float = 1.0, data: str | None = None) -> list[RunSpec]:
    base = next(
        s
        for s in data_constrained_specs(smoke, budget * EPOCHS / 16 if not smoke else budget, data)
        if s.overrides["family"] == PRIME
    )
    out = []
    for key, label, overrides in VARIANTS:
        ov = {**base.overrides, "eval_every": "0", **overrides}
        name = base.name + ("" if key == CONTROL else f"-{key}")
        out.append(
            RunSpec(
                name, base.preset, ov, base.variant, {**base.labels, "row_label": label, "variant_key": key}
            )
        )
    return out


def run(
    out_root: str | Path, results_dir: str | Path, *, smoke: bool = False, budget: float = 1.0, log=print
) -> dict:
    from .runs import build_task_for, load_model, resolve

    data = smoke_text_data(out_root) if smoke else None
    run_specs = specs(smoke, budget, data)
    rows = run_study(NAME, run_specs, out_root, log=log)
    task = build_task_for(resolve(run_specs[0]))
    x = task.split("valid")[: 4 if smoke else DECODING_SEQUENCES]
    for row in rows:
        row.update(_cached_decoding(row["run_dir"], task, x, load_model))
    control = rows[0]
    seed_gap = next(
        (
            abs(r["valid_bits_per_char"] - control["valid_bits_per_char"])
            for r in rows
            if r["variant_key"] == "seed1"
        ),
        0.0,
    )
    for row in rows:
        d = row["valid_bits_per_char"] - control["valid_bits_per_char"]
        se = math.hypot(row["valid_stderr_bits_per_char"], control["valid_stderr_bits_per_char"])
        row.update(
            diff_bits_per_char=d,
            diff_stderr_bits_per_char=se,
            verdict=verdict(d, se, seed_gap, row is control),
        )
        row["headline"] = row["variant_key"] not in (CONTROL, "seed1")
    plot = plot_path(results_dir, NAME, smoke)
    _plot(rows, plot)
    return payload(
        NAME,
        smoke=smoke,
        budget=budget,
        rows=rows,
        extra={"plots": [plot.name], "title": TITLE, "seed_gap_bits_per_char": seed_gap},
    )


def verdict(diff: float, se: float, seed_gap: float, is_control: bool = False) -> str:
    """``"control"``, ``"better"`` (below the control by more than 2 s.e. and more than the seed
    gap), ``"worse"`` (above by as much), or ``"no difference"``."""
    if is_control:
        return "control"
    margin = max(2 * se, seed_gap)
    if diff < -margin:
        return "better"
    if diff > margin:
        return "worse"
    return "no difference"


def _cached_decoding(run_dir: str, task, x, load_model) -> dict:
    """:func:`_decoding` of the run's EMA model, kept in ``RUN_DIR/decoding-ORDER-N.json`` (the run
    folder is keyed by its config hash), so that re-running the study after it finished costs no
    decoding."""
    import json

    from ..fileio import atomic_write_text

    path = Path(run_dir) / f"decoding-{DECODING_ORDER}-{x.shape[0]}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = _decoding(load_model(run_dir), task, x)
    atomic_write_text(path, json.dumps(out, indent=2))
    return out


def _decoding(model, task, x) -> dict:
    """The confidence order's exact NLL (docs/method.md §5b) on ``x``, bits/char ± s.e. over sequences
    (:func:`mdm_prime.evaluate.decoding_metrics`)."""
    from ..evaluate import decoding_metrics

    r = decoding_metrics(model, task, x, order=DECODING_ORDER, batch_size=64)
    nats, bits = r["decoding_nll_nats_per_token"], r["decoding_bits_per_char"]
    return {
        "decoding_order": DECODING_ORDER,
        "decoding_sequences": r["decoding_num_sequences"],
        "decoding_bits_per_char": bits,
        "decoding_stderr_bits_per_char": r["decoding_stderr_nats_per_token"] * (bits / nats if nats else 0.0),
    }


def _plot(rows: list[dict], path: Path) -> None:
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2), dpi=100)
    ys = list(range(len(rows)))[::-1]
    ax.errorbar(
        [r["valid_bits_per_char"] for r in rows],
        ys,
        xerr=[2 * r["valid_stderr_bits_per_char"] for r in rows],
        fmt="o",
        capsize=3,
        label="valid bound (± 2 s.e.)",
    )
    ax.errorbar(
        [r["decoding_bits_per_char"] for r in rows],
        ys,
        xerr=[2 * r["decoding_stderr_bits_per_char"] for r in rows],
        fmt="s",
        mfc="white",
        capsize=3,
        label=f"exact NLL, {DECODING_ORDER} order ({rows[0]['decoding_sequences']} seqs)",
    )
    ax.axvline(rows[0]["valid_bits_per_char"], color="k", ls=":", lw=1)
    ax.set_yticks(ys, [r["row_label"] for r in rows], fontsize=8)
    ax.set_xlabel("validation bits/char (↓ better)")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    fig.tight_layout()
    fig.savefig(path)
    pyplot.close(fig)


def section(data: dict) -> str:
    r0 = data["rows"][0]
    lines = [
        (
            f"Every row: Prime ℓ = 2 on the same {SMOKE_TRAIN_TOKENS if data.get('smoke') else TRAIN_BYTES:,}-byte "
            "training set as `data_constrained` "
            f"(held-out validation documents), {r0['max_steps']:,} steps of {r0['batch_size']} × {r0['seq_len']} "
            f"(equal training FLOPs), valid bound on {r0['num_sequences']} validation sequences × "
            f"{r0['num_times']} draws, exact {DECODING_ORDER}-order NLL on the first {r0['decoding_sequences']}. "
            f"Seed-to-seed difference of the control: {data.get('seed_gap_bits_per_char', 0.0):.3f} bits/char."
        ),
        "",
        (
            "| change | valid bits/char ± s.e. | vs control ± s.e. | verdict | exact NLL, "
            f"{DECODING_ORDER} order, bits/char | `L_prime`, nats/token | train wall, min |"
        ),
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['row_label']} | {fmt_pm(r['valid_bits_per_char'], r['valid_stderr_bits_per_char'])} | "
            f"{fmt_pm(r['diff_bits_per_char'], r['diff_stderr_bits_per_char'])} | {r['verdict']} | "
            f"{fmt_pm(r['decoding_bits_per_char'], r['decoding_stderr_bits_per_char'])} | "
            f"{fmt_pm(r['prime_objective_nats_per_token'])} | {r['train_wall_s'] / 60:.1f} |"
        )
    lines += ["", *[f"![{NAME}](results/{p})" for p in data.get("plots", [])]]
    return "\n".join(lines)


def reading(data: dict) -> list[str]:
    rows = data["rows"]
    better = [r["row_label"] for r in rows if r["verdict"] == "better"]
    worse = [r["row_label"] for r in rows if r["verdict"] == "worse"]
    same = [r["row_label"] for r in rows if r["verdict"] == "no difference" and r["variant_key"] != "seed1"]
    out = [
        "Beats the control beyond 2 s.e. and the seed-to-seed difference (qualifies for a preset default "
        "under the 2-s.e. rule, at this budget and in this setting): "
        + (", ".join(better) if better else "nothing")
        + "."
    ]
    if worse:
        out.append("Worse than the control: " + ", ".join(worse) + ".")
    if same:
        out.append("Indistinguishable from the control: " + ", ".join(same) + ".")
    return out
