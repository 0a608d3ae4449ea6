"""One registry of data kinds, :data:`DATA_KINDS`: a spec ``NAME`` or ``NAME:REST`` is parsed, loaded in
memory, streamed and given its task type by the one :class:`DataKind` registered under ``NAME``.

Entry points: :func:`parse_data_spec` (alias :func:`load_data`) → a typed :class:`DataSource` for the
in-memory path, and :func:`open_documents` (called by :func:`mdm_prime.data.sources.open_source`) → a
:class:`~.sources.DocumentSource` that streams documents for ``data prepare --out`` (shards).

===========================================  =========  ===============================================
spec                                         kind       ``source.load(...)`` returns
===========================================  =========  ===============================================
``brown`` ``austen`` ``kjv`` ``gcide``       text       :class:`~.dataset.PreparedText` via
``nlp-corpus`` ``mix`` ``mix:brown+kjv``                ``load(tokenizer_spec="byte", seq_len=256, ...)``
``text:PATH`` ``text8:PATH`` ``owt:DIR``
``mnist`` ``fashion-mnist`` ``digits``       image      :class:`~.images.ImageData` (``load(pad_to=,
``cifar10:PATH`` (+ ``:pad=32,levels=16``)              levels=, n_valid=, seed=)``)
``toy`` ``toy:camera`` ``toy:camera,size=512``  toy     :class:`~.toy.ImageDensity`
``markov:states=8,concentration=0.5,seed=0``  synthetic  :class:`~.synthetic.MarkovChain`
``hmm:states=4,vocab=8,concentration=0.5,seed=0``        :class:`~.synthetic.HiddenMarkovModel`
``shards:DIR`` ``shards:DIR,mode=doc``       shards     :class:`~.shards.ShardedTokens` (folder from
                                                        ``data prepare … --out DIR``; windows ``random``
                                                        or document-aligned ``doc``); a task via
                                                        :func:`~.shards.shards_task_kwargs`
===========================================  =========  ===============================================

The kind (``source.kind``) is the task type, a key of :data:`mdm_prime.tasks.TASK_TYPES`. Image options
go after a colon (``mnist:pad=32,levels=16``); for ``cifar10`` after the path, separated by a comma is
ambiguous, so pass them to ``load()``.

Streamed (:func:`open_documents`; a bare path is recognised by its extension or folder layout, see
:func:`~.sources.path_format`): ``txt:DIR`` and ``owt:DIR`` (every ``*.txt`` file, one document each),
``jsonl:PATH``, ``parquet:PATH``, ``hf:DIR`` (formats in :mod:`~.sources`; all but ``owt`` streaming
only), the installed corpora, ``mix``, ``mix:A+B``, ``text:PATH``, ``text8:PATH`` (through their loaders).

Adding a data set is one entry in :data:`DATA_KINDS`: an instance of an existing :class:`DataKind` class
(e.g. ``Images("svhn")`` once :mod:`~.images` reads it) or a small subclass with ``parse`` / ``load`` /
``open`` (see :class:`DataKind`). Example::

    src = load_data("mnist:pad=32")
    src.kind                      # "image"
    data = src.load()             # ImageData; data["train"].images: LongTensor[55000, 1, 32, 32]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dataset import check_in_memory_size, parse_text_spec, prepare
from .paths import MissingDataError
from .sources import DocumentSource, open_files, path_format
from .text import CORPORA

__all__ = [
    "DATA_KINDS",
    "DataKind",
    "DataSource",
    "KINDS",
    "VALID_SPECS",
    "load_data",
    "open_documents",
    "parse_data_spec",
]


@dataclass(frozen=True)
class DataSource:
    """A parsed data spec. ``kind`` ∈ ``text | image | toy | synthetic | shards`` (the task type);
    ``name`` the source (its key in :data:`DATA_KINDS`); ``path`` a user path or ``None``; ``options``
    parsed from the spec. Nothing is loaded until :meth:`load`."""

    kind: str
    spec: str
    name: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def load(self, **kwargs):
        """Materialise the data (see the module table for what each kind returns and accepts)."""
        return DATA_KINDS[self.name].load(self, **kwargs)

    def documents(self) -> list[str]:
        """Text sources only: the raw documents (all in memory: a user-supplied source over
        ``$MDM_PRIME_MAX_IN_MEMORY_MB`` is refused before it is read, see
        :func:`~.dataset.check_in_memory_size`)."""
        return DATA_KINDS[self.name].documents(self)


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"bad data spec {spec!r}: {why}. Valid specs: {', '.join(VALID_SPECS)}")


def _parse_options(
    spec: str, text: str, allowed: dict[str, type], positional: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, item in enumerate(p for p in text.split(",") if p):
        key, eq, value = item.partition("=")
        if not eq:
            if i == 0 and positional is not None:
                out[positional] = key
                continue
            raise _bad(spec, f"expected key=value, got {item!r}")
        if key not in allowed:
            raise _bad(spec, f"unknown option {key!r} (allowed: {sorted(allowed)})")
        typ = allowed[key]
        try:
            out[key] = value.lower() in ("1", "true", "yes") if typ is bool else typ(value)
        except ValueError:
            raise _bad(spec, f"option {key}={value!r} is not a {typ.__name__}") from None
    return out


class DataKind:
    """One kind of data, registered in :data:`DATA_KINDS` under ``name``, the spec's prefix.

    Attributes:
        name: the spec's ``NAME`` (``NAME`` or ``NAME:REST``).
        task: the task type of its in-memory data (``DataSource.kind``, a key of
            :data:`mdm_prime.tasks.TASK_TYPES`); ``None`` for a kind that only streams.
        grammar: its specs as the error messages list them (:data:`VALID_SPECS`); default ``(name,)``.
    """

    task: str | None = None

    def __init__(self, name: str, *grammar: str) -> None:
        self.name, self.grammar = name, grammar or (name,)

    def parse(self, spec: str, rest: str) -> DataSource:
        """Validate ``spec`` (``rest``: what follows the colon) for the in-memory path; no loading."""
        raise _bad(spec, f"unknown source {self.name!r}")

    def load(self, source: DataSource, **kwargs):
        """The in-memory data of a parsed ``source``."""
        raise TypeError(f"{source.spec!r} cannot be loaded in memory")  # pragma: no cover

    def documents(self, source: DataSource) -> list[str]:
        """The raw documents of a text ``source``."""
        raise TypeError(f"{source.spec!r} is {source.kind} data, not text")

    def open(
        self, spec: str, rest: str, sep: bool, text_field: str, hf_split: str, root
    ) -> DocumentSource | None:
        """Stream the documents of ``spec`` (``sep``: it has a colon); ``None``: not a spec of this kind
        for streaming, read it as a path."""
        return None


class TextKind(DataKind):
    """In-memory text parsed by :func:`~.dataset.parse_text_spec`, tokenized by :func:`~.dataset.prepare`."""

    task = "text"
    takes_path = False

    def parse(self, spec, rest):
        try:
            name, arg = parse_text_spec(spec)
        except ValueError as e:
            raise _bad(spec, str(e)) from None
        path = arg if self.takes_path else None
        if path is not None and not os.path.exists(os.path.expanduser(path)):
            raise MissingDataError(f"data spec {spec!r}: {path!r} does not exist")
        return DataSource("text", spec, name, path)

    def load(self, source, **kwargs):
        return prepare(source.spec, **kwargs)

    def documents(self, source):
        check_in_memory_size(source.spec)
        from .text import load_corpus

        return load_corpus(*parse_text_spec(source.spec))

    def _stream(self, spec, text_field, root) -> DocumentSource:
        """Stream through the loaders of :mod:`~.text` (``kind="corpus"``)."""
        name, arg = parse_text_spec(spec)
        if arg is not None and self.takes_path and not Path(arg).expanduser().exists():
            raise MissingDataError(f"source {spec!r}: {arg!r} does not exist")
        return DocumentSource(spec, "corpus", [], text_field, corpus=(name, arg), root=root)


class Corpus(TextKind):
    """An installed corpus of :data:`~.text.CORPORA` (``mdm-prime data install NAME``); streams only
    under its bare name."""

    def open(self, spec, rest, sep, text_field, hf_split, root):
        return None if sep else self._stream(spec, text_field, root)


class Mix(TextKind):
    """``mix`` (brown+austen+kjv) or ``mix:A+B``: installed corpora concatenated."""

    def open(self, spec, rest, sep, text_field, hf_split, root):
        return self._stream(spec, text_field, root)


class TextFile(TextKind):
    """``text:PATH`` (documents split by blank lines) or ``text8:PATH`` (a text8 copy)."""

    takes_path = True

    def open(self, spec, rest, sep, text_field, hf_split, root):
        return self._stream(spec, text_field, root)


class Files(DataKind):
    """``FORMAT:PATH``: files of one format of :data:`~.sources.READERS`, streamed (no in-memory path)."""

    def open(self, spec, rest, sep, text_field, hf_split, root):
        if not sep:
            return None
        return open_files(spec, self.name, Path(rest).expanduser(), text_field, hf_split)


class Owt(TextKind):
    """``owt:DIR``: a folder of ``.txt`` files, one document each; in memory as text, streamed as files."""

    takes_path = True

    def open(self, spec, rest, sep, text_field, hf_split, root):
        return open_files(spec, "owt", Path(rest).expanduser(), text_field, hf_split) if sep else None


class Images(DataKind):
    """A labelled image set of :mod:`~.images` (``NAME[:pad=P,levels=K]``)."""

    task = "image"
    options = {"pad": int, "levels": int}

    def parse(self, spec, rest):
        return DataSource("image", spec, self.name, None, _parse_options(spec, rest, self.options))

    def load(self, source, **kwargs):
        from .images import load_images

        opts = {"pad_to": source.options.get("pad"), "levels": source.options.get("levels"), **kwargs}
        return load_images(source.name, source.path, **opts)


class Cifar10(Images):
    """``cifar10:PATH``: a ``cifar-10-batches-py`` folder (options go to ``load()``)."""

    def parse(self, spec, rest):
        if not rest:
            raise _bad(spec, "cifar10 needs the path of a cifar-10-batches-py folder: cifar10:PATH")
        return DataSource("image", spec, self.name, rest)


class Toy(DataKind):
    """``toy[:IMAGE][,size=C][,invert=1]``: a 2-D density from a greyscale image."""

    task = "toy"
    options = {"size": int, "invert": bool}

    def parse(self, spec, rest):
        opts = _parse_options(spec, rest, self.options, positional="image")
        from .toy import TOY_IMAGES

        if opts.get("image", "camera") not in TOY_IMAGES:
            raise _bad(spec, f"unknown toy image {opts['image']!r} (expected one of {list(TOY_IMAGES)})")
        return DataSource("toy", spec, self.name, None, opts)

    def load(self, source, **kwargs):
        from .toy import ImageDensity

        o = source.options
        return ImageDensity(o.get("image", "camera"), o.get("size", 256), o.get("invert", False), **kwargs)


class Synthetic(DataKind):
    """A random chain of :mod:`~.synthetic`, ``NAME:k=v,...`` with the ``need``\\ ed sizes."""

    task = "synthetic"

    def __init__(
        self, name: str, grammar: str, options: dict[str, type], need: tuple[str, ...], make
    ) -> None:
        super().__init__(name, grammar)
        self.options, self.need, self.make = options, need, make  # make(synthetic module, options)

    def parse(self, spec, rest):
        opts = _parse_options(spec, rest, self.options)
        missing = [k for k in self.need if k not in opts]
        if missing:
            raise _bad(spec, f"{self.name} needs {', '.join(k + '=N' for k in missing)}")
        if any(opts[k] < 1 for k in self.need) or opts.get("concentration", 1.0) <= 0:
            raise _bad(spec, "states/vocab must be >= 1 and concentration > 0")
        return DataSource("synthetic", spec, self.name, None, opts)

    def load(self, source, **kwargs):
        from . import synthetic

        return self.make(synthetic, {**source.options, **kwargs})


class Shards(DataKind):
    """``shards:DIR[,mode=random|doc]``: token shards written by ``data prepare ... --out DIR``."""

    task = "shards"

    def parse(self, spec, rest):
        opts = {}
        for m in ("random", "doc"):
            if rest.endswith(f",mode={m}"):
                rest, opts = rest[: -len(f",mode={m}")], {"mode": m}
        if not rest:
            raise _bad(spec, "shards needs the folder written by `data prepare ... --out DIR`: shards:DIR")
        if not os.path.exists(os.path.join(os.path.expanduser(rest), "index.json")):
            raise MissingDataError(
                f"data spec {spec!r}: {rest!r} holds no index.json (prepare it with "
                f"`mdm-prime data prepare SPEC --tokenizer T --out {rest}`)"
            )
        return DataSource("shards", spec, self.name, os.path.expanduser(rest), opts)

    def load(self, source, **kwargs):
        from .shards import ShardedTokens

        return ShardedTokens(source.path, **{**source.options, **kwargs})


DATA_KINDS: dict[str, DataKind] = {
    k.name: k
    for k in (
        *(Corpus(name) for name in CORPORA),
        Mix("mix", "mix", "mix:A+B"),
        TextFile("text", "text:PATH"),
        TextFile("text8", "text8:PATH"),
        Files("txt", "txt:DIR"),
        Owt("owt", "owt:DIR"),
        Files("jsonl", "jsonl:PATH"),
        Files("parquet", "parquet:PATH"),
        Files("hf", "hf:DIR"),
        Images("mnist"),
        Images("fashion-mnist"),
        Images("digits"),
        Cifar10("cifar10", "cifar10:PATH"),
        Toy("toy", "toy:IMAGE[,size=C][,invert=1]"),
        Synthetic(
            "markov",
            "markov:states=K[,concentration=a][,seed=s]",
            {"states": int, "concentration": float, "seed": int},
            ("states",),
            lambda m, o: m.MarkovChain.random(o["states"], o.get("concentration", 0.5), o.get("seed", 0)),
        ),
        Synthetic(
            "hmm",
            "hmm:states=S,vocab=V[,concentration=a][,seed=s]",
            {"states": int, "vocab": int, "concentration": float, "seed": int},
            ("states", "vocab"),
            lambda m, o: m.HiddenMarkovModel.random(
                o["states"], o["vocab"], o.get("concentration", 0.5), o.get("seed", 0)
            ),
        ),
        Shards("shards", "shards:DIR[,mode=random|doc]"),
    )
}
"""Every data kind by its spec prefix, in the order the error messages list them."""

VALID_SPECS = tuple(g for k in DATA_KINDS.values() if k.task for g in k.grammar)
"""The specs of the in-memory path."""
KINDS = tuple(dict.fromkeys(k.task for k in DATA_KINDS.values() if k.task))
"""The task types of the in-memory data."""


def parse_data_spec(spec: str) -> DataSource:
    """Parse and validate ``spec`` without loading anything (cheap path checks only)."""
    if not isinstance(spec, str):
        raise TypeError(f"data spec must be a str, got {type(spec).__name__}")
    name, _, rest = spec.partition(":")
    if name not in DATA_KINDS:
        raise _bad(spec, f"unknown source {name!r}")
    return DATA_KINDS[name].parse(spec, rest)


def load_data(spec: str) -> DataSource:
    """Parse ``spec`` into a :class:`DataSource` (alias of :func:`parse_data_spec`; call ``.load()`` for tensors)."""
    return parse_data_spec(spec)


def _stream_specs() -> str:
    kinds = DATA_KINDS.values()
    files = [k.grammar[0] for k in kinds if isinstance(k, (Files, Owt))]
    corpora = [k.name for k in kinds if isinstance(k, (Corpus, Mix))]
    paths = [k.grammar[0] for k in kinds if isinstance(k, TextFile)]
    return f"{', '.join(files)}, an installed corpus ({', '.join(corpora)}), {', '.join(paths)} or a path"


def open_documents(
    spec: str | os.PathLike,
    text_field: str = "text",
    hf_split: str = "train",
    root: str | os.PathLike | None = None,
) -> DocumentSource:
    """The streaming entry point behind :func:`~.sources.open_source` (see it for the arguments): the
    kind named by the spec's prefix opens it, else it is read as a path (format by
    :func:`~.sources.path_format`; a single ``.txt`` file as ``text:PATH``)."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise TypeError(f"source spec must be a str or path, got {type(spec).__name__}")
    if not isinstance(text_field, str) or not text_field:
        raise ValueError(f"text_field must be a non-empty str, got {text_field!r}")
    prefix, sep, rest = spec.partition(":")
    kind = DATA_KINDS.get(prefix)
    source = kind.open(spec, rest, bool(sep), text_field, hf_split, root) if kind is not None else None
    if source is not None:
        return source
    path = Path(spec).expanduser()
    if sep and len(prefix) > 1 and not path.exists():
        raise ValueError(f"unknown source spec {spec!r}; expected {_stream_specs()}")
    if not path.exists():
        raise MissingDataError(f"source {spec!r}: {str(path)!r} does not exist")
    fmt = path_format(spec, path)
    if fmt == "txt" and path.is_file():  # a single text file: documents separated by blank lines
        return open_documents(f"text:{path}", text_field, hf_split, root)
    return open_files(spec, fmt, path, text_field, hf_split)
