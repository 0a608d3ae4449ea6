import pytest
import torch

from mdm_prime import SubTokenizer, likelihood
from mdm_prime.oracle import ExactPosterior, exact_objectives

from .helpers import RandomDigitModel, random_joint


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
        res = likelihood(model, x, sub, schedule="cosine", num_times=6000, seed=0, estimator=estimator, eps=1e-5)
        z = (float(res.nelbo[0]) - exact["valid"]) / float(res.nelbo_stderr[0])
        assert abs(z) < 4.5, (estimator, z)


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


def test_bad_arguments():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, num_tokens=2, seed=0)
    x = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="num_times must be an int >= 2"):
        likelihood(model, x, sub, num_times=1)
    with pytest.raises(ValueError, match="unknown estimator 'exact'"):
        likelihood(model, x, sub, estimator="exact")
    with pytest.raises(ValueError, match="shape \\(B, L\\)"):
        likelihood(model, torch.tensor([1, 2]), sub)
    with pytest.raises(ValueError, match="found 7"):
        likelihood(model, torch.tensor([[1, 7]]), sub)
    with pytest.raises(ValueError, match="unknown schedule"):
        likelihood(model, x, sub, schedule="nope")
