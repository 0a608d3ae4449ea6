"""Carry-over, the fast path: box-structured kernels (docs/method.md §3).

Tokens are grouped by mask pattern. Fully seen tokens are one-hot; partially seen tokens touch only
their *box* of consistent codes (``b^k`` codes for ``k`` hidden digits); fully masked tokens are
normalised in cache-resident row chunks whose single ``exp`` also feeds the digit marginals.
Results equal :mod:`mdm_prime.parameterization.reference` (tested against float64 brute force).
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from collections import OrderedDict

import torch

from ..subtokenizer import SubTokenizer
from . import reference as ref
from .reference import check_class_axis, check_logits, compute_dtype, split_tokens

__all__ = [
    "carry_over",
    "carry_over_log_probs",
    "carry_over_nll",
    "clear_layout_cache",
    "digit_log_marginals",
    "layout",
    "token_boxes",
]

# Rows per block of the dense (fully masked) path on CPU: 32 rows x 50257 fp32 = 6.4 MB per buffer,
# cache-resident across the exp / reduce / subtract passes. On other devices one chunk holds all rows.
CHUNK_ROWS = 32
_CACHE_SIZE = 16


# ---------------------------------------------------------------------------------------------
# layouts: per-(sub-tokenizer, device) index tables, cached by this module


class Layout:
    """Index tables of the code grid of one sub-tokenizer on one device (built once, then cached)."""

    def __init__(self, sub: SubTokenizer, device: torch.device) -> None:
        self.device = device
        self.b, self.ell, self.C, self.N = sub.base, sub.length, sub.num_classes, sub.num_codes
        self.coc = sub.class_of_code.to(device)  # (N,), -1 for invalid codes
        self.digit_table = sub.digit_table.to(device)  # (C, ℓ)
        self.pv = sub.place_values.to(device)  # (ℓ,)
        self.all_valid = self.N == self.C
        self.perm = sub.permutation is not None
        if self.perm:
            self.coc_clamped = self.coc.clamp_min(0)
            self.invalid_codes = (self.coc < 0).nonzero().flatten()
        self._offsets: dict[int, torch.Tensor] = {}
        self._box_digits: dict[int, torch.Tensor] = {}
        self._slices: dict[int, torch.Tensor] = {}

    def offsets(self, pattern: int) -> torch.Tensor:
        """Code offsets ``(b^k,)`` of the box spanned by the hidden digits of ``pattern`` (bit j set =
        digit j hidden), first hidden digit slowest."""
        off = self._offsets.get(pattern)
        if off is None:
            off = torch.zeros(1, dtype=torch.long)
            pv = self.pv.cpu()
            for j in range(self.ell):
                if pattern >> j & 1:
                    off = (off[:, None] + torch.arange(self.b) * pv[j]).flatten()
            off = self._offsets[pattern] = off.to(self.device)
        return off

    def box_digits(self, pattern: int) -> torch.Tensor:
        """Digit values ``(b^k, ℓ)`` of the box offsets (0 on the digits that are not hidden)."""
        d = self._box_digits.get(pattern)
        if d is None:
            d = self._box_digits[pattern] = (self.offsets(pattern)[:, None] // self.pv) % self.b
        return d

    def slice_classes(self, j: int) -> torch.Tensor:
        """Classes ``(b, b^(ℓ-1))`` of the codes whose digit ``j`` equals ``v`` (row ``v``); -1 = invalid."""
        s = self._slices.get(j)
        if s is None:
            pattern = ((1 << self.ell) - 1) & ~(1 << j)
            starts = torch.arange(self.b, device=self.device) * self.pv[j]
            s = self._slices[j] = self.coc[starts[:, None] + self.offsets(pattern)]
        return s


_layouts: OrderedDict[tuple, Layout] = OrderedDict()
_fingerprints: dict[int, tuple[weakref.ref, str]] = {}
_lock = threading.Lock()


def _fingerprint(table: torch.Tensor) -> str:
    """Content hash of ``sub.code_of_class``, memoised per tensor object."""
    hit = _fingerprints.get(id(table))
    if hit is not None and hit[0]() is table:
        return hit[1]
    fp = hashlib.blake2b(table.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()
    if len(_fingerprints) > 4 * _CACHE_SIZE:
        _fingerprints.clear()
    _fingerprints[id(table)] = (weakref.ref(table), fp)
    return fp


def layout(sub: SubTokenizer, device: torch.device | str) -> Layout:
    """The cached :class:`Layout` of ``sub`` on ``device``, keyed by
    ``(num_classes, ℓ, base, permutation fingerprint, device)`` (a small LRU owned by this module)."""
    device = torch.device(device)
    perm = None if sub.permutation is None else _fingerprint(sub.code_of_class)
    key = (sub.num_classes, sub.length, sub.base, perm, device)
    with _lock:
        lay = _layouts.get(key)
        if lay is not None:
            _layouts.move_to_end(key)
            return lay
    lay = Layout(sub, device)
    with _lock:
        _layouts[key] = lay
        while len(_layouts) > _CACHE_SIZE:
            _layouts.popitem(last=False)
    return lay


def clear_layout_cache() -> None:
    """Drop every cached layout (frees their device memory)."""
    with _lock:
        _layouts.clear()
        _fingerprints.clear()


# ---------------------------------------------------------------------------------------------
# shared helpers


def _chunk_rows(n: int, device: torch.device) -> int:
    return CHUNK_ROWS if device.type == "cpu" else max(1, n)


def _pattern_groups(y: torch.Tensor, ell: int, mask_id: int) -> tuple[list[torch.Tensor], list[int]]:
    """Row indices of ``y (R, ℓ)`` per mask pattern (bit j set = digit j hidden), ascending, and their
    counts (one host sync)."""
    bits = 1 << torch.arange(ell, device=y.device)
    pat = ((y == mask_id).long() * bits).sum(-1)
    counts = torch.bincount(pat, minlength=1 << ell).tolist()
    order = torch.argsort(pat, stable=True)
    return list(torch.split(order, counts)), counts


def _box_classes(lay: Layout, digits: torch.Tensor, pattern: int) -> torch.Tensor:
    """Classes ``(n, b^k)`` of the box of codes whose non-hidden digits equal ``digits (n, ℓ)``;
    ``-1`` marks invalid codes."""
    keep = torch.tensor([not (pattern >> j & 1) for j in range(lay.ell)], device=digits.device)
    base = (digits * keep * lay.pv).sum(-1)
    return lay.coc[base[:, None] + lay.offsets(pattern)]


def _gather_box(z: torch.Tensor, rows: torch.Tensor, cls: torch.Tensor, lay: Layout, cdt) -> torch.Tensor:
    vals = z[rows[:, None], cls.clamp_min(0)].to(cdt)
    if not lay.all_valid:
        vals = vals.masked_fill(cls < 0, float("-inf"))
    return vals


def _valid_targets(cls: torch.Tensor, vals: torch.Tensor, lay: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns and values for writing a box ``vals (n, b^k)`` at classes ``cls`` (``-1`` = invalid
    code): invalid entries repeat the row's first valid entry (same class, same value), so a plain
    index write stays exact without a boolean-mask gather."""
    if lay.all_valid:
        return cls, vals
    ok = cls >= 0
    first = ok.to(torch.uint8).argmax(-1, keepdim=True)
    return torch.where(ok, cls, cls.gather(1, first)), torch.where(ok, vals, vals.gather(1, first))


def _exp_stats(
    zc: torch.Tensor, out: torch.Tensor, lay: Layout, grid: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One ``exp`` pass over the rows ``zc (n, C)`` into ``out``: returns ``lse (n, 1)``, the
    per-digit sums ``(n, ℓ, b)`` if ``grid`` (ℓ ≥ 2), and their total ``(n, 1)`` (same scale).

    ``exp(z)`` is taken unshifted when every row total lands in ``[1, ∞)``: nothing overflowed, and
    an entry that underflowed (``z < log tiny``) has ``z − lse < log tiny`` too, so it is lost in the
    reference formulation as well. Otherwise the chunk is redone with the usual max shift."""
    torch.exp(zc, out=out)
    sums, total = _grid_sums(out, lay) if grid else (None, out.sum(-1, keepdim=True))
    lo, hi = total.aminmax()
    if float(lo) >= 1.0 and math.isfinite(float(hi)):
        return total.log(), sums, total
    m = zc.amax(-1, keepdim=True)
    torch.sub(zc, m, out=out).exp_()
    sums, total = _grid_sums(out, lay) if grid else (None, out.sum(-1, keepdim=True))
    return total.log().add_(m), sums, total


def _grid_sums(e: torch.Tensor, lay: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative per-class values ``e (n, C)`` (contiguous rows) → per-digit sums ``(n, ℓ, b)``
    and the total ``(n, 1)``, by hierarchical reduction over the code grid (ℓ ≥ 2)."""
    b, ell = lay.b, lay.ell
    n = e.shape[0]
    if lay.perm:
        e = e.index_select(1, lay.coc_clamped)
        e.index_fill_(1, lay.invalid_codes, 0.0)
    k = e.shape[1]
    slab = b ** (ell - 1)  # codes sharing the first digit: contiguous slabs
    full = (k // slab) * slab
    slabs = e[:, :full].unflatten(1, (full // slab, slab))  # (n, ≤b, b^(ℓ-1))
    first = slabs.sum(2)  # marginal of the first digit (long contiguous reductions)
    joint = slabs.sum(1)  # joint of digits 1..ℓ-1 (vector adds of whole slabs)
    if full < k:
        tail = e[:, full:]
        joint[:, : k - full] += tail
        first = torch.cat([first, tail.sum(1, keepdim=True)], 1)
    if first.shape[1] < b:
        first = torch.nn.functional.pad(first, (0, b - first.shape[1]))
    out = [first]
    for j in range(1, ell - 1):  # joint of digits j..ℓ-1 has b^(ℓ-j) entries
        grid = joint.view(n, b, b ** (ell - 1 - j))
        out.append(grid.sum(2))
        joint = grid.sum(1)
    out.append(joint)
    return torch.stack(out, 1), first.sum(1, keepdim=True)


def _row_blocks(fm: torch.Tensor, r: int, step: int) -> list[tuple[int, int, torch.Tensor, bool]]:
    """Blocks ``(start, stop, rows, whole)`` covering the ascending rows ``fm`` of ``0..r-1``:
    ``rows`` are the ``fm`` rows of the block; ``whole`` when the block is mostly in ``fm`` (computed
    whole by slicing, its other rows are scratch), else its ``fm`` rows are gathered."""
    nblocks = -(-r // step)
    in_fm = torch.zeros(nblocks * step, dtype=torch.long, device=fm.device)
    in_fm[fm] = 1
    per_block = in_fm.view(nblocks, step).sum(1).tolist()
    out, offset = [], 0
    for i, cnt in enumerate(per_block):
        if not cnt:
            continue
        s, e = i * step, min((i + 1) * step, r)
        out.append((s, e, fm[offset : offset + cnt], 2 * cnt >= e - s))
        offset += cnt
    return out


def token_boxes(y: torch.Tensor, sub: SubTokenizer) -> list[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """Tokens ``y (n, ℓ)`` (digits or ``sub.mask_id``) grouped by mask pattern (bit j set = digit j
    hidden): ``(pattern, idx, cls)`` per non-empty group, ``idx`` its rows of ``y`` (ascending) and
    ``cls (m, b^k)`` the classes of the box of codes that agree with their seen digits (``-1`` marks an
    invalid code), or ``None`` for fully masked tokens (every class, in class order). A token's
    carry-over distribution is the softmax of its logits over its box (docs/method.md §3)."""
    lay = layout(sub, y.device)
    groups, counts = _pattern_groups(y, sub.length, sub.mask_id)
    full = (1 << sub.length) - 1
    return [
        (p, idx, None if p == full else _box_classes(lay, y[idx], p))
        for p, (idx, cnt) in enumerate(zip(groups, counts))
        if cnt
    ]


# ---------------------------------------------------------------------------------------------
# inference: log-probs and digit marginals


def carry_over_log_probs(logits: torch.Tensor, y_t: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``log p_θ(x^i = c | y_t)``: ``FloatTensor[B, L, C]`` in nats, ``-inf`` on inconsistent classes.

    Never NaN: a token whose seen digits fit no class raises ``ValueError``, and a token with all
    digits seen gets log-probability exactly 0 on its value. float64 stays float64;
    float32/bfloat16/float16 are computed and returned in float32. Differentiable (reference formulation) when ``logits``
    requires grad; otherwise computed by the fast path."""
    check_logits(logits, sub)
    y = split_tokens(y_t, sub, logits.shape[1])
    if logits.requires_grad and torch.is_grad_enabled():
        return ref.carry_over_log_probs(logits, y_t, sub)
    lp, _ = _carry_over_fast(logits, y, sub, compute_dtype(logits.dtype), want_marginals=False)
    return lp.view(logits.shape)


def carry_over(
    logits: torch.Tensor, y_t: torch.Tensor, sub: SubTokenizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry-over log-probabilities and digit log-marginals in one pass.

    Args:
        logits: ``FloatTensor[B, L, C]`` (float64 kept; float32/half/bfloat16 computed in float32).
        y_t: ``LongTensor[B, L·ℓ]`` digits or ``sub.mask_id``.

    Returns:
        ``log_probs``: ``FloatTensor[B, L, C]`` in nats, equal to :func:`carry_over_log_probs`.
        ``digit_log_marginals``: ``FloatTensor[B, L, ℓ, b]``, ``log p_θ(y^{i,j} = v | y_t)``. For
        ℓ > 1 equal to ``digit_log_marginals(log_probs, sub)`` (values whose mass underflows are
        clamped at ``log(tiny)``; a seen digit gives 0 on its value). For ℓ = 1 the marginal *is* the
        token distribution in code order: a view ``log_probs.unsqueeze(-2)`` when there is no
        permutation and ``b = C`` (exact, ``-inf`` where impossible, not clamped).
    """
    check_logits(logits, sub)
    y = split_tokens(y_t, sub, logits.shape[1])
    cdt = compute_dtype(logits.dtype)
    b, ell = sub.base, sub.length
    if logits.requires_grad and torch.is_grad_enabled():
        lp = ref.carry_over_log_probs(logits, y_t, sub)
        marg = _single_digit_marginals(lp, sub) if ell == 1 else ref.digit_log_marginals(lp, sub)
        return lp, marg
    lp, marg = _carry_over_fast(logits, y, sub, cdt, want_marginals=ell > 1)
    lp = lp.view(logits.shape)
    marg = _single_digit_marginals(lp, sub) if ell == 1 else marg.view(*logits.shape[:2], ell, b)
    return lp, marg


def _single_digit_marginals(lp: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """ℓ = 1: the digit is the (permuted) token itself; a view of ``lp`` when nothing is permuted."""
    return ref.to_code_space(lp, sub, float("-inf")).unsqueeze(-2)


def digit_log_marginals(log_probs: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``log p_θ(y^{i,j} = v | y_t)``: ``(..., C)`` token log-probs → ``(..., ℓ, b)`` in nats.

    Values whose total mass underflows are clamped at ``log(tiny)`` of the dtype (≈ -87.3 nats in
    float32). Reference formulation with autograd or ℓ = 1; otherwise row chunks, no ``(…, C)``
    temporary."""
    check_class_axis(log_probs, sub, "log_probs")
    if sub.length == 1 or (log_probs.requires_grad and torch.is_grad_enabled()):
        return ref.digit_log_marginals(log_probs, sub)
    tiny = torch.finfo(log_probs.dtype).tiny
    lead, c = log_probs.shape[:-1], log_probs.shape[-1]
    rows = log_probs.reshape(-1, c)
    lay = layout(sub, rows.device)
    out = torch.empty(rows.shape[0], sub.length, sub.base, dtype=log_probs.dtype, device=rows.device)
    step = _chunk_rows(rows.shape[0], rows.device)
    for s in range(0, rows.shape[0], step):
        sums, _ = _grid_sums(rows[s : s + step].exp(), lay)
        torch.log(sums.clamp_min_(tiny), out=out[s : s + step])
    return out.view(*lead, sub.length, sub.base)


def _carry_over_fast(
    logits: torch.Tensor, y: torch.Tensor, sub: SubTokenizer, cdt: torch.dtype, want_marginals: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """No-autograd carry-over. ``logits (B, L, C)``, ``y (B, L, ℓ)`` → ``lp (R, C)``,
    ``marginals (R, ℓ, b)`` or None."""
    b, ell, c = sub.base, sub.length, sub.num_classes
    dev = logits.device
    z = logits.reshape(-1, c)
    if not z.is_contiguous():
        z = z.contiguous()
    y = y.reshape(-1, ell)
    r = z.shape[0]
    lay = layout(sub, dev)
    tiny = torch.finfo(cdt).tiny
    log_tiny = math.log(tiny)
    lp = torch.empty(r, c, dtype=cdt, device=dev)
    marg = torch.empty(r, ell, b, dtype=cdt, device=dev) if want_marginals else None
    groups, counts = _pattern_groups(y, ell, sub.mask_id)
    full_pat = (1 << ell) - 1
    # 1. fully masked tokens: log-softmax (+ marginals) in row blocks; a block computed whole may
    #    also cover other rows, which are overwritten below
    if counts[full_pat]:
        _dense(z, groups[full_pat], lp, marg, lay, cdt)
    if counts[full_pat] == r:
        return lp, marg
    # 2. every other token starts from "impossible"; seen digits get one-hot marginals
    rest = torch.cat(groups[:full_pat])
    lp.index_fill_(0, rest, float("-inf"))
    if marg is not None:
        marg.index_fill_(0, rest, log_tiny)
        y_rest = y[rest]
        marg[rest[:, None], torch.arange(ell, device=dev), y_rest.clamp_max(b - 1)] = torch.where(
            y_rest == sub.mask_id,
            torch.full((), log_tiny, dtype=cdt, device=dev),
            torch.zeros((), dtype=cdt, device=dev),
        )
    # 3. fully seen: one-hot (a token no class fits is flagged here and in 4; one host sync at the end)
    no_class = torch.zeros((), dtype=torch.bool, device=dev)
    rows = groups[0]
    if counts[0]:
        cls = lay.coc[(y[rows] * lay.pv).sum(-1)]
        if not lay.all_valid:
            no_class |= (cls < 0).any()
        lp[rows, cls] = 0.0
    # 4. partially seen: gather the box of consistent codes, normalise, scatter back
    for pattern in range(1, full_pat):
        if not counts[pattern]:
            continue
        rows = groups[pattern]
        cls = _box_classes(lay, y[rows], pattern)
        if not lay.all_valid:
            no_class |= (cls < 0).all(-1).any()
        vals = _gather_box(z, rows, cls, lay, cdt)
        vals = vals - torch.logsumexp(vals, -1, keepdim=True)
        col, val = _valid_targets(cls, vals, lay)
        lp[rows[:, None], col] = val
        if marg is not None:
            axes = [j for j in range(ell) if pattern >> j & 1]
            k = len(axes)
            probs = vals.exp().view(-1, *([b] * k))
            for a, j in enumerate(axes):
                others = [d + 1 for d in range(k) if d != a]
                s = probs.sum(others) if others else probs
                marg[rows, j] = s.clamp_min(tiny).log()
    if bool(no_class):
        raise ValueError(ref.NO_CONSISTENT_CLASS)
    return lp, marg


def _dense(
    z: torch.Tensor, fm: torch.Tensor, lp: torch.Tensor, marg: torch.Tensor | None, lay: Layout, cdt
) -> None:
    """Log-softmax (and, if ``marg`` is given, digit log-marginals) of the rows ``fm`` (ascending)
    of ``z``, written into ``lp`` / ``marg``, in row blocks that stay in cache. With marginals, one
    ``exp`` per element feeds both the normaliser and the grid reduction."""
    r = z.shape[0]
    tiny = torch.finfo(cdt).tiny
    step = _chunk_rows(r, z.device)
    ebuf = torch.empty(min(step, r), z.shape[1], dtype=cdt, device=z.device) if marg is not None else None
    for s, e, idx, whole in _row_blocks(fm, r, step):
        zc = (z[s:e] if whole else z[idx]).to(cdt)
        n = zc.shape[0]
        if marg is None:
            if whole:
                torch.log_softmax(zc, -1, out=lp[s:e])
            else:
                lp.index_copy_(0, idx, torch.log_softmax(zc, -1))
            continue
        lse, sums, total = _exp_stats(zc, ebuf[:n], lay, grid=True)
        mg = sums.div_(total.unsqueeze(-1)).clamp_min_(tiny).log_()
        if whole:
            torch.sub(zc, lse, out=lp[s:e])
            marg[s:e] = mg
        else:
            lp.index_copy_(0, idx, zc.sub_(lse))  # zc is a gathered copy
            marg.index_copy_(0, idx, mg)


# ---------------------------------------------------------------------------------------------
# training: per-token and per-digit NLLs with a hand-written backward


def _dense_stats(
    z: torch.Tensor, rows: torch.Tensor, lay: Layout, cdt, digits: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For the ascending rows ``rows`` of ``z``: ``lse (n,)`` and, if ``digits (n, ℓ)`` is given, the
    digit marginals ``(n, ℓ)`` of those digit values (probabilities, not clamped), from one ``exp``
    pass per cache-resident row block."""
    n_all = rows.numel()
    step = _chunk_rows(z.shape[0], z.device)
    lse = torch.empty(n_all, dtype=cdt, device=z.device)
    pj = torch.empty(n_all, lay.ell, dtype=cdt, device=z.device) if digits is not None else None
    ebuf = torch.empty(min(step, z.shape[0]), z.shape[1], dtype=cdt, device=z.device)
    offset = 0
    for s, e, idx, whole in _row_blocks(rows, z.shape[0], step):
        zc = (z[s:e] if whole else z[idx]).to(cdt)
        n, cnt = zc.shape[0], idx.numel()
        grid = digits is not None and lay.ell > 1
        lse_c, sums, total = _exp_stats(zc, ebuf[:n], lay, grid)
        local = idx - s if whole else slice(None)
        out = slice(offset, offset + cnt)
        lse[out] = lse_c[local, 0]
        if digits is not None:
            d = digits[out]
            if grid:
                pj[out] = sums[local].gather(2, d[:, :, None]).squeeze(2).div_(total[local])
            else:  # ℓ = 1: the digit is the token
                pj[out] = (z[idx, lay.coc[d[:, 0]]].to(cdt) - lse[out]).exp()[:, None]
        offset += cnt
    return lse, pj


class _CarryOverNLL(torch.autograd.Function):
    """``(logits (R, C), y (R, ℓ), x (R,))`` → ``(token_nll (R,), digit_nll (R, ℓ))``.

    Backward per token with box ``B`` of consistent classes, ``p = softmax(z_B)`` and the slices
    ``B_j = B ∩ {d_j = y0^j}``: ``∂/∂z_c = G p_c − g_tok 1[c = x] − Σ_j g_j exp(z_c − lse(z_{B_j})) 1[c ∈ B_j]``
    with ``G = g_tok + Σ_j g_j`` over the digits that are hidden and not capped."""

    @staticmethod
    def forward(ctx, logits, y, x, sub, tokens, digits):
        cdt = compute_dtype(logits.dtype)
        ell = sub.length
        dev = logits.device
        z = logits if logits.is_contiguous() else logits.contiguous()
        r = x.shape[0]
        lay = layout(sub, dev)
        y0 = lay.digit_table[x]  # (R, ℓ)
        if bool(((y != sub.mask_id) & (y != y0)).any()):
            raise ValueError(
                "y_t disagrees with x0 at a seen digit: y_t must be x0's digits with some masked"
            )
        groups, counts = _pattern_groups(y, ell, sub.mask_id)
        full_pat = (1 << ell) - 1
        tiny = torch.finfo(cdt).tiny
        cap = -math.log(tiny)
        lse = torch.zeros(r, dtype=cdt, device=dev)
        # log marginal of the true digit value, where hidden; 0 elsewhere
        log_pj = torch.zeros(r, ell, dtype=cdt, device=dev)
        for pattern in range(1, full_pat + 1):
            if not counts[pattern]:
                continue
            rows = groups[pattern]
            hidden = [j for j in range(ell) if pattern >> j & 1]
            if pattern == full_pat:
                lse_r, pj = _dense_stats(z, rows, lay, cdt, y0[rows] if digits else None)
            else:
                cls = _box_classes(lay, y[rows], pattern)
                vals = _gather_box(z, rows, cls, lay, cdt)
                lse_r = torch.logsumexp(vals, -1)
                pj = None
                if digits:
                    p = (vals - lse_r[:, None]).exp_()
                    bd = lay.box_digits(pattern)  # (b^k, ℓ)
                    pj = torch.zeros(rows.numel(), ell, dtype=cdt, device=dev)
                    for j in hidden:
                        pj[:, j] = (p * (bd[:, j] == y0[rows, j : j + 1])).sum(-1)
            lse[rows] = lse_r
            if digits:
                h = torch.zeros(ell, dtype=torch.bool, device=dev)
                h[hidden] = True
                log_pj[rows] = torch.where(
                    h, pj.clamp_min(tiny).log(), torch.zeros((), dtype=cdt, device=dev)
                )
        seen_all = groups[0]
        if tokens:
            tok = lse - z.gather(1, x[:, None]).squeeze(1).to(cdt)
            if counts[0]:
                tok[seen_all] = 0.0
        else:
            tok = torch.zeros(r, dtype=cdt, device=dev)
        dig = (-log_pj).clamp_max_(cap) if digits else torch.zeros(r, ell, dtype=cdt, device=dev)
        ctx.save_for_backward(logits)
        ctx.sub, ctx.tokens, ctx.digits = sub, tokens, digits
        ctx.stats = (y, x, y0, lse, log_pj, groups, counts)
        if not tokens:
            ctx.mark_non_differentiable(tok)
        if not digits:
            ctx.mark_non_differentiable(dig)
        ctx.set_materialize_grads(False)
        return tok, dig

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_tok, g_dig):
        (logits,) = ctx.saved_tensors
        sub = ctx.sub
        y, x, y0, lse, log_pj, groups, counts = ctx.stats
        if g_tok is None and g_dig is None:
            return None, None, None, None, None, None
        cdt = lse.dtype
        ell, c = sub.length, sub.num_classes
        dev = logits.device
        z = logits if logits.is_contiguous() else logits.contiguous()
        r = x.shape[0]
        lay = layout(sub, dev)
        tiny = torch.finfo(cdt).tiny
        full_pat = (1 << ell) - 1
        gt = g_tok.to(cdt) if (g_tok is not None and ctx.tokens) else torch.zeros(r, dtype=cdt, device=dev)
        if g_dig is not None and ctx.digits:
            # a digit contributes where it is hidden and its marginal did not underflow (not capped)
            gd = torch.where(
                (y == sub.mask_id) & (log_pj > math.log(tiny)),
                g_dig.to(cdt),
                torch.zeros((), dtype=cdt, device=dev),
            )
        else:
            gd = torch.zeros(r, ell, dtype=cdt, device=dev)
        gt = gt.clone()
        if counts[0]:
            gt[groups[0]] = 0.0
        big_g = gt + gd.sum(-1)  # (R,)
        lse_j = lse[:, None] + log_pj  # (R, ℓ): lse over the slice of the true digit value
        grad = torch.empty(r, c, dtype=cdt, device=dev)
        step = _chunk_rows(r, dev)
        # fully masked rows: dense, chunked (a block computed whole also writes other rows: scratch)
        if counts[full_pat]:
            for s, e, idx, whole in _row_blocks(groups[full_pat], r, step):
                rows = torch.arange(s, e, device=dev) if whole else idx
                zc = (z[s:e] if whole else z[idx]).to(cdt)
                gc = grad[s:e] if whole else torch.empty_like(zc)
                torch.sub(zc, lse[rows, None], out=gc).exp_().mul_(big_g[rows, None])
                for j in range(ell):
                    gj = gd[rows, j]
                    if not bool(gj.any()):
                        continue
                    cls = lay.slice_classes(j).index_select(0, y0[rows, j])  # (n, b^(ℓ-1))
                    cl = cls.clamp_min(0)
                    q = (zc.gather(1, cl) - lse_j[rows, j : j + 1]).exp_().mul_(-gj[:, None])
                    if not lay.all_valid:
                        q.masked_fill_(cls < 0, 0.0)
                    gc.scatter_add_(1, cl, q)
                gc.scatter_add_(1, x[rows, None], -gt[rows, None])
                if not whole:
                    grad.index_copy_(0, idx, gc)
        rest = [groups[p] for p in range(full_pat) if counts[p]]
        if rest:
            grad.index_fill_(0, torch.cat(rest), 0.0)
        # partially seen rows: the box only
        for pattern in range(1, full_pat):
            if not counts[pattern]:
                continue
            rows = groups[pattern]
            cls = _box_classes(lay, y[rows], pattern)
            vals = _gather_box(z, rows, cls, lay, cdt)
            gb = (vals - lse[rows, None]).exp() * big_g[rows, None]
            bd = lay.box_digits(pattern)
            for j in range(ell):
                if not pattern >> j & 1:
                    continue
                sel = bd[:, j] == y0[rows, j : j + 1]
                q = (vals - lse_j[rows, j : j + 1]).exp() * gd[rows, j : j + 1]
                gb = gb - torch.where(sel, q, torch.zeros((), dtype=cdt, device=dev))
            gb = gb - torch.where(
                cls == x[rows, None], gt[rows, None], torch.zeros((), dtype=cdt, device=dev)
            )
            col, val = _valid_targets(cls, gb, lay)
            grad[rows[:, None], col] = val
        return grad.to(logits.dtype).view(logits.shape), None, None, None, None, None


def carry_over_nll(
    logits: torch.Tensor,
    y_t: torch.Tensor,
    x0: torch.Tensor,
    sub: SubTokenizer,
    *,
    tokens: bool = True,
    digits: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-token and per-digit carry-over NLLs without materialising the distribution.

    Args:
        logits: ``FloatTensor[B, L, C]``; y_t: ``LongTensor[B, L·ℓ]``; x0: ``LongTensor[B, L]``, the
        classes whose digits ``y_t`` shows where it is not masked (``ValueError`` otherwise).

    Returns ``(token_nll FloatTensor[B, L], digit_nll FloatTensor[B, L, ℓ])`` in nats (``None`` for
    a part not asked for): ``−log p_θ(x0^i | y_t)`` (0 for fully seen tokens) and, for hidden digits,
    ``−log p_θ(y0^{i,j} | y_t)`` capped at ``−log(tiny)`` (0 where the digit is seen), i.e. the
    reference ``digit_log_marginals`` read at the true digit. Differentiable (hand-written backward:
    softmax minus one-hot, restricted to each token's box). float64 stays float64; other dtypes are
    computed in float32."""
    check_logits(logits, sub)
    y = split_tokens(y_t, sub, logits.shape[1])
    if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"x0 must have shape (B, L) = {tuple(logits.shape[:2])}, got "
            f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}"
        )
    if x0.dtype.is_floating_point or x0.dtype.is_complex or x0.dtype == torch.bool:
        raise TypeError(f"x0 must be an integer tensor of classes, got dtype {x0.dtype}")
    if bool(((x0 < 0) | (x0 >= sub.num_classes)).any()):
        bad = x0[(x0 < 0) | (x0 >= sub.num_classes)][0].item()
        raise ValueError(f"x0 must hold classes 0..{sub.num_classes - 1}, found {bad}")
    shape = logits.shape[:2]
    z = logits.reshape(-1, sub.num_classes)
    tok, dig = _CarryOverNLL.apply(z, y.reshape(-1, sub.length), x0.reshape(-1).long(), sub, tokens, digits)
    return (
        tok.view(shape) if tokens else None,
        dig.view(*shape, sub.length) if digits else None,
    )
