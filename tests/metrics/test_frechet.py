"""Fréchet distance, its classifier, and the Inception path's error without torchvision."""

import sys

import numpy as np
import pytest
import torch

from mdm_prime.metrics import (
    ImageClassifier,
    InceptionFeatures,
    TorchvisionMissingError,
    feature_statistics,
    frechet_distance,
    frechet_from_statistics,
    load_classifier,
    train_classifier,
)


def test_statistics_formula_matches_closed_form_and_scipy():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.1, 2, size=5), rng.uniform(0.1, 2, size=5)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()  # diagonal Gaussians
    assert frechet_from_statistics(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    linalg = pytest.importorskip("scipy.linalg")
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T, b @ b.T + 0.1 * np.eye(6)
    ref = np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert frechet_from_statistics(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(ref, rel=1e-8)
    # a rank-deficient covariance (fewer samples than features) stays finite and non-negative
    low = rng.normal(size=(3, 6))
    mu, s = feature_statistics(low)
    assert frechet_from_statistics(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


class Flatten(torch.nn.Module):
    """Features = the pixels themselves: the Fréchet distance of a constant shift δ in all D pixels is D·δ²."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def features(self, x):
        return x.flatten(1)


def test_shift_gives_exactly_d_delta_squared():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 2, 3, generator=g, dtype=torch.float64) * 0.5
    for delta in (0.0, 0.1, 0.3):
        r = frechet_distance(x + delta, x, Flatten())
        assert r["frechet_distance"] == pytest.approx(6 * delta**2, abs=1e-10)
        assert r["fd_feature_dim"] == 6 and r["fd_num_samples"] == 200


def test_cnn_features_self_distance_zero_and_grows_with_a_shift():
    torch.manual_seed(0)
    clf = ImageClassifier((1, 8, 8), 10, widths=(8, 8, 8), feature_dim=16).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 10, (300, 1, 8, 8), generator=g)
    same = frechet_distance(images, images.clone(), clf, levels=17)
    assert "ImageClassifier" in same["fd_classifier"]
    fds = [frechet_distance(images + s, images, clf, levels=17)["frechet_distance"] for s in (2, 6)]
    assert same["frechet_distance"] < 1e-6 * fds[0]
    assert 0 < fds[0] < fds[1]
    with pytest.raises(ValueError, match="levels"):
        frechet_distance(images, images, clf)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(images[:1], images, clf, levels=17)
    with pytest.raises(ValueError, match="pixel levels"):
        frechet_distance(images + 10, images, clf, levels=17)


def test_train_save_load_classifier_on_digits(tmp_path):
    lines = []
    cfg = train_classifier(
        "digits",
        tmp_path / "clf",
        epochs=12,
        batch_size=64,
        lr=5e-3,
        max_train=400,
        widths=(8, 16, 16),
        feature_dim=32,
        log=lines.append,
    )
    assert lines and "valid accuracy" in lines[-1]
    assert 0.3 < cfg["test_accuracy"] <= 1.0  # chance is 0.1
    model, loaded = load_classifier(tmp_path / "clf")
    assert loaded["test_accuracy"] == cfg["test_accuracy"] and loaded["data"] == "digits"
    assert loaded["model"]["image_shape"] == [1, 8, 8] and loaded["num_levels"] == 17
    x = torch.rand(4, 1, 8, 8)
    assert model.features(x).shape == (4, 32)
    blob = bytearray((tmp_path / "clf" / "classifier.safetensors").read_bytes())
    blob[-1] ^= 1
    (tmp_path / "clf" / "classifier.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="SHA-256"):
        load_classifier(tmp_path / "clf")
    with pytest.raises(ValueError, match="image data"):
        train_classifier("markov:states=3", tmp_path / "bad")


def test_inception_without_torchvision_says_so(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(TorchvisionMissingError, match="needs torchvision"):
        InceptionFeatures(str(tmp_path / "inception.pt"))
