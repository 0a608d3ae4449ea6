"""Training-step speed of the diffusion transformer against the machine's measured matmul peak.

For each shape (``size:C:ℓ:L:B``), precision (fp32, bf16 autocast) and mode (eager, ``torch.compile``)
it measures ms/step, tokens/s, achieved GFLOP/s and the fraction of the same-dtype matmul peak, and
for eager fp32 (or the device's default precision) a per-category breakdown of one step from
``torch.profiler``: matmuls, attention, carry-over + loss, optimizer, other (elementwise, norms,
embedding, copies). Writes ``bench/results/train_step.md`` and ``.json``.

    python bench/bench_train_step.py                                   # the default shapes below
    python bench/bench_train_step.py --shapes mini:256:2:256:8 --modes eager --steps 2 --out /tmp/ts

A step is ``diffusion_loss`` (forward) + backward + AdamW (``make_optimizer``: fused where torch has
it). FLOPs per step = ``3 × model.flops_per_token() × tokens`` (closed form, counted matmuls and
attention only; backward ≈ 2 × forward), so achieved GFLOP/s is a lower bound on the work done.
The peak is the best of several 1024² matmuls in the same dtype, same run, same threads.

On CUDA (when available) the step runs there; bf16 is autocast. On a CPU without native bf16
(``avx512_bf16``/``amx_bf16``) torch's bf16 matmul is emulated (~1 GFLOP/s), a bf16 step takes
minutes, and bf16 steps are skipped unless ``--force-bf16``; the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import mdm_prime
from mdm_prime.models import build_model, transformer_config
from mdm_prime.models.base import cpu_has_native_bf16, make_optimizer, maybe_compile

DEFAULT_SHAPES = "mini:256:2:256:8,small:256:2:256:2,small:50257:4:256:2"

MATMUL_OPS = {
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::matmul",
    "aten::linear",
    "aten::_mkldnn_matmul",
    "mkldnn::_linear_pointwise",
    "aten::mkldnn_linear",
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 1024, repeats: int = 20) -> float:
    """Best achieved GFLOP/s of ``(n×n) @ (n×n)`` in ``dtype`` (2n³ FLOPs each)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    a @ b
    sync(device)
    if time.perf_counter() - start > 0.5:  # emulated dtype: one more timing is enough
        repeats = 1
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def parse_shape(text: str) -> dict:
    size, c, ell, seq_len, batch = text.split(":")
    return {
        "size": size,
        "num_classes": int(c),
        "length": int(ell),
        "seq_len": int(seq_len),
        "batch": int(batch),
    }


class Stepper:
    """One model + optimizer + fixed batch; ``step()`` runs loss + backward + optimizer step."""

    def __init__(self, shape: dict, precision: str, compiled: bool, device: torch.device) -> None:
        torch.manual_seed(0)
        cfg = transformer_config(
            shape["size"],
            num_classes=shape["num_classes"],
            length=shape["length"],
            seq_len=shape["seq_len"],
            precision=precision,
        )
        self.model = build_model(cfg).to(device)
        # a non-zero head (it is zero-initialised) so the loss gradients are not trivially zero
        torch.nn.init.normal_(self.model.head.weight, std=0.02)
        self.net = maybe_compile(self.model, compiled)
        self.opt = make_optimizer(self.model, lr=1e-4, weight_decay=0.0)
        self.x0 = torch.randint(0, shape["num_classes"], (shape["batch"], shape["seq_len"]), device=device)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.device = device

    def loss(self):
        return mdm_prime.diffusion_loss(self.net, self.x0, self.model.subtokenizer, generator=self.gen).loss

    def step(self) -> None:
        loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def times(self, steps: int, warmup: int) -> list[float]:
        out = []
        for i in range(warmup + steps):
            sync(self.device)
            start = time.perf_counter()
            self.step()
            sync(self.device)
            if i >= warmup:
                out.append(time.perf_counter() - start)
        return out

    def loss_time(self, repeats: int = 2) -> float:
        """Seconds of carry-over + loss forward and backward alone, on fixed logits of the step's shape."""
        sub = self.model.subtokenizer
        with torch.no_grad():
            t = mdm_prime.sample_times(self.x0.shape[0], generator=self.gen, device=self.device)
            y_t = mdm_prime.mask_subtokens(
                sub.encode(self.x0), t, self.model.schedule, sub.mask_id, generator=self.gen
            )
            logits = self.model(y_t, t)
        best = float("inf")
        for _ in range(repeats + 1):
            leaf = logits.detach().requires_grad_(True)
            sync(self.device)
            start = time.perf_counter()
            terms = mdm_prime.sequence_terms(leaf, y_t, self.x0, sub, "prime")
            (self.model.schedule.weight(t) * terms).mean().backward()
            sync(self.device)
            best = min(best, time.perf_counter() - start)
        return best

    def breakdown(self) -> dict:
        """Seconds per category in one profiled step (self times of the ops; loss timed apart)."""
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            sync(self.device)
            start = time.perf_counter()
            self.step()
            sync(self.device)
            total = time.perf_counter() - start
        use_cuda = self.device.type == "cuda"
        matmul = attention = optimizer = 0.0
        for ev in prof.key_averages():
            self_us = ev.self_device_time_total if use_cuda else ev.self_cpu_time_total
            if ev.key in MATMUL_OPS:
                matmul += self_us
            elif "attention" in ev.key:
                attention += self_us
            elif ev.key.startswith("Optimizer.step"):
                optimizer += ev.device_time_total if use_cuda else ev.cpu_time_total
        loss = self.loss_time()
        cats = {
            "matmul": matmul / 1e6,
            "attention": attention / 1e6,
            "carry-over + loss": loss,
            "optimizer": optimizer / 1e6,
        }
        cats["other (elementwise, norms, embedding, copies)"] = max(total - sum(cats.values()), 0.0)
        return {"profiled_step_s": total, "categories_s": cats}


def optimizer_times(model: torch.nn.Module, repeats: int = 3) -> dict:
    """Best seconds of one AdamW step over ``model``'s parameters (random gradients): torch's default
    (a per-parameter loop on CPU), ``foreach`` and ``fused`` (what ``make_optimizer`` picks)."""
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    out = {}
    for name, kw in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6, **kw)
        opt.step()
        best = float("inf")
        for _ in range(repeats):
            sync(next(model.parameters()).device)
            start = time.perf_counter()
            opt.step()
            sync(next(model.parameters()).device)
            best = min(best, time.perf_counter() - start)
        out[name] = best
    model.zero_grad(set_to_none=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma list of size:C:ell:L:B")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument(
        "--compiled-shapes",
        default=None,
        help="comma list: run the compiled mode only for these shapes (default: all)",
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (compiled: after compiling)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 even where it is emulated")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument(
        "--out",
        default=str(Path(__file__).parent / "results" / "train_step"),
        help="output stem: writes STEM.md and STEM.json",
    )
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    print(f"peak GFLOP/s: fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f}", flush=True)
    bf16_native = device.type == "cuda" or cpu_has_native_bf16()
    rows, breakdowns, notes, opt_times = [], [], [], {}
    for shape_text in args.shapes.split(","):
        shape = parse_shape(shape_text)
        tokens = shape["batch"] * shape["seq_len"]
        for precision in args.precisions.split(","):
            if precision == "bf16" and not bf16_native and not args.force_bf16:
                notes.append(
                    f"{shape_text} bf16 skipped: no native bf16 on this CPU "
                    f"(bf16 matmul peak {peaks['bf16']:.1f} GFLOP/s)"
                )
                continue
            for mode in args.modes.split(","):
                only = args.compiled_shapes
                if mode == "compiled" and only and shape_text not in only.split(","):
                    continue
                st = Stepper(shape, precision, mode == "compiled", device)
                compile_s = None
                if mode == "compiled":
                    start = time.perf_counter()
                    try:
                        st.step()  # compiles forward and backward
                    except Exception as err:  # no compiler, unsupported op: record it, go on
                        notes.append(
                            f"{shape_text} {precision} compiled failed: {type(err).__name__}: "
                            f"{str(err)[:200]}"
                        )
                        print(notes[-1], flush=True)
                        continue
                    compile_s = time.perf_counter() - start
                times = st.times(args.steps, args.warmup)
                step = statistics.median(times)
                flops = 3 * st.model.flops_per_token() * tokens
                gflops = flops / step / 1e9
                row = {
                    "shape": shape_text,
                    **shape,
                    "precision": precision,
                    "mode": mode,
                    "params_M": st.model.num_parameters() / 1e6,
                    "mflop_per_token_fwd": st.model.flops_per_token() / 1e6,
                    "ms_per_step": 1e3 * step,
                    "times_s": times,
                    "tokens_per_s": tokens / step,
                    "gflops": gflops,
                    "gflops_best_step": flops / min(times) / 1e9,
                    "peak_gflops": peaks[precision],
                    "fraction_of_peak": gflops / peaks[precision],
                    "compile_s": compile_s,
                }
                rows.append(row)
                print(
                    f"{shape_text} {precision} {mode}: {1e3 * step:.0f} ms/step, "
                    f"{tokens / step:,.0f} tok/s, "
                    f"{gflops:.1f} GFLOP/s = {100 * gflops / peaks[precision]:.0f}% of peak"
                    + (f" (compile {compile_s:.0f} s)" if compile_s else ""),
                    flush=True,
                )
                if mode == "eager" and shape["size"] == "small" and not opt_times:
                    opt_times = {
                        "shape": shape_text,
                        "params_M": row["params_M"],
                        **optimizer_times(st.model),
                    }
                    print("    optimizer step s:", opt_times, flush=True)
                if mode == "eager" and not args.no_breakdown:
                    bd = st.breakdown()
                    breakdowns.append({"shape": shape_text, "precision": precision, **bd})
                    print("   ", {k: round(v, 3) for k, v in bd["categories_s"].items()}, flush=True)
                del st
    load_after = os.getloadavg()
    # contention only slows a matmul down: the peak is the best of a measurement before and after the steps
    peaks_before = dict(peaks)
    peaks["fp32"] = max(peaks["fp32"], matmul_peak(torch.float32, device))
    if peaks["bf16"] > 0.25 * peaks["fp32"]:
        peaks["bf16"] = max(peaks["bf16"], matmul_peak(torch.bfloat16, device))
    for r in rows:
        r["peak_gflops"] = peaks[r["precision"]]
        r["fraction_of_peak"] = r["gflops"] / r["peak_gflops"]
        r["fraction_of_peak_best_step"] = r["gflops_best_step"] / r["peak_gflops"]
    print(f"peak GFLOP/s (best of before/after): fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f}")

    meta = {
        "command": command,
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": bf16_native,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_before": load_before[0],
        "load_avg_after": load_after[0],
        "peaks_gflops": peaks,
        "peaks_gflops_before_steps": peaks_before,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"meta": meta, "rows": rows, "breakdowns": breakdowns, "notes": notes, "optimizer_s": opt_times}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    busy = max(load_before[0], load_after[0]) > 0.5
    load_note = ": other jobs shared the cores, numbers are noisy lower bounds." if busy else "."
    lines = [
        "# Training-step benchmark: the transformer against the matmul peak",
        "",
        f"Command: `{command}`",
        "",
        (
            f"Device: {meta['device']} (torch CPU capability {meta['cpu_capability']}, native bf16: "
            f"{bf16_native}), torch {torch.__version__}, {meta['threads']} threads. Load average (1 min) "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after{load_note}"
        ),
        "",
        (
            f"Measured matmul peak (1024², best of 20, before and after the steps): fp32 {peaks['fp32']:.1f} "
            f"GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s."
        ),
        "",
        (
            "Step = `diffusion_loss` + backward + AdamW (`make_optimizer`); FLOPs/step = 3 × "
            f"`flops_per_token()` × tokens (matmuls + attention); median of {args.steps} steps after "
            f"{args.warmup} warm-up step(s); best = the fastest step (contention only adds time). "
            "Shape = size:C:ℓ:L:B."
        ),
        "",
        (
            "| shape | params | precision | mode | ms / step (median) | tokens / s | GFLOP/s | % of peak | "
            "ms / step (best) | % of peak (best) | compile s |"
        ),
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        comp = "" if r["compile_s"] is None else f"{r['compile_s']:.0f}"
        lines.append(
            f"| {r['shape']} | {r['params_M']:.1f} M | {r['precision']} | {r['mode']} | "
            f"{r['ms_per_step']:,.0f} | {r['tokens_per_s']:,.0f} | {r['gflops']:.1f} | "
            f"{100 * r['fraction_of_peak']:.0f}% | {1e3 * min(r['times_s']):,.0f} | "
            f"{100 * r['fraction_of_peak_best_step']:.0f}% | {comp} |"
        )
    for n in notes:
        lines.append(f"\n{n}.")
    if breakdowns:
        cats = list(breakdowns[0]["categories_s"])
        lines += [
            "",
            (
                "Breakdown of one profiled eager step (share of the step; carry-over + loss timed "
                "apart, forward + backward on the step's logits; other = the rest):"
            ),
            "",
            "| shape | precision | step s | " + " | ".join(cats) + " |",
            "|---|---|---:|" + "---:|" * len(cats),
        ]
        for b in breakdowns:
            total = b["profiled_step_s"]
            cells = " | ".join(f"{100 * v / total:.0f}%" for v in b["categories_s"].values())
            lines.append(f"| {b['shape']} | {b['precision']} | {total:.2f} | {cells} |")
    if opt_times:
        variants = ", ".join(f"{k} {1e3 * opt_times[k]:.0f} ms" for k in ("default", "foreach", "fused"))
        lines += [
            "",
            (
                f"AdamW step alone on the {opt_times['shape']} model ({opt_times['params_M']:.1f} M "
                f"parameters, best of 3): {variants}."
            ),
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
