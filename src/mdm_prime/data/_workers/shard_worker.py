"""Tokenizer worker process for :func:`mdm_prime.data.prepare.prepare_shards` (run as a script).

Started as ``python .../_workers/shard_worker.py`` (a file, not ``-m mdm_prime...``) so that a worker imports
only numpy and ``tokenizers`` — importing the ``mdm_prime`` package pulls in torch (~200 MB of
resident memory per process). It must therefore stay self-contained: no imports from the package.

Protocol over stdin/stdout: frames of an 8-byte little-endian length followed by a pickle.
1. parent → worker: the config ``{"tokenizer": {...}, "seed": int, "edges": [a, b], "dtype": str}``;
2. parent → worker: ``(batch_id, [doc, ...])`` any number of times; worker → parent, in the same
   order, ``("ok", batch_id, {split: (tokens_bytes, doc_lengths_bytes, n_bytes, n_chars)})`` or
   ``("err", batch_id, traceback_text)``;
3. parent → worker: ``None``; worker → parent ``("done", peak_rss_bytes)`` and exit.

Splits (docs/method-independent, see :func:`mdm_prime.data.dataset.split_documents`): document ``d``
goes to train if ``u < edges[0]``, valid if ``u < edges[1]``, else test, with
``u = int(sha256(f"{seed}\\0{d}")[:8]) / 2**64`` — the same assignment as ``split_documents(mode="hash")``.
Each document's tokens are followed by the separator ``eos_id``.
"""

import hashlib
import os
import pickle
import queue
import struct
import sys
import threading
import traceback

import numpy as np

SPLITS = ("train", "valid", "test")


def read_frame(f):
    head = f.read(8)
    if len(head) < 8:
        return EOFError
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(f.read(n))


def write_frame(f, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(data)))
    f.write(data)
    f.flush()


def peak_rss_bytes():
    """Peak resident memory of this process: ``VmHWM`` of ``/proc/self/status`` (Linux), else getrusage.

    (``getrusage(...).ru_maxrss`` would be wrong here: Linux carries the parent's high-water mark over
    fork + exec, so a fresh worker would report the parent's size.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def normalize_text8(text):
    import re

    return re.sub(r"[^a-z]+", " ", text.lower()).strip(" ")


class Encoder:
    """Rebuilds the parent's tokenizer from its description; ``encode_batch(docs) -> [int64 array]``."""

    def __init__(self, cfg):
        self.kind = cfg["kind"]
        if self.kind == "hf":
            from tokenizers import Tokenizer

            self.hf = Tokenizer.from_str(cfg["json"])
            # the same ids without computing character offsets (tokenizers >= 0.20): ~15% faster
            self.hf_batch = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        elif self.kind == "table":
            codes = np.array([ord(c) for c in cfg["chars"]], dtype=np.int64)
            order = np.argsort(codes)
            self.codes, self.ids = codes[order], order + int(cfg["offset"])
            self.text8, self.name = bool(cfg["text8"]), cfg["name"]
        elif self.kind != "byte":
            raise ValueError(f"unknown tokenizer kind {self.kind!r}")

    def _table(self, text):
        if self.text8:
            text = normalize_text8(text)
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.searchsorted(self.codes, cps).clip(0, max(len(self.codes) - 1, 0))
        ok = self.codes[pos] == cps
        if not ok.all():
            bad = sorted({text[i] for i in np.flatnonzero(~ok)[:20]})
            raise ValueError(f"{self.name} tokenizer: characters {bad!r} are not in its vocabulary")
        return self.ids[pos]

    def encode_batch(self, docs):
        if self.kind == "hf":
            return [np.asarray(e.ids, dtype=np.int64) for e in self.hf_batch(docs)]
        if self.kind == "byte":
            out = []
            for d in docs:
                b = d.encode("utf-8")
                if b"\x00" in b:
                    raise ValueError(
                        "byte tokenizer: text contains NUL (byte 0), which is reserved as the separator"
                    )
                out.append(np.frombuffer(b, dtype=np.uint8).astype(np.int64))
            return out
        return [self._table(d) for d in docs]


def split_of(seed, doc, edges):
    digest = hashlib.sha256(f"{seed}\x00{doc}".encode("utf-8", errors="surrogatepass")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return 0 if u < edges[0] else 1 if u < edges[1] else 2


def process(enc, docs, seed, edges, eos_id, dtype):
    ids = enc.encode_batch(docs)
    parts = {s: [] for s in range(3)}
    for d, x in zip(docs, ids):
        parts[split_of(seed, d, edges)].append((d, x))
    out = {}
    eos = np.array([eos_id], dtype=dtype)
    for s, items in parts.items():
        if not items:
            continue
        toks = np.concatenate([y for _, x in items for y in (x.astype(dtype), eos)])
        lengths = np.array([len(x) + 1 for _, x in items], dtype=np.int64)
        n_bytes = sum(len(d.encode("utf-8", errors="surrogatepass")) for d, _ in items)
        out[SPLITS[s]] = (toks.tobytes(), lengths.tobytes(), n_bytes, sum(len(d) for d, _ in items))
    return out


def main():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one worker = one core
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the result pipe
    cfg = read_frame(stdin)
    enc = Encoder(cfg["tokenizer"])
    seed, edges, eos_id, dtype = cfg["seed"], cfg["edges"], cfg["eos_id"], np.dtype(cfg["dtype"])
    inbox = queue.Queue()

    def reader():  # drain stdin always, so the parent never blocks writing while we write results
        while True:
            item = read_frame(stdin)
            inbox.put(item)
            if item is None or item is EOFError:
                return

    threading.Thread(target=reader, daemon=True).start()
    while True:
        item = inbox.get()
        if item is EOFError:
            return 1
        if item is None:
            write_frame(stdout, ("done", peak_rss_bytes()))
            return 0
        batch_id, docs = item
        try:
            result = ("ok", batch_id, process(enc, docs, seed, edges, eos_id, dtype))
        except Exception:  # reported to the parent, which raises
            result = ("err", batch_id, traceback.format_exc())
        del docs, item
        write_frame(stdout, result)


if __name__ == "__main__":
    sys.exit(main())
