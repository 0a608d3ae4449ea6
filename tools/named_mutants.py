"""Apply hand-written mutants of the library one at a time and run the targeted tests against each
(docs/reliability.md). A mutant is KILLED when the tests fail. Not part of CI.

    flock /tmp/mdm-heavy.lock python tools/named_mutants.py            # all mutants
    python tools/named_mutants.py --tests-from REV                      # the tests of an older commit

Each mutant is (file, exact text, replacement, tests). The source file is restored after each run,
also on Ctrl-C or SIGTERM. Run from the repository root with the package importable from ./src.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

P = "src/mdm_prime/"
LIK = ["tests/test_likelihood.py"]
OBJ = ["tests/test_objectives.py"]
ORA = ["tests/test_oracle.py"]
SAM = [  # the fast contract tests first (pytest -x stops at the first failure)
    "tests/sampling/test_sampler_contract.py",
    "tests/sampling/test_sampler.py",
    "tests/test_sampling.py",  # before the tests/ move
]
PRO = ["tests/test_process.py"]
DRW = ["tests/sampling/test_draws.py"]
SCH = ["tests/test_schedules.py"]
PAR = ["tests/test_parameterization.py"]

MUTANTS = [
    # the four named in issue 9
    (
        "carry-over dropped from the normaliser of carry_over_nll",
        P + "parameterization/fast.py",
        "                lse_r = torch.logsumexp(vals, -1)",
        "                lse_r = torch.logsumexp(z[rows].to(cdt), -1)",
        OBJ + LIK + ORA,
    ),
    (
        "u ~ Beta(k, n-k+1) replaced by its mean k/(n+1)",
        P + "likelihood.py",
        "    t = schedule.time_from_mask_probability(u).float()",
        "    t = schedule.time_from_mask_probability(k.double() / (n + 1)).float()",
        LIK,
    ),
    (
        "1% weight bias in likelihood",
        P + "likelihood.py",
        "    weight = n / k.double()",
        "    weight = 1.01 * n / k.double()",
        LIK,
    ),
    (
        "w(t) deleted from the training loss",
        P + "objectives.py",
        "per_seq = schedule.weight(t.float()) * sequence_terms",
        "per_seq = sequence_terms",
        OBJ,
    ),
    # more
    (
        "weight bias only for k = 1",
        P + "likelihood.py",
        "    weight = n / k.double()",
        "    weight = n / k.double() * (1 + 0.02 * (k == 1))",
        LIK,
    ),
    (
        "10% bias of w(t) in the training loss",
        P + "objectives.py",
        "per_seq = schedule.weight(t.float()) * sequence_terms",
        "per_seq = 1.1 * schedule.weight(t.float()) * sequence_terms",
        OBJ,
    ),
    (
        "cosine weight replaced by its small-t limit 2/t",
        P + "schedules.py",
        "        return 0.5 * math.pi / torch.tan(0.25 * math.pi * t)",
        "        return 2.0 / t",
        SCH + OBJ,
    ),
    (
        "cosine mask probability by cancellation 1 - cos",
        P + "schedules.py",
        "        return 2.0 * torch.sin(0.25 * math.pi * t) ** 2",
        "        return (1.0 - torch.cos(0.5 * math.pi * t).float()).double()",
        SCH,
    ),
    (
        "stratified-k off by one",
        P + "likelihood.py",
        ".clamp(0, n - 1).add(1).flatten()",
        ".clamp(1, n - 1).add(1).flatten()",
        LIK,
    ),
    (
        "digit marginal: seen digits scored too",
        P + "parameterization/fast.py",
        "                h[hidden] = True",
        "                h[:] = True",
        OBJ + ORA,
    ),
    (
        "sampler: unknown callables reuse outputs",
        P + "sampling/sampler.py",
        'getattr(model, "time_conditioned", True)',
        'getattr(model, "time_conditioned", False)',
        SAM,
    ),
    (
        "sampler: seen digits may be redrawn",
        P + "sampling/sampler.py",
        "reveal, remask = masked & (u_jump < q), torch.zeros_like(masked)",
        "reveal, remask = (u_jump < q), torch.zeros_like(masked)",
        SAM,
    ),
    (
        "sampler: reveal probability not renormalised",
        P + "sampling/sampler.py",
        "q = (m_t - m_s) / m_t if m_t > 0.0 else 1.0",
        "q = (m_t - m_s) if m_t > 0.0 else 1.0",
        SAM,
    ),
    (
        "likelihood: empty batch not rejected",
        P + "likelihood.py",
        "    if x0.shape[0] == 0:",
        "    if False:",
        LIK,
    ),
    # mutmut survivors of 2026-11-30 (docs/reliability.md §6) that change behaviour, with the follow-up
    # tests that kill them (the equivalent survivors are listed there, not here)
    (
        "mutmut: batch of 1 refused",
        P + "process.py",
        "    if batch_size < 1:",
        "    if batch_size <= 1:",
        PRO,
    ),
    (
        "mutmut: eps = 0 refused",
        P + "process.py",
        "    if not 0.0 <= eps < 1.0:",
        "    if not 0.0 < eps < 1.0:",
        PRO,
    ),
    (
        "mutmut: eps = 1 accepted",
        P + "process.py",
        "    if not 0.0 <= eps < 1.0:",
        "    if not 0.0 <= eps <= 1.0:",
        PRO,
    ),
    (
        "mutmut: stratified times in the other order",
        P + "process.py",
        "        t = (u + torch.arange(batch_size, device=device) / batch_size) % 1.0",
        "        t = (u - torch.arange(batch_size, device=device) / batch_size) % 1.0",
        PRO,
    ),
    (
        "mutmut: training_noise default eps",
        P + "process.py",
        "num_digits: int, *, eps: float = 1e-3,",
        "num_digits: int, *, eps: float = 1.001,",
        PRO,
    ),
    (
        "mutmut: shape message names L instead of B",
        P + "process.py",
        "t must have shape ({y0.shape[0]},)",
        "t must have shape ({y0.shape[1]},)",
        PRO,
    ),
    ("mutmut: mask at u = 1 - alpha", P + "process.py", "uniforms < p_mask", "uniforms <= p_mask", PRO),
    (
        "mutmut: mask_k_subtokens ignores its generator",
        P + "process.py",
        "    scores = torch.rand((b, n), generator=generator, device=y0.device)",
        "    scores = torch.rand((b, n), device=y0.device)",
        PRO,
    ),
    (
        "mutmut: diffusion_loss ignores the given uniforms",
        P + "objectives.py",
        "generator=generator, uniforms=uniforms)",
        "generator=generator, uniforms=None)",
        OBJ,
    ),
    (
        "mutmut: sequence_terms error without a message",
        P + "objectives.py",
        'raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")',
        "raise ValueError(None)",
        OBJ,
    ),
    (
        "mutmut: k may exceed n",
        P + "likelihood.py",
        ".clamp(0, n - 1).add(1)",
        ".clamp(0, n + 1).add(1)",
        LIK,
    ),
    ("mutmut: k unclamped", P + "likelihood.py", ".clamp(0, n - 1).add(1)", ".add(1)", LIK),
    (
        "mutmut: seed message names NoneType",
        P + "likelihood.py",
        "got {type(seed).__name__} ({seed!r})",
        "got {type(None).__name__} ({seed!r})",
        LIK,
    ),
    (
        "mutmut: eps type check by and",
        P + "likelihood.py",
        "isinstance(eps, bool) or not isinstance(eps, (int, float))",
        "isinstance(eps, bool) and not isinstance(eps, (int, float))",
        LIK,
    ),
    (
        "mutmut: shape message without the shape",
        P + "likelihood.py",
        "got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else",
        "got = tuple(logits.shape) if False else",
        LIK,
    ),
    (
        "mutmut: class-count hint reads the token axis",
        P + "likelihood.py",
        "logits.shape[-1] != sub.num_classes:",
        "logits.shape[1] != sub.num_classes:",
        LIK,
    ),
    (
        "mutmut: NaN message changed",
        P + "likelihood.py",
        '"model returned NaN logits; the bound would be NaN"',
        '"XXmodel returned NaN logits; the bound would be NaNXX"',
        LIK,
    ),
    (
        "mutmut: float32 probabilities drawn in float32",
        P + "sampling/draws.py",
        "    probs = probs.to(torch.float64)",
        "    probs = probs",
        DRW,
    ),
    (
        "mutmut: u = 1 not guarded (>)",
        P + "sampling/draws.py",
        "    over = idx >= k",
        "    over = idx > k",
        DRW,
    ),
    (
        "mutmut: u = 1 not guarded (off)",
        P + "sampling/draws.py",
        "    if bool(over.any()):",
        "    if False:",
        DRW,
    ),
    (
        "mutmut: default temperature 2",
        P + "sampling/draws.py",
        "temperature: float = 1.0, top_p",
        "temperature: float = 2.0, top_p",
        DRW,
    ),
    (
        "mutmut: float32 log-probs stay float32",
        P + "sampling/draws.py",
        "    lp = log_probs.to(torch.float64)",
        "    lp = log_probs",
        DRW,
    ),
    (
        "mutmut: top_p = 1 truncates",
        P + "sampling/draws.py",
        "    if top_p < 1.0:",
        "    if top_p <= 1.0:",
        DRW,
    ),
    (
        "mutmut: top_p keeps the class at the boundary",
        P + "sampling/draws.py",
        "keep_sorted = before < top_p",
        "keep_sorted = before <= top_p",
        DRW,
    ),
    (
        "mutmut: top_p renormalises over the whole batch",
        P + "sampling/draws.py",
        "        p = p / p.sum(-1, keepdim=True)",
        "        p = p / p.sum()",
        DRW,
    ),
    (
        "mutmut: sampler isnan check by and",
        P + "sampling/sampler.py",
        "or not isinstance(value, (int, float)) or math.isnan(value)",
        "or not isinstance(value, (int, float)) and math.isnan(value)",
        SAM,
    ),
    (
        "mutmut: sampler bool accepted as a number",
        P + "sampling/sampler.py",
        "if isinstance(value, bool) or not isinstance(value, (int, float))",
        "if isinstance(value, bool) and not isinstance(value, (int, float))",
        SAM,
    ),
    (
        "mutmut: sampler interval message always half-open",
        P + "sampling/sampler.py",
        "{'(' if low_open else '['}",
        "{'(' if low_open and False else '['}",
        SAM,
    ),
    (
        "mutmut: sampler num_samples = 1 refused",
        P + "sampling/sampler.py",
        "or not isinstance(v, int) or v < 1)",
        "or not isinstance(v, int) or v <= 1)",
        SAM,
    ),
    (
        "mutmut: sampler condition type check by and",
        P + "sampling/sampler.py",
        "if not isinstance(condition, tuple) or len(condition) != 2:",
        "if not isinstance(condition, tuple) and len(condition) != 2:",
        SAM,
    ),
    (
        "mutmut: sampler float condition values accepted",
        P + "sampling/sampler.py",
        "values.dtype.is_floating_point or values.dtype == torch.bool",
        "values.dtype.is_floating_point and values.dtype == torch.bool",
        SAM,
    ),
    (
        "mutmut: sampler condition shape check by and",
        P + "sampling/sampler.py",
        "fixed.dim() != 2 or fixed.shape != values.shape or",
        "fixed.dim() != 2 and fixed.shape != values.shape or",
        SAM,
    ),
    (
        "mutmut: sampler num_tokens check inverted",
        P + "sampling/sampler.py",
        "num_tokens * sub.length != n:",
        "num_tokens * sub.length == n:",
        SAM,
    ),
    (
        "mutmut: sampler bad digit always reported by its max",
        P + "sampling/sampler.py",
        "bad = int(given.min()) if int(given.min()) < 0 else",
        "bad = int(given.min()) if int(given.min()) < 0 and False else",
        SAM,
    ),
    (
        "mutmut: sampler impossible digits reported at a possible token",
        P + "sampling/sampler.py",
        "bi, li = (~possible).nonzero()[0].tolist()",
        "bi, li = possible.nonzero()[0].tolist()",
        SAM,
    ),
    (
        "mutmut: sampler default corrector power 1.25",
        P + "sampling/sampler.py",
        "corrector_power: float = 0.25,",
        "corrector_power: float = 1.25,",
        SAM,
    ),
    (
        "mutmut: sampler unseeded seed space of 124",
        P + "sampling/sampler.py",
        "torch.randint(2**62, ())",
        "torch.randint(2 * 62, ())",
        SAM,
    ),
    (
        "mutmut: sampler unconditioned fixed mask 1-D",
        P + "sampling/sampler.py",
        "fixed = torch.zeros(batch, n_dig, dtype=torch.bool, device=device)",
        "fixed = torch.zeros(n_dig, dtype=torch.bool, device=device)",
        SAM,
    ),
    (
        "mutmut: sampler calls counted in float",
        P + "sampling/sampler.py",
        "calls = torch.zeros(batch, dtype=torch.long, device=device)",
        "calls = torch.zeros(batch, device=device)",
        SAM,
    ),
    (
        "mutmut: sampler processed store also for per-digit",
        P + "sampling/sampler.py",
        "        return logp.exp()\n",
        "        return process_log_probs(logp, tau, self.top_p)\n",
        SAM,
    ),
    (
        "mutmut: sampler processed store under a temperature schedule",
        P + "sampling/sampler.py",
        "self.processed = temperature_fn is None",
        "self.processed = temperature_fn is not None",
        SAM,
    ),
    (
        "mutmut: sampler joint with a schedule stores probabilities",
        P + "sampling/sampler.py",
        "if self.processed else logp\n",
        "if self.processed else logp.exp()\n",
        SAM,
    ),
    (
        "mutmut: sampler trajectory uint8 for mask id 256",
        P + "sampling/sampler.py",
        "torch.uint8 if mask_id < 256 else",
        "torch.uint8 if mask_id <= 256 else",
        SAM,
    ),
    (
        "mutmut: sampler trajectory int16 for mask id 2**15",
        P + "sampling/sampler.py",
        "torch.int16 if mask_id < 2**15 else",
        "torch.int16 if mask_id <= 2**15 else",
        SAM,
    ),
    (
        "mutmut: sampler trajectory_calls in float",
        P + "sampling/sampler.py",
        "traj_calls = torch.zeros(steps, batch, dtype=torch.bool)",
        "traj_calls = torch.zeros(steps, batch)",
        SAM,
    ),
    (
        "mutmut: sampler temperature 0 from a schedule accepted",
        P + "sampling/sampler.py",
        "if not tau > 0:",
        "if not tau >= 0:",
        SAM,
    ),
    (
        "mutmut: sampler corrector on at scale 0",
        P + "sampling/sampler.py",
        'if corrector_scale > 0.0 else "predictor"',
        'if corrector_scale >= 0.0 else "predictor"',
        SAM,
    ),
    (
        "mutmut: sampler corrector off below scale 1",
        P + "sampling/sampler.py",
        'if corrector_scale > 0.0 else "predictor"',
        'if corrector_scale > 1.0 else "predictor"',
        SAM,
    ),
    (
        "mutmut: sampler corrector step h = t + s",
        P + "sampling/sampler.py",
        "h = t - s",
        "h = t + s",
        SAM,
    ),
    (
        "mutmut: sampler corrector reveal rate divided by 1 + kappa",
        P + "sampling/sampler.py",
        "math.exp(-h * (1.0 + kappa) *",
        "math.exp(-h / (1.0 + kappa) *",
        SAM,
    ),
    (
        "mutmut: sampler remask rate times alpha",
        P + "sampling/sampler.py",
        "float(-sched.alpha_derivative(tt)) / a_t if",
        "float(-sched.alpha_derivative(tt)) * a_t if",
        SAM,
    ),
    (
        "mutmut: sampler remask rate divides by -alpha'",
        P + "sampling/sampler.py",
        "kappa * float(-sched.alpha_derivative(tt))",
        "kappa / float(-sched.alpha_derivative(tt))",
        SAM,
    ),
    (
        "mutmut: sampler logits not converted to float64",
        P + "sampling/sampler.py",
        "carry_over_log_probs(logits.to(torch.float64), y_in, sub)",
        "carry_over_log_probs(logits, y_in, sub)",
        SAM,
    ),
    (
        "mutmut: sampler model output check by and",
        P + "sampling/sampler.py",
        "if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (",
        "if not isinstance(logits, torch.Tensor) and tuple(logits.shape) != (",
        SAM,
    ),
    (
        "mutmut: sampler steps field None",
        P + "sampling/sampler.py",
        "        steps=steps,\n        wall_time",
        "        steps=None,\n        wall_time",
        SAM,
    ),
    (
        "mutmut: sampler wall_time sign",
        P + "sampling/sampler.py",
        "wall_time=time.perf_counter() - start_time",
        "wall_time=time.perf_counter() + start_time",
        SAM,
    ),
    (
        "mutmut: sampler per-digit temperature needs top_p < 1",
        P + "sampling/sampler.py",
        "if tau != 1.0 or top_p < 1.0:",
        "if tau != 1.0 and top_p < 1.0:",
        SAM,
    ),
    (
        "mutmut: sampler per-digit marginal normalised over positions",
        P + "sampling/sampler.py",
        "total = marg.sum(-1, keepdim=True)",
        "total = marg.sum(1, keepdim=True)",
        SAM,
    ),
    (
        "mutmut: sampler per-digit top_p dropped",
        P + "sampling/sampler.py",
        "(marg / total.clamp_min(1e-300)).log(), tau, top_p)",
        "(marg / total.clamp_min(1e-300)).log(), tau)",
        SAM,
    ),
    (
        "mutmut: sampler bad digit reported by its min",
        P + "sampling/sampler.py",
        "bad = int(given.min()) if int(given.min()) < 0 else",
        "bad = int(given.min()) if int(given.min()) < 0 or True else",
        SAM,
    ),
    (
        "mutmut: sampler bad digit: min 0 counts as negative",
        P + "sampling/sampler.py",
        "bad = int(given.min()) if int(given.min()) < 0 else",
        "bad = int(given.min()) if int(given.min()) <= 0 else",
        SAM,
    ),
    (
        "mutmut: sampler impossible digits message slices too far",
        P + "sampling/sampler.py",
        "y[bi, li * ell : (li + 1) * ell]",
        "y[bi, li * ell : (li + 2) * ell]",
        SAM,
    ),
    (
        "mutmut: sampler uniforms in float32",
        P + "sampling/sampler.py",
        "rand_opts = dict(generator=generator, device=device, dtype=torch.float64)",
        "rand_opts = dict(generator=generator, device=device)",
        SAM,
    ),
    (
        "mutmut: sampler per-digit marginal normalised by the batch total",
        P + "sampling/sampler.py",
        "total = marg.sum(-1, keepdim=True)",
        "total = marg.sum(None, keepdim=True)",
        SAM,
    ),
    (
        "mutmut: sampler per-digit marginal left unnormalised",
        P + "sampling/sampler.py",
        "total.clamp_min(1e-300)",
        "total.clamp_min(1.0)",
        SAM,
    ),
    (
        "mutmut: bool sub-tokens accepted",
        P + "parameterization/reference.py",
        "y_t.dtype.is_complex or y_t.dtype == torch.bool:",
        "y_t.dtype.is_complex and y_t.dtype == torch.bool:",
        PAR,
    ),
    (
        "mutmut: float sub-tokens accepted",
        P + "parameterization/reference.py",
        "if y_t.dtype.is_floating_point or y_t.dtype.is_complex",
        "if y_t.dtype.is_floating_point and y_t.dtype.is_complex",
        PAR,
    ),
    (
        "mutmut: 3-D sub-tokens accepted",
        P + "parameterization/reference.py",
        "if y_t.dim() != 2 or y_t.shape[-1] % sub.length:",
        "if y_t.dim() != 2 and y_t.shape[-1] % sub.length:",
        PAR,
    ),
    (
        "mutmut: integer logits accepted",
        P + "parameterization/reference.py",
        "if not isinstance(values, torch.Tensor) or (floating and not values.dtype.is_floating_point):",
        "if not isinstance(values, torch.Tensor) and (floating and not values.dtype.is_floating_point):",
        PAR,
    ),
    (
        "mutmut: logits shape check by and",
        P + "parameterization/reference.py",
        "if logits.dim() != 3 or logits.shape[-1] != sub.num_classes:",
        "if logits.dim() != 3 and logits.shape[-1] != sub.num_classes:",
        PAR,
    ),
    (
        "mutmut: carry-over skips the token-count check",
        P + "parameterization/reference.py",
        "split_tokens(y_t, sub, logits.shape[1])",
        "split_tokens(y_t, sub, None)",
        PAR,
    ),
    (
        "mutmut: code space pads with 0",
        P + "parameterization/reference.py",
        "(0, sub.num_codes - sub.num_classes), value=fill)",
        "(0, sub.num_codes - sub.num_classes))",
        PAR,
    ),
    (
        "mutmut: l = 1 marginals on axis 2",
        P + "parameterization/reference.py",
        "return grid.unsqueeze(-2)",
        "return grid.unsqueeze(2)",
        PAR,
    ),
    (
        "mutmut: marginal summed over axis 2",
        P + "parameterization/reference.py",
        "marginals.append(joint.sum(-2))",
        "marginals.append(joint.sum(2))",
        PAR,
    ),
    (
        "mutmut: marginals stacked on axis 2",
        P + "parameterization/reference.py",
        "return torch.stack(marginals[::-1], dim=-2)",
        "return torch.stack(marginals[::-1], dim=2)",
        PAR,
    ),
    (
        "mutmut: cosine inverse without the upper clamp",
        P + "schedules.py",
        "u.clamp(0.0, 1.0)).sqrt()",
        "u.clamp(0.0, None)).sqrt()",
        SCH,
    ),
    (
        "mutmut: fast log-probs skip the token-count check",
        P + "parameterization/fast.py",
        "    y = split_tokens(y_t, sub, logits.shape[1])\n    if logits.requires_grad and torch.is_grad_enabled():\n        return ref.carry_over_log_probs(logits, y_t, sub)\n    lp, _",
        "    y = split_tokens(y_t, sub, None)\n    if logits.requires_grad and torch.is_grad_enabled():\n        return ref.carry_over_log_probs(logits, y_t, sub)\n    lp, _",
        PAR,
    ),
    (
        "mutmut: fast carry-over skips the token-count check",
        P + "parameterization/fast.py",
        "    y = split_tokens(y_t, sub, logits.shape[1])\n    cdt = compute_dtype",
        "    y = split_tokens(y_t, sub, None)\n    cdt = compute_dtype",
        PAR,
    ),
    (
        "mutmut: fast NLL skips the token-count check",
        P + "parameterization/fast.py",
        "    y = split_tokens(y_t, sub, logits.shape[1])\n    if not isinstance(x0",
        "    y = split_tokens(y_t, sub, None)\n    if not isinstance(x0",
        PAR,
    ),
    (
        "mutmut: fast NLL x0 check by and",
        P + "parameterization/fast.py",
        "if not isinstance(x0, torch.Tensor) or tuple(x0.shape)",
        "if not isinstance(x0, torch.Tensor) and tuple(x0.shape)",
        PAR,
    ),
    (
        "mutmut: fast NLL returns the token part not asked for",
        P + "parameterization/fast.py",
        "tok.view(shape) if tokens else None",
        "tok.view(shape)",
        PAR,
    ),
    (
        "mutmut: fast NLL returns the digit part not asked for",
        P + "parameterization/fast.py",
        "dig.view(*shape, sub.length) if digits else None",
        "dig.view(*shape, sub.length)",
        PAR,
    ),
    (
        "mutmut: fast l = 1 autograd marginals clamped",
        P + "parameterization/fast.py",
        "marg = _single_digit_marginals(lp, sub) if ell == 1 else ref.digit_log_marginals(lp, sub)",
        "marg = ref.digit_log_marginals(lp, sub)",
        PAR,
    ),
    (
        "mutmut: fast digit marginals without autograd path",
        P + "parameterization/fast.py",
        "if sub.length == 1 or (log_probs.requires_grad and torch.is_grad_enabled()):",
        "if sub.length == 1:",
        PAR,
    ),
    (
        "mutmut: fast digit marginals written to a wrong slice",
        P + "parameterization/fast.py",
        "out=out[s : s + step]",
        "out=out[s : s - step]",
        PAR,
    ),
    (
        "mutmut: fast dense scratch buffer 1-D",
        P + "parameterization/fast.py",
        "ebuf = torch.empty(min(step, r), z.shape[1], dtype=cdt, device=z.device) if marg",
        "ebuf = torch.empty(z.shape[1], dtype=cdt, device=z.device) if marg",
        PAR,
    ),
    (
        "mutmut: fast dense block rows not counted",
        P + "parameterization/fast.py",
        "        n = zc.shape[0]\n        if marg is None:",
        "        n = None\n        if marg is None:",
        PAR,
    ),
    (
        "mutmut: fast dense stats buffer rows from the class axis",
        P + "parameterization/fast.py",
        "ebuf = torch.empty(min(step, z.shape[0]), z.shape[1]",
        "ebuf = torch.empty(min(step, z.shape[1]), z.shape[1]",
        PAR,
    ),
    (
        "mutmut: fast dense stats block rows from the class axis",
        P + "parameterization/fast.py",
        "n, cnt = zc.shape[0], idx.numel()",
        "n, cnt = zc.shape[1], idx.numel()",
        PAR,
    ),
    (
        "mutmut: fast dense stats in half precision",
        P + "parameterization/fast.py",
        "zc = (z[s:e] if whole else z.index_select(0, idx)).to(cdt)\n        n, cnt",
        "zc = (z[s:e] if whole else z.index_select(0, idx))\n        n, cnt",
        PAR,
    ),
    (
        "mutmut: fast exp shifted by the block maximum",
        P + "parameterization/fast.py",
        "m = zc.amax(-1, keepdim=True)",
        "m = zc.amax(None, keepdim=True)",
        PAR,
    ),
    (
        "mutmut: fast fingerprint of a dead tensor reused",
        P + "parameterization/fast.py",
        "hit[0]() is table",
        "hit[0]() is not table",
        PAR,
    ),
    (
        "mutmut: fast row block two blocks long",
        P + "parameterization/fast.py",
        "s, e = i * step, min((i + 1) * step, r)",
        "s, e = i * step, min((i + 2) * step, r)",
        PAR,
    ),
    (
        "mutmut: fast fully seen token no class fits accepted",
        P + "parameterization/fast.py",
        "no_class |= (cls < 0).any()",
        "pass",
        PAR,
    ),
    (
        "mutmut: fast partial token no class fits accepted",
        P + "parameterization/fast.py",
        "no_class |= (cls < 0).all(-1).any()",
        "pass",
        PAR,
    ),
    (
        "mutmut: fast NLL x0 disagreeing with y_t accepted",
        P + "parameterization/fast.py",
        "if bool(((y != sub.mask_id) & (y != y0)).any()):",
        "if False:",
        PAR,
    ),
    (
        "mutmut: fast NLL x0 above C accepted",
        P + "parameterization/fast.py",
        "if bool(((x0 < 0) | (x0 >= sub.num_classes)).any()):",
        "if bool((x0 < 0).any()):",
        PAR,
    ),
    (
        "mutmut: fast NLL float x0 accepted",
        P + "parameterization/fast.py",
        "if x0.dtype.is_floating_point or x0.dtype.is_complex",
        "if x0.dtype.is_complex",
        PAR,
    ),
    (
        "mutmut: reference digits above the mask id accepted",
        P + "parameterization/reference.py",
        "if bool(((y_t < 0) | (y_t > sub.mask_id)).any()):",
        "if bool((y_t < 0).any()):",
        PAR,
    ),
    (
        "mutmut: reference token no class fits accepted",
        P + "parameterization/reference.py",
        "if bool(torch.isinf(mask).all(-1).any()):",
        "if False:",
        PAR,
    ),
    (
        "mutmut: reference non-tensor named NoneType",
        P + "parameterization/reference.py",
        "else type(values).__name__",
        "else type(None).__name__",
        PAR,
    ),
    (
        "mutmut: reference code space refuses integers",
        P + "parameterization/reference.py",
        'check_class_axis(values, sub, "values", floating=False)',
        'check_class_axis(values, sub, "values")',
        PAR,
    ),
    (
        "mutmut: fast partial no-class flag overwritten",
        P + "parameterization/fast.py",
        "no_class |= (cls < 0).all(-1).any()",
        "no_class = (cls < 0).all(-1).any()",
        PAR,
    ),
    (
        "mutmut: fast partial no-class flag over the whole pattern",
        P + "parameterization/fast.py",
        "no_class |= (cls < 0).all(-1).any()",
        "no_class |= (cls < 0).all().any()",
        PAR,
    ),
    (
        "mutmut: fast NLL bool x0 accepted",
        P + "parameterization/fast.py",
        "x0.dtype.is_complex or x0.dtype == torch.bool",
        "x0.dtype.is_complex and x0.dtype == torch.bool",
        PAR,
    ),
    (
        "mutmut: fast NLL x0 = 0 reported as bad",
        P + "parameterization/fast.py",
        "bad = x0[(x0 < 0) | (x0 >= sub.num_classes)][0].item()",
        "bad = x0[(x0 <= 0) | (x0 >= sub.num_classes)][0].item()",
        PAR,
    ),
    (
        "mutmut: reference mask id reported as a bad digit",
        P + "parameterization/reference.py",
        "bad = y_t[(y_t < 0) | (y_t > sub.mask_id)][0].item()",
        "bad = y_t[(y_t < 0) | (y_t >= sub.mask_id)][0].item()",
        PAR,
    ),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests-from", metavar="REV", help="run the test files as they were at git revision REV")
    ap.add_argument(
        "--only", metavar="TEXT", help="run only the mutants whose file path or name contains TEXT"
    )
    args = ap.parse_args()

    # the mutated source file is restored in a `finally`: make SIGTERM (and SIGINT, which a shell
    # ignores in background jobs) raise KeyboardInterrupt so that the `finally` runs
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    mutants = [m for m in MUTANTS if not args.only or args.only in m[0] or args.only in m[1]]
    root = Path.cwd()
    tests_root = root
    tmp = None
    if args.tests_from:
        tmp = Path(tempfile.mkdtemp(prefix="mutants-tests-"))
        subprocess.run(f"git archive {args.tests_from} tests | tar -x -C {tmp}", shell=True, check=True)
        tests_root = tmp
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    killed = 0
    oracle = root / P / "oracle.py"
    oracle_now = oracle.read_text()
    try:
        if args.tests_from:  # the old tests with the old oracle they were written against
            old_oracle = subprocess.run(
                ["git", "show", f"{args.tests_from}:{P}oracle.py"], capture_output=True, text=True, check=True
            ).stdout
            oracle.write_text(old_oracle)
        all_files = sorted({str(tests_root / t) for m in mutants for t in m[4] if (tests_root / t).exists()})
        base = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *all_files],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=tests_root,
        )
        broken = [line.split()[1] for line in base.stdout.splitlines() if line.startswith("FAILED ")]
        deselect = [a for b in broken for a in ("--deselect", b)]
        print(f"baseline: {base.stdout.strip().splitlines()[-1]}; deselected {len(broken)} failing: {broken}")
        for name, path, old, new, tests in mutants:
            src = (root / path).read_text()
            if old not in src:
                print(f"SKIPPED  {name}: text not found in {path}")
                continue
            files = [str(tests_root / t) for t in tests if (tests_root / t).exists()]
            (root / path).write_text(src.replace(old, new, 1))
            try:
                r = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files, *deselect],
                    check=False,
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tests_root,
                )
            finally:
                (root / path).write_text(src)
            status = "KILLED" if r.returncode != 0 else "SURVIVED"
            killed += r.returncode != 0
            last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
            print(f"{status:8s} {name}  [{last}]", flush=True)
    finally:
        oracle.write_text(oracle_now)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{killed}/{len(mutants)} killed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
