"""Optional dependencies and the one-line error when one is missing.

``pip install mdm-prime`` installs the method library only (torch, numpy, tokenizers, safetensors,
tqdm). Figures and some data sets need more, grouped as extras: ``plots`` (matplotlib, Pillow: loss
curves, sample grids, animations, study figures) and ``data`` (scikit-learn's 8×8 digits,
scikit-image's photos for the toy densities, rdata for Jane Austen, pyarrow for Parquet and HF folders);
``all`` is both. Code that needs one calls :func:`require` before importing it.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "require"]

EXTRAS = {
    "matplotlib": ("plots", "matplotlib"),
    "PIL": ("plots", "pillow"),
    "sklearn": ("data", "scikit-learn"),
    "skimage": ("data", "scikit-image"),
    "rdata": ("data", "rdata"),
    "pyarrow": ("data", "pyarrow"),
}
"""Importable module → (extra that installs it, its distribution name)."""


def require(module: str, purpose: str) -> None:
    """Raise ImportError naming the extra to install unless ``module`` (a key of :data:`EXTRAS`) can be
    imported; ``purpose`` says what needs it (e.g. ``"loss.png"``)."""
    if module not in EXTRAS:
        raise KeyError(f"unknown optional module {module!r}; expected one of {sorted(EXTRAS)}")
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module blocked with sys.modules[name] = None
        found = False
    if not found:
        extra, dist = EXTRAS[module]
        raise ImportError(
            f"{purpose} needs {dist}, an optional dependency: pip install 'mdm-prime[{extra}]' "
            f"(or pip install -e '.[all]' in a checkout)"
        )
