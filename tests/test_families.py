"""The family seam: the trainer optimises exactly the library's loss, and the name table is the only
place that knows the families."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mdm_prime import diffusion_loss, get_schedule
from mdm_prime.configs import resolve_config
from mdm_prime.families import FAMILIES, AutoregressiveFamily, DiffusionFamily, family_of, get_family
from mdm_prime.process import sample_times
from mdm_prime.train import Trainer

DATA = "markov:states=4,concentration=0.1"


def _trainer(tmp_path, **overrides):
    base = {
        "data": DATA,
        "seq_len": 8,
        "batch_size": 8,
        "max_steps": 3,
        "lr": 1e-2,
        "warmup_steps": 0,
        "eval_every": 0,
        "log_every": 1,
        "num_preview_samples": 0,
        "checkpoint_every": 0,
        "precision": "fp32",
        "model_size": "tiny",
        "model_overrides": {"dim": 32, "depth": 1, "heads": 2},
    }
    base.update(overrides)
    return Trainer(resolve_config("text-tiny", base), tmp_path / "run", show_progress=False)


def _documented_draws(trainer, generator_state):
    """The global batch and noise of one step, drawn as docs/method.md and train.py describe: a fresh
    Markov batch from the run generator (an infinite task), then stratified times, then the mask uniforms."""
    g = torch.Generator()
    g.set_state(generator_state)
    cfg = trainer.cfg
    x0 = trainer.task.sample_train(cfg.batch_size, g)
    t = sample_times(cfg.batch_size, eps=cfg.time_eps, generator=g)
    u = torch.rand(cfg.batch_size, x0.shape[1] * cfg.subtokens, generator=g)
    return x0, t, u


@pytest.mark.parametrize(
    "family, ell, objective, weighting, mix",
    [
        ("prime", 2, "prime", "elbo", 0.5),
        ("prime", 2, "valid", "elbo", 0.5),
        ("prime", 4, "valid", "elbo", 0.5),
        ("mdm", 1, "prime", "elbo", 0.5),
        ("ar", 1, "prime", "elbo", 0.5),
        ("prime", 2, "prime", "unweighted", 0.5),
        ("prime", 2, "valid", "unweighted", 0.5),
        ("mdm", 1, "valid", "unweighted", 0.5),
        ("prime", 2, "prime", "mixture", 0.25),
        ("prime", 4, "prime", "mixture", 0.75),
    ],
)
def test_trainer_loss_is_the_library_loss_bit_for_bit(tmp_path, family, ell, objective, weighting, mix):
    trainer = _trainer(
        tmp_path, family=family, subtokens=ell, objective=objective, loss_weighting=weighting, loss_mix=mix
    )
    for _ in range(2):  # the second step starts from updated weights and a moved generator
        before = copy.deepcopy(trainer.model).train()
        state = trainer.generator.get_state()
        reported = trainer.train_step()
        x0, t, u = _documented_draws(trainer, state)
        if family == "ar":
            per_seq = -before.log_likelihood(x0)
        else:
            per_seq = diffusion_loss(
                before,
                x0,
                before.subtokenizer,
                get_schedule(trainer.cfg.schedule),
                objective=objective,
                t=t,
                uniforms=u,
                weighting=weighting,
                mix=mix,
            ).per_sequence
        expected = float(per_seq.detach().sum()) / x0.numel()
        assert reported == expected  # bit for bit: the same function on the same noise


def test_diffusion_loss_with_given_noise_masks_exactly_where_uniforms_fall_below_the_mask_probability():
    from mdm_prime import SubTokenizer

    sub = SubTokenizer(num_classes=9, length=2)
    x0 = torch.tensor([[0, 4, 8], [1, 2, 3]])
    t = torch.tensor([0.5, 0.25])
    u = torch.tensor([[0.1, 0.6, 0.49, 0.51, 0.0, 0.99], [0.2, 0.3, 0.24, 0.26, 0.9, 0.1]])
    seen = {}

    def model(y_t, tt):
        seen["y_t"] = y_t.clone()
        return torch.zeros(y_t.shape[0], 3, 9)

    diffusion_loss(model, x0, sub, "linear", t=t, uniforms=u)
    masked = seen["y_t"] == sub.mask_id
    # linear schedule: mask probability is t (0.5 and 0.25), written out by hand
    expected = torch.tensor(
        [[True, False, True, False, True, False], [True, False, True, False, False, True]]
    )
    assert torch.equal(masked, expected)
    with pytest.raises(ValueError, match="uniforms"):
        diffusion_loss(model, x0, sub, "linear", t=t, uniforms=u[:, :4])


def test_the_table_names_every_family_and_models_find_theirs():
    assert set(FAMILIES) == {"prime", "mdm", "ar"}
    assert isinstance(get_family("prime"), DiffusionFamily) and get_family("mdm").fixed_subtokens == 1
    assert isinstance(get_family("ar"), AutoregressiveFamily) and get_family("ar").exact_likelihood
    with pytest.raises(ValueError, match="unknown model family 'nope'"):
        get_family("nope")
    from mdm_prime.models import build_model, causal_transformer_config, transformer_config

    assert family_of(build_model(causal_transformer_config("tiny", num_classes=5, seq_len=4))).name == "ar"
    assert (
        family_of(build_model(transformer_config("tiny", num_classes=5, length=2, seq_len=4))).name == "prime"
    )
    assert (
        family_of(build_model(transformer_config("tiny", num_classes=5, length=1, seq_len=4))).name == "mdm"
    )


def test_only_the_family_table_names_a_family():
    src = Path(__file__).resolve().parents[1] / "src" / "mdm_prime"
    hits = subprocess.run(
        ["grep", "-rn", '"ar"', str(src)], capture_output=True, text=True
    ).stdout.splitlines()
    files = {Path(h.split(":", 1)[0]).relative_to(src).as_posix() for h in hits}
    assert files <= {"families.py", "models/causal.py"}, hits


def test_autoregressive_family_refuses_infilling():
    from mdm_prime.models import build_model, causal_transformer_config

    model = build_model(causal_transformer_config("tiny", num_classes=5, seq_len=4))
    with pytest.raises(ValueError, match="diffusion run"):
        get_family("ar").generate(
            model,
            num=2,
            num_tokens=4,
            infill=(torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.bool)),
        )
    tokens, stats = get_family("ar").generate(model, num=5, num_tokens=4, batch_size=2, seed=1)
    assert tokens.shape == (5, 4) and stats["network_calls_mean"] == 4.0


def test_a_network_registered_in_the_table_is_built_by_the_family(tmp_path, monkeypatch):
    """The "add a network" recipe: one row in ``ARCHITECTURES`` (class, config function, shape) and the
    diffusion family builds it from a config, with the task's shape and the config's overrides; names
    not in the table (or only the AR network) are refused with the table's names."""
    from mdm_prime import models as M
    from mdm_prime.tasks import build_task

    class Wider(M.DiffusionTransformer):
        pass

    def wider_config(size, **kwargs):
        return {**M.transformer_config(size, **kwargs), "architecture": "wider"}

    monkeypatch.setitem(M.ARCHITECTURES, "wider", M.Architecture(Wider, wider_config))

    def config(arch):
        small = {"model_size": "tiny", "model_overrides": {"dim": 32, "depth": 1, "heads": 2}}
        return resolve_config(
            "text-tiny", {"data": DATA, "seq_len": 8, "subtokens": 2, "architecture": arch, **small}
        )

    cfg = config("wider")
    task = build_task(cfg)
    model = get_family("prime").build_model(cfg, task)
    assert type(model) is Wider and model.seq_len == 8 and model.subtokenizer.length == 2
    assert model.config["dim"] == 32 and model.config["depth"] == 1  # the overrides reached it
    for bad in ("rnn", "causal_transformer"):
        with pytest.raises(
            ValueError, match=rf"unknown architecture '{bad}'; expected auto, transformer, .*wider"
        ):
            get_family("prime").build_model(config(bad), task)
    with pytest.raises(ValueError, match="'unet' needs image data"):
        get_family("prime").build_model(config("unet"), task)


def test_one_sample_request_for_every_family():
    """``generate(model, SampleRequest(...))`` and ``generate(model, **fields)`` are the same request:
    the same samples and stats; keywords beside a request override its fields; chunked requests
    (``batch_size``) are seeded chunk by chunk; two conditionings at once are refused."""
    from mdm_prime import SampleRequest
    from mdm_prime.models import build_model, causal_transformer_config, transformer_config

    prime = build_model(transformer_config("tiny", num_classes=6, length=2, seq_len=4, precision="fp32"))
    ar = build_model(causal_transformer_config("tiny", num_classes=6, seq_len=4))
    for name, model in (("prime", prime), ("ar", ar)):
        family = get_family(name)
        request = SampleRequest(num=5, num_tokens=4, steps=4, seed=3, batch_size=2)
        a, st_a = family.generate(model, request)
        b, st_b = family.generate(model, num=5, num_tokens=4, steps=4, seed=3, batch_size=2)
        assert torch.equal(a, b) and st_a["network_calls_mean"] == st_b["network_calls_mean"]
        first, _ = family.generate(model, request, num=2, batch_size=None)  # chunk 0 is seeded 3
        assert torch.equal(first, a[:2])
        second, _ = family.generate(model, request, num=2, seed=4, batch_size=None)  # chunk 1: seed 4
        assert torch.equal(second, a[2:4])
    prefix = torch.zeros(2, 1, dtype=torch.long)
    infill = (torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.bool))
    with pytest.raises(
        ValueError, match="at most one of prefix, infill and keep_digits; got prefix and infill"
    ):
        SampleRequest(num=2, num_tokens=4, prefix=prefix, infill=infill)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
