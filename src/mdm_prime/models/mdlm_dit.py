"""The published MDLM / MDLM-Prime text network (DiT with adaLN-Zero), rebuilt in this package so that
the authors' OpenWebText checkpoints load into it exactly (docs/method.md §3, docs/published_models.md).

Written from the description of the network, not copied: a pre-LN transformer over ``L`` token
positions whose every block is modulated by a conditioning vector ``c``:

* input: ℓ = 1 (MDLM): a ``(C+1) × d`` vocabulary table (row ``C`` is the mask);
  ℓ > 1 (MDLM-Prime): one shared ``(b+1) × d/ℓ`` digit table (row ``b`` is the mask), the ℓ digit
  vectors of a token concatenated into one width-``d`` vector;
* ``c = SiLU(MLP(sinusoid₂₅₆(σ)))`` with a 2-layer MLP ``256 → c_dim → c_dim`` (SiLU between); the
  published models are *not* time-conditioned (``time_conditioning: False``): σ = 0 always, so ``c``
  is a learned constant and the network is time-independent (samplers may cache its output);
* block: ``h = LN(x)·γ`` (LayerNorm without bias, computed in float32), ``h·(1+scale)+shift``, fused
  bias-free QKV, rotary positions on q and k (non-interleaved halves, base 10000), non-causal softmax
  attention, bias-free output projection, gated residual ``x + gate·attn``; the same for a GELU-tanh
  MLP of width 4d; the six shift/scale/gate vectors are one linear map of ``c``;
* final layer: modulated LayerNorm and a linear head. ℓ = 1: ``C+1`` outputs, of which the mask
  column is dropped (the authors set it to −∞ before the softmax, which is the same distribution);
  ℓ > 1: ``C`` outputs. Carry-over (docs/method.md §3) is applied by the objectives, as for every
  model here.

Parameter names follow the keys of the published checkpoints (``vocab_embed.embedding``,
``blocks.N.attn_qkv.weight``, …) and parameters are registered in the same order, which is the order
of the authors' EMA ``shadow_params`` list: importing is a copy, not a rename.

Shapes: ``y_t: LongTensor[B, L·ℓ]`` → logits ``FloatTensor[B, L, C]`` (float32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..schedules import is_per_digit
from ..subtokenizer import SubTokenizer
from .base import DiffusionModel, check_positive_int

__all__ = ["FREQUENCY_DIM", "MDLMDiT", "mdlm_dit_config"]

FREQUENCY_DIM = 256
"""Width of the sinusoidal embedding of σ before the conditioning MLP."""


def sinusoid(sigma: torch.Tensor, dim: int = FREQUENCY_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """``FloatTensor[B]`` → ``[cos(σ f_k), sin(σ f_k)]`` with ``f_k = max_period^(−k/(dim/2))``, float32."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half
    )
    args = sigma.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def rotary_tables(
    length: int, head_dim: int, device, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin: FloatTensor[length, head_dim/2]`` for rotary positions 0..length-1 (float32)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x: [B, L, H, dh]`` by position: halves ``(x1, x2)`` →
    ``(x1 cos − x2 sin, x1 sin + x2 cos)``."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class ScaleOnlyLayerNorm(nn.Module):
    """LayerNorm without bias (eps 1e-5), normalised in float32 outside autocast, then ``· weight``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = F.layer_norm(x.float(), [self.dim])
        return h * self.weight[None, None, :]


class ConditionMLP(nn.Module):
    """σ → ``MLP(sinusoid(σ))``: Linear(256, c_dim), SiLU, Linear(c_dim, c_dim) (``mlp.0`` / ``mlp.2``)."""

    def __init__(self, cond_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_DIM, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoid(sigma))


class TableEmbedding(nn.Module):
    """A bare ``(rows, width)`` table (``embedding``), indexed directly."""

    def __init__(self, rows: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(rows, width))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embedding[idx]


class AdaLNBlock(nn.Module):
    """One DiT block: modulated attention and MLP branches with gated residuals."""

    def __init__(self, dim: int, heads: int, cond_dim: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = ScaleOnlyLayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = ScaleOnlyLayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * dim, dim)
        )
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        mod = self.adaLN_modulation(c)[:, None]  # (B, 1, 6d)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale_a) + shift_a
        qkv = self.attn_qkv(h).view(B, L, 3, self.heads, d // self.heads)
        q, k, v = qkv.unbind(dim=2)  # (B, L, H, dh)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=False
        )  # (B, H, L, dh)
        attn = attn.transpose(1, 2).reshape(B, L, d)
        p = self.dropout if self.training else 0.0
        x = x + gate_a * F.dropout(self.attn_out(attn), p, self.training)
        h = self.norm2(x) * (1 + scale_m) + shift_m
        return x + gate_m * F.dropout(self.mlp(h), p, self.training)


class AdaLNFinal(nn.Module):
    """Modulated LayerNorm and the linear head (``norm_final``, ``linear``, ``adaLN_modulation``)."""

    def __init__(self, dim: int, out: int, cond_dim: int) -> None:
        super().__init__()
        self.norm_final = ScaleOnlyLayerNorm(dim)
        self.linear = nn.Linear(dim, out)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)
        for layer in (self.linear, self.adaLN_modulation):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class MDLMDiT(DiffusionModel):
    """The published MDLM (ℓ = 1) / MDLM-Prime (ℓ > 1) network; see the module docstring.

    Args:
        subtokenizer: ``C``, ℓ, ``b`` (the published models: GPT-2, C = 50257, ``b = ceil(C^(1/ℓ))``).
        seq_len: ``L`` (1024 for the published models; rotary positions accept any length).
        dim, depth, heads, cond_dim: width ``d`` (divisible by ℓ), blocks, heads, conditioning width
            (published "small": 768, 12, 12, 128).
        mlp_ratio: MLP width / d (4). dropout: residual-branch dropout while training (published 0.1).
        time_conditioned: ``False`` for the published models (σ = 0 always). ``True``: σ = −log α(t)
            under ``schedule`` (MDLM's log-linear total noise).
        precision, schedule: see :class:`~mdm_prime.models.base.DiffusionModel` (the authors ran the
            blocks under bf16 autocast on GPU; ``"fp32"`` reproduces their float32 logits).
    """

    architecture = "mdlm_dit"
    variable_length = True

    def __init__(
        self,
        subtokenizer: SubTokenizer,
        seq_len: int,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        cond_dim: int = 128,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        time_conditioned: bool = False,
        precision: str = "auto",
        schedule: object = "loglinear",
    ) -> None:
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
            ("cond_dim", cond_dim),
            ("mlp_ratio", mlp_ratio),
        ):
            check_positive_int(name, value)
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim must split into heads of even width: dim={dim}, heads={heads}")
        ell = subtokenizer.length if isinstance(subtokenizer, SubTokenizer) else 1
        if dim % ell:
            raise ValueError(
                f"dim must be divisible by ℓ = {ell} (concatenated digit embeddings), got dim={dim}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._init_common(
            subtokenizer,
            seq_len,
            time_conditioned,
            precision,
            schedule,
            {
                "dim": dim,
                "depth": depth,
                "heads": heads,
                "cond_dim": cond_dim,
                "mlp_ratio": mlp_ratio,
                "dropout": float(dropout),
            },
        )
        if is_per_digit(self.schedule):  # docs/method.md §2b: no single σ(t) = −log α(t)
            raise ValueError(
                f"mdlm_dit conditions on one σ(t) = −log α(t): it takes a shared schedule, got {self.schedule!r}"
            )
        self.dim, self.depth, self.heads, self.cond_dim = dim, depth, heads, cond_dim
        C = subtokenizer.num_classes
        if ell == 1:
            self.vocab_embed = TableEmbedding(C + 1, dim)  # row C: the mask
            out = C + 1  # the mask column is dropped in forward
        else:
            self.vocab_embed = TableEmbedding(subtokenizer.base + 1, dim // ell)  # row b: the mask
            out = C
        self.sigma_map = ConditionMLP(cond_dim)
        self.blocks = nn.ModuleList(
            AdaLNBlock(dim, heads, cond_dim, mlp_ratio, dropout) for _ in range(depth)
        )
        self.output_layer = AdaLNFinal(dim, out, cond_dim)

    def sigma_of(self, t: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """The network's time input: zeros unless time-conditioned, else ``σ = −log α(t)``."""
        if not self.time_conditioned:
            return torch.zeros(batch, device=device)
        return -torch.log(self.schedule.alpha(t.float()).clamp_min(1e-12))

    def _forward(self, y_t: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        B, n = y_t.shape
        ell = self.subtokenizer.length
        x = self.vocab_embed(y_t).reshape(B, n // ell, self.dim)  # (B, L, d), digits concatenated
        c = F.silu(self.sigma_map(self.sigma_of(t, B, y_t.device)))  # (B, cond_dim)
        cos, sin = rotary_tables(x.shape[1], self.dim // self.heads, y_t.device)
        for block in self.blocks:
            x = block(x, cos, sin, c)
        logits = self.output_layer(x, c)
        return logits[..., : self.num_classes]  # ℓ = 1: drop the mask column

    def flops_per_token(self) -> float:
        """Forward FLOPs per token at ``seq_len`` tokens (multiply-add = 2): per block ``8d²`` (QKV and
        output projections), ``4·ratio·d²`` (MLP), ``4·L·d`` (attention scores and values); plus the
        head ``2·d·C_out``. The per-sequence conditioning MLP and adaLN maps are negligible."""
        d, L = self.dim, self.seq_len
        per_block = 2 * (4 * d * d) + 2 * (2 * self.config["mlp_ratio"] * d * d) + 4 * L * d
        return float(self.depth * per_block + 2 * d * self.output_layer.linear.out_features)


def mdlm_dit_config(
    size: str = "small",
    *,
    num_classes: int = 50257,
    length: int = 1,
    seq_len: int = 1024,
    base: int | None = None,
    permutation=None,
    schedule: object = "loglinear",
    **overrides,
) -> dict:
    """Config of an :class:`MDLMDiT` (``size``: ``"small"`` 768×12, 12 heads, c_dim 128 — the published
    models; ``"tiny"`` 64×2 for tests); ``overrides`` set any constructor argument."""
    from ..schedules import get_schedule

    sizes = {
        "tiny": {"dim": 64, "depth": 2, "heads": 2, "cond_dim": 32},
        "small": {"dim": 768, "depth": 12, "heads": 12, "cond_dim": 128},
    }
    if size not in sizes:
        raise ValueError(f"unknown mdlm_dit size {size!r}; expected one of {sorted(sizes)}")
    sub = SubTokenizer(num_classes, length, base, permutation).config()
    return {
        "architecture": "mdlm_dit",
        "subtokenizer": sub,
        "schedule": get_schedule(schedule, length=length).config(),
        "seq_len": seq_len,
        **sizes[size],
        **overrides,
    }
