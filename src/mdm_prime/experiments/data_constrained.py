"""Study ``data_constrained``: a fixed small training set, many epochs (issue 22, study 1).

The autoregressive model, MDM (ℓ = 1) and MDM-Prime (ℓ = 2) train on the **same 1 MiB** of the main
job's corpus (the first ``1,048,576`` training bytes of ``mix``; the document split is unchanged, so
validation is held-out documents) for ``16 × budget`` epochs, with the main job's backbone
(``text-tiny``: 192-wide, 4-block transformer, L = 128, batch 32 → 256 optimizer steps per epoch) and
the same token budget per epoch for every family. After every epoch the EMA model is scored on the
validation split: the valid bound ``L_valid`` (docs/method.md §5) for the diffusion models, the exact
NLL for the autoregressive one, in bits/char (``EVAL_SEQUENCES`` sequences × ``EVAL_NUM_TIMES``
draws; the final row uses the main job's 256 × 32).

Question (published: masked diffusion overtakes AR after enough repeated epochs, Prabhudesai et al.,
arXiv 2507.15857): does it here, after how many epochs, and does Prime move the crossover?

    mdm-prime experiment data_constrained [--budget X] [--smoke]
"""

from __future__ import annotations

import math
from pathlib import Path

from .common import AR, MDM, PRIME, fmt_pm, payload, plot_path, plt, smoke_text_data, text_spec
from .runner import run_study
from .runs import RunSpec, metric_rows

NAME = "data_constrained"
TITLE = "data-constrained: 1 MiB of text, many epochs"
TRAIN_BYTES = 1_048_576
"""Unique training bytes (tokens) of every run: 8,192 sequences of 128."""
EPOCHS = 16
"""Epochs at budget 1."""
EVAL_SEQUENCES = 256
EVAL_NUM_TIMES = 8
SMOKE_TRAIN_TOKENS = 512
"""Smoke: 32 sequences of 16 tokens, 4 steps of batch 8 per epoch."""
SMOKE_EPOCHS = 2
CPU_MINUTES = 85.0
"""Wall minutes at budget 1 on 2 Zen 4 cores (bf16 autocast, ``torch.compile``), measured: 84 min of
training wall for the three runs of 4,096 steps (≈ 12k tokens/s) with 16 evaluations each, the first
run partly beside the test suite."""
CPU_MINUTES_MACHINE = "2 Zen 4 cores with AVX512-BF16, bf16 autocast"

FAMILIES = ((AR, 1), (MDM, 1), (PRIME, 2))


def specs(smoke: bool = False, budget: float = 1.0, data: str | None = None) -> list[RunSpec]:
    """One run per family in :data:`FAMILIES`, ``EPOCHS × budget`` epochs of the fixed training set."""
    if not (isinstance(budget, (int, float)) and budget > 0 and math.isfinite(budget)):
        raise ValueError(f"budget must be a positive number, got {budget!r}")
    seq_len, batch = (16, 8) if smoke else (128, 32)
    train_tokens = SMOKE_TRAIN_TOKENS if smoke else TRAIN_BYTES
    steps_per_epoch = train_tokens // seq_len // batch
    epochs = max(1, round((SMOKE_EPOCHS if smoke else EPOCHS) * budget))
    steps = epochs * steps_per_epoch
    extra = {
        "max_train_tokens": str(train_tokens),
        "eval_every": str(steps_per_epoch),
        "eval_sequences": str(8 if smoke else EVAL_SEQUENCES),
        "eval_num_times": str(2 if smoke else EVAL_NUM_TIMES),
    }
    if not smoke:
        extra.update(compile="true", checkpoint_every=str(steps_per_epoch), num_preview_samples="2")
    out = []
    for family, ell in FAMILIES:
        s = text_spec(family, ell, steps=steps, smoke=smoke, data=data, tag=f"-dc{train_tokens}")
        out.append(
            RunSpec(
                s.name,
                s.preset,
                {**s.overrides, **extra},
                s.variant,
                {**s.labels, "steps_per_epoch": steps_per_epoch, "epochs": epochs},
            )
        )
    return out


def epoch_curve(run_dir: str | Path, train_tokens: int) -> list[dict]:
    """Validation points of a run folder's ``metrics.jsonl``: one dict per evaluation (the periodic
    rows and the final row), ``{"step", "epoch", "bits_per_char", "stderr_bits_per_char",
    "nats_per_token", "final"}``; ``epoch`` = training tokens seen / ``train_tokens``."""
    points, tokens = [], 0
    for row in metric_rows(run_dir):
        tokens = row.get("tokens_seen", tokens)
        if "nelbo_nats_per_token" not in row or "bits_per_char" not in row:
            continue
        nats = float(row["nelbo_nats_per_token"])
        bpc = float(row["bits_per_char"])
        se = float(row.get("stderr_nats_per_token", 0.0)) * (bpc / nats if nats else 0.0)
        points.append(
            {
                "step": int(row["step"]),
                "epoch": tokens / train_tokens,
                "bits_per_char": bpc,
                "stderr_bits_per_char": se,
                "nats_per_token": nats,
                "final": bool(row.get("final")),
            }
        )
    return points


def run(
    out_root: str | Path, results_dir: str | Path, *, smoke: bool = False, budget: float = 1.0, log=print
) -> dict:
    data = smoke_text_data(out_root) if smoke else None
    run_specs = specs(smoke, budget, data)
    rows = run_study(NAME, run_specs, out_root, log=log)
    train_tokens = SMOKE_TRAIN_TOKENS if smoke else TRAIN_BYTES
    for row in rows:
        curve = epoch_curve(row["run_dir"], train_tokens)
        best = min(curve, key=lambda p: p["bits_per_char"])
        row.update(
            curve=curve,
            unique_train_tokens=train_tokens,
            best_epoch=best["epoch"],
            best_bits_per_char=best["bits_per_char"],
            best_stderr_bits_per_char=best["stderr_bits_per_char"],
        )
    crossover = {}
    ar = next((r for r in rows if r["family"] == AR), None)
    for r in rows:
        if r["family"] != AR and ar is not None:
            crossover[r["family_label"]] = first_crossover(ar["curve"], r["curve"])
    plot = plot_path(results_dir, NAME, smoke)
    _plot(rows, plot)
    return payload(
        NAME,
        smoke=smoke,
        budget=budget,
        rows=rows,
        extra={"plots": [plot.name], "title": TITLE, "crossover_epoch": crossover},
    )


def first_crossover(ar_curve: list[dict], other: list[dict]) -> float | None:
    """The first evaluation epoch at which ``other`` is below the AR curve by more than 2 combined
    standard errors (matched by step and kind: periodic with periodic, final with final), or ``None``
    when it never is."""
    ar_by_step = {(p["step"], p["final"]): p for p in ar_curve}
    for p in other:
        q = ar_by_step.get((p["step"], p["final"]))
        if q is None:
            continue
        se = math.hypot(p["stderr_bits_per_char"], q["stderr_bits_per_char"])
        if q["bits_per_char"] - p["bits_per_char"] > 2 * se:
            return p["epoch"]
    return None


def _plot(rows: list[dict], path: Path) -> None:
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6.4, 4.0), dpi=100)
    for r in rows:
        pts = r["curve"]
        ax.errorbar(
            [p["epoch"] for p in pts],
            [p["bits_per_char"] for p in pts],
            yerr=[2 * p["stderr_bits_per_char"] for p in pts],
            marker="o",
            ms=3,
            capsize=2,
            label=r["family_label"] + (" (exact NLL)" if r["family"] == AR else " (valid bound)"),
        )
    ax.set_xlabel(f"epochs over {rows[0]['unique_train_tokens']:,} unique training bytes")
    ax.set_ylabel("validation bits/char (↓ better, ± 2 s.e.)")
    ax.set_title("data-constrained: the same small training set, repeated", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    pyplot.close(fig)


def section(data: dict) -> str:
    r0 = data["rows"][0]
    k = next((r["num_times"] for r in data["rows"] if r.get("num_times")), None)
    lines = [
        (
            f"Every run: the same {r0['unique_train_tokens']:,} unique training bytes (held-out documents for "
            f"validation), {r0['epochs']} epochs = {r0['max_steps']:,} steps of {r0['batch_size']} × "
            f"{r0['seq_len']} bytes ({r0['steps_per_epoch']} steps per epoch), the backbone of the main job "
            "(`text-tiny`) for every family. Per-epoch points: EMA weights on the validation split; the "
            f"last epoch's point is the final evaluation (K = {k} draws per sequence for the diffusion models, "
            f"{r0['num_sequences']} sequences)."
        ),
        "",
        (
            "| model | best validation bits/char ± s.e. | at epoch | after the last epoch ± s.e. | "
            "`L_prime`, nats/token | training FLOPs | train wall, min |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['family_label']} | {fmt_pm(r['best_bits_per_char'], r['best_stderr_bits_per_char'])} | "
            f"{r['best_epoch']:.0f} | {fmt_pm(r['valid_bits_per_char'], r['valid_stderr_bits_per_char'])} | "
            f"{fmt_pm(r['prime_objective_nats_per_token'])} | {r['train_flops']:.2e} | "
            f"{r['train_wall_s'] / 60:.1f} |"
        )
    epochs = sorted({round(p["epoch"]) for r in data["rows"] for p in r["curve"]})
    lines += [
        "",
        "Validation bits/char after each epoch (the curves of the plot):",
        "",
        "| epoch | " + " | ".join(r["family_label"] for r in data["rows"]) + " |",
        "|---:|" + "---:|" * len(data["rows"]),
    ]
    for e in epochs:
        cells = []
        for r in data["rows"]:
            p = next((p for p in r["curve"] if round(p["epoch"]) == e), None)
            cells.append("—" if p is None else fmt_pm(p["bits_per_char"], p["stderr_bits_per_char"]))
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lines += ["", *[f"![{NAME}](results/{p})" for p in data.get("plots", [])]]
    return "\n".join(lines)


def reading(data: dict) -> list[str]:
    rows = data["rows"]
    ar = next((r for r in rows if r["family"] == AR), None)
    if ar is None:
        return []
    out = []
    last_ar = ar["curve"][-1]
    out.append(
        f"The autoregressive model is best after epoch {ar['best_epoch']:.0f} "
        f"({ar['best_bits_per_char']:.3f} bits/char) and ends at {last_ar['bits_per_char']:.3f}"
        + (
            " (it overfits: the validation NLL rises after its best epoch)."
            if last_ar["bits_per_char"] > ar["best_bits_per_char"] + 2 * ar["best_stderr_bits_per_char"]
            else "."
        )
    )
    for r in rows:
        if r is ar:
            continue
        cross = data.get("crossover_epoch", {}).get(r["family_label"])
        d = r["best_bits_per_char"] - ar["best_bits_per_char"]
        when = (
            f"drops below the autoregressive curve (beyond 2 s.e.) from epoch {cross:.0f}"
            if cross is not None
            else f"never drops below the autoregressive curve within {r['epochs']} epochs"
        )
        out.append(
            f"{r['family_label']} {when}; best {r['best_bits_per_char']:.3f} ± "
            f"{r['best_stderr_bits_per_char']:.3f} bits/char (valid bound) at epoch {r['best_epoch']:.0f}, "
            f"{'above' if d > 0 else 'below'} the autoregressive best by {abs(d):.3f}."
        )
    return out
