"""Issue 18: a user-supplied text source too large for the in-memory path is refused before anything
is read, with one line naming its size, the limit and the streaming command; the limit is
``$MDM_PRIME_MAX_IN_MEMORY_MB`` (set tiny here, so no large file is needed)."""

import pytest

from mdm_prime.data import dataset, load_data, text
from mdm_prime.data.dataset import check_in_memory_size, max_in_memory_bytes, prepare, text_spec_bytes


@pytest.fixture
def owt(tmp_path):
    folder = tmp_path / "owt"
    (folder / "sub").mkdir(parents=True)
    for i in range(4):
        (folder / "sub" / f"{i}.txt").write_text("lorem ipsum dolor " * 100)  # 1,800 bytes each
    (folder / "notes.md").write_text("x" * 100_000)  # not a .txt: not read, not counted
    return folder


@pytest.fixture
def nothing_is_read(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the corpus was read")

    for module, name in ((dataset, "load_corpus"), (text, "load_owt"), (text, "load_text_file")):
        monkeypatch.setattr(module, name, fail)


def test_size_counts_the_files_the_spec_reads(owt, tmp_path):
    assert text_spec_bytes(f"owt:{owt}") == 4 * 1800
    f = tmp_path / "a.txt"
    f.write_text("abc")
    assert text_spec_bytes(f"text:{f}") == 3 and text_spec_bytes(f"text8:{f}") == 3
    assert text_spec_bytes("brown") is None and text_spec_bytes("mix") is None  # installed: fixed, small


def test_default_limit_and_override(monkeypatch):
    monkeypatch.delenv("MDM_PRIME_MAX_IN_MEMORY_MB", raising=False)
    assert max_in_memory_bytes() == 256e6
    monkeypatch.setenv("MDM_PRIME_MAX_IN_MEMORY_MB", "2048")
    assert max_in_memory_bytes() == 2048e6
    monkeypatch.setenv("MDM_PRIME_MAX_IN_MEMORY_MB", "inf")
    assert max_in_memory_bytes() == float("inf")
    for bad in ("lots", "0", "-5", "nan"):
        monkeypatch.setenv("MDM_PRIME_MAX_IN_MEMORY_MB", bad)
        with pytest.raises(
            ValueError, match=rf"MDM_PRIME_MAX_IN_MEMORY_MB='{bad}' must be a number of MB > 0"
        ):
            max_in_memory_bytes()


def test_prepare_refuses_before_reading(owt, monkeypatch, data_home, nothing_is_read):
    monkeypatch.setenv("MDM_PRIME_MAX_IN_MEMORY_MB", "0.005")  # 5,000 bytes < 7,200
    with pytest.raises(ValueError) as e:
        prepare(f"owt:{owt}", "gpt2", seq_len=16)
    assert str(e.value) == (
        f"owt:{owt} holds 0.0072 MB of text, more than the 0.005 MB limit of the in-memory data path; stream it "
        f"instead: mdm-prime data prepare owt:{owt} --tokenizer gpt2 --out DIR, then use --data shards:DIR "
        "(or, with the RAM for it, raise the limit: MDM_PRIME_MAX_IN_MEMORY_MB=MB)"
    )
    assert not data_home.exists()  # no cache entry either
    with pytest.raises(ValueError, match="--tokenizer gpt2 --out DIR"):  # char cannot stream: gpt2 named
        prepare(f"owt:{owt}", "char", seq_len=16)
    with pytest.raises(ValueError, match="--tokenizer T --out DIR"):  # raw documents: no tokenizer known
        load_data(f"owt:{owt}").documents()


def test_under_the_limit_nothing_changes(owt, monkeypatch, data_home):
    monkeypatch.setenv("MDM_PRIME_MAX_IN_MEMORY_MB", "0.0072")  # exactly the 7,200 bytes: allowed
    check_in_memory_size(f"owt:{owt}")
    data = prepare(f"owt:{owt}", "byte", seq_len=16, fractions=(0.5, 0.25, 0.25))
    assert data["train"].shape[1] == 16
    assert len(load_data(f"owt:{owt}").documents()) == 4


def test_megabytes_are_printed(tmp_path, monkeypatch):
    big = tmp_path / "my corpus.txt"
    with open(big, "wb") as f:
        f.truncate(3_500_000)  # sparse: 3.5 MB on disk by size, nothing written
    monkeypatch.setenv("MDM_PRIME_MAX_IN_MEMORY_MB", "1")
    with pytest.raises(ValueError) as e:
        check_in_memory_size(f"text:{big}", "byte")
    assert str(e.value).startswith(f"text:{big} holds 3.5 MB of text, more than the 1 MB limit")
    assert f"mdm-prime data prepare 'text:{big}' --tokenizer byte --out DIR" in str(e.value)
