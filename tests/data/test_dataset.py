import numpy as np
import pytest
import torch

from mdm_prime.data.dataset import chunk_tokens, concat_documents, parse_text_spec, prepare, split_documents
from mdm_prime.data.paths import MissingDataError

DOCS = [f"document number {i}: " + "word " * (i % 7 + 3) for i in range(200)]


def test_concat_and_chunk():
    stream = concat_documents([np.array([1, 2]), np.array([3])], eos_id=0)
    assert stream.tolist() == [1, 2, 0, 3, 0]
    x = chunk_tokens(np.arange(10), 3)
    assert x.dtype == torch.long and x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(ValueError, match="seq_len"):
        chunk_tokens(np.arange(10), 0)


def test_hash_split_is_deterministic_disjoint_and_order_free():
    a = split_documents(DOCS, (0.8, 0.1, 0.1), seed=0)
    assert a == split_documents(DOCS, (0.8, 0.1, 0.1), seed=0)
    all_idx = sorted(a["train"] + a["valid"] + a["test"])
    assert all_idx == list(range(len(DOCS)))
    assert all(len(a[s]) > 0 for s in a)
    assert 120 < len(a["train"]) < 190
    # a document's split does not depend on the others: reverse the list and compare by content
    rev = split_documents(DOCS[::-1], (0.8, 0.1, 0.1), seed=0)
    assert {DOCS[::-1][i] for i in rev["valid"]} == {DOCS[i] for i in a["valid"]}
    assert split_documents(DOCS, (0.8, 0.1, 0.1), seed=1) != a


def test_contiguous_split():
    s = split_documents(list("abcdefghij"), (0.8, 0.1, 0.1), mode="contiguous")
    assert s == {"train": list(range(8)), "valid": [8], "test": [9]}


@pytest.mark.parametrize("fr", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (1.0, 0.0)])
def test_bad_fractions(fr):
    with pytest.raises(ValueError, match="fractions"):
        split_documents(DOCS, fr)


def _write_corpus(path, docs):
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def test_prepare_text_file_chunks_splits_and_cache(tmp_path):
    f = _write_corpus(tmp_path / "corpus.txt", DOCS)
    cache = tmp_path / "cache"
    data = prepare(f"text:{f}", "byte", 16, cache_dir=cache)
    assert data.split_mode == "hash"
    assert sum(st.documents for st in data.stats.values()) == len(DOCS)
    for split, x in data.splits.items():
        assert x.dtype == torch.long and x.shape[1] == 16 and x.shape[0] == data.stats[split].chunks
        assert int(x.max()) < 256
    # the separator follows every document
    assert (
        int((torch.as_tensor(data.streams["train"].astype(np.int64)) == 0).sum())
        == data.stats["train"].documents
    )
    text = data.tokenizer.decode(data.streams["train"][:200])
    assert text.startswith("document number")
    assert len(list(cache.iterdir())) == 1
    again = prepare(f"text:{f}", "byte", 16, cache_dir=cache)  # from cache
    assert all(torch.equal(again[s], data[s]) for s in data.splits)
    other_len = prepare(f"text:{f}", "byte", 8, cache_dir=cache)  # seq_len is not in the cache key
    assert len(list(cache.iterdir())) == 1 and other_len["train"].shape[1] == 8
    # editing the file invalidates the cache
    _write_corpus(f, DOCS + ["one more document"])
    prepare(f"text:{f}", "byte", 16, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2


def test_prepare_char_and_bpe(tmp_path):
    f = _write_corpus(tmp_path / "corpus.txt", DOCS)
    for spec in ("char", "text8", "bpe:300"):
        data = prepare(f"text:{f}", spec, 8, cache_dir=tmp_path / "cache")
        assert int(data["train"].max()) < data.vocab_size
        assert data.stats["train"].bytes_per_token > 0.9


def test_single_document_falls_back_to_stream_split(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("only one document " * 100, encoding="utf-8")
    data = prepare(f"text:{f}", "byte", 16, cache=False)
    assert data.split_mode == "stream"
    assert all(data[s].shape[0] > 0 for s in ("train", "valid", "test"))


def test_text8_and_owt(tmp_path):
    f = tmp_path / "text8"
    f.write_text(" ".join(["anarchism originated as a term"] * 400), encoding="utf-8")
    from mdm_prime.data.text import load_owt, load_text8

    docs = load_text8(f, doc_chars=1000)
    assert len(docs) == 13 and "".join(docs) == f.read_text()
    data = prepare(f"text8:{f}", "text8", 32, cache=False)
    assert data.split_mode == "stream"  # < 1M characters = one document: the stream is cut 90/5/5
    assert data.tokenizer.decode(data.streams["train"][:9]) == "anarchism"
    d = tmp_path / "owt"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("first")
    (d / "sub" / "b.txt").write_text("second")
    assert load_owt(d) == ["first", "second"]


@pytest.mark.parametrize("spec", ["nope", "text:", "mix:brown+nope", "brown:extra"])
def test_bad_text_specs(spec):
    with pytest.raises(ValueError, match="spec"):
        parse_text_spec(spec)


def test_bad_arguments_fail_before_work(tmp_path, monkeypatch):
    import mdm_prime.data.dataset as ds

    monkeypatch.setattr(ds, "load_corpus", lambda *a, **k: pytest.fail("loaded data before validating"))
    f = _write_corpus(tmp_path / "c.txt", DOCS)
    with pytest.raises(ValueError, match="tokenizer spec"):
        prepare(f"text:{f}", "bpe:5", 16)
    with pytest.raises(ValueError, match="seq_len"):
        prepare(f"text:{f}", "byte", 0)
    with pytest.raises(ValueError, match="fractions"):
        prepare(f"text:{f}", "byte", 8, fractions=(0.9, 0.2, 0.1))


def test_missing_sources(tmp_path, data_home):
    with pytest.raises(MissingDataError, match="does not exist"):
        prepare(f"text:{tmp_path / 'missing.txt'}", "byte", 8, cache=False)
    with pytest.raises(MissingDataError, match="mdm-prime data install brown"):
        prepare("brown", "byte", 8, cache=False)
