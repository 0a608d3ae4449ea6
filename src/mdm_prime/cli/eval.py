"""``mdm-prime eval``: the likelihood of a run (valid bound ± standard error, or the exact NLL of the
autoregressive baseline) and, on request, metrics of its samples and the discrete-time bound.

The numbers come from :mod:`mdm_prime.evaluate`; this module parses, checks, loads and prints."""

from __future__ import annotations

import argparse
import json
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
        "--num-sequences", type=int, default=256, metavar="N", help="sequences of the split to score"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the time draws and samples")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per network call")
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
    if args.num_sequences < 1:
        raise ValueError(f"--num-sequences must be >= 1, got {args.num_sequences}")
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


def run(args: argparse.Namespace) -> int:
    from ..evaluate import discrete_bound_metrics, evaluate_model, load_run, sample_metrics

    _check(args)
    _, task, model = load_run(args.run_dir, use_ema=not args.no_ema, device=args.device)
    scorers = _load_scorers(args, task)
    r = evaluate_model(
        model,
        task,
        split=args.split,
        num_sequences=args.num_sequences,
        num_times=args.num_times,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    r["weights"] = "raw" if args.no_ema else "ema"
    r["run_dir"] = str(args.run_dir)
    r.update(scorers.pop("info"))
    if args.discrete_steps:
        x = task.split(args.split)[: args.num_sequences]
        r.update(
            discrete_bound_metrics(
                model,
                x,
                steps=args.discrete_steps,
                num_draws=args.discrete_draws,
                seed=args.seed,
                batch_size=args.batch_size,
            )
        )
    if scorers:
        reference = task.split(args.split)[: args.num_samples]
        r.update(
            sample_metrics(
                model,
                task,
                reference,
                num_samples=args.num_samples,
                steps=args.steps or None,
                seed=args.seed,
                batch_size=args.batch_size,
                **scorers,
            )
        )
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    _print(args, r)
    return 0


def _print(args: argparse.Namespace, r: dict) -> None:
    draws = "exact likelihood" if r["num_times"] == 0 else f"K = {r['num_times']} time draws"
    name = "NLL (exact):      " if r["num_times"] == 0 else "NLL bound (valid):"
    print(
        f"{args.run_dir} [{r['family']}], {r['split']} split, {r['num_sequences']} sequences × "
        f"{r['tokens_per_sequence']} tokens, {draws}, {r['weights']} weights"
    )
    print(
        f"  {name}  {r['nelbo_nats_per_token']:.4f} ± {r['stderr_nats_per_token']:.4f} nats/token"
        f"  = {r['bits_per_token']:.4f} bits/token, perplexity {r['perplexity']:.3f}"
    )
    if "bits_per_char" in r:
        print(f"                      {r['bits_per_char']:.4f} bits/char")
    if "bits_per_dim" in r:
        print(f"                      {r['bits_per_dim']:.4f} bits/dim")
    if "data_entropy_nats_per_token" in r:
        print(
            f"  data entropy:       {r['data_entropy_nats_per_token']:.4f} nats/token (exact; a bound may not go below it)"
        )
    if "prime_objective_nats_per_token" in r:
        print(
            f"  training objective L_prime: {r['prime_objective_nats_per_token']:.4f} nats/token "
            f"(NOT a likelihood bound for ℓ > 1)"
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
            f"unigram entropy {r['reference_unigram_entropy_nats']:.4f} nats"
        )
    if "frechet_distance" in r:
        print(
            f"  Fréchet distance {r['frechet_distance']:.4f} ({r['fd_num_samples']} samples vs {r['fd_num_reference']} "
            f"{r['split']} images) on features of: {r['fd_classifier']}"
        )
    if "inception_fid" in r:
        print(f"  Inception FID {r['inception_fid']:.3f} [{r['inception_fid_features']}]")
