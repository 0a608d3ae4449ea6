"""Time grids, temperature schedules, the corrector's κ(t) and the idle-step closed form (docs/method.md §6).

Conventions: a time grid is a ``float64`` tensor ``[T+1]`` with ``1 = t_0 > t_1 > … > t_T = 0``
(``t = 1`` fully masked, ``t = 0`` clean); step ``k`` goes from ``t_k`` to ``t_{k+1}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..schedules import DigitSchedules, Schedule, get_schedule, time_for_masked_fraction
from ..validation import check_int, check_number, check_positive_int

__all__ = [
    "GRIDS",
    "time_grid",
    "temperature_schedule",
    "corrector_kappa",
    "expected_idle_steps",
]

GRIDS = ("uniform", "cosine", "power", "alpha")


def time_grid(
    steps: int | None,
    kind: str | Sequence[float] | torch.Tensor = "uniform",
    schedule: Schedule | DigitSchedules | str = "linear",
) -> torch.Tensor:
    """The sampler's time grid, ``float64[T+1]`` from 1 down to 0.

    Args:
        steps: number of steps ``T ≥ 1`` (may be ``None`` when ``kind`` is an explicit grid).
        kind: ``"uniform"`` (``t_k = 1 − k/T``, the default); ``"cosine"`` (``t_k = cos(πk/2T)``: small
            steps near ``t = 1``, large near 0); ``"power:p"`` (``t_k = (1 − k/T)^p``, ``p > 0``;
            ``p > 1`` spends more steps near ``t = 0``, as the polynomial grids of the paper's image
            samplers); ``"alpha"`` (uniform in the masking probability ``1 − α(t)`` of ``schedule``,
            so every step reveals the same expected number of digits and the idle-step closed form
            :func:`expected_idle_steps` holds for any schedule); or an explicit strictly
            decreasing sequence from 1 to 0 (length ``T+1``).
        schedule: used only by ``"alpha"`` (per-digit schedules: uniform in the *mean* mask
            probability over digit positions, docs/method.md §2b).
    """
    if not isinstance(kind, str):
        grid = torch.as_tensor(kind, dtype=torch.float64).flatten().clone()
        if grid.numel() < 2:
            raise ValueError(f"an explicit time grid needs at least 2 points (1, ..., 0), got {grid.numel()}")
        if steps is not None and check_positive_int("steps", steps) != grid.numel() - 1:
            raise ValueError(
                f"steps={steps} but the explicit time grid has {grid.numel()} points (T+1 expected)"
            )
        if float(grid[0]) != 1.0 or float(grid[-1]) != 0.0:
            raise ValueError(
                f"an explicit time grid must start at 1 and end at 0, got {float(grid[0])} .. {float(grid[-1])}"
            )
        if not bool((grid[1:] < grid[:-1]).all()):
            raise ValueError("an explicit time grid must be strictly decreasing")
        return grid
    if steps is None:
        raise ValueError(f"steps is required for the time grid kind {kind!r}")
    steps = check_positive_int("steps", steps)
    frac = torch.arange(steps + 1, dtype=torch.float64) / steps  # k/T
    name, _, arg = kind.partition(":")
    if name == "uniform" and not arg:
        grid = 1.0 - frac
    elif name == "cosine" and not arg:
        grid = torch.cos(0.5 * math.pi * frac)
    elif name == "power":
        try:
            power = float(arg) if arg else 2.0
        except ValueError:
            raise ValueError(f"time grid 'power:p' needs a number p, got {kind!r}") from None
        if not power > 0:
            raise ValueError(f"time grid power must be > 0, got {power} in {kind!r}")
        grid = (1.0 - frac) ** power
    elif name == "alpha" and not arg:
        sched = get_schedule(schedule)
        grid = time_for_masked_fraction(sched, 1.0 - frac).to(torch.float64)
    else:
        raise ValueError(f"unknown time grid {kind!r}; expected one of {GRIDS} ('power:p') or a tensor")
    grid[0], grid[-1] = 1.0, 0.0
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(
            f"time grid {kind!r} with steps={steps} is not strictly decreasing (too many steps?)"
        )
    return grid


def temperature_schedule(
    kind: str = "linear", start: float = 1.0, end: float = 1.0
) -> Callable[[float], float]:
    """A temperature ``τ(t)`` (``t`` in ``[0, 1]``) going from ``start`` at ``t = 1`` to ``end`` at ``t = 0``.

    ``kind``: ``"constant"`` (``start``), ``"linear"`` (``τ = end + (start − end)·t``) or
    ``"cosine"`` (``τ = end + (start − end)·(1 − cos(πt/2))``, annealing late). Both ends must be > 0.
    """
    for name, value in (("start", start), ("end", end)):
        check_number(f"temperature {name}", value, 0, low_open=True, finite=False)
    start, end = float(start), float(end)
    if kind == "constant":
        return lambda t: start
    if kind == "linear":
        return lambda t: end + (start - end) * float(t)
    if kind == "cosine":
        return lambda t: end + (start - end) * (1.0 - math.cos(0.5 * math.pi * float(t)))
    raise ValueError(f"unknown temperature schedule {kind!r}; expected 'constant', 'linear' or 'cosine'")


def corrector_kappa(t: float, scale: float, power: float) -> float:
    """``κ(t) = a·t^p (1 − t)^p`` (dimensionless), zero at both ends of ``[0, 1]``."""
    if t <= 0.0 or t >= 1.0 or scale == 0.0:
        return 0.0
    return scale * (t * (1.0 - t)) ** power


def expected_idle_steps(steps: int, num_digits: int | torch.Tensor) -> float | torch.Tensor:
    """``E[idle steps] = T (1 − 1/T)^N`` for ``N`` digits revealed at independent uniform steps.

    Exact for the joint sampler on a grid uniform in the masking probability (``"uniform"`` with the
    linear schedule, or ``"alpha"``), with ``N`` the number of *free* (not conditioned) digits.
    Example: ``T = 1024``, ``N = 1024`` → 376.7. ``num_digits`` may be an int or a tensor (→ tensor).
    """
    steps = check_positive_int("steps", steps)
    if isinstance(num_digits, torch.Tensor):
        if (num_digits < 0).any():
            raise ValueError(f"num_digits must be >= 0, got min {int(num_digits.min())}")
        return steps * (1.0 - 1.0 / steps) ** num_digits.to(torch.float64)
    check_int("num_digits", num_digits, low=0)
    return steps * (1.0 - 1.0 / steps) ** num_digits
