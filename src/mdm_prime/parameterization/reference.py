"""Carry-over, the readable formulation (docs/method.md §3).

Every function here is plain differentiable tensor algebra: an additive ``-inf`` mask built in code
space, a ``log_softmax``, and digit marginals as sums over the axes of the ``b^ℓ`` code grid. No
caches, no chunking. :mod:`mdm_prime.parameterization.fast` computes the same quantities faster and
is checked against this module.
"""

from __future__ import annotations

import torch

from ..subtokenizer import SubTokenizer

__all__ = [
    "carry_over_log_probs",
    "carry_over_logits",
    "check_class_axis",
    "compute_dtype",
    "consistency_log_mask",
    "digit_log_marginals",
    "digit_marginals_from_probs",
    "to_code_space",
]


NO_CONSISTENT_CLASS = (
    "y_t holds a token whose seen digits fit no class (they can only spell codes >= C, which no class has)"
)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype (float32, bfloat16, float16) → float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def split_tokens(y_t: torch.Tensor, sub: SubTokenizer, num_tokens: int | None = None) -> torch.Tensor:
    """``LongTensor[B, L·ℓ]`` → ``LongTensor[B, L, ℓ]``; raises ``ValueError`` on a bad shape, a value
    outside ``0..b`` (digits and the mask id ``b``) or a token count other than ``num_tokens``."""
    if not isinstance(y_t, torch.Tensor):
        raise TypeError(f"y_t must be a torch.Tensor of sub-tokens, got {type(y_t).__name__}")
    if y_t.dtype.is_floating_point or y_t.dtype.is_complex or y_t.dtype == torch.bool:
        raise TypeError(f"y_t must be an integer tensor, got dtype {y_t.dtype}")
    if y_t.dim() != 2 or y_t.shape[-1] % sub.length:
        raise ValueError(f"y_t must have shape (B, L·ℓ) with ℓ={sub.length}, got {tuple(y_t.shape)}")
    if bool(((y_t < 0) | (y_t > sub.mask_id)).any()):
        bad = y_t[(y_t < 0) | (y_t > sub.mask_id)][0].item()
        raise ValueError(
            f"y_t must hold digits 0..{sub.base - 1} or the mask id {sub.mask_id}, found the value {bad}"
        )
    y = y_t.unflatten(-1, (-1, sub.length))
    if num_tokens is not None and y.shape[1] != num_tokens:
        raise ValueError(
            f"y_t holds {y.shape[1]} tokens of ℓ={sub.length} digits but logits have {num_tokens} positions"
        )
    return y


def _check_tensor(values: torch.Tensor, name: str, floating: bool) -> None:
    """``values`` must be a tensor, floating point if ``floating``; ``TypeError`` naming what it is."""
    if not isinstance(values, torch.Tensor) or (floating and not values.dtype.is_floating_point):
        raise TypeError(
            f"{name} must be a floating-point tensor, got "
            f"{values.dtype if isinstance(values, torch.Tensor) else type(values).__name__}"
        )


def check_class_axis(values: torch.Tensor, sub: SubTokenizer, name: str, floating: bool = True) -> None:
    """``values`` must be a ``Tensor[..., C]`` (at least one axis, ``C = sub.num_classes``), floating
    point unless ``floating`` is False."""
    _check_tensor(values, name, floating)
    if values.dim() == 0 or values.shape[-1] != sub.num_classes:
        raise ValueError(f"{name} must have shape (..., C={sub.num_classes}), got {tuple(values.shape)}")


def check_logits(logits: torch.Tensor, sub: SubTokenizer) -> None:
    """``logits`` must be a floating ``Tensor[B, L, C]`` with ``C = sub.num_classes``."""
    _check_tensor(logits, "logits", floating=True)
    if logits.dim() != 3 or logits.shape[-1] != sub.num_classes:
        raise ValueError(f"logits must have shape (B, L, C={sub.num_classes}), got {tuple(logits.shape)}")


def consistency_log_mask(
    y_t: torch.Tensor, sub: SubTokenizer, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Additive mask ``FloatTensor[B, L, C]``: 0 for classes consistent with the seen digits of each
    token, ``-inf`` otherwise. ``y_t``: ``LongTensor[B, L·ℓ]`` (digits or ``sub.mask_id``).

    Built in code space as an outer sum of ℓ per-digit masks of size ``b`` (docs/method.md §3)."""
    y = split_tokens(y_t, sub)
    values = torch.arange(sub.base, device=y.device)
    zero = torch.zeros((), dtype=dtype, device=y.device)
    neg_inf = torch.full((), float("-inf"), dtype=dtype, device=y.device)
    allowed = (y.unsqueeze(-1) == values) | (y.unsqueeze(-1) == sub.mask_id)  # (B, L, ℓ, b)
    per_digit = torch.where(allowed, zero, neg_inf)
    mask = per_digit[..., 0, :]
    for j in range(1, sub.length):  # most significant digit first: code = Σ_j d_j b^(ℓ-1-j)
        mask = (mask.unsqueeze(-1) + per_digit[..., j, :].unsqueeze(-2)).flatten(-2)
    if sub.permutation is None:
        return mask[..., : sub.num_classes]
    return mask.index_select(-1, sub.code_of_class.to(mask.device))


def carry_over_logits(logits: torch.Tensor, y_t: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``logits`` (``FloatTensor[B, L, C]``) with inconsistent classes set to ``-inf``; same dtype."""
    check_logits(logits, sub)
    split_tokens(y_t, sub, logits.shape[1])
    mask = consistency_log_mask(y_t, sub, dtype=logits.dtype)
    if bool(torch.isinf(mask).all(-1).any()):
        raise ValueError(NO_CONSISTENT_CLASS)
    return logits + mask


def carry_over_log_probs(logits: torch.Tensor, y_t: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``log p_θ(x^i = c | y_t)``: ``FloatTensor[B, L, C]`` in nats, ``-inf`` on inconsistent classes.

    Computed in float64 for float64 logits and in float32 otherwise (bfloat16/float16 are upcast
    before normalising). Differentiable."""
    check_logits(logits, sub)
    return torch.log_softmax(carry_over_logits(logits.to(compute_dtype(logits.dtype)), y_t, sub), dim=-1)


def to_code_space(values: torch.Tensor, sub: SubTokenizer, fill: float) -> torch.Tensor:
    """``(..., C)`` per-class values → ``(..., b^ℓ)`` per-code values; invalid codes get ``fill``."""
    check_class_axis(values, sub, "values", floating=False)
    if sub.permutation is None and sub.num_codes == sub.num_classes:
        return values
    if sub.permutation is None:
        return torch.nn.functional.pad(values, (0, sub.num_codes - sub.num_classes), value=fill)
    out = values.new_full((*values.shape[:-1], sub.num_codes), fill)
    out[..., sub.code_of_class.to(values.device)] = values
    return out


def digit_marginals_from_probs(probs: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """Token probabilities ``(..., C)`` → digit marginals ``(..., ℓ, b)`` (each row sums to 1).

    ``p(y^j = v) = Σ_{c : d_j(c) = v} p(c)``: pad to ``b^ℓ`` codes and sum the other ℓ-1 axes of the
    code grid, hierarchically (summing the last axis gives the joint of the leading digits)."""
    check_class_axis(probs, sub, "probs")
    lead = probs.shape[:-1]
    b, ell = sub.base, sub.length
    grid = to_code_space(probs, sub, 0.0)
    if ell == 1:
        return grid.unsqueeze(-2)
    marginals = []
    joint = grid  # joint of digits 0..k over a flattened trailing axis
    for k in range(ell - 1, 0, -1):
        joint = joint.reshape(*lead, b**k, b)
        marginals.append(joint.sum(-2))  # marginal of digit k
        joint = joint.sum(-1)  # joint of digits 0..k-1
    marginals.append(joint)
    return torch.stack(marginals[::-1], dim=-2)


def digit_log_marginals(log_probs: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``log p_θ(y^{i,j} = v | y_t)``: ``(..., C)`` token log-probs → ``(..., ℓ, b)`` in nats.

    Values whose total mass underflows are clamped at ``log(tiny)`` of the dtype (≈ -87.3 nats in
    float32) rather than ``-inf``, so a loss that reads them stays finite. Differentiable."""
    check_class_axis(log_probs, sub, "log_probs")
    tiny = torch.finfo(log_probs.dtype).tiny
    return digit_marginals_from_probs(log_probs.exp(), sub).clamp_min(tiny).log()
