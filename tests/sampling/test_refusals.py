"""Issue 18: absurd step counts and an infill with nothing to generate are refused with one line,
before any work (the time grid of ``T+1`` floats is never built)."""

import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.sampling import infill_condition, prefix_condition, sample
from mdm_prime.sampling import sampler as sampler_module
from mdm_prime.sampling.sampler import check_step_count

from ..helpers import UniformModel

SUB = SubTokenizer(5, 2)  # ℓ = 2 digits per token (b = 3)


def _no_grid(*args, **kwargs):
    raise AssertionError("the time grid was built")


@pytest.mark.parametrize("num_tokens", [1, 4])
def test_steps_over_64_L_ell_are_refused_before_the_grid(monkeypatch, num_tokens):
    limit = 64 * num_tokens * SUB.length
    monkeypatch.setattr(sampler_module, "time_grid", _no_grid)
    with pytest.raises(ValueError) as e:
        sample(UniformModel(num_tokens, 5), SUB, num_samples=1, num_tokens=num_tokens, steps=100_000_000)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"steps=100000000 is more than 64·L·ℓ = 64·{num_tokens}·{SUB.length} = {limit}")
    assert f"only L·ℓ = {num_tokens * SUB.length} digits are revealed" in msg
    with pytest.raises(ValueError, match=f"steps={limit + 1} is more than"):
        sample(UniformModel(num_tokens, 5), SUB, num_samples=1, num_tokens=num_tokens, steps=limit + 1)


def test_the_limit_itself_is_allowed_and_a_condition_sets_L():
    out = sample(UniformModel(1, 5), SUB, num_samples=1, num_tokens=1, steps=64 * SUB.length, seed=0)
    assert out.steps == 64 * SUB.length
    cond = prefix_condition(torch.tensor([1]), num_tokens=2, sub=SUB, num_samples=1)
    with pytest.raises(ValueError, match=r"steps=257 is more than 64·L·ℓ = 64·2·2 = 256"):
        sample(UniformModel(2, 5), SUB, steps=257, condition=cond)


def test_an_explicit_grid_longer_than_the_limit_is_refused():
    grid = torch.linspace(1, 0, 64 * SUB.length + 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"steps=129 is more than 64·L·ℓ = 64·1·2 = 128"):
        sample(UniformModel(1, 5), SUB, num_samples=1, num_tokens=1, grid=grid)


def test_check_step_count_names_the_option():
    check_step_count(64 * 8 * 2, 8, 2)
    with pytest.raises(ValueError, match=r"^--steps=1025 is more than .* use --steps <= 1024$"):
        check_step_count(1025, 8, 2, name="--steps")


@pytest.mark.parametrize("generate", [[], [(2, 2)], torch.zeros(4, dtype=torch.bool)])
def test_infill_with_nothing_to_generate_is_refused(generate):
    with pytest.raises(ValueError) as e:
        infill_condition(torch.arange(4), generate, SUB, num_samples=2)
    assert str(e.value) == (
        "infill_condition: nothing to generate (the spans / mask select none of the 4 tokens); "
        "mark the tokens to generate, or use prefix_condition to continue a text"
    )
    infill_condition(torch.arange(4), [(1, 2)], SUB, num_samples=2)  # one token to generate: fine
