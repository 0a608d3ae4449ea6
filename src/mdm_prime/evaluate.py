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


def run_eval(args: argparse.Namespace) -> int:
    if args.num_times < 2:
        raise ValueError(f"--num-times must be >= 2, got {args.num_times}")
    if args.num_sequences < 1:
        raise ValueError(f"--num-sequences must be >= 1, got {args.num_sequences}")
    _run_paths(args.run_dir)
    _, task, model = load_run(args.run_dir, use_ema=not args.no_ema, device=args.device)
    r = evaluate_model(model, task, split=args.split, num_sequences=args.num_sequences,
                       num_times=args.num_times, seed=args.seed, batch_size=args.batch_size)
    r["weights"] = "raw" if args.no_ema else "ema"
    r["run_dir"] = str(args.run_dir)
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
