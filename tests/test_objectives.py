import math

import pytest
import torch

from mdm_prime import SubTokenizer, diffusion_loss, digit_nll, get_schedule, sequence_terms, token_nll
from mdm_prime.oracle import ExactPosterior, exact_objectives, reveal_order_nll, sequence_entropy

from .helpers import RandomDigitModel, random_joint

CASES = [  # (C, ℓ, L)
    (4, 1, 2),
    (9, 2, 1),
    (5, 2, 2),  # b = 3, invalid codes
    (8, 3, 1),
    (6, 3, 1),  # b = 2, b^ℓ = 8 > 6
]


def _expected(model, probs, sub, schedule="linear"):
    """E_x[L_valid], E_x[L_prime] under the data pmf, by exact enumeration."""
    flat = probs.reshape(-1)
    ev = ep = 0.0
    for idx in range(flat.numel()):
        r = exact_objectives(model, model.sequences[idx], sub, schedule)
        ev += float(flat[idx]) * r["valid"]
        ep += float(flat[idx]) * r["prime"]
    return ev, ep


@pytest.mark.parametrize("C, ell, L", CASES)
def test_valid_bound_of_exact_posterior_is_the_nll(C, ell, L):
    sub = SubTokenizer(C, ell)
    probs = random_joint(C, L, seed=C + ell)
    model = ExactPosterior(probs, sub)
    flat = probs.reshape(-1)
    for idx in [0, 3, flat.numel() - 1]:
        r = exact_objectives(model, model.sequences[idx], sub)
        assert r["valid"] == pytest.approx(-math.log(flat[idx]), abs=1e-9)
        if ell == 1:
            assert r["prime"] == pytest.approx(r["valid"], abs=1e-9)


@pytest.mark.parametrize("C, ell, L", CASES)
def test_prime_objective_sits_below_the_entropy(C, ell, L):
    sub = SubTokenizer(C, ell)
    probs = random_joint(C, L, seed=7 * C + ell)
    model = ExactPosterior(probs, sub)
    ev, ep = _expected(model, probs, sub)
    h = sequence_entropy(probs)
    assert ev == pytest.approx(h, abs=1e-8)
    if ell == 1:
        assert ep == pytest.approx(h, abs=1e-8)
    else:
        assert ep < h - 1e-3  # the paper's objective is not a bound


def test_prime_gap_is_half_the_digit_mutual_information():
    # one token, ℓ = 2: L_prime = H − ½ I(d0; d1) (MATH.md §5)
    sub = SubTokenizer(9, 2)
    probs = random_joint(9, 1, seed=3).reshape(9)
    model = ExactPosterior(probs, sub)
    _, ep = _expected(model, probs, sub)
    joint = probs.reshape(3, 3)
    mi = float((joint * (joint.log() - joint.sum(1, keepdim=True).log() - joint.sum(0, keepdim=True).log())).sum())
    assert ep == pytest.approx(sequence_entropy(probs) - 0.5 * mi, abs=1e-9)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "polynomial:2"])
def test_bound_does_not_depend_on_schedule_for_time_independent_models(schedule):
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)
    x = torch.tensor([3, 1])
    ref = exact_objectives(model, x, sub, "linear")
    r = exact_objectives(model, x, sub, schedule)
    assert r["valid"] == pytest.approx(ref["valid"], rel=1e-9)


@pytest.mark.parametrize("C, ell, L", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_valid_bound_dominates_exact_model_nll(C, ell, L, seed):
    sub = SubTokenizer(C, ell)
    model = RandomDigitModel(sub, num_tokens=L, seed=seed)
    x = torch.randint(0, C, (L,), generator=torch.Generator().manual_seed(seed))
    bound = exact_objectives(model, x, sub)["valid"]
    ro = reveal_order_nll(model, x, sub)
    # L_valid is exactly the order-averaged chain rule, and ≥ −log p_θ(x) by Jensen
    assert bound == pytest.approx(ro["order_averaged_nll"], rel=1e-9)
    assert bound >= ro["nll"] - 1e-9


def test_model_nll_is_a_normalised_distribution():
    # the reveal-order likelihood of a random model sums to 1 over all sequences
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=4)
    total = sum(
        math.exp(-reveal_order_nll(model, torch.tensor([a, b]), sub)["nll"]) for a in range(5) for b in range(5)
    )
    assert total == pytest.approx(1.0, abs=1e-9)


def test_mdm_case_is_the_mdlm_nelbo():
    # ℓ = 1: both objectives equal w(t) Σ_{masked i} −log softmax(z^i)[x0^i]
    torch.manual_seed(0)
    sub = SubTokenizer(11, 1)
    x0 = torch.randint(0, 11, (6, 9))
    logits = torch.randn(6, 9, 11, dtype=torch.float64)
    y = torch.where(torch.rand(6, 9) < 0.5, torch.full_like(x0, sub.mask_id), x0)
    masked = y == sub.mask_id
    ref = (-logits.log_softmax(-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1) * masked).sum(-1)
    assert torch.allclose(sequence_terms(logits, y, x0, sub, "prime"), ref)
    assert torch.allclose(sequence_terms(logits, y, x0, sub, "valid"), ref)


def test_nll_terms_zero_where_seen():
    sub = SubTokenizer(10, 2)
    x0 = torch.randint(0, 10, (3, 4))
    y0 = sub.encode(x0)
    logits = torch.randn(3, 4, 10)
    assert torch.all(token_nll(logits, y0, x0, sub) == 0)
    assert torch.all(digit_nll(logits, y0, x0, sub) == 0)


def test_diffusion_loss_runs_and_is_differentiable():
    sub = SubTokenizer(10, 2)
    emb = torch.nn.Embedding(sub.base + 1, 8)
    head = torch.nn.Linear(16, 10)

    def model(y, t):
        return head(emb(y).view(y.shape[0], -1, 16))

    x0 = torch.randint(0, 10, (5, 7))
    for objective in ["prime", "valid"]:
        out = diffusion_loss(model, x0, sub, get_schedule("cosine"), objective=objective,
                             generator=torch.Generator().manual_seed(0))
        assert out.per_sequence.shape == (5,)
        out.loss.backward()
        assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
    with pytest.raises(ValueError, match="unknown objective 'elbo'"):
        diffusion_loss(model, x0, sub, objective="elbo")
