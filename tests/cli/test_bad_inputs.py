"""Every bad input of issue 9 gets one clear line on stderr and exit code 2, before any work, with no
traceback; the files of the run it names are left as they were."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mdm_prime.cli import main
from mdm_prime.configs import resolve_config
from mdm_prime.train import train

DATA = "markov:states=4,concentration=0.1"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    cfg = resolve_config(
        "text-tiny",
        {
            "data": DATA,
            "seq_len": 8,
            "batch_size": 8,
            "max_steps": 2,
            "warmup_steps": 0,
            "eval_every": 0,
            "num_preview_samples": 0,
            "final_eval_sequences": 8,
            "final_eval_num_times": 2,
            "checkpoint_every": 0,
            "precision": "fp32",
            "model_size": "tiny",
            "model_overrides": {"dim": 32, "depth": 1, "heads": 2},
        },
    )
    train(cfg, run, show_progress=False)
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def _hashes(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_line_error(capsys, argv, *expected):
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, (argv, captured.err)
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


CONFIG_CASES = [
    (["--subtokens", "40"], "subtokens=40"),
    (["--subtokens", "100"], "subtokens must be <= 64"),
    (["--set", "lr=inf"], "lr must be a finite number, got inf"),
    (["--set", "lr=nan"], "lr must be a finite number, got nan"),
    (["--set", "lr=-1"], "lr must be a finite number > 0"),
    (["--set", "betas=5"], "betas must be two numbers in [0, 1)"),
    (["--set", "betas=[0.9,1.5]"], "betas must be two numbers in [0, 1)"),
    (["--set", "betas=[0.9]"], "betas must be two numbers in [0, 1)"),
    (["--set", "time_eps=0"], "time_eps must be in (0, 1)"),
    (["--set", "time_eps=1.5"], "time_eps must be in (0, 1)"),
    (["--set", "base=1"], "base must be an integer >= 2"),
    (["--set", "max_bad_steps=0"], "max_bad_steps must be a positive integer"),
    (["--set", "grad_clip=inf"], "grad_clip must be a finite number"),
    (["--schedule", "digits:linear"], "lists 1 digit schedules but the tokens have ℓ=2"),
    (["--schedule", "leading:0"], "leading:0"),
    (["--schedule", "zigzag"], "zigzag"),
]


def test_schedule_flag_sets_the_config(tmp_path, capsys):
    import json

    assert main(["train", "--schedule", "leading:2", "--out", str(tmp_path / "x"), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["schedule"] == "leading:2"


@pytest.mark.parametrize("argv, message", CONFIG_CASES)
def test_bad_train_settings(tmp_path, capsys, argv, message):
    _one_line_error(capsys, ["train", *argv, "--out", str(tmp_path / "x"), "--print-config"], message)
    assert not (tmp_path / "x").exists()


def test_out_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("mine")
    _one_line_error(capsys, ["train", "--data", DATA, "--out", str(f)], str(f), "is a file")
    assert f.read_text() == "mine"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "eval", "sample"])
def test_cuda_without_cuda(run_dir, tmp_path, capsys, command):
    argv = (
        ["train", "--data", DATA, "--out", str(tmp_path / "x")]
        if command == "train"
        else [command, str(run_dir)]
    )
    _one_line_error(capsys, [*argv, "--device", "cuda"], "'cuda'", "CUDA is not available")


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_unknown_device(run_dir, capsys, command):
    _one_line_error(capsys, [command, str(run_dir), "--device", "banana"], "'banana'")


def test_truncated_trainer_state(run_dir, tmp_path, capsys):
    run = _copy(run_dir, tmp_path)
    state = run / "checkpoint" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:-50])
    before = _hashes(run)
    _one_line_error(
        capsys,
        ["train", "--out", str(run), "--resume", "--max-steps", "3", "--no-progress"],
        "trainer_state.pt",
        "truncated",
    )
    assert _hashes(run) == before


def test_truncated_raw_weights_are_caught_by_eval_and_sample(run_dir, tmp_path, capsys):
    run = _copy(run_dir, tmp_path)
    raw = run / "checkpoint" / "model.safetensors"
    raw.write_bytes(raw.read_bytes()[:-7])
    for command in ("eval", "sample"):
        _one_line_error(capsys, [command, str(run)], "model.safetensors", "truncated")


def test_garbage_train_config_names_the_file(run_dir, tmp_path, capsys):
    run = _copy(run_dir, tmp_path)
    (run / "train_config.json").write_text("{not json")
    for argv in (
        ["eval", str(run)],
        ["sample", str(run)],
        ["train", "--out", str(run), "--resume", "--no-progress"],
    ):
        _one_line_error(capsys, argv, str(run / "train_config.json"))
    (run / "train_config.json").write_text(json.dumps([1, 2]))
    _one_line_error(capsys, ["sample", str(run)], "train_config.json", "JSON object")


def test_missing_task_json(run_dir, tmp_path, capsys):
    run = _copy(run_dir, tmp_path)
    (run / "task.json").unlink()
    _one_line_error(capsys, ["sample", str(run)], "task.json")


def test_empty_validation_split(tmp_path, capsys):
    corpus = tmp_path / "small.txt"
    corpus.write_text("tiny corpus " * 30)
    _one_line_error(
        capsys,
        [
            "train",
            "--data",
            f"text:{corpus}",
            "--tokenizer",
            "byte",
            "--seq-len",
            "64",
            "--out",
            str(tmp_path / "x"),
        ],
        "empty validation split",
    )
    assert not (tmp_path / "x").exists()


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mdm_prime.cli", "train", "--subtokens", "40", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "subtokens=40" in proc.stderr
