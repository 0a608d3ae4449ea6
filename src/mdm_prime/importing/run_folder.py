"""Write an imported model as an ordinary run folder (the layout ``mdm-prime train`` writes)::

    RUN/train_config.json        architecture "mdlm_dit", sizes in model_overrides, data + tokenizer spec
    RUN/task.json, RUN/tokenizer/ text task metadata and the tokenizer (GPT-2 for the published models)
    RUN/checkpoint/              save_pretrained: config.json, model.safetensors, ema.safetensors (both
                                 the imported weights), trainer_state.pt (step 0, fresh optimizer)
    RUN/import_info.json         where the weights came from (source, EMA/raw, step, sizes, notes)

``mdm-prime eval RUN`` / ``sample RUN`` (``--prefix``, ``--infill``) read it like any run; fine-tuning
continues from ``trainer_state.pt`` (step 0) with the training settings stored at import.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..checkpoint import save_pretrained
from ..configs import TrainConfig

__all__ = ["FINETUNE_DEFAULTS", "write_run_folder"]

FINETUNE_DEFAULTS = {
    "lr": 3e-5,
    "warmup_steps": 0,
    "lr_schedule": "constant",
    "batch_size": 16,
    "max_steps": 1,
    "ema_decay": 0.9999,
    "eval_every": 500,
    "checkpoint_every": 500,
    "eval_sequences": 16,
    "final_eval_sequences": 64,
    "eval_num_times": 8,
    "num_preview_samples": 2,
}
"""Training settings written for fine-tuning (override with ``train_overrides``; ``max_steps`` may
be raised when resuming)."""


def _train_config(model, data: str, tokenizer: str, train_overrides: dict) -> TrainConfig:
    c = model.config
    ell = model.subtokenizer.length
    settings = dict(FINETUNE_DEFAULTS)
    settings.update(train_overrides)
    cfg = {
        "data": data,
        "tokenizer": tokenizer,
        "seq_len": model.seq_len,
        "family": model.family,
        "subtokens": ell,
        "base": model.subtokenizer.base if ell > 1 else None,
        "schedule": model.schedule.name,
        "architecture": "mdlm_dit",
        "model_size": "small",
        "model_overrides": {
            k: c[k] for k in ("dim", "depth", "heads", "cond_dim", "mlp_ratio", "dropout", "time_conditioned")
        },
        "precision": model.precision,
        **settings,
    }
    try:
        return TrainConfig.from_dict(cfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad training settings for the imported run: {err}") from None


def _trainer_state(model, cfg: TrainConfig) -> dict:
    """What ``Trainer._load_checkpoint`` reads: step 0 and a fresh AdamW with the trainer's groups."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
    )
    return {
        "step": 0,
        "epoch": 0,
        "position": 0,
        "tokens_seen": 0,
        "elapsed": 0.0,
        "optimizer": opt.state_dict(),
        "generator": torch.Generator().manual_seed(cfg.seed + 1).get_state(),
        "torch_rng": torch.get_rng_state(),
        "config": cfg.to_dict(),
    }


def write_run_folder(
    model,
    out: str | Path,
    *,
    metadata: dict | None = None,
    data: str = "mix",
    tokenizer: str = "gpt2",
    train_overrides: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (an imported :class:`~mdm_prime.models.MDLMDiT`) as a run folder ``out``.

    Args:
        metadata: from :func:`~mdm_prime.importing.import_checkpoint`, stored as ``import_info.json``
            and in the checkpoint's ``extra``.
        data: the data spec ``eval`` scores by default (e.g. ``owt:DIR``, ``text:PATH``, ``mix``).
        tokenizer: tokenizer spec; its vocabulary must have ``C`` tokens (``gpt2`` for the published models).
        train_overrides: training settings for fine-tuning (``lr``, ``batch_size``, ``max_steps``, …).
        overwrite: replace an existing run folder.

    Raises ValueError (tokenizer size ≠ C, bad settings), FileExistsError (``out`` holds files).
    """
    from ..data.tokenizers import get_tokenizer
    from ..tasks import TextTask

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} already exists and is not empty; choose another --out or pass --force"
            )
        shutil.rmtree(out)
    cfg = _train_config(model, data, tokenizer, dict(train_overrides or {}))
    tok = get_tokenizer(tokenizer)
    if tok.vocab_size != model.num_classes:
        raise ValueError(
            f"tokenizer {tokenizer!r} has {tok.vocab_size} tokens, the model {model.num_classes} classes; "
            f"the published models use gpt2"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(cfg.to_json())
    meta = json.loads(json.dumps(metadata or {}, default=str))
    task = TextTask(
        spec=data,
        num_classes=model.num_classes,
        seq_len=model.seq_len,
        valid_tokens=torch.zeros(0, model.seq_len, dtype=torch.long),
        tokenizer=tok,
        info={"tokenizer": tok.name, "imported_from": str(meta.get("source", ""))},
    )
    task.save(out)
    ckpt = out / "checkpoint"
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_pretrained(model, ckpt, ema_state_dict=state, extra={"train_step": 0, "imported": meta})
    torch.save(_trainer_state(model, cfg), ckpt / "trainer_state.pt")
    (out / "import_info.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
