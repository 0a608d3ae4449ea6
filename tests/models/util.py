"""Helpers for the model tests, and one small config of every architecture (also used by the checkpoint
tests)."""

import torch

from mdm_prime.models import causal_transformer_config, mlp_config, transformer_config, unet_config

CONFIGS = {  # small, and away from the defaults: a permutation, a schedule, time conditioning, ℓ = 3
    "transformer": transformer_config(
        "tiny",
        num_classes=40,
        length=2,
        seq_len=5,
        dim=32,
        permutation=list(range(40))[::-1],
        schedule="polynomial:3",
        time_conditioned=True,
    ),
    "causal": causal_transformer_config("tiny", num_classes=40, seq_len=5, dim=32),
    "unet": unet_config(
        "toy",
        num_classes=16,
        length=2,
        image_shape=[1, 8, 8],
        base_channels=8,
        attention_resolutions=[4],
        head_channels=8,
        embed_dim=8,
    ),
    "mlp": mlp_config("tiny", num_classes=64, length=3, embed_dim=18),
}


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Overwrite every parameter with N(0, std²) so zero-initialised heads/gates do not hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def random_subtokens(sub, batch: int, num_tokens: int, seed: int = 0, p_mask: float = 0.4) -> torch.Tensor:
    """Partially masked sub-token sequences ``LongTensor[batch, num_tokens·ℓ]``."""
    g = torch.Generator().manual_seed(seed)
    y = sub.encode(torch.randint(0, sub.num_classes, (batch, num_tokens), generator=g))
    return torch.where(torch.rand(y.shape, generator=g) < p_mask, torch.full_like(y, sub.mask_id), y)
