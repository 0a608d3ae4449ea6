"""Metrics of samples, beside the likelihood bound (``docs/method.md §8``).

* :func:`generative_perplexity`, :func:`unigram_entropy` — samples scored by an autoregressive run
  trained here on the same corpus, always with the samples' unigram entropy beside it.
* :func:`frechet_distance` — Fréchet distance on the penultimate features of a CNN classifier trained
  here (:func:`train_classifier`, ``mdm-prime train-classifier``); :class:`InceptionFeatures` for the
  true Inception FID from a local weights file (needs torchvision).
* :func:`label_confidence` — the share of images that classifier labels with probability ≥ 0.9
  (do samples show digits?), beside the validation images' share.

The T-step sampler's discrete-time bound is a likelihood and lives in :mod:`mdm_prime.discrete_bound`.
"""

from .classifier import (
    ImageClassifier,
    images_to_unit,
    label_confidence,
    load_classifier,
    save_classifier,
    train_classifier,
)
from .frechet import (
    InceptionFeatures,
    TorchvisionMissingError,
    extract_features,
    feature_statistics,
    frechet_distance,
    frechet_from_statistics,
)
from .generative import check_same_tokenizer, generative_perplexity, unigram_entropy

__all__ = [
    "generative_perplexity",
    "unigram_entropy",
    "check_same_tokenizer",
    "frechet_distance",
    "frechet_from_statistics",
    "feature_statistics",
    "extract_features",
    "InceptionFeatures",
    "TorchvisionMissingError",
    "ImageClassifier",
    "images_to_unit",
    "label_confidence",
    "train_classifier",
    "load_classifier",
    "save_classifier",
]
