"""``mdm-prime data prepare SPEC --tokenizer T --out DIR`` (also ``python -m mdm_prime.data prepare …``):
stream a corpus into memory-mappable token shards with :func:`mdm_prime.data.prepare.prepare_shards`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.prepare import prepare_shards

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser, common: bool = True) -> None:
    """Arguments of ``data prepare … --out DIR`` (streaming shards).

    ``common=False`` adds only the shard options, for a parser that already has ``spec``,
    ``--tokenizer``, ``--seed``, ``--valid-fraction``, ``--test-fraction`` and ``--root``.
    """
    if common:
        parser.add_argument(
            "spec",
            help="source: txt:DIR, owt:DIR, jsonl:PATH (.jsonl/.jsonl.gz), parquet:PATH, "
            "hf:DIR (datasets save_to_disk / .arrow folder), brown|austen|kjv|mix|text:PATH, "
            "or a bare path",
        )
        parser.add_argument(
            "--tokenizer",
            default="gpt2",
            help="byte | text8 | gpt2 | folder of a saved tokenizer (default: gpt2)",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of the by-document split (default: 0)")
        parser.add_argument(
            "--valid-fraction", type=float, default=0.05, help="fraction of documents for valid"
        )
        parser.add_argument(
            "--test-fraction", type=float, default=0.05, help="fraction of documents for test"
        )
        parser.add_argument(
            "--root", default=None, help="data root (default: $MDM_PRIME_DATA or ~/.cache/mdm-prime)"
        )
    parser.add_argument(
        "--out",
        default=None,
        help="write memory-mappable token shards to this folder "
        "(streaming, all cores, resumable: run the same command again to continue)",
    )
    parser.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all cores)")
    parser.add_argument(
        "--shard-mb", type=float, default=64.0, help="MB of text per shard group (default: 64)"
    )
    parser.add_argument(
        "--batch-mb", type=float, default=1.0, help="MB of text per worker batch (default: 1)"
    )
    parser.add_argument(
        "--text-field", default="text", help="JSON field / column with the text (default: text)"
    )
    parser.add_argument("--hf-split", default="train", help="split of a DatasetDict folder (default: train)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different preparation in --out")
    parser.add_argument("--report-json", default=None, help="also write the run's report as JSON here")


def run(args: argparse.Namespace) -> int:
    """Run ``prepare_shards`` from parsed :func:`add_arguments` arguments; prints the report."""
    if not args.out:
        raise ValueError("--out DIR is required to write shards")
    fr = (1.0 - args.valid_fraction - args.test_fraction, args.valid_fraction, args.test_fraction)
    report = prepare_shards(
        args.spec,
        args.out,
        args.tokenizer,
        text_field=args.text_field,
        hf_split=args.hf_split,
        fractions=fr,
        seed=args.seed,
        workers=args.workers,
        shard_mb=args.shard_mb,
        batch_mb=args.batch_mb,
        overwrite=args.overwrite,
        root=args.root,
    )
    from ..data.shards import ShardedTokens

    if report.complete:
        print(ShardedTokens(args.out).report())
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(report.to_dict(), indent=1))
    return 0
