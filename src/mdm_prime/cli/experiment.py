"""``mdm-prime experiment STUDY`` (also ``python -m mdm_prime.experiments STUDY``): run (or resume, or
skip when complete) a study of :mod:`mdm_prime.experiments`, write ``RESULTS_DIR/STUDY.json`` and its
plots, then regenerate ``RESULTS_DIR/../results.md`` from every study JSON there. ``--smoke`` writes to
``OUT_ROOT/smoke-results`` unless ``--results-dir`` is given, never to ``docs/``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments import STUDIES, get_study

__all__ = ["HELP", "add_arguments", "run", "main"]

HELP = "run a reproducible study (ell_sweep, toy, ...) into docs/results and regenerate docs/results.md"


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    """The study command's arguments (shared with ``mdm-prime experiment``)."""
    p.add_argument(
        "study",
        choices=[*STUDIES, "report", "estimate"],
        help="the study to run ('report': only regenerate results.md from the study JSONs; "
        "'estimate': print each study's estimated CPU time at --budget)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks that the study runs")
    p.add_argument("--budget", type=float, default=1.0, help="scale factor on the study's training steps")
    p.add_argument(
        "--out-root", default="runs/experiments", help="where run folders live (shared by studies)"
    )
    p.add_argument(
        "--results-dir",
        default=None,
        help="where STUDY.json and plots go (default docs/results, or OUT_ROOT/smoke-results with --smoke)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mdm_prime.experiments", description=__doc__.splitlines()[0])
    add_study_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_study_command(args)
    except ValueError as err:
        raise SystemExit(f"python -m mdm_prime.experiments: error: {err}") from err


def run_study_command(args: argparse.Namespace) -> int:
    """Run the parsed study command (``ValueError`` for a bad ``--budget`` or ``--threads``)."""
    import math

    if not (args.budget > 0 and math.isfinite(args.budget)):
        raise ValueError(f"--budget must be a positive number, got {args.budget}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.study == "estimate":
        total = 0.0
        measured_dir = Path(args.results_dir or "docs/results")
        for name in STUDIES:
            minutes = getattr(get_study(name), "CPU_MINUTES", 0.0) * (
                1.0 if name == "paper_scale" else args.budget
            )
            total += minutes
            print(
                f"{name:16s} ~{minutes:6.1f} CPU-minutes "
                f"({getattr(get_study(name), 'CPU_MINUTES_MACHINE', '2 AVX2 cores, fp32')})"
                f"{_measured(measured_dir, name)}"
            )
        print(f"{'total':16s} ~{total:6.1f} CPU-minutes (runs shared between studies counted once)")
        return 0
    results_dir = Path(
        args.results_dir or (Path(args.out_root) / "smoke-results" if args.smoke else "docs/results")
    )
    from ..experiments.report import write_results_md
    from ..experiments.runner import write_study_json

    if args.study != "report":
        module = get_study(args.study)
        data = module.run(args.out_root, results_dir, smoke=args.smoke, budget=args.budget)
        path = write_study_json(results_dir / f"{args.study}{'-smoke' if args.smoke else ''}.json", data)
        print(f"wrote {path}")
    md = write_results_md(results_dir, include_smoke=args.smoke)
    print(f"wrote {md}")
    return 0


add_arguments = add_study_arguments
run = run_study_command


def _measured(results_dir: Path, study: str) -> str:
    """``"; last run: budget B, N runs, X min of training wall (machine)"`` from ``STUDY.json``, or ``""``."""
    import json

    path = results_dir / f"{study}.json"
    if not path.exists():
        return ""
    try:
        data = json.loads(path.read_text())
        walls = [r["train_wall_s"] for r in data.get("rows", []) if r.get("train_wall_s") is not None]
    except (ValueError, KeyError, TypeError):
        return ""
    if not walls:
        return ""
    return (
        f"; last run: budget {data.get('budget', '?'):g}, {len(walls)} runs, "
        f"{sum(walls) / 60:.1f} min of training wall ({data.get('machine', '?')})"
    )
