"""Streaming preparation: a corpus of any size → token shards (:mod:`mdm_prime.data.shards`), with all cores.

:func:`prepare_shards` reads documents one at a time (:mod:`mdm_prime.data.sources`), packs them into
batches of about ``batch_mb`` MB of text, and hands the batches round-robin to ``workers`` tokenizer
processes (HF ``tokenizers`` ``encode_batch`` for ``gpt2`` and trained BPEs; one thread each). Results
come back in order and are appended to the current group's shard files, one per split; a group closes
after about ``shard_mb`` MB of text, and only then are its shards renamed into place and the index
rewritten — so a preparation killed midway resumes from its last finished group when run again.

Memory is bounded whatever the corpus size: at most ``2·workers`` batches are in flight, and each
process holds one batch and its tokens (the main process never holds a shard: it streams to disk).
Workers run ``_workers/shard_worker.py`` as a script, so they import numpy and ``tokenizers`` only
(importing the ``mdm_prime`` package would add torch, ~200 MB per process).

Splits are by document and deterministic: document ``d`` goes to train / valid / test by
``sha256(seed, d)`` exactly as :func:`mdm_prime.data.dataset.split_documents` (``mode="hash"``) —
independent of the other documents, their order, the batching and the number of workers.

Example::

    report = prepare_shards("jsonl:/data/owt", "/data/owt-gpt2", "gpt2")
    print(report.summary())          # MB/s (total and per worker), tokens, peak RSS
    sh = ShardedTokens("/data/owt-gpt2")

CLI (see :func:`add_arguments`): ``python -m mdm_prime.data.prepare SPEC --tokenizer gpt2 --out DIR``.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes, atomic_write_json, fsync_dir, peak_rss_bytes
from .shards import FORMAT, FORMAT_VERSION, INDEX_FILE, SPLITS, token_dtype
from .sources import DocumentSource, open_source

__all__ = ["PrepareReport", "prepare_shards", "worker_tokenizer_config"]

WORKER_SCRIPT = Path(__file__).resolve().parent / "_workers" / "shard_worker.py"
_DEPTH = 2  # batches in flight per worker


# ------------------------------------------------------------------------------------ tokenizer


def _load_tokenizer(spec: str | os.PathLike, root=None):
    """``byte`` | ``text8`` | ``gpt2`` | a folder written by ``Tokenizer.save`` (e.g. a trained ``bpe:N``)."""
    from .tokenizers import check_tokenizer_spec, get_tokenizer, load_tokenizer

    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and os.path.isdir(os.path.expanduser(spec))):
        return load_tokenizer(Path(spec).expanduser()), str(Path(spec).expanduser().resolve())
    check_tokenizer_spec(spec)
    if spec in ("char", "bpe") or spec.startswith("bpe:"):
        raise ValueError(
            f"tokenizer {spec!r} is built from a corpus; streaming preparation needs a fixed one: "
            "byte, text8, gpt2, or the folder of a saved tokenizer (Tokenizer.save / a run folder's "
            "tokenizer/)"
        )
    return get_tokenizer(spec, root=root), spec


def worker_tokenizer_config(tok) -> dict:
    """The description a worker rebuilds ``tok`` from (see ``_workers/shard_worker.py``)."""
    from .tokenizers import ByteTokenizer, CharTokenizer, HFTokenizer, Text8Tokenizer

    if isinstance(tok, HFTokenizer):
        return {"kind": "hf", "json": tok.hf.to_str()}
    if isinstance(tok, ByteTokenizer):
        return {"kind": "byte"}
    if isinstance(tok, (Text8Tokenizer, CharTokenizer)):
        return {
            "kind": "table",
            "chars": tok.chars,
            "offset": tok.offset,
            "text8": isinstance(tok, Text8Tokenizer),
            "name": tok.name,
        }
    raise TypeError(f"cannot run tokenizer {tok!r} in a worker")


# ------------------------------------------------------------------------------------ workers


def _write_frame(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(data)))
    f.write(data)
    f.flush()


def _read_frame(f):
    head = f.read(8)
    if len(head) < 8:
        raise RuntimeError("a tokenizer worker exited unexpectedly (see its error above)")
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(f.read(n))


class _WorkerPool:
    """``n`` worker processes fed round-robin; results are read back in submission order."""

    def __init__(self, n: int, config: dict) -> None:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
            for _ in range(n)
        ]
        for p in self.procs:
            _write_frame(p.stdin, config)
        self.next_submit = 0
        self.pending: collections.deque = collections.deque()
        self.peak_rss: list[int] = []

    def submit(self, batch_id: int, docs: list[str], tag) -> None:
        p = self.procs[self.next_submit % len(self.procs)]
        _write_frame(p.stdin, (batch_id, docs))
        self.pending.append((self.next_submit % len(self.procs), batch_id, tag))
        self.next_submit += 1

    def full(self) -> bool:
        return len(self.pending) >= _DEPTH * len(self.procs)

    def get(self):
        w, batch_id, tag = self.pending.popleft()
        status, got_id, payload = _read_frame(self.procs[w].stdout)
        if status == "err":
            raise RuntimeError(f"tokenizer worker failed on batch {batch_id}:\n{payload}")
        assert got_id == batch_id, (got_id, batch_id)
        return payload, tag

    def close(self) -> None:
        """Finish: collect each worker's peak RSS and wait for it."""
        for p in self.procs:
            _write_frame(p.stdin, None)
        for p in self.procs:
            _, rss = _read_frame(p.stdout)[:2]
            self.peak_rss.append(int(rss))
            p.stdin.close()
            p.stdout.close()
            p.wait()
        self.procs = []

    def kill(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []


class _InProcess:
    """``workers=0``: the same code path without processes (debugging; slow)."""

    def __init__(self, config: dict) -> None:
        sys.path.insert(0, str(WORKER_SCRIPT.parent))
        try:
            import shard_worker
        finally:
            sys.path.pop(0)
        self.mod, self.cfg = shard_worker, config
        self.enc = shard_worker.Encoder(config["tokenizer"])
        self.pending: collections.deque = collections.deque()
        self.peak_rss: list[int] = []

    def submit(self, batch_id, docs, tag) -> None:
        c = self.cfg
        self.pending.append(
            (self.mod.process(self.enc, docs, c["seed"], c["edges"], c["eos_id"], np.dtype(c["dtype"])), tag)
        )

    def full(self) -> bool:
        return bool(self.pending)

    def get(self):
        return self.pending.popleft()

    def close(self) -> None:
        pass

    kill = close


# ------------------------------------------------------------------------------------ writing


class _Group:
    """The shards of one group being written: per split a temp file and the documents' lengths."""

    def __init__(self, out: Path, group: int, dtype: np.dtype) -> None:
        self.out, self.group, self.dtype = out, group, dtype
        self.files: dict[str, object] = {}
        self.lengths: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        self.counts = {s: {"tokens": 0, "documents": 0, "bytes": 0, "characters": 0} for s in SPLITS}
        self.source_documents = 0

    def name(self, split: str, ext: str) -> str:
        return f"{split}/{self.group:06d}.{ext}"

    def add(self, result: dict, n_docs: int) -> None:
        self.source_documents += n_docs
        for split, (toks, lengths, n_bytes, n_chars) in result.items():
            if split not in self.files:
                path = self.out / self.name(split, "bin")
                path.parent.mkdir(parents=True, exist_ok=True)
                self.files[split] = open(path.with_name(f".{path.name}.tmp"), "wb")
            self.files[split].write(toks)
            lens = np.frombuffer(lengths, dtype=np.int64)
            self.lengths[split].append(lens)
            c = self.counts[split]
            c["tokens"] += len(toks) // self.dtype.itemsize
            c["documents"] += len(lens)
            c["bytes"] += n_bytes
            c["characters"] += n_chars

    def commit(self) -> dict[str, dict]:
        """Make the group's shards durable under their final names; returns the index entries."""
        entries = {}
        for split, f in self.files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            final = self.out / self.name(split, "bin")
            os.replace(final.with_name(f".{final.name}.tmp"), final)
            ends = np.cumsum(np.concatenate(self.lengths[split])).astype("<i8")
            if int(ends[-1]) != self.counts[split]["tokens"]:
                raise RuntimeError(
                    f"{final}: document lengths sum to {int(ends[-1])}, "
                    f"but {self.counts[split]['tokens']} tokens were written"
                )
            atomic_write_bytes(self.out / self.name(split, "idx"), ends.tobytes())
            fsync_dir(final.parent)
            entries[split] = {"name": self.name(split, "bin"), **self.counts[split]}
        return entries

    def abandon(self) -> None:
        for f in self.files.values():
            f.close()
            os.unlink(f.name)


def _batches(docs: Iterator[str], batch_bytes: int, group_bytes: int) -> Iterator[tuple[list[str], bool]]:
    """``(batch, closes_group)``: batches of about ``batch_bytes`` characters of text; a group closes
    after ``group_bytes`` characters (characters, not bytes: cheap to count, and as deterministic).
    The state resets at each group start, so skipping a group's documents and starting again gives
    the same later batches (what resuming relies on)."""
    batch: list[str] = []
    b = g = 0
    for d in docs:
        n = len(d)
        batch.append(d)
        b += n
        g += n
        if g >= group_bytes:
            yield batch, True
            batch, b, g = [], 0, 0
        elif b >= batch_bytes:
            yield batch, False
            batch, b = [], 0
    if batch:
        yield batch, True


# ------------------------------------------------------------------------------------ report


@dataclass
class PrepareReport:
    """What one call of :func:`prepare_shards` did. Sizes of *this run* (a resumed run counts only the
    groups it wrote); ``totals`` are the whole prepared folder's per-split counts.

    Attributes:
        text_bytes: UTF-8 bytes of the documents tokenized in this run; ``mb_per_s`` = text_bytes / 1e6 /
            seconds; ``mb_per_s_per_worker`` = mb_per_s / workers (per core when workers = cores).
        peak_rss_main / peak_rss_workers: peak resident memory in bytes of the main process and of each
            worker (``getrusage``); ``peak_rss_sum`` their sum, an upper bound of the total at any moment.
    """

    out_dir: str
    complete: bool
    resumed_groups: int
    groups_written: int
    documents: int
    text_bytes: int
    tokens: int
    seconds: float
    workers: int
    peak_rss_main: int
    peak_rss_workers: list[int] = field(default_factory=list)
    totals: dict = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.text_bytes / 1e6 / max(self.seconds, 1e-9)

    @property
    def mb_per_s_per_worker(self) -> float:
        return self.mb_per_s / max(self.workers, 1)

    @property
    def peak_rss_sum(self) -> int:
        return self.peak_rss_main + sum(self.peak_rss_workers)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "mb_per_s": self.mb_per_s,
            "mb_per_s_per_worker": self.mb_per_s_per_worker,
            "peak_rss_sum": self.peak_rss_sum,
        }

    def summary(self) -> str:
        w = max(self.peak_rss_workers, default=0)
        state = "complete" if self.complete else "INCOMPLETE (run again to resume)"
        return (
            f"{self.out_dir}: {state}; this run {self.groups_written} groups (resumed after "
            f"{self.resumed_groups}), {self.documents:,} documents, {self.text_bytes / 1e6:,.1f} MB text → "
            f"{self.tokens:,} tokens in {self.seconds:.1f} s = {self.mb_per_s:.2f} MB/s "
            f"({self.mb_per_s_per_worker:.2f} MB/s per worker, {self.workers} workers); peak RSS main "
            f"{self.peak_rss_main / 2**20:.0f} MiB, worker max {w / 2**20:.0f} MiB, sum "
            f"{self.peak_rss_sum / 2**20:.0f} MiB"
        )


# ------------------------------------------------------------------------------------ main entry


def _new_index(tok, tok_spec: str, dtype: np.dtype, source: dict, settings: dict) -> dict:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "complete": False,
        "dtype": dtype.name,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        "tokenizer": {
            "spec": tok_spec,
            "name": tok.name,
            "fingerprint": tok.fingerprint(),
            "config": {k: v for k, v in tok.config().items() if k != "chars"},
        },
        "source": source,
        "settings": settings,
        "groups_done": 0,
        "documents_consumed": 0,
        "splits": {
            s: {"tokens": 0, "documents": 0, "bytes": 0, "characters": 0, "shards": []} for s in SPLITS
        },
    }


def _clean_unfinished(out: Path, groups_done: int) -> None:
    """Remove temp files and shards of groups after the last committed one (left by a killed run)."""
    for s in SPLITS:
        d = out / s
        if not d.is_dir():
            continue
        for p in d.iterdir():
            stem = p.name.split(".")[0]
            if p.name.startswith(".") or (stem.isdigit() and int(stem) >= groups_done):
                p.unlink()


def prepare_shards(
    spec_or_path: str | os.PathLike | DocumentSource,
    out_dir: str | os.PathLike,
    tokenizer_spec: str | os.PathLike = "gpt2",
    *,
    text_field: str = "text",
    hf_split: str = "train",
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    seed: int = 0,
    workers: int | None = None,
    shard_mb: float = 64.0,
    batch_mb: float = 1.0,
    overwrite: bool = False,
    root: str | os.PathLike | None = None,
    stop_after_groups: int | None = None,
    log: Callable[[str], None] | None = print,
    log_every_s: float = 10.0,
) -> PrepareReport:
    """Tokenize a document source into token shards under ``out_dir`` (resumable; see the module doc).

    Args:
        spec_or_path: a source spec (:func:`mdm_prime.data.sources.open_source`) or a DocumentSource.
        out_dir: the shard folder (created). If it holds an unfinished preparation with the same source,
            tokenizer and settings, the run continues after its last finished group.
        tokenizer_spec: ``byte`` | ``text8`` | ``gpt2`` | the folder of a saved tokenizer.
        text_field / hf_split: passed to :func:`open_source`.
        fractions: target fractions of documents for (train, valid, test); ``seed`` the split hash seed.
        workers: tokenizer processes (default: ``os.cpu_count()``); ``0`` tokenizes in this process.
        shard_mb: million characters of text per group (one shard file per split and group).
        batch_mb: million characters of text per batch sent to a worker
            (memory in flight ≈ ``2·workers·batch_mb``).
        overwrite: delete a previous preparation in ``out_dir`` that does not match instead of failing.
        stop_after_groups: stop after committing this many groups in this run (for tests and for
            preparing in several sittings); the folder then reads as unfinished until a run completes it.
        log: progress printer (``None``: silent).

    Returns:
        :class:`PrepareReport` (MB/s, tokens, peak RSS).

    Raises:
        ValueError / TypeError: bad arguments, or ``out_dir`` holds a different preparation (without
        ``overwrite``) — before any tokenization. MissingDataError: the source does not exist.
    """
    t_start = time.perf_counter()
    src = (
        spec_or_path
        if isinstance(spec_or_path, DocumentSource)
        else open_source(spec_or_path, text_field=text_field, hf_split=hf_split, root=root)
    )
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if workers is None:
        workers = os.cpu_count() or 1
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers must be a non-negative int, got {workers!r}")
    for name, v in (("shard_mb", shard_mb), ("batch_mb", batch_mb)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"{name} must be a positive number of MB, got {v!r}")
    if stop_after_groups is not None and (not isinstance(stop_after_groups, int) or stop_after_groups < 1):
        raise ValueError(f"stop_after_groups must be a positive int or None, got {stop_after_groups!r}")
    say = log or (lambda s: None)
    tok, tok_spec = _load_tokenizer(tokenizer_spec, root)
    dtype = token_dtype(tok.vocab_size)
    out = Path(out_dir).expanduser()
    settings = {
        "seed": seed,
        "fractions": [round(f, 9) for f in fr],
        "shard_mb": float(shard_mb),
        "batch_mb": float(batch_mb),
        "text_field": text_field,
        "hf_split": hf_split,
    }
    source = src.fingerprint()
    fresh = _new_index(tok, tok_spec, dtype, source, settings)

    index = fresh
    if (out / INDEX_FILE).exists():
        old = json.loads((out / INDEX_FILE).read_text(encoding="utf-8"))
        same = (
            old.get("format") == FORMAT
            and old.get("version") == FORMAT_VERSION
            and old.get("source", {}).get("sha256") == source["sha256"]
            and old.get("tokenizer", {}).get("fingerprint") == fresh["tokenizer"]["fingerprint"]
            and old.get("settings") == settings
            and old.get("dtype") == dtype.name
        )
        if same:
            index = old
        elif overwrite:
            say(f"{out}: replacing a different preparation (overwrite=True)")
            for s in SPLITS:
                shutil.rmtree(out / s, ignore_errors=True)
            (out / INDEX_FILE).unlink()
        else:
            raise ValueError(
                f"{out} holds a different preparation (source, tokenizer or settings differ); "
                "choose another --out or pass overwrite=True / --overwrite"
            )
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"{out} exists and is not empty (and holds no {INDEX_FILE}); choose an empty or new folder"
        )

    done0 = int(index["groups_done"])
    if index.get("complete"):
        say(f"{out}: already complete ({done0} groups); nothing to do")
        return PrepareReport(
            str(out),
            True,
            done0,
            0,
            0,
            0,
            0,
            time.perf_counter() - t_start,
            workers,
            peak_rss_bytes(),
            [],
            _totals(index),
        )
    out.mkdir(parents=True, exist_ok=True)
    _clean_unfinished(out, done0)
    if not (out / "tokenizer").exists():
        tok.save(out / "tokenizer")
    atomic_write_json(out / INDEX_FILE, index)
    if done0:
        say(f"{out}: resuming after {done0} finished groups ({index['documents_consumed']:,} documents)")

    config = {
        "tokenizer": worker_tokenizer_config(tok),
        "seed": seed,
        "edges": [fr[0], fr[0] + fr[1]],
        "eos_id": tok.eos_id,
        "dtype": dtype.str,
    }
    docs = iter(src)
    for _ in range(int(index["documents_consumed"])):  # skip what finished groups hold (read, not tokenized)
        next(docs)
    t0 = time.perf_counter()
    pool = _WorkerPool(workers, config) if workers > 0 else _InProcess(config)
    run = {"documents": 0, "text_bytes": 0, "tokens": 0, "groups": 0}
    group = _Group(out, done0, dtype)
    stopped = False
    last_log = t0

    def handle(payload, tag) -> bool:
        """Add one result; on a group's last batch commit the group. Returns True to stop."""
        nonlocal group, last_log
        n_docs, closes = tag
        group.add(payload, n_docs)
        for c in payload.values():
            run["text_bytes"] += c[2]
        if not closes:
            return False
        entries = group.commit()
        for s, e in entries.items():
            sp = index["splits"][s]
            sp["shards"].append(e)
            for k in ("tokens", "documents", "bytes", "characters"):
                sp[k] += e[k]
        run["documents"] += group.source_documents
        run["tokens"] += sum(e["tokens"] for e in entries.values())
        run["groups"] += 1
        index["groups_done"] = group.group + 1
        index["documents_consumed"] += group.source_documents
        atomic_write_json(out / INDEX_FILE, index)
        group = _Group(out, group.group + 1, dtype)
        now = time.perf_counter()
        if now - last_log >= log_every_s:
            last_log = now
            say(
                f"  group {index['groups_done']}: {run['text_bytes'] / 1e6:,.0f} MB text, "
                f"{run['tokens']:,} tokens, {run['text_bytes'] / 1e6 / (now - t0):.2f} MB/s, "
                f"main RSS {peak_rss_bytes() / 2**20:.0f} MiB"
            )
        return stop_after_groups is not None and run["groups"] >= stop_after_groups

    try:
        batch_id = 0
        for batch, closes in _batches(docs, int(batch_mb * 1e6), int(shard_mb * 1e6)):
            pool.submit(batch_id, batch, (len(batch), closes))
            batch_id += 1
            del batch
            while pool.full() and not stopped:
                stopped = handle(*pool.get())
            if stopped:
                break
        while pool.pending and not stopped:
            stopped = handle(*pool.get())
    except BaseException:
        pool.kill()
        group.abandon()
        raise
    if stopped:
        pool.kill()  # batches still in flight belong to groups this run does not commit
        group.abandon()
    else:
        pool.close()
        index["complete"] = True
    seconds = time.perf_counter() - t0
    report = PrepareReport(
        str(out),
        bool(index["complete"]),
        done0,
        run["groups"],
        run["documents"],
        run["text_bytes"],
        run["tokens"],
        seconds,
        workers,
        peak_rss_bytes(),
        list(pool.peak_rss),
        _totals(index),
    )
    index["last_run"] = {k: v for k, v in report.to_dict().items() if k != "totals"}
    atomic_write_json(out / INDEX_FILE, index)
    say(report.summary())
    return report


def _totals(index: dict) -> dict:
    return {
        s: {k: v for k, v in index["splits"][s].items() if k != "shards"}
        | {"shards": len(index["splits"][s]["shards"])}
        for s in SPLITS
    }
