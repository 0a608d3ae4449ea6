"""Schedules (docs/method.md §2): closed forms checked against independent float64 / Python-math
formulas, the identity ``w(t)·(1−α) = −α'`` against finite differences, and the small-``t`` numerics
(property tests at ``t → 0`` for every schedule and both float dtypes)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm_prime import get_schedule
from mdm_prime.schedules import SCHEDULES

NAMES = ["linear", "loglinear", "cosine", "polynomial", "polynomial:3", "polynomial:0.5"]

# independent references in Python floats (math module): mask probability 1 − α(t) and α'(t)
REFERENCE = {
    "linear": (lambda t: t, lambda t: -1.0),
    "loglinear": (lambda t: (1 - 1e-3) * t, lambda t: -(1 - 1e-3)),
    "cosine": (
        lambda t: 2 * math.sin(math.pi * t / 4) ** 2,
        lambda t: -math.pi / 2 * math.sin(math.pi * t / 2),
    ),
    "polynomial": (lambda t: t**2, lambda t: -2 * t),
    "polynomial:3": (lambda t: t**3, lambda t: -3 * t**2),
    "polynomial:0.5": (lambda t: t**0.5, lambda t: -0.5 * t**-0.5),
}


@pytest.mark.parametrize("name", NAMES)
def test_endpoints_and_monotone(name):
    s = get_schedule(name)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = s.alpha(t)
    assert a[0] == pytest.approx(1.0)
    assert a[-1] == pytest.approx(0.0, abs=2e-3)
    assert torch.all(a[1:] <= a[:-1])


@pytest.mark.parametrize("name", NAMES)
def test_closed_forms_match_independent_reference(name):
    s = get_schedule(name)
    mask_ref, dalpha_ref = REFERENCE[name]
    for t in [1e-12, 1e-9, 3e-6, 1e-4, 1e-3, 0.1, 0.5, 0.9, 1.0]:
        tt = torch.tensor([t], dtype=torch.float64)
        m, d = mask_ref(t), dalpha_ref(t)
        assert float(s.mask_probability(tt)) == pytest.approx(m, rel=1e-12)
        assert float(s.alpha_derivative(tt)) == pytest.approx(d, rel=1e-12)
        assert float(s.weight(tt)) == pytest.approx(-d / m, rel=1e-12)
        assert float(s.alpha(tt)) == pytest.approx(1.0 - m, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_weight_identity_against_finite_differences(name):
    # w(t)·(1 − α(t)) = −α'(t), with α' from central differences of α in float64
    s = get_schedule(name)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    fd = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
    assert torch.allclose(s.alpha_derivative(t), fd, rtol=1e-6, atol=1e-8)
    assert torch.allclose(s.weight(t) * s.mask_probability(t), -fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_weight_identity_near_zero_against_log_derivative(name):
    # near t = 0 differences of α cancel; use d/dt log(1 − α) = −α'/(1 − α) = w(t) instead,
    # by a relative central difference of the mask probability (no cancellation: both sides ≈ u)
    s = get_schedule(name)
    for t in [1e-10, 1e-7, 1e-4]:
        tt = torch.tensor([t], dtype=torch.float64)
        h = t * 1e-5
        fd = (s.mask_probability(tt + h).log() - s.mask_probability(tt - h).log()) / (2 * h)
        assert float(s.weight(tt)) == pytest.approx(float(fd), rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    log_t=st.floats(min_value=math.log(1e-12), max_value=math.log(1e-3)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_small_t_masks_with_positive_probability_and_finite_weight(name, log_t, dtype):
    s = get_schedule(name)
    t = torch.tensor([math.exp(log_t)], dtype=dtype)
    m, w, a = s.mask_probability(t), s.weight(t), s.alpha(t)
    assert m.dtype == w.dtype == a.dtype == dtype  # callers get their dtype back
    assert float(m) > 0 and math.isfinite(float(m))
    assert 0 < float(w) < math.inf
    # and the weight is the closed form (no cancellation): w·(1−α) = −α' to float rounding
    rel = 1e-5 if dtype == torch.float32 else 1e-12
    assert float(w) * float(m) == pytest.approx(-float(s.alpha_derivative(t)), rel=rel)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(NAMES), log_u=st.floats(min_value=math.log(1e-15), max_value=0.0))
def test_inverse_mask_probability_round_trips_at_small_u(name, log_u):
    s = get_schedule(name)
    u = torch.tensor([math.exp(log_u)], dtype=torch.float64)
    if name == "loglinear":
        u = u * (1 - 1e-3)  # its mask probability never exceeds 1 − eps
    t = s.time_from_mask_probability(u)
    assert float(s.mask_probability(t)) == pytest.approx(float(u), rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_inverse_mask_probability(name):
    s = get_schedule(name)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    assert torch.allclose(s.time_from_mask_probability(s.mask_probability(t)), t, atol=1e-9)


def test_float32_inputs_are_rounded_once_from_float64():
    s = get_schedule("cosine")
    t = torch.tensor([1e-5, 1e-4, 2e-4], dtype=torch.float32)
    ref = torch.tensor([2 * math.sin(math.pi * float(x) / 4) ** 2 for x in t.double()], dtype=torch.float64)
    assert torch.equal(s.mask_probability(t), ref.float())
    assert torch.all(s.weight(t) > 0) and torch.all(torch.isfinite(s.weight(t)))
    assert s.mask_probability(0.5).dtype == torch.get_default_dtype()  # numbers accepted


def test_linear_weight_is_one_over_t():
    s = get_schedule("linear")
    t = torch.tensor([0.1, 0.5, 1.0])
    assert torch.allclose(s.weight(t), 1 / t)


def test_weight_integrates_the_hazard():
    # ∫ w(t) (1-α)^k α^(n-k) dt = B(k, n-k+1) for any schedule (change of variable u = 1-α)
    n, k = 5, 2
    exact = math.gamma(k) * math.gamma(n - k + 1) / math.gamma(n + 1)
    for name in ["linear", "cosine", "polynomial:2", "loglinear"]:
        s = get_schedule(name)
        t = torch.linspace(1e-6, 1, 200001, dtype=torch.float64)
        f = s.weight(t) * s.mask_probability(t) ** k * s.alpha(t) ** (n - k)
        target = exact
        if name == "loglinear":  # u runs over [0, 1 − eps] only
            from scipy.special import betainc

            target = exact * betainc(k, n - k + 1, 1 - 1e-3)
        assert torch.trapezoid(f, t).item() == pytest.approx(target, rel=1e-4)


def test_config_round_trip_and_errors():
    for name in SCHEDULES:
        s = get_schedule(name)
        assert get_schedule(s.config()) == s
    with pytest.raises(ValueError, match="unknown schedule 'cosin'"):
        get_schedule("cosin")
    with pytest.raises(ValueError, match="exponent must be > 0"):
        get_schedule("polynomial:-1")
    with pytest.raises(ValueError, match="exponent must be > 0 and finite, got 0.0"):
        get_schedule("polynomial:0")
    with pytest.raises(ValueError, match="exponent must be > 0 and finite, got inf"):
        get_schedule("polynomial:inf")
    with pytest.raises(ValueError, match="exponent must be > 0 and finite, got nan"):
        get_schedule("polynomial:nan")
    with pytest.raises(ValueError, match="eps must be a number in \\[0, 1\\), got 1.0"):
        get_schedule("loglinear:1")
    with pytest.raises(ValueError, match="takes no argument"):
        get_schedule("cosine:2")
    with pytest.raises(TypeError):
        get_schedule(3)


# ----------------------------------------------------------------------------- kills of mutmut survivors


@pytest.mark.parametrize("name", NAMES)
def test_dtype_contract_of_every_method(name):
    s = get_schedule(name)
    t32 = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 0.999 + 1e-3
    for method in (s.alpha, s.alpha_derivative, s.mask_probability, s.weight, s.time_from_mask_probability):
        assert method(t32).dtype == torch.float32
        assert method(t32.double()).dtype == torch.float64
        assert method(torch.tensor([1])).dtype == torch.get_default_dtype()  # integers: default float
        # float32 results are the float64 values rounded once (not float32 arithmetic)
        assert torch.equal(method(t32), method(t32.double()).float())


def test_inverse_clamps_rounding_outside_the_unit_interval():
    for name in NAMES:
        s = get_schedule(name)
        t = s.time_from_mask_probability(torch.tensor([-1e-18, 0.0, 1.0, 1.0 + 1e-12], dtype=torch.float64))
        assert t.tolist()[:2] == [0.0, 0.0], name
        assert float(t[2]) == pytest.approx(1.0, abs=1e-12)
        assert torch.all(t <= 1.0), name  # never past the end of the time axis


def test_equality_and_argument_types():
    assert get_schedule("cosine") != get_schedule("linear")
    assert get_schedule("polynomial:2") != get_schedule("polynomial:3")
    assert get_schedule("loglinear:0").eps == 0.0  # eps = 0 is allowed (the linear schedule)
    with pytest.raises(ValueError, match="eps must be a number"):
        get_schedule({"name": "loglinear", "eps": "0.1"})
    with pytest.raises(ValueError, match="exponent must be > 0 and finite, got '2'"):
        get_schedule({"name": "polynomial", "exponent": "2"})
    with pytest.raises(ValueError, match="unknown schedule None"):
        get_schedule({})
    with pytest.raises(TypeError, match="got int"):
        get_schedule(3)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_time_from_mask_probability_clamps_out_of_range_input(name):
    """Documented: ``u`` outside ``[0, 1]`` is clamped into it (so ``u = 3`` gives ``t = 1``, not NaN)."""
    schedule = get_schedule(name)
    t = schedule.time_from_mask_probability(torch.tensor([-0.5, 0.0, 1.0, 1.5, 3.0], dtype=torch.float64))
    assert torch.isfinite(t).all()
    assert t.tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0, 1.0], abs=1e-12)
