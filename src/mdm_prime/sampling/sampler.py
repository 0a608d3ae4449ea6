"""The MDM-Prime samplers (docs/method.md §6): joint (default) and per-digit, optional corrector, per-sequence
caching with idle-step accounting, and conditioning.

One step ``t_k → t_{k+1} = s`` of the **joint** sampler, per sequence:

1. ``p^i = p_θ(x^i | y_t)`` per token (carry-over applied, then temperature and top-p);
2. draw ``x̂^i ~ p^i`` (``float64`` inverse CDF), encode it;
3. each masked digit independently becomes ``d_j(x̂^i)`` with probability ``(α_s − α_t)/(1 − α_t)``,
   else stays masked; at the last step every masked digit is filled from ``x̂``.

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

**Memory.** The cache holds one ``float64`` distribution per token: ``8·B·L·C`` bytes.

**Recording** (``record=True``, for animations): the digits ``y_t`` before the first step and after
each step, ``[T+1, B, L·ℓ]`` on the CPU in the smallest integer type that holds the mask id
(``uint8`` for ``b < 256``), and which rows called the network at each step, ``Bool[T, B]``.
``on_step(k, y)`` is called after step ``k`` with the current digits. Both are off by default and
cost nothing then.

**Counters** (per sequence): ``network_calls`` (rows of network evaluations spent on that sequence)
and ``idle_steps`` (steps in which none of its digits changed). For the joint sampler without
corrector and with caching, ``network_calls + idle_steps = T`` for every sequence with at least one
free digit: a call happens at step 0 and after each step that changed the sequence, except the one
that revealed its last digit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..parameterization import (
    carry_over_log_probs,
    consistency_log_mask,
    digit_marginals_from_probs,
)
from ..schedules import Schedule, get_schedule
from ..subtokenizer import SubTokenizer
from .conditioning import Condition
from .draws import categorical_from_uniform, process_log_probs
from .grids import corrector_kappa, time_grid

__all__ = ["MAX_STEPS_PER_DIGIT", "METHODS", "SampleResult", "check_step_count", "sample"]

METHODS = ("joint", "per_digit")
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}], got {value}")
    return float(value)


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
    if isinstance(num_tokens, int) and not isinstance(num_tokens, bool) and num_tokens >= 1:
        return num_tokens
    fixed = condition[0] if isinstance(condition, tuple) and len(condition) == 2 else None
    if isinstance(fixed, torch.Tensor) and fixed.dim() == 2 and fixed.shape[1] >= sub.length:
        return fixed.shape[1] // sub.length
    return None


def _resolve_shape(
    sub: SubTokenizer, num_samples: int | None, num_tokens: int | None, condition: Condition | None
) -> tuple[int, int]:
    for name, v in (("num_samples", num_samples), ("num_tokens", num_tokens)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
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
        method: ``"joint"`` (default, docs/method.md §6) or ``"per_digit"`` (see :func:`_per_digit_values`).
        schedule: masking schedule ``α(t)`` (name or :class:`Schedule`); must match training.
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

    Returns:
        :class:`SampleResult`.
    """
    start_time = time.perf_counter()
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if not isinstance(sub, SubTokenizer):
        raise TypeError(f"sub must be a SubTokenizer, got {type(sub).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be a bool, got {type(cache).__name__}")
    if not isinstance(record, bool):
        raise TypeError(f"record must be a bool, got {type(record).__name__}")
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step must be callable or None, got {type(on_step).__name__}")
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
    sched = get_schedule(schedule)
    check_length = _tokens_for_step_check(sub, num_tokens, condition)
    if isinstance(steps, int) and not isinstance(steps, bool) and check_length is not None:
        check_step_count(steps, check_length, sub.length)  # before the grid of T+1 floats is built
    grid_t = time_grid(steps, grid, sched)
    steps = grid_t.numel() - 1
    batch, length = _resolve_shape(sub, num_samples, num_tokens, condition)
    check_step_count(steps, length, sub.length)  # an explicit grid sets T

    if device is None:
        if condition is not None:
            device = condition.fixed.device
        else:
            param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
            device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ()).item()))
    elif seed is not None:
        raise ValueError("give seed or generator, not both")

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

    digit_table = sub.table("digit_table", device)  # (C, ℓ)
    mask_prob = sched.mask_probability(grid_t.to(torch.float64))  # 1 − α, closed form (no cancellation)
    if time_conditioned is None:
        time_conditioned = bool(getattr(model, "time_conditioned", True))
    reuse = cache and not time_conditioned
    # What the cache holds per row: joint with a constant temperature → processed probabilities;
    # joint with τ(t) → carry-over log-probs (processed each step); per-digit → carry-over probs.
    store_processed = method == "joint" and temp_fn is None
    store = torch.zeros(batch, length, sub.num_classes, dtype=torch.float64, device=device)
    fresh = torch.zeros(batch, dtype=torch.bool, device=device)  # cache row matches current y
    calls = torch.zeros(batch, dtype=torch.long, device=device)
    idle = torch.zeros(batch, dtype=torch.long, device=device)
    rand_opts = dict(generator=generator, device=device, dtype=torch.float64)
    traj = traj_calls = None
    if record:
        traj_dtype = torch.uint8 if mask_id < 256 else torch.int16 if mask_id < 2**15 else torch.int32
        traj = torch.empty(steps + 1, batch, n_dig, dtype=traj_dtype)
        traj[0] = y.to("cpu", traj_dtype)
        traj_calls = torch.zeros(steps, batch, dtype=torch.bool)

    with torch.inference_mode():
        for k in range(steps):
            t, s = float(grid_t[k]), float(grid_t[k + 1])
            last = k == steps - 1
            tau = constant_temp if temp_fn is None else float(temp_fn(t))
            if not tau > 0:
                raise ValueError(f"temperature schedule returned {tau} at t={t}; it must be > 0")
            masked = y == mask_id
            has_mask = masked.any(-1)
            # randomness for every row, in a fixed order, whatever is recomputed
            u_token = torch.rand((batch, length), **rand_opts)
            u_jump = torch.rand((batch, n_dig), **rand_opts)
            u_digit = torch.rand((batch, length, ell), **rand_opts) if method == "per_digit" else None

            need = (has_mask & ~fresh) if reuse else (has_mask if cache else torch.ones_like(has_mask))
            if bool(need.any()):
                rows = need.nonzero().squeeze(1)
                all_rows = rows.numel() == batch
                y_in = y if all_rows else y.index_select(0, rows)
                t_in = torch.full((rows.numel(),), t, dtype=torch.float32, device=device)
                logits = model(y_in, t_in)
                if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (
                    rows.numel(),
                    length,
                    sub.num_classes,
                ):
                    got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                    raise ValueError(
                        f"model returned {got}, expected logits of shape {(rows.numel(), length, sub.num_classes)}"
                    )
                logp = carry_over_log_probs(logits.to(torch.float64), y_in, sub)
                if bool(torch.isnan(logp).any()):
                    raise ValueError(
                        f"model output gives NaN probabilities at step {k} (t={t}); check its logits"
                    )
                new = (
                    process_log_probs(logp, tau, top_p)
                    if store_processed
                    else (logp.exp() if method == "per_digit" else logp)
                )
                if all_rows:
                    store = new
                else:
                    store.index_copy_(0, rows, new)
                calls += need.long()
                fresh |= need
                if record:
                    traj_calls[k] = need.cpu()

            # which digits jump this step (decided before their values)
            if last:
                reveal, remask = masked, torch.zeros_like(masked)
            elif corrector_scale > 0.0:
                h = t - s
                kappa = corrector_kappa(t, corrector_scale, corrector_power)
                tt = torch.tensor([t], dtype=torch.float64)
                p_reveal = 1.0 - math.exp(-h * (1.0 + kappa) * float(sched.weight(tt)))
                a_t = float(sched.alpha(tt))
                rate_mask = kappa * float(-sched.alpha_derivative(tt)) / a_t if kappa > 0 and a_t > 0 else 0.0
                p_remask = 1.0 - math.exp(-h * rate_mask)
                reveal = masked & (u_jump < p_reveal)
                remask = ~masked & ~fixed & (u_jump < p_remask)
            else:
                # (α_s − α_t)/(1 − α_t) = (m_t − m_s)/m_t with m = 1 − α: no cancellation near t = 0
                m_t, m_s = float(mask_prob[k]), float(mask_prob[k + 1])
                q = (m_t - m_s) / m_t if m_t > 0.0 else 1.0
                reveal, remask = masked & (u_jump < q), torch.zeros_like(masked)

            active = reveal.any(-1)
            if bool(active.any()):
                act = active.nonzero().squeeze(1)
                probs = store.index_select(0, act)
                if method == "joint":
                    if not store_processed:
                        probs = process_log_probs(probs, tau, top_p)
                    x_hat = categorical_from_uniform(probs, u_token.index_select(0, act))
                    values = digit_table[x_hat].flatten(1)  # (A, L·ℓ)
                else:
                    values = _per_digit_values(
                        probs, reveal.index_select(0, act), u_digit.index_select(0, act), sub, tau, top_p
                    )
                rev_a = reveal.index_select(0, act)
                y_new_a = torch.where(rev_a, values, y.index_select(0, act))
                y_new = y.clone()
                y_new.index_copy_(0, act, y_new_a)
            else:
                y_new = y.clone()
            if bool(remask.any()):
                y_new = torch.where(remask, torch.full_like(y_new, mask_id), y_new)
            changed = (y_new != y).any(-1)
            idle += (~changed).long()
            fresh &= ~changed
            y = y_new
            if record:
                traj[k + 1] = y.to("cpu", traj.dtype)
            if on_step is not None:
                on_step(k, y)

    tokens = sub.decode(y)  # raises on an invalid code or a leftover mask: never expected
    return SampleResult(
        tokens=tokens,
        subtokens=y,
        network_calls=calls,
        idle_steps=idle,
        free_digits=(~fixed).sum(-1),
        steps=steps,
        wall_time=time.perf_counter() - start_time,
        time_grid=grid_t,
        trajectory=traj,
        trajectory_calls=traj_calls,
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
