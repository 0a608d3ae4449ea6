"""Run-folder, trainer and checkpoint safety (docs/reliability.md, "Run folders, trainer, CLI").

Each test checks a fault against what must survive it, independently of the code's own bookkeeping:
files are hashed before/after, weights are compared bit for bit with an uninterrupted run.
"""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mdm_prime import fileio
from mdm_prime.checkpoint import CheckpointError, verify_checkpoint
from mdm_prime.configs import resolve_config
from mdm_prime.evaluate import load_run
from mdm_prime.run_folder import MARKER, RunFolder
from mdm_prime.train import RunError, Trainer, train

from .helpers import QUIET_RUN, TINY_TRANSFORMER, set_args, start_cli

DATA = "markov:states=4,concentration=0.1"


def tiny(**overrides):
    base = {
        "data": DATA,
        "seq_len": 8,
        "batch_size": 8,
        "max_steps": 4,
        "lr": 1e-2,
        "warmup_steps": 0,
        "eval_every": 0,
        "log_every": 1,
        "num_preview_samples": 0,
        "final_eval_sequences": 8,
        "final_eval_num_times": 2,
        "checkpoint_every": 0,
        "precision": "fp32",
        "ema_decay": 0.9,
        "family": "prime",
        "subtokens": 2,
        "model_size": "tiny",
        "model_overrides": {"dim": 32, "depth": 1, "heads": 2},
    }
    base.update(overrides)
    return resolve_config("text-tiny", base)


def tree_hashes(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def weights(run: Path, name="model.safetensors") -> dict:
    return load_file(str(run / "checkpoint" / name))


def assert_same_weights(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = weights(a, name), weights(b, name)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (name, k)


# ------------------------------------------------------------------------------------------------ folders
def test_a_folder_that_is_not_a_run_is_never_written(tmp_path):
    user = tmp_path / "mine"
    (user / "samples").mkdir(parents=True)
    (user / "task.json").write_text('{"my": "notes"}')
    (user / "metrics.jsonl").write_text("my own metrics\n")
    (user / "samples" / "step_1.txt").write_text("precious")
    before = tree_hashes(user)
    for kwargs in ({}, {"resume": True}, {"restart": True}):
        with pytest.raises(FileExistsError, match="not an mdm-prime run folder"):
            train(tiny(), user, show_progress=False, **kwargs)
    assert tree_hashes(user) == before
    assert not (user / MARKER).exists()


def test_out_pointing_at_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        train(tiny(), f, show_progress=False)
    assert f.read_text() == "x"


def test_a_run_held_by_a_live_process_is_refused(tmp_path):
    run = tmp_path / "run"
    train(tiny(max_steps=2), run, show_progress=False)
    holder = RunFolder(run, resume=True)
    holder.acquire()  # another descriptor holding the flock: as another process would
    try:
        with pytest.raises(FileExistsError, match="in use by another live"):
            train(tiny(max_steps=3), run, resume=True, show_progress=False)
    finally:
        holder.release()
    train(tiny(max_steps=3), run, resume=True, show_progress=False)  # released: the lock leaves no trace


def test_run_without_checkpoint_can_be_resumed_from_step_0_or_restarted(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(tiny(), ref, show_progress=False)
    train(tiny(), run, show_progress=False)
    # as if killed before its first checkpoint
    for name in ("checkpoint", "metrics.jsonl", "loss.png"):
        p = run / name
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (run / "notes.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="before its first checkpoint.*--resume.*--restart"):
        train(tiny(), run, show_progress=False)
    train(tiny(), run, resume=True, show_progress=False)
    assert_same_weights(ref, run)
    train(tiny(), run, restart=True, show_progress=False)
    assert_same_weights(ref, run)
    assert (run / "notes.txt").read_text() == "user file"
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl") if '"loss"' in line]
    assert steps == [1, 2, 3, 4]  # restart cleared the old metrics


def test_resume_refuses_a_changed_corpus_unless_allowed(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    cfg = tiny(data=f"text:{corpus}", tokenizer="byte", seq_len=16, max_steps=2)
    run = tmp_path / "run"
    train(cfg, run, show_progress=False)
    corpus.write_text("pack my box with five dozen liquor jugs! " * 420)
    more = tiny(data=f"text:{corpus}", tokenizer="byte", seq_len=16, max_steps=3)
    with pytest.raises(ValueError, match="data of .* changed.*--allow-data-change"):
        train(more, run, resume=True, show_progress=False)
    train(more, run, resume=True, allow_data_change=True, show_progress=False)


def test_empty_validation_split_is_refused_before_training(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("tiny corpus " * 30)
    with pytest.raises(ValueError, match="empty validation split"):
        train(
            tiny(data=f"text:{corpus}", tokenizer="byte", seq_len=64), tmp_path / "run", show_progress=False
        )
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ saving
def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = fileio.atomic_write_bytes
    calls = {"n": 0}

    def flaky(path, data):
        if path.parent.name == "checkpoint.tmp" and calls["n"] >= 1 and path.name == "ema.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        if path.name == "config.json":
            calls["n"] += 1
        return real(path, data)

    monkeypatch.setattr(fileio, "atomic_write_bytes", flaky)
    with pytest.raises(RunError, match="No space left on device.*previous checkpoint is kept"):
        train(tiny(max_steps=4, checkpoint_every=2), run, show_progress=False)
    assert not (run / "checkpoint.tmp").exists() and not (run / "checkpoint.old").exists()
    meta = verify_checkpoint(run / "checkpoint")  # every file intact, trainer_state.pt included
    assert meta["extra"]["train_step"] == 2
    assert "trainer_state.pt" in meta["files"]
    monkeypatch.setattr(fileio, "atomic_write_bytes", real)
    train(tiny(max_steps=4, checkpoint_every=2), run, resume=True, show_progress=False)
    train(tiny(max_steps=4, checkpoint_every=2), tmp_path / "ref", show_progress=False)
    assert_same_weights(tmp_path / "ref", run)


def test_truncated_files_are_reported_and_a_half_swapped_run_is_readable(tmp_path):
    run = tmp_path / "run"
    train(tiny(max_steps=2), run, show_progress=False)
    (run / "checkpoint").rename(run / "checkpoint.old")  # stopped between the two renames
    cfg, _, model = load_run(run, with_data=False)
    assert cfg.max_steps == 2 and model is not None
    train(tiny(max_steps=3), run, resume=True, show_progress=False)
    state = run / "checkpoint" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="trainer_state.pt"):
        train(tiny(max_steps=4), run, resume=True, show_progress=False)
    raw = run / "checkpoint" / "model.safetensors"
    raw.write_bytes(raw.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_run(run, with_data=False)  # loads the EMA file, but checks the raw weights too


# ------------------------------------------------------------------------------------------------ numerics
def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tmp_path, monkeypatch):
    real = Trainer.loss
    bad_steps = {1, 2}

    def loss(self, x0, noise):
        out = real(self, x0, noise)
        return out * float("nan") if self.step in bad_steps else out

    monkeypatch.setattr(Trainer, "loss", loss)
    trainer = Trainer(tiny(max_steps=5), tmp_path / "run", show_progress=False)
    snapshots = []
    for _ in range(5):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        ema_before = [p.detach().clone() for p in trainer.ema.model.parameters()]
        trainer.train_step()
        changed = any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
        ema_changed = any(not torch.equal(a, b) for a, b in zip(ema_before, trainer.ema.model.parameters()))
        snapshots.append((trainer.bad_in_a_row > 0, changed, ema_changed))  # > 0: this step was skipped
        assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    trainer.folder.release()
    assert snapshots == [
        (False, True, True),
        (True, False, False),
        (True, False, False),
        (False, True, True),
        (False, True, True),
    ]
    assert trainer.skipped_steps == 2

    bad_steps = set(range(100))
    with pytest.raises(RunError, match="3 steps in a row had a non-finite"):
        train(tiny(max_steps=20, max_bad_steps=3), tmp_path / "bad", show_progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "bad" / "metrics.jsonl")]
    assert [r["in_a_row"] for r in rows if "skipped" in r] == [1, 2, 3]


# ------------------------------------------------------------------------------------------------ signals
# far more steps than the test waits for: the run is always still training when the signal comes
# (with 400 a quiet machine once finished them while the refused second training started up)
LONG_RUN_STEPS = "100000"
ARGS = [
    "train",
    "--data",
    DATA,
    "--seq-len",
    "8",
    "--batch-size",
    "8",
    "--max-steps",
    LONG_RUN_STEPS,
    "--no-progress",
    "--precision",
    "fp32",
    "--family",
    "prime",
    "--subtokens",
    "2",
    *set_args(
        model_size="tiny",
        **TINY_TRANSFORMER,
        **QUIET_RUN,
        final_eval_sequences=8,
        final_eval_num_times=2,
        warmup_steps=5,
        lr_schedule="constant",
    ),
]


def _steps_logged(run: Path) -> int:
    if not (run / "metrics.jsonl").exists():
        return 0
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if line.strip()]
    return max((r["step"] for r in rows if "loss" in r), default=0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_resume_is_bit_identical(tmp_path, sig):
    run, ref = tmp_path / "run", tmp_path / "ref"
    proc = start_cli([*ARGS, "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _steps_logged(run) < 3:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    # a second training on the same folder is refused while the first is alive
    second = subprocess.run(
        [sys.executable, "-m", "mdm_prime.cli", "train", "--out", str(run), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 2 and "in use by another live" in second.stderr, second.stderr
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "checkpoint saved" in lines[0] and "Traceback" not in err
    stopped = json.loads((run / "checkpoint" / "config.json").read_text())["extra"]["train_step"]
    assert 3 <= stopped < int(LONG_RUN_STEPS)
    # resume without repeating any flag (the saved config), to a step past the interruption
    target = stopped + 3
    assert (
        start_cli(
            ["train", "--out", str(run), "--resume", "--max-steps", str(target), "--no-progress"],
            stdout=subprocess.DEVNULL,
        ).wait(timeout=300)
        == 0
    )
    ref_args = [a if a != LONG_RUN_STEPS else str(target) for a in ARGS]
    assert start_cli([*ref_args, "--out", str(ref)], stdout=subprocess.DEVNULL).wait(timeout=300) == 0
    assert_same_weights(ref, run)  # constant learning rate: max_steps does not change the steps' updates


def test_resume_changing_the_data_or_model_is_refused_by_name(tmp_path, capsys):
    from mdm_prime.cli import main

    run = tmp_path / "run"
    train(tiny(max_steps=2), run, show_progress=False)
    code = main(["train", "--out", str(run), "--resume", "--data", "markov:states=5", "--set", "lr=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "['data', 'lr']" in err and len(err.strip().splitlines()) == 1


def test_signal_during_the_final_evaluation_stops_with_the_message(tmp_path, monkeypatch):
    """SIGINT after the last step (here: during the final evaluation) ends the run with the same
    one-line stop (RunInterrupted, exit 130 from the CLI), not a KeyboardInterrupt traceback out of
    the evaluation or the plot; the checkpoint of the last step is complete."""
    from mdm_prime.train import RunInterrupted

    real_evaluate = Trainer.evaluate

    def evaluate_then_signal(self, *args, final=False, **kw):
        if final:
            os.kill(os.getpid(), signal.SIGINT)
        return real_evaluate(self, *args, final=final, **kw)

    monkeypatch.setattr(Trainer, "evaluate", evaluate_then_signal)
    with pytest.raises(RunInterrupted, match="stopped by SIGINT after the last step \\(4\\)"):
        train(tiny(), tmp_path / "run", show_progress=False)
    verify_checkpoint(tmp_path / "run" / "checkpoint")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
