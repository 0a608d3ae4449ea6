"""``mdm-prime eval``: the likelihood of a run (valid bound ± standard error, or the exact NLL of the
autoregressive baseline) and, on request, metrics of its samples and the discrete-time bound.

The numbers come from :mod:`mdm_prime.evaluate`; this module parses, checks, loads and prints."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by mdm-prime train")
    p.add_argument("--split", default="valid", choices=["train", "valid", "test"], help="split to score")
    p.add_argument(
        "--num-times", type=int, default=32, metavar="K", help="Monte Carlo draws per sequence (>= 2)"
    )
    p.add_argument(
        "--num-sequences",
        type=int,
        default=None,
        metavar="N",
        help="sequences of the split to score (default: 256, or the whole split when --max-sequences / "
        "--max-tokens sets the budget)",
    )
    p.add_argument(
        "--max-sequences", type=int, default=None, metavar="N", help="stop after N sequences (default: none)"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="T",
        help="stop once T tokens are scored (whole sequences; default: none)",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="SPEC",
        help="score this text spec (text:PATH, owt:DIR, mix, …) or shards:DIR with the run's tokenizer, "
        "split by document as training splits it (default: the run's own data)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the time draws and samples (default: the run's training seed, so that the default "
        "eval repeats the training's final evaluation line exactly)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows (sequence × time draw) per network call (default: automatic, float32 logits of one "
        "call ≲ 1 GiB: floor(2^30 / (4·C·L)), at most 64)",
    )
    p.add_argument(
        "--decoding",
        default=None,
        metavar="ORDER",
        help="also the exact NLL of the sampler that reveals one digit at a time in ORDER "
        "(left_to_right, confidence; docs/method.md §5b) on the same sequences: L·ℓ network calls per "
        "sequence (default: off)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    m = p.add_argument_group(
        "sample metrics and the discrete-time bound (mdm_prime.evaluate, mdm_prime.metrics)"
    )
    m.add_argument(
        "--gen-ppl",
        metavar="AR_RUN_DIR",
        help="generative perplexity of --num-samples samples under this autoregressive run "
        "(mdm-prime train --family ar, same corpus and tokenizer), with the unigram entropy (default: off)",
    )
    m.add_argument(
        "--fd",
        metavar="CLASSIFIER_DIR",
        help="images: Fréchet distance on the penultimate features of a classifier from "
        "mdm-prime train-classifier (default: off)",
    )
    m.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="images: also the Inception FID from a local torchvision-format inception_v3 state dict "
        "(needs torchvision; default: off)",
    )
    m.add_argument(
        "--num-samples",
        type=int,
        default=64,
        metavar="N",
        help="samples generated for --gen-ppl / --fd (and reference items scored)",
    )
    m.add_argument(
        "--steps", type=int, default=0, metavar="T", help="sampler steps for those samples (0: T = L)"
    )
    m.add_argument(
        "--discrete-steps",
        type=int,
        default=0,
        metavar="T",
        help="also the T-step joint sampler's discrete-time bound on the --num-sequences items (0: no)",
    )
    m.add_argument(
        "--discrete-draws",
        type=int,
        default=8,
        metavar="K",
        help="reveal trajectories per sequence for --discrete-steps (>= 2)",
    )


def _check(args: argparse.Namespace) -> None:
    """Validate the options before any data is loaded or model built."""
    from ..evaluate import run_paths

    if args.num_times < 2:
        raise ValueError(f"--num-times must be >= 2, got {args.num_times}")
    if args.decoding is not None:
        from ..decoding import ORDERS

        if args.decoding not in ORDERS:
            raise ValueError(f"--decoding: unknown order {args.decoding!r}; expected one of {sorted(ORDERS)}")
    for flag in ("num_sequences", "max_sequences", "max_tokens", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.data is not None:
        from ..data import load_data

        if load_data(args.data).kind not in ("text", "shards"):
            raise ValueError(f"--data scores text: give a text spec or shards:DIR, got {args.data!r}")
    run_paths(args.run_dir)
    if args.num_samples < 2:
        raise ValueError(f"--num-samples must be >= 2, got {args.num_samples}")
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 1 (or 0 for T = L), got {args.steps}")
    if args.discrete_steps < 0:
        raise ValueError(f"--discrete-steps must be >= 1, got {args.discrete_steps}")
    if args.discrete_draws < 2:
        raise ValueError(f"--discrete-draws must be >= 2 (for a standard error), got {args.discrete_draws}")
    if args.gen_ppl:
        run_paths(args.gen_ppl)
    if args.fd:
        from ..metrics.classifier import CONFIG_FILE, WEIGHTS_FILE

        if not (Path(args.fd) / CONFIG_FILE).exists() or not (Path(args.fd) / WEIGHTS_FILE).exists():
            raise FileNotFoundError(
                f"--fd {args.fd} is not a classifier folder (expected {CONFIG_FILE} and "
                f"{WEIGHTS_FILE} from mdm-prime train-classifier)"
            )
    if args.inception_weights:
        from ..metrics.frechet import InceptionFeatures

        InceptionFeatures.check_available(args.inception_weights)


def _load_scorers(args: argparse.Namespace, task) -> dict:
    """The AR scorer, classifier and Inception network the options name, checked against the run."""
    from ..evaluate import load_run
    from ..families import family_of
    from ..tasks import read_task_metadata

    out: dict = {"info": {}}
    run_meta = read_task_metadata(args.run_dir)
    if args.gen_ppl:
        from ..metrics import check_same_tokenizer

        if not task.token_sequences:
            raise ValueError(
                f"--gen-ppl scores token sequences (text); {args.run_dir} holds {task.kind} data"
            )
        ar_meta = read_task_metadata(args.gen_ppl)
        check_same_tokenizer(run_meta, ar_meta, args.run_dir, args.gen_ppl)
        _, _, ar_model = load_run(args.gen_ppl, with_data=False, device=args.device, use_ema=not args.no_ema)
        if not family_of(ar_model).exact_likelihood:
            raise ValueError(
                f"--gen-ppl {args.gen_ppl} is a {family_of(ar_model).name!r} run; it must be an "
                "autoregressive run (mdm-prime train --family ar)"
            )
        if ar_meta.get("spec") != run_meta.get("spec"):
            print(
                f"warning: the AR scorer was trained on {ar_meta.get('spec')!r}, the run on {run_meta.get('spec')!r}",
                file=sys.stderr,
            )
        out["ar_model"] = ar_model
        out["info"]["gen_ppl_model"] = {
            "run_dir": str(args.gen_ppl),
            "data": ar_meta.get("spec"),
            "tokenizer": ar_meta.get("tokenizer"),
            "num_classes": ar_meta.get("num_classes"),
        }
    if (args.fd or args.inception_weights) and task.image_shape is None:
        raise ValueError(
            f"--fd / --inception-weights need an image run; {args.run_dir} holds {task.kind} data"
        )
    if args.fd:
        from ..metrics.classifier import describe_classifier, load_classifier

        classifier, clf_cfg = load_classifier(args.fd, device=args.device)
        if tuple(classifier.image_shape) != tuple(task.image_shape):
            raise ValueError(
                f"the classifier in {args.fd} takes images of shape {classifier.image_shape}, the run makes "
                f"{tuple(task.image_shape)}; train it on the run's data spec ({run_meta.get('spec')!r})"
            )
        out["classifier"], out["classifier_name"] = classifier, describe_classifier(clf_cfg)
    if args.inception_weights:
        from ..metrics import InceptionFeatures

        out["inception"] = InceptionFeatures(args.inception_weights).to(args.device)
        out["inception_name"] = (
            f"Inception-v3 pool3 (2048-d), torchvision-format weights {args.inception_weights}"
        )
    return out


def _scored_tokens(args: argparse.Namespace):
    """``(cfg, task, model, tokens)``: the run and the ``LongTensor[N, L]`` that ``eval`` scores."""
    from ..evaluate import load_run
    from ..scoring import spec_tokens

    cap = args.num_sequences
    if cap is None and args.max_sequences is None and args.max_tokens is None:
        cap = 256
    if args.data is None:
        cfg, task, model = load_run(args.run_dir, use_ema=not args.no_ema, device=args.device)
        x = task.split(args.split)
        return cfg, task, model, x if cap is None else x[:cap]
    cfg, task, model = load_run(args.run_dir, use_ema=not args.no_ema, device=args.device, with_data=False)
    if task.tokenizer is None:
        raise ValueError(f"--data needs a text run with a tokenizer; {args.run_dir} holds {task.kind} data")
    budget = [v for v in (cap, args.max_sequences) if v is not None]
    if args.max_tokens is not None:
        budget.append(max(1, args.max_tokens // task.seq_len))
    x, cpt = spec_tokens(
        args.data, task.tokenizer, task.seq_len, split=args.split, max_sequences=min(budget, default=None)
    )
    task.spec, task.characters_per_token = args.data, cpt
    return cfg, task, model, x


def score(args: argparse.Namespace, task, model, x) -> dict:
    """The likelihood summary of ``model`` on ``x`` within the budget of ``args``, by the family's
    ``score`` (the trainer's path too): the valid bound (chunks of 256 sequences, chunk ``i`` seeded
    ``seed + i``; ``--batch-size`` changes only the memory) with ``L_prime``, the gap and
    ``prime_perplexity`` beside it; the exact NLL for an autoregressive run."""
    from ..families import family_of
    from ..scoring import auto_batch_size

    L = x.shape[1]
    if args.max_tokens is not None and args.max_tokens < L:
        raise ValueError(f"--max-tokens {args.max_tokens} is below one sequence of {L} tokens")
    rows = args.batch_size or auto_batch_size(task.num_classes, L)
    r = family_of(model).score(
        model,
        x,
        num_times=args.num_times,
        seed=args.seed,
        batch_size=rows,
        max_sequences=args.max_sequences,
        max_tokens=args.max_tokens,
        progress=not args.no_progress,
    )
    r["split"] = args.split
    r["seed"] = args.seed
    r["batch_size"] = rows
    if args.data is not None:
        r["data"] = args.data
    return task.add_units(r)


def run(args: argparse.Namespace) -> int:
    from ..evaluate import decoding_metrics, discrete_bound_metrics, sample_metrics

    _check(args)
    cfg, task, model, x = _scored_tokens(args)
    if args.seed is None:
        args.seed = cfg.seed
    scorers = _load_scorers(args, task)
    r = score(args, task, model, x)
    r["weights"] = "raw" if args.no_ema else "ema"
    r["run_dir"] = str(args.run_dir)
    r.update(scorers.pop("info"))
    scored = x[: r["num_sequences"]]
    if args.decoding is not None:
        r.update(
            decoding_metrics(
                model,
                task,
                scored,
                order=args.decoding,
                batch_size=r["batch_size"],
                progress=not args.no_progress,
            )
        )
    if args.discrete_steps:
        r.update(
            discrete_bound_metrics(
                model,
                scored,
                steps=args.discrete_steps,
                num_draws=args.discrete_draws,
                seed=args.seed,
                batch_size=r["batch_size"],
            )
        )
    if scorers:
        reference = (
            x[: args.num_samples] if args.data is not None else task.split(args.split)[: args.num_samples]
        )
        r.update(
            sample_metrics(
                model,
                task,
                reference,
                num_samples=args.num_samples,
                steps=args.steps or None,
                seed=args.seed,
                batch_size=r["batch_size"],
                **scorers,
            )
        )
    warnings = scorer_warnings(r)
    if warnings:
        r["gen_ppl_warnings"] = warnings
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    _print(args, r)
    return 0


def scorer_warnings(r: dict) -> list[str]:
    """Why a generative perplexity in ``r`` may not mean what it seems: the AR scorer models the
    reference text worse than the scored model does (its exact NLL per token above the scored model's
    valid bound, an upper bound on that model's NLL), or the samples score better than real text."""
    if "reference_generative_nats_per_token" not in r:
        return []
    out = []
    scorer, model = r["reference_generative_nats_per_token"], r["nelbo_nats_per_token"]
    if scorer > model:
        out.append(
            f"the AR scorer is weaker than the model it judges: its exact NLL on the reference text is "
            f"{scorer:.4f} nats/token, above the scored model's valid bound {model:.4f}; its generative "
            f"perplexity says little (score with a stronger AR run: longer training or more data)"
        )
    if r["generative_perplexity"] < r["reference_generative_perplexity"]:
        out.append(
            f"the samples score better than real text under this scorer (generative perplexity "
            f"{r['generative_perplexity']:.3f} < {r['reference_generative_perplexity']:.3f} for the reference): "
            f"a weak scorer, or repetitive samples (compare the unigram entropies)"
        )
    return out


def _print(args: argparse.Namespace, r: dict) -> None:
    draws = "exact likelihood" if r["num_times"] == 0 else f"K = {r['num_times']} time draws"
    name = "NLL (exact):      " if r["num_times"] == 0 else "NLL bound (valid):"
    print(
        f"{args.run_dir} [{r['family']}], {r.get('data', 'run data')} {r['split']} split, "
        f"{r['num_sequences']} sequences × "
        f"{r['tokens_per_sequence']} tokens, {draws}, {r['weights']} weights, seed {r['seed']}"
    )
    print(
        f"  {name}  {r['nelbo_nats_per_token']:.4f} ± {r['stderr_nats_per_token']:.4f} nats/token"
        f"  = {r['bits_per_token']:.4f} bits/token, perplexity {r['perplexity']:.3f}"
    )
    scale = r["stderr_nats_per_token"] / r["nelbo_nats_per_token"] if r["nelbo_nats_per_token"] else 0.0
    for key, unit in (("bits_per_char", "bits/char"), ("bits_per_dim", "bits/dim")):
        if key in r:  # the same relative error as the line above, as training's final line prints it
            print(f"                      {r[key]:.4f} ± {r[key] * scale:.4f} {unit}")
    if "decoding_order" in r:
        unit = next((k for k in ("bits_per_char", "bits_per_dim") if f"decoding_{k}" in r), None)
        extra = f" = {r[f'decoding_{unit}']:.4f} {unit.replace('bits_per_', 'bits/')}" if unit else ""
        calls = (
            "1 network call per sequence: the autoregressive NLL"
            if r["decoding_exact_autoregressive"]
            else f"L·ℓ = {r['decoding_network_calls_per_sequence']} network calls per sequence"
        )
        print(
            f"  decoding NLL (exact, order {r['decoding_order']}): {r['decoding_nll_nats_per_token']:.4f} ± "
            f"{r['decoding_stderr_nats_per_token']:.4f} (over sequences) nats/token{extra}  [{calls}; the NLL of one sampler "
            f"of the model, not comparable by inequality with the bound]"
        )
    if "data_entropy_nats_per_token" in r:
        print(
            f"  data entropy:       {r['data_entropy_nats_per_token']:.4f} nats/token (exact; a bound may not go below it)"
        )
    if "prime_objective_nats_per_token" in r:
        prime_ppl = r.get("prime_perplexity", math.exp(r["prime_objective_nats_per_token"]))
        gap = r.get("gap_nats_per_token", r["nelbo_nats_per_token"] - r["prime_objective_nats_per_token"])
        print(
            f"  training objective L_prime: {r['prime_objective_nats_per_token']:.4f} nats/token, "
            f"'perplexity' {prime_ppl:.3f} (NOT a likelihood bound for ℓ > 1)"
        )
        print(
            f"  gap L_valid − L_prime: {gap:.4f} nats/token (valid perplexity {r['perplexity']:.3f} vs "
            f"{prime_ppl:.3f} from the objective)"
        )
    if "discrete_time_nelbo_nats_per_token" in r:
        print(
            f"  discrete-time bound, T = {r['discrete_time_steps']}: {r['discrete_time_nelbo_nats_per_token']:.4f} ± "
            f"{r['discrete_time_stderr_nats_per_token']:.4f} nats/token ({r['discrete_time_num_draws']} draws; a valid "
            f"bound for the {r['discrete_time_steps']}-step sampler)"
        )
    if "sample_steps" in r:
        print(
            f"  {r['num_generated_samples']} samples at T = {r['sample_steps']}: "
            f"{r['sample_network_calls_mean']:.1f} network calls, {r['sample_idle_steps_mean']:.1f} idle steps each"
        )
    if "generative_perplexity" in r:
        print(
            f"  generative perplexity {r['generative_perplexity']:.3f} ({r['generative_nats_per_token']:.4f} nats/token), "
            f"sample unigram entropy {r['sample_unigram_entropy_nats']:.4f} nats  [AR scorer {r['gen_ppl_model']['run_dir']}]"
        )
        print(
            f"  reference {r['split']} text: gen. perplexity {r['reference_generative_perplexity']:.3f}, "
            f"unigram entropy {r['reference_unigram_entropy_nats']:.4f} nats; the scorer's exact NLL on it "
            f"{r['reference_generative_nats_per_token']:.4f} nats/token (the scored model's bound: "
            f"{r['nelbo_nats_per_token']:.4f})"
        )
        for w in r.get("gen_ppl_warnings", []):
            print(f"  WARNING: {w}")
    if "frechet_distance" in r:
        print(
            f"  Fréchet distance {r['frechet_distance']:.4f} ({r['fd_num_samples']} samples vs {r['fd_num_reference']} "
            f"{r['split']} images) on features of: {r['fd_classifier']}"
        )
    if "inception_fid" in r:
        print(f"  Inception FID {r['inception_fid']:.3f} [{r['inception_fid_features']}]")
