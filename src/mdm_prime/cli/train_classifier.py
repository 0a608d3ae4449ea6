"""``mdm-prime train-classifier``: the small CNN whose features the Fréchet distance uses
(:mod:`mdm_prime.metrics.classifier`, ``docs/method.md §8``)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..metrics.classifier import MIN_STEPS

    p.add_argument(
        "--data",
        required=True,
        help="labelled image data: mnist, fashion-mnist, digits, cifar10:PATH "
        "(options as for training, e.g. mnist:pad=32)",
    )
    p.add_argument("--out", required=True, help="output folder (classifier.safetensors + classifier.json)")
    p.add_argument(
        "--epochs",
        type=int,
        default=0,
        help=f"epochs (default 0: enough for {MIN_STEPS} optimizer steps, at least 2; MNIST: 3)",
    )
    p.add_argument("--batch-size", type=int, default=128, help="images per optimizer step")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    p.add_argument(
        "--max-train", type=int, default=0, metavar="N", help="use at most N training images (0: all)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from ..metrics.classifier import CONFIG_FILE, WEIGHTS_FILE, train_classifier

    cfg = train_classifier(
        args.data,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_train=args.max_train,
        device=args.device,
    )
    print(f"valid accuracy {cfg['valid_accuracy']:.4f}, test accuracy {cfg['test_accuracy']:.4f}")
    print(f"wrote {Path(args.out) / WEIGHTS_FILE} and {Path(args.out) / CONFIG_FILE}")
    return 0
