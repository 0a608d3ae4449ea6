"""Masking schedules ``α(t)`` (MATH.md §2).

``α(t)`` is the probability that a sub-token is still *unmasked* at time ``t ∈ [0, 1]``
(``α(0) = 1``, ``α(1) = 0`` up to ``eps`` for log-linear). ``weight(t) = -α'(t) / (1 - α(t))`` is the
masking hazard that weights the continuous-time objectives; for the linear schedule it is ``1/t``.

Schedules are picked by name with :func:`get_schedule` (``"linear"``, ``"loglinear"``, ``"cosine"``,
``"polynomial"``; ``"polynomial:3"`` sets the exponent).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "Schedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "CosineSchedule",
    "PolynomialSchedule",
    "get_schedule",
    "SCHEDULES",
]


class Schedule:
    """Base class. Subclasses define ``alpha`` and ``alpha_derivative``; all take a ``FloatTensor``
    of times of any shape and return the same shape."""

    name = "base"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_derivative(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def time_from_mask_probability(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse: the ``t`` with ``1 - α(t) = u`` (used when a time-conditioned network is scored
        by the integrated-``t`` estimator, MATH.md §5)."""
        raise NotImplementedError

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        """``1 - α(t)``: the probability that a sub-token is masked at time ``t``."""
        return 1.0 - self.alpha(t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """Hazard ``w(t) = -α'(t) / (1 - α(t))`` (units: 1/time)."""
        return -self.alpha_derivative(t) / (1.0 - self.alpha(t))

    def config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.config() == other.config()


class LinearSchedule(Schedule):
    """``α(t) = 1 - t``; ``w(t) = 1/t``."""

    name = "linear"

    def alpha(self, t):
        return 1.0 - t

    def alpha_derivative(self, t):
        return -torch.ones_like(t)

    def weight(self, t):
        return 1.0 / t

    def time_from_mask_probability(self, u):
        return u


class LogLinearSchedule(Schedule):
    """MDLM log-linear: ``α(t) = 1 - (1 - eps) t`` (never fully masked: ``α(1) = eps``)."""

    name = "loglinear"

    def __init__(self, eps: float = 1e-3) -> None:
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"loglinear eps must be in [0, 1), got {eps}")
        self.eps = eps

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def alpha_derivative(self, t):
        return torch.full_like(t, -(1.0 - self.eps))

    def time_from_mask_probability(self, u):
        return (u / (1.0 - self.eps)).clamp(max=1.0)

    def config(self):
        return {"name": self.name, "eps": self.eps}


class CosineSchedule(Schedule):
    """``α(t) = cos(π t / 2)``."""

    name = "cosine"

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * t)

    def alpha_derivative(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def time_from_mask_probability(self, u):
        return torch.acos((1.0 - u).clamp(-1.0, 1.0)) * (2.0 / math.pi)


class PolynomialSchedule(Schedule):
    """``α(t) = 1 - t^n`` (``n = 1`` is linear)."""

    name = "polynomial"

    def __init__(self, exponent: float = 2.0) -> None:
        if not exponent > 0:
            raise ValueError(f"polynomial exponent must be > 0, got {exponent}")
        self.exponent = float(exponent)

    def alpha(self, t):
        return 1.0 - t**self.exponent

    def alpha_derivative(self, t):
        return -self.exponent * t ** (self.exponent - 1.0)

    def weight(self, t):
        return self.exponent / t

    def time_from_mask_probability(self, u):
        return u ** (1.0 / self.exponent)

    def config(self):
        return {"name": self.name, "exponent": self.exponent}


SCHEDULES = {
    "linear": LinearSchedule,
    "loglinear": LogLinearSchedule,
    "cosine": CosineSchedule,
    "polynomial": PolynomialSchedule,
}


def get_schedule(spec: str | dict | Schedule) -> Schedule:
    """A schedule from a name (``"cosine"``, ``"polynomial:3"``), a config dict, or a schedule."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name", None)
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; expected one of {sorted(SCHEDULES)}")
        return SCHEDULES[name](**spec)
    if not isinstance(spec, str):
        raise TypeError(f"schedule must be a name, a dict or a Schedule, got {type(spec).__name__}")
    name, _, arg = spec.partition(":")
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {spec!r}; expected one of {sorted(SCHEDULES)}")
    if arg:
        if name not in ("polynomial", "loglinear"):
            raise ValueError(f"schedule {name!r} takes no argument, got {spec!r}")
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"schedule argument must be a number, got {arg!r} in {spec!r}") from None
        return SCHEDULES[name](value)
    return SCHEDULES[name]()
