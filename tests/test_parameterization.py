"""Carry-over parameterization (docs/method.md §3): log-probs, digit marginals and the NLLs built on them,
against brute-force per-token loops over ``sub.digit_table``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mdm_prime.parameterization.fast as P
from mdm_prime import SubTokenizer
from mdm_prime.objectives import digit_nll, token_and_digit_nll, token_nll
from mdm_prime.parameterization import (
    carry_over,
    carry_over_log_probs,
    carry_over_logits,
    carry_over_nll,
    digit_log_marginals,
    reference,
)


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    # tiny row blocks so that both dense strategies (whole block / gathered rows) run on small inputs
    monkeypatch.setattr(P, "CHUNK_ROWS", 3)


def _sub(c, ell, base=None, permuted=False, seed=0):
    perm = torch.randperm(c, generator=torch.Generator().manual_seed(seed)) if permuted else None
    return SubTokenizer(c, ell, base=base, permutation=perm)


def _draw(sub, b=3, l=7, seed=0, dtype=torch.float64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, sub.num_classes, (b, l), generator=g)
    y0 = sub.encode(x0)
    t = torch.rand(b, 1, generator=g)
    y_t = torch.where(torch.rand(y0.shape, generator=g) < t, torch.full_like(y0, sub.mask_id), y0)
    y_t[0, : sub.length] = sub.mask_id  # at least one fully masked token
    y_t[0, sub.length : 2 * sub.length] = y0[0, sub.length : 2 * sub.length]  # and one fully seen
    logits = (torch.randn(b, l, sub.num_classes, generator=g) * scale).to(dtype)
    return logits, y_t, x0


def _brute_log_probs(logits, y_t, sub):
    """Per token: consistent classes by a Python loop over the digit table."""
    b, l, c = logits.shape
    y = y_t.view(b, l, sub.length)
    out = torch.full(logits.shape, float("-inf"), dtype=torch.float64)
    for i in range(b):
        for k in range(l):
            ok = [
                cls
                for cls in range(c)
                if all(
                    int(y[i, k, j]) in (sub.mask_id, int(sub.digit_table[cls, j])) for j in range(sub.length)
                )
            ]
            z = logits[i, k, ok].double()
            out[i, k, ok] = z - torch.logsumexp(z, 0)
    return out


def _brute_marginals(log_probs, sub):
    p = log_probs.double().exp()
    out = torch.zeros(*p.shape[:-1], sub.length, sub.base, dtype=torch.float64)
    for cls in range(sub.num_classes):
        for j in range(sub.length):
            out[..., j, int(sub.digit_table[cls, j])] += p[..., cls]
    return out


CASES = [  # (C, ℓ, base): b^ℓ > C and b^ℓ = C, ℓ ∈ {1, 2, 3, 4}
    (7, 1, None),
    (10, 2, None),
    (16, 2, None),
    (27, 3, None),
    (20, 3, None),
    (16, 4, None),
    (13, 4, 2),
    (30, 4, None),
]


@pytest.mark.parametrize("c,ell,base", CASES)
@pytest.mark.parametrize("permuted", [False, True])
def test_log_probs_and_marginals_match_brute_force(c, ell, base, permuted):
    sub = _sub(c, ell, base, permuted)
    logits, y_t, _ = _draw(sub)
    ref = _brute_log_probs(logits, y_t, sub)
    lp, marg = carry_over(logits, y_t, sub)
    assert lp.dtype == torch.float64 and marg.dtype == torch.float64
    assert torch.equal(torch.isinf(lp), torch.isinf(ref))  # zero mass exactly on inconsistent classes
    fin = torch.isfinite(ref)
    torch.testing.assert_close(lp[fin], ref[fin], rtol=0, atol=1e-12)
    torch.testing.assert_close(carry_over_log_probs(logits, y_t, sub), lp, rtol=0, atol=1e-12)
    ref_m = _brute_marginals(ref, sub)
    torch.testing.assert_close(marg.exp(), ref_m, rtol=0, atol=1e-12)
    torch.testing.assert_close(marg.exp().sum(-1), torch.ones(marg.shape[:-1], dtype=torch.float64))
    if ell > 1:
        torch.testing.assert_close(digit_log_marginals(lp, sub), marg, rtol=0, atol=1e-12)
    # the autograd path agrees with the fast path
    lp_g, marg_g = carry_over(logits.clone().requires_grad_(), y_t, sub)
    torch.testing.assert_close(lp_g.detach()[fin], lp[fin], rtol=0, atol=1e-12)
    torch.testing.assert_close(marg_g.detach().exp(), marg.exp(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("c,ell,base", CASES)
def test_unmasked_masked_and_partial_tokens(c, ell, base):
    sub = _sub(c, ell, base)
    logits, y_t, x0 = _draw(sub, dtype=torch.float32)
    lp, _ = carry_over(logits, y_t, sub)
    # fully seen token (0, 1): exactly 0 on its value, -inf elsewhere
    v = int(x0[0, 1])
    assert lp[0, 1, v].item() == 0.0
    others = torch.cat([lp[0, 1, :v], lp[0, 1, v + 1 :]])
    assert torch.all(others == float("-inf"))
    # fully masked token (0, 0): plain log_softmax
    torch.testing.assert_close(lp[0, 0], torch.log_softmax(logits[0, 0], -1))
    # partially seen: proportional to exp(logits) on the consistent set (via the brute force)
    ref = _brute_log_probs(logits, y_t, sub)
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(lp), fin)
    torch.testing.assert_close(lp[fin].double(), ref[fin], rtol=0, atol=1e-5)
    # the additive-mask formulation gives the same support
    assert torch.equal(torch.isfinite(carry_over_logits(logits, y_t, sub)), fin)


def test_single_consistent_class_and_extreme_logits():
    sub = _sub(16, 2)  # b = 4
    x0 = torch.tensor([[5, 9, 15, 0]])
    y_t = sub.encode(x0)
    y_t[0, 2] = sub.mask_id  # token 1: first digit hidden
    y_t[0, 6:] = sub.mask_id  # token 3: fully masked
    logits = torch.full((1, 4, 16), -1e4)
    logits[..., ::2] = 1e4
    lp, marg = carry_over(logits, y_t, sub)
    assert not torch.isnan(lp).any() and not torch.isnan(marg).any()
    assert lp[0, 0, 5].item() == 0.0 and lp[0, 2, 15].item() == 0.0  # odd class against +1e4 logits
    assert torch.isfinite(marg).all()
    tok, dig = token_and_digit_nll(logits, y_t, x0, sub)
    assert torch.isfinite(tok).all() and torch.isfinite(dig).all()
    assert tok[0, 0].item() == 0.0 and tok[0, 2].item() == 0.0
    assert torch.all(dig[0, 0] == 0) and torch.all(dig[0, 2] == 0)
    # digit_nll of an (almost) impossible value is capped at -log(tiny), never inf
    assert dig.max().item() <= -math.log(torch.finfo(torch.float32).tiny) + 1e-3
    # a box with exactly one valid code: C = 10, ℓ = 2, b = 4: first digit 2 leaves codes 8, 9
    sub = _sub(10, 2)
    y_t = torch.tensor([[2, sub.mask_id]])
    lp, marg = carry_over(torch.tensor([[[0.0] * 8 + [1e4, -1e4]]]), y_t, sub)
    assert lp[0, 0, 8].item() == 0.0 and not torch.isnan(lp).any()


def test_dtypes():
    sub = _sub(30, 2, permuted=True)
    logits, y_t, x0 = _draw(sub, dtype=torch.float64)
    lp, marg = carry_over(logits, y_t, sub)
    assert lp.dtype == marg.dtype == torch.float64
    assert token_nll(logits, y_t, x0, sub).dtype == torch.float64
    assert digit_nll(logits, y_t, x0, sub).dtype == torch.float64
    lp16, marg16 = carry_over(logits.bfloat16(), y_t, sub)
    assert lp16.dtype == marg16.dtype == torch.float32
    ref, _ = carry_over(logits.bfloat16().float(), y_t, sub)
    torch.testing.assert_close(lp16, ref)
    assert carry_over_log_probs(logits.float(), y_t, sub).dtype == torch.float32
    assert token_nll(logits.half(), y_t, x0, sub).dtype == torch.float32


def _brute_nll(logits, y_t, x0, sub):
    ref = _brute_log_probs(logits, y_t, sub)
    b, l = x0.shape
    tok = -ref.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    marg = _brute_marginals(ref, sub)
    y0 = sub.encode(x0).view(b, l, sub.length)
    hidden = y_t.view(b, l, sub.length) == sub.mask_id
    dig = torch.where(hidden, -marg.gather(-1, y0.unsqueeze(-1)).squeeze(-1).log(), torch.zeros(()))
    return tok, dig


@pytest.mark.parametrize("c,ell,base", CASES)
@pytest.mark.parametrize("permuted", [False, True])
def test_nll_match_brute_force(c, ell, base, permuted):
    sub = _sub(c, ell, base, permuted, seed=1)
    logits, y_t, x0 = _draw(sub, seed=2)
    tok_ref, dig_ref = _brute_nll(logits, y_t, x0, sub)
    tok, dig = token_nll(logits, y_t, x0, sub), digit_nll(logits, y_t, x0, sub)
    torch.testing.assert_close(tok, tok_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(dig, dig_ref, rtol=0, atol=1e-10)
    both = token_and_digit_nll(logits, y_t, x0, sub)
    torch.testing.assert_close(both[0], tok_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(both[1], dig_ref, rtol=0, atol=1e-10)
    seen = y_t.view(*x0.shape, sub.length) != sub.mask_id
    assert torch.all(dig[seen] == 0) and torch.all(tok[seen.all(-1)] == 0)
    # gradients: the NLLs are differentiable and agree with the brute-force softmax formulation
    z = logits.clone().requires_grad_()
    (token_nll(z, y_t, x0, sub).sum() + digit_nll(z, y_t, x0, sub).sum()).backward()
    z2 = logits.clone().requires_grad_()
    lp, marg = carry_over(z2, y_t, sub)
    y0 = sub.encode(x0).view(*x0.shape, sub.length)
    hidden = ~seen
    loss = -lp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)[~seen.all(-1)].sum()
    loss = loss - marg.gather(-1, y0.unsqueeze(-1)).squeeze(-1)[hidden].sum()
    loss.backward()
    torch.testing.assert_close(z.grad, z2.grad, rtol=0, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    c=st.integers(2, 40),
    ell=st.integers(1, 4),
    extra_base=st.integers(0, 2),
    permuted=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_property_random_shapes(c, ell, extra_base, permuted, seed):
    from mdm_prime.subtokenizer import default_base

    base = default_base(c, ell) + (extra_base if ell > 1 else 0)
    sub = _sub(c, ell, base, permuted, seed)
    logits, y_t, x0 = _draw(sub, b=2, l=5, seed=seed)
    ref = _brute_log_probs(logits, y_t, sub)
    lp, marg = carry_over(logits, y_t, sub)
    fin = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(lp), fin)
    torch.testing.assert_close(lp[fin], ref[fin], rtol=0, atol=1e-11)
    torch.testing.assert_close(marg.exp(), _brute_marginals(ref, sub), rtol=0, atol=1e-11)
    tok_ref, dig_ref = _brute_nll(logits, y_t, x0, sub)
    tok, dig = token_and_digit_nll(logits, y_t, x0, sub)
    torch.testing.assert_close(tok, tok_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(dig, dig_ref, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# fast path vs an independent float64 numpy brute force (random shapes, ℓ ∈ {1..4}, invalid codes,
# permutations, all-masked / all-seen / mixed masks, both exp strategies of the dense path)


def _np_digits(c, ell, base, perm):
    codes = np.arange(c) if perm is None else np.asarray(perm)
    return np.stack([(codes // base ** (ell - 1 - j)) % base for j in range(ell)], 1)  # (C, ℓ)


def _np_brute(logits, y, x0, digits, base, mask_id):
    """float64 numpy: log-probs (B, L, C), marginals (B, L, ℓ, b), token NLL, digit NLL (uncapped)."""
    bsz, n, c = logits.shape
    ell = digits.shape[1]
    lp = np.full((bsz, n, c), -np.inf)
    marg = np.zeros((bsz, n, ell, base))
    tok = np.zeros((bsz, n))
    dig = np.zeros((bsz, n, ell))
    for i in range(bsz):
        for k in range(n):
            ok = np.all((y[i, k] == mask_id) | (digits == y[i, k]), axis=1)
            zz = logits[i, k, ok]
            mx = zz.max()
            lp[i, k, ok] = zz - (mx + np.log(np.exp(zz - mx).sum()))
            p = np.exp(lp[i, k])
            for j in range(ell):
                for v in range(base):
                    marg[i, k, j, v] = p[digits[:, j] == v].sum()
            if not np.all(y[i, k] != mask_id):
                tok[i, k] = -lp[i, k, x0[i, k]]
            for j in range(ell):
                if y[i, k, j] == mask_id:
                    dig[i, k, j] = -np.log(marg[i, k, j, digits[x0[i, k], j]])
    return lp, marg, tok, dig


def _random_case(seed, mode):
    rng = np.random.default_rng(seed)
    ell = int(rng.integers(1, 5))
    c = int(rng.integers(2, 41))
    from mdm_prime.subtokenizer import default_base

    base = default_base(c, ell) + (int(rng.integers(0, 3)) if ell > 1 else 0)  # b^ℓ > C: invalid codes
    perm = rng.permutation(c) if rng.random() < 0.5 else None
    sub = SubTokenizer(c, ell, base=base, permutation=None if perm is None else torch.as_tensor(perm))
    bsz, n = int(rng.integers(1, 4)), int(rng.integers(1, 7))
    x0 = rng.integers(0, c, (bsz, n))
    digits = _np_digits(c, ell, base, perm)
    y = digits[x0].copy()  # (B, L, ℓ)
    if mode == "all masked":
        y[:] = base
    elif mode == "mixed":
        y[rng.random(y.shape) < rng.random()] = base
    logits = rng.normal(size=(bsz, n, c)) * 3
    return sub, logits, y, x0, digits


MODES = ["mixed", "all masked", "all seen"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("offset", [0.0, -300.0, 120.0])  # unshifted exp / shift needed (under-, overflow)
def test_fast_path_matches_numpy_brute_force(seed, mode, offset):
    sub, logits, y, x0, digits = _random_case(seed, mode)
    _assert_fast_path_matches_numpy(sub, logits + offset, y, x0, digits, tol64=1e-10)


def _assert_fast_path_matches_numpy(sub, logits, y, x0, digits, tol64):
    """Every fast entry point, in float64 (``tol64``) and float32, against :func:`_np_brute`."""
    lp_ref, marg_ref, tok_ref, dig_ref = _np_brute(logits, y, x0, digits, sub.base, sub.mask_id)
    y_t, x0_t = torch.as_tensor(y).flatten(1), torch.as_tensor(x0)
    for dtype, tol in ((torch.float64, tol64), (torch.float32, 2e-4)):
        z = torch.as_tensor(logits).to(dtype)
        lp, marg = carry_over(z, y_t, sub)
        fin = np.isfinite(lp_ref)
        assert np.array_equal(torch.isfinite(lp).numpy(), fin)
        np.testing.assert_allclose(lp.double().numpy()[fin], lp_ref[fin], rtol=0, atol=tol)
        np.testing.assert_allclose(marg.double().exp().numpy(), marg_ref, rtol=0, atol=tol)
        np.testing.assert_allclose(
            carry_over_log_probs(z, y_t, sub).double().numpy()[fin], lp_ref[fin], atol=tol
        )
        tok, dig = carry_over_nll(z, y_t, x0_t, sub)
        np.testing.assert_allclose(tok.double().numpy(), tok_ref, rtol=0, atol=tol * 10)
        np.testing.assert_allclose(
            dig.double().numpy(), dig_ref, rtol=1e-5 if dtype == torch.float32 else 0, atol=tol * 10
        )


def _masked_pick(log_p, index, keep):
    """``-log_p[..., index]`` where ``keep``, else 0."""
    return torch.where(keep, -log_p.gather(-1, index[..., None]).squeeze(-1), 0.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(10))
def test_nll_gradient_matches_float64_reference_autograd(seed, mode):
    sub, logits, y, x0, _ = _random_case(100 + seed, mode)
    y_t = torch.as_tensor(y).flatten(1)
    x0_t = torch.as_tensor(x0)
    g = torch.Generator().manual_seed(seed)
    w_tok = torch.randn(x0.shape, generator=g, dtype=torch.float64)  # arbitrary upstream gradients
    w_dig = torch.randn(*x0.shape, sub.length, generator=g, dtype=torch.float64)
    hidden = torch.as_tensor(y == sub.mask_id)
    # reference: float64 autograd through the readable formulation
    z_ref = torch.as_tensor(logits).requires_grad_()
    lp = reference.carry_over_log_probs(z_ref, y_t, sub)
    marg = reference.digit_log_marginals(lp, sub)
    y0 = sub.encode(x0_t).view(*x0.shape, sub.length)
    tok_r, dig_r = _masked_pick(lp, x0_t, hidden.any(-1)), _masked_pick(marg, y0, hidden)
    ((tok_r * w_tok).sum() + (dig_r * w_dig).sum()).backward()
    for tokens, digits in ((True, True), (True, False), (False, True)):
        z = torch.as_tensor(logits).requires_grad_()
        tok, dig = carry_over_nll(z, y_t, x0_t, sub, tokens=tokens, digits=digits)
        loss = sum(((tok * w_tok).sum(),) if tokens else ()) + sum(((dig * w_dig).sum(),) if digits else ())
        loss.backward()
        zr = torch.as_tensor(logits).requires_grad_()
        lp_r = reference.carry_over_log_probs(zr, y_t, sub)
        want = 0.0
        if tokens:
            want = want + (_masked_pick(lp_r, x0_t, hidden.any(-1)) * w_tok).sum()
        if digits:
            want = want + (_masked_pick(reference.digit_log_marginals(lp_r, sub), y0, hidden) * w_dig).sum()
        want.backward()
        torch.testing.assert_close(z.grad, zr.grad, rtol=0, atol=1e-10)
    # float32 logits: gradient in float32, close to the float64 reference
    z32 = torch.as_tensor(logits).float().requires_grad_()
    tok, dig = carry_over_nll(z32, y_t, x0_t, sub)
    ((tok * w_tok.float()).sum() + (dig * w_dig.float()).sum()).backward()
    assert z32.grad.dtype == torch.float32
    torch.testing.assert_close(z32.grad.double(), z_ref.grad, rtol=0, atol=1e-5)


def test_half_precision_logits_are_normalised_in_float32():
    sub = _sub(30, 2, permuted=True)
    logits, y_t, x0 = _draw(sub, dtype=torch.float64, scale=8.0)
    for dt in (torch.bfloat16, torch.float16):
        z = logits.to(dt)
        want = reference.carry_over_log_probs(z.double(), y_t, sub)
        fin = torch.isfinite(want)
        for grad in (False, True):
            got = carry_over_log_probs(z.clone().requires_grad_(grad), y_t, sub)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got.detach().double()[fin], want[fin], rtol=0, atol=1e-5)
        tok, _ = carry_over_nll(z.clone().requires_grad_(), y_t, x0, sub)
        assert tok.dtype == torch.float32


def test_layout_cache_is_owned_by_the_module():
    sub = _sub(27, 3, permuted=True, seed=3)
    twin = _sub(27, 3, permuted=True, seed=3)
    other = _sub(27, 3, permuted=True, seed=4)
    logits, y_t, x0 = _draw(sub)  # (encode caches the sub-tokenizer's own tables)
    before = set(vars(sub))
    assert P.layout(sub, "cpu") is P.layout(twin, "cpu")  # same tables, same entry
    assert P.layout(other, "cpu") is not P.layout(sub, "cpu")
    carry_over(logits, y_t, sub)
    carry_over_nll(logits, y_t, x0, sub)
    assert set(vars(sub)) == before  # nothing cached on the sub-tokenizer
    assert torch.equal(P.layout(other, "cpu").coc, other.class_of_code)


# ----------------------------------------------------------------------------- reference helpers
# (written from the mutmut survivors of parameterization/reference.py, docs/reliability.md §6)


@pytest.mark.parametrize("permuted", [False, True])
def test_to_code_space_puts_each_class_at_its_code_and_fills_the_rest(permuted):
    """C = 5, b = 3, ℓ = 2: 9 codes, 4 of them invalid; class c sits at code c (or at the code the
    permutation gives it: the code whose digits ``encode`` writes for c)."""
    from mdm_prime.parameterization import to_code_space

    sub = SubTokenizer(5, 2, permutation=[3, 0, 4, 1, 2] if permuted else None)
    values = torch.tensor([[10.0, 11.0, 12.0, 13.0, 14.0]])
    out = to_code_space(values, sub, fill=-7.0)
    digits = sub.encode(torch.arange(5)).view(5, 2)
    codes = (digits[:, 0] * 3 + digits[:, 1]).tolist()
    expected = [-7.0] * 9
    for c, code in enumerate(codes):
        expected[code] = 10.0 + c
    assert out.tolist() == [expected]


@pytest.mark.parametrize("ell", [1, 2, 3])
@pytest.mark.parametrize("lead", [(), (4,), (2, 3), (2, 1, 3)])
def test_digit_marginals_for_any_leading_shape(lead, ell):
    """``(..., C)`` → ``(..., ℓ, b)`` for 0 to 3 leading axes, against a sum over classes by digit."""
    sub = SubTokenizer(7, ell)
    g = torch.Generator().manual_seed(len(lead) + ell)
    probs = torch.softmax(torch.randn(*lead, 7, generator=g, dtype=torch.float64), -1)
    digits = sub.encode(torch.arange(7)).view(7, ell)
    expected = torch.zeros(*lead, ell, sub.base, dtype=torch.float64)
    for c in range(7):
        for j in range(ell):
            expected[..., j, digits[c, j]] += probs[..., c]
    from mdm_prime.parameterization import digit_marginals_from_probs

    got = digit_marginals_from_probs(probs, sub)
    assert got.shape == (*lead, ell, sub.base)
    assert torch.allclose(got, expected, atol=1e-12)


def test_reference_validation_messages():
    from mdm_prime.parameterization import carry_over_logits
    from mdm_prime.parameterization.reference import check_logits, split_tokens

    sub = SubTokenizer(5, 2)
    for bad, dtype in (
        (torch.zeros(1, 4, dtype=torch.bool), "torch.bool"),
        (torch.zeros(1, 4), "torch.float32"),
    ):
        with pytest.raises(TypeError, match=f"y_t must be an integer tensor, got dtype {dtype}$"):
            split_tokens(bad, sub)
    with pytest.raises(ValueError, match=r"y_t must have shape \(B, L·ℓ\) with ℓ=2, got \(1, 2, 4\)$"):
        split_tokens(torch.zeros(1, 2, 4, dtype=torch.long), sub)
    with pytest.raises(TypeError, match=r"logits must be a floating-point tensor, got torch\.int64$"):
        check_logits(torch.zeros(1, 2, 5, dtype=torch.long), sub)
    with pytest.raises(TypeError, match=r"logits must be a floating-point tensor, got list$"):
        check_logits([0.0], sub)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, L, C=5\), got \(2, 5\)$"):
        check_logits(torch.zeros(2, 5), sub)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, L, C=5\), got \(1, 2, 4\)$"):
        check_logits(torch.zeros(1, 2, 4), sub)
    with pytest.raises(ValueError, match="y_t holds 2 tokens of ℓ=2 digits but logits have 3 positions"):
        carry_over_logits(torch.zeros(1, 3, 5), torch.zeros(1, 4, dtype=torch.long), sub)


# ----------------------------------------------------------------------------- fast-path contract
# (written from the mutmut survivors of parameterization/fast.py, docs/reliability.md §6)


def _no_grad_inputs(c=10, ell=2, l=3):
    sub = _sub(c, ell)
    logits, y_t, x0 = _draw(sub, b=1, l=l)
    return sub, logits, y_t, x0


@pytest.mark.parametrize("tokens_in_y", [2, 4])
def test_fast_entry_points_check_the_token_count(tokens_in_y):
    """Every no-autograd entry point refuses ``y_t`` whose token count is not the logits' ``L``
    (a shorter ``y_t`` would otherwise leave rows of the output unwritten)."""
    sub, logits, _, x0 = _no_grad_inputs(l=3)
    y_t = torch.full((1, tokens_in_y * 2), sub.mask_id)
    msg = f"y_t holds {tokens_in_y} tokens of ℓ=2 digits but logits have 3 positions"
    for call in (
        lambda: carry_over_log_probs(logits, y_t, sub),
        lambda: carry_over(logits, y_t, sub),
        lambda: carry_over_nll(logits, y_t, x0, sub),
        lambda: carry_over_nll(logits, y_t, x0, sub, tokens=False),
    ):
        with pytest.raises(ValueError, match=msg):
            call()


def test_carry_over_nll_checks_x0():
    sub, logits, y_t, x0 = _no_grad_inputs(l=3)
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, L\) = \(1, 3\), got \(1, 2\)$"):
        carry_over_nll(logits, y_t, x0[:, :2], sub)
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, L\) = \(1, 3\), got list$"):
        carry_over_nll(logits, y_t, x0.tolist(), sub)


def test_carry_over_nll_returns_none_for_the_part_not_asked_for():
    sub, logits, y_t, x0 = _no_grad_inputs()
    tok, dig = carry_over_nll(logits, y_t, x0, sub, tokens=False)
    assert tok is None and dig.shape == (1, 3, 2)
    tok, dig = carry_over_nll(logits, y_t, x0, sub, digits=False)
    assert dig is None and tok.shape == (1, 3)


@pytest.mark.parametrize("permuted", [False, True])
def test_single_digit_marginals_are_exact_with_autograd(permuted):
    """ℓ = 1: the marginal is the token distribution in code order, ``-inf`` where impossible (not
    clamped at ``log(tiny)``), with and without autograd."""
    sub = _sub(7, 1, permuted=permuted)
    logits, y_t, _ = _draw(sub, b=2, l=4)
    _, marg = carry_over(logits, y_t, sub)
    _, marg_g = carry_over(logits.clone().requires_grad_(), y_t, sub)
    seen = y_t.view(2, 4) != sub.mask_id
    assert seen.any() and (~seen).any()
    assert (marg[seen].isinf().sum(-1) == 6).all()  # one-hot: six values impossible
    assert torch.equal(marg_g.detach(), marg)


def test_digit_log_marginals_is_differentiable_and_checks_its_input():
    sub = _sub(10, 2)
    logits, y_t, _ = _draw(sub)
    lp = reference.carry_over_log_probs(logits, y_t, sub).detach()
    w = torch.randn(
        *lp.shape[:2], 2, sub.base, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    got = lp.clone().requires_grad_()
    (digit_log_marginals(got, sub).clamp_min(-50) * w).sum().backward()
    want = lp.clone().requires_grad_()
    probs = want.exp()  # independent: marginals summed by hand over the digit table
    marg = torch.stack(
        [
            torch.stack([probs[..., sub.digit_table[:, j] == v].sum(-1) for v in range(sub.base)], -1)
            for j in range(2)
        ],
        -2,
    )
    (marg.clamp_min(torch.finfo(torch.float64).tiny).log().clamp_min(-50) * w).sum().backward()
    torch.testing.assert_close(got.grad, want.grad, rtol=0, atol=1e-12)
    for bad, msg in (
        (torch.tensor(0.0), r"log_probs must have shape \(\.\.\., C=10\), got \(\)$"),
        (torch.zeros(2, 9), r"log_probs must have shape \(\.\.\., C=10\), got \(2, 9\)$"),
    ):
        with pytest.raises(ValueError, match=msg):
            digit_log_marginals(bad, sub)
        with pytest.raises(ValueError, match=msg):
            reference.digit_log_marginals(bad, sub)
    with pytest.raises(TypeError, match=r"log_probs must be a floating-point tensor, got torch\.int64$"):
        digit_log_marginals(torch.zeros(2, 10, dtype=torch.long), sub)
    with pytest.raises(ValueError, match=r"probs must have shape \(\.\.\., C=10\), got \(\)$"):
        reference.digit_marginals_from_probs(torch.tensor(1.0), sub)
    with pytest.raises(ValueError, match=r"values must have shape \(\.\.\., C=10\), got \(4,\)$"):
        reference.to_code_space(torch.zeros(4), sub, 0.0)


@pytest.mark.parametrize("chunk", [3, 16])
@pytest.mark.parametrize("c,ell", [(2, 1), (5, 2), (40, 3)])
def test_fast_paths_emit_no_warnings(monkeypatch, chunk, c, ell):
    """Scratch buffers fit every block (a wrong shape would make torch resize an ``out=`` tensor and
    warn): row counts that are and are not multiples of the block, whole and gathered blocks,
    fewer classes than block rows."""
    import warnings

    monkeypatch.setattr(P, "CHUNK_ROWS", chunk)
    sub = _sub(c, ell)
    logits, y_t, x0 = _draw(sub, b=5, l=7)
    y_t = y_t.clone()
    y_t[1:4] = sub.mask_id  # runs of fully masked rows: blocks computed whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lp, marg = carry_over(logits, y_t, sub)
        tok, dig = carry_over_nll(logits, y_t, x0, sub)
        carry_over_log_probs(logits, y_t, sub)
        if ell > 1:
            dm = digit_log_marginals(lp, sub)
    ref_lp = _brute_log_probs(logits, y_t, sub)
    fin = torch.isfinite(ref_lp)
    torch.testing.assert_close(lp[fin], ref_lp[fin], rtol=0, atol=1e-12)
    if ell > 1:
        torch.testing.assert_close(dm, marg, rtol=0, atol=1e-12)
    keep = (y_t.view(5, 7, ell) == sub.mask_id).any(-1)
    want_tok = torch.where(keep, -ref_lp.gather(-1, x0[..., None]).squeeze(-1), 0.0)
    torch.testing.assert_close(tok, want_tok, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["mixed", "all masked"])
@pytest.mark.parametrize("seed", range(6))
def test_fast_path_with_rows_of_very_different_scales(seed, mode):
    """Rows of one block whose logits sit 1,000 nats apart: each row is shifted by its own maximum
    (a block-wide shift would underflow the low rows to ``-inf``)."""
    sub, logits, y, x0, digits = _random_case(200 + seed, mode)
    rng = np.random.default_rng(seed)
    logits = logits + rng.choice([-700.0, 0.0, 300.0], size=logits.shape[:2])[..., None]
    _assert_fast_path_matches_numpy(sub, logits, y, x0, digits, tol64=1e-9)


@pytest.mark.parametrize("ell", [1, 2])
def test_half_precision_nll_is_computed_in_float32(ell):
    """bf16/fp16 logits: the NLLs equal float32 NLLs of the same (upcast) logits to float32 rounding,
    not to half precision (every path upcasts before ``exp``)."""
    sub = _sub(64, ell)
    logits, y_t, x0 = _draw(sub, b=4, l=9, scale=6.0)
    y_t = y_t.clone()
    y_t[1:] = sub.mask_id  # mostly fully masked tokens: the dense statistics
    for dt in (torch.bfloat16, torch.float16):
        z = logits.to(dt)
        want_tok, want_dig = carry_over_nll(z.double(), y_t, x0, sub)
        tok, dig = carry_over_nll(z, y_t, x0, sub)
        assert tok.dtype == dig.dtype == torch.float32
        torch.testing.assert_close(tok.double(), want_tok, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(dig.double(), want_dig, rtol=1e-6, atol=1e-5)


def test_layout_cache_follows_each_permutation_when_ids_are_reused():
    """Sub-tokenizers created and dropped in turn (CPython reuses the ids of dead tensors): each gets
    the layout of its own permutation, never a dead one's. The reuse is also staged: a memo entry
    left at this tensor's id by a dead tensor of another permutation."""
    import weakref

    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        sub = SubTokenizer(27, 3, permutation=torch.randperm(27, generator=g))
        assert torch.equal(P.layout(sub, "cpu").coc, sub.class_of_code)
        del sub
    sub, other = _sub(27, 3, permuted=True, seed=5), _sub(27, 3, permuted=True, seed=6)
    dead = other.code_of_class.clone()
    stale = (weakref.ref(dead), P._fingerprint(other.code_of_class))
    del dead
    assert stale[0]() is None
    P.clear_layout_cache()
    P._fingerprints[id(sub.code_of_class)] = stale
    assert torch.equal(P.layout(sub, "cpu").coc, sub.class_of_code)


NO_CLASS = r"^y_t holds a token whose seen digits fit no class \(they can only spell codes >= C, which no class has\)$"


@pytest.mark.parametrize("grad", [False, True])
def test_tokens_no_class_fits_are_refused(grad):
    """C = 10, ℓ = 2, b = 4: codes 10..15 have no class. A fully seen token spelling code 11, or a
    token whose first digit 3 is seen (codes 12..15 only), is an error on both paths (not NaN, not
    a write to the last column); digits outside 0..b are refused by name."""
    sub = _sub(10, 2)
    logits = torch.randn(1, 2, 10, requires_grad=grad)
    # alone, after a fully seen token that fits, before a partial token of another pattern that fits,
    # beside a partial token of the same pattern that fits
    for y in ([2, 3, 4, 4], [4, 4, 3, 4], [2, 3, 3, 4], [2, 3, 4, 1], [3, 4, 4, 1], [3, 4, 2, 4]):
        with pytest.raises(ValueError, match=NO_CLASS):
            carry_over(logits, torch.tensor([y]), sub)
        with pytest.raises(ValueError, match=NO_CLASS):
            carry_over_log_probs(logits, torch.tensor([y]), sub)
    for y, bad in (([7, 1, 4, 4], 7), ([0, -1, 4, 4], -1), ([5, 1, 4, 4], 5), ([4, 4, 7, 1], 7)):
        with pytest.raises(
            ValueError, match=rf"^y_t must hold digits 0\.\.3 or the mask id 4, found the value {bad}$"
        ):
            carry_over_log_probs(logits, torch.tensor([y]), sub)
    # a token that partly fits (first digit 2: codes 8..11, classes 8 and 9) is fine
    lp = carry_over_log_probs(logits, torch.tensor([[2, 4, 4, 4]]), sub)
    assert lp[0, 0, :8].isinf().all() and lp[0, 0, 8:].isfinite().all()


def test_carry_over_nll_checks_x0_against_y_t():
    sub = _sub(10, 2)
    logits = torch.randn(1, 2, 10)
    y_t = torch.tensor([[0, 1, 4, 4]])  # token 0 seen as class 1
    tok, _ = carry_over_nll(logits, y_t, torch.tensor([[1, 7]]), sub)
    assert tok[0, 0] == 0.0 and tok[0, 1] > 0
    for x0, err, msg in (
        (
            [[2, 7]],
            ValueError,
            r"^y_t disagrees with x0 at a seen digit: y_t must be x0's digits with some masked$",
        ),
        ([[0, 10]], ValueError, r"^x0 must hold classes 0\.\.9, found 10$"),
        ([[-1, 0]], ValueError, r"^x0 must hold classes 0\.\.9, found -1$"),
        ([[1.0, 7.0]], TypeError, r"^x0 must be an integer tensor of classes, got dtype torch\.float32$"),
        ([[True, False]], TypeError, r"^x0 must be an integer tensor of classes, got dtype torch\.bool$"),
    ):
        with pytest.raises(err, match=msg):
            carry_over_nll(logits, y_t, torch.tensor(x0), sub)


def test_per_class_entry_points_name_a_non_tensor_and_keep_integer_values():
    sub = _sub(5, 2)  # b = 3, 9 codes
    with pytest.raises(TypeError, match=r"^log_probs must be a floating-point tensor, got list$"):
        digit_log_marginals([0.0] * 5, sub)
    with pytest.raises(TypeError, match=r"^probs must be a floating-point tensor, got tuple$"):
        reference.digit_marginals_from_probs((0.2,) * 5, sub)
    out = reference.to_code_space(torch.arange(5), sub, -1)  # integer values are fine here
    assert out.dtype == torch.long and out.tolist() == [0, 1, 2, 3, 4, -1, -1, -1, -1]
