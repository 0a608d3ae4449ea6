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


# ---- follow-ups to mutation testing (docs/reliability.md §6) ----


def test_stratified_times_follow_the_documented_formula():
    """``t_k = (u + k/B) mod 1`` with ``u`` the generator's first draw: the order is part of the
    contract (the trainer hands row k of its batch the time t_k)."""
    B = 8
    u = torch.rand((), generator=torch.Generator().manual_seed(5))
    expected = [max(1e-3, float((u + k / B) % 1.0)) for k in range(B)]
    got = sample_times(B, generator=torch.Generator().manual_seed(5))
    assert got.tolist() == pytest.approx(expected, abs=1e-7)


def test_sample_times_argument_boundaries():
    assert sample_times(1).shape == (1,)  # one sequence is a valid batch
    assert float(sample_times(4, eps=0.0, generator=torch.Generator().manual_seed(0)).min()) >= 0.0
    for eps in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="eps must be in"):
            sample_times(4, eps=eps)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sample_times(0)


def test_training_noise_is_the_stratified_times_then_the_mask_uniforms():
    from mdm_prime.process import training_noise

    t, u = training_noise(6, 10, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t_ref = sample_times(6, eps=1e-3, generator=g)
    u_ref = torch.rand(6, 10, generator=g)
    assert torch.equal(t, t_ref) and torch.equal(u, u_ref)
    assert float(t.min()) >= 1e-3


def test_time_shape_error_names_the_batch_size():
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        mask_subtokens(torch.zeros(3, 5, dtype=torch.long), torch.zeros(2), get_schedule("linear"), 1)


def test_mask_uses_a_strict_threshold():
    """``u < 1 − α(t)`` masks: at t = 0 nothing is masked even for u = 0, and u equal to the mask
    probability does not mask."""
    s = get_schedule("linear")  # 1 − α(t) = t
    y0 = torch.zeros(2, 3, dtype=torch.long)
    t = torch.tensor([0.0, 0.5])
    u = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.25, 0.75]])
    y = mask_subtokens(y0, t, s, 9, uniforms=u)
    assert y.tolist() == [[0, 0, 0], [0, 9, 0]]


def test_mask_k_draws_only_from_the_given_generator():
    y0 = torch.arange(12).repeat(4, 1)
    k = torch.tensor([3, 6, 1, 11])
    torch.manual_seed(0)
    a = mask_k_subtokens(y0, k, 99, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(1)
    b = mask_k_subtokens(y0, k, 99, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
