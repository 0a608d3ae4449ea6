"""One entry point, :func:`load_data`, from a spec string to a typed :class:`DataSource`.

Specs (validated before any work; an unknown one raises ValueError listing these):

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

Image options go after a colon (``mnist:pad=32,levels=16``); for ``cifar10`` after the path, separated by
a comma is ambiguous, so pass them to ``load()``. Example::

    src = load_data("mnist:pad=32")
    src.kind                      # "image"
    data = src.load()             # ImageData; data["train"].images: LongTensor[55000, 1, 32, 32]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .dataset import check_in_memory_size, parse_text_spec, prepare
from .text import CORPORA

__all__ = ["DataSource", "load_data", "parse_data_spec", "VALID_SPECS", "KINDS"]

KINDS = ("text", "image", "toy", "synthetic", "shards")
VALID_SPECS = (
    *CORPORA,
    "mix",
    "mix:A+B",
    "text:PATH",
    "text8:PATH",
    "owt:DIR",
    "mnist",
    "fashion-mnist",
    "digits",
    "cifar10:PATH",
    "toy:IMAGE[,size=C][,invert=1]",
    "markov:states=K[,concentration=a][,seed=s]",
    "hmm:states=S,vocab=V[,concentration=a][,seed=s]",
    "shards:DIR[,mode=random|doc]",
)

_OPTIONS = {
    "image": {"pad": int, "levels": int},
    "toy": {"size": int, "invert": bool},
    "markov": {"states": int, "concentration": float, "seed": int},
    "hmm": {"states": int, "vocab": int, "concentration": float, "seed": int},
}


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


@dataclass(frozen=True)
class DataSource:
    """A parsed data spec. ``kind`` ∈ ``text | image | toy | synthetic``; ``name`` the source; ``path``
    a user path or ``None``; ``options`` parsed from the spec. Nothing is loaded until :meth:`load`."""

    kind: str
    spec: str
    name: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def load(self, **kwargs):
        """Materialise the data (see the module table for what each kind returns and accepts)."""
        if self.kind == "text":
            return prepare(self.spec, **kwargs)
        if self.kind == "image":
            from .images import load_images

            opts = {"pad_to": self.options.get("pad"), "levels": self.options.get("levels"), **kwargs}
            return load_images(self.name, self.path, **opts)
        if self.kind == "shards":
            from .shards import ShardedTokens

            return ShardedTokens(self.path, **{**self.options, **kwargs})
        if self.kind == "toy":
            from .toy import ImageDensity

            return ImageDensity(
                self.options.get("image", "camera"),
                self.options.get("size", 256),
                self.options.get("invert", False),
                **kwargs,
            )
        from .synthetic import HiddenMarkovModel, MarkovChain

        o = {**self.options, **kwargs}
        if self.name == "markov":
            return MarkovChain.random(o["states"], o.get("concentration", 0.5), o.get("seed", 0))
        return HiddenMarkovModel.random(
            o["states"], o["vocab"], o.get("concentration", 0.5), o.get("seed", 0)
        )

    def documents(self) -> list[str]:
        """Text sources only: the raw documents (all in memory: a user-supplied source over
        ``$MDM_PRIME_MAX_IN_MEMORY_MB`` is refused before it is read, see
        :func:`~.dataset.check_in_memory_size`)."""
        if self.kind != "text":
            raise TypeError(f"{self.spec!r} is {self.kind} data, not text")
        check_in_memory_size(self.spec)
        from .text import load_corpus

        return load_corpus(*parse_text_spec(self.spec))


def parse_data_spec(spec: str) -> DataSource:
    """Parse and validate ``spec`` without loading anything (cheap path checks only)."""
    if not isinstance(spec, str):
        raise TypeError(f"data spec must be a str, got {type(spec).__name__}")
    name, sep, rest = spec.partition(":")
    if name in (*CORPORA, "mix", "text", "text8", "owt"):
        try:
            tname, arg = parse_text_spec(spec)
        except ValueError as e:
            raise _bad(spec, str(e)) from None
        path = arg if tname in ("text", "text8", "owt") else None
        if path is not None and not os.path.exists(os.path.expanduser(path)):
            from .paths import MissingDataError

            raise MissingDataError(f"data spec {spec!r}: {path!r} does not exist")
        return DataSource("text", spec, tname, path)
    if name in ("mnist", "fashion-mnist", "digits"):
        return DataSource("image", spec, name, None, _parse_options(spec, rest, _OPTIONS["image"]))
    if name == "cifar10":
        if not rest:
            raise _bad(spec, "cifar10 needs the path of a cifar-10-batches-py folder: cifar10:PATH")
        return DataSource("image", spec, name, rest)
    if name == "shards":
        opts = {}
        for m in ("random", "doc"):
            if rest.endswith(f",mode={m}"):
                rest, opts = rest[: -len(f",mode={m}")], {"mode": m}
        if not rest:
            raise _bad(spec, "shards needs the folder written by `data prepare ... --out DIR`: shards:DIR")
        if not os.path.exists(os.path.join(os.path.expanduser(rest), "index.json")):
            from .paths import MissingDataError

            raise MissingDataError(
                f"data spec {spec!r}: {rest!r} holds no index.json (prepare it with "
                f"`mdm-prime data prepare SPEC --tokenizer T --out {rest}`)"
            )
        return DataSource("shards", spec, "shards", os.path.expanduser(rest), opts)
    if name == "toy":
        opts = _parse_options(spec, rest, _OPTIONS["toy"], positional="image")
        from .toy import TOY_IMAGES

        if opts.get("image", "camera") not in TOY_IMAGES:
            raise _bad(spec, f"unknown toy image {opts['image']!r} (expected one of {list(TOY_IMAGES)})")
        return DataSource("toy", spec, "toy", None, opts)
    if name in ("markov", "hmm"):
        opts = _parse_options(spec, rest, _OPTIONS[name])
        need = ["states"] + (["vocab"] if name == "hmm" else [])
        missing = [k for k in need if k not in opts]
        if missing:
            raise _bad(spec, f"{name} needs {', '.join(k + '=N' for k in missing)}")
        if any(opts[k] < 1 for k in need) or opts.get("concentration", 1.0) <= 0:
            raise _bad(spec, "states/vocab must be >= 1 and concentration > 0")
        return DataSource("synthetic", spec, name, None, opts)
    raise _bad(spec, f"unknown source {name!r}")


def load_data(spec: str) -> DataSource:
    """Parse ``spec`` into a :class:`DataSource` (alias of :func:`parse_data_spec`; call ``.load()`` for tensors)."""
    return parse_data_spec(spec)
