"""``mdm-prime import CKPT --out RUN``: a published MDLM / MDLM-Prime checkpoint → a run folder.

``add_arguments(parser)`` / ``run(args)``, like every subcommand. Everything is validated before the
checkpoint is read; the checkpoint is read without executing anything in it.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "import a published MDLM / MDLM-Prime checkpoint (Lightning .ckpt or HF folder) as a run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        help="Lightning checkpoint.ckpt, or a Hugging Face MDLM folder (config.json + model.safetensors)",
    )
    p.add_argument("--out", required=True, help="run folder to write (must not exist or be empty)")
    p.add_argument(
        "--weights",
        choices=["ema", "raw"],
        default="ema",
        help="EMA weights (default; ckpt['ema']['shadow_params']) or the raw state_dict",
    )
    p.add_argument(
        "--data",
        default="mix",
        help="data spec that eval scores by default (e.g. owt:DIR, text:PATH; default mix)",
    )
    p.add_argument("--tokenizer", default="gpt2", help="tokenizer spec (gpt2 for the published models)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast on CUDA (as the authors) and on CPUs with native bf16, else fp32",
    )
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    s = p.add_argument_group("sizes (inferred from the checkpoint; a flag must agree with the tensor shapes)")
    s.add_argument("--subtokens", type=int, metavar="ℓ")
    s.add_argument("--base", type=int, metavar="B")
    s.add_argument("--num-classes", type=int, metavar="C")
    s.add_argument("--dim", type=int)
    s.add_argument("--depth", type=int)
    s.add_argument("--heads", type=int)
    s.add_argument("--cond-dim", type=int)
    s.add_argument("--seq-len", type=int, metavar="L")
    s.add_argument("--time-conditioned", choices=["true", "false"])
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fine-tuning settings stored in train_config.json (lr, batch_size, max_steps, …)",
    )


def run(args: argparse.Namespace) -> int:
    from ..configs import parse_overrides
    from ..importing.authors import import_checkpoint
    from ..importing.run_folder import write_run_folder

    train_overrides = parse_overrides(args.set)
    sizes = {
        k: getattr(args, k)
        for k in ("subtokens", "base", "num_classes", "dim", "depth", "heads", "cond_dim", "seq_len")
    }
    if args.time_conditioned is not None:
        sizes["time_conditioned"] = args.time_conditioned == "true"
    for k, v in sizes.items():
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    from pathlib import Path

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out or pass --force")
    model, meta = import_checkpoint(args.checkpoint, weights=args.weights, precision=args.precision, **sizes)
    write_run_folder(
        model,
        out,
        metadata=meta,
        data=args.data,
        tokenizer=args.tokenizer,
        train_overrides=train_overrides,
        overwrite=args.force,
    )
    s = meta["sizes"]
    print(
        f"imported {args.checkpoint} ({meta['format']}, {meta['weights']} weights): "
        f"{'MDLM' if s['subtokens'] == 1 else 'MDLM-Prime'} ℓ = {s['subtokens']}, b = {s['base']}, "
        f"C = {s['num_classes']}, "
        f"{s['depth']} blocks × {s['dim']} wide, {s['heads']} heads, L = {s['seq_len']}, "
        f"time-conditioned: {s['time_conditioned']}, {model.num_parameters() / 1e6:.1f}M parameters"
    )
    for note in meta.get("notes", []):
        print(f"  note: {note}", file=sys.stderr)
    print(f"run folder: {out}  (mdm-prime eval {out} / mdm-prime sample {out})")
    return 0
