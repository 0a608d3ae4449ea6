"""Study ``toy``: MDM vs Prime ℓ = 2 on the 2-D density (docs/method.md §5, §8).

The ``camera`` photo as a pmf over 256 × 256 cells (two tokens of C = 256 classes), the MLP of the
``toy`` preset, batch 4096, 1,500 steps × budget. Each row: the valid bound in nats per coordinate
(± Monte Carlo s.e.) against the exact data entropy (a bound must sit above it), the Prime objective,
and 20,000 samples at T = 64 drawn next to the target.

    mdm-prime experiment toy [--budget X] [--smoke]
"""

from __future__ import annotations

from pathlib import Path

from .common import MDM, PRIME, fmt_pm, payload, plot_path, plt, sample_tokens, scaled_steps
from .runner import run_study
from .runs import RunSpec

NAME = "toy"
TITLE = "2-D toy density: valid NLL against the exact entropy"
STEPS = 1500
SAMPLE_STEPS = 64
NUM_SAMPLES = 20000
CPU_MINUTES = 3.5
"""Estimated CPU time at budget 1 (2 cores): two runs of ~1.5 min plus sampling."""


def specs(smoke: bool = False, budget: float = 1.0) -> list[RunSpec]:
    steps = scaled_steps(20 if smoke else STEPS, budget)
    ov = {"max_steps": str(steps), "num_preview_samples": "0", "eval_every": "0"}
    if smoke:
        ov.update(
            {
                "data": "toy:camera,size=16",
                "model_size": "tiny",
                "batch_size": "64",
                "final_eval_sequences": "64",
                "final_eval_num_times": "2",
                "checkpoint_every": "0",
            }
        )
    return [
        RunSpec(
            f"toy-mdm-s{steps}",
            "toy",
            {**ov, "family": MDM, "subtokens": "1"},
            labels={"family_label": "MDM (ℓ=1)"},
        ),
        RunSpec(
            f"toy-prime-l2-s{steps}",
            "toy",
            {**ov, "family": PRIME, "subtokens": "2"},
            labels={"family_label": "Prime ℓ=2"},
        ),
    ]


def run(
    out_root: str | Path, results_dir: str | Path, *, smoke: bool = False, budget: float = 1.0, log=print
) -> dict:
    from .runs import build_task_for, load_model, resolve

    rows = run_study(NAME, specs(smoke, budget), out_root, log=log)
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    num = 512 if smoke else NUM_SAMPLES
    sample_steps = 8 if smoke else SAMPLE_STEPS
    panels = []
    task = build_task_for(resolve(specs(smoke, budget)[0]))
    density = task.info["density"]
    for row in rows:
        model = load_model(row["run_dir"])
        out = sample_tokens(model, num=num, steps=sample_steps, seq_len=2, seed=0, batch_size=4096)
        pts = out["tokens"].numpy()
        log_p = density.log_prob(out["tokens"]).double()
        row.update(
            sample_steps=sample_steps,
            num_samples=num,
            sample_wall_s=out["wall_s"],
            sample_network_calls_mean=out["network_calls_mean"],
            sample_nll_under_target_nats_per_coord=float(-log_p.mean()) / 2,
        )
        row["excess_over_entropy_nats_per_token"] = (
            row["valid_nats_per_token"] - row["data_entropy_nats_per_token"]
        )
        panels.append((row["family_label"], pts))
    plot = plot_path(results_dir, NAME, smoke)
    _plot(density, panels, task.num_classes, plot, sample_steps)
    data = payload(
        NAME,
        smoke=smoke,
        budget=budget,
        rows=rows,
        extra={"plots": [plot.name], "title": TITLE, "sample_steps": sample_steps},
    )
    return data


def toy_figure(target_pmf, panels, size: int, *, sample_steps: int | None = None):
    """The study's figure: the exact target pmf and each model's samples (``(label, int[N, 2])``), binned
    alike and drawn on one colour scale with a colour bar in probability per bin (samples as the
    fraction of their points). Returns the matplotlib figure."""
    from ..plotting import bin_counts, toy_bin_factor

    factor = toy_bin_factor(len(panels[0][1]), size)
    counts = [(label, bin_counts(pts, size, factor)) for label, pts in panels]
    return toy_figure_from_counts(target_pmf, counts, size, factor=factor, sample_steps=sample_steps)


def toy_figure_from_counts(target_pmf, counts, size: int, *, factor: int, sample_steps: int | None = None):
    """:func:`toy_figure` from the samples' per-bin counts (``(label, float[cells, cells])``, bins of
    ``factor × factor`` cells) instead of the points."""
    from ..plotting import bin_pmf, toy_density_figure

    at = f" at T = {sample_steps}" if sample_steps else ""
    imgs = [("target (exact pmf)", bin_pmf(target_pmf, factor))]
    for label, hist in counts:
        n = float(hist.sum())
        imgs.append((f"{label}: {round(n):,} samples{at}", hist / max(n, 1.0)))
    binning = f", {factor}×{factor}-cell bins" if factor > 1 else ""
    return toy_density_figure(
        imgs, factor=factor, suptitle=f"2-D toy density ({size}×{size} cells{binning}), one colour scale"
    )


def _plot(density, panels, size: int, path: Path, sample_steps: int | None = None) -> None:
    fig = toy_figure(density.pmf, panels, size, sample_steps=sample_steps)
    fig.savefig(path)
    plt().close(fig)


def section(data: dict) -> str:
    lines = [
        (
            "| model | valid bound, nats/coord | exact entropy | excess | L_prime (not a bound) | "
            "params | training tokens | samples' NLL under the target, nats/coord |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['family_label']} | "
            f"{fmt_pm(r['valid_nats_per_token'], r['valid_stderr_nats_per_token'], 4)}"
            f" | {r['data_entropy_nats_per_token']:.4f} | {r['excess_over_entropy_nats_per_token']:+.4f} | "
            f"{fmt_pm(r['prime_objective_nats_per_token'], None, 4)} | {r['params']:,} | "
            f"{r['train_tokens']:,} | {r['sample_nll_under_target_nats_per_coord']:.4f} |"
        )
    lines.append("")
    lines.append(f"Samples at T = {data['sample_steps']} next to the target:")
    lines.append("")
    lines += [f"![{NAME}](results/{p})" for p in data.get("plots", [])]
    return "\n".join(lines)


def reading(data: dict) -> list[str]:
    rows = {r["family"]: r for r in data["rows"]}
    if MDM not in rows or PRIME not in rows:
        return []
    m, p = rows[MDM], rows[PRIME]
    diff = p["valid_nats_per_token"] - m["valid_nats_per_token"]
    se = (p["valid_stderr_nats_per_token"] ** 2 + m["valid_stderr_nats_per_token"] ** 2) ** 0.5
    if abs(diff) <= 2 * se:
        verdict = "no difference beyond twice the standard error"
    elif diff < 0:
        verdict = "Prime is lower (better)"
    else:
        verdict = "Prime is higher (worse): partial masking does not help here"
    below = [r["family_label"] for r in data["rows"] if r["excess_over_entropy_nats_per_token"] < 0]
    text = (
        f"Toy density: valid bound {p['valid_nats_per_token']:.4f} (Prime ℓ=2) vs "
        f"{m['valid_nats_per_token']:.4f} "
        f"(MDM) nats per coordinate against the exact entropy {m['data_entropy_nats_per_token']:.4f}: "
        f"{verdict} (difference {diff:+.4f} ± {se:.4f})."
    )
    if below:
        text += f" Below the entropy (Monte Carlo noise or a bug): {', '.join(below)}."
    return [text]
