"""label_confidence: the share of images a classifier labels confidently, against numpy."""

import numpy as np
import pytest
import torch

from mdm_prime.metrics import label_confidence


class PixelLinear(torch.nn.Module):
    """logits = W · (pixels in [0, 1]) + c: a classifier whose probabilities numpy can recompute."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, image_shape=(1, 2, 2)):
        super().__init__()
        self.image_shape = image_shape
        self.lin = torch.nn.Linear(weight.shape[1], weight.shape[0]).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.from_numpy(weight))
            self.lin.bias.copy_(torch.from_numpy(bias))

    def forward(self, x):
        return self.lin(x.double().flatten(1))


def _numpy_reference(images: np.ndarray, weight, bias, levels, threshold):
    x = images.reshape(len(images), -1) / (levels - 1)
    logits = x @ weight.T + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = p.max(1)
    return (top >= threshold).mean(), top.mean(), np.bincount(p.argmax(1), minlength=weight.shape[0])


@pytest.mark.parametrize("threshold", [0.6, 0.9])
def test_label_confidence_matches_numpy(threshold):
    rng = np.random.default_rng(3)
    weight, bias = rng.normal(scale=1.5, size=(3, 4)), rng.normal(size=3)
    images = rng.integers(0, 8, size=(50, 1, 2, 2))
    out = label_confidence(
        torch.from_numpy(images), PixelLinear(weight, bias), levels=8, threshold=threshold, batch_size=7
    )
    frac, mean, counts = _numpy_reference(images, weight, bias, 8, threshold)
    assert 0 < frac < 1  # the threshold splits this set: a wrong comparison would show
    assert out["confident_fraction"] == pytest.approx(frac, abs=1e-12)
    assert out["mean_confidence"] == pytest.approx(mean, rel=1e-6)  # pixels pass through float32
    assert out["class_counts"] == counts.tolist() and out["num_images"] == 50


def test_label_confidence_exact_probabilities_and_flat_input():
    """Logits (log 9, 0, 0) give p = 9/11 for class 0 on every image: below 0.9, above 0.8."""
    clf = PixelLinear(np.zeros((3, 4)), np.array([np.log(9.0), 0.0, 0.0]))
    images = torch.zeros(5, 4, dtype=torch.long)  # flattened [N, ch·H·W]
    assert label_confidence(images, clf, levels=2, threshold=0.9)["confident_fraction"] == 0.0
    out = label_confidence(images, clf, levels=2, threshold=0.8)
    assert out["confident_fraction"] == 1.0 and out["mean_confidence"] == pytest.approx(9 / 11)
    assert out["class_counts"] == [5, 0, 0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": 1.0}, "threshold must be a probability"),
        ({"threshold": 0}, "threshold must be a probability"),
        ({"images": torch.zeros(0, 1, 2, 2, dtype=torch.long)}, r"N ≥ 1"),
        ({"images": torch.full((2, 1, 2, 2), 9)}, r"pixel levels must lie in \[0, 7\]"),
    ],
)
def test_label_confidence_rejects_bad_input(kwargs, match):
    args = {"images": torch.zeros(2, 1, 2, 2, dtype=torch.long), "threshold": 0.9, **kwargs}
    with pytest.raises(ValueError, match=match):
        label_confidence(args.pop("images"), PixelLinear(np.zeros((3, 4)), np.zeros(3)), levels=8, **args)
