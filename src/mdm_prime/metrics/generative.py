"""Generative perplexity (docs/method.md §8): score samples with an autoregressive model trained in this
project on the same corpus, always with the unigram entropy of the samples beside it.

Generative perplexity rewards low-entropy, repetitive samples (a sample of one repeated frequent
token scores very well), so it is never reported alone: :func:`generative_perplexity` always returns
the samples' unigram entropy, and ``mdm-prime eval --gen-ppl`` also scores the reference validation
text with the same autoregressive model.

* :func:`unigram_entropy` — Shannon entropy (nats) of the empirical token-id distribution of a set of
  sequences, pooled over all positions.
* :func:`generative_perplexity` — ``exp`` of the autoregressive model's exact NLL per token.
* :func:`check_same_tokenizer` — the two runs' ``task.json`` must name the same tokenizer / vocabulary.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..validation import check_int

__all__ = ["unigram_entropy", "generative_perplexity", "check_same_tokenizer"]


def _check_tokens(name: str, tokens: object) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer (long) tensor of token ids, got dtype {tokens.dtype}")
    if tokens.dim() != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, L) with N, L >= 1, got {tuple(tokens.shape)}")
    if int(tokens.min()) < 0:
        raise ValueError(f"{name} holds a negative token id ({int(tokens.min())})")
    return tokens.long()


def unigram_entropy(tokens: torch.Tensor, num_classes: int | None = None) -> float:
    """Entropy in **nats** of the empirical unigram distribution of ``tokens`` (``LongTensor[N, L]``),
    pooled over all ``N·L`` positions: ``−Σ_c f_c log f_c`` with ``f_c`` the frequency of id ``c``.

    ``num_classes`` (optional) only validates that every id is ``< num_classes``. A degenerate sample
    (one repeated token) has entropy 0; ``N·L`` distinct ids give ``log(N·L)``.
    """
    tokens = _check_tokens("tokens", tokens)
    if num_classes is not None and int(tokens.max()) >= num_classes:
        raise ValueError(f"tokens hold id {int(tokens.max())}, but num_classes is {num_classes}")
    counts = torch.bincount(tokens.flatten().cpu()).double()
    f = counts[counts > 0] / counts.sum()
    return float(-(f * f.log()).sum())


@torch.no_grad()
def generative_perplexity(samples: torch.Tensor, ar_model, *, batch_size: int = 64) -> dict:
    """Score ``samples`` (``LongTensor[N, L]`` token ids) with an autoregressive model.

    Args:
        samples: token ids in ``[0, C)``, ``C = ar_model.num_classes``.
        ar_model: a :class:`~mdm_prime.models.CausalTransformer` (a family with an exact likelihood, with
            ``log_likelihood(x) -> FloatTensor[B]`` in nats per sequence), trained on the same corpus
            and tokenizer.
        batch_size: sequences per forward pass.

    Returns:
        ``{"generative_perplexity": exp(nats/token), "generative_nats_per_token": total NLL / (N·L),
        "generative_stderr_nats_per_token": standard error over the N samples,
        "sample_unigram_entropy_nats": unigram entropy of the samples (nats), "num_samples": N,
        "tokens_per_sample": L}``. The NLL is the AR model's exact ``−log p_AR(sample)``.
    """
    samples = _check_tokens("samples", samples)
    from ..families import FAMILIES

    family = FAMILIES.get(getattr(ar_model, "family", None))
    if family is None or not family.exact_likelihood or not hasattr(ar_model, "log_likelihood"):
        raise TypeError(
            f"ar_model must be an autoregressive model (a family with an exact likelihood and log_likelihood), "
            f"got {type(ar_model).__name__} (family {getattr(ar_model, 'family', None)!r})"
        )
    check_int("batch_size", batch_size, low=1)
    c = int(ar_model.num_classes)
    if int(samples.max()) >= c:
        raise ValueError(
            f"samples hold token id {int(samples.max())}, but the autoregressive model has only {c} classes "
            "(different tokenizer?)"
        )
    ar_model.eval()
    device = next(ar_model.parameters()).device
    nll = torch.cat(
        [
            -ar_model.log_likelihood(samples[i : i + batch_size].to(device)).double().cpu()
            for i in range(0, samples.shape[0], batch_size)
        ]
    )  # (N,) nats per sequence
    n, length = samples.shape
    nats = float(nll.sum()) / (n * length)
    se = float(nll.std() / math.sqrt(n)) / length if n > 1 else float("nan")
    return {
        "generative_perplexity": math.exp(nats),
        "generative_nats_per_token": nats,
        "generative_stderr_nats_per_token": se,
        "sample_unigram_entropy_nats": unigram_entropy(samples),
        "num_samples": n,
        "tokens_per_sample": length,
    }


def check_same_tokenizer(
    run_meta: dict, ar_meta: dict, run_name: str | Path = "run", ar_name: str | Path = "AR run"
) -> None:
    """Raise ``ValueError`` unless two runs' ``task.json`` dicts share the token alphabet: the same
    ``num_classes`` and, when either names one, the same ``tokenizer``; ``ar_meta`` must be text or
    synthetic (not image/toy)."""
    problems = []
    if run_meta.get("num_classes") != ar_meta.get("num_classes"):
        problems.append(f"vocabulary size {run_meta.get('num_classes')} vs {ar_meta.get('num_classes')}")
    tok_a, tok_b = run_meta.get("tokenizer"), ar_meta.get("tokenizer")
    if (tok_a is not None or tok_b is not None) and tok_a != tok_b:
        problems.append(f"tokenizer {tok_a!r} vs {tok_b!r}")
    if run_meta.get("kind") != ar_meta.get("kind"):
        problems.append(f"data kind {run_meta.get('kind')!r} vs {ar_meta.get('kind')!r}")
    if problems:
        raise ValueError(
            f"the autoregressive run {ar_name} does not share the token alphabet of {run_name}: "
            + "; ".join(problems)
            + ". Train the AR scorer on the same corpus and tokenizer (mdm-prime train --family ar --data ... "
            "--tokenizer ...)."
        )
