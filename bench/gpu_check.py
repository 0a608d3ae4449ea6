"""One-command device check (``bench/gpu_check.sh``): everything that differs on a GPU, in about 8
minutes on one, failing loudly on any mismatch.

1. **tests**: the suite's device-parametrised tests (``pytest -m device``) on the device: bf16 autocast
   against the float32 CPU reference for every network, a training step, likelihood and sampler,
   pinned transfers, DDP in one process (nccl on CUDA).
2. **CPU ↔ device**: the logits of a fixed-seed ``owt-small``-shaped network (the published models' DiT,
   ``mdlm_dit``, C = 50,257) on the device (bf16 autocast) against float32 on the CPU, within the bf16
   tolerance of ``tests/test_devices.py``; a larger difference is a FAIL.
3. **train**: the ``owt-small`` preset (123.7 M parameters, ℓ = 4, L = 1,024) for 50 steps with bf16 and
   ``compile=true`` on synthetic data of the GPT-2 vocabulary (``hmm:states=16,vocab=50257``: nothing to
   install); tokens/s and achieved FLOP/s as a share of the device's bf16 matmul peak (measured here).
4. **score**: 8 sequences of an ``owt-small``-shaped imported checkpoint (``mdlm_dit``, written and read
   back as ``mdm-prime import`` writes run folders) with K = 8 draws: the valid bound and its time.
5. **sample**: 4 sequences of 1,024 tokens at T = 1,024 steps, with the time per step split into the
   network and the sampler.

``--device cpu --quick`` is the CPU half (the same steps at toy sizes, a few minutes on 2 cores): it checks
the script itself on a machine without a GPU. Results: ``bench/results/gpu_check-<device>[-quick].json``;
exit status 1 when any step failed.

    bash bench/gpu_check.sh                    # CUDA, the full check
    bash bench/gpu_check.sh --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
C = 50257
FAILURES: list[str] = []


def log(msg: str) -> None:
    print(msg, flush=True)


def fail(msg: str) -> None:
    FAILURES.append(msg)
    log(f"FAIL: {msg}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, quick: bool) -> tuple[float, str]:
    """Measured FLOP/s of a square matmul in bf16 (fp32 on a CPU without native bf16) and its label."""
    from mdm_prime.models.base import uses_bf16

    dtype = torch.bfloat16 if uses_bf16("auto", device) else torch.float32
    n = 1024 if (quick or device.type == "cpu") else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 5 if device.type == "cpu" else 50
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    flops = 2 * n**3 * reps / (time.perf_counter() - start)
    return flops, f"{str(dtype).removeprefix('torch.')} {n}² matmul"


def step_tests(device: torch.device) -> dict:
    env = dict(os.environ, MDM_PRIME_TEST_DEVICES=device.type)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "device", "tests"]
    start = time.perf_counter()
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-500:]
    log(f"  {last}")
    if run.returncode != 0:
        fail(f"device tests on {device}: {last}")
        log(run.stdout[-4000:])
    return {"summary": last, "seconds": time.perf_counter() - start, "returncode": run.returncode}


def owt_dit(quick: bool, precision: str):
    from mdm_prime.models import build_model
    from mdm_prime.models.mdlm_dit import mdlm_dit_config

    torch.manual_seed(0)
    size, seq_len = ("tiny", 64) if quick else ("small", 1024)
    model = build_model(mdlm_dit_config(size, num_classes=C, length=2, seq_len=seq_len, precision=precision))
    with torch.no_grad():  # the published init zeroes the output layer: give every weight a spread
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / math.sqrt(max(1, p.shape[-1]))))
    return model.eval()


def step_consistency(device: torch.device, quick: bool) -> dict:
    from mdm_prime.models import build_model
    from mdm_prime.models.base import uses_bf16

    ref_model = owt_dit(quick, "fp32")
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, C, (2, ref_model.seq_len), generator=g)
    sub = ref_model.subtokenizer
    y = sub.encode(x)
    y = torch.where(torch.rand(y.shape, generator=g) < 0.5, torch.full_like(y, sub.mask_id), y)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        ref = ref_model(y, t).float()
        model = build_model({**ref_model.config, "precision": "auto"}).eval()
        model.load_state_dict(ref_model.state_dict())
        got = model.to(device)(y.to(device), t.to(device)).float().cpu()
    bf16 = uses_bf16("auto", device)
    worst = float((got - ref).abs().max())
    tol = (0.05 if bf16 else 1e-4) * max(1.0, float(ref.abs().max()))
    log(f"  max |logits(device) − logits(CPU fp32)| = {worst:.4g} (tolerance {tol:.4g}, bf16 = {bf16})")
    if not torch.isfinite(got).all() or worst > tol:
        fail(f"logits on {device} differ from the CPU float32 reference: {worst:.4g} > {tol:.4g}")
    return {"max_abs_diff": worst, "tolerance": tol, "bf16": bf16, "max_abs_logit": float(ref.abs().max())}


def step_train(device: torch.device, quick: bool, out: Path, peak: float) -> dict:
    from mdm_prime.configs import load_config_file
    from mdm_prime.families import get_family
    from mdm_prime.tasks import build_task

    run = out / "train-owt-small"
    steps, batch = (3, 2) if quick else (50, 16)
    sets = {
        "max_steps": steps,
        "batch_size": batch,
        "precision": "bf16",
        "compile": "true",
        "eval_every": 0,
        "checkpoint_every": 0,
        "num_preview_samples": 0,
        "log_every": 1,
        "warmup_steps": 10,
        "final_eval_sequences": 8,
        "final_eval_num_times": 2,
    }
    if quick:
        sets.update(
            {"seq_len": 64, "model_overrides.dim": 64, "model_overrides.depth": 1, "model_overrides.heads": 2}
        )
    cmd = [sys.executable, "-m", "mdm_prime.cli", "train", "--config", "owt-small"]
    cmd += [
        "--data",
        "hmm:states=16,vocab=50257",
        "--out",
        str(run),
        "--device",
        device.type,
        "--no-progress",
    ]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        fail(f"owt-small training on {device}: exit {proc.returncode}: {proc.stderr[-1500:]}")
        return {"returncode": proc.returncode}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "tokens_per_s" in r]
    steady = logged[len(logged) // 2 :] or logged  # the first steps include compilation
    tps = sum(r["tokens_per_s"] for r in steady) / len(steady)
    cfg = load_config_file(run / "train_config.json")
    model = get_family(cfg.family).build_model(cfg, build_task(cfg))
    fwd = model.flops_per_token()
    achieved = 3 * fwd * tps
    final = next(r for r in reversed(rows) if r.get("final"))
    log(
        f"  {model.num_parameters() / 1e6:.1f} M parameters, {steps} steps of {batch} × {cfg.seq_len} tokens in "
        f"{wall:.0f} s wall (compile included); steady {tps:,.0f} tokens/s = {achieved / 1e12:.2f} TFLOP/s "
        f"= {100 * achieved / peak:.1f}% of the measured peak; final valid bound "
        f"{final['nelbo_nats_per_token']:.3f} nats/token (log C = {math.log(C):.3f})"
    )
    if not math.isfinite(final["nelbo_nats_per_token"]):
        fail("owt-small training ended with a non-finite valid bound")
    return {
        "steps": steps,
        "batch_size": batch,
        "seq_len": cfg.seq_len,
        "parameters": model.num_parameters(),
        "tokens_per_s": tps,
        "achieved_flops": achieved,
        "percent_of_peak": 100 * achieved / peak,
        "wall_s": wall,
        "final_valid_nats_per_token": final["nelbo_nats_per_token"],
    }


def step_score(device: torch.device, quick: bool, out: Path) -> dict:
    from mdm_prime.checkpoint import load_pretrained, save_pretrained
    from mdm_prime.families import family_of

    folder = out / "imported" / "checkpoint"
    save_pretrained(owt_dit(quick, "auto"), folder)  # what mdm-prime import writes into a run folder
    model = load_pretrained(folder, map_location=device).to(device)
    x = torch.randint(0, C, (8, model.seq_len), generator=torch.Generator().manual_seed(3))
    sync(device)
    start = time.perf_counter()
    r = family_of(model).score(model, x, num_times=8, seed=0)
    sync(device)
    seconds = time.perf_counter() - start
    log(
        f"  valid bound {r['nelbo_nats_per_token']:.4f} ± {r['stderr_nats_per_token']:.4f} nats/token on 8 × "
        f"{model.seq_len} random tokens, K = 8: {seconds:.1f} s ({1000 * seconds / 64:.0f} ms per sequence-draw)"
    )
    if not 0 < r["nelbo_nats_per_token"] < 4 * math.log(C):
        fail(f"imported checkpoint scored {r['nelbo_nats_per_token']} nats/token: not a plausible bound")
    return {
        "nats_per_token": r["nelbo_nats_per_token"],
        "stderr": r["stderr_nats_per_token"],
        "seconds": seconds,
    }


class TimedModel(torch.nn.Module):
    """Wraps a network and adds up the wall time spent inside its forward (device synchronised)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seconds, self.calls = model, 0.0, 0
        for name in ("subtokenizer", "schedule", "seq_len", "time_conditioned", "family"):
            setattr(self, name, getattr(model, name))

    def forward(self, y, t=None):
        sync(y.device)
        start = time.perf_counter()
        out = self.model(y, t)
        sync(y.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def step_sample(device: torch.device, quick: bool) -> dict:
    from mdm_prime.sampling import sample

    model = owt_dit(quick, "auto").to(device)
    num, steps = (2, 64) if quick else (4, 1024)
    timed = TimedModel(model)
    sync(device)
    start = time.perf_counter()
    res = sample(
        timed,
        model.subtokenizer,
        num_samples=num,
        num_tokens=model.seq_len,
        steps=steps,
        seed=0,
        device=device,
    )
    sync(device)
    wall = time.perf_counter() - start
    network, sampler = timed.seconds, wall - timed.seconds
    log(
        f"  {num} × {model.seq_len} tokens, T = {steps}: {wall:.1f} s; per step network {1000 * network / steps:.1f} ms "
        f"({timed.calls} calls), sampler {1000 * sampler / steps:.1f} ms (sampler/network = {sampler / max(network, 1e-9):.2f})"
    )
    if int(res.tokens.min()) < 0 or int(res.tokens.max()) >= C:
        fail("sampled tokens outside 0..C-1")
    return {
        "num": num,
        "steps": steps,
        "wall_s": wall,
        "network_s": network,
        "sampler_s": sampler,
        "network_calls": timed.calls,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="toy sizes (the CPU half)")
    ap.add_argument("--skip-tests", action="store_true", help="skip step 1 (the pytest run)")
    ap.add_argument(
        "--out", default=None, help="results file stem (default: bench/results/gpu_check-DEVICE[-quick])"
    )
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: --device cuda but torch.cuda.is_available() is False (use --device cpu --quick)",
            file=sys.stderr,
        )
        return 2
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine())
    )
    log(f"gpu_check on {device} ({name}), torch {torch.__version__}{', quick' if args.quick else ''}")
    peak, peak_label = matmul_peak(device, args.quick)
    log(f"measured peak: {peak / 1e12:.2f} TFLOP/s ({peak_label})")
    results: dict = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "quick": args.quick,
    }
    results["peak_flops"], results["peak_measured_with"] = peak, peak_label
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        os.environ.setdefault(
            "MDM_PRIME_DATA", str(Path(tmp) / "data")
        )  # nothing to install; caches stay here
        steps = [
            ("tests", lambda: step_tests(device)),
            ("consistency", lambda: step_consistency(device, args.quick)),
            ("train", lambda: step_train(device, args.quick, Path(tmp), peak)),
            ("score", lambda: step_score(device, args.quick, Path(tmp))),
            ("sample", lambda: step_sample(device, args.quick)),
        ]
        for step, fn in steps:
            if step == "tests" and args.skip_tests:
                continue
            log(f"[{step}]")
            start = time.perf_counter()
            try:
                results[step] = fn()
            except Exception as err:  # noqa: BLE001 - every failure is reported, then the next step runs
                fail(f"{step}: {type(err).__name__}: {err}")
            log(f"  ({time.perf_counter() - start:.0f} s)")
    results["failures"] = FAILURES
    stem = (
        Path(args.out)
        if args.out
        else ROOT / "bench" / "results" / f"gpu_check-{device.type}{'-quick' if args.quick else ''}"
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    log(f"wrote {stem.with_suffix('.json')}")
    if FAILURES:
        log(f"gpu_check: {len(FAILURES)} FAILED: " + "; ".join(FAILURES))
        return 1
    log("gpu_check: all steps passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
