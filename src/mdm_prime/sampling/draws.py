"""Float64 categorical draws by inverse CDF, temperature and top-p (docs/method.md §6).

Draws take their uniforms as an argument so that the caller controls the random stream: the sampler
draws uniforms for *every* row at every step, which makes its output independent of which rows were
recomputed (caching cannot change a sample).
"""

from __future__ import annotations

import torch

__all__ = ["categorical_from_uniform", "nucleus", "process_log_probs"]


def categorical_from_uniform(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from (possibly unnormalised) non-negative ``probs[..., K]`` using
    ``u[...] ∈ [0, 1)`` (``float64``). Returns ``LongTensor[...]`` in ``[0, K)``.

    A zero-probability class is never returned (the CDF is flat there and the comparison is strict);
    a row whose mass is all zero returns 0 (the sampler never reads such rows); ``u = 1`` returns
    the last class with positive mass.
    """
    probs = probs.to(torch.float64)
    cdf = probs.cumsum(-1)
    total = cdf[..., -1:]
    target = u.to(torch.float64).unsqueeze(-1) * total
    idx = torch.searchsorted(cdf.contiguous(), target.contiguous(), right=True).squeeze(-1)
    k = probs.shape[-1]
    over = idx >= k  # only for u = 1 (a float64 u < 1 gives u·total < total): take the last positive class
    if bool(over.any()):
        last_pos = (k - 1) - (probs.flip(-1) > 0).to(torch.int8).argmax(-1)
        idx = torch.where(over, last_pos, idx)
    return idx


def process_log_probs(log_probs: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """Temperature then top-p (nucleus) on log-probabilities ``[..., K]``; returns ``float64`` probabilities.

    ``p ∝ exp(log p / τ)``; then the smallest set of most likely classes whose mass reaches
    ``top_p`` is kept (at least one class) and renormalised. Classes with probability 0 (``-inf``,
    e.g. removed by carry-over) stay at 0 for every ``τ`` and ``top_p``.
    """
    lp = log_probs.to(torch.float64)
    if temperature != 1.0:
        lp = torch.log_softmax(lp / temperature, dim=-1)
    p = lp.exp()
    if top_p < 1.0:
        sorted_p, order = _most_likely(p, top_p)
        before = sorted_p.cumsum(-1) - sorted_p
        keep_sorted = before < top_p
        keep = torch.zeros(p.shape, dtype=torch.bool, device=p.device).scatter(-1, order, keep_sorted)
        p = p * keep
        p = p / p.sum(-1, keepdim=True)
    return p


def _most_likely(p: torch.Tensor, mass, first: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest weights of each row, descending, with their columns, ``k`` large enough that
    every class of the nucleus is among them: the first ``k`` weights sum to at least ``mass`` (a float,
    or one per row ``[..., 1]``) in every row, so the classes after them have ``before >= mass``; else
    the full sort. ``topk`` of a few hundred of 50257 classes costs a fraction of the sort; ``k`` grows
    8-fold until the mass is reached."""
    n = p.shape[-1]
    k = min(first, n)
    while k < n:
        vals, order = p.topk(k, dim=-1, sorted=True)
        if bool((vals.cumsum(-1)[..., -1:] >= mass).all()):  # the cumsum that ``before`` uses
            return vals, order
        k = min(8 * k, n)
    return p.sort(dim=-1, descending=True)


def nucleus(weights: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-p on non-negative, possibly unnormalised ``weights[n, K]``: ``(kept [n, k], classes [n, k])``,
    the ``k`` largest weights of each row in descending order with those outside the nucleus set to 0,
    and their columns. The nucleus is the smallest set of largest weights whose share of the row total
    reaches ``top_p`` (a class is kept when the weights before it sum to less than ``top_p`` times the
    total; at least one), as in :func:`process_log_probs`; ``k`` is only as large as the nucleus needs,
    so a categorical draw from ``kept`` touches ``k`` values, not ``K``."""
    mass = top_p * weights.sum(-1, keepdim=True)
    vals, order = _most_likely(weights, mass)
    before = vals.cumsum(-1) - vals
    return vals * (before < mass), order
