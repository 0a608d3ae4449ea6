"""Benchmark: what the sampler and the likelihood estimator cost beyond the network, at GPT-2's vocabulary.

    python bench/bench_sampler_overhead.py [--reps 3] [--threads 2] [--label after]
        [--steps 256] [--measure-steps 256] [--skip-likelihood] [--out bench/results/sampler_overhead]

Shapes (issue 20): an untrained 256-wide, 4-block ``MDLMDiT`` (4 heads, fp32, no autocast) with
C = 50257, ℓ = 2 (b = 225), L = 128, batch 4. Its output layer is re-initialised with Gaussian
weights scaled so that the per-token distributions have an entropy of a few nats (a zero-initialised
head gives uniform logits, which no trained model has).

* **sampler**: ``sample(model, sub, num_samples=4, num_tokens=128, steps=T)`` (the README's call) with
  a wrapper that records the time spent inside the network. ``overhead = (wall − network) / steps``
  is the sampler's own time per step; ``sampler step = forward + overhead`` (the step of a sampler
  that calls the network on every row) and the ratio ``sampler step / forward`` is the number of
  issue 20. ``--measure-steps N < T`` stops after the first N steps of the T-step grid (the linear
  schedule on a uniform grid reveals the same expected number of digits at every step, so the
  first N steps are representative; used for the slow "before" code).
* **likelihood**: ``likelihood(model, x0, sub, num_times=4, batch_size=4)`` on one sequence of
  L = 1024 tokens (the same network at ``seq_len = 1024``): time per sequence-draw, network and
  non-network.

Each configuration runs ``--reps`` times in this one process; the tables give medians. Writes
``OUT_LABEL.md`` and ``OUT_LABEL.json`` with the machine (CPU model, AVX-512 BF16), threads,
precision and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from mdm_prime.likelihood import likelihood
from mdm_prime.models import build_model
from mdm_prime.models.mdlm_dit import mdlm_dit_config
from mdm_prime.sampling import sample

C, ELL, L, B = 50257, 2, 128, 4
L_EVAL = 1024
DIMS = dict(dim=256, depth=4, heads=4, precision="fp32")


class Timed:
    """``model(y, t)`` that adds the seconds spent inside the network to ``self.seconds``."""

    def __init__(self, model) -> None:
        self.model, self.seconds, self.calls = model, 0.0, 0
        self.time_conditioned = model.time_conditioned
        self.subtokenizer, self.seq_len = model.subtokenizer, model.seq_len
        self.variable_length = getattr(model, "variable_length", False)

    def __call__(self, y, t):
        t0 = time.perf_counter()
        out = self.model(y, t)
        self.seconds += time.perf_counter() - t0
        self.calls += y.shape[0]
        return out


def build(seq_len: int, seed: int = 0, target_entropy: float = 4.0, scale: float | None = None):
    torch.manual_seed(seed)
    model = build_model(mdlm_dit_config("small", num_classes=C, length=ELL, seq_len=seq_len, **DIMS))
    model.eval()
    lin = model.output_layer.linear
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(lin.weight.shape, generator=g) / lin.weight.shape[1] ** 0.5
    sub = model.subtokenizer
    y = torch.full((2, seq_len * ELL), sub.mask_id)
    y[:, ::3] = torch.randint(sub.base, y[:, ::3].shape, generator=g)
    lo, hi = 0.1, 100.0
    with torch.no_grad():
        lin.bias.zero_()
        if scale is not None:  # the scale found at another seq_len (same weights: same seed)
            lin.weight.copy_(base * scale)
            return model, None, scale
        for _ in range(25):  # bisection on the weight scale for the mean token entropy
            mid = (lo * hi) ** 0.5
            lin.weight.copy_(base * mid)
            lp = torch.log_softmax(model(y, torch.ones(2)).double(), -1)
            ent = float(-(lp.exp() * lp).sum(-1).mean())
            lo, hi = (mid, hi) if ent > target_entropy else (lo, mid)
    return model, ent, mid


def time_forward(model, reps: int = 7) -> float:
    sub = model.subtokenizer
    y = torch.full((B, L * ELL), sub.mask_id)
    t = torch.ones(B)
    with torch.inference_mode():
        model(y, t)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(y, t)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _Stop(Exception):
    pass


def time_sampler(model, steps: int, measure: int, top_p: float, seed: int) -> dict:
    net = Timed(model)

    def stop(k, y):
        if k + 1 == measure:
            raise _Stop

    t0 = time.perf_counter()
    try:
        sample(
            net,
            model.subtokenizer,
            num_samples=B,
            num_tokens=L,
            steps=steps,
            top_p=top_p,
            seed=seed,
            on_step=stop if measure < steps else None,
        )
    except _Stop:
        pass
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "network_s": net.seconds,
        "rows_called": net.calls,
        "steps": measure,
        "overhead_ms_per_step": 1e3 * (wall - net.seconds) / measure,
    }


def time_likelihood(model, num_times: int, seed: int) -> dict:
    net = Timed(model)
    x0 = torch.randint(C, (1, L_EVAL), generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    likelihood(net, x0, model.subtokenizer, num_times=num_times, batch_size=num_times, seed=seed)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "network_s": net.seconds,
        "draws": num_times,
        "ms_per_draw": 1e3 * wall / num_times,
        "network_ms_per_draw": 1e3 * net.seconds / num_times,
        "other_ms_per_draw": 1e3 * (wall - net.seconds) / num_times,
    }


def machine() -> dict:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if ln.startswith("Model name")
        ),
        "?",
    )
    flags = open("/proc/cpuinfo").read()
    return {
        "cpu": cpu,
        "avx512_bf16": " avx512_bf16" in flags,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--measure-steps", type=int, default=None)
    ap.add_argument("--num-times", type=int, default=4)
    ap.add_argument("--skip-likelihood", action="store_true")
    ap.add_argument("--label", default="after")
    ap.add_argument("--out", default="bench/results/sampler_overhead")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    measure = args.measure_steps or args.steps
    load = [os.getloadavg()[0]]
    model, ent, scale = build(L)
    res = {
        "label": args.label,
        "machine": machine(),
        "threads": args.threads,
        "precision": "fp32",
        "shape": {"C": C, "ell": ELL, "b": model.subtokenizer.base, "L": L, "batch": B, **DIMS},
        "mean_token_entropy_nats": ent,
        "sampler": {},
    }
    fwd_all = []
    for top_p in (1.0, 0.9):
        runs = []
        for r in range(args.reps):
            fwd = 1e3 * time_forward(model, reps=5)  # right before the run: the same load on both
            run = time_sampler(model, args.steps, measure, top_p, seed=r)
            run.update(forward_ms=fwd, ratio=(fwd + run["overhead_ms_per_step"]) / fwd)
            runs.append(run)
            fwd_all.append(fwd)
            load.append(os.getloadavg()[0])
            print(f"top_p={top_p} rep {r}: {runs[-1]}", file=sys.stderr, flush=True)
        res["sampler"][str(top_p)] = {
            "runs": runs,
            "forward_ms": statistics.median(x["forward_ms"] for x in runs),
            "overhead_ms_per_step": statistics.median(x["overhead_ms_per_step"] for x in runs),
            "ratio": statistics.median(x["ratio"] for x in runs),
        }
    if not args.skip_likelihood:
        big, _, _ = build(L_EVAL, scale=scale)
        runs = []
        for r in range(args.reps):
            runs.append(time_likelihood(big, args.num_times, seed=r))
            load.append(os.getloadavg()[0])
            print(f"likelihood rep {r}: {runs[-1]}", file=sys.stderr, flush=True)
        res["likelihood"] = {
            "runs": runs,
            "L": L_EVAL,
            **{
                k: statistics.median(x[k] for x in runs)
                for k in ("ms_per_draw", "network_ms_per_draw", "other_ms_per_draw")
            },
        }
    res["load_average_1min"] = load
    under_load = max(load) > 2
    m = res["machine"]
    lines = [
        f"# sampler / likelihood overhead at C = {C} ({args.label})",
        "",
        f"Command: `python bench/bench_sampler_overhead.py --reps {args.reps} --threads {args.threads} "
        f"--steps {args.steps}"
        + (f" --measure-steps {measure}" if measure < args.steps else "")
        + f" --label {args.label}`",
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores{', AVX-512 BF16' if m['avx512_bf16'] else ''}), "
        f"torch {m['torch']}, {args.threads} threads, fp32 (no autocast). 1-min load average during the run: "
        f"{min(load):.2f}–{max(load):.2f}" + (" — **under load**" if under_load else "") + ".",
        "",
        f"Model: MDLMDiT dim 256, depth 4, heads 4, C = {C}, ℓ = {ELL} (b = {model.subtokenizer.base}), "
        f"L = {L}, batch {B}; output layer scaled to a mean token entropy of {ent:.2f} nats. "
        f"Medians of {args.reps} repetitions.",
        "",
        "| top_p | forward ms | sampler overhead ms/step | sampler step / forward |",
        "|-------|-----------|--------------------------|------------------------|",
    ]
    for top_p, r in res["sampler"].items():
        lines.append(
            f"| {top_p} | {r['forward_ms']:.1f} | {r['overhead_ms_per_step']:.1f} | {r['ratio']:.2f}× |"
        )
    lines += [
        "",
        f"sampler step = forward + (wall − network time) / steps; the forward (batch 4, median of 5) is timed right before each run and the ratio is the median of the per-run ratios; over {measure} steps of a "
        f"{args.steps}-step grid (`sample(model, sub, num_samples={B}, num_tokens={L}, steps={args.steps})`).",
    ]
    if "likelihood" in res:
        lk = res["likelihood"]
        lines += [
            "",
            f"Likelihood: `likelihood(model, x0, sub, num_times={args.num_times}, "
            f"batch_size={args.num_times})`, one sequence of L = {L_EVAL} (same network, "
            f"seq_len {L_EVAL}):",
            "",
            "| ms per sequence-draw | network ms | non-network ms |",
            "|---------------------|-----------|----------------|",
            f"| {lk['ms_per_draw']:.1f} | {lk['network_ms_per_draw']:.1f} | {lk['other_ms_per_draw']:.1f} |",
        ]
    path = f"{args.out}_{args.label}"
    with open(path + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(path + ".json", "w") as f:
        json.dump(res, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
