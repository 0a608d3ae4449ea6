"""``mdm-prime sample --animate FILE.gif`` on tiny runs made here (3 training steps each)."""

import numpy as np
import pytest
from PIL import Image

from mdm_prime.cli import main
from mdm_prime.configs import resolve_config
from mdm_prime.train import train

COMMON = {
    "batch_size": 8,
    "max_steps": 3,
    "warmup_steps": 0,
    "eval_every": 0,
    "num_preview_samples": 0,
    "final_eval_sequences": 4,
    "final_eval_num_times": 2,
    "checkpoint_every": 0,
    "precision": "fp32",
}
TINY = {"model_overrides": {"dim": 32, "depth": 1, "heads": 2}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("anim")
    mp.setenv("MDM_PRIME_DATA", str(root / "data_root"))
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "red", "door"]
    rng = np.random.default_rng(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(words, size=30)) + "." for _ in range(60)))
    text = dict(data=f"text:{corpus}", tokenizer="byte", seq_len=16, **TINY)
    out = {}
    for name, preset, ov in (
        ("text", "text-tiny", dict(subtokens=2, **text)),
        ("ar", "text-tiny", dict(family="ar", subtokens=1, **text)),
        ("digits", "mnist-small", dict(data="digits", subtokens=2)),
    ):
        train(resolve_config(preset, {**COMMON, **ov}), root / name, show_progress=False)
        out[name] = root / name
    yield out
    mp.undo()


@pytest.mark.parametrize("name,steps,frames", [("text", 40, 41), ("ar", 0, 17), ("digits", 80, 64)])
def test_sample_animate_writes_a_gif_with_capped_frames(runs, tmp_path, name, steps, frames):
    gif = tmp_path / f"{name}.gif"
    argv = [
        "sample",
        str(runs[name]),
        "--num",
        "2",
        "--steps",
        str(steps),
        "--out",
        str(tmp_path / name),
        "--animate",
        str(gif),
    ]
    assert main(argv) == 0
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == frames  # T+1 states, at most 64
    assert (tmp_path / f"{name}.stats.json").exists()  # the trajectory is not written into the stats


def test_animate_needs_a_gif_path(runs, tmp_path, capsys):
    assert main(["sample", str(runs["text"]), "--animate", str(tmp_path / "a.mp4")]) == 2
    assert "give a FILE.gif" in capsys.readouterr().err
    assert not (tmp_path / "a.mp4").exists()
