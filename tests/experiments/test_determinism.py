"""Two 2-thread training runs of one tiny config give bit-identical weights, by default and with
enable_determinism().

The run-to-run spread came from the embedding table's gradient: ``weight[y]`` backward is
``index_put_(accumulate=True)``, whose multi-threaded CPU kernel adds rows in scheduling order, so the
gradient differed in the last bits from run to run and training amplified that. The sub-token
embedding now uses ``F.embedding`` (models/adapter.py), whose CPU backward is deterministic, so the
default needs no flag; ``enable_determinism()`` remains for other devices and ops."""

import pytest
import torch

from mdm_prime.configs import resolve_config
from mdm_prime.experiments.determinism import determinism_enabled, enable_determinism
from mdm_prime.train import Trainer


@pytest.fixture
def two_threads():
    previous, det = torch.get_num_threads(), determinism_enabled()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
    enable_determinism(det)


def _weights(tmp_path, name):
    cfg = resolve_config(
        "text-tiny",
        {
            "data": "markov:states=16,concentration=0.3",
            "seq_len": "128",
            "batch_size": "32",
            "max_steps": "10",
            "model_size": "tiny",
            "model_overrides.dim": "32",
            "model_overrides.depth": "1",
            "warmup_steps": "2",
            "num_preview_samples": "0",
            "eval_every": "0",
            "checkpoint_every": "0",
            "precision": "fp32",
        },
    )
    trainer = Trainer(cfg, tmp_path / name, show_progress=False)
    for _ in range(cfg.max_steps):
        trainer.train_step()
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def test_two_runs_on_two_threads_are_bit_identical_by_default(tmp_path, two_threads):
    enable_determinism(False)
    a, b = _weights(tmp_path, "a"), _weights(tmp_path, "b")
    assert torch.equal(a, b)


def test_two_runs_on_two_threads_are_bit_identical_with_the_flag(tmp_path, two_threads):
    enable_determinism()
    a, b = _weights(tmp_path, "a"), _weights(tmp_path, "b")
    assert torch.equal(a, b)


def test_the_adapter_embedding_gradient_is_deterministic_without_the_flag(two_threads):
    """The op the adapter uses (``F.embedding``), 8 times over with many repeated rows, no flag: the
    same bits every time, and equal to an independent float64 sum."""
    import torch.nn.functional as F

    enable_determinism(False)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(17, (32, 256), generator=g)
    w0 = torch.randn(17, 96, generator=g)
    up = torch.randn(32, 256, 96, generator=g)
    grads = []
    for _ in range(8):
        w = w0.clone().requires_grad_(True)
        (F.embedding(y, w) * up).sum().backward()
        grads.append(w.grad)
    want = torch.zeros(17, 96, dtype=torch.float64).index_add_(0, y.flatten(), up.reshape(-1, 96).double())
    torch.testing.assert_close(grads[0].double(), want, rtol=1e-5, atol=1e-4)
    assert all(torch.equal(gr, grads[0]) for gr in grads)


def test_the_embedding_gradient_is_deterministic_with_it(two_threads):
    """The op itself: the gradient of ``W[y]`` with many repeated rows, 8 times over."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(17, (32, 256), generator=g)
    w0 = torch.randn(17, 96, generator=g)
    up = torch.randn(32, 256, 96, generator=g)
    enable_determinism()
    grads = []
    for _ in range(8):
        w = w0.clone().requires_grad_(True)
        (w[y] * up).sum().backward()
        grads.append(w.grad)
    # against an independent float64 sum: the deterministic kernel is also accurate
    want = torch.zeros(17, 96, dtype=torch.float64).index_add_(0, y.flatten(), up.reshape(-1, 96).double())
    torch.testing.assert_close(grads[0].double(), want, rtol=1e-5, atol=1e-4)
    assert all(torch.equal(gr, grads[0]) for gr in grads)


def test_enable_determinism_toggles():
    before = determinism_enabled()
    try:
        enable_determinism(True)
        assert torch.are_deterministic_algorithms_enabled()
        enable_determinism(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        enable_determinism(before)
