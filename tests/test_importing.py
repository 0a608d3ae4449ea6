"""``mdm_prime.importing``: published MDLM / MDLM-Prime checkpoints → this package, safely.

Checkpoints are built here in the authors' Lightning format with ``torch.save`` (no network, no real
checkpoint): weights under ``state_dict["backbone.*"]`` (with the rotary ``inv_freq`` buffer), EMA
weights as ``ema["shadow_params"]`` in ``backbone.parameters()`` order, optimizer state, Lightning
``loops``/``callbacks``, and hyper-parameters as the authors store them — an omegaconf ``DictConfig``
(emulated by classes registered under the module names ``omegaconf.dictconfig`` / ``omegaconf.nodes``
/ ``omegaconf.base`` that pickle like omegaconf: ``_content`` dicts of nodes holding ``_val``) and a
tokenizer object whose pickle calls a function of a fake ``tokenizers`` module — or a plain dict.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mdm_prime import likelihood
from mdm_prime.checkpoint import load_pretrained
from mdm_prime.cli import main
from mdm_prime.importing import (
    CheckpointImportError,
    SafeCheckpointReader,
    UnsafeCheckpointError,
    import_checkpoint,
    to_plain,
    write_run_folder,
)
from mdm_prime.models import build_model
from mdm_prime.models.mdlm_dit import mdlm_dit_config

FIXTURE = Path(__file__).parent / "fixtures" / "authors_dit_tiny.safetensors"
MARKER_ENV = "MDM_PRIME_TEST_MARKER"


# ----------------------------------------------------------------------------- authors' format
def _fake_modules(monkeypatch, marker: Path):
    """omegaconf-like config classes and a tokenizer whose unpickling would call a fake function."""
    mods = {
        n: types.ModuleType(n)
        for n in (
            "omegaconf",
            "omegaconf.dictconfig",
            "omegaconf.nodes",
            "omegaconf.base",
            "tokenizers",
            "transformers",
            "transformers.models.gpt2.tokenization_gpt2_fast",
        )
    }

    class ContainerMetadata:
        def __init__(self):
            self.ref_type, self.object_type, self.key_type, self.flags = None, dict, None, {}

    class AnyNode:
        def __init__(self, value):
            self._val, self._metadata, self._parent = value, ContainerMetadata(), None

    class DictConfig:
        def __init__(self, content):
            self.__dict__["_content"] = {
                k: DictConfig(v) if isinstance(v, dict) else AnyNode(v) for k, v in content.items()
            }
            self.__dict__["_metadata"] = ContainerMetadata()
            self.__dict__["_parent"] = None
            self.__dict__["_flags_cache"] = None

        def __getstate__(self):
            state = dict(self.__dict__)
            state.pop("_flags_cache")
            return state

    def from_str(text):  # would leave a marker if the loader ever called it
        Path(os.environ[MARKER_ENV]).write_text("executed " + text)

    class Tokenizer:
        def __reduce__(self):
            return (from_str, ('{"model": "BPE"}',))

    class GPT2TokenizerFast:
        def __init__(self):
            self._tokenizer, self.vocab_size, self.name_or_path = Tokenizer(), 50257, "gpt2"

    for cls, mod in (
        (ContainerMetadata, "omegaconf.base"),
        (AnyNode, "omegaconf.nodes"),
        (DictConfig, "omegaconf.dictconfig"),
        (Tokenizer, "tokenizers"),
        (GPT2TokenizerFast, "transformers.models.gpt2.tokenization_gpt2_fast"),
    ):
        cls.__module__, cls.__qualname__ = mod, cls.__name__
        setattr(mods[mod], cls.__name__, cls)
    from_str.__module__, from_str.__qualname__ = "tokenizers", "from_str"
    mods["tokenizers"].from_str = from_str
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setenv(MARKER_ENV, str(marker))
    return DictConfig, GPT2TokenizerFast


def _hparams(model, **changes) -> dict:
    c, sub = model.config, model.subtokenizer
    hp = {
        "backbone": "dit",
        "parameterization": "subs",
        "time_conditioning": model.time_conditioned,
        "T": 0,
        "model": {
            "name": "tiny",
            "type": "ddit",
            "hidden_size": c["dim"],
            "cond_dim": c["cond_dim"],
            "length": model.seq_len,
            "n_blocks": c["depth"],
            "n_heads": c["heads"],
            "scale_by_sigma": True,
            "dropout": 0.1,
        },
        "prime": {
            "target_length": sub.length,
            "base": sub.base,
            "vocab_size": sub.num_classes,
            "seq_length": model.seq_len,
            "carry_over": True,
        },
        "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
        "loader": {"batch_size": "${div_up:512, 8}"},
    }
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            hp[section][name] = value
        else:
            hp[section] = value
    return hp


def authors_checkpoint(
    path: Path,
    raw: torch.nn.Module,
    ema: torch.nn.Module | None,
    *,
    hparams=None,
    with_inv_freq: bool = True,
    fakes=None,
) -> Path:
    """``torch.save`` a Lightning-style checkpoint of the replica's weights (authors' keys)."""
    state = collections.OrderedDict()
    for k, v in raw.state_dict().items():
        state["backbone." + k] = v.clone()
        if k == "sigma_map.mlp.2.bias" and with_inv_freq:
            dh = raw.config["dim"] // raw.config["heads"]
            state["backbone.rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, dh, 2).float() / dh))
    params = list(raw.parameters())
    ckpt = {
        "epoch": 3,
        "global_step": 1000,
        "pytorch-lightning_version": "2.2.1",
        "state_dict": state,
        "loops": {
            "fit_loop": {
                "epoch_progress": {"current": {"completed": 3}},
                "epoch_loop.batch_progress": {"current": {"completed": 1000}},
            }
        },
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val/nll'}": {
                "best_model_score": torch.tensor(3.25),
                "dirpath": "/app/results/checkpoints",
            }
        },
        "optimizer_states": [
            {
                "state": {
                    i: {
                        "step": torch.tensor(1000.0),
                        "exp_avg": torch.randn_like(p),
                        "exp_avg_sq": torch.rand_like(p),
                    }
                    for i, p in enumerate(params)
                },
                "param_groups": [{"lr": 3e-4, "betas": (0.9, 0.999), "params": list(range(len(params)))}],
            }
        ],
        "lr_schedulers": [{"base_lrs": [3e-4], "last_epoch": 1000, "_last_lr": [3e-4], "lr_lambdas": [None]}],
        "hparams_name": "kwargs",
        "sampler": {"random_state": None},
    }
    if ema is not None:
        ckpt["ema"] = {
            "decay": 0.9999,
            "num_updates": 1000,
            "shadow_params": [p.detach().clone() for p in ema.parameters()],
            "collected_params": [],
        }
    if hparams is not None:
        if fakes is not None:
            DictConfig, Tok = fakes
            ckpt["hyper_parameters"] = {"config": DictConfig(hparams), "tokenizer": Tok()}
        else:
            ckpt["hyper_parameters"] = {"config": hparams}
    torch.save(ckpt, path)
    return path


def _random_model(num_classes=300, length=2, seq_len=8, seed=0, **kw):
    torch.manual_seed(seed)
    model = build_model(
        mdlm_dit_config(
            "tiny", num_classes=num_classes, length=length, seq_len=seq_len, precision="fp32", **kw
        )
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def _perturbed(model, seed=1):
    other = build_model(model.config).eval()
    other.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return other


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    return _fake_modules(monkeypatch, tmp_path / "marker")


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("length", [1, 2, 4])
def test_weights_round_trip_exactly_with_ema_and_raw(tmp_path, fakes, length):
    raw = _random_model(num_classes=250, length=length)
    ema = _perturbed(raw)
    path = authors_checkpoint(tmp_path / "checkpoint.ckpt", raw, ema, hparams=_hparams(raw), fakes=fakes)
    for sys_name in [n for n in sys.modules if n.startswith(("omegaconf", "tokenizers", "transformers"))]:
        del sys.modules[sys_name]  # the loader must not need (or import) them
    for weights, want in (("ema", ema), ("raw", raw)):
        model, meta = import_checkpoint(path, weights=weights, precision="fp32")
        got, exp = model.state_dict(), want.state_dict()
        assert list(got) == list(exp)
        assert all(torch.equal(got[k], exp[k]) for k in exp), weights
        assert meta["weights"] == weights and meta["global_step"] == 1000
        assert meta["sizes"] == {
            "subtokens": length,
            "base": raw.subtokenizer.base,
            "num_classes": 250,
            "dim": 64,
            "depth": 2,
            "heads": 2,
            "cond_dim": 32,
            "seq_len": 8,
            "time_conditioned": False,
        }
        assert model.config == raw.config | {"dropout": 0.1}
    assert not (tmp_path / "marker").exists()


def test_hparams_are_read_as_plain_data(tmp_path, fakes):
    raw = _random_model()
    path = authors_checkpoint(tmp_path / "c.ckpt", raw, raw, hparams=_hparams(raw), fakes=fakes)
    tree = SafeCheckpointReader(path).load()
    hp = to_plain(tree["hyper_parameters"])
    assert hp["config"]["model"]["n_heads"] == 2 and hp["config"]["prime"]["carry_over"] is True
    assert hp["config"]["loader"]["batch_size"] == "${div_up:512, 8}"
    assert "record of" in repr(tree["hyper_parameters"]["tokenizer"])  # inert, never constructed
    assert not (tmp_path / "marker").exists()


def test_plain_dict_hparams_and_shape_inference_without_hparams(tmp_path):
    raw = _random_model(num_classes=100, length=3, seq_len=6, dim=48, heads=4, cond_dim=16)
    path = authors_checkpoint(tmp_path / "a.ckpt", raw, raw, hparams=_hparams(raw))
    _, meta = import_checkpoint(path)
    assert meta["sizes"]["subtokens"] == 3 and meta["sizes"]["base"] == 5 and meta["sizes"]["heads"] == 4
    bare = authors_checkpoint(tmp_path / "b.ckpt", raw, raw, hparams=None)
    with pytest.raises(CheckpointImportError, match="does not record heads"):
        import_checkpoint(bare)
    _, meta = import_checkpoint(bare, heads=4, seq_len=6)
    assert meta["sizes"] == {
        "subtokens": 3,
        "base": 5,
        "num_classes": 100,
        "dim": 48,
        "depth": 2,
        "heads": 4,
        "cond_dim": 16,
        "seq_len": 6,
        "time_conditioned": False,
    }
    with pytest.raises(CheckpointImportError, match="heads"):  # the rotary buffer exposes wrong heads
        import_checkpoint(bare, heads=2, seq_len=6)


def test_imported_logits_equal_the_authors_forward(tmp_path):
    """Weights of the fixture (made by the authors' forward pass, see tests/models/test_model_mdlm_dit.py)
    in a Lightning checkpoint → import → the authors' logits."""
    data = load_file(FIXTURE)
    for name in ("mdlm", "prime3", "prime2_time"):
        ell, C, _, dim, heads, cond, blocks, L, timed = data[f"{name}/meta"].tolist()
        prefix = f"{name}/backbone."
        state = collections.OrderedDict(
            (k[len(f"{name}/") :], v) for k, v in data.items() if k.startswith(prefix)
        )
        hp = {
            "backbone": "dit",
            "parameterization": "subs",
            "time_conditioning": bool(timed),
            "model": {
                "hidden_size": dim,
                "n_heads": heads,
                "n_blocks": blocks,
                "cond_dim": cond,
                "length": L,
            },
            "prime": {"target_length": ell},
            "noise": {"type": "loglinear", "eps": 1e-3},
        }
        path = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": state, "hyper_parameters": {"config": hp}}, path)
        model, _ = import_checkpoint(path, weights="raw", precision="fp32")
        with torch.no_grad():
            got = model(data[f"{name}/input_yt"], data[f"{name}/input_t"])
        torch.testing.assert_close(got, data[f"{name}/logits"][..., :C], rtol=1e-5, atol=2e-5)
        assert model.time_conditioned is bool(timed)


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __init__(self, fn, arg):
            self.fn, self.arg = fn, arg

        def __reduce__(self):
            return (self.fn, (self.arg,))

    raw = _random_model()
    cases = {
        "os_system": Evil(os.system, f"touch {marker}"),
        "exec": Evil(exec, f"open({str(marker)!r}, 'w').write('x')"),
        "eval": Evil(eval, f"open({str(marker)!r}, 'w')"),
    }
    for name, evil in cases.items():
        path = authors_checkpoint(tmp_path / f"{name}.ckpt", raw, raw, hparams={"config": {}, "x": evil})
        with pytest.raises(UnsafeCheckpointError, match="refusing to load .* Nothing from it was executed"):
            import_checkpoint(path)
        assert main(["import", str(path), "--out", str(tmp_path / f"run_{name}"), "--tokenizer", "byte"]) == 2
        assert "refusing to load" in capsys.readouterr().err
        assert not marker.exists(), name
    assert not (tmp_path / "run_os_system").exists()


def test_clear_errors(tmp_path, fakes):
    raw = _random_model(length=2)
    path = authors_checkpoint(tmp_path / "ok.ckpt", raw, raw, hparams=_hparams(raw), fakes=fakes)
    data = path.read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointImportError, match="truncated"):
        import_checkpoint(tmp_path / "trunc.ckpt")
    with pytest.raises(FileNotFoundError):
        import_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointImportError, match="contradicts .* ℓ|subtokens=3"):
        import_checkpoint(path, subtokens=3)
    with pytest.raises(CheckpointImportError, match="dim=96"):
        import_checkpoint(path, dim=96)
    with pytest.raises(ValueError, match="weights must be one of"):
        import_checkpoint(path, weights="best")
    with pytest.raises(TypeError, match="unknown overrides"):
        import_checkpoint(path, width=3)
    # stored hyper-parameters inconsistent with the tensors
    bad = authors_checkpoint(
        tmp_path / "bad.ckpt", raw, raw, hparams=_hparams(raw, **{"prime.target_length": 4})
    )
    with pytest.raises(CheckpointImportError, match="subtokens=4 contradicts the tensor shapes"):
        import_checkpoint(bad)
    # another architecture: the autoregressive baseline and a non-DiT state dict
    ar = authors_checkpoint(tmp_path / "ar.ckpt", raw, raw, hparams=_hparams(raw, backbone="ar"))
    with pytest.raises(CheckpointImportError, match="backbone 'ar'"):
        import_checkpoint(ar)
    torch.save(
        {"state_dict": {"backbone.transformer.h.0.attn.c_attn.weight": torch.zeros(3, 3)}},
        tmp_path / "gpt.ckpt",
    )
    with pytest.raises(CheckpointImportError, match="another architecture"):
        import_checkpoint(tmp_path / "gpt.ckpt", heads=2, seq_len=4)
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointImportError, match="not a Lightning checkpoint"):
        import_checkpoint(tmp_path / "plain.pt")
    no_ema = authors_checkpoint(tmp_path / "noema.ckpt", raw, None, hparams=_hparams(raw))
    with pytest.raises(CheckpointImportError, match="no EMA weights"):
        import_checkpoint(no_ema)
    assert import_checkpoint(no_ema, weights="raw")[1]["weights"] == "raw"
    # an EMA list of the wrong length (e.g. from another network)
    ckpt_short = authors_checkpoint(tmp_path / "short.ckpt", raw, raw, hparams=_hparams(raw))
    tree = torch.load(ckpt_short, weights_only=True)  # our own file, made above
    tree["ema"]["shadow_params"] = tree["ema"]["shadow_params"][:-1]
    torch.save(tree, ckpt_short)
    with pytest.raises(CheckpointImportError, match="EMA holds"):
        import_checkpoint(ckpt_short)
    assert not (tmp_path / "marker").exists()


def test_hugging_face_format(tmp_path):
    raw = _random_model(num_classes=120, length=1, seq_len=8)
    folder = tmp_path / "mdlm-owt"
    folder.mkdir()
    tensors = {"backbone." + k: v.contiguous() for k, v in raw.state_dict().items()}
    tensors["backbone.rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, 32, 2).float() / 32))
    save_file(tensors, folder / "model.safetensors")
    config = {
        "architectures": ["MDLM"],
        "model_type": "mdlm",
        "cond_dim": 32,
        "dropout": 0.1,
        "hidden_dim": 64,
        "model_length": 8,
        "n_blocks": 2,
        "n_heads": 2,
        "time_conditioning": False,
        "vocab_size": 121,
    }
    (folder / "config.json").write_text(json.dumps(config))
    model, meta = import_checkpoint(folder)
    assert meta["format"] == "huggingface" and meta["sizes"]["num_classes"] == 120
    assert all(torch.equal(model.state_dict()[k], v) for k, v in raw.state_dict().items())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 50258}))
    with pytest.raises(CheckpointImportError, match="num_classes=50257 contradicts"):
        import_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(CheckpointImportError, match="model_type 'bert'"):
        import_checkpoint(folder)


# ----------------------------------------------------------------------------- run folders
@pytest.fixture
def data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MDM_PRIME_DATA", str(tmp_path / "data_root"))
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
    g = torch.Generator().manual_seed(0)
    docs = [
        " ".join(words[int(i)] for i in torch.randint(0, len(words), (30,), generator=g)) + "."
        for _ in range(40)
    ]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs))
    return corpus


def test_cli_import_then_eval_and_sample(tmp_path, data_env, fakes, capsys):
    raw = _random_model(num_classes=256, length=2, seq_len=16)
    ema = _perturbed(raw)
    ckpt = authors_checkpoint(tmp_path / "checkpoint.ckpt", raw, ema, hparams=_hparams(raw), fakes=fakes)
    run = tmp_path / "run"
    assert (
        main(
            [
                "import",
                str(ckpt),
                "--out",
                str(run),
                "--tokenizer",
                "byte",
                "--data",
                f"text:{data_env}",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    for f in (
        "train_config.json",
        "task.json",
        "tokenizer",
        "import_info.json",
        "checkpoint/config.json",
        "checkpoint/model.safetensors",
        "checkpoint/ema.safetensors",
        "checkpoint/trainer_state.pt",
    ):
        assert (run / f).exists(), f
    loaded = load_pretrained(run / "checkpoint")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ema.state_dict().items())
    assert main(["import", str(ckpt), "--out", str(run), "--tokenizer", "byte"]) == 2  # exists: refused
    capsys.readouterr()
    assert main(["eval", str(run), "--num-sequences", "3", "--num-times", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["family"] == "prime" and r["num_sequences"] == 3 and r["nelbo_nats_per_token"] > 0
    assert "prime_objective_nats_per_token" in r
    assert main(["sample", str(run), "--num", "2", "--steps", "8", "--out", str(tmp_path / "s")]) == 0
    assert main(["sample", str(run), "--num", "2", "--prefix", "the cat", "--out", str(tmp_path / "p")]) == 0
    assert (
        main(["sample", str(run), "--num", "2", "--infill", "the ___ sat", "--out", str(tmp_path / "i")]) == 0
    )
    samples = (tmp_path / "i.txt").read_text()
    assert samples.count("the ") >= 2 and samples.count(" sat") >= 2  # the kept text survives infilling


def test_run_folder_with_gpt2_likelihood_and_infill(tmp_path):
    pytest.importorskip("tokenizers")
    from mdm_prime.data.tokenizers import get_tokenizer

    try:
        tok = get_tokenizer("gpt2")
    except FileNotFoundError as err:  # MissingDataError: mdm-prime data install gpt2
        pytest.skip(f"GPT-2 files not installed: {err}")
    raw = _random_model(num_classes=50257, length=2, seq_len=12)
    run = write_run_folder(raw, tmp_path / "run", metadata={"source": "test"}, data="mix", tokenizer="gpt2")
    model = load_pretrained(run / "checkpoint")
    x = torch.tensor([tok.encode("The cat sat on the mat and the dog ran to the door")[:12]])
    res = likelihood(model, x, model.subtokenizer, num_times=4, seed=0)
    assert torch.isfinite(res.nelbo).all() and float(res.nelbo[0]) > 0
    from mdm_prime.evaluate import load_run
    from mdm_prime.families import family_of
    from mdm_prime.tasks import TextTask

    _, task, m = load_run(run, with_data=False)
    assert isinstance(task, TextTask) and task.tokenizer.vocab_size == 50257  # through load_task
    generate = torch.zeros(12, dtype=torch.bool)
    generate[3:6] = True
    tokens, stats = family_of(m).generate(m, num=2, num_tokens=12, steps=6, seed=0, infill=(x[0], generate))
    assert torch.equal(tokens[:, ~generate], x[:, ~generate].expand(2, -1))
    assert stats["network_calls_mean"] <= 6
    with pytest.raises(ValueError, match="tokenizer 'byte' has 256 tokens"):
        write_run_folder(raw, tmp_path / "run2", tokenizer="byte")


def test_protocol_zero_records_and_state(tmp_path):
    """Objects pickled through ``copyreg._reconstructor`` (protocol 0/1) become records with their state."""
    import pickle
    import zipfile

    mod = types.ModuleType("fake_cfg_mod")

    class Node:
        def __init__(self):
            self._val = 7

    Node.__module__, Node.__qualname__ = "fake_cfg_mod", "Node"
    mod.Node = Node
    sys.modules["fake_cfg_mod"] = mod
    try:
        payload = pickle.dumps({"hyper_parameters": {"n": Node()}, "state_dict": {}}, protocol=0)
    finally:
        del sys.modules["fake_cfg_mod"]
    path = tmp_path / "p0.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
    tree = SafeCheckpointReader(path).load()
    assert to_plain(tree["hyper_parameters"]) == {"n": 7}


def test_fine_tuning_resumes_from_the_imported_run(tmp_path, data_env):
    """``train --resume`` on an imported run: the family builds the ``mdlm_dit`` architecture itself."""
    import mdm_prime.train as T
    from mdm_prime.configs import TrainConfig

    raw = _random_model(num_classes=256, length=2, seq_len=16)
    run = write_run_folder(
        raw,
        tmp_path / "run",
        data=f"text:{data_env}",
        tokenizer="byte",
        train_overrides={
            "batch_size": 4,
            "lr": 1e-3,
            "eval_every": 0,
            "checkpoint_every": 0,
            "num_preview_samples": 0,
            "final_eval_sequences": 2,
            "final_eval_num_times": 2,
            "log_every": 1,
            "precision": "fp32",
        },
    )
    cfg = TrainConfig.from_dict({**json.loads((run / "train_config.json").read_text()), "max_steps": 2})
    T.train(cfg, run, resume=True, show_progress=False)
    tuned = load_pretrained(run / "checkpoint", use_ema=False)
    state = torch.load(run / "checkpoint" / "trainer_state.pt", weights_only=False)  # written by our trainer
    assert state["step"] == 2
    assert any(not torch.equal(tuned.state_dict()[k], v) for k, v in raw.state_dict().items())
    assert tuned.config["architecture"] == "mdlm_dit" and tuned.config["dim"] == 64


def test_bound_methods_stay_records(tmp_path):
    """``(getattr, (obj, name))`` reduces (pickled bound methods) are kept inert, not looked up."""
    import pickle
    import zipfile

    payload = pickle.dumps({"state_dict": {}, "hook": [1, 2].append}, protocol=2)
    path = tmp_path / "m.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
    hook = SafeCheckpointReader(path).load()["hook"]
    assert hook.rec_name == "getattr" and hook.rec_args[1] == "append"
