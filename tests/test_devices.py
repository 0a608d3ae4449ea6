"""The code paths that differ on CUDA, run on every test device (``cpu``, and ``cuda`` where there is a
GPU; ``bench/gpu_check.sh`` runs them on CUDA): bf16 autocast against the float32 reference on the CPU,
scaled-dot-product attention inside every network, a training step, the likelihood and the sampler on
the device, pinned host→device transfers, and DDP in one process (gloo on CPU, nccl on CUDA)."""

import os
import subprocess
import sys

import pytest
import torch

import mdm_prime as mp
from mdm_prime.data.shards import to_device
from mdm_prime.models import build_model, transformer_config
from mdm_prime.models.base import uses_bf16

from .helpers import QUIET_RUN, TINY_TRANSFORMER, set_args
from .models.util import CONFIGS, random_subtokens, randomize

pytestmark = pytest.mark.device


def _inputs(model, seed=0):
    if model.family == "ar":
        g = torch.Generator().manual_seed(seed)
        return (torch.randint(0, model.num_classes, (3, model.seq_len), generator=g),)
    return random_subtokens(model.subtokenizer, 3, model.seq_len, seed=seed), torch.tensor([0.2, 0.5, 0.9])


def _tolerance(reference: torch.Tensor, bf16: bool) -> float:
    """Largest allowed |Δ| against the float32 CPU logits: float32 rounding, or bf16's 8-bit mantissa
    through a few layers (5% of the logits' range)."""
    return (0.05 if bf16 else 1e-4) * max(1.0, float(reference.abs().max()))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_on_the_device_match_the_float32_cpu_reference(device, name):
    reference_model = randomize(build_model({**CONFIGS[name], "precision": "fp32"})).eval()
    inputs = _inputs(reference_model)
    with torch.no_grad():
        reference = reference_model(*inputs).float()
        model = build_model({**CONFIGS[name], "precision": "auto"}).eval()
        model.load_state_dict(reference_model.state_dict())
        model.to(device)
        got = model(*(x.to(device) for x in inputs)).float().cpu()
    bf16 = uses_bf16("auto", device)
    assert torch.isfinite(got).all()
    worst = float((got - reference).abs().max())
    assert worst <= _tolerance(reference, bf16), f"{name} on {device} (bf16={bf16}): max |Δ| = {worst}"


def test_a_training_step_on_the_device_lowers_the_loss(device):
    torch.manual_seed(0)
    model = build_model(transformer_config("tiny", num_classes=16, length=2, seq_len=6, precision="auto"))
    model.to(device)
    x0 = torch.randint(0, 16, (8, 6), generator=torch.Generator().manual_seed(0)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss():
        g = torch.Generator(device=device).manual_seed(1)
        return mp.diffusion_loss(model, x0, model.subtokenizer, generator=g).loss

    start = loss().item()
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
    assert loss().item() < 0.8 * start


def test_likelihood_and_sampler_on_the_device(device):
    """The valid bound on the device equals the float32 CPU one within the precision's tolerance (same
    seed: same masks); samples on the device are valid classes and repeat for a seed."""
    torch.manual_seed(0)
    cpu_model = randomize(
        build_model(transformer_config("tiny", num_classes=23, length=2, seq_len=5, precision="fp32"))
    )
    x0 = torch.randint(0, 23, (4, 5), generator=torch.Generator().manual_seed(2))
    ref = mp.likelihood(cpu_model.eval(), x0, cpu_model.subtokenizer, num_times=4, seed=3)
    model = build_model({**cpu_model.config, "precision": "auto"})
    model.load_state_dict(cpu_model.state_dict())
    model.to(device).eval()
    got = mp.likelihood(model, x0.to(device), model.subtokenizer, num_times=4, seed=3)
    rel = 0.05 if uses_bf16("auto", device) else 1e-5
    assert torch.allclose(got.nelbo.cpu(), ref.nelbo, rtol=rel), (got.nelbo, ref.nelbo)
    a = mp.sample(model, model.subtokenizer, num_samples=3, num_tokens=5, steps=6, seed=4, device=device)
    b = mp.sample(model, model.subtokenizer, num_samples=3, num_tokens=5, steps=6, seed=4, device=device)
    assert torch.equal(a.tokens, b.tokens) and int(a.tokens.max()) < 23 and int(a.tokens.min()) >= 0


def test_to_device_copies_nested_batches(device):
    x = torch.arange(12).view(3, 4)
    out = to_device({"x": x, "pair": (x, x + 1), "list": [x * 2]}, device)
    assert out["x"].device.type == device.type and isinstance(out["pair"], tuple)
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert torch.equal(out["pair"][1].cpu(), x + 1) and torch.equal(out["list"][0].cpu(), x * 2)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_ddp_in_one_process_trains_on_the_device(device, tmp_path):
    """``torchrun --nproc_per_node=1``: the process group (gloo on CPU, nccl on CUDA), the DDP wrapper and
    its gradient synchronisation, two steps and a checkpoint."""
    args = [
        *("--data", "markov:states=4,concentration=0.1", "--seq-len", "8", "--batch-size", "8"),
        *("--max-steps", "2", "--no-progress", "--device", device.type, "--family", "prime"),
        *set_args(**QUIET_RUN, **TINY_TRANSFORMER, final_eval_sequences=4, final_eval_num_times=2),
    ]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
        + ["-m", "mdm_prime.cli", "train", *args, "--out", str(tmp_path / "run")],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").exists()
