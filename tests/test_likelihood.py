"""The likelihood estimators (docs/method.md §5) against the independent oracle: agreement with the
exact quadrature, the time law handed to a time-conditioned model, the weights to better than 1%,
tightness at the data entropy for the exact model, and input validation before any work."""

import math
from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.stats import beta, chisquare, kstest

from mdm_prime import SubTokenizer, get_schedule, likelihood
from mdm_prime.oracle import ExactPosterior, exact_objectives, sequence_entropy

from .helpers import RandomDigitModel, random_joint


class Recording:
    """Wraps a model and records every ``(y_t, t)`` it is called with; time-conditioned."""

    time_conditioned = True

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, y, t):
        self.calls.append((y.clone(), t.clone()))
        return self.model(y, t)


@pytest.mark.parametrize("estimator", ["integrated", "stratified"])
@pytest.mark.parametrize("C, ell, L", [(5, 2, 2), (8, 3, 1), (4, 1, 3)])
def test_monte_carlo_agrees_with_quadrature(estimator, C, ell, L):
    sub = SubTokenizer(C, ell)
    model = RandomDigitModel(sub, num_tokens=L, seed=1)
    x = torch.randint(0, C, (3, L), generator=torch.Generator().manual_seed(2))
    res = likelihood(model, x, sub, num_times=4000, seed=3, estimator=estimator, eps=1e-5)
    for i in range(3):
        exact = exact_objectives(model, x[i], sub)
        z_valid = (float(res.nelbo[i]) - exact["valid"]) / float(res.nelbo_stderr[i])
        z_prime = (float(res.prime_objective[i]) - exact["prime"]) / float(res.prime_objective_stderr[i])
        assert abs(z_valid) < 4.5, (i, z_valid)
        assert abs(z_prime) < 4.5, (i, z_prime)


def test_time_conditioned_model_gets_the_right_time_law():
    # a model whose logits depend strongly on t: the integrated estimator must pass t ~ Beta(k, n-k+1)
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=5, time_scale=3.0)
    x = torch.tensor([[4, 0]])
    exact = exact_objectives(model, x[0], sub, "cosine", quadrature_points=64)
    for estimator in ["integrated", "stratified"]:
        res = likelihood(
            model, x, sub, schedule="cosine", num_times=6000, seed=0, estimator=estimator, eps=1e-5
        )
        z = (float(res.nelbo[0]) - exact["valid"]) / float(res.nelbo_stderr[0])
        assert abs(z) < 4.5, (estimator, z)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "polynomial:3"])
def test_time_law_is_beta_and_patterns_are_uniform(schedule):
    # the integrated estimator hands a time-conditioned model t with u = 1 − α(t) ~ Beta(k, n−k+1)
    # given k masked digits (n = L·ℓ), and the masked set is a uniform k-subset
    sub = SubTokenizer(5, 2)
    rec = Recording(RandomDigitModel(sub, num_tokens=2, seed=5, time_scale=3.0))
    likelihood(rec, torch.tensor([[4, 0]]), sub, schedule=schedule, num_times=4000, seed=0, batch_size=4000)
    y = torch.cat([c[0] for c in rec.calls])
    t = torch.cat([c[1] for c in rec.calls])
    masked = y == sub.mask_id
    k = masked.sum(1)
    u = get_schedule(schedule).mask_probability(t.double()).numpy()
    n = y.shape[1]
    assert torch.equal(torch.bincount(k, minlength=n + 1)[1:], torch.full((n,), 1000))  # stratified k
    for kk in range(1, n + 1):
        sel = (k == kk).numpy()
        assert kstest(u[sel], beta(kk, n - kk + 1).cdf).pvalue > 1e-4, kk
        subsets = list(combinations(range(n), kk))
        if len(subsets) > 1:
            index = {sset: i for i, sset in enumerate(subsets)}
            ids = [index[tuple(np.flatnonzero(row))] for row in masked[sel].numpy()]
            counts = np.bincount(ids, minlength=len(subsets))
            assert chisquare(counts).pvalue > 1e-4, (kk, counts)


def test_weights_exact_for_a_zero_variance_model():
    # uniform logits with b^ℓ = C: every masked digit costs exactly log b whatever the context, so
    # each draw's (n/k)·Σ terms is n log b = L log C exactly (both objectives), with zero spread
    sub = SubTokenizer(8, 3)

    def uniform(y, t):
        return torch.zeros(y.shape[0], y.shape[1] // 3, 8, dtype=torch.float64)

    res = likelihood(uniform, torch.tensor([[1, 7, 0], [5, 5, 2]]), sub, num_times=64, seed=0)
    assert torch.allclose(res.nelbo, torch.full((2,), 3 * math.log(8), dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(res.prime_objective, res.nelbo, rtol=1e-12)
    assert float(res.nelbo_stderr.max()) < 1e-12


def test_estimate_within_a_fraction_of_a_percent_of_the_oracle():
    # a tiny case (C = 5, ℓ = 2, L = 1) whose estimator spread is small; 60 seeds give the true standard
    # error of the (stratified) estimate, well below 0.1%: a 1% bias in the weights is > 10 s.e.
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=1, seed=1)
    x = torch.tensor([[3], [4]])
    runs = [likelihood(model, x, sub, num_times=400, seed=s, batch_size=4096) for s in range(60)]
    for key, field in [("valid", "nelbo"), ("prime", "prime_objective")]:
        est = torch.stack([getattr(r, field) for r in runs])  # (30, 2)
        se = est.std(0) / math.sqrt(est.shape[0])
        for i in range(2):
            exact = exact_objectives(model, x[i], sub)[key]
            assert float(se[i]) < 1e-3 * exact, (key, i, float(se[i]) / exact)
            assert abs(float(est[:, i].mean()) - exact) < 4.5 * float(se[i]), (key, i)


def test_exact_model_is_tight_at_the_entropy_and_a_perturbed_one_is_not():
    # averaged over the data, L_valid of the exact posterior is the entropy (the bound is tight);
    # the same model with noisy logits is strictly worse by far more than its standard error
    sub = SubTokenizer(9, 2)
    probs = random_joint(9, 1, seed=2).reshape(9)
    exact_model = ExactPosterior(probs, sub, num_tokens=1)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(9, dtype=torch.float64, generator=g)

    def noisy(y, t):
        return exact_model(y, t) + noise

    x = torch.arange(9).view(9, 1)
    h = sequence_entropy(probs)
    for model, tight in [(exact_model, True), (noisy, False)]:
        res = likelihood(model, x, sub, num_times=2000, seed=1)
        mean = float((probs * res.nelbo).sum())
        se = float((probs.pow(2) * res.nelbo_stderr.pow(2)).sum().sqrt())
        assert se < 0.01 * h
        if tight:
            assert abs(mean - h) < 4.5 * se
        else:
            assert mean > h + 10 * se


def test_integrated_estimator_has_lower_variance():
    sub = SubTokenizer(9, 2)
    probs = random_joint(9, 2, seed=0)
    model = ExactPosterior(probs, sub)
    x = model.sequences[:4]
    a = likelihood(model, x, sub, num_times=512, seed=0, estimator="integrated")
    b = likelihood(model, x, sub, num_times=512, seed=0, estimator="stratified")
    assert float(a.nelbo_stderr.mean()) < float(b.nelbo_stderr.mean())


def test_exact_posterior_estimate_is_the_nll_and_summary_units():
    sub = SubTokenizer(9, 2)
    probs = random_joint(9, 2, seed=1)
    model = ExactPosterior(probs, sub)
    x = model.sequences[[5, 40]]
    res = likelihood(model, x, sub, num_times=2000, seed=1)
    nll = -probs.reshape(-1)[[5, 40]].log()
    assert torch.all((res.nelbo - nll).abs() < 4.5 * res.nelbo_stderr)
    s = res.summary()
    assert s["bits_per_token"] == pytest.approx(s["nelbo_nats_per_token"] / 0.6931471805599453)
    assert s["num_times"] == 2000 and s["tokens_per_sequence"] == 2


def test_reproducible_and_leaves_global_rng_alone():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)
    x = torch.tensor([[1, 2], [3, 4]])
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = likelihood(model, x, sub, num_times=8, seed=9)
    after = torch.rand(1)
    b = likelihood(model, x, sub, num_times=8, seed=9, batch_size=3)
    assert torch.equal(before, after)
    assert torch.allclose(a.nelbo, b.nelbo)


class Counting:
    time_conditioned = False

    def __init__(self, model):
        self.model, self.n = model, 0

    def __call__(self, y, t):
        self.n += 1
        return self.model(y, t)


def test_bad_arguments():
    sub = SubTokenizer(5, 2)
    model = Counting(RandomDigitModel(sub, num_tokens=2, seed=0))
    x = torch.tensor([[1, 2]])
    cases = [
        (dict(num_times=1), ValueError, "num_times must be an int >= 2"),
        (dict(estimator="exact"), ValueError, "unknown estimator 'exact'"),
        (dict(x0=torch.tensor([1, 2])), ValueError, "shape \\(B, L\\)"),
        (dict(x0=torch.tensor([[1, 7]])), ValueError, "found 7"),
        (dict(x0=torch.tensor([[1, -1]])), ValueError, "found -1"),
        (dict(x0=torch.tensor([[1.0, 2.0]])), TypeError, "integer token ids"),
        (dict(x0=torch.zeros(0, 2, dtype=torch.long)), ValueError, "empty batch"),
        (dict(x0=torch.zeros(3, 0, dtype=torch.long)), ValueError, "zero-length sequences"),
        (dict(schedule="nope"), ValueError, "unknown schedule"),
        (dict(batch_size=0), ValueError, "batch_size must be an int >= 1"),
        (dict(eps=1.5), ValueError, "eps must be a number in \\[0, 1\\)"),
        (dict(seed=1.5), TypeError, "seed must be an int"),
        (dict(subtokenizer=None), TypeError, "subtokenizer must be a SubTokenizer"),
    ]
    for kw, err, text in cases:
        args = dict(model=model, x0=x, subtokenizer=sub)
        args.update(kw)
        with pytest.raises(err, match=text):
            likelihood(args.pop("model"), args.pop("x0"), args.pop("subtokenizer"), **args)
    assert model.n == 0  # all raised before any model call
    with pytest.raises(TypeError, match="model must be callable"):
        likelihood("model", x, sub)


def test_mismatched_subtokenizer_and_bad_model_outputs():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)
    x = torch.tensor([[1, 2]])
    # the model has 5 classes; a sub-tokenizer with 6 (same ℓ and base) must be refused at the first call
    with pytest.raises(ValueError, match="model has 5 classes but the sub-tokenizer has C=6"):
        likelihood(model, x, SubTokenizer(6, 2))
    # a model that carries its own sub-tokenizer: refused before any call
    model.subtokenizer = sub
    with pytest.raises(ValueError, match="does not match the model's own"):
        likelihood(model, x, SubTokenizer(5, 2, base=4))
    with pytest.raises(ValueError, match="NaN logits"):
        likelihood(lambda y, t: torch.full((y.shape[0], 2, 5), float("nan")), x, sub)
    with pytest.raises(ValueError, match="expected \\(32, 2, 5\\)"):
        likelihood(lambda y, t: torch.zeros(y.shape[0], 3, 5), x, sub)


# ----------------------------------------------------------------------------- kills of mutmut survivors


@pytest.mark.parametrize("estimator", ["integrated", "stratified"])
def test_both_estimators_leave_global_rng_alone(estimator):
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)
    x = torch.tensor([[1, 2], [3, 4]])
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    a = likelihood(model, x, sub, num_times=8, seed=9, estimator=estimator)
    assert torch.equal(torch.rand(3), expected)
    b = likelihood(model, x, sub, num_times=8, seed=9, estimator=estimator, batch_size=1)
    assert torch.equal(a.nelbo, b.nelbo)


def test_stratified_times_are_clipped_at_eps():
    sub = SubTokenizer(5, 2)
    rec = Recording(RandomDigitModel(sub, num_tokens=2, seed=0, time_scale=1.0))
    likelihood(rec, torch.tensor([[1, 2]]), sub, num_times=64, seed=0, estimator="stratified", eps=0.25)
    t = torch.cat([c[1] for c in rec.calls])
    assert float(t.min()) == 0.25 and float(t.max()) <= 1.0


def test_summary_numbers_by_hand():
    from mdm_prime.likelihood import LikelihoodResult

    r = LikelihoodResult(
        nelbo=torch.tensor([8.0, 12.0], dtype=torch.float64),
        nelbo_stderr=torch.tensor([0.3, 0.4], dtype=torch.float64),
        prime_objective=torch.tensor([6.0, 10.0], dtype=torch.float64),
        prime_objective_stderr=torch.tensor([0.1, 0.1], dtype=torch.float64),
        num_tokens=4,
        num_times=32,
        estimator="integrated",
    )
    s = r.summary()
    assert s["nelbo_nats_per_token"] == pytest.approx(2.5)  # (8 + 12) / 2 / 4
    assert s["stderr_nats_per_token"] == pytest.approx(0.0625)  # sqrt(0.09 + 0.16) / 2 / 4
    assert s["bits_per_token"] == pytest.approx(2.5 / math.log(2))
    assert s["perplexity"] == pytest.approx(math.exp(2.5))
    assert s["prime_objective_nats_per_token"] == pytest.approx(2.0)
    assert (s["num_times"], s["num_sequences"], s["tokens_per_sequence"], s["estimator"]) == (
        32,
        2,
        4,
        "integrated",
    )


def test_argument_boundaries_and_messages():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)
    x = torch.tensor([[1, 2]])
    likelihood(model, x, sub, num_times=2, batch_size=1)  # smallest accepted values
    likelihood(model, x, sub, num_times=2, estimator="stratified", eps=0.0)
    for kw, err, text in [
        (
            dict(num_times=True),
            ValueError,
            "num_times must be an int >= 2 \\(to estimate a standard error\\), got True",
        ),
        (dict(num_times=2.0), ValueError, "got 2.0"),
        (dict(batch_size=True), ValueError, "batch_size must be an int >= 1, got True"),
        (dict(batch_size=1.0), ValueError, "got 1.0"),
        (dict(eps=1.0), ValueError, "eps must be a number in \\[0, 1\\), got 1.0"),
        (dict(eps=True), ValueError, "got True"),
        (dict(seed=None), TypeError, "seed must be an int, got NoneType \\(None\\)"),
    ]:
        with pytest.raises(err, match=text):
            likelihood(model, x, sub, **kw)
    with pytest.raises(TypeError, match="model must be callable as model\\(y_t, t\\), got str"):
        likelihood("model", x, sub)
    with pytest.raises(TypeError, match="subtokenizer must be a SubTokenizer, got int"):
        likelihood(model, x, 5)
    with pytest.raises(ValueError, match="shape \\(B, L\\), got list"):
        likelihood(model, [[1, 2]], sub)
    with pytest.raises(ValueError, match="shape \\(B, L\\), got \\(2,\\)"):
        likelihood(model, torch.tensor([1, 2]), sub)
    with pytest.raises(TypeError, match="integer token ids, got dtype torch.bool"):
        likelihood(model, torch.tensor([[True, False]]), sub)
    with pytest.raises(ValueError, match="model returned logits of shape list"):
        likelihood(lambda y, t: [0], x, sub)
    with pytest.raises(ValueError, match="expected \\(32, 2, 5\\)$"):  # same class count: no hint
        likelihood(lambda y, t: torch.zeros(y.shape[0], 2, 2, 5), x, sub)
    with pytest.raises(TypeError, match="expected a floating-point tensor"):
        likelihood(lambda y, t: torch.zeros(y.shape[0], 2, 5, dtype=torch.long), x, sub)


def test_model_sequence_length_is_checked_unless_variable():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)
    model.seq_len = 3
    with pytest.raises(ValueError, match="x0 has sequences of L=2 tokens but the model takes seq_len=3"):
        likelihood(model, torch.tensor([[1, 2]]), sub)
    model.seq_len = 2
    likelihood(model, torch.tensor([[1, 2]]), sub, num_times=2)
    model.seq_len, model.variable_length = 3, True
    likelihood(model, torch.tensor([[1, 2]]), sub, num_times=2)  # a variable-length model takes any L


def test_stratified_counts_stay_in_range_when_float32_rounds_up():
    """``v`` just below 1 makes ``v + K − 1`` round to ``K`` in float32; ``k`` must still be ≤ n
    (and one count per stratum ``[r/K, (r+1)/K)`` of ``k/n``)."""
    from mdm_prime.likelihood import _stratified_counts

    K, n = 32, 256
    v = torch.tensor([[1.0 - 2.0**-24], [0.0], [0.5]])
    k = _stratified_counts(v, K, n).view(3, K)
    assert int(k.min()) >= 1 and int(k.max()) <= n
    assert k[0, -1] == n and k[1].tolist() == [r * n // K + 1 for r in range(K)]
    # by hand for v = 0.5: floor((0.5 + r)/32 · 256) + 1 = 8r + 5
    assert k[2].tolist() == [8 * r + 5 for r in range(K)]


def test_integrated_draws_mask_exactly_k_digits_even_for_long_rows():
    """Exactly ``k = n/weight`` digits are masked in every row (the pattern's uniforms are float64, so
    a tie with the k-th smallest, which would mask k + 1, has probability ~``n · 2⁻⁵³`` per row)."""
    from mdm_prime.likelihood import _draw_integrated

    n, K = 512, 32
    y0 = torch.zeros(64 * K, n, dtype=torch.long)
    y, weight, t = _draw_integrated(y0, K, get_schedule("linear"), 1, torch.Generator().manual_seed(0))
    k = (n / weight).round().long()
    assert torch.equal((y == 1).sum(1), k)


def test_messages_name_the_bad_values():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)
    x = torch.tensor([[1, 2]])
    with pytest.raises(TypeError, match=r"seed must be an int, got str \('3'\)"):
        likelihood(model, x, sub, seed="3")
    with pytest.raises(ValueError, match="eps must be a number in"):
        likelihood(model, x, sub, eps="0.1")
    with pytest.raises(
        ValueError, match=r"model returned logits of shape \(32, 2, 4\), expected \(32, 2, 5\)"
    ):
        likelihood(lambda y, t: torch.zeros(y.shape[0], 2, 4), x, sub)
    # the hint reads the class axis (last), not the token axis: L = C = 5 with 4 classes gets it,
    # L = 3 with the right 5 classes (a wrong token count) does not
    x5 = torch.tensor([[1, 2, 3, 4, 0]])
    with pytest.raises(ValueError, match="the model has 4 classes but the sub-tokenizer has C=5"):
        likelihood(lambda y, t: torch.zeros(y.shape[0], 5, 4), x5, sub)
    with pytest.raises(ValueError, match=r"of shape \(32, 3, 5\), expected \(32, 5, 5\)$"):
        likelihood(lambda y, t: torch.zeros(y.shape[0], 3, 5), x5, sub)
    with pytest.raises(ValueError, match="^model returned NaN logits; the bound would be NaN$"):
        likelihood(lambda y, t: torch.full((y.shape[0], 2, 5), float("nan")), x, sub)
