"""The T-step sampler's discrete-time bound (docs/method.md §5 last bullet) against exact cases."""

import itertools
import math

import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.discrete_bound import discrete_time_bound, reveal_steps
from mdm_prime.oracle import ExactPosterior, exact_objectives
from mdm_prime.sampling import time_grid
from mdm_prime.schedules import get_schedule
from tests.helpers import RandomDigitModel, random_joint


@pytest.mark.parametrize("steps", [1, 2, 3, 50])
def test_exact_posterior_of_one_token_gives_minus_log_p_on_every_trajectory(steps):
    sub = SubTokenizer(num_classes=9, length=2)
    probs = random_joint(9, 1, seed=0)
    x = torch.tensor([[3], [7], [0]])
    r = discrete_time_bound(ExactPosterior(probs, sub), x, sub, steps=steps, num_draws=6, seed=steps)
    nll = -probs.flatten()[x.flatten()].log()
    torch.testing.assert_close(r.per_draw, nll.unsqueeze(1).expand(-1, 6), atol=1e-9, rtol=0)
    assert r.summary()["discrete_time_nelbo_nats_per_token"] == pytest.approx(float(nll.mean()), abs=1e-9)


def test_exact_posterior_of_independent_tokens_any_steps():
    sub = SubTokenizer(num_classes=5, length=2)
    a, b = random_joint(5, 1, seed=1), random_joint(5, 1, seed=2)
    probs = a.view(5, 1) * b.view(1, 5)
    x = torch.tensor([[1, 4], [0, 2]])
    for steps in (1, 4, 30):
        r = discrete_time_bound(ExactPosterior(probs, sub), x, sub, steps=steps, num_draws=5, seed=0)
        nll = -torch.stack([probs[1, 4], probs[0, 2]]).log()
        torch.testing.assert_close(r.nelbo, nll, atol=1e-9, rtol=0)


def test_dependent_tokens_large_steps_tends_to_minus_log_p():
    sub = SubTokenizer(num_classes=5, length=2)
    probs = random_joint(5, 2, seed=1)
    x = torch.tensor([[1, 4]])
    r = discrete_time_bound(ExactPosterior(probs, sub), x, sub, steps=4000, num_draws=200, seed=0)
    assert float(r.nelbo[0]) == pytest.approx(
        float(-probs[1, 4].log()), abs=4 * float(r.nelbo_stderr[0]) + 5e-3
    )


def test_one_step_is_the_joint_of_marginals_nll_and_uses_t_equal_one():
    sub = SubTokenizer(num_classes=5, length=2)
    model = RandomDigitModel(sub, 3, seed=4, time_scale=0.7)  # time-conditioned
    x = torch.tensor([[0, 4, 2], [3, 3, 1]])
    r = discrete_time_bound(model, x, sub, steps=1, num_draws=3, seed=0)
    masked = torch.full((2, 6), sub.mask_id)
    logp = torch.log_softmax(model(masked, torch.ones(2)).double(), -1)
    expected = -logp.gather(-1, x.unsqueeze(-1)).squeeze(-1).sum(-1)
    torch.testing.assert_close(r.nelbo, expected, atol=1e-9, rtol=0)
    assert float(r.nelbo_stderr.abs().max()) < 1e-12
    assert r.network_rows == 2 * 3


def _bound_of_assignment(model, sub, x, steps_of_digit, grid):
    """Independent reference: the bound of one reveal trajectory by enumerating classes."""
    y0 = sub.encode(x)[0]
    n, ell, L = y0.numel(), sub.length, x.shape[1]
    table = sub.digit_table
    total = 0.0
    for k in sorted(set(steps_of_digit)):
        masked = [j for j in range(n) if steps_of_digit[j] >= k]
        now = [j for j in range(n) if steps_of_digit[j] == k]
        y = y0.clone()
        y[masked] = sub.mask_id
        logits = model(y.unsqueeze(0), torch.tensor([float(grid[k])]))[0].double()
        for i in range(L):
            seen = [j for j in range(ell) if i * ell + j not in masked]
            rev = [j for j in range(ell) if i * ell + j in now]
            if not rev:
                continue
            ok = [c for c in range(sub.num_classes) if all(table[c, j] == y0[i * ell + j] for j in seen)]
            z = torch.logsumexp(logits[i, ok], 0)
            good = [c for c in ok if all(table[c, j] == y0[i * ell + j] for j in rev)]
            total += float(z - torch.logsumexp(logits[i, good], 0))
    return total


def test_expectation_matches_enumeration_of_all_trajectories():
    sub = SubTokenizer(num_classes=4, length=2)  # b = 2, n = 4 digits
    model = RandomDigitModel(sub, 2, seed=5)
    x = torch.tensor([[2, 1]])
    steps = 3
    grid = time_grid(steps, "cosine")
    alpha = get_schedule("linear").alpha(grid)
    p_step = (alpha[1:] - alpha[:-1]).tolist()  # P(a digit is revealed at step k)
    assigns = list(itertools.product(range(steps), repeat=4))
    per_assign = [_bound_of_assignment(model, sub, x, a, grid) for a in assigns]
    exact = sum(math.prod(p_step[k] for k in a) * v for a, v in zip(assigns, per_assign))
    r = discrete_time_bound(model, x, sub, steps=steps, num_draws=10000, seed=0, grid="cosine")
    se = float(r.nelbo_stderr[0])
    assert se < 0.04
    assert float(r.nelbo[0]) == pytest.approx(exact, abs=4 * se)
    # the test can tell: weighting the trajectories as if the grid were uniform is > 4 se away
    wrong = sum(v / len(assigns) for v in per_assign)
    assert abs(float(r.nelbo[0]) - wrong) > 4 * se


def test_reveal_step_frequencies_follow_the_schedule():
    grid = time_grid(4, "uniform")
    sched = get_schedule("cosine")
    k = reveal_steps(grid, sched, (20000,), torch.Generator().manual_seed(0))
    alpha = sched.alpha(grid).double()
    freq = torch.bincount(k, minlength=4).double() / 20000
    torch.testing.assert_close(freq, alpha[1:] - alpha[:-1], atol=0.015, rtol=0)


def test_large_steps_approach_l_valid_of_a_random_model():
    sub = SubTokenizer(num_classes=5, length=2)
    model = RandomDigitModel(sub, 2, seed=3)
    x = torch.tensor([[1, 4]])
    l_valid = exact_objectives(model, x[0], sub)["valid"]
    r = discrete_time_bound(model, x, sub, steps=4000, num_draws=600, seed=2)
    assert float(r.nelbo[0]) == pytest.approx(l_valid, abs=4 * float(r.nelbo_stderr[0]) + 0.01)
    assert float(r.nelbo_stderr[0]) < 0.15
    assert r.summary()["discrete_time_steps"] == 4000


def test_rejects_bad_arguments():
    sub = SubTokenizer(num_classes=5, length=2)
    model = RandomDigitModel(sub, 2, seed=3)
    x = torch.tensor([[1, 4]])
    with pytest.raises(ValueError, match="steps"):
        discrete_time_bound(model, x, sub, steps=0)
    with pytest.raises(ValueError, match="num_draws"):
        discrete_time_bound(model, x, sub, steps=2, num_draws=1)
    with pytest.raises(ValueError, match="x0"):
        discrete_time_bound(model, x[0], sub, steps=2)
    with pytest.raises(TypeError, match="SubTokenizer"):
        discrete_time_bound(model, x, "sub", steps=2)
