"""Codes: which class gets which digits (``docs/method.md §1b``).

A :class:`~mdm_prime.subtokenizer.SubTokenizer` writes class ``c`` as the base-``b`` digits of
``π(c)``. This module chooses ``π`` from training data. **Convention**: every permutation returned here
is ``code_of_class``, i.e. ``perm[c]`` is the code (an integer in ``0..C-1``, most significant digit
first) given to class ``c`` — exactly the ``permutation`` argument of ``SubTokenizer``. Codes
``C..b^ℓ-1`` stay invalid under every kind.

Kinds (:data:`CODE_KINDS`):

* ``index``: ``None`` (the identity, the paper's code).
* ``shuffle``: a seeded uniformly random permutation.
* ``frequency``: classes ranked by training-set frequency, the most frequent class gets code 0; ties by
  class id; classes absent from the data come last.
* ``cluster``: a balanced hierarchical clustering, ``ℓ`` levels deep: classes are described by their
  normalised left- and right-neighbour count vectors (reduced by a seeded random projection when ``C``
  is large), then the class set under each code prefix is ordered along its top principal component and
  cut into ``b`` consecutive groups whose sizes are the numbers of valid codes under each next digit,
  so classes that share a leading digit have similar contexts.

Every kind is computed once, from the training split only, and stored in the model config
(``checkpoint/config.json``), so evaluation, sampling, import and resume use it unchanged.
"""

from __future__ import annotations

import torch

__all__ = ["CODE_KINDS", "make_permutation", "training_sample", "neighbour_features"]

CODE_KINDS = ("index", "shuffle", "frequency", "cluster")
PROJECTION_DIM = 32
"""Dimensions per side (left / right neighbours) of the cluster features when ``C > PROJECTION_DIM``
(so at most 64 in all)."""
_CHUNK = 1 << 20


def training_sample(task, *, seed: int = 0, max_sequences: int = 4096) -> torch.Tensor:
    """The training tokens a code is computed from: ``task.train_tokens`` (``LongTensor[N, L]``) when the
    task holds them, else ``max_sequences`` seeded draws of ``task.sample_train`` (infinite tasks)."""
    tokens = getattr(task, "train_tokens", None)
    if tokens is not None:
        return tokens
    if getattr(task, "infinite", False):
        return task.sample_train(max_sequences, torch.Generator().manual_seed(seed))
    raise ValueError(f"task {getattr(task, 'spec', task)!r} has no training split to compute codes from")


def _check_tokens(tokens: torch.Tensor, num_classes: int) -> torch.Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
    if tokens.dim() == 1:
        tokens = tokens[None]
    tokens = tokens.reshape(tokens.shape[0], -1).long()
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= num_classes):
        raise ValueError(f"tokens must lie in [0, {num_classes})")
    return tokens


def class_counts(tokens: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``LongTensor[C]``: occurrences of each class in ``tokens`` (``LongTensor[N, L]``)."""
    tokens = _check_tokens(tokens, num_classes)
    return torch.bincount(tokens.flatten(), minlength=num_classes)


def neighbour_features(tokens: torch.Tensor, num_classes: int, *, seed: int = 0) -> torch.Tensor:
    """``FloatTensor[C, D]`` (float64): per class, its left-neighbour distribution then its
    right-neighbour distribution (within each sequence of ``tokens: LongTensor[N, L]``), each normalised
    to sum 1 (zero when the class has no such neighbour). ``D = 2C`` when ``C ≤ PROJECTION_DIM``, else each
    side is reduced by one seeded Gaussian random projection to ``PROJECTION_DIM`` dimensions
    (``D = 2·PROJECTION_DIM``)."""
    tokens = _check_tokens(tokens, num_classes)
    c = num_classes
    if c <= PROJECTION_DIM:
        proj = torch.eye(c, dtype=torch.float64)
    else:
        g = torch.Generator().manual_seed(seed)
        proj = torch.randn(c, PROJECTION_DIM, generator=g, dtype=torch.float64) / PROJECTION_DIM**0.5
    prev, cur = tokens[:, :-1].flatten(), tokens[:, 1:].flatten()
    left = torch.zeros(c, proj.shape[1], dtype=torch.float64)  # sum of projected left neighbours of c
    right = torch.zeros_like(left)
    for s in range(0, prev.numel(), _CHUNK):
        p, q = prev[s : s + _CHUNK], cur[s : s + _CHUNK]
        left.index_add_(0, q, proj[p])
        right.index_add_(0, p, proj[q])
    n_left = torch.bincount(cur, minlength=c).clamp_min(1).to(torch.float64)
    n_right = torch.bincount(prev, minlength=c).clamp_min(1).to(torch.float64)
    return torch.cat([left / n_left[:, None], right / n_right[:, None]], dim=1)


def _top_component(x: torch.Tensor) -> torch.Tensor:
    """``x: [m, D]`` → scores ``[m]`` along the top principal component (sign fixed: the entry of
    largest magnitude of the component is positive; zeros when the points do not vary)."""
    xc = x - x.mean(0, keepdim=True)
    cov = xc.T @ xc
    if not torch.isfinite(cov).all() or float(cov.abs().max()) == 0.0:
        return torch.zeros(x.shape[0], dtype=x.dtype)
    _, vecs = torch.linalg.eigh(cov)
    v = vecs[:, -1]
    if v[v.abs().argmax()] < 0:
        v = -v
    return xc @ v


def _cluster_permutation(features: torch.Tensor, num_classes: int, base: int, length: int) -> list[int]:
    perm = [0] * num_classes

    def assign(classes: torch.Tensor, offset: int, capacity: int) -> None:
        # classes fill the valid codes offset .. min(offset + capacity, C) - 1 of this prefix
        if capacity == 1:
            perm[int(classes[0])] = offset
            return
        if classes.numel() > 1:
            scores = _top_component(features[classes])
            classes = classes[torch.sort(scores, stable=True).indices]
        child = capacity // base
        start = 0
        for d in range(base):
            lo = offset + d * child
            size = max(0, min(child, num_classes - lo))
            if size == 0:
                break
            assign(classes[start : start + size], lo, child)
            start += size

    assign(torch.arange(num_classes), 0, base**length)
    return perm


def make_permutation(
    kind: str,
    tokens: torch.Tensor | None,
    num_classes: int,
    *,
    base: int,
    length: int,
    seed: int = 0,
) -> list[int] | None:
    """The code ``π`` of ``kind`` (:data:`CODE_KINDS`) as ``code_of_class``: ``perm[c]`` is the code of
    class ``c``, a permutation of ``0..C-1`` (``None`` for ``index``, the identity).

    Args:
        kind: ``index`` | ``shuffle`` | ``frequency`` | ``cluster``.
        tokens: training tokens ``LongTensor[N, L]`` in ``[0, C)`` (unused by ``index`` and ``shuffle``).
        num_classes: ``C``.
        base, length: ``b`` and ``ℓ`` of the sub-tokenizer (``b^ℓ ≥ C``; ``cluster`` splits ``ℓ`` levels
            of ``b`` groups).
        seed: for ``shuffle`` and the random projection of ``cluster``.
    """
    if kind not in CODE_KINDS:
        raise ValueError(f"unknown codes {kind!r}; expected one of {', '.join(CODE_KINDS)}")
    if base**length < num_classes:
        raise ValueError(f"base**length = {base}**{length} < num_classes = {num_classes}")
    if kind == "index":
        return None
    if kind == "shuffle":
        return torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    if tokens is None:
        raise ValueError(f"codes {kind!r} need training tokens")
    if kind == "frequency":
        counts = class_counts(tokens, num_classes)
        # stable sort of classes 0..C-1 by descending count: ties keep class order, absent classes last
        order = torch.sort(-counts, stable=True).indices  # order[r] = class with rank r
        perm = torch.empty(num_classes, dtype=torch.long)
        perm[order] = torch.arange(num_classes)
        return perm.tolist()
    features = neighbour_features(tokens, num_classes, seed=seed)
    return _cluster_permutation(features, num_classes, base, length)
