"""The replica of the published MDLM / MDLM-Prime network (:class:`mdm_prime.models.MDLMDiT`).

Two independent references:

1. ``tests/fixtures/authors_dit_tiny.safetensors`` holds, for three tiny random-weight networks
   (MDLM ℓ = 1 with C = 50 and a 51-row vocabulary table; MDLM-Prime ℓ = 3, b = 4; ℓ = 2 with time
   conditioning), the weights under the authors' checkpoint keys (``backbone.*``), a partially masked
   input, ``t``, and the logits of the AUTHORS' forward pass. It was produced by a transcription of
   ``text/models/dit.py`` of github.com/chen-hao-chao/mdm-prime (commit 4942742; the ℓ = 1 ``DIT`` is
   that of kuleshov-group/mdlm) in which flash-attn's varlen attention was replaced by explicit
   softmax(q kᵀ/√d_h) v and flash-attn's rotary kernel by its formula (non-interleaved halves), all
   parameters drawn at random (their init zeroes adaLN and the head, which would hide bugs), inputs
   masked with the authors' mask index, σ = 0 for the untimed cases (``time_conditioning: False``) and
   σ = −log(1 − (1 − 10⁻³) t) for the timed one, run in float32 on CPU. The transcription is not part
   of this repository (licence and provenance); only its numbers are.
2. A plain float64 forward written here from the description (loops over heads, no shared code).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mdm_prime.checkpoint import load_pretrained, save_pretrained
from mdm_prime.models import ARCHITECTURES, build_model
from mdm_prime.models.mdlm_dit import MDLMDiT, mdlm_dit_config
from mdm_prime.subtokenizer import SubTokenizer

FIXTURE = Path(__file__).parent.parent / "fixtures" / "authors_dit_tiny.safetensors"
CASES = ("mdlm", "prime3", "prime2_time")


def _fixture_model(name: str):
    data = load_file(FIXTURE)
    ell, C, b, dim, heads, cond, blocks, L, timed = data[f"{name}/meta"].tolist()
    sub = SubTokenizer(C, ell, None if ell == 1 else b)
    model = MDLMDiT(
        sub,
        seq_len=L,
        dim=dim,
        depth=blocks,
        heads=heads,
        cond_dim=cond,
        time_conditioned=bool(timed),
        precision="fp32",
        schedule={"name": "loglinear", "eps": 1e-3},
    ).eval()
    prefix = f"{name}/backbone."
    state = {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}
    inv_freq = state.pop("rotary_emb.inv_freq")
    head_dim = dim // heads
    assert torch.allclose(inv_freq, 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    model.load_state_dict(state, strict=True)
    return model, data[f"{name}/input_yt"], data[f"{name}/input_t"], data[f"{name}/logits"], C


@pytest.mark.parametrize("name", CASES)
def test_logits_equal_the_authors_forward(name):
    model, yt, t, expected, C = _fixture_model(name)
    with torch.no_grad():
        got = model(yt, t)
    assert got.shape == (yt.shape[0], expected.shape[1], C)
    # ℓ = 1: the authors' head has C+1 outputs; the mask column (−∞ under SUBS) is dropped
    torch.testing.assert_close(got, expected[..., :C], rtol=1e-5, atol=2e-5)


def test_untimed_model_ignores_t_and_timed_model_uses_it():
    model, yt, t, _, _ = _fixture_model("mdlm")
    assert model.time_conditioned is False
    with torch.no_grad():
        assert torch.equal(model(yt, t), model(yt, torch.rand_like(t)))
        assert torch.equal(model(yt, t), model(yt))
    timed, yt2, t2, _, _ = _fixture_model("prime2_time")
    with torch.no_grad():
        assert not torch.allclose(timed(yt2, t2), timed(yt2, t2 * 0.5))


def _plain_forward(sd: dict, yt: torch.Tensor, ell: int, C: int, dim: int, heads: int, sigma: torch.Tensor):
    """Float64 forward from the written description, one batch item and one head at a time."""
    sd = {k: v.double() for k, v in sd.items()}
    B, n = yt.shape
    L, dh = n // ell, dim // heads
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})

    def ln(x, w):  # x: (L, d)
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w

    def gelu_tanh(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    half = 128
    freqs = torch.tensor([math.exp(-math.log(10000) * k / half) for k in range(half)], dtype=torch.float64)
    outs = []
    for bi in range(B):
        x = torch.stack(
            [
                torch.cat([sd["vocab_embed.embedding"][yt[bi, i * ell + j]] for j in range(ell)])
                for i in range(L)
            ]
        )  # (L, d)
        arg = float(sigma[bi]) * freqs
        e = torch.cat([torch.cos(arg), torch.sin(arg)])
        h = e @ sd["sigma_map.mlp.0.weight"].T + sd["sigma_map.mlp.0.bias"]
        h = h * torch.sigmoid(h)
        c = h @ sd["sigma_map.mlp.2.weight"].T + sd["sigma_map.mlp.2.bias"]
        c = c * torch.sigmoid(c)
        for blk in range(depth):

            def p(name, blk=blk):
                return sd[f"blocks.{blk}.{name}"]

            mod = c @ p("adaLN_modulation.weight").T + p("adaLN_modulation.bias")
            s1, sc1, g1, s2, sc2, g2 = [mod[k * dim : (k + 1) * dim] for k in range(6)]
            a = ln(x, p("norm1.weight")) * (1 + sc1) + s1
            qkv = a @ p("attn_qkv.weight").T  # (L, 3d)
            att_out = torch.zeros(L, dim, dtype=torch.float64)
            for hd in range(heads):
                q = qkv[:, hd * dh : (hd + 1) * dh].clone()
                k = qkv[:, dim + hd * dh : dim + (hd + 1) * dh].clone()
                v = qkv[:, 2 * dim + hd * dh : 2 * dim + (hd + 1) * dh]
                for pos in range(L):
                    for m in range(dh // 2):
                        ang = pos / 10000 ** (2 * m / dh)
                        co, si = math.cos(ang), math.sin(ang)
                        for z in (q, k):
                            u, w = z[pos, m].item(), z[pos, m + dh // 2].item()
                            z[pos, m], z[pos, m + dh // 2] = u * co - w * si, u * si + w * co
                scores = q @ k.T / math.sqrt(dh)
                att_out[:, hd * dh : (hd + 1) * dh] = torch.softmax(scores, dim=-1) @ v
            x = x + g1 * (att_out @ p("attn_out.weight").T)
            m_in = ln(x, p("norm2.weight")) * (1 + sc2) + s2
            hid = gelu_tanh(m_in @ p("mlp.0.weight").T + p("mlp.0.bias"))
            x = x + g2 * (hid @ p("mlp.2.weight").T + p("mlp.2.bias"))
        fm = c @ sd["output_layer.adaLN_modulation.weight"].T + sd["output_layer.adaLN_modulation.bias"]
        shift, scale = fm[:dim], fm[dim:]
        z = ln(x, sd["output_layer.norm_final.weight"]) * (1 + scale) + shift
        outs.append((z @ sd["output_layer.linear.weight"].T + sd["output_layer.linear.bias"])[:, :C])
    return torch.stack(outs)


@pytest.mark.parametrize("ell,C,dim,heads", [(1, 20, 16, 2), (2, 30, 16, 2), (4, 30, 24, 2)])
def test_logits_equal_a_plain_float64_forward(ell, C, dim, heads):
    torch.manual_seed(ell)
    model = build_model(
        mdlm_dit_config(
            "tiny", num_classes=C, length=ell, seq_len=5, dim=dim, heads=heads, cond_dim=8, precision="fp32"
        )
    ).eval()
    with torch.no_grad():
        for p in model.parameters():  # every parameter random (adaLN and head start at zero)
            p.copy_(torch.randn_like(p) * 0.4)
    sub = model.subtokenizer
    yt = sub.encode(torch.randint(0, C, (2, 5)))
    yt[torch.rand(yt.shape) < 0.4] = sub.mask_id
    with torch.no_grad():
        got = model(yt)
    want = _plain_forward(model.state_dict(), yt, ell, C, dim, heads, torch.zeros(2))
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_contract_and_round_trip(tmp_path):
    assert ARCHITECTURES["mdlm_dit"].cls is MDLMDiT
    for ell, family in ((1, "mdm"), (2, "prime")):
        conf = mdlm_dit_config("tiny", num_classes=40, length=ell, seq_len=6, precision="fp32")
        model = build_model(conf)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        assert model.family == family and model.time_conditioned is False and model.seq_len == 6
        assert isinstance(model.subtokenizer, SubTokenizer) and model.schedule.name == "loglinear"
        assert build_model(model.config).config == model.config
        save_pretrained(model, tmp_path / family)
        back = load_pretrained(tmp_path / family)
        y = model.subtokenizer.encode(torch.randint(0, 40, (2, 6)))
        with torch.no_grad():
            assert torch.equal(back(y), model.eval()(y))


def test_shape_errors():
    with pytest.raises(ValueError, match="divisible by ℓ"):
        MDLMDiT(SubTokenizer(50, 3), seq_len=4, dim=64, heads=2, cond_dim=8)
    with pytest.raises(ValueError, match="heads"):
        MDLMDiT(SubTokenizer(50, 1), seq_len=4, dim=30, heads=4, cond_dim=8)
