"""``pip install mdm-prime`` without extras: the method library works with torch, numpy, tokenizers,
safetensors and tqdm alone, and every feature that needs more says which extra to install."""

import subprocess
import sys
import textwrap

import pytest

from mdm_prime.extras import EXTRAS, require

SCRIPT = textwrap.dedent(
    """
    import sys
    for name in {blocked!r}:
        sys.modules[name] = None  # importing any of them now raises ImportError

    import torch
    import mdm_prime as mp
    from mdm_prime.models import build_model, transformer_config

    torch.manual_seed(0)
    sub = mp.SubTokenizer(num_classes=20, length=2)
    model = build_model(transformer_config("tiny", num_classes=20, length=2, seq_len=6))
    x0 = torch.randint(0, 20, (3, 6))
    mp.diffusion_loss(model, x0, sub, "linear", objective="prime").loss.backward()
    res = mp.likelihood(model, x0, sub, num_times=2, seed=0)
    out = mp.sample(model, sub, num_samples=2, num_tokens=6, steps=4, seed=0)
    assert res.nelbo.shape == (3,) and out.tokens.shape == (2, 6)
    print("core ok")

    def refused(fn, extra):
        try:
            fn()
        except ImportError as err:
            assert f"mdm-prime[{{extra}}]" in str(err), str(err)
            print("refused:", err)
        else:
            raise AssertionError(f"{{fn}} ran without its extra")

    from mdm_prime.plotting import plot_metrics
    refused(lambda: plot_metrics("metrics.jsonl", "loss.png"), "plots")
    refused(lambda: __import__("mdm_prime.animation"), "plots")
    from mdm_prime.data.toy import ImageDensity
    refused(lambda: ImageDensity("camera", size=8), "data")
    """
)


def test_the_core_runs_without_the_extras_and_features_name_their_extra():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(blocked=sorted(EXTRAS))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "core ok" in proc.stdout and proc.stdout.count("refused:") == 3
    assert "pip install 'mdm-prime[plots]'" in proc.stdout and "pip install 'mdm-prime[data]'" in proc.stdout


def test_require():
    require("matplotlib", "x")  # installed with the dev extra: nothing happens
    with pytest.raises(KeyError, match="unknown optional module 'numpyx'"):
        require("numpyx", "x")
