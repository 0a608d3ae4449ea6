"""Carry-over parameterization: one distribution per token that respects the seen digits (MATH.md §3).

The network gives logits ``z: FloatTensor[B, L, C]`` for a partially masked sub-token sequence
``y_t: LongTensor[B, L·ℓ]``. Carry-over removes every class inconsistent with an observed digit:

    p(x^i = c | y_t) ∝ exp(z^i_c) · Π_j 1[y_t^{i,j} = m  or  d_j(c) = y_t^{i,j}].

The consistency mask is a product over digits, so it is built in *code space* (the ``b^ℓ`` codes
arranged as an ℓ-axis grid) by broadcasting ℓ per-digit masks of size ``b``, never by comparing a
``(C, ℓ)`` table with every token. Digit marginals ``p(y^{i,j} = v | y_t)`` are sums of the token
distribution over the other ℓ-1 axes of the same grid.

All functions are vectorised over batch and positions; none loops over tokens.
"""

from __future__ import annotations

import torch

from .subtokenizer import SubTokenizer

__all__ = [
    "consistency_log_mask",
    "carry_over_logits",
    "carry_over_log_probs",
    "digit_log_marginals",
    "digit_marginals_from_probs",
    "to_code_space",
]


def _split_tokens(y_t: torch.Tensor, sub: SubTokenizer, num_tokens: int | None = None) -> torch.Tensor:
    """``(B, L·ℓ)`` → ``(B, L, ℓ)`` with shape checks."""
    if y_t.dim() != 2 or y_t.shape[-1] % sub.length:
        raise ValueError(
            f"y_t must have shape (B, L·ℓ) with ℓ={sub.length}, got {tuple(y_t.shape)}"
        )
    y = y_t.unflatten(-1, (-1, sub.length))
    if num_tokens is not None and y.shape[1] != num_tokens:
        raise ValueError(
            f"y_t holds {y.shape[1]} tokens of ℓ={sub.length} digits but logits have {num_tokens} positions"
        )
    return y


def consistency_log_mask(y_t: torch.Tensor, sub: SubTokenizer, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask ``FloatTensor[B, L, C]``: 0 for classes consistent with the seen digits of each
    token, ``-inf`` otherwise. ``y_t``: ``LongTensor[B, L·ℓ]`` (digits or ``sub.mask_id``)."""
    y = _split_tokens(y_t, sub)
    b = sub.base
    values = torch.arange(b, device=y.device)
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=y.device)
    zero = torch.tensor(0.0, dtype=dtype, device=y.device)
    # allowed digit values per (token, digit): (B, L, ℓ, b)
    allowed = (y.unsqueeze(-1) == values) | (y.unsqueeze(-1) == sub.mask_id)
    per_digit = torch.where(allowed, zero, neg_inf)
    mask = per_digit[..., 0, :]
    for j in range(1, sub.length):
        mask = (mask.unsqueeze(-1) + per_digit[..., j, :].unsqueeze(-2)).flatten(-2)
    # mask is over codes (B, L, b^ℓ); map to classes
    if sub.permutation is None:
        return mask[..., : sub.num_classes]
    return mask.index_select(-1, sub._table("code_of_class", mask.device))


def carry_over_logits(logits: torch.Tensor, y_t: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``logits`` (``FloatTensor[B, L, C]``) with inconsistent classes set to ``-inf``."""
    _check_logits(logits, sub)
    _split_tokens(y_t, sub, logits.shape[1])
    return logits + consistency_log_mask(y_t, sub, dtype=logits.dtype)


def carry_over_log_probs(logits: torch.Tensor, y_t: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``log p_θ(x^i = c | y_t)``: ``FloatTensor[B, L, C]`` in nats, ``-inf`` on inconsistent classes.

    Never NaN: at least one class (the true one) is always consistent, and a token with all digits
    seen gets log-probability exactly 0 on its value."""
    return torch.log_softmax(carry_over_logits(logits, y_t, sub), dim=-1)


def to_code_space(values: torch.Tensor, sub: SubTokenizer, fill: float) -> torch.Tensor:
    """``(..., C)`` per-class values → ``(..., b^ℓ)`` per-code values; invalid codes get ``fill``."""
    if sub.permutation is None and sub.num_codes == sub.num_classes:
        return values
    if sub.permutation is None:
        pad = sub.num_codes - sub.num_classes
        return torch.nn.functional.pad(values, (0, pad), value=fill)
    out = values.new_full((*values.shape[:-1], sub.num_codes), fill)
    out[..., sub._table("code_of_class", values.device)] = values
    return out


def digit_marginals_from_probs(probs: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """Token probabilities ``(..., C)`` → digit marginals ``(..., ℓ, b)`` (each row sums to 1).

    The grid of codes is reduced hierarchically: summing the last axis once gives the joint of the
    leading digits, so every marginal costs at most two full passes over the ``b^ℓ`` grid."""
    lead = probs.shape[:-1]
    b, ell = sub.base, sub.length
    grid = to_code_space(probs, sub, 0.0)
    if ell == 1:
        return grid.unsqueeze(-2)
    marginals = []
    joint = grid  # joint of digits 0..k over a flattened trailing axis
    for k in range(ell - 1, 0, -1):
        joint = joint.reshape(*lead, b ** k, b)
        marginals.append(joint.sum(-2))  # marginal of digit k
        joint = joint.sum(-1)  # joint of digits 0..k-1
    marginals.append(joint)
    return torch.stack(marginals[::-1], dim=-2)


def digit_log_marginals(log_probs: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``log p_θ(y^{i,j} = v | y_t)``: ``(..., C)`` token log-probs → ``(..., ℓ, b)`` in nats.

    Values whose total mass underflows are clamped at ``log(tiny)`` of the dtype (≈ -87.3 nats in
    float32) rather than ``-inf``, so a loss that reads them stays finite; impossible digits of
    inconsistent values are exactly 0 in probability space before the clamp."""
    probs = log_probs.exp()
    marg = digit_marginals_from_probs(probs, sub)
    return marg.clamp_min(torch.finfo(marg.dtype).tiny).log()


def _check_logits(logits: torch.Tensor, sub: SubTokenizer) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(
            f"logits must be a floating-point tensor, got "
            f"{logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__}"
        )
    if logits.dim() != 3 or logits.shape[-1] != sub.num_classes:
        raise ValueError(
            f"logits must have shape (B, L, C={sub.num_classes}), got {tuple(logits.shape)}"
        )
