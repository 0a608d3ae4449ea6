"""Progress of long sampling (issue 20): ``sample(progress=True | callable)``, ``SampleRequest.progress``,
and the README's library lines, which run as written (here with fewer steps and draws)."""

import re
from pathlib import Path

import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.sampling import sample

from ..helpers import RandomDigitModel

SUB = SubTokenizer(5, 2)
README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_callable_gets_steps_done_total_and_network_calls():
    seen = []
    out = sample(
        RandomDigitModel(SUB, 3, seed=0),
        SUB,
        num_samples=4,
        num_tokens=3,
        steps=6,
        seed=1,
        progress=lambda *a: seen.append(a),
    )
    assert [s[:2] for s in seen] == [(k, 6) for k in range(1, 7)]
    calls = [s[2] for s in seen]
    assert calls == sorted(calls) and calls[-1] == int(out.network_calls.sum())


def test_the_bar_goes_to_stderr_and_changes_nothing(capsys):
    kw = dict(num_samples=4, num_tokens=3, steps=6, seed=1)
    quiet = sample(RandomDigitModel(SUB, 3, seed=0), SUB, **kw)
    assert capsys.readouterr().err == ""
    shown = sample(RandomDigitModel(SUB, 3, seed=0), SUB, **kw, progress=True)
    err = capsys.readouterr().err
    assert "6/6" in err and "network calls" in err
    assert torch.equal(quiet.subtokens, shown.subtokens)


@pytest.mark.parametrize("bad", [1, "yes", 0.5])
def test_progress_must_be_a_bool_or_a_callable(bad):
    with pytest.raises(TypeError, match="progress must be"):
        sample(RandomDigitModel(SUB, 3, seed=0), SUB, num_samples=2, num_tokens=3, steps=2, progress=bad)


def test_the_readme_library_lines_run(capsys):
    """The ``import mdm_prime as mp`` block of the README, with T = 16 steps and K = 4 draws instead of
    256 and 32 (the same lines as written take ≈ 45 s on one thread)."""
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "as mp" in b)
    assert "steps=256" in block and "num_times=32" in block and "progress=True" in block
    code = block.replace("steps=256", "steps=16").replace("num_times=32", "num_times=4")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["out"].tokens.shape == (8, 128) and torch.isfinite(scope["res"].nelbo).all()
    assert torch.isfinite(scope["loss"])
    assert "16/16" in capsys.readouterr().err
