"""Streaming preparation (sources → shards) and memory-mapped reading.

Independent checks: token files are read back with ``np.fromfile`` and compared with the tokenizer
applied directly to each document; splits with :func:`split_documents` (the in-memory path); the
held-out set with the in-memory :func:`prepare`; window draws with a brute-force enumeration of every
window; memory with each process's high-water mark in a subprocess.
"""

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mdm_prime.cli.data import main as data_main
from mdm_prime.data.dataset import chunk_tokens, prepare, split_documents
from mdm_prime.data.install import is_installed
from mdm_prime.data.paths import MissingDataError
from mdm_prime.data.prepare import prepare_shards
from mdm_prime.data.registry import load_data
from mdm_prime.data.shards import (
    SPLITS,
    ShardedTokens,
    read_index,
    shards_task_kwargs,
    to_device,
    token_dtype,
)
from mdm_prime.data.sources import open_source
from mdm_prime.data.text import load_owt, load_text_file
from mdm_prime.data.tokenizers import CharTokenizer, get_tokenizer

from ..helpers import QUIET_RUN, TINY_TRANSFORMER, set_args

FR = (0.8, 0.1, 0.1)
WORDS = [
    "the",
    "river",
    "naïve",
    "café",
    "ünïcode",
    "λόγος",
    "日本語",
    "a",
    "of",
    "emoji🙂",
    "end.",
    "and",
    "\n",
]


def make_docs(n: int, seed: int = 0, max_words: int = 120) -> list[str]:
    rng = random.Random(seed)
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(1, max_words))).strip() or "x" for _ in range(n)]
    return docs


def write_jsonl(folder: Path, docs: list[str], parts: int = 3, field: str = "text") -> Path:
    """Docs over ``parts`` files (the last gzipped) in nested folders, in sorted-path order; plus blanks."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(docs) // parts)
    for i in range(parts):
        sub = folder / f"p{i}"
        sub.mkdir(exist_ok=True)
        chunk = docs[i * per : (i + 1) * per]
        lines = [json.dumps({field: d, "id": k}) for k, d in enumerate(chunk)]
        lines.insert(len(lines) // 2, json.dumps({field: "   "}))  # whitespace-only: skipped
        body = ("\n".join(lines) + "\n\n").encode("utf-8")
        if i == parts - 1:
            (sub / "part.jsonl.gz").write_bytes(gzip.compress(body))
        else:
            (sub / "part.jsonl").write_bytes(body)
    return folder


def stream_of(folder: Path, split: str, dtype) -> np.ndarray:
    """The split's token stream read with np.fromfile, shards in name order (not through ShardedTokens)."""
    files = sorted((folder / split).glob("*.bin"))
    return np.concatenate([np.fromfile(f, dtype=dtype) for f in files]) if files else np.zeros(0, dtype)


def expected_stream(tok, docs: list[str]) -> np.ndarray:
    return np.array([t for d in docs for t in [*tok.encode(d), tok.eos_id]], dtype=np.int64)


@pytest.fixture(scope="module")
def byte_corpus(tmp_path_factory):
    docs = make_docs(600, seed=1)
    src = write_jsonl(tmp_path_factory.mktemp("src") / "corpus", docs)
    out = tmp_path_factory.mktemp("shards") / "out"
    report = prepare_shards(
        f"jsonl:{src}", out, "byte", fractions=FR, seed=3, workers=2, shard_mb=0.03, batch_mb=0.005, log=None
    )
    return docs, src, out, report


# --------------------------------------------------------------------------- preparation


def test_round_trip_token_counts_and_splits(byte_corpus):
    docs, _, out, report = byte_corpus
    tok = get_tokenizer("byte")
    idx = split_documents(docs, FR, seed=3)  # the in-memory path's split assignment
    index = read_index(out)
    assert index["complete"] and report.complete and index["dtype"] == "uint16"
    assert report.groups_written >= 4 and report.documents == len(docs)
    sh = ShardedTokens(out)
    for s in SPLITS:
        want_docs = [docs[i] for i in idx[s]]
        want = expected_stream(tok, want_docs)
        got = stream_of(out, s, np.uint16)
        np.testing.assert_array_equal(got.astype(np.int64), want)
        assert index["splits"][s]["tokens"] == len(want)
        assert index["splits"][s]["documents"] == len(want_docs)
        assert index["splits"][s]["bytes"] == sum(len(d.encode()) for d in want_docs)
        assert [tok.decode(x) for x in sh.iter_documents(s)] == want_docs
    assert sh.num_tokens("train") + sh.num_tokens("valid") + sh.num_tokens("test") == report.tokens


@pytest.mark.skipif(
    not is_installed("gpt2"), reason="GPT-2 BPE files not installed (mdm-prime data install gpt2)"
)
def test_gpt2_parquet_matches_the_tokenizer_applied_directly(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = make_docs(150, seed=2, max_words=60) + ["Hello world", "<|endoftext|> inside a document"]
    pq.write_table(
        pa.table({"content": docs, "n": list(range(len(docs)))}), tmp_path / "a.parquet", row_group_size=40
    )
    out = tmp_path / "out"
    prepare_shards(
        tmp_path / "a.parquet",
        out,
        "gpt2",
        text_field="content",
        fractions=(1.0, 0.0, 0.0),
        workers=1,
        shard_mb=0.004,
        batch_mb=0.001,
        log=None,
    )
    tok = get_tokenizer("gpt2")
    got = stream_of(out, "train", np.uint16).astype(np.int64)
    want = np.concatenate([np.append(np.asarray(tok.hf.encode(d).ids), 50256) for d in docs])
    np.testing.assert_array_equal(got, want)
    sh = ShardedTokens(out)
    assert sh.vocab_size == 50257 and sh.eos_id == 50256 and sh.tokenizer.name == "gpt2"
    # document boundaries come from the .idx files, not from searching for the separator id
    assert [sh.tokenizer.decode(x) for x in sh.iter_documents("train")] == docs


def test_uint32_when_the_vocabulary_needs_it(tmp_path):
    chars = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 70_000) if not 0xD800 <= c < 0xE000)
    tok = CharTokenizer(chars)
    tok.save(tmp_path / "tok")
    assert tok.vocab_size > 65536 and token_dtype(tok.vocab_size) == np.dtype("<u4")
    rng = random.Random(0)
    docs = ["".join(rng.choices(chars, k=rng.randint(1, 50))) for _ in range(40)]
    (tmp_path / "d").mkdir()
    for i, d in enumerate(docs):
        (tmp_path / "d" / f"{i:03d}.txt").write_text(d, encoding="utf-8")
    out = tmp_path / "out"
    prepare_shards(
        f"txt:{tmp_path / 'd'}", out, tmp_path / "tok", fractions=(1.0, 0.0, 0.0), workers=1, log=None
    )
    assert read_index(out)["dtype"] == "uint32"
    got = stream_of(out, "train", np.uint32).astype(np.int64)
    np.testing.assert_array_equal(got, expected_stream(tok, docs))
    assert int(got.max()) > 65535


def test_same_shards_whatever_the_workers_and_batches(byte_corpus, tmp_path):
    _, src, out, _ = byte_corpus
    other = tmp_path / "other"
    prepare_shards(
        f"jsonl:{src}",
        other,
        "byte",
        fractions=FR,
        seed=3,
        workers=1,
        shard_mb=0.03,
        batch_mb=0.012,
        log=None,
    )
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".bin", ".idx"))
    assert names == sorted(
        p.relative_to(other).as_posix() for p in other.rglob("*") if p.suffix in (".bin", ".idx")
    )
    for n in names:
        assert (out / n).read_bytes() == (other / n).read_bytes(), n
    # another seed moves documents between splits
    seed4 = tmp_path / "seed4"
    prepare_shards(f"jsonl:{src}", seed4, "byte", fractions=FR, seed=4, workers=1, shard_mb=0.03, log=None)
    assert read_index(seed4)["splits"]["valid"]["documents"] != read_index(out)["splits"]["valid"][
        "documents"
    ] or not np.array_equal(stream_of(seed4, "valid", np.uint16), stream_of(out, "valid", np.uint16))


def test_resume_after_an_interrupted_run(byte_corpus, tmp_path):
    _, src, full, _ = byte_corpus
    out = tmp_path / "out"
    kw = dict(fractions=FR, seed=3, workers=2, shard_mb=0.03, batch_mb=0.005, log=None)
    first = prepare_shards(f"jsonl:{src}", out, "byte", stop_after_groups=2, **kw)
    assert not first.complete and first.groups_written == 2
    index = read_index(out)
    assert index["groups_done"] == 2 and not index["complete"]
    with pytest.raises(ValueError, match="not finished"):
        ShardedTokens(out)
    assert ShardedTokens(out, allow_incomplete=True).num_tokens("train") == index["splits"]["train"]["tokens"]
    # what a kill leaves behind: a temp file being written and a shard renamed before the index was updated
    (out / "train" / ".000002.bin.tmp").write_bytes(b"\x01\x02")
    (out / "valid" / "000002.bin").write_bytes(b"garbage")
    second = prepare_shards(f"jsonl:{src}", out, "byte", **kw)
    assert second.complete and second.resumed_groups == 2
    assert second.documents == read_index(full)["documents_consumed"] - index["documents_consumed"]
    for p in full.rglob("*"):
        if p.suffix in (".bin", ".idx"):
            assert (out / p.relative_to(full)).read_bytes() == p.read_bytes(), p
    assert not list(out.rglob(".*.tmp"))
    assert read_index(out)["splits"] == read_index(full)["splits"]
    # a complete folder is left alone
    assert prepare_shards(f"jsonl:{src}", out, "byte", **kw).groups_written == 0


def test_refuses_a_different_preparation_in_the_same_folder(byte_corpus, tmp_path):
    _, src, _, _ = byte_corpus
    out = tmp_path / "out"
    prepare_shards(f"jsonl:{src}", out, "byte", workers=1, shard_mb=0.5, log=None)
    with pytest.raises(ValueError, match="different preparation"):
        prepare_shards(f"jsonl:{src}", out, "byte", seed=1, workers=1, shard_mb=0.5, log=None)
    r = prepare_shards(f"jsonl:{src}", out, "byte", seed=1, workers=1, shard_mb=0.5, overwrite=True, log=None)
    assert r.complete and read_index(out)["settings"]["seed"] == 1
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        prepare_shards(f"jsonl:{src}", tmp_path / "busy", "byte", workers=1, log=None)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"tokenizer_spec": "char"}, ValueError, "built from a corpus"),
        ({"tokenizer_spec": "bpe:500"}, ValueError, "built from a corpus"),
        ({"fractions": (0.5, 0.5, 0.5)}, ValueError, "fractions"),
        ({"workers": -1}, ValueError, "workers"),
        ({"shard_mb": 0}, ValueError, "shard_mb"),
    ],
)
def test_bad_arguments_fail_before_work(byte_corpus, tmp_path, kwargs, err, match):
    _, src, _, _ = byte_corpus
    kw = {"tokenizer_spec": "byte", **kwargs}
    with pytest.raises(err, match=match):
        prepare_shards(f"jsonl:{src}", tmp_path / "o", log=None, **kw)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- sources


def test_sources_txt_folder_and_text_file_match_the_in_memory_loaders(tmp_path):
    docs = make_docs(30, seed=5)
    for i, d in enumerate(docs):
        sub = tmp_path / "owt" / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:03d}.txt").write_text(f"\n {d} \n", encoding="utf-8")
    (tmp_path / "owt" / "empty.txt").write_text("  \n")
    assert list(open_source(f"txt:{tmp_path / 'owt'}")) == load_owt(tmp_path / "owt")
    assert list(open_source(str(tmp_path / "owt"))) == load_owt(tmp_path / "owt")  # recognised by its files
    f = tmp_path / "c.txt"
    f.write_text("\n\n".join(docs), encoding="utf-8")
    assert list(open_source(str(f))) == load_text_file(f)


def test_sources_jsonl_field_and_errors(tmp_path):
    docs = make_docs(20, seed=6)
    write_jsonl(tmp_path / "j", docs, parts=2, field="body")
    assert list(open_source(f"jsonl:{tmp_path / 'j'}", text_field="body")) == docs
    with pytest.raises(ValueError, match="no text field 'text'"):
        list(open_source(f"jsonl:{tmp_path / 'j'}"))
    with pytest.raises(MissingDataError):
        open_source(f"jsonl:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="unknown source spec"):
        open_source("nosuch:thing")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.txt").write_text("a")
    (tmp_path / "mixed" / "b.jsonl").write_text('{"text": "b"}\n')
    with pytest.raises(ValueError, match="kinds of files"):
        open_source(str(tmp_path / "mixed"))


def _write_arrow_stream(path: Path, table) -> None:
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        for batch in table.to_batches(max_chunksize=7):
            w.write_batch(batch)


def test_sources_hf_save_to_disk_layouts(tmp_path):
    """The layout ``datasets`` writes: ``data-0000K-of-0000N.arrow`` (Arrow IPC *stream*), ``state.json``
    listing them, ``dataset_info.json``; a DatasetDict adds ``dataset_dict.json`` and one folder per split."""
    import pyarrow as pa

    docs = make_docs(50, seed=7)
    ds = tmp_path / "dd" / "train"
    ds.mkdir(parents=True)
    names = ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    _write_arrow_stream(ds / names[0], pa.table({"text": docs[:30], "id": list(range(30))}))
    _write_arrow_stream(ds / names[1], pa.table({"text": docs[30:], "id": list(range(30, 50))}))
    (ds / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": n} for n in names], "_split": "train"})
    )
    (ds / "dataset_info.json").write_text(json.dumps({"features": {"text": {"dtype": "string"}}}))
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    assert list(open_source(f"hf:{ds}")) == docs  # a Dataset folder
    assert list(open_source(str(tmp_path / "dd"))) == docs  # a DatasetDict folder, split train
    with pytest.raises(ValueError, match="no split 'validation'"):
        open_source(str(tmp_path / "dd"), hf_split="validation")
    # a plain .arrow IPC *file* (not stream) is read too
    with (
        pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, pa.schema([("text", pa.string())])) as w,
    ):
        w.write_table(pa.table({"text": docs[:5]}))
    assert list(open_source(str(tmp_path / "f.arrow"))) == docs[:5]


# --------------------------------------------------------------------------- reading


def _all_windows(folder: Path, split: str, L: int, mode: str, dtype=np.uint16) -> list[np.ndarray]:
    """Brute force: every window sample_windows can return, in its order (shards, then positions)."""
    out = []
    for f in sorted((folder / split).glob("*.bin")):
        toks = np.fromfile(f, dtype=dtype).astype(np.int64)
        if len(toks) < L:
            continue
        if mode == "random":
            out += [toks[s : s + L] for s in range(len(toks) - L + 1)]
        else:
            ends = np.fromfile(f.with_suffix(".idx"), dtype="<i8")
            start = 0
            for end in ends:
                for k in range(0, int(end) - start, L):
                    s = min(start + k, len(toks) - L)
                    out.append(toks[s : s + L])
                start = int(end)
    return out


@pytest.mark.parametrize("mode", ["random", "doc"])
def test_sample_windows_brute_force_and_exact_resume(byte_corpus, mode):
    _, _, out, _ = byte_corpus
    L, n = 64, 16
    every = _all_windows(out, "train", L, mode)
    sh = ShardedTokens(out, mode=mode)
    assert sh.num_windows(L) == len(every)
    g = torch.Generator().manual_seed(11)
    state = g.get_state()
    x = sh.sample_windows(n, L, g)
    r = torch.randint(0, len(every), (n,), generator=torch.Generator().set_state(state))
    np.testing.assert_array_equal(x.numpy(), np.stack([every[int(i)] for i in r]))
    assert x.dtype == torch.long and x.shape == (n, L)
    # exact resume: a generator restored from a saved state, in a freshly opened reader (another rank)
    saved = g.get_state()
    a = [sh.sample_windows(n, L, g) for _ in range(3)]
    g2 = torch.Generator()
    g2.set_state(saved)
    b = [ShardedTokens(out, mode=mode).sample_windows(n, L, g2) for _ in range(3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    # one rank's slice of the global batch, read alone, consuming the generator the same way
    g3 = torch.Generator()
    g3.set_state(saved)
    assert torch.equal(sh.sample_windows(n, L, g3, rows=slice(4, 8)), a[0][4:8])
    assert torch.equal(sh.sample_windows(n, L, g3), a[1])
    # a pickled reader (DataLoader workers) carries no mapped data and reads the same windows
    import pickle

    g3.set_state(saved)
    clone = pickle.loads(pickle.dumps(sh))
    assert not clone._tokens and torch.equal(clone.sample_windows(n, L, g3), a[0])
    assert not torch.equal(a[0], a[1])


def test_doc_windows_start_at_document_starts(byte_corpus):
    _, _, out, _ = byte_corpus
    sh = ShardedTokens(out)
    L = 32
    starts = set()
    for i in range(len(sh.index["splits"]["train"]["shards"])):
        toks, ends = sh.tokens("train", i), np.asarray(sh.doc_ends("train", i))
        for s, e in zip(np.concatenate([[0], ends[:-1]]), ends):
            starts.update(tuple(toks[p : p + L]) for p in range(int(s), int(e), L) if p + L <= len(toks))
    x = sh.sample_windows(200, L, torch.Generator().manual_seed(0), mode="doc")
    inside = sum(tuple(row.tolist()) in starts for row in x)
    assert inside >= 190  # all but the few moved back at a shard's end


def test_valid_windows_are_fixed_and_match_the_in_memory_pipeline(tmp_path):
    docs = make_docs(400, seed=9)
    for i, d in enumerate(docs):
        (tmp_path / "owt").mkdir(exist_ok=True)
        (tmp_path / "owt" / f"{i:04d}.txt").write_text(d, encoding="utf-8")
    out = tmp_path / "sh"
    prepare_shards(
        f"txt:{tmp_path / 'owt'}", out, "byte", fractions=FR, seed=0, workers=1, shard_mb=0.02, log=None
    )
    mem = prepare(f"owt:{tmp_path / 'owt'}", "byte", 48, fractions=FR, seed=0, cache=False)
    sh = ShardedTokens(out)
    for s in ("valid", "test"):  # the same by-document split and stream as the in-memory path
        np.testing.assert_array_equal(
            stream_of(out, s, np.uint16).astype(np.int64), mem.streams[s].astype(np.int64)
        )
    every = chunk_tokens(mem.streams["valid"], 48)
    k = 10
    v = sh.valid_windows(k, 48)
    C = every.shape[0]
    assert torch.equal(v, every[[i * C // k for i in range(k)]])
    assert torch.equal(v, ShardedTokens(out).valid_windows(k, 48))
    assert torch.equal(sh.valid_windows(10_000, 48), every)  # at most all the chunks
    with pytest.raises(ValueError, match="fewer than seq_len"):
        sh.valid_windows(4, 10**7)


def test_window_argument_errors(byte_corpus):
    _, _, out, _ = byte_corpus
    sh = ShardedTokens(out)
    with pytest.raises(TypeError, match="torch.Generator"):
        sh.sample_windows(2, 8, 0)
    with pytest.raises(ValueError, match="seq_len"):
        sh.sample_windows(2, 0, torch.Generator())
    with pytest.raises(ValueError, match="no train shard holds"):
        sh.sample_windows(2, 10**7, torch.Generator())
    with pytest.raises(ValueError, match="window mode"):
        ShardedTokens(out, mode="wrap")
    with pytest.raises(FileNotFoundError, match="not a prepared shard folder"):
        ShardedTokens(out.parent / "nothing")


def test_registry_spec_task_adapter_and_to_device(byte_corpus):
    from mdm_prime.tasks import ShardsTask

    _, _, out, _ = byte_corpus
    src = load_data(f"shards:{out}")
    assert src.kind == "shards"
    sh = src.load(mode="doc")
    assert isinstance(sh, ShardedTokens) and sh.mode == "doc"
    assert load_data(f"shards:{out},mode=doc").load().mode == "doc"
    assert load_data(f"shards:{out},mode=doc").load(mode="random").mode == "random"
    with pytest.raises(MissingDataError, match="index.json"):
        load_data(f"shards:{out.parent / 'missing'}")
    task = ShardsTask(**shards_task_kwargs(sh, 32, spec=f"shards:{out}", n_valid=5, tokenizer_spec="byte"))
    assert task.infinite and task.num_classes == 256 and task.valid_tokens.shape == (5, 32)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(task.sample_train(4, g1), sh.sample_windows(4, 32, g2, mode="doc"))
    assert task.characters_per_token == pytest.approx(
        read_index(out)["splits"]["valid"]["characters"] / read_index(out)["splits"]["valid"]["tokens"]
    )
    with pytest.raises(ValueError, match="prepared with 'byte'"):
        shards_task_kwargs(sh, 32, tokenizer_spec="gpt2")
    x = task.sample_train(2, g1)
    y = to_device({"x": x, "pair": (x, x)}, "cpu")
    assert torch.equal(y["x"], x) and torch.equal(y["pair"][1], x)


def test_cli_prepare(byte_corpus, tmp_path, capsys):
    _, src, _, _ = byte_corpus
    out = tmp_path / "cli"
    rep = tmp_path / "r.json"
    assert (
        data_main(
            [
                "prepare",
                f"jsonl:{src}",
                "--tokenizer",
                "byte",
                "--out",
                str(out),
                "--workers",
                "1",
                "--shard-mb",
                "0.5",
                "--report-json",
                str(rep),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "MB/s" in text and "peak RSS" in text and "train" in text
    assert json.loads(rep.read_text())["complete"] is True


# --------------------------------------------------------------------------- memory

_MEMORY_SCRIPT = r"""
import json, sys
from mdm_prime.data.prepare import prepare_shards, peak_rss_bytes
res = {}
for name in ("x1", "x4"):
    r = prepare_shards(f"jsonl:{sys.argv[1]}/{name}", f"{sys.argv[1]}/out-{name}", "byte", workers=1,
                       shard_mb=1.0, batch_mb=0.25, log=None)
    res[name] = {"main_hwm": peak_rss_bytes(), "worker": max(r.peak_rss_workers), "mb": r.text_bytes / 1e6}
print(json.dumps(res))
"""


def test_memory_stays_bounded_at_four_times_the_data(tmp_path):
    """Peak RSS (VmHWM) of the main process and of the worker at 4× the data within 8 MiB of 1×.

    Both runs happen in one fresh subprocess, 1× first: the main process's high-water mark can only
    rise, so a rise of < 8 MiB while tokenizing 12 MB more text means nothing grows with the corpus
    (holding the 4× corpus's text would add 16 MB, its uint16 tokens 32 MB). Measured: + 0.3 MiB."""
    rng = random.Random(0)
    vocab = [f"w{i}" * (1 + i % 4) for i in range(500)]
    for name, mb in (("x1", 4), ("x4", 16)):
        folder = tmp_path / name
        folder.mkdir()
        with open(folder / "a.jsonl", "w") as f:
            size = 0
            while size < mb * 1e6:
                d = " ".join(rng.choices(vocab, k=400))
                f.write(json.dumps({"text": d}) + "\n")
                size += len(d)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["x4"]["mb"] > 3.9 * res["x1"]["mb"]
    mib = 2**20
    assert res["x4"]["main_hwm"] - res["x1"]["main_hwm"] < 8 * mib, res
    assert res["x4"]["worker"] - res["x1"]["worker"] < 8 * mib, res
    assert res["x4"]["worker"] < 256 * mib, res


_KILL_SCRIPT = r"""
import sys, time
from mdm_prime.data.prepare import prepare_shards
from mdm_prime.data.sources import DocumentSource, open_source


class Stalls(DocumentSource):
    # the real source, but reading hangs after 400 documents (a run that gets killed there)
    def __iter__(self):
        for i, d in enumerate(super().__iter__()):
            if i == 400:
                time.sleep(3600)
            yield d


s = open_source(sys.argv[1])
src = Stalls(s.spec, s.kind, s.files, s.text_field)
prepare_shards(src, sys.argv[2], "byte", fractions=(0.8, 0.1, 0.1), seed=3, workers=2, shard_mb=0.03,
               batch_mb=0.005, log=None)
"""


def test_resume_after_sigkill(byte_corpus, tmp_path):
    """A real kill (SIGKILL of the main process and its workers) after some groups: the next run
    continues from the last committed group and produces the same bytes as an uninterrupted run."""
    import signal
    import time

    _, src, full, _ = byte_corpus
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, f"jsonl:{src}", str(out)], env=env, start_new_session=True
    )
    try:
        for _ in range(6000):  # wait (hang guard 60 s) until the stalled run has committed groups
            if (out / "index.json").exists() and read_index(out)["groups_done"] >= 2 and proc.poll() is None:
                time.sleep(0.2)  # let it reach the stall: commits after the check are fine too
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    index = read_index(out)
    assert not index["complete"] and 2 <= index["groups_done"] < read_index(full)["groups_done"]
    r = prepare_shards(
        f"jsonl:{src}", out, "byte", fractions=FR, seed=3, workers=2, shard_mb=0.03, batch_mb=0.005, log=None
    )
    assert r.complete and r.resumed_groups == index["groups_done"]
    for p in full.rglob("*"):
        if p.suffix in (".bin", ".idx"):
            assert (out / p.relative_to(full)).read_bytes() == p.read_bytes(), p
    assert not list(out.rglob(".*.tmp"))


# --------------------------------------------------------------------------- wiring: CLI and training


@pytest.fixture
def small_text(tmp_path, monkeypatch):
    """A few-KB text corpus (documents separated by blank lines) and a private data root."""
    monkeypatch.setenv("MDM_PRIME_DATA", str(tmp_path / "data_root"))
    docs = make_docs(60, seed=5, max_words=25)
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(docs))
    return path, docs


def test_cli_data_prepare_out_round_trip(small_text, tmp_path, capsys):
    """``mdm-prime data prepare SPEC --tokenizer byte --out DIR`` writes shards whose documents decode
    back to the corpus (each once, all splits together); without --out the in-memory prepare still runs."""
    from mdm_prime.cli import main

    path, _ = small_text
    out = tmp_path / "shards"
    argv = ["data", "prepare", f"text:{path}", "--tokenizer", "byte", "--out", str(out), "--workers", "1"]
    assert main(argv) == 0
    assert "MB/s" in capsys.readouterr().out
    sh = ShardedTokens(out)
    got = [
        bytes(d.astype(np.uint8)).decode() for s in ("train", "valid", "test") for d in sh.iter_documents(s)
    ]
    assert sorted(got) == sorted(load_text_file(path))
    assert sum(sh.num_documents(s) for s in ("train", "valid", "test")) == len(load_text_file(path))
    assert main(["data", "prepare", f"text:{path}", "--tokenizer", "byte", "--seq-len", "16"]) == 0
    assert "train" in capsys.readouterr().out and not (tmp_path / "data_root" / "shards").exists()


def _train_argv(data, out, steps):
    return [
        "train",
        "--data",
        data,
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--max-steps",
        str(steps),
        "--no-progress",
        "--precision",
        "fp32",
        "--subtokens",
        "2",
        "--out",
        str(out),
        *set_args(
            **TINY_TRANSFORMER, **QUIET_RUN, final_eval_sequences=2, final_eval_num_times=2, warmup_steps=0
        ),
    ]


def test_train_on_shards_end_to_end_with_exact_resume(small_text, tmp_path, capsys):
    """``train --data shards:DIR``: the tokenizer comes from the shards, windows are drawn from the run's
    generator (3 steps in one go = 1 step then a resume to 3, bit for bit), validation uses the fixed
    held-out windows, and a conflicting --tokenizer is refused."""
    from mdm_prime.checkpoint import load_pretrained
    from mdm_prime.cli import main
    from mdm_prime.tasks import ShardsTask, load_task

    path, _ = small_text
    shards = tmp_path / "shards"
    prepare_shards(f"text:{path}", shards, "byte", fractions=(0.8, 0.1, 0.1), workers=1, log=None)
    spec = f"shards:{shards}"
    assert main(_train_argv(spec, tmp_path / "ref", 3)) == 0
    assert main(_train_argv(spec, tmp_path / "run", 1)) == 0
    assert main([*_train_argv(spec, tmp_path / "run", 3), "--resume"]) == 0
    a = load_pretrained(tmp_path / "ref" / "checkpoint", use_ema=False).state_dict()
    b = load_pretrained(tmp_path / "run" / "checkpoint", use_ema=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_losses = [
        json.loads(x).get("loss") for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    ]
    run_losses = [
        json.loads(x).get("loss") for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [v for v in ref_losses if v is not None] == [v for v in run_losses if v is not None]
    cfg = json.loads((tmp_path / "ref" / "train_config.json").read_text())
    assert cfg["tokenizer"] == "byte" and cfg["data"] == spec
    task = load_task(tmp_path / "ref")
    assert isinstance(task, ShardsTask) and task.tokenizer.name == "byte"
    index = read_index(shards)
    cpt = index["splits"]["valid"]["characters"] / index["splits"]["valid"]["tokens"]
    assert task.characters_per_token == pytest.approx(cpt)
    # the held-out windows are the shards' fixed valid windows: scoring them through --data gives the run's
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "ref"), "--num-sequences", "3", "--num-times", "2", "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert (
        main(
            [
                "eval",
                str(tmp_path / "ref"),
                "--data",
                spec,
                "--num-sequences",
                "3",
                "--num-times",
                "2",
                "--json",
            ]
        )
        == 0
    )
    other = json.loads(capsys.readouterr().out)
    assert other["nelbo_nats_per_token"] == own["nelbo_nats_per_token"]
    assert own["bits_per_char"] == pytest.approx(own["bits_per_token"] / cpt)
    assert main([*_train_argv(spec, tmp_path / "bad", 1), "--tokenizer", "gpt2"]) == 2
    assert "prepared with 'byte'" in capsys.readouterr().err
