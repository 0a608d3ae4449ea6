"""``mdm-prime experiment``: the same study command as ``python -m mdm_prime.experiments``."""

import json

from mdm_prime.cli import build_parser, main


def test_experiment_is_a_command_with_the_study_options():
    args = build_parser().parse_args(["experiment", "toy", "--smoke", "--budget", "0.5", "--out-root", "x"])
    assert (args.study, args.smoke, args.budget, args.out_root) == ("toy", True, 0.5, "x")


def test_bad_budget_is_one_line_and_status_2(capsys, tmp_path):
    assert main(["experiment", "toy", "--budget", "-1", "--out-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--budget must be a positive number, got -1" in err
    assert not any(tmp_path.iterdir())


def test_toy_smoke_runs_through_the_cli(tmp_path):
    results = tmp_path / "results"
    argv = ["toy", "--smoke", "--out-root", str(tmp_path / "runs"), "--results-dir", str(results)]
    assert main(["experiment", *argv]) == 0
    data = json.loads((results / "toy-smoke.json").read_text())
    assert data["study"] == "toy" and len(data["rows"]) == 2
    assert (tmp_path / "results.md").read_text().startswith("# Results")
    # a second call skips both runs (same config hash)
    assert main(["experiment", *argv]) == 0
    data = json.loads((results / "toy-smoke.json").read_text())
    assert [r["action"] for r in data["rows"]] == ["skipped", "skipped"]
