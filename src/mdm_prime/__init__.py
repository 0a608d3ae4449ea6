"""mdm-prime: masked diffusion with partial masking (MDM-Prime), with honest likelihoods.

Core contract: a model is any callable ``model(y_t: LongTensor[B, L·ℓ], t: FloatTensor[B]) ->
logits FloatTensor[B, L, C]``. Train it with :func:`diffusion_loss`; report likelihood with
:func:`likelihood`, which always uses the valid bound (``docs/method.md §5``). The method is
written up in ``docs/method.md``; the modules in the order data flows through them in
``docs/architecture.md``.
"""

from .checkpoint import load_pretrained, save_pretrained
from .decoding import DecodingResult, decoding_likelihood
from .discrete_bound import DiscreteTimeBound, discrete_time_bound
from .families import FAMILIES, SampleRequest, family_of, get_family
from .importing import import_checkpoint, write_run_folder
from .likelihood import LikelihoodResult, likelihood
from .objectives import (
    DiffusionLoss,
    diffusion_loss,
    digit_nll,
    sequence_terms,
    token_and_digit_nll,
    token_nll,
)
from .parameterization import (
    carry_over,
    carry_over_log_probs,
    carry_over_logits,
    carry_over_nll,
    consistency_log_mask,
    digit_log_marginals,
    digit_marginals_from_probs,
)
from .process import mask_k_subtokens, mask_subtokens, sample_times, training_noise
from .sampling import SampleResult, sample
from .schedules import (
    CosineSchedule,
    DigitSchedules,
    LinearSchedule,
    LogLinearSchedule,
    PolynomialSchedule,
    Schedule,
    get_schedule,
)
from .scoring import auto_batch_size, score_corpus
from .subtokenizer import SubTokenizer, default_base

__version__ = "0.1.0"

__all__ = [
    "SubTokenizer",
    "default_base",
    "Schedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "CosineSchedule",
    "PolynomialSchedule",
    "DigitSchedules",
    "get_schedule",
    "sample_times",
    "mask_subtokens",
    "mask_k_subtokens",
    "training_noise",
    "consistency_log_mask",
    "carry_over",
    "carry_over_nll",
    "token_and_digit_nll",
    "carry_over_logits",
    "carry_over_log_probs",
    "digit_log_marginals",
    "digit_marginals_from_probs",
    "token_nll",
    "digit_nll",
    "sequence_terms",
    "diffusion_loss",
    "DiffusionLoss",
    "likelihood",
    "LikelihoodResult",
    "sample",
    "SampleResult",
    "decoding_likelihood",
    "DecodingResult",
    "discrete_time_bound",
    "DiscreteTimeBound",
    "FAMILIES",
    "SampleRequest",
    "get_family",
    "family_of",
    "save_pretrained",
    "load_pretrained",
    "score_corpus",
    "auto_batch_size",
    "import_checkpoint",
    "write_run_folder",
    "__version__",
]
