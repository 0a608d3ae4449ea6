"""DiT-style bidirectional transformer over ``L`` token positions (docs/method.md §3).

``y_t: LongTensor[B, L·ℓ]`` → :class:`SubTokenEmbedding` (ℓ digits → one width-``d`` vector per token)
→ ``depth`` pre-norm blocks with rotary positions and ``scaled_dot_product_attention`` → final norm →
zero-initialised linear head → logits ``FloatTensor[B, L, C]``.

Time-independent by default (``t`` is ignored, so a sampler may reuse the output while the input does
not change). With ``time_conditioned=True`` a sinusoidal time embedding drives adaLN modulation of
every block and of the final norm (DiT). Accepts any number of tokens (rotary positions), not only
``seq_len``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..subtokenizer import SubTokenizer
from .adapter import SubTokenEmbedding
from .base import DiffusionModel, check_positive_int
from .layers import Block, Rotary, TimeEmbedding, compute_dtype

__all__ = ["DiffusionTransformer", "check_transformer_shape", "transformer_matmul_flops"]


def check_transformer_shape(dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
    """ValueError/TypeError for an impossible transformer shape."""
    for name, value in (("dim", dim), ("depth", depth), ("heads", heads)):
        check_positive_int(name, value)
    if dim % heads:
        raise ValueError(f"dim must be divisible by heads: dim={dim}, heads={heads}")
    if (dim // heads) % 2:
        raise ValueError(
            f"head width dim/heads must be even for rotary positions, got {dim}/{heads} = {dim // heads}"
        )
    if not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def transformer_matmul_flops(
    dim: int,
    depth: int,
    mlp_ratio: float,
    num_classes: int,
    context: float,
    seq_len: int,
    conditioned: bool,
    freq_dim: int = 256,
) -> float:
    """Forward FLOPs per token (multiply-add = 2) of the blocks and head: per block ``2·(4d² + 2dh)``
    for the projections and MLP (``h`` = MLP width) and ``4·context·d`` for attention scores and
    values; the head ``2dC``; with time conditioning, the per-sequence time MLP and adaLN layers
    divided by ``seq_len``."""
    hidden = int(round(mlp_ratio * dim))
    per_block = 2 * (4 * dim * dim + 2 * dim * hidden) + 4 * context * dim
    total = depth * per_block + 2 * dim * num_classes
    if conditioned:
        per_seq = 2 * (freq_dim * dim + dim * dim) + depth * 2 * dim * 6 * dim + 2 * dim * 2 * dim
        total += per_seq / seq_len
    return float(total)


class DiffusionTransformer(DiffusionModel):
    """Bidirectional transformer for masked diffusion over sub-tokens.

    Args:
        subtokenizer: the sub-tokenizer (``C``, ``ℓ``, ``b``).
        seq_len: ``L``, tokens per item (used for FLOPs and as the documented size; other lengths work).
        dim, depth, heads: width ``d`` (divisible by ℓ for the concat adapter), blocks, attention heads.
        mlp_ratio: MLP width / ``d``. dropout: attention/branch dropout.
        adapter: input adapter variant (``"concat"`` | ``"per_position"`` | ``"sum"``).
        time_conditioned: adaLN time conditioning (default off).
        precision: ``"auto"`` | ``"fp32"`` | ``"bf16"`` (see :data:`~mdm_prime.models.base.PRECISIONS`).
        schedule: masking schedule stored with the model (name, dict or Schedule).

    Example::

        >>> sub = SubTokenizer(50257, 2)
        >>> net = DiffusionTransformer(sub, seq_len=1024, dim=768, depth=12, heads=12)   # "small"
        >>> net(y_t).shape                                                               # (B, 1024, 50257)
    """

    architecture = "transformer"
    variable_length = True

    def __init__(
        self,
        subtokenizer: SubTokenizer,
        seq_len: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        adapter: str = "concat",
        time_conditioned: bool = False,
        precision: str = "auto",
        schedule: object = "linear",
    ) -> None:
        super().__init__()
        check_transformer_shape(dim, depth, heads, mlp_ratio, dropout)
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
                "mlp_ratio": float(mlp_ratio),
                "dropout": float(dropout),
                "adapter": adapter,
            },
        )
        self.dim, self.depth, self.heads, self.mlp_ratio = dim, depth, heads, float(mlp_ratio)
        self.embed = SubTokenEmbedding(subtokenizer, dim, adapter)
        self.rotary = Rotary(dim // heads)
        cond_dim = dim if time_conditioned else None
        self.time_embed = TimeEmbedding(dim) if time_conditioned else None
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, cond_dim=cond_dim, causal=False, dropout=dropout)
            for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=not time_conditioned)
        self.out_modulation = None
        if time_conditioned:
            self.out_modulation = nn.Linear(dim, 2 * dim)
            nn.init.zeros_(self.out_modulation.weight)
            nn.init.zeros_(self.out_modulation.bias)
        self.head = nn.Linear(dim, subtokenizer.num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _forward(self, y_t: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(y_t)  # (B, L, d)
        # in the autocast dtype (bf16) when autocast is on: no casts of the tables in every block
        cos, sin = self.rotary(x.shape[1], 0, x.device, compute_dtype(x))
        cond = None
        if self.time_embed is not None:
            cond = nn.functional.silu(self.time_embed(t))  # (B, d)
        for block in self.blocks:
            x = block(x, cos, sin, cond)
        x = self.norm_out(x)
        if self.out_modulation is not None:
            shift, scale = self.out_modulation(cond)[:, None].chunk(2, dim=-1)
            x = x * (1 + scale) + shift
        return self.head(x)  # (B, L, C)

    def flops_per_token(self) -> float:
        """Closed form (see :func:`transformer_matmul_flops`) at ``seq_len`` tokens, full attention."""
        return transformer_matmul_flops(
            self.dim,
            self.depth,
            self.mlp_ratio,
            self.num_classes,
            self.seq_len,
            self.seq_len,
            self.time_conditioned,
        )
