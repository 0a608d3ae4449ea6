"""Trainer: learning, exact resume after a kill, DDP equivalence, and early errors."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mdm_prime.configs import resolve_config
from mdm_prime.train import train

from .helpers import QUIET_RUN, set_args, start_cli

DATA = "markov:states=4,concentration=0.1"


def tiny(**overrides):
    base = {
        "data": DATA,
        "seq_len": 16,
        "batch_size": 32,
        "max_steps": 80,
        "lr": 1e-2,
        "warmup_steps": 0,
        "eval_every": 0,
        "log_every": 1,
        "num_preview_samples": 0,
        "final_eval_sequences": 32,
        "final_eval_num_times": 4,
        "checkpoint_every": 0,
        "precision": "fp32",
        "ema_decay": 0.9,
    }
    base.update(overrides)
    return resolve_config("text-tiny", base)


def losses(run):
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.mark.parametrize("family, ell", [("prime", 2), ("mdm", 1), ("ar", 1)])
def test_loss_decreases_on_synthetic_data(tmp_path, family, ell):
    result = train(tiny(family=family, subtokens=ell), tmp_path / "run", show_progress=False)
    values = [v for _, v in losses(tmp_path / "run")]
    first, last = sum(values[:10]) / 10, sum(values[-10:]) / 10
    assert last < first - 0.05, (first, last)
    # the reported number is the valid bound, which can never beat the data entropy by more than noise
    entropy = result["data_entropy_nats_per_token"]
    assert result["nelbo_nats_per_token"] > entropy - 4 * result["stderr_nats_per_token"] - 0.05
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").exists()


@pytest.mark.parametrize("weighting, mix", [("elbo", 0.5), ("unweighted", 0.5), ("mixture", 0.3)])
def test_every_weighting_trains_finite_and_is_scored_by_the_valid_bound(tmp_path, weighting, mix):
    from mdm_prime.configs import load_config_file
    from mdm_prime.evaluate import evaluate_model, load_run

    cfg = tiny(max_steps=6, loss_weighting=weighting, loss_mix=mix, checkpoint_every=6, ema_decay=0.0)
    result = train(cfg, tmp_path / "run", show_progress=False)
    values = [v for _, v in losses(tmp_path / "run")]
    assert len(values) == 6 and all(math.isfinite(v) for v in values)
    saved = load_config_file(tmp_path / "run" / "train_config.json")
    assert (saved.loss_weighting, saved.loss_mix) == (weighting, mix)
    # the final number is the valid bound of the saved model, whatever the training weighting
    _, task, model = load_run(tmp_path / "run")
    again = evaluate_model(model, task, num_sequences=32, num_times=4, seed=cfg.seed)
    assert result["estimator"] == again["estimator"]
    assert result["nelbo_nats_per_token"] == pytest.approx(again["nelbo_nats_per_token"], rel=1e-6)
    entropy = result["data_entropy_nats_per_token"]
    assert result["nelbo_nats_per_token"] > entropy - 4 * result["stderr_nats_per_token"] - 0.05


def test_an_old_config_without_the_weighting_keys_loads_with_the_defaults(tmp_path):
    from mdm_prime.configs import load_config_file

    d = tiny().to_dict()
    del d["loss_weighting"], d["loss_mix"]
    (tmp_path / "train_config.json").write_text(json.dumps(d))
    cfg = load_config_file(tmp_path / "train_config.json")
    assert (cfg.loss_weighting, cfg.loss_mix) == ("elbo", 0.5)
    assert cfg == tiny()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(loss_weighting="flat"), "loss_weighting"),
        (dict(loss_mix=1.5), "loss_mix"),
        (dict(loss_weighting="mixture", objective="valid"), "leave objective at prime"),
        (dict(loss_weighting="unweighted", family="ar", subtokens=1), "loss_weighting must be elbo"),
    ],
)
def test_bad_weighting_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


COMMON = [
    "train",
    "--data",
    DATA,
    "--seq-len",
    "16",
    "--batch-size",
    "16",
    "--max-steps",
    "24",
    "--no-progress",
    "--precision",
    "fp32",
    *set_args(
        **QUIET_RUN | dict(checkpoint_every=4),
        final_eval_sequences=8,
        final_eval_num_times=2,
        warmup_steps=5,
        lr=3e-3,
    ),
]


def test_kill_and_resume_reproduces_the_uninterrupted_losses(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert start_cli([*COMMON, "--out", str(ref)]).wait(timeout=600) == 0
    proc = start_cli([*COMMON, "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it hard once a checkpoint past step 8 exists and before it finishes
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        done = [s for s, _ in losses(run)] if (run / "metrics.jsonl").exists() else []
        if done and done[-1] >= 10:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    killed_at = losses(run)[-1][0]
    assert killed_at < 24, "the run finished before it could be killed; make it longer"
    assert start_cli([*COMMON, "--out", str(run), "--resume"]).wait(timeout=600) == 0
    expected = dict(losses(ref))
    got = losses(run)
    # every step after the last checkpoint is logged twice (before the kill and after resuming): both match
    for step, value in got:
        assert value == pytest.approx(expected[step], abs=1e-6), step
    assert {s for s, _ in got} == set(expected)


def test_resume_refuses_changed_training_settings(tmp_path):
    cfg = tiny(max_steps=2, family="ar", subtokens=1)
    train(cfg, tmp_path / "run", show_progress=False)
    with pytest.raises(ValueError, match="'lr'"):
        train(
            tiny(max_steps=4, family="ar", subtokens=1, lr=5e-3),
            tmp_path / "run",
            resume=True,
            show_progress=False,
        )
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tmp_path / "run", show_progress=False)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_ddp_two_processes_match_one(tmp_path):
    args = [
        "--data",
        DATA,
        "--seq-len",
        "16",
        "--batch-size",
        "16",
        "--max-steps",
        "6",
        "--no-progress",
        "--precision",
        "fp32",
        "--family",
        "prime",
        *set_args(**QUIET_RUN, final_eval_sequences=8, final_eval_num_times=2),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run(
        [sys.executable, "-m", "mdm_prime.cli", "train", *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "mdm_prime.cli",
            "train",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in a] == [s for s, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert y == pytest.approx(x, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "nope"], "unknown source 'nope'"),
        (["train", "--set", "colour=blue"], "unknown config key 'colour'"),
        (["train", "--set", "lr=fast"], "invalid value for lr"),
        (["train", "--family", "mdm", "--subtokens", "2"], "subtokens must be 1"),
        (["train", "--set", "lr"], "key=value"),
        (["train", "--batch-size", "10", "--set", "grad_accum=3"], "divisible by grad_accum"),
        (["eval", "/nonexistent/run"], "/nonexistent/run does not exist"),
    ],
)
def test_bad_input_fails_fast_with_a_clear_message(tmp_path, argv, message):
    out = ["--out", str(tmp_path / "x")] if argv[0] == "train" else []
    proc = subprocess.run(
        [sys.executable, "-m", "mdm_prime.cli", *argv, *out], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "x").exists()  # nothing was written


def test_demo_shows_the_bound_at_the_entropy_and_the_prime_objective_below():
    proc = subprocess.run(
        [sys.executable, "-m", "mdm_prime.cli", "demo"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    entropy = float(lines["data"][-1])
    assert float(lines["L_valid"][2]) == pytest.approx(entropy, abs=1e-6)
    assert float(lines["L_prime"][2]) < entropy - 0.01
