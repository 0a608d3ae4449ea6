"""The sampler's law at GPT-2's vocabulary (C = 50257, ℓ = 2, b = 225), where the draw works per token
on the box of classes that agree with the seen digits (issue 20): chi-square of the drawn classes
against the exact carry-over probabilities, written out with numpy over all C classes (independent of
the sampler's code), on a fully masked token and on a token whose top digit is fixed."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from mdm_prime import SubTokenizer
from mdm_prime.sampling import Condition, sample

C = 50257
SUB = SubTokenizer(C, 2)
L = 256  # tokens per sample() call: even positions fully masked, odd ones with digit 0 fixed
TOP_DIGIT = 3  # the fixed top digit: classes 675..899 (a box of b = 225 classes)
P_MIN = 1e-3


def _logits(seed: int) -> torch.Tensor:
    """Two rows (the masked token's, the partly seen token's) with a few dozen likely classes, some of
    them in the box of the fixed digit, and a long tail over all 50257."""
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(2, C, generator=g, dtype=torch.float64)
    hot = torch.randint(C, (2, 30), generator=g)
    z.scatter_add_(1, hot, 9.0 + torch.rand(2, 30, generator=g, dtype=torch.float64))
    box = torch.arange(TOP_DIGIT * 225, (TOP_DIGIT + 1) * 225)
    z[1, box[torch.randperm(225, generator=g)[:20]]] += 6.0
    return z.float()


def _expected(z: torch.Tensor, temperature: float, top_p: float, allowed=None) -> np.ndarray:
    """Carry-over (classes outside ``allowed`` removed), temperature, then top-p, in float64 numpy."""
    z = z.double().numpy() / temperature
    if allowed is not None:
        z = np.where(allowed, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    before = np.cumsum(p[order]) - p[order]
    keep = np.zeros(C, dtype=bool)
    keep[order[before < top_p]] = True
    p = np.where(keep, p, 0.0)
    return p / p.sum()


def _pvalue(drawn: np.ndarray, expected: np.ndarray) -> float:
    """Chi-square over the classes expected at least 5 times each, the rest pooled into one cell; 0.0
    when a class of zero probability was drawn."""
    counts = np.bincount(drawn, minlength=C).astype(np.float64)
    if counts[expected == 0].any():
        return 0.0
    exp_counts = expected * counts.sum()
    big = exp_counts >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(exp_counts[big], exp_counts[~big].sum())
    if exp[-1] < 5:  # too little mass to pool: fold it into the largest cell
        i = int(np.argmax(exp[:-1]))
        obs[i] += obs[-1]
        exp[i] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs, exp).pvalue


def _draw(z, calls: int, steps: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Classes drawn at the even (fully masked) and odd (top digit fixed) positions, ``calls`` calls of
    ``L`` tokens."""
    logits = z[torch.arange(L) % 2].unsqueeze(0)

    def model(y, t):
        return logits.expand(y.shape[0], -1, -1)

    fixed = torch.zeros(1, 2 * L, dtype=torch.bool)
    fixed[0, 2::4] = True  # digit 0 of the odd tokens
    cond = Condition(fixed, torch.where(fixed, TOP_DIGIT, 0))
    out = [
        sample(model, SUB, steps=steps, condition=cond, seed=s, time_conditioned=False, **kw).tokens[0]
        for s in range(calls)
    ]
    tokens = torch.stack(out).numpy()
    return tokens[:, 0::2].ravel(), tokens[:, 1::2].ravel()


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.8, 0.9)])
def test_one_step_draws_the_carry_over_distribution_at_c_50257(temperature, top_p):
    """T = 1: every digit of a token comes from one draw of its processed carry-over distribution."""
    z = _logits(seed=0)
    masked, partial = _draw(z, calls=12, steps=1, temperature=temperature, top_p=top_p)
    in_box = SUB.digit_table[:, 0].numpy() == TOP_DIGIT
    assert (SUB.digit_table[torch.as_tensor(partial), 0] == TOP_DIGIT).all()
    assert _pvalue(masked, _expected(z[0], temperature, top_p)) > P_MIN
    assert _pvalue(partial, _expected(z[1], temperature, top_p, in_box)) > P_MIN
    # power: the same draws are far from the distribution without carry-over / without top-p
    assert _pvalue(partial, _expected(z[1], temperature, 1.0)) < 1e-6
    if top_p < 1.0:
        assert _pvalue(masked, _expected(z[0], temperature, 1.0)) < 1e-6


def test_many_steps_reveal_digits_consistently_at_c_50257():
    """T = 4: digits revealed at different steps, the later ones drawn from the box of the earlier
    ones; at τ = 1, top-p = 1 the class of each token still has the carry-over distribution."""
    z = _logits(seed=1)
    masked, partial = _draw(z, calls=12, steps=4)
    in_box = SUB.digit_table[:, 0].numpy() == TOP_DIGIT
    assert _pvalue(masked, _expected(z[0], 1.0, 1.0)) > P_MIN
    assert _pvalue(partial, _expected(z[1], 1.0, 1.0, in_box)) > P_MIN
