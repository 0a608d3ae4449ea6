"""Import the published MDLM / MDLM-Prime checkpoints into :class:`~mdm_prime.models.MDLMDiT`.

Two formats are read (docs/published_models.md):

* **Lightning** ``checkpoint.ckpt`` (chen-hao-chao/mdm-prime, kuleshov-group/mdlm): the network's
  weights under ``state_dict["backbone.*"]``, the EMA weights as ``ema["shadow_params"]`` (a list in
  the order of ``backbone.parameters()``), the run's omegaconf config under
  ``hyper_parameters["config"]``. Read by :class:`~.safe_load.SafeCheckpointReader` (nothing in the
  file is executed; only the weights' storages are read).
* **Hugging Face** MDLM release (``kuleshov-group/mdlm-owt``): a folder with ``config.json``
  (``model_type: "mdlm"``, ``hidden_dim``, ``cond_dim``, ``n_blocks``, ``n_heads``, ``vocab_size``,
  ``model_length``, ``time_conditioning``) and ``model.safetensors`` with the same ``backbone.*`` keys.

Sizes are inferred from tensor shapes: ``d`` and depth from the blocks, ``c_dim`` from the time MLP,
ℓ from the embedding width (``d`` → ℓ = 1 with a ``C+1``-row vocabulary table; ``d/ℓ`` → a ``b+1``-row
digit table), ``C`` from the head. The number of heads, ``L`` and the time conditioning come from the
stored hyper-parameters. Keyword overrides win over stored hyper-parameters; an override or a stored
value that contradicts the tensor shapes is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.mdlm_dit import MDLMDiT
from ..subtokenizer import SubTokenizer
from .safe_load import CheckpointImportError, SafeCheckpointReader, TensorRef, to_plain

__all__ = ["WEIGHT_CHOICES", "import_checkpoint"]

SIZE_KEYS = (
    "subtokens",
    "base",
    "num_classes",
    "dim",
    "depth",
    "heads",
    "cond_dim",
    "seq_len",
    "time_conditioned",
)
"""The network sizes an import infers and records in its metadata."""

WEIGHT_CHOICES = ("ema", "raw")
_REQUIRED = (
    "vocab_embed.embedding",
    "sigma_map.mlp.0.weight",
    "blocks.0.attn_qkv.weight",
    "output_layer.linear.weight",
)
_OVERRIDES = (
    "subtokens",
    "base",
    "num_classes",
    "dim",
    "depth",
    "heads",
    "cond_dim",
    "seq_len",
    "time_conditioned",
)


def _get(tree: dict, *path, default=None):
    node = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _shape(x) -> tuple:
    return tuple(x.shape)


def _infer_shapes(shapes: dict, source: str) -> dict:
    """ℓ, b, C, d, depth, c_dim from the backbone's tensor shapes."""
    missing = [k for k in _REQUIRED if k not in shapes]
    if missing:
        raise CheckpointImportError(
            f"{source} is not an MDLM / MDLM-Prime DiT checkpoint: backbone keys {missing} are missing "
            f"(found e.g. {sorted(shapes)[:6]}); another architecture (autoregressive, DiMamba?) "
            f"cannot be imported"
        )
    dim = shapes["blocks.0.attn_qkv.weight"][1]
    depth = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    cond_dim = shapes["sigma_map.mlp.0.weight"][0]
    rows, width = shapes["vocab_embed.embedding"]
    out = shapes["output_layer.linear.weight"][0]
    if width == dim:
        ell, num_classes, base = 1, rows - 1, rows - 1
        if out != rows:
            raise CheckpointImportError(
                f"{source}: ℓ = 1 vocabulary table has {rows} rows but the head has {out} "
                f"outputs (expected equal: C tokens + the mask)"
            )
    else:
        if dim % width:
            raise CheckpointImportError(
                f"{source}: embedding width {width} does not divide the model width {dim}"
            )
        ell, base, num_classes = dim // width, rows - 1, out
        if base**ell < num_classes:
            raise CheckpointImportError(
                f"{source}: digit table of {rows} rows (b = {base}) with ℓ = {ell} gives "
                f"{base**ell} codes < C = {num_classes} head outputs"
            )
    return {
        "subtokens": ell,
        "base": base,
        "num_classes": num_classes,
        "dim": dim,
        "depth": depth,
        "cond_dim": cond_dim,
    }


def _lightning_hparams(tree) -> dict:
    """Stored hyper-parameters as plain data: ``{"model": {...}, "prime": {...}, ...}`` or ``{}``."""
    hp = to_plain(tree.get("hyper_parameters", {})) if isinstance(tree, dict) else {}
    if isinstance(hp, dict) and isinstance(hp.get("config"), dict):
        hp = hp["config"]
    return hp if isinstance(hp, dict) else {}


def _stored_values(hp: dict, source: str) -> dict:
    """The hyper-parameters that decide the network, from a Lightning config (omegaconf layout)."""
    backbone = hp.get("backbone")
    if backbone not in (None, "dit"):
        raise CheckpointImportError(
            f"{source} has backbone {backbone!r}; only the DiT diffusion models "
            f"(backbone 'dit') can be imported"
        )
    param = hp.get("parameterization")
    if param not in (None, "subs"):
        raise CheckpointImportError(
            f"{source} uses parameterization {param!r}; only 'subs' (MDLM / MDLM-Prime) "
            f"matches this package's models"
        )
    vals = {
        "dim": _get(hp, "model", "hidden_size"),
        "depth": _get(hp, "model", "n_blocks"),
        "heads": _get(hp, "model", "n_heads"),
        "cond_dim": _get(hp, "model", "cond_dim"),
        "seq_len": _get(hp, "model", "length"),
        "subtokens": _get(hp, "prime", "target_length"),
        "time_conditioned": hp.get("time_conditioning"),
    }
    return {k: v for k, v in vals.items() if v is not None}


def _reconcile(inferred: dict, stored: dict, overrides: dict, source: str) -> tuple[dict, list[str]]:
    notes: list[str] = []
    final = dict(inferred)
    for key, value in overrides.items():
        if key in inferred and value != inferred[key]:
            raise CheckpointImportError(
                f"{key}={value!r} (given) contradicts {source}: its tensor shapes mean "
                f"{key}={inferred[key]!r}"
            )
    for key, value in stored.items():
        if key in overrides:
            if overrides[key] != value:
                notes.append(f"{key}: stored {value!r}, overridden by {overrides[key]!r}")
            continue
        if key in inferred and value != inferred[key]:
            raise CheckpointImportError(
                f"{source}: stored hyper-parameter {key}={value!r} contradicts the tensor shapes ({key}="
                f"{inferred[key]!r}); pass {key}= explicitly if the weights are right"
            )
        final[key] = value
    final.update(overrides)
    for key in ("heads", "seq_len"):
        if key not in final:
            flag = "--" + key.replace("_", "-")
            raise CheckpointImportError(f"{source} does not record {key}; give it ({flag} / {key}=)")
    final.setdefault("time_conditioned", False)
    return final, notes


def _canonical_names(model: MDLMDiT) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def _check_inv_freq(value: torch.Tensor, head_dim: int, source: str) -> None:
    want = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    if value.shape != want.shape or not torch.allclose(value.float(), want, rtol=1e-5, atol=1e-7):
        raise CheckpointImportError(
            f"{source}: rotary frequencies do not match heads of width {head_dim}: "
            f"the number of heads is wrong (pass heads=)"
        )


def _build(final: dict, *, dropout: float, eps: float, precision: str, permutation) -> MDLMDiT:
    ell = final["subtokens"]
    sub = SubTokenizer(final["num_classes"], ell, None if ell == 1 else final["base"], permutation)
    try:
        return MDLMDiT(
            sub,
            seq_len=int(final["seq_len"]),
            dim=final["dim"],
            depth=final["depth"],
            heads=int(final["heads"]),
            cond_dim=final["cond_dim"],
            dropout=dropout,
            time_conditioned=bool(final["time_conditioned"]),
            precision=precision,
            schedule={"name": "loglinear", "eps": eps},
        )
    except (TypeError, ValueError) as err:
        raise CheckpointImportError(f"cannot build the network: {err}") from None


def _load_state(model: MDLMDiT, state: dict, source: str, what: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointImportError(
            f"{source}: {what} do not match the network: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointImportError(
                f"{source}: {what}: {key} has shape {tuple(state[key].shape)}, the network "
                f"expects {tuple(tensor.shape)}"
            )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def import_checkpoint(
    path: str | Path, *, weights: str = "ema", precision: str = "auto", permutation=None, **overrides
) -> tuple[MDLMDiT, dict]:
    """Load a published MDLM / MDLM-Prime checkpoint into an :class:`MDLMDiT` (eval mode, CPU).

    Args:
        path: a Lightning ``.ckpt`` file, or a Hugging Face folder (``config.json`` + ``model.safetensors``)
            or its ``model.safetensors``.
        weights: ``"ema"`` (default; the EMA ``shadow_params``) or ``"raw"`` (``state_dict``). The HF
            release holds one set of weights, taken as is.
        precision: the model's precision (``"auto"``: bf16 autocast on CUDA, like the authors).
        permutation: a permutation of ``0..C-1`` for the sub-tokenizer (the published models use none).
        overrides: ``subtokens``, ``base``, ``num_classes``, ``dim``, ``depth``, ``heads``, ``cond_dim``,
            ``seq_len``, ``time_conditioned``; they win over stored hyper-parameters and must agree
            with the tensor shapes.

    Returns ``(model, metadata)``; ``metadata`` (JSON-able) records the source, format, weights,
    sizes, stored training facts (step, EMA decay, carry-over) and notes.

    Raises FileNotFoundError, :class:`CheckpointImportError` (ValueError) for a truncated, unsafe
    (:class:`~.safe_load.UnsafeCheckpointError`), other-architecture or inconsistent checkpoint.
    """
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise TypeError(f"unknown overrides {unknown}; expected some of {list(_OVERRIDES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir() or path.suffix == ".safetensors":
        return _import_hf(path, weights, precision, permutation, overrides)
    return _import_lightning(path, weights, precision, permutation, overrides)


def _import_lightning(path: Path, weights: str, precision: str, permutation, overrides: dict):
    source = str(path)
    reader = SafeCheckpointReader(path)
    tree = reader.load()
    if not isinstance(tree, dict) or not isinstance(tree.get("state_dict"), dict):
        raise CheckpointImportError(
            f"{source} is not a Lightning checkpoint (no 'state_dict'; top-level "
            f"{type(tree).__name__} with keys {sorted(tree)[:6] if isinstance(tree, dict) else ''})"
        )
    refs = {
        k[len("backbone.") :]: v
        for k, v in tree["state_dict"].items()
        if isinstance(k, str) and k.startswith("backbone.")
    }
    if not refs:
        raise CheckpointImportError(
            f"{source} has no 'backbone.*' weights: not an MDLM / MDLM-Prime checkpoint "
            f"(state_dict keys e.g. {sorted(tree['state_dict'])[:6]})"
        )
    hp = _lightning_hparams(tree)
    stored = _stored_values(hp, source)
    inferred = _infer_shapes({k: _shape(v) for k, v in refs.items() if isinstance(v, TensorRef)}, source)
    final, notes = _reconcile(inferred, stored, overrides, source)
    dropout = float(_get(hp, "model", "dropout", default=0.0) or 0.0)
    eps = float(_get(hp, "noise", "eps", default=1e-3) or 1e-3)
    model = _build(final, dropout=dropout, eps=eps, precision=precision, permutation=permutation)
    head_dim = final["dim"] // int(final["heads"])
    if "rotary_emb.inv_freq" in refs:
        _check_inv_freq(reader.tensor(refs["rotary_emb.inv_freq"]), head_dim, source)
    names = _canonical_names(model)
    meta_ema = None
    if weights == "ema":
        ema = tree.get("ema")
        shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
        if not isinstance(shadow, (list, tuple)):
            raise CheckpointImportError(
                f"{source} has no EMA weights (ckpt['ema']['shadow_params']); "
                f"import the raw weights with weights='raw' (--weights raw)"
            )
        if len(shadow) != len(names):
            raise CheckpointImportError(
                f"{source}: the EMA holds {len(shadow)} tensors, the network has "
                f"{len(names)} parameters (truncated or another architecture)"
            )
        state = {name: reader.tensor(ref) for name, ref in zip(names, shadow)}
        meta_ema = {"decay": ema.get("decay"), "num_updates": ema.get("num_updates")}
        what = "EMA shadow_params (in backbone.parameters() order)"
    else:
        state = {k: reader.tensor(v) for k, v in refs.items() if k != "rotary_emb.inv_freq"}
        what = "state_dict backbone.* weights"
    _load_state(model, state, source, what)
    meta = {
        "source": source,
        "format": "lightning",
        "weights": weights,
        "ema": meta_ema,
        "global_step": tree.get("global_step"),
        "epoch": tree.get("epoch"),
        "lightning_version": tree.get("pytorch-lightning_version"),
        "carry_over_in_training": _get(hp, "prime", "carry_over"),
        "sizes": {k: final[k] for k in SIZE_KEYS},
        "notes": notes,
    }
    return model.eval(), json.loads(json.dumps(meta, default=str))


def _import_hf(path: Path, weights: str, precision: str, permutation, overrides: dict):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = path if path.is_dir() else path.parent
    weights_file = path if path.is_file() else folder / "model.safetensors"
    config_file = folder / "config.json"
    for f in (weights_file, config_file):
        if not f.is_file():
            raise FileNotFoundError(f"Hugging Face MDLM folder {str(folder)!r} lacks {f.name}")
    source = str(folder)
    try:
        cfg = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointImportError(f"{config_file} is not valid JSON: {err}") from None
    if cfg.get("model_type") != "mdlm":
        raise CheckpointImportError(
            f"{config_file} has model_type {cfg.get('model_type')!r}; expected 'mdlm' "
            f"(kuleshov-group MDLM release)"
        )
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointImportError(
            f"{weights_file} is not a readable safetensors file (truncated?): {err}"
        ) from None
    refs = {k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")}
    stored = {
        "dim": cfg.get("hidden_dim"),
        "depth": cfg.get("n_blocks"),
        "heads": cfg.get("n_heads"),
        "cond_dim": cfg.get("cond_dim"),
        "seq_len": cfg.get("model_length"),
        "time_conditioned": cfg.get("time_conditioning"),
    }
    if cfg.get("vocab_size") is not None:
        stored["num_classes"] = int(cfg["vocab_size"]) - 1  # ℓ = 1: the table holds the mask row
    stored = {k: v for k, v in stored.items() if v is not None}
    inferred = _infer_shapes({k: tuple(v.shape) for k, v in refs.items()}, source)
    final, notes = _reconcile(inferred, stored, overrides, source)
    model = _build(
        final,
        dropout=float(cfg.get("dropout", 0.0) or 0.0),
        eps=1e-3,
        precision=precision,
        permutation=permutation,
    )
    if "rotary_emb.inv_freq" in refs:
        _check_inv_freq(refs.pop("rotary_emb.inv_freq"), final["dim"] // int(final["heads"]), source)
    _load_state(model, refs, source, "model.safetensors backbone.* weights")
    if weights == "raw":
        notes.append("the Hugging Face release holds one set of weights; weights='raw' has no effect")
    meta = {
        "source": source,
        "format": "huggingface",
        "weights": "as published",
        "sizes": {k: final[k] for k in SIZE_KEYS},
        "notes": notes,
    }
    return model.eval(), meta
