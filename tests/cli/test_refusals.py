"""Issue 18 on the command line: each refusal is one line on stderr (exit code 2) naming the value and
what to do, before any work; ``sample`` draws, prints and records a fresh seed unless ``--seed``."""

import json
import re

import pytest

from mdm_prime.cli import main
from mdm_prime.data import dataset, text

from .test_bad_inputs import _copy, _one_line_error, run_dir  # noqa: F401  (run_dir: the fixture)


@pytest.fixture
def owt(tmp_path, monkeypatch):
    """A 7,200-byte owt:DIR with the in-memory limit set to 5,000 bytes; data root in tmp_path."""
    monkeypatch.setenv("MDM_PRIME_DATA", str(tmp_path / "root"))
    monkeypatch.setenv("MDM_PRIME_MAX_IN_MEMORY_MB", "0.005")
    folder = tmp_path / "owt"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text("lorem ipsum dolor " * 100)
    return folder


def _fail_if_read(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the corpus was read")

    for module, name in ((dataset, "load_corpus"), (text, "load_owt"), (text, "load_text_file")):
        monkeypatch.setattr(module, name, fail)


def test_data_prepare_in_memory_refuses_a_large_folder(owt, capsys, monkeypatch):
    _fail_if_read(monkeypatch)
    line = _one_line_error(
        capsys,
        ["data", "prepare", f"owt:{owt}", "--tokenizer", "byte"],
        f"owt:{owt} holds 0.0072 MB of text",
        "0.005 MB limit",
        f"mdm-prime data prepare owt:{owt} --tokenizer byte --out DIR",
        "--data shards:DIR",
        "MDM_PRIME_MAX_IN_MEMORY_MB",
    )
    assert line.startswith("mdm-prime data: error: ")


def test_train_refuses_a_large_text_file_before_reading(tmp_path, owt, capsys, monkeypatch):
    _fail_if_read(monkeypatch)
    corpus = tmp_path / "big.txt"
    corpus.write_text("x" * 6000)
    _one_line_error(
        capsys,
        ["train", "--data", f"text:{corpus}", "--tokenizer", "bpe:300", "--out", str(tmp_path / "x")],
        f"text:{corpus} holds 0.006 MB of text",
        "--tokenizer gpt2 --out DIR",  # bpe:N cannot stream: a fixed tokenizer is named
    )
    assert not (tmp_path / "x").exists()


def test_streaming_is_not_limited(owt, tmp_path, capsys):
    out = tmp_path / "shards"
    argv = ["data", "prepare", f"owt:{owt}", "--tokenizer", "byte", "--out", str(out), "--workers", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    assert (out / "index.json").exists()


def test_data_prepare_streaming_only_kinds_need_out(tmp_path, capsys):
    f = tmp_path / "docs.jsonl"
    f.write_text('{"text": "a"}\n')
    _one_line_error(
        capsys,
        ["data", "prepare", f"jsonl:{f}"],
        f"jsonl:{f} is read by the streaming path only: add --out DIR",
        "then use --data shards:DIR",
    )


def test_sample_refuses_absurd_steps(run_dir, capsys):  # noqa: F811
    line = _one_line_error(capsys, ["sample", str(run_dir), "--steps", "100000000"], "--steps=100000000")
    m = re.search(r"is more than 64·L·ℓ = 64·8·(\d+) = (\d+): .* use --steps <= (\d+)$", line)
    assert m and int(m[2]) == 64 * 8 * int(m[1]) == int(m[3]), line


def test_sample_refuses_an_infill_without_blanks(run_dir, capsys):  # noqa: F811
    _one_line_error(
        capsys,
        ["sample", str(run_dir), "--infill", "no blanks here"],
        "--infill 'no blanks here' has no '_' blanks",
        "use --prefix to continue a text",
    )


def _stats(path):
    return json.loads(path.read_text())["settings"]


def test_sample_draws_prints_and_records_a_fresh_seed(run_dir, tmp_path, capsys):  # noqa: F811
    run = _copy(run_dir, tmp_path)
    seeds = []
    for _ in range(2):
        assert main(["sample", str(run), "--num", "2", "--steps", "3"]) == 0
        m = re.search(r"^seed (\d+) \(pass --seed (\d+) to repeat\)$", capsys.readouterr().err, re.M)
        assert m and m[1] == m[2]
        seeds.append(int(m[1]))
        settings = _stats(run / "samples" / f"sample_seed{seeds[-1]}.stats.json")
        assert settings["seed"] == seeds[-1] and settings["seed_drawn"] is True
    assert seeds[0] != seeds[1]


def test_sample_with_seed_repeats(run_dir, tmp_path, capsys):  # noqa: F811
    outs = []
    for name in ("a", "b"):
        assert (
            main(
                [
                    "sample",
                    str(run_dir),
                    "--num",
                    "3",
                    "--steps",
                    "4",
                    "--seed",
                    "7",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
        assert "pass --seed" not in capsys.readouterr().err
        settings = _stats(tmp_path / f"{name}.stats.json")
        assert settings["seed"] == 7 and settings["seed_drawn"] is False
        outs.append(sorted(p.name for p in tmp_path.glob(f"{name}.*")))
    assert [n.replace("a.", "b.", 1) for n in outs[0]] == outs[1]
    for n in outs[0]:
        if not n.endswith(".stats.json"):
            assert (tmp_path / n).read_bytes() == (tmp_path / n.replace("a.", "b.", 1)).read_bytes(), n
