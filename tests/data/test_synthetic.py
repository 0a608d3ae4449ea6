import math

import pytest
import torch

from mdm_prime.data.synthetic import HiddenMarkovModel, MarkovChain, entropy, stationary_distribution


def test_stationary():
    p = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    pi = stationary_distribution(p)
    assert torch.allclose(pi, torch.tensor([5 / 6, 1 / 6], dtype=torch.float64))
    assert torch.allclose(pi @ p.double(), pi)


def test_markov_entropy_rate_known_value():
    mc = MarkovChain(torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64))

    def h(q):
        return -(q * math.log(q) + (1 - q) * math.log(1 - q))

    assert abs(mc.entropy_rate() - (5 / 6 * h(0.1) + 1 / 6 * h(0.5))) < 1e-12
    # stationary start: H(x_1..L) = H(pi) + (L - 1) rate
    assert abs(mc.sequence_entropy(5) - (h(1 / 6) + 4 * mc.entropy_rate())) < 1e-12


def test_markov_monte_carlo_matches_exact():
    mc = MarkovChain.random(6, concentration=0.5, seed=3)
    x = mc.sample(20_000, 12, torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 12) and int(x.max()) < 6
    nll = -mc.log_prob(x)
    se = float(nll.std()) / math.sqrt(len(nll))
    assert abs(float(nll.mean()) - mc.sequence_entropy(12)) < 5 * se
    # empirical transition entropy rate
    counts = torch.zeros(6, 6, dtype=torch.float64)
    counts.index_put_(
        (x[:, :-1].flatten(), x[:, 1:].flatten()),
        torch.ones(x[:, 1:].numel(), dtype=torch.float64),
        accumulate=True,
    )
    emp = (counts.sum(1) / counts.sum() * entropy(counts / counts.sum(1, keepdim=True))).sum()
    assert abs(float(emp) - mc.entropy_rate()) < 0.02


def test_hmm_exact_entropy_matches_monte_carlo_and_bounds():
    hmm = HiddenMarkovModel.random(3, 4, concentration=0.7, seed=1)
    exact = hmm.sequence_entropy(6)
    mc, se = hmm.sequence_entropy_mc(6, 20_000, torch.Generator().manual_seed(0))
    assert abs(mc - exact) < 5 * se
    lo, hi = hmm.entropy_rate_bounds(6)
    assert lo <= hi + 1e-12 and lo > 0
    assert hi <= exact / 6 + 1e-9  # conditional entropy is at most the per-token block entropy
    # iid special case: an HMM with one hidden state has rate = H(emission)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    iid = HiddenMarkovModel(torch.ones(1, 1), q[None])
    assert abs(iid.sequence_entropy(4) - 4 * float(entropy(q))) < 1e-10


def test_bad_inputs():
    with pytest.raises(ValueError, match="rows summing to 1"):
        MarkovChain(torch.tensor([[0.5, 0.6], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="square"):
        MarkovChain(torch.ones(2, 3) / 3)
    with pytest.raises(ValueError, match="max_sequences"):
        HiddenMarkovModel.random(2, 10).sequence_entropy(8)


def test_hmm_samples_in_bounded_memory_with_the_same_draws():
    """Sampling draws emissions a block of rows at a time (a GPT-2-sized vocabulary would otherwise
    build an [N·L, V] float64 matrix): the draws equal one multinomial over all rows."""
    hmm = HiddenMarkovModel.random(3, 5000, concentration=0.5, seed=2)  # 2**22 // 5000 = 838 rows a block
    x = hmm.sample(40, 50, torch.Generator().manual_seed(7))  # 2,000 positions: three blocks
    g = torch.Generator().manual_seed(7)
    s = hmm.hidden.sample(40, 50, g).flatten()
    whole = torch.multinomial(hmm.emission[s], 1, generator=g)[:, 0].reshape(40, 50)
    assert x.shape == (40, 50) and torch.equal(x, whole)
