"""Model families: the one place that knows how a kind of model is built, trained, scored and sampled.

:data:`FAMILIES` maps a name to a family object; the trainer, the evaluator and the command line go
through it and never branch on the name. ``prime`` and ``mdm`` are the same :class:`DiffusionFamily`
(ℓ sub-tokens, ℓ = 1 for MDM; ``docs/method.md §1–6``); ``ar`` is the autoregressive baseline
(``docs/method.md §7``). Adding a family means adding a class and a row here (and its test).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from .validation import check_int

__all__ = [
    "Family",
    "DiffusionFamily",
    "AutoregressiveFamily",
    "FAMILIES",
    "Noise",
    "SampleRequest",
    "get_family",
    "family_of",
]


@dataclass
class Noise:
    """Noise of one training step drawn in advance: times ``FloatTensor[B]`` and mask uniforms
    ``FloatTensor[B, L·ℓ]`` in ``[0, 1)``. Slicing (``noise[a:b]``) takes a part of the batch."""

    t: torch.Tensor
    uniforms: torch.Tensor

    def __getitem__(self, index) -> Noise:
        return Noise(self.t[index], self.uniforms[index])

    def to(self, device) -> Noise:
        return Noise(self.t.to(device), self.uniforms.to(device))


@dataclass(frozen=True)
class SampleRequest:
    """What to sample, for :meth:`Family.generate` (the app's one sampling request).

    ``num`` samples of ``num_tokens`` tokens with ``steps`` sampler steps (``None``: ``T = L``), seeded
    ``seed``; ``temperature``, ``top_p``, ``method`` (a reveal rule of :mod:`mdm_prime.sampling`),
    ``cache``, ``corrector_scale`` and ``grid`` as in :func:`mdm_prime.sample`. Conditioning, at most
    one: ``prefix`` ``LongTensor[num, P]`` tokens to continue; ``infill`` ``(tokens LongTensor[L],
    generate BoolTensor[L])``; ``keep_digits`` ``(tokens LongTensor[num, L], digit indices)``. With
    ``batch_size``, unconditional samples are drawn in chunks of that size, chunk ``i`` seeded
    ``seed + i``. With ``record``, the stats also hold the trajectory (for animations). ``progress``: a
    progress bar on stderr (steps, network calls, ETA) while a diffusion model samples."""

    num: int
    num_tokens: int
    steps: int | None = None
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    method: str = "joint"
    cache: bool = True
    corrector_scale: float = 0.0
    grid: str = "uniform"
    prefix: torch.Tensor | None = None
    infill: tuple[torch.Tensor, torch.Tensor] | None = None
    keep_digits: tuple[torch.Tensor, list[int]] | None = None
    batch_size: int | None = None
    record: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        given = [n for n in ("prefix", "infill", "keep_digits") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of prefix, infill and keep_digits; got {' and '.join(given)}")

    @property
    def conditioned(self) -> bool:
        return self.prefix is not None or self.infill is not None or self.keep_digits is not None


class Family:
    """What every family provides. Models are the networks of :mod:`mdm_prime.models`; ``task`` is a
    :class:`mdm_prime.tasks.Task`; ``cfg`` a :class:`mdm_prime.configs.TrainConfig`."""

    name: str = ""
    description: str = ""
    fixed_subtokens: int | None = None
    """ℓ when the family fixes it (whole tokens: 1), else ``None`` (any ℓ ≥ 1)."""
    exact_likelihood: bool = False
    """``True``: :meth:`score` is the exact NLL; ``False``: the valid bound ``L_valid`` (a Monte Carlo
    estimate with its standard error)."""
    supports_infill: bool = False

    def num_digits(self, num_tokens: int, subtokens: int) -> int:
        """Mask uniforms per sequence in :meth:`draw_noise` (``L·ℓ``)."""
        return num_tokens * subtokens

    def draw_noise(
        self, batch_size: int, num_tokens: int, subtokens: int, *, eps: float, generator: torch.Generator
    ) -> Noise:
        """The trainer's noise for a global batch, drawn on the CPU from ``generator`` (same draws for
        every family, so the random stream does not depend on the family)."""
        from .process import training_noise

        t, u = training_noise(
            batch_size, self.num_digits(num_tokens, subtokens), eps=eps, generator=generator
        )
        return Noise(t, u)

    def objective_label(self, objective: str) -> str:
        """What the training loss is, for logs."""
        return objective

    def build_model(self, cfg, task):
        raise NotImplementedError

    def loss(
        self,
        model,
        x0: torch.Tensor,
        noise: Noise,
        *,
        objective: str = "prime",
        schedule=None,
        weighting: str = "elbo",
        mix: float = 0.5,
    ) -> torch.Tensor:
        """Per-sequence training loss ``FloatTensor[B]`` for clean tokens ``x0: LongTensor[B, L]`` and
        the noise drawn in advance (nats per sequence; per masked digit / token for ``unweighted``)."""
        raise NotImplementedError

    def score(
        self,
        model,
        tokens: torch.Tensor,
        *,
        num_times: int = 32,
        seed: int = 0,
        batch_size: int | None = None,
        max_sequences: int | None = None,
        max_tokens: int | None = None,
        progress: bool = False,
    ) -> dict:
        """Likelihood of ``tokens: LongTensor[N, L]`` per token (nats; the app's only scoring entry
        point: training validations, the final evaluation and ``mdm-prime eval``): a dict with
        ``nelbo_nats_per_token``, ``stderr_nats_per_token``, ``bits_per_token``, ``perplexity``,
        ``num_times``, ``num_sequences``, ``num_tokens``, ``tokens_per_sequence``, ``estimator``,
        ``stderr_kind`` and ``family``.

        ``batch_size``: rows per network call (default: :func:`mdm_prime.scoring.auto_batch_size`; it
        never changes the numbers). ``max_sequences`` / ``max_tokens``: score only the first whole
        sequences within that budget. ``progress``: a progress bar on stderr."""
        raise NotImplementedError

    @staticmethod
    def _budget(tokens: torch.Tensor, max_sequences: int | None, max_tokens: int | None) -> torch.Tensor:
        """The first whole sequences of ``tokens`` within the budget (ValueError below one sequence)."""
        n, L = tokens.shape
        for name, value in (("max_sequences", max_sequences), ("max_tokens", max_tokens)):
            check_int(name, value, low=1, allow_none=True, note=" (or None)")
        if max_sequences is not None:
            n = min(n, max_sequences)
        if max_tokens is not None:
            n = min(n, max_tokens // L)
            if n < 1:
                raise ValueError(f"max_tokens {max_tokens} is below one sequence of {L} tokens")
        return tokens[:n]

    def generate(self, model, request: SampleRequest | None = None, /, **fields) -> tuple[torch.Tensor, dict]:
        """Samples ``LongTensor[num, num_tokens]`` (on the CPU) and sampling stats (``steps``,
        ``network_calls_mean``, ``idle_steps_mean``, ``wall_time_s``) for a :class:`SampleRequest`, or
        for its fields given as keywords (``generate(model, num=8, num_tokens=128, seed=1)``). The app's
        only sampling entry point (previews, ``mdm-prime sample``, ``eval --gen-ppl`` and ``--fd``).
        With ``record``, the stats also hold ``trajectory`` (digits after each step, ``[T+1, num,
        L·ℓ]``, see :class:`mdm_prime.sampling.SampleResult`) and ``trajectory_calls`` (``Bool[T,
        num]``)."""
        if request is None:
            request = SampleRequest(**fields)
        elif fields:
            request = replace(request, **fields)
        r = request
        if r.batch_size is None or r.num <= r.batch_size or r.conditioned:
            return self._generate(model, r)
        chunks, stats = [], []
        for i, start in enumerate(range(0, r.num, r.batch_size)):
            part = replace(r, num=min(r.batch_size, r.num - start), seed=r.seed + i, batch_size=None)
            tokens, st = self._generate(model, part)
            chunks.append(tokens)
            stats.append((tokens.shape[0], st))
        out = dict(stats[0][1])
        for key in ("network_calls_mean", "idle_steps_mean"):
            out[key] = sum(n * st[key] for n, st in stats) / r.num
        out["wall_time_s"] = sum(st["wall_time_s"] for _, st in stats)
        out.pop("idle_fraction", None)
        for key in ("trajectory", "trajectory_calls") if r.record else ():
            out[key] = torch.cat([st[key] for _, st in stats], 1)
        return torch.cat(chunks), out

    def _generate(self, model, request: SampleRequest) -> tuple[torch.Tensor, dict]:
        """One :class:`SampleRequest` without chunking."""
        raise NotImplementedError


def _summary(nats: float, se: float, **fields) -> dict:
    return {
        "nelbo_nats_per_token": nats,
        "stderr_nats_per_token": se,
        "bits_per_token": nats / math.log(2),
        "perplexity": math.exp(nats),
        **fields,
    }


class DiffusionFamily(Family):
    """Masked diffusion over ℓ sub-tokens per token: MDM-Prime (``ℓ ≥ 1``) and MDM (``ℓ = 1``).

    Trained with ``objectives.diffusion_loss`` (objective ``prime`` or ``valid``), scored with the valid
    bound of :func:`mdm_prime.likelihood`, sampled with :func:`mdm_prime.sampling.sample`."""

    supports_infill = True

    def __init__(self, name: str, description: str, fixed_subtokens: int | None) -> None:
        self.name, self.description, self.fixed_subtokens = name, description, fixed_subtokens

    def build_model(self, cfg, task, *, permutation=None):
        """The network ``cfg.architecture`` names (``auto``: the task's default) from the table
        :data:`mdm_prime.models.ARCHITECTURES` — transformer (text, synthetic), U-Net (images), MLP
        (toy), the published models' DiT (``mdlm_dit``, run folders of ``mdm-prime import``) — over
        ``cfg.subtokens`` digits, with ``cfg.model_overrides`` on top of the named size.

        The sub-tokenizer's code (``docs/method.md §1b``) is ``permutation`` when given (a resumed run
        passes the one saved in its checkpoint), else computed once from the task's training split by
        :func:`mdm_prime.codes.make_permutation` for ``cfg.codes`` (``index`` and ``ℓ = 1``: none, the
        model config exactly as without codes)."""
        from . import models as M

        arch = task.default_architecture if cfg.architecture == "auto" else cfg.architecture
        entry = M.ARCHITECTURES.get(arch)
        if entry is None or not entry.diffusion:
            names = [name for name, e in M.ARCHITECTURES.items() if e.diffusion]
            raise ValueError(
                f"unknown architecture {arch!r}; expected auto, {', '.join(names[:-1])} or {names[-1]}"
            )
        if entry.takes == "image" and task.image_shape is None:
            raise ValueError(f"architecture {arch!r} needs image data, got {cfg.data!r}")
        extra = dict(cfg.model_overrides)
        extra.setdefault("precision", cfg.precision)
        if permutation is None:
            permutation = self.code_permutation(cfg, task)
        if permutation is not None:
            extra["permutation"] = [int(v) for v in permutation]
        conf = entry.config(
            cfg.model_size,
            num_classes=task.num_classes,
            length=cfg.subtokens,
            base=cfg.base,
            schedule=cfg.schedule,
            **entry.shape_kwargs(task.seq_len, task.image_shape),
            **extra,
        )
        return M.build_model(conf)

    @staticmethod
    def code_permutation(cfg, task) -> list[int] | None:
        """``cfg.codes`` computed from ``task``'s training split (``code_of_class``; ``None`` for
        ``index`` or ``ℓ = 1``), seeded by ``cfg.seed``."""
        from .codes import make_permutation, training_sample
        from .subtokenizer import default_base

        codes = getattr(cfg, "codes", "index")
        if codes == "index" or cfg.subtokens <= 1:
            return None
        base = cfg.base or default_base(task.num_classes, cfg.subtokens)
        tokens = None if codes == "shuffle" else training_sample(task, seed=cfg.seed)
        return make_permutation(
            codes, tokens, task.num_classes, base=base, length=cfg.subtokens, seed=cfg.seed
        )

    def loss(self, model, x0, noise, *, objective="prime", schedule=None, weighting="elbo", mix=0.5):
        """``objectives.diffusion_loss(model, x0, sub, schedule, objective, t=noise.t,
        uniforms=noise.uniforms, weighting=weighting, mix=mix).per_sequence``: by default ``w(t)`` times
        the objective's terms, nats per sequence (``weighting``/``mix``: ``docs/method.md §4b``).
        ``model`` may be wrapped (DDP); the sub-tokenizer and schedule are read from the unwrapped one."""
        from .objectives import diffusion_loss

        inner = getattr(model, "module", model)
        schedule = inner.schedule if schedule is None else schedule
        return diffusion_loss(
            model,
            x0,
            inner.subtokenizer,
            schedule,
            objective=objective,
            t=noise.t,
            uniforms=noise.uniforms,
            weighting=weighting,
            mix=mix,
        ).per_sequence

    @torch.no_grad()
    def score(
        self,
        model,
        tokens,
        *,
        num_times=32,
        seed=0,
        batch_size=None,
        max_sequences=None,
        max_tokens=None,
        progress=False,
    ):
        """The valid bound ``L_valid`` (``docs/method.md §5``) with ``num_times`` draws per sequence
        and its Monte Carlo standard error; ``L_prime`` beside it, labelled as the training objective,
        and the gap. Draws as in :func:`mdm_prime.scoring.score_corpus` (chunks of 256 sequences, chunk
        ``i`` seeded ``seed + i``)."""
        from .scoring import score_corpus

        tokens = self._budget(tokens, max_sequences, max_tokens)
        model.eval()
        summary = score_corpus(
            model,
            tokens,
            num_times=num_times,
            seed=seed,
            rows_per_call=batch_size,
            progress=progress,
        )
        summary.update(stderr_kind="Monte Carlo (time draws)", family=model.family)
        return summary

    @torch.no_grad()
    def _generate(self, model, request):
        r = request
        from .sampling import digit_condition, infill_condition, prefix_condition, sample

        model.eval()
        device = next(model.parameters()).device
        sub = model.subtokenizer
        condition = None
        if r.prefix is not None:
            condition = prefix_condition(r.prefix.to(device), r.num_tokens, sub, num_samples=r.num)
        elif r.infill is not None:
            tokens, generate_mask = r.infill
            condition = infill_condition(tokens, generate_mask, sub, num_samples=r.num)
        elif r.keep_digits is not None:
            tokens, digits = r.keep_digits
            bad = [d for d in digits if not 0 <= d < sub.length]
            if bad:
                raise ValueError(f"keep_digits {bad} out of range 0..{sub.length - 1}")
            condition = digit_condition(tokens[: r.num], digits, sub)
        res = sample(
            model,
            sub,
            steps=r.steps or r.num_tokens,
            num_samples=None if condition is not None else r.num,
            num_tokens=None if condition is not None else r.num_tokens,
            condition=condition,
            method=r.method,
            schedule=model.schedule,
            grid=r.grid,
            temperature=r.temperature,
            top_p=r.top_p,
            cache=r.cache,
            corrector_scale=r.corrector_scale,
            seed=r.seed,
            device=device,
            record=r.record,
            progress=r.progress,
        )
        stats = {
            "steps": res.steps,
            "network_calls_mean": float(res.network_calls.double().mean()),
            "idle_steps_mean": float(res.idle_steps.double().mean()),
            "idle_fraction": res.idle_fraction,
            "wall_time_s": res.wall_time,
        }
        if r.record:
            stats.update(trajectory=res.trajectory, trajectory_calls=res.trajectory_calls)
        return res.tokens.cpu(), stats


class AutoregressiveFamily(Family):
    """Left-to-right next-token model: the same transformer blocks with causal attention
    (``docs/method.md §7``). Its likelihood is exact; it samples with a key/value cache."""

    fixed_subtokens = 1
    exact_likelihood = True

    def __init__(self, name: str, description: str) -> None:
        self.name, self.description = name, description

    def objective_label(self, objective: str) -> str:
        return "ar-nll"

    def build_model(self, cfg, task):
        from . import models as M

        arch = task.default_architecture if cfg.architecture == "auto" else cfg.architecture
        if arch not in ("transformer", "causal_transformer"):
            raise ValueError(f"the autoregressive baseline uses the transformer; got architecture {arch!r}")
        extra = dict(cfg.model_overrides)
        extra.setdefault("precision", cfg.precision)  # (before the seam, --precision was ignored for ar)
        conf = M.ARCHITECTURES["causal_transformer"].config(
            cfg.model_size, num_classes=task.num_classes, seq_len=task.seq_len, **extra
        )
        return M.build_model(conf)

    def loss(self, model, x0, noise, *, objective="prime", schedule=None, weighting="elbo", mix=0.5):
        """Exact negative log-likelihood ``−log p_θ(x0)`` per sequence (nats), computed as
        ``CausalTransformer.log_likelihood`` does but through ``model``'s own forward (so that a DDP
        wrapper synchronises gradients); the noise is unused (the trainer still draws it, so the random
        stream is the same for every family)."""
        logits = model(x0)
        return -torch.log_softmax(logits.float(), -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1).sum(-1)

    @torch.no_grad()
    def score(
        self,
        model,
        tokens,
        *,
        num_times=32,
        seed=0,
        batch_size=None,
        max_sequences=None,
        max_tokens=None,
        progress=False,
    ):
        """Exact NLL per token; the standard error is over sequences (``num_times`` and ``seed`` are
        unused: nothing is drawn)."""
        from tqdm.auto import tqdm

        from .scoring import auto_batch_size

        tokens = self._budget(tokens, max_sequences, max_tokens)
        rows = batch_size or auto_batch_size(model.num_classes, tokens.shape[1])
        device = next(model.parameters()).device
        model.eval()
        parts = []
        with tqdm(total=tokens.shape[0], unit="seq", desc="exact NLL", disable=not progress) as bar:
            for i in range(0, tokens.shape[0], rows):
                parts.append(-model.log_likelihood(tokens[i : i + rows].to(device)).double().cpu())
                bar.update(parts[-1].shape[0])
        nll = torch.cat(parts)
        num_tokens = tokens.shape[1]
        nats = float(nll.mean()) / num_tokens
        se = float(nll.std() / math.sqrt(len(nll))) / num_tokens if len(nll) > 1 else 0.0
        return _summary(
            nats,
            se,
            num_times=0,
            num_sequences=len(nll),
            num_tokens=len(nll) * num_tokens,
            tokens_per_sequence=num_tokens,
            estimator="exact (autoregressive)",
            stderr_kind="over sequences",
            family=self.name,
        )

    @torch.no_grad()
    def _generate(self, model, request):
        r = request
        if r.infill is not None or r.keep_digits is not None:
            raise ValueError(
                "infilling and --keep-digits need a diffusion run; the autoregressive baseline only "
                "continues a prefix"
            )
        model.eval()
        device = next(model.parameters()).device
        g = torch.Generator(device=device).manual_seed(r.seed)
        start = time.perf_counter()
        num_tokens, prefix = r.num_tokens, r.prefix
        tokens = model.generate(
            r.num,
            num_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            generator=g,
            prefix=None if prefix is None else prefix.to(device),
        )
        calls = float(num_tokens - (0 if prefix is None else prefix.shape[-1]))
        stats = {
            "steps": num_tokens,
            "network_calls_mean": calls,
            "idle_steps_mean": 0.0,
            "wall_time_s": time.perf_counter() - start,
        }
        if r.record:  # left to right, one token per step: state k holds the prefix and k more tokens
            tokens = tokens.cpu()
            given = 0 if prefix is None else prefix.shape[-1]
            mask = model.subtokenizer.mask_id  # ℓ = 1: the mask id is C
            pos = torch.arange(num_tokens)
            states = [
                torch.where(pos < given + k, tokens, torch.full_like(tokens, mask))
                for k in range(num_tokens - given + 1)
            ]
            stats["trajectory"] = torch.stack(states).to(torch.int32)
            stats["trajectory_calls"] = torch.ones(num_tokens - given, r.num, dtype=torch.bool)
        return tokens.cpu(), stats


FAMILIES: dict[str, Family] = {
    "prime": DiffusionFamily("prime", "MDM-Prime: masked diffusion over ℓ sub-tokens per token", None),
    "mdm": DiffusionFamily("mdm", "masked diffusion over whole tokens (ℓ = 1)", 1),
    "ar": AutoregressiveFamily("ar", "autoregressive baseline (same transformer, causal attention)"),
}


def get_family(name: str) -> Family:
    """The family named ``name`` (a key of :data:`FAMILIES`)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of(model) -> Family:
    """The family of a built or loaded model (its ``family`` attribute; diffusion models without
    one count as ``prime``). A DDP wrapper is looked through."""
    inner = getattr(model, "module", model)
    return get_family(getattr(inner, "family", "prime"))
