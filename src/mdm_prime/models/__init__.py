"""Networks that read partially masked sub-tokens, the autoregressive baseline, and the factory.

Every diffusion network meets one contract (see :mod:`.base`)::

    model(y_t: LongTensor[B, L·ℓ], t: FloatTensor[B] | None = None) -> FloatTensor[B, L, C]

with attributes ``subtokenizer``, ``schedule``, ``seq_len``, ``time_conditioned``, ``family``
(``"prime"``, or ``"mdm"`` when ℓ = 1) and ``config``, and methods ``num_parameters()`` and
``flops_per_token()``. ``build_model(model.config)`` rebuilds any model (weights aside).

Example::

    >>> from mdm_prime.models import build_model, transformer_config
    >>> model = build_model(transformer_config("tiny", num_classes=256, length=2, seq_len=128))
    >>> model.family, model.num_parameters()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..subtokenizer import SubTokenizer
from .adapter import ADAPTER_VARIANTS, SubTokenEmbedding
from .base import PRECISIONS, DiffusionModel
from .causal import CausalTransformer, sample_categorical
from .layers import KVCache
from .mdlm_dit import MDLMDiT, mdlm_dit_config
from .mlp import ToyMLP
from .transformer import DiffusionTransformer
from .unet import UNet

__all__ = [
    "build_model",
    "Architecture",
    "ARCHITECTURES",
    "transformer_config",
    "causal_transformer_config",
    "unet_config",
    "mlp_config",
    "TRANSFORMER_SIZES",
    "UNET_SIZES",
    "MLP_SIZES",
    "DiffusionModel",
    "DiffusionTransformer",
    "CausalTransformer",
    "UNet",
    "ToyMLP",
    "SubTokenEmbedding",
    "KVCache",
    "sample_categorical",
    "ADAPTER_VARIANTS",
    "PRECISIONS",
]

TRANSFORMER_SIZES = {
    "tiny": {"dim": 64, "depth": 2, "heads": 2},  # tests
    "mini": {"dim": 256, "depth": 4, "heads": 4},  # CPU experiments, the benchmark size
    "small": {"dim": 768, "depth": 12, "heads": 12},  # the paper's (GPT-2 small)
    "medium": {"dim": 1024, "depth": 24, "heads": 16},
}
UNET_SIZES = {
    "toy": {
        "base_channels": 32,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "attention_resolutions": [14],
        "embed_dim": 32,
    },  # CPU, 28×28
    "mnist": {
        "base_channels": 64,
        "channel_mult": [1, 2, 2],
        "num_res_blocks": 2,
        "attention_resolutions": [14],
        "embed_dim": 64,
    },
    "cifar10": {
        "base_channels": 96,
        "channel_mult": [3, 4, 4],
        "num_res_blocks": 2,
        "attention_resolutions": [16],
        "embed_dim": 64,
        "dropout": 0.1,
    },  # the paper's CIFAR-10 configuration
}
MLP_SIZES = {
    "tiny": {"embed_dim": 16, "hidden_dim": 32, "depth": 1},
    "toy": {"embed_dim": 64, "hidden_dim": 256, "depth": 3},
    "large": {"embed_dim": 128, "hidden_dim": 512, "depth": 4},
}
_DEFAULT_IMAGE_SHAPE = {"toy": [1, 28, 28], "mnist": [1, 28, 28], "cifar10": [3, 32, 32]}


def _preset(table: dict, size: str, kind: str) -> dict:
    if size not in table:
        raise ValueError(f"unknown {kind} size {size!r}; expected one of {sorted(table)}")
    return dict(table[size])


def _sub_config(num_classes: int, length: int, base: int | None, permutation) -> dict:
    return SubTokenizer(num_classes, length, base, permutation).config()


def transformer_config(
    size: str = "tiny",
    *,
    num_classes: int,
    length: int = 1,
    seq_len: int,
    base: int | None = None,
    permutation=None,
    schedule: object = "linear",
    **overrides,
) -> dict:
    """Config of a :class:`DiffusionTransformer` of a named size (``TRANSFORMER_SIZES``);
    ``overrides`` set any constructor argument (``time_conditioned=True``, ``adapter="sum"``, …)."""
    from ..schedules import get_schedule

    return {
        "architecture": "transformer",
        "subtokenizer": _sub_config(num_classes, length, base, permutation),
        "schedule": get_schedule(schedule, length=length).config(),
        "seq_len": seq_len,
        **_preset(TRANSFORMER_SIZES, size, "transformer"),
        **overrides,
    }


def causal_transformer_config(size: str = "tiny", *, num_classes: int, seq_len: int, **overrides) -> dict:
    """Config of the autoregressive :class:`CausalTransformer` with the same blocks as
    :func:`transformer_config` of the same ``size``."""
    return {
        "architecture": "causal_transformer",
        "subtokenizer": _sub_config(num_classes, 1, None, None),
        "seq_len": seq_len,
        **_preset(TRANSFORMER_SIZES, size, "transformer"),
        **overrides,
    }


def unet_config(
    size: str = "toy",
    *,
    num_classes: int = 256,
    length: int = 1,
    image_shape=None,
    base: int | None = None,
    permutation=None,
    schedule: object = "linear",
    **overrides,
) -> dict:
    """Config of a :class:`UNet` (``UNET_SIZES``; ``"cifar10"`` is the paper's: 96 base channels,
    multipliers (3, 4, 4), attention at 16×16). ``image_shape`` defaults to the size's dataset."""
    from ..schedules import get_schedule

    preset = _preset(UNET_SIZES, size, "unet")
    shape = list(image_shape) if image_shape is not None else _DEFAULT_IMAGE_SHAPE[size]
    return {
        "architecture": "unet",
        "subtokenizer": _sub_config(num_classes, length, base, permutation),
        "schedule": get_schedule(schedule, length=length).config(),
        "image_shape": shape,
        **preset,
        **overrides,
    }


def mlp_config(
    size: str = "toy",
    *,
    num_classes: int = 256,
    length: int = 1,
    seq_len: int = 2,
    base: int | None = None,
    permutation=None,
    schedule: object = "linear",
    **overrides,
) -> dict:
    """Config of the 2-D toy :class:`ToyMLP` (``MLP_SIZES``)."""
    from ..schedules import get_schedule

    return {
        "architecture": "mlp",
        "subtokenizer": _sub_config(num_classes, length, base, permutation),
        "schedule": get_schedule(schedule, length=length).config(),
        "seq_len": seq_len,
        **_preset(MLP_SIZES, size, "mlp"),
        **overrides,
    }


@dataclass(frozen=True)
class Architecture:
    """One network the families can build, registered in :data:`ARCHITECTURES`.

    Attributes:
        cls: the ``nn.Module`` class (``build_model`` calls it with the config's keyword arguments).
        config: ``config(size, *, num_classes, length, base, permutation, schedule, <shape>, **overrides)
            -> dict``, the config of a named size (``build_model(config)`` rebuilds the model).
        takes: the data shape its config needs: ``"sequence"`` (``seq_len = L``) or ``"image"``
            (``image_shape = [channels, H, W]``).
        diffusion: ``True`` for networks over sub-tokens (families ``prime``/``mdm``), ``False`` for the
            autoregressive baseline's network (whole tokens).
    """

    cls: type
    config: Callable[..., dict]
    takes: str = "sequence"
    diffusion: bool = True

    def shape_kwargs(self, seq_len: int, image_shape) -> dict:
        """The config's shape argument for data of ``seq_len`` tokens / ``image_shape`` (``None`` for
        non-image data; ValueError when an image network is asked for other data)."""
        if self.takes == "image":
            if image_shape is None:
                raise ValueError(f"architecture {self.cls.__name__} takes images; this data has none")
            return {"image_shape": list(image_shape)}
        return {"seq_len": seq_len}


ARCHITECTURES: dict[str, Architecture] = {
    "transformer": Architecture(DiffusionTransformer, transformer_config),
    "causal_transformer": Architecture(CausalTransformer, causal_transformer_config, diffusion=False),
    "unet": Architecture(UNet, unet_config, takes="image"),
    "mlp": Architecture(ToyMLP, mlp_config),
    # the published MDLM / MDLM-Prime network (mdm_prime.importing)
    "mdlm_dit": Architecture(MDLMDiT, mdlm_dit_config),
}
"""Every network by name (``--set architecture=NAME``): add a row to add one (docs/architecture.md)."""


def build_model(config: dict):
    """Rebuild a model from its ``config`` (``model.config`` or a ``*_config`` helper's output).

    Keys: ``"architecture"`` (one of :data:`ARCHITECTURES`), ``"subtokenizer"``
    (``SubTokenizer.config()``), optional ``"schedule"``, and the architecture's keyword arguments.
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    kwargs = dict(config)
    arch = kwargs.pop("architecture", None)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    if not isinstance(kwargs.get("subtokenizer"), dict):
        raise ValueError(
            f"config needs a 'subtokenizer' dict (SubTokenizer.config()), got {kwargs.get('subtokenizer')!r}"
        )
    sub = SubTokenizer.from_config(kwargs.pop("subtokenizer"))
    if arch == "causal_transformer":
        if sub.length != 1:
            raise ValueError(
                f"causal_transformer models tokens: subtokenizer length must be 1, got {sub.length}"
            )
        kwargs.pop("schedule", None)
        return _construct(arch, num_classes=sub.num_classes, **kwargs)
    return _construct(arch, subtokenizer=sub, **kwargs)


def _construct(arch: str, **kwargs):
    try:
        return ARCHITECTURES[arch].cls(**kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err) or "missing" in str(err):
            raise TypeError(f"bad config for architecture {arch!r}: {err}") from None
        raise
