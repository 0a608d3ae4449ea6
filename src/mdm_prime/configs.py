"""Training configuration: one flat dataclass, named presets, and ``key=value`` overrides.

``resolve_config("text-tiny", overrides={"lr": "1e-3"})`` returns a validated :class:`TrainConfig`.
Unknown keys and invalid values raise ``ValueError`` naming them, before any work is done. The fully
resolved config is saved as ``train_config.json`` in every run folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .families import FAMILIES, get_family
from .models.base import PRECISIONS
from .objectives import OBJECTIVES

__all__ = [
    "TrainConfig",
    "PRESETS",
    "resolve_config",
    "parse_overrides",
    "load_config_file",
    "check_device",
    "OBJECTIVES",
    "PRECISIONS",
]

LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Everything a run needs. Units: steps are optimizer steps; ``batch_size`` is the global batch
    (sequences per optimizer step, summed over processes and accumulation micro-batches)."""

    # data
    data: str = "mix"
    tokenizer: str = "byte"
    seq_len: int = 128
    # model family and sub-tokens
    family: str = "prime"  # a key of mdm_prime.families.FAMILIES: prime | mdm (ℓ = 1) | ar
    subtokens: int = 2  # ℓ (forced to 1 for mdm and ar)
    base: int | None = None
    objective: str = "prime"  # training loss: prime (paper) | valid (the bound)
    schedule: str = "linear"
    # network
    architecture: str = "auto"  # auto | transformer | unet | mlp
    model_size: str = "tiny"
    model_overrides: dict = field(default_factory=dict)  # extra architecture kwargs
    # optimisation
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int = 2000
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.98)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    time_eps: float = 1e-3
    # evaluation and logging
    eval_every: int = 500
    eval_sequences: int = 64
    eval_num_times: int = 8
    final_eval_sequences: int = 256
    final_eval_num_times: int = 32
    sample_every: int = 0  # 0: only at the end
    num_preview_samples: int = 4
    sample_steps: int = 0  # 0: one step per token (T = L)
    sample_temperature: float = 1.0  # preview samples only
    sample_top_p: float = 1.0  # preview samples only (nucleus mass)
    log_every: int = 10
    checkpoint_every: int = 500
    # runtime
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on CUDA and on CPUs with AVX512-BF16/AMX, else fp32
    device: str = "auto"
    compile: bool = False
    max_train_tokens: int = 0  # 0: the whole training split
    max_bad_steps: int = 10  # a run stops after this many non-finite steps in a row (each is skipped)

    def validate(self) -> TrainConfig:
        def choice(name, options):
            value = getattr(self, name)
            if value not in options:
                raise ValueError(f"{name} must be one of {options}, got {value!r}")

        choice("family", tuple(FAMILIES))
        choice("objective", OBJECTIVES)
        choice("lr_schedule", LR_SCHEDULES)
        choice("precision", PRECISIONS)
        choice("device", DEVICES)
        for name in ("data", "tokenizer", "family", "objective", "schedule", "architecture", "model_size"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in (
            "seq_len",
            "batch_size",
            "grad_accum",
            "max_steps",
            "subtokens",
            "eval_sequences",
            "eval_num_times",
            "final_eval_sequences",
            "final_eval_num_times",
            "log_every",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in (
            "warmup_steps",
            "eval_every",
            "checkpoint_every",
            "sample_every",
            "sample_steps",
            "num_preview_samples",
            "max_train_tokens",
            "seed",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.eval_num_times < 2 or self.final_eval_num_times < 2:
            raise ValueError(
                "eval_num_times and final_eval_num_times must be >= 2 (standard errors need 2 draws)"
            )
        for name in (
            "lr",
            "min_lr_ratio",
            "weight_decay",
            "grad_clip",
            "ema_decay",
            "time_eps",
            "sample_temperature",
            "sample_top_p",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 < self.time_eps < 1:
            raise ValueError(
                f"time_eps must be in (0, 1) (times are drawn from [time_eps, 1]), got {self.time_eps}"
            )
        betas = self.betas
        if (
            not isinstance(betas, (tuple, list))
            or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)
            or not all(0 <= b < 1 for b in betas)
        ):
            raise ValueError(f"betas must be two numbers in [0, 1), e.g. [0.9, 0.98], got {betas!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if (
            isinstance(self.max_bad_steps, bool)
            or not isinstance(self.max_bad_steps, int)
            or self.max_bad_steps < 1
        ):
            raise ValueError(f"max_bad_steps must be a positive integer, got {self.max_bad_steps!r}")
        from .subtokenizer import MAX_CODES, MAX_LENGTH

        if self.subtokens > MAX_LENGTH:
            raise ValueError(
                f"subtokens must be <= {MAX_LENGTH} (sub-tokens per token), got {self.subtokens}"
            )
        if self.base is not None and (
            isinstance(self.base, bool) or not isinstance(self.base, int) or self.base < 2
        ):
            raise ValueError(f"base must be an integer >= 2 or none, got {self.base!r}")
        smallest = (self.base or 2) ** self.subtokens if self.subtokens > 1 else 1
        if smallest > MAX_CODES:
            raise ValueError(
                f"subtokens={self.subtokens} with base={self.base or 2} gives at least {smallest} codes, more than "
                f"the limit of {MAX_CODES} (2**26) the carry-over tables can hold; choose a smaller subtokens"
            )
        if not self.sample_temperature > 0 or not 0 < self.sample_top_p <= 1:
            raise ValueError(
                f"sample_temperature must be > 0 and sample_top_p in (0, 1], got "
                f"{self.sample_temperature} and {self.sample_top_p}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum}"
            )
        fixed = get_family(self.family).fixed_subtokens
        if fixed is not None and self.subtokens != fixed:
            raise ValueError(
                f"family {self.family!r} uses whole tokens: subtokens must be {fixed}, got {self.subtokens} "
                f"(use --family prime for ℓ > 1)"
            )
        if not isinstance(self.model_overrides, dict):
            raise ValueError(f"model_overrides must be a dict, got {self.model_overrides!r}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("betas"), list):
            d["betas"] = tuple(d["betas"])
        return cls(**d).validate()


PRESETS: dict[str, dict[str, Any]] = {
    # the main job: a small Prime model on the offline text mixture, ~10 minutes on 2 CPU cores
    "text-tiny": dict(
        data="mix",
        tokenizer="byte",
        seq_len=128,
        model_size="mini",
        batch_size=32,
        model_overrides={"dim": 192},
        max_steps=1700,
        lr=3e-3,
        warmup_steps=100,
        eval_every=500,
        checkpoint_every=250,
        sample_top_p=0.9,
    ),
    "text8-small": dict(
        data="text8",
        tokenizer="text8",
        seq_len=256,
        model_size="small",
        batch_size=256,
        max_steps=100000,
        lr=3e-4,
        warmup_steps=2000,
        eval_every=5000,
        checkpoint_every=5000,
        subtokens=2,
    ),
    # the paper's OpenWebText scale (GPT-2 tokenizer, L = 1024, 768 wide, 12 blocks)
    "owt-small": dict(
        data="owt",
        tokenizer="gpt2",
        seq_len=1024,
        model_size="small",
        batch_size=512,
        max_steps=1000000,
        lr=3e-4,
        warmup_steps=2500,
        eval_every=10000,
        checkpoint_every=10000,
        subtokens=4,
        weight_decay=0.0,
        ema_decay=0.9999,
    ),
    "mnist-small": dict(
        data="mnist",
        tokenizer="none",
        architecture="unet",
        model_size="toy",
        batch_size=64,
        max_steps=5000,
        lr=1e-3,
        eval_every=1000,
        subtokens=2,
    ),
    "cifar10": dict(
        data="cifar10",
        tokenizer="none",
        architecture="unet",
        model_size="cifar10",
        batch_size=128,
        max_steps=800000,
        lr=2e-4,
        warmup_steps=5000,
        eval_every=20000,
        checkpoint_every=20000,
        subtokens=2,
        ema_decay=0.9999,
    ),
    "toy": dict(
        data="toy:camera",
        tokenizer="none",
        architecture="mlp",
        model_size="toy",
        seq_len=2,
        batch_size=4096,
        max_steps=3000,
        lr=1e-3,
        warmup_steps=0,
        eval_every=1000,
        subtokens=2,
        eval_sequences=1024,
        final_eval_sequences=4096,
        ema_decay=0.99,
    ),
}


def _coerce(name: str, raw: str, current: Any) -> Any:
    """Parse ``raw`` (a command-line string) into the type of the field's current value."""
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int) or (current is None and name == "base"):
            if raw.lower() == "none" and current is None:
                return None
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, (tuple, list, dict)):
            return json.loads(raw)
        return raw
    except (ValueError, json.JSONDecodeError):
        kind = type(current).__name__ if current is not None else "int or none"
        raise ValueError(f"invalid value for {name}: {raw!r} (expected {kind})") from None


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["lr=1e-3", "model_overrides.width=256"]`` → ``{"lr": "1e-3", ...}``; rejects malformed items."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value")
        out[key.strip()] = value.strip()
    return out


def resolve_config(
    preset: str = "text-tiny", overrides: dict[str, Any] | None = None, base: TrainConfig | None = None
) -> TrainConfig:
    """Preset (or ``base``, e.g. a run's saved config) + overrides (string values are parsed to the
    field's type) → validated config.

    A key ``model_overrides.NAME`` sets one architecture kwarg (value parsed as JSON when possible).
    """
    if base is None and preset not in PRESETS:
        raise ValueError(f"unknown config preset {preset!r}; expected one of {sorted(PRESETS)}")
    base = TrainConfig(**PRESETS[preset]) if base is None else base
    known = {f.name for f in fields(TrainConfig)}
    values = base.to_dict()
    values["model_overrides"] = dict(values["model_overrides"])
    for key, raw in (overrides or {}).items():
        if key.startswith("model_overrides."):
            sub_key = key.split(".", 1)[1]
            try:
                values["model_overrides"][sub_key] = json.loads(raw) if isinstance(raw, str) else raw
            except json.JSONDecodeError:
                values["model_overrides"][sub_key] = raw
            continue
        if key not in known:
            raise ValueError(f"unknown config key {key!r}; valid keys: {sorted(known)}")
        values[key] = _coerce(key, raw, values[key]) if isinstance(raw, str) else raw
    return TrainConfig.from_dict(values)


def load_config_file(path) -> TrainConfig:
    """The validated :class:`TrainConfig` stored in ``path`` (a run's ``train_config.json``); every
    failure (missing, not JSON, not a config, invalid values) is a ValueError/FileNotFoundError that
    names the file."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; a run folder written by mdm-prime train holds it")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON (corrupted or edited?): {err}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path} must hold a JSON object of config keys, got {type(d).__name__}")
    try:
        return TrainConfig.from_dict(d)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a valid train config: {err}") from None


def check_device(device: str) -> str:
    """``device`` if it names a usable device (``auto``, ``cpu``, ``cuda``, ``cuda:N``); else a
    ValueError naming it (``cuda`` on a machine without CUDA included). Cheap: no data, no model."""
    import torch

    if not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    if device in ("auto", "cpu"):
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"unknown device {device!r}; expected cpu, cuda or cuda:N (or auto for training)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was requested but CUDA is not available on this machine; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices")
        return device
    if dev.type != "cpu":
        raise ValueError(f"device {device!r} is not supported; expected cpu or cuda")
    return device
