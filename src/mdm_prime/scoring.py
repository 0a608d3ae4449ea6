"""Score a large corpus with the valid bound in bounded memory: :func:`score_corpus`; the tokens of
any text spec or shard folder under a run's tokenizer: :func:`spec_tokens`; the network-call size
that keeps the logits near a memory budget: :func:`auto_batch_size`.

The one scoring path of the package (docs/method.md §5, §8): ``mdm-prime eval``, the trainer's
validations and its final evaluation all reach it through the family's ``score``. Token sequences are
taken in chunks of ``batch_size`` (default :data:`SEQUENCES_PER_CHUNK`), each chunk is scored by
:func:`mdm_prime.likelihood` (``num_times`` draws per sequence, chunk ``i`` seeded ``seed + i``), and only
per-sequence numbers are kept. The draws depend on the seed and the chunking only, never on the rows per
network call, so the same sequences, seed and K give the same numbers in ``eval`` and in training. Returns the valid bound ``L_valid`` per token with its Monte Carlo standard error, the paper's
objective ``L_prime`` beside it (the training objective, not a likelihood for ℓ > 1) and the gap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .likelihood import likelihood
from .validation import check_int

__all__ = ["LOGITS_BUDGET_BYTES", "SEQUENCES_PER_CHUNK", "auto_batch_size", "score_corpus", "spec_tokens"]

LOGITS_BUDGET_BYTES = 2**30
"""Default budget of :func:`auto_batch_size`: 1 GiB of float32 logits per network call."""

SEQUENCES_PER_CHUNK = 256
"""Sequences whose time draws come from one seed (chunk ``i`` of :func:`score_corpus` uses ``seed + i``).
A run's validations score at most 256 sequences, so they are one chunk: ``eval`` on the same sequences
with the same seed and K repeats the training's final line exactly."""


def auto_batch_size(
    num_classes: int, seq_len: int, *, budget_bytes: int = LOGITS_BUDGET_BYTES, max_rows: int = 64
) -> int:
    """Rows per network call so that one call's float32 logits ``rows × L × C × 4`` bytes stay within
    ``budget_bytes``: ``clamp(floor(budget / (4·C·L)), 1, max_rows)``. At C = 50257, L = 1024 (the
    published models) that is 5 rows (1.03 GB) instead of 64 rows (13 GB)."""
    for name, v in (
        ("num_classes", num_classes),
        ("seq_len", seq_len),
        ("budget_bytes", budget_bytes),
        ("max_rows", max_rows),
    ):
        check_int(name, v, low=1)
    return max(1, min(max_rows, budget_bytes // (4 * num_classes * seq_len)))


def spec_tokens(
    spec: str,
    tokenizer,
    seq_len: int,
    *,
    split: str = "valid",
    max_sequences: int | None = None,
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    seed: int = 0,
) -> tuple[torch.Tensor, float | None]:
    """The ``split`` of a data spec as ``LongTensor[N, seq_len]`` under ``tokenizer`` (a run's own), and
    characters per token (separators counted as tokens; ``None`` if unknown).

    Text specs (``text:PATH``, ``owt:DIR``, ``mix``, …) are split by document exactly as training splits
    them (hash of seed ``seed``, ``fractions``; ``text8`` contiguously), each document tokenized and
    followed by the separator, the stream cut into non-overlapping chunks of ``seq_len``. ``shards:DIR``
    gives the fixed held-out windows of :meth:`~mdm_prime.data.shards.ShardedTokens.valid_windows` (at most
    ``max_sequences``; up to 512 they are those a ``shards:DIR`` run holds out); its tokenizer must be the
    run's.

    Raises:
        ValueError: not a text or shards spec; a shard folder prepared with another tokenizer; an empty split.
        MissingDataError: the corpus is not installed / the path does not exist.
    """
    import numpy as np

    from .data import load_data
    from .data.dataset import (
        chunk_tokens,
        concat_documents,
        parse_text_spec,
        split_documents,
    )

    splits = ("train", "valid", "test")
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; expected one of {list(splits)}")
    source = load_data(spec)
    if source.kind == "shards":
        sh = source.load()
        theirs = sh.index["tokenizer"]
        if sh.vocab_size != tokenizer.vocab_size or theirs.get("name") != tokenizer.name:
            raise ValueError(
                f"{spec} was prepared with tokenizer {theirs.get('name')!r} (C = {sh.vocab_size}); "
                f"the run uses {tokenizer.name!r} (C = {tokenizer.vocab_size})"
            )
        chunks = max(1, sh.num_tokens(split) // seq_len)
        # at most 512 sequences: the same windows as a shards run's own held-out set (shards_task_kwargs)
        n = chunks if max_sequences is None else max(min(512, chunks), max_sequences)
        x = sh.valid_windows(n, seq_len, split)
        return (x if max_sequences is None else x[:max_sequences]), sh.characters_per_token(split)
    if source.kind != "text":
        raise ValueError(
            f"--data scores text; {spec!r} is {source.kind} data (give a text spec or shards:DIR)"
        )
    docs = source.documents()
    mode = "contiguous" if parse_text_spec(spec)[0] == "text8" else "hash"
    chosen = [docs[i] for i in split_documents(docs, fractions, seed, mode)[split]]
    if not chosen:
        raise ValueError(f"{spec}: the {split} split holds no document ({len(docs)} documents in all)")
    stream = concat_documents(tokenizer.encode_batch(chosen), tokenizer.eos_id)
    x = chunk_tokens(np.asarray(stream), seq_len)
    if x.shape[0] == 0:
        raise ValueError(f"{spec}: the {split} split has {len(stream)} tokens, fewer than L = {seq_len}")
    if max_sequences is not None:
        x = x[:max_sequences]
    return x, sum(map(len, chosen)) / max(len(stream), 1)


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
    batch_size: int = SEQUENCES_PER_CHUNK,
    rows_per_call: int | None = None,
    max_sequences: int | None = None,
    max_tokens: int | None = None,
    progress: bool = True,
    estimator: str = "integrated",
    subtokenizer=None,
) -> dict:
    """Valid bound of ``model`` on ``tokens`` (``LongTensor[N, L]`` or an iterable of ``[b, L]`` chunks).

    Args:
        num_times: K ≥ 2 draws per sequence. seed: chunk ``i`` uses ``seed + i``.
        batch_size: sequences per chunk (one :func:`likelihood` call, seeded ``seed + i``); it sets
            the draws, so keep the default to compare with a training run's validation numbers.
        rows_per_call: (sequence × draw) rows per network call (memory: ``rows × L × C`` float32 logits;
            8 rows at L = 1024, C = 50257 are 1.6 GB); default :func:`auto_batch_size`. It does not
            change the draws.
        max_sequences / max_tokens: stop once this many sequences / tokens are scored (the last chunk
            is cut to fit; sequences are never split).
        progress: a tqdm bar on stderr, advanced after every network call (rows = sequence × draw),
            with the running bound and an ETA.
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
    if batch_size < 1 or (rows_per_call is not None and rows_per_call < 1):
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

        bar = tqdm(
            total=None if total is None else total * num_times,
            unit="row",
            desc=f"valid bound (sequence × {num_times} draws)",
            dynamic_ncols=True,
        )
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
        rows = rows_per_call or auto_batch_size(sub.num_classes, L)
        res = likelihood(
            model,
            chunk.to(device),
            sub,
            schedule=schedule,
            num_times=num_times,
            seed=seed + i,
            batch_size=rows,
            estimator=estimator,
            progress=None if bar is None else bar.update,
        )
        nelbo.append(res.nelbo.double().cpu())
        se.append(res.nelbo_stderr.double().cpu())
        prime.append(res.prime_objective.double().cpu())
        seen_seq += room
        seen_tok += room * L
        if bar is not None:
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
