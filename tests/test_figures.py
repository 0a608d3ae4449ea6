"""Readable figures: the summary figure's panels (units, lower-is-better, honest axes, no empty axes,
log ticks), the toy figure's colour bar, labelled image grids, and nothing drawn outside a figure."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mdm_prime.experiments.report import build_summary_figure, load_studies
from mdm_prime.plotting import (
    _pil_font,
    add_title_strip,
    save_image_grid,
    save_toy_density,
    toy_density_figure,
    wrap_to_width,
)

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
UNITS = ("bits/char", "bits/dim", "nats/coordinate", "perplexity", "Fréchet distance")


def _texts_inside(fig) -> list[str]:
    """Drawn texts of ``fig`` (titles, labels, tick labels, legends, annotations) whose rendered extent
    leaves the figure; empty when everything fits."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in fig.texts if t.get_text().strip()]
    for ax in fig.get_axes():
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        lo, hi = sorted(ax.get_xlim())
        texts += [t for t, x in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= x <= hi]
        lo, hi = sorted(ax.get_ylim())
        texts += [t for t, y in zip(ax.get_yticklabels(), ax.get_yticks()) if lo <= y <= hi]
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    out = []
    for text in texts:
        if not text.get_visible() or not text.get_text().strip():
            continue
        ext = text.get_window_extent(renderer)
        if ext.x0 < box.x0 - 1 or ext.x1 > box.x1 + 1 or ext.y0 < box.y0 - 1 or ext.y1 > box.y1 + 1:
            out.append(text.get_text())
    return out


def _labelled_x_ticks(ax) -> list[str]:
    lo, hi = sorted(ax.get_xlim())
    return [
        t.get_text()
        for t, loc in zip(ax.get_xticklabels(), ax.get_xticks())
        if t.get_text().strip() and lo <= loc <= hi
    ]


@pytest.fixture(scope="module")
def summary():
    studies = load_studies(RESULTS)
    if not studies:
        pytest.skip("no committed study JSONs")
    fig = build_summary_figure(studies)
    yield studies, fig
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_summary_panels_have_units_lower_is_better_and_no_empty_axes(summary):
    _, fig = summary
    axes = fig.get_axes()
    assert axes
    for ax in axes:
        drawn = ax.lines or ax.patches or ax.collections or ax.images
        assert drawn, f"empty axes {ax.get_title()!r}"
        label = ax.get_ylabel()
        assert "↓" in label, label
        assert any(u in label for u in UNITS), label
    assert _texts_inside(fig) == []


def test_summary_compute_panel_has_readable_log_ticks(summary):
    studies, fig = summary
    if "compute_scaling" not in studies:
        pytest.skip("no compute_scaling study")
    ax = next(a for a in fig.get_axes() if "compute" in a.get_title())
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    assert len(_labelled_x_ticks(ax)) >= 3, _labelled_x_ticks(ax)


def test_summary_bars_are_honest(summary):
    """MNIST bars start at zero; the toy bars are the excess over the exact entropy, from the entropy."""
    studies, fig = summary
    if "images" in studies:
        ax = next(a for a in fig.get_axes() if "bits/dim" in a.get_ylabel())
        assert ax.get_ylim()[0] == 0
    if "toy" in studies:
        rows = studies["toy"]["rows"]
        ax = next(a for a in fig.get_axes() if "nats/coordinate" in a.get_ylabel())
        assert "entropy" in ax.get_ylabel()
        heights = sorted(p.get_height() for p in ax.patches)
        entropy = rows[0]["data_entropy_nats_per_token"]
        assert heights == pytest.approx(sorted(r["valid_nats_per_token"] - entropy for r in rows))
        lo, hi = ax.get_ylim()
        assert lo <= 0 < hi and abs(lo) < 0.1 * (hi - lo)  # the baseline is the entropy, in view
        assert any(list(line.get_ydata()) == [0, 0] for line in ax.lines)  # the entropy line


def test_summary_has_no_empty_slot_for_five_panels():
    """Five panels: three on top and two centred below, nothing blank."""
    studies = load_studies(RESULTS)
    studies.pop("images", None)
    if len(studies) < 4:
        pytest.skip("not enough committed studies")
    fig = build_summary_figure(studies)
    assert all(ax.lines or ax.patches or ax.collections for ax in fig.get_axes())
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_toy_figures_have_a_colour_bar_in_probability_per_bin(tmp_path):
    import matplotlib.pyplot as plt

    from mdm_prime.experiments.toy import toy_figure

    rng = np.random.default_rng(0)
    pmf = rng.random((16, 16))
    pmf /= pmf.sum()
    pts = rng.integers(0, 16, size=(600, 2))
    fig = toy_figure(pmf, [("MDM", pts), ("Prime", pts[::-1])], 16, sample_steps=8)
    images = [im for ax in fig.get_axes() for im in ax.images]
    assert len(images) == 3
    assert len({(im.norm.vmin, im.norm.vmax) for im in images}) == 1  # one colour scale
    bars = [ax for ax in fig.get_axes() if "probability" in ax.get_ylabel()]
    assert len(bars) == 1
    assert _texts_inside(fig) == []
    plt.close(fig)

    class Density:
        pass

    density = Density()
    density.pmf = pmf
    fig = toy_density_figure([("a", pmf), ("b", pmf)], factor=2)
    assert any("probability per 2×2-cell bin" in ax.get_ylabel() for ax in fig.get_axes())
    plt.close(fig)
    assert save_toy_density(pts, density, 16, tmp_path / "t.png").stat().st_size > 0


def test_wrap_to_width_never_exceeds_the_width():
    font = _pil_font(12)
    text = "Prime ℓ=8, MNIST · 32 samples · T = 128 steps · 150 training steps " + "x" * 80
    lines = wrap_to_width(text, font, 150)
    assert all(font.getlength(line) <= 150 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def test_image_grid_gets_a_title_strip_that_fits(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(8, 1, 6, 6))
    plain = Image.open(save_image_grid(images, tmp_path / "a.png", ncol=4))
    title = "Prime ℓ=4, MNIST · 8 samples · T = 128 steps · 150 training steps"
    titled = Image.open(save_image_grid(images, tmp_path / "b.png", ncol=4, title=title))
    assert titled.width == plain.width and titled.height > plain.height
    strip = np.asarray(titled.convert("L"))[: titled.height - plain.height]
    assert (strip < 128).any()  # the title is drawn
    assert (strip[:, -2:] == 255).all()  # and not cut at the right edge
    # the grid itself is unchanged below the strip
    assert np.array_equal(np.asarray(titled.convert("L"))[titled.height - plain.height :], np.asarray(plain))
    wide = add_title_strip(plain, "x", min_width=plain.width + 40)
    assert wide.width == plain.width + 40
