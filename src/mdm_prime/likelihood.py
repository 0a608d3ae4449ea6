"""Likelihood evaluation with the valid bound (docs/method.md §5): the public entry point for every number
this project reports.

``likelihood(model, x0, sub)`` returns, per sequence, ``L_valid`` (an upper bound on ``−log p_θ(x)``,
in nats per sequence) with its Monte Carlo standard error over ``K`` draws, and the paper's training
objective ``L_prime`` beside it (never a likelihood for ℓ > 1).

Estimators (both unbiased for the continuous-time integral; the test suite checks them against the
exact quadrature oracle in :mod:`mdm_prime.oracle`):

* ``"integrated"`` (default): draw the number of masked digits ``k`` uniformly from ``{1..n}``
  (stratified over the K draws), mask a uniform random ``k``-subset, and weight by ``n/k``. This
  integrates ``t`` out analytically: a ``k``-pattern's total weight is ``∫ u^{k−1}(1−u)^{n−k} du ·
  C(n,k) = 1/k``. A time-conditioned model receives ``t`` with ``1 − α(t) = u``, ``u`` the k-th
  smallest of the ``n`` uniforms that chose the pattern, which is exactly ``Beta(k, n−k+1)``.
* ``"stratified"``: stratified ``t ∈ [eps, 1]``, independent masking, weight ``w(t)``. Heavy-tailed
  near ``t = 0`` and slightly biased by the clip ``eps``; kept for comparison.

Per-digit schedules (docs/method.md §2b) generalise both. ``"integrated"``: every digit ``d`` gets a
uniform ``u_d`` and the masking time ``τ_d = g_{j(d)}^{-1}(u_d)``; with ``k`` drawn as above, the ``k``
digits with the smallest ``τ`` are hidden, ``t* = `` the ``k``-th smallest ``τ`` is handed to the
network, and the valid score is ``n · Σ_{d hidden} π_d · (−log p_θ(y0^d | y))`` with
``π_d = w_{j(d)}(t*) / Σ_{d' hidden} w_{j(d')}(t*)`` (for a shared schedule ``π_d = 1/k``: the estimator
above). ``"stratified"``: each hidden digit weighted by its own ``w_j(t)``. ``L_prime`` beside them
weights token ``i`` by ``w̄_i``, the mean of ``w_j`` over its hidden digits.

The standard error is ``std / sqrt(K)`` over the K draws of each sequence; with stratified draws
this is conservative (stratification only lowers the true variance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .objectives import ModelFn, per_digit_weighted_terms, token_and_digit_nll
from .process import mask_subtokens
from .schedules import DigitSchedules, Schedule, get_schedule, is_per_digit
from .subtokenizer import SubTokenizer
from .validation import check_int, check_number, is_int

__all__ = ["ESTIMATORS", "LikelihoodResult", "likelihood"]

ESTIMATORS = ("integrated", "stratified")


@dataclass
class LikelihoodResult:
    """Per-sequence results, all ``FloatTensor[B]`` in **nats per sequence**.

    Attributes:
        nelbo: ``L_valid`` estimate (upper bound on the NLL; the number to report).
        nelbo_stderr: its Monte Carlo standard error.
        prime_objective: the paper's objective ``L_prime`` (training loss, *not* a likelihood).
        prime_objective_stderr: its standard error.
        num_tokens: tokens per sequence ``L``; num_times: draws ``K`` per sequence; estimator: name.
    """

    nelbo: torch.Tensor
    nelbo_stderr: torch.Tensor
    prime_objective: torch.Tensor
    prime_objective_stderr: torch.Tensor
    num_tokens: int
    num_times: int
    estimator: str

    def summary(self) -> dict:
        """Corpus-level numbers per token: mean over sequences, standard error combined over sequences
        (independent draws), ``bits = nats / ln 2``, perplexity ``exp(nats/token)``."""
        b, L = self.nelbo.shape[0], self.num_tokens
        nats = float(self.nelbo.mean()) / L
        se = float(self.nelbo_stderr.pow(2).sum().sqrt()) / b / L
        prime = float(self.prime_objective.mean()) / L
        return {
            "nelbo_nats_per_token": nats,
            "stderr_nats_per_token": se,
            "bits_per_token": nats / math.log(2),
            "perplexity": math.exp(nats),
            "prime_objective_nats_per_token": prime,
            "num_times": self.num_times,
            "num_sequences": b,
            "tokens_per_sequence": L,
            "estimator": self.estimator,
        }


def _stratified_counts(v: torch.Tensor, num_times: int, n: int) -> torch.Tensor:
    """Stratified numbers of masked digits: ``k = floor((v + r)/K · n) + 1`` for ``r = 0..K−1``, one
    ``v ∈ [0, 1)`` per sequence (``FloatTensor[S, 1]``) → ``LongTensor[S·K]`` in ``[1, n]``, draw-major
    within a sequence. The clamp matters: in float32, ``v + K − 1`` rounds up to ``K`` for ``v``
    within ``K·2⁻²⁴`` of 1, which would give ``k = n + 1``."""
    r = torch.arange(num_times).view(1, -1)
    return (((v + r) / num_times) * n).floor().long().clamp(0, n - 1).add(1).flatten()


def _draw_integrated(
    y0: torch.Tensor, num_times: int, schedule: Schedule, mask_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of ``y0`` (``[R, n]``, each sequence repeated K times, draw-major within a sequence) →
    masked ``y``, weights ``n/k`` and times ``t``."""
    rows, n = y0.shape
    seqs = rows // num_times
    k = _stratified_counts(torch.rand(seqs, 1, generator=generator), num_times, n)  # (R,)
    uniforms = torch.rand(rows, n, generator=generator, dtype=torch.float64)
    sorted_u, _ = uniforms.sort(dim=1)
    u = sorted_u.gather(1, (k - 1).view(-1, 1)).squeeze(1)  # k-th smallest ~ Beta(k, n-k+1)
    masked = uniforms <= u.view(-1, 1)  # exactly k digits (ties have probability 0)
    y = torch.where(masked.to(y0.device), torch.full_like(y0, mask_id), y0)
    t = schedule.time_from_mask_probability(u).float()
    weight = n / k.double()
    return y, weight, t


def _draw_integrated_digits(
    y0: torch.Tensor, num_times: int, schedule: DigitSchedules, mask_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_draw_integrated` for per-digit schedules (docs/method.md §2b): same draws (``k``, then
    one float64 uniform per digit), read as masking times ``τ_d = g_{j(d)}^{-1}(u_d)``; the ``k``
    digits with the smallest ``τ`` are hidden and ``t* = τ_(k)``. Returns masked ``y`` ``[R, n]``, the
    per-digit weights ``n · w_{j(d)}(t*) / Σ_{hidden d'} w_{j(d')}(t*)`` ``float64[R, n]`` (valid; the
    prime weight of a token is their mean over its hidden digits) and ``t*`` ``float32[R]``."""
    rows, n = y0.shape
    seqs = rows // num_times
    k = _stratified_counts(torch.rand(seqs, 1, generator=generator), num_times, n)  # (R,)
    uniforms = torch.rand(rows, n, generator=generator, dtype=torch.float64)
    ell = schedule.length
    tau = schedule.time_from_mask_probability(uniforms.view(rows, n // ell, ell)).reshape(rows, n)
    order = tau.argsort(dim=1)
    ranks = order.argsort(dim=1)
    masked = ranks < k.view(-1, 1)  # exactly k digits: the k earliest masking times
    t_star = tau.gather(1, order.gather(1, (k - 1).view(-1, 1))).squeeze(1)  # the k-th smallest τ
    w = schedule.per_position(schedule.weight(t_star), n)  # (R, n) w_{j(d)}(t*)
    w_hidden = torch.where(masked, w, torch.zeros_like(w))
    weight = n * w_hidden / w_hidden.sum(1, keepdim=True)
    y = torch.where(masked.to(y0.device), torch.full_like(y0, mask_id), y0)
    return y, weight, t_star.float()


def _draw_stratified(
    y0: torch.Tensor, num_times: int, schedule: Schedule, mask_id: int, generator: torch.Generator, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = y0.shape[0]
    seqs = rows // num_times
    v = torch.rand(seqs, 1, generator=generator)
    r = torch.arange(num_times).view(1, -1)
    t = ((v + r) / num_times).flatten().clamp(eps, 1.0)
    y = mask_subtokens(y0.cpu(), t, schedule, mask_id, generator=generator).to(y0.device)
    weight = schedule.weight(t.double())
    if is_per_digit(schedule):  # (R, ℓ) → (R, n): every digit its own w_j(t)
        weight = schedule.per_position(weight, y0.shape[1])
    return y, weight, t


def _validate(model, x0, sub, num_times, seed, estimator, eps, batch_size, progress=None) -> None:
    """Argument checks of :func:`likelihood`, all before any work (docs/method.md §5)."""
    if not callable(model):
        raise TypeError(f"model must be callable as model(y_t, t), got {type(model).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable (rows done) or None, got {type(progress).__name__}")
    if not isinstance(sub, SubTokenizer):
        raise TypeError(f"subtokenizer must be a SubTokenizer, got {type(sub).__name__}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    check_int("num_times", num_times, low=2, note=" (to estimate a standard error)")
    check_int("batch_size", batch_size, low=1)
    check_int("seed", seed, type_error=True)
    check_number("eps", eps, 0, 1, high_open=True)
    check_tokens_and_subtokenizer(model, x0, sub)
    seq_len = getattr(model, "seq_len", None)
    fixed_length = not getattr(model, "variable_length", False)
    if fixed_length and is_int(seq_len) and seq_len != x0.shape[1]:
        raise ValueError(f"x0 has sequences of L={x0.shape[1]} tokens but the model takes seq_len={seq_len}")


def check_tokens_and_subtokenizer(model, x0: object, sub: SubTokenizer) -> None:
    """``x0`` is a non-empty integer ``LongTensor[B, L]`` and ``sub`` is the model's own sub-tokenizer
    (when the model has one); ValueError / TypeError naming the bad value. Shared with
    :func:`mdm_prime.decoding.decoding_likelihood`."""
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2:
        raise ValueError(
            f"x0 must be a LongTensor of shape (B, L), got "
            f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}"
        )
    if x0.dtype.is_floating_point or x0.dtype.is_complex or x0.dtype == torch.bool:
        raise TypeError(f"x0 must hold integer token ids, got dtype {x0.dtype}")
    if x0.shape[0] == 0:
        raise ValueError(f"x0 is an empty batch (shape {tuple(x0.shape)}); give at least one sequence")
    if x0.shape[1] == 0:
        raise ValueError(f"x0 holds zero-length sequences (shape {tuple(x0.shape)}); give L >= 1 tokens")
    own = getattr(getattr(model, "module", model), "subtokenizer", None)
    if isinstance(own, SubTokenizer) and own != sub:
        raise ValueError(f"subtokenizer {sub!r} does not match the model's own {own!r}")


def check_model_output(logits: object, rows: int, num_tokens: int, sub: SubTokenizer) -> None:
    expected = (rows, num_tokens, sub.num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        hint = ""
        if isinstance(logits, torch.Tensor) and logits.dim() == 3 and logits.shape[-1] != sub.num_classes:
            hint = f": the model has {logits.shape[-1]} classes but the sub-tokenizer has C={sub.num_classes}"
        raise ValueError(f"model returned logits of shape {got}, expected {expected}{hint}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"model returned logits of dtype {logits.dtype}; expected a floating-point tensor")
    if bool(torch.isnan(logits.amax())):  # a NaN anywhere makes the maximum NaN: one pass, no mask
        raise ValueError("model returned NaN logits; the bound would be NaN")


@torch.no_grad()
def likelihood(
    model: ModelFn,
    x0: torch.Tensor,
    subtokenizer: SubTokenizer,
    schedule: Schedule | DigitSchedules | str = "linear",
    num_times: int = 32,
    seed: int = 0,
    *,
    estimator: str = "integrated",
    eps: float = 1e-3,
    batch_size: int = 64,
    progress: Callable[[int], object] | None = None,
) -> LikelihoodResult:
    """Estimate ``L_valid`` and ``L_prime`` per sequence with ``num_times`` Monte Carlo draws each.

    Args:
        model: any callable ``model(y_t: LongTensor[B, L·ℓ], t: FloatTensor[B]) -> FloatTensor[B, L, C]``.
        x0: clean token ids ``LongTensor[B, L]``, ``B ≥ 1``, ``L ≥ 1``, ids in ``[0, C)``.
        subtokenizer: the model's :class:`SubTokenizer` (must equal ``model.subtokenizer`` when the
            model has one; the logits must have ``C = subtokenizer.num_classes`` classes).
        schedule: a :class:`Schedule` or a name; for a shared schedule only used to convert masking
            probability to the ``t`` a time-conditioned model receives (the bound itself is
            schedule-free in continuous time). Per-digit schedules (``"leading:A"``, ``"digits:…"``,
            :class:`DigitSchedules`; docs/method.md §2b) change the bound itself: pass the model's own.
        num_times: K ≥ 2 draws per sequence (docs/method.md recommends ≥ 32 for reporting).
        seed: seeds a private generator; results are reproducible and leave global RNG untouched.
        estimator: ``"integrated"`` (default, low variance) or ``"stratified"`` (in ``t``).
        eps: lower clip on ``t`` for the stratified estimator.
        batch_size: rows (sequence × draw) per model call; it changes neither the draws nor the result.
        progress: called after each model call with the number of rows (sequence × draw) it scored.

    Returns:
        :class:`LikelihoodResult` (nats per sequence).

    Raises:
        ValueError / TypeError before any model call for an empty batch, zero-length sequences, ids
        out of range, a sub-tokenizer different from the model's; and at the first model call for
        logits whose shape or class count does not match (``(rows, L, C)``) or that hold NaN.
    """
    _validate(model, x0, subtokenizer, num_times, seed, estimator, eps, batch_size, progress)
    schedule = get_schedule(schedule, length=subtokenizer.length)
    per_digit = is_per_digit(schedule)
    y0_all = subtokenizer.encode(x0)  # validates ids
    num_seqs, num_tokens = x0.shape
    generator = torch.Generator().manual_seed(seed)

    rows_x0 = x0.repeat_interleave(num_times, dim=0)
    rows_y0 = y0_all.repeat_interleave(num_times, dim=0).cpu()
    if estimator == "integrated" and per_digit:
        y, weight, t = _draw_integrated_digits(rows_y0, num_times, schedule, subtokenizer.mask_id, generator)
    elif estimator == "integrated":
        y, weight, t = _draw_integrated(rows_y0, num_times, schedule, subtokenizer.mask_id, generator)
    else:
        y, weight, t = _draw_stratified(rows_y0, num_times, schedule, subtokenizer.mask_id, generator, eps)

    device = x0.device
    valid_rows, prime_rows = [], []
    for start in range(0, y.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        y_b, t_b, x_b = y[sl].to(device), t[sl].to(device), rows_x0[sl]
        logits = model(y_b, t_b)
        check_model_output(logits, y_b.shape[0], num_tokens, subtokenizer)
        tok, dig = token_and_digit_nll(logits, y_b, x_b, subtokenizer)  # one carry-over pass for both
        if per_digit:  # per-digit weights (R, n): applied here, before the sums
            w_b = weight[sl].view(-1, num_tokens, subtokenizer.length)
            masked = (y[sl] == subtokenizer.mask_id).view(w_b.shape)
            prime_b, valid_b = per_digit_weighted_terms(tok.double().cpu(), dig.double().cpu(), masked, w_b)
            valid_rows.append(valid_b)
            prime_rows.append(prime_b)
        else:
            valid_rows.append(dig.sum((-1, -2)).double().cpu())
            prime_rows.append(tok.sum(-1).double().cpu())
        if progress is not None:
            progress(y_b.shape[0])
    if per_digit:
        weight = 1.0
    valid = (torch.cat(valid_rows) * weight).view(num_seqs, num_times)
    prime = (torch.cat(prime_rows) * weight).view(num_seqs, num_times)
    root_k = math.sqrt(num_times)
    return LikelihoodResult(
        nelbo=valid.mean(1),
        nelbo_stderr=valid.std(1) / root_k,
        prime_objective=prime.mean(1),
        prime_objective_stderr=prime.std(1) / root_k,
        num_tokens=num_tokens,
        num_times=num_times,
        estimator=estimator,
    )
