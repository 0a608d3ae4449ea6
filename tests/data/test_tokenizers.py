import pytest

from mdm_prime.data.install import is_installed
from mdm_prime.data.paths import MissingDataError
from mdm_prime.data.text import normalize_text8
from mdm_prime.data.tokenizers import get_tokenizer, load_tokenizer

DOCS = ["Hello, world! Ünïcödé ☃ text.", "The quick brown fox\njumps over the lazy dog.", "a b c " * 50]


@pytest.mark.parametrize("spec", ["byte", "char", "text8", "bpe:300"])
def test_round_trip_and_save_load(spec, tmp_path):
    tok = get_tokenizer(spec, corpus_docs=DOCS, cache_dir=tmp_path / "tok")
    for doc in DOCS:
        ids = tok.encode(doc)
        assert all(0 <= i < tok.vocab_size for i in ids)
        expect = normalize_text8(doc) if spec == "text8" else doc
        assert tok.decode(ids) == expect
    tok.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.vocab_size == tok.vocab_size and again.eos_id == tok.eos_id
    assert [again.encode(d) for d in DOCS] == [tok.encode(d) for d in DOCS]


def test_sizes_and_separators():
    assert get_tokenizer("byte").vocab_size == 256
    t8 = get_tokenizer("text8")
    assert t8.vocab_size == 27 and t8.encode("ab z") == [1, 2, 0, 26]
    char = get_tokenizer("char", corpus_docs=["abc"])
    assert char.vocab_size == 4 and char.eos_id == 0
    assert char.decode([1, 0, 3]) == "a" + char.eos_text + "c"


def test_char_rejects_unknown_characters():
    char = get_tokenizer("char", corpus_docs=["abc"])
    with pytest.raises(ValueError, match="'z'"):
        char.encode("abz")


def test_byte_rejects_nul_separator():
    with pytest.raises(ValueError, match="NUL"):
        get_tokenizer("byte").encode("a\x00b")


def test_decode_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 27\)"):
        get_tokenizer("text8").decode([27])


def test_trained_bpe_is_cached_and_reused(tmp_path):
    a = get_tokenizer("bpe:300", corpus_docs=DOCS, cache_dir=tmp_path)
    assert a.vocab_size == 300 and a.eos_id == 0
    saved = list(tmp_path.iterdir())
    assert len(saved) == 1
    b = get_tokenizer("bpe:300", corpus_docs=DOCS, cache_dir=tmp_path)
    assert b.encode(DOCS[1]) == a.encode(DOCS[1]) and list(tmp_path.iterdir()) == saved


@pytest.mark.parametrize("spec", ["bytes", "bpe:", "bpe:12", "bpe:x", "gpt3"])
def test_bad_specs(spec):
    with pytest.raises(ValueError, match="tokenizer spec"):
        get_tokenizer(spec, corpus_docs=DOCS)


def test_corpus_tokenizer_needs_docs():
    with pytest.raises(ValueError, match="corpus_docs"):
        get_tokenizer("char")


def test_gpt2_missing_says_how_to_install(data_home):
    with pytest.raises(MissingDataError, match="mdm-prime data install gpt2"):
        get_tokenizer("gpt2")


@pytest.mark.skipif(
    not is_installed("gpt2"), reason="GPT-2 BPE files not installed (mdm-prime data install gpt2)"
)
def test_gpt2_hello_world(tmp_path):
    tok = get_tokenizer("gpt2")
    assert tok.vocab_size == 50257 and tok.eos_id == 50256
    assert tok.encode("Hello world") == [15496, 995]
    text = "MDM-Prime: partial masking, naïvely ☃."
    assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).encode("Hello world") == [15496, 995]
