"""Each study's ``--smoke`` variant runs end to end (into tmp_path, never docs/), writes its JSON,
plots and a results page whose numbers come from the JSON."""

import json

import pytest

from mdm_prime.experiments import STUDIES, get_study
from mdm_prime.experiments.__main__ import main


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.parametrize("study", STUDIES)
def test_smoke_study_writes_json_plots_and_page(study, root):
    out = root / "runs"
    results = root / "results"
    assert main([study, "--smoke", "--out-root", str(out), "--results-dir", str(results)]) == 0
    data = json.loads((results / f"{study}-smoke.json").read_text())
    assert data["study"] == study and data["smoke"] is True and data["rows"]
    assert data["command"] == f"mdm-prime experiment {study} --smoke"
    for plot in data.get("plots", []):
        assert (results / plot).stat().st_size > 0
    page = (root / "results.md").read_text()
    assert page.startswith("# Results") and f"## {study}:" in page and data["command"] in page
    # the study's reading in plain words sits in its own section, under its table
    own = page.split(f"## {study}:")[1].split("\n## ")[0]
    for sentence in get_study(study).reading(data):
        assert f"- {sentence}" in own
    assert "native bf16" in data["machine"]  # the machine line says whether the CPU has native bf16
    for row in data["rows"]:
        if "precision_used" in row:  # ... and what the runs trained in
            assert row["precision_used"] in ("fp32", "bf16")
            assert row["precision_used"] in data["machine"].split("trained in")[1].split(",")[0]
        if "valid_nats_per_token" in row:  # a training row: FLOPs = 3 × forward × tokens
            assert row["train_flops"] == pytest.approx(3 * row["fwd_flops_per_token"] * row["train_tokens"])
            assert row["train_tokens"] % (row["max_steps"] * row["batch_size"]) == 0
            if row.get("prime_objective_nats_per_token") is not None:
                assert row["gap_nats_per_token"] == pytest.approx(
                    row["valid_nats_per_token"] - row["prime_objective_nats_per_token"]
                )


def test_smoke_numbers_on_the_page_come_from_the_json(root):
    results = root / "results"
    if not (results / "ell_sweep-smoke.json").exists():
        main(["ell_sweep", "--smoke", "--out-root", str(root / "runs"), "--results-dir", str(results)])
    data = json.loads((results / "ell_sweep-smoke.json").read_text())
    page = (root / "results.md").read_text()
    for row in data["rows"]:
        assert f"{row['valid_bits_per_char']:.3f} ± {row['valid_stderr_bits_per_char']:.3f}" in page
    ar = next(r for r in data["rows"] if r["family"] == "ar")
    assert f"autoregressive baseline ({ar['valid_bits_per_char']:.3f} bits/char)" in page


def test_summary_figure_has_a_panel_for_every_smoke_study(root):
    """After the smoke studies, the page opens with the at-a-glance figure, and every panel drew
    from its study's JSON (a missing field would warn)."""
    import warnings

    from mdm_prime.experiments.report import write_results_md

    results = root / "results"
    for study in ("compute_scaling", "ell_sweep", "sample_quality", "images", "toy"):
        if not (results / f"{study}-smoke.json").exists():
            main([study, "--smoke", "--out-root", str(root / "runs"), "--results-dir", str(results)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = write_results_md(results, include_smoke=True).read_text()
    assert "![at a glance](results/summary-smoke.png)" in page
    assert (results / "summary-smoke.png").stat().st_size > 10_000


def test_summary_figure_of_the_smoke_studies_is_readable(root):
    """One drawn axes per panel (no empty slot), each y label with its unit and ↓ (lower is better),
    at least three labelled ticks on the compute panel's log axis."""
    import matplotlib.pyplot as plt

    from mdm_prime.experiments.report import build_summary_figure, load_studies

    results = root / "results"
    for study in ("compute_scaling", "ell_sweep", "sample_quality", "images", "toy"):
        if not (results / f"{study}-smoke.json").exists():
            main([study, "--smoke", "--out-root", str(root / "runs"), "--results-dir", str(results)])
    fig = build_summary_figure(load_studies(results, include_smoke=True))
    fig.canvas.draw()
    axes = fig.get_axes()
    assert len(axes) == 6
    units = ("bits/char", "bits/dim", "nats/coordinate", "perplexity", "Fréchet distance")
    for ax in axes:
        assert ax.lines or ax.patches or ax.collections, ax.get_title()
        assert "↓" in ax.get_ylabel() and any(u in ax.get_ylabel() for u in units), ax.get_ylabel()
    compute = next(a for a in axes if "compute" in a.get_title())
    lo, hi = sorted(compute.get_xlim())
    labelled = [
        t for t, x in zip(compute.get_xticklabels(), compute.get_xticks()) if t.get_text() and lo <= x <= hi
    ]
    assert len(labelled) >= 3
    plt.close(fig)


def test_images_smoke_reports_how_many_samples_are_recognisable_digits(root):
    """The images study scores its samples and the validation images with the classifier's label
    confidence, and the page shows the share beside the Fréchet distance."""
    results = root / "results"
    if not (results / "images-smoke.json").exists():
        main(["images", "--smoke", "--out-root", str(root / "runs"), "--results-dir", str(results)])
    data = json.loads((results / "images-smoke.json").read_text())
    ref = data["reference_label_confidence"]
    assert sum(ref["class_counts"]) == ref["num_images"] == data["fd_num_samples"]
    last = str(data["nfes"][-1])
    for row in data["rows"]:
        conf = row["fd"][last]["label_confidence"]
        assert (
            0.0 <= conf["confident_fraction"] <= 1.0 and sum(conf["class_counts"]) == data["fd_num_samples"]
        )
    from mdm_prime.experiments.report import write_results_md

    page = write_results_md(results, include_smoke=True).read_text()
    assert f"digits @ NFE {last}" in page
