"""Text → fixed-length token chunks with deterministic splits by document, cached on disk.

Pipeline of :func:`prepare`:

1. load the documents of a text spec (``brown``, ``mix``, ``text:PATH``, ``text8:PATH``, ``owt:DIR`` …);
2. split them into train / valid / test **by document** (:func:`split_documents`): each document's
   split is decided by a hash of ``(seed, its text)``, so it does not depend on the other documents or
   their order (``text8`` uses the contiguous 90/5/5 split); if a corpus has too few documents for
   every split to get one, the token stream is cut contiguously instead (``split_mode = "stream"``);
3. build the tokenizer (``bpe:N`` trained on the *training* documents; ``char``'s alphabet from all);
4. tokenize each split, append the separator ``eos_id`` after every document, concatenate, and
   store the stream as ``.npy`` under ``<data root>/cache/text/<key>/`` (written to a temp folder and
   moved into place atomically). The key hashes the spec, the source files' sizes and mtimes, the
   tokenizer spec, the split fractions/seed/mode and :data:`CACHE_VERSION` — not ``seq_len``;
5. cut each stream into non-overlapping chunks ``LongTensor[N, L]`` (the tail ``< L`` is dropped).

All of it is held in memory (a few bytes per byte of text, several more while tokenizing), so before
anything is read a user-supplied source (``text:PATH``, ``text8:PATH``, ``owt:DIR``) larger than
``$MDM_PRIME_MAX_IN_MEMORY_MB`` MB on disk (default 256) is refused, naming the streaming path
(``mdm-prime data prepare SPEC --tokenizer T --out DIR``, then ``shards:DIR``); see
:func:`check_in_memory_size`. These specs read plain text only, so the size on disk is the text's size.

Example::

    data = prepare("brown", "byte", seq_len=256)
    data["train"].shape              # torch.Size([N, 256]), dtype int64, values in [0, 256)
    print(data.report())
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .paths import cache_root, data_root
from .text import CORPORA, DEFAULT_MIX, load_corpus
from .tokenizers import Tokenizer, check_tokenizer_spec, get_tokenizer, load_tokenizer

__all__ = [
    "CACHE_VERSION",
    "DEFAULT_MAX_IN_MEMORY_MB",
    "MAX_IN_MEMORY_ENV",
    "SPLITS",
    "PreparedText",
    "SplitStats",
    "split_documents",
    "concat_documents",
    "check_in_memory_size",
    "chunk_tokens",
    "max_in_memory_bytes",
    "parse_text_spec",
    "prepare",
    "text_spec_bytes",
]

CACHE_VERSION = 2  # bump when a loader or the stream format changes
SPLITS = ("train", "valid", "test")
TEXT_SPEC_NAMES = (*CORPORA, "mix", "text:PATH", "text8:PATH", "owt:DIR")
MAX_IN_MEMORY_ENV = "MDM_PRIME_MAX_IN_MEMORY_MB"
DEFAULT_MAX_IN_MEMORY_MB = 256.0
_STREAMING_TOKENIZERS = ("byte", "text8", "gpt2")  # fixed tokenizers data prepare --out accepts by name


def parse_text_spec(spec: str) -> tuple[str, str | None]:
    """``"brown"`` → ``("brown", None)``; ``"text:/a/b.txt"`` → ``("text", "/a/b.txt")``; ``"mix:brown+kjv"``.

    Raises ValueError (listing the valid specs) for anything else; does no I/O.
    """
    if not isinstance(spec, str):
        raise TypeError(f"text spec must be a str, got {type(spec).__name__}")
    name, sep, arg = spec.partition(":")
    if name in CORPORA and not sep:
        return name, None
    if name == "mix":
        parts = arg.split("+") if sep else list(DEFAULT_MIX)
        bad = [p for p in parts if p not in CORPORA]
        if bad or not parts:
            raise ValueError(
                f"text spec {spec!r}: mix:A+B+... takes corpora from {sorted(CORPORA)}, got {bad}"
            )
        return "mix", "+".join(parts)
    if name in ("text", "text8", "owt"):
        if not arg:
            raise ValueError(f"text spec {spec!r}: {name}:PATH needs a path")
        return name, arg
    raise ValueError(f"unknown text spec {spec!r}; expected one of {list(TEXT_SPEC_NAMES)}")


def max_in_memory_bytes() -> float:
    """The largest user-supplied text source (bytes on disk) the in-memory path reads:
    ``$MDM_PRIME_MAX_IN_MEMORY_MB`` MB (10^6 bytes; ``inf`` for no limit), default 256 MB."""
    raw = os.environ.get(MAX_IN_MEMORY_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IN_MEMORY_MB * 1e6
    try:
        mb = float(raw)
    except ValueError:
        mb = math.nan
    if not mb > 0:
        raise ValueError(f"{MAX_IN_MEMORY_ENV}={raw!r} must be a number of MB > 0 (or inf for no limit)")
    return mb * 1e6


def text_spec_bytes(spec: str) -> int | None:
    """Bytes on disk that a user-supplied text spec reads: the file of ``text:PATH`` / ``text8:PATH``,
    the ``*.txt`` files under ``owt:DIR``. ``None`` for installed corpora (fixed, small) and for paths
    the loaders will refuse anyway (missing, a folder for a file…). Reads no text."""
    name, arg = parse_text_spec(spec)
    if name not in ("text", "text8", "owt"):
        return None
    path = Path(arg).expanduser()
    if name == "owt":
        return sum(f.stat().st_size for f in path.rglob("*.txt") if f.is_file()) if path.is_dir() else None
    return path.stat().st_size if path.is_file() else None


def check_in_memory_size(spec: str, tokenizer_spec: str | None = None) -> None:
    """Refuse, before anything is read, a text spec too large for the in-memory path.

    Raises:
        ValueError: one line naming the spec, its size, the limit, the streaming command to use
            instead, and ``$MDM_PRIME_MAX_IN_MEMORY_MB`` to raise the limit.
    """
    size = text_spec_bytes(spec)
    limit = max_in_memory_bytes()
    if size is None or size <= limit:
        return
    tok = tokenizer_spec if tokenizer_spec in _STREAMING_TOKENIZERS else "gpt2" if tokenizer_spec else "T"
    mb = size / 1e6
    raise ValueError(
        f"{spec} holds {f'{mb:,.1f}' if mb >= 0.1 else f'{mb:.2g}'} MB of text, more than the "
        f"{limit / 1e6:,.10g} MB limit of the "
        f"in-memory data path; stream it instead: mdm-prime data prepare {shlex.quote(spec)} "
        f"--tokenizer {tok} --out DIR, then use --data shards:DIR "
        f"(or, with the RAM for it, raise the limit: {MAX_IN_MEMORY_ENV}=MB)"
    )


def _hash01(seed: int, doc: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{doc}".encode("utf-8", errors="surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_documents(
    docs: list[str],
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    seed: int = 0,
    mode: str = "hash",
) -> dict[str, list[int]]:
    """Assign each document index to ``train`` / ``valid`` / ``test``.

    Args:
        docs: the documents.
        fractions: target fractions of documents (train, valid, test), non-negative, summing to 1.
        seed: changes the hash-based assignment.
        mode: ``"hash"`` — document ``i`` goes where ``u = sha256(seed, docs[i])`` ∈ [0, 1) falls
            (stable under adding/reordering documents; identical documents share a split);
            ``"contiguous"`` — the first ``round(f_train·n)`` documents, then valid, then test.

    Returns:
        ``{"train": [indices], "valid": [...], "test": [...]}``, indices ascending.
    """
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    if mode == "hash":
        edges = (fr[0], fr[0] + fr[1])
        for i, d in enumerate(docs):
            u = _hash01(seed, d)
            out["train" if u < edges[0] else "valid" if u < edges[1] else "test"].append(i)
    elif mode == "contiguous":
        n = len(docs)
        a, b = round(fr[0] * n), round((fr[0] + fr[1]) * n)
        out = {"train": list(range(a)), "valid": list(range(a, b)), "test": list(range(b, n))}
    else:
        raise ValueError(f"split mode must be 'hash' or 'contiguous', got {mode!r}")
    return out


def concat_documents(token_docs: list[np.ndarray], eos_id: int) -> np.ndarray:
    """Concatenate token arrays, each followed by ``eos_id``: ``d0 eos d1 eos …`` → ``int64 [T]``."""
    if not token_docs:
        return np.zeros(0, dtype=np.int64)
    eos = np.array([eos_id], dtype=np.int64)
    return np.concatenate([x for d in token_docs for x in (np.asarray(d, dtype=np.int64), eos)])


def chunk_tokens(stream: np.ndarray | torch.Tensor, seq_len: int) -> torch.Tensor:
    """Cut a token stream ``[T]`` into non-overlapping ``LongTensor[T // L, L]`` (tail dropped)."""
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    t = torch.as_tensor(np.asarray(stream), dtype=torch.long)
    if t.dim() != 1:
        raise ValueError(f"stream must be 1-D, got shape {tuple(t.shape)}")
    n = t.numel() // seq_len
    return t[: n * seq_len].reshape(n, seq_len).clone()


@dataclass(frozen=True)
class SplitStats:
    """Sizes of one split: documents, UTF-8 bytes and characters of its text, tokens (incl. one
    separator per document), chunks of ``seq_len`` and the tokens dropped at the tail."""

    documents: int
    bytes: int
    characters: int
    tokens: int
    chunks: int
    dropped_tokens: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(self.tokens - self.documents, 1)


@dataclass
class PreparedText:
    """Output of :func:`prepare`. ``data["train"]`` is ``LongTensor[N, seq_len]`` with ids in ``[0, C)``."""

    spec: str
    tokenizer: Tokenizer
    seq_len: int
    splits: dict[str, torch.Tensor]
    stats: dict[str, SplitStats]
    split_mode: str
    cache_dir: Path | None
    streams: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def __getitem__(self, split: str) -> torch.Tensor:
        if split not in self.splits:
            raise KeyError(f"no split {split!r}; have {list(self.splits)}")
        return self.splits[split]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def sizes(self) -> dict[str, dict[str, float]]:
        """Per split: documents, bytes, characters, tokens, chunks, dropped_tokens, bytes_per_token."""
        return {s: {**st.__dict__, "bytes_per_token": st.bytes_per_token} for s, st in self.stats.items()}

    def report(self) -> str:
        """A human-readable size table."""
        lines = [
            f"data {self.spec}  tokenizer {self.tokenizer.name} (C = {self.vocab_size}, separator {self.tokenizer.eos_id})"
            f"  seq_len {self.seq_len}  split by {self.split_mode}",
            f"{'split':<6} {'documents':>10} {'MB':>8} {'tokens':>12} {'chunks':>9} {'bytes/token':>12}",
        ]
        for s, st in self.stats.items():
            lines.append(
                f"{s:<6} {st.documents:>10,} {st.bytes / 1e6:>8.2f} {st.tokens:>12,} {st.chunks:>9,} {st.bytes_per_token:>12.3f}"
            )
        if self.cache_dir is not None:
            lines.append(f"cache  {self.cache_dir}")
        return "\n".join(lines)


def _source_fingerprint(name: str, arg: str | None, root) -> list:
    """Sizes and mtimes of the files a spec reads, so that edited sources invalidate the cache."""
    if name in ("text", "text8"):
        paths = [Path(arg).expanduser()]
    elif name == "owt":
        paths = sorted(Path(arg).expanduser().rglob("*.txt"))
    else:
        from .install import marker_path

        paths = [marker_path(n, root) for n in (arg.split("+") if name == "mix" else [name])]
    out = []
    for p in paths:
        st = p.stat() if p.exists() else None
        out.append([str(p.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None])
    return out


def _stream_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.int32


def prepare(
    spec: str,
    tokenizer_spec: str = "byte",
    seq_len: int = 256,
    *,
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    seed: int = 0,
    split_mode: str | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
) -> PreparedText:
    """Tokenize a text spec and cut it into ``LongTensor[N, seq_len]`` chunks per split (cached).

    Args:
        spec: text data spec (see :func:`parse_text_spec`).
        tokenizer_spec: ``byte`` | ``char`` | ``text8`` | ``gpt2`` | ``bpe:N``.
        seq_len: chunk length ``L`` in tokens.
        fractions: document fractions for (train, valid, test).
        seed: seed of the hash split.
        split_mode: ``"hash"`` (default) or ``"contiguous"`` (default for ``text8:PATH``).
        cache: read/write the token cache.
        cache_dir: cache folder (default ``<data root>/cache/text``).
        root: data root for installed corpora.

    Returns:
        :class:`PreparedText` (``data["train"]``, ``data.tokenizer``, ``data.stats``, ``data.report()``).

    Raises:
        ValueError / TypeError: bad spec, tokenizer spec, seq_len, fractions — before any work; a
            user-supplied source over the in-memory limit (:func:`check_in_memory_size`) — before
            anything is read.
        MissingDataError: the corpus is not installed or the path does not exist.
    """
    name, arg = parse_text_spec(spec)
    check_tokenizer_spec(tokenizer_spec)
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    mode = split_mode or ("contiguous" if name == "text8" else "hash")
    split_documents([], fractions, seed, mode)  # validates fractions and mode
    check_in_memory_size(spec, tokenizer_spec)

    key_obj = {
        "version": CACHE_VERSION,
        "spec": spec,
        "source": _source_fingerprint(name, arg, root),
        "tokenizer": tokenizer_spec,
        "fractions": [round(float(f), 9) for f in fractions],
        "seed": seed,
        "mode": mode,
    }
    key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()[:20]
    folder = (Path(cache_dir) if cache_dir is not None else cache_root(root) / "text") / key
    if cache and (folder / "meta.json").exists():
        meta = json.loads((folder / "meta.json").read_text())
        tok = load_tokenizer(folder / "tokenizer")
        streams = {s: np.load(folder / f"{s}.npy") for s in SPLITS}
    else:
        tok, streams, meta = _build(name, arg, tokenizer_spec, fractions, seed, mode, root)
        meta["key"] = key_obj
        if cache:
            _write_cache(folder, tok, streams, meta)
    return _finish(spec, tok, seq_len, streams, meta, folder if cache else None)


def _build(name, arg, tokenizer_spec, fractions, seed, mode, root):
    docs = load_corpus(name, arg, data_root(root) if root is not None else None)
    idx = split_documents(docs, fractions, seed, mode)
    if any(not idx[s] for s, f in zip(SPLITS, fractions) if f > 0):
        mode = "stream"  # too few documents: cut the token stream instead
        idx = {"train": list(range(len(docs))), "valid": [], "test": []}
    train_docs = [docs[i] for i in idx["train"]]
    # char: the alphabet of *all* documents (else valid/test could hold unseen characters; the alphabet
    # carries no information about their frequencies); bpe:N: merges learnt on the training documents.
    tok = get_tokenizer(
        tokenizer_spec, corpus_docs=docs if tokenizer_spec == "char" else train_docs, root=root
    )
    if mode == "stream":  # every document is train for the tokenizer; the stream is cut 90/5/5 below
        whole = concat_documents(tok.encode_batch(docs), tok.eos_id)
        a, b = round(fractions[0] * len(whole)), round((fractions[0] + fractions[1]) * len(whole))
        streams = {"train": whole[:a], "valid": whole[a:b], "test": whole[b:]}
        text = "".join(docs)
        counts = {
            s: {
                "documents": 0,
                "bytes": round(len(text.encode()) * (len(streams[s]) / max(len(whole), 1))),
                "characters": round(len(text) * (len(streams[s]) / max(len(whole), 1))),
            }
            for s in SPLITS
        }
        counts["train"]["documents"] = len(docs)
    else:
        streams, counts = {}, {}
        for s in SPLITS:
            split_docs = [docs[i] for i in idx[s]]
            streams[s] = concat_documents(tok.encode_batch(split_docs), tok.eos_id)
            counts[s] = {
                "documents": len(split_docs),
                "bytes": sum(len(d.encode("utf-8")) for d in split_docs),
                "characters": sum(map(len, split_docs)),
            }
    streams = {s: v.astype(_stream_dtype(tok.vocab_size)) for s, v in streams.items()}
    return tok, streams, {"counts": counts, "split_mode": mode}


def _write_cache(folder: Path, tok: Tokenizer, streams: dict[str, np.ndarray], meta: dict) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        tok.save(tmp / "tokenizer")
        for s, arr in streams.items():
            np.save(tmp / f"{s}.npy", arr)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same entry first; keep theirs
            if not (folder / "meta.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _finish(spec, tok, seq_len, streams, meta, folder) -> PreparedText:
    splits, stats = {}, {}
    for s in SPLITS:
        stream = streams[s]
        splits[s] = chunk_tokens(stream, seq_len)
        c = meta["counts"][s]
        stats[s] = SplitStats(
            c["documents"],
            c["bytes"],
            c["characters"],
            int(len(stream)),
            splits[s].shape[0],
            int(len(stream) - splits[s].numel()),
        )
    if splits["train"].shape[0] == 0:
        raise ValueError(
            f"{spec}: the training split has {stats['train'].tokens} tokens, fewer than seq_len = {seq_len}"
        )
    return PreparedText(spec, tok, seq_len, splits, stats, meta["split_mode"], folder, streams)
