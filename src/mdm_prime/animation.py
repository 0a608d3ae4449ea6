"""Animated GIFs of the reverse process ("watch it work"), from a sampler trajectory.

:func:`mdm_prime.sampling.sample` with ``record=True`` (or ``family.generate(..., record=True)``) keeps
the sub-tokens ``y_t`` after every step, ``[T+1, B, L·ℓ]``. This module turns that into frames
(``docs/method.md §1`` for digits and codes, ``§6`` for the sampler, idle steps and caching):

* **text** (:func:`text_frames`): one sample's tokens laid out as in its final text; a token whose
  digits are all known is drawn as its text, a partly known token as an amber box whose filled height
  and number show how many of its ℓ digits are known, a masked token as a grey box; a header counts
  the step, the idle steps so far and the network calls so far;
* **images** (:func:`image_frames`): a grid of samples where each pixel shows the mean intensity of the
  classes consistent with its known digits (a fully masked pixel is mid-grey, the mean of all levels;
  each revealed digit narrows the range, so pixels sharpen digit by digit).

:func:`select_frames` caps the number of frames (default 64, always including the first and last
state) and :func:`save_gif` writes them with Pillow. :func:`animate` picks text or images from a task.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .extras import require

require("PIL", "animations (mdm-prime sample --animate)")
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from .plotting import wrap_to_width  # noqa: E402
from .subtokenizer import SubTokenizer  # noqa: E402
from .validation import check_int  # noqa: E402

__all__ = [
    "MAX_FRAMES",
    "animate",
    "coarse_values",
    "digits_known",
    "image_frames",
    "save_gif",
    "select_frames",
    "text_frames",
]

MAX_FRAMES = 64
"""Default cap on the frames of a GIF (states are subsampled evenly, first and last kept)."""

KNOWN_BG, PARTIAL_BG, PARTIAL_FG, MASKED_BG = (255, 255, 255), (255, 236, 190), (235, 140, 0), (215, 215, 215)
INK, FAINT = (20, 20, 20), (110, 110, 110)


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSansMono.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _check_trajectory(trajectory: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    if not isinstance(trajectory, torch.Tensor) or trajectory.dim() != 3:
        got = tuple(trajectory.shape) if isinstance(trajectory, torch.Tensor) else type(trajectory).__name__
        raise ValueError(f"trajectory must be a tensor [T+1, B, L·ℓ], got {got}")
    if trajectory.shape[0] < 1 or trajectory.shape[2] % sub.length:
        raise ValueError(
            f"trajectory of shape {tuple(trajectory.shape)} does not hold whole tokens of ℓ={sub.length} digits"
        )
    return trajectory.long()


def select_frames(num_states: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """Indices of the states to draw: all of ``0..num_states-1`` when there are at most ``max_frames``,
    else ``max_frames`` evenly spaced ones including the first and the last."""
    if num_states < 1:
        raise ValueError(f"num_states must be >= 1, got {num_states}")
    check_int("max_frames", max_frames, low=2)
    if num_states <= max_frames:
        return list(range(num_states))
    picks = torch.linspace(0, num_states - 1, max_frames).round().long().tolist()
    return sorted(set(picks))


def digits_known(states: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """Known digits per token: ``LongTensor[N, L]`` in ``0..ℓ`` for digits ``states [N, L·ℓ]``."""
    n, d = states.shape
    return (states.view(n, d // sub.length, sub.length) != sub.mask_id).sum(-1)


def coarse_values(states: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """Mean class index of the classes consistent with each token's known digits:
    ``FloatTensor[N, L]`` for digits ``states [N, L·ℓ]`` (fully known: the class itself; fully masked:
    ``(C − 1)/2``). For images the class is the intensity level, so this is a coarse pixel value."""
    n, d = states.shape
    y = states.view(n, d // sub.length, 1, sub.length)
    table = sub.table("digit_table", states.device).view(1, 1, sub.num_classes, sub.length)
    agree = ((y == sub.mask_id) | (y == table)).all(-1)  # [N, L, C]
    classes = torch.arange(sub.num_classes, dtype=torch.float64, device=states.device)
    return (agree.double() * classes).sum(-1) / agree.sum(-1).clamp_min(1)


def _counters(trajectory: torch.Tensor, calls: torch.Tensor | None, sample: int) -> tuple[list, list]:
    """Idle steps and network calls of ``sample`` before each state (cumulative, ``T+1`` each)."""
    changed = (trajectory[1:, sample] != trajectory[:-1, sample]).any(-1)
    idle = [0] + torch.cumsum((~changed).long(), 0).tolist()
    if calls is None:
        return idle, [None] * len(idle)
    return idle, [0] + torch.cumsum(calls[:, sample].long(), 0).tolist()


def _printable(text: str) -> str:
    out = []
    for ch in text:
        if ch == "\n":
            out.append("↵")
        elif ch == "\t":
            out.append("→")
        elif unicodedata.category(ch)[0] == "C":
            out.append("·")
        else:
            out.append(ch)
    return "".join(out) or "∅"


def text_frames(
    trajectory: torch.Tensor,
    sub: SubTokenizer,
    decode_token: Callable[[int], str],
    *,
    calls: torch.Tensor | None = None,
    sample: int = 0,
    columns: int = 64,
    max_frames: int = MAX_FRAMES,
    font_size: int = 14,
    title: str = "",
) -> list[Image.Image]:
    """Frames of one sample's text being revealed (see the module docstring for the drawing).

    Args:
        trajectory: digits ``[T+1, B, L·ℓ]`` (``SampleResult.trajectory``).
        decode_token: a class id → its text (e.g. ``lambda i: tokenizer.decode([i])``).
        calls: ``Bool[T, B]`` (``SampleResult.trajectory_calls``) for the network-call counter.
        sample: which row to draw. columns: characters per line.
    """
    traj = _check_trajectory(trajectory, sub)
    if not 0 <= sample < traj.shape[1]:
        raise ValueError(f"sample must be in 0..{traj.shape[1] - 1}, got {sample}")
    final = sub.decode(traj[-1, sample : sample + 1])[0].tolist()
    words = [_printable(decode_token(int(c))) for c in final]
    font = _font(font_size)
    cw = max(1, round(font.getlength("M")))
    lh = font_size + 6
    # layout from the final text: a token's box is as wide as its final text, so nothing moves
    boxes, col, row = [], 0, 0
    for w in words:
        width = min(len(w), columns)
        if col + width > columns:
            col, row = 0, row + 1
        boxes.append((col, row, width))
        col += width
        if w.endswith("↵"):
            col, row = 0, row + 1
    rows = row + 1
    pad = 8
    width = 2 * pad + columns * cw
    idle, ncalls = _counters(traj, calls, sample)
    steps = traj.shape[0] - 1
    picks = select_frames(traj.shape[0], max_frames)
    heads = {}
    for k in picks:
        head = f"step {k}/{steps} · idle steps {idle[k]}"
        if ncalls[k] is not None:
            head += f" · network calls {ncalls[k]}"
        heads[k] = wrap_to_width(head, font, width - 2 * pad)
    # the caption and the counters wrap to the frame's width (never cut at the right edge)
    title_lines = wrap_to_width(title, font, width - 2 * pad)
    head_rows = max(len(v) for v in heads.values())
    header = lh * (len(title_lines) + head_rows)
    legend = _legend_layout(font, cw, lh, width - 2 * pad)
    legend_rows = 1 + max(r for r, _, _, _ in legend)
    size = (width, 2 * pad + header + rows * lh + legend_rows * lh)
    frames = []
    for k in picks:
        state = traj[k, sample : sample + 1]
        known = digits_known(state, sub)[0].tolist()
        img = Image.new("RGB", size, KNOWN_BG)
        draw = ImageDraw.Draw(img)
        for i, line in enumerate(title_lines):
            draw.text((pad, pad + i * lh), line, fill=FAINT, font=font)
        for i, line in enumerate(heads[k]):
            draw.text((pad, pad + (len(title_lines) + i) * lh), line, fill=INK, font=font)
        top = pad + header
        for (c, r, width), w, kn in zip(boxes, words, known):
            x0, y0 = pad + c * cw, top + r * lh
            x1, y1 = x0 + width * cw - 2, y0 + lh - 2  # 1 px apart: neighbouring boxes stay distinct
            if kn == sub.length:
                draw.text((x0, y0 + 1), w[:width], fill=INK, font=font)
            elif kn == 0:
                draw.rectangle((x0, y0, x1, y1), fill=MASKED_BG)
            else:
                draw.rectangle((x0, y0, x1, y1), fill=PARTIAL_BG)
                fill_top = y1 - round((y1 - y0) * kn / sub.length)
                draw.rectangle((x0, fill_top, x1, y1), fill=PARTIAL_FG)
        legend_top = top + rows * lh + 4
        for r, x, label, colour in legend:
            y = legend_top + r * lh
            if colour is not None:
                draw.rectangle((pad + x, y + 2, pad + x + cw - 1, y + lh - 6), fill=colour)
                x += cw + 4
            draw.text((pad + x, y), label, fill=FAINT, font=font)
        frames.append(img)
    return frames


_LEGEND = (("Aa known", None), ("partly known (height: digits known)", PARTIAL_FG), ("masked", MASKED_BG))


def _legend_layout(font, cw: int, lh: int, width: int) -> list[tuple[int, int, str, tuple | None]]:
    """``(row, x, text, swatch colour)`` of the text legend's items, flowed into rows of ``width`` px
    (a label wider than a row wraps onto the next rows, after its swatch)."""
    out, row, x = [], 0, 0
    for label, colour in _LEGEND:
        swatch = cw + 4 if colour is not None else 0
        item = swatch + round(font.getlength(label))
        if x and x + item > width:
            row, x = row + 1, 0
        lines = wrap_to_width(label, font, width - x - swatch) if x + item > width else [label]
        out.append((row, x, lines[0], colour))
        for line in lines[1:]:
            row += 1
            out.append((row, x + swatch, line, None))
        x += swatch + round(max(font.getlength(line) for line in lines)) + 2 * cw
    return out


def image_frames(
    trajectory: torch.Tensor,
    sub: SubTokenizer,
    image_shape: Sequence[int],
    *,
    calls: torch.Tensor | None = None,
    max_samples: int = 16,
    scale: int = 3,
    max_frames: int = MAX_FRAMES,
    title: str = "",
) -> list[Image.Image]:
    """Frames of up to ``max_samples`` images sharpening (see the module docstring).

    Args:
        trajectory: digits ``[T+1, B, L·ℓ]`` with ``L = ch·H·W`` (the image task's token order).
        image_shape: ``(ch, H, W)`` with ``ch`` 1 (grey) or 3 (RGB); intensities are the classes
            ``0..C−1``. calls: ``Bool[T, B]`` for the counter (the mean over the drawn samples).
        scale: pixels per image pixel (nearest neighbour).
    """
    traj = _check_trajectory(trajectory, sub)
    ch, h, w = (int(v) for v in image_shape)
    if ch not in (1, 3) or ch * h * w * sub.length != traj.shape[2]:
        raise ValueError(
            f"image_shape {tuple(image_shape)} (1 or 3 channels) does not match {traj.shape[2]} digits "
            f"of ℓ={sub.length}"
        )
    n = min(max_samples, traj.shape[1])
    cols = max(1, round(n**0.5))
    grid_rows = -(-n // cols)
    gap, line_h = 2, 18
    font = _font(13)
    width = max(cols * (w * scale + gap) + gap, 380)  # room for the counters (every frame differs)
    steps = traj.shape[0] - 1
    counters = [_counters(traj, calls, i) for i in range(n)]
    picks = select_frames(traj.shape[0], max_frames)
    heads = {}
    for k in picks:
        idle = sum(c[0][k] for c in counters) / n
        head = f"step {k}/{steps} · idle {idle:.1f}"
        if counters[0][1][k] is not None:
            head += f" · calls {sum(c[1][k] for c in counters) / n:.1f}"
        heads[k] = wrap_to_width(head + " (per image)", font, width - 2 * (gap + 2))
    # the caption and the counters wrap to the frame's width (never cut at the right edge)
    title_lines = wrap_to_width(title, font, width - 2 * (gap + 2))
    head_rows = max(len(v) for v in heads.values())
    header = 4 + line_h * (len(title_lines) + head_rows)
    height = header + grid_rows * (h * scale + gap) + gap
    frames = []
    for k in picks:
        values = coarse_values(traj[k, :n], sub) / max(1, sub.num_classes - 1) * 255.0  # [n, L]
        pix = values.round().clamp(0, 255).to(torch.uint8).view(n, ch, h, w).permute(0, 2, 3, 1)
        img = Image.new("RGB", (width, height), (255, 255, 255))
        for i in range(n):
            arr = pix[i].numpy()
            tile = Image.fromarray(arr[..., 0] if ch == 1 else arr, "L" if ch == 1 else "RGB")
            tile = tile.resize((w * scale, h * scale), Image.NEAREST).convert("RGB")
            img.paste(
                tile, (gap + (i % cols) * (w * scale + gap), header + gap + (i // cols) * (h * scale + gap))
            )
        draw = ImageDraw.Draw(img)
        for i, line in enumerate(title_lines):
            draw.text((gap + 2, 2 + i * line_h), line, fill=FAINT, font=font)
        for i, line in enumerate(heads[k]):
            draw.text((gap + 2, 2 + (len(title_lines) + i) * line_h), line, fill=INK, font=font)
        frames.append(img)
    return frames


def save_gif(
    frames: Sequence[Image.Image], path: str | Path, *, duration_ms: int = 90, hold_last_ms: int = 1500
) -> Path:
    """Write ``frames`` as a looping GIF (each frame ``duration_ms``, the last held ``hold_last_ms``)."""
    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"the animation is written as a GIF; give a .gif path, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [duration_ms] * (len(frames) - 1) + [hold_last_ms]
    pal = [f.convert("P", palette=Image.ADAPTIVE, colors=64) for f in frames]
    pal[0].save(
        path, save_all=True, append_images=pal[1:], duration=durations, loop=0, optimize=True, disposal=1
    )
    return path


def animate(
    trajectory: torch.Tensor,
    sub: SubTokenizer,
    task,
    path: str | Path,
    *,
    calls: torch.Tensor | None = None,
    max_frames: int = MAX_FRAMES,
    title: str = "",
) -> Path:
    """Write the GIF of a trajectory for ``task`` (a :class:`mdm_prime.tasks.Task`): image frames when
    the task has an ``image_shape``, else text frames of sample 0 (the task's tokenizer decodes a
    token; without one, token ids are shown)."""
    if getattr(task, "image_shape", None) is not None:
        frames = image_frames(
            trajectory, sub, task.image_shape, calls=calls, max_frames=max_frames, title=title
        )
    else:
        tokenizer = getattr(task, "tokenizer", None)
        decode = (lambda i: tokenizer.decode([i])) if tokenizer is not None else (lambda i: f"{i} ")
        frames = text_frames(trajectory, sub, decode, calls=calls, max_frames=max_frames, title=title)
    return save_gif(frames, path)
