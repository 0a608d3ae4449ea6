"""Tasks: a data spec bound to what training and evaluation need, one class per kind of data.

:func:`build_task` loads the data of a config; :func:`load_task` reads a run folder's ``task.json``
(no corpus needed). What differs between kinds lives on the task class: the default network, how
samples are decoded and written (text, image grid, toy density), the units reported beside nats per
token (bits/char, bits/dim), and the metadata saved in a run folder. :data:`TASK_TYPES` maps the
``kind`` stored in ``task.json`` to its class.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "Task",
    "TextTask",
    "ImageTask",
    "ToyTask",
    "SyntheticTask",
    "ShardsTask",
    "TASK_TYPES",
    "shards_tokenizer",
    "TASK_FILE",
    "build_task",
    "load_task",
    "read_task_metadata",
    "parse_infill_pattern",
]

TASK_FILE = "task.json"
TOKENIZER_DIR = "tokenizer"


@dataclass
class Task:
    """Data for one run. Token tensors are ``LongTensor[N, L]`` (images flattened channel-major to
    ``L = ch·H·W``). ``infinite`` tasks draw fresh training items with :meth:`sample_train`."""

    spec: str
    num_classes: int
    seq_len: int
    valid_tokens: torch.Tensor
    train_tokens: torch.Tensor | None = None
    test_tokens: torch.Tensor | None = None
    sampler: Callable[[int, torch.Generator], torch.Tensor] | None = None
    image_shape: tuple[int, int, int] | None = None
    tokenizer: Any = None
    characters_per_token: float | None = None
    entropy_nats_per_token: float | None = None  # exact, for toy / synthetic sources
    info: dict = field(default_factory=dict)

    kind = "base"  # the name stored in task.json
    default_architecture = "transformer"
    token_sequences = True
    """Whether items are token sequences that an autoregressive scorer can read (text, synthetic)."""

    @property
    def infinite(self) -> bool:
        return self.sampler is not None

    @property
    def num_train(self) -> int:
        return 0 if self.train_tokens is None else self.train_tokens.shape[0]

    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer is not None

    def encode_prompt(self, text: str) -> torch.Tensor:
        raise ValueError(f"a text prompt needs a text run with a tokenizer; this run holds {self.kind} data")

    def parse_infill(self, pattern: str) -> tuple[torch.Tensor, torch.Tensor]:
        raise ValueError(
            f"an infill pattern needs a text run with a tokenizer; this run holds {self.kind} data"
        )

    def sample_train(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.sampler(n, generator)

    def split(self, name: str) -> torch.Tensor:
        tensors = {"train": self.train_tokens, "valid": self.valid_tokens, "test": self.test_tokens}
        if name not in tensors:
            raise ValueError(f"unknown split {name!r}; expected one of {sorted(tensors)}")
        if tensors[name] is None:
            raise ValueError(f"task {self.spec!r} has no {name} split")
        return tensors[name]

    def describe_size(self) -> str:
        """One line on the data size, for the start of a run."""
        if self.infinite:
            return f"{self.spec}: fresh draws every step, {self.valid_tokens.shape[0]} validation items"
        n_valid = self.valid_tokens.shape[0]
        return (
            f"{self.spec}: {self.num_train:,} training items × {self.seq_len} tokens "
            f"({self.num_train * self.seq_len:,} tokens), {n_valid:,} validation items"
        )

    # ------------------------------------------------------------------ units
    def add_units(self, summary: dict) -> dict:
        """Add the task's units beside ``bits_per_token`` (and the exact data entropy when known)."""
        if self.entropy_nats_per_token is not None:
            summary["data_entropy_nats_per_token"] = self.entropy_nats_per_token
        return summary

    def unit_label(self) -> tuple[str, str] | None:
        """``(summary key, label)`` of the task's own unit, if any (e.g. ``bits_per_char``)."""
        return None

    # ------------------------------------------------------------------ samples
    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Token rows ``[N, L]`` → one string per row (token ids separated by spaces)."""
        return [" ".join(map(str, row.tolist())) for row in tokens]

    def write_samples(
        self,
        tokens: torch.Tensor,
        folder: str | Path,
        stem: str,
        *,
        stats: dict | None = None,
        echo: bool = False,
    ) -> list[Path]:
        """Write samples ``LongTensor[N, L]`` under ``folder`` as ``<stem>.*`` (and ``<stem>.stats.json``);
        returns the written paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        if stats is not None:
            p = folder / f"{stem}.stats.json"
            p.write_text(json.dumps(stats, indent=2))
            written.append(p)
        return written + self._write(tokens, folder, stem, echo)

    def _write(self, tokens: torch.Tensor, folder: Path, stem: str, echo: bool) -> list[Path]:
        p = folder / f"{stem}.txt"
        p.write_text("\n".join(self.decode(tokens)) + "\n")
        return [p]

    # ------------------------------------------------------------------ run folder
    def metadata(self) -> dict:
        """What ``task.json`` holds (JSON-able)."""
        return {
            "kind": self.kind,
            "spec": self.spec,
            "num_classes": self.num_classes,
            "seq_len": self.seq_len,
            "image_shape": self.image_shape,
            "characters_per_token": self.characters_per_token,
            "entropy_nats_per_token": self.entropy_nats_per_token,
            **{k: v for k, v in self.info.items() if isinstance(v, (str, int, float, bool, type(None)))},
        }

    def save(self, out: str | Path) -> None:
        """Write what a run folder needs to show and score samples without the corpus: ``task.json``
        and, for text, ``tokenizer/``."""
        out = Path(out)
        (out / TASK_FILE).write_text(json.dumps(self.metadata(), indent=2))
        if self.tokenizer is not None:
            self.tokenizer.save(out / TOKENIZER_DIR)

    @classmethod
    def from_metadata(cls, meta: dict, run_dir: Path) -> Task:
        """A data-less task from ``task.json`` (shapes, units and decoding; no token splits)."""
        return cls(
            spec=meta["spec"],
            num_classes=meta["num_classes"],
            seq_len=meta["seq_len"],
            valid_tokens=torch.zeros(0, meta["seq_len"], dtype=torch.long),
            image_shape=tuple(meta["image_shape"]) if meta.get("image_shape") else None,
            characters_per_token=meta.get("characters_per_token"),
            entropy_nats_per_token=meta.get("entropy_nats_per_token"),
        )

    @classmethod
    def from_source(cls, cfg, source) -> Task:
        raise NotImplementedError


def parse_infill_pattern(pattern: str, tokenizer, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``'The ____ sat'`` → tokens ``LongTensor[L]`` and a generate-mask ``BoolTensor[L]``: text pieces
    are tokenized and kept, each ``_`` is one generated token, positions past the pattern are generated."""
    import re

    tokens: list[int] = []
    generate: list[bool] = []
    for piece in re.split(r"(_+)", pattern):
        if not piece:
            continue
        if piece[0] == "_":
            tokens += [0] * len(piece)
            generate += [True] * len(piece)
        else:
            ids = tokenizer.encode(piece)
            tokens += ids
            generate += [False] * len(ids)
    if len(tokens) > num_tokens:
        raise ValueError(f"infill pattern is {len(tokens)} tokens long; the model generates {num_tokens}")
    pad = num_tokens - len(tokens)
    return (
        torch.tensor(tokens + [0] * pad, dtype=torch.long),
        torch.tensor(generate + [True] * pad, dtype=torch.bool),
    )


class TextTask(Task):
    """Tokenized text; reports bits per character beside bits per token."""

    kind = "text"

    def add_units(self, summary: dict) -> dict:
        if self.characters_per_token:
            summary["bits_per_char"] = summary["bits_per_token"] / self.characters_per_token
        return super().add_units(summary)

    def unit_label(self):
        return ("bits_per_char", "bits/char") if self.characters_per_token else None

    def decode(self, tokens: torch.Tensor) -> list[str]:
        if self.tokenizer is None:
            return super().decode(tokens)
        return [self.tokenizer.decode(row.tolist()) for row in tokens]

    def encode_prompt(self, text: str) -> torch.Tensor:
        """A text prompt → its tokens ``LongTensor[P]`` with ``1 ≤ P ≤ L``."""
        if self.tokenizer is None:
            raise ValueError("a text prompt needs a text run with a tokenizer")
        tokens = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        if tokens.numel() == 0 or tokens.numel() > self.seq_len:
            raise ValueError(f"the prompt must encode to 1..{self.seq_len} tokens, got {tokens.numel()}")
        return tokens

    def parse_infill(self, pattern: str) -> tuple[torch.Tensor, torch.Tensor]:
        """See :func:`parse_infill_pattern` (with this task's tokenizer and ``L``)."""
        if self.tokenizer is None:
            raise ValueError("an infill pattern needs a text run with a tokenizer")
        return parse_infill_pattern(pattern, self.tokenizer, self.seq_len)

    def _write(self, tokens, folder, stem, echo):
        if self.tokenizer is None:
            return super()._write(tokens, folder, stem, echo)
        texts = self.decode(tokens)
        p = folder / f"{stem}.txt"
        p.write_text("".join(f"=== sample {i} ===\n{t}\n" for i, t in enumerate(texts)))
        if echo:
            for i, t in enumerate(texts):
                print(f"--- sample {i} ---\n{t.strip()}")
        return [p]

    @classmethod
    def from_metadata(cls, meta, run_dir):
        task = super().from_metadata(meta, run_dir)
        if (Path(run_dir) / TOKENIZER_DIR).exists():
            from .data import load_tokenizer

            task.tokenizer = load_tokenizer(Path(run_dir) / TOKENIZER_DIR)
        return task

    @classmethod
    def from_source(cls, cfg, source):
        if cfg.tokenizer in ("none", ""):
            raise ValueError(f"text data {cfg.data!r} needs a tokenizer (byte, char, text8, gpt2, bpe:N)")
        prepared = source.load(tokenizer_spec=cfg.tokenizer, seq_len=cfg.seq_len, seed=0)
        train = prepared["train"]
        if cfg.max_train_tokens:
            train = train[: max(1, cfg.max_train_tokens // cfg.seq_len)]
        valid_stats = prepared.stats["valid"]
        cpt = valid_stats.characters / max(valid_stats.tokens, 1)
        return cls(
            spec=cfg.data,
            num_classes=prepared.vocab_size,
            seq_len=cfg.seq_len,
            train_tokens=train,
            valid_tokens=prepared["valid"],
            test_tokens=prepared.splits.get("test"),
            tokenizer=prepared.tokenizer,
            characters_per_token=cpt,
            info={"tokenizer": prepared.tokenizer.name, "split_mode": prepared.split_mode},
        )


class ImageTask(Task):
    """Images with ``num_classes`` intensity levels; reports bits per dimension; samples as a PNG grid."""

    kind = "image"
    default_architecture = "unet"
    token_sequences = False

    def add_units(self, summary: dict) -> dict:
        summary["bits_per_dim"] = summary["bits_per_token"]
        return super().add_units(summary)

    def unit_label(self):
        return ("bits_per_dim", "bits/dim")

    def images(self, tokens: torch.Tensor) -> np.ndarray:
        """``[N, L]`` tokens → ``uint``-valued array ``[N, ch, H, W]``."""
        return tokens.reshape(tokens.shape[0], *self.image_shape).numpy()

    def _write(self, tokens, folder, stem, echo):
        from .plotting import save_image_grid

        images = self.images(tokens)
        np.save(folder / f"{stem}.npy", images)
        return [
            folder / f"{stem}.npy",
            save_image_grid(images, folder / f"{stem}.png", levels=self.num_classes),
        ]

    @classmethod
    def from_source(cls, cfg, source):
        data = source.load()
        flat = {s: data[s].images.flatten(1).long() for s in data.splits}
        return cls(
            spec=cfg.data,
            num_classes=data.num_levels,
            seq_len=flat["train"].shape[1],
            train_tokens=flat["train"],
            valid_tokens=flat["valid"],
            test_tokens=flat.get("test"),
            image_shape=tuple(data.shape),
            info={"num_levels": data.num_levels},
        )


class ToyTask(Task):
    """A 2-D density over a ``size × size`` grid (two tokens); samples plotted beside the target."""

    kind = "toy"
    default_architecture = "mlp"
    token_sequences = False

    def _write(self, tokens, folder, stem, echo):
        from .plotting import save_toy_density

        png = save_toy_density(
            tokens.numpy(), self.info.get("density"), self.num_classes, folder / f"{stem}.png"
        )
        np.save(folder / f"{stem}.npy", tokens.numpy())
        return [png, folder / f"{stem}.npy"]

    @classmethod
    def from_metadata(cls, meta, run_dir):
        from .data import load_data

        task = super().from_metadata(meta, run_dir)
        task.info["density"] = load_data(meta["spec"]).load()
        return task

    @classmethod
    def from_source(cls, cfg, source):
        density = source.load()
        valid = density.sample(4096, torch.Generator().manual_seed(12345))
        size = density.pmf.shape[0]
        return cls(
            spec=cfg.data,
            num_classes=size,
            seq_len=2,
            valid_tokens=valid,
            sampler=lambda n, g: density.sample(n, g),
            entropy_nats_per_token=density.entropy() / 2,
            info={"toy_size": size, "density": density},
        )


class SyntheticTask(Task):
    """Sequences from a known source (Markov chain, HMM), with the exact entropy rate when computable."""

    kind = "synthetic"

    @classmethod
    def from_source(cls, cfg, source):
        chain = source.load()
        num_tokens = cfg.seq_len
        valid = chain.sample(512, num_tokens, torch.Generator().manual_seed(12345))
        num_classes = int(
            getattr(chain, "vocab_size", None) or getattr(chain, "num_states", None) or int(valid.max()) + 1
        )
        entropy = None
        if hasattr(chain, "sequence_entropy"):
            try:
                entropy = float(chain.sequence_entropy(num_tokens)) / num_tokens
            except (ValueError, RuntimeError):
                entropy = None
        return cls(
            spec=cfg.data,
            num_classes=num_classes,
            seq_len=num_tokens,
            valid_tokens=valid,
            sampler=lambda n, g: chain.sample(n, num_tokens, g),
            entropy_nats_per_token=entropy,
        )


class ShardsTask(TextTask):
    """Text streamed from a prepared shard folder (``shards:DIR``, written by ``mdm-prime data prepare
    SPEC --tokenizer T --out DIR``): an *infinite* task whose training windows are drawn by memory map
    from the trainer's generator (:meth:`mdm_prime.data.shards.ShardedTokens.sample_windows`, so exact
    resume holds), with fixed held-out validation / test windows, the tokenizer saved in the shard folder,
    and bits per character from the index's character and token counts of the valid split."""

    kind = "shards"

    def describe_size(self) -> str:
        info = self.info
        return (
            f"{self.spec}: windows of {self.seq_len} tokens drawn from {info.get('train_tokens', 0):,} "
            f"training tokens ({info.get('train_documents', 0):,} documents, {info.get('window_mode')} "
            f"windows), {self.valid_tokens.shape[0]:,} validation windows"
        )

    @classmethod
    def from_source(cls, cfg, source):
        """Raises ValueError when ``cfg.tokenizer`` names another tokenizer than the shards' own
        (``""`` / ``"none"`` mean: use the shards' tokenizer)."""
        from .data.shards import shards_task_kwargs

        shards = source.load()
        kwargs = shards_task_kwargs(shards, cfg.seq_len, spec=cfg.data, tokenizer_spec=cfg.tokenizer)
        if cfg.max_train_tokens:
            raise ValueError("max_train_tokens limits an in-memory corpus; shards:DIR draws windows instead")
        return cls(**kwargs)


def shards_tokenizer(spec: str) -> str | None:
    """The tokenizer spec a ``shards:DIR`` data spec was prepared with (``None`` for other specs), for
    command lines that fill in ``--tokenizer`` when it is not given. Raises like :func:`build_task` on a
    missing shard folder."""
    from .data import load_data

    if not isinstance(spec, str) or not spec.startswith("shards:"):
        return None
    source = load_data(spec)
    return source.load().index["tokenizer"]["spec"]


TASK_TYPES: dict[str, type[Task]] = {
    cls.kind: cls for cls in (TextTask, ImageTask, ToyTask, SyntheticTask, ShardsTask)
}


def _task_type(kind: str) -> type[Task]:
    if kind not in TASK_TYPES:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {sorted(TASK_TYPES)}")
    return TASK_TYPES[kind]


def build_task(cfg, dist_info=None) -> Task:
    """Load (and cache) the data named by ``cfg.data``. Raises before any work on a bad spec."""
    from .data import load_data

    source = load_data(cfg.data)
    return _task_type(source.kind).from_source(cfg, source)


def load_task(run_dir: str | Path) -> Task:
    """The data-less task of a run folder, from its ``task.json`` (and ``tokenizer/``)."""
    run_dir = Path(run_dir)
    path = run_dir / TASK_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; a run folder written by mdm-prime train holds it")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    return _task_type(meta.get("kind")).from_metadata(meta, run_dir)


def read_task_metadata(run_dir: str | Path) -> dict:
    """The raw ``task.json`` of a run folder."""
    return json.loads((Path(run_dir) / TASK_FILE).read_text())
