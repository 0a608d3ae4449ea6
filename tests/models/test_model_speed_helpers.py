"""make_optimizer (fused AdamW, decay on matrices only) against a hand-written AdamW, and
maybe_compile's switch."""

import pytest
import torch
from torch import nn

from mdm_prime.models.base import make_optimizer, maybe_compile


def hand_adamw(params, grads_per_step, lr, betas, eps, decays):
    """Decoupled AdamW (Loshchilov & Hutter), float64, written out."""
    b1, b2 = betas
    out = []
    for p0, wd in zip(params, decays):
        p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
        for step, grads in enumerate(grads_per_step, start=1):
            g = grads[len(out)]
            p = p * (1 - lr * wd)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**step), v / (1 - b2**step)
            p = p - lr * m_hat / (v_hat.sqrt() + eps)
        out.append(p)
    return out


@pytest.mark.parametrize("fused", [None, False])
def test_make_optimizer_is_adamw_with_decay_on_matrices_only(fused):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)).double()
    start = [p.detach().clone() for p in net.parameters()]
    opt = make_optimizer(net, lr=0.1, betas=(0.8, 0.9), weight_decay=0.5, fused=fused)
    assert opt.defaults["fused"] is (fused is None)
    grads_per_step = [[torch.randn_like(p) for p in net.parameters()] for _ in range(3)]
    for grads in grads_per_step:
        for p, g in zip(net.parameters(), grads):
            p.grad = g.clone()
        opt.step()
    decays = [0.5 if p.dim() >= 2 else 0.0 for p in start]
    assert decays == [0.5, 0.0, 0.0, 0.0]
    want = hand_adamw(start, grads_per_step, 0.1, (0.8, 0.9), 1e-8, decays)
    for got, w in zip(net.parameters(), want):
        assert torch.allclose(got, w, rtol=0, atol=1e-12)


def test_maybe_compile_switch():
    net = nn.Linear(2, 2)
    assert maybe_compile(net, False) is net
    with pytest.raises(TypeError, match="bool"):
        maybe_compile(net, "yes")
