"""Durable file writes and the process's peak memory: the one home of what checkpoints, token shards,
tokenizers and run folders share.

Every write here is atomic: the bytes go to a temporary file in the same folder, are flushed and
fsynced, and replace the target with one ``os.replace``, then the folder is fsynced, so a crash or a
power cut leaves either the old file or the new one, never a part. (The shard worker,
``data/_workers/shard_worker.py``, keeps its own copy of :func:`peak_rss_bytes` on purpose: it runs
without importing the package.)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "FILE_MODE",
    "fsync_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "peak_rss_bytes",
]

FILE_MODE = 0o644
"""Mode of written files (``tempfile.mkstemp`` creates them 0600)."""


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so that renames and new entries in it survive a power cut (no-op where the
    platform cannot open directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (module docstring); creates the parent folder;
    the temporary file is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as JSON (indent 1, UTF-8, a final newline)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def peak_rss_bytes() -> int:
    """Peak resident memory in bytes of this process (``VmHWM``, Linux; else ``getrusage`` ``ru_maxrss``)."""
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
