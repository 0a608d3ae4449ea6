"""The reverse-process animation: frame selection, text cells, sharpening images, the GIF file."""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from mdm_prime import SubTokenizer
from mdm_prime.animation import (
    KNOWN_BG,
    MASKED_BG,
    PARTIAL_FG,
    coarse_values,
    digits_known,
    image_frames,
    save_gif,
    select_frames,
    text_frames,
)
from mdm_prime.sampling import sample

from .helpers import RandomDigitModel


def test_select_frames_caps_and_keeps_the_ends():
    assert select_frames(5, 64) == [0, 1, 2, 3, 4]
    picks = select_frames(785, 64)
    assert len(picks) == 64 and picks[0] == 0 and picks[-1] == 784 and picks == sorted(set(picks))
    with pytest.raises(ValueError, match="max_frames"):
        select_frames(10, 1)


def test_coarse_values_against_enumeration():
    """Mean class of the classes whose digits agree with the known ones, by brute force."""
    sub = SubTokenizer(10, 2, base=4, permutation=[3, 1, 4, 0, 5, 9, 2, 6, 8, 7])
    m = sub.mask_id
    table = sub.table("digit_table").tolist()
    states = torch.tensor([[m, m, 2, m, m, 1, 0, 2]])
    got = coarse_values(states, sub)[0].tolist()
    for i, (a, b) in enumerate(states.view(4, 2).tolist()):
        ok = [c for c in range(10) if (a == m or table[c][0] == a) and (b == m or table[c][1] == b)]
        assert got[i] == pytest.approx(sum(ok) / len(ok))
    assert digits_known(states, sub).tolist() == [[0, 1, 1, 2]]


def _cell_colours(frame, n):
    """The colour at the centre of each of the first ``n`` one-character cells of the text area."""
    from mdm_prime.animation import _font

    cw = round(_font(14).getlength("M"))
    top, lh = 8 + 2 * 20, 20
    return [frame.getpixel((8 + i * cw + cw // 2, top + lh - 5)) for i in range(n)]


def test_partly_known_tokens_look_different_from_known_and_masked():
    """Three tokens: fully known (drawn as its letter on white), one digit of two known (amber fill),
    masked (grey box). The second state is the final one."""
    sub = SubTokenizer(256, 2)
    final = sub.encode(torch.tensor([[ord("x"), ord("y"), ord("z")]]))[0]
    m = sub.mask_id
    first = torch.tensor([final[0], final[1], final[2], m, m, m])
    traj = torch.stack([first, final]).unsqueeze(1)  # [2, 1, 6]
    frames = text_frames(traj, sub, lambda i: chr(i))
    assert len(frames) == 2
    known, partial, masked = _cell_colours(frames[0], 3)
    assert partial == PARTIAL_FG and masked == MASKED_BG
    assert known != partial and known != masked
    assert _cell_colours(frames[1], 3)[1] != PARTIAL_FG and _cell_colours(frames[1], 3)[2] != MASKED_BG
    # a cell of the known letter holds ink: not all background
    assert any(frames[0].getpixel((x, y)) != KNOWN_BG for x in range(8, 16) for y in range(48, 66))


def test_images_sharpen_and_the_gif_has_the_frames(tmp_path):
    sub = SubTokenizer(256, 4)
    shape = (1, 6, 5)
    out = sample(
        RandomDigitModel(sub, 30, seed=0), sub, num_samples=4, num_tokens=30, steps=40, seed=1, record=True
    )
    frames = image_frames(out.trajectory, sub, shape, calls=out.trajectory_calls, max_frames=16, scale=2)
    assert len(frames) == 16
    final = out.tokens.double()
    errs = []
    for k in select_frames(41, 16):
        errs.append(float(((coarse_values(out.trajectory[k].long(), sub) - final) ** 2).mean()))
    assert errs[-1] == 0 and errs[0] > 1000  # all grey at first: mean class 127.5
    assert all(b <= a * 1.05 for a, b in itertools.pairwise(errs)), errs  # sharpening, step by step
    # the drawn pixels follow: the last frame's first tile is the final image
    tile = frames[-1].crop((2, 40 + 2, 2 + 5 * 2, 40 + 2 + 6 * 2)).convert("L").resize((5, 6), Image.NEAREST)
    want = final[0].view(6, 5)
    assert torch.equal(torch.tensor(np.array(tile)).long(), want.round().long())
    path = save_gif(frames, tmp_path / "a.gif")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 16
    with pytest.raises(ValueError, match=".gif"):
        save_gif(frames, tmp_path / "a.png")


def test_bad_shapes_raise():
    sub = SubTokenizer(256, 2)
    with pytest.raises(ValueError, match="image_shape"):
        image_frames(torch.zeros(2, 1, 10, dtype=torch.uint8), sub, (1, 2, 3))
    with pytest.raises(ValueError, match="sample must be"):
        text_frames(torch.zeros(2, 1, 4, dtype=torch.uint8), sub, chr, sample=3)


def test_family_generate_records_in_chunks_for_ar_and_diffusion():
    """``family.generate(record=True)``: the trajectory ends at the samples, chunks are concatenated
    along the batch, the autoregressive one reveals one token per step from the left."""
    from mdm_prime.families import get_family
    from mdm_prime.models import build_model, causal_transformer_config

    ar = build_model(causal_transformer_config("tiny", num_classes=5, seq_len=4))
    tokens, stats = get_family("ar").generate(ar, num=5, num_tokens=4, batch_size=2, seed=1, record=True)
    traj = stats["trajectory"]
    assert traj.shape == (5, 5, 4) and torch.equal(traj[-1].long(), tokens)
    for k in range(5):
        assert (traj[k, :, :k].long() == tokens[:, :k]).all() and (traj[k, :, k:] == 5).all()
    assert stats["trajectory_calls"].shape == (4, 5)

    sub = SubTokenizer(5, 2)
    model = RandomDigitModel(sub, 3, seed=0)
    model.subtokenizer, model.schedule = sub, "linear"
    model.anchor = torch.nn.Parameter(torch.zeros(1))  # generate reads the device from a parameter
    tokens, stats = get_family("prime").generate(
        model, num=5, num_tokens=3, steps=6, batch_size=2, seed=0, record=True
    )
    traj = stats["trajectory"]
    assert traj.shape == (7, 5, 6) and torch.equal(sub.decode(traj[-1].long()), tokens)
    assert torch.equal(
        stats["trajectory_calls"].long().sum(0).double().mean(),
        torch.tensor(stats["network_calls_mean"], dtype=torch.float64),
    )


LONG_CAPTION = (
    "prime, 4 digits per token, T = 128, seed 0, run runs/anim-mnist-with-a-rather-long-folder-name "
    "(a long caption must wrap inside the frame instead of running off its right edge)"
)


def _ink_rows(region: np.ndarray) -> int:
    """Number of separate bands of rows holding ink (non-white) in an ``[H, W, 3]`` region."""
    ink = (region < 200).any(-1).any(-1)
    return int(ink[0]) + int((ink[1:] & ~ink[:-1]).sum())


def test_a_long_image_caption_wraps_inside_the_frame():
    """The caption and the counters wrap to the frame's width: no ink in the rightmost columns of the
    header, one band of ink per wrapped line, and the tiles move down below the taller header."""
    from mdm_prime.animation import _font
    from mdm_prime.plotting import wrap_to_width

    sub = SubTokenizer(256, 4)
    out = sample(
        RandomDigitModel(sub, 30, seed=0), sub, num_samples=4, num_tokens=30, steps=8, seed=1, record=True
    )
    short = image_frames(out.trajectory, sub, (1, 6, 5), calls=out.trajectory_calls, scale=2)
    frames = image_frames(
        out.trajectory, sub, (1, 6, 5), calls=out.trajectory_calls, scale=2, title=LONG_CAPTION
    )
    width = frames[-1].width
    caption_lines = wrap_to_width(LONG_CAPTION, _font(13), width - 8)
    assert len(caption_lines) >= 3
    extra = frames[-1].height - short[-1].height
    assert extra == 18 * (len(caption_lines) - 1)  # one 18-px row per extra caption line
    for frame in (frames[0], frames[-1]):
        arr = np.asarray(frame.convert("RGB")).astype(int)
        header = arr[: 4 + 18 * len(caption_lines) + 18]
        assert (header[:, -3:] >= 250).all(), "caption or counters run into the right edge"
        assert _ink_rows(header) >= len(caption_lines) + 1
    # the tiles are where they were, shifted by the taller header
    a = np.asarray(short[-1])[42:54, 2:12]
    b = np.asarray(frames[-1])[42 + extra : 54 + extra, 2:12]
    assert np.array_equal(a, b)


def test_a_long_text_caption_and_the_legend_fit_a_narrow_frame():
    sub = SubTokenizer(256, 2)
    final = sub.encode(torch.tensor([[ord(c) for c in "abcdefghij"]]))[0]
    traj = torch.stack([torch.full_like(final, sub.mask_id), final]).unsqueeze(1)
    frames = text_frames(traj, sub, chr, columns=16, title=LONG_CAPTION)
    for frame in frames:
        arr = np.asarray(frame.convert("RGB")).astype(int)
        assert (arr[:, -3:] >= 250).all(), "text runs into the right edge"
        assert (arr[-3:] >= 250).all(), "text runs into the bottom edge"
    assert _ink_rows(np.asarray(frames[-1].convert("RGB"))[:60]) >= 2
