"""``mdm-prime train``: resolve a config from a preset, flags and ``--set``, then train a run folder."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "resolve_train_config"]

FLAG_KEYS = (
    "data",
    "tokenizer",
    "family",
    "subtokens",
    "codes",
    "objective",
    "loss_weighting",
    "schedule",
    "max_steps",
    "batch_size",
    "seq_len",
    "seed",
    "device",
    "precision",
)
"""Flags that set the config key of the same name."""


def _preset_default(key: str, preset: str = "text-tiny") -> str:
    from ..configs import PRESETS, TrainConfig

    value = PRESETS[preset].get(key, getattr(TrainConfig(), key))
    return f"default: from --config; {preset}: {value}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..codes import CODE_KINDS
    from ..configs import OBJECTIVES, PRECISIONS, PRESETS, WEIGHTINGS
    from ..families import FAMILIES

    families = "; ".join(f"{name}: {f.description}" for name, f in FAMILIES.items())
    p.add_argument(
        "--config",
        default="text-tiny",
        choices=sorted(PRESETS),
        help="named preset (text-tiny is the ~10-minute CPU main job)",
    )
    p.add_argument(
        "--data",
        help="data spec, e.g. mix, brown, text:PATH, text8:PATH, owt:DIR, mnist, "
        "fashion-mnist, digits, cifar10:DIR, toy:camera, markov:states=K, hmm:states=S,vocab=V "
        f"({_preset_default('data')})",
    )
    p.add_argument(
        "--tokenizer",
        help=f"tokenizer spec for text: byte, char, text8, gpt2, bpe:N ({_preset_default('tokenizer')})",
    )
    p.add_argument("--out", help="run folder (default: runs/<config>-<family>-l<ℓ>)")
    p.add_argument("--family", choices=sorted(FAMILIES), help=f"{families} ({_preset_default('family')})")
    p.add_argument(
        "--subtokens",
        type=int,
        metavar="N",
        help=f"ℓ, sub-tokens per token (prime only; 1 for the others) ({_preset_default('subtokens')})",
    )
    p.add_argument(
        "--codes",
        choices=list(CODE_KINDS),
        help="which class gets which digits (docs/method.md §1b), computed once from the training split: "
        f"index, shuffle, frequency or cluster ({_preset_default('codes')})",
    )
    p.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        help="training loss: prime (the paper's) or valid (the likelihood bound); "
        f"validation always reports the valid bound ({_preset_default('objective')})",
    )
    p.add_argument(
        "--loss-weighting",
        choices=list(WEIGHTINGS),
        help="training weighting (docs/method.md §4b): elbo (w(t) times the objective), unweighted "
        "(cross-entropy per masked digit, or per masked token for --objective prime) or mixture "
        "((1-loss_mix)·prime + loss_mix·valid, set loss_mix with --set); validation always reports the "
        f"valid bound ({_preset_default('loss_weighting')})",
    )
    p.add_argument(
        "--schedule",
        metavar="SPEC",
        help="masking schedule (docs/method.md §2, §2b): linear, loglinear, cosine, polynomial:N, or per "
        "digit position: leading:A (the leading digit masked with t^A, the last with t^(1/A); A > 1 reveals "
        "the leading digit first) or digits:S0,S1,... (one schedule per digit position, ℓ of them) "
        f"({_preset_default('schedule')})",
    )
    p.add_argument(
        "--max-steps", type=int, metavar="N", help=f"optimizer steps ({_preset_default('max_steps')})"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"global batch, sequences per step ({_preset_default('batch_size')})",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        metavar="N",
        help=f"tokens per training sequence ({_preset_default('seq_len')})",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help=f"seed for model init, data order and noise ({_preset_default('seed')})",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help=f"auto: CUDA when available, else CPU ({_preset_default('device')})",
    )
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="auto: bf16 autocast on CUDA and on CPUs with native bf16 dot products "
        "(AVX512-BF16 or AMX-BF16), fp32 otherwise; fp32: never autocast; bf16: always "
        f"({_preset_default('precision')})",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key (repeatable), e.g. --set lr=1e-3 --set model_overrides.depth=4 "
        "(default: none; see --print-config for every key)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly where it stopped, with its saved train_config.json "
        "(flags may change only run-length/logging settings; a run without a checkpoint starts from step 0)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard what the run in --out wrote (checkpoint, metrics, samples/step_*, config) and start "
        "it again; other files in the folder are kept",
    )
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="with --resume: continue even though the data's fingerprint differs from the run's",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _saved_config(args: argparse.Namespace):
    """With ``--resume --out DIR``: the run's saved config (the base the flags change), else None."""
    from ..configs import load_config_file

    if not getattr(args, "resume", False) or not args.out:
        return None
    path = Path(args.out) / "train_config.json"
    return load_config_file(path) if path.exists() else None


def resolve_train_config(args: argparse.Namespace):
    """The validated :class:`~mdm_prime.configs.TrainConfig` of the parsed arguments (with
    ``--resume``, the run's saved config changed by the flags)."""
    from ..configs import parse_overrides, resolve_config
    from ..families import get_family

    saved = _saved_config(args)
    overrides = parse_overrides(args.set)
    for key in FLAG_KEYS:
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if "tokenizer" not in overrides:  # shards:DIR carries its tokenizer (an explicit one must agree)
        from ..tasks import shards_tokenizer

        if shards_tokenizer(overrides.get("data")):
            overrides["tokenizer"] = shards_tokenizer(overrides["data"])
    if "family" in overrides and "subtokens" not in overrides:
        fixed = get_family(overrides["family"]).fixed_subtokens
        if fixed is not None:
            overrides["subtokens"] = fixed
    if saved is not None:
        from ..run_folder import changed_settings

        cfg = resolve_config(args.config, overrides, base=saved)
        changed_settings(saved.to_dict(), cfg.to_dict(), args.out)  # refused here, before --print-config
        return cfg
    return resolve_config(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_train_config(args)
    if args.print_config:
        print(cfg.to_json())
        return 0
    out = Path(args.out or f"runs/{args.config}-{cfg.family}-l{cfg.subtokens}")
    from ..train import RunError, train

    try:
        train(
            cfg,
            out,
            resume=args.resume,
            show_progress=not args.no_progress,
            restart=args.restart,
            allow_data_change=args.allow_data_change,
        )
    except RunError as err:  # interrupted (checkpoint saved), failed save, too many non-finite steps
        if os.environ.get("MDM_PRIME_DEBUG"):
            raise
        if os.environ.get("RANK", "0") == "0":
            print(f"mdm-prime train: {err}", file=sys.stderr)
        return err.exit_code
    if os.environ.get("RANK", "0") == "0":
        print(f"run folder: {out}  (metrics.jsonl, loss.png, samples/, checkpoint/)")
    return 0
