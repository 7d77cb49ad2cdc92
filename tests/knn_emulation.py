"""CPU emulation of knn_v4_tf32_ws (cuda_src/knn.cu), which cannot run without a GPU: its packed keys, WarpSelect
(thread queues, register bitonic merges, split-N slices and the merge kernel), tf32 rounding, the kernel-order
fp32 norms and the whole l2 flow through the launcher's own host code (harness/families/_knn_cuda.py,
kernels.knn_search.grouped_search). ``bug=`` plants the known-wrong variants the tests must see fail.
"""

from __future__ import annotations

import math

import torch

from harness.families._knn_cuda import V4_BQ, v3_candidates, v4_kb, v4_queue_shape
from harness.families.knn import k_eff, make_outputs
from kernels.knn_search import certified, expansion_error, grouped_search, lex_sort, stable_topk, torch_dist

_KEY_EMPTY = (1 << 63) - 1  # signed stand-in for EMPTY_KEY (0xFFFF...): sorts after every real key


def pack_keys(d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """pack_key of knn.cu as signed int64: (monotone fp32 bits − 2³¹) << 32 | index. Same order as the kernel's
    unsigned keys: (distance, index) lexicographic, so exactly equal distances go to the lower index."""
    b = d.float().contiguous().view(torch.int32).long() & 0xFFFFFFFF
    b = torch.where(b == 0x80000000, torch.zeros_like(b), b)  # -0.0 ties with +0.0
    b = torch.where(b >= 0x80000000, 0xFFFFFFFF - b, b | 0x80000000)
    return ((b - (1 << 31)) << 32) | idx.long()


def unpack_keys(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b = (key >> 32) + (1 << 31)
    b = torch.where(b >= 0x80000000, b & 0x7FFFFFFF, 0xFFFFFFFF - b)
    return b.to(torch.int32).view(torch.float32) if b.numel() else b.float(), key & 0xFFFFFFFF


def ws_sort_emulated(reg: torch.Tensor) -> torch.Tensor:
    """ws_sort of knn.cu step by step: reg [..., R, 32] (register j, lane), position p = 32·j + lane; stride < 32
    exchanges with lane ^ stride (__shfl_xor_sync), stride >= 32 with register j ^ (stride/32) of the same lane."""
    reg = reg.clone()
    R = reg.shape[-2]
    lane = torch.arange(32)
    pos = 32 * torch.arange(R)[:, None] + lane[None, :]
    size = 2
    while size <= 32 * R:
        stride = size >> 1
        while stride > 0:
            if stride >= 32:
                other = reg[..., torch.arange(R) ^ (stride >> 5), :]
            else:
                other = reg[..., :, lane ^ stride]
            up = (pos & size) == 0
            lower = (pos & stride) == 0
            reg = torch.where(lower == up, torch.minimum(reg, other), torch.maximum(reg, other))
            stride >>= 1
        size <<= 1
    return reg


def _ws_select(keys: torch.Tensor, kc: int, kb: int, bn: int, bug: str | None) -> torch.Tensor:
    """WarpSelect over the key stream ``keys`` [Q, N] in the kernel's order (tiles of ``bn`` columns, 32-column
    steps, lane l takes column l of a step); returns the kc best [Q, kc] ascending (EMPTY past the stream)."""
    Q, N = keys.shape
    kw, nt = v4_queue_shape(kb)
    R = kw + nt
    reg = torch.full((Q, R, 32), _KEY_EMPTY, dtype=torch.int64)
    tc = torch.zeros((Q, 32), dtype=torch.int64)
    wk = torch.full((Q,), _KEY_EMPTY, dtype=torch.int64)
    qs = torch.arange(Q)[:, None].expand(Q, 32)
    lanes = torch.arange(32)[None, :].expand(Q, 32)

    def merge(rows: torch.Tensor) -> None:
        r = reg[rows]
        if bug == "drop_last":
            r[:, R - 1, 31] = _KEY_EMPTY
        r = ws_sort_emulated(r)
        r[:, kw:, :] = _KEY_EMPTY
        reg[rows] = r
        tc[rows] = 0
        wk[rows] = r.reshape(len(rows), -1)[:, kc - 1]

    for n0 in range(0, N, bn):
        for h in range(bn // 32):
            n = n0 + 32 * h + torch.arange(32)
            valid = n < N
            key = torch.where(valid[None, :], keys[:, n.clamp(max=max(N - 1, 0))], torch.full((Q, 32), _KEY_EMPTY))
            take = key < wk[:, None]
            slot = (kw + tc).clamp(max=R - 1)
            reg[qs[take], slot[take], lanes[take]] = key[take]
            tc += take.long()
            full = (tc == nt).any(1)
            if bool(full.any()):
                merge(full.nonzero()[:, 0])
    if bug != "no_flush":
        merge(torch.arange(Q))
    return reg.reshape(Q, -1)[:, :kc]


def warp_select_emulated(dist: torch.Tensor, kc: int, kb: int, bn: int = 128, bug: str | None = None,
                         splits: int = 1, return_last: bool = False):
    """knn_v4_tf32_ws's selection for every query of ``dist`` [Q, N] (fp32 expansion distances), as the kernel runs
    it: base tiles of ``bn`` columns (the last one partial), lane l takes columns l, l+32, ... of a tile; a key
    beating the warp's kc-th goes into the lane's thread queue; after each 32-column step, if any lane's queue is
    full, ws_sort over the [warp queue | thread queues] registers keeps the KB best; a last merge at the end.
    Returns the kc best keys [Q, kc] in ascending order (EMPTY past the base), and with ``return_last`` also the
    certificate's ``last`` key [Q] (the kc-th). ``splits`` > 1 runs split-N: slices of v4_split_plan's length
    (a multiple of ``bn``), each selecting its kc best into a KB-wide list (EMPTY past kc), then knn_v4_merge's
    WarpSelect over the S·KB listed keys (32 per step); ``last`` = the merged kc-th key. ``bug`` plants known-wrong
    variants: "drop_last" (each merge loses the last thread-queue slot of lane 31), "no_flush" (no final merge),
    "no_tiebreak" (keys without the index: equal distances keep an arbitrary row), and for splits > 1
    "min_slice_last" (last = the smallest slice's kc-th key, which is >= the merged one: unsound) and "drop_slice"
    (the merge reads S-1 slices)."""
    Q, N = dist.shape
    keys = pack_keys(dist, torch.arange(N).expand(Q, N))
    if bug == "no_tiebreak":  # order by distance only, last writer wins among equals
        keys = (keys & ~0xFFFFFFFF) | (0xFFFFFFFF - torch.arange(N).expand(Q, N))
    sel_bug = bug if bug in ("drop_last", "no_flush") else None
    if splits <= 1:
        best = _ws_select(keys, kc, kb, bn, sel_bug)
        return (best, best[:, kc - 1]) if return_last else best
    ns = math.ceil(math.ceil(N / splits) / bn) * bn  # v4_split_plan's slice length
    lists = []
    for n0 in range(0, N, ns):
        lst = torch.full((Q, kb), _KEY_EMPTY, dtype=torch.int64)
        lst[:, :kc] = _ws_select(keys[:, n0:n0 + ns], kc, kb, bn, sel_bug)
        lists.append(lst)
    slice_last = torch.stack([lst[:, kc - 1] for lst in lists], 1)
    if bug == "drop_slice":
        lists = lists[:-1]
    best = _ws_select(torch.cat(lists, 1), kc, kb, 32, sel_bug)
    last = slice_last.min(1).values if bug == "min_slice_last" else best[:, kc - 1]
    return (best, last) if return_last else best


def tf32_round(t: torch.Tensor) -> torch.Tensor:
    """cvt.rna.tf32.f32: round fp32 to 10 mantissa bits, ties away from zero (finite inputs)."""
    b = t.float().contiguous().view(torch.int32)
    b = (b + 0x1000) & ~0x1FFF  # sign-magnitude: adding half an ulp to the magnitude rounds half away from zero
    return b.view(torch.float32)


def _fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """fmaf in fp32: the product is exact in float64, one rounding to float64 then one to fp32 (differs from a
    single rounding only when the float64 sum lands exactly on an fp32 midpoint: ~2⁻²⁹ per operation)."""
    return (a.double() * b.double() + c.double()).float()


def v4_row_sqnorm_emulated(v: torch.Tensor) -> torch.Tensor:
    """v4_centred_sqnorm of knn.cu for rows v [..., D] (already centred, fp32): lane l sums columns l, l+32, ...
    with fmaf, then warp_reduce_sum's xor butterfly (16, 8, 4, 2, 1)."""
    D = v.shape[-1]
    L = -(-D // 32) * 32
    vp = torch.nn.functional.pad(v.float(), (0, L - D)).reshape(*v.shape[:-1], L // 32, 32)
    s = torch.zeros((*v.shape[:-1], 32), dtype=torch.float32)
    for j in range(L // 32):  # fmaf(0, 0, s) == s: the padded lanes change nothing
        s = _fma32(vp[..., j, :], vp[..., j, :], s)
    lane = torch.arange(32)
    for o in (16, 8, 4, 2, 1):
        s = s + s[..., lane ^ o]
    return s[..., 0]


def v4_stage_sqnorm_emulated(v: torch.Tensor) -> torch.Tensor:
    """The base rows' |y − c|² as knn_v4_tf32_ws builds yn (v [..., D] centred fp32): 8 threads a row, thread g
    takes columns 32·st + 4g .. 32·st + 4g + 3 of every 32-column stage st, one fmaf per value in that order, then
    an xor tree (1, 2, 4) over the 8 threads."""
    D = v.shape[-1]
    L = -(-D // 32) * 32
    vp = torch.nn.functional.pad(v.float(), (0, L - D)).reshape(*v.shape[:-1], L // 32, 8, 4)
    p = torch.zeros(vp.shape[:-3] + (8,), dtype=torch.float32)
    for st in range(L // 32):  # fmaf(0, 0, p) == p: the padded columns change nothing
        for j in range(4):
            p = _fma32(vp[..., st, :, j], vp[..., st, :, j], p)
    g = torch.arange(8)
    for o in (1, 2, 4):
        p = p + p[..., g ^ o]
    return p[..., 0]


V4_PRODUCTS = {"tf32": 2.0 ** -10, "3xtf32": 2.0 ** -20, "exact": 0.0}  # u_prod of the dot's products


def v4_emulated(inputs, shape, bug: str | None = None, splits: int = 1, products: str = "tf32",
                center: str = "block") -> dict[str, torch.Tensor]:
    """knn_v4_tf32_ws's whole l2 flow on the CPU, through the launcher's own host code (grouped_search: group_queries,
    grouped order, scatter back, fallback): per CTA of 32 grouped queries its centre c (a row of centres), |x − c|² and
    |y − c|² in the kernel's fp32 order (v4_row_sqnorm_emulated / v4_stage_sqnorm_emulated, from the unrounded centred
    values), the dot of the tf32-rounded centred rows (products exact in float64 here; the tensor core's accumulation
    order is not emulated: the certificate's γ covers it), the expansion (xn + yn) − 2·dot in fp32, WarpSelect of kc
    candidates (``splits`` > 1: split-N slices + merge, as knn_v4_merge), exact fp32 re-rank from the original rows, the
    certificate (u_prod of ``products``, centred, |x − c| of the query's own CTA centre) and the exact fallback for
    refused queries. ``products``: "tf32" (the kernel), "3xtf32" (hi·hi + hi·lo + lo·hi with hi = tf32(x'),
    lo = tf32(x' − hi)) or "exact"; ``center="mean"``: every CTA at the base mean (the flow before per-CTA centres).
    ``bug`` plants known-wrong variants: WarpSelect's (see warp_select_emulated), "centre0" (the certificate charges
    every query |x − centres[0]|, a merge / finish reading centre row 0) and "mean_norms" (the norms from the base
    mean while the dot uses the CTA centre). Returns dist, idx, ok (certified), centres and centre_of (query q's row
    of centres), all in the caller's order."""
    x, y = inputs["x"].float(), inputs["y"].float()
    Q, N, D, k = shape.Q, shape.N, shape.D, k_eff(shape)
    kc = v3_candidates(k, N)
    mu = y.mean(0, dtype=torch.float64).float()

    def search(xp, centres, res):
        exp_d = torch.empty((Q, N), dtype=torch.float32)
        xn = torch.empty(Q, dtype=torch.float32)
        for g in range(centres.shape[0]):  # one CTA: queries 32g .. 32g+31 of the grouped order
            rows = slice(V4_BQ * g, min(Q, V4_BQ * (g + 1)))
            c = centres[g]
            xc, yc = xp[rows] - c, y - c
            nc = mu if bug == "mean_norms" else c
            xn[rows] = v4_row_sqnorm_emulated(xp[rows] - nc)
            yn = v4_stage_sqnorm_emulated(y - nc)
            if products == "exact":
                dot = (xc.double() @ yc.double().T).float()
            else:
                xh, yh = tf32_round(xc).double(), tf32_round(yc).double()
                dot = xh @ yh.T
                if products == "3xtf32":
                    dot = (dot + xh @ tf32_round(yc - yh.float()).double().T
                           + tf32_round(xc - xh.float()).double() @ yh.T)
                dot = dot.float()
            exp_d[rows] = (xn[rows, None] + yn[None, :]) - 2.0 * dot
        if bug == "centre0":
            xn = v4_row_sqnorm_emulated(xp - centres[0])
        keys, last_key = warp_select_emulated(exp_d, kc, v4_kb(kc), bug=bug, splits=splits, return_last=True)
        ev, ci = unpack_keys(keys)
        lv, _ = unpack_keys(last_key)
        last = torch.where(last_key == _KEY_EMPTY, torch.full_like(lv, float("inf")), lv)
        ci = ci.clamp(max=N - 1)  # EMPTY slots only exist when kc >= N, i.e. never past the re-rank's k
        ex = ((xp[:, None, :] - y[ci]) ** 2).sum(-1)
        d, i = lex_sort(ex, ci, k)
        res["dist"][:], res["idx"][:] = d.float(), i
        if kc >= N:
            return torch.ones(Q, dtype=torch.bool)
        dk = d[:, k - 1].double()
        return certified(last, dk, expansion_error(xn.double().sqrt(), dk, D, V4_PRODUCTS[products], True), D)

    out = make_outputs(shape, "fp32", x.device)
    ok, centres, row = grouped_search(x, y, out, V4_BQ, search,
                                      lambda xb: stable_topk(torch_dist(xb, y, "l2", False), k), center=center)
    return {"dist": out["dist"], "idx": out["idx"], "ok": ok, "centres": centres, "centre_of": row}
