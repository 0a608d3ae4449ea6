"""Run a study's runs once each, resumably, and turn run folders into result rows.

A study is a list of :class:`~.runs.RunSpec`. Each run lives in ``OUT_ROOT/runs/NAME-HASH10`` where
``HASH10`` is the first 10 hex digits of :func:`~.runs.config_hash` (SHA-256 of the resolved config
JSON). For each run, :func:`ensure_run`:

* **skips** it when the folder's final evaluation row is present and its recorded hash matches;
* **resumes** it (``train(..., resume=True)``) when the folder holds a trainer checkpoint;
* **restarts** it from scratch when the folder exists but has no checkpoint yet.

Rows (:func:`result_row`) carry: params, training tokens, training FLOPs (``3 × forward FLOPs per
token × tokens``, the usual forward + backward estimate, the same formula for AR and diffusion),
wall time in optimizer steps, the valid bound (nats/token, ± Monte Carlo s.e.), bits/char or
bits/dim, the Prime objective and the gap ``L_valid − L_prime`` per token (docs/method.md §4–5).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import runs
from .determinism import determinism_enabled, enable_determinism
from .runs import RunSpec

__all__ = ["EXPERIMENT_FILE", "ensure_run", "result_row", "run_folder", "run_study", "write_study_json"]

EXPERIMENT_FILE = "experiment.json"


def run_folder(out_root: str | Path, study: str, spec: RunSpec, cfg=None) -> Path:
    """``OUT_ROOT/runs/NAME-HASH10``: shared by all studies, so two studies that ask for the same
    run (same name and config) train it once. ``study`` is only used in log lines."""
    cfg = cfg if cfg is not None else runs.resolve(spec)
    return Path(out_root) / "runs" / f"{spec.name}-{runs.config_hash(cfg, spec.variant)[:10]}"


def _record(folder: Path) -> dict:
    path = folder / EXPERIMENT_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def ensure_run(
    spec: RunSpec,
    out_root: str | Path,
    study: str,
    *,
    log: Callable[[str], None] = print,
    deterministic: bool = True,
) -> tuple[Path, str]:
    """Make sure ``spec`` has a finished run folder; returns ``(folder, action)`` with action one of
    ``"skipped"`` (already complete), ``"resumed"``, ``"trained"`` (fresh or restarted)."""
    cfg = runs.resolve(spec)
    digest = runs.config_hash(cfg, spec.variant)
    folder = run_folder(out_root, study, spec, cfg)
    record = _record(folder)
    if runs.final_eval_row(folder) is not None and record.get("config_hash") == digest:
        return folder, "skipped"
    resume = folder.exists() and runs.has_checkpoint(folder)
    if folder.exists() and not resume:
        shutil.rmtree(folder)  # started but no checkpoint yet: nothing worth keeping
    record = {
        "config_hash": digest,
        "name": spec.name,
        "preset": spec.preset,
        "overrides": {k: str(v) for k, v in spec.overrides.items()},
        "variant": dict(spec.variant),
        "labels": dict(spec.labels),
        "deterministic": deterministic,
        "wall_s": float(record.get("wall_s", 0.0)),
        "sittings": int(record.get("sittings", 0)) + 1,
    }
    if resume:  # an owned run folder already; a fresh one must be empty when train() claims it
        (folder / EXPERIMENT_FILE).write_text(json.dumps(record, indent=2))  # train() ignores this file
    log(f"[{study}] {'resuming' if resume else 'training'} {spec.name} → {folder}")
    previous = determinism_enabled()
    enable_determinism(deterministic)
    start = time.perf_counter()
    try:
        runs.train_run(cfg, folder, resume=resume, variant=spec.variant)
    finally:
        enable_determinism(previous)
        record["wall_s"] += time.perf_counter() - start
        if folder.exists():
            (folder / EXPERIMENT_FILE).write_text(json.dumps(record, indent=2))
    return folder, "resumed" if resume else "trained"


def result_row(spec: RunSpec, folder: Path) -> dict:
    """One JSON-ready row for a finished run (see the module docstring for the fields and units)."""
    cfg = runs.resolve(spec)
    final = runs.final_eval_row(folder)
    if final is None:
        raise FileNotFoundError(f"{folder} has no final evaluation row (run not finished)")
    model = runs.load_model(folder)
    params = int(model.num_parameters())
    fwd = float(model.flops_per_token())
    tokens = runs.tokens_seen(folder)
    nats = float(final["nelbo_nats_per_token"])
    se = float(final.get("stderr_nats_per_token", 0.0))
    prime = final.get("prime_objective_nats_per_token")
    ln2 = math.log(2)
    row = {
        "name": spec.name,
        **spec.labels,
        **runs.describe(cfg),
        "variant": dict(spec.variant),
        "config_hash": runs.config_hash(cfg, spec.variant),
        "run_dir": str(folder),
        "base": int(model.subtokenizer.base),
        "params": params,
        "fwd_flops_per_token": fwd,
        "train_tokens": tokens,
        "train_flops": 3.0 * fwd * tokens,
        "train_wall_s": runs.run_elapsed_s(folder),
        "wall_s": float(_record(folder).get("wall_s", 0.0)),
        "valid_nats_per_token": nats,
        "valid_stderr_nats_per_token": se,
        "valid_bits_per_token": nats / ln2,
        "valid_stderr_bits_per_token": se / ln2,
        "prime_objective_nats_per_token": None if prime is None else float(prime),
        "gap_nats_per_token": None if prime is None else nats - float(prime),
        "num_times": final.get("num_times"),
        "num_sequences": final.get("num_sequences"),
        "estimator": final.get("estimator"),
        "deterministic": _record(folder).get("deterministic"),
        "precision_used": _precision_used(cfg),
    }
    bits = nats / ln2
    for unit in ("bits_per_char", "bits_per_dim"):
        if unit in final:
            scale = float(final[unit]) / bits if bits else 1.0
            row[f"valid_{unit}"] = float(final[unit])
            row[f"valid_stderr_{unit}"] = se / ln2 * scale
    if "data_entropy_nats_per_token" in final:
        row["data_entropy_nats_per_token"] = float(final["data_entropy_nats_per_token"])
    return row


def _precision_used(cfg) -> str:
    """``"bf16"`` or ``"fp32"``: what ``cfg.precision`` trained in on this machine's device
    (``auto`` is bf16 on CUDA and on CPUs with native bf16: ``models.base.uses_bf16``)."""
    from ..distributed import _pick_device
    from ..models.base import uses_bf16

    return "bf16" if uses_bf16(cfg.precision, _pick_device(cfg.device, 0)) else "fp32"


def run_study(
    study: str,
    specs: Sequence[RunSpec],
    out_root: str | Path,
    *,
    log: Callable[[str], None] = print,
    deterministic: bool = True,
) -> list[dict]:
    """Ensure every run (in order) and return their rows (each with ``action``)."""
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"study {study!r} has duplicate run names {dup}")
    for s in specs:  # validate every config (and variant) before training anything
        runs.family_for(runs.resolve(s), s.variant)
    rows = []
    for s in specs:
        folder, action = ensure_run(s, out_root, study, log=log, deterministic=deterministic)
        row = result_row(s, folder)
        row["action"] = action
        rows.append(row)
    return rows


def write_study_json(path: str | Path, payload: dict) -> Path:
    """Write a study's JSON (sorted keys, indent 2) atomically-enough; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path
