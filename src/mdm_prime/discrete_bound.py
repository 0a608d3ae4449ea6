"""The finite-T discrete-time bound of the joint sampler (``docs/method.md §5``, last part; §6).

The T-step joint sampler is a generative model in its own right: start fully masked, and at step
``k`` (``t_k → t_{k+1}``) reveal each masked digit with probability ``q_k = (α_{k+1} − α_k)/(1 − α_k)``
(all remaining ones at the last step), the revealed digits of token ``i`` taking the digits of one
draw ``x̂^i ~ p_θ(· | y_{t_k})`` (carry-over distribution), independently across tokens. Take as the
variational chain the same reveal process with the *true* digits. Both chains pick the revealed set
``U_k`` with the same probabilities, so the KL of step ``k`` is the log-probability of the values
alone and the negative ELBO is

    NELBO_T(x) = E_U [ Σ_k Σ_i −log P_θ( d_{U_k^i}(x̂^i) = y_0^{i, U_k^i} | y_{t_k} ) ]  ≥  −log p_θ^T(x),

``P_θ(d_U(x̂^i) = v) = Σ_{c : d_U(c) = v} p_θ(c | y_{t_k})`` — joint over the digits of one token
revealed together, product across tokens. It is a valid upper bound on the NLL of the T-step
sampler (nats), estimated here by Monte Carlo over reveal trajectories with a standard error.

Facts the tests check:

* ``T = 1``: the only trajectory reveals everything at once from ``y = all masked``, so the bound is
  deterministic: ``Σ_i −log p_θ(x^i | all masked)`` (the joint-of-marginals NLL).
* Exact posterior of a distribution whose tokens revealed in one step are conditionally independent
  (e.g. one token, or independent tokens): every trajectory gives exactly ``−log p(x)`` (chain rule),
  for every T. With dependent tokens the T-step sampler draws tokens revealed together from their
  marginals, so it is a different model (``T = 1``: the product of marginals); per sequence its bound
  can be above or below ``−log p(x)``, and only its average over ``x ~ p`` is ``≥`` the entropy.
* ``T → ∞``: at most one digit per step, each scored by its marginal: the bound tends to the
  continuous-time ``L_valid`` of :func:`mdm_prime.likelihood`.

Per-digit schedules (docs/method.md §2b): a digit at position ``j`` is revealed at step ``k`` with
probability ``q_{k,j} = (g_j(t_k) − g_j(t_{k+1}))/g_j(t_k)``, so ``U_k`` is drawn with per-position
probabilities; the per-step term is unchanged, and the bound tends to the per-digit ``L_valid``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .parameterization import carry_over_log_probs
from .sampling.grids import time_grid
from .schedules import DigitSchedules, Schedule, get_schedule, is_per_digit
from .subtokenizer import SubTokenizer
from .validation import check_int

__all__ = ["discrete_time_bound", "DiscreteTimeBound", "reveal_steps"]


@dataclass
class DiscreteTimeBound:
    """Per-sequence discrete-time NELBO, ``FloatTensor[B]`` in **nats per sequence**.

    Attributes:
        nelbo: mean over the draws (the estimate of ``NELBO_T``; an upper bound on ``−log p^T_θ(x)``).
        nelbo_stderr: Monte Carlo standard error (std over draws / sqrt(K)).
        per_draw: ``FloatTensor[B, K]`` the bound of each sampled reveal trajectory.
        steps: ``T``; num_draws: ``K``; num_tokens: ``L``; network_rows: model rows evaluated.
    """

    nelbo: torch.Tensor
    nelbo_stderr: torch.Tensor
    per_draw: torch.Tensor
    steps: int
    num_draws: int
    num_tokens: int
    network_rows: int

    def summary(self) -> dict:
        """Per-token numbers: mean over sequences; standard error combined over sequences."""
        b, L = self.nelbo.shape[0], self.num_tokens
        nats = float(self.nelbo.mean()) / L
        se = float(self.nelbo_stderr.pow(2).sum().sqrt()) / b / L
        return {
            "discrete_time_nelbo_nats_per_token": nats,
            "discrete_time_stderr_nats_per_token": se,
            "discrete_time_bits_per_token": nats / math.log(2),
            "discrete_time_steps": self.steps,
            "discrete_time_num_draws": self.num_draws,
            "discrete_time_num_sequences": b,
        }


def reveal_steps(
    grid: torch.Tensor,
    schedule: Schedule | DigitSchedules,
    shape: tuple[int, ...],
    generator: torch.Generator,
) -> torch.Tensor:
    """Step ``k ∈ {0..T−1}`` at which each digit is revealed by the joint sampler started fully masked:
    ``P(k) = (α_{k+1} − α_k) / (1 − α_0)`` (the product of the sampler's per-step probabilities
    ``q_k``; the last step takes the rest). ``LongTensor[shape]``. Per-digit schedules: the last axis
    of ``shape`` holds token-major digits (position ``c`` is digit ``c mod ℓ``), each revealed by its
    own ``α_j``; the same uniforms are drawn."""
    if is_per_digit(schedule):
        ell = schedule.length
        if not shape or shape[-1] % ell:
            raise ValueError(f"the last axis of shape {shape} must hold whole tokens of ℓ={ell} digits")
        mask_prob = schedule.mask_probability(grid.to(torch.float64)).to(torch.float64)  # (T+1, ℓ)
        u = 1.0 - torch.rand(shape, generator=generator, dtype=torch.float64)  # (0, 1]
        out = torch.empty(shape, dtype=torch.long)
        for j in range(ell):
            out[..., j::ell] = _steps_from_uniforms(mask_prob[:, j], u[..., j::ell].contiguous())
        return out
    # 1 − α per schedule in closed form, float64 (as the sampler does): no cancellation near t = 0
    mask_prob = schedule.mask_probability(grid.to(torch.float64)).to(torch.float64)
    steps = grid.numel() - 1
    m0 = float(mask_prob[0])
    if m0 <= 0.0:
        raise ValueError(f"the schedule has alpha(1) = {1.0 - m0}: nothing is masked at t = 1")
    m = (mask_prob / m0).clamp(0.0, 1.0)  # m_0 = 1 ≥ m_1 ≥ … ; digit masked at t_k iff u ≤ m_k
    m[-1] = 0.0  # the last step fills every remaining digit
    u = 1.0 - torch.rand(shape, generator=generator, dtype=torch.float64)  # (0, 1]
    ascending = m[1:].flip(0).contiguous()  # m_T .. m_1
    # k = #{j ∈ 1..T : m_j ≥ u}
    below = torch.searchsorted(ascending, u.flatten().contiguous(), side="left").view(shape)
    return (steps - below).clamp(0, steps - 1)


def _steps_from_uniforms(mask_prob: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """:func:`reveal_steps` for one mask-probability curve ``float64[T+1]`` and uniforms ``u`` in
    ``(0, 1]`` (any shape)."""
    steps = mask_prob.numel() - 1
    m0 = float(mask_prob[0])
    if m0 <= 0.0:
        raise ValueError(f"the schedule has alpha(1) = {1.0 - m0}: nothing is masked at t = 1")
    m = (mask_prob / m0).clamp(0.0, 1.0)
    m[-1] = 0.0
    ascending = m[1:].flip(0).contiguous()
    below = torch.searchsorted(ascending, u.flatten().contiguous(), side="left").view(u.shape)
    return (steps - below).clamp(0, steps - 1)


@torch.no_grad()
def discrete_time_bound(
    model,
    x0: torch.Tensor,
    sub: SubTokenizer,
    *,
    steps: int,
    num_draws: int = 16,
    seed: int = 0,
    schedule: Schedule | DigitSchedules | str | None = None,
    grid: str = "uniform",
    batch_size: int = 256,
) -> DiscreteTimeBound:
    """Monte Carlo estimate of the T-step joint sampler's discrete-time NELBO (see module docstring).

    Args:
        model: ``model(y_t: LongTensor[B, L·ℓ], t: FloatTensor[B]) -> logits FloatTensor[B, L, C]``
            (time-conditioned or not; called at ``t_k`` of the grid).
        x0: clean tokens ``LongTensor[B, L]``.
        sub: the model's :class:`SubTokenizer`.
        steps: ``T ≥ 1`` sampler steps.
        num_draws: ``K ≥ 2`` reveal trajectories per sequence (for the standard error).
        seed: seeds a private generator (the global RNG is untouched).
        schedule: masking schedule (default ``model.schedule``, else ``"linear"``); must match training.
        grid: the sampler's time grid (``"uniform"``, ``"cosine"``, ``"power:p"``, ``"alpha"``).
        batch_size: model rows per call. Cost: about ``B · K · min(T, L·ℓ)`` rows.

    Returns:
        :class:`DiscreteTimeBound` (nats per sequence).
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if not isinstance(sub, SubTokenizer):
        raise TypeError(f"sub must be a SubTokenizer, got {type(sub).__name__}")
    for name, value, low in (("steps", steps, 1), ("num_draws", num_draws, 2), ("batch_size", batch_size, 1)):
        check_int(name, value, low=low)
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2:
        raise ValueError(
            f"x0 must be a LongTensor of shape (B, L), got "
            f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}"
        )
    if schedule is None:
        schedule = getattr(model, "schedule", None) or "linear"
    sched = get_schedule(schedule, length=sub.length)
    grid_t = time_grid(steps, grid, sched)
    y0 = sub.encode(x0)  # validates ids, (B, n)
    num_seqs, num_tokens = x0.shape
    ell, n, mask_id = sub.length, y0.shape[1], sub.mask_id
    device = x0.device
    generator = torch.Generator().manual_seed(seed)

    k_of = reveal_steps(grid_t, sched, (num_seqs, num_draws, n), generator)  # (B, K, n)
    # one row per (sequence, draw, step that reveals something)
    flat = k_of.view(num_seqs * num_draws, n)
    sorted_k, _ = flat.sort(dim=1)
    first = torch.ones_like(sorted_k, dtype=torch.bool)
    first[:, 1:] = sorted_k[:, 1:] != sorted_k[:, :-1]
    traj, pos = first.nonzero(as_tuple=True)
    row_step = sorted_k[traj, pos]  # (R,)
    row_seq = traj // num_draws
    total = torch.zeros(num_seqs * num_draws, dtype=torch.float64)
    table = sub.table("digit_table", device)  # (C, ℓ)
    y0_dev = y0.to(device)

    for start in range(0, traj.numel(), batch_size):
        sl = slice(start, start + batch_size)
        tr, kk, sq = traj[sl], row_step[sl], row_seq[sl]
        ks = flat[tr]  # (r, n) reveal step of every digit of the row's trajectory
        still_masked = (ks >= kk.unsqueeze(1)).to(device)
        revealed_now = (ks == kk.unsqueeze(1)).to(device)
        y_true = y0_dev[sq.to(device)]
        y_t = torch.where(still_masked, torch.full_like(y_true, mask_id), y_true)
        t_in = grid_t[kk].to(device=device, dtype=torch.float32)
        logits = model(y_t, t_in)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (
            y_t.shape[0],
            num_tokens,
            sub.num_classes,
        ):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"model returned {got}, expected logits of shape {(y_t.shape[0], num_tokens, sub.num_classes)}"
            )
        logp = carry_over_log_probs(logits.to(torch.float64), y_t, sub)  # (r, L, C)
        rev = revealed_now.view(-1, num_tokens, ell)
        yt = y_true.view(-1, num_tokens, ell)
        agree = torch.ones_like(logp, dtype=torch.bool)
        for j in range(ell):
            agree &= ~rev[..., j].unsqueeze(-1) | (table[:, j].view(1, 1, -1) == yt[..., j].unsqueeze(-1))
        log_p_values = torch.logsumexp(logp.masked_fill(~agree, float("-inf")), dim=-1)  # (r, L)
        token_has = rev.any(-1)
        nll = torch.where(token_has, -log_p_values, torch.zeros_like(log_p_values)).sum(-1)
        total.index_add_(0, tr, nll.cpu())

    per_draw = total.view(num_seqs, num_draws)
    return DiscreteTimeBound(
        nelbo=per_draw.mean(1),
        nelbo_stderr=per_draw.std(1) / math.sqrt(num_draws),
        per_draw=per_draw,
        steps=steps,
        num_draws=num_draws,
        num_tokens=num_tokens,
        network_rows=int(traj.numel()),
    )
