"""The autoregressive baseline: causality, exact likelihood, KV-cache decoding, sampling."""

import itertools

import pytest
import torch

from mdm_prime.models import CausalTransformer, build_model, causal_transformer_config, sample_categorical

from .util import randomize


def model_(num_classes=11, seq_len=8, seed=0, precision="fp32"):
    cfg = causal_transformer_config("tiny", num_classes=num_classes, seq_len=seq_len, precision=precision)
    return randomize(build_model(cfg), seed)


def tokens(batch, length, num_classes=11, seed=0):
    return torch.randint(0, num_classes, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_attributes():
    model = model_()
    out = model(tokens(3, 8))
    assert out.shape == (3, 8, 11) and out.dtype == torch.float32
    assert model.family == "ar" and model.seq_len == 8 and model.subtokenizer.length == 1


@pytest.mark.parametrize("k", [0, 3, 7])
def test_perturbing_token_k_leaves_predictions_up_to_k_unchanged(k):
    model = model_()
    x = tokens(2, 8)
    x2 = x.clone()
    x2[:, k] = (x2[:, k] + 1) % 11
    a, b = model(x), model(x2)
    assert torch.equal(a[:, : k + 1], b[:, : k + 1])  # position i ≤ k predicts x_i from x_<i
    if k < 7:
        assert not torch.allclose(a[:, k + 1 :], b[:, k + 1 :])


def test_log_likelihood_is_exact_it_sums_to_one_over_all_sequences():
    model = model_(num_classes=3, seq_len=4)
    everything = torch.tensor(list(itertools.product(range(3), repeat=4)))
    ll = model.log_likelihood(everything)
    assert (ll < 0).all()
    assert torch.logsumexp(ll.double(), 0).exp().item() == pytest.approx(1.0, abs=1e-5)
    logp = torch.log_softmax(model(everything[:5]), -1)
    manual = sum(logp[:, i, everything[:5, i]].diagonal() for i in range(4))
    assert torch.allclose(ll[:5], manual, atol=1e-5)


@pytest.mark.parametrize("prefill", [1, 4])
def test_kv_cache_decoding_gives_the_full_forward_logits(prefill):
    model = model_()
    x = tokens(3, 8)
    full = model(x)
    cache = model.new_cache(8)
    inputs = torch.cat([torch.full((3, 1), model.bos_id), x[:, :-1]], 1)
    pieces = [model.step(inputs[:, :prefill], cache)]
    for i in range(prefill, 8):
        pieces.append(model.step(inputs[:, i : i + 1], cache))
    assert cache.length == 8
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="at most 8 positions"):
        model.step(inputs[:, :1], cache)


def test_kv_cache_under_bf16_autocast_stays_close_to_the_full_forward():
    model = model_(precision="bf16")
    x = tokens(2, 8)
    full = model(x)
    cache = model.new_cache(8)
    inputs = torch.cat([torch.full((2, 1), model.bos_id), x[:, :-1]], 1)
    stepped = torch.cat([model.step(inputs[:, i : i + 1], cache) for i in range(8)], 1)
    assert cache.keys[0].dtype == torch.bfloat16 and stepped.dtype == torch.float32
    assert torch.allclose(stepped, full, atol=0.05 * full.abs().max().item())


def test_generate_shapes_prefix_reproducibility_and_greedy():
    model = model_()
    out = model.generate(4, 10, generator=torch.Generator().manual_seed(0), prefix=torch.tensor([1, 2, 3]))
    assert out.shape == (4, 10) and out.min() >= 0 and out.max() < 11
    assert (out[:, :3] == torch.tensor([1, 2, 3])).all()
    again = model.generate(4, 10, generator=torch.Generator().manual_seed(0), prefix=torch.tensor([1, 2, 3]))
    assert torch.equal(out, again)
    greedy = model.generate(2, 8, temperature=0)
    assert torch.equal(model(greedy).argmax(-1), greedy)  # each token is the argmax given its past
    assert torch.equal(model.generate(2, 8, top_p=1e-9, generator=torch.Generator().manual_seed(5)), greedy)


def test_generate_draws_from_the_model_distribution():
    model = model_(num_classes=3, seq_len=2, seed=3)
    everything = torch.tensor(list(itertools.product(range(3), repeat=2)))
    p = model.log_likelihood(everything).exp()
    samples = model.generate(6000, 2, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(samples[:, 0] * 3 + samples[:, 1], minlength=9).double() / 6000
    assert torch.allclose(freq, p.double(), atol=0.025)  # ~5 standard errors at this seed-fixed draw


def test_sample_categorical_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = torch.stack(
        [
            sample_categorical(logits, top_p=0.7, generator=torch.Generator().manual_seed(s))
            for s in range(200)
        ]
    )
    assert set(draws.flatten().tolist()) == {0, 1}


def test_bad_arguments():
    model = model_()
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        model(tokens(1, 4) + 11)
    with pytest.raises(TypeError, match="integer"):
        model(tokens(1, 4).float())
    with pytest.raises(ValueError, match="temperature"):
        model.generate(1, 4, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(1, 4, top_p=0)
    with pytest.raises(ValueError, match="prefix"):
        model.generate(2, 4, prefix=torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="length must be 1"):
        build_model(
            {
                **causal_transformer_config(num_classes=16, seq_len=4),
                "subtokenizer": {"num_classes": 16, "length": 2},
            }
        )


def test_a_few_steps_reduce_the_nll_on_a_fixed_batch():
    torch.manual_seed(0)
    model = CausalTransformer(num_classes=11, seq_len=8, dim=32, depth=1, heads=2)
    x = tokens(8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = -model.log_likelihood(x).mean().item()
    for _ in range(15):
        opt.zero_grad()
        (-model.log_likelihood(x).mean()).backward()
        opt.step()
    assert -model.log_likelihood(x).mean().item() < 0.8 * start
