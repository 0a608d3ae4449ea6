"""Generative perplexity and unigram entropy (docs/method.md §8)."""

import math

import pytest
import torch

from mdm_prime.metrics import check_same_tokenizer, generative_perplexity, unigram_entropy
from mdm_prime.models import CausalTransformer


def test_unigram_entropy_on_a_constructed_case():
    tokens = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])  # frequencies 1/4, 1/4, 1/2
    expected = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert unigram_entropy(tokens) == pytest.approx(expected, abs=1e-12)
    assert unigram_entropy(torch.full((3, 5), 7)) == 0.0
    assert unigram_entropy(torch.arange(12).view(3, 4)) == pytest.approx(math.log(12), abs=1e-12)


def test_unigram_entropy_rejects_bad_input():
    with pytest.raises(TypeError, match="integer"):
        unigram_entropy(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="shape"):
        unigram_entropy(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        unigram_entropy(torch.tensor([[0, 9]]), num_classes=4)


def peaked_ar(num_classes=8, peak=10.0):
    """A causal model whose every conditional is softmax(bias): the head weight is zero at init."""
    torch.manual_seed(0)
    model = CausalTransformer(num_classes, seq_len=8, dim=16, depth=1, heads=2, precision="fp32").eval()
    bias = torch.zeros(num_classes)
    bias[0] = peak
    with torch.no_grad():
        model.head.bias.copy_(bias)
    return model, torch.log_softmax(bias.double(), 0)


def test_generative_perplexity_exact_value_and_uniform_samples_score_high():
    model, logp = peaked_ar()
    g = torch.Generator().manual_seed(1)
    uniform = torch.randint(0, 8, (64, 8), generator=g)
    r = generative_perplexity(uniform, model, batch_size=16)
    expected_nats = float(-logp[uniform].mean())
    assert r["generative_nats_per_token"] == pytest.approx(expected_nats, rel=1e-5)
    assert r["generative_perplexity"] == pytest.approx(math.exp(expected_nats), rel=1e-5)
    assert r["generative_perplexity"] > 100 * 8  # far worse than a uniform model would give (ppl 8)
    assert r["sample_unigram_entropy_nats"] == pytest.approx(unigram_entropy(uniform))
    assert r["sample_unigram_entropy_nats"] > math.log(8) - 0.1
    assert (
        r["num_samples"] == 64 and r["tokens_per_sample"] == 8 and r["generative_stderr_nats_per_token"] > 0
    )
    # the degenerate sample the model likes gets a perfect score, and zero entropy next to it
    degenerate = generative_perplexity(torch.zeros(4, 8, dtype=torch.long), model)
    assert degenerate["generative_perplexity"] < 1.01
    assert degenerate["sample_unigram_entropy_nats"] == 0.0


def test_generative_perplexity_rejects_bad_input():
    model, _ = peaked_ar()
    with pytest.raises(ValueError, match="only 8 classes"):
        generative_perplexity(torch.full((2, 4), 8), model)
    with pytest.raises(TypeError, match="integer"):
        generative_perplexity(torch.zeros(2, 4), model)
    with pytest.raises(TypeError, match="autoregressive"):
        generative_perplexity(torch.zeros(2, 4, dtype=torch.long), torch.nn.Linear(2, 2))


def test_check_same_tokenizer():
    text = {"kind": "text", "num_classes": 256, "tokenizer": "byte"}
    check_same_tokenizer(text, dict(text, spec="other"))
    with pytest.raises(ValueError, match="tokenizer 'byte' vs 'char'"):
        check_same_tokenizer(text, dict(text, tokenizer="char"))
    with pytest.raises(ValueError, match="vocabulary size 256 vs 4"):
        check_same_tokenizer(text, {"kind": "text", "num_classes": 4, "tokenizer": "byte"})
