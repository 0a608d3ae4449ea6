"""A small CNN image classifier trained here on the image data's labels: the feature extractor of the
project's Fréchet distance (``docs/method.md §8``). Ship and name it: every Fréchet distance reports which
classifier produced its features (data, accuracy, feature size, folder).

Command::

    mdm-prime train-classifier --data mnist --out runs/clf-mnist         # also fashion-mnist, digits,
                                                                        # cifar10:PATH, mnist:pad=32 ...

Folder layout: ``classifier.safetensors`` (weights) and ``classifier.json`` (architecture, data spec,
image shape, levels, train/valid/test accuracy, SHA-256 of the weights).

Network (:class:`ImageClassifier`): input ``FloatTensor[N, ch, H, W]`` in ``[0, 1]`` (pixel level
``v`` of ``K`` levels → ``v / (K − 1)``), conv3×3(w0)–ReLU, conv3×3/2(w1)–ReLU, conv3×3/2(w2)–ReLU,
average pool to 4×4, flatten, linear(feature_dim)–ReLU (the **penultimate features**), linear(classes).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from ..validation import check_int

__all__ = [
    "ImageClassifier",
    "images_to_unit",
    "train_classifier",
    "save_classifier",
    "load_classifier",
    "describe_classifier",
    "label_confidence",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "MIN_STEPS",
]

CONFIG_FILE, WEIGHTS_FILE = "classifier.json", "classifier.safetensors"
FORMAT = "mdm-prime-image-classifier"
POOL = 4  # spatial size kept before the feature layer
MIN_STEPS = 1000  # optimizer steps when the epoch count is left to train_classifier


def images_to_unit(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer pixel levels ``[0, levels)`` → ``FloatTensor`` in ``[0, 1]`` (``v / (levels − 1)``)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    check_int("levels", levels, low=2)
    if images.dtype.is_floating_point:
        raise TypeError(
            f"images must hold integer pixel levels, got dtype {images.dtype} (pass floats in [0, 1] "
            "to the classifier directly)"
        )
    if images.numel() and (int(images.min()) < 0 or int(images.max()) >= levels):
        raise ValueError(
            f"pixel levels must lie in [0, {levels - 1}], found {int(images.min())}..{int(images.max())}"
        )
    return images.float() / (levels - 1)


class ImageClassifier(nn.Module):
    """Small CNN. ``forward(x) -> logits [N, classes]``; ``features(x) -> [N, feature_dim]``.

    Args:
        image_shape: ``(ch, H, W)``. num_classes: label count. widths: the three conv widths.
        feature_dim: size of the penultimate layer (the Fréchet features).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        widths: tuple[int, int, int] = (32, 64, 64),
        feature_dim: int = 128,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
            raise ValueError(f"image_shape must be (ch, H, W) of positive ints, got {image_shape!r}")
        if len(widths) != 3 or any(int(w) < 1 for w in widths) or feature_dim < 1 or num_classes < 2:
            raise ValueError(
                f"bad classifier sizes: widths {widths!r}, feature_dim {feature_dim}, classes {num_classes}"
            )
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes, self.widths, self.feature_dim = (
            int(num_classes),
            tuple(int(w) for w in widths),
            int(feature_dim),
        )
        ch = self.image_shape[0]
        w0, w1, w2 = self.widths
        self.body = nn.Sequential(
            nn.Conv2d(ch, w0, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w0, w1, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w1, w2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(POOL),
            nn.Flatten(),
            nn.Linear(w2 * POOL * POOL, self.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(
                f"the classifier takes float images in [0, 1], got {getattr(x, 'dtype', type(x).__name__)}"
            )
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}"
            )
        return x.float() * 2.0 - 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``FloatTensor[N, feature_dim]`` of images ``[N, ch, H, W]`` in ``[0, 1]``."""
        return self.body(self._check(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def config(self) -> dict:
        return {
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "widths": list(self.widths),
            "feature_dim": self.feature_dim,
        }


@torch.no_grad()
def _accuracy(
    model: ImageClassifier, x: torch.Tensor, y: torch.Tensor, levels: int, batch_size: int = 512
) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        pred = model(images_to_unit(x[i : i + batch_size], levels).to(device)).argmax(-1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct / max(x.shape[0], 1)


def train_classifier(
    data: str,
    out: str | Path,
    *,
    epochs: int = 0,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    max_train: int = 0,
    widths: tuple[int, int, int] = (32, 64, 64),
    feature_dim: int = 128,
    device: str = "cpu",
    log=print,
) -> dict:
    """Train :class:`ImageClassifier` on the labels of image data ``data`` (a data spec such as
    ``mnist``, ``fashion-mnist``, ``digits``, ``cifar10:PATH``, options like ``mnist:pad=32`` allowed)
    with Adam and a cosine learning rate, save it to ``out``, and return its config (with
    ``valid_accuracy`` and ``test_accuracy`` in ``[0, 1]``). ``epochs = 0`` picks enough epochs for at
    least ``MIN_STEPS`` optimizer steps (at least 2 epochs). ``max_train > 0`` caps the training images."""
    from ..data import load_data

    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1)):
        check_int(name, value, low=low)
    check_int("max_train", max_train, low=0, note=" (0: all)")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}")
    source = load_data(data)
    if source.kind != "image":
        raise ValueError(
            f"train-classifier needs labelled image data (mnist, fashion-mnist, digits, cifar10:PATH); "
            f"{data!r} is {source.kind} data"
        )
    images = source.load()
    levels = images.num_levels
    train = images["train"]
    x_tr, y_tr = train.images, train.labels
    if max_train:
        x_tr, y_tr = x_tr[:max_train], y_tr[:max_train]
    torch.manual_seed(seed)
    model = ImageClassifier(images.shape, len(images.class_names), widths, feature_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(x_tr.shape[0] / batch_size)
    if epochs == 0:
        epochs = max(2, math.ceil(MIN_STEPS / steps_per_epoch))
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(x_tr.shape[0], generator=g)
        running = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = images_to_unit(x_tr[idx], levels).to(device)
            loss = nn.functional.cross_entropy(model(x), y_tr[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        if (epoch + 1) % max(1, epochs // 10) and epoch + 1 != epochs:
            continue
        acc = _accuracy(model, images["valid"].images, images["valid"].labels, levels)
        log(
            f"epoch {epoch + 1}/{epochs}: train loss {running / steps_per_epoch:.4f}, valid accuracy {acc:.4f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
    info = {
        "data": data,
        "num_levels": levels,
        "class_names": list(images.class_names),
        "train": {
            "epochs": epochs,
            "steps": total,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "train_images": int(x_tr.shape[0]),
        },
        "valid_accuracy": _accuracy(model, images["valid"].images, images["valid"].labels, levels),
        "test_accuracy": _accuracy(model, images["test"].images, images["test"].labels, levels),
    }
    return save_classifier(model.cpu(), out, info)


def save_classifier(model: ImageClassifier, out: str | Path, info: dict) -> dict:
    """Write ``classifier.safetensors`` and ``classifier.json`` (``model.config()`` + ``info``) to ``out``."""
    from safetensors.torch import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blob = save({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    (out / WEIGHTS_FILE).write_bytes(blob)
    cfg = {
        "format": FORMAT,
        "format_version": 1,
        "model": model.config(),
        **info,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
    }
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
    return cfg


def load_classifier(folder: str | Path, device: str = "cpu") -> tuple[ImageClassifier, dict]:
    """``(model in eval mode, config)`` from a folder written by :func:`train_classifier`; checks the
    weights' SHA-256."""
    from safetensors.torch import load

    folder = Path(folder)
    if not (folder / CONFIG_FILE).exists() or not (folder / WEIGHTS_FILE).exists():
        raise FileNotFoundError(
            f"{folder} is not a classifier folder (expected {CONFIG_FILE} and {WEIGHTS_FILE} "
            "from mdm-prime train-classifier)"
        )
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    if cfg.get("format") != FORMAT:
        raise ValueError(
            f"{folder / CONFIG_FILE} is not an mdm-prime classifier config (format {cfg.get('format')!r})"
        )
    blob = (folder / WEIGHTS_FILE).read_bytes()
    if hashlib.sha256(blob).hexdigest() != cfg.get("weights_sha256"):
        raise ValueError(
            f"{folder / WEIGHTS_FILE} does not match the SHA-256 recorded in {CONFIG_FILE} (corrupted?)"
        )
    m = cfg["model"]
    model = ImageClassifier(tuple(m["image_shape"]), m["num_classes"], tuple(m["widths"]), m["feature_dim"])
    model.load_state_dict(load(blob))
    cfg["folder"] = str(folder)
    return model.to(device).eval(), cfg


def describe_classifier(cfg: dict) -> str:
    """One line naming a classifier: data, architecture, features, accuracy, folder."""
    m = cfg["model"]
    acc = cfg.get("test_accuracy")
    return (
        f"mdm-prime CNN classifier (widths {m['widths']}, {m['feature_dim']}-d penultimate features) trained on "
        f"{cfg['data']!r}"
        + (f", test accuracy {acc:.4f}" if acc is not None else "")
        + (f", {cfg['folder']}" if cfg.get("folder") else "")
    )


@torch.no_grad()
def label_confidence(
    images: torch.Tensor,
    classifier: ImageClassifier,
    *,
    levels: int,
    threshold: float = 0.9,
    batch_size: int = 256,
) -> dict:
    """How recognisable images are to ``classifier``: the share it labels with probability ≥ ``threshold``.

    A sample grid "shows digits" when most samples are confidently one class; validation images give
    the ceiling. Unlike the Fréchet distance this needs no reference set and does not depend on N.

    Args:
        images: integer pixel levels ``[N, ch, H, W]`` (or flattened ``[N, ch·H·W]``) in ``[0, levels)``.
        classifier: the in-project classifier (``forward(x) -> logits [N, classes]``).
        levels: pixel levels. threshold: probability in (0, 1).

    Returns:
        ``{"confident_fraction": share of images with max softmax probability ≥ threshold,
        "mean_confidence": mean max probability, "class_counts": [count per argmax class],
        "threshold": threshold, "num_images": N}``.
    """
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 0 or images.shape[0] == 0:
        raise ValueError(f"images must hold at least one image (N ≥ 1), got shape {tuple(images.shape)}")
    from .frechet import extract_features  # frechet imports this module

    logits = extract_features(images, classifier, levels=levels, batch_size=batch_size, output="forward")
    probs = torch.softmax(logits, dim=-1)
    top, label = probs.max(dim=-1)
    return {
        "confident_fraction": float((top >= threshold).double().mean()),
        "mean_confidence": float(top.mean()),
        "class_counts": torch.bincount(label, minlength=probs.shape[1]).tolist(),
        "threshold": float(threshold),
        "num_images": int(probs.shape[0]),
    }
