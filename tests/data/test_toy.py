import math

import pytest
import torch

from mdm_prime.data.toy import ImageDensity


def test_pmf_and_entropy():
    d = ImageDensity("camera", size=32)
    assert d.pmf.shape == (32, 32) and d.pmf.dtype == torch.float64
    assert abs(float(d.pmf.sum()) - 1) < 1e-12 and float(d.pmf.min()) >= 0
    assert 0 < d.entropy() <= 2 * math.log(32) + 1e-12
    assert abs(d.entropy_bits() - d.entropy() / math.log(2)) < 1e-12


def test_sampling_matches_pmf():
    d = ImageDensity("camera", size=8)
    n = 200_000
    x = d.sample(n, torch.Generator().manual_seed(0))
    assert x.shape == (n, 2) and x.dtype == torch.long and int(x.max()) < 8
    freq = torch.bincount(x[:, 0] * 8 + x[:, 1], minlength=64).double() / n
    p = d.pmf.flatten()
    z = (freq - p).abs() / (p * (1 - p) / n).sqrt().clamp_min(1e-12)
    assert float(z.max()) < 5.0
    # the empirical NLL of the samples estimates the entropy
    assert abs(float(-d.log_prob(x).mean()) - d.entropy()) < 0.02


def test_invert_and_errors():
    a, b = ImageDensity("moon", 16), ImageDensity("moon", 16, invert=True)
    assert not torch.allclose(a.pmf, b.pmf)
    with pytest.raises(ValueError, match="toy image"):
        ImageDensity("lena")
    with pytest.raises(ValueError, match="size"):
        ImageDensity("camera", size=1)
