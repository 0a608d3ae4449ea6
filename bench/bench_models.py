"""Training-step throughput of the diffusion transformer, fp32 vs bf16 autocast, against the
machine's measured matmul peak. Writes a markdown table to ``bench/results/models.md``.

    python bench/bench_models.py                      # "mini" transformer (256 wide, 4 blocks), L=256, B=8
    python bench/bench_models.py --size tiny --steps 3 --out /tmp/models.md
    python bench/bench_models.py --threads 2           # all cores (only on an otherwise idle machine)

A training step is ``diffusion_loss`` (forward) + backward + AdamW. FLOPs per step are estimated as
``3 × forward FLOPs`` (``model.flops_per_token()`` × tokens: backward ≈ 2 × forward); elementwise work
(norms, softmax, the carry-over mask) is not counted, so achieved GFLOP/s is a lower bound on the
work the CPU does. The peak is the best of several ``n × n`` matmuls in the same dtype, measured in
the same run, with the same thread count.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import mdm_prime
from mdm_prime.models import build_model, transformer_config


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    """Best achieved GFLOP/s of ``(n×n) @ (n×n)`` in ``dtype`` (2n³ FLOPs each)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def step_times(model, x0: torch.Tensor, steps: int, warmup: int) -> list[float]:
    """Seconds per training step (forward + backward + AdamW), after ``warmup`` untimed steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = mdm_prime.diffusion_loss(model, x0, model.subtokenizer, generator=gen).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="mini")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=256)
    parser.add_argument("--length", type=int, default=2, help="sub-tokens per token ℓ")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads (default 1: on shared, busy cores more threads stall each other)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "models.md"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    x0 = torch.randint(0, args.num_classes, (args.batch, args.seq_len))
    rows = []
    for precision in ("fp32", "bf16"):
        cfg = transformer_config(
            args.size,
            num_classes=args.num_classes,
            length=args.length,
            seq_len=args.seq_len,
            precision=precision,
        )
        model = build_model(cfg)
        times = step_times(model, x0, args.steps, args.warmup)
        step = statistics.median(times)
        tokens = args.batch * args.seq_len
        gflops = 3 * model.flops_per_token() * tokens / step / 1e9
        rows.append((precision, step, tokens / step, gflops, gflops / peaks[precision], model))
        print(
            f"{precision}: {step * 1e3:.0f} ms/step, {tokens / step:,.0f} tokens/s, {gflops:.1f} GFLOP/s "
            f"({100 * gflops / peaks[precision]:.0f}% of {peaks[precision]:.0f})",
            flush=True,
        )
    load_after = os.getloadavg()

    model = rows[0][5]
    lines = [
        "# Model benchmark: training-step throughput",
        "",
        f"Command: `python bench/bench_models.py --size {args.size} --seq-len {args.seq_len} --batch {args.batch} "
        f"--num-classes {args.num_classes} --length {args.length} --steps {args.steps} --warmup {args.warmup} --threads {args.threads}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads. Load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after: other jobs shared the cores, so these "
        "numbers are noisy lower bounds.",
        "",
        f"Model: `transformer_config({args.size!r})` = {model.dim} wide, {model.depth} blocks, {model.heads} heads, "
        f"C = {args.num_classes}, ℓ = {args.length}, L = {args.seq_len}, batch {args.batch}; "
        f"{model.num_parameters() / 1e6:.2f} M parameters, {model.flops_per_token() / 1e6:.2f} MFLOP/token forward. "
        f"Step = `diffusion_loss` + backward + AdamW; FLOPs/step = 3 × forward; median of {args.steps} steps "
        f"after {args.warmup} warm-up steps.",
        "",
        f"Measured matmul peak (1024², best of 10): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s.",
        "",
        "| precision | ms / step | tokens / s | achieved GFLOP/s | % of same-dtype matmul peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for precision, step, tps, gflops, frac, _ in rows:
        lines.append(f"| {precision} | {step * 1e3:.0f} | {tps:,.0f} | {gflops:.1f} | {100 * frac:.0f}% |")
    faster = "bf16" if rows[1][1] < rows[0][1] else "fp32"
    lines += [
        "",
        f"Faster on this CPU: **{faster}** (speed-up of bf16 over fp32: {rows[0][1] / rows[1][1]:.2f}×).",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
