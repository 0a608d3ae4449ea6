"""Exact likelihood of a decoding order (docs/method.md §5b), checked by enumeration: every order is a
proper distribution over all C^L sequences, and on the exact posterior of a known joint it gives
−log p(x) for every x."""

import itertools
import math

import pytest
import torch

from mdm_prime import SubTokenizer, decoding_likelihood
from mdm_prime import decoding as decoding_module
from mdm_prime.decoding import ORDERS
from mdm_prime.oracle import ExactPosterior

from .helpers import RandomDigitModel, random_joint

# (C, ℓ, base): 5 classes with ℓ = 2 (b = 3) and ℓ = 3 (b = 2) leave invalid codes
SUBS = [(4, 1, None), (4, 2, None), (5, 2, None), (5, 3, 2)]
PERMUTED = SubTokenizer(5, 2, 3, permutation=[3, 0, 4, 2, 1])


def all_sequences(C: int, L: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(C), repeat=L)), dtype=torch.long)


def _subs():
    return [SubTokenizer(C, ell, base) for C, ell, base in SUBS] + [PERMUTED]


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("sub", _subs(), ids=repr)
def test_every_order_is_a_distribution(sub, L, order):
    for seed, time_scale in ((0, 0.0), (1, 1.5)):
        model = RandomDigitModel(sub, L, seed=seed, hidden=8, time_scale=time_scale)
        x = all_sequences(sub.num_classes, L)
        r = decoding_likelihood(model, x, sub, order=order, batch_size=7)
        assert r.nll.dtype == torch.float64 and r.nll.shape == (x.shape[0],)
        assert r.network_calls == L * sub.length and r.order == order
        assert torch.isfinite(r.nll).all() and (r.nll >= 0).all()
        total = float(torch.exp(-r.nll).sum())
        assert math.isclose(total, 1.0, abs_tol=1e-9), total


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize("sub", _subs(), ids=repr)
def test_exact_posterior_gives_the_joint(sub, order):
    L = 2
    probs = random_joint(sub.num_classes, L, seed=3)
    model = ExactPosterior(probs, sub)
    x = model.sequences
    r = decoding_likelihood(model, x, sub, order=order, batch_size=64)
    expected = -torch.log(model.probs)
    torch.testing.assert_close(r.nll, expected, atol=1e-9, rtol=0)


def test_batch_size_does_not_change_the_result():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, 2, seed=4)
    x = all_sequences(5, 2)
    for order in ORDERS:
        a = decoding_likelihood(model, x, sub, order=order, batch_size=1).nll
        b = decoding_likelihood(model, x, sub, order=order, batch_size=100).nll
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_unknown_order_and_bad_arguments_are_refused():
    sub = SubTokenizer(4, 2)
    model = RandomDigitModel(sub, 2, seed=0)
    x = torch.zeros(2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown decoding order 'oracle'.*confidence.*left_to_right"):
        decoding_likelihood(model, x, sub, order="oracle")
    with pytest.raises(ValueError, match="batch_size"):
        decoding_likelihood(model, x, sub, batch_size=0)
    with pytest.raises(ValueError, match="shape"):
        decoding_likelihood(model, torch.zeros(2, dtype=torch.long), sub)
    with pytest.raises(TypeError):
        decoding_likelihood(model, x.float(), sub)


def test_orders_read_only_the_model_outputs(monkeypatch):
    """The choice function receives the marginals and the hidden mask, never x0: two data sets that
    agree on what is revealed so far make the same choices (checked by recording every call)."""
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, 2, seed=5)
    for name in sorted(ORDERS):
        calls = []
        original = ORDERS[name]

        def spy(log_marginals, hidden, *rest, _original=original, calls=calls):
            assert not rest
            assert log_marginals.shape[-1] == sub.base and hidden.dtype == torch.bool
            choice = _original(log_marginals, hidden)
            calls.append((log_marginals.clone(), hidden.clone(), choice.clone()))
            return choice

        monkeypatch.setitem(decoding_module.ORDERS, name, spy)
        decoding_likelihood(model, torch.tensor([[1, 3], [4, 0]]), sub, order=name)
        assert len(calls) == 4
        for marg, hidden, choice in calls:  # the choice is a function of (marginals, hidden) alone
            assert torch.equal(choice, original(marg, hidden))
            assert hidden[torch.arange(2), choice].all()


def test_confidence_picks_the_most_peaked_hidden_digit_with_ties_to_the_lowest_index():
    lm = torch.log(
        torch.tensor(
            [
                [[0.5, 0.5], [0.9, 0.1], [0.1, 0.9], [0.99, 0.01]],
                [[0.7, 0.3], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5]],
            ],
            dtype=torch.float64,
        )
    )
    hidden = torch.tensor([[True, True, True, False], [False, True, True, True]])
    assert ORDERS["confidence"](lm, hidden).tolist() == [1, 1]
    assert ORDERS["left_to_right"](lm, hidden).tolist() == [0, 1]


def test_autoregressive_family_returns_its_exact_nll():
    from mdm_prime.models import build_model, causal_transformer_config

    torch.manual_seed(0)
    model = build_model(causal_transformer_config("tiny", num_classes=6, seq_len=3)).eval()
    x = all_sequences(6, 3)
    r = decoding_likelihood(model, x, model.subtokenizer, order="confidence")
    assert r.network_calls == 1
    with torch.no_grad():
        torch.testing.assert_close(r.nll, -model.log_likelihood(x).double())
    assert math.isclose(float(torch.exp(-r.nll).sum()), 1.0, abs_tol=1e-5)
    with pytest.raises(ValueError, match="unknown decoding order"):
        decoding_likelihood(model, x, model.subtokenizer, order="oracle")


def test_nan_logits_are_refused_not_scored():
    """The model's output goes through the same check as in the valid bound: NaN logits raise instead
    of giving a NaN likelihood."""
    sub = SubTokenizer(num_classes=4, length=2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)

    def broken(y, t=None):
        return model(y, t) * float("nan")

    with pytest.raises(ValueError, match="NaN logits"):
        decoding_likelihood(broken, torch.zeros(1, 2, dtype=torch.long), sub)
