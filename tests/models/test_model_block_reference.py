"""The transformer block against a plain float64 transcription of its math (no shared code): layer
norm, fused QKV split into heads, rotary positions as complex rotations of (x_i, x_{i+half}) pairs,
softmax attention, tanh-GELU MLP, adaLN modulation and gates (docs/method.md §3)."""

import math

import pytest
import torch

from mdm_prime.models.layers import Block, Rotary, apply_rotary


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + eps)
    return y if weight is None else y * weight + bias


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def rotate(x, positions, base=10000.0):
    """GPT-NeoX rotary: pair j = (x_j, x_{j+half}) as the complex number x_j + i·x_{j+half}, times
    exp(i·pos·base^(-2j/hd))."""
    hd = x.shape[-1]
    half = hd // 2
    freqs = base ** (-2 * torch.arange(half, dtype=torch.float64) / hd)
    angle = positions[:, None].double() * freqs[None]  # (n, half)
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], dim=-1)


def reference_block(block, x, cond=None, causal=False):
    """The block's output computed from its parameters by hand, head by head."""
    batch, n, dim = x.shape
    heads, hd = block.heads, dim // block.heads
    if block.modulation is None:
        h1 = layer_norm(x, block.norm1.weight, block.norm1.bias)
    else:
        mod = cond @ block.modulation.weight.T + block.modulation.bias
        shift1, scale1, gate1, shift2, scale2, gate2 = (
            mod[:, None, i * dim : (i + 1) * dim] for i in range(6)
        )
        h1 = layer_norm(x) * (1 + scale1) + shift1
    wq, wk, wv = block.qkv.weight.split(dim, dim=0)
    pos = torch.arange(n)
    attn = torch.zeros_like(x)
    for b in range(batch):
        outs = []
        for hh in range(heads):
            sl = slice(hh * hd, (hh + 1) * hd)
            q = rotate(h1[b] @ wq[sl].T, pos)
            k = rotate(h1[b] @ wk[sl].T, pos)
            v = h1[b] @ wv[sl].T
            scores = q @ k.T / math.sqrt(hd)
            if causal:
                scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
            outs.append(torch.softmax(scores, -1) @ v)
        attn[b] = torch.cat(outs, -1) @ block.proj.weight.T
    fc1, fc2 = block.mlp[0], block.mlp[2]
    if block.modulation is None:
        x = x + attn
        h2 = layer_norm(x, block.norm2.weight, block.norm2.bias)
        return x + gelu_tanh(h2 @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias
    x = x + gate1 * attn
    h2 = layer_norm(x) * (1 + scale2) + shift2
    return x + gate2 * (gelu_tanh(h2 @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias)


# the model computes rotary angles in float32 (positions × frequencies), so rotated values carry a
# relative error ~1e-7; everything else is float64. A structural error shows as O(0.1) or more.
ATOL = 1e-6


def randomized_block(**kw):
    torch.manual_seed(0)
    block = Block(**kw).double()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return block.eval()


@pytest.mark.parametrize("cond_dim", [None, 8])
@pytest.mark.parametrize("causal", [False, True])
def test_block_matches_float64_transcription(cond_dim, causal):
    block = randomized_block(dim=16, heads=2, mlp_ratio=2.0, cond_dim=cond_dim, causal=causal)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    cond = torch.randn(2, 8, dtype=torch.float64) if cond_dim else None
    cos, sin = Rotary(8)(7, 0, x.device, torch.float64)
    got = block(x, cos, sin, cond)
    assert torch.allclose(got, reference_block(block, x, cond, causal), rtol=0, atol=ATOL)


def test_apply_rotary_is_a_complex_rotation_and_stacks():
    x = torch.randn(2, 3, 5, 4, 6, dtype=torch.float64)  # [2 (q, k), B, H, n, hd]
    cos, sin = Rotary(6)(4, 3, x.device, torch.float64)  # positions 3..6
    got = apply_rotary(x, cos, sin)
    assert torch.allclose(got, rotate(x, torch.arange(3, 7)), rtol=0, atol=ATOL)
    assert torch.equal(got[1], apply_rotary(x[1], cos, sin))
