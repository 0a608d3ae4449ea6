"""Plots people would rather see than read: the training curve with the validation bound, labelled
image grids and 2-D toy densities with a colour bar. matplotlib runs headless (Agg)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .extras import require

__all__ = [
    "add_title_strip",
    "bin_counts",
    "bin_pmf",
    "image_grid_title",
    "plot_metrics",
    "read_metrics",
    "save_image_grid",
    "save_toy_density",
    "toy_bin_factor",
    "toy_density_figure",
    "wrap_to_width",
]


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
    require("matplotlib", "plots (loss.png, study figures)")
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


def _pil_font(size: int):
    """Pillow font for labels: matplotlib's bundled DejaVu Sans (has ℓ, →, ↓), else Pillow's default."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default(size=size)


def wrap_to_width(text: str, font, width: float) -> list[str]:
    """``text`` broken at spaces (and inside a word only when the word alone is too wide) into lines
    whose rendered length in ``font`` (``font.getlength``) is at most ``width`` pixels."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:  # a word wider than the line: break it where it overflows
                if line and font.getlength(line + ch) > width:
                    lines.append(line)
                    line = ""
                line += ch
        lines.append(line)
    return lines


def add_title_strip(image, title: str, *, font_size: int = 12, pad: int = 4, min_width: int = 0):
    """A copy of the PIL ``image`` with a white strip above it holding ``title`` (wrapped to the
    image's width, never cut). The image is widened (centred on white) to ``min_width`` if narrower."""
    require("PIL", "titled image grids")
    from PIL import Image, ImageDraw

    font = _pil_font(font_size)
    width = max(image.width, min_width)
    lines = wrap_to_width(title, font, width - 2 * pad)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent + 2
    strip = 2 * pad + line_h * len(lines)
    mode = "L" if image.mode in ("1", "L") else "RGB"
    white = 255 if mode == "L" else (255, 255, 255)
    out = Image.new(mode, (width, strip + image.height), white)
    out.paste(image.convert(mode), ((width - image.width) // 2, strip))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, fill=0 if mode == "L" else (0, 0, 0), font=font)
    return out


def image_grid_title(label: str, *, num: int, steps: int, nfe: float | None = None, train_steps=None) -> str:
    """The label of a sample grid: model (with ℓ), number of samples, sampling steps T and the mean
    network calls (NFE) when caching made it differ from T, training steps."""
    calls = "" if nfe is None or abs(nfe - steps) < 0.05 else f", mean NFE {nfe:.1f}"
    trained = "" if train_steps is None else f" · {train_steps:,} training steps"
    return f"{label} · {num} samples · T = {steps} steps{calls}{trained}"


def save_image_grid(
    images: np.ndarray,
    out_png: str | os.PathLike,
    *,
    ncol: int = 8,
    levels: int = 256,
    scale: int = 2,
    title: str | None = None,
) -> Path:
    """Save ``images`` (``[N, ch, H, W]`` integer pixel levels in ``[0, levels)``, ch ∈ {1, 3}) as a
    PNG grid with a 1-pixel border, under a title strip when ``title`` is given (e.g. from
    :func:`image_grid_title`: model, ℓ, steps)."""
    require("PIL", "image grids (PNG)")
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
    if title:
        img = add_title_strip(img, title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_png)
    return out_png


def toy_bin_factor(num_points: int, size: int) -> int:
    """Bin side (a power of 2) coarse enough for ~10 of ``num_points`` samples per bin on average, so
    the picture is not shot noise."""
    factor = 1
    while factor < size and num_points / (size / factor) ** 2 < 10:
        factor *= 2
    return factor


def bin_counts(points: np.ndarray, size: int, factor: int) -> np.ndarray:
    """Counts of ``points`` (``int[N, 2]``, (row, col) in ``[0, size)``) in ``factor × factor`` bins."""
    cells = -(-size // factor)
    hist = np.zeros((cells, cells))
    np.add.at(hist, (np.asarray(points)[:, 0] // factor, np.asarray(points)[:, 1] // factor), 1.0)
    return hist


def bin_pmf(pmf: np.ndarray, factor: int) -> np.ndarray:
    """A ``[size, size]`` pmf summed over ``factor × factor`` bins (zero-padded at the edge)."""
    pmf = np.asarray(pmf, dtype=np.float64)
    size = pmf.shape[0]
    cells = -(-size // factor)
    pad = cells * factor - size
    return np.pad(pmf, ((0, pad), (0, pad))).reshape(cells, factor, cells, factor).sum((1, 3))


def toy_density_figure(panels: list[tuple[str, np.ndarray]], *, factor: int = 1, suptitle: str = ""):
    """A row of 2-D panels ``(title, probability per bin)`` on one colour scale (0 to the largest
    value of any panel) with one colour bar in probability per bin; returns the matplotlib figure.
    Give sample histograms as fractions of their points so they share the target's unit."""
    require("matplotlib", "plots (loss.png, study figures)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    vmax = max(float(np.max(img)) for _, img in panels) or 1.0
    norm = Normalize(vmin=0.0, vmax=vmax)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.5 * len(panels) + 1.2, 4.1), dpi=100, layout="constrained", squeeze=False
    )
    im = None
    for ax, (title, img) in zip(axes[0], panels):
        im = ax.imshow(img, cmap="magma", norm=norm, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    unit = f"probability per {factor}×{factor}-cell bin" if factor > 1 else "probability per cell"
    bar = fig.colorbar(im, ax=list(axes[0]), shrink=0.85, pad=0.02)
    bar.set_label(f"{unit}\n(samples: fraction of points)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def save_toy_density(points: np.ndarray, density, size: int, out_png: str | os.PathLike) -> Path:
    """2-D histogram of generated ``points`` (``int[N, 2]``, (row, col) in ``[0, size)``) next to the
    target pmf (``density.pmf``, ``[size, size]``) when given, on one colour scale with a colour bar
    (probability per bin)."""
    import matplotlib.pyplot as plt

    points = np.asarray(points)
    factor = toy_bin_factor(len(points), size)
    note = f", {factor}×{factor} bins" if factor > 1 else ""
    panels = [
        (f"samples ({len(points)} points{note})", bin_counts(points, size, factor) / max(len(points), 1))
    ]
    if density is not None:
        panels.insert(0, (f"target density{note}", bin_pmf(density.pmf, factor)))
    fig = toy_density_figure(panels, factor=factor)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
