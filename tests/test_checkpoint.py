"""Checkpoints: save → load gives identical outputs (also in a fresh process); broken files fail clearly."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mdm_prime.checkpoint import CheckpointError, load_pretrained, read_config, save_pretrained
from mdm_prime.models import (
    build_model,
    mlp_config,
)

from .models.util import CONFIGS, random_subtokens, randomize


def outputs(model, seed=0):
    if model.family == "ar":
        x = torch.randint(
            0, model.num_classes, (3, model.seq_len), generator=torch.Generator().manual_seed(seed)
        )
        return model(x)
    y = random_subtokens(model.subtokenizer, 3, model.seq_len, seed=seed)
    return model(y, torch.tensor([0.2, 0.5, 0.9]))


def saved(tmp_path, name="transformer", ema=False):
    model = randomize(build_model(CONFIGS[name]))
    ema_state = {k: v + 1.0 for k, v in model.state_dict().items()} if ema else None
    save_pretrained(model, tmp_path / "ckpt", ema_state_dict=ema_state, extra={"step": 7})
    return model, tmp_path / "ckpt"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_identical_outputs(tmp_path, name):
    model, path = saved(tmp_path, name)
    loaded = load_pretrained(path)
    assert loaded.config == model.config and not loaded.training
    assert torch.equal(outputs(loaded), outputs(model))


def test_subtokenizer_permutation_schedule_and_extra_are_kept(tmp_path):
    model, path = saved(tmp_path)
    loaded = load_pretrained(path)
    assert loaded.subtokenizer == model.subtokenizer and loaded.subtokenizer.permutation is not None
    assert loaded.schedule == model.schedule
    meta = read_config(path)
    assert meta["extra"] == {"step": 7} and meta["format_version"] == 1
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]


def test_ema_weights_are_loaded_by_default(tmp_path):
    model, path = saved(tmp_path, ema=True)
    assert (path / "ema.safetensors").is_file()
    ema = load_pretrained(path)
    raw = load_pretrained(path, use_ema=False)
    assert torch.equal(raw.head.weight, model.head.weight)
    assert torch.equal(ema.head.weight, model.head.weight + 1.0)
    save_pretrained(model, path)  # re-save without EMA removes the stale file
    assert not (path / "ema.safetensors").exists()
    assert torch.equal(load_pretrained(path).head.weight, model.head.weight)


def test_fresh_process_gets_identical_outputs(tmp_path):
    model, path = saved(tmp_path)
    y = random_subtokens(model.subtokenizer, 3, model.seq_len, seed=1)
    t = torch.tensor([0.2, 0.5, 0.9])
    torch.save({"y": y, "t": t}, tmp_path / "input.pt")
    script = textwrap.dedent(f"""
        import torch
        from mdm_prime.checkpoint import load_pretrained
        model = load_pretrained({str(path)!r})
        inp = torch.load({str(tmp_path / "input.pt")!r})
        with torch.no_grad():
            torch.save(model(inp["y"], inp["t"]), {str(tmp_path / "out.pt")!r})
    """)
    subprocess.run(
        [sys.executable, "-c", script], check=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    with torch.no_grad():
        expected = model.eval()(y, t)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere")
    _, path = saved(tmp_path, ema=True)
    (path / "ema.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no ema.safetensors"):
        load_pretrained(path)
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(path)


def test_unknown_format_version(tmp_path):
    _, path = saved(tmp_path)
    meta = json.loads((path / "config.json").read_text())
    meta["format_version"] = 99
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version 99.*reads format_version 1"):
        load_pretrained(path)


def test_shape_mismatch_names_the_tensor(tmp_path):
    _, path = saved(tmp_path)
    other = randomize(build_model({**CONFIGS["transformer"], "dim": 64}))
    save_pretrained(other, tmp_path / "other")
    (path / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    meta = json.loads((path / "config.json").read_text())
    meta["files"] = read_config(tmp_path / "other")["files"]  # hashes agree; only the shapes are wrong
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"shape mismatch for '.*': the model .* expects \(.*32"):
        load_pretrained(path)


def test_truncated_and_corrupted_weights(tmp_path):
    _, path = saved(tmp_path)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_pretrained(path)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_pretrained(path)


def test_unreadable_safetensors_with_a_matching_record(tmp_path):
    import hashlib

    _, path = saved(tmp_path)
    garbage = b"\x08\x00\x00\x00\x00\x00\x00\x00{nonsense"
    (path / "model.safetensors").write_bytes(garbage)
    meta = json.loads((path / "config.json").read_text())
    meta["files"]["model.safetensors"] = {
        "sha256": hashlib.sha256(garbage).hexdigest(),
        "bytes": len(garbage),
    }
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_pretrained(path)


def test_corrupted_config(tmp_path):
    _, path = saved(tmp_path)
    (path / "config.json").write_text('{"format_version": 1, "model": {')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pretrained(path)
    (path / "config.json").write_text(
        json.dumps({"format_version": 1, "files": {}, "model": {"architecture": "rnn"}})
    )
    with pytest.raises(CheckpointError, match="cannot rebuild.*rnn"):
        load_pretrained(path)


def test_bad_save_arguments(tmp_path):
    model = build_model(CONFIGS["mlp"])
    with pytest.raises(TypeError, match="config"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        save_pretrained(
            model, tmp_path / "x", ema_state_dict={k: v[..., :1] for k, v in model.state_dict().items()}
        )
    with pytest.raises(TypeError, match="JSON"):
        save_pretrained(model, tmp_path / "x", extra={"bad": object()})
    assert not (tmp_path / "x" / "config.json").exists()


def test_written_files_are_world_readable(tmp_path):
    import stat

    model = build_model(mlp_config("tiny", num_classes=9, length=2))
    save_pretrained(model, tmp_path / "ckpt", ema_state_dict=model.state_dict())
    for name in ("config.json", "model.safetensors", "ema.safetensors"):
        assert stat.S_IMODE(os.stat(tmp_path / "ckpt" / name).st_mode) == 0o644, name
