"""Exact likelihood of a decoding order (docs/method.md §5b).

A sampler that reveals one digit at a time, choosing *which* digit by a rule that reads only the
state and the model's own outputs on it (never the data), is a proper distribution over sequences.
Its NLL is exact, not a bound::

    −log p(x) = Σ_{s=1}^{L·ℓ} −log p_θ(y^{d_s} = y_0^{d_s} | y_{s−1})

where ``d_s`` is the digit the order picks in state ``y_{s−1}`` and ``p_θ(· | y)`` is the digit
marginal of the carry-over token distribution (docs/method.md §3). It costs ``L·ℓ`` network calls per
sequence. An "oracle" order that looks at ``x0`` to choose a digit is not a likelihood and is not
offered.

Orders live in :data:`ORDERS` (name → choice function); a choice function receives the digit
log-marginals ``FloatTensor[B, L·ℓ, b]`` of the current state and the mask ``Bool[B, L·ℓ]`` of the
still-hidden digits (nothing else) and returns the flat digit index ``LongTensor[B]`` to reveal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .likelihood import check_model_output, check_tokens_and_subtokenizer
from .schedules import Schedule, get_schedule, time_for_masked_fraction
from .subtokenizer import SubTokenizer
from .validation import check_int

__all__ = ["ORDERS", "DecodingResult", "decoding_likelihood"]

ChoiceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _left_to_right(log_marginals: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The first hidden digit in token-major order (a token's digits most significant first)."""
    return hidden.to(torch.uint8).argmax(-1)


def _confidence(log_marginals: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The hidden digit whose marginal has the largest maximum probability (ties: lowest index)."""
    peak = log_marginals.amax(-1).masked_fill(~hidden, float("-inf"))
    best = peak.amax(-1, keepdim=True)
    # lowest index among the exact maxima (argmax's tie rule is not relied upon)
    return ((peak == best) & hidden).to(torch.uint8).argmax(-1)


ORDERS: dict[str, ChoiceFn] = {"left_to_right": _left_to_right, "confidence": _confidence}
"""Decoding orders by name. Each reads only the model's digit log-marginals and the hidden mask."""


@dataclass
class DecodingResult:
    """Exact NLL of one decoding order.

    Attributes:
        nll: ``FloatTensor[B]`` float64, nats per sequence (``−log p(x)`` under the sampler).
        network_calls: network calls per sequence (``L·ℓ`` for diffusion models, 1 for the
            autoregressive family, whose exact NLL is one causal pass).
        order: the order's name.
    """

    nll: torch.Tensor
    network_calls: int
    order: str


def _check_order(order: object) -> None:
    if not isinstance(order, str) or order not in ORDERS:
        raise ValueError(f"unknown decoding order {order!r}; expected one of {sorted(ORDERS)}")


def _validate(model, x0, sub, order, batch_size) -> None:
    if not callable(model):
        raise TypeError(f"model must be callable as model(y_t, t), got {type(model).__name__}")
    _check_order(order)
    if not isinstance(sub, SubTokenizer):
        raise TypeError(f"sub must be a SubTokenizer, got {type(sub).__name__}")
    check_int("batch_size", batch_size, low=1)
    check_tokens_and_subtokenizer(model, x0, sub)


@torch.no_grad()
def decoding_likelihood(
    model,
    x0: torch.Tensor,
    sub: SubTokenizer,
    *,
    order: str = "left_to_right",
    batch_size: int = 64,
    schedule: Schedule | str | None = None,
    progress: bool = False,
) -> DecodingResult:
    """Exact NLL of ``x0`` under the sampler that reveals one digit at a time in ``order``.

    Args:
        model: ``model(y_t: LongTensor[B, L·ℓ], t: FloatTensor[B]) -> FloatTensor[B, L, C]``; an
            autoregressive model (family with ``exact_likelihood``) is scored by its own exact NLL.
        x0: clean token ids ``LongTensor[B, L]``.
        sub: the model's :class:`SubTokenizer`.
        order: a key of :data:`ORDERS` (``"left_to_right"``, ``"confidence"``).
        batch_size: sequences per network call (all advance in lock-step; the result does not depend
            on it).
        schedule: gives a time-conditioned model its ``t`` from the fraction ``u`` of hidden digits
            (``1 − α(t) = u``; per-digit schedules: the mean ``g_j`` equals ``u``, docs/method.md §2b);
            default the model's own ``schedule``, else linear.
        progress: a tqdm bar on stderr (network calls).

    Returns:
        :class:`DecodingResult` with ``nll`` ``FloatTensor[B]`` (float64, nats per sequence) and
        ``network_calls`` per sequence.
    """
    from .families import family_of

    inner = getattr(model, "module", model)
    if getattr(family_of(model), "exact_likelihood", False):
        _check_order(order)
        return DecodingResult(-inner.log_likelihood(x0).double().cpu(), 1, order)
    _validate(model, x0, sub, order, batch_size)
    if schedule is None:
        schedule = getattr(inner, "schedule", None) or "linear"
    schedule = get_schedule(schedule, length=sub.length)
    choose = ORDERS[order]
    y0_all = sub.encode(x0)  # validates ids; (B, n) token-major
    num_seqs, num_tokens = x0.shape
    n = y0_all.shape[1]
    b, mask_id = sub.base, sub.mask_id
    from tqdm.auto import tqdm

    from .parameterization import carry_over

    parts = []
    with tqdm(total=num_seqs * n, unit="call", desc=f"decoding ({order})", disable=not progress) as bar:
        for start in range(0, num_seqs, batch_size):
            y0 = y0_all[start : start + batch_size]
            rows = y0.shape[0]
            y = torch.full_like(y0, mask_id)
            nll = torch.zeros(rows, dtype=torch.float64)
            arange = torch.arange(rows, device=y.device)
            for step in range(n):
                hidden = y == mask_id
                u = torch.full((rows,), (n - step) / n, dtype=torch.float64)
                t = time_for_masked_fraction(schedule, u).float().to(y.device)
                logits = model(y, t)
                check_model_output(logits, rows, num_tokens, sub)  # shape, dtype, no NaN
                _, marg = carry_over(logits, y, sub)  # (rows, L, ℓ, b)
                marg = marg.reshape(rows, n, b)
                d = choose(marg, hidden)  # reads only the model's outputs and the hidden mask
                if not bool(hidden[arange, d].all()):
                    raise RuntimeError(f"order {order!r} chose a digit that is already revealed")
                true = y0[arange, d]
                nll -= marg[arange, d, true].double().cpu()
                y[arange, d] = true
                bar.update(rows)
            parts.append(nll)
    return DecodingResult(torch.cat(parts), n, order)
