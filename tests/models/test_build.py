"""The factory: every config rebuilds the same model; bad configs fail clearly."""

import json

import pytest

from mdm_prime.models import (
    build_model,
    transformer_config,
)

from .util import CONFIGS


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_round_trip(name):
    model = build_model(CONFIGS[name])
    again = build_model(json.loads(json.dumps(model.config)))
    assert again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) > 0
    assert model.flops_per_token() > 0


def test_permutation_and_schedule_travel_in_the_config():
    model = build_model(CONFIGS["transformer"])
    assert model.subtokenizer.permutation.tolist() == list(range(40))[::-1]
    assert model.schedule.config() == {"name": "polynomial", "exponent": 3.0}


def test_bad_configs():
    with pytest.raises(ValueError, match="unknown architecture 'rnn'"):
        build_model({"architecture": "rnn"})
    with pytest.raises(ValueError, match="subtokenizer"):
        build_model({"architecture": "mlp"})
    with pytest.raises(TypeError, match="'transformer'.*widht"):
        build_model({**CONFIGS["transformer"], "widht": 3})
    with pytest.raises(ValueError, match="unknown transformer size"):
        transformer_config("huge", num_classes=4, seq_len=4)
    with pytest.raises(TypeError, match="dict"):
        build_model("transformer")
