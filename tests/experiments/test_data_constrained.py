"""The data-constrained study's curve reading: epochs from tokens seen, the crossover rule."""

import json

import pytest

from mdm_prime.experiments.data_constrained import epoch_curve, first_crossover


def _pt(step, bpc, se, final=False):
    return {"step": step, "epoch": step / 4, "bits_per_char": bpc, "stderr_bits_per_char": se, "final": final}


def test_epoch_curve_reads_eval_rows_with_epochs_from_tokens_seen(tmp_path):
    rows = [
        {"step": 2, "loss": 3.0, "tokens_seen": 256},
        {"step": 2, "nelbo_nats_per_token": 2.0, "stderr_nats_per_token": 0.1, "bits_per_char": 4.0},
        {"step": 4, "loss": 2.0, "tokens_seen": 512},
        {
            "step": 4,
            "nelbo_nats_per_token": 1.5,
            "stderr_nats_per_token": 0.05,
            "bits_per_char": 3.0,
            "final": True,
        },
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 5, "lo')
    curve = epoch_curve(tmp_path, train_tokens=128)
    assert [p["epoch"] for p in curve] == [2.0, 4.0]
    assert [p["bits_per_char"] for p in curve] == [4.0, 3.0]
    # s.e. in bits/char: nats s.e. scaled by bits/char per nats/token (0.1 · 4/2, 0.05 · 3/1.5)
    assert curve[0]["stderr_bits_per_char"] == pytest.approx(0.2)
    assert curve[1]["stderr_bits_per_char"] == pytest.approx(0.1)
    assert [p["final"] for p in curve] == [False, True]


def test_crossover_needs_more_than_two_standard_errors_at_the_same_step():
    ar = [_pt(4, 3.0, 0.03), _pt(8, 3.1, 0.03), _pt(12, 3.2, 0.03), _pt(12, 3.2, 0.01, final=True)]
    # step 4: 0.05 below with combined s.e. 0.0424 → not 2 s.e.; step 8: 0.2 below → crossover at epoch 2
    other = [_pt(4, 2.95, 0.03), _pt(8, 2.9, 0.03), _pt(12, 2.9, 0.03)]
    assert first_crossover(ar, other) == 2.0
    assert first_crossover(ar, [_pt(4, 2.95, 0.03), _pt(8, 3.05, 0.03)]) is None
    # a final evaluation is matched only with the AR final one
    assert first_crossover(ar, [_pt(12, 3.0, 0.01, final=True)]) == 3.0
    assert first_crossover(ar, [_pt(16, 1.0, 0.01)]) is None
