"""Fréchet distance between two image sets (``docs/method.md §8``).

``FD = |μ_1 − μ_2|² + tr Σ_1 + tr Σ_2 − 2 tr (Σ_1^{1/2} Σ_2 Σ_1^{1/2})^{1/2}`` between Gaussians fitted
to features of the two sets. The features come from a classifier trained in this project
(:mod:`.classifier`, its penultimate layer) — not comparable with published FIDs, and every result
names its classifier. The true Inception FID (2048-d pool features of Inception-v3) is computed only
from a local torchvision-format weights file the user supplies (:class:`InceptionFeatures`).

Numerics: everything in float64; the trace of the matrix square root is taken from the eigenvalues
of the symmetric PSD matrix ``Σ_1^{1/2} Σ_2 Σ_1^{1/2}`` (same spectrum as ``Σ_1 Σ_2``), with tiny
negative eigenvalues from rounding clipped to 0 — no complex parts, no ``sqrtm`` iteration.
The plug-in estimate is biased upward at small ``N`` (use the same ``N`` when comparing models, and
``N`` well above the feature size).
"""

from __future__ import annotations

import numpy as np
import torch

from .classifier import ImageClassifier, images_to_unit

__all__ = [
    "feature_statistics",
    "frechet_from_statistics",
    "extract_features",
    "frechet_distance",
    "InceptionFeatures",
    "TorchvisionMissingError",
]


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``float64[D]`` and covariance ``float64[D, D]`` (unbiased, ``N − 1``) of ``features [N, D]``."""
    f = (
        features.detach().cpu().double().numpy()
        if isinstance(features, torch.Tensor)
        else np.asarray(features, np.float64)
    )
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_statistics(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (squared feature units, ≥ 0)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"shapes must be (D,), (D, D) twice; got {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}"
        )
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    return max(fd, 0.0)


@torch.no_grad()
def extract_features(
    images: torch.Tensor,
    extractor,
    *,
    levels: int | None = None,
    batch_size: int = 256,
    output: str = "features",
) -> torch.Tensor:
    """Features ``float64[N, D]`` of images under ``extractor.features`` (or the method named by
    ``output``, e.g. ``"forward"`` for a classifier's logits).

    ``images``: integer pixel levels ``[N, ch, H, W]`` (or flattened ``[N, ch·H·W]``) in ``[0, levels)``,
    or floats in ``[0, 1]``. ``levels`` is required for integer images.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    shape = tuple(getattr(extractor, "image_shape", ()) or ())
    if images.dim() == 2 and shape and images.shape[1] == int(np.prod(shape)):
        images = images.view(images.shape[0], *shape)
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, ch, H, W), got {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        if levels is None:
            raise ValueError("integer images need levels (the number of pixel levels) to map them to [0, 1]")
        images = images_to_unit(images, levels)
    device = (
        next(iter(extractor.parameters())).device
        if isinstance(extractor, torch.nn.Module)
        else torch.device("cpu")
    )
    if isinstance(extractor, torch.nn.Module):
        extractor.eval()
    method = getattr(extractor, output)
    return torch.cat(
        [
            method(images[i : i + batch_size].to(device)).double().cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    )


def frechet_distance(
    samples: torch.Tensor,
    reference: torch.Tensor,
    classifier,
    *,
    levels: int | None = None,
    batch_size: int = 256,
    name: str | None = None,
) -> dict:
    """Fréchet distance between the features of ``samples`` and ``reference`` under ``classifier``.

    Args:
        samples, reference: images ``[N, ch, H, W]`` (integer levels with ``levels``, or float in [0, 1]).
        classifier: an :class:`ImageClassifier` (penultimate features) or any module with
            ``features(x) -> [N, D]`` (e.g. :class:`InceptionFeatures`).
        levels: pixel levels of integer images.
        name: how to name the feature extractor in the result (default: its class and feature size).

    Returns:
        ``{"frechet_distance": float (squared feature units), "fd_classifier": name, "fd_num_samples": N,
        "fd_num_reference": M, "fd_feature_dim": D}``, plus ``"fd_note"`` when ``min(N, M) ≤ D``.
    """
    if not hasattr(classifier, "features"):
        raise TypeError(f"classifier must have a features(x) method, got {type(classifier).__name__}")
    fs = extract_features(samples, classifier, levels=levels, batch_size=batch_size)
    fr = extract_features(reference, classifier, levels=levels, batch_size=batch_size)
    mu1, s1 = feature_statistics(fs)
    mu2, s2 = feature_statistics(fr)
    if name is None:
        name = (
            f"{type(classifier).__name__} ({fs.shape[1]}-d penultimate features)"
            if isinstance(classifier, ImageClassifier)
            else f"{type(classifier).__name__} ({fs.shape[1]}-d features)"
        )
    out = {
        "frechet_distance": frechet_from_statistics(mu1, s1, mu2, s2),
        "fd_classifier": name,
        "fd_num_samples": int(fs.shape[0]),
        "fd_num_reference": int(fr.shape[0]),
        "fd_feature_dim": int(fs.shape[1]),
    }
    if min(fs.shape[0], fr.shape[0]) <= fs.shape[1]:
        out["fd_note"] = (
            f"only {min(fs.shape[0], fr.shape[0])} images for {fs.shape[1]}-d features: the covariances "
            "are rank-deficient and the distance is strongly biased upward; compare only at equal N"
        )
    return out


class TorchvisionMissingError(ImportError, ValueError):
    """The Inception FID was asked for but torchvision is not importable."""


class InceptionFeatures(torch.nn.Module):
    """Inception-v3 pool features (2048-d) from a local **torchvision-format** ``inception_v3`` state dict.

    Images in ``[0, 1]`` (grey repeated to RGB) are resized to 299×299 (bilinear) and scaled to
    ``[−1, 1]``, the input range of the ported Google weights (torchvision's ``transform_input``).
    The standard FID of the literature uses the TF-FID Inception graph ("pt_inception-2015-12-05");
    numbers match it only with those weights. torchvision is optional: not a dependency of mdm-prime.
    """

    @staticmethod
    def check_available(weights_path: str):
        """Raise :class:`TorchvisionMissingError` without torchvision, ``FileNotFoundError`` without the
        weights file; return the ``torchvision`` module."""
        try:
            import torchvision
        except ImportError as err:
            raise TorchvisionMissingError(
                f"the Inception FID (--inception-weights) needs torchvision, which is not importable here ({err}); "
                "install it (pip install torchvision) to compute it. mdm-prime does not depend on torchvision; the "
                "classifier Fréchet distance (--fd) works without it."
            ) from None
        from pathlib import Path

        if not Path(weights_path).is_file():
            raise FileNotFoundError(f"Inception weights file {str(weights_path)!r} does not exist")
        return torchvision

    def __init__(self, weights_path: str) -> None:
        super().__init__()
        from pathlib import Path

        torchvision = self.check_available(weights_path)
        path = Path(weights_path)
        net = torchvision.models.inception_v3(
            weights=None, aux_logits=True, init_weights=False, transform_input=False
        )
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        net.load_state_dict(state)
        net.fc = torch.nn.Identity()
        self.net = net.eval()
        self.weights_path = str(path)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x * 2.0 - 1.0)
