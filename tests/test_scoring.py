"""``mdm_prime.score_corpus``: chunked valid-bound scoring with a budget, checked against the
exact oracle (enumeration over mask patterns and quadrature, :mod:`mdm_prime.oracle`)."""

from __future__ import annotations

import math

import pytest
import torch

from mdm_prime.oracle import ExactPosterior, exact_objectives
from mdm_prime.scoring import score_corpus
from mdm_prime.subtokenizer import SubTokenizer


@pytest.fixture(scope="module")
def oracle():
    g = torch.Generator().manual_seed(3)
    sub = SubTokenizer(num_classes=9, length=2)
    probs = (torch.randn(81, generator=g, dtype=torch.float64) * 1.5).softmax(0)
    model = ExactPosterior(probs.reshape(9, 9), sub)
    x = model.sequences[torch.randperm(81, generator=g)[:24]]
    exact = [exact_objectives(model, row, sub) for row in x]
    return model, sub, x, exact


def test_matches_the_exact_objectives_and_gap(oracle):
    model, sub, x, exact = oracle
    r = score_corpus(
        model, x, num_times=64, seed=1, batch_size=5, rows_per_call=50, progress=False, subtokenizer=sub
    )
    valid = sum(e["valid"] for e in exact) / len(exact) / 2
    prime = sum(e["prime"] for e in exact) / len(exact) / 2
    assert r["num_sequences"] == 24 and r["num_tokens"] == 48 and r["tokens_per_sequence"] == 2
    assert abs(r["nelbo_nats_per_token"] - valid) < 4 * r["stderr_nats_per_token"]
    assert abs(r["prime_objective_nats_per_token"] - prime) < 0.1 * abs(prime) + 0.05
    assert r["gap_nats_per_token"] == pytest.approx(
        r["nelbo_nats_per_token"] - r["prime_objective_nats_per_token"]
    )
    assert r["perplexity"] == pytest.approx(math.exp(r["nelbo_nats_per_token"]))
    assert r["stderr_nats_per_token"] > 0 and r["corpus_stderr_nats_per_token"] > 0


def test_budgets_and_chunk_iterables(oracle):
    model, sub, x, _ = oracle
    kw = {"num_times": 4, "progress": False, "subtokenizer": sub}
    assert score_corpus(model, x, max_sequences=7, batch_size=3, **kw)["num_sequences"] == 7
    assert score_corpus(model, x, max_tokens=11, batch_size=4, **kw)["num_sequences"] == 5  # 11 // L=2
    chunks = (x[i : i + 5] for i in range(0, 24, 5))
    a = score_corpus(model, chunks, batch_size=5, **kw)
    b = score_corpus(model, x, batch_size=5, **kw)
    assert a == b  # the same chunks and seeds give the same numbers
    score_corpus(model, x[:4], num_times=2, progress=True, subtokenizer=sub)  # the progress bar path
    with pytest.raises(ValueError, match="num_times"):
        score_corpus(model, x, num_times=1, subtokenizer=sub)
    with pytest.raises(ValueError, match="no sequences"):
        score_corpus(model, x, max_tokens=1, **kw)
    with pytest.raises(ValueError, match="max_sequences"):
        score_corpus(model, x, max_sequences=0, **kw)
