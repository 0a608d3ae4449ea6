"""Helpers shared by the study modules: the text run specs (one naming scheme, so studies share
runs), the smoke corpus, number formatting, study payloads and sampling with counters."""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import platform
import sys
import time
from pathlib import Path

import torch

from ..families import FAMILIES, AutoregressiveFamily, DiffusionFamily
from .runs import RunSpec

__all__ = [
    "AR",
    "ELL_BASES",
    "MAIN_JOB_STEPS",
    "MDM",
    "PRIME",
    "fmt_pm",
    "interp_loglinear",
    "payload",
    "sample_tokens",
    "scaled_warmup",
    "smoke_text_data",
    "study_command",
    "text_spec",
]


def _family_name(kind: type, fixed_subtokens: int | None) -> str:
    """The first name in :data:`~mdm_prime.families.FAMILIES` whose family is a ``kind`` with that
    ``fixed_subtokens`` (the studies name families through the table, never by a literal)."""
    for name, family in FAMILIES.items():
        if type(family) is kind and family.fixed_subtokens == fixed_subtokens:
            return name
    raise LookupError(f"no {kind.__name__} with fixed_subtokens={fixed_subtokens} in FAMILIES")


PRIME = _family_name(DiffusionFamily, None)
"""MDM-Prime: diffusion over ℓ ≥ 1 sub-tokens (ℓ chosen by the run)."""
MDM = _family_name(DiffusionFamily, 1)
"""Masked diffusion over whole tokens (ℓ = 1)."""
AR = _family_name(AutoregressiveFamily, 1)
"""The autoregressive baseline (exact likelihood)."""

MAIN_JOB_STEPS = 1700
"""Optimizer steps of the README main job (``text-tiny``: batch 32 × L 128 → 6.96 M training bytes)."""

MAIN_JOB_WARMUP = 100
"""Linear warm-up steps of the main job; runs shorter than the main job scale it by their length."""

ELL_BASES = {1: 256, 2: 16, 4: 4, 8: 2}
"""ℓ → digit base b for byte data (C = 256 = b^ℓ)."""

SMOKE_TEXT = {
    "seq_len": "16",
    "batch_size": "8",
    "model_size": "tiny",
    "model_overrides.dim": "16",
    "model_overrides.depth": "1",
    "model_overrides.heads": "2",
    "warmup_steps": "0",
    "eval_every": "0",
    "checkpoint_every": "0",
    "num_preview_samples": "0",
    "final_eval_sequences": "8",
    "final_eval_num_times": "2",
    "precision": "fp32",
    "log_every": "1",
}


def smoke_text_data(out_root: str | Path) -> str:
    """Write a small deterministic text corpus (several documents, so the document split has
    train / valid / test) under ``out_root`` and return its ``text:PATH`` data spec."""
    path = Path(out_root) / "smoke-corpus.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    words = ["the", "prime", "mask", "digit", "token", "of", "and", "a", "model", "bound", "valid", "step"]
    docs = []
    for _ in range(60):  # documents are blank-line separated blocks; 60 so valid/test are not empty
        idx = torch.randint(len(words), (120,), generator=g).tolist()
        docs.append(" ".join(words[i] for i in idx) + ".")
    text = "\n\n".join(docs) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return f"text:{path}"


def text_spec(
    family: str,
    ell: int,
    *,
    steps: int,
    smoke: bool,
    data: str | None = None,
    objective: str = "prime",
    carry_over: bool = True,
    tag: str = "",
    seed: int = 0,
) -> RunSpec:
    """The byte-text run of the main job (``text-tiny``: 192-wide, 4-block transformer, L = 128,
    batch 32) for ``family`` ∈ {prime, mdm, ar} with ℓ sub-tokens and ``steps`` optimizer steps.
    Names are ``FAMILY[-lELL][-OBJ][-nocarry]-sSTEPS`` so that studies asking for the same run share
    it. ``smoke`` swaps in a 1-block, 16-wide model on a small corpus (seconds)."""
    ov: dict = {
        "family": family,
        "subtokens": str(ell if family == PRIME else 1),
        "max_steps": str(steps),
        "seed": str(seed),
    }
    if not smoke and steps < MAIN_JOB_STEPS:
        # the warm-up shrinks with the budget (100 of the main job's 1,700 steps), so a short run still
        # spends most of its steps at the peak rate and ends its cosine decay like the main job
        ov["warmup_steps"] = str(scaled_warmup(steps))
    if objective != "prime":
        ov["objective"] = objective
    if smoke:
        ov.update(SMOKE_TEXT)
    if data is not None:
        ov["data"] = data
    name = family + (f"-l{ell}" if family == PRIME else "")
    if objective != "prime":
        name += f"-{objective}"
    if not carry_over:
        name += "-nocarry"
    name += f"-s{steps}{tag}"
    labels = {
        "family_label": {
            PRIME: f"Prime ℓ={ell} (b={ELL_BASES.get(ell, '?')})",
            MDM: "MDM (ℓ=1)",
            AR: "autoregressive",
        }[family]
    }
    variant = {} if carry_over else {"carry_over": False}
    return RunSpec(name=name, preset="text-tiny", overrides=ov, variant=variant, labels=labels)


def scaled_warmup(steps: int) -> int:
    """Warm-up steps for a run of ``steps`` steps: the main job's share (100 of 1,700), at least 1."""
    return max(1, round(MAIN_JOB_WARMUP * steps / MAIN_JOB_STEPS))


def scaled_steps(steps: int, budget: float) -> int:
    """``max(1, round(steps · budget))``; raises ``ValueError`` for a non-positive budget."""
    if not (isinstance(budget, (int, float)) and budget > 0 and math.isfinite(budget)):
        raise ValueError(f"budget must be a positive number, got {budget!r}")
    return max(1, round(steps * budget))


def fmt_pm(value: float | None, se: float | None = None, digits: int = 3) -> str:
    """``"3.590 ± 0.013"`` (or ``"—"`` for ``None``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) < 0.5 * 10**-digits:
        value = 0.0  # no "-0.000" for a difference that rounds to zero
    if se is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def study_command(study: str, smoke: bool, budget: float) -> str:
    cmd = f"mdm-prime experiment {study}"
    if smoke:
        cmd += " --smoke"
    if budget != 1.0:
        cmd += f" --budget {budget:g}"
    return cmd


def plot_path(results_dir: str | Path, study: str, smoke: bool) -> Path:
    """Where a study's figure goes: ``RESULTS_DIR/STUDY.png`` (``STUDY-smoke.png`` for smoke runs);
    creates ``results_dir``."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    return results_dir / f"{study}{'-smoke' if smoke else ''}.png"


def payload(study: str, *, smoke: bool, budget: float, rows: list, extra: dict | None = None) -> dict:
    """The study JSON: study name, the command that reproduces it, when and where it ran, its rows."""
    return {
        "study": study,
        "command": study_command(study, smoke, budget),
        "smoke": smoke,
        "budget": budget,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": machine_description(rows),
        "rows": rows,
        **(extra or {}),
    }


def machine_description(rows: list | None = None) -> str:
    """Where a study ran, for the line above its table: architecture, the CPU's vector capability and
    whether it has native bf16 (AVX512-BF16 / AMX), the precision the runs trained in (from the rows'
    ``precision_used``), threads, torch and python versions."""
    from ..models.base import cpu_has_native_bf16

    cpu = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    cpu += ", native bf16" if cpu_has_native_bf16() else ", no native bf16"
    used = sorted(
        {r["precision_used"] for r in rows or [] if isinstance(r, dict) and r.get("precision_used")}
    )
    precision = f", trained in {' and '.join(used)}" if used else ""
    return (
        f"{cpu}{precision}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}"
    )


@torch.no_grad()
def sample_tokens(model, *, num: int, steps: int, seq_len: int, seed: int = 0, batch_size: int = 64) -> dict:
    """``num`` unconditional samples (``LongTensor[num, L]``) with counters: diffusion models use
    :func:`mdm_prime.sampling.sample` (joint sampler, caching on, uniform grid); the AR model its
    cached ``generate``. Returns ``{"tokens", "network_calls_mean", "idle_steps_mean", "wall_s"}``."""
    from ..sampling import sample

    model.eval()
    chunks, calls, idle = [], [], []
    start = time.perf_counter()
    for i, lo in enumerate(range(0, num, batch_size)):
        n = min(batch_size, num - lo)
        if FAMILIES[getattr(model, "family", PRIME)].exact_likelihood:
            g = torch.Generator().manual_seed(seed + i)
            chunks.append(model.generate(n, seq_len, generator=g).cpu())
            calls.append(torch.full((n,), float(seq_len)))
            idle.append(torch.zeros(n))
        else:
            res = sample(
                model,
                model.subtokenizer,
                steps=steps,
                num_samples=n,
                num_tokens=seq_len,
                schedule=model.schedule,
                cache=True,
                seed=seed + i,
            )
            chunks.append(res.tokens.cpu())
            calls.append(res.network_calls.double())
            idle.append(res.idle_steps.double())
    return {
        "tokens": torch.cat(chunks),
        "network_calls_mean": float(torch.cat(calls).double().mean()),
        "idle_steps_mean": float(torch.cat(idle).double().mean()),
        "wall_s": time.perf_counter() - start,
    }


def interp_loglinear(xs: list[float], ys: list[float], target: float) -> float | None:
    """The ``x`` at which the piecewise log-linear interpolation of ``y`` against ``log x`` reaches
    ``target`` (``xs`` increasing). Returns ``None`` when ``target`` is outside the range of ``ys``
    (no extrapolation)."""
    pts = sorted(zip(xs, ys))
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if min(y0, y1) <= target <= max(y0, y1):
            if y1 == y0:
                return x0
            f = (target - y0) / (y1 - y0)
            return math.exp(math.log(x0) + f * (math.log(x1) - math.log(x0)))
    return None


def plt():
    """matplotlib.pyplot on the Agg backend."""
    from ..extras import require

    require("matplotlib", "the study figures")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot
