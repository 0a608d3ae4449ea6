import pytest
import torch

from mdm_prime import get_schedule, mask_k_subtokens, mask_subtokens, sample_times


def test_stratified_times_cover_the_interval():
    t = sample_times(64, generator=torch.Generator().manual_seed(0))
    assert t.shape == (64,)
    assert float(t.min()) >= 1e-3 and float(t.max()) <= 1
    # one per stratum
    strata = torch.sort((t * 64).floor()).values
    assert len(set(strata.tolist())) >= 63


def test_masking_rate_matches_schedule():
    s = get_schedule("cosine")
    y0 = torch.zeros(4000, 50, dtype=torch.long)
    t = torch.full((4000,), 0.3)
    y = mask_subtokens(y0, t, s, mask_id=7, generator=torch.Generator().manual_seed(0))
    rate = (y == 7).float().mean().item()
    assert rate == pytest.approx(float(s.mask_probability(torch.tensor(0.3))), abs=0.005)
    assert set(y.unique().tolist()) <= {0, 7}


def test_masking_is_independent_per_subtoken():
    s = get_schedule("linear")
    y0 = torch.zeros(20000, 2, dtype=torch.long)
    y = mask_subtokens(y0, torch.full((20000,), 0.5), s, 1, generator=torch.Generator().manual_seed(1))
    both = ((y[:, 0] == 1) & (y[:, 1] == 1)).float().mean().item()
    assert both == pytest.approx(0.25, abs=0.01)


def test_mask_k_exact_count():
    y0 = torch.arange(10).repeat(5, 1)
    k = torch.tensor([0, 1, 5, 9, 10])
    y = mask_k_subtokens(y0, k, mask_id=99, generator=torch.Generator().manual_seed(0))
    assert ((y == 99).sum(1) == k).all()
    assert torch.equal(torch.where(y == 99, y0, y), y0)


def test_time_shape_error():
    with pytest.raises(ValueError, match="one time per sequence"):
        mask_subtokens(torch.zeros(3, 4, dtype=torch.long), torch.zeros(2), get_schedule("linear"), 1)
