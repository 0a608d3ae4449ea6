"""Codes (docs/method.md §1b): every kind is a bijection onto the valid codes, ``frequency`` and
``cluster`` do what they say, a code survives save/load and resume, and the exact oracle's ``L_valid``
is the entropy under every code."""

import json

import numpy as np
import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.checkpoint import load_pretrained, save_pretrained
from mdm_prime.codes import CODE_KINDS, make_permutation, training_sample
from mdm_prime.configs import resolve_config
from mdm_prime.models import build_model, transformer_config
from mdm_prime.oracle import ExactPosterior, exact_objectives
from mdm_prime.train import Trainer

from .helpers import random_joint


def _two_groups(n: int = 200, seq_len: int = 12, seed: int = 0) -> torch.Tensor:
    """Sequences that use only classes 0-3 or only classes 4-7 (each class is followed by its group)."""
    g = torch.Generator().manual_seed(seed)
    group = torch.randint(0, 2, (n, 1), generator=g)
    return torch.randint(0, 4, (n, seq_len), generator=g) + 4 * group


@pytest.mark.parametrize("kind", CODE_KINDS)
@pytest.mark.parametrize("c,ell", [(8, 3), (7, 2), (10, 2), (300, 2)])
def test_every_kind_is_a_bijection_onto_the_valid_codes(kind, c, ell):
    sub0 = SubTokenizer(c, ell)
    tokens = torch.randint(0, c, (50, 16), generator=torch.Generator().manual_seed(1))
    perm = make_permutation(kind, tokens, c, base=sub0.base, length=ell, seed=3)
    if kind == "index":
        assert perm is None
        return
    assert sorted(perm) == list(range(c))
    sub = SubTokenizer(c, ell, permutation=perm)
    x = torch.arange(c)[None]
    assert torch.equal(sub.decode(sub.encode(x)), x)
    assert bool((sub.class_of_code[c:] == -1).all())  # codes C..b^ℓ-1 stay invalid
    assert sorted(sub.code_of_class.tolist()) == list(range(c))
    assert make_permutation(kind, tokens, c, base=sub0.base, length=ell, seed=3) == perm  # deterministic


def test_frequency_puts_the_most_frequent_class_first():
    # counts: class 2 ×5, class 0 ×3, class 4 ×3, class 1 ×1, class 3 absent
    tokens = torch.tensor([[2, 2, 2, 2, 2, 0, 0, 0, 4, 4, 4, 1]])
    perm = make_permutation("frequency", tokens, 5, base=3, length=2)
    assert perm == [1, 3, 0, 4, 2]  # ranks: 2 → 0, 0 → 1 (tie with 4, smaller id first), 4 → 2, 1 → 3, 3 last


def test_cluster_puts_each_group_under_one_leading_digit():
    tokens = _two_groups()
    perm = make_permutation("cluster", tokens, 8, base=2, length=3)
    sub = SubTokenizer(8, 3, permutation=perm)
    lead = sub.digit_table[:, 0]
    assert len(set(lead[:4].tolist())) == 1 and len(set(lead[4:].tolist())) == 1
    assert lead[0] != lead[4]
    # an index code splits the same way only by luck of the ids; a shuffled one mixes the groups
    shuffled = SubTokenizer(8, 3, permutation=[0, 4, 1, 5, 2, 6, 3, 7]).digit_table[:, 0]
    assert len(set(shuffled[:4].tolist())) == 2


def test_cluster_with_a_random_projection_and_uneven_groups():
    # C = 40 > PROJECTION_DIM: groups 0-19 and 20-39; b = 7, ℓ = 2: leading digits 0..5 (6 uses 40 - 42 < 0)
    g = torch.Generator().manual_seed(0)
    group = torch.randint(0, 2, (400, 1), generator=g)
    tokens = torch.randint(0, 20, (400, 16), generator=g) + 20 * group
    perm = make_permutation("cluster", tokens, 40, base=7, length=2, seed=5)
    assert sorted(perm) == list(range(40))
    lead = SubTokenizer(40, 2, permutation=perm).digit_table[:, 0]
    # the two groups never share a leading digit except the one block straddling code 20
    shared = set(lead[:20].tolist()) & set(lead[20:].tolist())
    assert len(shared) <= 1


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown codes"):
        make_permutation("random", None, 4, base=2, length=2)


@pytest.mark.parametrize("kind", CODE_KINDS)
def test_exact_oracle_is_tight_at_the_entropy_under_every_code(kind):
    c, num_tokens = 5, 2
    probs = random_joint(c, num_tokens, seed=4)
    sample = torch.multinomial(
        probs.flatten(), 64, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    tokens = torch.stack([sample // c, sample % c], dim=1)
    perm = make_permutation(kind, tokens, c, base=3, length=2, seed=1)
    sub = SubTokenizer(c, 2, permutation=perm)
    model = ExactPosterior(probs, sub)
    flat = probs.flatten().numpy()
    h = float(-(flat * np.log(flat)).sum())
    total = 0.0
    for idx in range(c**num_tokens):
        x = torch.tensor([idx // c, idx % c])
        r = exact_objectives(model, x, sub)
        assert r["valid"] == pytest.approx(-np.log(flat[idx]), rel=1e-6, abs=1e-9)
        total += flat[idx] * r["valid"]
    assert total == pytest.approx(h, rel=1e-8)


def test_a_code_survives_save_and_load(tmp_path):
    perm = make_permutation("cluster", _two_groups(), 8, base=2, length=3)
    conf = transformer_config(
        "tiny", num_classes=8, length=3, base=2, permutation=perm, seq_len=6, dim=24, depth=1, heads=2
    )
    torch.manual_seed(0)
    model = build_model(conf).eval()
    save_pretrained(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["model"]["subtokenizer"]["permutation"] == perm
    loaded = load_pretrained(tmp_path / "ckpt").eval()
    assert loaded.subtokenizer == model.subtokenizer
    y = model.subtokenizer.encode(torch.randint(0, 8, (3, 6), generator=torch.Generator().manual_seed(2)))
    y[:, ::4] = model.subtokenizer.mask_id
    t = torch.full((3,), 0.5)
    with torch.no_grad():
        assert torch.equal(model(y, t), loaded(y, t))


def _run_cfg(**overrides):
    base = {
        "data": "markov:states=6,concentration=0.1",
        "subtokens": 2,
        "codes": "cluster",
        "seq_len": 8,
        "batch_size": 8,
        "max_steps": 3,
        "lr": 1e-2,
        "warmup_steps": 0,
        "eval_every": 0,
        "log_every": 1,
        "num_preview_samples": 0,
        "checkpoint_every": 0,
        "eval_sequences": 4,
        "final_eval_sequences": 4,
        "eval_num_times": 2,
        "final_eval_num_times": 2,
        "precision": "fp32",
        "model_overrides": {"dim": 16, "depth": 1, "heads": 2},
    }
    base.update(overrides)
    return resolve_config("text-tiny", base)


def test_a_run_with_a_code_stores_it_and_resume_keeps_it(tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = Trainer(_run_cfg(), out, show_progress=False)
    perm = trainer.model.subtokenizer.permutation.tolist()
    expected = make_permutation(
        "cluster", training_sample(trainer.task, seed=0), 6, base=trainer.model.subtokenizer.base, length=2
    )
    assert perm == expected
    try:
        trainer.run()
    finally:
        trainer.folder.release()
    saved = json.loads((out / "checkpoint" / "config.json").read_text())["model"]["subtokenizer"]
    assert saved["permutation"] == perm

    # resume reads the code back from the checkpoint: computing it again is an error here
    import mdm_prime.codes as codes_mod

    def must_not_run(*args, **kwargs):
        raise AssertionError("resume recomputed the code")

    monkeypatch.setattr(codes_mod, "make_permutation", must_not_run)
    resumed = Trainer(_run_cfg(max_steps=5), out, resume=True, show_progress=False)
    assert resumed.model.subtokenizer.permutation.tolist() == perm
    assert resumed.step == 3
    try:
        resumed.run()
    finally:
        resumed.folder.release()
    again = json.loads((out / "checkpoint" / "config.json").read_text())["model"]["subtokenizer"]
    assert again["permutation"] == perm


def test_index_codes_leave_the_model_config_as_before(tmp_path):
    trainer = Trainer(_run_cfg(codes="index"), tmp_path / "run", show_progress=False)
    trainer.folder.release()
    assert trainer.model.subtokenizer.permutation is None
    assert trainer.model.config["subtokenizer"]["permutation"] is None


def _small_bpe_corpus(root) -> str:
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "red", "door", "and", "then", "slept"]
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(words, size=40)) + "." for _ in range(80)]
    path = root / "corpus.txt"
    path.write_text("\n\n".join(docs))
    return f"text:{path}"


@pytest.mark.parametrize("kind", ["frequency", "cluster"])
@pytest.mark.parametrize("setting", ["bpe", "image"])
def test_codes_on_bpe_tokens_and_image_levels(tmp_path, kind, setting):
    """A code computed from BPE tokens (C = the trained vocabulary) or from image intensity levels
    (the 8×8 digits, 17 levels, ℓ = 2 of base 5): a bijection onto valid codes, the frequency code's
    first class is the most frequent token counted here with numpy, and the run trains, saves and
    evaluates with it."""
    if setting == "bpe":
        cfg = _run_cfg(data=_small_bpe_corpus(tmp_path), tokenizer="bpe:300", codes=kind, seq_len=16)
    else:
        cfg = resolve_config(
            "mnist-small",
            {
                **{
                    k: v for k, v in vars(_run_cfg()).items() if k in ("max_steps", "eval_every", "log_every")
                },
                "data": "digits",
                "subtokens": 2,
                "codes": kind,
                "batch_size": 8,
                "num_preview_samples": 0,
                "checkpoint_every": 0,
                "final_eval_sequences": 4,
                "final_eval_num_times": 2,
                "precision": "fp32",
            },
        )
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    sub = trainer.model.subtokenizer
    c = sub.num_classes
    perm = sub.permutation.tolist()
    assert sorted(perm) == list(range(c)) and max(perm) < sub.base**sub.length
    if kind == "frequency":
        counts = np.bincount(np.asarray(training_sample(trainer.task)).reshape(-1), minlength=c)
        assert perm[int(counts.argmax())] == 0  # the most frequent class gets the first code
    try:
        trainer.run()
    finally:
        trainer.folder.release()
    saved = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["model"]["subtokenizer"]
    assert saved["permutation"] == perm
    final = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final.get("final") is True and np.isfinite(final["nelbo_nats_per_token"])
