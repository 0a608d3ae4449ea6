"""The image U-Net: digit-stacked channels in, per-pixel-channel logits out, and the sequence contract."""

import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.models import UNet, build_model, unet_config

from .util import randomize


def tiny_unet(length=2, ch=1, size=8, num_classes=16, **kw):
    cfg = dict(
        base_channels=8,
        channel_mult=[1, 2],
        num_res_blocks=1,
        attention_resolutions=[4],
        embed_dim=12,
        head_channels=8,
        precision="fp32",
    )
    cfg.update(kw)
    return build_model(
        unet_config("toy", num_classes=num_classes, length=length, image_shape=[ch, size, size], **cfg)
    )


def images(sub, batch, ch, size, seed=0, p_mask=0.4):
    g = torch.Generator().manual_seed(seed)
    y = sub.encode_image(torch.randint(0, sub.num_classes, (batch, ch, size, size), generator=g))
    return torch.where(torch.rand(y.shape, generator=g) < p_mask, torch.full_like(y, sub.mask_id), y)


@pytest.mark.parametrize("length", [1, 2, 3, 4])
@pytest.mark.parametrize("ch", [1, 3])
def test_image_and_sequence_shapes_every_length(length, ch):
    model = tiny_unet(length, ch)
    y = images(model.subtokenizer, 2, ch, 8)
    assert y.shape == (2, ch * length, 8, 8)
    assert model.forward_image(y).shape == (2, ch, 8, 8, 16)
    assert model(model.subtokenizer.image_to_sequence(y)).shape == (2, ch * 64, 16)
    assert model.seq_len == ch * 64 and model.family == ("mdm" if length == 1 else "prime")


@pytest.mark.parametrize("size", [7, 28])
def test_odd_sizes_work(size):
    model = tiny_unet(2, 1, size, attention_resolutions=[])
    assert model.forward_image(images(model.subtokenizer, 1, 1, size)).shape == (1, 1, size, size, 16)


def test_sequence_contract_uses_the_subtokenizer_token_order():
    model = randomize(tiny_unet(2, 3, time_conditioned=True), std=0.1)
    sub = model.subtokenizer
    y = images(sub, 2, 3, 8)
    t = torch.tensor([0.3, 0.8])
    img = model.forward_image(y, t)  # (B, ch, H, W, C)
    seq = model(sub.image_to_sequence(y), t)  # (B, ch·H·W, C), tokens ordered (c, h, w)
    assert torch.allclose(seq, img.reshape(2, 3 * 64, 16), atol=1e-5)


def test_each_pixel_channel_reads_its_own_digits():
    """Changing digit j of channel c at one pixel changes the input features of that channel only:
    the ℓ digits of channel c are concatenated into channels c·e .. c·e+e-1 of the first conv."""
    model = tiny_unet(2, 3)
    sub = model.subtokenizer
    seen = {}
    model.conv_in.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", []).append(inp[0]))
    y = images(sub, 1, 3, 8, p_mask=0.0)
    y2 = y.clone()
    y2[0, 2 * 1 + 1, 3, 5] = sub.mask_id  # channel 1, digit 1, pixel (3, 5)
    model.forward_image(y), model.forward_image(y2)
    diff = (seen["x"][0] - seen["x"][1]).abs()[0]  # (ch·e, H, W)
    changed = diff.sum((1, 2)).nonzero().flatten()
    assert changed.min() >= 12 + 6 and changed.max() < 24  # channel 1's second half (digit 1, width e/ℓ = 6)
    spatial = diff.sum(0)
    assert spatial[3, 5] > 0 and spatial.count_nonzero() == 1  # only pixel (3, 5)


def test_cifar10_preset_is_the_papers_configuration():
    cfg = unet_config("cifar10", num_classes=256, length=2)
    assert (
        cfg["base_channels"] == 96
        and cfg["channel_mult"] == [3, 4, 4]
        and cfg["attention_resolutions"] == [16]
    )
    assert cfg["image_shape"] == [3, 32, 32]
    with torch.device("meta"):
        model = build_model(cfg)
    assert 30e6 < model.num_parameters() < 120e6


def test_bad_inputs():
    model = tiny_unet(2, 1)
    with pytest.raises(ValueError, match=r"\(B, 2, 8, 8\)"):
        model.forward_image(torch.zeros(1, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 128\)"):
        model(torch.zeros(1, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="image_shape"):
        UNet(SubTokenizer(16, 2), image_shape=(8, 8))
