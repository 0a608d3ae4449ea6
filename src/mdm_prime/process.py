"""Forward process: independent masking of every sub-token, and time sampling (``docs/method.md §2``).

Shapes: sub-token sequences are ``LongTensor[B, N]`` with ``N = L·ℓ`` (or any ``(B, ...)`` shape,
e.g. image digits ``(B, ch·ℓ, H, W)``); times are ``FloatTensor[B]``, one per sequence.
"""

from __future__ import annotations

import torch

from .schedules import DigitSchedules, Schedule, is_per_digit

__all__ = ["sample_times", "training_noise", "mask_subtokens", "mask_k_subtokens"]


def sample_times(
    batch_size: int,
    *,
    eps: float = 1e-3,
    stratified: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``FloatTensor[B]`` of times in ``[eps, 1]``.

    Stratified (default): ``t_k = (u + k/B) mod 1`` with one shared ``u ~ U[0,1)``, so the batch
    covers ``[0, 1]`` evenly; then clipped to ``[eps, 1]`` to bound the ``1/t`` weight.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    if stratified:
        u = torch.rand((), generator=generator, device=device)
        t = (u + torch.arange(batch_size, device=device) / batch_size) % 1.0
    else:
        t = torch.rand(batch_size, generator=generator, device=device)
    return t.clamp(min=eps, max=1.0)


def training_noise(
    batch_size: int, num_digits: int, *, eps: float = 1e-3, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise of one training step, drawn in advance on the CPU: stratified times
    ``FloatTensor[B]`` (:func:`sample_times`), then mask uniforms ``FloatTensor[B, num_digits]``
    (for :func:`mask_subtokens`'s ``uniforms``), in that order from ``generator``."""
    t = sample_times(batch_size, eps=eps, generator=generator)
    return t, torch.rand(batch_size, num_digits, generator=generator)


def mask_subtokens(
    y0: torch.Tensor,
    t: torch.Tensor,
    schedule: Schedule | DigitSchedules,
    mask_id: int,
    *,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mask each sub-token of ``y0`` (``LongTensor[B, ...]``) independently with probability
    ``1 - α(t_b)`` (``t``: ``FloatTensor[B]``). Returns ``y_t`` with masked entries set to ``mask_id``.

    ``uniforms``: noise drawn in advance, ``FloatTensor`` of ``y0``'s shape in ``[0, 1)``; entry ``u``
    masks its sub-token when ``u < 1 − α(t)``. Without it, fresh uniforms come from ``generator``.
    (The trainer draws its noise for the whole global batch and passes each process its slice.)

    Per-digit schedules (:class:`~mdm_prime.schedules.DigitSchedules`, docs/method.md §2b): digit ``j``
    of every token is masked with probability ``g_j(t_b)``; the digit axis is axis 1 (text
    ``[B, L·ℓ]``: position ``i·ℓ + j``; images ``[B, ch·ℓ, H, W]``: channel ``c·ℓ + j``)."""
    if t.dim() != 1 or t.shape[0] != y0.shape[0]:
        raise ValueError(f"t must have shape ({y0.shape[0]},) (one time per sequence), got {tuple(t.shape)}")
    if is_per_digit(schedule):
        per_digit = schedule.mask_probability(t.float())  # (B, ℓ)
        if y0.dim() < 2:
            raise ValueError(f"per-digit schedules need a digit axis: y0 of shape {tuple(y0.shape)}")
        p_mask = schedule.per_position(per_digit, y0.shape[1]).view(*y0.shape[:2], *([1] * (y0.dim() - 2)))
    else:
        p_mask = schedule.mask_probability(t.float()).view(-1, *([1] * (y0.dim() - 1)))
    if uniforms is None:
        uniforms = torch.rand(y0.shape, generator=generator, device=y0.device)
    elif not isinstance(uniforms, torch.Tensor) or tuple(uniforms.shape) != tuple(y0.shape):
        got = tuple(uniforms.shape) if isinstance(uniforms, torch.Tensor) else type(uniforms).__name__
        raise ValueError(f"uniforms must be a tensor of y0's shape {tuple(y0.shape)}, got {got}")
    return torch.where(uniforms < p_mask, torch.full_like(y0, mask_id), y0)


def mask_k_subtokens(
    y0: torch.Tensor, k: torch.Tensor, mask_id: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mask a uniformly random subset of exactly ``k_b`` sub-tokens in each row of ``y0``
    (``LongTensor[B, N]``, ``k``: ``LongTensor[B]`` with ``0 ≤ k_b ≤ N``)."""
    b, n = y0.shape
    scores = torch.rand((b, n), generator=generator, device=y0.device)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a uniform random permutation per row
    masked = ranks < k.view(-1, 1).to(y0.device)
    return torch.where(masked, torch.full_like(y0, mask_id), y0)
