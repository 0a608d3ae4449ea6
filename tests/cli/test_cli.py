"""What a new user meets on the command line: help with defaults, --version, the run's opening and
closing lines, and ``sample`` outputs that never overwrite each other and record their settings."""

import json
import re

import pytest

import mdm_prime
from mdm_prime.cli import build_parser, main
from mdm_prime.configs import resolve_config
from mdm_prime.train import train


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"mdm-prime {mdm_prime.__version__}"


def test_train_help_states_the_real_auto_precision_rule(capsys):
    text = _help(capsys, "train")
    assert "bf16 autocast on CUDA and on CPUs with native bf16 dot products (AVX512-BF16 or AMX-BF16)" in text
    assert "fp32 otherwise" in text and "fp32 on CPU" not in text
    assert "text-tiny: 1700" in text  # the preset's step count is shown as the default


@pytest.mark.parametrize("command", ["train", "sample", "eval", "demo", "train-classifier"])
def test_every_option_shows_its_default(capsys, command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    text = _help(capsys, command)
    for action in sub._actions:
        if not action.option_strings or action.help is None or action.dest == "help" or action.required:
            continue
        if action.const is True or action.const is False:  # flags: on or off
            continue
        help_text = " ".join(action.help.split())
        assert "default" in help_text or f"(default: {action.default})" in text, action.option_strings


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = resolve_config(
        "text-tiny",
        {
            "data": "markov:states=4",
            "seq_len": 8,
            "batch_size": 8,
            "max_steps": 2,
            "warmup_steps": 0,
            "eval_every": 0,
            "num_preview_samples": 0,
            "final_eval_sequences": 4,
            "final_eval_num_times": 2,
            "checkpoint_every": 0,
            "precision": "fp32",
            "sample_top_p": 0.7,
            "model_overrides": {"dim": 32, "depth": 1, "heads": 2},
        },
    )
    out = tmp_path_factory.mktemp("runs") / "markov"
    train(cfg, out, show_progress=False)
    return out


def test_training_prints_what_it_runs_and_a_plain_final_line(tmp_path, capsys):
    cfg = resolve_config(
        "text-tiny",
        {
            "data": "markov:states=4",
            "seq_len": 8,
            "batch_size": 8,
            "max_steps": 2,
            "warmup_steps": 0,
            "eval_every": 0,
            "num_preview_samples": 0,
            "final_eval_sequences": 4,
            "final_eval_num_times": 3,
            "checkpoint_every": 0,
            "precision": "fp32",
            "model_overrides": {"dim": 32, "depth": 1, "heads": 2},
        },
    )
    r = train(cfg, tmp_path / "run", show_progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert re.search(r"parameters, device cpu, precision fp32 → fp32", lines[0]), lines[0]
    assert lines[1].startswith("data markov:states=4: fresh draws every step")
    final = lines[-1]
    assert final.startswith(
        "final evaluation, valid split, 4 sequences, 3 draws, EMA weights: NLL upper bound (valid) "
    )
    assert f"{r['nelbo_nats_per_token']:.4f} nats/token = {r['bits_per_token']:.4f} bits/token ± " in final


def test_sample_defaults_to_the_runs_top_p_and_never_overwrites(run, capsys):
    for _ in range(2):
        assert main(["sample", str(run), "--num", "2", "--steps", "3", "--seed", "5"]) == 0
    first, second = run / "samples" / "sample_seed5.stats.json", run / "samples" / "sample_seed5_1.stats.json"
    assert first.exists() and second.exists() and (run / "samples" / "sample_seed5_1.txt").exists()
    settings = json.loads(second.read_text())["settings"]
    assert settings["top_p"] == 0.7 and settings["temperature"] == 1.0  # the run's preview settings
    assert settings["seed"] == 5 and settings["steps"] == 3 and settings["method"] == "joint"
    assert settings["prefix"] is None and settings["infill"] is None
    assert main(["sample", str(run), "--num", "2", "--steps", "3", "--top-p", "0.5", "--seed", "5"]) == 0
    assert json.loads((run / "samples" / "sample_seed5_2.stats.json").read_text())["settings"]["top_p"] == 0.5


def test_sample_prefix_on_a_run_without_a_tokenizer_is_a_clear_error(run, capsys):
    assert main(["sample", str(run), "--prefix", "hello"]) == 2
    assert "needs a text run" in capsys.readouterr().err
