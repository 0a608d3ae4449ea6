"""Score a trained model: load a run folder, the likelihood on a split, and metrics of its samples.

Every likelihood here is the valid bound ``L_valid`` (``docs/method.md §5``) for diffusion models or the
exact NLL for the autoregressive one, through the model's family (:mod:`mdm_prime.families`); the
paper's objective ``L_prime`` is reported beside it, labelled as the training objective. Sample
metrics (``docs/method.md §8``) draw their samples with the family's ``generate``. The command
line lives in :mod:`mdm_prime.cli.eval`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .families import SampleRequest, family_of, get_family
from .tasks import Task, build_task, load_task

__all__ = [
    "run_paths",
    "load_run",
    "evaluate_model",
    "discrete_bound_metrics",
    "sample_metrics",
    "format_eval",
    "format_final",
]

CONFIG_FILE = "train_config.json"
CHECKPOINT_DIR = "checkpoint"


def run_paths(run_dir: str | Path) -> tuple[Path, Path]:
    """``(run folder, checkpoint folder)``; FileNotFoundError (saying whether the folder is missing or
    only lacks a run's files) unless ``run_dir`` is a run folder."""
    run = Path(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"{run} does not exist: give a run folder written by mdm-prime train")
    if not run.is_dir():
        raise NotADirectoryError(f"{run} is a file, not a run folder (a folder written by mdm-prime train)")
    ckpt = run / CHECKPOINT_DIR
    if not ckpt.exists() and (run / (CHECKPOINT_DIR + ".old")).exists():
        ckpt = run / (CHECKPOINT_DIR + ".old")  # a save stopped between its two renames: the previous one
    if not (run / CONFIG_FILE).exists() or not ckpt.exists():
        raise FileNotFoundError(
            f"{run} is not a run folder (expected {CONFIG_FILE} and {CHECKPOINT_DIR}/ from mdm-prime train)"
        )
    return run, ckpt


def load_run(run_dir: str | Path, *, use_ema: bool = True, with_data: bool = True, device: str = "cpu"):
    """``(config, task, model)`` of a run folder. ``with_data=False`` skips the corpus: the task then
    holds only the tokenizer and shapes (enough to sample and decode).

    Every file of the checkpoint is checked against the sizes and SHA-256 hashes in its ``config.json``
    (the raw weights too, not only the EMA file that is loaded), and ``device`` is checked before
    anything is read; failures are ValueError/FileNotFoundError naming the file or value."""
    from .checkpoint import load_pretrained, verify_checkpoint
    from .configs import check_device, load_config_file

    check_device(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    run, ckpt = run_paths(run_dir)
    cfg = load_config_file(run / CONFIG_FILE)
    if not with_data and not (run / "task.json").exists():
        raise FileNotFoundError(
            f"{run / 'task.json'} is missing; a run folder written by mdm-prime train holds it"
        )
    verify_checkpoint(ckpt)
    model = load_pretrained(ckpt, use_ema=use_ema, map_location=device).to(device).eval()
    task = build_task(cfg) if with_data else load_task(run)
    return cfg, task, model


@torch.no_grad()
def evaluate_model(
    model,
    task: Task,
    *,
    split: str = "valid",
    num_sequences: int = 256,
    num_times: int = 32,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict:
    """Likelihood per token (nats and bits, with the task's units) of the first ``num_sequences``
    items of ``split``: the family's ``score`` (valid bound with ``num_times`` draws each and its
    standard error, or the exact NLL). ``mdm-prime eval`` with the same split, sequences, seed and K
    gives the same numbers (same draws; ``batch_size``, rows per network call, changes nothing)."""
    x = task.split(split)[:num_sequences]
    summary = family_of(model).score(model, x, num_times=num_times, seed=seed, batch_size=batch_size)
    summary["split"] = split
    return task.add_units(summary)


@torch.no_grad()
def decoding_metrics(
    model, task: Task, x: torch.Tensor, *, order: str, batch_size: int, progress: bool = False
) -> dict:
    """The exact NLL of the decoding order ``order`` (docs/method.md §5b) on the token sequences ``x``
    (``LongTensor[N, L]``): nats per token (mean over sequences) with its standard error over sequences,
    bits per token and the task's unit (``decoding_bits_per_char`` / ``decoding_bits_per_dim``)."""
    from .decoding import decoding_likelihood

    inner = getattr(model, "module", model)
    device = next(inner.parameters()).device
    model.eval()
    res = decoding_likelihood(
        model, x.to(device), inner.subtokenizer, order=order, batch_size=batch_size, progress=progress
    )
    L = x.shape[1]
    nats = float(res.nll.mean()) / L
    se = float(res.nll.std()) / math.sqrt(len(res.nll)) / L if len(res.nll) > 1 else 0.0
    out = {
        "decoding_order": res.order,
        "decoding_nll_nats_per_token": nats,
        "decoding_stderr_nats_per_token": se,
        "decoding_bits_per_token": nats / math.log(2),
        "decoding_network_calls_per_sequence": res.network_calls,
        "decoding_num_sequences": len(res.nll),
        "decoding_exact_autoregressive": bool(family_of(model).exact_likelihood),
    }
    unit = task.unit_label()
    if unit is not None:
        units = task.add_units({"bits_per_token": out["decoding_bits_per_token"]})
        out[f"decoding_{unit[0]}"] = units[unit[0]]
    return out


def discrete_bound_metrics(
    model, tokens: torch.Tensor, *, steps: int, num_draws: int, seed: int = 0, batch_size: int = 64
) -> dict:
    """The ``steps``-step joint sampler's discrete-time bound on ``tokens`` (``LongTensor[N, L]``),
    per token (see :mod:`mdm_prime.discrete_bound`). Diffusion models only."""
    if family_of(model).exact_likelihood:
        raise ValueError(
            "the discrete-time bound is for diffusion runs; this model's likelihood is already exact"
        )
    from .discrete_bound import discrete_time_bound

    device = next(model.parameters()).device
    res = discrete_time_bound(
        model,
        tokens.to(device),
        model.subtokenizer,
        steps=steps,
        num_draws=num_draws,
        seed=seed,
        schedule=model.schedule,
        batch_size=batch_size,
    )
    out = res.summary()
    out["discrete_time_bound"] = (
        f"NELBO of the {steps}-step joint sampler (uniform time grid): a valid upper "
        "bound on that sampler's NLL"
    )
    return out


def sample_metrics(
    model,
    task: Task,
    reference: torch.Tensor,
    *,
    num_samples: int,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    ar_model=None,
    classifier=None,
    classifier_name: str = "",
    inception=None,
    inception_name: str = "",
) -> dict:
    """Draw ``num_samples`` samples with the family's ``generate`` (chunks of ``batch_size``) and score
    them: generative perplexity and unigram entropy under ``ar_model`` (an autoregressive model on the
    same tokenizer), Fréchet distance on ``classifier`` features and the Inception FID on
    ``inception`` features (image tasks), each beside the same numbers for ``reference`` items."""
    request = SampleRequest(
        num=num_samples, num_tokens=task.seq_len, steps=steps, seed=seed, batch_size=batch_size
    )
    samples, st = family_of(model).generate(model, request)
    out = {
        "sample_steps": st["steps"],
        "sample_network_calls_mean": st["network_calls_mean"],
        "sample_idle_steps_mean": st["idle_steps_mean"],
        "sample_wall_time_s": st["wall_time_s"],
        "num_generated_samples": int(samples.shape[0]),
    }
    if ar_model is not None:
        from .metrics import generative_perplexity

        g = generative_perplexity(samples, ar_model, batch_size=batch_size)
        ref = generative_perplexity(reference, ar_model, batch_size=batch_size)
        out.update(
            {
                k: g[k]
                for k in (
                    "generative_perplexity",
                    "generative_nats_per_token",
                    "generative_stderr_nats_per_token",
                    "sample_unigram_entropy_nats",
                )
            }
        )
        out.update(
            {
                "reference_generative_perplexity": ref["generative_perplexity"],
                "reference_generative_nats_per_token": ref["generative_nats_per_token"],
                "reference_unigram_entropy_nats": ref["sample_unigram_entropy_nats"],
                "reference_num_sequences": ref["num_samples"],
            }
        )
    if (classifier is not None or inception is not None) and task.image_shape is not None:
        from .metrics import frechet_distance

        shape = (-1, *task.image_shape)
        images, ref_images = samples.view(shape), reference.view(shape)
        if classifier is not None:
            out.update(
                frechet_distance(
                    images,
                    ref_images,
                    classifier,
                    levels=task.num_classes,
                    batch_size=batch_size,
                    name=classifier_name,
                )
            )
        if inception is not None:
            fid = frechet_distance(
                images,
                ref_images,
                inception,
                levels=task.num_classes,
                batch_size=batch_size,
                name=inception_name,
            )
            out["inception_fid"] = fid["frechet_distance"]
            out["inception_fid_features"] = fid["fd_classifier"]
    return out


# ------------------------------------------------------------------ lines the trainer prints
def _unit(r: dict, scale: float = 1.0) -> tuple[float, str]:
    """The task's own unit of ``r`` (bits/char, bits/dim, else bits/token) and its label."""
    for key, label in (
        ("bits_per_char", "bits/char"),
        ("bits_per_dim", "bits/dim"),
        ("bits_per_token", "bits/token"),
    ):
        if key in r:
            return r[key], label
    raise KeyError("bits_per_token")


def _format_numbers(r: dict) -> str:
    exact = get_family(r.get("family", "prime")).exact_likelihood
    name = "exact NLL" if exact else "NLL upper bound (valid)"
    value, label = _unit(r)
    se = r["stderr_nats_per_token"] * value / r["nelbo_nats_per_token"] if r["nelbo_nats_per_token"] else 0.0
    text = f"{name} {r['nelbo_nats_per_token']:.4f} nats/token = {value:.4f} {label} ± {se:.4f}"
    if "data_entropy_nats_per_token" in r:
        text += f", data entropy {r['data_entropy_nats_per_token']:.4f} nats/token"
    if "prime_objective_nats_per_token" in r:
        text += (
            f" (training objective L_prime {r['prime_objective_nats_per_token']:.4f} nats/token, not a bound)"
        )
    return text


def format_eval(r: dict) -> str:
    """One line for a validation during training (a row of :func:`evaluate_model` with its ``step``)."""
    return f"step {r['step']}: {_format_numbers(r)}"


def format_final(r: dict) -> str:
    """The run's last line: what was evaluated, how, and the numbers."""
    exact = get_family(r.get("family", "prime")).exact_likelihood
    draws = "exact likelihood" if exact else f"{r['num_times']} draws"
    return (
        f"final evaluation, {r['split']} split, {r['num_sequences']} sequences, {draws}, EMA weights: "
        f"{_format_numbers(r)}"
    )
