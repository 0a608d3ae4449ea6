"""Synthetic token sources with known entropy: a Markov chain and a hidden Markov model (HMM).

Any likelihood bound measured on their samples must not fall below the exact entropy:

* :class:`MarkovChain` (tokens = states, ``C = K``): ``entropy_rate()`` exact,
  ``sequence_entropy(L) = H(π₀) + Σ_{t<L} E[H(P[x_t])]`` exact (``= H(π) + (L−1)·rate`` from the
  stationary start, the default).
* :class:`HiddenMarkovModel` (hidden states ``S``, tokens ``C = V``): ``sequence_entropy(L)`` exact by
  enumerating all ``V^L`` sequences with the forward algorithm (``V^L ≤ max_sequences``), a Monte
  Carlo estimate otherwise (:meth:`~HiddenMarkovModel.sequence_entropy_mc`); the entropy rate has no
  closed form, so :meth:`~HiddenMarkovModel.entropy_rate_bounds` gives the sandwich
  ``H(X_L | X_{<L}, S_1) ≤ rate ≤ H(X_L | X_{<L})`` (Cover & Thomas, Thm 4.5.1), tight as L grows.

All entropies are in nats. Example::

    mc = MarkovChain.random(num_states=8, concentration=0.5, seed=0)
    x = mc.sample(1024, 64, torch.Generator().manual_seed(0))   # LongTensor[1024, 64]
    mc.sequence_entropy(64) / 64                                  # nats per token
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

__all__ = ["MarkovChain", "HiddenMarkovModel", "stationary_distribution", "entropy"]


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along ``dim`` (0·log 0 = 0)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    return -(torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))).sum(dim)


def _check_stochastic(m: torch.Tensor, what: str, square: bool) -> torch.Tensor:
    m = torch.as_tensor(m, dtype=torch.float64)
    if m.dim() != 2 or (square and m.shape[0] != m.shape[1]):
        raise ValueError(f"{what} must be a {'square ' if square else ''}matrix, got shape {tuple(m.shape)}")
    if (m < 0).any() or not torch.allclose(m.sum(1), torch.ones(m.shape[0], dtype=torch.float64), atol=1e-8):
        raise ValueError(f"{what} must have non-negative rows summing to 1")
    return m


def stationary_distribution(transition: torch.Tensor) -> torch.Tensor:
    """A stationary distribution ``π = π P`` (``[K]``, float64) by least squares with ``Σπ = 1``."""
    p = _check_stochastic(transition, "transition", square=True)
    k = p.shape[0]
    a = torch.cat([p.T - torch.eye(k, dtype=torch.float64), torch.ones(1, k, dtype=torch.float64)])
    b = torch.zeros(k + 1, dtype=torch.float64)
    b[-1] = 1
    pi = torch.linalg.lstsq(a, b[:, None]).solution[:, 0].clamp_min(0)
    return pi / pi.sum()


def _random_stochastic(rows: int, cols: int, concentration: float, rng: np.random.Generator) -> torch.Tensor:
    if concentration <= 0:
        raise ValueError(f"concentration must be > 0, got {concentration}")
    return torch.from_numpy(rng.dirichlet(np.full(cols, concentration), size=rows))


class MarkovChain:
    """Tokens ``x_1..x_L`` with ``x_1 ~ initial`` (default stationary) and ``x_{t+1} ~ transition[x_t]``.

    Args:
        transition: ``[K, K]`` row-stochastic.
        initial: ``[K]`` start distribution; ``None`` → the stationary distribution.
    """

    def __init__(self, transition: torch.Tensor, initial: torch.Tensor | None = None) -> None:
        self.transition = _check_stochastic(transition, "transition", square=True)
        self.initial = (
            stationary_distribution(self.transition)
            if initial is None
            else torch.as_tensor(initial, dtype=torch.float64)
        )
        if self.initial.shape != (self.num_classes,) or abs(float(self.initial.sum()) - 1) > 1e-8:
            raise ValueError(f"initial must be a distribution over {self.num_classes} states")

    @classmethod
    def random(cls, num_states: int, concentration: float = 0.5, seed: int = 0) -> MarkovChain:
        """Rows drawn from Dirichlet(concentration); smaller concentration → lower entropy."""
        return cls(_random_stochastic(num_states, num_states, concentration, np.random.default_rng(seed)))

    @property
    def num_classes(self) -> int:
        return self.transition.shape[0]

    def entropy_rate(self) -> float:
        """``Σ_i π_i H(P[i])`` in nats/token (π stationary; the rate does not depend on the start)."""
        return float((stationary_distribution(self.transition) * entropy(self.transition)).sum())

    def sequence_entropy(self, seq_len: int) -> float:
        """Exact ``H(x_1..x_L)`` in nats from ``initial``."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        row_h, p, h = entropy(self.transition), self.initial.clone(), float(entropy(self.initial))
        for _ in range(seq_len - 1):
            h += float((p * row_h).sum())
            p = p @ self.transition
        return h

    def sample(self, num_seqs: int, seq_len: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``LongTensor[num_seqs, seq_len]`` of states in ``[0, K)``."""
        if num_seqs < 1 or seq_len < 1:
            raise ValueError(f"num_seqs and seq_len must be >= 1, got {num_seqs}, {seq_len}")
        x = torch.empty(num_seqs, seq_len, dtype=torch.long)
        x[:, 0] = torch.multinomial(self.initial, num_seqs, replacement=True, generator=generator)
        for t in range(1, seq_len):
            x[:, t] = torch.multinomial(self.transition[x[:, t - 1]], 1, generator=generator)[:, 0]
        return x

    def __repr__(self) -> str:
        return f"MarkovChain(states={self.num_classes}, entropy_rate={self.entropy_rate():.4f} nats/token)"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` in nats, ``[N, L]`` → ``FloatTensor[N]`` (float64)."""
        lp = self.initial[x[:, 0]].log()
        return lp + self.transition[x[:, :-1], x[:, 1:]].log().sum(1)


class HiddenMarkovModel:
    """Hidden ``s_t`` a Markov chain (``transition [S, S]``, start ``initial`` or stationary); token ``x_t ~ emission[s_t]`` (``[S, V]``)."""

    def __init__(
        self, transition: torch.Tensor, emission: torch.Tensor, initial: torch.Tensor | None = None
    ) -> None:
        self.hidden = MarkovChain(transition, initial)
        self.emission = _check_stochastic(emission, "emission", square=False)
        if self.emission.shape[0] != self.hidden.num_classes:
            raise ValueError(
                f"emission must have {self.hidden.num_classes} rows (one per hidden state), got {self.emission.shape[0]}"
            )

    @classmethod
    def random(
        cls, num_states: int, vocab_size: int, concentration: float = 0.5, seed: int = 0
    ) -> HiddenMarkovModel:
        rng = np.random.default_rng(seed)
        a = _random_stochastic(num_states, num_states, concentration, rng)
        return cls(a, _random_stochastic(num_states, vocab_size, concentration, rng))

    @property
    def num_classes(self) -> int:
        return self.emission.shape[1]

    def __repr__(self) -> str:
        return f"HiddenMarkovModel(states={self.hidden.num_classes}, vocab={self.num_classes})"

    def sample(self, num_seqs: int, seq_len: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``LongTensor[num_seqs, seq_len]`` of tokens in ``[0, V)``."""
        s = self.hidden.sample(num_seqs, seq_len, generator).flatten()
        rows = max(1, 2**22 // self.num_classes)  # emission rows per draw: ≤ 32 MB of float64 at any V
        flat = torch.cat(
            [
                torch.multinomial(self.emission[s[i : i + rows]], 1, generator=generator)[:, 0]
                for i in range(0, s.numel(), rows)
            ]
        )  # the same draws as one multinomial over all rows (one uniform per row, in order)
        return flat.reshape(num_seqs, seq_len)

    def log_prob(self, x: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x)`` in nats by the scaled forward algorithm, ``[N, L]`` → ``[N]`` (float64)."""
        init = self.hidden.initial if initial is None else initial
        alpha = init[None, :] * self.emission[:, x[:, 0]].T  # [N, S]
        norm = alpha.sum(1)
        lp, alpha = norm.log(), alpha / norm[:, None]
        for t in range(1, x.shape[1]):
            alpha = (alpha @ self.hidden.transition) * self.emission[:, x[:, t]].T
            norm = alpha.sum(1)
            lp, alpha = lp + norm.log(), alpha / norm[:, None]
        return lp

    def _enumerated_entropy(self, seq_len: int, initial: torch.Tensor | None, max_sequences: int) -> float:
        v = self.num_classes
        if v**seq_len > max_sequences:
            raise ValueError(
                f"exact entropy enumerates V^L = {v}^{seq_len} sequences (> max_sequences = {max_sequences}); "
                "use sequence_entropy_mc"
            )
        if seq_len == 0:
            return 0.0
        h = 0.0
        all_x = torch.tensor(list(itertools.product(range(v), repeat=seq_len)), dtype=torch.long)
        for batch in all_x.split(65536):
            lp = self.log_prob(batch, initial)
            h -= float((lp.exp() * lp).sum())
        return h

    def sequence_entropy(self, seq_len: int, max_sequences: int = 2**20) -> float:
        """Exact ``H(x_1..x_L)`` in nats (enumeration; raises ValueError if ``V^L > max_sequences``)."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        return self._enumerated_entropy(seq_len, None, max_sequences)

    def sequence_entropy_mc(
        self, seq_len: int, num_samples: int = 4096, generator: torch.Generator | None = None
    ) -> tuple[float, float]:
        """Monte Carlo ``H(x_1..x_L) ≈ mean(−log p(x))`` over samples; returns ``(estimate, standard error)`` in nats."""
        nll = -self.log_prob(self.sample(num_samples, seq_len, generator))
        return float(nll.mean()), float(nll.std() / math.sqrt(num_samples))

    def entropy_rate_bounds(self, seq_len: int, max_sequences: int = 2**20) -> tuple[float, float]:
        """``(lower, upper)`` on the entropy rate in nats/token from length-``L`` sequences (exact enumeration)."""
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        upper = self.sequence_entropy(seq_len, max_sequences) - self.sequence_entropy(
            seq_len - 1, max_sequences
        )
        pi, s = self.hidden.initial, self.hidden.num_classes
        lower = 0.0
        for k in range(s):
            if pi[k] > 0:
                delta = torch.zeros(s, dtype=torch.float64)
                delta[k] = 1
                lower += float(pi[k]) * (
                    self._enumerated_entropy(seq_len, delta, max_sequences)
                    - self._enumerated_entropy(seq_len - 1, delta, max_sequences)
                )
        return lower, upper
