"""Token shards on disk, read by memory map: the format written by :mod:`mdm_prime.data.prepare`.

Layout of a prepared folder ``OUT``::

    OUT/index.json              what is there (below); written last, atomically, after every shard
    OUT/tokenizer/              the tokenizer (Tokenizer.save), so training needs no installed files
    OUT/{train,valid,test}/NNNNNN.bin   token ids, raw little-endian uint16 (uint32 when C > 65536);
                                        every document is followed by the separator ``eos_id``
    OUT/{train,valid,test}/NNNNNN.idx   int64 end offset (exclusive, after the separator) of each
                                        document in the shard, ascending

Shard ``NNNNNN`` of every split holds the documents of the ``NNNNNN``-th group of the source (groups
are consecutive runs of documents of about ``shard_mb`` MB of text), in source order. ``index.json``::

    {"format": "mdm-prime-shards", "version": 1, "complete": true, "dtype": "uint16",
     "vocab_size": 50257, "eos_id": 50256,
     "tokenizer": {"spec": "gpt2", "name": "gpt2", "fingerprint": "...", "config": {...}},
     "source": {"spec": ..., "files": [[path, size, mtime_ns], ...], "sha256": ...},
     "settings": {"seed": 0, "fractions": [0.9, 0.05, 0.05], "shard_mb": 64, "batch_mb": 1},
     "groups_done": 3, "documents_consumed": 12345,
     "splits": {"train": {"tokens": T, "documents": D, "bytes": B, "characters": N,
                          "shards": [{"name": "train/000000.bin", "tokens": ..., "documents": ...,
                                      "bytes": ..., "characters": ...}, ...]}, ...}}

Reading: :class:`ShardedTokens` opens each shard lazily with ``np.memmap`` and draws training windows
with all randomness from a caller's ``torch.Generator`` (:meth:`ShardedTokens.sample_windows`), so
that resuming from a saved generator state reproduces the batches exactly and every DDP rank, slicing
one global batch, sees the same data as a single process. Example::

    sh = ShardedTokens("/data/owt-gpt2")
    g = torch.Generator().manual_seed(0)
    x = sh.sample_windows(8, 1024, g)       # LongTensor[8, 1024], ids in [0, sh.vocab_size)
    v = sh.valid_windows(512, 1024)         # LongTensor[<=512, 1024], the same on every call
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "SPLITS",
    "WINDOW_MODES",
    "ShardedTokens",
    "read_index",
    "shards_task_kwargs",
    "to_device",
    "token_dtype",
]

FORMAT = "mdm-prime-shards"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
SPLITS = ("train", "valid", "test")
WINDOW_MODES = ("random", "doc")


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (``vocab_size <= 65536``), else ``uint32`` (little-endian)."""
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if vocab_size > 2**32:
        raise ValueError(f"vocab_size {vocab_size} does not fit uint32 token shards")
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def read_index(directory: str | os.PathLike) -> dict:
    """The parsed ``index.json`` of a shard folder (FileNotFoundError / ValueError if absent or foreign)."""
    path = Path(directory).expanduser() / INDEX_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: {directory!s} is not a prepared shard folder "
            "(create one with `mdm-prime data prepare SPEC --tokenizer T --out DIR`)"
        )
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT or index.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format {index.get('format')!r} version {index.get('version')!r}, "
            f"expected {FORMAT!r} version {FORMAT_VERSION}"
        )
    return index


class ShardedTokens:
    """A prepared shard folder, memory-mapped lazily (nothing is read until a window is drawn).

    Args:
        directory: the folder written by :func:`mdm_prime.data.prepare.prepare_shards`.
        mode: default window mode of :meth:`sample_windows`: ``"random"`` (uniform start positions)
            or ``"doc"`` (document-aligned chunks).
        allow_incomplete: read a preparation that has not finished (its finished shards only).

    Raises:
        FileNotFoundError: no ``index.json``. ValueError: foreign format, unknown mode, or an
        unfinished preparation without ``allow_incomplete``.
    """

    def __init__(
        self, directory: str | os.PathLike, mode: str = "random", allow_incomplete: bool = False
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.index = read_index(self.directory)
        if not self.index.get("complete") and not allow_incomplete:
            raise ValueError(
                f"{self.directory}: the preparation has not finished "
                f"({self.index.get('groups_done')} groups done); re-run the same prepare command "
                "to resume it, or pass allow_incomplete=True"
            )
        self._check_mode(mode)
        self.mode = mode
        self.dtype = np.dtype(self.index["dtype"])
        self.vocab_size = int(self.index["vocab_size"])
        self.eos_id = int(self.index["eos_id"])
        self._tokens: dict[tuple[str, int], np.ndarray] = {}
        self._ends: dict[tuple[str, int], np.ndarray] = {}
        self._pieces: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._tokenizer = None

    def __getstate__(self) -> dict:
        # pickling (DataLoader workers, spawn) must not copy the mapped arrays: reopen them lazily
        return {**self.__dict__, "_tokens": {}, "_ends": {}, "_pieces": {}}

    # ------------------------------------------------------------------ metadata
    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode not in WINDOW_MODES:
            raise ValueError(f"window mode must be one of {WINDOW_MODES}, got {mode!r}")

    def _split(self, split: str) -> dict:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.index["splits"][split]

    def shard_sizes(self, split: str = "train") -> np.ndarray:
        """Tokens per shard of ``split`` (``int64 [num_shards]``)."""
        return np.array([s["tokens"] for s in self._split(split)["shards"]], dtype=np.int64)

    def num_tokens(self, split: str = "train") -> int:
        """Tokens of ``split``, separators included."""
        return int(self._split(split)["tokens"])

    def num_documents(self, split: str = "train") -> int:
        return int(self._split(split)["documents"])

    def characters_per_token(self, split: str = "valid") -> float | None:
        """Characters of text per token (separators counted as tokens), or None for an empty split."""
        s = self._split(split)
        return s["characters"] / s["tokens"] if s["tokens"] else None

    @property
    def tokenizer(self):
        """The tokenizer saved with the shards (loaded on first use)."""
        if self._tokenizer is None:
            from .tokenizers import load_tokenizer

            self._tokenizer = load_tokenizer(self.directory / "tokenizer")
        return self._tokenizer

    def report(self) -> str:
        tok = self.index["tokenizer"]
        lines = [
            f"shards {self.directory}  tokenizer {tok['name']} "
            f"(C = {self.vocab_size}, separator {self.eos_id})"
            f"  dtype {self.dtype.name}",
            f"{'split':<6} {'shards':>7} {'documents':>11} {'MB text':>9} {'tokens':>14}",
        ]
        for s in SPLITS:
            sp = self._split(s)
            lines.append(
                f"{s:<6} {len(sp['shards']):>7} {sp['documents']:>11,} {sp['bytes'] / 1e6:>9.1f} "
                f"{sp['tokens']:>14,}"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ raw access
    def tokens(self, split: str, shard: int) -> np.ndarray:
        """The memory-mapped ids of one shard (``dtype [tokens]``, read-only)."""
        key = (split, shard)
        if key not in self._tokens:
            entry = self._split(split)["shards"][shard]
            path = self.directory / entry["name"]
            n = int(entry["tokens"])
            if path.stat().st_size != n * self.dtype.itemsize:
                raise ValueError(
                    f"{path}: {path.stat().st_size} bytes, expected {n} tokens of {self.dtype.name}"
                )
            self._tokens[key] = np.memmap(path, dtype=self.dtype, mode="r", shape=(n,))
        return self._tokens[key]

    def doc_ends(self, split: str, shard: int) -> np.ndarray:
        """Exclusive end offsets of the documents of one shard (``int64 [documents]``, memory-mapped)."""
        key = (split, shard)
        if key not in self._ends:
            entry = self._split(split)["shards"][shard]
            path = self.directory / entry["name"].replace(".bin", ".idx")
            self._ends[key] = np.memmap(path, dtype="<i8", mode="r", shape=(int(entry["documents"]),))
        return self._ends[key]

    def iter_documents(self, split: str = "train"):
        """Yield each document's ids (``int64`` array, separator excluded) in source order."""
        for i in range(len(self._split(split)["shards"])):
            toks, start = self.tokens(split, i), 0
            for end in self.doc_ends(split, i):
                yield np.asarray(toks[start : end - 1], dtype=np.int64)
                start = int(end)

    def read(self, split: str, start: int, length: int) -> np.ndarray:
        """``length`` ids of the split's stream (shards concatenated in order) from ``start`` (``int64``)."""
        sizes = self.shard_sizes(split)
        cum = np.concatenate([[0], np.cumsum(sizes)])
        if start < 0 or start + length > cum[-1]:
            raise ValueError(
                f"range [{start}, {start + length}) outside the {split} stream of {cum[-1]} tokens"
            )
        out = np.empty(length, dtype=np.int64)
        pos, i = 0, int(np.searchsorted(cum, start, side="right") - 1)
        while pos < length:
            off = start + pos - int(cum[i])
            take = min(length - pos, int(sizes[i]) - off)
            out[pos : pos + take] = self.tokens(split, i)[off : off + take]
            pos, i = pos + take, i + 1
        return out

    # ------------------------------------------------------------------ windows
    def _doc_pieces(self, split: str, shard: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Per shard: document starts and the cumulative count of ``seq_len`` pieces (``ceil(len/L)``
        per document)."""
        key = (split, shard, seq_len)
        if key not in self._pieces:
            ends = np.asarray(self.doc_ends(split, shard), dtype=np.int64)
            starts = np.concatenate([[0], ends[:-1]])
            pieces = -(-(ends - starts) // seq_len)
            self._pieces[key] = (starts, np.cumsum(pieces))
        return self._pieces[key]

    def num_windows(self, seq_len: int, split: str = "train", mode: str | None = None) -> int:
        """How many distinct windows :meth:`sample_windows` draws from (start positions or pieces)."""
        return int(self._window_counts(seq_len, split, mode or self.mode).sum())

    def _window_counts(self, seq_len: int, split: str, mode: str) -> np.ndarray:
        sizes = self.shard_sizes(split)
        if mode == "random":
            return np.maximum(sizes - seq_len + 1, 0)
        return np.array(
            [
                self._doc_pieces(split, i, seq_len)[1][-1] if sizes[i] >= seq_len and sizes[i] else 0
                for i in range(len(sizes))
            ],
            dtype=np.int64,
        )

    def sample_windows(
        self,
        n: int,
        seq_len: int,
        generator: torch.Generator,
        split: str = "train",
        mode: str | None = None,
        rows: slice | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` windows of ``seq_len`` consecutive ids: ``LongTensor[n, seq_len]``.

        All randomness is one ``torch.randint(0, W, (n,), generator=generator)`` call, so the same
        generator state gives the same windows (exact resume) and the draw consumes the generator the
        same way whatever the data. Windows never cross a shard boundary.

        Modes:
            ``"random"``: the start is uniform over the ``W = Σ_s (T_s − L + 1)`` positions at which a
                window fits inside shard ``s`` (``T_s`` tokens); a window may span documents (separated by
                ``eos_id``), as in the paper's concatenated OpenWebText.
            ``"doc"``: each document is cut into pieces of ``L`` from its first token; a draw picks one of
                the ``W = Σ_d ceil((len_d + 1) / L)`` pieces uniformly; a short last piece continues into the
                next document (start moved back when the shard ends). Windows start at document starts or
                ``k·L`` after them.

        ``rows`` (e.g. one DDP rank's slice of the global batch) reads only those rows of the ``n`` drawn,
        consuming the generator exactly as the full draw: ``sample_windows(n, L, g, rows=sl)`` equals
        ``sample_windows(n, L, g)[sl]``.

        Raises:
            TypeError: ``generator`` is not a torch.Generator. ValueError: bad ``n`` / ``seq_len`` /
            ``mode``, or no shard of the split holds ``seq_len`` tokens.
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        for name, v in (("n", n), ("seq_len", seq_len)):
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "n" else 1):
                raise ValueError(
                    f"{name} must be a {'non-negative' if name == 'n' else 'positive'} int, got {v!r}"
                )
        mode = mode or self.mode
        self._check_mode(mode)
        counts = self._window_counts(seq_len, split, mode)
        total = int(counts.sum())
        if total == 0:
            raise ValueError(
                f"{self.directory}: no {split} shard holds seq_len = {seq_len} tokens "
                f"(largest {int(self.shard_sizes(split).max(initial=0))})"
            )
        r = torch.randint(0, total, (n,), generator=generator).numpy()
        if rows is not None:
            if not isinstance(rows, slice):
                raise TypeError(f"rows must be a slice, got {type(rows).__name__}")
            r = r[rows]
            n = len(r)
        cum = np.cumsum(counts)
        shard = np.searchsorted(cum, r, side="right")
        local = r - (cum[shard] - counts[shard])
        out = np.empty((n, seq_len), dtype=np.int64)
        for j in range(n):
            s, k = int(shard[j]), int(local[j])
            toks = self.tokens(split, s)
            if mode == "doc":
                starts, cpieces = self._doc_pieces(split, s, seq_len)
                d = int(np.searchsorted(cpieces, k, side="right"))
                before = int(cpieces[d - 1]) if d else 0
                k = min(int(starts[d]) + (k - before) * seq_len, len(toks) - seq_len)
            out[j] = toks[k : k + seq_len]
        return torch.from_numpy(out)

    def valid_windows(self, n: int, seq_len: int, split: str = "valid") -> torch.Tensor:
        """A fixed held-out set: ``min(n, C)`` of the ``C = T // L`` non-overlapping chunks of the split's
        stream (shards concatenated), chunk ``floor(i·C/k)`` for ``i < k`` — spread over the whole split,
        the same on every call and every machine. ``LongTensor[k, seq_len]``.

        Raises:
            ValueError: the split has fewer than ``seq_len`` tokens, or bad ``n`` / ``seq_len``.
        """
        for name, v in (("n", n), ("seq_len", seq_len)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        chunks = self.num_tokens(split) // seq_len
        if chunks == 0:
            raise ValueError(
                f"{self.directory}: the {split} split has {self.num_tokens(split)} tokens, "
                f"fewer than seq_len = {seq_len}"
            )
        k = min(n, chunks)
        rows = [self.read(split, (i * chunks // k) * seq_len, seq_len) for i in range(k)]
        return torch.from_numpy(np.stack(rows))


def to_device(batch, device: torch.device | str, non_blocking: bool = True):
    """Move a tensor (or a tuple / list / dict of them) to ``device``; for CUDA, through pinned memory
    with a non-blocking copy, so the host→device transfer overlaps the previous step. On CPU (or
    without CUDA) tensors are returned as they are (``.to`` is a no-op)."""
    device = torch.device(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"to_device expects tensors (or containers of them), got {type(batch).__name__}")
    if device.type == "cuda" and batch.device.type == "cpu" and torch.cuda.is_available():
        if not batch.is_pinned():
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=non_blocking)
    return batch.to(device)


def shards_task_kwargs(
    shards: ShardedTokens | str | os.PathLike,
    seq_len: int,
    *,
    spec: str | None = None,
    mode: str | None = None,
    n_valid: int = 512,
    n_test: int = 512,
    tokenizer_spec: str | None = None,
) -> dict:
    """Keyword arguments of an *infinite* text task (:class:`mdm_prime.tasks.ShardsTask`, the task of
    a ``shards:DIR`` spec) drawn from shards::

        ShardsTask(**shards_task_kwargs(source.load(), cfg.seq_len, spec=cfg.data, tokenizer_spec=cfg.tokenizer))

    ``sampler(n, g)`` is :meth:`ShardedTokens.sample_windows` (all randomness from the trainer's
    generator); ``valid_tokens`` / ``test_tokens`` are :meth:`ShardedTokens.valid_windows` (at most
    ``n_valid`` / ``n_test`` chunks; ``test_tokens`` is None when the test split is shorter than
    ``seq_len``); ``characters_per_token`` is measured on the valid split, separators counted as tokens
    (as for in-memory text tasks), for bits per character.

    Raises:
        ValueError: ``tokenizer_spec`` is given (not ``""``/``"none"``) and differs from the shards'
        tokenizer; or the valid split is shorter than ``seq_len``.
    """
    sh = shards if isinstance(shards, ShardedTokens) else ShardedTokens(shards)
    if mode is not None:
        sh._check_mode(mode)
    mode = mode or sh.mode
    tok_spec = sh.index["tokenizer"]["spec"]
    if tokenizer_spec not in (None, "", "none", tok_spec):
        raise ValueError(
            f"tokenizer {tokenizer_spec!r} requested, but {sh.directory} was prepared with "
            f"{tok_spec!r}; pass tokenizer {tok_spec!r} or prepare the data again"
        )
    valid = sh.valid_windows(n_valid, seq_len, "valid")
    test = sh.valid_windows(n_test, seq_len, "test") if sh.num_tokens("test") >= seq_len else None
    return dict(
        spec=spec or f"shards:{sh.directory}",
        num_classes=sh.vocab_size,
        seq_len=seq_len,
        valid_tokens=valid,
        test_tokens=test,
        sampler=lambda n, g: sh.sample_windows(n, seq_len, g, mode=mode),
        tokenizer=sh.tokenizer,
        characters_per_token=sh.characters_per_token("valid"),
        info={
            "tokenizer": sh.index["tokenizer"]["name"],
            "split_mode": "hash",
            "shards": str(sh.directory),
            "window_mode": mode,
            "train_tokens": sh.num_tokens("train"),
            "train_documents": sh.num_documents("train"),
        },
    )
