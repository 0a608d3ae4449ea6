"""Exact oracles for tiny problems (MATH.md §5), used by the tests to prove the estimators.

Everything here enumerates: ``C^L`` sequences, ``2^n`` mask patterns of the ``n = L·ℓ`` digits, or
subsets for reveal orders. Keep ``C^L ≤ ~10^4`` and ``n ≤ ~12``.

* :class:`ExactPosterior` — the true posterior ``p(x^i | y_t)`` of a known joint distribution over
  sequences, as a model callable (time-independent), returning logits ``[B, L, C]``.
* :func:`exact_objectives` — ``L_valid`` and ``L_prime`` of any model for one sequence, summing over
  all mask patterns and integrating over time by Gauss–Legendre quadrature in ``u = 1 − α(t)``
  (exact for time-independent models once the quadrature order exceeds ``n``).
* :func:`reveal_order_nll` — for a *time-independent* model, the exact ``−log p_θ(x)`` of its
  continuous-time generative process (digits revealed one at a time in a uniformly random order,
  each drawn from its marginal), and the order-averaged chain-rule NLL, by dynamic programming over
  subsets (equivalent to enumerating all ``n!`` reveal orders).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .objectives import ModelFn, digit_nll, token_and_digit_nll
from .schedules import Schedule, get_schedule
from .subtokenizer import SubTokenizer

__all__ = ["ExactPosterior", "exact_objectives", "reveal_order_nll", "sequence_entropy"]


class ExactPosterior:
    """Exact posterior model of a joint distribution ``probs`` over ``C^L`` sequences.

    Args:
        probs: ``Tensor[C, ..., C]`` (``L`` axes) or flat ``Tensor[C^L]``, non-negative, summing to 1.
        sub: the sub-tokenizer defining which classes a partially seen token may take.
        num_tokens: ``L`` (needed when ``probs`` is flat).

    Calling it with ``(y_t [B, L·ℓ], t [B])`` returns ``log p(x^i = c | y_t)`` as logits
    ``FloatTensor[B, L, C]`` (float64; ``-inf`` where impossible is replaced by a large negative
    number so that carry-over, not the oracle, is what removes inconsistent classes).
    """

    def __init__(self, probs: torch.Tensor, sub: SubTokenizer, num_tokens: int | None = None) -> None:
        probs = torch.as_tensor(probs, dtype=torch.float64)
        c = sub.num_classes
        if num_tokens is None:
            num_tokens = probs.dim()
        if probs.numel() != c**num_tokens:
            raise ValueError(f"probs must have C^L = {c}^{num_tokens} entries, got {probs.numel()}")
        self.probs = probs.reshape(-1)
        self.sub = sub
        self.num_tokens = num_tokens
        # all sequences (C^L, L) and their digits (C^L, L, ℓ)
        grids = torch.cartesian_prod(*[torch.arange(c)] * num_tokens) if num_tokens > 1 else torch.arange(c)[:, None]
        self.sequences = grids.reshape(-1, num_tokens)
        self.digits = sub.digit_table[self.sequences]  # (S, L, ℓ)

    def __call__(self, y_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        y = y_t.unflatten(-1, (self.num_tokens, self.sub.length))  # (B, L, ℓ)
        seen = y != self.sub.mask_id
        agree = (self.digits.unsqueeze(0) == y.unsqueeze(1)) | ~seen.unsqueeze(1)  # (B, S, L, ℓ)
        consistent = agree.flatten(2).all(-1)  # (B, S)
        weights = self.probs.unsqueeze(0) * consistent  # (B, S)
        weights = weights / weights.sum(-1, keepdim=True)
        onehot = torch.nn.functional.one_hot(self.sequences, self.sub.num_classes).double()  # (S, L, C)
        marginals = torch.einsum("bs,slc->blc", weights, onehot)
        return marginals.clamp_min(1e-300).log()


def sequence_entropy(probs: torch.Tensor) -> float:
    """Shannon entropy of a joint pmf in nats."""
    p = torch.as_tensor(probs, dtype=torch.float64).reshape(-1)
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def exact_objectives(
    model: ModelFn,
    x0: torch.Tensor,
    sub: SubTokenizer,
    schedule: Schedule | str = "linear",
    *,
    quadrature_points: int | None = None,
) -> dict[str, float]:
    """Exact continuous-time ``L_valid`` and ``L_prime`` (nats per sequence) of ``model`` at one
    sequence ``x0`` (``LongTensor[L]``).

    Sums over all ``2^n`` mask patterns ``S`` (``n = L·ℓ``) and integrates in ``u = 1 − α(t)``:
    ``Σ_S ∫_0^1 u^{|S|−1} (1−u)^{n−|S|} · terms(S, t(u)) du`` by Gauss–Legendre with
    ``quadrature_points`` nodes (default ``n + 2``, exact for time-independent models).
    """
    schedule = get_schedule(schedule)
    x0 = torch.as_tensor(x0).reshape(1, -1)
    y0 = sub.encode(x0)[0]
    n = y0.numel()
    patterns = torch.tensor(list(itertools.product([False, True], repeat=n)), dtype=torch.bool)[1:]  # (P, n)
    k = patterns.sum(-1).double()
    y = torch.where(patterns, torch.full_like(patterns, sub.mask_id, dtype=torch.long), y0.unsqueeze(0))
    x_rows = x0.expand(y.shape[0], -1)
    nodes, weights = np.polynomial.legendre.leggauss(quadrature_points or n + 2)
    u_nodes = torch.tensor((nodes + 1) / 2, dtype=torch.float64)
    u_weights = torch.tensor(weights / 2, dtype=torch.float64)
    total_valid = torch.zeros((), dtype=torch.float64)
    total_prime = torch.zeros((), dtype=torch.float64)
    for u, wq in zip(u_nodes, u_weights):
        t = schedule.time_from_mask_probability(u.expand(y.shape[0]).clone())
        logits = model(y, t.float())
        dens = u ** (k - 1) * (1 - u) ** (n - k)  # (P,)
        tok, dig = token_and_digit_nll(logits.double(), y, x_rows, sub)
        valid = dig.sum((-1, -2))
        prime = tok.sum(-1)
        total_valid += wq * (dens * valid).sum()
        total_prime += wq * (dens * prime).sum()
    return {"valid": float(total_valid), "prime": float(total_prime)}


def reveal_order_nll(model: ModelFn, x0: torch.Tensor, sub: SubTokenizer) -> dict[str, float]:
    """Exact likelihood of a **time-independent** model's generative process at ``x0`` (``[L]``).

    Returns ``{"nll": −log p_θ(x), "order_averaged_nll": E_σ[−Σ_k log p_θ(y^{σ_k} | revealed)]}``
    over uniformly random reveal orders ``σ`` of the ``n`` digits. The second equals the model's
    ``L_valid`` exactly; the first is ``≤`` it by Jensen's inequality. Dynamic programming over the
    ``2^n`` revealed sets replaces the ``n!`` orders: with ``f(R)`` the probability of revealing the
    remaining digits correctly from revealed set ``R``, ``f(R) = mean_{j∉R} p(y0^j | y_R) f(R ∪ {j})``.
    """
    x0 = torch.as_tensor(x0).reshape(1, -1)
    y0 = sub.encode(x0)[0]
    n = y0.numel()
    states = torch.arange(2**n)
    # bit j of a state set ⇔ digit j revealed
    revealed = ((states.unsqueeze(1) >> torch.arange(n)) & 1).bool()  # (2^n, n)
    y = torch.where(revealed, y0.unsqueeze(0), torch.full_like(revealed, sub.mask_id, dtype=torch.long))
    logits = model(y, torch.zeros(y.shape[0]))
    nll_digits = digit_nll(logits.double(), y, x0.expand(y.shape[0], -1), sub).flatten(1)  # (2^n, n), 0 where seen
    log_f = torch.zeros(2**n, dtype=torch.float64)  # log f(R)
    avg = torch.zeros(2**n, dtype=torch.float64)  # E_σ[-log] from R
    order = sorted(range(2**n), key=lambda s: -bin(s).count("1"))
    for s in order:
        remaining = [j for j in range(n) if not (s >> j) & 1]
        if not remaining:
            continue
        nxt = torch.tensor([s | (1 << j) for j in remaining])
        terms = -nll_digits[s, remaining] + log_f[nxt]
        log_f[s] = torch.logsumexp(terms, 0) - math.log(len(remaining))
        avg[s] = (nll_digits[s, remaining] + avg[nxt]).mean()
    return {"nll": float(-log_f[0]), "order_averaged_nll": float(avg[0])}
