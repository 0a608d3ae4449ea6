"""Masking schedules ``α(t)`` (docs/method.md §2).

``α(t)`` is the probability that a sub-token is still *unmasked* at time ``t ∈ [0, 1]``
(``α(0) = 1``, ``α(1) = 0`` up to ``eps`` for log-linear). ``weight(t) = -α'(t) / (1 - α(t))`` is the
masking hazard that weights the continuous-time objectives; for the linear schedule it is ``1/t``.

Schedules are picked by name with :func:`get_schedule` (``"linear"``, ``"loglinear"``, ``"cosine"``,
``"polynomial"``; ``"polynomial:3"`` sets the exponent).

**Per-digit schedules** (docs/method.md §2b): :class:`DigitSchedules` holds one schedule ``α_j`` per digit
position ``j = 0..ℓ−1`` of every token; its methods return a trailing ``ℓ`` axis. Spec strings (they
need ``ℓ``, passed as ``get_schedule(spec, length=ℓ)``): ``"leading:A"`` (``A > 0``; digit ``j`` gets
the polynomial mask probability ``t^(A^((ℓ−1−2j)/(ℓ−1)))``: ``t^A`` for the leading digit down to
``t^(1/A)`` for the last, so ``A > 1`` reveals leading digits earlier in generation) and
``"digits:S_0,S_1,…"`` (one ordinary spec per digit position, e.g. ``"digits:polynomial:2,linear"``).
When every position gets the same schedule, :func:`get_schedule` returns that one shared schedule
(``"leading:1"`` *is* ``"linear"``), so a shared schedule always takes the unchanged code paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "SCHEDULES",
    "CosineSchedule",
    "DigitSchedules",
    "LinearSchedule",
    "LogLinearSchedule",
    "PolynomialSchedule",
    "Schedule",
    "get_schedule",
    "is_per_digit",
    "time_for_masked_fraction",
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


class DigitSchedules:
    """One masking schedule per digit position (docs/method.md §2b).

    Digit ``j`` of every token (text: position ``i·ℓ + j`` of ``LongTensor[B, L·ℓ]``; images: channel
    ``c·ℓ + j`` of ``(B, ch·ℓ, H, W)``) is masked at time ``t`` with probability ``g_j(t) = 1 − α_j(t)``,
    independently of every other digit, and weighted by its own hazard ``w_j(t) = −α_j'(t) / g_j(t)``.

    Args:
        schedules: ``ℓ ≥ 1`` ordinary schedules (:class:`Schedule`, names or config dicts), digit 0
            (most significant) first.

    Every method takes times of any shape ``S`` (tensor or number) and returns ``S + (ℓ,)`` in the
    caller's floating dtype, computed in float64 by each position's own closed form.
    """

    name = "digits"

    def __init__(self, schedules: Sequence[Schedule | str | dict]) -> None:
        if isinstance(schedules, (str, dict, Schedule)) or not isinstance(schedules, Sequence):
            raise TypeError(f"schedules must be a sequence of schedules, got {type(schedules).__name__}")
        if len(schedules) == 0:
            raise ValueError("DigitSchedules needs at least one schedule (one per digit position)")
        parsed = []
        for s in schedules:
            one = get_schedule(s)
            if not isinstance(one, Schedule):
                raise ValueError(f"each digit position takes an ordinary schedule, got {s!r}")
            parsed.append(one)
        self.schedules: tuple[Schedule, ...] = tuple(parsed)

    @property
    def length(self) -> int:
        """``ℓ``: the number of digit positions."""
        return len(self.schedules)

    def _stack(self, method: str, t) -> torch.Tensor:
        t64, dt = _f64(t)
        return torch.stack([getattr(s, method)(t64) for s in self.schedules], dim=-1).to(dt)

    def alpha(self, t) -> torch.Tensor:
        """``α_j(t)`` (no unit), ``shape(t) + (ℓ,)``."""
        return self._stack("alpha", t)

    def alpha_derivative(self, t) -> torch.Tensor:
        """``α_j'(t)`` (1/time, ≤ 0), ``shape(t) + (ℓ,)``."""
        return self._stack("alpha_derivative", t)

    def mask_probability(self, t) -> torch.Tensor:
        """``g_j(t) = 1 − α_j(t)``: the probability that digit ``j`` is masked at ``t``, ``shape(t) + (ℓ,)``."""
        return self._stack("mask_probability", t)

    def weight(self, t) -> torch.Tensor:
        """Hazards ``w_j(t) = −α_j'(t) / g_j(t)`` (1/time), ``shape(t) + (ℓ,)``."""
        return self._stack("weight", t)

    def time_from_mask_probability(self, u: torch.Tensor) -> torch.Tensor:
        """Per-position inverse: ``u`` of shape ``S + (ℓ,)`` → the times ``t_j`` with ``g_j(t_j) = u_j``
        (same shape; the masking time of a digit whose uniform is ``u_j``, docs/method.md §2b)."""
        u64, dt = _f64(u)
        if u64.dim() == 0 or u64.shape[-1] != self.length:
            raise ValueError(
                f"u must have a trailing axis of ℓ={self.length} digits, got shape {tuple(u64.shape)}"
            )
        cols = [s.time_from_mask_probability(u64[..., j]) for j, s in enumerate(self.schedules)]
        return torch.stack(cols, dim=-1).to(dt)

    def time_from_mean_mask_probability(self, u, iterations: int = 64) -> torch.Tensor:
        """The ``t`` at which the mean mask probability ``(1/ℓ) Σ_j g_j(t)`` equals ``u`` (same shape as
        ``u``; bisection in float64 on ``[0, 1]``, ``u`` clamped into ``[0, 1]``). Used where one time
        must stand for a fraction of hidden digits (the ``"alpha"`` time grid, decoding orders)."""
        u64, dt = _f64(u)
        target = u64.clamp(0.0, 1.0)
        lo, hi = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = self.mask_probability(mid).mean(-1) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return hi.to(dt)

    def per_position(self, values: torch.Tensor, num_digits: int) -> torch.Tensor:
        """``values[..., ℓ]`` → ``[..., num_digits]``, column ``c`` holding ``values[..., c mod ℓ]``: the
        per-digit quantity at every digit of a token-major sequence (``num_digits = L·ℓ``) or of the
        digit channels of an image (``ch·ℓ``)."""
        if num_digits % self.length:
            raise ValueError(
                f"{num_digits} digits are not a whole number of tokens of ℓ={self.length} digits"
            )
        return values.repeat(*([1] * (values.dim() - 1)), num_digits // self.length)

    def config(self) -> dict:
        return {"name": self.name, "schedules": [s.config() for s in self.schedules]}

    def __repr__(self) -> str:
        return f"DigitSchedules({list(self.schedules)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DigitSchedules) and self.config() == other.config()


def is_per_digit(schedule: object) -> bool:
    """Whether ``schedule`` is a :class:`DigitSchedules` (a trailing ``ℓ`` axis on every quantity)."""
    return isinstance(schedule, DigitSchedules)


def time_for_masked_fraction(schedule: Schedule | DigitSchedules, u) -> torch.Tensor:
    """The time at which a fraction ``u`` of the digits is expected to be hidden: ``g^{-1}(u)`` for a
    shared schedule, the inverse of the mean ``(1/ℓ) Σ_j g_j`` for per-digit schedules; shape of ``u``."""
    if is_per_digit(schedule):
        return schedule.time_from_mean_mask_probability(u)
    return schedule.time_from_mask_probability(u)


def _single(schedules: list[Schedule]) -> Schedule | DigitSchedules:
    """One shared schedule when every digit position has the same one (then the shared code paths,
    bit for bit), else :class:`DigitSchedules`."""
    if all(s == schedules[0] for s in schedules):
        return schedules[0]
    return DigitSchedules(schedules)


PER_DIGIT_SPECS = ("leading:A", "digits:S_0,S_1,...")


def _leading(spec: str, arg: str, length: int | None) -> Schedule | DigitSchedules:
    try:
        strength = float(arg)
    except ValueError:
        strength = math.nan
    if not 0 < strength < math.inf:
        raise ValueError(f"schedule {spec!r}: 'leading:A' needs a number A > 0, got {arg!r}")
    if length is None:
        raise ValueError(f"schedule {spec!r} is per digit: it needs the number of digits per token ℓ")
    if length == 1:
        return LinearSchedule()
    out: list[Schedule] = []
    for j in range(length):
        exponent = strength ** ((length - 1 - 2 * j) / (length - 1))
        out.append(LinearSchedule() if exponent == 1.0 else PolynomialSchedule(exponent))
    return _single(out)


def _digit_list(spec: str, arg: str, length: int | None) -> Schedule | DigitSchedules:
    parts = [p.strip() for p in arg.split(",")] if arg else []
    if not parts or any(not p for p in parts):
        raise ValueError(
            f"schedule {spec!r}: 'digits:' needs one schedule per digit position, comma-separated"
        )
    if length is not None and len(parts) != length:
        raise ValueError(
            f"schedule {spec!r} lists {len(parts)} digit schedules but the tokens have ℓ={length} digits "
            f"(sub-tokens); give exactly {length}"
        )
    out = []
    for p in parts:
        if p.partition(":")[0] in ("digits", "leading"):
            raise ValueError(f"schedule {spec!r}: each digit takes an ordinary schedule, got {p!r}")
        out.append(get_schedule(p))
    return _single(out)


def _check_length(schedule: DigitSchedules, length: int | None, spec: object) -> DigitSchedules:
    if length is not None and schedule.length != length:
        raise ValueError(
            f"schedule {spec!r} has {schedule.length} digit schedules but the tokens have ℓ={length} digits"
        )
    return schedule


def get_schedule(
    spec: str | dict | Schedule | DigitSchedules, length: int | None = None
) -> Schedule | DigitSchedules:
    """A schedule from a name (``"cosine"``, ``"polynomial:3"``), a config dict, or a schedule; or
    per-digit schedules (:class:`DigitSchedules`) from ``"leading:A"``, ``"digits:S_0,…,S_{ℓ−1}"`` or
    their config dict (docs/method.md §2b). ``length``: the digits per token ``ℓ``, needed by
    ``"leading:A"`` and checked against a per-digit list (ValueError naming both counts); a shared
    schedule ignores it. Identical schedules at every position give that shared schedule."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, DigitSchedules):
        return _check_length(spec, length, spec)
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name", None)
        if name == DigitSchedules.name:
            if set(spec) != {"schedules"}:
                raise ValueError(
                    f"a 'digits' schedule config takes only 'schedules', got keys {sorted(spec)}"
                )
            return _check_length(DigitSchedules(spec["schedules"]), length, spec["schedules"])
        if name not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {name!r}; expected one of {sorted(SCHEDULES) + [DigitSchedules.name]}"
            )
        return SCHEDULES[name](**spec)
    if not isinstance(spec, str):
        raise TypeError(f"schedule must be a name, a dict or a Schedule, got {type(spec).__name__}")
    name, _, arg = spec.partition(":")
    if name == "leading":
        return _leading(spec, arg, length)
    if name == "digits":
        out = _digit_list(spec, arg, length)
        return out
    if name not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {spec!r}; expected one of {sorted(SCHEDULES)} ('polynomial:n', "
            f"'loglinear:eps') or per digit {list(PER_DIGIT_SPECS)}"
        )
    if arg:
        if name not in ("polynomial", "loglinear"):
            raise ValueError(f"schedule {name!r} takes no argument, got {spec!r}")
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"schedule argument must be a number, got {arg!r} in {spec!r}") from None
        return SCHEDULES[name](value)
    return SCHEDULES[name]()
