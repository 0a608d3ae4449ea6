"""Per-digit masking schedules (docs/method.md §2b): spec parsing, the forward process per digit
position, the exact oracle (``L_valid = −log p(x)`` for the exact posterior), the Monte Carlo
estimators and the training loss against the oracle, the sampler's per-position reveal probabilities,
the discrete-time bound, shared schedules unchanged bit for bit, and the training config."""

import hashlib
import itertools
import math

import numpy as np
import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.discrete_bound import discrete_time_bound, reveal_steps
from mdm_prime.likelihood import likelihood
from mdm_prime.objectives import diffusion_loss
from mdm_prime.oracle import ExactPosterior, exact_digit_objectives, exact_objectives
from mdm_prime.process import mask_subtokens
from mdm_prime.sampling import sample, time_grid
from mdm_prime.schedules import (
    DigitSchedules,
    LinearSchedule,
    PolynomialSchedule,
    get_schedule,
    is_per_digit,
)

from .helpers import RandomDigitModel, random_joint

# mask probabilities written out by hand, independent of the schedule classes
G_LEADING3 = [lambda t: t**3, lambda t: t ** (1 / 3)]  # "leading:3", ℓ = 2
G_POLY = [lambda t: t**2, lambda t: t**1.5]  # "digits:polynomial:2,polynomial:1.5"


# --------------------------------------------------------------------------------------------------
# specs
# --------------------------------------------------------------------------------------------------


def test_leading_spec_exponents_and_shared_cases():
    s = get_schedule("leading:4", length=3)
    assert isinstance(s, DigitSchedules) and s.length == 3
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    expected = torch.stack([t**4, t, t**0.25], -1)
    assert torch.allclose(s.mask_probability(t), expected, rtol=1e-12)
    assert torch.allclose(s.weight(t), torch.stack([4 / t, 1 / t, 0.25 / t], -1), rtol=1e-12)
    # A = 1 and ℓ = 1 are the linear schedule itself (the shared code paths)
    assert type(get_schedule("leading:1", length=2)) is LinearSchedule
    assert type(get_schedule("leading:3", length=1)) is LinearSchedule
    assert type(get_schedule("digits:cosine,cosine", length=2)).__name__ == "CosineSchedule"
    d = get_schedule("digits:polynomial:2,linear,polynomial:0.5", length=3)
    assert d.schedules == (PolynomialSchedule(2), LinearSchedule(), PolynomialSchedule(0.5))
    # config round trip
    assert get_schedule(d.config()) == d and get_schedule(d.config(), length=3) == d
    assert is_per_digit(d) and not is_per_digit(LinearSchedule())


@pytest.mark.parametrize(
    "spec, length, words",
    [
        ("digits:linear,linear,cosine", 2, ["'digits:linear,linear,cosine'", "3", "ℓ=2"]),
        ("leading:0", 2, ["'leading:0'", "A > 0"]),
        ("leading:abc", 2, ["'leading:abc'"]),
        ("leading:2", None, ["'leading:2'", "ℓ"]),
        ("digits:linear,bogus", 2, ["'bogus'"]),
        ("trailing:2", 2, ["'trailing:2'", "leading:A"]),
    ],
)
def test_bad_specs_are_refused_naming_the_value(spec, length, words):
    with pytest.raises(ValueError) as err:
        get_schedule(spec, length=length)
    for w in words:
        assert w in str(err.value), str(err.value)


def test_time_inverse_and_mean_inverse():
    s = get_schedule("leading:3", length=2)
    u = torch.rand(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = s.time_from_mask_probability(u)
    assert torch.allclose(t[:, 0] ** 3, u[:, 0]) and torch.allclose(t[:, 1] ** (1 / 3), u[:, 1])
    v = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    tm = s.time_from_mean_mask_probability(v)
    assert torch.allclose((tm**3 + tm ** (1 / 3)) / 2, v, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# forward process: empirical mask frequency per digit position (text and image layouts)
# --------------------------------------------------------------------------------------------------


def test_mask_frequency_per_digit_position_text_and_image():
    sched = get_schedule("leading:3", length=2)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.3, 0.8])
    n = 20000
    # text: (B, L·ℓ), digit j of token i at i·ℓ + j
    y0 = torch.zeros(2, 2 * n, dtype=torch.long)
    y = mask_subtokens(y0, t, sched, 9, generator=g)
    for b in range(2):
        freq = (y[b].view(n, 2) == 9).double().mean(0)
        for j in range(2):
            p = G_LEADING3[j](float(t[b]))
            assert abs(float(freq[j]) - p) < 5 * math.sqrt(p * (1 - p) / n), (b, j, float(freq[j]), p)
    # images: (B, ch·ℓ, H, W), channel c·ℓ + j is digit j of channel c
    sub = SubTokenizer(9, 2)
    img = torch.randint(0, 9, (2, 3, 60, 60), generator=g)
    dig = sub.encode_image(img)
    y = mask_subtokens(dig, t, sched, sub.mask_id, generator=g)
    for b in range(2):
        for c in range(3):
            for j in range(2):
                freq = float((y[b, c * 2 + j] == sub.mask_id).double().mean())
                p = G_LEADING3[j](float(t[b]))
                assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / 3600) + 1e-9, (b, c, j, freq, p)


# --------------------------------------------------------------------------------------------------
# exact oracle
# --------------------------------------------------------------------------------------------------


ORACLE_SPECS = ["leading:3", "digits:polynomial:2,cosine", "leading:2.5"]


@pytest.mark.parametrize("spec", ORACLE_SPECS)
def test_oracle_exact_posterior_gives_minus_log_p_for_every_x(spec):
    sub = SubTokenizer(9, 2)
    probs = random_joint(9, 2, seed=3)
    post = ExactPosterior(probs, sub)
    sched = get_schedule(spec, length=2)
    for x in itertools.product(range(9), repeat=2):
        if sum(x) % 4:  # a quarter of the 81 sequences
            continue
        got = exact_digit_objectives(post, torch.tensor(x), sub, sched)["valid"]
        assert got == pytest.approx(-math.log(float(probs[x])), abs=1e-9), x


def test_oracle_three_digits_one_token():
    sub = SubTokenizer(8, 3, 2)
    probs = random_joint(8, 1, seed=5)
    post = ExactPosterior(probs, sub, 1)
    sched = get_schedule("digits:polynomial:3,linear,polynomial:0.5", length=3)
    for x in range(8):
        got = exact_digit_objectives(post, torch.tensor([x]), sub, sched)["valid"]
        assert got == pytest.approx(-math.log(float(probs[x])), abs=1e-9)


def test_oracle_shared_schedule_agrees_with_the_shared_oracle():
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 2, seed=1)
    x = torch.tensor([3, 7])
    a = exact_digit_objectives(model, x, sub, [{"name": "linear"}] * 2)
    b = exact_objectives(model, x, sub)
    assert a["valid"] == pytest.approx(b["valid"], rel=1e-10)
    assert a["prime"] == pytest.approx(b["prime"], rel=1e-10)


def test_oracle_bound_of_a_random_model_is_a_subprobability():
    """``L_valid(x) ≥ −log p_θ(x)`` with ``Σ_x p_θ(x) = 1`` implies ``Σ_x exp(−L_valid(x)) ≤ 1``; the
    exact posterior has equality (checked above), a random model a strict gap."""
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 2, seed=4)
    sched = get_schedule("leading:3", length=2)
    total = sum(
        math.exp(-exact_digit_objectives(model, torch.tensor(x), sub, sched)["valid"])
        for x in itertools.product(range(9), repeat=2)
    )
    assert total < 1.0 - 1e-3, total


# --------------------------------------------------------------------------------------------------
# Monte Carlo estimators against the oracle
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["leading:3", "digits:polynomial:2,cosine"])
@pytest.mark.parametrize("time_scale", [0.0, 0.7])
def test_integrated_estimator_matches_oracle(spec, time_scale):
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 2, seed=2, time_scale=time_scale)
    sched = get_schedule(spec, length=2)
    x = torch.tensor([[3, 7], [8, 0]])
    res = likelihood(model, x, sub, sched, num_times=3000, seed=1, batch_size=3000)
    for b in range(2):
        ex = exact_digit_objectives(model, x[b], sub, sched, quadrature_points=256 if not time_scale else 64)
        for key, est, se in (
            ("valid", res.nelbo[b], res.nelbo_stderr[b]),
            ("prime", res.prime_objective[b], res.prime_objective_stderr[b]),
        ):
            assert abs(float(est) - ex[key]) < 4 * float(se) + 1e-3, (key, b, float(est), float(se), ex[key])


def test_stratified_estimator_matches_oracle():
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 2, seed=6)
    sched = get_schedule("digits:polynomial:2,polynomial:1.5", length=2)
    x = torch.tensor([[1, 5]])
    res = likelihood(
        model, x, sub, sched, num_times=6000, seed=2, estimator="stratified", eps=1e-6, batch_size=6000
    )
    ex = exact_digit_objectives(model, x[0], sub, sched)
    assert abs(float(res.nelbo[0]) - ex["valid"]) < 4 * float(res.nelbo_stderr[0]), (res.nelbo, ex)
    assert abs(float(res.prime_objective[0]) - ex["prime"]) < 4 * float(res.prime_objective_stderr[0])


@pytest.mark.parametrize("objective", ["valid", "prime"])
def test_diffusion_loss_expectation_matches_oracle(objective):
    """The training loss (elbo weighting) is an unbiased one-draw estimate of the oracle's objective.
    Exponents > 1 keep its variance finite; times on a midpoint grid, masks random."""
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 2, seed=7)
    sched = get_schedule("digits:polynomial:2,polynomial:1.5", length=2)
    x = torch.tensor([6, 2])
    rows = 40000
    t = (torch.arange(rows, dtype=torch.float64) + 0.5) / rows
    out = diffusion_loss(
        model,
        x.expand(rows, 2),
        sub,
        sched,
        objective=objective,
        t=t.float(),
        generator=torch.Generator().manual_seed(0),
    )
    v = out.per_sequence.double()
    ex = exact_digit_objectives(model, x, sub, sched)[objective]
    se = float(v.std()) / math.sqrt(rows)
    assert abs(float(v.mean()) - ex) < 4 * se, (float(v.mean()), se, ex)


def test_mixture_is_the_mix_of_the_two_per_digit_objectives():
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 3, seed=8)
    sched = get_schedule("leading:2", length=2)
    x = torch.randint(0, 9, (16, 3), generator=torch.Generator().manual_seed(1))
    t = torch.rand(16, generator=torch.Generator().manual_seed(2)).clamp(min=0.01)
    u = torch.rand(16, 6, generator=torch.Generator().manual_seed(3))
    kw = dict(t=t, uniforms=u)
    prime = diffusion_loss(model, x, sub, sched, objective="prime", **kw).per_sequence
    valid = diffusion_loss(model, x, sub, sched, objective="valid", **kw).per_sequence
    mix = diffusion_loss(model, x, sub, sched, weighting="mixture", mix=0.3, **kw).per_sequence
    assert torch.allclose(mix, 0.7 * prime + 0.3 * valid, rtol=1e-6)
    # unweighted ignores the weights: the same as for any schedule with the same masks
    a = diffusion_loss(model, x, sub, sched, objective="valid", weighting="unweighted", **kw)
    y_t = a.y_t
    masked = (y_t == sub.mask_id).view(16, 3, 2)
    p = torch.stack([t**2, t**0.5], -1)  # leading:2 for ℓ = 2: exponents 2 and 1/2
    assert torch.equal(masked, u.view(16, 3, 2) < p.float().unsqueeze(1))


# --------------------------------------------------------------------------------------------------
# a per-digit schedule with equal positions takes the per-digit code and agrees with the shared one
# --------------------------------------------------------------------------------------------------


def test_per_digit_code_with_equal_positions_agrees_with_shared():
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 3, seed=9, time_scale=0.5)
    same = DigitSchedules(["polynomial:2", "polynomial:2"])  # not collapsed: per-digit code paths
    shared = get_schedule("polynomial:2")
    x = torch.tensor([[3, 7, 1], [0, 8, 4]])
    for est in ("integrated", "stratified"):
        a = likelihood(model, x, sub, same, num_times=8, seed=3, estimator=est)
        b = likelihood(model, x, sub, shared, num_times=8, seed=3, estimator=est)
        assert torch.allclose(a.nelbo, b.nelbo, rtol=1e-6) and torch.allclose(
            a.prime_objective, b.prime_objective, rtol=1e-6
        )
    for obj in ("valid", "prime"):
        kw = dict(objective=obj, generator=None)
        a = diffusion_loss(model, x, sub, same, generator=torch.Generator().manual_seed(1), objective=obj)
        b = diffusion_loss(model, x, sub, shared, generator=torch.Generator().manual_seed(1), objective=obj)
        assert torch.equal(a.y_t, b.y_t) and torch.allclose(a.per_sequence, b.per_sequence, rtol=1e-6), kw
    s1 = sample(model, sub, steps=6, num_samples=8, num_tokens=3, schedule=same, seed=2)
    s2 = sample(model, sub, steps=6, num_samples=8, num_tokens=3, schedule=shared, seed=2)
    assert torch.equal(s1.subtokens, s2.subtokens)
    d1 = discrete_time_bound(model, x, sub, steps=4, num_draws=3, schedule=same)
    d2 = discrete_time_bound(model, x, sub, steps=4, num_draws=3, schedule=shared)
    assert torch.allclose(d1.per_draw, d2.per_draw, rtol=1e-12)


def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# recorded with main's code before per-digit schedules existed (sample tokens and digits, masks,
# reveal steps: integers)
RECORDED = {"linear": "a642a0854f833ffc", "polynomial:2": "560703776915fff2", "cosine": "9878a8215065b966"}


@pytest.mark.parametrize("spec", sorted(RECORDED))
def test_shared_schedules_unchanged_bit_for_bit(spec):
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 3, 1, time_scale=0.5)
    x = torch.tensor([[3, 7, 1], [0, 8, 4]])
    g = torch.Generator().manual_seed(0)
    s = sample(model, sub, steps=5, num_samples=4, num_tokens=3, schedule=spec, seed=1)
    y = mask_subtokens(sub.encode(x), torch.tensor([0.3, 0.7]), get_schedule(spec), sub.mask_id, generator=g)
    k = reveal_steps(time_grid(6), get_schedule(spec), (2, 3, 6), torch.Generator().manual_seed(2))
    assert _digest(s.tokens, s.subtokens, y, k) == RECORDED[spec]


# --------------------------------------------------------------------------------------------------
# sampler
# --------------------------------------------------------------------------------------------------


def test_sampler_reveals_each_position_with_its_own_probability():
    sub = SubTokenizer(5, 2)  # b = 3: codes 5..8 invalid
    model = RandomDigitModel(sub, 2, seed=3)
    sched = get_schedule("leading:3", length=2)
    grid = torch.tensor([1.0, 0.6, 0.3, 0.0], dtype=torch.float64)
    n = 4000
    out = sample(model, sub, grid=grid, num_samples=n, num_tokens=2, schedule=sched, seed=0, record=True)
    traj = out.trajectory.long()
    for step, s in ((1, 0.6), (2, 0.3)):
        masked = (traj[step] == sub.mask_id).view(n, 2, 2).double()
        for j in range(2):
            p = G_LEADING3[j](s) / G_LEADING3[j](1.0)
            freq = float(masked[..., j].mean())
            assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / (2 * n)), (step, j, freq, p)
    # one step t → s: still masked after step 2 given masked after step 1 is g_j(0.3)/g_j(0.6)
    before = (traj[1] == sub.mask_id).view(n, 2, 2)
    after = (traj[2] == sub.mask_id).view(n, 2, 2)
    for j in range(2):
        p = G_LEADING3[j](0.3) / G_LEADING3[j](0.6)
        m = before[..., j]
        freq = float(after[..., j][m].double().mean())
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / int(m.sum())), (j, freq, p)
    assert out.tokens.min() >= 0 and out.tokens.max() < 5
    assert torch.equal(sub.encode(out.tokens), out.subtokens)  # every token a valid class


def test_corrector_refuses_per_digit_schedules():
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 2, seed=0)
    with pytest.raises(ValueError, match="corrector"):
        sample(
            model,
            sub,
            steps=4,
            num_samples=2,
            num_tokens=2,
            schedule="leading:2",
            corrector_scale=1.0,
            seed=0,
        )


# --------------------------------------------------------------------------------------------------
# discrete-time bound
# --------------------------------------------------------------------------------------------------


def test_reveal_steps_follow_each_position_schedule():
    sched = get_schedule("leading:3", length=2)
    grid = time_grid(4)
    k = reveal_steps(grid, sched, (20000, 4), torch.Generator().manual_seed(0))
    tk = grid.tolist()
    for j in range(2):
        counts = torch.bincount(k[:, j::2].flatten(), minlength=4).double() / 40000
        g = [G_LEADING3[j](v) for v in tk]
        expected = [(g[i] - g[i + 1]) / g[0] for i in range(4)]
        assert np.allclose(counts.numpy(), expected, atol=0.01), (j, counts, expected)


def test_discrete_bound_tends_to_the_oracle():
    sub = SubTokenizer(9, 2)
    model = RandomDigitModel(sub, 2, seed=5)
    sched = get_schedule("leading:3", length=2)
    x = torch.tensor([[4, 1]])
    ex = exact_digit_objectives(model, x[0], sub, sched)["valid"]
    res = discrete_time_bound(model, x, sub, steps=2048, num_draws=3000, schedule=sched, batch_size=4096)
    assert abs(float(res.nelbo[0]) - ex) < 4 * float(res.nelbo_stderr[0]) + 0.02, (float(res.nelbo[0]), ex)


def test_discrete_bound_exact_posterior_one_token_every_T():
    sub = SubTokenizer(9, 2)
    probs = random_joint(9, 1, seed=2)
    post = ExactPosterior(probs, sub, 1)
    x = torch.tensor([[4]])
    for steps in (1, 3, 50):
        res = discrete_time_bound(
            post, x, sub, steps=steps, num_draws=8, schedule=get_schedule("leading:3", length=2)
        )
        assert torch.allclose(
            res.per_draw, torch.full_like(res.per_draw, -math.log(float(probs[4]))), atol=1e-9
        )


# --------------------------------------------------------------------------------------------------
# training config, checkpoint round trip, evaluation
# --------------------------------------------------------------------------------------------------


def test_config_refuses_bad_schedules_naming_the_value():
    from mdm_prime.configs import resolve_config

    with pytest.raises(ValueError, match=r"schedule='digits:linear,linear,linear'.*subtokens=2"):
        resolve_config("text-tiny", {"schedule": "digits:linear,linear,linear", "subtokens": "2"})
    with pytest.raises(ValueError, match=r"schedule='sometimes'"):
        resolve_config("text-tiny", {"schedule": "sometimes"})
    cfg = resolve_config("text-tiny", {"schedule": "leading:2", "subtokens": "3"})
    assert cfg.schedule == "leading:2"


def test_leading_schedule_trains_saves_loads_and_evaluates(tmp_path):
    from mdm_prime.configs import resolve_config
    from mdm_prime.evaluate import evaluate_model, load_run
    from mdm_prime.train import train

    cfg = resolve_config(
        "text-tiny",
        {
            "data": "markov:states=4,concentration=0.1",
            "seq_len": 8,
            "batch_size": 8,
            "max_steps": 2,
            "warmup_steps": 0,
            "eval_every": 0,
            "log_every": 1,
            "num_preview_samples": 0,
            "final_eval_sequences": 8,
            "final_eval_num_times": 2,
            "checkpoint_every": 2,
            "precision": "fp32",
            "ema_decay": 0.0,
            "schedule": "leading:2",
            "objective": "valid",
        },
    )
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert math.isfinite(result["nelbo_nats_per_token"])
    _, task, model = load_run(tmp_path / "run")
    assert model.schedule == get_schedule("leading:2", length=2)
    assert model.config["schedule"]["name"] == "digits"
    again = evaluate_model(model, task, num_sequences=8, num_times=2, seed=cfg.seed)
    assert again["nelbo_nats_per_token"] == pytest.approx(result["nelbo_nats_per_token"], rel=1e-6)
