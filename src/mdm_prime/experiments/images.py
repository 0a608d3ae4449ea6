"""Study ``images``: MNIST at 256 levels with the U-Net, MDM vs Prime ℓ ∈ {2, 4}.

Rows: the valid bound in bits/dim ± s.e. (docs/method.md §5), the Prime objective, the Fréchet
distance (§8) on the penultimate features of the in-project classifier
(:mod:`mdm_prime.metrics.classifier`, trained here once on MNIST's labels) between ``NUM_FD``
samples at NFE = T ∈ ``NFES`` and as many validation images, and the share of those samples the
classifier labels with probability ≥ 0.9 (:func:`~mdm_prime.metrics.label_confidence`; do the samples
show digits? the validation images give the ceiling); a sample grid per row.
The ``mnist-small`` preset's U-Net (``toy`` size), batch 64, ``STEPS`` (600) × budget steps.

    mdm-prime experiment images [--budget X] [--smoke]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import MDM, PRIME, fmt_pm, payload, sample_tokens, scaled_steps, scaled_warmup
from .runner import run_study
from .runs import RunSpec

NAME = "images"
TITLE = "MNIST (256 levels), U-Net: bits/dim and Fréchet distance"
STEPS = 600
ELLS = (2, 4)
NFES = (32, 128)
CONFIDENT = 0.9
"""Probability at which the classifier's label counts as a recognised digit."""
NUM_FD = 200
CPU_MINUTES = 50.0
"""Wall minutes at budget 1 on 2 Zen 4 cores (bf16 autocast), measured: 48 min (three runs of 600
steps ≈ 11 min each at ≈ 1.1 s per step of 64 images, the three final evaluations, 1 min for the
classifier, and ≈ 10 min for the Fréchet samples: 3 models × 200 samples × (32 + 128) calls, a part
that does not shrink with ``--budget``). On 2 AVX2 cores in fp32 expect about 2.5× as long."""
CPU_MINUTES_MACHINE = "2 Zen 4 cores with AVX512-BF16, bf16 autocast"


GRID_SAMPLES = 32
"""Samples drawn in each row's grid (at the largest NFE)."""


def grid_title(row: dict, steps: int, num: int, nfe: float | None = None) -> str:
    """The title strip of a row's sample grid: model and ℓ, samples, sampling steps (and mean network
    calls when caching made them fewer), training steps."""
    from ..plotting import image_grid_title

    return image_grid_title(
        f"{row['family_label']}, {row.get('data', 'images')}",
        num=num,
        steps=steps,
        nfe=nfe,
        train_steps=row.get("max_steps"),
    )


def specs(smoke: bool = False, budget: float = 1.0) -> list[RunSpec]:
    steps = scaled_steps(3 if smoke else STEPS, budget)
    ov = {
        "max_steps": str(steps),
        "warmup_steps": str(scaled_warmup(steps)),
        "num_preview_samples": "0",
        "eval_every": "0",
    }
    if smoke:
        ov.update(
            {
                "data": "digits",
                "batch_size": "8",
                "model_overrides.base_channels": "8",
                "model_overrides.embed_dim": "8",
                "model_overrides.attention_resolutions": "[]",
                "final_eval_sequences": "4",
                "final_eval_num_times": "2",
                "checkpoint_every": "0",
            }
        )
    out = [
        RunSpec(
            f"img-mdm-s{steps}{'-smoke' if smoke else ''}",
            "mnist-small",
            {**ov, "family": MDM, "subtokens": "1"},
            labels={"family_label": "MDM (ℓ=1)"},
        )
    ]
    for ell in ELLS:
        out.append(
            RunSpec(
                f"img-prime-l{ell}-s{steps}{'-smoke' if smoke else ''}",
                "mnist-small",
                {**ov, "family": PRIME, "subtokens": str(ell)},
                labels={"family_label": f"Prime ℓ={ell}"},
            )
        )
    return out


def _classifier(out_root: Path, data: str, smoke: bool, log=print):
    from ..metrics.classifier import load_classifier, train_classifier

    folder = out_root / "classifiers" / (data.replace(":", "_") + ("-smoke" if smoke else ""))
    try:
        return load_classifier(folder)
    except FileNotFoundError:
        log(f"[{NAME}] training the Fréchet-distance classifier on {data} → {folder}")
        train_classifier(
            data,
            folder,
            epochs=1 if smoke else 0,
            max_train=200 if smoke else 0,
            widths=(4, 8, 8) if smoke else (32, 64, 64),
            feature_dim=8 if smoke else 128,
            log=log,
        )
        return load_classifier(folder)


def run(
    out_root: str | Path, results_dir: str | Path, *, smoke: bool = False, budget: float = 1.0, log=print
) -> dict:
    from ..metrics.classifier import label_confidence
    from ..metrics.frechet import frechet_distance
    from ..plotting import save_image_grid
    from .runs import build_task_for, load_model, resolve

    sp = specs(smoke, budget)
    rows = run_study(NAME, sp, out_root, log=log)
    cfg = resolve(sp[0])
    task = build_task_for(cfg)
    classifier, ccfg = _classifier(Path(out_root), cfg.data, smoke, log=log)
    num = 16 if smoke else NUM_FD
    nfes = (4, 8) if smoke else NFES
    shape = task.image_shape
    reference = task.split("valid")[:num].reshape(-1, *shape)
    reference_confidence = label_confidence(
        reference, classifier, levels=task.num_classes, threshold=CONFIDENT
    )
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    done_calls, total_calls, start = 0, len(rows) * sum(nfes), time.perf_counter()
    for row in rows:
        model = load_model(row["run_dir"])
        row["fd"] = {}
        for T in nfes:
            out = sample_tokens(model, num=num, steps=T, seq_len=task.seq_len, seed=0, batch_size=100)
            done_calls += T
            elapsed = time.perf_counter() - start
            eta = elapsed * (total_calls - done_calls) / done_calls
            log(
                f"[{NAME}] {row['family_label']}: {num} samples at NFE {T} in {out['wall_s']:.0f} s "
                f"(Fréchet samples {done_calls}/{total_calls} steps, ETA {eta / 60:.1f} min)"
            )
            imgs = out["tokens"].reshape(-1, *shape)
            fd = frechet_distance(imgs, reference, classifier, levels=task.num_classes)
            row["fd"][str(T)] = {
                "frechet_distance": fd["frechet_distance"],
                "wall_s": out["wall_s"],
                "network_calls_mean": out["network_calls_mean"],
                "label_confidence": label_confidence(
                    imgs, classifier, levels=task.num_classes, threshold=CONFIDENT
                ),
            }
            if T == nfes[-1]:
                grid = results_dir / f"{NAME}-{row['name']}.png"
                shown = np.asarray(imgs[:GRID_SAMPLES])
                title = grid_title(row, T, len(shown), out["network_calls_mean"])
                save_image_grid(shown, grid, levels=task.num_classes, title=title)
                plots.append(grid.name)
                row["grid"] = grid.name
        row["fd_classifier"] = fd["fd_classifier"]
    return payload(
        NAME,
        smoke=smoke,
        budget=budget,
        rows=rows,
        extra={
            "title": TITLE,
            "plots": plots,
            "nfes": list(nfes),
            "fd_num_samples": num,
            "classifier_valid_accuracy": ccfg.get("valid_accuracy"),
            "reference_label_confidence": reference_confidence,
        },
    )


def _confident(entry: dict | None) -> str:
    """``"62% (0.81)"``: the share of images labelled with p ≥ threshold (mean top probability)."""
    if not entry:
        return "—"
    return f"{100 * entry['confident_fraction']:.0f}% ({entry['mean_confidence']:.2f})"


def section(data: dict) -> str:
    nfes = data["nfes"]
    acc = data.get("classifier_valid_accuracy")
    ref = data.get("reference_label_confidence")
    last = str(nfes[-1])
    lines = [
        (
            f"Fréchet distance on the in-project classifier's penultimate features "
            f"({data['rows'][0].get('fd_classifier', '?')}; validation accuracy "
            f"{'?' if acc is None else f'{acc:.3f}'}), {data['fd_num_samples']} samples vs as many "
            "validation images "
            "(lower is better; compare only at equal N)."
        ),
    ]
    if ref:
        lines.append(
            f'"Digits": the share of the {data["fd_num_samples"]} samples at NFE {last} that the same '
            f"classifier labels with probability ≥ {ref['threshold']:g} (in brackets: the mean top "
            f"probability); the validation images score {_confident(ref)}."
        )
    lines += [
        "",
        "| model | valid bits/dim ± s.e. | `L_prime`, nats/dim | gap | "
        + " | ".join(f"FD @ NFE {t}" for t in nfes)
        + (f" | digits @ NFE {last}" if ref else "")
        + " | params | training FLOPs |",
        "|---|---:|---:|---:|" + "---:|" * len(nfes) + ("---:|" if ref else "") + "---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['family_label']} | {fmt_pm(r['valid_bits_per_dim'], r['valid_stderr_bits_per_dim'])} | "
            f"{fmt_pm(r['prime_objective_nats_per_token'])} | {fmt_pm(r['gap_nats_per_token'])} | "
            + " | ".join(f"{r['fd'][str(t)]['frechet_distance']:.3g}" for t in nfes)
            + (f" | {_confident(r['fd'][last].get('label_confidence'))}" if ref else "")
            + f" | {r['params']:,} | {r['train_flops']:.2e} |"
        )
    lines.append("")
    for r in data["rows"]:
        if r.get("grid"):
            lines.append(f"{r['family_label']}, NFE {nfes[-1]}: ![{r['name']}](results/{r['grid']})")
            lines.append("")
    return "\n".join(lines)


def reading(data: dict) -> list[str]:
    rows = data["rows"]
    mdm = next((r for r in rows if r["family"] == MDM), None)
    if mdm is None:
        return []
    out = []
    T = str(data["nfes"][-1])
    for r in rows:
        if r is mdm:
            continue
        d = r["valid_bits_per_dim"] - mdm["valid_bits_per_dim"]
        se = (r["valid_stderr_bits_per_dim"] ** 2 + mdm["valid_stderr_bits_per_dim"] ** 2) ** 0.5
        verdict = (
            "indistinguishable from MDM (within 2 s.e.)"
            if abs(d) <= 2 * se
            else "better than MDM"
            if d < 0
            else "worse than MDM"
        )
        fd_d = r["fd"][T]["frechet_distance"] - mdm["fd"][T]["frechet_distance"]
        conf = r["fd"][T].get("label_confidence")
        digits = (
            f"; {_confident(conf)} of its samples are confidently a digit (MDM "
            f"{_confident(mdm['fd'][T].get('label_confidence'))})"
            if conf
            else ""
        )
        out.append(
            f"{r['family_label']}: {r['valid_bits_per_dim']:.3f} valid bits/dim, {verdict} "
            f"({d:+.3f} ± {se:.3f}); Fréchet distance at NFE {T} {'lower' if fd_d < 0 else 'higher'} by "
            f"{abs(fd_d):.3g}{digits}."
        )
    return out
