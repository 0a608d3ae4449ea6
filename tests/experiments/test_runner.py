"""The runner: config hash, skip / resume / restart, rows; the log-linear interpolation."""

import hashlib
import json
import math
import shutil

import pytest
import torch

from mdm_prime.configs import resolve_config
from mdm_prime.experiments import runs
from mdm_prime.experiments.common import (
    AR,
    PRIME,
    interp_loglinear,
    smoke_text_data,
    text_spec,
)
from mdm_prime.experiments.compute_scaling import compute_factors
from mdm_prime.experiments.runner import (
    EXPERIMENT_FILE,
    ensure_run,
    result_row,
    run_folder,
    run_study,
)
from mdm_prime.experiments.runs import RunSpec


def test_config_hash_is_sha256_of_the_resolved_config_json():
    cfg = resolve_config("toy", {"max_steps": "7"})
    text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
    assert runs.config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()
    assert runs.config_hash(cfg, {"carry_over": True}) == runs.config_hash(cfg)  # the default changes nothing
    assert runs.config_hash(cfg, {"carry_over": False}) != runs.config_hash(cfg)
    assert runs.config_hash(resolve_config("toy", {"max_steps": "8"})) != runs.config_hash(cfg)


def test_bad_specs_are_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="run name"):
        RunSpec("a b", "toy")
    with pytest.raises(ValueError, match="unknown run variant"):
        RunSpec("a", "toy", variant={"carry": False})
    with pytest.raises(ValueError, match="unknown config key"):
        run_study("s", [RunSpec("a", "toy", {"nope": "1"})], tmp_path)
    with pytest.raises(ValueError, match="duplicate run names"):
        run_study("s", [RunSpec("a", "toy"), RunSpec("a", "toy")], tmp_path)
    assert not (tmp_path / "runs").exists()


def _spec(tmp_path, steps=6, **kw):
    data = smoke_text_data(tmp_path)
    return text_spec("prime", 2, steps=steps, smoke=True, data=data, **kw)


def test_complete_runs_are_skipped_and_restarts_without_checkpoint(tmp_path):
    spec = _spec(tmp_path)
    folder, action = ensure_run(spec, tmp_path, "s", log=lambda m: None)
    assert action == "trained" and folder == run_folder(tmp_path, "s", spec)
    assert folder.name.endswith(runs.config_hash(runs.resolve(spec))[:10])
    first = (folder / "metrics.jsonl").read_text()
    assert ensure_run(spec, tmp_path, "s", log=lambda m: None)[1] == "skipped"
    assert (folder / "metrics.jsonl").read_text() == first
    # a recorded hash that does not match is not "complete"
    rec = json.loads((folder / EXPERIMENT_FILE).read_text())
    (folder / EXPERIMENT_FILE).write_text(json.dumps({**rec, "config_hash": "0" * 64}))
    assert ensure_run(spec, tmp_path, "s", log=lambda m: None)[1] == "resumed"
    # a folder that was started but has no checkpoint yet is restarted from scratch
    shutil.rmtree(folder / "checkpoint")
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    assert ensure_run(spec, tmp_path, "s", log=lambda m: None)[1] == "trained"
    assert runs.final_eval_row(folder) is not None


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    """Train 6 steps in one go, and 3 steps + checkpoint ("killed") + resume in another folder:
    the same weights."""
    from mdm_prime.train import Trainer

    whole = _spec(tmp_path / "a", steps=6)
    folder_a, _ = ensure_run(whole, tmp_path / "a", "s", log=lambda m: None)
    half = _spec(tmp_path / "b", steps=6)
    folder_b = run_folder(tmp_path / "b", "s", half)
    trainer = Trainer(runs.resolve(half), folder_b, show_progress=False)
    for _ in range(3):
        trainer.train_step()
    trainer.save_checkpoint()
    trainer.folder.release()  # the "killed" process's lock goes with it
    assert runs.final_eval_row(folder_b) is None
    assert ensure_run(half, tmp_path / "b", "s", log=lambda m: None) == (folder_b, "resumed")
    wa = runs.load_model(folder_a).state_dict()
    wb = runs.load_model(folder_b).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_result_row_units_and_flops(tmp_path):
    spec = _spec(tmp_path)
    folder, _ = ensure_run(spec, tmp_path, "s", log=lambda m: None)
    row = result_row(spec, folder)
    final = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["final"] is True
    assert row["valid_nats_per_token"] == final["nelbo_nats_per_token"]
    assert row["valid_bits_per_token"] == pytest.approx(final["nelbo_nats_per_token"] / math.log(2))
    assert row["valid_bits_per_char"] == final["bits_per_char"]
    # the s.e. scales like the value: bits/char = bits/token / chars-per-token
    ratio = final["bits_per_char"] / final["bits_per_token"]
    assert row["valid_stderr_bits_per_char"] == pytest.approx(
        final["stderr_nats_per_token"] / math.log(2) * ratio
    )
    model = runs.load_model(folder)
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["train_tokens"] == 6 * 8 * 16  # steps × batch × L of the smoke spec
    assert row["train_flops"] == pytest.approx(3 * model.flops_per_token() * 6 * 8 * 16)


def test_no_carry_over_loss_is_the_plain_softmax(tmp_path):
    """The ablation's training loss (the trainer's, through its family), against an independent loop
    over tokens; and the trainer of the variant really uses it (it differs from the carry-over loss)."""
    from mdm_prime.families import Noise

    spec = _spec(tmp_path, carry_over=False)
    cfg = runs.resolve(spec)
    trainer = runs.make_trainer(cfg, tmp_path / "t", resume=False, variant=spec.variant)
    assert isinstance(trainer.family, runs.NoCarryOverFamily)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(256, (3, 16), generator=g)
    t = torch.tensor([0.2, 0.5, 0.9])
    u = torch.rand(3, 32, generator=g)
    got = trainer.loss(x0, Noise(t, u))
    model, sched = trainer.model, trainer.schedule
    sub = model.subtokenizer
    want = torch.zeros(3)
    for b in range(3):
        digits = sub.encode(x0[b : b + 1])[0].tolist()
        p_mask = float(sched.mask_probability(t[b : b + 1])[0])
        y_t = [sub.mask_id if float(u[b, j]) < p_mask else d for j, d in enumerate(digits)]
        with torch.no_grad():
            logits = model(torch.tensor([y_t]), t[b : b + 1])[0].double()
        for i in range(16):
            if sub.mask_id in y_t[2 * i : 2 * i + 2]:
                want[b] += float(torch.logsumexp(logits[i], -1) - logits[i, x0[b, i]])
        want[b] *= float(sched.weight(t[b : b + 1])[0])
    torch.testing.assert_close(got, want)
    plain = runs.make_trainer(runs.resolve(_spec(tmp_path)), tmp_path / "u", resume=False)
    plain.model.load_state_dict(model.state_dict())
    assert not torch.allclose(plain.loss(x0, Noise(t, u)), got)


def test_no_carry_over_needs_a_diffusion_family_and_prime(tmp_path):
    data = smoke_text_data(tmp_path)
    ar = text_spec(AR, 1, steps=2, smoke=True, data=data, carry_over=False)
    with pytest.raises(ValueError, match="diffusion family"):
        run_study("s", [ar], tmp_path)
    valid = text_spec(PRIME, 2, steps=2, smoke=True, data=data, objective="valid", carry_over=False)
    with pytest.raises(ValueError, match="objective 'prime' only"):
        run_study("s", [valid], tmp_path)
    assert not (tmp_path / "runs").exists()


def test_interp_loglinear_against_hand_values():
    xs, ys = [1e3, 1e4, 1e5], [3.0, 2.0, 1.5]
    assert interp_loglinear(xs, ys, 2.5) == pytest.approx(10**3.5)
    assert interp_loglinear(xs, ys, 1.75) == pytest.approx(10**4.5)
    assert interp_loglinear(xs, ys, 2.0) == pytest.approx(1e4)
    assert interp_loglinear(xs, ys, 1.0) is None and interp_loglinear(xs, ys, 4.0) is None


def test_compute_factors():
    rows = [
        {"family": "ar", "factor": 1.0, "train_flops": 100.0, "valid_bits_per_char": 2.0},
        {"family": "ar", "factor": 2.0, "train_flops": 200.0, "valid_bits_per_char": 1.0},
        {"family": "mdm", "train_flops": 100.0, "valid_bits_per_char": 3.0},
        {"family": "mdm", "train_flops": 1000.0, "valid_bits_per_char": 1.5},
    ]
    out = compute_factors(rows)
    first = next(e for e in out if e["ar_factor"] == 1.0)
    # 3 → 1.5 over one decade: 2.0 is 2/3 of the way → 10^(2 + 2/3) FLOPs, over the AR's 100
    assert first["factor"] == pytest.approx(10 ** (2 + 2 / 3) / 100)
    second = next(e for e in out if e["ar_factor"] == 2.0)
    assert second["factor"] is None and second["more_than"] == pytest.approx(1000 / 200)
