"""Portable checkpoints: ``save_pretrained(model, dir)`` / ``load_pretrained(dir)``.

Layout (a directory the Hugging Face hub accepts as a model repository)::

    config.json          {"format_version": 1, "library": "mdm-prime", "library_version": ...,
                          "model": model.config  (architecture, sub-tokenizer incl. permutation,
                                                  schedule, sizes: enough to rebuild the model),
                          "files": {name: {"sha256": ..., "bytes": ...}},   (integrity check)
                          "has_ema": bool, "extra": {...}}
    model.safetensors    the raw (online) weights
    ema.safetensors      the EMA weights, only when given (same keys and shapes)

Loading needs only this package: ``build_model(config["model"])`` then the weights.
``load_pretrained(dir, use_ema=True)`` loads the EMA weights when the checkpoint has them, else the raw
weights. Each weights file's SHA-256 and size are recorded, so a truncated, corrupted or mismatched
file is reported before any weights are used.

Writes are atomic per file (temporary file, fsync, ``os.replace``); ``config.json`` is written last,
so a reader never sees a config that names weights which are not yet complete (and a stale pair is
caught by the hashes). :func:`replace_pretrained` replaces a whole checkpoint directory atomically
(the trainer's ``checkpoint/``): it writes ``<dir>.tmp``, then swaps it in through ``<dir>.old``;
:func:`current_checkpoint` finds the complete one when a swap stopped between its two renames.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import fileio
from .fileio import fsync_dir

__all__ = [
    "save_pretrained",
    "replace_pretrained",
    "current_checkpoint",
    "read_trainer_state",
    "TRAINER_STATE",
    "load_pretrained",
    "from_pretrained",
    "read_config",
    "FORMAT_VERSION",
    "CheckpointError",
    "read_verified",
    "verify_checkpoint",
]

FORMAT_VERSION = 1


def _library_version() -> str:
    from . import __version__  # late: this module may be imported by the package's __init__

    return __version__


CONFIG_NAME, WEIGHTS_NAME, EMA_NAME = "config.json", "model.safetensors", "ema.safetensors"
TRAINER_STATE = "trainer_state.pt"
"""The trainer's file beside the weights (step, data position, optimizer, random states), hashed in
``config.json`` like them."""


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded (missing, corrupted, incompatible)."""


def _state_bytes(state_dict: dict) -> bytes:
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} must be a tensor, got {type(value).__name__}")
        tensors[key] = value.detach().to("cpu").contiguous().clone()  # clone: no shared storage
    return st_save(tensors)


def save_pretrained(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    ema_state_dict: dict | None = None,
    extra: dict | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and (if given) ``ema.safetensors`` into ``directory``.

    Args:
        model: any model of :mod:`mdm_prime.models` (needs ``.config`` and ``.state_dict()``).
        ema_state_dict: EMA weights with the model's keys and shapes, or ``None``.
        extra: JSON-able metadata stored under ``"extra"`` (e.g. training step, data set name).
        extra_files: ``{name: bytes}`` written beside the weights and hashed in the same ``files`` table
            (the trainer stores ``trainer_state.pt`` this way); read them back with :func:`read_verified`.

    Returns the directory path. Other files in the directory are left alone; an ``ema.safetensors``
    from an earlier save is removed when no EMA is given.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "architecture" not in config:
        raise TypeError(
            f"model must have a .config dict with an 'architecture' (a mdm_prime model), "
            f"got {type(model).__name__}"
        )
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
    state = model.state_dict()
    files = {WEIGHTS_NAME: _state_bytes(state)}
    if ema_state_dict is not None:
        _check_state(ema_state_dict, state, "ema_state_dict")
        files[EMA_NAME] = _state_bytes(ema_state_dict)
    for name, data in (extra_files or {}).items():
        if name in (CONFIG_NAME, WEIGHTS_NAME, EMA_NAME) or "/" in name or not isinstance(data, bytes):
            raise ValueError(
                f"extra_files: {name!r} must be a plain file name other than the checkpoint's "
                f"own files, with bytes content"
            )
        files[name] = data
    meta = {
        "format_version": FORMAT_VERSION,
        "library": "mdm-prime",
        "library_version": _library_version(),
        "model": config,
        "has_ema": ema_state_dict is not None,
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for name, data in files.items()
        },
        "extra": extra if extra is not None else {},
    }
    try:
        config_bytes = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    except (TypeError, ValueError) as err:
        raise TypeError(f"config and extra must be JSON-serialisable: {err}") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        fileio.atomic_write_bytes(directory / name, data)
    if ema_state_dict is None and (directory / EMA_NAME).exists():
        (directory / EMA_NAME).unlink()
    fileio.atomic_write_bytes(directory / CONFIG_NAME, config_bytes)
    return directory


def replace_pretrained(model: torch.nn.Module, directory: str | os.PathLike, **save_kwargs) -> Path:
    """:func:`save_pretrained` into ``directory`` as a whole, atomically: write ``<dir>.tmp``, fsync it,
    move the current ``<dir>`` to ``<dir>.old``, move ``<dir>.tmp`` to ``<dir>`` (fsyncing the parent
    after each rename), then delete ``<dir>.old``. A crash leaves ``<dir>`` or ``<dir>.old`` complete
    (see :func:`current_checkpoint`). On an OSError (disk full, permissions) the partial files are
    removed, the previous ``<dir>`` is put back and the error is raised again."""
    final = Path(directory)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        save_pretrained(model, tmp, **save_kwargs)
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            fsync_dir(final.parent)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists() and old.exists():
            os.replace(old, final)  # put the previous checkpoint back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def current_checkpoint(directory: str | os.PathLike) -> Path:
    """``directory``, or ``<directory>.old`` when a :func:`replace_pretrained` stopped between its two
    renames (the previous checkpoint, complete)."""
    directory = Path(directory)
    old = directory.with_name(directory.name + ".old")
    return old if not directory.exists() and old.exists() else directory


def _check_state(found: dict, expected: dict, what: str) -> None:
    """CheckpointError naming missing/unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{what} does not match the model: missing keys {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{' …' if len(unexpected) > 5 else ''}"
        )
    for key, tensor in expected.items():
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{what}: shape mismatch for {key!r}: the model (from config.json) expects "
                f"{tuple(tensor.shape)}, the weights have {tuple(found[key].shape)}"
            )


def read_config(directory: str | os.PathLike) -> dict:
    """Read and validate ``config.json`` of a checkpoint directory (no weights are read)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r} has no {CONFIG_NAME}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON (corrupted or truncated?): {err}") from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise CheckpointError(f"{path} has no 'format_version': not an mdm-prime checkpoint")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {meta['format_version']!r}; this mdm-prime "
            f"{_library_version()} reads format_version {FORMAT_VERSION} only"
        )
    if not isinstance(meta.get("model"), dict) or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"{path} lacks the 'model' config or the 'files' table")
    return meta


def read_verified(directory: str | os.PathLike, name: str, meta: dict | None = None) -> bytes:
    """The bytes of file ``name`` of a checkpoint, after checking its size and SHA-256 against
    ``config.json`` (FileNotFoundError if absent, :class:`CheckpointError` if truncated or corrupted)."""
    directory = Path(directory)
    meta = read_config(directory) if meta is None else meta
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r} has no {name} (config.json lists it)")
    record = meta["files"].get(name)
    if not isinstance(record, dict):
        raise CheckpointError(f"{CONFIG_NAME} of {str(directory)!r} has no record for {name}")
    data = path.read_bytes()
    if len(data) != record.get("bytes"):
        raise CheckpointError(
            f"{path} has {len(data)} bytes, config.json records {record.get('bytes')}: "
            f"the file is truncated or from another save"
        )
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise CheckpointError(
            f"{path} fails its SHA-256 check against config.json: the file is corrupted or from another save"
        )
    return data


def verify_checkpoint(directory: str | os.PathLike) -> dict:
    """Check every file listed in ``config.json`` (size and SHA-256); returns the config."""
    meta = read_config(directory)
    for name in meta["files"]:
        read_verified(directory, name, meta)
    return meta


def read_trainer_state(directory: str | os.PathLike) -> dict:
    """The :data:`TRAINER_STATE` of a checkpoint, checked against ``config.json`` (size and SHA-256;
    a checkpoint from before the file was hashed is read unchecked) and loaded with
    ``weights_only=True``; FileNotFoundError when absent, :class:`CheckpointError` when unreadable."""
    directory = Path(directory)
    meta = read_config(directory)
    if TRAINER_STATE in meta["files"]:
        data = read_verified(directory, TRAINER_STATE, meta)
    elif (directory / TRAINER_STATE).is_file():
        data = (directory / TRAINER_STATE).read_bytes()
    else:
        raise FileNotFoundError(f"--resume: the checkpoint {directory} has no {TRAINER_STATE}")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise CheckpointError(
            f"{directory / TRAINER_STATE} cannot be read ({type(err).__name__}): truncated or "
            f"corrupted; use --restart to start the run again"
        ) from None


def _read_weights(directory: Path, name: str, meta: dict) -> dict:
    path = directory / name
    data = read_verified(directory, name, meta)
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None


def load_pretrained(
    directory: str | os.PathLike, use_ema: bool = True, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Rebuild the model saved in ``directory`` and load its weights (in eval mode).

    Args:
        use_ema: load ``ema.safetensors`` when the checkpoint has EMA weights (else the raw weights).
        map_location: device for the returned model.

    Raises FileNotFoundError (missing directory/file), :class:`CheckpointError` (a ValueError:
    unknown format version, shape or key mismatch, truncated or corrupted weights).
    """
    from .models import build_model

    directory = Path(directory)
    meta = read_config(directory)
    try:
        model = build_model(meta["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"cannot rebuild the model from {directory / CONFIG_NAME}: {err}") from None
    name = EMA_NAME if use_ema and meta.get("has_ema") else WEIGHTS_NAME
    state = _read_weights(directory, name, meta)
    _check_state(state, model.state_dict(), str(directory / name))
    model.load_state_dict(state)
    return model.to(map_location).eval()


from_pretrained = load_pretrained
"""Alias of :func:`load_pretrained` (Hugging Face naming)."""
