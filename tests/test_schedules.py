import math

import pytest
import torch

from mdm_prime import get_schedule
from mdm_prime.schedules import SCHEDULES

NAMES = ["linear", "loglinear", "cosine", "polynomial", "polynomial:3"]


@pytest.mark.parametrize("name", NAMES)
def test_endpoints_and_monotone(name):
    s = get_schedule(name)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = s.alpha(t)
    assert a[0] == pytest.approx(1.0)
    assert a[-1] == pytest.approx(0.0, abs=2e-3)
    assert torch.all(a[1:] <= a[:-1])


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_finite_difference(name):
    s = get_schedule(name)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    fd = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
    assert torch.allclose(s.alpha_derivative(t), fd, atol=1e-6)
    w = -s.alpha_derivative(t) / (1 - s.alpha(t))
    assert torch.allclose(s.weight(t), w)


@pytest.mark.parametrize("name", NAMES)
def test_inverse_mask_probability(name):
    s = get_schedule(name)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    assert torch.allclose(s.time_from_mask_probability(s.mask_probability(t)), t, atol=1e-9)


def test_linear_weight_is_one_over_t():
    s = get_schedule("linear")
    t = torch.tensor([0.1, 0.5, 1.0])
    assert torch.allclose(s.weight(t), 1 / t)


def test_weight_integrates_the_hazard():
    # ∫ w(t) (1-α)^k α^(n-k) dt = B(k, n-k+1) for any schedule (change of variable u = 1-α)
    n, k = 5, 2
    exact = math.gamma(k) * math.gamma(n - k + 1) / math.gamma(n + 1)
    for name in ["linear", "cosine", "polynomial:2"]:
        s = get_schedule(name)
        t = torch.linspace(1e-6, 1, 200001, dtype=torch.float64)
        f = s.weight(t) * s.mask_probability(t) ** k * s.alpha(t) ** (n - k)
        assert torch.trapezoid(f, t).item() == pytest.approx(exact, rel=1e-4)


def test_config_round_trip_and_errors():
    for name in SCHEDULES:
        s = get_schedule(name)
        assert get_schedule(s.config()) == s
    with pytest.raises(ValueError, match="unknown schedule 'cosin'"):
        get_schedule("cosin")
    with pytest.raises(ValueError, match="exponent must be > 0"):
        get_schedule("polynomial:-1")
    with pytest.raises(ValueError, match="takes no argument"):
        get_schedule("cosine:2")
    with pytest.raises(TypeError):
        get_schedule(3)
