"""Samplers for MDM-Prime (docs/method.md §6): joint and per-digit samplers with an optional corrector,
per-sequence caching with idle-step accounting, conditioning helpers, grids and schedules.

Quick start::

    from mdm_prime.sampling import sample, prefix_condition
    out = sample(model, sub, num_samples=8, num_tokens=128, steps=128, seed=0)
    out.tokens          # LongTensor[8, 128]
    out.network_calls   # LongTensor[8]: saved calls = idle steps with caching
"""

from .conditioning import (
    Condition,
    condition_from_tokens,
    digit_condition,
    digit_positions_mask,
    infill_condition,
    prefix_condition,
    spans_to_token_mask,
    token_mask_to_digit_mask,
)
from .draws import categorical_from_uniform, process_log_probs
from .grids import GRIDS, corrector_kappa, expected_idle_steps, temperature_schedule, time_grid
from .sampler import METHODS, SampleResult, sample

__all__ = [
    "sample",
    "SampleResult",
    "METHODS",
    "Condition",
    "condition_from_tokens",
    "prefix_condition",
    "infill_condition",
    "digit_condition",
    "spans_to_token_mask",
    "token_mask_to_digit_mask",
    "digit_positions_mask",
    "time_grid",
    "GRIDS",
    "temperature_schedule",
    "corrector_kappa",
    "expected_idle_steps",
    "categorical_from_uniform",
    "process_log_probs",
]
