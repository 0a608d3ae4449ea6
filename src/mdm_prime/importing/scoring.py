"""Score a large corpus with the valid bound in bounded memory: :func:`score_corpus`.

The library part of ``mdm-prime eval --max-sequences/--max-tokens`` (docs/method.md §5, §8): token
sequences are taken in chunks of ``batch_size``, each chunk is scored by :func:`mdm_prime.likelihood`
(``num_times`` draws per sequence, chunk ``i`` seeded ``seed + i``), and only per-sequence numbers are
kept. Returns the valid bound ``L_valid`` per token with its Monte Carlo standard error, the paper's
objective ``L_prime`` beside it (the training objective, not a likelihood for ℓ > 1) and the gap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..likelihood import likelihood

__all__ = ["score_corpus"]


def _chunks(tokens, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(tokens, torch.Tensor):
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be a LongTensor[N, L], got shape {tuple(tokens.shape)}")
        for i in range(0, tokens.shape[0], batch_size):
            yield tokens[i : i + batch_size]
    else:
        for chunk in tokens:  # any iterable of LongTensor[b, L]
            if not isinstance(chunk, torch.Tensor) or chunk.dim() != 2:
                raise ValueError("each chunk must be a LongTensor[b, L]")
            for i in range(0, chunk.shape[0], batch_size):
                yield chunk[i : i + batch_size]


@torch.no_grad()
def score_corpus(
    model,
    tokens,
    *,
    num_times: int = 32,
    seed: int = 0,
    batch_size: int = 8,
    rows_per_call: int = 8,
    max_sequences: int | None = None,
    max_tokens: int | None = None,
    progress: bool = True,
    estimator: str = "integrated",
    subtokenizer=None,
) -> dict:
    """Valid bound of ``model`` on ``tokens`` (``LongTensor[N, L]`` or an iterable of ``[b, L]`` chunks).

    Args:
        num_times: K ≥ 2 draws per sequence. seed: chunk ``i`` uses ``seed + i``.
        batch_size: sequences per chunk (one :func:`likelihood` call, seeded ``seed + i``).
        rows_per_call: (sequence × draw) rows per network call (memory: ``rows × L × C`` float32 logits;
            8 rows at L = 1024, C = 50257 are 1.6 GB).
        max_sequences / max_tokens: stop once this many sequences / tokens are scored (the last chunk
            is cut to fit; sequences are never split).
        progress: a tqdm bar (sequences) on stderr.
        subtokenizer: default ``model.subtokenizer`` (any model callable of the contract works).

    Returns (nats per token unless stated)::

        nelbo_nats_per_token, stderr_nats_per_token (Monte Carlo, over the K draws),
        corpus_stderr_nats_per_token (std over sequences / √N: data and Monte Carlo variation),
        bits_per_token, perplexity = exp(L_valid), prime_objective_nats_per_token, prime_perplexity,
        gap_nats_per_token = L_valid − L_prime (≥ 0 in expectation for an ideal model, docs/method.md §5),
        num_sequences, num_tokens, tokens_per_sequence, num_times, estimator.
    """
    if num_times < 2:
        raise ValueError(f"num_times must be >= 2 (for a standard error), got {num_times}")
    if batch_size < 1 or rows_per_call < 1:
        raise ValueError(f"batch_size and rows_per_call must be >= 1, got {batch_size} and {rows_per_call}")
    for name, value in (("max_sequences", max_sequences), ("max_tokens", max_tokens)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 (or None), got {value}")
    sub = subtokenizer if subtokenizer is not None else model.subtokenizer
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    device = first.device if first is not None else torch.device("cpu")
    schedule = getattr(model, "schedule", "linear")
    total = max_sequences
    if isinstance(tokens, torch.Tensor):
        total = min(tokens.shape[0], max_sequences or tokens.shape[0])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="seq", desc="valid bound", dynamic_ncols=True)
    nelbo, se, prime = [], [], []
    seen_seq = seen_tok = 0
    L = None
    for i, chunk in enumerate(_chunks(tokens, batch_size)):
        L = chunk.shape[1] if L is None else L
        if chunk.shape[1] != L:
            raise ValueError(f"all sequences must have the same length; got {chunk.shape[1]} after {L}")
        room = chunk.shape[0]
        if max_sequences is not None:
            room = min(room, max_sequences - seen_seq)
        if max_tokens is not None:
            room = min(room, (max_tokens - seen_tok) // L)
        if room <= 0:
            break
        chunk = chunk[:room]
        res = likelihood(
            model,
            chunk.to(device),
            sub,
            schedule=schedule,
            num_times=num_times,
            seed=seed + i,
            batch_size=rows_per_call,
            estimator=estimator,
        )
        nelbo.append(res.nelbo.double().cpu())
        se.append(res.nelbo_stderr.double().cpu())
        prime.append(res.prime_objective.double().cpu())
        seen_seq += room
        seen_tok += room * L
        if bar is not None:
            bar.update(room)
            n = sum(len(v) for v in nelbo)
            bar.set_postfix(valid=f"{float(torch.cat(nelbo).sum()) / n / L:.3f}")
    if bar is not None:
        bar.close()
    if not nelbo:
        raise ValueError("no sequences to score (empty input, or max_tokens below one sequence)")
    v, s, pr = torch.cat(nelbo), torch.cat(se), torch.cat(prime)
    n = v.shape[0]
    nats = float(v.mean()) / L
    prime_nats = float(pr.mean()) / L
    return {
        "nelbo_nats_per_token": nats,
        "stderr_nats_per_token": float(s.pow(2).sum().sqrt()) / n / L,
        "corpus_stderr_nats_per_token": float(v.std() / math.sqrt(n)) / L if n > 1 else float("nan"),
        "bits_per_token": nats / math.log(2),
        "perplexity": math.exp(nats),
        "prime_objective_nats_per_token": prime_nats,
        "prime_perplexity": math.exp(prime_nats),
        "gap_nats_per_token": nats - prime_nats,
        "num_sequences": n,
        "num_tokens": n * L,
        "tokens_per_sequence": L,
        "num_times": num_times,
        "estimator": estimator,
    }
