"""The exact oracle is independent of the code under test (docs/method.md §3, §5), and the library's
carry-over, digit marginals and per-token / per-digit NLLs agree with its numpy brute force on random
shapes, configurations, permutations, mask patterns and dtypes (hypothesis)."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm_prime import SubTokenizer, default_base
from mdm_prime.objectives import token_and_digit_nll
from mdm_prime.oracle import ExactPosterior, brute_force_carry_over, digits_of
from mdm_prime.parameterization import (
    carry_over,
    carry_over_log_probs,
    carry_over_nll,
    digit_log_marginals,
)

from .helpers import random_joint


def test_oracle_imports_nothing_under_test():
    import ast
    from pathlib import Path

    from mdm_prime import oracle

    tree = ast.parse(Path(oracle.__file__).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules <= {"__future__", "itertools", "math", "collections.abc", "numpy", "torch", "schedules"}, (
        modules
    )


def test_digits_of_known_values():
    assert digits_of(SubTokenizer(256, 2))[[0, 255, 17, 32]].tolist() == [[0, 0], [15, 15], [1, 1], [2, 0]]
    assert digits_of(SubTokenizer(5, 2)).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1]]
    perm = [2, 0, 1]
    assert digits_of(SubTokenizer(3, 2, permutation=perm)).tolist() == [[1, 0], [0, 0], [0, 1]]


def test_brute_force_carry_over_by_hand():
    # C = 5, ℓ = 2, b = 3: codes 0..4 valid (5..8 invalid). Seen first digit 1 → classes {3, 4}.
    sub = SubTokenizer(5, 2)
    z = torch.tensor([[[0.0, 1.0, 2.0, math.log(3.0), 0.0]]], dtype=torch.float64)
    lp, marg = brute_force_carry_over(z, torch.tensor([[1, 3]]), sub)
    assert np.allclose(np.exp(lp[0, 0]), [0, 0, 0, 0.75, 0.25])
    assert np.allclose(np.exp(marg[0, 0, 0]), [0, 1, 0])
    assert np.allclose(np.exp(marg[0, 0, 1]), [0.75, 0.25, 0])  # class 3 = (1, 0), class 4 = (1, 1)
    # fully masked: plain softmax; digit 1 = 2 only from class 2
    lp, marg = brute_force_carry_over(z, torch.tensor([[3, 3]]), sub)
    p = np.array([1, math.e, math.e**2, 3, 1]) / (5 + math.e + math.e**2)
    assert np.allclose(np.exp(lp[0, 0]), p)
    assert np.allclose(np.exp(marg[0, 0, 1]), [p[0] + p[3], p[1] + p[4], p[2]])


def _bayes_posterior(probs, sub, y):
    """p(x^i = c | y) by plain loops over all sequences (a second, loop-based enumeration)."""
    c, L, ell = sub.num_classes, probs.dim(), sub.length
    table = digits_of(sub)
    out = np.zeros((L, c))
    for seq in itertools.product(range(c), repeat=L):
        ok = all(
            y[i * ell + j] == sub.mask_id or table[seq[i], j] == y[i * ell + j]
            for i in range(L)
            for j in range(ell)
        )
        if ok:
            for i in range(L):
                out[i, seq[i]] += float(probs[seq])
    return out / out.sum(-1, keepdims=True)


@pytest.mark.parametrize("C, ell, L", [(5, 2, 2), (6, 3, 1), (4, 2, 2)])
def test_exact_posterior_needs_carry_over_and_then_is_bayes(C, ell, L):
    sub = SubTokenizer(C, ell)
    probs = random_joint(C, L, seed=C * ell + L)
    model = ExactPosterior(probs, sub)
    g = torch.Generator().manual_seed(0)
    x = model.sequences[torch.randint(0, C**L, (12,), generator=g)]
    y = sub.encode(x)
    y = torch.where(torch.rand(y.shape, generator=g) < 0.5, torch.full_like(y, sub.mask_id), y)
    raw = model(y, None)
    lp, _ = brute_force_carry_over(raw, y, sub)
    leaked = 0.0
    for r in range(y.shape[0]):
        post = _bayes_posterior(probs, sub, y[r].tolist())
        assert np.allclose(np.exp(lp[r]), post, atol=1e-12)
        leaked = max(leaked, float((np.exp(raw[r].numpy()) - post).__abs__().max()))
    assert leaked > 0.05  # the raw logits are NOT the posterior: carry-over is what makes them exact
    # the self-consistent variant is already the posterior
    direct = ExactPosterior(probs, sub, needs_carry_over=False)(y, None)
    assert np.allclose(np.exp(direct.numpy()), np.exp(lp), atol=1e-12)


@st.composite
def carry_over_case(draw):
    ell = draw(st.integers(1, 4))
    c = draw(st.integers(2, 40 if ell > 1 else 12))
    base = default_base(c, ell) + (draw(st.integers(0, 1)) if ell > 1 else 0)
    if base**ell > 300:
        base = default_base(c, ell)
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(c, generator=g) if draw(st.booleans()) else None
    sub = SubTokenizer(c, ell, base=base, permutation=perm)
    bsz, L = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    scale = draw(st.sampled_from([0.5, 3.0, 30.0]))
    x0 = torch.randint(0, c, (bsz, L), generator=g)
    y = sub.encode(x0)
    p_mask = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    y = torch.where(torch.rand(y.shape, generator=g) < p_mask, torch.full_like(y, sub.mask_id), y)
    logits = (torch.randn(bsz, L, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    return sub, x0, y, logits


def _check_nll(sub, x0, y, tok, dig, lp_bf, marg_bf, rtol, atol):
    cap = -math.log(torch.finfo(tok.dtype).tiny)  # digit NLLs are capped at −log(tiny) of the dtype
    table = digits_of(sub)
    ell = sub.length
    for b in range(x0.shape[0]):
        for i in range(x0.shape[1]):
            hidden = (y[b, i * ell : (i + 1) * ell] == sub.mask_id).numpy()
            want_tok = -lp_bf[b, i, int(x0[b, i])] if hidden.any() else 0.0
            assert float(tok[b, i]) == pytest.approx(want_tok, rel=rtol, abs=atol)
            for j in range(ell):
                want = -marg_bf[b, i, j, table[int(x0[b, i]), j]] if hidden[j] else 0.0
                assert float(dig[b, i, j]) == pytest.approx(min(want, cap), rel=rtol, abs=atol)


@settings(max_examples=80, deadline=None)
@given(case=carry_over_case(), grad=st.booleans())
def test_carry_over_nll_matches_brute_force(case, grad):
    sub, x0, y, logits = case
    lp_bf, marg_bf = brute_force_carry_over(logits, y, sub)
    rtol, atol = (1e-4, 1e-4) if logits.dtype == torch.float32 else (1e-9, 1e-9)
    z = logits.clone().requires_grad_(grad)
    tok, dig = carry_over_nll(z, y, x0, sub)
    _check_nll(sub, x0, y, tok.detach(), dig.detach(), lp_bf, marg_bf, rtol, atol)
    tok2, dig2 = token_and_digit_nll(logits, y, x0, sub)
    assert torch.equal(tok2, tok.detach()) and torch.equal(dig2, dig.detach())


@settings(max_examples=80, deadline=None)
@given(case=carry_over_case(), grad=st.booleans())
def test_carry_over_log_probs_and_marginals_match_brute_force(case, grad):
    sub, _, y, logits = case
    lp_bf, marg_bf = brute_force_carry_over(logits, y, sub)
    atol = 1e-4 if logits.dtype == torch.float32 else 1e-9
    z = logits.clone().requires_grad_(grad)
    lp, marg = carry_over(z, y, sub)
    lp2 = carry_over_log_probs(z, y, sub)
    for got in (lp.detach(), lp2.detach()):
        assert torch.equal(torch.isinf(got), torch.from_numpy(np.isinf(lp_bf)))  # same support
        assert np.allclose(got.double().exp().numpy(), np.exp(lp_bf), atol=atol)
    # marginals: probabilities agree (the library clamps impossible values at log(tiny))
    assert np.allclose(marg.detach().double().exp().numpy(), np.exp(marg_bf), atol=atol)
    m2 = digit_log_marginals(lp.detach(), sub)
    assert np.allclose(m2.double().exp().numpy(), np.exp(marg_bf), atol=atol)


def _bf16_case():
    sub = SubTokenizer(50, 2)
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(2, 3, 50, generator=g) * 4).bfloat16()
    y = sub.encode(torch.randint(0, 50, (2, 3), generator=g))
    y[:, ::3] = sub.mask_id  # partially seen and fully masked tokens
    y[0] = sub.mask_id
    lp_bf, _ = brute_force_carry_over(z.float(), y, sub)  # the bf16 values, normalised exactly
    return sub, z, y, lp_bf


def _max_log_error(got, lp_bf):
    finite = np.isfinite(lp_bf)
    return float(np.abs(got.double().numpy()[finite] - lp_bf[finite]).max())


def test_bfloat16_logits_are_normalised_in_float32_by_carry_over():
    sub, z, y, lp_bf = _bf16_case()
    assert _max_log_error(carry_over(z, y, sub)[0], lp_bf) < 1e-4  # bf16 arithmetic would err ~3e-2


def test_bfloat16_logits_are_normalised_in_float32_by_carry_over_log_probs():
    sub, z, y, lp_bf = _bf16_case()
    assert _max_log_error(carry_over_log_probs(z, y, sub), lp_bf) < 1e-4
