"""Exact oracles for tiny problems (docs/method.md §5), used by the tests to prove the estimators.

The oracle is **independent of the code under test**: it imports nothing from the parameterization,
the objectives or the likelihood estimator. Digits, carry-over and digit marginals are recomputed here
in numpy ``float64`` by brute force — for every token, enumerate the ``C`` classes, keep those whose
digits agree with every seen digit (checked digit by digit), normalise ``exp(logit)`` over them, and
sum class probabilities by digit value. Only the sub-tokenizer's *configuration* (``C``, ``ℓ``, ``b``,
the permutation) is read, and the schedule is used only to hand a time-conditioned model its ``t``.

Everything here enumerates: ``C^L`` sequences, ``2^n`` mask patterns of the ``n = L·ℓ`` digits, or
``2^n`` revealed sets for reveal orders. Keep ``C^L ≤ ~10^4`` and ``n ≤ ~12``.

* :func:`digits_of` — the ``(C, ℓ)`` digit table from first principles (``d_j(c) = ⌊π(c)/b^(ℓ−1−j)⌋ mod b``).
* :func:`brute_force_carry_over` — carry-over token log-probabilities and digit log-marginals.
* :func:`nll_terms` — the unweighted per-sequence ``L_prime`` and ``L_valid`` terms from them.
* :class:`ExactPosterior` — the true posterior of a known joint distribution over sequences, as a
  model callable (time-independent). By default its raw logits are ``log p(x^i = c, y^{−i})``: they
  condition on the *other* tokens' seen digits only and put mass on classes inconsistent with token
  ``i``'s own seen digits, so the exact posterior ``p(x^i = c | y)`` is obtained **only** after
  carry-over (restricting to consistent classes and renormalising). A carry-over that is skipped or
  normalised over the wrong classes gives a wrong answer on it.
* :func:`exact_objectives` — ``L_valid`` and ``L_prime`` of any model for one sequence, summing over
  all mask patterns and integrating over time by Gauss–Legendre quadrature in ``u = 1 − α(t)``
  (exact for time-independent models once the quadrature order exceeds ``n``).
* :func:`exact_digit_objectives` — the same for **per-digit schedules** (docs/method.md §2b): every
  pattern weighted by ``Π_hidden g_j(t) Π_seen α_j(t)``, each hidden digit by ``w_j(t)``, integrated
  over ``t`` by Gauss–Legendre after the substitution ``t = s^q`` (closed forms written out here).
* :func:`reveal_order_nll` — for a *time-independent* model, the exact ``−log p_θ(x)`` of its
  continuous-time generative process (digits revealed one at a time in a uniformly random order,
  each drawn from its marginal), and the order-averaged chain-rule NLL, by dynamic programming over
  subsets (equivalent to enumerating all ``n!`` reveal orders).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "ExactPosterior",
    "brute_force_carry_over",
    "digits_of",
    "exact_digit_objectives",
    "exact_objectives",
    "nll_terms",
    "reveal_order_nll",
    "sequence_entropy",
]

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_NEG = -1e300  # stands for log 0 in float64 logits (finite, so no NaN from -inf - -inf)


def digits_of(sub) -> np.ndarray:
    """``int64[C, ℓ]``: digit ``j`` of class ``c`` is ``⌊π(c) / b^(ℓ−1−j)⌋ mod b`` (most significant
    first), recomputed with Python integers from the sub-tokenizer's configuration."""
    c, ell, b = sub.num_classes, sub.length, sub.base
    perm = list(range(c)) if sub.permutation is None else [int(v) for v in sub.permutation]
    table = np.zeros((c, ell), dtype=np.int64)
    for cls in range(c):
        code = perm[cls]
        for j in range(ell - 1, -1, -1):
            table[cls, j] = code % b
            code //= b
    return table


def _logsumexp(a: np.ndarray) -> float:
    m = float(np.max(a))
    if m == -math.inf:
        return -math.inf
    return m + math.log(float(np.sum(np.exp(a - m))))


def brute_force_carry_over(logits, y_t, sub) -> tuple[np.ndarray, np.ndarray]:
    """Carry-over by enumeration, one token at a time (docs/method.md §3).

    Args:
        logits: ``[B, L, C]`` (tensor or array); y_t: ``[B, L·ℓ]`` digits or ``sub.mask_id``.

    Returns:
        ``log_probs float64[B, L, C]`` (``-inf`` on inconsistent classes) and
        ``digit_log_marginals float64[B, L, ℓ, b]`` (``-inf`` for impossible values), in nats.
    """
    z = np.asarray(torch.as_tensor(logits).detach().double().cpu().numpy(), dtype=np.float64)
    y = np.asarray(torch.as_tensor(y_t).cpu().numpy(), dtype=np.int64)
    bsz, L, c = z.shape
    ell, b, m = sub.length, sub.base, sub.mask_id
    if y.shape != (bsz, L * ell):
        raise ValueError(f"y_t must have shape {(bsz, L * ell)}, got {y.shape}")
    table = digits_of(sub)
    log_probs = np.full((bsz, L, c), -math.inf)
    marg = np.full((bsz, L, ell, b), -math.inf)
    for r in range(bsz):
        for i in range(L):
            seen = y[r, i * ell : (i + 1) * ell]
            consistent = np.ones(c, dtype=bool)
            for j in range(ell):  # digit by digit
                if seen[j] != m:
                    consistent &= table[:, j] == seen[j]
            if not consistent.any():
                raise ValueError(f"token {i} of row {r}: seen digits {seen.tolist()} match no class")
            lse = _logsumexp(z[r, i, consistent])
            log_probs[r, i, consistent] = z[r, i, consistent] - lse
            probs = np.where(consistent, np.exp(log_probs[r, i]), 0.0)
            for j in range(ell):
                for v in range(b):
                    mass = float(probs[table[:, j] == v].sum())
                    marg[r, i, j, v] = math.log(mass) if mass > 0 else -math.inf
    return log_probs, marg


def nll_terms(logits, y_t, x0: np.ndarray, sub) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``L_prime`` and ``L_valid`` terms ``float64[B]``: ``Σ_i −log p(x0^i | y)`` over tokens
    with a hidden digit and ``Σ_{hidden j} −log p(y0^{i,j} | y)``."""
    lp, marg = brute_force_carry_over(logits, y_t, sub)
    y = np.asarray(torch.as_tensor(y_t).cpu().numpy())
    bsz, L, _ = lp.shape
    ell = sub.length
    table = digits_of(sub)
    prime = np.zeros(bsz)
    valid = np.zeros(bsz)
    for r in range(bsz):
        for i in range(L):
            hidden = y[r, i * ell : (i + 1) * ell] == sub.mask_id
            if not hidden.any():
                continue
            prime[r] -= lp[r, i, x0[i]]
            for j in np.flatnonzero(hidden):
                valid[r] -= marg[r, i, j, table[x0[i], j]]
    return prime, valid


class ExactPosterior:
    """Exact posterior model of a joint distribution ``probs`` over ``C^L`` sequences.

    Args:
        probs: ``[C, ..., C]`` (``L`` axes) or flat ``[C^L]``, non-negative, summing to 1.
        sub: the sub-tokenizer (only its configuration is read).
        num_tokens: ``L`` (needed when ``probs`` is flat).
        needs_carry_over: if true (default), the logits of token ``i`` are
            ``log p(x^i = c, y^{−i})`` — conditioned on the other tokens' seen digits only, with mass
            on classes that contradict token ``i``'s own seen digits; carry-over turns them into the
            exact posterior. If false, they are ``log p(x^i = c | y)`` itself (``≈ −690`` where
            impossible).

    Calling it with ``(y_t [B, L·ℓ], t [B])`` returns logits ``FloatTensor[B, L, C]`` (float64,
    normalised over ``c``; finite, ``log 0`` stands as ``−690``). Time-independent.
    """

    time_conditioned = False

    def __init__(self, probs, sub, num_tokens: int | None = None, *, needs_carry_over: bool = True) -> None:
        p = np.asarray(torch.as_tensor(probs, dtype=torch.float64).numpy(), dtype=np.float64)
        c = sub.num_classes
        if num_tokens is None:
            num_tokens = p.ndim
        if p.size != c**num_tokens:
            raise ValueError(f"probs must have C^L = {c}^{num_tokens} entries, got {p.size}")
        self.probs_np = p.reshape(-1)
        self.probs = torch.from_numpy(self.probs_np.copy())
        self.sub = sub
        self.num_tokens = num_tokens
        self.needs_carry_over = needs_carry_over
        seqs = np.array(list(itertools.product(range(c), repeat=num_tokens)), dtype=np.int64).reshape(
            -1, num_tokens
        )
        self.sequences_np = seqs  # (S, L), row s is the s-th entry of probs in C-ary order
        self.sequences = torch.from_numpy(seqs.copy())
        self.digits = digits_of(sub)[seqs]  # (S, L, ℓ)

    def __call__(self, y_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        L, ell, c = self.num_tokens, self.sub.length, self.sub.num_classes
        y = y_t.cpu().numpy().reshape(-1, L, ell)
        seen = y != self.sub.mask_id
        # agree[b, s, i]: sequence s agrees with every seen digit of token i
        agree = ((self.digits[None] == y[:, None]) | ~seen[:, None]).all(-1)  # (B, S, L)
        bad = (~agree).sum(-1)  # (B, S) tokens that disagree
        if self.needs_carry_over:
            ok_except_i = (bad[..., None] - (~agree)) == 0  # (B, S, L): all tokens but i agree
        else:
            ok_except_i = np.broadcast_to((bad == 0)[..., None], agree.shape)
        weights = self.probs_np[None, :, None] * ok_except_i  # (B, S, L)
        onehot = np.eye(c)[self.sequences_np]  # (S, L, C)
        joint = np.einsum("bsl,slc->blc", weights, onehot)
        total = joint.sum(-1, keepdims=True)  # 0 only for inputs no sequence is consistent with
        joint = np.divide(joint, total, out=np.zeros_like(joint), where=total > 0)
        with np.errstate(divide="ignore"):
            logits = np.where(joint > 0, np.log(np.maximum(joint, 1e-300)), -690.0)
        return torch.from_numpy(logits).to(y_t.device)


def sequence_entropy(probs) -> float:
    """Shannon entropy of a joint pmf in nats."""
    p = np.asarray(torch.as_tensor(probs, dtype=torch.float64).numpy()).reshape(-1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _encode(x0: np.ndarray, sub) -> np.ndarray:
    return digits_of(sub)[x0].reshape(-1)


def exact_objectives(
    model: ModelFn,
    x0,
    sub,
    schedule=None,
    *,
    quadrature_points: int | None = None,
) -> dict[str, float]:
    """Exact continuous-time ``L_valid`` and ``L_prime`` (nats per sequence) of ``model`` at one
    sequence ``x0`` (``[L]``).

    Sums over all ``2^n`` mask patterns ``S`` (``n = L·ℓ``) and integrates in ``u = 1 − α(t)``:
    ``Σ_S ∫_0^1 u^{|S|−1} (1−u)^{n−|S|} · terms(S, t(u)) du`` by Gauss–Legendre with
    ``quadrature_points`` nodes (default ``n + 2``, exact for time-independent models). ``schedule``
    (a :class:`~mdm_prime.schedules.Schedule`, a name, or ``None`` for linear) only converts ``u`` to
    the ``t`` a time-conditioned model receives.
    """
    x = np.asarray(torch.as_tensor(x0).cpu().numpy(), dtype=np.int64).reshape(-1)
    y0 = _encode(x, sub)
    n = y0.size
    patterns = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)[1:]  # (P, n)
    k = patterns.sum(-1)
    y = torch.from_numpy(np.where(patterns, sub.mask_id, y0[None]))
    nodes, weights = np.polynomial.legendre.leggauss(quadrature_points or n + 2)
    to_time = _time_map(schedule)
    total_valid = total_prime = 0.0
    for node, wq in zip(nodes, weights):
        u = (node + 1) / 2
        t = to_time(u)
        logits = model(y, torch.full((y.shape[0],), t, dtype=torch.float32))
        prime, valid = nll_terms(logits, y, x, sub)
        dens = u ** (k - 1.0) * (1.0 - u) ** (n - k)
        total_valid += wq / 2 * float((dens * valid).sum())
        total_prime += wq / 2 * float((dens * prime).sum())
    return {"valid": float(total_valid), "prime": float(total_prime)}


def _time_map(schedule) -> Callable[[float], float]:
    """``u ↦ t`` with ``1 − α(t) = u`` (docs/method.md §2), written out here for the four schedules."""
    if schedule is None:
        return lambda u: u
    if isinstance(schedule, str):
        from .schedules import get_schedule

        schedule = get_schedule(schedule)
    name = schedule.name
    if name == "linear":
        return lambda u: u
    if name == "loglinear":
        return lambda u: min(1.0, u / (1.0 - schedule.eps))
    if name == "cosine":
        return lambda u: math.asin(math.sqrt(u / 2.0)) * 4.0 / math.pi
    if name == "polynomial":
        return lambda u: u ** (1.0 / schedule.exponent)
    raise ValueError(f"oracle has no time map for schedule {name!r}")


def _digit_curve(config: dict) -> tuple[Callable, Callable, float]:
    """``(g, g', exponent)`` of one digit position's schedule from its config dict, written out here:
    ``g(t) = 1 − α(t)`` and its derivative ``g'(t) = −α'(t)``, both on numpy arrays; ``exponent`` is the
    polynomial power (1 for the others, which are smooth in ``t``)."""
    name = config["name"]
    if name == "linear":
        return (lambda t: t), (lambda t: np.ones_like(t)), 1.0
    if name == "loglinear":
        c = 1.0 - float(config["eps"])
        return (lambda t: c * t), (lambda t: np.full_like(t, c)), 1.0
    if name == "cosine":
        return (
            (lambda t: 1.0 - np.cos(0.5 * math.pi * t)),
            (lambda t: 0.5 * math.pi * np.sin(0.5 * math.pi * t)),
            1.0,
        )
    if name == "polynomial":
        e = float(config["exponent"])
        return (lambda t: t**e), (lambda t: e * t ** (e - 1.0)), e
    raise ValueError(f"oracle has no closed form for schedule {name!r}")


def _substitution_power(exponents: list[float]) -> int:
    """Smallest ``q ≤ 64`` making every ``q·e`` an integer (then ``t = s^q`` turns polynomial schedules
    into polynomials in ``s``), else a ``q`` with ``q·min(e) ≥ 6`` (a smooth enough integrand)."""
    for q in range(1, 65):
        if all(abs(q * e - round(q * e)) < 1e-9 for e in exponents):
            return q
    return int(math.ceil(6.0 / min(exponents)))


def exact_digit_objectives(
    model: ModelFn,
    x0,
    sub,
    digit_schedules,
    *,
    quadrature_points: int = 256,
) -> dict[str, float]:
    """Exact continuous-time ``L_valid`` and ``L_prime`` (nats per sequence) of ``model`` at one sequence
    ``x0`` (``[L]``) under **per-digit schedules** (docs/method.md §2b).

    ``digit_schedules``: ``ℓ`` schedule config dicts (``{"name": "polynomial", "exponent": 2.0}``, …),
    or anything with a ``config()`` whose ``"schedules"`` lists them (a ``DigitSchedules``); a shared
    schedule is the list of ``ℓ`` equal ones. Only the configs are read; ``g_j``, ``g_j'`` are written
    out in :func:`_digit_curve`.

    For every non-empty hidden set ``S`` of the ``n = L·ℓ`` digits and ``d ∈ S``,
    ``A_{S,d}(t) = g_d'(t) Π_{S∖d} g(t) Π_{∉S} (1 − g(t))`` is ``P(S | t) · w_d(t)``; then
    ``L_valid = ∫_0^1 Σ_S Σ_{d∈S} A_{S,d}(t) · (−log p(y0^d | y_S)) dt`` and ``L_prime`` weights the token
    term of token ``i`` by the mean of ``A_{S,d}`` over its hidden digits. The integral is taken in
    ``s`` with ``t = s^q`` (:func:`_substitution_power`) by Gauss–Legendre with ``quadrature_points``
    nodes: exact for polynomial schedules with rational exponents once the nodes exceed half the degree.
    A model with ``time_conditioned`` false is called once; otherwise once per node, at ``t``.
    """
    if not isinstance(digit_schedules, (list, tuple)):
        digit_schedules = digit_schedules.config()["schedules"]
    configs = [c if isinstance(c, dict) else c.config() for c in digit_schedules]
    ell = sub.length
    if len(configs) != ell:
        raise ValueError(f"{len(configs)} digit schedules for ℓ={ell} digits per token")
    curves = [_digit_curve(c) for c in configs]
    x = np.asarray(torch.as_tensor(x0).cpu().numpy(), dtype=np.int64).reshape(-1)
    y0 = _encode(x, sub)
    n, L = y0.size, x.size
    table = digits_of(sub)
    patterns = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)[1:]  # (P, n)
    y = torch.from_numpy(np.where(patterns, sub.mask_id, y0[None]))
    q = _substitution_power([c[2] for c in curves])
    nodes, qweights = np.polynomial.legendre.leggauss(quadrature_points)
    svals = (nodes + 1.0) / 2.0
    tvals = svals**q
    dt_ds = q * svals ** (q - 1)
    time_dependent = bool(getattr(model, "time_conditioned", True))

    def nll_of(t: float) -> tuple[np.ndarray, np.ndarray]:
        logits = model(y, torch.full((y.shape[0],), t, dtype=torch.float32))
        lp, marg = brute_force_carry_over(logits, y, sub)
        dig = np.zeros(patterns.shape)
        tok = np.zeros((patterns.shape[0], L))
        for d in range(n):
            i, j = divmod(d, ell)
            dig[:, d] = np.where(patterns[:, d], -marg[:, i, j, table[x[i], j]], 0.0)
        for i in range(L):
            hidden = patterns[:, i * ell : (i + 1) * ell].any(-1)
            tok[:, i] = np.where(hidden, -lp[:, i, x[i]], 0.0)
        return dig, tok

    fixed = None if time_dependent else nll_of(0.5)
    total_valid = total_prime = 0.0
    for t, jac, wq in zip(tvals, dt_ds, qweights):
        g = np.array([curves[d % ell][0](np.float64(t)) for d in range(n)], dtype=np.float64)
        dg = np.array([curves[d % ell][1](np.float64(t)) for d in range(n)], dtype=np.float64)
        # A[P, d] = g'_d Π_{S∖d} g Π_{∉S} (1 − g) for d ∈ S, else 0 (built factor by factor, no division)
        a = np.zeros(patterns.shape)
        for d in range(n):
            factor = np.where(patterns, g[None], 1.0 - g[None])
            factor[:, d] = dg[d]
            a[:, d] = np.where(patterns[:, d], factor.prod(-1), 0.0)
        dig, tok = fixed if fixed is not None else nll_of(float(t))
        a_tok = a.reshape(-1, L, ell)
        count = patterns.reshape(-1, L, ell).sum(-1)
        a_bar = np.divide(a_tok.sum(-1), count, out=np.zeros(count.shape), where=count > 0)
        scale = wq / 2.0 * jac
        total_valid += scale * float((a * dig).sum())
        total_prime += scale * float((a_bar * tok).sum())
    return {"valid": float(total_valid), "prime": float(total_prime)}


def reveal_order_nll(model: ModelFn, x0, sub) -> dict[str, float]:
    """Exact likelihood of a **time-independent** model's generative process at ``x0`` (``[L]``).

    Returns ``{"nll": −log p_θ(x), "order_averaged_nll": E_σ[−Σ_k log p_θ(y^{σ_k} | revealed)]}``
    over uniformly random reveal orders ``σ`` of the ``n`` digits. The second equals the model's
    ``L_valid`` exactly; the first is ``≤`` it by Jensen's inequality. Dynamic programming over the
    ``2^n`` revealed sets replaces the ``n!`` orders: with ``f(R)`` the probability of revealing the
    remaining digits correctly from revealed set ``R``, ``f(R) = mean_{j∉R} p(y0^j | y_R) f(R ∪ {j})``.
    """
    x = np.asarray(torch.as_tensor(x0).cpu().numpy(), dtype=np.int64).reshape(-1)
    y0 = _encode(x, sub)
    n, ell = y0.size, sub.length
    states = np.arange(2**n)
    revealed = ((states[:, None] >> np.arange(n)) & 1).astype(bool)  # bit j set ⇔ digit j revealed
    y = torch.from_numpy(np.where(revealed, y0[None], sub.mask_id))
    logits = model(y, torch.zeros(y.shape[0]))
    _, marg = brute_force_carry_over(logits, y, sub)  # (2^n, L, ℓ, b)
    nll = np.zeros((2**n, n))
    for j in range(n):
        nll[:, j] = -marg[:, j // ell, j % ell, y0[j]]
    log_f = np.zeros(2**n)
    avg = np.zeros(2**n)
    for s in sorted(range(2**n), key=lambda v: -bin(v).count("1")):
        remaining = [j for j in range(n) if not (s >> j) & 1]
        if not remaining:
            continue
        terms = np.array([-nll[s, j] + log_f[s | (1 << j)] for j in remaining])
        log_f[s] = _logsumexp(terms) - math.log(len(remaining))
        avg[s] = float(np.mean([nll[s, j] + avg[s | (1 << j)] for j in remaining]))
    return {"nll": float(-log_f[0]), "order_averaged_nll": float(avg[0])}
