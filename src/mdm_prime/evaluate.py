"""``mdm-prime eval`` and ``mdm-prime sample``: score and sample a trained run folder.

Every likelihood printed here is the valid bound ``L_valid`` (MATH.md §5) from
:func:`mdm_prime.likelihood` with EMA weights; the paper's objective ``L_prime`` is printed beside it
and labelled as the training objective.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .configs import TrainConfig
from .tasks import TASK_FILE, Task, build_task, evaluate_model

__all__ = ["load_run", "add_eval_arguments", "run_eval", "add_sample_arguments", "run_sample",
           "parse_infill_pattern"]


def _run_paths(run_dir: str | Path) -> tuple[Path, Path]:
    run = Path(run_dir)
    ckpt = run / "checkpoint"
    if not (run / "train_config.json").exists() or not ckpt.exists():
        raise FileNotFoundError(
            f"{run} is not a run folder (expected train_config.json and checkpoint/ from mdm-prime train)"
        )
    return run, ckpt


def load_run(run_dir: str | Path, *, use_ema: bool = True, with_data: bool = True, device: str = "cpu"):
    """``(config, task, model)`` of a run folder. ``with_data=False`` skips the corpus: the task then
    holds only the tokenizer and shapes (enough to sample and decode)."""
    from .checkpoint import load_pretrained

    run, ckpt = _run_paths(run_dir)
    cfg = TrainConfig.from_dict(json.loads((run / "train_config.json").read_text()))
    model = load_pretrained(ckpt, use_ema=use_ema, map_location=device).to(device).eval()
    if with_data:
        task = build_task(cfg)
    else:
        meta = json.loads((run / TASK_FILE).read_text())
        tokenizer = None
        if (run / "tokenizer").exists():
            from .data import load_tokenizer

            tokenizer = load_tokenizer(run / "tokenizer")
        info = {}
        if meta["kind"] == "toy":
            from .data import load_data

            info["density"] = load_data(meta["spec"]).load()
        task = Task(kind=meta["kind"], spec=meta["spec"], num_classes=meta["num_classes"], seq_len=meta["seq_len"],
                    valid_tokens=torch.zeros(0, meta["seq_len"], dtype=torch.long), tokenizer=tokenizer,
                    image_shape=tuple(meta["image_shape"]) if meta.get("image_shape") else None,
                    characters_per_token=meta.get("characters_per_token"),
                    entropy_nats_per_token=meta.get("entropy_nats_per_token"), info=info)
    return cfg, task, model


# ----------------------------------------------------------------------------- eval
def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by mdm-prime train")
    p.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    p.add_argument("--num-times", type=int, default=32, metavar="K", help="Monte Carlo draws per sequence (>= 2)")
    p.add_argument("--num-sequences", type=int, default=256, metavar="N", help="sequences of the split to score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu")
    m = p.add_argument_group("sample metrics and the discrete-time bound (mdm_prime.metrics)")
    m.add_argument("--gen-ppl", metavar="AR_RUN_DIR",
                   help="generative perplexity of --num-samples samples under this autoregressive run "
                        "(mdm-prime train --family ar, same corpus and tokenizer), with the unigram entropy")
    m.add_argument("--fd", metavar="CLASSIFIER_DIR",
                   help="images: Fréchet distance on the penultimate features of a classifier from "
                        "mdm-prime train-classifier")
    m.add_argument("--inception-weights", metavar="PATH",
                   help="images: also the Inception FID from a local torchvision-format inception_v3 state dict "
                        "(needs torchvision)")
    m.add_argument("--num-samples", type=int, default=64, metavar="N",
                   help="samples generated for --gen-ppl / --fd (and reference items scored), default 64")
    m.add_argument("--steps", type=int, default=0, metavar="T", help="sampler steps for those samples (default T = L)")
    m.add_argument("--discrete-steps", type=int, default=0, metavar="T",
                   help="also the T-step joint sampler's discrete-time bound on the --num-sequences items")
    m.add_argument("--discrete-draws", type=int, default=8, metavar="K",
                   help="reveal trajectories per sequence for --discrete-steps (>= 2), default 8")


def _check_metric_args(args: argparse.Namespace) -> None:
    """Validate the sample-metric options before any data is loaded or model built."""
    if getattr(args, "num_samples", 64) < 2:
        raise ValueError(f"--num-samples must be >= 2, got {args.num_samples}")
    if getattr(args, "steps", 0) < 0:
        raise ValueError(f"--steps must be >= 1 (or 0 for T = L), got {args.steps}")
    if getattr(args, "discrete_steps", 0) < 0:
        raise ValueError(f"--discrete-steps must be >= 1, got {args.discrete_steps}")
    if getattr(args, "discrete_draws", 8) < 2:
        raise ValueError(f"--discrete-draws must be >= 2 (for a standard error), got {args.discrete_draws}")
    if getattr(args, "gen_ppl", None):
        _run_paths(args.gen_ppl)
    if getattr(args, "fd", None):
        from .metrics.classifier import CONFIG_FILE, WEIGHTS_FILE

        if not (Path(args.fd) / CONFIG_FILE).exists() or not (Path(args.fd) / WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"--fd {args.fd} is not a classifier folder (expected {CONFIG_FILE} and "
                                    f"{WEIGHTS_FILE} from mdm-prime train-classifier)")
    if getattr(args, "inception_weights", None):
        from .metrics.frechet import InceptionFeatures

        InceptionFeatures.check_available(args.inception_weights)


def _generate_many(model, task, num: int, steps: int | None, seed: int, batch_size: int):
    """``num`` unconditional samples in chunks of ``batch_size`` (chunk ``i`` seeded ``seed + i``) and
    the mean sampling stats."""
    from .generate import generate_tokens

    chunks, stats = [], []
    for i, start in enumerate(range(0, num, batch_size)):
        tokens, st = generate_tokens(model, task, num=min(batch_size, num - start), steps=steps, seed=seed + i)
        chunks.append(tokens)
        stats.append((tokens.shape[0], st))
    total = sum(n for n, _ in stats)
    mean = {k: sum(n * st[k] for n, st in stats) / total for k in ("network_calls_mean", "idle_steps_mean")}
    return torch.cat(chunks), {"sample_steps": stats[0][1]["steps"], "sample_network_calls_mean": mean["network_calls_mean"],
                               "sample_idle_steps_mean": mean["idle_steps_mean"],
                               "sample_wall_time_s": sum(st["wall_time_s"] for _, st in stats)}


def _sample_metrics(args: argparse.Namespace, task: Task, model) -> dict:
    """The JSON fields of --gen-ppl, --fd, --inception-weights and --discrete-steps."""
    out: dict = {}
    family = getattr(model, "family", "prime")
    run_meta = json.loads((Path(args.run_dir) / TASK_FILE).read_text())
    ar_model = classifier = None
    if args.gen_ppl:
        from .metrics import check_same_tokenizer

        if task.kind not in ("text", "synthetic"):
            raise ValueError(f"--gen-ppl scores token sequences (text); {args.run_dir} holds {task.kind} data")
        ar_meta = json.loads((Path(args.gen_ppl) / TASK_FILE).read_text())
        check_same_tokenizer(run_meta, ar_meta, args.run_dir, args.gen_ppl)
        _, _, ar_model = load_run(args.gen_ppl, with_data=False, device=args.device, use_ema=not args.no_ema)
        if getattr(ar_model, "family", None) != "ar":
            raise ValueError(f"--gen-ppl {args.gen_ppl} is a {getattr(ar_model, 'family', 'prime')!r} run; it must be an "
                             "autoregressive run (mdm-prime train --family ar)")
        if ar_meta.get("spec") != run_meta.get("spec"):
            print(f"warning: the AR scorer was trained on {ar_meta.get('spec')!r}, the run on {run_meta.get('spec')!r}",
                  file=sys.stderr)
        out["gen_ppl_model"] = {"run_dir": str(args.gen_ppl), "data": ar_meta.get("spec"),
                                "tokenizer": ar_meta.get("tokenizer"), "num_classes": ar_meta.get("num_classes")}
    if args.fd or args.inception_weights:
        if task.kind != "image":
            raise ValueError(f"--fd / --inception-weights need an image run; {args.run_dir} holds {task.kind} data")
    if args.fd:
        from .metrics.classifier import describe_classifier, load_classifier

        classifier, clf_cfg = load_classifier(args.fd, device=args.device)
        if tuple(classifier.image_shape) != tuple(task.image_shape):
            raise ValueError(f"the classifier in {args.fd} takes images of shape {classifier.image_shape}, the run makes "
                             f"{tuple(task.image_shape)}; train it on the run's data spec ({run_meta.get('spec')!r})")
    if args.discrete_steps:
        if family == "ar":
            raise ValueError("--discrete-steps is for diffusion runs; the autoregressive likelihood is already exact")
        from .metrics import discrete_time_bound

        x = task.split(args.split)[: args.num_sequences].to(args.device)
        res = discrete_time_bound(model, x, model.subtokenizer, steps=args.discrete_steps,
                                  num_draws=args.discrete_draws, seed=args.seed, schedule=model.schedule,
                                  batch_size=args.batch_size)
        out.update(res.summary())
        out["discrete_time_bound"] = (f"NELBO of the {args.discrete_steps}-step joint sampler (uniform time grid): a valid "
                                      "upper bound on that sampler's NLL")

    if not (args.gen_ppl or args.fd or args.inception_weights):
        return out
    samples, stats = _generate_many(model, task, args.num_samples, args.steps or None, args.seed, args.batch_size)
    out.update(stats)
    out["num_generated_samples"] = int(samples.shape[0])
    reference = task.split(args.split)[: args.num_samples]
    if ar_model is not None:
        from .metrics import generative_perplexity

        g = generative_perplexity(samples, ar_model, batch_size=args.batch_size)
        ref = generative_perplexity(reference, ar_model, batch_size=args.batch_size)
        out.update({k: g[k] for k in ("generative_perplexity", "generative_nats_per_token",
                                      "generative_stderr_nats_per_token", "sample_unigram_entropy_nats")})
        out.update({"reference_generative_perplexity": ref["generative_perplexity"],
                    "reference_generative_nats_per_token": ref["generative_nats_per_token"],
                    "reference_unigram_entropy_nats": ref["sample_unigram_entropy_nats"],
                    "reference_num_sequences": ref["num_samples"]})
    if task.kind == "image" and (classifier is not None or args.inception_weights):
        from .metrics import frechet_distance

        shape = (-1, *task.image_shape)
        images, ref_images = samples.view(shape), reference.view(shape)
        if classifier is not None:
            fd = frechet_distance(images, ref_images, classifier, levels=task.num_classes,
                                  batch_size=args.batch_size, name=describe_classifier(clf_cfg))
            out.update(fd)
        if args.inception_weights:
            from .metrics import InceptionFeatures

            inc = InceptionFeatures(args.inception_weights).to(args.device)
            fid = frechet_distance(images, ref_images, inc, levels=task.num_classes, batch_size=args.batch_size,
                                   name=f"Inception-v3 pool3 (2048-d), torchvision-format weights {args.inception_weights}")
            out["inception_fid"] = fid["frechet_distance"]
            out["inception_fid_features"] = fid["fd_classifier"]
    return out


def run_eval(args: argparse.Namespace) -> int:
    if args.num_times < 2:
        raise ValueError(f"--num-times must be >= 2, got {args.num_times}")
    if args.num_sequences < 1:
        raise ValueError(f"--num-sequences must be >= 1, got {args.num_sequences}")
    _run_paths(args.run_dir)
    _check_metric_args(args)
    _, task, model = load_run(args.run_dir, use_ema=not args.no_ema, device=args.device)
    r = evaluate_model(model, task, split=args.split, num_sequences=args.num_sequences,
                       num_times=args.num_times, seed=args.seed, batch_size=args.batch_size)
    r["weights"] = "raw" if args.no_ema else "ema"
    r["run_dir"] = str(args.run_dir)
    r.update(_sample_metrics(args, task, model))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{args.run_dir} [{r['family']}], {r['split']} split, {r['num_sequences']} sequences × "
          f"{r['tokens_per_sequence']} tokens, K = {r['num_times']} time draws, {r['weights']} weights")
    print(f"  NLL bound (valid):  {r['nelbo_nats_per_token']:.4f} ± {r['stderr_nats_per_token']:.4f} nats/token"
          f"  = {r['bits_per_token']:.4f} bits/token, perplexity {r['perplexity']:.3f}")
    if "bits_per_char" in r:
        print(f"                      {r['bits_per_char']:.4f} bits/char")
    if "bits_per_dim" in r:
        print(f"                      {r['bits_per_dim']:.4f} bits/dim")
    if "data_entropy_nats_per_token" in r:
        print(f"  data entropy:       {r['data_entropy_nats_per_token']:.4f} nats/token (exact; a bound may not go below it)")
    if "prime_objective_nats_per_token" in r:
        print(f"  training objective L_prime: {r['prime_objective_nats_per_token']:.4f} nats/token "
              f"(NOT a likelihood bound for ℓ > 1)")
    if "discrete_time_nelbo_nats_per_token" in r:
        print(f"  discrete-time bound, T = {r['discrete_time_steps']}: {r['discrete_time_nelbo_nats_per_token']:.4f} ± "
              f"{r['discrete_time_stderr_nats_per_token']:.4f} nats/token ({r['discrete_time_num_draws']} draws; a valid "
              f"bound for the {r['discrete_time_steps']}-step sampler)")
    if "sample_steps" in r:
        print(f"  {r['num_generated_samples']} samples at T = {r['sample_steps']}: "
              f"{r['sample_network_calls_mean']:.1f} network calls, {r['sample_idle_steps_mean']:.1f} idle steps each")
    if "generative_perplexity" in r:
        print(f"  generative perplexity {r['generative_perplexity']:.3f} ({r['generative_nats_per_token']:.4f} nats/token), "
              f"sample unigram entropy {r['sample_unigram_entropy_nats']:.4f} nats  [AR scorer {r['gen_ppl_model']['run_dir']}]")
        print(f"  reference {r['split']} text: gen. perplexity {r['reference_generative_perplexity']:.3f}, "
              f"unigram entropy {r['reference_unigram_entropy_nats']:.4f} nats")
    if "frechet_distance" in r:
        print(f"  Fréchet distance {r['frechet_distance']:.4f} ({r['fd_num_samples']} samples vs {r['fd_num_reference']} "
              f"{r['split']} images) on features of: {r['fd_classifier']}")
    if "inception_fid" in r:
        print(f"  Inception FID {r['inception_fid']:.3f} [{r['inception_fid_features']}]")
    return 0


# ----------------------------------------------------------------------------- sample
def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by mdm-prime train")
    p.add_argument("--num", type=int, default=4, help="number of samples")
    p.add_argument("--steps", type=int, default=0, metavar="T", help="sampling steps (default: T = L)")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--prefix", help="text prompt: the sample continues it")
    cond.add_argument("--infill", metavar="PATTERN",
                      help="text with '_' for every token to generate, e.g. 'The ____ of the ___'")
    cond.add_argument("--keep-digits", metavar="J[,J]",
                      help="images: keep digits J of every pixel of validation images, generate the rest")
    p.add_argument("--method", default="joint", choices=["joint", "per_digit"])
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--corrector", type=float, default=0.0, metavar="A", help="corrector scale a (0: none)")
    p.add_argument("--no-cache", action="store_true", help="call the network at every step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output file stem (default: RUN_DIR/samples/sample_<seed>); text also to stdout")
    p.add_argument("--device", default="cpu")


def parse_infill_pattern(pattern: str, tokenizer, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``'The ____ sat'`` → tokens ``[L]`` and a generate-mask ``BoolTensor[L]``: text pieces are
    tokenized and kept, each ``_`` is one generated token, positions past the pattern are generated."""
    import re

    tokens: list[int] = []
    generate: list[bool] = []
    for piece in re.split(r"(_+)", pattern):
        if not piece:
            continue
        if piece[0] == "_":
            tokens += [0] * len(piece)
            generate += [True] * len(piece)
        else:
            ids = tokenizer.encode(piece)
            tokens += ids
            generate += [False] * len(ids)
    if len(tokens) > num_tokens:
        raise ValueError(f"infill pattern is {len(tokens)} tokens long; the model generates {num_tokens}")
    pad = num_tokens - len(tokens)
    return (torch.tensor(tokens + [0] * pad, dtype=torch.long),
            torch.tensor(generate + [True] * pad, dtype=torch.bool))


def run_sample(args: argparse.Namespace) -> int:
    from .generate import generate_tokens, write_samples

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 1 (or 0 for T = L), got {args.steps}")
    run, _ = _run_paths(args.run_dir)
    need_data = args.keep_digits is not None
    _, task, model = load_run(run, device=args.device, with_data=need_data)
    condition = prefix = None
    family = getattr(model, "family", "prime")
    if (args.prefix is not None or args.infill is not None) and task.tokenizer is None:
        raise ValueError("--prefix/--infill need a text run (with a tokenizer)")
    if args.prefix is not None:
        prefix = torch.tensor(task.tokenizer.encode(args.prefix), dtype=torch.long)
        if prefix.numel() == 0 or prefix.numel() > task.seq_len:
            raise ValueError(f"--prefix must encode to 1..{task.seq_len} tokens, got {prefix.numel()}")
        prefix = prefix.unsqueeze(0).expand(args.num, -1)
    elif args.infill is not None:
        if family == "ar":
            raise ValueError("--infill needs a diffusion run; the autoregressive baseline only continues a prefix")
        from .sampling import infill_condition

        tokens, generate = parse_infill_pattern(args.infill, task.tokenizer, task.seq_len)
        condition = infill_condition(tokens, generate, model.subtokenizer, num_samples=args.num)
    elif args.keep_digits is not None:
        if family == "ar" or task.kind != "image":
            raise ValueError("--keep-digits needs an image diffusion run")
        from .sampling import digit_condition

        digits = [int(d) for d in args.keep_digits.split(",")]
        bad = [d for d in digits if not 0 <= d < model.subtokenizer.length]
        if bad:
            raise ValueError(f"--keep-digits {bad} out of range 0..{model.subtokenizer.length - 1}")
        condition = digit_condition(task.split("valid")[: args.num], digits, model.subtokenizer)
    tokens, stats = generate_tokens(model, task, num=args.num, steps=args.steps or None, seed=args.seed,
                                    condition=condition, prefix=prefix, temperature=args.temperature,
                                    top_p=args.top_p, method=args.method, cache=not args.no_cache,
                                    corrector_scale=args.corrector)
    stem = Path(args.out) if args.out else run / "samples" / f"sample_{args.seed}"
    paths = write_samples(tokens, task, stem.parent, stem.name, stats=stats, echo=True)
    print(f"steps {stats['steps']}, network calls per sample {stats['network_calls_mean']:.1f}, "
          f"idle steps {stats['idle_steps_mean']:.1f}, {stats['wall_time_s']:.2f} s", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0
