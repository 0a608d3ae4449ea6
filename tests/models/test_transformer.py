"""The DiT-style diffusion transformer: the model contract, precision, FLOPs, training."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mdm_prime.models import ADAPTER_VARIANTS, build_model, transformer_config

from .util import random_subtokens, randomize


def tiny(length=2, num_classes=50, **kw):
    kw.setdefault("dim", 48)
    kw.setdefault("precision", "fp32")  # exact float32 comparisons below
    return build_model(transformer_config("tiny", num_classes=num_classes, length=length, seq_len=6, **kw))


@pytest.mark.parametrize("length", [1, 2, 3, 4])
@pytest.mark.parametrize("variant", ADAPTER_VARIANTS)
@pytest.mark.parametrize("time_conditioned", [False, True])
def test_shapes_every_length_variant_and_conditioning(length, variant, time_conditioned):
    model = tiny(length, adapter=variant, time_conditioned=time_conditioned)
    y = random_subtokens(model.subtokenizer, 3, 6)
    out = model(y, torch.rand(3))
    assert out.shape == (3, 6, 50) and out.dtype == torch.float32
    assert model.family == ("mdm" if length == 1 else "prime")
    assert model.seq_len == 6 and model.time_conditioned is time_conditioned


def test_zero_initialised_head_gives_uniform_logits():
    model = tiny()
    assert torch.equal(model(random_subtokens(model.subtokenizer, 2, 6)), torch.zeros(2, 6, 50))


def test_time_independent_model_ignores_t_and_conditioned_model_uses_it():
    plain = randomize(tiny())
    y = random_subtokens(plain.subtokenizer, 2, 6)
    assert torch.equal(plain(y), plain(y, torch.tensor([0.1, 0.9])))
    cond = randomize(tiny(time_conditioned=True))
    a, b = cond(y, torch.tensor([0.1, 0.1])), cond(y, torch.tensor([0.1, 0.9]))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])


def test_any_number_of_tokens_and_batch_independence():
    model = randomize(tiny())
    y = random_subtokens(model.subtokenizer, 3, 9)
    out = model(y)
    assert out.shape == (3, 9, 50)
    assert torch.allclose(model(y[1:2]), out[1:2], atol=1e-5)


def test_bidirectional_every_position_sees_every_token():
    model = randomize(tiny())
    y = random_subtokens(model.subtokenizer, 1, 6, p_mask=0.0)
    y2 = y.clone()
    y2[0, -1] = model.subtokenizer.mask_id  # change the last token only
    diff = (model(y) - model(y2)).abs().amax(-1)[0]
    assert (diff > 1e-6).all()


def test_length_one_transformer_is_plain_mdm_with_a_C_plus_1_row_embedding():
    model = randomize(tiny(length=1))
    assert model.embed.weight.shape == (51, 48)
    y = random_subtokens(model.subtokenizer, 2, 6)
    x = torch.nn.functional.embedding(y, model.embed.weight)  # a plain MDM input layer
    cos, sin = model.rotary(6, 0, x.device, x.dtype)
    for block in model.blocks:
        x = block(x, cos, sin)
    assert torch.allclose(model(y), model.head(model.norm_out(x)), atol=1e-6)


def test_bad_inputs_are_rejected_before_work():
    model = tiny(time_conditioned=True)
    y = random_subtokens(model.subtokenizer, 2, 6)
    with pytest.raises(TypeError, match="integer"):
        model(y.float(), torch.rand(2))
    with pytest.raises(ValueError, match="multiple|L·ℓ"):
        model(y[:, :-1], torch.rand(2))
    with pytest.raises(ValueError, match=r"\[0, 8\]"):
        model(y + 8, torch.rand(2))  # b = 8, mask 8
    with pytest.raises(ValueError, match="t .*required"):
        model(y)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        model(y, torch.rand(3))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="divisible by heads"):
        tiny(dim=50, heads=4)
    with pytest.raises(ValueError, match="d=50 must be divisible"):
        tiny(length=4, dim=50, heads=1)
    with pytest.raises(ValueError, match="precision"):
        tiny(precision="fp16")


@pytest.mark.parametrize("time_conditioned", [False, True])
def test_flops_per_token_matches_a_flop_counter(time_conditioned):
    model = tiny(time_conditioned=time_conditioned)
    y = random_subtokens(model.subtokenizer, 2, 6)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, sdpa_kernel(SDPBackend.MATH):
        model(y, torch.rand(2))
    assert model.flops_per_token() == pytest.approx(counter.get_total_flops() / 12, rel=1e-9)


def test_small_preset_is_the_papers_size():
    cfg = transformer_config("small", num_classes=50257, length=2, seq_len=1024)
    assert (cfg["dim"], cfg["depth"], cfg["heads"]) == (768, 12, 12)
    with torch.device("meta"):
        model = build_model(cfg)
    # ~85M in the blocks + head 768·50257; the embedding is tiny (b+1 = 225 rows of 384)
    assert 120e6 < model.num_parameters() < 130e6


def test_bf16_precision_returns_float32_close_to_fp32():
    model = randomize(tiny(), std=0.05)
    y = random_subtokens(model.subtokenizer, 2, 6)
    ref = model(y)
    model.precision = "bf16"
    out = model(y)
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)  # autocast really ran in bf16
    assert torch.allclose(out, ref, atol=0.1 * ref.abs().max().item())


def test_auto_precision_is_bf16_on_cuda_and_on_cpus_with_native_bf16():
    from mdm_prime.models.base import cpu_has_native_bf16, uses_bf16

    assert uses_bf16("auto", torch.device("cuda")) and uses_bf16("bf16", torch.device("cpu"))
    assert not uses_bf16("fp32", torch.device("cuda"))
    assert uses_bf16("auto", torch.device("cpu")) == cpu_has_native_bf16()
    assert build_model(transformer_config("tiny", num_classes=8, seq_len=4)).precision == "auto"
