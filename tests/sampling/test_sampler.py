"""Tests of the samplers (docs/method.md §6): exactness on tiny cases (chi-square), caching, counters,
conditioning, validity of decoded tokens, input validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from mdm_prime import SubTokenizer
from mdm_prime.oracle import ExactPosterior
from mdm_prime.sampling import (
    Condition,
    categorical_from_uniform,
    condition_from_tokens,
    digit_condition,
    digit_positions_mask,
    expected_idle_steps,
    infill_condition,
    prefix_condition,
    process_log_probs,
    sample,
    spans_to_token_mask,
    temperature_schedule,
    time_grid,
)
from mdm_prime.schedules import get_schedule

from ..helpers import RandomDigitModel, UniformModel, random_joint

P_MIN = 1e-3


def mixed_joint(num_classes, num_tokens, seed):
    """A random pmf over C^L sequences, mixed with uniform so every cell has expected count ≳ 100."""
    p = random_joint(num_classes, num_tokens, seed)
    return 0.5 * p + 0.5 / p.numel()


def seq_index(tokens, num_classes):
    idx = torch.zeros(tokens.shape[0], dtype=torch.long)
    for i in range(tokens.shape[1]):
        idx = idx * num_classes + tokens[:, i]
    return idx


def chi2_pvalue(samples_idx, target):
    """Chi-square p-value of the sample counts against ``target`` over its cells of positive mass;
    0.0 if a sample hit a cell of zero mass."""
    target = torch.as_tensor(target, dtype=torch.float64).flatten()
    counts = torch.bincount(samples_idx.flatten(), minlength=target.numel()).double()
    if counts[target == 0].any():
        return 0.0
    support = target > 0
    expected = target[support] / target[support].sum() * counts.sum()
    return chisquare(counts[support].numpy(), expected.numpy()).pvalue


class Tabulated:
    """``ExactPosterior(joint, sub)`` evaluated once on all ``(b+1)^{L·ℓ}`` inputs; a call is then a
    lookup returning the same logits (keeps the 20k-sample chi-square tests fast)."""

    time_conditioned = False

    def __init__(self, joint, sub, num_tokens=2):
        n, k = num_tokens * sub.length, sub.base + 1
        states = torch.cartesian_prod(*[torch.arange(k)] * n)
        self.table = ExactPosterior(joint, sub)(states, torch.zeros(states.shape[0]))
        self.place = k ** torch.arange(n - 1, -1, -1)

    def __call__(self, y, t):
        return self.table[(y * self.place).sum(-1)]


class Recorder:
    """Wraps a model and records every input it is called with."""

    def __init__(self, model, time_conditioned=False):
        self.model, self.inputs, self.time_conditioned = model, [], time_conditioned

    def __call__(self, y, t):
        self.inputs.append(y.clone())
        return self.model(y, t)


# ----------------------------------------------------------------------------- exactness (chi-square)


def test_tabulated_oracle_is_the_exact_posterior():
    sub = SubTokenizer(5, 2)
    joint = mixed_joint(5, 2, seed=0)
    y = torch.tensor([[5, 3, 3, 3], [0, 1, 3, 0], [3, 3, 3, 3]]).clamp_max(3)
    assert torch.equal(Tabulated(joint, sub)(y, None), ExactPosterior(joint, sub)(y, None))


def test_joint_sampler_exact_at_small_T_for_independent_tokens():
    """Tokens independent, digits strongly dependent (C=5, b=3: invalid codes exist). The joint
    sampler draws a token's digits from one coherent draw, so it is exact at any T."""
    sub = SubTokenizer(5, 2)
    q1 = torch.tensor([0.05, 0.05, 0.40, 0.40, 0.10], dtype=torch.float64)
    q2 = torch.tensor([0.30, 0.02, 0.18, 0.10, 0.40], dtype=torch.float64)
    joint = torch.outer(q1, q2)
    model = Tabulated(joint, sub)
    for steps in (1, 3):
        out = sample(model, sub, num_samples=20000, num_tokens=2, steps=steps, seed=11)
        assert chi2_pvalue(seq_index(out.tokens, 5), joint) > P_MIN
    # power: drawing the two digits of a token independently from their marginals is rejected
    m0 = q1.new_tensor([q1[:3].sum(), q1[3:].sum()])
    m1 = q1.new_tensor([q1[0] + q1[3], q1[1] + q1[4], q1[2]])
    d0 = out.subtokens.view(-1, 2, 2)[:, 0, 0]
    d1 = out.subtokens.view(-1, 2, 2)[:, 0, 1]
    indep = torch.outer(m0, m1)  # 2x3 over (d0, d1), includes the invalid code (1, 2)
    assert chi2_pvalue(d0 * 3 + d1, indep) < 1e-10


def test_joint_sampler_T1_is_product_of_token_marginals():
    sub = SubTokenizer(9, 2)
    joint = mixed_joint(9, 2, seed=3)
    out = sample(Tabulated(joint, sub), sub, num_samples=20000, num_tokens=2, steps=1, seed=5)
    product = torch.outer(joint.sum(1), joint.sum(0))
    assert chi2_pvalue(seq_index(out.tokens, 9), product) > P_MIN
    assert chi2_pvalue(seq_index(out.tokens, 9), joint) < 1e-6  # and the joint is detectably different


@pytest.mark.parametrize(
    "method,num_classes", [("joint", 5), ("joint", 9), ("per_digit", 5), ("per_digit", 9)]
)
def test_sampler_matches_joint_at_large_T(method, num_classes):
    """Dependent tokens: exact as T → ∞ (one digit per step); at T = 128 the bias is far below noise."""
    sub = SubTokenizer(num_classes, 2)
    joint = mixed_joint(num_classes, 2, seed=num_classes)
    out = sample(
        Tabulated(joint, sub), sub, num_samples=20000, num_tokens=2, steps=128, seed=7, method=method
    )
    assert chi2_pvalue(seq_index(out.tokens, num_classes), joint) > P_MIN


def test_corrector_matches_joint_at_large_T():
    sub = SubTokenizer(5, 2)
    joint = mixed_joint(5, 2, seed=21)
    out = sample(
        Tabulated(joint, sub),
        sub,
        num_samples=20000,
        num_tokens=2,
        steps=128,
        seed=8,
        corrector_scale=2.0,
        corrector_power=0.5,
    )
    assert chi2_pvalue(seq_index(out.tokens, 5), joint) > P_MIN
    # the corrector remasked and revealed again: more non-idle steps than the 4 digits need
    assert float((out.idle_steps < 128 - 4).double().mean()) > 0.5


def _nucleus(p, temperature, top_p):
    """Temperature then top-p on a probability vector, written out with numpy (independent of draws.py)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.where(p > 0, p ** (1.0 / temperature), 0.0)
    q = q / q.sum()
    order = np.argsort(-q, kind="stable")
    before = np.cumsum(q[order]) - q[order]
    keep = np.zeros_like(q, dtype=bool)
    keep[order[before < top_p]] = True
    q = np.where(keep, q, 0.0)
    return q / q.sum()


@pytest.mark.parametrize("temperature,top_p", [(2.0, 1.0), (1.0, 0.7), (0.5, 0.9)])
def test_per_digit_applies_temperature_and_top_p_to_each_digit_marginal(temperature, top_p):
    """T = 1 reveals both digits of a token in one step: d_0 from the processed marginal of the
    token distribution, then d_1 from the processed marginal of the classes agreeing with d_0
    (docs/method.md §6). C = 5, b = 3: the code (1, 2) is invalid and must keep probability 0."""
    sub = SubTokenizer(5, 2)
    logits = torch.tensor([1.5, -0.5, 0.3, 0.9, -1.2], dtype=torch.float64)
    p = torch.softmax(logits, -1).numpy()
    digits = sub.encode(torch.arange(5)).view(5, 2).numpy()
    expected = np.zeros(5)
    m0 = _nucleus([p[digits[:, 0] == v].sum() for v in range(3)], temperature, top_p)
    for v in range(3):
        if m0[v] == 0:
            continue
        cond = np.where(digits[:, 0] == v, p, 0.0)
        m1 = _nucleus([cond[digits[:, 1] == w].sum() for w in range(3)], temperature, top_p)
        for x in range(5):
            if digits[x, 0] == v:
                expected[x] = m0[v] * m1[digits[x, 1]]
    assert expected.sum() == pytest.approx(1.0)

    def model(y, t):
        return logits.expand(y.shape[0], 500, -1)

    out = sample(
        model,
        sub,
        num_samples=40,
        num_tokens=500,
        steps=1,
        seed=2,
        method="per_digit",
        temperature=temperature,
        top_p=top_p,
        time_conditioned=False,
    )
    assert chi2_pvalue(out.tokens, expected) > P_MIN
    # power: the joint sampler's token-level processing is a detectably different distribution
    assert chi2_pvalue(out.tokens, _nucleus(p, temperature, top_p)) < 1e-6


def _finite_difference(f, t, eps=1e-6):
    return (f(t + eps) - f(t - eps)) / (2 * eps)


@pytest.mark.parametrize(
    "corrector_scale", [0.0, 0.8]
)  # 0.8: below 1, where a "> 1" slip would switch it off
def test_each_step_reveals_and_remasks_at_the_specified_rates(corrector_scale):
    """Per-digit jump frequencies of every step against docs/method.md §6, from the schedule's α(t)
    alone (derivative by finite differences). Without corrector a masked digit is revealed with
    the exact ``(α_s − α_t)/(1 − α_t)`` and nothing is remasked; with ``κ(t) = a·t^p(1−t)^p`` a
    masked digit is revealed with ``1 − exp(−h(1+κ)w(t))``, ``w = −α'/(1−α)``, and a seen digit is
    remasked with ``1 − exp(−h κ (−α'/α))``."""
    sub = SubTokenizer(4, 2)
    steps, power = 6, 0.5
    schedule = get_schedule("cosine")

    def alpha(t):
        return float(schedule.alpha(torch.tensor([t], dtype=torch.float64)))

    out = sample(
        UniformModel(4, 4),
        sub,
        num_samples=4000,
        num_tokens=4,
        steps=steps,
        seed=12,
        schedule="cosine",
        corrector_scale=corrector_scale,
        corrector_power=power,
        record=True,
    )
    grid = time_grid(steps)
    for k in range(steps - 1):
        t, s = float(grid[k]), float(grid[k + 1])
        a_t, da_t = alpha(min(t, 1 - 1e-6)), _finite_difference(alpha, min(t, 1 - 1e-6))
        if corrector_scale == 0.0:
            p_reveal, p_remask = (alpha(s) - alpha(t)) / (1 - alpha(t)), 0.0
        else:
            kappa = corrector_scale * (t * (1 - t)) ** power
            p_reveal = 1 - math.exp(-(t - s) * (1 + kappa) * -da_t / (1 - a_t))
            p_remask = 1 - math.exp(-(t - s) * kappa * -da_t / a_t) if t < 1 else 0.0
        before, after = out.trajectory[k].long(), out.trajectory[k + 1].long()
        masked = before == sub.mask_id
        for chosen, moved, p in (
            (masked, after != sub.mask_id, p_reveal),
            (~masked, after == sub.mask_id, p_remask),
        ):
            n = int(chosen.sum())
            if n == 0:
                continue
            freq = float(moved[chosen].double().mean())
            assert abs(freq - p) <= 5 * math.sqrt(max(p * (1 - p), 1e-4) / n), (k, freq, p, n)


@pytest.mark.parametrize("method", ["joint", "per_digit"])
def test_prefix_conditioning_samples_the_exact_conditional(method):
    sub = SubTokenizer(5, 2)
    joint = mixed_joint(5, 2, seed=4)
    cond = prefix_condition(torch.tensor([3]), num_tokens=2, sub=sub, num_samples=20000)
    out = sample(Tabulated(joint, sub), sub, steps=2, condition=cond, seed=9, method=method)
    assert (out.tokens[:, 0] == 3).all()
    assert chi2_pvalue(out.tokens[:, 1], joint[3] / joint[3].sum()) > P_MIN


def test_digit_conditioning_samples_the_exact_conditional():
    """Keep the top digit of both tokens (image-imputation style); the rest follows p(x | d_0's)."""
    sub = SubTokenizer(9, 2)
    joint = mixed_joint(9, 2, seed=6)
    x = torch.tensor([4, 7])  # top digits 1 and 2
    cond = digit_condition(x, [0], sub, num_samples=20000)
    out = sample(Tabulated(joint, sub), sub, steps=128, condition=cond, seed=10)
    assert (sub.encode(out.tokens).view(-1, 2, 2)[:, :, 0] == torch.tensor([1, 2])).all()
    target = joint[3:6, 6:9]
    assert chi2_pvalue(seq_index(out.tokens - torch.tensor([3, 6]), 3), target / target.sum()) > P_MIN


def test_greedy_limits():
    """top_p → 0 or a tiny temperature at T = 1 gives each token's mode."""
    sub = SubTokenizer(9, 2)
    joint = mixed_joint(9, 2, seed=1)
    mode = torch.stack([joint.sum(1).argmax(), joint.sum(0).argmax()])
    model = ExactPosterior(joint, sub)
    for kw in ({"top_p": 1e-9}, {"temperature": 1e-5}):
        out = sample(model, sub, num_samples=50, num_tokens=2, steps=1, seed=0, **kw)
        assert (out.tokens == mode).all()


# ----------------------------------------------------------------------------- caching and counters


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"method": "per_digit"},
        {"temperature": 0.7, "top_p": 0.9},
        {"temperature": temperature_schedule("linear", 1.4, 0.5)},
        {"temperature": temperature_schedule("linear", 1.2, 0.6), "method": "per_digit", "top_p": 0.8},
        {"corrector_scale": 3.0, "grid": "power:2"},
        {"method": "per_digit", "corrector_scale": 1.0, "grid": "cosine", "schedule": "cosine"},
    ],
)
def test_cache_never_changes_samples(kw):
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=6, seed=2)
    on = sample(model, sub, num_samples=64, num_tokens=6, steps=24, seed=123, cache=True, **kw)
    off = sample(model, sub, num_samples=64, num_tokens=6, steps=24, seed=123, cache=False, **kw)
    assert torch.equal(on.tokens, off.tokens) and torch.equal(on.subtokens, off.subtokens)
    assert torch.equal(on.idle_steps, off.idle_steps)
    assert (off.network_calls == 24).all()
    assert on.network_calls.sum() < off.network_calls.sum()
    # a different seed gives different samples (the seed is used)
    other = sample(model, sub, num_samples=64, num_tokens=6, steps=24, seed=124, cache=True, **kw)
    assert not torch.equal(on.tokens, other.tokens)


def test_cache_is_per_sequence_on_a_constructed_batch():
    """Row 0 fully fixed, row 1 has one free digit, row 2 is free. With caching:
    row 0 needs no call and is idle every step; row 1 is called once (step 0) and is idle in every
    step but the one revealing its digit; row 2 has calls + idle = T. Calls are batched per row."""
    sub = SubTokenizer(5, 2)
    steps = 10
    x = torch.tensor([[1, 4, 2], [0, 3, 4], [2, 2, 2]])
    fixed = torch.zeros(3, 6, dtype=torch.bool)
    fixed[0] = True
    fixed[1, :5] = True
    cond = condition_from_tokens(x, fixed, sub)
    rec = Recorder(RandomDigitModel(sub, 3, seed=0))
    out = sample(rec, sub, steps=steps, condition=cond, seed=3)
    assert out.network_calls[:2].tolist() == [0, 1]
    assert out.idle_steps[:2].tolist() == [steps, steps - 1]
    assert int(out.network_calls[2] + out.idle_steps[2]) == steps
    assert out.free_digits.tolist() == [0, 1, 6]
    assert torch.equal(out.tokens[0], x[0]) and torch.equal(out.tokens[1, :2], x[1, :2])
    assert sum(inp.shape[0] for inp in rec.inputs) == int(out.network_calls.sum())
    assert rec.inputs[0].shape[0] == 2  # step 0 batches rows 1 and 2 only
    # no caching: every row every step; same samples and idle counts
    off = sample(RandomDigitModel(sub, 3, seed=0), sub, steps=steps, condition=cond, seed=3, cache=False)
    assert off.network_calls.tolist() == [steps] * 3
    assert torch.equal(off.tokens, out.tokens) and torch.equal(off.idle_steps, out.idle_steps)


def test_time_conditioned_model_is_called_while_masks_remain():
    """A time-conditioned model cannot reuse outputs: with cache=True a row is called at every step
    that starts with a masked digit (and not after it is complete); cache=False calls every step."""
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, 4, seed=1, time_scale=1.0)
    assert model.time_conditioned
    steps = 12
    rec_on = Recorder(model, time_conditioned=True)
    on = sample(rec_on, sub, num_samples=32, num_tokens=4, steps=steps, seed=2)
    rec_off = Recorder(model, time_conditioned=True)
    off = sample(rec_off, sub, num_samples=32, num_tokens=4, steps=steps, seed=2, cache=False)
    assert torch.equal(on.tokens, off.tokens) and (off.network_calls == steps).all()
    # rec_off saw every row's state at the start of every step
    expected_calls = sum((state == sub.mask_id).any(-1).long() for state in rec_off.inputs)
    assert torch.equal(on.network_calls, expected_calls)
    assert (expected_calls < steps).any()  # some rows finished early and were skipped
    for inp in rec_on.inputs:
        assert (inp == sub.mask_id).any(-1).all()


@pytest.mark.parametrize(
    "ell,steps,schedule,grid",
    [(1, 16, "linear", "uniform"), (2, 16, "linear", "uniform"), (4, 8, "cosine", "alpha")],
)
def test_idle_steps_match_closed_form(ell, steps, schedule, grid):
    num_tokens, num_samples = 6, 4000
    sub = SubTokenizer(16, ell)
    out = sample(
        UniformModel(num_tokens, 16),
        sub,
        num_samples=num_samples,
        num_tokens=num_tokens,
        steps=steps,
        schedule=schedule,
        grid=grid,
        seed=ell,
    )
    expected = expected_idle_steps(steps, num_tokens * ell)
    idle = out.idle_steps.double()
    se = float(idle.std()) / math.sqrt(num_samples)
    assert abs(float(idle.mean()) - expected) < 5 * se
    assert ((out.network_calls + out.idle_steps) == steps).all()


def test_idle_steps_closed_form_counts_free_digits_only():
    sub = SubTokenizer(9, 2)
    num_samples, steps = 4000, 12
    x = torch.zeros(8, dtype=torch.long)
    cond = infill_condition(x, [(2, 5)], sub, num_samples=num_samples)  # 3 tokens = 6 free digits
    out = sample(UniformModel(8, 9), sub, steps=steps, condition=cond, seed=1)
    assert (out.free_digits == 6).all()
    idle = out.idle_steps.double()
    assert abs(float(idle.mean()) - expected_idle_steps(steps, 6)) < 5 * float(idle.std()) / math.sqrt(
        num_samples
    )


def test_expected_idle_steps_values():
    # docs/method.md §6: T = L = 1024 → ℓ=1: 377, ℓ=2: 138, ℓ=4: 19
    assert [round(expected_idle_steps(1024, 1024 * ell)) for ell in (1, 2, 4)] == [377, 138, 19]
    assert torch.allclose(
        expected_idle_steps(10, torch.tensor([0, 1])), torch.tensor([10.0, 9.0], dtype=torch.float64)
    )
    with pytest.raises(ValueError):
        expected_idle_steps(0, 3)


# ----------------------------------------------------------------------------- validity, conditioning


class HugeLogits:
    """Logits of ±1e4, random per call: the least forgiving model for consistency."""

    time_conditioned = False

    def __init__(self, num_tokens, num_classes, seed):
        self.shape, self.g = (num_tokens, num_classes), torch.Generator().manual_seed(seed)

    def __call__(self, y, t):
        return 1e4 * torch.randn(y.shape[0], *self.shape, generator=self.g)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"method": "per_digit"},
        {"method": "per_digit", "temperature": 3.0, "top_p": 0.6},
        {"corrector_scale": 5.0},
        {"method": "per_digit", "corrector_scale": 5.0, "temperature": 0.5},
    ],
)
@pytest.mark.parametrize("permutation", [None, [3, 0, 4, 1, 2]])
def test_no_invalid_codes_and_seen_digits_never_change(kw, permutation):
    sub = SubTokenizer(5, 2, permutation=permutation)  # b = 3, b^ℓ = 9 > 5
    num_tokens = 8
    rec = Recorder(HugeLogits(num_tokens, 5, seed=0))
    out = sample(rec, sub, num_samples=256, num_tokens=num_tokens, steps=6, seed=4, cache=False, **kw)
    assert torch.equal(sub.decode(out.subtokens), out.tokens)
    assert ((out.tokens >= 0) & (out.tokens < 5)).all()
    states = [*rec.inputs, out.subtokens]
    assert len(rec.inputs) == 6
    for before, after in zip(states[:-1], states[1:]):
        # every state is consistent: some valid class agrees with each token's seen digits
        seen = before != sub.mask_id
        if "corrector_scale" not in kw:
            assert torch.equal(after[seen], before[seen])
        else:  # the corrector may remask, but never overwrites a seen digit with another value
            kept = seen & (after != sub.mask_id)
            assert torch.equal(after[kept], before[kept])
    codes = sub.digits_to_codes(out.subtokens.view(-1, num_tokens, 2))
    assert int(codes.max()) < 5 and len(codes.unique()) == 5  # all valid codes appear, no invalid one


@pytest.mark.parametrize("method", ["joint", "per_digit"])
def test_conditioned_positions_never_change(method):
    sub = SubTokenizer(9, 2)
    num_tokens, num_samples = 6, 40
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 9, (num_samples, num_tokens), generator=g)
    fixed = torch.rand(num_samples, num_tokens * 2, generator=g) < 0.4
    cond = condition_from_tokens(x, fixed, sub)
    rec = Recorder(RandomDigitModel(sub, num_tokens, seed=5))
    out = sample(rec, sub, steps=8, condition=cond, seed=1, cache=False, method=method, corrector_scale=4.0)
    values = sub.encode(x)
    for state in [*rec.inputs, out.subtokens]:
        assert torch.equal(state[fixed], values[fixed])
    assert torch.equal(out.free_digits, (~fixed).sum(-1))


def test_condition_helpers():
    sub = SubTokenizer(9, 2)
    assert spans_to_token_mask(5, [(0, 1), (3, 5)]).tolist() == [True, False, False, True, True]
    assert digit_positions_mask(2, [1], sub).tolist() == [False, True, False, True]
    c = prefix_condition(torch.tensor([[1, 2], [3, 4]]), 4, sub)
    assert c.fixed.tolist() == [[True] * 4 + [False] * 4] * 2
    assert torch.equal(c.values[:, :4], sub.encode(torch.tensor([[1, 2], [3, 4]])))
    c = infill_condition(torch.arange(4), [(1, 3)], sub, num_samples=3)
    assert c.fixed.shape == (3, 8) and c.fixed[0].tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
        True,
        True,
    ]
    c = digit_condition(torch.arange(3), [0], sub, token_mask=torch.tensor([True, False, True]))
    assert c.fixed[0].tolist() == [True, False, False, False, True, False]
    with pytest.raises(ValueError):
        spans_to_token_mask(4, [(2, 5)])
    with pytest.raises(ValueError):
        digit_positions_mask(4, [2], sub)


# ----------------------------------------------------------------------------- pieces and validation


def test_categorical_from_uniform_exact_edges():
    p = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]], dtype=torch.float64)
    u = torch.tensor([0.0, 0.4999, 0.5, 1.0 - 2**-53], dtype=torch.float64)
    assert categorical_from_uniform(p.expand(4, -1), u).tolist() == [1, 1, 3, 3]
    # unnormalised rows are fine, zero-probability classes are never returned
    q = torch.tensor([[0.0, 3.0, 0.0]], dtype=torch.float64).expand(1000, -1)
    assert (categorical_from_uniform(q, torch.rand(1000, dtype=torch.float64)) == 1).all()


def test_process_log_probs_top_p_and_temperature():
    lp = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64).log()
    assert torch.allclose(
        process_log_probs(lp, 1.0, 0.75), torch.tensor([0.625, 0.375, 0, 0], dtype=torch.float64)
    )
    hot = process_log_probs(lp, 2.0)
    assert hot[3] == 0 and torch.allclose(
        hot[:3], torch.tensor([0.5, 0.3, 0.2]).sqrt().double() / torch.tensor([0.5, 0.3, 0.2]).sqrt().sum()
    )


def test_time_grids():
    assert torch.allclose(time_grid(4), torch.tensor([1, 0.75, 0.5, 0.25, 0], dtype=torch.float64))
    assert torch.allclose(time_grid(4, "alpha", "linear"), time_grid(4))
    for kind in ("cosine", "power:3", "alpha"):
        g = time_grid(7, kind, "cosine")
        assert g[0] == 1 and g[-1] == 0 and (g[1:] < g[:-1]).all() and g.numel() == 8
    assert time_grid(None, [1.0, 0.3, 0.0]).tolist() == [1.0, 0.3, 0.0]
    for bad in ([1.0, 0.5, 0.6, 0.0], [0.9, 0.0], [1.0]):
        with pytest.raises(ValueError):
            time_grid(None, bad)
    with pytest.raises(ValueError):
        time_grid(4, "bogus")
    with pytest.raises(ValueError):
        time_grid(0)
    with pytest.raises(TypeError):
        time_grid(2.5)


def test_bad_inputs_raise_before_work():
    sub = SubTokenizer(5, 2)
    calls = []

    def model(y, t):
        calls.append(1)
        return torch.zeros(y.shape[0], 2, 5)

    ok = dict(num_samples=2, num_tokens=2, steps=3)
    for kw, err in [
        ({"method": "bogus"}, ValueError),
        ({"temperature": 0.0}, ValueError),
        ({"temperature": "hot"}, TypeError),
        ({"top_p": 0.0}, ValueError),
        ({"top_p": 1.5}, ValueError),
        ({"steps": 0}, ValueError),
        ({"num_samples": 0}, ValueError),
        ({"corrector_scale": -1.0}, ValueError),
        ({"cache": 1}, TypeError),
        ({"grid": "bogus"}, ValueError),
        ({"schedule": "bogus"}, ValueError),
    ]:
        with pytest.raises(err):
            sample(model, sub, **{**ok, **kw})
    with pytest.raises(ValueError, match="num_tokens"):
        sample(model, sub, num_samples=2, steps=3)
    # condition: wrong shape, out-of-range digit, and digits no class has (d_0 = 2 → codes 6..8)
    with pytest.raises(ValueError):
        sample(
            model,
            sub,
            steps=3,
            condition=Condition(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.long)),
        )
    fixed = torch.zeros(2, 4, dtype=torch.bool)
    fixed[0, 0] = True
    with pytest.raises(ValueError, match="found 3"):
        sample(model, sub, steps=3, condition=Condition(fixed, torch.full((2, 4), 3)))
    with pytest.raises(ValueError, match="no class"):
        sample(model, sub, steps=3, condition=Condition(fixed, torch.full((2, 4), 2)))
    with pytest.raises(ValueError, match="num_samples"):
        sample(
            model,
            sub,
            steps=3,
            num_samples=3,
            condition=Condition(fixed, torch.zeros(2, 4, dtype=torch.long)),
        )
    assert not calls
    with pytest.raises(ValueError, match="shape"):
        sample(lambda y, t: torch.zeros(y.shape[0], 2, 4), sub, **ok)
    with pytest.raises(ValueError, match="NaN"):
        sample(lambda y, t: torch.full((y.shape[0], 2, 5), float("nan")), sub, **ok)


# ----------------------------------------------------------------------------- time-conditioning default


def test_callable_without_attribute_is_treated_as_time_conditioned():
    # a plain function may use t: unless the caller says otherwise its outputs are never reused
    sub = SubTokenizer(5, 2)
    inner = RandomDigitModel(sub, 3, seed=0)
    seen_inputs = []

    def plain(y, t):
        seen_inputs.append(y.clone())
        return inner(y, t)

    steps = 10
    default = sample(plain, sub, num_samples=16, num_tokens=3, steps=steps, seed=1)
    # every row is called at every step that starts with a masked digit: no reuse
    off = Recorder(inner, time_conditioned=True)
    sample(off, sub, num_samples=16, num_tokens=3, steps=steps, seed=1, cache=False)
    expected = sum((state == sub.mask_id).any(-1).long() for state in off.inputs)
    assert torch.equal(default.network_calls, expected)
    assert int(default.idle_steps.sum()) > 0  # idle steps happened, and still no reuse
    # the caller may declare it time-independent: then idle steps are reused
    reused = sample(plain, sub, num_samples=16, num_tokens=3, steps=steps, seed=1, time_conditioned=False)
    assert torch.equal(reused.tokens, default.tokens)
    assert torch.equal(reused.network_calls + reused.idle_steps, torch.full((16,), steps))
    assert int(reused.network_calls.sum()) < int(default.network_calls.sum())
    # an explicit argument wins over the attribute
    flagged = Recorder(inner, time_conditioned=False)
    forced = sample(flagged, sub, num_samples=16, num_tokens=3, steps=steps, seed=1, time_conditioned=True)
    assert torch.equal(forced.network_calls, expected)
    with pytest.raises(ValueError, match="NaN probabilities at step 0"):  # no consistent class has mass
        sample(
            lambda y, t: torch.full((y.shape[0], 3, 5), float("-inf")),
            sub,
            num_samples=2,
            num_tokens=3,
            steps=2,
        )
    with pytest.raises(TypeError, match="time_conditioned must be a bool or None"):
        sample(plain, sub, num_samples=2, num_tokens=3, steps=2, time_conditioned="no")


# ----------------------------------------------------------------------------- fuzzing (hypothesis)


class WildLogits:
    """Random logits per call with a random scale, some classes pushed to -1e30 (finite, so that a
    token whose consistent classes are all pushed down is still a distribution)."""

    time_conditioned = False

    def __init__(self, num_tokens, num_classes, seed, scale):
        self.shape, self.scale = (num_tokens, num_classes), scale
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, y, t):
        z = self.scale * torch.randn(y.shape[0], *self.shape, generator=self.g, dtype=torch.float64)
        drop = torch.rand(z.shape, generator=self.g) < 0.3
        return z.masked_fill(drop, -1e30).float()


@settings(max_examples=40, deadline=None)
@given(
    c=st.integers(2, 12),
    ell=st.integers(1, 3),
    permute=st.booleans(),
    length=st.integers(1, 4),
    batch=st.integers(1, 6),
    steps=st.integers(1, 6),
    method=st.sampled_from(["joint", "per_digit"]),
    corrector=st.sampled_from([0.0, 3.0]),
    temperature=st.sampled_from([0.3, 1.0, 4.0]),
    top_p=st.sampled_from([0.5, 1.0]),
    p_fixed=st.sampled_from([0.0, 0.4]),
    scale=st.sampled_from([1.0, 1e4]),
    seed=st.integers(0, 10**6),
)
def test_sampler_invariants_fuzz(
    c, ell, permute, length, batch, steps, method, corrector, temperature, top_p, p_fixed, scale, seed
):
    # whatever the model, the configuration and the conditioning: outputs decode to valid classes,
    # fixed digits never change, and (without corrector) a seen digit never changes
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(c, generator=g) if permute else None
    sub = SubTokenizer(c, ell, permutation=perm)
    cond_tokens = torch.randint(0, c, (batch, length), generator=g)
    fixed = torch.rand(batch, length * ell, generator=g) < p_fixed
    values = torch.where(fixed, sub.encode(cond_tokens), torch.zeros_like(fixed, dtype=torch.long))
    rec = Recorder(WildLogits(length, c, seed, scale))
    out = sample(
        rec,
        sub,
        steps=steps,
        condition=Condition(fixed, values),
        method=method,
        temperature=temperature,
        top_p=top_p,
        corrector_scale=corrector,
        seed=seed,
        cache=False,
        time_conditioned=False,
    )
    assert out.tokens.shape == (batch, length)
    assert ((out.tokens >= 0) & (out.tokens < c)).all()
    assert torch.equal(sub.decode(out.subtokens), out.tokens)
    assert torch.equal(out.subtokens[fixed], values[fixed])
    states = [*rec.inputs, out.subtokens]
    for before, after in zip(states[:-1], states[1:]):
        assert torch.equal(after[fixed], values[fixed])
        seen = before != sub.mask_id
        kept = seen & (after != sub.mask_id) if corrector else seen
        assert torch.equal(after[kept], before[kept])
