"""Benchmark of the streaming data path: synthetic corpus → prepare shards (all cores) → draw windows.

1. Generates a synthetic corpus of ``--size-gb`` GB of text (documents of shuffled sentences of the
   installed offline corpora brown + austen + kjv) as ``.jsonl.gz`` (or ``.txt``) files under
   ``--workdir`` (in /tmp by default; deleted afterwards unless ``--keep``).
2. Prepares it with ``python -m mdm_prime.data prepare`` in a subprocess (GPT-2 tokenizer by default,
   ``--workers`` processes), and reports throughput (MB of UTF-8 text per second, total and per
   worker) and peak memory: each process's own high-water mark (``VmHWM``: main and every worker),
   their sum (an upper bound), and the largest *simultaneous* total RSS of the process tree sampled
   every 0.1 s from /proc (psutil is not needed).
3. Draws ``owt-small``-shaped batches (``L = 1024``, a tiny batch) from the shards with
   :meth:`ShardedTokens.sample_windows` (random and document-aligned windows) and times them, plus
   the fixed held-out set :meth:`ShardedTokens.valid_windows`.

Writes ``bench/results/data.md`` and ``data.json`` (the command first). Example::

    flock /tmp/mdm-heavy.lock python bench/bench_data.py --size-gb 1.0
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTE = (
    "Caveat: the synthetic corpus repeats 139,915 distinct sentences, so the BPE word cache of HF "
    "`tokenizers` hits more often than on OpenWebText; expect lower MB/s on real web text. Run from the "
    "repository root with `PYTHONPATH=src` (or the package installed), under `flock /tmp/mdm-heavy.lock` "
    "on shared machines."
)


def _tree_rss(pid: int) -> int:
    """Current total RSS in bytes of ``pid`` and its descendants (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def sentences(root=None) -> list[str]:
    from mdm_prime.data.text import load_austen, load_brown, load_kjv

    out = []
    for load in (load_brown, load_austen, load_kjv):
        for doc in load(root):
            out.extend(s.strip() for s in re.split(r"(?<=[.!?;])\s+", doc) if len(s.strip()) > 1)
    return out


def make_corpus(folder: Path, size_bytes: int, fmt: str, seed: int, file_mb: int = 128) -> dict:
    """Documents of 5–60 shuffled sentences until ``size_bytes`` of UTF-8 text; ``fmt`` jsonl.gz or txt."""
    t0 = time.perf_counter()
    pool = sentences()
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = docs = files = 0
    f = None
    file_bytes = 0
    while written < size_bytes:
        if f is None or file_bytes >= file_mb * 1e6:
            if f is not None:
                f.close()
            if fmt == "jsonl.gz":
                f = gzip.open(folder / f"part-{files:04d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
            files, file_bytes = files + 1, 0
        text = " ".join(rng.choices(pool, k=rng.randint(5, 60)))
        n = len(text.encode("utf-8"))
        if fmt == "jsonl.gz":
            f.write(json.dumps({"text": text, "id": docs}) + "\n")
        else:
            sub = folder / f"{docs // 10000:04d}"
            sub.mkdir(exist_ok=True)
            (sub / f"{docs:08d}.txt").write_text(text, encoding="utf-8")
        written, docs, file_bytes = written + n, docs + 1, file_bytes + n
    if f is not None:
        f.close()
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {
        "text_bytes": written,
        "documents": docs,
        "files": files if fmt == "jsonl.gz" else docs,
        "disk_bytes": disk,
        "sentences_in_pool": len(pool),
        "seconds": time.perf_counter() - t0,
        "format": fmt,
    }


def prepare(src: Path, out: Path, args) -> dict:
    report_json = out.parent / "prepare_report.json"
    cmd = [
        sys.executable,
        "-m",
        "mdm_prime.data",
        "prepare",
        f"{'jsonl' if args.format == 'jsonl.gz' else 'txt'}:{src}",
        "--tokenizer",
        args.tokenizer,
        "--out",
        str(out),
        "--shard-mb",
        str(args.shard_mb),
        "--report-json",
        str(report_json),
    ]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    if rc:
        raise SystemExit(f"prepare failed with exit code {rc}: {shlex.join(cmd)}")
    rep = json.loads(report_json.read_text())
    rep["wall_seconds_including_startup"] = wall
    rep["sampled_peak_tree_rss"] = peak[0]
    rep["command"] = shlex.join(cmd)
    return rep


def time_windows(out: Path, seq_len: int, batch: int, draws: int) -> dict:
    import torch

    from mdm_prime.data.shards import ShardedTokens, to_device

    sh = ShardedTokens(out)
    res = {
        "seq_len": seq_len,
        "batch": batch,
        "draws": draws,
        "train_tokens": sh.num_tokens("train"),
        "train_shards": len(sh.index["splits"]["train"]["shards"]),
    }
    for mode in ("random", "doc"):
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        x = sh.sample_windows(
            batch, seq_len, g, mode=mode
        )  # first draw: opens the shards / builds piece counts
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(draws):
            x = sh.sample_windows(batch, seq_len, g, mode=mode)
        dt = (time.perf_counter() - t0) / draws
        assert x.shape == (batch, seq_len) and int(x.max()) < sh.vocab_size
        res[mode] = {
            "first_draw_ms": first * 1e3,
            "ms_per_batch": dt * 1e3,
            "tokens_per_s": batch * seq_len / dt,
        }
    t0 = time.perf_counter()
    v = sh.valid_windows(256, seq_len)
    res["valid_windows"] = {"rows": int(v.shape[0]), "ms": (time.perf_counter() - t0) * 1e3}
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    for _ in range(draws):
        to_device(sh.sample_windows(batch, seq_len, g), dev)
    res["to_device"] = {"device": dev, "ms_per_batch": (time.perf_counter() - t0) / draws * 1e3}
    return res


def write_results(path: Path, command: str, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"command": command, **info}, indent=1))
    c, p, w = info["corpus"], info["prepare"], info["windows"]
    mib = 2**20
    lines = [
        "# Streaming data path: prepare shards and draw windows",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['machine']}. {info['load_note']}",
        "",
        NOTE,
        "",
        "## Corpus",
        "",
        f"{c['text_bytes'] / 1e9:.3f} GB of UTF-8 text ({c['documents']:,} documents of 5–60 shuffled "
        f"sentences of brown + austen + kjv, {c['sentences_in_pool']:,} distinct sentences), "
        f"{c['files']} `{c['format']}` files, "
        f"{c['disk_bytes'] / 1e9:.3f} GB on disk; generated in {c['seconds']:.0f} s.",
        "",
        "## Preparation (`prepare_shards`, tokenizer " + f"`{info['tokenizer']}`)",
        "",
        f"Prepare command: `{p['command']}`",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| workers (tokenizer processes) | {p['workers']} |",
        f"| text tokenized | {p['text_bytes'] / 1e6:,.1f} MB, {p['documents']:,} documents |",
        f"| tokens written (all splits, separators included) | {p['tokens']:,} |",
        f"| time (tokenize + write, excluding interpreter start) | {p['seconds']:.1f} s |",
        f"| **throughput** | **{p['mb_per_s']:.2f} MB/s total, "
        f"{p['mb_per_s_per_worker']:.2f} MB/s per worker** |",
        f"| peak RSS, main process (VmHWM) | {p['peak_rss_main'] / mib:.0f} MiB |",
        f"| peak RSS, each worker (VmHWM) | {', '.join(f'{r / mib:.0f}' for r in p['peak_rss_workers'])} "
        "MiB |",
        f"| peak RSS sum main + workers (upper bound) | {p['peak_rss_sum'] / mib:.0f} MiB |",
        f"| **sampled peak of the simultaneous total RSS of the process tree** | "
        f"**{p['sampled_peak_tree_rss'] / mib:.0f} MiB** |",
        "",
        "Splits: "
        + ", ".join(
            f"{s} {t['tokens']:,} tokens / {t['documents']:,} documents / {t['shards']} shards"
            for s, t in p["totals"].items()
        )
        + ".",
        "",
        f"## Windows (`owt-small` shape: L = {w['seq_len']}, batch {w['batch']})",
        "",
        "| mode | first draw | per batch | tokens/s |",
        "|---|---|---|---|",
    ]
    for mode in ("random", "doc"):
        m = w[mode]
        lines.append(
            f"| `{mode}` | {m['first_draw_ms']:.1f} ms | {m['ms_per_batch']:.3f} ms | "
            f"{m['tokens_per_s']:,.0f} |"
        )
    lines += [
        "",
        f"Fixed held-out set `valid_windows(256, {w['seq_len']})`: {w['valid_windows']['rows']} rows in "
        f"{w['valid_windows']['ms']:.1f} ms. `to_device` ({w['to_device']['device']}) + draw: "
        f"{w['to_device']['ms_per_batch']:.3f} ms per batch. Train stream: {w['train_tokens']:,} tokens in "
        f"{w['train_shards']} shards.",
        "",
    ]
    path.with_suffix(".md").write_text("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.0, help="GB of UTF-8 text to generate (default 1.0)")
    ap.add_argument("--format", choices=("jsonl.gz", "txt"), default="jsonl.gz")
    ap.add_argument("--tokenizer", default="gpt2")
    ap.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all cores)")
    ap.add_argument("--shard-mb", type=float, default=64.0)
    ap.add_argument(
        "--workdir", default="/tmp/mdm-bench-data", help="corpus + shards go here (deleted after)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the corpus and the shards")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--results", default=str(HERE / "results" / "data"), help="results path stem (.md, .json)"
    )
    ap.add_argument("--load-note", default="Measured while other jobs shared the cores (contended).")
    args = ap.parse_args(argv)
    command = "python bench/bench_data.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    free = shutil.disk_usage(work.parent).free
    if free < 3.5 * args.size_gb * 1e9:
        raise SystemExit(f"{work.parent}: {free / 1e9:.1f} GB free, need about {3.5 * args.size_gb:.1f} GB")
    try:
        print(f"generating {args.size_gb} GB corpus under {work} ...", flush=True)
        corpus = make_corpus(work / "corpus", int(args.size_gb * 1e9), args.format, args.seed)
        print(json.dumps(corpus), flush=True)
        prep = prepare(work / "corpus", work / "shards", args)
        print(json.dumps({k: v for k, v in prep.items() if k != "totals"}), flush=True)
        windows = time_windows(work / "shards", args.seq_len, args.batch, args.draws)
        print(json.dumps(windows), flush=True)
    finally:
        if not args.keep and work.exists():
            shutil.rmtree(work)
    info = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_note": args.load_note,
        "tokenizer": args.tokenizer,
        "corpus": corpus,
        "prepare": prep,
        "windows": windows,
    }
    write_results(Path(args.results), command, info)
    print(f"wrote {args.results}.md / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
