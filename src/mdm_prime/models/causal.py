"""Autoregressive baseline (docs/method.md §7): the same transformer blocks with causal attention, over tokens.

``forward(x: LongTensor[B, L]) -> logits FloatTensor[B, L, C]``: position ``i`` predicts ``x[i]`` from
``x[<i]`` (the input is shifted right behind a BOS symbol, embedding row ``C``). The likelihood is
exact: :meth:`CausalTransformer.log_likelihood` sums ``log p(x_i | x_<i)``.
:meth:`CausalTransformer.generate` decodes incrementally with a :class:`~.layers.KVCache`; categorical
draws are made in float64.
"""

from __future__ import annotations

import torch
from torch import nn

from ..subtokenizer import SubTokenizer
from .base import PRECISIONS, autocast_context, check_int_tensor, check_json, check_positive_int, check_range
from .layers import Block, KVCache, Rotary, compute_dtype
from .transformer import check_transformer_shape, transformer_matmul_flops

__all__ = ["CausalTransformer", "sample_categorical"]


def sample_categorical(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One draw per row of ``logits: FloatTensor[B, C]`` → ``LongTensor[B]``, in float64.

    ``temperature = 0`` is greedy (argmax). ``top_p < 1`` keeps the smallest set of most probable
    classes whose mass reaches ``top_p`` (nucleus sampling), renormalised.
    """
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = (sorted_p.cumsum(-1) - sorted_p) < top_p  # always keeps the most probable class
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class CausalTransformer(nn.Module):
    """Causal transformer language model over ``C`` token classes.

    Args:
        num_classes: ``C``. seq_len: ``L``, the training length (FLOPs; other lengths work).
        dim, depth, heads, mlp_ratio, dropout: as :class:`~.transformer.DiffusionTransformer`.
        precision: ``"auto"`` | ``"fp32"`` | ``"bf16"``.

    Attributes: ``family = "ar"``, ``subtokenizer`` (ℓ = 1, identity), ``seq_len``, ``config``,
    ``time_conditioned = False``.
    """

    architecture = "causal_transformer"
    family = "ar"
    time_conditioned = False

    def __init__(
        self,
        num_classes: int,
        seq_len: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        precision: str = "auto",
    ) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("seq_len", seq_len)
        check_transformer_shape(dim, depth, heads, mlp_ratio, dropout)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.subtokenizer = SubTokenizer(num_classes, 1)
        self.num_classes, self.seq_len, self.precision = num_classes, seq_len, precision
        self.dim, self.depth, self.heads, self.mlp_ratio = dim, depth, heads, float(mlp_ratio)
        self.config = {
            "architecture": self.architecture,
            "subtokenizer": self.subtokenizer.config(),
            "seq_len": seq_len,
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": float(mlp_ratio),
            "dropout": float(dropout),
            "precision": precision,
        }
        check_json("model config", self.config)
        self.bos_id = num_classes
        self.embed = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.rotary = Rotary(dim // heads)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, causal=True, dropout=dropout) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ counting
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> float:
        """Forward FLOPs per token at ``seq_len`` (multiply-add = 2), attention over the
        ``(L+1)/2`` positions a token sees on average."""
        return transformer_matmul_flops(
            self.dim,
            self.depth,
            self.mlp_ratio,
            self.num_classes,
            (self.seq_len + 1) / 2,
            self.seq_len,
            False,
        )

    # ------------------------------------------------------------------ forward
    def _check_tokens(self, x: object, name: str = "x") -> None:
        check_int_tensor(name, x, 2)
        if x.shape[1] == 0:
            raise ValueError(f"{name} must hold at least one token, got shape {tuple(x.shape)}")
        check_range(name, x, self.num_classes - 1, f"token ids of C={self.num_classes} classes")

    def _run(self, inputs: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Input symbols ``LongTensor[B, n]`` (``0..C``, ``C`` = BOS) → logits ``[B, n, C]`` float32;
        with a cache, positions continue from ``cache.length`` and the cache advances by ``n``."""
        offset = 0 if cache is None else cache.length
        with autocast_context(self.precision, inputs.device):
            h = self.embed(inputs)
            cos, sin = self.rotary(h.shape[1], offset, h.device, compute_dtype(h))
            for i, block in enumerate(self.blocks):
                h = block(h, cos, sin, cache=cache, layer=i)
            logits = self.head(self.norm_out(h))
        if cache is not None:
            cache.advance(inputs.shape[1])
        return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: LongTensor[B, L]`` → logits ``FloatTensor[B, L, C]``; row ``i`` is the distribution of
        ``x[:, i]`` given ``x[:, :i]``."""
        self._check_tokens(x)
        bos = torch.full_like(x[:, :1], self.bos_id)
        return self._run(torch.cat([bos, x[:, :-1]], dim=1))

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p_θ(x) = Σ_i log p_θ(x_i | x_<i)``: ``FloatTensor[B]`` in nats per sequence (≤ 0)."""
        logp = torch.log_softmax(self(x).float(), dim=-1)
        return logp.gather(-1, x.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def new_cache(self, max_len: int) -> KVCache:
        """An empty KV cache for up to ``max_len`` input positions (BOS counts as one)."""
        return KVCache(self.depth, max_len)

    def step(self, inputs: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Incremental decoding: feed input symbols ``LongTensor[B, n]`` (``0..C``, ``C`` = BOS) at
        positions ``cache.length ..``; returns logits ``[B, n, C]`` for the *next* token after each."""
        check_int_tensor("inputs", inputs, 2)
        check_range(
            "inputs", inputs, self.num_classes, f"token ids 0..{self.num_classes - 1}, BOS {self.bos_id}"
        )
        return self._run(inputs, cache)

    @torch.no_grad()
    def generate(
        self,
        num: int,
        seq_len: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample ``num`` sequences of ``seq_len`` tokens → ``LongTensor[num, seq_len]``, one KV-cached
        forward per new token (dropout follows the module's mode: call ``.eval()`` first).

        Args:
            temperature: ``≥ 0`` (0 = greedy). top_p: nucleus mass in ``(0, 1]``.
            generator: torch.Generator on the model's device, for reproducible draws.
            prefix: optional ``LongTensor[P]`` (shared) or ``[num, P]`` with ``P ≤ seq_len``; the output
                starts with it.
        """
        check_positive_int("num", num)
        check_positive_int("seq_len", seq_len)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        device = self.head.weight.device
        if prefix is None:
            prefix = torch.zeros((num, 0), dtype=torch.long, device=device)
        else:
            if isinstance(prefix, torch.Tensor) and prefix.dim() == 1:
                prefix = prefix.unsqueeze(0).expand(num, -1)
            check_int_tensor("prefix", prefix, 2)
            if prefix.shape[0] != num or prefix.shape[1] > seq_len:
                raise ValueError(
                    f"prefix must have shape ({num}, P) with P <= {seq_len}, got {tuple(prefix.shape)}"
                )
            if prefix.shape[1]:
                check_range(
                    "prefix", prefix, self.num_classes - 1, f"token ids of C={self.num_classes} classes"
                )
            prefix = prefix.to(device).long()
        out = torch.empty((num, seq_len), dtype=torch.long, device=device)
        out[:, : prefix.shape[1]] = prefix
        cache = self.new_cache(seq_len)
        inputs = torch.cat(
            [torch.full((num, 1), self.bos_id, device=device, dtype=torch.long), prefix], dim=1
        )
        for pos in range(prefix.shape[1], seq_len):
            logits = self._run(inputs, cache)[:, -1]
            out[:, pos] = sample_categorical(logits, temperature, top_p, generator)
            inputs = out[:, pos : pos + 1]
        return out
