"""Study ``sample_quality``: sample quality against sampling steps (docs/method.md §6, §8).

MDM and Prime (ℓ = 2) of the ``ell_sweep`` budget (the same runs; trained here if missing) sample
``NUM_SAMPLES`` sequences at T ∈ {16, 32, 64, 128, 256} (joint sampler, caching on, temperature 1,
no nucleus): generative perplexity under the study's autoregressive model (same corpus, tokenizer
and budget) with the samples' unigram entropy beside it (a low perplexity with a low entropy is
repetition, not quality), network calls per sequence, and wall time. Reference rows: the AR
model's own samples and validation text scored by the same AR model.

    mdm-prime experiment sample_quality [--budget X] [--smoke]
"""

from __future__ import annotations

import math
from pathlib import Path

from .common import (
    AR,
    MAIN_JOB_STEPS,
    MDM,
    PRIME,
    payload,
    plot_path,
    plt,
    sample_tokens,
    scaled_steps,
    smoke_text_data,
    text_spec,
)
from .runner import run_study

NAME = "sample_quality"
TITLE = "sample quality against sampling steps"
STEPS = (16, 32, 64, 128, 256)
NUM_SAMPLES = 64
CPU_MINUTES = 5.0
"""Estimated CPU time on 2 AVX2 cores, the three runs already trained by ``ell_sweep`` (measured: 5.1
min wall at budget 0.25; sampling does not scale with the budget): 2 models × 5 T × 64 samples of
128 bytes plus AR samples and scoring."""


def specs(smoke: bool = False, budget: float = 1.0, data: str | None = None):
    steps = scaled_steps(4 if smoke else MAIN_JOB_STEPS, budget)
    return [
        text_spec(MDM, 1, steps=steps, smoke=smoke, data=data),
        text_spec(PRIME, 2, steps=steps, smoke=smoke, data=data),
        text_spec(AR, 1, steps=steps, smoke=smoke, data=data),
    ]


def run(
    out_root: str | Path, results_dir: str | Path, *, smoke: bool = False, budget: float = 1.0, log=print
) -> dict:
    from ..metrics.generative import generative_perplexity
    from .runs import build_task_for, load_model, resolve

    data = smoke_text_data(out_root) if smoke else None
    sp = specs(smoke, budget, data)
    runs_ = run_study(NAME, sp, out_root, log=log)
    by = {r["family"]: r for r in runs_}
    ar = load_model(by[AR]["run_dir"])
    L = by[AR]["seq_len"]
    num = 4 if smoke else NUM_SAMPLES
    grid = (4, 8) if smoke else STEPS
    rows = []
    task = build_task_for(resolve(sp[2]))
    ref = task.split("valid")[:num]
    rows.append(
        {
            "model": "validation text",
            "family": "data",
            "T": None,
            **_scores(generative_perplexity(ref, ar)),
            "network_calls_mean": None,
            "wall_s": None,
        }
    )
    out = sample_tokens(ar, num=num, steps=L, seq_len=L, seed=0)
    rows.append(
        {
            "model": by[AR]["family_label"],
            "family": AR,
            "T": L,
            **_scores(generative_perplexity(out["tokens"], ar)),
            "network_calls_mean": out["network_calls_mean"],
            "idle_steps_mean": 0.0,
            "wall_s": out["wall_s"],
        }
    )
    for fam in (MDM, PRIME):
        model = load_model(by[fam]["run_dir"])
        for T in grid:
            out = sample_tokens(model, num=num, steps=T, seq_len=L, seed=0)
            rows.append(
                {
                    "model": by[fam]["family_label"],
                    "family": fam,
                    "T": T,
                    **_scores(generative_perplexity(out["tokens"], ar)),
                    "network_calls_mean": out["network_calls_mean"],
                    "idle_steps_mean": out["idle_steps_mean"],
                    "wall_s": out["wall_s"],
                    "run_dir": by[fam]["run_dir"],
                }
            )
    for r in rows:
        r.update(num_samples=num, headline=False)
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
            "seq_len": L,
            "ar_run": by[AR]["run_dir"],
            "runs": runs_,
        },
    )


def _scores(g: dict) -> dict:
    return {
        "gen_ppl": g["generative_perplexity"],
        "gen_nats_per_token": g["generative_nats_per_token"],
        "gen_stderr_nats_per_token": g["generative_stderr_nats_per_token"],
        "unigram_entropy_nats": g["sample_unigram_entropy_nats"],
    }


def _plot(rows: list[dict], path: Path) -> None:
    pyplot = plt()
    fig, (a, b) = pyplot.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for fam in (MDM, PRIME):
        pts = [r for r in rows if r["family"] == fam]
        if pts:
            a.plot([r["T"] for r in pts], [r["gen_ppl"] for r in pts], marker="o", label=pts[0]["model"])
            b.plot(
                [r["T"] for r in pts],
                [r["network_calls_mean"] for r in pts],
                marker="o",
                label=pts[0]["model"],
            )
    for r in rows:
        if r["family"] in (AR, "data"):
            a.axhline(r["gen_ppl"], ls="--" if r["family"] == AR else ":", color="k", label=r["model"])
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps T")
        ax.legend(fontsize=7)
    a.set_ylabel("generative perplexity under the AR model")
    b.set_ylabel("network calls per sequence (caching)")
    fig.tight_layout()
    fig.savefig(path)
    pyplot.close(fig)


def section(data: dict) -> str:
    lines = [
        (
            f"{data['rows'][0]['num_samples']} samples of L = {data['seq_len']} per row; generative "
            "perplexity "
            "under the study's AR model (± s.e. in nats/token over samples); unigram entropy of the "
            "samples in nats."
        ),
        "",
        (
            "| model | T | gen. perplexity | gen. nats/token ± s.e. | unigram entropy | calls/sequence | "
            "idle steps | wall, s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v, d=1):
        return "—" if v is None else f"{v:.{d}f}"

    for r in data["rows"]:
        lines.append(
            f"| {r['model']} | {r['T'] or '—'} | {r['gen_ppl']:.2f} | {r['gen_nats_per_token']:.3f} ± "
            f"{r['gen_stderr_nats_per_token']:.3f} | {r['unigram_entropy_nats']:.3f} | "
            f"{f(r['network_calls_mean'])} | {f(r.get('idle_steps_mean'))} | {f(r['wall_s'], 2)} |"
        )
    lines += ["", *[f"![{NAME}](results/{p})" for p in data.get("plots", [])]]
    return "\n".join(lines)


def reading(data: dict) -> list[str]:
    rows = data["rows"]
    out = []
    mdm = {r["T"]: r for r in rows if r["family"] == MDM}
    prime = {r["T"]: r for r in rows if r["family"] == PRIME}
    common = sorted(set(mdm) & set(prime))
    if not common:
        return out
    wins = [
        T
        for T in common
        if prime[T]["gen_nats_per_token"]
        + 2 * math.hypot(prime[T]["gen_stderr_nats_per_token"], mdm[T]["gen_stderr_nats_per_token"])
        < mdm[T]["gen_nats_per_token"]
    ]
    losses = [
        T
        for T in common
        if mdm[T]["gen_nats_per_token"]
        + 2 * math.hypot(prime[T]["gen_stderr_nats_per_token"], mdm[T]["gen_stderr_nats_per_token"])
        < prime[T]["gen_nats_per_token"]
    ]
    ties = [T for T in common if T not in wins and T not in losses]
    parts = [
        f"{word} at T ∈ {{{', '.join(map(str, ts))}}}"
        for word, ts in (
            ("better than MDM beyond 2 s.e.", wins),
            ("worse than MDM beyond 2 s.e.", losses),
            ("indistinguishable from MDM", ties),
        )
        if ts
    ]
    ratio = ", ".join(f"{mdm[T]['gen_ppl'] / prime[T]['gen_ppl']:.2f}×" for T in common)
    out.append(
        f"Generative perplexity: Prime ℓ=2 is {'; '.join(parts)} (MDM's perplexity / Prime's: {ratio} "
        f"for T = {', '.join(map(str, common))})."
    )
    lo, hi = common[0], common[-1]
    more = prime[hi]["network_calls_mean"] > mdm[hi]["network_calls_mean"]
    out.append(
        f"Network calls per sequence at T={lo}: {mdm[lo]['network_calls_mean']:.1f} (MDM) vs "
        f"{prime[lo]['network_calls_mean']:.1f} (Prime); at T={hi}: {mdm[hi]['network_calls_mean']:.1f} vs "
        f"{prime[hi]['network_calls_mean']:.1f}"
        + (
            " — with caching an idle step costs MDM no call, so Prime's use of those steps shows up as more "
            "calls, not as a saving."
            if more
            else "."
        )
    )
    ent = {r["family"]: r["unigram_entropy_nats"] for r in rows if r["family"] in ("data", AR)}
    if "data" in ent:
        out.append(
            f"Unigram entropy of validation text {ent['data']:.3f} nats; samples at T={hi}: "
            f"MDM {mdm[hi]['unigram_entropy_nats']:.3f}, Prime {prime[hi]['unigram_entropy_nats']:.3f}."
        )
    return out
