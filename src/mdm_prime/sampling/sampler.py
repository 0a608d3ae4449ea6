"""The MDM-Prime samplers (docs/method.md §6): joint (default) and per-digit, optional corrector, per-sequence
caching with idle-step accounting, and conditioning.

One step ``t_k → t_{k+1} = s`` of the **joint** sampler, per sequence:

1. ``p^i = p_θ(x^i | y_t)`` per token (carry-over applied, then temperature and top-p);
2. draw ``x̂^i ~ p^i`` (``float64`` inverse CDF), encode it — only for the tokens with a digit
   revealed in this step (**Draws** below);
3. each masked digit independently becomes ``d_j(x̂^i)`` with probability ``(α_s − α_t)/(1 − α_t)``,
   else stays masked; at the last step every masked digit is filled from ``x̂``. With per-digit
   schedules (docs/method.md §2b) a masked digit at position ``j`` uses its own
   ``(g_j(t) − g_j(s)) / g_j(t)``, ``g_j = 1 − α_j``; everything else is unchanged.

Seen digits never change, and because ``x̂^i`` is drawn from the carry-over distribution (consistent
with every seen digit of token ``i``), all digits of a token always agree with one valid class: a
decoded token is never an invalid code.

**Caching.** With a time-independent model (``model.time_conditioned`` false, or the caller's
``time_conditioned=False``) the network
output depends only on ``y_t``; a sequence whose digits did not change since its last network call
reuses its cached distribution, and only the sequences that changed are batched into the next call.
A sequence with no masked digit left needs no call at all. ``cache=False`` calls the network on every
sequence at every step (the baseline). All randomness is drawn for every row at every step, in a
fixed order, so the same seed gives the same samples with caching on or off (given a model whose
per-row output does not depend on the batch it is evaluated in).

**Corrector** (``corrector_scale = a > 0``). docs/method.md §6 gives the jump rates
``u = (1+κ) w(t) δ_x̂ + κ (−α'_t/α_t) δ_m``; they are read here as the rates of the whole
predictor–corrector step (the discrete-flow-matching reading, in which the "1" of ``1+κ`` is the
predictor): a masked digit unmasks to ``d_j(x̂)`` with probability ``1 − exp(−h(1+κ)w(t))`` and a seen,
non-fixed digit is remasked with probability ``1 − exp(−hκ(−α'_t/α_t))``, ``h = t − s``, ``x̂`` from the
same network call. Adding the corrector *on top of* the exact predictor probability would unmask at
rate ``(2+κ)w`` and no longer follow the schedule's marginals. ``κ = 0`` at ``t ∈ {0, 1}``.

**Draws.** The cache keeps, per sequence, the logits of its last call in the model's dtype (the tokens
that still had a masked digit; ``4·B·L·C`` bytes for float32 logits) and each token's largest logit.
A step computes only the tokens with a digit revealed in it: their logits over the box of classes that
agree with their seen digits (``b^k`` classes for ``k`` hidden digits, all ``C`` for a fully masked
token) are converted to ``float64``, shifted by their maximum, divided by ``τ`` and exponentiated
once; top-p takes the ``k`` largest weights (``topk``, ``k`` grown until the nucleus mass is reached)
and the class is drawn by inverse CDF over the box, or over the ``k`` kept weights. Blocks hold at
most ``_DRAW_ELEMENTS`` float64 values, so no ``float64[B, L, C]`` tensor exists; the law is that of
the carry-over distribution with temperature and top-p, as before (``tests/sampling``, chi-square,
also at ``C = 50257``). At the network call the NaN check reads each open token's largest logit over
its box: a NaN, ``+inf`` or no finite logit raises there.

**Recording** (``record=True``, for animations): the digits ``y_t`` before the first step and after
each step, ``[T+1, B, L·ℓ]`` on the CPU in the smallest integer type that holds the mask id
(``uint8`` for ``b < 256``), and which rows called the network at each step, ``Bool[T, B]``.
``on_step(k, y)`` is called after step ``k`` with the current digits. Both are off by default and
cost nothing then.

**Code** (after SEDD's ``Predictor`` registry and ``pc_sampler``): :func:`sample` checks its
arguments and runs a short loop over the grid. Per ``method`` a :class:`RevealRule` (registry
``register_reveal_rule`` / ``get_reveal_rule``: :class:`JointReveal`, :class:`PerDigitReveal`) gives the
values of the revealed digits and what the cache holds; a :class:`JumpRule` (``register_jump_rule`` /
``get_jump_rule``: :class:`PredictorJump`, or :class:`CorrectorJump` when ``corrector_scale > 0``)
decides which digits jump. ``_SequenceCache`` makes the network calls and holds the per-sequence cache
and call counts; ``_Recorder`` keeps the trajectory and calls ``on_step``.

**Counters** (per sequence): ``network_calls`` (rows of network evaluations spent on that sequence)
and ``idle_steps`` (steps in which none of its digits changed). For the joint sampler without
corrector and with caching, ``network_calls + idle_steps = T`` for every sequence with at least one
free digit: a call happens at step 0 and after each step that changed the sequence, except the one
that revealed its last digit.
"""

from __future__ import annotations

import abc
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..parameterization import (
    carry_over_log_probs,
    consistency_log_mask,
    digit_marginals_from_probs,
    token_boxes,
)
from ..schedules import DigitSchedules, Schedule, get_schedule, is_per_digit
from ..subtokenizer import SubTokenizer
from ..validation import check_choice, check_int, check_number, is_int
from .conditioning import Condition
from .draws import categorical_from_uniform, nucleus, process_log_probs
from .grids import corrector_kappa, time_grid

__all__ = [
    "MAX_STEPS_PER_DIGIT",
    "METHODS",
    "JumpRule",
    "RevealRule",
    "SampleResult",
    "check_step_count",
    "get_jump_rule",
    "get_reveal_rule",
    "register_jump_rule",
    "register_reveal_rule",
    "reveal_rule_names",
    "sample",
]

MAX_STEPS_PER_DIGIT = 64  # T > 64·L·ℓ is refused: see check_step_count


@dataclass
class SampleResult:
    """Output of :func:`sample`.

    Attributes:
        tokens: ``LongTensor[B, L]`` decoded samples (always valid classes ``0..C-1``).
        subtokens: ``LongTensor[B, L·ℓ]`` final digits (no mask left).
        network_calls: ``LongTensor[B]`` network evaluations spent on each sequence.
        idle_steps: ``LongTensor[B]`` steps in which no digit of the sequence changed.
        free_digits: ``LongTensor[B]`` digits not fixed by conditioning (the ``N`` of the closed form).
        steps: number of steps ``T``.
        wall_time: seconds spent in :func:`sample` (wall clock).
        time_grid: ``float64[T+1]`` the grid used, from 1 to 0.
        trajectory: with ``record=True``, the digits before the first step and after each step,
            ``[T+1, B, L·ℓ]`` (CPU; ``uint8``/``int16``/``int32``, the smallest holding the mask id
            ``b``); else ``None``. ``trajectory[-1] == subtokens``.
        trajectory_calls: with ``record=True``, ``Bool[T, B]``: the rows the network was called on at
            each step (their sum over steps is ``network_calls``); else ``None``.
    """

    tokens: torch.Tensor
    subtokens: torch.Tensor
    network_calls: torch.Tensor
    idle_steps: torch.Tensor
    free_digits: torch.Tensor
    steps: int
    wall_time: float
    time_grid: torch.Tensor = field(repr=False)
    trajectory: torch.Tensor | None = field(default=None, repr=False)
    trajectory_calls: torch.Tensor | None = field(default=None, repr=False)

    @property
    def idle_fraction(self) -> float:
        """Mean fraction of steps that were idle, over the batch."""
        return float(self.idle_steps.double().mean()) / self.steps

    @property
    def call_fraction(self) -> float:
        """Mean network calls per sequence divided by ``T`` (1.0 without caching)."""
        return float(self.network_calls.double().mean()) / self.steps


def _check_number(name: str, value: object, low: float, high: float, low_open: bool = True) -> float:
    """A number in ``(low, high]`` (``[low, high]``), infinities allowed where the bounds hold them:
    TypeError for a non-number (NaN included), ValueError out of range."""
    return float(check_number(name, value, low, high, low_open=low_open, finite=False, type_error=True))


def check_step_count(steps: int, num_tokens: int, ell: int, name: str = "steps") -> None:
    """Refuse ``steps > 64·L·ℓ`` (``MAX_STEPS_PER_DIGIT`` per digit) before any work.

    ``L·ℓ`` digits are revealed in all; without a corrector at most ``L·ℓ`` steps change anything, so
    a step count 64 times larger only adds idle steps (and a ``float64[T+1]`` grid: ``T = 10^8`` alone
    is 0.8 GB). ``name`` is how the caller spells the option (``--steps`` on the command line).
    """
    limit = MAX_STEPS_PER_DIGIT * num_tokens * ell
    if steps > limit:
        raise ValueError(
            f"{name}={steps} is more than 64·L·ℓ = 64·{num_tokens}·{ell} = {limit}: only "
            f"L·ℓ = {num_tokens * ell} digits are revealed, so no schedule can use more steps than that "
            f"(the rest are idle); use {name} <= {limit}"
        )


def _tokens_for_step_check(
    sub: SubTokenizer, num_tokens: int | None, condition: Condition | None
) -> int | None:
    """``L`` when it can be read without validating the shape (that comes later), else ``None``."""
    if is_int(num_tokens, low=1):
        return num_tokens
    fixed = condition[0] if isinstance(condition, tuple) and len(condition) == 2 else None
    if isinstance(fixed, torch.Tensor) and fixed.dim() == 2 and fixed.shape[1] >= sub.length:
        return fixed.shape[1] // sub.length
    return None


def _resolve_shape(
    sub: SubTokenizer, num_samples: int | None, num_tokens: int | None, condition: Condition | None
) -> tuple[int, int]:
    for name, v in (("num_samples", num_samples), ("num_tokens", num_tokens)):
        check_int(name, v, low=1, allow_none=True)
    if condition is None:
        if num_samples is None or num_tokens is None:
            raise ValueError("give num_samples and num_tokens, or a condition (which fixes the shape)")
        return num_samples, num_tokens
    if not isinstance(condition, tuple) or len(condition) != 2:
        raise TypeError(f"condition must be a Condition(fixed, values), got {type(condition).__name__}")
    fixed, values = condition
    if not isinstance(fixed, torch.Tensor) or fixed.dtype != torch.bool:
        raise TypeError(
            f"condition.fixed must be a bool tensor, got {getattr(fixed, 'dtype', type(fixed).__name__)}"
        )
    if not isinstance(values, torch.Tensor) or values.dtype.is_floating_point or values.dtype == torch.bool:
        raise TypeError(
            f"condition.values must be an integer tensor, got {getattr(values, 'dtype', type(values).__name__)}"
        )
    if fixed.dim() != 2 or fixed.shape != values.shape or fixed.shape[1] % sub.length:
        raise ValueError(
            f"condition.fixed and .values must both have shape (B, L·ℓ) with ℓ={sub.length}, "
            f"got {tuple(fixed.shape)} and {tuple(values.shape)}"
        )
    b, n = fixed.shape
    if num_samples is not None and num_samples != b:
        raise ValueError(f"num_samples={num_samples} but the condition has {b} rows")
    if num_tokens is not None and num_tokens * sub.length != n:
        raise ValueError(f"num_tokens={num_tokens} but the condition has {n} digits (ℓ={sub.length})")
    given = values[fixed]
    if given.numel() and (int(given.min()) < 0 or int(given.max()) >= sub.base):
        bad = int(given.min()) if int(given.min()) < 0 else int(given.max())
        raise ValueError(
            f"fixed digit values must lie in [0, {sub.base - 1}] (base b={sub.base}), found {bad}"
        )
    return b, n // sub.length


# ---------------------------------------------------------------------------------------------------
# Reveal rules: the values the revealed digits take (one per ``method``)
# ---------------------------------------------------------------------------------------------------

_REVEAL_RULES: dict[str, type[RevealRule]] = {}


def _add(table: dict[str, type], name: str, cls: type) -> type:
    if name in table:
        raise ValueError(f"{name!r} is already registered as {table[name].__name__}")
    table[name] = cls
    return cls


def register_reveal_rule(name: str) -> Callable[[type[RevealRule]], type[RevealRule]]:
    """Class decorator: make a :class:`RevealRule` the sampler's ``method=name``."""
    return lambda cls: _add(_REVEAL_RULES, name, cls)


def reveal_rule_names() -> tuple[str, ...]:
    """The names of every registered reveal rule (the built-in :data:`METHODS` and any added since)."""
    return tuple(_REVEAL_RULES)


def get_reveal_rule(method: str) -> type[RevealRule]:
    """The :class:`RevealRule` of ``method``; ValueError naming the registered methods otherwise."""
    check_choice("method", method, tuple(_REVEAL_RULES))
    return _REVEAL_RULES[method]


class RevealRule:
    """What the digits revealed at a step become.

    The loop of :func:`sample` draws the uniforms of every row at every step (``u_token``
    ``float64[B, L]``, then ``u_jump``, then :meth:`digit_uniforms`) and keeps, per row, the logits of
    its last network call (:class:`_SequenceCache`); :meth:`apply` computes only the tokens with a digit
    revealed this step: their carry-over log-probabilities in ``float64`` over the box of classes that
    agree with their seen digits (all ``C`` classes for a fully masked token), in blocks of at most
    ``_DRAW_ELEMENTS`` values, and hands them to :meth:`token_values`.

    Args: ``sub`` the sub-tokenizer; ``temperature_fn`` the caller's ``τ(t)``, or ``None`` for a
    constant temperature; ``top_p`` the nucleus mass; ``device`` where the digits live.
    """

    full_width = False
    """``True``: :meth:`token_values` builds ``C``-wide rows for every token: blocks hold fewer tokens."""

    def __init__(
        self, sub: SubTokenizer, temperature_fn: Callable[[float], float] | None, top_p: float, device
    ) -> None:
        self.sub, self.top_p = sub, top_p
        self.digit_table = sub.table("digit_table", device)  # (C, ℓ)

    def digit_uniforms(self, batch: int, length: int, rand_opts: dict) -> torch.Tensor | None:
        """Extra uniforms drawn for every row after ``u_jump`` (``None``: the rule needs none)."""
        return None

    def token_values(self, logits, cls, reveal, u_token, u_digit, tau: float) -> torch.Tensor:
        """Digit values ``LongTensor[n, ℓ]`` of ``n`` tokens (only those in ``reveal`` ``Bool[n, ℓ]``
        are read) from their logits ``float64[n, K]`` over the classes ``cls`` ``LongTensor[n, K]``
        (their box; ``-1`` marks an invalid code, whose logit is ``-inf``; ``None``: ``K = C``, every
        class in order), shifted so that each row's largest is 0 (their softmax is the carry-over
        distribution), and their uniforms
        ``u_token`` ``float64[n]``, ``u_digit`` ``float64[n, ℓ]`` (or ``None``). The logits are the
        rule's own copy (it may work in place). A rule overrides this or :meth:`values`."""
        raise NotImplementedError(f"{type(self).__name__} must define token_values or values")

    def values(self, probs, reveal, u_token, u_digit, tau: float) -> torch.Tensor:
        """The whole-row hook (slower; kept for rules written before the per-token draw): digit values
        ``LongTensor[A, L·ℓ]`` of the ``A`` rows with a revealed digit (only those in ``reveal`` are
        read) from their processed probabilities ``float64[A, L, C]`` (carry-over, then temperature
        and top-p) and their rows of the uniforms (``u_digit`` may be ``None``). A rule that overrides
        it is called with those instead of :meth:`token_values`."""
        raise NotImplementedError(f"{type(self).__name__} must define token_values or values")

    def apply(self, y, reveal, store, u_token, u_digit, tau: float) -> torch.Tensor:
        """A copy of the digits ``y`` with those in ``reveal`` (``Bool[B, L·ℓ]``) set to their values;
        only the tokens with a revealed digit are computed, from the logits kept in ``store``."""
        if type(self).values is not RevealRule.values:
            return self._apply_rows(y, reveal, store, u_token, u_digit, tau)
        ell = self.sub.length
        batch, n_dig = y.shape
        y_new = y.clone()
        rev = reveal.view(batch, n_dig // ell, ell)
        rows, pos = rev.any(-1).nonzero(as_tuple=True)
        if rows.numel() == 0:
            return y_new
        y_tok, rev_tok = y.view(rev.shape)[rows, pos], rev[rows, pos]  # (n, ℓ)
        values = y_tok.clone()
        for _, idx, cls in token_boxes(y_tok, self.sub):
            width = self.sub.num_classes if cls is None or self.full_width else cls.shape[1]
            block = max(1, _DRAW_ELEMENTS // width)
            for s in range(0, idx.numel(), block):
                ii = idx[s : s + block]
                c = None if cls is None else cls[s : s + block]
                r, q = rows[ii], pos[ii]
                z = store.logits(r, q, c).to(torch.float64)
                if c is None:
                    z.sub_(store.top[r, q].to(torch.float64).unsqueeze(1))  # kept at the call
                else:
                    z.masked_fill_(c < 0, float("-inf"))
                    z.sub_(z.amax(-1, keepdim=True))
                u_d = None if u_digit is None else u_digit[r, q]
                values[ii] = self.token_values(z, c, rev_tok[ii], u_token[r, q], u_d, tau)
        y_new.view(rev.shape)[rows, pos] = torch.where(rev_tok, values, y_tok)
        return y_new

    def _apply_rows(self, y, reveal, store, u_token, u_digit, tau: float) -> torch.Tensor:
        """:meth:`apply` through the whole-row :meth:`values` hook."""
        y_new = y.clone()
        act = reveal.any(-1).nonzero().squeeze(1)
        if act.numel():
            y_a, rev_a = y.index_select(0, act), reveal.index_select(0, act)
            z = store.store[act].to(torch.float64)
            probs = process_log_probs(carry_over_log_probs(z, y_a, self.sub), tau, self.top_p)
            u_digit_a = None if u_digit is None else u_digit.index_select(0, act)
            values = self.values(probs, rev_a, u_token.index_select(0, act), u_digit_a, tau)
            y_new.index_copy_(0, act, torch.where(rev_a, values, y_a))
        return y_new


_DRAW_ELEMENTS = 2**21
"""Values per ``float64`` block of a draw (16 MB): 41 fully masked tokens at C = 50257."""


@register_reveal_rule("joint")
class JointReveal(RevealRule):
    """The joint sampler (docs/method.md §6, the default): draw ``x̂^i ~ p^i`` (temperature and top-p
    on the carry-over token distribution, over the classes that agree with the seen digits) and reveal
    digits of ``x̂^i``."""

    def token_values(self, logits, cls, reveal, u_token, u_digit, tau):
        # p ∝ exp(z/τ) over the box, unnormalised (the inverse CDF scales u by the total)
        if tau != 1.0:
            logits.div_(tau)
        weights = logits.exp_()  # the largest logit is 0: no overflow
        if self.top_p < 1.0:
            weights, classes = nucleus(weights, self.top_p)  # (n, k), zero outside the nucleus
            x_hat = classes.gather(1, categorical_from_uniform(weights, u_token)[:, None]).squeeze(1)
        else:
            x_hat = categorical_from_uniform(weights, u_token)
        if cls is not None:
            x_hat = cls.gather(1, x_hat[:, None]).squeeze(1)
        return self.digit_table[x_hat]  # (n, ℓ)


@register_reveal_rule("per_digit")
class PerDigitReveal(RevealRule):
    """The per-digit sampler: each revealed digit from its marginal (see :func:`_per_digit_values`);
    temperature and top-p act on the digit marginals."""

    full_width = True

    def digit_uniforms(self, batch, length, rand_opts):
        return torch.rand((batch, length, self.sub.length), **rand_opts)

    def token_values(self, logits, cls, reveal, u_token, u_digit, tau):
        n, ell = reveal.shape
        probs = torch.softmax(logits, -1)
        if cls is not None:  # the box's probabilities at their classes, 0 elsewhere (invalid codes add 0)
            full = torch.zeros(n, self.sub.num_classes, dtype=probs.dtype, device=probs.device)
            probs = full.scatter_add_(1, cls.clamp_min(0), probs)
        return _per_digit_values(
            probs.unsqueeze(1), reveal, u_digit.view(n, 1, ell), self.sub, tau, self.top_p
        )


def _per_digit_values(
    probs: torch.Tensor,
    reveal: torch.Tensor,
    u_digit: torch.Tensor,
    sub: SubTokenizer,
    tau: float,
    top_p: float,
) -> torch.Tensor:
    """Per-digit variant: values for the digits revealed this step, ``LongTensor[A, L·ℓ]``.

    Each revealed digit is drawn from its **marginal** ``p(y^{i,j} | ·)`` (temperature and top-p
    applied to that ``b``-way marginal), digits of a token taken in the fixed order ``j = 0..ℓ-1``,
    each conditioned on the seen digits *and on the digits of the same token revealed just before it
    in this step* (the token distribution ``p^i`` is restricted to classes agreeing with them).

    Why this and not independent marginals: two digits of one token drawn independently can form a
    combination of zero probability, e.g. an invalid code when ``b^ℓ > C`` (C=5, b=3: ``d_0 = 1`` and
    ``d_1 = 2`` gives code 5). Re-applying consistency after each digit makes every drawn digit have
    a consistent class with positive mass, so the final code is always a valid class. At ``τ = 1``
    and ``top_p = 1`` the revealed digits then have exactly the joint sampler's distribution (chain
    rule); the variants differ only in where temperature and top-p act. When at most one digit of a
    token is revealed per step (large ``T``) it is literally "reveal one digit from its marginal".

    Args: ``probs`` ``float64[A, L, C]`` carry-over probabilities; ``reveal`` ``Bool[A, L·ℓ]``;
    ``u_digit`` ``float64[A, L, ℓ]`` uniforms.
    """
    a, length, _ = probs.shape
    ell = sub.length
    rev = reveal.view(a, length, ell)
    table = sub.table("digit_table", probs.device)  # (C, ℓ)
    out = torch.zeros(a, length, ell, dtype=torch.long, device=probs.device)
    p = probs
    for j in range(ell):
        marg = digit_marginals_from_probs(p, sub)[..., j, :]  # (A, L, b), unnormalised
        if tau != 1.0 or top_p < 1.0:
            total = marg.sum(-1, keepdim=True)
            marg = process_log_probs((marg / total.clamp_min(1e-300)).log(), tau, top_p)
        v = categorical_from_uniform(marg, u_digit[..., j])
        out[..., j] = v
        if j < ell - 1:
            agree = table[:, j].view(1, 1, -1) == v.unsqueeze(-1)  # (A, L, C)
            p = torch.where(
                rev[..., j].unsqueeze(-1) & ~agree, torch.zeros((), dtype=p.dtype, device=p.device), p
            )
    return out.flatten(1)


METHODS = tuple(_REVEAL_RULES)  # ("joint", "per_digit"): the methods registered above


# ---------------------------------------------------------------------------------------------------
# Jump rules: which digits jump at a step (predictor, or predictor–corrector)
# ---------------------------------------------------------------------------------------------------

_JUMP_RULES: dict[str, type[JumpRule]] = {}


def register_jump_rule(name: str) -> Callable[[type[JumpRule]], type[JumpRule]]:
    """Class decorator: register a :class:`JumpRule` under ``name``."""
    return lambda cls: _add(_JUMP_RULES, name, cls)


def get_jump_rule(name: str) -> type[JumpRule]:
    """The :class:`JumpRule` class registered as ``name`` (``"predictor"`` or ``"corrector"``)."""
    check_choice("jump rule", name, tuple(_JUMP_RULES))
    return _JUMP_RULES[name]


class JumpRule(abc.ABC):
    """Which digits jump at step ``k`` (``t → s``), decided before their values: ``(reveal, remask)``,
    ``Bool[B, L·ℓ]`` each, from the uniforms ``u_jump`` ``float64[B, L·ℓ]``. At the last step of the
    grid every masked digit is revealed and none is remasked.

    Args: ``schedule``; ``grid`` the time grid ``float64[T+1]``; ``corrector_scale``, ``corrector_power``
    (``a`` and ``p`` of ``κ(t)``).
    """

    def __init__(
        self,
        schedule: Schedule | DigitSchedules,
        grid: torch.Tensor,
        corrector_scale: float,
        corrector_power: float,
    ) -> None:
        self.schedule, self.steps = schedule, grid.numel() - 1
        self.scale, self.power = corrector_scale, corrector_power

    def __call__(
        self, k: int, t: float, s: float, masked: torch.Tensor, fixed: torch.Tensor, u_jump: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if k == self.steps - 1:
            return masked, torch.zeros_like(masked)
        return self.jumps(k, t, s, masked, fixed, u_jump)

    @abc.abstractmethod
    def jumps(
        self, k: int, t: float, s: float, masked: torch.Tensor, fixed: torch.Tensor, u_jump: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reveal, remask)`` at a step that is not the last."""


@register_jump_rule("predictor")
class PredictorJump(JumpRule):
    """The exact predictor: each masked digit is revealed with probability ``(α_s − α_t)/(1 − α_t)``;
    with per-digit schedules, a digit at position ``j`` with ``(g_j(t) − g_j(s))/g_j(t)``."""

    def __init__(self, schedule, grid, corrector_scale, corrector_power) -> None:
        super().__init__(schedule, grid, corrector_scale, corrector_power)
        # 1 − α in closed form (no cancellation); [T+1], or [T+1, ℓ] for per-digit schedules
        self.mask_prob = schedule.mask_probability(grid.to(torch.float64))

    def jumps(self, k, t, s, masked, fixed, u_jump):
        if is_per_digit(self.schedule):
            m_t, m_s = self.mask_prob[k], self.mask_prob[k + 1]  # (ℓ,)
            q = torch.where(m_t > 0.0, (m_t - m_s) / m_t.clamp(min=1e-300), torch.ones_like(m_t))
            q = self.schedule.per_position(q.to(u_jump.device), masked.shape[1])  # (L·ℓ,)
            return masked & (u_jump < q), torch.zeros_like(masked)
        # (α_s − α_t)/(1 − α_t) = (m_t − m_s)/m_t with m = 1 − α: no cancellation near t = 0
        m_t, m_s = float(self.mask_prob[k]), float(self.mask_prob[k + 1])
        q = (m_t - m_s) / m_t if m_t > 0.0 else 1.0
        reveal, remask = masked & (u_jump < q), torch.zeros_like(masked)
        return reveal, remask


@register_jump_rule("corrector")
class CorrectorJump(JumpRule):
    """The predictor–corrector step (module docstring, **Corrector**): a masked digit is revealed with
    probability ``1 − exp(−h(1+κ)w(t))``, a seen free digit remasked with ``1 − exp(−hκ(−α'_t/α_t))``."""

    def __init__(self, schedule, grid, corrector_scale, corrector_power) -> None:
        if is_per_digit(schedule):
            raise ValueError(f"the corrector supports one shared schedule only, got {schedule!r}")
        super().__init__(schedule, grid, corrector_scale, corrector_power)

    def jumps(self, k, t, s, masked, fixed, u_jump):
        sched = self.schedule
        h = t - s
        kappa = corrector_kappa(t, self.scale, self.power)
        tt = torch.tensor([t], dtype=torch.float64)
        p_reveal = 1.0 - math.exp(-h * (1.0 + kappa) * float(sched.weight(tt)))
        a_t = float(sched.alpha(tt))
        rate_mask = kappa * float(-sched.alpha_derivative(tt)) / a_t if kappa > 0 and a_t > 0 else 0.0
        p_remask = 1.0 - math.exp(-h * rate_mask)
        reveal = masked & (u_jump < p_reveal)
        remask = ~masked & ~fixed & (u_jump < p_remask)
        return reveal, remask


# ---------------------------------------------------------------------------------------------------
# Helpers of the loop: the per-sequence cache, the recording
# ---------------------------------------------------------------------------------------------------


class _SequenceCache:
    """The network calls, per sequence (module docstring, **Caching**).

    ``store[b]`` holds the logits of row ``b``'s last call (in the model's dtype; only its tokens that
    had a masked digit then are copied: the others are never drawn from), ``fresh[b]`` whether row
    ``b``'s digits have not changed since, ``calls[b]`` its network calls. A row is only read while it
    is fresh or just called, so the logits always belong to the current digits. ``reuse``: the model
    ignores ``t`` and caching is on, so a fresh row is not called again; ``cache`` off: every row is
    called at every step.
    """

    def __init__(
        self, model, sub: SubTokenizer, rule: RevealRule, batch: int, length: int, device, cache, reuse
    ) -> None:
        self.model, self.sub, self.rule, self.device = model, sub, rule, device
        self.batch, self.length, self.cache, self.reuse = batch, length, cache, reuse
        self.store: torch.Tensor | None = None  # (B, L, C), allocated at the first call
        self.top: torch.Tensor | None = None  # (B, L): each kept token's largest logit
        self.fresh = torch.zeros(batch, dtype=torch.bool, device=device)  # cache row matches current y
        self.calls = torch.zeros(batch, dtype=torch.long, device=device)

    def rows_to_call(self, has_mask: torch.Tensor) -> torch.Tensor:
        """``Bool[B]``: the rows the network is called on this step (``has_mask``: rows with a mask)."""
        if self.reuse:
            return has_mask & ~self.fresh
        return has_mask if self.cache else torch.ones_like(has_mask)

    def logits(self, rows: torch.Tensor, pos: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        """Kept logits of the tokens ``(rows[i], pos[i])``: ``[n, C]``, or ``[n, K]`` at the classes
        ``cls`` (``-1`` read as class 0; the caller masks it)."""
        flat = rows * self.length + pos
        if cls is None:
            return self.store.view(-1, self.sub.num_classes)[flat]
        return self.store.view(-1, self.sub.num_classes)[flat[:, None], cls.clamp_min(0)]

    def call(self, need: torch.Tensor, y: torch.Tensor, t: float, k: int, tau: float) -> None:
        """Call the network on the rows in ``need`` at time ``t`` (step ``k``) and keep their logits."""
        sub, length = self.sub, self.length
        rows = need.nonzero().squeeze(1)
        all_rows = rows.numel() == self.batch
        y_in = y if all_rows else y.index_select(0, rows)
        t_in = torch.full((rows.numel(),), t, dtype=torch.float32, device=self.device)
        logits = self.model(y_in, t_in)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (
            rows.numel(),
            length,
            sub.num_classes,
        ):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"model returned {got}, expected logits of shape {(rows.numel(), length, sub.num_classes)}"
            )
        y_tok = y_in.view(rows.numel(), length, sub.length)
        r_open, p_open = (y_tok == sub.mask_id).any(-1).nonzero(as_tuple=True)  # tokens still to draw
        top = self._keep(logits, rows, all_rows, r_open, p_open)
        self.top[rows[r_open], p_open] = top
        if bool(_no_mass(logits, r_open, p_open, y_tok[r_open, p_open], top, sub)):
            raise ValueError(f"model output gives NaN probabilities at step {k} (t={t}); check its logits")
        self.calls += need.long()
        self.fresh |= need

    def _keep(self, logits: torch.Tensor, rows, all_rows: bool, r_open, p_open) -> torch.Tensor:
        """Keep the logits of the called ``rows`` in the store: whole rows when at least half of their
        tokens are open, else only the open tokens ``(r_open[i], p_open[i])`` (the others are never
        drawn from). Returns the open tokens' largest logits ``[n]``. Few, large operations: many
        small ones stall on a machine whose cores are shared."""
        c = self.sub.num_classes
        if self.store is None:
            self.store = torch.zeros(self.batch, self.length, c, dtype=logits.dtype, device=self.device)
            self.top = torch.zeros(self.batch, self.length, dtype=logits.dtype, device=self.device)
        elif self.store.dtype != logits.dtype:
            self.store = self.store.to(torch.promote_types(self.store.dtype, logits.dtype))
            self.top = self.top.to(self.store.dtype)
        if 2 * r_open.numel() >= logits.shape[0] * self.length:
            if all_rows:
                self.store.copy_(logits)
            else:
                self.store.index_copy_(0, rows, logits.to(self.store.dtype))
            return logits.amax(-1)[r_open, p_open]
        block = logits.reshape(-1, c)[r_open * self.length + p_open]
        self.store.view(-1, c).index_copy_(0, rows[r_open] * self.length + p_open, block.to(self.store.dtype))
        return block.amax(-1)


def _no_mass(logits, r_open, p_open, y_open, top, sub: SubTokenizer) -> torch.Tensor:
    """``Bool[]``: some open token ``(r_open[i], p_open[i])`` (digits ``y_open[i]``) has no finite
    largest logit over its box of consistent classes (a NaN, a ``+inf``, or no class with mass), so its
    carry-over probabilities would be NaN. ``top[i]``: the token's largest logit over all classes, which
    is the box's for a fully masked token; a partly seen token's box is read here."""
    bad = torch.zeros((), dtype=torch.bool, device=logits.device)
    for _, idx, cls in token_boxes(y_open, sub):
        if cls is None:
            box_top = top[idx]
        else:
            r, p = r_open[idx], p_open[idx]
            vals = logits[r[:, None], p[:, None], cls.clamp_min(0)]
            box_top = vals.masked_fill(cls < 0, float("-inf")).amax(-1)
        bad |= ~torch.isfinite(box_top).all()
    return bad


class _Recorder:
    """``record=True``: the digits before the first step and after each step, and the rows called at
    each step (module docstring, **Recording**); ``on_step(k, y)`` after each step."""

    def __init__(self, y: torch.Tensor, steps: int, mask_id: int, record: bool, on_step) -> None:
        self.on_step = on_step
        self.traj = self.traj_calls = None
        if record:
            batch, n_dig = y.shape
            traj_dtype = torch.uint8 if mask_id < 256 else torch.int16 if mask_id < 2**15 else torch.int32
            self.traj = torch.empty(steps + 1, batch, n_dig, dtype=traj_dtype)
            self.traj[0] = y.to("cpu", traj_dtype)
            self.traj_calls = torch.zeros(steps, batch, dtype=torch.bool)

    def called(self, k: int, need: torch.Tensor) -> None:
        if self.traj_calls is not None:
            self.traj_calls[k] = need.cpu()

    def stepped(self, k: int, y: torch.Tensor) -> None:
        if self.traj is not None:
            self.traj[k + 1] = y.to("cpu", self.traj.dtype)
        if self.on_step is not None:
            self.on_step(k, y)


class _Progress:
    """``sample(progress=...)``: a context manager called as ``report(steps_done, calls)`` after each step
    (``calls``: the per-row network call counts). ``True``: a tqdm bar on stderr; a callable gets
    ``(steps_done, T, network_calls)``; ``None``/``False``: nothing."""

    def __init__(self, progress, steps: int) -> None:
        self.fn, self.steps, self.bar = None, steps, None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, unit="step", desc="sampling", file=sys.stderr, dynamic_ncols=True)
        elif callable(progress):
            self.fn = progress

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, done: int, calls: torch.Tensor) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"network calls {int(calls.sum())}", refresh=False)
            self.bar.update(1)
        elif self.fn is not None:
            self.fn(done, self.steps, int(calls.sum()))


def _resolve_device(model, condition: Condition | None, device) -> torch.device:
    """``device``, else the condition's device, else the model's parameters', else CPU."""
    if device is None:
        if condition is not None:
            device = condition.fixed.device
        else:
            param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
            device = param.device if param is not None else torch.device("cpu")
    return torch.device(device)


def _initial_digits(
    sub: SubTokenizer, condition: Condition | None, batch: int, length: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fixed, y)``, ``[B, L·ℓ]``: the digits fixed by ``condition`` and the digits before the first
    step (fixed values, else the mask). ValueError when the fixed digits of a token fit no class."""
    ell, n_dig, mask_id = sub.length, length * sub.length, sub.mask_id
    if condition is not None:
        fixed = condition.fixed.to(device)
        y = torch.where(
            fixed,
            condition.values.to(device).long(),
            torch.full_like(condition.values, mask_id, dtype=torch.long, device=device),
        )
        possible = torch.isfinite(consistency_log_mask(y, sub, dtype=torch.float64)).any(-1)  # (B, L)
        if not bool(possible.all()):
            bi, li = (~possible).nonzero()[0].tolist()
            raise ValueError(
                f"condition fixes digits {y[bi, li * ell : (li + 1) * ell].tolist()} of token {li} in row {bi}, "
                f"which no class 0..{sub.num_classes - 1} has (mask {mask_id} = free)"
            )
    else:
        fixed = torch.zeros(batch, n_dig, dtype=torch.bool, device=device)
        y = torch.full((batch, n_dig), mask_id, dtype=torch.long, device=device)
    return fixed, y


def sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sub: SubTokenizer,
    *,
    steps: int | None = None,
    num_samples: int | None = None,
    num_tokens: int | None = None,
    condition: Condition | None = None,
    method: str = "joint",
    schedule: Schedule | str = "linear",
    grid: str | Sequence[float] | torch.Tensor = "uniform",
    temperature: float | Callable[[float], float] = 1.0,
    top_p: float = 1.0,
    cache: bool = True,
    time_conditioned: bool | None = None,
    corrector_scale: float = 0.0,
    corrector_power: float = 0.25,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    record: bool = False,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    progress: bool | Callable[[int, int, int], object] | None = None,
) -> SampleResult:
    """Generate ``B`` sequences of ``L`` tokens with ``T`` steps.

    Args:
        model: ``model(y_t: LongTensor[B', L·ℓ], t: FloatTensor[B']) -> logits FloatTensor[B', L, C]``;
            a true ``time_conditioned`` attribute disables the reuse of outputs. A callable without
            that attribute is treated as time-conditioned (never reused: the safe default) unless
            the caller passes ``time_conditioned=False``.
        sub: the sub-tokenizer (``C``, ``ℓ``, ``b``).
        steps: ``T ≥ 1`` (optional when ``grid`` is an explicit tensor); at most ``64·L·ℓ`` (more
            raises ValueError before any work: see :func:`check_step_count`).
        num_samples, num_tokens: ``B`` and ``L`` (implied by ``condition`` if given).
        condition: :class:`Condition` with ``fixed``/``values`` ``[B, L·ℓ]``: digits observed from the
            start that never change (see :mod:`.conditioning` for prefix/infill/digit helpers).
        method: ``"joint"`` (default, docs/method.md §6) or ``"per_digit"`` (see :func:`_per_digit_values`):
            the name of a registered :class:`RevealRule` (``METHODS``).
        schedule: masking schedule ``α(t)`` (name or :class:`Schedule`); must match training. Per-digit
            schedules (``"leading:A"``, ``"digits:…"``, :class:`DigitSchedules`, docs/method.md §2b)
            reveal digit position ``j`` with its own probability; the corrector refuses them.
        grid: time grid kind (``"uniform"``, ``"cosine"``, ``"power:p"``, ``"alpha"``) or an explicit
            decreasing tensor ``[T+1]`` from 1 to 0; see :func:`time_grid`.
        temperature: ``τ > 0`` or a function ``τ(t)`` (e.g. :func:`temperature_schedule`), applied to the
            carry-over token distribution (joint) or to each digit's marginal (per-digit).
        top_p: nucleus mass in ``(0, 1]``, applied after the temperature.
        cache: reuse the output of a time-independent model for sequences that did not change.
        time_conditioned: whether the model's output depends on ``t``; ``None`` (default) reads
            ``model.time_conditioned`` and, when it is absent, assumes ``True``. Only
            ``time_conditioned=False`` (argument or attribute) lets ``cache`` reuse outputs.
        corrector_scale, corrector_power: ``a`` and ``p`` of ``κ(t) = a·t^p (1−t)^p``. With ``a > 0`` each
            step is the predictor–corrector jump of docs/method.md §6: a masked digit jumps to ``d_j(x̂)`` at
            rate ``(1+κ) w(t)``, a seen free digit jumps to the mask at rate ``κ (−α'_t/α_t)``, each
            with probability ``1 − exp(−h·rate)``, ``h = t − s``; ``x̂`` is the predictor's draw (no
            extra network call). Fixed digits are never remasked; the last step fills all masks.
        seed / generator: randomness (a ``torch.Generator`` on ``device``); ``seed`` builds one.
        device: where the digits live (default: the condition's device, else the model's parameters',
            else CPU). The model is called under ``torch.inference_mode``; put it in ``eval()`` mode first.
        record: keep the trajectory of digits (``SampleResult.trajectory``, for animations).
        on_step: ``on_step(k, y)`` after step ``k = 0..T-1`` with the digits ``LongTensor[B, L·ℓ]``
            (do not modify them).
        progress: ``True``: a progress bar on stderr (steps done, network calls so far, ETA);
            a callable: ``progress(steps_done, T, network_calls)`` after each step (``network_calls``:
            rows evaluated so far, over the batch); ``None``/``False`` (default): nothing.

    Returns:
        :class:`SampleResult`.
    """
    start_time = time.perf_counter()
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if not isinstance(sub, SubTokenizer):
        raise TypeError(f"sub must be a SubTokenizer, got {type(sub).__name__}")
    reveal_cls = get_reveal_rule(method)
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be a bool, got {type(cache).__name__}")
    if not isinstance(record, bool):
        raise TypeError(f"record must be a bool, got {type(record).__name__}")
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step must be callable or None, got {type(on_step).__name__}")
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise TypeError(f"progress must be a bool, a callable or None, got {type(progress).__name__}")
    if time_conditioned is not None and not isinstance(time_conditioned, bool):
        raise TypeError(f"time_conditioned must be a bool or None, got {type(time_conditioned).__name__}")
    if callable(temperature):
        temp_fn, constant_temp = temperature, None
    else:
        constant_temp = _check_number("temperature", temperature, 0.0, math.inf)
        temp_fn = None
    top_p = _check_number("top_p", top_p, 0.0, 1.0)
    corrector_scale = _check_number("corrector_scale", corrector_scale, 0.0, math.inf, low_open=False)
    corrector_power = _check_number("corrector_power", corrector_power, 0.0, math.inf)
    sched = get_schedule(schedule, length=sub.length)
    if corrector_scale > 0.0 and is_per_digit(sched):
        raise ValueError(
            f"the corrector (corrector_scale={corrector_scale}) supports one shared schedule only, got "
            f"per-digit schedules {sched!r}; use corrector_scale=0"
        )
    check_length = _tokens_for_step_check(sub, num_tokens, condition)
    if is_int(steps) and check_length is not None:
        check_step_count(steps, check_length, sub.length)  # before the grid of T+1 floats is built
    grid_t = time_grid(steps, grid, sched)
    steps = grid_t.numel() - 1
    batch, length = _resolve_shape(sub, num_samples, num_tokens, condition)
    check_step_count(steps, length, sub.length)  # an explicit grid sets T

    device = _resolve_device(model, condition, device)
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ()).item()))
    elif seed is not None:
        raise ValueError("give seed or generator, not both")
    fixed, y = _initial_digits(sub, condition, batch, length, device)

    reveal_rule = reveal_cls(sub, temp_fn, top_p, device)
    jump_rule = get_jump_rule("corrector" if corrector_scale > 0.0 else "predictor")(
        sched, grid_t, corrector_scale, corrector_power
    )
    if time_conditioned is None:
        time_conditioned = bool(getattr(model, "time_conditioned", True))
    reuse = cache and not time_conditioned
    net = _SequenceCache(model, sub, reveal_rule, batch, length, device, cache, reuse)
    recorder = _Recorder(y, steps, sub.mask_id, record, on_step)
    idle = torch.zeros(batch, dtype=torch.long, device=device)
    rand_opts = dict(generator=generator, device=device, dtype=torch.float64)

    report = _Progress(progress, steps)
    with torch.inference_mode(), report:
        for k in range(steps):
            t, s = float(grid_t[k]), float(grid_t[k + 1])
            tau = constant_temp if temp_fn is None else float(temp_fn(t))
            if not tau > 0:
                raise ValueError(f"temperature schedule returned {tau} at t={t}; it must be > 0")
            masked = y == sub.mask_id
            # randomness for every row, in a fixed order, whatever is recomputed
            u_token = torch.rand((batch, length), **rand_opts)
            u_jump = torch.rand((batch, y.shape[1]), **rand_opts)
            u_digit = reveal_rule.digit_uniforms(batch, length, rand_opts)
            need = net.rows_to_call(masked.any(-1))
            if bool(need.any()):
                net.call(need, y, t, k, tau)
                recorder.called(k, need)
            reveal, remask = jump_rule(k, t, s, masked, fixed, u_jump)  # which digits jump, then their values
            y_new = reveal_rule.apply(y, reveal, net, u_token, u_digit, tau)
            if bool(remask.any()):
                y_new = torch.where(remask, torch.full_like(y_new, sub.mask_id), y_new)
            changed = (y_new != y).any(-1)
            idle += (~changed).long()
            net.fresh &= ~changed
            y = y_new
            recorder.stepped(k, y)
            report(k + 1, net.calls)

    tokens = sub.decode(y)  # raises on an invalid code or a leftover mask: never expected
    return SampleResult(
        tokens=tokens,
        subtokens=y,
        network_calls=net.calls,
        idle_steps=idle,
        free_digits=(~fixed).sum(-1),
        steps=steps,
        wall_time=time.perf_counter() - start_time,
        time_grid=grid_t,
        trajectory=recorder.traj,
        trajectory_calls=recorder.traj_calls,
    )
