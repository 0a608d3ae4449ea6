"""Where installed data lives, and the error raised when a source is missing.

The data root defaults to ``~/.cache/mdm-prime`` and is overridden by the environment variable
``MDM_PRIME_DATA``. Each installable source gets one folder ``<root>/<name>`` (see
:mod:`mdm_prime.data.install`); tokenization caches live under ``<root>/cache``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "MissingDataError", "data_root", "source_dir", "cache_root"]

ENV_VAR = "MDM_PRIME_DATA"


class MissingDataError(FileNotFoundError):
    """A data source is not installed or a user-supplied path does not exist.

    The message always says what was looked for and the exact command or fix.
    """


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$MDM_PRIME_DATA``, else ``~/.cache/mdm-prime``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mdm-prime"


def source_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Folder of the installed source ``name`` (it may not exist yet)."""
    return data_root(root) / name


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """Folder for tokenization caches and trained tokenizers."""
    return data_root(root) / "cache"


def require(name: str, relative: str, root: str | os.PathLike | None = None) -> Path:
    """Return ``<root>/<name>/<relative>`` or raise :class:`MissingDataError` naming the install command."""
    path = source_dir(name, root) / relative
    if not path.exists():
        raise MissingDataError(
            f"data source {name!r} is not installed (looked for {path}). "
            f"Install it with: mdm-prime data install {name}"
            + (f"   (data root from ${ENV_VAR})" if os.environ.get(ENV_VAR) and root is None else "")
        )
    return path
