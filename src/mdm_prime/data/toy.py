"""2-D toy density from a grey photo bundled with scikit-image: a pmf over ``(row, col)`` with ``C`` cells per axis.

The photo is converted to grey, resized to ``C × C`` (anti-aliased) and normalised, so that the
probability of cell ``(r, c)`` is proportional to its brightness (``invert=True``: to its darkness).
A data point is two tokens, each in ``[0, C)``; the exact entropy is known, so any likelihood
bound computed on samples can be checked against it.

Example::

    d = ImageDensity("camera", size=256)
    x = d.sample(4096, torch.Generator().manual_seed(0))   # LongTensor[4096, 2]: (row, col)
    d.entropy()                                            # nats per data point (two tokens)
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["ImageDensity", "TOY_IMAGES"]

TOY_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "moon", "coins", "page", "text", "brick", "grass")


class ImageDensity:
    """``pmf``: ``FloatTensor[C, C]`` (float64) summing to 1; ``size`` = C tokens per axis."""

    def __init__(self, image: str = "camera", size: int = 256, invert: bool = False) -> None:
        if image not in TOY_IMAGES:
            raise ValueError(f"unknown toy image {image!r}; expected one of {list(TOY_IMAGES)}")
        if not isinstance(size, int) or isinstance(size, bool) or not 2 <= size <= 4096:
            raise ValueError(f"size (C per axis) must be an int in [2, 4096], got {size!r}")
        from ..extras import require

        require("skimage", f"the toy density {image!r} (a scikit-image photo)")
        import skimage.data
        from skimage.color import rgb2gray
        from skimage.transform import resize

        img = np.asarray(getattr(skimage.data, image)(), dtype=np.float64)
        if img.ndim == 3:
            img = rgb2gray(img[..., :3] / 255.0)
        else:
            img = img / max(img.max(), 1.0)
        img = resize(img, (size, size), anti_aliasing=True, preserve_range=True).clip(0, None)
        if invert:
            img = img.max() - img
        pmf = torch.from_numpy(img) + 0.0
        self.name, self.size, self.invert = image, size, invert
        self.pmf = pmf / pmf.sum()

    @property
    def num_classes(self) -> int:
        return self.size

    def entropy(self) -> float:
        """Exact entropy of the pmf in nats (per data point = 2 tokens)."""
        p = self.pmf[self.pmf > 0]
        return float(-(p * p.log()).sum())

    def entropy_bits(self) -> float:
        return self.entropy() / math.log(2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` i.i.d. points as ``LongTensor[n, 2]`` of ``(row, col)`` in ``[0, C)``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        flat = torch.multinomial(self.pmf.flatten(), n, replacement=True, generator=generator)
        return torch.stack([flat // self.size, flat % self.size], dim=1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` in nats for ``x: LongTensor[n, 2]`` → ``FloatTensor[n]`` (float64)."""
        return self.pmf[x[:, 0], x[:, 1]].log()

    def __repr__(self) -> str:
        return f"ImageDensity({self.name!r}, size={self.size}, entropy={self.entropy():.4f} nats)"
