"""Import the published MDLM / MDLM-Prime checkpoints (docs/published_models.md).

>>> from mdm_prime.importing import import_checkpoint, write_run_folder
>>> model, meta = import_checkpoint("checkpoint.ckpt")          # EMA weights, sizes inferred
>>> write_run_folder(model, "runs/prime-l4", metadata=meta)     # then: mdm-prime eval runs/prime-l4

Checkpoints are read without executing anything in them (:mod:`.safe_load`).
"""

from __future__ import annotations

from ..scoring import score_corpus  # (lives next to likelihood.py; re-exported here)
from .authors import WEIGHT_CHOICES, import_checkpoint
from .run_folder import write_run_folder
from .safe_load import (
    CheckpointImportError,
    SafeCheckpointReader,
    UnsafeCheckpointError,
    to_plain,
)

__all__ = [
    "WEIGHT_CHOICES",
    "CheckpointImportError",
    "SafeCheckpointReader",
    "UnsafeCheckpointError",
    "import_checkpoint",
    "score_corpus",
    "to_plain",
    "write_run_folder",
]
