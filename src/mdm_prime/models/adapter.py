"""Input adapter: ℓ sub-tokens per token → one width-``d`` token vector (docs/method.md §3).

Variants (``variant=``):

* ``"concat"`` (the paper's design, default): one shared table of ``b+1`` rows (digits ``0..b-1`` and
  the mask ``b``) and width ``d/ℓ``; the ℓ digit embeddings of a token are concatenated in digit
  order, ``h^i = [E[y^{i,0}], E[y^{i,1}], …, E[y^{i,ℓ-1}]]``. Requires ``d mod ℓ = 0``.
* ``"per_position"``: as ``concat`` but digit position ``j`` has its own table ``E_j`` (``ℓ`` tables of
  ``b+1`` rows, width ``d/ℓ``). Requires ``d mod ℓ = 0``.
* ``"sum"``: ``h^i = Σ_j E_j[y^{i,j}]`` with ``ℓ`` tables of width ``d`` (per-position, otherwise the
  sum could not tell the digits' order apart).

With ℓ = 1 all three are the plain MDM embedding: one table of ``C+1`` rows (``b = C``) and width ``d``.
The mask state enters only through the mask row.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..subtokenizer import SubTokenizer
from ..validation import check_choice, check_int

__all__ = ["SubTokenEmbedding", "ADAPTER_VARIANTS"]

ADAPTER_VARIANTS = ("concat", "per_position", "sum")


class SubTokenEmbedding(nn.Module):
    """Embeds a sub-token sequence ``LongTensor[B, L·ℓ]`` into token vectors ``FloatTensor[B, L, d]``.

    Args:
        subtokenizer: gives ``ℓ`` and ``b`` (``b+1`` input symbols).
        dim: output width ``d``.
        variant: one of :data:`ADAPTER_VARIANTS`.

    Attributes:
        weight: ``Parameter[b+1, d/ℓ]`` (concat), ``[ℓ, b+1, d/ℓ]`` (per_position) or
            ``[ℓ, b+1, d]`` (sum). For ℓ = 1 and concat: ``[C+1, d]``.

    Example::

        >>> emb = SubTokenEmbedding(SubTokenizer(256, 2), dim=64)     # b = 16, table 17 × 32
        >>> emb(torch.tensor([[3, 16, 0, 15]])).shape                 # 2 tokens
        torch.Size([1, 2, 64])
    """

    def __init__(self, subtokenizer: SubTokenizer, dim: int, variant: str = "concat") -> None:
        super().__init__()
        check_choice("adapter variant", variant, ADAPTER_VARIANTS)
        check_int("embedding width dim", dim, low=1, what="a positive int")
        ell, rows = subtokenizer.length, subtokenizer.base + 1
        if variant != "sum" and dim % ell:
            raise ValueError(
                f"the {variant!r} adapter concatenates ℓ={ell} digit embeddings, so the width d={dim} "
                f"must be divisible by ℓ (d mod ℓ = {dim % ell}); choose d in "
                f"{{{dim - dim % ell}, {dim - dim % ell + ell}}} or variant='sum'"
            )
        self.length, self.num_symbols, self.dim, self.variant = ell, rows, dim, variant
        if variant == "concat":
            shape = (rows, dim // ell)
        elif variant == "per_position":
            shape = (ell, rows, dim // ell)
        else:
            shape = (ell, rows, dim)
        self.weight = nn.Parameter(torch.randn(shape) * 0.02)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, length={self.length}, symbols={self.num_symbols}, dim={self.dim}"

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``LongTensor[B, L·ℓ]`` (values ``0..b``) → ``FloatTensor[B, L, d]``. No range check here
        (the model checks its input once)."""
        batch, n = y.shape
        num_tokens = n // self.length
        # F.embedding, not ``weight[y]``: the backward of advanced indexing accumulates rows with a
        # thread-order-dependent index_put_, so two same-seed runs on 2 threads would drift apart;
        # embedding_backward is deterministic on CPU.
        if self.variant == "concat":
            return F.embedding(y, self.weight).reshape(
                batch, num_tokens, self.dim
            )  # (B, L·ℓ, d/ℓ) → (B, L, d)
        digit_pos = torch.arange(self.length, device=y.device).repeat(num_tokens)  # (L·ℓ,)
        flat = self.weight.reshape(-1, self.weight.shape[-1])  # (ℓ·(b+1), width)
        rows = F.embedding(digit_pos * self.weight.shape[1] + y, flat)  # (B, L·ℓ, width)
        if self.variant == "per_position":
            return rows.reshape(batch, num_tokens, self.dim)
        return rows.reshape(batch, num_tokens, self.length, self.dim).sum(2)
