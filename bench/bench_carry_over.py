"""Benchmark: carry-over log-probs + digit marginals vs a plain ``log_softmax`` of the same logits.

    python bench/bench_carry_over.py [--reps 15] [--threads N] [--out bench/results/carry_over.md]

Shapes: logits ``float32[8, 128, 50257]`` (batch 8, L = 128, C = 50257), ℓ ∈ {1, 2, 4} with the
default base. Measured: ``mdm_prime.parameterization.carry_over(logits, y_t, sub)`` (returns the
carry-over log-probs ``[B, L, C]`` and the digit log-marginals ``[B, L, ℓ, b]``) under
``torch.no_grad()``, against ``torch.log_softmax(logits, -1)``. Both allocate their output afresh.

Two masking scenarios:
* ``mixed``: ``y_t`` from the forward process at stratified times ``t`` (one per sequence, linear
  schedule) — what training/evaluation sees (fully masked, partially seen and fully seen tokens);
* ``all masked``: every digit hidden — the worst case for the dense path (every token needs the
  full softmax and full-grid marginals).

Repetitions are interleaved (baseline and candidate alternate) and the table reports medians and the
median of the per-repetition ratios, so background load on a shared machine affects both alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from mdm_prime import SubTokenizer
from mdm_prime.parameterization import carry_over
from mdm_prime.process import mask_subtokens, sample_times
from mdm_prime.schedules import get_schedule

B, L, C = 8, 128, 50257


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "carry_over.md"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(B, L, C, generator=gen) * 3
    x0 = torch.randint(0, C, (B, L), generator=gen)

    cases = []
    for ell in args.lengths:
        sub = SubTokenizer(C, ell)
        y0 = sub.encode(x0)
        t = sample_times(B, generator=gen)
        mixed = mask_subtokens(y0, t, get_schedule("linear"), sub.mask_id, generator=gen)
        cases.append((ell, sub, "mixed", mixed))
        cases.append((ell, sub, "all masked", torch.full_like(y0, sub.mask_id)))

    base_t = {i: [] for i in range(len(cases))}
    cand_t = {i: [] for i in range(len(cases))}
    with torch.no_grad():
        for i, (_, sub, _, y) in enumerate(cases):  # warm-up (layout caches, allocator)
            carry_over(logits, y, sub)
        torch.log_softmax(logits, -1)
        for _ in range(args.reps):
            for i, (_, sub, _, y) in enumerate(cases):
                base_t[i].append(_time(lambda: torch.log_softmax(logits, -1)))
                cand_t[i].append(_time(lambda: carry_over(logits, y, sub)))

    lines = [
        "# carry-over benchmark",
        "",
        f"Command: `python bench/bench_carry_over.py --reps {args.reps}"
        + (f" --threads {args.threads}" if args.threads else "")
        + "`",
        "",
        f"Shapes: logits float32 [{B}, {L}, {C}] (B, L, C); y_t int64 [{B}, {L}·ℓ]; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()}); "
        f"no autograd. Interleaved repetitions, medians; ratio = median of per-repetition "
        f"(carry-over + marginals) / log_softmax.",
        "",
        "| ℓ | b | y_t | hidden digits | log_softmax ms | carry-over + marginals ms | ratio |",
        "|---|---|-----|---------------|----------------|---------------------------|-------|",
    ]
    for i, (ell, sub, name, y) in enumerate(cases):
        ratios = [c / b for b, c in zip(base_t[i], cand_t[i])]
        frac = (y == sub.mask_id).float().mean().item()
        lines.append(
            f"| {ell} | {sub.base} | {name} | {frac:.0%} | {statistics.median(base_t[i]):.1f} | "
            f"{statistics.median(cand_t[i]):.1f} | {statistics.median(ratios):.2f}× |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
