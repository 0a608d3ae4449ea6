"""Training configuration: one flat dataclass, named presets, and ``key=value`` overrides.

``resolve_config("text-tiny", overrides={"lr": "1e-3"})`` returns a validated :class:`TrainConfig`.
Unknown keys and invalid values raise ``ValueError`` naming them, before any work is done. The fully
resolved config is saved as ``train_config.json`` in every run folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from .codes import CODE_KINDS
from .families import FAMILIES, get_family
from .models.base import PRECISIONS
from .objectives import OBJECTIVES, WEIGHTINGS
from .validation import check_choice, check_int, check_number, is_number

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


@dataclass(frozen=True)
class Rule:
    """How :meth:`TrainConfig.validate` checks one field on its own (declared as the field's
    ``metadata["rule"]``; checks that relate fields are code in ``validate``). Every refusal is a
    ``ValueError`` naming the field and its value.

    ``kind``: ``"str"``, ``"dict"``, ``"choice"`` (one of ``options``), ``"int"`` (within ``low``;
    ``what`` words the requirement), ``"number"`` (first "a finite number", then within ``low`` /
    ``high``, worded by ``what`` or else by :func:`~mdm_prime.validation.check_number`) or ``"pair"``
    (two numbers within the bounds)."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    allow_none: bool = False
    options: tuple = ()
    what: str | None = None
    note: str = ""

    def check(self, name: str, value: Any) -> None:
        bounds = dict(low_open=self.low_open, high_open=self.high_open)
        if self.kind == "choice":
            check_choice(name, value, self.options)
        elif self.kind in ("str", "dict") and not isinstance(value, {"str": str, "dict": dict}[self.kind]):
            raise ValueError(
                f"{name} must be {'a string' if self.kind == 'str' else 'a dict'}, got {value!r}"
            )
        elif self.kind == "int":
            check_int(name, value, low=self.low, allow_none=self.allow_none, what=self.what)
        elif self.kind == "number":
            check_number(name, value)  # "{name} must be a finite number"
            if self.low is not None or self.high is not None:
                check_number(name, value, self.low, self.high, **bounds, what=self.what, note=self.note)
        elif self.kind == "pair" and not (
            isinstance(value, (tuple, list))
            and len(value) == 2
            and all(is_number(v, self.low, self.high, **bounds) for v in value)
        ):
            interval = f"[{self.low}, {self.high}{')' if self.high_open else ']'}"
            raise ValueError(f"{name} must be two numbers in {interval}{self.note}, got {value!r}")


def rule(kind: str, **kw) -> dict:
    """``field(metadata=rule("int", low=1, what="a positive integer"))``: see :class:`Rule`."""
    return {"rule": Rule(kind, **kw)}


TEXT = rule("str")
POSITIVE = rule("int", low=1, what="a positive integer")
NON_NEGATIVE = rule("int", low=0, what="a non-negative integer")
FINITE = rule("number")


@dataclass
class TrainConfig:
    """Everything a run needs. Units: steps are optimizer steps; ``batch_size`` is the global batch
    (sequences per optimizer step, summed over processes and accumulation micro-batches).

    Each field's own rule is its ``metadata["rule"]`` (:class:`Rule`); :meth:`validate` applies them
    in field order, then the checks that relate fields."""

    # data
    data: str = field(default="mix", metadata=TEXT)
    tokenizer: str = field(default="byte", metadata=TEXT)
    seq_len: int = field(default=128, metadata=POSITIVE)
    # model family and sub-tokens
    # a key of mdm_prime.families.FAMILIES: prime | mdm (ℓ = 1) | ar
    family: str = field(default="prime", metadata=rule("choice", options=tuple(FAMILIES)))
    subtokens: int = field(default=2, metadata=POSITIVE)  # ℓ (forced to 1 for mdm and ar)
    base: int | None = field(
        default=None, metadata=rule("int", low=2, allow_none=True, what="an integer >= 2 or none")
    )
    # which class gets which digits (docs/method.md §1b): index | shuffle | frequency | cluster;
    # computed once from the training split and stored in the model config (ℓ > 1 only)
    codes: str = field(default="index", metadata=rule("choice", options=CODE_KINDS))
    # training loss: prime (paper) | valid (the bound)
    objective: str = field(default="prime", metadata=rule("choice", options=OBJECTIVES))
    # training weighting (docs/method.md §4b): elbo (w(t), default) | unweighted (per masked digit /
    # token) | mixture ((1 − loss_mix)·L_prime + loss_mix·L_valid, objective must stay prime)
    loss_weighting: str = field(default="elbo", metadata=rule("choice", options=WEIGHTINGS))
    loss_mix: float = field(default=0.5, metadata=rule("number", low=0, high=1, what="in [0, 1]"))
    # masking schedule: linear | loglinear[:eps] | cosine | polynomial[:n], or per digit position
    # (docs/method.md §2b) leading:A | digits:S_0,...,S_{ℓ-1}; checked against subtokens in validate()
    schedule: str = field(default="linear", metadata=TEXT)
    # network
    architecture: str = field(default="auto", metadata=TEXT)  # auto | transformer | unet | mlp
    model_size: str = field(default="tiny", metadata=TEXT)
    model_overrides: dict = field(default_factory=dict, metadata=rule("dict"))  # extra architecture kwargs
    # optimisation
    batch_size: int = field(default=32, metadata=POSITIVE)
    grad_accum: int = field(default=1, metadata=POSITIVE)
    max_steps: int = field(default=2000, metadata=POSITIVE)
    lr: float = field(default=1e-3, metadata=rule("number", low=0, low_open=True))
    lr_schedule: str = field(default="cosine", metadata=rule("choice", options=LR_SCHEDULES))
    warmup_steps: int = field(default=100, metadata=NON_NEGATIVE)
    min_lr_ratio: float = field(default=0.1, metadata=rule("number", low=0, high=1, what="in [0, 1]"))
    weight_decay: float = field(default=0.0, metadata=rule("number", low=0, what=">= 0"))
    betas: tuple = field(
        default=(0.9, 0.98), metadata=rule("pair", low=0, high=1, high_open=True, note=", e.g. [0.9, 0.98]")
    )
    grad_clip: float = field(default=1.0, metadata=rule("number", low=0, what=">= 0", note=" (0 disables)"))
    ema_decay: float = field(
        default=0.999, metadata=rule("number", low=0, high=1, high_open=True, what="in [0, 1)")
    )
    time_eps: float = field(
        default=1e-3,
        metadata=rule(
            "number",
            low=0,
            high=1,
            low_open=True,
            high_open=True,
            what="in (0, 1)",
            note=" (times are drawn from [time_eps, 1])",
        ),
    )
    # evaluation and logging
    eval_every: int = field(default=500, metadata=NON_NEGATIVE)
    eval_sequences: int = field(default=64, metadata=POSITIVE)
    eval_num_times: int = field(default=8, metadata=POSITIVE)
    final_eval_sequences: int = field(default=256, metadata=POSITIVE)
    final_eval_num_times: int = field(default=32, metadata=POSITIVE)
    sample_every: int = field(default=0, metadata=NON_NEGATIVE)  # 0: only at the end
    num_preview_samples: int = field(default=4, metadata=NON_NEGATIVE)
    sample_steps: int = field(default=0, metadata=NON_NEGATIVE)  # 0: one step per token (T = L)
    sample_temperature: float = field(default=1.0, metadata=FINITE)  # preview samples only
    sample_top_p: float = field(default=1.0, metadata=FINITE)  # preview samples only (nucleus mass)
    log_every: int = field(default=10, metadata=POSITIVE)
    checkpoint_every: int = field(default=500, metadata=NON_NEGATIVE)
    # runtime
    seed: int = field(default=0, metadata=NON_NEGATIVE)
    # auto: bf16 autocast on CUDA and on CPUs with AVX512-BF16/AMX, else fp32
    precision: str = field(default="auto", metadata=rule("choice", options=PRECISIONS))
    device: str = field(default="auto", metadata=rule("choice", options=DEVICES))
    compile: bool = False
    max_train_tokens: int = field(default=0, metadata=NON_NEGATIVE)  # 0: the whole training split
    # a run stops after this many non-finite steps in a row (each is skipped)
    max_bad_steps: int = field(default=10, metadata=POSITIVE)

    def validate(self) -> TrainConfig:
        for f in fields(self):
            if "rule" in f.metadata:
                f.metadata["rule"].check(f.name, getattr(self, f.name))
        if self.eval_num_times < 2 or self.final_eval_num_times < 2:
            raise ValueError(
                "eval_num_times and final_eval_num_times must be >= 2 (standard errors need 2 draws)"
            )
        from .subtokenizer import MAX_CODES, MAX_LENGTH

        if self.subtokens > MAX_LENGTH:
            raise ValueError(
                f"subtokens must be <= {MAX_LENGTH} (sub-tokens per token), got {self.subtokens}"
            )
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
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum}"
            )
        if self.loss_weighting == "mixture" and self.objective != "prime":
            raise ValueError(
                f"loss_weighting=mixture mixes both objectives by loss_mix (0: prime, 1: valid); leave "
                f"objective at prime, got objective={self.objective!r}"
            )
        if self.loss_weighting != "elbo" and get_family(self.family).exact_likelihood:
            raise ValueError(
                f"family {self.family!r} trains on its exact likelihood; loss_weighting must be elbo, "
                f"got {self.loss_weighting!r}"
            )
        fixed = get_family(self.family).fixed_subtokens
        if fixed is not None and self.subtokens != fixed:
            raise ValueError(
                f"family {self.family!r} uses whole tokens: subtokens must be {fixed}, got {self.subtokens} "
                f"(use --family prime for ℓ > 1)"
            )
        self._check_schedule()
        return self

    def _check_schedule(self) -> None:
        """``schedule`` parses for ``ℓ = subtokens`` (shared names, or per digit ``leading:A`` /
        ``digits:S_0,…``, docs/method.md §2b); a one-line ValueError naming the value otherwise."""
        from .schedules import get_schedule

        try:
            get_schedule(self.schedule, length=self.subtokens)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"schedule={self.schedule!r} is not valid for subtokens={self.subtokens}: {err}"
            ) from None

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
