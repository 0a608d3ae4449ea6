"""The suite never writes into the user's data root (``tests/conftest.py``): data and tokenizer caches go
to the suite's private root, and the installed sources are visible there read-only."""

from mdm_prime.data.dataset import prepare
from mdm_prime.data.paths import cache_root, data_root
from mdm_prime.data.tokenizers import get_tokenizer

from .helpers import tree_fingerprint


def test_the_data_root_is_the_suites_own(private_data_root):
    private, user_root = private_data_root
    assert data_root() == private and cache_root() == private / "cache"
    assert data_root().resolve() != user_root.resolve()
    for entry in private.iterdir():  # the installed sources, linked; the user's cache is not
        assert entry.name != "cache" or not entry.is_symlink()
        if entry.is_symlink():
            assert entry.resolve() == (user_root / entry.name).resolve()


def test_caches_written_by_a_test_land_in_the_private_root(private_data_root, tmp_path):
    """Tokenizing a corpus and training a BPE write caches: all of it under the private root, nothing
    under the user's (byte for byte)."""
    private, user_root = private_data_root
    before = tree_fingerprint(user_root)
    corpus = tmp_path / "corpus.txt"
    docs = [f"document {i}: the cat sat on the mat, {i * 7} times." for i in range(60)]
    corpus.write_text("\n\n".join(docs))
    prepared = prepare(f"text:{corpus}", "byte", 16)
    assert prepared.cache_dir is not None and private in prepared.cache_dir.parents
    get_tokenizer("bpe:300", corpus_docs=docs)
    assert any((private / "cache").rglob("*")), "the caches were written somewhere else"
    assert tree_fingerprint(user_root) == before


def test_fingerprint_sees_a_changed_byte_and_a_new_file(tmp_path):
    """The check that guards the user's root: equal trees, one changed byte, one new file."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.bin").write_bytes(b"\x00" * 100)
    before = tree_fingerprint(tmp_path)
    assert tree_fingerprint(tmp_path) == before
    (tmp_path / "a" / "f.bin").write_bytes(b"\x00" * 99 + b"\x01")
    assert tree_fingerprint(tmp_path) != before
    (tmp_path / "a" / "f.bin").write_bytes(b"\x00" * 100)
    (tmp_path / "b.txt").write_text("new")
    assert tree_fingerprint(tmp_path) != before
    assert tree_fingerprint(tmp_path / "missing") == {}
