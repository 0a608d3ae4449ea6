"""``mdm-prime data install`` and ``mdm-prime data prepare`` (also ``python -m mdm_prime.data``)."""

from __future__ import annotations

import argparse
import shlex
import time

from .common import HelpFormatter

__all__ = [
    "add_arguments",
    "run",
    "add_install_arguments",
    "run_install",
    "add_prepare_arguments",
    "run_prepare",
    "build_parser",
    "main",
]


def add_install_arguments(parser: argparse.ArgumentParser) -> None:
    from ..data.install import SOURCES

    listing = "; ".join(f"{n}: {s.description} ({s.package})" for n, s in SOURCES.items())
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"sources to install, or 'all' (default: all). {listing}"
    )
    parser.add_argument(
        "--root", default=None, help="data root (default: $MDM_PRIME_DATA or ~/.cache/mdm-prime)"
    )
    parser.add_argument("--force", action="store_true", help="reinstall sources that are already installed")


def run_install(args: argparse.Namespace) -> int:
    from ..data.install import install
    from ..data.paths import data_root

    t0 = time.perf_counter()
    print(f"data root {data_root(args.root)}")
    results = install(args.names, root=args.root, force=args.force, log=print)
    total = sum(r.size_bytes for r in results)
    print(f"{len(results)} sources, {total / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s")
    return 0


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec",
        help="text data spec: brown, austen, kjv, gcide, nlp-corpus, mix, mix:A+B, "
        "text:PATH, text8:PATH, owt:DIR (image/toy/synthetic specs are only described); without --out "
        "a source over $MDM_PRIME_MAX_IN_MEMORY_MB (default 256) MB is refused: stream it with --out",
    )
    parser.add_argument(
        "--tokenizer", default="byte", help="byte | char | text8 | gpt2 | bpe:N (default: byte)"
    )
    parser.add_argument("--seq-len", type=int, default=256, help="chunk length in tokens (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the by-document split (default: 0)")
    parser.add_argument(
        "--valid-fraction", type=float, default=0.05, help="fraction of documents for valid (default: 0.05)"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.05, help="fraction of documents for test (default: 0.05)"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the token cache")
    parser.add_argument(
        "--root", default=None, help="data root (default: $MDM_PRIME_DATA or ~/.cache/mdm-prime)"
    )
    from .prepare_shards import add_arguments as add_shard_arguments

    g = parser.add_argument_group(
        "streaming shards (with --out DIR: memory-mappable token shards for shards:DIR; spec may also be "
        "txt:DIR, jsonl:PATH, parquet:PATH, hf:DIR)"
    )
    add_shard_arguments(g, common=False)


def run_prepare(args: argparse.Namespace) -> int:
    """Without ``--out``: tokenize and cache a text spec in memory and report its sizes (a user-supplied
    source over ``$MDM_PRIME_MAX_IN_MEMORY_MB``, default 256 MB, is refused before it is read); with
    ``--out DIR``: write token shards (:func:`mdm_prime.data.prepare.prepare_shards`) for ``shards:DIR``."""
    from ..data.registry import DATA_KINDS, parse_data_spec

    if args.out is not None:
        from .prepare_shards import run as run_shards

        return run_shards(args)

    prefix, sep, _ = args.spec.partition(":")
    if sep and prefix in DATA_KINDS and DATA_KINDS[prefix].task is None:  # txt, jsonl, parquet, hf
        raise ValueError(
            f"{args.spec} is read by the streaming path only: add --out DIR "
            f"(mdm-prime data prepare {shlex.quote(args.spec)} --tokenizer gpt2 --out DIR), "
            "then use --data shards:DIR"
        )
    src = parse_data_spec(args.spec)
    if src.kind != "text":
        data = src.load()
        print(data.report() if hasattr(data, "report") else repr(data))
        return 0
    fr = (1.0 - args.valid_fraction - args.test_fraction, args.valid_fraction, args.test_fraction)
    t0 = time.perf_counter()
    data = src.load(
        tokenizer_spec=args.tokenizer,
        seq_len=args.seq_len,
        fractions=fr,
        seed=args.seed,
        cache=not args.no_cache,
        root=args.root,
    )
    print(data.report())
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True)
    add_install_arguments(
        sub.add_parser(
            "install",
            help="install corpora, images and GPT-2 files (idempotent)",
            formatter_class=HelpFormatter,
        )
    )
    add_prepare_arguments(
        sub.add_parser(
            "prepare",
            help="tokenize and cache a text spec and report sizes; with --out DIR write token shards",
            formatter_class=HelpFormatter,
        )
    )


def run(args: argparse.Namespace) -> int:
    return {"install": run_install, "prepare": run_prepare}[args.data_command](args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mdm_prime.data", description="install and prepare data")
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
