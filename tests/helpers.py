"""Small models and distributions shared by the core tests, and a CLI launcher."""

import os
import subprocess
import sys

import torch

from mdm_prime import SubTokenizer


def random_joint(num_classes: int, num_tokens: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    """A random full-support pmf over C^L sequences (dependent digits and tokens), float64."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_classes**num_tokens, generator=g, dtype=torch.float64) * scale
    return logits.softmax(0).reshape([num_classes] * num_tokens)


class RandomDigitModel(torch.nn.Module):
    """An untrained, time-independent network over sub-tokens: embedding of every digit
    (including the mask), flattened, one hidden layer, per-token logits. float64."""

    time_conditioned = False

    def __init__(
        self, sub: SubTokenizer, num_tokens: int, seed: int, hidden: int = 16, time_scale: float = 0.0
    ):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = num_tokens * sub.length
        self.sub, self.num_tokens, self.time_scale = sub, num_tokens, time_scale
        self.emb = torch.randn(n, sub.base + 1, hidden, generator=g, dtype=torch.float64)
        self.out = torch.randn(hidden, num_tokens * sub.num_classes, generator=g, dtype=torch.float64)
        self.time_dir = torch.randn(num_tokens * sub.num_classes, generator=g, dtype=torch.float64)
        self.time_conditioned = time_scale != 0.0

    def forward(self, y_t, t=None):
        pos = torch.arange(y_t.shape[1])
        h = torch.tanh(self.emb[pos, y_t].sum(1))  # (B, hidden)
        z = h @ self.out
        if self.time_scale:
            z = z + self.time_scale * torch.sin(6 * t.double()).unsqueeze(-1) * self.time_dir
        return z.view(-1, self.num_tokens, self.sub.num_classes)


def set_args(**settings) -> list[str]:
    """``--set key=value`` pairs for ``mdm-prime train``: ``set_args(eval_every=0)`` →
    ``["--set", "eval_every=0"]`` (keys with dots are spelled with ``__``: ``model_overrides__dim``)."""
    out = []
    for key, value in settings.items():
        out += ["--set", f"{key.replace('__', '.')}={value}"]
    return out


QUIET_RUN = dict(eval_every=0, log_every=1, checkpoint_every=0, num_preview_samples=0)
"""Settings that keep a test training run quiet: no validation, previews or checkpoints mid-run,
every step logged."""

TINY_TRANSFORMER = dict(model_overrides__dim=32, model_overrides__depth=1, model_overrides__heads=2)
"""A 32-wide, one-block, two-head transformer: the smallest model the training tests need."""


def start_cli(args: list[str], **popen_kwargs) -> subprocess.Popen:
    """Start ``python -m mdm_prime.cli ARGS`` in a child process with one torch thread (the caller
    waits, signals or reads it; ``popen_kwargs`` go to :class:`subprocess.Popen`)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mdm_prime.cli", *args], env=env, **popen_kwargs)


class UniformModel:
    """A time-independent model with zero logits ``[B, L, C]`` whatever the input: every token
    distribution is uniform."""

    time_conditioned = False

    def __init__(self, num_tokens: int, num_classes: int):
        self.shape = (num_tokens, num_classes)

    def __call__(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros(y.shape[0], *self.shape)


def tree_fingerprint(root) -> dict:
    """``{relative path: sha256 of the bytes (files), 'dir' or 'link -> target'}`` of everything under
    ``root`` (empty when it does not exist); symbolic links are not followed."""
    import hashlib
    from pathlib import Path

    root = Path(root)
    out = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                out[rel] = h.hexdigest()
    return out
