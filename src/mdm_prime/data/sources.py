"""Document sources that stream: a corpus one document (``str``) at a time, in a fixed order.

Used by :func:`mdm_prime.data.prepare.prepare_shards`, which tokenizes corpora far larger than memory.
Memory is bounded by one record batch (Arrow / Parquet) or one line / file, never by the corpus.

A spec is parsed by its kind in :data:`mdm_prime.data.registry.DATA_KINDS` (:func:`open_source` is the
entry point; the table of specs is in :mod:`mdm_prime.data.registry`). This module holds what depends
on the file format only: the readers, one per format in :data:`READERS` (``owt`` reads like ``txt``),
the suffixes that recognise a bare path's format (:data:`SUFFIXES`), and the listing of a folder's files.

====================  ===========================================================================
format                documents
====================  ===========================================================================
``txt`` / ``owt``     every ``*.txt`` file under a folder (recursive, sorted paths), one per file,
                      stripped, empty files skipped (the same documents as ``owt:DIR`` in
                      :func:`mdm_prime.data.text.load_owt`)
``jsonl``             a ``.jsonl`` / ``.jsonl.gz`` file, or every such file under a folder: one
                      document per line, the string field ``text_field`` (default ``"text"``)
``parquet``           a ``.parquet`` file or every one under a folder: column ``text_field``
``hf``                a Hugging Face ``datasets`` folder, read directly with pyarrow (no ``datasets``
                      needed): ``save_to_disk`` output of a ``Dataset`` (``state.json`` lists its
                      ``.arrow`` files) or of a ``DatasetDict`` (``dataset_dict.json``; the split
                      ``hf_split``, default ``train``), or any folder of ``.arrow`` files (the
                      ``load_dataset`` cache). Arrow IPC stream files (what ``datasets`` writes) and
                      IPC files are both read
``corpus``            the installed offline corpora and ``text:PATH`` / ``text8:PATH`` through their
                      loaders in :mod:`mdm_prime.data.text` (small: read into memory once)
====================  ===========================================================================

Empty (whitespace-only) documents are skipped everywhere. Example::

    src = open_source("jsonl:/data/owt", text_field="text")
    for doc in src:           # str, one document at a time
        ...
    src.fingerprint()         # {"spec": ..., "files": [[path, size, mtime_ns], ...], "sha256": ...}
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .paths import MissingDataError

__all__ = ["JSONL_SUFFIXES", "READERS", "SOURCE_KINDS", "SUFFIXES", "DocumentSource", "open_source"]

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")
_ARROW_BATCH_ROWS = 1024


# ---------------------------------------------------------------------- readers: (file, text_field) → docs
def _field(record, text_field: str, where: str) -> str:
    if not isinstance(record, dict) or text_field not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(
            f"{where}: no text field {text_field!r} (found {keys}); "
            "choose the field with text_field= / --text-field"
        )
    text = record[text_field]
    if not isinstance(text, str):
        raise ValueError(f"{where}: field {text_field!r} is {type(text).__name__}, expected a string")
    return text


def _check_column(schema, path: Path, text_field: str) -> None:
    if text_field not in schema.names:
        raise ValueError(
            f"{path}: no column {text_field!r} (columns {schema.names}); "
            "choose it with text_field= / --text-field"
        )


def _read_txt(path: Path, text_field: str) -> Iterator[str]:
    yield path.read_text(encoding="utf-8", errors="replace").strip()


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    gz = path.name.lower().endswith(".gz")
    raw = gzip.open(path, "rb") if gz else open(path, "rb")
    with raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({e})") from None
            yield _field(record, text_field, f"{path}:{lineno}")


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    from ..extras import require

    require("pyarrow", "parquet: sources")
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    _check_column(pf.schema_arrow, path, text_field)
    for batch in pf.iter_batches(batch_size=_ARROW_BATCH_ROWS, columns=[text_field]):
        yield from (t for t in batch.column(0).to_pylist() if t is not None)


def _read_arrow(path: Path, text_field: str) -> Iterator[str]:
    from ..extras import require

    require("pyarrow", "hf: (Arrow) sources")
    import pyarrow as pa

    with pa.memory_map(str(path), "r") as source:
        try:
            reader = pa.ipc.open_stream(source)  # what `datasets` writes
        except pa.ArrowInvalid:
            source.seek(0)
            f = pa.ipc.open_file(source)
            reader = (f.get_batch(i) for i in range(f.num_record_batches))
            _check_column(f.schema, path, text_field)
        else:
            _check_column(reader.schema, path, text_field)
        for batch in reader:
            col = batch.column(batch.schema.get_field_index(text_field))
            for i in range(0, len(col), _ARROW_BATCH_ROWS):  # bounded Python objects at a time
                yield from (t for t in col.slice(i, _ARROW_BATCH_ROWS).to_pylist() if t is not None)


READERS = {
    "txt": _read_txt,
    "owt": _read_txt,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "hf": _read_arrow,
}
"""The reader of each file format: ``(path, text_field) → documents``."""
SUFFIXES = {"jsonl": JSONL_SUFFIXES, "parquet": (".parquet",), "hf": (".arrow",), "txt": (".txt",)}
"""File name endings that recognise a format (the first match wins)."""
SOURCE_KINDS = (*READERS, "corpus")
_FOLDER_FORMATS = ("txt", "owt")  # one document per file: a folder, never a single file


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    return next((fmt for fmt, ends in SUFFIXES.items() if name.endswith(ends)), None)


def _files_under(path: Path, kind: str) -> list[Path]:
    """Files of ``kind`` under ``path`` (itself if it is a file), sorted by relative path."""
    if path.is_file():
        return [path]
    kind = "txt" if kind == "owt" else kind
    files = [p for p in path.rglob("*") if p.is_file() and _suffix_kind(p) == kind]
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())


class DocumentSource:
    """A corpus as an iterable of documents (``str``) in a fixed order.

    Attributes:
        spec: the spec it was opened from. kind: one of :data:`SOURCE_KINDS`.
        files: the files it reads, in order (empty for installed corpora).
        text_field: the JSON / column field holding the text (jsonl, parquet, hf).
    """

    def __init__(
        self,
        spec: str,
        kind: str,
        files: list[Path],
        text_field: str = "text",
        corpus: tuple[str, str | None] | None = None,
        root=None,
    ) -> None:
        self.spec, self.kind, self.files, self.text_field = spec, kind, files, text_field
        self._corpus, self._root = corpus, root

    def __repr__(self) -> str:
        return f"DocumentSource({self.spec!r}, kind={self.kind!r}, files={len(self.files)})"

    def __iter__(self) -> Iterator[str]:
        for doc in self._raw():
            if doc.strip():
                yield doc

    def total_bytes(self) -> int:
        """Bytes on disk of the source files (compressed size for ``.gz``); 0 for installed corpora."""
        return sum(p.stat().st_size for p in self.files)

    def fingerprint(self) -> dict:
        """Spec, text field, and (path, size, mtime_ns) of every file read, with a sha256 over them.

        Installed corpora fingerprint their install marker file. Used to refuse resuming a
        preparation over a changed source.
        """
        if self._corpus is not None:
            from .dataset import _source_fingerprint

            files = _source_fingerprint(self._corpus[0], self._corpus[1], self._root)
        else:
            files = []
            for p in self.files:
                st = p.stat()
                files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        body = {"spec": self.spec, "kind": self.kind, "text_field": self.text_field, "files": files}
        sha = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return {**body, "sha256": sha}

    def _raw(self) -> Iterator[str]:
        if self.kind == "corpus":
            from .text import load_corpus

            yield from load_corpus(self._corpus[0], self._corpus[1], self._root)
            return
        read = READERS.get(self.kind)
        if read is None:  # pragma: no cover - guarded by open_source
            raise ValueError(f"unknown source kind {self.kind!r}")
        for p in self.files:
            yield from read(p, self.text_field)


def _hf_files(path: Path, split: str) -> list[Path]:
    """The ``.arrow`` files of a ``datasets`` folder in the order the dataset lists them."""
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise ValueError(
                f"hf:{path}: no split {split!r} in this DatasetDict (splits {splits}); "
                "choose one with hf_split= / --hf-split"
            )
        path = path / split
    state = path / "state.json"
    if state.exists():
        names = [d["filename"] for d in json.loads(state.read_text()).get("_data_files", [])]
        files = [path / n for n in names]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise MissingDataError(f"hf:{path}: state.json lists files that do not exist: {missing[:3]}")
        return files
    return _files_under(path, "hf")


def path_format(spec: str, path: Path) -> str:
    """The format of an existing bare path: a file by its suffix, a folder by its ``datasets`` markers
    or by the one format of the files under it. Raises ValueError when it cannot tell."""
    if path.is_file():
        kind = _suffix_kind(path)
        if kind is None:
            raise ValueError(
                f"source {spec!r}: cannot tell the format of {path.name!r}; expected .txt, "
                f"{', '.join(JSONL_SUFFIXES)}, .parquet or .arrow (or use a prefix like jsonl:)"
            )
        return kind
    if any((path / m).exists() for m in ("dataset_dict.json", "state.json", "dataset_info.json")):
        return "hf"
    found = {k for p in path.rglob("*") if p.is_file() and (k := _suffix_kind(p))}
    if len(found) != 1:
        raise ValueError(
            f"source {spec!r}: the folder holds {sorted(found) or 'no'} kinds of files; "
            "name the kind with a prefix (txt:, jsonl:, parquet:, hf:)"
        )
    return found.pop()


def open_files(spec: str, kind: str, path: Path, text_field: str, hf_split: str) -> DocumentSource:
    """The files of format ``kind`` at ``path`` (a file, or the files under a folder) as a source.

    Raises:
        MissingDataError: ``path`` does not exist. ValueError: a file for a folder format, no files.
    """
    if not path.exists():
        raise MissingDataError(f"source {spec!r}: {str(path)!r} does not exist")
    if kind in _FOLDER_FORMATS and not path.is_dir():
        raise ValueError(f"source {spec!r}: {kind}:DIR expects a folder of .txt files, got a file")
    files = _hf_files(path, hf_split) if kind == "hf" and path.is_dir() else _files_under(path, kind)
    if not files:
        raise ValueError(f"source {spec!r}: no {kind} files under {str(path)!r}")
    return DocumentSource(spec, kind, files, text_field)


def open_source(
    spec: str | os.PathLike,
    text_field: str = "text",
    hf_split: str = "train",
    root: str | os.PathLike | None = None,
) -> DocumentSource:
    """Open a document source. Checks paths and fields' presence, reads no text. The spec is parsed by
    its kind (:func:`mdm_prime.data.registry.open_documents`, the table of specs there).

    Args:
        spec: ``txt:DIR``, ``owt:DIR``, ``jsonl:PATH``, ``parquet:PATH``, ``hf:DIR``, an installed
            corpus spec (``brown``, ``mix``, ``mix:a+b``, ``text:PATH``, ``text8:PATH``), or a bare path.
        text_field: field / column holding the text (jsonl, parquet, hf).
        hf_split: the split of a ``DatasetDict`` folder.
        root: data root for installed corpora.

    Raises:
        TypeError: ``spec`` is not a str / path. ValueError: unknown spec, no files of the kind.
        MissingDataError: the path does not exist.
    """
    from .registry import open_documents

    return open_documents(spec, text_field, hf_split, root)
