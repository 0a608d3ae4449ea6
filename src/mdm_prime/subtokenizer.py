"""Sub-tokenizer ``f_ℓ``: tokens in ``{0..C-1}`` ↔ ℓ base-``b`` digits (``docs/method.md §1``).

A token ``c`` is written as the base-``b`` digits of ``π(c)`` (most significant first), where ``π`` is
an optional permutation of ``{0..C-1}``. The sub-token alphabet is ``{0..b-1}`` plus the mask symbol
``mask_id = b``. Sequences are token-major: token ``i`` of a ``(B, L)`` tensor occupies positions
``iℓ .. iℓ+ℓ-1`` of the ``(B, L·ℓ)`` sub-token tensor. Images ``(B, ch, H, W)`` keep their grid and
stack the digits as channels: channel ``c`` digit ``j`` becomes channel ``c·ℓ + j``.

Example::

    >>> sub = SubTokenizer(num_classes=256, length=2)   # b = 16
    >>> sub.encode(torch.tensor([[0, 255, 17]]))
    tensor([[ 0,  0, 15, 15,  1,  1]])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .validation import check_positive_int

__all__ = ["SubTokenizer", "default_base", "MAX_CODES", "MAX_LENGTH"]

MAX_LENGTH = 64
"""Largest sub-token length ``ℓ`` accepted (checked before any ``b^ℓ`` is computed)."""
MAX_CODES = 2**26
"""Largest code grid ``b^ℓ`` accepted (67,108,864 codes). The carry-over kernels index and reduce over
the ``b^ℓ`` grid (``class_of_code`` alone is ``8·b^ℓ`` bytes, a per-token code-space mask ``4·b^ℓ``),
so a larger grid would try to allocate gigabytes to terabytes; e.g. ``C = 256, ℓ = 64`` gives ``b = 2``
and ``2^64`` codes."""


def default_base(num_classes: int, length: int) -> int:
    """Smallest integer ``b ≥ 2`` with ``b**length ≥ num_classes`` (exact integer arithmetic)."""
    check_positive_int("num_classes", num_classes)
    check_positive_int("length", length)
    _check_length(length)
    if length == 1:
        return max(num_classes, 1)
    base = max(2, int(round(num_classes ** (1.0 / length))) - 1)
    while base**length < num_classes:
        base += 1
    while base > 2 and (base - 1) ** length >= num_classes:
        base -= 1
    return base


def _check_length(length: int) -> None:
    if length > MAX_LENGTH:
        raise ValueError(f"length (sub-tokens per token) must be <= {MAX_LENGTH}, got {length}")


def _check_grid(num_classes: int, length: int, base: int) -> None:
    codes = base**length  # exact Python int; length <= MAX_LENGTH keeps this cheap
    if codes > MAX_CODES:
        raise ValueError(
            f"num_classes={num_classes}, length={length}, base={base} gives base**length = {codes} codes, "
            f"more than the limit of {MAX_CODES} (2**26) codes the carry-over tables can hold; "
            f"choose a smaller length or base (by default base is the smallest b with b**length >= num_classes)"
        )


class SubTokenizer:
    """Maps tokens to ℓ base-``b`` sub-tokens and back.

    Args:
        num_classes: vocabulary size ``C ≥ 1``.
        length: number of sub-tokens per token ``1 ≤ ℓ ≤ MAX_LENGTH (64)``. ``ℓ = 1`` is the identity
            (plain MDM).
        base: digit base ``b``; default the smallest ``b`` with ``b^ℓ ≥ C``. Must satisfy
            ``C ≤ b^ℓ ≤ MAX_CODES (2^26)``.
        permutation: optional sequence/tensor of length ``C``, a permutation of ``{0..C-1}`` applied
            to a token before it is written in base ``b``.

    Attributes:
        num_classes, length, base: ``C``, ``ℓ``, ``b``.
        mask_id: the mask sub-token ``b``.
        num_codes: ``b^ℓ`` (codes ``≥ C`` are invalid and never produced).
        digit_table: ``LongTensor[C, ℓ]``, ``digit_table[c, j] = d_j(c)``.
        code_of_class: ``LongTensor[C]``, ``π(c)``.
        class_of_code: ``LongTensor[b^ℓ]``, ``π^{-1}(code)`` for valid codes, ``-1`` for invalid ones.
    """

    def __init__(
        self,
        num_classes: int,
        length: int,
        base: int | None = None,
        permutation: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        check_positive_int("num_classes", num_classes)
        check_positive_int("length", length)
        _check_length(length)
        if num_classes > MAX_CODES:
            raise ValueError(f"num_classes must be <= {MAX_CODES} (2**26), got {num_classes}")
        if base is None:
            base = default_base(num_classes, length)
        else:
            check_positive_int("base", base)
            if base < 2 and not (length == 1 and num_classes == 1):
                raise ValueError(f"base must be >= 2, got {base}")
            if base**length < num_classes:
                raise ValueError(
                    f"base**length must be >= num_classes: {base}**{length} = {base**length} "
                    f"< {num_classes}; use base >= {default_base(num_classes, length)}"
                )
        _check_grid(num_classes, length, base)
        self.num_classes = num_classes
        self.length = length
        self.base = base
        self.mask_id = base
        self.num_codes = base**length

        if permutation is None:
            code_of_class = torch.arange(num_classes, dtype=torch.long)
            self.permutation: torch.Tensor | None = None
        else:
            code_of_class = torch.as_tensor(permutation)
            if code_of_class.dtype.is_floating_point or code_of_class.dtype == torch.bool:
                raise TypeError(f"permutation must hold integers, got dtype {code_of_class.dtype}")
            code_of_class = code_of_class.long().flatten()
            if code_of_class.numel() != num_classes or not torch.equal(
                torch.sort(code_of_class).values, torch.arange(num_classes)
            ):
                raise ValueError(
                    f"permutation must be a permutation of 0..{num_classes - 1} "
                    f"(length {num_classes}), got length {code_of_class.numel()} "
                    f"with values in [{int(code_of_class.min())}, {int(code_of_class.max())}]"
                    if code_of_class.numel()
                    else f"permutation must have length {num_classes}, got an empty one"
                )
            self.permutation = code_of_class.clone()
        self.code_of_class = code_of_class
        class_of_code = torch.full((self.num_codes,), -1, dtype=torch.long)
        class_of_code[code_of_class] = torch.arange(num_classes)
        self.class_of_code = class_of_code
        self.place_values = base ** torch.arange(length - 1, -1, -1, dtype=torch.long)  # (ℓ,)
        self.digit_table = (code_of_class[:, None] // self.place_values) % base  # (C, ℓ)
        self._device_cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        perm = ", permuted" if self.permutation is not None else ""
        return f"SubTokenizer(num_classes={self.num_classes}, length={self.length}, base={self.base}{perm})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SubTokenizer):
            return NotImplemented
        return (self.num_classes, self.length, self.base) == (
            other.num_classes,
            other.length,
            other.base,
        ) and torch.equal(self.code_of_class, other.code_of_class)

    def config(self) -> dict:
        """JSON-serialisable description; ``SubTokenizer.from_config(sub.config()) == sub``."""
        return {
            "num_classes": self.num_classes,
            "length": self.length,
            "base": self.base,
            "permutation": None if self.permutation is None else self.permutation.tolist(),
        }

    @classmethod
    def from_config(cls, config: dict) -> SubTokenizer:
        return cls(config["num_classes"], config["length"], config.get("base"), config.get("permutation"))

    TABLES = ("digit_table", "code_of_class", "class_of_code", "place_values")
    """The lookup tables other modules read (CPU tensors on the instance; :meth:`table` per device)."""

    def table(self, name: str, device: torch.device | str | None = None) -> torch.Tensor:
        """One of :data:`TABLES` on ``device`` (moved once per device and cached):
        ``digit_table`` ``LongTensor[C, ℓ]`` (``d_j(c)``), ``code_of_class`` ``LongTensor[C]`` (the
        permuted code of each class), ``class_of_code`` ``LongTensor[b^ℓ]`` (−1 for invalid codes),
        ``place_values`` ``LongTensor[ℓ]`` (``b^(ℓ−1−j)``)."""
        if name not in self.TABLES:
            raise ValueError(f"unknown table {name!r}; expected one of {self.TABLES}")
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (name, device)
        if key not in self._device_cache:
            self._device_cache[key] = getattr(self, name).to(device)
        return self._device_cache[key]

    def _check_tokens(self, x: torch.Tensor, what: str = "tokens") -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{what} must be an integer tensor, got dtype {x.dtype}")
        if x.numel():
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi >= self.num_classes:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"{what} must lie in [0, {self.num_classes}) (num_classes={self.num_classes}), "
                    f"found {bad}"
                )

    def _check_digits(self, y: torch.Tensor, allow_mask: bool) -> None:
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"sub-tokens must be a torch.Tensor, got {type(y).__name__}")
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise TypeError(f"sub-tokens must be an integer tensor, got dtype {y.dtype}")
        if y.dim() == 0 or y.shape[-1] % self.length:
            raise ValueError(
                f"sub-token tensor's last dimension must be a multiple of length={self.length}, "
                f"got shape {tuple(y.shape)}"
            )
        if y.numel():
            lo, hi = int(y.min()), int(y.max())
            top = self.base if allow_mask else self.base - 1
            if lo < 0 or hi > top:
                bad = lo if lo < 0 else hi
                what = f"[0, {self.base}] (digits 0..{self.base - 1}, mask {self.mask_id})"
                if not allow_mask:
                    what = f"[0, {self.base - 1}] (no mask {self.mask_id} allowed here)"
                raise ValueError(f"sub-tokens must lie in {what}, found {bad}")

    # ------------------------------------------------------------------ sequences
    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(..., L)`` token ids → ``(..., L·ℓ)`` digits, token-major."""
        self._check_tokens(tokens)
        if tokens.dim() == 0:
            raise ValueError("tokens must have at least one dimension (..., L), got a scalar")
        digits = self.table("digit_table", tokens.device)[tokens.long()]  # (..., L, ℓ)
        return digits.flatten(-2)

    def decode(self, subtokens: torch.Tensor) -> torch.Tensor:
        """``(..., L·ℓ)`` digits (no mask) → ``(..., L)`` token ids. Invalid codes raise."""
        self._check_digits(subtokens, allow_mask=False)
        codes = self.digits_to_codes(subtokens.long().unflatten(-1, (-1, self.length)))
        tokens = self.table("class_of_code", codes.device)[codes]
        if tokens.numel() and int(tokens.min()) < 0:
            bad = int(codes[tokens < 0][0])
            raise ValueError(
                f"sub-tokens decode to code {bad}, which is not a valid token "
                f"(valid codes map to 0..{self.num_classes - 1}; b^ℓ = {self.num_codes})"
            )
        return tokens

    def digits_to_codes(self, digits: torch.Tensor) -> torch.Tensor:
        """``(..., ℓ)`` digits → ``(...)`` base-``b`` codes ``Σ_j d_j b^{ℓ-1-j}`` (no checks)."""
        return (digits * self.table("place_values", digits.device)).sum(-1)

    # ------------------------------------------------------------------ images
    def encode_image(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, ch, H, W)`` token ids → ``(B, ch·ℓ, H, W)`` digits (channel ``c·ℓ + j``)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"image tokens must have shape (B, ch, H, W), got {shape}")
        self._check_tokens(tokens, "image tokens")
        digits = self.table("digit_table", tokens.device)[tokens.long()]  # (B, ch, H, W, ℓ)
        return digits.permute(0, 1, 4, 2, 3).flatten(1, 2)

    def decode_image(self, subtokens: torch.Tensor) -> torch.Tensor:
        """``(B, ch·ℓ, H, W)`` digits → ``(B, ch, H, W)`` token ids."""
        if not isinstance(subtokens, torch.Tensor) or subtokens.dim() != 4:
            shape = (
                tuple(subtokens.shape) if isinstance(subtokens, torch.Tensor) else type(subtokens).__name__
            )
            raise ValueError(f"image sub-tokens must have shape (B, ch·ℓ, H, W), got {shape}")
        if subtokens.shape[1] % self.length:
            raise ValueError(
                f"image sub-tokens need a channel count divisible by length={self.length}, "
                f"got {subtokens.shape[1]}"
            )
        as_seq = self.image_to_sequence(subtokens)
        return self.sequence_to_image(self.decode(as_seq), subtokens.shape)

    def image_to_sequence(self, subtokens: torch.Tensor) -> torch.Tensor:
        """``(B, ch·ℓ, H, W)`` → ``(B, ch·H·W·ℓ)`` token-major sub-token sequence (tokens ordered c, h, w)."""
        b, chl, h, w = subtokens.shape
        ch = chl // self.length
        return subtokens.reshape(b, ch, self.length, h, w).permute(0, 1, 3, 4, 2).reshape(b, -1)

    def sequence_to_image(
        self, tokens_or_digits: torch.Tensor, image_shape: torch.Size | tuple
    ) -> torch.Tensor:
        """Inverse layout helper. ``(B, ch·H·W)`` tokens → ``(B, ch, H, W)``;
        ``(B, ch·H·W·ℓ)`` digits → ``(B, ch·ℓ, H, W)`` (chosen by the last dimension's size)."""
        b, chl, h, w = image_shape
        ch = chl // self.length
        n = tokens_or_digits.shape[-1]
        if n == ch * h * w:
            return tokens_or_digits.reshape(b, ch, h, w)
        return tokens_or_digits.reshape(b, ch, h, w, self.length).permute(0, 1, 4, 2, 3).reshape(b, chl, h, w)
