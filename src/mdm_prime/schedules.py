"""Masking schedules ``α(t)`` (docs/method.md §2).

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
    "SCHEDULES",
    "CosineSchedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "PolynomialSchedule",
    "Schedule",
    "get_schedule",
]


def _f64(t: torch.Tensor | float) -> tuple[torch.Tensor, torch.dtype]:
    """``t`` as a float64 tensor, and the dtype to return: the caller's floating dtype, or the default
    floating dtype for integer / Python inputs."""
    t = torch.as_tensor(t)
    out = t.dtype if t.dtype.is_floating_point else torch.get_default_dtype()
    return t.to(torch.float64), out


class Schedule:
    """Base class. Subclasses give closed forms, evaluated in ``float64``, of the mask probability
    ``1 − α(t)`` (:meth:`_mask64`), of ``α'(t)`` (:meth:`_dalpha64`) and of the weight (:meth:`_weight64`),
    so that nothing cancels near ``t = 0`` (``1 − cos(πt/2)`` in float32 is 0 below ``t ≈ 1.5e-4``).

    Every public method takes a tensor of times of any shape (or a number) and returns the same shape
    in the caller's floating dtype (``float64`` in, ``float64`` out; ``float32`` in, ``float32`` out,
    rounded once from the float64 value). For ``t ∈ (0, 1]`` the mask probability is ``> 0`` whenever
    it is representable (``≥ 1e-45`` in float32) and the weight is finite and positive.
    """

    name = "base"

    # --- float64 closed forms (subclasses) -------------------------------------------------------
    def _mask64(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _dalpha64(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _weight64(self, t: torch.Tensor) -> torch.Tensor:
        return -self._dalpha64(t) / self._mask64(t)

    def _inverse64(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- public API ------------------------------------------------------------------------------
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """``α(t)``: the probability that a sub-token is still unmasked at time ``t`` (no unit)."""
        t64, dt = _f64(t)
        return (1.0 - self._mask64(t64)).to(dt)

    def alpha_derivative(self, t: torch.Tensor) -> torch.Tensor:
        """``α'(t) = dα/dt`` (units: 1/time; ≤ 0)."""
        t64, dt = _f64(t)
        return self._dalpha64(t64).to(dt)

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        """``1 − α(t)``: the probability that a sub-token is masked at time ``t``, in closed form
        (no cancellation; ``> 0`` for every ``t > 0`` representable in the returned dtype)."""
        t64, dt = _f64(t)
        return self._mask64(t64).to(dt)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """Hazard ``w(t) = −α'(t) / (1 − α(t))`` (units: 1/time), in closed form; finite and
        positive for ``t ∈ (0, 1]`` (``+inf`` at ``t = 0``)."""
        t64, dt = _f64(t)
        return self._weight64(t64).to(dt)

    def time_from_mask_probability(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse: the ``t`` with ``1 − α(t) = u`` (used when a time-conditioned network is scored
        by the integrated-``t`` estimator, docs/method.md §5). Computed in float64, no cancellation
        at small ``u``; ``u`` outside ``[0, 1]`` (rounding) is clamped into it."""
        u64, dt = _f64(u)
        return self._inverse64(u64).to(dt)

    def config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.config() == other.config()


class LinearSchedule(Schedule):
    """``α(t) = 1 − t``: mask probability ``t``, ``w(t) = 1/t``."""

    name = "linear"

    def _mask64(self, t):
        return t.clone()

    def _dalpha64(self, t):
        return -torch.ones_like(t)

    def _weight64(self, t):
        return 1.0 / t

    def _inverse64(self, u):
        return u.clamp(0.0, 1.0)


class LogLinearSchedule(Schedule):
    """MDLM log-linear: ``α(t) = 1 − (1 − eps) t`` (never fully masked: ``α(1) = eps``); mask
    probability ``(1 − eps) t``, ``w(t) = 1/t``."""

    name = "loglinear"

    def __init__(self, eps: float = 1e-3) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
            raise ValueError(f"loglinear eps must be a number in [0, 1), got {eps!r}")
        self.eps = float(eps)

    def _mask64(self, t):
        return (1.0 - self.eps) * t

    def _dalpha64(self, t):
        return torch.full_like(t, -(1.0 - self.eps))

    def _weight64(self, t):
        return 1.0 / t

    def _inverse64(self, u):
        return (u.clamp(min=0.0) / (1.0 - self.eps)).clamp(max=1.0)

    def config(self):
        return {"name": self.name, "eps": self.eps}


class CosineSchedule(Schedule):
    """``α(t) = cos(πt/2)``: mask probability ``1 − cos(πt/2) = 2 sin²(πt/4)``,
    ``w(t) = (π/2) sin(πt/2) / (2 sin²(πt/4)) = (π/2) cot(πt/4)`` (≈ ``2/t`` near 0)."""

    name = "cosine"

    def _mask64(self, t):
        return 2.0 * torch.sin(0.25 * math.pi * t) ** 2

    def _dalpha64(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def _weight64(self, t):
        return 0.5 * math.pi / torch.tan(0.25 * math.pi * t)

    def _inverse64(self, u):
        # u = 2 sin²(πt/4)  ⇔  t = (4/π) asin(sqrt(u/2))
        # (4/π)·asin(√½) rounds to 1 + 2e-16: clamp so that t never passes the end of the time axis
        return (torch.asin((0.5 * u.clamp(0.0, 1.0)).sqrt()) * (4.0 / math.pi)).clamp(max=1.0)


class PolynomialSchedule(Schedule):
    """``α(t) = 1 − t^n`` (``n = 1`` is linear): mask probability ``t^n``, ``w(t) = n/t``."""

    name = "polynomial"

    def __init__(self, exponent: float = 2.0) -> None:
        if (
            isinstance(exponent, bool)
            or not isinstance(exponent, (int, float))
            or not 0 < exponent < math.inf
        ):
            raise ValueError(f"polynomial exponent must be > 0 and finite, got {exponent!r}")
        self.exponent = float(exponent)

    def _mask64(self, t):
        return t**self.exponent

    def _dalpha64(self, t):
        return -self.exponent * t ** (self.exponent - 1.0)

    def _weight64(self, t):
        return self.exponent / t

    def _inverse64(self, u):
        return u.clamp(0.0, 1.0) ** (1.0 / self.exponent)

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
