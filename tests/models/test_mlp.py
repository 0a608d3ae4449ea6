"""The 2-D toy MLP (two tokens)."""

import pytest
import torch

from mdm_prime.models import ADAPTER_VARIANTS, build_model, mlp_config

from .util import random_subtokens, randomize


@pytest.mark.parametrize("length", [1, 2, 4])
@pytest.mark.parametrize("variant", ADAPTER_VARIANTS)
def test_shapes(length, variant):
    model = build_model(mlp_config("tiny", num_classes=256, length=length, adapter=variant))
    out = model(random_subtokens(model.subtokenizer, 5, 2))
    assert out.shape == (5, 2, 256) and model.seq_len == 2


def test_wrong_number_of_tokens_is_rejected():
    model = build_model(mlp_config("tiny", num_classes=256, length=2))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        model(random_subtokens(model.subtokenizer, 5, 3))


def test_time_conditioning_changes_the_output():
    model = randomize(
        build_model(mlp_config("tiny", num_classes=64, length=2, time_conditioned=True, precision="fp32"))
    )
    y = random_subtokens(model.subtokenizer, 1, 2).expand(2, -1)
    out = model(y, torch.tensor([0.1, 0.9]))
    assert not torch.allclose(out[0], out[1])


def test_flops_counted_are_the_linear_layers():
    model = build_model(mlp_config("tiny", num_classes=256, length=2))  # embed 16, hidden 32, depth 1
    expected = 2 * (2 * 16 * 32 + 2 * 32 * 32 + 32 * 2 * 256) / 2
    assert model.flops_per_token() == pytest.approx(expected)
