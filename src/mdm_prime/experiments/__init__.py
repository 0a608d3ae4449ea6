"""Reproducible studies of what partial masking buys (issue 12): one module per study, a resumable
runner keyed by config hash, and the generated ``docs/results.md``.

    mdm-prime experiment STUDY [--smoke] [--budget X] [--out-root runs/experiments]
    python -m mdm_prime.experiments STUDY ...   (the same command)

Studies: ``ell_sweep``, ``compute_scaling``, ``sample_quality``, ``ablations``, ``images``, ``toy``,
``paper_scale``, ``data_constrained``, ``bpe_setting``, ``what_helps``. Every likelihood is the valid
bound ``L_valid`` (docs/method.md §5).
"""

STUDIES = (
    "ell_sweep",
    "compute_scaling",
    "sample_quality",
    "ablations",
    "images",
    "toy",
    "paper_scale",
    "data_constrained",
    "bpe_setting",
    "what_helps",
)

__all__ = ["STUDIES", "get_study"]


def get_study(name: str):
    """The study module ``name`` (raises ``ValueError`` naming the known studies)."""
    import importlib

    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; expected one of {', '.join(STUDIES)}")
    return importlib.import_module(f"{__name__}.{name}")
