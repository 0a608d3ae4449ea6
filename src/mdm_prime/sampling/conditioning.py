"""Conditioning masks for the samplers (docs/method.md §6): prefixes, infilling spans, chosen digit positions.

A :class:`Condition` fixes digits of the sub-token sequence: ``fixed`` (``BoolTensor[B, L·ℓ]``) marks
the digits that are given and ``values`` (``LongTensor[B, L·ℓ]``) holds them (read only where
``fixed``). Fixed digits are observed from the first step and never change. Layout is token-major:
token ``i`` owns positions ``iℓ .. iℓ+ℓ-1``. For images, flatten the token grid in ``(c, h, w)`` order
(``tokens.flatten(1)``), which matches :meth:`SubTokenizer.image_to_sequence`.

Example (image imputation, keep the most significant digit of every pixel)::

    cond = digit_condition(pixels.flatten(1), digits=[0], sub=sub)
    result = sample(model, sub, steps=64, condition=cond)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from ..subtokenizer import SubTokenizer
from ..validation import check_int

__all__ = [
    "Condition",
    "condition_from_tokens",
    "prefix_condition",
    "infill_condition",
    "digit_condition",
    "spans_to_token_mask",
    "token_mask_to_digit_mask",
    "digit_positions_mask",
]


class Condition(NamedTuple):
    """Digits given to the sampler. ``fixed``: ``BoolTensor[B, L·ℓ]``; ``values``: ``LongTensor[B, L·ℓ]``
    (digits ``0..b-1`` where ``fixed``; anything in ``0..b`` elsewhere)."""

    fixed: torch.Tensor
    values: torch.Tensor


def _as_2d_tokens(tokens: torch.Tensor, num_samples: int | None) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0).expand(num_samples or 1, -1)
    elif tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (L,) or (B, L), got {tuple(tokens.shape)}")
    elif num_samples is not None and tokens.shape[0] != num_samples:
        raise ValueError(f"tokens hold {tokens.shape[0]} rows but num_samples={num_samples}")
    return tokens


def spans_to_token_mask(num_tokens: int, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``BoolTensor[L]``, True on the tokens of the half-open ``[start, end)`` spans."""
    check_int("num_tokens", num_tokens, low=1)
    mask = torch.zeros(num_tokens, dtype=torch.bool)
    for span in spans:
        if len(span) != 2:
            raise ValueError(f"a span must be (start, end), got {span!r}")
        start, end = int(span[0]), int(span[1])
        if not 0 <= start <= end <= num_tokens:
            raise ValueError(f"span {span!r} must satisfy 0 <= start <= end <= num_tokens={num_tokens}")
        mask[start:end] = True
    return mask


def token_mask_to_digit_mask(token_mask: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``BoolTensor[..., L]`` over tokens → ``BoolTensor[..., L·ℓ]`` over their digits."""
    if not isinstance(token_mask, torch.Tensor) or token_mask.dtype != torch.bool:
        raise TypeError(
            f"token_mask must be a bool tensor, got {getattr(token_mask, 'dtype', type(token_mask).__name__)}"
        )
    return token_mask.unsqueeze(-1).expand(*token_mask.shape, sub.length).flatten(-2)


def digit_positions_mask(num_tokens: int, digits: Sequence[int], sub: SubTokenizer) -> torch.Tensor:
    """``BoolTensor[L·ℓ]``, True on digits ``j ∈ digits`` of every token (0 = most significant)."""
    check_int("num_tokens", num_tokens, low=1)
    per_token = torch.zeros(sub.length, dtype=torch.bool)
    for j in digits:
        check_int("digit index", j, low=0, high=sub.length - 1)
        per_token[j] = True
    return per_token.repeat(num_tokens)


def condition_from_tokens(
    tokens: torch.Tensor, digit_mask: torch.Tensor, sub: SubTokenizer, num_samples: int | None = None
) -> Condition:
    """Fix the digits of ``tokens`` (``LongTensor[B, L]`` or ``[L]``, broadcast to ``num_samples`` rows)
    selected by ``digit_mask`` (``BoolTensor[B, L·ℓ]`` or ``[L·ℓ]``)."""
    tokens = _as_2d_tokens(tokens, num_samples)
    values = sub.encode(tokens)
    if not isinstance(digit_mask, torch.Tensor) or digit_mask.dtype != torch.bool:
        raise TypeError(
            f"digit_mask must be a bool tensor, got {getattr(digit_mask, 'dtype', type(digit_mask).__name__)}"
        )
    if digit_mask.shape[-1] != values.shape[-1] or digit_mask.dim() > 2:
        raise ValueError(
            f"digit_mask must have shape (L·ℓ,) or (B, L·ℓ) = {tuple(values.shape)}, got {tuple(digit_mask.shape)}"
        )
    fixed = digit_mask.to(values.device).expand_as(values).clone()
    return Condition(fixed, values.clone())


def prefix_condition(
    prefix: torch.Tensor, num_tokens: int, sub: SubTokenizer, num_samples: int | None = None
) -> Condition:
    """Fix the first ``P`` tokens to ``prefix`` (``LongTensor[B, P]`` or ``[P]``); generate the other
    ``num_tokens − P``."""
    prefix = _as_2d_tokens(prefix, num_samples)
    check_int("num_tokens", num_tokens, low=prefix.shape[1], note=" (the prefix length)")
    tokens = torch.zeros(prefix.shape[0], num_tokens, dtype=torch.long, device=prefix.device)
    tokens[:, : prefix.shape[1]] = prefix
    keep = spans_to_token_mask(num_tokens, [(0, prefix.shape[1])]).to(prefix.device)
    return condition_from_tokens(tokens, token_mask_to_digit_mask(keep, sub), sub)


def infill_condition(
    tokens: torch.Tensor,
    generate: Sequence[tuple[int, int]] | torch.Tensor,
    sub: SubTokenizer,
    num_samples: int | None = None,
) -> Condition:
    """Keep ``tokens`` (``[B, L]`` or ``[L]``) except where generated: ``generate`` is a list of
    half-open token spans ``[(start, end), …]`` or a ``BoolTensor[L]`` / ``[B, L]`` (True = generate).
    Raises ValueError when it selects no token at all (nothing to generate)."""
    tokens = _as_2d_tokens(tokens, num_samples)
    if isinstance(generate, torch.Tensor):
        if generate.dtype != torch.bool or generate.shape[-1] != tokens.shape[1]:
            raise ValueError(
                f"generate mask must be a bool tensor (..., L={tokens.shape[1]}), got {generate.dtype} {tuple(generate.shape)}"
            )
        gen = generate.to(tokens.device)
    else:
        gen = spans_to_token_mask(tokens.shape[1], generate).to(tokens.device)
    if not bool(gen.any()):
        raise ValueError(
            f"infill_condition: nothing to generate (the spans / mask select none of the "
            f"{tokens.shape[1]} tokens); mark the tokens to generate, or use prefix_condition to continue a text"
        )
    return condition_from_tokens(tokens, token_mask_to_digit_mask(~gen, sub), sub)


def digit_condition(
    tokens: torch.Tensor,
    digits: Sequence[int],
    sub: SubTokenizer,
    num_samples: int | None = None,
    token_mask: torch.Tensor | None = None,
) -> Condition:
    """Keep digits ``j ∈ digits`` of every token of ``tokens`` (``[B, L]`` or ``[L]``), or only of the
    tokens where ``token_mask`` (``BoolTensor[L]`` or ``[B, L]``) is True; generate all other digits.
    ``digits=[0]`` keeps the most significant (top) digit of every pixel: image imputation."""
    tokens = _as_2d_tokens(tokens, num_samples)
    mask = digit_positions_mask(tokens.shape[1], digits, sub).to(tokens.device)
    if token_mask is not None:
        mask = mask & token_mask_to_digit_mask(token_mask.to(tokens.device), sub)
    return condition_from_tokens(tokens, mask, sub)
