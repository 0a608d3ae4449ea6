"""Print the diff of every surviving mutmut mutant of one source file, read straight from
``mutants/`` (much faster than one ``mutmut show`` per mutant). Not part of CI.

    python tools/mutmut_survivors.py src/mdm_prime/parameterization/fast.py [--status survived|killed|unrun]

Run from the directory that holds mutmut's ``mutants/`` folder. Each mutant is printed as
``### NAME`` followed by the changed lines of its function (``-`` original, ``+`` mutant), so two
runs can be compared by diff text even when mutant numbers shift.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
from pathlib import Path

STATUS = {"survived": 0, "killed": 1, "unrun": None}


def functions(source: str) -> dict[str, list[str]]:
    """Name → source lines of every function (methods included) in ``source``."""
    lines = source.splitlines()
    return {
        node.name: lines[node.lineno - 1 : node.end_lineno]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "path", help="source file as listed in [tool.mutmut] only_mutate, e.g. src/mdm_prime/schedules.py"
    )
    ap.add_argument("--status", choices=sorted(STATUS), default="survived")
    args = ap.parse_args()
    mutated = Path("mutants") / args.path
    meta = Path(f"{mutated}.meta")
    if not meta.is_file():
        raise SystemExit(f"no mutmut results for {args.path}: {meta} does not exist (run mutmut first)")
    verdicts = json.loads(meta.read_text())["exit_code_by_key"]
    funcs = functions(mutated.read_text())
    want = STATUS[args.status]
    count = 0
    for key, code in verdicts.items():
        if code != want:
            continue
        name = key.rsplit(".", 1)[-1]
        base = name.rsplit("__mutmut_", 1)[0]
        orig, mutant = funcs.get(base + "__mutmut_orig"), funcs.get(name)
        print(f"### {key}")
        if orig is None or mutant is None:
            print("(function not found in the mutated file)")
            continue
        mutant = [orig[0], *mutant[1:]]  # the def lines differ by name only
        for line in difflib.unified_diff(orig, mutant, lineterm="", n=0):
            if line[:1] in "+-" and line[:3] not in ("+++", "---"):
                print(line)
        count += 1
    print(f"# {count} {args.status} mutants of {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
