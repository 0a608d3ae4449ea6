"""Run folders are owned: a marker, an OS lock, what a run wrote, and the data fingerprint.

A run folder (``mdm-prime train --out DIR``) carries the marker file :data:`MARKER`, written before
anything else. ``train`` refuses

* a path that is a file, and a non-empty folder without the marker (it never writes into it);
* a run held by a live process: the trainer holds an exclusive ``fcntl.flock`` on the marker for its
  lifetime (with DDP, rank 0 holds it). The OS drops the lock when the process ends, crashed or
  killed, so a stale lock cannot exist;
* an existing run without ``--resume`` or ``--restart``. ``--resume`` continues from the last
  checkpoint, or from step 0 with the saved config when the run stopped before its first checkpoint;
  ``--restart`` removes what the run wrote (:data:`RUN_OUTPUTS`, ``samples/step_*``) and starts again,
  leaving every other file alone.

``data_fingerprint.json`` records what the run trained on (split sizes, a hash of the first and last
items of each split, and for file specs the size and a hash of the head and tail of the file);
``--resume`` (:func:`check_resume`) refuses a changed fingerprint unless ``allow_data_change`` is set,
and settings that differ from the saved ``train_config.json`` outside :data:`RESUME_MAY_CHANGE`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

__all__ = [
    "FINGERPRINT_FILE",
    "MARKER",
    "RESUME_MAY_CHANGE",
    "RUN_OUTPUTS",
    "RunError",
    "RunFolder",
    "RunInterrupted",
    "changed_settings",
    "check_resume",
    "data_fingerprint",
    "fingerprint_changes",
]

MARKER = ".mdm-prime-run"
FINGERPRINT_FILE = "data_fingerprint.json"
RUN_OUTPUTS = (
    "checkpoint",
    "checkpoint.tmp",
    "checkpoint.old",
    "train_config.json",
    "task.json",
    "tokenizer",
    "metrics.jsonl",
    "loss.png",
    FINGERPRINT_FILE,
)
"""What a run writes at its top level (plus ``samples/step_*``): all that ``--restart`` removes."""

RESUME_MAY_CHANGE = frozenset(
    {
        "max_steps",
        "eval_every",
        "eval_sequences",
        "eval_num_times",
        "final_eval_sequences",
        "final_eval_num_times",
        "sample_every",
        "num_preview_samples",
        "sample_steps",
        "log_every",
        "checkpoint_every",
        "device",
        "compile",
        "max_bad_steps",
    }
)
"""Settings that do not change what is trained, so a resumed run may set them anew (a longer
``max_steps`` continues the run; with a cosine schedule the learning-rate curve is stretched from
there on)."""


class RunError(RuntimeError):
    """A training run that cannot start or continue, for a reason the user can act on (the message says
    which); the command line prints it as one line."""

    exit_code = 2


class RunInterrupted(RunError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; exit code ``128 + signal``."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def _has_checkpoint(out: Path) -> bool:
    return (out / "checkpoint" / "config.json").exists() or (out / "checkpoint.old" / "config.json").exists()


class RunFolder:
    """Claims ``out`` for one training process: checks, then :meth:`acquire` (marker + lock).

    ``check()`` only reads; ``acquire()`` creates the folder and marker, takes the lock and, for
    ``restart``, clears the run's own outputs. ``release()`` drops the lock (the OS does it on exit)."""

    def __init__(self, out: str | os.PathLike, *, resume: bool = False, restart: bool = False) -> None:
        if resume and restart:
            raise ValueError("--resume and --restart exclude each other: continue the run, or start it again")
        self.out = Path(out)
        self.resume, self.restart = resume, restart
        self._fd: int | None = None

    @property
    def is_run(self) -> bool:
        if (self.out / MARKER).is_file():
            return True
        # a run from before markers existed: its config and checkpoint identify it
        return (self.out / "train_config.json").is_file() and (self.out / "checkpoint").is_dir()

    def check(self) -> str:
        """``"new"`` (start a run), ``"resume"`` (continue from a checkpoint) or ``"resume-from-start"``
        (saved config, no checkpoint yet); FileExistsError/FileNotFoundError say what to do otherwise."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise FileExistsError(
                f"--out {out} is a file; expected a run folder (new, empty, or from mdm-prime train)"
            )
        nonempty = out.is_dir() and any(out.iterdir())
        if nonempty and not self.is_run:
            raise FileExistsError(
                f"--out {out} is not empty and is not an mdm-prime run folder (no {MARKER}); nothing was "
                f"written to it: choose a new or empty folder"
            )
        if self.resume:
            if not nonempty:
                raise FileNotFoundError(
                    f"--resume: {out} holds no run to continue (start it without --resume)"
                )
            if not (out / "train_config.json").is_file():
                raise FileNotFoundError(
                    f"--resume: {out} has no train_config.json; use --restart to start it again"
                )
            return "resume" if _has_checkpoint(out) else "resume-from-start"
        if nonempty and not self.restart:
            if _has_checkpoint(out):
                raise FileExistsError(
                    f"run folder {out} already holds a run; pass --resume to continue it, --restart to discard "
                    f"it and start again, or choose another --out"
                )
            raise FileExistsError(
                f"run folder {out} holds a run that stopped before its first checkpoint; pass --resume to start "
                f"it from step 0 with its saved config, or --restart to clear it and start again"
            )
        return "new"

    def acquire(self) -> None:
        """Create the folder and marker, take the lock (FileExistsError when a live process holds it)."""
        import fcntl

        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.out / MARKER, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:  # permissions, read-only file system, a file in the path
            raise RunError(f"cannot claim the run folder {self.out}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FileExistsError(
                    f"run folder {self.out} is in use by another live mdm-prime train process (it holds the lock "
                    f"on {MARKER}); wait for it to finish or stop it, or choose another --out"
                ) from None
            raise
        self._fd = fd
        if os.fstat(fd).st_size == 0:
            os.write(fd, (json.dumps({"kind": "mdm-prime run folder"}) + "\n").encode())
            os.fsync(fd)
        if self.restart:
            self.clear_outputs()

    def clear_outputs(self) -> None:
        """Remove what the run wrote (never other files)."""
        for name in RUN_OUTPUTS:
            path = self.out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        samples = self.out / "samples"
        if samples.is_dir():
            for f in samples.glob("step_*"):
                if f.is_file():
                    f.unlink()
            if not any(samples.iterdir()):
                samples.rmdir()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


# ---------------------------------------------------------------------------------------- fingerprint
def _hash_tensor_ends(x, rows: int = 64) -> str:
    import torch

    if x is None:
        return "none"
    x = x.detach().to("cpu").contiguous()
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    for part in (x[:rows], x[-rows:]):
        h.update(part.to(torch.int64).numpy().tobytes())
    return h.hexdigest()


def _file_fingerprint(path: Path, chunk: int = 1 << 20) -> dict:
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > 2 * chunk:
            f.seek(size - chunk)
        h.update(f.read(chunk))
    return {"path": str(path), "bytes": size, "sha256_head_tail": h.hexdigest()}


def data_fingerprint(cfg, task) -> dict:
    """What the run trains on: per split the shape and a hash of its first and last 64 items; for a
    spec naming a file (``text:PATH``…) its size and the hash of its first and last MiB. Infinite
    (sampled) tasks are fingerprinted by their spec and validation split."""
    fp: dict = {"data": cfg.data, "tokenizer": cfg.tokenizer, "seq_len": cfg.seq_len}
    for split in ("train", "valid", "test"):
        x = getattr(task, f"{split}_tokens", None)
        fp[split] = None if x is None else {"shape": list(x.shape), "sha256_ends": _hash_tensor_ends(x)}
    _, sep, rest = str(cfg.data).partition(":")
    if sep and rest:
        path = Path(rest.split(",")[0]).expanduser()
        if path.is_file():
            fp["file"] = _file_fingerprint(path)
    return fp


def fingerprint_changes(saved: dict, now: dict) -> list[str]:
    """Keys whose fingerprints differ."""
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


# ---------------------------------------------------------------------------------------- resume
def changed_settings(saved: dict, now: dict, out: str | os.PathLike) -> list[str]:
    """The config keys whose values differ between the saved run in ``out`` and ``now``; ValueError
    naming those outside :data:`RESUME_MAY_CHANGE` (they would change what the run trains)."""
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    blocking = [k for k in diff if k not in RESUME_MAY_CHANGE]
    if blocking:
        raise ValueError(
            f"--resume: {blocking} would change what the run in {out} trains (data, tokenizer, model or "
            f"optimisation); only {sorted(RESUME_MAY_CHANGE)} may change; use a new --out or --restart"
        )
    return diff


def check_resume(out: str | os.PathLike, cfg, fingerprint: dict, allow_data_change: bool = False) -> bool:
    """Whether ``cfg`` differs from the run's saved ``train_config.json`` (only in
    :data:`RESUME_MAY_CHANGE`, else ValueError); the data must have the saved fingerprint unless
    ``allow_data_change``."""
    from .configs import load_config_file

    out = Path(out)
    diff = changed_settings(load_config_file(out / "train_config.json").to_dict(), cfg.to_dict(), out)
    path = out / FINGERPRINT_FILE
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        changed = fingerprint_changes(saved, fingerprint) if isinstance(saved, dict) else ["(unreadable)"]
        if changed and not allow_data_change:
            raise ValueError(
                f"--resume: the data of {out} changed since the run started ({changed} differ from "
                f"{FINGERPRINT_FILE}); resume on the original data, or pass --allow-data-change to continue "
                f"on the new data anyway"
            )
    return bool(diff)
