"""Cost of scoring the published models with the valid bound: the real network size (768 wide, 12
blocks, 12 heads, L = 1024, GPT-2 vocabulary) with random weights, on this machine's CPU.

    python bench/bench_published_models.py                  # ℓ = 1 and ℓ = 4, 1 sequence, K = 2 draws
    python bench/bench_published_models.py --lengths 2 --draws 4 --threads 2

Times ``mdm_prime.likelihood`` (network forward + carry-over + digit marginals + both objectives)
per draw of one sequence and extrapolates to 1,000 sequences × K = 32 draws. A GPU estimate is given
from the counted forward FLOPs (``model.flops_per_token()``) at an assumed sustained throughput.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from mdm_prime import likelihood
from mdm_prime.models import build_model
from mdm_prime.models.mdlm_dit import mdlm_dit_config


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="1,4", help="ℓ values (comma-separated)")
    p.add_argument("--draws", type=int, default=2, help="time draws K timed (>= 2)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument(
        "--gpu-tflops",
        type=float,
        default=400.0,
        help="assumed bf16 peak (H100 dense ~400 sustained matmul, spec sheet 989)",
    )
    p.add_argument("--gpu-util", type=float, default=0.4, help="assumed fraction of that peak reached")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(
        f"CPU: {platform.processor() or platform.machine()}, {a.threads} threads, torch {torch.__version__}"
    )
    print(
        "| ℓ | forward GFLOP / sequence | CPU s / draw (fp32) | CPU h / 1,000 seq × K=32 | "
        "GPU est. s / 1,000 seq × K=32 |"
    )
    print("|---|---|---|---|---|")
    for ell in (int(x) for x in a.lengths.split(",")):
        torch.manual_seed(0)
        model = build_model(
            mdlm_dit_config("small", num_classes=50257, length=ell, seq_len=a.seq_len, precision="fp32")
        ).eval()
        with torch.no_grad():
            for prm in model.parameters():
                prm.normal_(0, 0.02)
        x = torch.randint(0, 50257, (1, a.seq_len))
        likelihood(model, x[:, :16], model.subtokenizer, num_times=2, seed=0)  # warm-up
        t0 = time.perf_counter()
        likelihood(model, x, model.subtokenizer, num_times=a.draws, seed=0, batch_size=1)
        per_draw = (time.perf_counter() - t0) / a.draws
        gflop = model.flops_per_token() * a.seq_len / 1e9
        cpu_h = per_draw * 32 * 1000 / 3600
        gpu_s = gflop * 1e9 * 32 * 1000 / (a.gpu_tflops * 1e12 * a.gpu_util)
        print(f"| {ell} | {gflop:.0f} | {per_draw:.2f} | {cpu_h:.1f} | {gpu_s:.0f} |")


if __name__ == "__main__":
    main()
