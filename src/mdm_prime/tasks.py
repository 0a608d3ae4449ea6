"""A *task* binds a data spec to what training and evaluation need: token tensors, the class count,
how to show samples, the units to report (bits/char, bits/dim) and, where known, the exact entropy.

:func:`build_task` (data) → :func:`build_model_for` (network of the right architecture and family)
→ :func:`evaluate_model` (the valid bound, per token, with units) and :func:`preview_samples`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .configs import TrainConfig
from .likelihood import likelihood

__all__ = ["Task", "build_task", "build_model_for", "evaluate_model", "preview_samples"]

TASK_FILE = "task.json"


@dataclass
class Task:
    """Data for one run. Token tensors are ``LongTensor[N, L]`` (images flattened channel-major to
    ``L = ch·H·W``). ``infinite`` tasks draw fresh training items with :meth:`sample_train`."""

    kind: str  # text | image | toy | synthetic
    spec: str
    num_classes: int
    seq_len: int
    valid_tokens: torch.Tensor
    train_tokens: torch.Tensor | None = None
    test_tokens: torch.Tensor | None = None
    sampler: Callable[[int, torch.Generator], torch.Tensor] | None = None
    image_shape: tuple[int, int, int] | None = None
    tokenizer: Any = None
    characters_per_token: float | None = None
    entropy_nats_per_token: float | None = None  # exact, for toy / synthetic sources
    info: dict = field(default_factory=dict)

    @property
    def infinite(self) -> bool:
        return self.sampler is not None

    @property
    def num_train(self) -> int:
        return 0 if self.train_tokens is None else self.train_tokens.shape[0]

    def sample_train(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.sampler(n, generator)

    def split(self, name: str) -> torch.Tensor:
        tensors = {"train": self.train_tokens, "valid": self.valid_tokens, "test": self.test_tokens}
        if name not in tensors:
            raise ValueError(f"unknown split {name!r}; expected one of {sorted(tensors)}")
        if tensors[name] is None:
            raise ValueError(f"task {self.spec!r} has no {name} split")
        return tensors[name]

    def decode_text(self, tokens: torch.Tensor) -> list[str]:
        """Token rows → strings (text tasks)."""
        return [self.tokenizer.decode(row.tolist()) for row in tokens]

    def save_assets(self, out: Path) -> None:
        """Write what a run folder needs to show and score samples without the corpus."""
        meta = {"kind": self.kind, "spec": self.spec, "num_classes": self.num_classes, "seq_len": self.seq_len,
                "image_shape": self.image_shape, "characters_per_token": self.characters_per_token,
                "entropy_nats_per_token": self.entropy_nats_per_token,
                **{k: v for k, v in self.info.items() if isinstance(v, (str, int, float, bool, type(None)))}}
        (out / TASK_FILE).write_text(json.dumps(meta, indent=2))
        if self.tokenizer is not None:
            self.tokenizer.save(out / "tokenizer")


def build_task(cfg: TrainConfig, dist_info=None) -> Task:
    """Load (and cache) the data named by ``cfg.data``. Raises before any work on a bad spec."""
    from .data import load_data

    source = load_data(cfg.data)
    if source.kind == "text":
        return _text_task(cfg, source)
    if source.kind == "image":
        return _image_task(cfg, source)
    if source.kind == "toy":
        return _toy_task(cfg, source)
    return _synthetic_task(cfg, source)


def _text_task(cfg: TrainConfig, source) -> Task:
    if cfg.tokenizer in ("none", ""):
        raise ValueError(f"text data {cfg.data!r} needs a tokenizer (byte, char, text8, gpt2, bpe:N)")
    prepared = source.load(tokenizer_spec=cfg.tokenizer, seq_len=cfg.seq_len, seed=0)
    train = prepared["train"]
    if cfg.max_train_tokens:
        train = train[: max(1, cfg.max_train_tokens // cfg.seq_len)]
    valid_stats = prepared.stats["valid"]
    cpt = valid_stats.characters / max(valid_stats.tokens, 1)
    return Task(kind="text", spec=cfg.data, num_classes=prepared.vocab_size, seq_len=cfg.seq_len,
                train_tokens=train, valid_tokens=prepared["valid"], test_tokens=prepared.splits.get("test"),
                tokenizer=prepared.tokenizer, characters_per_token=cpt,
                info={"tokenizer": prepared.tokenizer.name, "split_mode": prepared.split_mode})


def _image_task(cfg: TrainConfig, source) -> Task:
    data = source.load()
    flat = {s: data[s].images.flatten(1).long() for s in data.splits}
    return Task(kind="image", spec=cfg.data, num_classes=data.num_levels, seq_len=flat["train"].shape[1],
                train_tokens=flat["train"], valid_tokens=flat["valid"], test_tokens=flat.get("test"),
                image_shape=tuple(data.shape), info={"num_levels": data.num_levels})


def _toy_task(cfg: TrainConfig, source) -> Task:
    density = source.load()
    valid = density.sample(4096, torch.Generator().manual_seed(12345))
    size = density.pmf.shape[0]
    return Task(kind="toy", spec=cfg.data, num_classes=size, seq_len=2, valid_tokens=valid,
                sampler=lambda n, g: density.sample(n, g), entropy_nats_per_token=density.entropy() / 2,
                info={"toy_size": size, "density": density})


def _synthetic_task(cfg: TrainConfig, source) -> Task:
    chain = source.load()
    L = cfg.seq_len
    valid = chain.sample(512, L, torch.Generator().manual_seed(12345))
    num_classes = int(getattr(chain, "vocab_size", None) or getattr(chain, "num_states", None) or int(valid.max()) + 1)
    entropy = None
    if hasattr(chain, "sequence_entropy"):
        try:
            entropy = float(chain.sequence_entropy(L)) / L
        except (ValueError, RuntimeError):
            entropy = None
    return Task(kind="synthetic", spec=cfg.data, num_classes=num_classes, seq_len=L, valid_tokens=valid,
                sampler=lambda n, g: chain.sample(n, L, g), entropy_nats_per_token=entropy)


# ----------------------------------------------------------------------------- models
def build_model_for(cfg: TrainConfig, task: Task):
    """The network for ``cfg`` on ``task``: transformer (text, synthetic), U-Net (images), MLP (toy);
    causal transformer for ``family = "ar"``. ``cfg.model_overrides`` are passed through."""
    from . import models as M

    arch = cfg.architecture
    if arch == "auto":
        arch = {"text": "transformer", "synthetic": "transformer", "image": "unet", "toy": "mlp"}[task.kind]
    extra = dict(cfg.model_overrides)
    if cfg.family == "ar":
        if arch not in ("transformer", "causal_transformer"):
            raise ValueError(f"the autoregressive baseline uses the transformer; got architecture {arch!r}")
        conf = M.causal_transformer_config(cfg.model_size, num_classes=task.num_classes, seq_len=task.seq_len,
                                           **extra)
        return M.build_model(conf)
    common = dict(num_classes=task.num_classes, length=cfg.subtokens, base=cfg.base, schedule=cfg.schedule)
    extra.setdefault("precision", cfg.precision)
    if arch == "transformer":
        conf = M.transformer_config(cfg.model_size, seq_len=task.seq_len, **common, **extra)
    elif arch == "unet":
        if task.image_shape is None:
            raise ValueError(f"architecture 'unet' needs image data, got {cfg.data!r}")
        conf = M.unet_config(cfg.model_size, image_shape=list(task.image_shape), **common, **extra)
    elif arch == "mlp":
        conf = M.mlp_config(cfg.model_size, seq_len=task.seq_len, **common, **extra)
    else:
        raise ValueError(f"unknown architecture {arch!r}; expected auto, transformer, unet or mlp")
    return M.build_model(conf)


# ----------------------------------------------------------------------------- evaluation
def _units(summary: dict, task: Task) -> dict:
    bits = summary["bits_per_token"]
    if task.kind == "text" and task.characters_per_token:
        summary["bits_per_char"] = bits / task.characters_per_token
    if task.kind == "image":
        summary["bits_per_dim"] = bits
    if task.entropy_nats_per_token is not None:
        summary["data_entropy_nats_per_token"] = task.entropy_nats_per_token
    return summary


@torch.no_grad()
def evaluate_model(model, task: Task, *, split: str = "valid", num_sequences: int = 256, num_times: int = 32,
                   seed: int = 0, batch_size: int = 64) -> dict:
    """Likelihood on the first ``num_sequences`` items of ``split``: the valid bound ``L_valid`` for
    diffusion models (``num_times`` draws each, with standard error; ``L_prime`` beside it, labelled
    as the training objective), the exact NLL for the autoregressive model. Per token, nats and bits."""
    x = task.split(split)[:num_sequences]
    device = next(model.parameters()).device
    model.eval()
    if getattr(model, "family", None) == "ar":
        nll = torch.cat([-model.log_likelihood(x[i : i + batch_size].to(device)).double().cpu()
                         for i in range(0, x.shape[0], batch_size)])
        L = x.shape[1]
        nats = float(nll.mean()) / L
        se = float(nll.std() / math.sqrt(len(nll))) / L if len(nll) > 1 else 0.0
        summary = {"nelbo_nats_per_token": nats, "stderr_nats_per_token": se, "bits_per_token": nats / math.log(2),
                   "perplexity": math.exp(nats), "num_times": 0, "num_sequences": len(nll),
                   "tokens_per_sequence": L, "estimator": "exact (autoregressive)", "stderr_kind": "over sequences"}
    else:
        res = likelihood(model, x.to(device), model.subtokenizer, schedule=model.schedule, num_times=num_times,
                         seed=seed, batch_size=batch_size)
        summary = res.summary()
        summary["stderr_kind"] = "Monte Carlo (time draws)"
    summary["family"] = getattr(model, "family", "prime")
    summary["split"] = split
    return _units(summary, task)


def preview_samples(model, task: Task, out: Path, step: int, cfg: TrainConfig, num: int | None = None) -> list:
    """Generate a few samples with the EMA model and write them to ``out/samples/step_<N>.txt|png``."""
    from .generate import generate_tokens, write_samples

    num = num or cfg.num_preview_samples
    if num <= 0:
        return []
    tokens, stats = generate_tokens(model, task, num=num, steps=cfg.sample_steps or task.seq_len, seed=cfg.seed,
                                    temperature=cfg.sample_temperature, top_p=cfg.sample_top_p)
    stats.update(temperature=cfg.sample_temperature, top_p=cfg.sample_top_p)
    return write_samples(tokens, task, Path(out) / "samples", f"step_{step}", stats=stats, echo=True)
