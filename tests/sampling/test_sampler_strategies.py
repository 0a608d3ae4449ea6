"""The sampler's strategy registries (sampling/sampler.py): reveal rules keyed by ``method``, jump rules
keyed by predictor / corrector; an unknown name is refused with the message ``sample`` always gave."""

import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.sampling import METHODS, sample
from mdm_prime.sampling import sampler as sampler_module
from mdm_prime.sampling.sampler import (
    CorrectorJump,
    JointReveal,
    PerDigitReveal,
    PredictorJump,
    get_jump_rule,
    get_reveal_rule,
    register_reveal_rule,
)
from mdm_prime.schedules import get_schedule

from ..helpers import UniformModel

SUB = SubTokenizer(5, 2)


def test_methods_are_the_registered_reveal_rules():
    assert METHODS == ("joint", "per_digit")
    assert get_reveal_rule("joint") is JointReveal and get_reveal_rule("per_digit") is PerDigitReveal
    assert get_jump_rule("predictor") is PredictorJump and get_jump_rule("corrector") is CorrectorJump


def test_unknown_method_is_refused_with_the_old_message():
    msg = "method must be one of ('joint', 'per_digit'), got 'nope'"
    with pytest.raises(ValueError) as e:
        get_reveal_rule("nope")
    assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        sample(UniformModel(3, 5), SUB, num_samples=2, num_tokens=3, steps=4, seed=0, method="nope")
    assert str(e.value) == msg
    with pytest.raises(ValueError, match="jump rule must be one of"):
        get_jump_rule("nope")


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_reveal_rule("joint")(JointReveal)


def test_a_registered_reveal_rule_is_a_sampler_method(monkeypatch):
    """A new rule (here: reveal the most likely class) is reachable through ``sample(method=...)``."""
    monkeypatch.setattr(sampler_module, "_REVEAL_RULES", dict(sampler_module._REVEAL_RULES))

    @register_reveal_rule("greedy")
    class Greedy(JointReveal):
        def values(self, probs, reveal, u_token, u_digit, tau):
            return self.digit_table[probs.argmax(-1)].flatten(1)

    out = sample(UniformModel(3, 5), SUB, num_samples=2, num_tokens=3, steps=4, seed=0, method="greedy")
    assert torch.equal(out.tokens, torch.zeros(2, 3, dtype=torch.long))  # ties: class 0
    assert "greedy" not in METHODS  # the built-in tuple is not changed


@pytest.mark.parametrize("name", ["predictor", "corrector"])
def test_the_last_step_reveals_every_masked_digit_and_remasks_none(name):
    grid = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    rule = get_jump_rule(name)(get_schedule("linear"), grid, 0.5, 0.25)
    masked = torch.tensor([[True, False, True, False]])
    u = torch.full((1, 4), 0.999, dtype=torch.float64)
    reveal, remask = rule(1, 0.5, 0.0, masked, torch.zeros_like(masked), u)
    assert torch.equal(reveal, masked) and not bool(remask.any())
