"""Helpers for the model tests."""

import torch


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
