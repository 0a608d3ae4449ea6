import re

import pytest

from mdm_prime.data.install import is_installed
from mdm_prime.data.paths import MissingDataError
from mdm_prime.data.text import (
    _brown_sentence,
    clean_gcide_entry,
    load_corpus,
    load_text_file,
    normalize_text8,
)


def test_normalize_text8():
    assert normalize_text8("Hello, World!\n  It's 1961.") == "hello world it s"


def test_text_file_documents(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first doc\nline two\n\n\nsecond doc\n  \nthird", encoding="utf-8")
    assert load_text_file(f) == ["first doc\nline two", "second doc", "third"]
    g = tmp_path / "b.txt"
    g.write_text("just one block\nof text", encoding="utf-8")
    assert load_text_file(g) == ["just one block\nof text"]


def test_text_file_errors(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="UTF-8"):
        load_text_file(bad)
    with pytest.raises(MissingDataError, match="does not exist"):
        load_text_file(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="owt"):
        load_text_file(tmp_path)


def test_brown_detokeniser():
    line = "The/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, and/cc it's/pps+bez over/rb ;/. ;/."
    assert _brown_sentence(line) == 'The jury said "no evidence", and it\'s over;'


def test_gcide_markup_stripped():
    entry = 'Abuse \\A*buse"\\, v. t. [F. abuser]\n   1. To misuse {Abuse}.\n      [1913 Webster]\n   2. Ill use. [PJC]'
    out = clean_gcide_entry(entry)
    assert "[1913 Webster]" not in out and "[PJC]" not in out and "{" not in out and "\\" not in out
    assert out == "Abuse, v. t. [F. abuser] 1. To misuse Abuse. 2. Ill use."


def test_missing_corpus_message(data_home):
    for name in ("brown", "austen", "kjv", "gcide", "nlp-corpus"):
        with pytest.raises(MissingDataError, match=f"mdm-prime data install {name}"):
            load_corpus(name)
    with pytest.raises(MissingDataError, match="mdm-prime data install brown austen kjv"):
        load_corpus("mix")


EXPECTED = {
    "brown": (500, 5_000_000),
    "austen": (269, 3_500_000),
    "kjv": (1189, 4_000_000),
    "gcide": (100_000, 25_000_000),
    "nlp-corpus": (90_000, 8_000_000),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_installed_corpus(name):
    if not is_installed(name):
        pytest.skip(f"{name} not installed (mdm-prime data install {name})")
    docs = load_corpus(name)
    n_docs, min_chars = EXPECTED[name]
    assert len(docs) >= n_docs if name in ("gcide", "nlp-corpus") else len(docs) == n_docs
    assert sum(map(len, docs)) > min_chars
    assert all(d.strip() for d in docs)
    joined = "".join(docs[:50])
    assert not re.search(r"\w/(nn|at|vbd|in)\b", joined)  # no Brown POS tags left
    assert "[1913 Webster]" not in joined
