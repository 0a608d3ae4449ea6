"""Carry-over parameterization: one distribution per token that respects the seen digits (MATH.md §3).

The network gives logits ``z: FloatTensor[B, L, C]`` for a partially masked sub-token sequence
``y_t: LongTensor[B, L·ℓ]``. Carry-over removes every class inconsistent with an observed digit:

    p(x^i = c | y_t) ∝ exp(z^i_c) · Π_j 1[y_t^{i,j} = m  or  d_j(c) = y_t^{i,j}].

The consistency mask is a product over digits, so it is built in *code space* (the ``b^ℓ`` codes
arranged as an ℓ-axis grid) by broadcasting ℓ per-digit masks of size ``b``, never by comparing a
``(C, ℓ)`` table with every token. Digit marginals ``p(y^{i,j} = v | y_t)`` are sums of the token
distribution over the other ℓ-1 axes of the same grid.

All functions are vectorised over batch and positions; none loops over tokens.

Fast path (no autograd). :func:`carry_over` computes both outputs without any ``(B, L, C)``
temporary besides the returned log-probabilities, and without building the mask at all:

* tokens are grouped by their *mask pattern* (which digits are hidden; ``2^ℓ`` patterns);
* fully seen tokens are one-hot (a fill and one scatter);
* partially seen tokens: the consistent codes form a *box* of the code grid (seen digits fix
  coordinates), ``b^k`` codes for ``k`` hidden digits, ``≤ b^{ℓ-1}`` — their logits are gathered,
  normalised and scattered back; marginals are sums over the box's axes;
* fully masked tokens need no mask: a row-chunked log-softmax (chunks stay cache-resident) whose
  ``exp`` is reused for the digit marginals by a hierarchical reduction over the code grid.

With autograd (``logits.requires_grad``) the functions fall back to the plain differentiable
formulation (``logits + consistency_log_mask`` → ``log_softmax``). The objectives
(:mod:`mdm_prime.objectives`) need only per-token scalars and use :func:`carry_over_nll`, which is
differentiable and works on the boxes directly: ``−log p(x) = lse(box) − z_x`` and
``−log p(y^j = v) = lse(box) − lse(box ∩ {d_j = v})``.
"""

from __future__ import annotations

import math

import torch

from .subtokenizer import SubTokenizer

__all__ = [
    "consistency_log_mask",
    "carry_over_logits",
    "carry_over_log_probs",
    "digit_log_marginals",
    "digit_marginals_from_probs",
    "to_code_space",
    "carry_over",
    "carry_over_nll",
]

# Rows per block of the dense (fully masked) path on CPU: 32 rows x 50257 fp32 = 6.4 MB per buffer,
# cache-resident across the max / exp / reduce / subtract passes. On CUDA one chunk holds all rows.
CHUNK_ROWS = 32


def _split_tokens(y_t: torch.Tensor, sub: SubTokenizer, num_tokens: int | None = None) -> torch.Tensor:
    """``(B, L·ℓ)`` → ``(B, L, ℓ)`` with shape checks."""
    if y_t.dim() != 2 or y_t.shape[-1] % sub.length:
        raise ValueError(
            f"y_t must have shape (B, L·ℓ) with ℓ={sub.length}, got {tuple(y_t.shape)}"
        )
    y = y_t.unflatten(-1, (-1, sub.length))
    if num_tokens is not None and y.shape[1] != num_tokens:
        raise ValueError(
            f"y_t holds {y.shape[1]} tokens of ℓ={sub.length} digits but logits have {num_tokens} positions"
        )
    return y


def consistency_log_mask(y_t: torch.Tensor, sub: SubTokenizer, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask ``FloatTensor[B, L, C]``: 0 for classes consistent with the seen digits of each
    token, ``-inf`` otherwise. ``y_t``: ``LongTensor[B, L·ℓ]`` (digits or ``sub.mask_id``)."""
    y = _split_tokens(y_t, sub)
    b = sub.base
    values = torch.arange(b, device=y.device)
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=y.device)
    zero = torch.tensor(0.0, dtype=dtype, device=y.device)
    # allowed digit values per (token, digit): (B, L, ℓ, b)
    allowed = (y.unsqueeze(-1) == values) | (y.unsqueeze(-1) == sub.mask_id)
    per_digit = torch.where(allowed, zero, neg_inf)
    mask = per_digit[..., 0, :]
    for j in range(1, sub.length):
        mask = (mask.unsqueeze(-1) + per_digit[..., j, :].unsqueeze(-2)).flatten(-2)
    # mask is over codes (B, L, b^ℓ); map to classes
    if sub.permutation is None:
        return mask[..., : sub.num_classes]
    return mask.index_select(-1, sub._table("code_of_class", mask.device))


def carry_over_logits(logits: torch.Tensor, y_t: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``logits`` (``FloatTensor[B, L, C]``) with inconsistent classes set to ``-inf``."""
    _check_logits(logits, sub)
    _split_tokens(y_t, sub, logits.shape[1])
    return logits + consistency_log_mask(y_t, sub, dtype=logits.dtype)


def carry_over_log_probs(logits: torch.Tensor, y_t: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``log p_θ(x^i = c | y_t)``: ``FloatTensor[B, L, C]`` in nats, ``-inf`` on inconsistent classes.

    Never NaN: at least one class (the true one) is always consistent, and a token with all digits
    seen gets log-probability exactly 0 on its value. Same dtype as ``logits`` (differentiable when
    ``logits.requires_grad``; otherwise computed by the fast path of :func:`carry_over`)."""
    _check_logits(logits, sub)
    y = _split_tokens(y_t, sub, logits.shape[1])
    if logits.requires_grad and torch.is_grad_enabled():
        return torch.log_softmax(carry_over_logits(logits, y_t, sub), dim=-1)
    lp, _ = _carry_over_fast(logits, y, sub, logits.dtype, want_marginals=False)
    return lp.view(logits.shape)


def carry_over(logits: torch.Tensor, y_t: torch.Tensor, sub: SubTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry-over log-probabilities and digit log-marginals in one pass.

    Args:
        logits: ``FloatTensor[B, L, C]`` (float32/float64 kept; half/bfloat16 computed in float32).
        y_t: ``LongTensor[B, L·ℓ]`` digits or ``sub.mask_id``.

    Returns:
        ``log_probs``: ``FloatTensor[B, L, C]``, equal to :func:`carry_over_log_probs`.
        ``digit_log_marginals``: ``FloatTensor[B, L, ℓ, b]``, ``log p_θ(y^{i,j} = v | y_t)``. For
        ℓ > 1 equal to ``digit_log_marginals(log_probs, sub)`` (values whose mass underflows are
        clamped at ``log(tiny)``; a seen digit gives 0 on its value). For ℓ = 1 the marginal *is* the
        token distribution in code order: a view ``log_probs.unsqueeze(-2)`` when there is no
        permutation and ``b = C`` (exact, ``-inf`` where impossible, not clamped).
    """
    _check_logits(logits, sub)
    y = _split_tokens(y_t, sub, logits.shape[1])
    cdt = _compute_dtype(logits.dtype)
    b, ell = sub.base, sub.length
    if logits.requires_grad and torch.is_grad_enabled():
        lp = torch.log_softmax(carry_over_logits(logits.to(cdt), y_t, sub), dim=-1)
        marg = _single_digit_marginals(lp, sub) if ell == 1 else digit_log_marginals(lp, sub)
        return lp, marg
    lp, marg = _carry_over_fast(logits, y, sub, cdt, want_marginals=ell > 1)
    lp = lp.view(logits.shape)
    marg = _single_digit_marginals(lp, sub) if ell == 1 else marg.view(*logits.shape[:2], ell, b)
    return lp, marg


def _single_digit_marginals(lp: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """ℓ = 1: the digit is the (permuted) token itself; a view of ``lp`` when nothing is permuted."""
    return to_code_space(lp, sub, float("-inf")).unsqueeze(-2)


def to_code_space(values: torch.Tensor, sub: SubTokenizer, fill: float) -> torch.Tensor:
    """``(..., C)`` per-class values → ``(..., b^ℓ)`` per-code values; invalid codes get ``fill``."""
    if sub.permutation is None and sub.num_codes == sub.num_classes:
        return values
    if sub.permutation is None:
        pad = sub.num_codes - sub.num_classes
        return torch.nn.functional.pad(values, (0, pad), value=fill)
    out = values.new_full((*values.shape[:-1], sub.num_codes), fill)
    out[..., sub._table("code_of_class", values.device)] = values
    return out


def digit_marginals_from_probs(probs: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """Token probabilities ``(..., C)`` → digit marginals ``(..., ℓ, b)`` (each row sums to 1).

    The grid of codes is reduced hierarchically: summing the last axis once gives the joint of the
    leading digits, so every marginal costs at most two full passes over the ``b^ℓ`` grid."""
    lead = probs.shape[:-1]
    b, ell = sub.base, sub.length
    grid = to_code_space(probs, sub, 0.0)
    if ell == 1:
        return grid.unsqueeze(-2)
    marginals = []
    joint = grid  # joint of digits 0..k over a flattened trailing axis
    for k in range(ell - 1, 0, -1):
        joint = joint.reshape(*lead, b ** k, b)
        marginals.append(joint.sum(-2))  # marginal of digit k
        joint = joint.sum(-1)  # joint of digits 0..k-1
    marginals.append(joint)
    return torch.stack(marginals[::-1], dim=-2)


def digit_log_marginals(log_probs: torch.Tensor, sub: SubTokenizer) -> torch.Tensor:
    """``log p_θ(y^{i,j} = v | y_t)``: ``(..., C)`` token log-probs → ``(..., ℓ, b)`` in nats.

    Values whose total mass underflows are clamped at ``log(tiny)`` of the dtype (≈ -87.3 nats in
    float32) rather than ``-inf``, so a loss that reads them stays finite; impossible digits of
    inconsistent values are exactly 0 in probability space before the clamp."""
    tiny = torch.finfo(log_probs.dtype).tiny
    if sub.length == 1 or (log_probs.requires_grad and torch.is_grad_enabled()) or log_probs.dim() == 0:
        probs = log_probs.exp()
        marg = digit_marginals_from_probs(probs, sub)
        return marg.clamp_min(tiny).log()
    # no autograd: row chunks, no (…, C) temporary
    lead, c = log_probs.shape[:-1], log_probs.shape[-1]
    rows = log_probs.reshape(-1, c)
    lay = _layout(sub, rows.device)
    out = torch.empty(rows.shape[0], sub.length, sub.base, dtype=log_probs.dtype, device=rows.device)
    step = _chunk_rows(rows)
    for s in range(0, rows.shape[0], step):
        e = rows[s : s + step].exp()
        sums, _ = _grid_sums(e, sub, lay)
        torch.log(sums.clamp_min_(tiny), out=out[s : s + step])
    return out.view(*lead, sub.length, sub.base)


# ---------------------------------------------------------------------------------------------
# fast path internals


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _chunk_rows(x: torch.Tensor) -> int:
    return max(1, x.shape[0]) if x.device.type != "cpu" else CHUNK_ROWS


class _Layout:
    """Per-(sub-tokenizer, device) index tables for the code grid."""

    def __init__(self, sub: SubTokenizer, device: torch.device) -> None:
        self.device = device
        self.b, self.ell, self.C, self.N = sub.base, sub.length, sub.num_classes, sub.num_codes
        self.coc = sub.class_of_code.to(device)  # (N,), -1 for invalid codes
        self.pv = sub.place_values.to(device)  # (ℓ,)
        self.all_valid = self.N == self.C
        self.perm = sub.permutation is not None
        if self.perm:
            self.coc_clamped = self.coc.clamp_min(0)
            self.invalid_codes = (self.coc < 0).nonzero().flatten()
        self._offsets: dict[int, torch.Tensor] = {}
        self._ones: torch.Tensor | None = None

    def offsets(self, pattern: int) -> torch.Tensor:
        """Code offsets of the box spanned by the hidden digits of ``pattern`` (bit j = digit j
        hidden), first hidden digit slowest: ``(b^k,)``."""
        off = self._offsets.get(pattern)
        if off is None:
            off = torch.zeros(1, dtype=torch.long)
            pv = self.pv.cpu()
            for j in range(self.ell):
                if pattern >> j & 1:
                    off = (off[:, None] + torch.arange(self.b) * pv[j]).flatten()
            off = self._offsets[pattern] = off.to(self.device)
        return off


def _layout(sub: SubTokenizer, device: torch.device) -> _Layout:
    cache = sub.__dict__.setdefault("_carry_layout", {})
    lay = cache.get(device)
    if lay is None:
        lay = cache[device] = _Layout(sub, device)
    return lay


def _pattern_groups(y: torch.Tensor, sub: SubTokenizer) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """Group the ``R`` tokens of ``y (R, ℓ)`` by mask pattern (bit j set = digit j hidden).

    Returns ``hidden (R, ℓ)``, the row indices of each pattern, and their counts (one host sync)."""
    ell = sub.length
    hidden = y == sub.mask_id
    bits = 1 << torch.arange(ell, device=y.device)
    pat = (hidden.long() * bits).sum(-1)
    counts = torch.bincount(pat, minlength=1 << ell).tolist()
    order = torch.argsort(pat, stable=True)
    return hidden, list(torch.split(order, counts)), counts


def _box_classes(lay: _Layout, digits: torch.Tensor, pattern: int) -> torch.Tensor:
    """Classes ``(n, b^k)`` of the box of codes whose non-hidden digits equal ``digits (n, ℓ)``;
    ``-1`` marks invalid codes."""
    keep = torch.tensor([not (pattern >> j & 1) for j in range(lay.ell)], device=digits.device)
    base = (digits * keep * lay.pv).sum(-1)
    return lay.coc[base[:, None] + lay.offsets(pattern)]


def _gather_box(z: torch.Tensor, rows: torch.Tensor, cls: torch.Tensor, lay: _Layout, cdt: torch.dtype) -> torch.Tensor:
    vals = z[rows[:, None], cls.clamp_min(0)].to(cdt)
    if not lay.all_valid:
        vals = vals.masked_fill(cls < 0, float("-inf"))
    return vals


def _grid_sums(e: torch.Tensor, sub: SubTokenizer, lay: _Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative per-class values ``e (n, C)`` (contiguous rows) → per-digit sums ``(n, ℓ, b)``
    and the total ``(n, 1)``, by hierarchical reduction over the code grid (ℓ ≥ 2)."""
    b, ell = sub.base, sub.length
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
    sums = torch.stack(out, 1)
    return sums, first.sum(1, keepdim=True)


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
    lay = _layout(sub, dev)
    tiny = torch.finfo(cdt).tiny
    log_tiny = math.log(tiny)
    lp = torch.empty(r, c, dtype=cdt, device=dev)
    marg = torch.empty(r, ell, b, dtype=cdt, device=dev) if want_marginals else None
    hidden, groups, counts = _pattern_groups(y, sub)
    full_pat = (1 << ell) - 1
    n_fm = counts[full_pat]
    # 1. fully masked tokens: plain log-softmax, row blocks (may also cover other rows of a block;
    #    those are overwritten below)
    if n_fm:
        _dense(z, groups[full_pat], lp, marg, sub, lay, cdt)
    if n_fm == r:
        return lp, marg
    # 2. every other token starts from "impossible"; seen digits get one-hot marginals
    rest = torch.cat(groups[:full_pat])
    lp.index_fill_(0, rest, float("-inf"))
    if marg is not None:
        marg.index_fill_(0, rest, log_tiny)
        y_rest, hid_rest = y[rest], hidden[rest]
        marg[rest[:, None], torch.arange(ell, device=dev), y_rest.clamp_max(b - 1)] = torch.where(
            hid_rest, torch.tensor(log_tiny, dtype=cdt, device=dev), torch.zeros((), dtype=cdt, device=dev)
        )
    # 3. fully seen: one-hot
    rows = groups[0]
    if counts[0]:
        cls = lay.coc[(y[rows] * lay.pv).sum(-1)]
        if bool((cls < 0).any()):
            raise ValueError("y_t holds a fully seen token whose digits decode to an invalid code")
        lp[rows, cls] = 0.0
    # 4. partially seen: gather the box of consistent codes, normalise, scatter back
    for pattern in range(1, full_pat):
        if not counts[pattern]:
            continue
        rows = groups[pattern]
        cls = _box_classes(lay, y[rows], pattern)
        vals = _gather_box(z, rows, cls, lay, cdt)
        vals = vals - torch.logsumexp(vals, -1, keepdim=True)
        if lay.all_valid:
            lp[rows[:, None], cls] = vals
        else:
            valid = cls >= 0
            lp[rows[:, None].expand_as(cls)[valid], cls[valid]] = vals[valid]
        if marg is not None:
            axes = [j for j in range(ell) if pattern >> j & 1]
            k = len(axes)
            probs = vals.exp().view(-1, *([b] * k))
            for a, j in enumerate(axes):
                others = [d + 1 for d in range(k) if d != a]
                s = probs.sum(others) if others else probs
                marg[rows, j] = s.clamp_min(tiny).log()
    return lp, marg


def _dense(
    z: torch.Tensor,
    fm: torch.Tensor,
    lp: torch.Tensor,
    marg: torch.Tensor | None,
    sub: SubTokenizer,
    lay: _Layout,
    cdt: torch.dtype,
) -> None:
    """Log-softmax (and, if ``marg`` is given, digit log-marginals) of the rows ``fm`` (ascending)
    of ``z``, written into ``lp`` / ``marg``. Rows are processed in blocks of ``step`` rows so that
    the log-probs are still in cache when their ``exp`` is reduced over the code grid. A block
    whose rows are mostly in ``fm`` is computed whole, in place (rows not in ``fm`` are scratch);
    otherwise its ``fm`` rows are gathered."""
    r = z.shape[0]
    tiny = torch.finfo(cdt).tiny
    step = CHUNK_ROWS if z.device.type == "cpu" else r
    nblocks = -(-r // step)
    in_fm = torch.zeros(nblocks * step, dtype=torch.long, device=z.device)
    in_fm[fm] = 1
    per_block = in_fm.view(nblocks, step).sum(1).tolist()
    ebuf = torch.empty(min(step, r), z.shape[1], dtype=cdt, device=z.device) if marg is not None else None
    offset = 0
    for i, cnt in enumerate(per_block):
        if not cnt:
            continue
        s, e = i * step, min((i + 1) * step, r)
        if 2 * cnt >= e - s:  # whole block, slices only
            zc = z[s:e].to(cdt)
            if marg is None:
                torch.log_softmax(zc, -1, out=lp[s:e])
            else:  # one exp per element: exp(z - max) feeds both the normaliser and the marginals
                m = zc.amax(-1, keepdim=True)
                sums, total = _grid_sums(torch.sub(zc, m, out=ebuf[: e - s]).exp_(), sub, lay)
                torch.sub(zc, m.add_(total.log()), out=lp[s:e])
                torch.log(sums.div_(total.unsqueeze(-1)).clamp_min_(tiny), out=marg[s:e])
        else:
            idx = fm[offset : offset + cnt]
            lpc = torch.log_softmax(z.index_select(0, idx).to(cdt), -1)
            lp.index_copy_(0, idx, lpc)
            if marg is not None:
                sums, _ = _grid_sums(torch.exp(lpc, out=ebuf[:cnt]), sub, lay)
                marg.index_copy_(0, idx, sums.clamp_min_(tiny).log_())
        offset += cnt


def _dense_lse(z: torch.Tensor, rows: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
    """``logsumexp`` over whole rows ``z[rows]`` (differentiable when ``z`` requires grad)."""
    grad = z.requires_grad and torch.is_grad_enabled()
    if grad:
        # one gather: every index_select's backward zero-fills a gradient as large as ``z``,
        # so chunking here would cost one full-size fill per chunk
        return torch.logsumexp(z.index_select(0, rows).to(cdt), -1)
    n_all = rows.numel()
    step = _chunk_rows(rows) if z.device.type == "cpu" else n_all
    out = []
    ebuf = None if grad else torch.empty(min(step, n_all), z.shape[1], dtype=cdt, device=z.device)
    for s in range(0, n_all, step):
        zc = z.index_select(0, rows[s : s + step]).to(cdt)
        if grad:
            out.append(torch.logsumexp(zc, -1))
        else:
            m = zc.amax(-1, keepdim=True)
            e = torch.sub(zc, m, out=ebuf[: zc.shape[0]]).exp_()
            out.append((m + e.sum(-1, keepdim=True).log()).squeeze(-1))
    return torch.cat(out)


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

    Returns ``(token_nll FloatTensor[B, L], digit_nll FloatTensor[B, L, ℓ])`` in nats (``None`` for
    a part not asked for): ``−log p_θ(x0^i | y_t)`` (0 for fully seen tokens) and, for hidden digits,
    ``−log p_θ(y0^{i,j} | y_t)`` capped at ``−log(tiny)`` (0 where the digit is seen). Computed as
    ``lse(box) − z_x`` and ``lse(box) − lse(box ∩ {d_j = y0^j})`` over the box of consistent codes;
    differentiable. float64 stays float64; other dtypes are computed in float32."""
    _check_logits(logits, sub)
    y = _split_tokens(y_t, sub, logits.shape[1])
    if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"x0 must have shape (B, L) = {tuple(logits.shape[:2])}, got "
            f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}"
        )
    cdt = _compute_dtype(logits.dtype)
    ell, c = sub.length, sub.num_classes
    dev = logits.device
    z = logits.reshape(-1, c)
    y = y.reshape(-1, ell)
    x = x0.reshape(-1).long()
    r = x.shape[0]
    lay = _layout(sub, dev)
    y0 = sub._table("digit_table", dev)[x]
    _, groups, counts = _pattern_groups(y, sub)
    full_pat = (1 << ell) - 1
    tok = torch.zeros(r, dtype=cdt, device=dev) if tokens else None
    dig = torch.zeros(r, ell, dtype=cdt, device=dev) if digits else None
    cap = -math.log(torch.finfo(cdt).tiny)
    for pattern in range(1, full_pat + 1):
        if not counts[pattern]:
            continue
        rows = groups[pattern]
        yr = y[rows]
        if pattern == full_pat:
            lse = _dense_lse(z, rows, cdt)
        else:
            lse = torch.logsumexp(_gather_box(z, rows, _box_classes(lay, yr, pattern), lay, cdt), -1)
        if tok is not None:
            tok[rows] = lse - z[rows, x[rows]].to(cdt)
        if dig is not None:
            for j in range(ell):
                if not pattern >> j & 1:
                    continue
                fixed = yr.clone()
                fixed[:, j] = y0[rows, j]
                sub_pattern = pattern & ~(1 << j)
                lse_j = torch.logsumexp(_gather_box(z, rows, _box_classes(lay, fixed, sub_pattern), lay, cdt), -1)
                dig[rows, j] = (lse - lse_j).clamp_max(cap)
    shape = logits.shape[:2]
    return (
        tok.view(shape) if tok is not None else None,
        dig.view(*shape, ell) if dig is not None else None,
    )


def _check_logits(logits: torch.Tensor, sub: SubTokenizer) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(
            f"logits must be a floating-point tensor, got "
            f"{logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__}"
        )
    if logits.dim() != 3 or logits.shape[-1] != sub.num_classes:
        raise ValueError(
            f"logits must have shape (B, L, C={sub.num_classes}), got {tuple(logits.shape)}"
        )
