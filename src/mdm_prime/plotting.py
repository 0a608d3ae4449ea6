"""Plots people would rather see than read: the training curve with the validation bound, and
image grids. matplotlib runs headless (Agg)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["plot_metrics", "save_image_grid", "save_toy_density", "read_metrics"]


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics.jsonl`` file (skipping a torn last line of a crashed run)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_metrics(metrics_path: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Training loss (nats/token, raw and smoothed) and the validation bound ``L_valid`` with its
    standard error, against optimizer steps. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [r for r in rows if "loss" in r]
    valid = [r for r in rows if r.get("split") == "valid" and "nelbo_nats_per_token" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        steps = np.array([r["step"] for r in train])
        loss = np.array([r["loss"] for r in train])
        objective = train[-1].get("objective", "prime")
        label = {
            "prime": "training loss: L_prime (paper's objective, not a bound)",
            "valid": "training loss: L_valid (the bound, one draw)",
            "ar-nll": "training loss: autoregressive NLL",
        }.get(objective, "training loss")
        ax.plot(steps, loss, color="0.75", lw=0.8, label=label)
        if len(loss) >= 5:
            k = max(1, len(loss) // 25)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], smooth, color="C0", lw=1.5, label=f"{k}-point mean")
    if valid:
        vs = np.array([r["step"] for r in valid])
        vb = np.array([r["nelbo_nats_per_token"] for r in valid])
        ve = np.array([r.get("stderr_nats_per_token", 0.0) for r in valid])
        ax.errorbar(
            vs,
            vb,
            yerr=2 * ve,
            fmt="o-",
            color="C3",
            ms=4,
            capsize=3,
            label="validation NLL bound L_valid (EMA, ±2 s.e.)",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("nats per token")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def save_image_grid(
    images: np.ndarray, out_png: str | os.PathLike, *, ncol: int = 8, levels: int = 256, scale: int = 2
) -> Path:
    """Save ``images`` (``[N, ch, H, W]`` integer pixel levels in ``[0, levels)``, ch ∈ {1, 3}) as a
    PNG grid with a 1-pixel border."""
    from PIL import Image

    images = np.asarray(images)
    n, ch, h, w = images.shape
    ncol = min(ncol, n)
    nrow = (n + ncol - 1) // ncol
    grid = np.full((nrow * (h + 1) + 1, ncol * (w + 1) + 1, ch), 255, dtype=np.uint8)
    pix = (images.astype(np.float64) * (255.0 / max(levels - 1, 1))).round().clip(0, 255).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = pix[i].transpose(
            1, 2, 0
        )
    img = Image.fromarray(grid[..., 0] if ch == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_png)
    return out_png


def save_toy_density(points: np.ndarray, density, size: int, out_png: str | os.PathLike) -> Path:
    """2-D histogram of generated ``points`` (``int[N, 2]``, (row, col) in ``[0, size)``) next to the
    target pmf (``density.pmf``, ``[size, size]``) when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # bin coarsely enough for ~10 samples per cell on average, so the picture is not shot noise
    factor = 1
    while factor < size and len(points) / (size / factor) ** 2 < 10:
        factor *= 2
    cells = -(-size // factor)
    hist = np.zeros((cells, cells))
    np.add.at(hist, (points[:, 0] // factor, points[:, 1] // factor), 1.0)
    note = f", {factor}×{factor} bins" if factor > 1 else ""
    panels = [(f"samples ({len(points)} points{note})", hist)]
    if density is not None:
        pmf = np.asarray(density.pmf, dtype=np.float64)
        pad = cells * factor - size
        pmf = np.pad(pmf, ((0, pad), (0, pad))).reshape(cells, factor, cells, factor).sum((1, 3))
        panels.insert(0, (f"target density{note}", pmf))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2), dpi=110)
    for ax, (title, img) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img, cmap="magma", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
