"""Carry-over parameterization: one distribution per token consistent with its seen digits, and the
digit marginals of that distribution (docs/method.md §3).

:mod:`.reference` holds the readable, differentiable formulation; :mod:`.fast` the box-structured
kernels used by default (they fall back to the reference formulation where autograd needs it).
"""

from __future__ import annotations

from .fast import carry_over, carry_over_log_probs, carry_over_nll, digit_log_marginals, token_boxes
from .reference import (
    carry_over_logits,
    consistency_log_mask,
    digit_marginals_from_probs,
    to_code_space,
)

__all__ = [
    "carry_over",
    "carry_over_log_probs",
    "carry_over_logits",
    "carry_over_nll",
    "consistency_log_mask",
    "digit_log_marginals",
    "digit_marginals_from_probs",
    "to_code_space",
    "token_boxes",
]
