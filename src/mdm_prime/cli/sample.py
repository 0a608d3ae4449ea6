"""``mdm-prime sample``: generate from a run folder with the family's ``generate`` (``docs/method.md §6``).

Each call writes new files (never over earlier ones): ``RUN/samples/sample_seed<S>[_<n>].*`` by
default, with the settings (seed, T, temperature, top-p, method, conditioning) and the sampling cost
recorded in ``<stem>.stats.json`` beside the samples. Text is also printed. Without ``--seed`` each call
draws a fresh seed ``S`` (printed, and recorded in the stats) so that calls differ; ``--seed S`` repeats
one. ``--animate FILE.gif`` also writes the reverse process as an animated GIF
(:mod:`mdm_prime.animation`)."""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "free_stem"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by mdm-prime train")
    p.add_argument("--num", type=int, default=4, help="number of samples")
    p.add_argument(
        "--steps", type=int, default=0, metavar="T", help="sampling steps (0: T = L, one per token)"
    )
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--prefix", help="text prompt: the sample continues it (default: none, unconditional)")
    cond.add_argument(
        "--infill",
        metavar="PATTERN",
        help="text with '_' for every token to generate, e.g. 'The ____ of the ___' (default: none)",
    )
    cond.add_argument(
        "--keep-digits",
        metavar="J[,J]",
        help="images: keep digits J of every pixel of validation images, generate the rest (default: none)",
    )
    from ..sampling.sampler import reveal_rule_names

    p.add_argument(
        "--method",
        default="joint",
        choices=reveal_rule_names(),
        help="joint: reveal digits from one draw per token; per_digit: from each digit's marginal",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="softmax temperature (default: the run's sample_temperature, as in its training previews)",
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="nucleus mass in (0, 1] (default: the run's sample_top_p, as in its training previews; "
        "text-tiny: 0.9)",
    )
    p.add_argument("--corrector", type=float, default=0.0, metavar="A", help="corrector scale a (0: none)")
    p.add_argument("--no-cache", action="store_true", help="call the network at every step")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the sampler (default: a fresh one each call, printed and recorded in .stats.json)",
    )
    p.add_argument(
        "--out",
        help="output file stem (default: RUN_DIR/samples/sample_seed<SEED>); an existing "
        "stem gets a new suffix _1, _2, ... (nothing is overwritten)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (steps, network calls, ETA)")
    p.add_argument(
        "--animate",
        metavar="FILE.gif",
        help="also write an animated GIF of the reverse process (text: sample 0, tokens revealed "
        "digit by digit; images: up to 16 samples sharpening) (default: none)",
    )
    p.add_argument(
        "--animate-frames",
        type=int,
        default=64,
        help="at most this many frames in the GIF (the steps are subsampled evenly)",
    )


def free_stem(stem: Path) -> Path:
    """``stem`` if no ``stem.*`` file exists, else the first free ``stem_<n>``."""

    def taken(s: Path) -> bool:
        return s.parent.exists() and any(p.name.startswith(s.name + ".") for p in s.parent.iterdir())

    candidate, n = stem, 0
    while taken(candidate):
        n += 1
        candidate = stem.with_name(f"{stem.name}_{n}")
    return candidate


def run(args: argparse.Namespace) -> int:
    from ..evaluate import load_run, run_paths
    from ..families import SampleRequest, family_of

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 1 (or 0 for T = L), got {args.steps}")
    if args.animate is not None and not str(args.animate).lower().endswith(".gif"):
        raise ValueError(f"--animate writes a GIF; give a FILE.gif, got {args.animate!r}")
    if args.animate_frames < 2:
        raise ValueError(f"--animate-frames must be >= 2, got {args.animate_frames}")
    if args.infill is not None and "_" not in args.infill:
        raise ValueError(
            f"--infill {args.infill!r} has no '_' blanks: mark each token to generate with '_' "
            "(e.g. 'The ___ sat'), or use --prefix to continue a text"
        )
    run_dir, _ = run_paths(args.run_dir)
    cfg, task, model = load_run(run_dir, device=args.device, with_data=args.keep_digits is not None)
    family = family_of(model)
    if args.steps > 0:
        from ..sampling.sampler import check_step_count

        ell = getattr(getattr(model, "subtokenizer", None), "length", 1)
        check_step_count(args.steps, task.seq_len, ell, name="--steps")
    seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    temperature = cfg.sample_temperature if args.temperature is None else args.temperature
    top_p = cfg.sample_top_p if args.top_p is None else args.top_p
    prefix = infill = keep = None
    if args.prefix is not None:
        prefix = task.encode_prompt(args.prefix).unsqueeze(0).expand(args.num, -1)
    elif args.infill is not None:
        if not family.supports_infill:
            raise ValueError(
                "--infill needs a diffusion run; the autoregressive baseline only continues a prefix"
            )
        infill = task.parse_infill(args.infill)
    elif args.keep_digits is not None:
        if not family.supports_infill or task.image_shape is None:
            raise ValueError("--keep-digits needs an image diffusion run")
        digits = [int(d) for d in args.keep_digits.split(",")]
        keep = (task.split("valid")[: args.num], digits)
    request = SampleRequest(
        num=args.num,
        num_tokens=task.seq_len,
        steps=args.steps or None,
        seed=seed,
        prefix=prefix,
        infill=infill,
        keep_digits=keep,
        temperature=temperature,
        top_p=top_p,
        method=args.method,
        cache=not args.no_cache,
        corrector_scale=args.corrector,
        record=args.animate is not None,
        progress=not args.no_progress,
    )
    tokens, stats = family.generate(model, request)
    trajectory, traj_calls = stats.pop("trajectory", None), stats.pop("trajectory_calls", None)
    settings = {
        "run_dir": str(run_dir),
        "family": family.name,
        "seed": seed,
        "seed_drawn": args.seed is None,
        "steps": stats["steps"],
        "temperature": temperature,
        "top_p": top_p,
        "method": args.method,
        "cache": not args.no_cache,
        "corrector": args.corrector,
        "prefix": args.prefix,
        "infill": args.infill,
        "keep_digits": args.keep_digits,
        "weights": "ema",
    }
    stem = free_stem(Path(args.out) if args.out else run_dir / "samples" / f"sample_seed{seed}")
    paths = task.write_samples(
        tokens, stem.parent, stem.name, stats={**stats, "settings": settings}, echo=True
    )
    print(
        f"steps {stats['steps']}, network calls per sample {stats['network_calls_mean']:.1f}, "
        f"idle steps {stats['idle_steps_mean']:.1f}, {stats['wall_time_s']:.2f} s; temperature {temperature}, "
        f"top-p {top_p}",
        file=sys.stderr,
    )
    if args.seed is None:
        print(f"seed {seed} (pass --seed {seed} to repeat)", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    if args.animate is not None:
        from ..animation import animate

        ell = model.subtokenizer.length
        title = (
            f"{family.name}, {ell} digit{'s' if ell > 1 else ''} per token, T = {stats['steps']}, seed {seed}"
        )
        gif = animate(
            trajectory,
            model.subtokenizer,
            task,
            args.animate,
            calls=traj_calls,
            max_frames=args.animate_frames,
            title=title,
        )
        print(f"wrote {gif}", file=sys.stderr)
    return 0
