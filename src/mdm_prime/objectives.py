"""Objectives (``docs/method.md §4–5``): the paper's training loss ``L_prime`` and the valid bound ``L_valid``.

Both are sums over a sequence, in **nats per sequence**. Given a masked sub-token sequence ``y_t`` and
the clean tokens ``x0``:

* ``L_prime`` term: ``Σ_i −log p_θ(x0^i | y_t)`` over tokens (fully seen tokens contribute 0).
  A proper scoring rule (a sound training loss for any ℓ) but **not** a likelihood bound for ℓ > 1.
* ``L_valid`` term: ``Σ_i Σ_{j : y_t^{i,j} = m} −log p_θ(y0^{i,j} | y_t)``, each masked digit scored
  by its marginal. The continuous-time negative ELBO: ``L_valid ≥ −log p_θ(x)`` for every θ.

Each term is multiplied by a per-sequence weight: ``w(t)`` when ``t`` is sampled uniformly, or
``n/k`` for the integrated-over-``t`` estimator (``n = L·ℓ`` digits, ``k`` masked). For ℓ = 1 both
reduce exactly to the MDLM NELBO, through the same code (``ℓ = 1`` is not a separate branch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .parameterization import carry_over_nll
from .process import mask_subtokens, sample_times
from .schedules import DigitSchedules, Schedule, get_schedule, is_per_digit
from .subtokenizer import SubTokenizer

__all__ = [
    "token_nll",
    "digit_nll",
    "token_and_digit_nll",
    "sequence_terms",
    "diffusion_loss",
    "DiffusionLoss",
    "ModelFn",
    "OBJECTIVES",
    "WEIGHTINGS",
    "check_weighting",
    "per_digit_weighted_terms",
]

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``model(y_t: LongTensor[B, L·ℓ], t: FloatTensor[B]) -> logits FloatTensor[B, L, C]``."""

OBJECTIVES = ("prime", "valid")

WEIGHTINGS = ("elbo", "unweighted", "mixture")
"""Training weightings of :func:`diffusion_loss` (``docs/method.md §4b``): ``elbo`` (``w(t)`` times the
objective's terms, the default), ``unweighted`` (the terms averaged per masked digit / token, no
``w(t)``) and ``mixture`` (``w(t)`` times ``(1 − mix)·L_prime + mix·L_valid`` terms)."""


def check_weighting(weighting: str, mix: float, objective: str = "prime") -> None:
    """ValueError unless ``weighting`` is one of :data:`WEIGHTINGS`, ``mix`` a number in ``[0, 1]``
    and ``objective`` one of :data:`OBJECTIVES` (``"prime"``, its default, for ``mixture``, which
    mixes both objectives itself: ``mix = 1`` is ``L_valid``)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
    if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be a number in [0, 1], got {mix!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")
    if weighting == "mixture" and objective != "prime":
        raise ValueError(
            f"weighting 'mixture' mixes both objectives by mix (mix=0: prime, mix=1: valid); leave "
            f"objective at 'prime', got objective={objective!r}"
        )


def token_nll(logits: torch.Tensor, y_t: torch.Tensor, x0: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``−log p_θ(x0^i | y_t)`` with carry-over: ``FloatTensor[B, L]`` in nats (0 for fully seen tokens).

    Args:
        logits: ``FloatTensor[B, L, C]`` (float64 is computed in float64, every other floating dtype
            in float32, result float32); y_t: ``LongTensor[B, L·ℓ]``; x0: ``LongTensor[B, L]``.
    """
    return carry_over_nll(logits, y_t, x0, sub, digits=False)[0]


def digit_nll(logits: torch.Tensor, y_t: torch.Tensor, x0: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``−log p_θ(y0^{i,j} | y_t)`` from the carry-over digit marginals, for masked digits only:
    ``FloatTensor[B, L, ℓ]`` in nats, exactly 0 where the digit is seen (capped at ``−log(tiny)``
    of the dtype, as a marginal clamped at ``tiny``)."""
    return carry_over_nll(logits, y_t, x0, sub, tokens=False)[1]


def token_and_digit_nll(
    logits: torch.Tensor, y_t: torch.Tensor, x0: torch.Tensor, sub: SubTokenizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token_nll, digit_nll)`` sharing one pass over the logits (see those functions)."""
    return carry_over_nll(logits, y_t, x0, sub)


def sequence_terms(
    logits: torch.Tensor, y_t: torch.Tensor, x0: torch.Tensor, sub: SubTokenizer, objective: str
) -> torch.Tensor:
    """Unweighted per-sequence sum of the chosen objective's terms: ``FloatTensor[B]`` in nats."""
    if objective == "prime":
        return token_nll(logits, y_t, x0, sub).sum(-1)
    if objective == "valid":
        return digit_nll(logits, y_t, x0, sub).sum((-1, -2))
    raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")


def per_digit_weighted_terms(
    tok: torch.Tensor, dig: torch.Tensor, masked: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-digit-schedule weighting of one draw (docs/method.md §2b): ``(L_prime, L_valid)`` terms
    ``FloatTensor[B]`` in nats per sequence (times 1/time from the weights).

    ``L_valid``: ``Σ_{(i,j) masked} w_j · dig[i, j]``; ``L_prime``: ``Σ_i w̄_i · tok[i]`` with ``w̄_i``
    the mean of ``w_j`` over the masked digits of token ``i`` (``0`` for a fully seen token, whose term
    is 0 anyway).

    Args: ``tok`` ``[B, L]`` token NLLs; ``dig`` ``[B, L, ℓ]`` digit NLLs (0 where seen); ``masked``
    ``Bool[B, L, ℓ]``; ``w`` the per-digit weights, ``[B, ℓ]`` (one per digit position) or ``[B, L, ℓ]``.
    """
    if w.dim() == 2:
        w = w.unsqueeze(1)
    w = w.to(dig.dtype)
    valid = (w * dig).sum((-1, -2))
    m = masked.to(dig.dtype)
    count = m.sum(-1)
    w_bar = (w * m).sum(-1) / count.clamp(min=1)
    prime = (w_bar.to(tok.dtype) * tok).sum(-1)
    return prime, valid


@dataclass
class DiffusionLoss:
    """Result of :func:`diffusion_loss`. ``per_sequence``: ``FloatTensor[B]`` in nats per sequence
    (weighted); ``t``: the times used; ``y_t``: the masked input; ``loss``: mean over the batch."""

    loss: torch.Tensor
    per_sequence: torch.Tensor
    t: torch.Tensor
    y_t: torch.Tensor


def diffusion_loss(
    model: ModelFn,
    x0: torch.Tensor,
    sub: SubTokenizer,
    schedule: Schedule | DigitSchedules | str = "linear",
    *,
    objective: str = "prime",
    t: torch.Tensor | None = None,
    uniforms: torch.Tensor | None = None,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
    weighting: str = "elbo",
    mix: float = 0.5,
) -> DiffusionLoss:
    """One Monte Carlo draw of the continuous-time objective for training:
    ``w(t) · sequence_terms(model(y_t, t), ...)`` with stratified ``t ∈ [eps, 1]``.

    Args:
        model: ``model(y_t, t) -> logits [B, L, C]``.
        x0: clean tokens ``LongTensor[B, L]``.
        objective: ``"prime"`` (paper's loss, default for training) or ``"valid"`` (the bound).
        t: times drawn in advance, ``FloatTensor[B]`` (default: stratified from ``generator``).
        uniforms: mask noise drawn in advance, ``FloatTensor[B, L·ℓ]`` in ``[0, 1)`` (see
            :func:`~mdm_prime.process.mask_subtokens`; default: fresh draws from ``generator``).
            With both ``t`` and ``uniforms`` given the result is a deterministic function of them:
            the trainer calls this function with its own reproducible draws.
        weighting: how the terms of one sequence are weighted (``docs/method.md §4b``; every weighting
            is scored by the same valid bound, only the training signal changes):

            * ``"elbo"`` (default): ``w(t) · sequence_terms(objective)``, nats per sequence (``w`` in
              1/time; its expectation over ``t`` is the objective itself).
            * ``"unweighted"``: no ``w(t)``. ``objective="valid"``: the masked digits' cross-entropies
              ``−log p_θ(y0^{i,j} | y_t)`` summed over the sequence and divided by the number ``k`` of
              masked digits of that sequence (``k = #{(i, j) : y_t^{i,j} = m}``): nats per masked digit,
              one value per sequence. ``objective="prime"``: the token terms ``−log p_θ(x0^i | y_t)``
              divided by the number of tokens with at least one masked digit: nats per masked token. A
              sequence with nothing masked contributes exactly 0 (no division by zero).
            * ``"mixture"``: ``w(t) · ((1 − mix) · L_prime terms + mix · L_valid terms)``, nats per
              sequence; ``objective`` must stay ``"prime"`` (its default; the mixture has both).
        mix: the weight of ``L_valid`` in ``"mixture"``, a number in ``[0, 1]`` (``0``: ``L_prime``,
            ``1``: ``L_valid``); checked always, used only by ``"mixture"``.

    ``weighting``, ``mix`` and ``objective`` are checked before any work (ValueError listing
    :data:`WEIGHTINGS` / :data:`OBJECTIVES`).

    Per-digit schedules (``"leading:A"``, ``"digits:…"``, a :class:`DigitSchedules`; docs/method.md §2b):
    digit ``j`` is masked with ``g_j(t)``; ``"elbo"`` weights the valid terms by ``w_j(t)`` per digit
    and each prime token term by ``w̄_i(t)``, the mean of ``w_j(t)`` over its masked digits (see
    :func:`per_digit_weighted_terms`); ``"mixture"`` mixes those two; ``"unweighted"`` is unchanged.
    """
    check_weighting(weighting, mix, objective)
    schedule = get_schedule(schedule, length=sub.length)
    if t is None:
        t = sample_times(x0.shape[0], eps=eps, generator=generator, device=x0.device)
    y0 = sub.encode(x0)
    y_t = mask_subtokens(y0, t, schedule, sub.mask_id, generator=generator, uniforms=uniforms)
    logits = model(y_t, t)
    if is_per_digit(schedule) and weighting != "unweighted":
        tok, dig = token_and_digit_nll(logits, y_t, x0, sub)
        masked = (y_t == sub.mask_id).unflatten(-1, (-1, sub.length))  # BoolTensor[B, L, ℓ]
        prime, valid = per_digit_weighted_terms(tok, dig, masked, schedule.weight(t.float()))
        if weighting == "mixture":
            per_seq = (1.0 - mix) * prime + mix * valid
        else:
            per_seq = prime if objective == "prime" else valid
    elif weighting == "elbo":
        per_seq = schedule.weight(t.float()) * sequence_terms(logits, y_t, x0, sub, objective)
    elif weighting == "mixture":
        tok, dig = token_and_digit_nll(logits, y_t, x0, sub)
        terms = (1.0 - mix) * tok.sum(-1) + mix * dig.sum((-1, -2))
        per_seq = schedule.weight(t.float()) * terms
    else:  # unweighted: per masked digit (valid) or per masked token (prime)
        masked = (y_t == sub.mask_id).unflatten(-1, (-1, sub.length))  # BoolTensor[B, L, ℓ]
        count = masked.any(-1).sum(-1) if objective == "prime" else masked.sum((-1, -2))  # LongTensor[B]
        terms = sequence_terms(logits, y_t, x0, sub, objective)
        per_seq = torch.where(count > 0, terms / count.clamp(min=1).to(terms.dtype), torch.zeros_like(terms))
    return DiffusionLoss(loss=per_seq.mean(), per_sequence=per_seq, t=t, y_t=y_t)
