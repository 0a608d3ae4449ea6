"""The sampler's contract beyond exactness (docs/method.md §6): every input error names the bad
value and what was expected, the fields of :class:`SampleResult` (shapes, dtypes, units), the
trajectory's storage dtype at its boundaries, where randomness comes from, and numerical hygiene
(logits in a low precision, as CUDA autocast returns them, are converted before carry-over).

Written from the sampler's mutation-testing survivors (docs/reliability.md §6): each test below
fails on at least one hand-made or mutmut mutant of ``sampling/sampler.py``."""

import time

import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.sampling import Condition, categorical_from_uniform, sample, time_grid

from ..helpers import RandomDigitModel, UniformModel

SUB = SubTokenizer(5, 2)  # b = 3, mask id 3, codes 5..8 invalid
OK = dict(num_samples=2, num_tokens=2, steps=3)


def _model(y, t):
    return torch.zeros(y.shape[0], 2, 5)


# ----------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "kw, err, message",
    [
        ({"temperature": True}, TypeError, r"temperature must be a number, got bool \(True\)"),
        ({"temperature": "hot"}, TypeError, r"temperature must be a number, got str \('hot'\)"),
        ({"temperature": float("nan")}, TypeError, r"temperature must be a number, got float \(nan\)"),
        ({"temperature": -1}, ValueError, r"temperature must be in \(0\.0, inf\], got -1$"),
        ({"top_p": 1.5}, ValueError, r"top_p must be in \(0\.0, 1\.0\], got 1\.5$"),
        ({"top_p": 0}, ValueError, r"top_p must be in \(0\.0, 1\.0\], got 0$"),
        ({"corrector_scale": -1}, ValueError, r"corrector_scale must be in \[0\.0, inf\], got -1$"),
        ({"corrector_power": 0}, ValueError, r"corrector_power must be in \(0\.0, inf\], got 0$"),
        ({"method": "bogus"}, ValueError, r"method must be one of \('joint', 'per_digit'\), got 'bogus'"),
        ({"cache": 1}, TypeError, r"cache must be a bool, got int$"),
        ({"record": "yes"}, TypeError, r"record must be a bool, got str$"),
        ({"on_step": 3}, TypeError, r"on_step must be callable or None, got int$"),
        ({"time_conditioned": 1}, TypeError, r"time_conditioned must be a bool or None, got int$"),
        ({"num_samples": 0}, ValueError, r"num_samples must be an int >= 1, got 0$"),
        ({"num_samples": True}, ValueError, r"num_samples must be an int >= 1, got True$"),
        ({"num_tokens": 1.5}, ValueError, r"num_tokens must be an int >= 1, got 1\.5$"),
        ({"num_tokens": None}, ValueError, r"^give num_samples and num_tokens, or a condition"),
    ],
)
def test_each_bad_argument_gets_a_message_naming_it(kw, err, message):
    with pytest.raises(err, match=message):
        sample(_model, SUB, **{**OK, **kw})


def _cond(fixed, values):
    return Condition(fixed, values)


@pytest.mark.parametrize(
    "condition, err, message",
    [
        (
            (torch.zeros(2, 4, dtype=torch.bool),) * 3,
            TypeError,
            r"condition must be a Condition\(fixed, values\), got tuple",
        ),
        (
            torch.zeros(2, 4, dtype=torch.bool),
            TypeError,
            r"condition must be a Condition\(fixed, values\), got Tensor",
        ),
        (
            _cond(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)),
            TypeError,
            r"condition\.fixed must be a bool tensor, got torch\.int64",
        ),
        (
            _cond(torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, 4)),
            TypeError,
            r"condition\.values must be an integer tensor, got torch\.float32",
        ),
        (
            _cond(torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)),
            TypeError,
            r"condition\.values must be an integer tensor, got torch\.bool",
        ),
        (
            _cond(torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.long)),
            ValueError,
            r"must both have shape \(B, L·ℓ\) with ℓ=2, got \(4,\) and \(4,\)",
        ),
        (
            _cond(torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, 6, dtype=torch.long)),
            ValueError,
            r"with ℓ=2, got \(2, 4\) and \(2, 6\)",
        ),
        (
            _cond(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.long)),
            ValueError,
            r"with ℓ=2, got \(2, 3\) and \(2, 3\)",
        ),
    ],
)
def test_each_bad_condition_gets_a_message_naming_it(condition, err, message):
    calls = []
    with pytest.raises(err, match=message):
        sample(lambda y, t: calls.append(1), SUB, steps=3, condition=condition)
    assert not calls


def test_condition_shape_checks_against_explicit_sizes():
    fixed = torch.zeros(2, 4, dtype=torch.bool)
    fixed[:, 0] = True
    cond = Condition(fixed, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"num_tokens=3 but the condition has 4 digits \(ℓ=2\)"):
        sample(_model, SUB, steps=3, condition=cond, num_tokens=3)
    with pytest.raises(ValueError, match=r"num_samples=3 but the condition has 2 rows"):
        sample(_model, SUB, steps=3, condition=cond, num_samples=3)
    # sizes that agree with the condition are accepted
    out = sample(_model, SUB, steps=3, condition=cond, num_samples=2, num_tokens=2, seed=0)
    assert out.tokens.shape == (2, 2)


@pytest.mark.parametrize("bad", [-1, 0, 3, 7])
def test_out_of_range_fixed_digit_is_reported_with_its_value(bad):
    """Two fixed digits, one valid (0 or 1) and one ``bad``: the message names the bad one."""
    fixed = torch.zeros(2, 4, dtype=torch.bool)
    values = torch.zeros(2, 4, dtype=torch.long)
    fixed[0, 0], values[0, 0] = True, 0 if bad > 0 else 1
    fixed[1, 2], values[1, 2] = True, bad
    values[0, 1] = 9  # not fixed: ignored
    cond = Condition(fixed, values)
    if bad in (-1, 3, 7):
        with pytest.raises(ValueError, match=rf"must lie in \[0, 2\] \(base b=3\), found {bad}$"):
            sample(_model, SUB, steps=3, condition=cond)
    else:
        assert sample(_model, SUB, steps=3, condition=cond, seed=0).subtokens[1, 2] == 0


def test_fixed_digits_no_class_has_are_reported_with_their_place():
    fixed = torch.zeros(3, 6, dtype=torch.bool)
    values = torch.zeros(3, 6, dtype=torch.long)
    fixed[0, 0], values[0, 0] = True, 1  # d_0 = 1 → classes 3, 4: fine
    fixed[2, 2], values[2, 2] = True, 2  # row 2, token 1 of 3: d_0 = 2 → codes 6..8, no class
    with pytest.raises(
        ValueError,
        match=r"fixes digits \[2, 3\] of token 1 in row 2, which no class 0\.\.4 has \(mask 3 = free\)",
    ):
        sample(lambda y, t: torch.zeros(y.shape[0], 3, 5), SUB, steps=3, condition=Condition(fixed, values))


def test_bad_model_output_is_reported_with_what_came_back():
    with pytest.raises(ValueError, match=r"model returned list, expected logits of shape \(2, 2, 5\)"):
        sample(lambda y, t: [0.0], SUB, **OK)
    with pytest.raises(ValueError, match=r"model returned \(2, 2, 4\), expected logits of shape \(2, 2, 5\)"):
        sample(lambda y, t: torch.zeros(y.shape[0], 2, 4), SUB, **OK)


def test_a_temperature_schedule_that_reaches_zero_is_refused():
    with pytest.raises(ValueError, match=r"temperature schedule returned 0\.0 at t=1\.0; it must be > 0"):
        sample(_model, SUB, **OK, temperature=lambda t: 0.0)
    with pytest.raises(ValueError, match=r"temperature schedule returned -0\.5"):
        sample(_model, SUB, **OK, temperature=lambda t: -0.5)


# ----------------------------------------------------------------------------- result fields


def test_result_fields_have_the_documented_shapes_dtypes_and_units():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=3, seed=0)
    before = time.perf_counter()
    out = sample(model, sub, num_samples=4, num_tokens=3, steps=7, seed=1, record=True)
    elapsed = time.perf_counter() - before
    assert out.steps == 7
    assert torch.equal(out.time_grid, time_grid(7, "uniform", "linear"))
    assert out.time_grid.dtype == torch.float64
    assert isinstance(out.wall_time, float) and 0.0 < out.wall_time <= elapsed
    for name in ("network_calls", "idle_steps", "free_digits"):
        value = getattr(out, name)
        assert value.shape == (4,) and value.dtype == torch.long, name
    assert (out.free_digits == 6).all()
    assert out.trajectory_calls.dtype == torch.bool and out.trajectory_calls.shape == (7, 4)
    assert torch.equal(out.trajectory_calls.sum(0), out.network_calls)
    assert torch.equal(out.trajectory[-1].long(), out.subtokens)


def test_free_digits_counts_the_unfixed_digits_of_each_row():
    fixed = torch.zeros(3, 4, dtype=torch.bool)
    fixed[0, :3] = True
    fixed[2, 1] = True
    out = sample(
        _model, SUB, steps=2, condition=Condition(fixed, torch.zeros(3, 4, dtype=torch.long)), seed=0
    )
    assert out.free_digits.tolist() == [1, 4, 3]


def test_smallest_batch_and_length_are_accepted():
    out = sample(UniformModel(1, 5), SUB, num_samples=1, num_tokens=1, steps=2, seed=0)
    assert out.tokens.shape == (1, 1) and 0 <= int(out.tokens) < 5


@pytest.mark.parametrize(
    "num_classes, dtype",
    [(255, torch.uint8), (256, torch.int16), (2**15 - 1, torch.int16), (2**15, torch.int32)],
)
def test_trajectory_uses_the_smallest_dtype_that_holds_the_mask_id(num_classes, dtype):
    sub = SubTokenizer(num_classes, 1)  # mask id = b = C
    out = sample(UniformModel(2, num_classes), sub, num_samples=2, num_tokens=2, steps=2, seed=0, record=True)
    assert out.trajectory.dtype == dtype
    assert (out.trajectory[0].long() == num_classes).all()  # the mask id survives the storage
    assert torch.equal(out.trajectory[-1].long(), out.subtokens)


# ----------------------------------------------------------------------------- randomness and defaults


def test_unseeded_runs_draw_from_a_large_seed_space():
    """64 unseeded runs give 64 different samples (a seed space of ~100 would almost surely repeat)."""
    model = UniformModel(8, 1000)
    sub = SubTokenizer(1000, 1)
    seen = {
        tuple(sample(model, sub, num_samples=1, num_tokens=8, steps=1).tokens[0].tolist()) for _ in range(64)
    }
    assert len(seen) == 64


def test_default_corrector_power_is_a_quarter():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=6, seed=3)
    kw = dict(num_samples=32, num_tokens=6, steps=16, seed=5, corrector_scale=2.0)
    default = sample(model, sub, **kw)
    assert torch.equal(default.subtokens, sample(model, sub, **kw, corrector_power=0.25).subtokens)
    assert not torch.equal(default.subtokens, sample(model, sub, **kw, corrector_power=1.0).subtokens)


@pytest.mark.parametrize("cache", [True, False])
def test_a_constant_temperature_schedule_equals_the_constant(cache):
    """``τ(t) ≡ 0.5`` (processed at each use) and ``τ = 0.5`` (processed once per call) draw the same."""
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=6, seed=4)
    kw = dict(num_samples=48, num_tokens=6, steps=12, seed=9, cache=cache, top_p=0.9)
    constant = sample(model, sub, **kw, temperature=0.5)
    scheduled = sample(model, sub, **kw, temperature=lambda t: 0.5)
    assert torch.equal(constant.subtokens, scheduled.subtokens)
    assert not torch.equal(constant.subtokens, sample(model, sub, **kw, temperature=1.0).subtokens)


@pytest.mark.parametrize("method", ["joint", "per_digit"])
def test_categorical_draws_get_float64_uniforms(method, monkeypatch):
    """docs/method.md §6: draws in float64 (float32 uniforms quantise the CDF at 2⁻²⁴)."""
    import mdm_prime.sampling.sampler as sampler_module

    seen = []

    def spy(probs, u):
        seen.append((probs.dtype, u.dtype))
        return categorical_from_uniform(probs, u)

    monkeypatch.setattr(sampler_module, "categorical_from_uniform", spy)
    sample(RandomDigitModel(SUB, 3, seed=0), SUB, num_samples=4, num_tokens=3, steps=4, seed=0, method=method)
    assert seen and all(dt == (torch.float64, torch.float64) for dt in seen)


@pytest.mark.parametrize("method", ["joint", "per_digit"])
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_logits_are_converted_before_carry_over(method, low):
    """A model under CUDA autocast returns bf16/fp16 logits; the sampler works in float64 on them,
    so the draws equal those from the same logit values handed over in float64."""
    sub = SubTokenizer(16, 2)
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(64, 16, generator=g)).to(low)

    def make(dtype):
        def model(y, t):
            return logits.to(dtype).expand(y.shape[0], -1, -1)

        model.time_conditioned = False
        return model

    kw = dict(num_samples=32, num_tokens=64, steps=6, seed=3, method=method)
    assert torch.equal(
        sample(make(low), sub, **kw).subtokens, sample(make(torch.float64), sub, **kw).subtokens
    )


@pytest.mark.parametrize("cache", [True, False])
def test_only_tokens_with_a_digit_revealed_are_drawn(cache, monkeypatch):
    """Issue 20: a step computes the tokens with a masked digit revealed in it, and nothing else: a
    fully seen token (a box of one class) is never drawn, whatever the cache holds for its row."""
    import mdm_prime.sampling.sampler as sampler_module

    monkeypatch.setattr(sampler_module, "_REVEAL_RULES", dict(sampler_module._REVEAL_RULES))
    widths = []

    @sampler_module.register_reveal_rule("watched")
    class Watched(sampler_module.JointReveal):
        def token_values(self, logits, cls, reveal, u_token, u_digit, tau):
            widths.append(logits.shape[1])
            return super().token_values(logits, cls, reveal, u_token, u_digit, tau)

    model = RandomDigitModel(SUB, 4, seed=3)
    out = sample(model, SUB, num_samples=64, num_tokens=4, steps=8, seed=5, method="watched", cache=cache)
    assert widths and min(widths) > 1  # boxes of b = 3 classes or all C = 5, never one class
    plain = sample(model, SUB, num_samples=64, num_tokens=4, steps=8, seed=5, cache=cache)
    assert torch.equal(out.subtokens, plain.subtokens)
