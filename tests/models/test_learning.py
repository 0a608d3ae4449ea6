"""Every network learns: a few Adam steps on one fixed batch lower the training loss
(``diffusion_loss`` with fixed noise) by at least 20%, for each architecture the families build."""

import pytest
import torch

import mdm_prime
from mdm_prime.models import build_model, mlp_config

from .test_transformer import tiny
from .test_unet import tiny_unet

CASES = {  # name: (build, batch shape of x0, classes, learning rate, steps)
    "mlp": (lambda: build_model(mlp_config("tiny", num_classes=64, length=2)), (32, 2), 64, 1e-2, 20),
    "transformer": (lambda: tiny(length=2, num_classes=16), (8, 6), 16, 3e-3, 15),
    "transformer, time-conditioned": (
        lambda: tiny(length=2, num_classes=16, time_conditioned=True),
        (8, 6),
        16,
        3e-3,
        15,
    ),
    "unet": (lambda: tiny_unet(2, 1), (2, 64), 16, 3e-3, 8),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(name):
    build, shape, num_classes, lr, steps = CASES[name]
    torch.manual_seed(0)
    model = build()
    x0 = torch.randint(0, num_classes, shape, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def loss():
        return mdm_prime.diffusion_loss(
            model, x0, model.subtokenizer, generator=torch.Generator().manual_seed(1)
        ).loss

    start = loss().item()
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.8 * start
