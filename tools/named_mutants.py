"""Apply the hand-written mutants of the library (``tests/mutants.toml``) one at a time and run their
targeted tests against each (docs/reliability.md). A mutant is KILLED when the tests fail. Not part of CI.

    flock /tmp/mdm-heavy.lock python tools/named_mutants.py            # all mutants
    python tools/named_mutants.py --only sampler                        # names or files containing TEXT
    python tools/named_mutants.py --check                               # which entries no longer apply
    python tools/named_mutants.py --tests-from REV                      # the tests of an older commit

Each mutant in the data file is (name, file under src/mdm_prime/, exact text, replacement, test groups).
The source file is restored after each run, also on Ctrl-C or SIGTERM. Run from the repository root
with the package importable from ./src.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

P = "src/mdm_prime/"
DATA = Path(__file__).resolve().parent.parent / "tests" / "mutants.toml"


def load_mutants(path: Path = DATA) -> list[tuple[str, str, str, str, list[str]]]:
    """``(name, path from the repository root, old text, new text, test files)`` for every entry."""
    data = tomllib.loads(path.read_text())
    groups = data["tests"]
    out = []
    for m in data["mutant"]:
        unknown = [g for g in m["tests"] if g not in groups]
        if unknown:
            raise ValueError(f"{path}: mutant {m['name']!r} names unknown test groups {unknown}")
        tests = [t for g in m["tests"] for t in groups[g]]
        out.append((m["name"], P + m["file"], m["old"], m["new"], tests))
    return out


MUTANTS = load_mutants()


def stale(mutants=MUTANTS, root: Path = Path(".")) -> list[str]:
    """The entries whose text does not occur exactly once in their file (they would not apply)."""
    out = []
    for name, path, old, _, _ in mutants:
        count = (root / path).read_text().count(old)
        if count != 1:
            out.append(f"{name}: its text occurs {count} times in {path}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests-from", metavar="REV", help="run the test files as they were at git revision REV")
    ap.add_argument(
        "--only", metavar="TEXT", help="run only the mutants whose file path or name contains TEXT"
    )
    ap.add_argument("--check", action="store_true", help="only list the entries whose text no longer applies")
    args = ap.parse_args()
    if args.check:
        problems = stale()
        print("\n".join(problems) or f"all {len(MUTANTS)} mutants apply")
        return 1 if problems else 0

    # the mutated source file is restored in a `finally`: make SIGTERM (and SIGINT, which a shell
    # ignores in background jobs) raise KeyboardInterrupt so that the `finally` runs
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    mutants = [m for m in MUTANTS if not args.only or args.only in m[0] or args.only in m[1]]
    root = Path.cwd()
    tests_root = root
    tmp = None
    if args.tests_from:
        tmp = Path(tempfile.mkdtemp(prefix="mutants-tests-"))
        subprocess.run(f"git archive {args.tests_from} tests | tar -x -C {tmp}", shell=True, check=True)
        tests_root = tmp
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    killed = 0
    oracle = root / P / "oracle.py"
    oracle_now = oracle.read_text()
    try:
        if args.tests_from:  # the old tests with the old oracle they were written against
            old_oracle = subprocess.run(
                ["git", "show", f"{args.tests_from}:{P}oracle.py"], capture_output=True, text=True, check=True
            ).stdout
            oracle.write_text(old_oracle)
        all_files = sorted({str(tests_root / t) for m in mutants for t in m[4] if (tests_root / t).exists()})
        base = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *all_files],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=tests_root,
        )
        broken = [line.split()[1] for line in base.stdout.splitlines() if line.startswith("FAILED ")]
        deselect = [a for b in broken for a in ("--deselect", b)]
        print(f"baseline: {base.stdout.strip().splitlines()[-1]}; deselected {len(broken)} failing: {broken}")
        for name, path, old, new, tests in mutants:
            src = (root / path).read_text()
            if old not in src:
                print(f"SKIPPED  {name}: text not found in {path}")
                continue
            files = [str(tests_root / t) for t in tests if (tests_root / t).exists()]
            (root / path).write_text(src.replace(old, new, 1))
            try:
                r = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files, *deselect],
                    check=False,
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tests_root,
                )
            finally:
                (root / path).write_text(src)
            status = "KILLED" if r.returncode != 0 else "SURVIVED"
            killed += r.returncode != 0
            last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
            print(f"{status:8s} {name}  [{last}]", flush=True)
    finally:
        oracle.write_text(oracle_now)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{killed}/{len(mutants)} killed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
