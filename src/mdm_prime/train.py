"""The training loop: one class, :class:`Trainer`, whose :meth:`~Trainer.run` reads top to bottom:
data → noise → ``family.loss`` → optimizer step → EMA → log → validation, previews, checkpoint.
:func:`train` builds and runs it.

Every model goes through its family (:mod:`mdm_prime.families`): the network comes from
``family.build_model``, the loss from ``family.loss`` (for diffusion: ``objectives.diffusion_loss``,
the function users call, with the trainer's noise), previews from ``family.generate``. Validation
reports the **valid bound** (``docs/method.md §5``) with EMA weights, printed by
:func:`mdm_prime.evaluate.format_eval` / :func:`~mdm_prime.evaluate.format_final`.

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
    OUT/.mdm-prime-run      marker + lock (see mdm_prime.run_folder)   OUT/data_fingerprint.json

Safety (``docs/reliability.md``): the folder is claimed with a marker and an OS lock, and ``--resume``
checks settings and data (:mod:`mdm_prime.run_folder`); SIGINT/SIGTERM (:mod:`mdm_prime.signals`) finish
the step, save a checkpoint and raise :class:`~mdm_prime.run_folder.RunInterrupted`; the checkpoint
directory is replaced atomically (:func:`mdm_prime.checkpoint.replace_pretrained`: every file,
``trainer_state.pt`` included, hashed in ``config.json`` and fsynced, a failed save keeps the previous
checkpoint); a step whose loss or gradient is not finite is skipped (no optimizer or EMA update) and
counted, and ``max_bad_steps`` of them in a row stop the run.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import signal
import time
from pathlib import Path

import torch

from . import distributed as D
from .checkpoint import TRAINER_STATE as STATE_FILE
from .checkpoint import (
    current_checkpoint,
    load_pretrained,
    read_config,
    read_trainer_state,
    replace_pretrained,
)
from .configs import TrainConfig, check_device
from .data.shards import to_device
from .evaluate import evaluate_model, format_eval, format_final
from .families import Family, Noise, SampleRequest, get_family
from .models.base import make_optimizer, maybe_compile
from .run_folder import (
    FINGERPRINT_FILE,
    RESUME_MAY_CHANGE,
    RunError,
    RunFolder,
    RunInterrupted,
    check_resume,
    data_fingerprint,
)
from .schedules import get_schedule
from .signals import StopSignals, interrupted
from .tasks import Task, build_task

__all__ = [
    "train",
    "run_trainer",
    "Trainer",
    "RunError",
    "RunInterrupted",
    "format_final",
    "RESUME_MAY_CHANGE",
]


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
    """Holds the run's state (model, EMA, optimizer, random generator, data position, counters);
    :meth:`run` trains to ``cfg.max_steps``."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | os.PathLike,
        *,
        resume: bool = False,
        show_progress: bool = True,
        restart: bool = False,
        allow_data_change: bool = False,
    ) -> None:
        self.cfg = cfg.validate()
        check_device(cfg.device)
        self.out = Path(out_dir)
        self.folder = RunFolder(self.out, resume=resume, restart=restart)
        mode = (
            self.folder.check()
        )  # read-only: refuses files, foreign folders, runs without --resume/--restart
        self.dist = D.init_distributed(cfg.device)
        try:
            self._setup(cfg, mode, show_progress, restart, allow_data_change)
        except BaseException:
            self.folder.release()
            raise

    def _setup(
        self, cfg: TrainConfig, mode: str, show_progress: bool, restart: bool, allow_data_change: bool
    ) -> None:
        self.show_progress = show_progress and self.dist.is_main
        if mode != "new" and self.dist.is_main:
            self.folder.acquire()  # an existing run: lock it before any work
        micro = cfg.batch_size // cfg.grad_accum
        if micro % self.dist.world_size:
            raise ValueError(
                f"batch_size / grad_accum = {micro} must be divisible by the number of processes "
                f"({self.dist.world_size})"
            )
        torch.manual_seed(cfg.seed)
        self.family: Family = get_family(cfg.family)
        self.task: Task = build_task(cfg, self.dist)
        valid = getattr(self.task, "valid_tokens", None)
        if valid is not None and valid.shape[0] == 0:
            raise ValueError(
                f"data {cfg.data!r} gives an empty validation split (no sequence of seq_len={cfg.seq_len} tokens); "
                f"use a larger corpus or a smaller --seq-len"
            )
        saved = self._saved_permutation() if mode == "resume" else None
        kw = {"permutation": saved} if saved is not None else {}  # a resumed run keeps its saved code
        self.model = self.family.build_model(cfg, self.task, **kw).to(self.dist.device)
        self.schedule = get_schedule(cfg.schedule, length=cfg.subtokens)  # per digit: docs/method.md §2b
        self.ema = EMA(self.model, cfg.ema_decay)
        self.optimizer = make_optimizer(self.model, cfg.lr, tuple(cfg.betas), cfg.weight_decay)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = self.epoch = self.position = self.tokens_seen = 0
        self.elapsed = 0.0
        self.skipped_steps = 0  # steps skipped for a non-finite loss or gradient (all time)
        self.bad_in_a_row = 0  # > 0 exactly when the last step was skipped
        fingerprint = data_fingerprint(cfg, self.task)
        if mode != "new":
            config_changed = check_resume(self.out, self.cfg, fingerprint, allow_data_change)
            if mode == "resume":
                self._load_checkpoint()
            if config_changed and self.dist.is_main:  # written only once everything loaded
                (self.out / "train_config.json").write_text(self.cfg.to_json())
        if self.dist.is_main:
            if mode == "new":
                self.folder.acquire()  # FileExistsError if another process claimed the folder meanwhile
                if restart:
                    self.folder.clear_outputs()
                (self.out / "train_config.json").write_text(cfg.to_json())
                self.task.save(self.out)
            if mode == "new" or allow_data_change or not (self.out / FINGERPRINT_FILE).exists():
                (self.out / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=2, sort_keys=True))
        D.barrier(self.dist)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.train_model = maybe_compile(self.model, cfg.compile)

    # ----------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Train to ``cfg.max_steps``, save, then the final evaluation (EMA weights), loss plot and
        previews; returns the final evaluation row."""
        cfg, out = self.cfg, self.out
        from tqdm.auto import tqdm

        if self.dist.is_main:
            print(self.describe(), flush=True)
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not self.show_progress,
            dynamic_ncols=True,
            unit="step",
        )
        window_tokens, window_start = 0, time.perf_counter()  # for tokens/s since the last log row
        last_eval: dict = {}
        with StopSignals() as signals:
            while self.step < cfg.max_steps:
                t0 = time.perf_counter()
                loss = self.train_step()  # data → noise → family.loss → step → EMA
                self.elapsed += time.perf_counter() - t0
                window_tokens += cfg.batch_size * self.task.seq_len
                if self.bad_in_a_row:  # the step was skipped: no update
                    self.log(
                        {
                            "step": self.step,
                            "skipped": "non-finite loss or gradient",
                            "loss": None,
                            "skipped_steps": self.skipped_steps,
                            "in_a_row": self.bad_in_a_row,
                        }
                    )
                    if self.bad_in_a_row >= cfg.max_bad_steps:
                        raise RunError(
                            f"{self.bad_in_a_row} steps in a row had a non-finite loss or gradient (last at step "
                            f"{self.step}); each was skipped, so the weights are finite and the last checkpoint "
                            f"is kept; lower lr or check the data (max_bad_steps={cfg.max_bad_steps})"
                        )
                elif self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    now = time.perf_counter()
                    tps = window_tokens / max(now - window_start, 1e-9)
                    window_tokens, window_start = 0, now
                    self.log(
                        {
                            "step": self.step,
                            "loss": loss,
                            "objective": self.family.objective_label(cfg.objective),
                            "lr": lr_at(self.step - 1, cfg),
                            "skipped_steps": self.skipped_steps,
                            "tokens_per_s": tps,
                            "tokens_seen": self.tokens_seen,
                            "elapsed_s": self.elapsed,
                        }
                    )
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
                bar.update(1)
                signum = signals.agreed(self.dist)  # SIGINT/SIGTERM: the step is done; save and stop
                if signum:
                    self.save_checkpoint()
                    self.log({"step": self.step, "stopped": signal.Signals(signum).name})
                    raise interrupted(
                        signum,
                        f"after step {self.step}; checkpoint saved in {out / 'checkpoint'}; "
                        f"continue with: mdm-prime train --out {out} --resume",
                    )
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                    if self.dist.is_main:
                        last_eval = self.evaluate()
                        self.log(last_eval)
                        bar.write(format_eval(last_eval))
                    D.barrier(self.dist)
                if cfg.sample_every and self.step % cfg.sample_every == 0 and self.dist.is_main:
                    self.preview_samples()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
            bar.close()
            self.save_checkpoint()
            # a signal from here on cuts the final evaluation, plot and previews short (checkpoint complete)
            if self.dist.is_main:
                cut_short = (
                    f"after the last step ({self.step}); checkpoint saved in {out / 'checkpoint'}; "
                    f"the final evaluation was cut short: mdm-prime eval {out}"
                )
                signals.raise_if_caught(cut_short)
                last_eval = self.evaluate(final=True)
                self.log(last_eval)
                from .plotting import plot_metrics

                signals.raise_if_caught(cut_short)
                plot_metrics(out / "metrics.jsonl", out / "loss.png")
                signals.raise_if_caught(cut_short)
                self.preview_samples()
        D.barrier(self.dist)
        return last_eval

    # ----------------------------------------------------------------- one step
    def _next_global_batch(self) -> torch.Tensor:
        """Token ids ``[batch_size, L]`` of the next global batch (same on every process); epoch ``e``
        reads the training items in a permutation seeded by ``(seed, e)``."""
        if self.task.infinite:
            return self.task.sample_train(self.cfg.batch_size, self.generator)
        idx = []
        need = self.cfg.batch_size
        while need:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.task.num_train, generator=g)
            take = order[self.position : self.position + need]
            idx.append(take)
            need -= take.numel()
            self.position += take.numel()
            if self.position >= order.numel():
                self.epoch, self.position = self.epoch + 1, 0
        return self.task.train_tokens[torch.cat(idx)]

    def next_noise(self, batch_size: int) -> Noise:
        """The noise of the next step for the whole global batch (times, then mask uniforms), drawn
        from the run's generator on the CPU, identically on every process."""
        return self.family.draw_noise(
            batch_size, self.task.seq_len, self.cfg.subtokens, eps=self.cfg.time_eps, generator=self.generator
        )

    def loss(self, x0: torch.Tensor, noise: Noise) -> torch.Tensor:
        """Per-sequence loss in nats for a micro-batch: ``family.loss`` (the library's objective)."""
        cfg = self.cfg
        return self.family.loss(
            self.train_model,
            x0,
            noise,
            objective=cfg.objective,
            schedule=self.schedule,
            weighting=cfg.loss_weighting,
            mix=cfg.loss_mix,
        )

    def train_step(self) -> float:
        """One optimizer step on the next global batch (gradient accumulation over ``grad_accum``
        micro-batches, each process its slice); returns the mean loss in nats per token. A step with a
        non-finite loss or gradient is skipped (no optimizer or EMA update) and counted."""
        cfg, info = self.cfg, self.dist
        x_global = self._next_global_batch()
        B, L = x_global.shape
        noise_global = self.next_noise(B)  # for the whole global batch, identical on every process
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        self.train_model.train()
        micro = B // cfg.grad_accum
        per_rank = micro // info.world_size
        total = torch.zeros((), device=info.device, dtype=torch.float32)
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
        mean_loss = float(D.all_reduce_mean(total, info)) * info.world_size / (B * L)
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters() if p.grad is not None]
            )
        # gradients are all-reduced, so every process takes the same decision
        if math.isfinite(mean_loss) and bool(torch.isfinite(norm)):
            self.optimizer.step()
            self.ema.update(self.model, self.step)
            self.bad_in_a_row = 0
        else:  # no optimizer or EMA update: the weights stay finite
            self.skipped_steps += 1
            self.bad_in_a_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += B * L
        return mean_loss

    # ----------------------------------------------------------------- checkpoint
    def save_checkpoint(self) -> None:
        """Replace ``checkpoint/`` atomically with the model, its EMA and ``trainer_state.pt`` (step,
        data position, optimizer, random states): :func:`~mdm_prime.checkpoint.replace_pretrained`."""
        if self.dist.is_main:
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "tokens_seen": self.tokens_seen,
                "elapsed": self.elapsed,
                "skipped_steps": self.skipped_steps,
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "config": self.cfg.to_dict(),
            }
            buffer = io.BytesIO()
            torch.save(state, buffer)
            final = self.out / "checkpoint"
            try:
                replace_pretrained(
                    self.model,
                    final,
                    ema_state_dict=self.ema.model.state_dict(),
                    extra={"train_step": self.step},
                    extra_files={STATE_FILE: buffer.getvalue()},
                )
            except OSError as err:
                kept = (
                    "the previous checkpoint is kept" if final.exists() else "there is no earlier checkpoint"
                )
                raise RunError(
                    f"could not save the checkpoint of step {self.step} in {final}: "
                    f"{err.strerror or err} ({err.__class__.__name__}); {kept}, partial files removed"
                ) from err
        D.barrier(self.dist)

    def _saved_permutation(self) -> list[int] | None:
        """The sub-tokenizer code (``docs/method.md §1b``) saved in the run's checkpoint, so ``--resume``
        never recomputes it (``None``: no checkpoint or no permutation)."""
        try:
            ckpt = current_checkpoint(self.out / "checkpoint")
            sub = read_config(ckpt)["model"].get("subtokenizer") or {}
        except (FileNotFoundError, KeyError, TypeError):
            return None
        return sub.get("permutation")

    def _load_checkpoint(self) -> None:
        ckpt = current_checkpoint(self.out / "checkpoint")  # checkpoint.old: stopped between two renames
        state = read_trainer_state(ckpt)
        self.model.load_state_dict(load_pretrained(ckpt, use_ema=False).state_dict())
        self.ema.model.load_state_dict(load_pretrained(ckpt, use_ema=True).state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.tokens_seen, self.elapsed = state["tokens_seen"], state["elapsed"]
        self.skipped_steps = int(state.get("skipped_steps", 0))

    # ----------------------------------------------------------------- logging, validation, previews
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
        request = SampleRequest(
            num=num,
            num_tokens=self.task.seq_len,
            steps=cfg.sample_steps or self.task.seq_len,
            seed=cfg.seed,
            temperature=cfg.sample_temperature,
            top_p=cfg.sample_top_p,
        )
        tokens, stats = self.family.generate(self.ema.model, request)
        stats.update(temperature=cfg.sample_temperature, top_p=cfg.sample_top_p)
        return self.task.write_samples(
            tokens, self.out / "samples", f"step_{self.step}", stats=stats, echo=True
        )

    def describe(self) -> str:
        """What is about to run: family, parameters, device, precision, data size."""
        from .models.base import uses_bf16

        precision = getattr(self.model, "precision", "fp32")
        dev = self.dist.device
        actual = "bf16 autocast" if uses_bf16(precision, dev) else "fp32"
        procs = f" × {self.dist.world_size} processes" if self.dist.world_size > 1 else ""
        return (
            f"{self.family.name} (ℓ = {self.cfg.subtokens}, objective {self.family.objective_label(self.cfg.objective)}), "
            f"{self.model.num_parameters():,} parameters, device {dev}{procs}, precision {precision} → {actual}\n"
            f"data {self.task.describe_size()}"
        )


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    show_progress: bool = True,
    restart: bool = False,
    allow_data_change: bool = False,
) -> dict:
    """Train (or resume) a run in ``out_dir``; returns the final validation metrics (valid bound).

    ``restart`` clears a run's own outputs and starts again; ``allow_data_change`` lets ``resume``
    continue on data whose fingerprint changed. Raises :class:`RunInterrupted` after SIGINT/SIGTERM
    (checkpoint saved) and :class:`RunError` when a save fails or too many steps are non-finite."""
    trainer = Trainer(
        cfg,
        out_dir,
        resume=resume,
        show_progress=show_progress,
        restart=restart,
        allow_data_change=allow_data_change,
    )
    return run_trainer(trainer)


def run_trainer(trainer: Trainer) -> dict:
    """Run ``trainer`` to its last step, print the final evaluation line (rank 0) and return its row;
    the run folder's lock and the process group are released whatever happens."""
    try:
        result = trainer.run()
        if trainer.dist.is_main:
            print(format_final(result))
        return result
    finally:
        trainer.folder.release()
        D.shutdown(trainer.dist)
