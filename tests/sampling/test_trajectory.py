"""Trajectory recording (``sample(..., record=True)`` / ``on_step``) for animations."""

import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.sampling import condition_from_tokens, sample

from ..helpers import RandomDigitModel


class Recorder:
    """Records every input the sampler calls the model with."""

    time_conditioned = False

    def __init__(self, model):
        self.model, self.inputs = model, []

    def __call__(self, y, t):
        self.inputs.append(y.clone())
        return self.model(y, t)


def test_trajectory_is_what_the_model_saw_and_changes_nothing():
    """Without caching the model sees every row at every step: its inputs are the recorded states
    ``0..T-1``; the last state is the final digits; the samples are those of a run without recording."""
    sub = SubTokenizer(5, 2)
    steps, batch, length = 12, 7, 4
    rec = Recorder(RandomDigitModel(sub, length, seed=1))
    seen = []
    out = sample(
        rec,
        sub,
        num_samples=batch,
        num_tokens=length,
        steps=steps,
        seed=4,
        cache=False,
        record=True,
        on_step=lambda k, y: seen.append((k, y.clone())),
    )
    traj = out.trajectory
    assert traj.shape == (steps + 1, batch, length * 2) and traj.dtype == torch.uint8
    assert (traj[0] == sub.mask_id).all()
    assert len(rec.inputs) == steps
    for k, inp in enumerate(rec.inputs):
        assert torch.equal(traj[k].long(), inp)
    assert torch.equal(traj[-1].long(), out.subtokens)
    assert [k for k, _ in seen] == list(range(steps))
    assert all(torch.equal(y, traj[k + 1].long()) for k, y in seen)
    # a revealed digit never changes (no corrector)
    for k in range(steps):
        known = traj[k] != sub.mask_id
        assert torch.equal(traj[k + 1][known], traj[k][known])
    plain = sample(
        RandomDigitModel(sub, length, seed=1),
        sub,
        num_samples=batch,
        num_tokens=length,
        steps=steps,
        seed=4,
        cache=False,
    )
    assert plain.trajectory is None and plain.trajectory_calls is None
    assert torch.equal(plain.subtokens, out.subtokens)


def test_recorded_calls_and_idle_steps_match_the_counters():
    """With caching, the per-step call flags sum to ``network_calls``; the steps in which a row's
    recorded state did not change are its ``idle_steps``."""
    sub = SubTokenizer(7, 2)
    x = torch.tensor([[1, 4, 2], [0, 3, 6], [2, 2, 2]])
    fixed = torch.zeros(3, 6, dtype=torch.bool)
    fixed[0] = True
    fixed[1, :5] = True
    cond = condition_from_tokens(x, fixed, sub)
    out = sample(RandomDigitModel(sub, 3, seed=0), sub, steps=9, condition=cond, seed=3, record=True)
    assert torch.equal(out.trajectory_calls.long().sum(0), out.network_calls)
    unchanged = (out.trajectory[1:] == out.trajectory[:-1]).all(-1)  # [T, B]
    assert torch.equal(unchanged.long().sum(0), out.idle_steps)
    assert torch.equal(out.trajectory[:, 0].long(), out.subtokens[0].expand(10, -1))  # fully fixed row


def test_trajectory_dtype_holds_the_mask_id():
    sub = SubTokenizer(300, 1)  # b = 300: the mask id 300 needs int16
    out = sample(
        lambda y, t: torch.zeros(y.shape[0], 2, 300),
        sub,
        num_samples=2,
        num_tokens=2,
        steps=3,
        seed=0,
        record=True,
    )
    assert out.trajectory.dtype == torch.int16 and int(out.trajectory[0].max()) == 300


def test_bad_record_arguments_raise_before_work():
    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, 2, seed=0)
    with pytest.raises(TypeError, match="record must be a bool"):
        sample(model, sub, num_samples=1, num_tokens=2, steps=2, record=1)
    with pytest.raises(TypeError, match="on_step must be callable"):
        sample(model, sub, num_samples=1, num_tokens=2, steps=2, on_step=3)
