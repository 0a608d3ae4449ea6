"""What every network in :mod:`mdm_prime.models` shares: the model contract, input checks,
precision (bf16 autocast) and parameter / FLOP counting.

The diffusion contract (docs/method.md §3)::

    model(y_t: LongTensor[B, L·ℓ], t: FloatTensor[B] | None = None) -> FloatTensor[B, L, C]

``y_t`` is a token-major sub-token sequence (``SubTokenizer.encode`` layout, mask id ``b``); the
output is one vector of logits per *token* (carry-over is applied by the objectives, not here).
Logits are always returned in float32 (or float64 if the model is float64), also under autocast.
"""

from __future__ import annotations

import contextlib
import functools
import json

import torch
from torch import nn

from ..schedules import get_schedule
from ..subtokenizer import SubTokenizer
from ..validation import check_choice, check_positive_int

__all__ = [
    "DiffusionModel",
    "PRECISIONS",
    "autocast_context",
    "uses_bf16",
    "cpu_has_native_bf16",
    "check_int_tensor",
    "check_json",
    "make_optimizer",
    "maybe_compile",
]

PRECISIONS = ("auto", "fp32", "bf16")
"""``"auto"`` (default): bf16 autocast on CUDA; on CPU bf16 autocast only when the CPU has native
bf16 dot products (``avx512_bf16`` or ``amx_bf16``), where a training step measured 1.5× faster than
fp32 (``bench/results/models.md``); otherwise fp32. ``"fp32"``: never autocast (use it where exact
float32 numbers matter, e.g. comparisons against an oracle). ``"bf16"``: autocast on any device.
Logits are returned in float32 either way."""


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU advertises native bf16 dot products (Linux ``/proc/cpuinfo`` flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bf16 autocast on ``device`` (see :data:`PRECISIONS`)."""
    check_choice("precision", precision, PRECISIONS)
    if device.type not in ("cuda", "cpu") or precision == "fp32":
        return False
    return precision == "bf16" or device.type == "cuda" or cpu_has_native_bf16()


def autocast_context(precision: str, device: torch.device):
    """The autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    if not uses_bf16(precision, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_optimizer(
    model: nn.Module,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters, weight decay on matrices/tables only (``dim >= 2``; biases
    and norm gains get none). ``fused=None`` picks the fused kernel (one pass over all parameters,
    no per-parameter Python loop) where torch has it for the parameters' device (CPU, CUDA) and
    they are floating point; the update is the same as torch's default loop (within float rounding).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    if fused is None:
        fused = bool(params) and all(
            p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params
        )
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(betas), fused=fused)


def maybe_compile(model: nn.Module, enabled: bool = True, **compile_kwargs) -> nn.Module:
    """``torch.compile(model, **compile_kwargs)`` when ``enabled`` (the config key ``compile``), else
    ``model`` itself. The compiled wrapper shares ``model``'s parameters, so optimise, checkpoint and
    EMA ``model``; call the wrapper for the forward pass. Needs a C++ compiler on CPU (inductor)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    return torch.compile(model, **compile_kwargs) if enabled else model


def check_int_tensor(name: str, x: object, dim: int) -> None:
    """TypeError unless ``x`` is an integer tensor; ValueError unless it has ``dim`` dimensions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer (long) tensor, got dtype {x.dtype}")
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")


def check_range(name: str, x: torch.Tensor, high: int, meaning: str) -> None:
    """ValueError unless every entry of ``x`` lies in ``[0, high]``."""
    if x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > high:
            raise ValueError(f"{name} must lie in [0, {high}] ({meaning}), found {lo if lo < 0 else hi}")


def check_json(name: str, value: object) -> None:
    """TypeError unless ``value`` survives ``json.dumps``."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be JSON-serialisable: {err}") from None


class DiffusionModel(nn.Module):
    """Base class of the sub-token diffusion networks (transformer, U-Net, MLP).

    Subclasses call :meth:`_init_common` first, then build layers, and implement
    ``_forward(y_t, t) -> logits``. :meth:`forward` checks the input and applies the precision.

    Attributes:
        subtokenizer: the :class:`SubTokenizer` whose digits the model reads.
        schedule: the masking schedule the model is trained with (stored for checkpoints): a shared
            :class:`~mdm_prime.schedules.Schedule` or per-digit
            :class:`~mdm_prime.schedules.DigitSchedules` (docs/method.md §2b).
        seq_len: ``L``, tokens per item.
        time_conditioned: whether ``t`` is used.
        precision: one of :data:`PRECISIONS`.
        config: JSON-able dict; ``build_model(model.config)`` rebuilds the model.
        family: ``"mdm"`` for ℓ = 1, else ``"prime"`` (same code).
    """

    architecture = "base"
    variable_length = False  # True: accepts any number of tokens, not only seq_len

    def _init_common(
        self,
        subtokenizer: SubTokenizer,
        seq_len: int,
        time_conditioned: bool,
        precision: str,
        schedule: object,
        arch_kwargs: dict,
    ) -> None:
        if not isinstance(subtokenizer, SubTokenizer):
            raise TypeError(f"subtokenizer must be a SubTokenizer, got {type(subtokenizer).__name__}")
        check_positive_int("seq_len", seq_len)
        if not isinstance(time_conditioned, bool):
            raise TypeError(f"time_conditioned must be a bool, got {type(time_conditioned).__name__}")
        check_choice("precision", precision, PRECISIONS)
        self.subtokenizer = subtokenizer
        self.schedule = get_schedule(schedule, length=subtokenizer.length)  # per-digit: docs/method.md §2b
        self.seq_len = seq_len
        self.time_conditioned = time_conditioned
        self.precision = precision
        self.config = {
            "architecture": self.architecture,
            "subtokenizer": subtokenizer.config(),
            "schedule": self.schedule.config(),
            "seq_len": seq_len,
            "time_conditioned": time_conditioned,
            "precision": precision,
            **arch_kwargs,
        }
        check_json("model config", self.config)

    @property
    def family(self) -> str:
        return "mdm" if self.subtokenizer.length == 1 else "prime"

    @property
    def num_classes(self) -> int:
        return self.subtokenizer.num_classes

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> float:
        """Forward FLOPs per token (multiply-add = 2), counted once with ``FlopCounterMode`` on a
        batch of one fully masked item (matmuls, convolutions and attention; elementwise ops are
        not counted). Attention runs on the math backend while counting, since the counter does
        not see the fused CPU kernels. Subclasses may override with a closed form."""
        cached = self.__dict__.get("_flops_cache")
        if cached is None:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            from torch.utils.flop_counter import FlopCounterMode

            device = next(self.parameters()).device
            y = torch.full(
                (1, self.seq_len * self.subtokenizer.length), self.subtokenizer.mask_id, device=device
            )
            t = torch.full((1,), 0.5, device=device)
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter, sdpa_kernel(SDPBackend.MATH):
                self._forward(y, t)
            cached = counter.get_total_flops() / self.seq_len
            self.__dict__["_flops_cache"] = cached
        return float(cached)

    def check_input(self, y_t: object, t: object) -> None:
        """Validate ``y_t`` (``LongTensor[B, L·ℓ]``, entries in ``0..b``) and ``t`` (``FloatTensor[B]``)."""
        ell = self.subtokenizer.length
        check_int_tensor("y_t", y_t, 2)
        n = y_t.shape[1]
        if self.variable_length:
            if n == 0 or n % ell:
                raise ValueError(
                    f"y_t must have shape (B, L·ℓ) with ℓ={ell} and L >= 1, got {tuple(y_t.shape)}"
                )
        elif n != self.seq_len * ell:
            raise ValueError(
                f"y_t must have shape (B, {self.seq_len * ell}) (L={self.seq_len} tokens × ℓ={ell}), "
                f"got {tuple(y_t.shape)}"
            )
        b = self.subtokenizer.base
        check_range("y_t", y_t, b, f"digits 0..{b - 1}, mask {b}")
        if self.time_conditioned:
            if t is None:
                raise ValueError("this model is time-conditioned: t (FloatTensor[B]) is required")
            if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
                raise TypeError(f"t must be a floating-point tensor, got {t!r:.80}")
            if t.shape != (y_t.shape[0],):
                raise ValueError(f"t must have shape ({y_t.shape[0]},), got {tuple(t.shape)}")

    def forward(self, y_t: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``y_t: LongTensor[B, L·ℓ]``, ``t: FloatTensor[B]`` (ignored unless time-conditioned)
        → logits ``FloatTensor[B, L, C]`` (float32 under autocast)."""
        self.check_input(y_t, t)
        with autocast_context(self.precision, y_t.device):
            logits = self._forward(y_t, t)
        return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()

    def _forward(self, y_t: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError
