"""Image U-Net for ``(B, ch, H, W)`` tokens with digits stacked as channels (docs/method.md §1, §3).

Input ``y: LongTensor[B, ch·ℓ, H, W]`` (``SubTokenizer.encode_image`` layout, channel ``c·ℓ + j``):
every digit is embedded by the concat adapter into width ``e/ℓ`` and the ℓ digits of a pixel channel
concatenated, giving ``ch·e`` input feature maps. A DDPM/ADM-style U-Net (residual blocks with
GroupNorm, self-attention at chosen resolutions, optional time embedding added in every residual
block) maps them to ``ch·C`` zero-initialised output maps → logits ``FloatTensor[B, ch, H, W, C]``.

The sequence contract is met by reshaping: ``forward(y_t: [B, ch·H·W·ℓ])`` uses
``SubTokenizer.sequence_to_image`` / token order ``(c, h, w)`` and returns ``[B, ch·H·W, C]``.
Odd sizes (28 → 14 → 7) work: upsampling matches the skip connection's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..subtokenizer import SubTokenizer
from ..validation import is_int
from .adapter import SubTokenEmbedding
from .base import DiffusionModel, autocast_context, check_int_tensor, check_positive_int
from .layers import TimeEmbedding

__all__ = ["UNet"]


def _groups(channels: int) -> int:
    """Largest of 32, 16, …, 1 dividing ``channels`` (GroupNorm groups)."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class ResBlock(nn.Module):
    """GN–SiLU–conv3, (+ time), GN–SiLU–dropout–conv3 (zero-init), with a 1×1 skip if widths differ."""

    def __init__(self, cin: int, cout: int, temb_dim: int | None, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb_dim, cout) if temb_dim else None
        self.norm2, self.drop = nn.GroupNorm(_groups(cout), cout), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.temb is not None:
            h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over the ``H·W`` positions, residual, zero-init output projection."""

    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        if channels % self.heads:
            raise ValueError(f"channels {channels} not divisible into heads of {head_channels}")
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (
            self.qkv(self.norm(x))
            .reshape(b, 3, self.heads, c // self.heads, h * w)
            .transpose(-1, -2)
            .unbind(1)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(DiffusionModel):
    """U-Net over digit-stacked image channels.

    Args:
        subtokenizer: ``C``, ``ℓ``, ``b``.
        image_shape: ``(ch, H, W)`` of the token image; ``seq_len = ch·H·W``.
        base_channels: width of the first level. channel_mult: width multipliers per level (a
            downsample between levels). num_res_blocks: residual blocks per level.
        attention_resolutions: spatial sizes (the ``H`` of a level) that get self-attention.
        embed_dim: per-channel embedding width ``e`` (``e mod ℓ = 0``). head_channels: per head.
        dropout, time_conditioned, precision, schedule: as the transformer.
        seq_len: optional, must equal ``ch·H·W`` (it is stored in ``config``).
    """

    architecture = "unet"

    def __init__(
        self,
        subtokenizer: SubTokenizer,
        image_shape: tuple | list,
        base_channels: int = 32,
        channel_mult: tuple | list = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple | list = (),
        embed_dim: int = 32,
        head_channels: int = 64,
        dropout: float = 0.0,
        time_conditioned: bool = False,
        precision: str = "auto",
        schedule: object = "linear",
        seq_len: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
            raise ValueError(f"image_shape must be (ch, H, W), got {image_shape!r}")
        ch, height, width = (check_positive_int(n, v) for n, v in zip(("ch", "H", "W"), image_shape))
        if seq_len is not None and seq_len != ch * height * width:
            raise ValueError(
                f"seq_len must be ch·H·W = {ch * height * width} for image_shape {image_shape}, got {seq_len}"
            )
        for name, value in (
            ("base_channels", base_channels),
            ("num_res_blocks", num_res_blocks),
            ("embed_dim", embed_dim),
            ("head_channels", head_channels),
        ):
            check_positive_int(name, value)
        if not channel_mult or not all(is_int(m, low=1) for m in channel_mult):
            raise ValueError(f"channel_mult must be a non-empty list of positive ints, got {channel_mult!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._init_common(
            subtokenizer,
            ch * height * width,
            time_conditioned,
            precision,
            schedule,
            {
                "image_shape": [ch, height, width],
                "base_channels": base_channels,
                "channel_mult": list(channel_mult),
                "num_res_blocks": num_res_blocks,
                "attention_resolutions": list(attention_resolutions),
                "embed_dim": embed_dim,
                "head_channels": head_channels,
                "dropout": float(dropout),
            },
        )
        self.image_shape = (ch, height, width)
        self.embed = SubTokenEmbedding(subtokenizer, embed_dim, "concat")
        temb_dim = 4 * base_channels if time_conditioned else None
        self.time_embed = TimeEmbedding(temb_dim) if time_conditioned else None
        self.conv_in = nn.Conv2d(ch * embed_dim, base_channels, 3, padding=1)

        attn_at = set(attention_resolutions)
        self.down = nn.ModuleList()
        skips, cur, res, level_res = [base_channels], base_channels, height, []
        for level, mult in enumerate(channel_mult):
            level_res.append(res)
            for _ in range(num_res_blocks):
                blocks = [ResBlock(cur, base_channels * mult, temb_dim, dropout)]
                cur = base_channels * mult
                if res in attn_at:
                    blocks.append(AttnBlock(cur, head_channels))
                self.down.append(nn.ModuleList(blocks))
                skips.append(cur)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
                res = (res + 1) // 2
        self.mid = nn.ModuleList(
            [
                ResBlock(cur, cur, temb_dim, dropout),
                AttnBlock(cur, head_channels),
                ResBlock(cur, cur, temb_dim, dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                blocks = [ResBlock(cur + skips.pop(), base_channels * mult, temb_dim, dropout)]
                cur = base_channels * mult
                if level_res[level] in attn_at:
                    blocks.append(AttnBlock(cur, head_channels))
                if level > 0 and i == num_res_blocks:
                    blocks.append(nn.Conv2d(cur, cur, 3, padding=1))  # after nearest upsampling
                self.up.append(nn.ModuleList(blocks))
        self.norm_out = nn.GroupNorm(_groups(cur), cur)
        self.conv_out = nn.Conv2d(cur, ch * subtokenizer.num_classes, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _run_blocks(
        blocks: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor | None, skip_size=None
    ) -> torch.Tensor:
        for block in blocks:
            if isinstance(block, nn.Conv2d):
                if block.stride == (1, 1):  # upsample conv: nearest to the next skip's size first
                    h = F.interpolate(h, size=skip_size, mode="nearest")
                h = block(h)
            else:
                h = block(h, temb)
        return h

    def _image_logits(self, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """``y: [B, ch·ℓ, H, W]`` → ``[B, ch, H, W, C]`` (no checks, no autocast)."""
        b = y.shape[0]
        ch, height, width = self.image_shape
        e = self.embed(self.subtokenizer.image_to_sequence(y))  # (B, ch·H·W, e), tokens (c, h, w)
        x = e.reshape(b, ch, height, width, -1).permute(0, 1, 4, 2, 3).reshape(b, -1, height, width)
        temb = F.silu(self.time_embed(t)) if self.time_embed is not None else None
        h = self.conv_in(x)
        hs = [h]
        for blocks in self.down:
            h = self._run_blocks(blocks, h, temb)
            hs.append(h)
        h = self._run_blocks(self.mid, h, temb)
        for blocks in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            h = self._run_blocks(blocks, h, temb, skip_size=hs[-1].shape[-2:] if hs else None)
        out = self.conv_out(F.silu(self.norm_out(h)))  # (B, ch·C, H, W)
        return out.reshape(b, ch, self.num_classes, height, width).permute(0, 1, 3, 4, 2)

    def _forward(self, y_t: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        ch, height, width = self.image_shape
        y = self.subtokenizer.sequence_to_image(
            y_t, (y_t.shape[0], ch * self.subtokenizer.length, height, width)
        )
        return self._image_logits(y, t).reshape(y_t.shape[0], ch * height * width, self.num_classes)

    def forward_image(self, y: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``y: LongTensor[B, ch·ℓ, H, W]`` (digits or mask) → logits ``FloatTensor[B, ch, H, W, C]``."""
        check_int_tensor("y", y, 4)
        ch, height, width = self.image_shape
        expected = (ch * self.subtokenizer.length, height, width)
        if tuple(y.shape[1:]) != expected:
            raise ValueError(
                f"y must have shape (B, {expected[0]}, {height}, {width}) (ch·ℓ, H, W), got {tuple(y.shape)}"
            )
        self.check_input(self.subtokenizer.image_to_sequence(y), t)
        with autocast_context(self.precision, y.device):
            logits = self._image_logits(y, t)
        return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
