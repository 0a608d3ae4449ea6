"""The one adapter between the experiment studies and the training / evaluation code.

Everything the studies know about run folders, the trainer and the evaluation rows lives here, so a
restructuring of ``train.py`` / ``tasks.py`` needs an update of this module only. Public pieces:

* :class:`RunSpec` — a named run: config preset + ``key=value`` overrides (+ an experiment
  ``variant`` the trainer does not know about, e.g. ``{"carry_over": False}``).
* :func:`config_hash` — SHA-256 of the resolved config JSON (plus the variant, when there is one).
* :func:`train_run` — train or resume one run folder (the variant selects the training family,
  :func:`family_for`: e.g. :class:`NoCarryOverFamily` for ``carry_over=False``).
* :func:`final_eval_row` / :func:`run_elapsed_s` — what the run folder's ``metrics.jsonl`` says.
* :func:`load_model` — the EMA model of a finished run folder.
* :func:`build_task_for` — the data of a config (for sample metrics and image references).

Units: likelihoods from the final evaluation row are the valid bound ``L_valid`` (docs/method.md §5)
in nats per token; ``prime_objective_nats_per_token`` is the paper's objective ``L_prime`` (§4),
which is not a bound for ℓ > 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..families import DiffusionFamily, Family, get_family
from ..schedules import is_per_digit

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "VARIANTS",
    "NoCarryOverFamily",
    "RunSpec",
    "build_task_for",
    "config_hash",
    "family_for",
    "final_eval_row",
    "has_checkpoint",
    "load_model",
    "make_trainer",
    "metric_rows",
    "resolve",
    "run_elapsed_s",
    "train_run",
]

CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
VARIANTS = {"carry_over": (True, False)}
"""Experiment-only switches (not trainer config keys): name → allowed values; the first is the
trainer's own behaviour."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: ``name`` (unique in the study, used in folder names and tables), the
    config ``preset``, ``overrides`` (``key → value``; strings are parsed like command-line
    ``--set``), ``variant`` (see :data:`VARIANTS`) and free ``labels`` copied into the result row."""

    name: str
    preset: str
    overrides: dict = field(default_factory=dict)
    variant: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(
                f"run name must be a non-empty string without '/', '\\' or spaces, got {self.name!r}"
            )
        for key, value in self.variant.items():
            if key not in VARIANTS:
                raise ValueError(f"unknown run variant {key!r}; expected one of {sorted(VARIANTS)}")
            if value not in VARIANTS[key]:
                raise ValueError(f"variant {key} must be one of {VARIANTS[key]}, got {value!r}")


def resolve(spec: RunSpec):
    """The validated :class:`~mdm_prime.configs.TrainConfig` of ``spec`` (raises ``ValueError`` on a
    bad preset, key or value, before any work)."""
    from ..configs import resolve_config

    return resolve_config(spec.preset, dict(spec.overrides))


def _effective_variant(variant: dict) -> dict:
    """The variant without entries equal to the trainer's default (so they do not change the hash)."""
    return {k: v for k, v in sorted(variant.items()) if v != VARIANTS[k][0]}


def config_hash(cfg, variant: dict | None = None) -> str:
    """SHA-256 (hex) of the resolved config's JSON (sorted keys), with the non-default variant entries
    appended when there are any."""
    text = cfg.to_json()
    extra = _effective_variant(variant or {})
    if extra:
        text += "\nvariant=" + json.dumps(extra, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a resumable trainer checkpoint."""
    from ..train import STATE_FILE

    folder = Path(folder)
    return any((folder / name / STATE_FILE).exists() for name in ("checkpoint", "checkpoint.old"))


def _rows(folder: Path) -> list[dict]:
    path = folder / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return rows


def metric_rows(folder: str | os.PathLike) -> list[dict]:
    """Every row of the run folder's ``metrics.jsonl``, in order (training, evaluation and final rows;
    a line cut short by a kill is skipped)."""
    return _rows(Path(folder))


def final_eval_row(folder: str | os.PathLike) -> dict | None:
    """The last ``final: true`` row of ``metrics.jsonl`` (keys: ``nelbo_nats_per_token``,
    ``stderr_nats_per_token``, ``bits_per_token``, ``bits_per_char`` (text) or ``bits_per_dim``
    (images), ``prime_objective_nats_per_token`` (diffusion), ``data_entropy_nats_per_token``
    (toy), ``num_times``, ``num_sequences``, ``step``), or ``None``."""
    finals = [r for r in _rows(Path(folder)) if r.get("final") is True and "nelbo_nats_per_token" in r]
    return finals[-1] if finals else None


def run_elapsed_s(folder: str | os.PathLike) -> float:
    """Seconds spent in optimizer steps (the trainer's ``elapsed_s``, summed over sittings)."""
    values = [r["elapsed_s"] for r in _rows(Path(folder)) if "elapsed_s" in r]
    return float(values[-1]) if values else 0.0


def tokens_seen(folder: str | os.PathLike) -> int:
    """Training tokens of the run (the trainer's ``tokens_seen``; tokens = positions, not digits)."""
    values = [r["tokens_seen"] for r in _rows(Path(folder)) if "tokens_seen" in r]
    return int(values[-1]) if values else 0


def load_model(folder: str | os.PathLike, use_ema: bool = True):
    """The model of a run folder (EMA weights by default), in eval mode on CPU."""
    from ..checkpoint import load_pretrained

    return load_pretrained(Path(folder) / "checkpoint", use_ema=use_ema, map_location="cpu").eval()


def build_task_for(cfg):
    """The task (data splits, units) of a config."""
    from ..tasks import build_task

    return build_task(cfg)


def model_stats(cfg) -> dict:
    """``{"params": trainable scalars, "fwd_flops_per_token": forward FLOPs per token}`` of the
    network ``cfg`` builds (built on CPU, not trained)."""
    task = build_task_for(cfg)
    model = get_family(cfg.family).build_model(cfg, task)
    return {"params": int(model.num_parameters()), "fwd_flops_per_token": float(model.flops_per_token())}


# ----------------------------------------------------------------------------- training
class NoCarryOverFamily(DiffusionFamily):
    """The ablation's family: a :class:`~mdm_prime.families.DiffusionFamily` whose training loss uses
    the plain softmax over all ``C`` classes (no carry-over, docs/method.md §3):
    ``w(t) Σ_i −log softmax(z^i)[x0^i]`` in nats per sequence, over the tokens with at least one
    masked digit. This is how the paper's released text models were trained. It is used only for
    training (the ``carry_over=False`` variant); the saved model is an ordinary diffusion model and is
    scored *with* carry-over, which is a valid model for any logits. Objective ``prime`` only."""

    def __init__(self, base: DiffusionFamily) -> None:
        super().__init__(base.name, base.description + " (trained without carry-over)", base.fixed_subtokens)

    def loss(self, model, x0, noise, *, objective="prime", schedule=None, weighting="elbo", mix=0.5):
        from ..process import mask_subtokens

        if objective != "prime":
            raise ValueError(f"carry_over=False is implemented for objective 'prime' only, got {objective!r}")
        if weighting != "elbo":
            raise ValueError(
                f"carry_over=False is implemented for the ELBO weighting only, got {weighting!r}"
            )
        inner = getattr(model, "module", model)
        schedule = inner.schedule if schedule is None else schedule
        if is_per_digit(schedule):  # docs/method.md §2b
            raise ValueError(
                f"carry_over=False is implemented for one shared schedule only, got {schedule!r}"
            )
        sub = inner.subtokenizer
        y_t = mask_subtokens(sub.encode(x0), noise.t, schedule, sub.mask_id, uniforms=noise.uniforms)
        logits = model(y_t, noise.t).float()
        batch, length = x0.shape
        any_masked = (y_t.view(batch, length, -1) == sub.mask_id).any(-1)
        nll = -torch.log_softmax(logits, -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        return schedule.weight(noise.t.float()) * (nll * any_masked).sum(-1)


def family_for(cfg, variant: dict | None = None) -> Family:
    """The family that trains ``cfg`` under ``variant``: the config's own family, or
    :class:`NoCarryOverFamily` for ``carry_over=False`` (``ValueError`` for a family without
    carry-over, i.e. not a diffusion family, or an objective other than ``prime``)."""
    family = get_family(cfg.family)
    if _effective_variant(variant or {}).get("carry_over") is False:
        if not isinstance(family, DiffusionFamily):
            raise ValueError(f"carry_over=False needs a diffusion family, got {cfg.family!r}")
        if cfg.objective != "prime":
            raise ValueError(
                f"carry_over=False is implemented for objective 'prime' only, got {cfg.objective!r}"
            )
        return NoCarryOverFamily(family)
    return family


def make_trainer(
    cfg, folder: str | os.PathLike, *, resume: bool, variant: dict | None = None, show_progress: bool = False
):
    """A :class:`~mdm_prime.train.Trainer` for ``cfg`` whose family is :func:`family_for` (the trainer
    calls ``self.family.loss`` at every step; the network it builds is the config family's)."""
    from ..train import Trainer

    family = family_for(cfg, variant)  # before any work: a bad variant raises here
    trainer = Trainer(cfg, folder, resume=resume, show_progress=show_progress)
    trainer.family = family
    return trainer


def train_run(
    cfg, folder: str | os.PathLike, *, resume: bool, variant: dict | None = None, show_progress: bool = False
) -> dict:
    """Train (``resume=False``, empty folder) or resume a run; returns the final evaluation row."""
    from ..train import run_trainer

    return run_trainer(make_trainer(cfg, folder, resume=resume, variant=variant, show_progress=show_progress))


def describe(cfg) -> dict[str, Any]:
    """Row fields that come straight from the config."""
    return {
        "family": cfg.family,
        "subtokens": cfg.subtokens,
        "base_override": cfg.base,
        "objective": cfg.objective,
        "data": cfg.data,
        "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size,
        "max_steps": cfg.max_steps,
        "seed": cfg.seed,
        "final_eval_num_times": cfg.final_eval_num_times,
        "final_eval_sequences": cfg.final_eval_sequences,
        "model_size": cfg.model_size,
        "model_overrides": dict(cfg.model_overrides),
        "architecture": cfg.architecture,
    }
