"""``mdm-prime experiment STUDY``: run (or resume, or skip when complete) a study of
:mod:`mdm_prime.experiments` and regenerate ``docs/results.md``; the same as
``python -m mdm_prime.experiments STUDY``."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "run a reproducible study (ell_sweep, toy, ...) into docs/results and regenerate docs/results.md"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..experiments.__main__ import add_study_arguments

    add_study_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..experiments.__main__ import run_study_command

    return run_study_command(args)
