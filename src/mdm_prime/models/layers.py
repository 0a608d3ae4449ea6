"""Transformer building blocks shared by the diffusion and the causal transformer.

* :class:`Rotary` — rotary position embedding (GPT-NeoX half-split convention), positions from an
  offset so a KV cache can continue a sequence.
* :class:`TimeEmbedding` — sinusoidal features of ``t ∈ [0, 1]`` → MLP → ``FloatTensor[B, d]``.
* :class:`Block` — pre-norm transformer block: ``x + attn(norm(x))``, ``x + mlp(norm(x))``, attention
  through ``F.scaled_dot_product_attention``. With ``cond_dim`` set it is a DiT block: the norms are
  modulated by adaLN (shift, scale) and the two branches gated, all from the conditioning vector,
  with the modulation layer zero-initialised (each block starts as the identity).
* :class:`KVCache` — preallocated per-layer keys/values for incremental causal decoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Rotary", "TimeEmbedding", "Block", "KVCache", "apply_rotary", "compute_dtype"]


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on ``x`` produce: the autocast dtype when autocast is on for ``x``'s
    device and ``x`` is float32, else ``x.dtype``."""
    kind = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


class Rotary(nn.Module):
    """Rotary embedding for heads of width ``head_dim`` (even). ``forward(n, offset, device, dtype)``
    returns ``(cos, sin)``, each ``FloatTensor[n, head_dim]`` for positions ``offset .. offset+n-1``."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head width, got head_dim={head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, n: int, offset: int, device: torch.device, dtype: torch.dtype):
        pos = torch.arange(offset, offset + n, device=device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.to(device))  # (n, head_dim/2)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x: [..., n, head_dim]`` (e.g. ``[B, H, n, head_dim]``, or queries and keys stacked as
    ``[2, B, H, n, head_dim]``) by ``cos, sin: [n, head_dim]``: with halves ``x = [x1, x2]``,
    ``x·cos + [-x2, x1]·sin``. Computed in ``x``'s dtype, so bf16 activations under autocast stay bf16.

    Implemented as ``x·cos + roll(x, half)·[-sin1, sin2]`` (``roll`` gives ``[x2, x1]``): one copy
    instead of two slices, a negation and a concatenation of ``x``."""
    half = x.shape[-1] // 2
    sin = sin.to(x.dtype)
    signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)  # [n, head_dim], small
    return x * cos.to(x.dtype) + x.roll(half, dims=-1) * signed_sin


class TimeEmbedding(nn.Module):
    """``t: FloatTensor[B]`` in ``[0, 1]`` → ``FloatTensor[B, dim]`` (sinusoids of ``1000·t``, then
    Linear–SiLU–Linear)."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        args = 1000.0 * t.float()[:, None] * freqs[None]
        feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class KVCache:
    """Keys and values of every layer for the first ``length`` positions of a batch.

    Storage ``[B, H, max_len, head_dim]`` per layer, allocated on the first :meth:`update` in the
    keys' dtype (bf16 under autocast). :meth:`update` writes the new positions of one layer and
    returns the keys/values up to them; :meth:`advance` moves ``length`` on once every layer has
    been updated.
    """

    def __init__(self, num_layers: int, max_len: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        n = k.shape[2]
        end = self.length + n
        if end > self.max_len:
            raise ValueError(f"KV cache holds at most {self.max_len} positions, asked for {end}")
        if self.keys[layer] is None:
            shape = (*k.shape[:2], self.max_len, k.shape[3])
            self.keys[layer] = k.new_zeros(shape)
            self.values[layer] = v.new_zeros(shape)
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


class Block(nn.Module):
    """Pre-norm transformer block over ``x: FloatTensor[B, n, dim]``.

    Args:
        dim: width; heads: attention heads (``dim mod heads = 0``); mlp_ratio: hidden width / dim;
        cond_dim: width of the adaLN conditioning vector (``None``: plain pre-norm block);
        causal: causal attention; dropout: on attention weights and branch outputs.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        cond_dim: int | None = None,
        causal: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.heads, self.head_dim, self.causal, self.dropout = heads, dim // heads, causal, dropout
        affine = cond_dim is None
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=affine)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=affine)
        hidden = int(round(mlp_ratio * dim))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)
        self.modulation = None
        if cond_dim is not None:
            self.modulation = nn.Linear(cond_dim, 6 * dim)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def attention(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        batch, n, dim = x.shape
        qkv = self.qkv(x).view(batch, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [3,B,H,n,hd]
        q, k = apply_rotary(qkv[:2], cos, sin).unbind(0)  # queries and keys rotated in one pass
        v = qkv[2]
        mask, is_causal = None, self.causal
        if cache is not None:
            past = cache.length
            k, v = cache.update(layer, k, v)
            is_causal = False
            if n > 1:  # query i (absolute past+i) sees keys 0..past+i
                mask = torch.arange(past + n, device=x.device)[None, :] <= (
                    past + torch.arange(n, device=x.device)[:, None]
                )
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(batch, n, dim))

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cond: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        if self.modulation is None:
            x = x + self.drop(self.attention(self.norm1(x), cos, sin, cache, layer))
            return x + self.drop(self.mlp(self.norm2(x)))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.drop(self.attention(h, cos, sin, cache, layer))
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.drop(self.mlp(h))
