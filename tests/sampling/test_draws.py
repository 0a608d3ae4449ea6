"""Inverse-CDF draws, temperature and top-p (``mdm_prime.sampling.draws``) against hand-computed
values; each test names the behaviour a mutant broke (docs/reliability.md §6)."""

import math

import numpy as np
import pytest
import torch

from mdm_prime.sampling import categorical_from_uniform, process_log_probs


def _inverse_cdf_numpy(probs: np.ndarray, u: float) -> int:
    """Reference: the first class whose float64 CDF exceeds ``u · total``."""
    cdf = np.cumsum(probs.astype(np.float64))
    return int(np.searchsorted(cdf, u * cdf[-1], side="right"))


def test_float32_probabilities_are_drawn_in_float64():
    """A class of mass 1e-8 between two of mass 1 vanishes from a float32 CDF (1 + 1e-8 == 1); drawn
    in float64 it owns the uniforms within 2.5e-9 of 1/2."""
    probs = torch.tensor([1.0, 1e-8, 1.0], dtype=torch.float32)
    u = torch.tensor(0.5, dtype=torch.float64)
    assert _inverse_cdf_numpy(probs.numpy(), float(u)) == 1
    assert int(categorical_from_uniform(probs, u)) == 1


def test_u_equal_to_one_takes_the_last_positive_class():
    """For float64 ``u < 1``, ``u · total < total``, so the draw is always in range; ``u = 1`` (the
    closed end, outside the contract) still returns a valid class: the last one with mass."""
    below = torch.tensor(math.nextafter(1.0, 0.0), dtype=torch.float64)
    assert float(below * 3.0) < 3.0
    one = torch.tensor(1.0, dtype=torch.float64)
    assert int(categorical_from_uniform(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64), one)) == 2
    assert int(categorical_from_uniform(torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64), one)) == 1
    assert int(categorical_from_uniform(torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64), below)) == 1


def test_defaults_leave_the_distribution_as_it_is():
    lp = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], dtype=torch.float64).log()
    assert torch.allclose(process_log_probs(lp), lp.exp(), rtol=0, atol=1e-15)


def test_float32_log_probabilities_come_back_as_float64():
    lp = torch.tensor([0.5, 0.5], dtype=torch.float32).log()
    out = process_log_probs(lp)
    assert out.dtype == torch.float64
    out = process_log_probs(lp, temperature=0.5, top_p=0.9)
    assert out.dtype == torch.float64


def test_top_p_one_keeps_classes_the_cumulative_sum_has_already_rounded_away():
    """With ``top_p = 1`` nothing is cut, even a 1e-20 class after a class of float64 mass 1."""
    lp = torch.tensor([0.0, math.log(1e-20)], dtype=torch.float64)
    out = process_log_probs(lp, top_p=1.0)
    assert float(out[1]) == pytest.approx(1e-20, rel=1e-12, abs=0)  # abs=0: approx's default 1e-12 hides it


def test_top_p_stops_as_soon_as_the_mass_is_reached():
    """Keep the smallest set whose mass reaches ``top_p``: with [1/2, 1/4, 1/8, 1/8] and top_p = 3/4
    the first two (exactly 3/4) suffice, renormalised to [2/3, 1/3]."""
    lp = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64).log()
    out = process_log_probs(lp, top_p=0.75)
    assert out.tolist() == pytest.approx([2 / 3, 1 / 3, 0.0, 0.0], abs=1e-15)


def test_top_p_renormalises_each_row_on_its_own():
    lp = torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]], dtype=torch.float64).log()
    out = process_log_probs(lp, top_p=0.6)
    expected = torch.tensor([[0.5 / 0.8, 0.3 / 0.8, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(out, expected, rtol=0, atol=1e-15)
