"""Each study's ``--smoke`` variant runs end to end (into tmp_path, never docs/), writes its JSON,
plots and a results page whose numbers come from the JSON."""

import json

import pytest

from mdm_prime.experiments import STUDIES
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
    for row in data["rows"]:
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
