"""The training loop: one class, :class:`Trainer`, readable top to bottom; :func:`train` runs it.

Every model goes through its family (:mod:`mdm_prime.families`): the network comes from
``family.build_model``, the loss from ``family.loss`` (for diffusion: ``objectives.diffusion_loss``,
the function users call, with the trainer's noise), previews from ``family.generate``. Validation
reports the **valid bound** (``docs/method.md §5``) with EMA weights.

Determinism and resumption: every random draw of the loop (data order, times, masks) comes from one
CPU ``torch.Generator`` whose state is checkpointed with the model, optimizer and EMA, and the data
order of epoch ``e`` is a permutation seeded by ``(seed, e)``. The noise for a step is drawn for the
whole *global* batch and each process takes its slice, so a ``torchrun`` run with N processes sees
exactly the batches and masks of a single process with the same global batch.

Run folder layout::

    OUT/train_config.json   resolved config            OUT/metrics.jsonl   one JSON row per log/eval
    OUT/task.json           data metadata              OUT/tokenizer/      text runs
    OUT/checkpoint/         model (save_pretrained) + trainer_state.pt, replaced atomically
    OUT/loss.png            training loss and validation bound   OUT/samples/step_N.txt|png
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

from . import distributed as D
from .models.base import make_optimizer, maybe_compile
from .checkpoint import load_pretrained, save_pretrained
from .configs import TrainConfig
from .evaluate import evaluate_model
from .families import Family, Noise, get_family
from .schedules import get_schedule
from .data.shards import to_device
from .tasks import Task, build_task

__all__ = ["train", "Trainer"]

STATE_FILE = "trainer_state.pt"
RESUME_MAY_CHANGE = frozenset({
    "max_steps", "eval_every", "eval_sequences", "eval_num_times", "final_eval_sequences", "final_eval_num_times",
    "sample_every", "num_preview_samples", "sample_steps", "log_every", "checkpoint_every", "device", "compile",
})
"""Settings that do not change what is trained, so a resumed run may set them anew (a longer
``max_steps`` continues the run; with a cosine schedule the learning-rate curve is stretched from
there on)."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``cfg.lr``, then constant or cosine decay to ``min_lr_ratio · lr``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


class EMA:
    """Exponential moving average of parameters, kept in a frozen copy of the model."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """Warmed-up decay ``min(decay, (1 + step) / (10 + step))``, so that short runs are not
        dominated by the initial weights."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = self.decay_at(step)
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


class Trainer:
    """Holds the run's state; :meth:`run` trains to ``cfg.max_steps``."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                 show_progress: bool = True) -> None:
        self.cfg = cfg.validate()
        self.out = Path(out_dir)
        self.dist = D.init_distributed(cfg.device)
        self.show_progress = show_progress and self.dist.is_main
        if self.out.exists() and any(self.out.iterdir()) and not resume:
            if (self.out / "checkpoint").exists() or (self.out / "train_config.json").exists():
                raise FileExistsError(
                    f"run folder {self.out} already holds a run; pass --resume to continue it "
                    f"or choose another --out"
                )
        micro = cfg.batch_size // cfg.grad_accum
        if micro % self.dist.world_size:
            raise ValueError(
                f"batch_size / grad_accum = {micro} must be divisible by the number of processes "
                f"({self.dist.world_size})"
            )
        torch.manual_seed(cfg.seed)
        self.family: Family = get_family(cfg.family)
        self.task: Task = build_task(cfg, self.dist)
        self.model = self.family.build_model(cfg, self.task).to(self.dist.device)
        self.schedule = get_schedule(cfg.schedule)
        self.ema = EMA(self.model, cfg.ema_decay)
        self.optimizer = make_optimizer(self.model, cfg.lr, tuple(cfg.betas), cfg.weight_decay)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.tokens_seen = 0
        self.elapsed = 0.0
        if resume:
            self._load_checkpoint()
        elif self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(cfg.to_json())
            self.task.save_assets(self.out)
        D.barrier(self.dist)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.train_model = maybe_compile(self.model, cfg.compile)

    # ----------------------------------------------------------------- data
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(self.task.num_train, generator=g)

    def _next_global_batch(self) -> torch.Tensor:
        """Token ids ``[batch_size, L]`` of the next global batch (same on every process)."""
        if self.task.infinite:
            return self.task.sample_train(self.cfg.batch_size, self.generator)
        idx = []
        need = self.cfg.batch_size
        while need:
            order = self._epoch_order(self.epoch)
            take = order[self.position : self.position + need]
            idx.append(take)
            need -= take.numel()
            self.position += take.numel()
            if self.position >= order.numel():
                self.epoch, self.position = self.epoch + 1, 0
        return self.task.train_tokens[torch.cat(idx)]

    # ----------------------------------------------------------------- step
    def next_noise(self, batch_size: int) -> Noise:
        """The noise of the next step for the whole global batch (times, then mask uniforms), drawn
        from the run's generator on the CPU, identically on every process."""
        return self.family.draw_noise(batch_size, self.task.seq_len, self.cfg.subtokens, eps=self.cfg.time_eps,
                                      generator=self.generator)

    def loss(self, x0: torch.Tensor, noise: Noise) -> torch.Tensor:
        """Per-sequence loss in nats for a micro-batch: ``family.loss`` (the library's objective)."""
        return self.family.loss(self.train_model, x0, noise, objective=self.cfg.objective, schedule=self.schedule)

    def train_step(self) -> float:
        """One optimizer step on the next global batch; returns the mean loss in nats per token."""
        cfg, info = self.cfg, self.dist
        x_global = self._next_global_batch()
        B, L = x_global.shape
        noise_global = self.next_noise(B)  # for the whole global batch, identical on every process
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        self.train_model.train()
        micro = B // cfg.grad_accum
        per_rank = micro // info.world_size
        total = torch.zeros((), device=info.device)
        for m in range(cfg.grad_accum):
            lo = m * micro + info.rank * per_rank
            sl = slice(lo, lo + per_rank)
            x0, t, u = to_device((x_global[sl], noise_global[sl].t, noise_global[sl].uniforms), info.device)
            per_seq = self.loss(x0, Noise(t, u))
            loss = per_seq.sum() * info.world_size / (B * L)
            sync = m == cfg.grad_accum - 1 or not info.enabled
            ctx = self.train_model.no_sync() if (info.enabled and not sync) else contextlib.nullcontext()
            with ctx:
                loss.backward()
            total += per_seq.detach().sum()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model, self.step)
        self.step += 1
        self.tokens_seen += B * L
        return float(D.all_reduce_mean(total, info)) * info.world_size / (B * L)

    # ----------------------------------------------------------------- checkpoint
    def save_checkpoint(self) -> None:
        """Write ``checkpoint/`` atomically: build ``checkpoint.tmp/``, then swap directories."""
        if not self.dist.is_main:
            D.barrier(self.dist)
            return
        final, tmp, old = (self.out / n for n in ("checkpoint", "checkpoint.tmp", "checkpoint.old"))
        shutil.rmtree(tmp, ignore_errors=True)
        save_pretrained(self.model, tmp, ema_state_dict=self.ema.model.state_dict(),
                        extra={"train_step": self.step})
        state = {
            "step": self.step, "epoch": self.epoch, "position": self.position,
            "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(), "config": self.cfg.to_dict(),
        }
        torch.save(state, tmp / STATE_FILE)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        D.barrier(self.dist)

    def _load_checkpoint(self) -> None:
        ckpt = self.out / "checkpoint"
        if not ckpt.exists() and (self.out / "checkpoint.old").exists():
            ckpt = self.out / "checkpoint.old"  # crashed between the two renames
        if not (ckpt / STATE_FILE).exists():
            raise FileNotFoundError(f"--resume: no checkpoint with {STATE_FILE} under {self.out}")
        saved_cfg = json.loads((self.out / "train_config.json").read_text())
        now = self.cfg.to_dict()
        diff = sorted(k for k in set(saved_cfg) | set(now) if saved_cfg.get(k) != now.get(k))
        blocking = [k for k in diff if k not in RESUME_MAY_CHANGE]
        if blocking:
            raise ValueError(
                f"--resume: settings {blocking} differ from the saved run in {self.out}; resume with the same "
                f"settings (only {sorted(RESUME_MAY_CHANGE)} may change)"
            )
        if diff and self.dist.is_main:
            (self.out / "train_config.json").write_text(self.cfg.to_json())
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        self.model.load_state_dict(load_pretrained(ckpt, use_ema=False).state_dict())
        self.ema.model.load_state_dict(load_pretrained(ckpt, use_ema=True).state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.tokens_seen, self.elapsed = state["tokens_seen"], state["elapsed"]

    # ----------------------------------------------------------------- logging
    def log(self, row: dict) -> None:
        if self.dist.is_main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def evaluate(self, final: bool = False) -> dict:
        cfg = self.cfg
        n = cfg.final_eval_sequences if final else cfg.eval_sequences
        k = cfg.final_eval_num_times if final else cfg.eval_num_times
        result = evaluate_model(self.ema.model, self.task, num_sequences=n, num_times=k, seed=cfg.seed)
        result.update(step=self.step, split="valid", final=final)
        return result

    def preview_samples(self, num: int | None = None) -> list:
        """A few samples of the EMA model (the family's ``generate``, the config's sampling settings),
        written to ``OUT/samples/step_<N>.*`` and echoed."""
        cfg = self.cfg
        num = cfg.num_preview_samples if num is None else num
        if num <= 0:
            return []
        tokens, stats = self.family.generate(self.ema.model, num=num, num_tokens=self.task.seq_len,
                                             steps=cfg.sample_steps or self.task.seq_len, seed=cfg.seed,
                                             temperature=cfg.sample_temperature, top_p=cfg.sample_top_p)
        stats.update(temperature=cfg.sample_temperature, top_p=cfg.sample_top_p)
        return self.task.write_samples(tokens, self.out / "samples", f"step_{self.step}", stats=stats, echo=True)

    def describe(self) -> str:
        """What is about to run: family, parameters, device, precision, data size."""
        from .models.base import uses_bf16

        precision = getattr(self.model, "precision", "fp32")
        dev = self.dist.device
        actual = "bf16 autocast" if uses_bf16(precision, dev) else "fp32"
        procs = f" × {self.dist.world_size} processes" if self.dist.world_size > 1 else ""
        return (f"{self.family.name} (ℓ = {self.cfg.subtokens}, objective {self.family.objective_label(self.cfg.objective)}), "
                f"{self.model.num_parameters():,} parameters, device {dev}{procs}, precision {precision} → {actual}\n"
                f"data {self.task.describe_size()}")

    # ----------------------------------------------------------------- loop
    def run(self) -> dict:
        cfg = self.cfg
        from tqdm.auto import tqdm

        if self.dist.is_main:
            print(self.describe(), flush=True)

        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not self.show_progress,
                   dynamic_ncols=True, unit="step")
        window_tokens, window_start = 0, time.perf_counter()
        last_eval: dict = {}
        while self.step < cfg.max_steps:
            t0 = time.perf_counter()
            loss = self.train_step()
            self.elapsed += time.perf_counter() - t0
            window_tokens += cfg.batch_size * self.task.seq_len
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {self.step}; lower lr or check the data")
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_start, 1e-9)
                window_tokens, window_start = 0, now
                self.log({"step": self.step, "loss": loss, "objective": self.family.objective_label(cfg.objective),
                          "lr": lr_at(self.step - 1, cfg),
                          "tokens_per_s": tps, "tokens_seen": self.tokens_seen, "elapsed_s": self.elapsed})
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
            bar.update(1)
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                if self.dist.is_main:
                    last_eval = self.evaluate()
                    self.log(last_eval)
                    bar.write(_format_eval(last_eval))
                D.barrier(self.dist)
            if cfg.sample_every and self.step % cfg.sample_every == 0 and self.dist.is_main:
                self.preview_samples()
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        self.save_checkpoint()
        if self.dist.is_main:
            last_eval = self.evaluate(final=True)
            self.log(last_eval)
            from .plotting import plot_metrics

            plot_metrics(self.out / "metrics.jsonl", self.out / "loss.png")
            self.preview_samples()
        D.barrier(self.dist)
        return last_eval


def _unit(r: dict, scale: float = 1.0) -> tuple[float, str]:
    """The task's own unit of ``r`` (bits/char, bits/dim, else bits/token) and its label."""
    for key, label in (("bits_per_char", "bits/char"), ("bits_per_dim", "bits/dim"), ("bits_per_token", "bits/token")):
        if key in r:
            return r[key], label
    raise KeyError("bits_per_token")


def _format_numbers(r: dict) -> str:
    exact = get_family(r.get("family", "prime")).exact_likelihood
    name = "exact NLL" if exact else "NLL upper bound (valid)"
    value, label = _unit(r)
    se = r["stderr_nats_per_token"] * value / r["nelbo_nats_per_token"] if r["nelbo_nats_per_token"] else 0.0
    text = f"{name} {r['nelbo_nats_per_token']:.4f} nats/token = {value:.4f} {label} ± {se:.4f}"
    if "data_entropy_nats_per_token" in r:
        text += f", data entropy {r['data_entropy_nats_per_token']:.4f} nats/token"
    if "prime_objective_nats_per_token" in r:
        text += f" (training objective L_prime {r['prime_objective_nats_per_token']:.4f} nats/token, not a bound)"
    return text


def _format_eval(r: dict) -> str:
    """One line for a validation during training."""
    return f"step {r['step']}: {_format_numbers(r)}"


def format_final(r: dict) -> str:
    """The run's last line: what was evaluated, how, and the numbers."""
    exact = get_family(r.get("family", "prime")).exact_likelihood
    draws = "exact likelihood" if exact else f"{r['num_times']} draws"
    return (f"final evaluation, {r['split']} split, {r['num_sequences']} sequences, {draws}, EMA weights: "
            f"{_format_numbers(r)}")


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, show_progress: bool = True) -> dict:
    """Train (or resume) a run in ``out_dir``; returns the final validation metrics (valid bound)."""
    trainer = Trainer(cfg, out_dir, resume=resume, show_progress=show_progress)
    try:
        result = trainer.run()
        if trainer.dist.is_main:
            print(format_final(result))
        return result
    finally:
        D.shutdown(trainer.dist)
