"""Residual MLP for the 2-D toy densities: ``L = 2`` tokens (one per coordinate, e.g. ``C = 256``).

``y_t: LongTensor[B, L·ℓ]`` → concat adapter (width ``embed_dim`` per token) → flatten to
``L·embed_dim`` → ``Linear`` to ``hidden_dim`` → ``depth`` residual blocks (LayerNorm–Linear–SiLU–Linear,
optional time embedding added) → LayerNorm → zero-initialised head → logits ``FloatTensor[B, L, C]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..subtokenizer import SubTokenizer
from .adapter import SubTokenEmbedding
from .base import DiffusionModel, check_positive_int
from .layers import TimeEmbedding

__all__ = ["ToyMLP"]


class _ResidualMLP(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc2(F.silu(self.fc1(self.norm(x)))))


class ToyMLP(DiffusionModel):
    """MLP over a short, fixed number of tokens.

    Args:
        subtokenizer: ``C``, ``ℓ``, ``b``. seq_len: ``L`` (2 for the 2-D toy).
        embed_dim: per-token embedding width (``mod ℓ = 0`` for the concat adapter).
        hidden_dim, depth: residual MLP width and blocks. adapter, dropout, time_conditioned,
        precision, schedule: as the transformer.
    """

    architecture = "mlp"

    def __init__(
        self,
        subtokenizer: SubTokenizer,
        seq_len: int = 2,
        embed_dim: int = 64,
        hidden_dim: int = 256,
        depth: int = 3,
        adapter: str = "concat",
        dropout: float = 0.0,
        time_conditioned: bool = False,
        precision: str = "auto",
        schedule: object = "linear",
    ) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("hidden_dim", hidden_dim), ("depth", depth)):
            check_positive_int(name, value)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._init_common(
            subtokenizer,
            seq_len,
            time_conditioned,
            precision,
            schedule,
            {
                "embed_dim": embed_dim,
                "hidden_dim": hidden_dim,
                "depth": depth,
                "adapter": adapter,
                "dropout": float(dropout),
            },
        )
        self.embed = SubTokenEmbedding(subtokenizer, embed_dim, adapter)
        self.inp = nn.Linear(seq_len * embed_dim, hidden_dim)
        self.time_embed = TimeEmbedding(hidden_dim) if time_conditioned else None
        self.blocks = nn.ModuleList(_ResidualMLP(hidden_dim, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, seq_len * subtokenizer.num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _forward(self, y_t: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        h = self.inp(self.embed(y_t).flatten(1))  # (B, hidden)
        temb = self.time_embed(t) if self.time_embed is not None else None
        for block in self.blocks:
            h = block(h if temb is None else h + temb)
        return self.head(self.norm_out(h)).view(y_t.shape[0], self.seq_len, self.num_classes)
