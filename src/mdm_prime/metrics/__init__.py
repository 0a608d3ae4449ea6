"""Metrics beyond the likelihood bound (MATH.md §5, §8).

* :func:`generative_perplexity`, :func:`unigram_entropy` — samples scored by an autoregressive run
  trained here on the same corpus, always with the samples' unigram entropy beside it.
* :func:`frechet_distance` — Fréchet distance on the penultimate features of a CNN classifier trained
  here (:func:`train_classifier`, ``mdm-prime train-classifier``); :class:`InceptionFeatures` for the
  true Inception FID from a local weights file (needs torchvision).
* :func:`discrete_time_bound` — the T-step joint sampler's discrete-time NELBO (a valid bound on that
  sampler's NLL), which tends to ``L_valid`` as T grows.
"""

from .classifier import ImageClassifier, images_to_unit, load_classifier, save_classifier, train_classifier
from .discrete import DiscreteTimeBound, discrete_time_bound
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
    "train_classifier",
    "load_classifier",
    "save_classifier",
    "discrete_time_bound",
    "DiscreteTimeBound",
]
