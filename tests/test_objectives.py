"""Objectives (docs/method.md §4–5) against the independent oracle: per-pattern terms equal the numpy
brute force, the expectation over t of the weighted training loss equals the exact objective for every
schedule, and the exact-posterior identities of the spec hold."""

import itertools
import math

import numpy as np
import pytest
import torch

from mdm_prime import (
    SubTokenizer,
    diffusion_loss,
    digit_nll,
    get_schedule,
    sequence_terms,
    token_nll,
)
from mdm_prime.oracle import (
    ExactPosterior,
    exact_objectives,
    nll_terms,
    reveal_order_nll,
    sequence_entropy,
)

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
    # one token, ℓ = 2: L_prime = H − ½ I(d0; d1) (docs/method.md §5)
    sub = SubTokenizer(9, 2)
    probs = random_joint(9, 1, seed=3).reshape(9)
    model = ExactPosterior(probs, sub)
    _, ep = _expected(model, probs, sub)
    joint = probs.reshape(3, 3)
    mi = float(
        (joint * (joint.log() - joint.sum(1, keepdim=True).log() - joint.sum(0, keepdim=True).log())).sum()
    )
    assert ep == pytest.approx(sequence_entropy(probs) - 0.5 * mi, abs=1e-9)


def _all_patterns(x, sub):
    y0 = sub.encode(x.view(1, -1))[0]
    pats = torch.tensor(list(itertools.product([False, True], repeat=y0.numel())))
    return torch.where(pats, torch.full_like(pats, sub.mask_id, dtype=torch.long), y0)


@pytest.mark.parametrize("C, ell, L", CASES + [(7, 2, 2)])
@pytest.mark.parametrize("kind", ["exact", "random"])
def test_library_terms_equal_brute_force_at_every_mask_pattern(C, ell, L, kind):
    # every mask pattern of one sequence: the library's L_prime / L_valid terms (carry-over, marginals)
    # against the oracle's numpy enumeration; the exact posterior's raw logits need carry-over
    sub = SubTokenizer(C, ell)
    if kind == "exact":
        model = ExactPosterior(random_joint(C, L, seed=C + L), sub)
    else:
        model = RandomDigitModel(sub, num_tokens=L, seed=C)
    for x in torch.randint(0, C, (3, L), generator=torch.Generator().manual_seed(ell)):
        y = _all_patterns(x, sub)
        logits = model(y, torch.zeros(y.shape[0]))
        x_rows = x.expand(y.shape[0], -1)
        prime, valid = nll_terms(logits, y, x.numpy(), sub)
        for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
            z = logits.to(dtype)
            assert np.allclose(
                sequence_terms(z, y, x_rows, sub, "prime").double().numpy(), prime, rtol=tol, atol=tol
            )
            assert np.allclose(
                sequence_terms(z, y, x_rows, sub, "valid").double().numpy(), valid, rtol=tol, atol=tol
            )


SCHEDULE_CASES = [  # (schedule, time_scale): time-independent and time-conditioned models
    ("linear", 0.0),
    ("cosine", 0.0),
    ("polynomial:3", 0.0),
    ("loglinear", 0.0),
    ("cosine", 3.0),
    ("linear", 3.0),
]


@pytest.mark.parametrize("schedule, time_scale", SCHEDULE_CASES)
@pytest.mark.parametrize("objective", ["prime", "valid"])
def test_training_loss_is_unbiased_for_the_exact_objective(schedule, time_scale, objective):
    # E_t[w(t) · terms(y_t)] over the stratified times of diffusion_loss equals the exact continuous-time
    # objective of the oracle (schedule-free for a time-independent model). Kills a missing or wrong
    # w(t), a w(t) that does not match the schedule's masking, and a wrong t handed to the model.
    # The trainer's loss is checked equal to diffusion_loss elsewhere, so this covers the trainer.
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=3, time_scale=time_scale)
    x = torch.tensor([4, 1])
    exact = exact_objectives(model, x, sub, schedule, quadrature_points=64 if time_scale else None)[objective]
    g = torch.Generator().manual_seed(0)
    draws = torch.cat(
        [
            diffusion_loss(
                model, x.expand(8192, -1), sub, schedule, objective=objective, eps=1e-7, generator=g
            ).per_sequence
            for _ in range(6)
        ]
    ).double()
    # stratified t: each batch is one stratified sample; use the batch means as iid draws
    batch_means = draws.view(6, 8192).mean(1)
    mean = float(draws.mean())
    se = float(draws.std()) / math.sqrt(draws.numel())
    assert abs(mean - exact) < 4.5 * se, (mean, exact, se)
    assert se < 0.03 * exact  # tight enough that a 10% bias in w(t) fails
    assert torch.isfinite(batch_means).all()


@pytest.mark.parametrize("C, ell, L", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_valid_bound_is_the_order_averaged_chain_rule(C, ell, L, seed):
    sub = SubTokenizer(C, ell)
    model = RandomDigitModel(sub, num_tokens=L, seed=seed)
    x = torch.randint(0, C, (L,), generator=torch.Generator().manual_seed(seed))
    bound = exact_objectives(model, x, sub)["valid"]
    ro = reveal_order_nll(model, x, sub)
    # two independent evaluations of L_valid: quadrature over t and DP over reveal orders
    assert bound == pytest.approx(ro["order_averaged_nll"], rel=1e-9)
    # an untrained model's reveal orders disagree: the Jensen gap is strictly positive
    assert bound > ro["nll"] + 1e-4


@pytest.mark.parametrize("C, ell, L", CASES)
def test_exact_posterior_closes_the_jensen_gap(C, ell, L):
    # with the exact posterior every reveal order gives −log p(x): bound = nll = −log p(x), no gap
    sub = SubTokenizer(C, ell)
    probs = random_joint(C, L, seed=11 * C + ell)
    model = ExactPosterior(probs, sub)
    idx = probs.numel() // 2
    x = model.sequences[idx]
    ro = reveal_order_nll(model, x, sub)
    nll = -math.log(float(probs.reshape(-1)[idx]))
    assert ro["nll"] == pytest.approx(nll, abs=1e-9)
    assert ro["order_averaged_nll"] == pytest.approx(nll, abs=1e-9)


def test_model_nll_is_a_normalised_distribution():
    # the reveal-order likelihood of a random model sums to 1 over all sequences
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=4)
    total = sum(
        math.exp(-reveal_order_nll(model, torch.tensor([a, b]), sub)["nll"])
        for a in range(5)
        for b in range(5)
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
        out = diffusion_loss(
            model,
            x0,
            sub,
            get_schedule("cosine"),
            objective=objective,
            generator=torch.Generator().manual_seed(0),
        )
        assert out.per_sequence.shape == (5,)
        out.loss.backward()
        assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
    with pytest.raises(ValueError, match="unknown objective 'elbo'"):
        diffusion_loss(model, x0, sub, objective="elbo")


def test_diffusion_loss_defaults_reproducibility_and_outputs():
    # kills of mutmut survivors: defaults, the private generator, eps, and the returned t / y_t
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)
    x = torch.randint(0, 5, (64, 2), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    a = diffusion_loss(model, x, sub, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(2), expected)  # global RNG untouched
    b = diffusion_loss(
        model, x, sub, "linear", objective="prime", eps=1e-3, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a.per_sequence, b.per_sequence) and torch.equal(a.t, b.t) and torch.equal(a.y_t, b.y_t)
    # outputs are the draw that was scored: y_t masks x's digits, and w(t)·terms(y_t) = per_sequence
    assert a.t.shape == (64,) and a.y_t.shape == (64, 4)
    seen = a.y_t != sub.mask_id
    assert torch.equal(a.y_t[seen], sub.encode(x)[seen])
    terms = sequence_terms(model(a.y_t, a.t), a.y_t, x, sub, "prime")
    assert torch.allclose(a.per_sequence, (1.0 / a.t.double()) * terms)
    c = diffusion_loss(model, x, sub, eps=0.4, generator=torch.Generator().manual_seed(1))
    assert float(c.t.min()) >= 0.4


def test_diffusion_loss_uses_the_noise_it_is_given():
    """With ``t`` and ``uniforms`` given, the masked input is exactly ``u < 1 − α(t)`` of those
    uniforms, whatever the generator (the trainer's resume and DDP slicing rely on it)."""
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=3, seed=0)
    x = torch.randint(0, 5, (8, 3), generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.1, 0.9, 8)
    u = torch.rand(8, 6, generator=torch.Generator().manual_seed(1))
    a = diffusion_loss(model, x, sub, t=t, uniforms=u, generator=torch.Generator().manual_seed(2))
    b = diffusion_loss(model, x, sub, t=t, uniforms=u, generator=torch.Generator().manual_seed(3))
    expected = torch.where(u < t.view(-1, 1), torch.full((8, 6), sub.mask_id), sub.encode(x))  # linear
    assert torch.equal(a.y_t, expected) and torch.equal(b.y_t, expected)
    assert torch.equal(a.per_sequence, b.per_sequence)


def test_sequence_terms_names_an_unknown_objective():
    sub = SubTokenizer(5, 2)
    x = torch.tensor([[1, 2]])
    y = sub.encode(x)
    with pytest.raises(ValueError, match="unknown objective 'bogus'; expected one of"):
        sequence_terms(torch.zeros(1, 2, 5), y, x, sub, "bogus")


# --- training weightings (docs/method.md §4b) -----------------------------------------------------


def _hand_terms(logits, y_t, x0, sub):
    """Per sequence, by explicit loops: (token terms, digit terms, masked tokens, masked digits), from
    ``log_softmax`` over the classes consistent with the seen digits and brute-force digit marginals."""
    B, L, C = logits.shape
    ell = sub.length
    table = sub.encode(torch.arange(C).view(C, 1)).view(C, ell)  # digits of every class
    y0 = sub.encode(x0).view(B, L, ell)
    yt = y_t.view(B, L, ell)
    out = []
    for b in range(B):
        tok = dig = 0.0
        n_tok = n_dig = 0
        for i in range(L):
            seen = [j for j in range(ell) if int(yt[b, i, j]) != sub.mask_id]
            if len(seen) == ell:
                continue
            ok = [c for c in range(C) if all(int(table[c, j]) == int(yt[b, i, j]) for j in seen)]
            logp = torch.log_softmax(logits[b, i, ok].double(), -1)
            p = {c: float(logp[k].exp()) for k, c in enumerate(ok)}
            tok += -float(logp[ok.index(int(x0[b, i]))])
            n_tok += 1
            for j in range(ell):
                if j in seen:
                    continue
                n_dig += 1
                marg = sum(p[c] for c in ok if int(table[c, j]) == int(y0[b, i, j]))
                dig += -math.log(marg)
        out.append((tok, dig, n_tok, n_dig))
    return out


def _weighting_setup(C, ell, L, B=6, seed=0):
    sub = SubTokenizer(C, ell)
    model = RandomDigitModel(sub, L, seed=seed + 7, time_scale=0.5)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, C, (B, L), generator=g)
    t = torch.linspace(0.05, 0.95, B, dtype=torch.float64).float()
    u = torch.rand(B, L * ell, generator=g)
    u[0] = 1.0  # first sequence: nothing masked
    return sub, model, x0, t, u


@pytest.mark.parametrize("C, ell, L", CASES)
def test_unweighted_and_mixture_losses_equal_a_hand_computation(C, ell, L):
    sub, model, x0, t, u = _weighting_setup(C, ell, L)
    w = get_schedule("linear").weight(t)
    res = diffusion_loss(model, x0, sub, "linear", t=t, uniforms=u)
    hand = _hand_terms(model(res.y_t, t), res.y_t, x0, sub)
    assert hand[0] == (0.0, 0.0, 0, 0)
    for objective in ("prime", "valid"):
        got = diffusion_loss(
            model, x0, sub, "linear", objective=objective, t=t, uniforms=u, weighting="unweighted"
        )
        for b, (tok, dig, n_tok, n_dig) in enumerate(hand):
            terms, count = (tok, n_tok) if objective == "prime" else (dig, n_dig)
            expected = terms / count if count else 0.0
            assert float(got.per_sequence[b]) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    for mix in (0.0, 0.3, 1.0):
        got = diffusion_loss(model, x0, sub, "linear", t=t, uniforms=u, weighting="mixture", mix=mix)
        for b, (tok, dig, _, _) in enumerate(hand):
            expected = float(w[b]) * ((1 - mix) * tok + mix * dig)
            assert float(got.per_sequence[b]) == pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("C, ell, L", [(9, 2, 2), (8, 3, 1)])
def test_mixture_endpoints_are_the_two_objectives(C, ell, L):
    sub, model, x0, t, u = _weighting_setup(C, ell, L, seed=3)
    for mix, objective in ((0.0, "prime"), (1.0, "valid")):
        mixed = diffusion_loss(model, x0, sub, t=t, uniforms=u, weighting="mixture", mix=mix).per_sequence
        plain = diffusion_loss(model, x0, sub, t=t, uniforms=u, objective=objective).per_sequence
        torch.testing.assert_close(mixed, plain, rtol=1e-12, atol=0)
    default = diffusion_loss(model, x0, sub, t=t, uniforms=u).per_sequence
    assert torch.equal(
        default, diffusion_loss(model, x0, sub, t=t, uniforms=u, weighting="elbo").per_sequence
    )


def test_unweighted_loss_does_not_see_the_schedule_weight():
    from mdm_prime.schedules import LinearSchedule

    class Doubled(LinearSchedule):  # same masking, twice the weight
        def _weight64(self, t):
            return 2.0 / t

    sub, model, x0, t, u = _weighting_setup(9, 2, 2, seed=5)
    for objective in ("prime", "valid"):
        kw = dict(objective=objective, t=t, uniforms=u)
        one = diffusion_loss(model, x0, sub, LinearSchedule(), **kw)
        two = diffusion_loss(model, x0, sub, Doubled(), **kw)
        assert torch.equal(one.y_t, two.y_t)
        torch.testing.assert_close(two.per_sequence, 2 * one.per_sequence)  # elbo sees it
        a = diffusion_loss(model, x0, sub, LinearSchedule(), weighting="unweighted", **kw).per_sequence
        b = diffusion_loss(model, x0, sub, Doubled(), weighting="unweighted", **kw).per_sequence
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(weighting="flat"), "expected one of ('elbo', 'unweighted', 'mixture')"),
        (dict(weighting="mixture", mix=1.5), "mix must be a number in [0, 1]"),
        (dict(weighting="mixture", mix=-0.1), "mix must be a number in [0, 1]"),
        (dict(mix=float("nan")), "mix must be a number in [0, 1]"),
        (dict(weighting="mixture", objective="valid"), "leave objective at 'prime'"),
    ],
)
def test_bad_weightings_are_refused_before_any_work(kw, message):
    sub = SubTokenizer(9, 2)

    def model(y_t, t):
        raise AssertionError("the model must not be called")

    with pytest.raises(ValueError) as err:
        diffusion_loss(model, torch.zeros(2, 3, dtype=torch.long), sub, **kw)
    assert message in str(err.value)
