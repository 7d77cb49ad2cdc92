"""Exact k-nearest-neighbour search in Triton: tiled distances fused with a running top-k (the Q×N matrix is never
written).

Distances (smaller is nearer, accumulated in fp32):

* ``l2``  — squared L2, ``‖x‖² + ‖y‖² − 2·x·y``;
* ``ip``  — negated inner product, ``−x·y``;
* ``cos`` — ``1 − x·y / (‖x‖·‖y‖)``; normalisation is *fused*: the norms are summed in-kernel from the same tiles
  that feed the dot product (no normalised copy of the base is made).

Selection works on packed 64-bit keys ``(orderable fp32 bits << 32) | index``: one integer min/max/sort orders by
distance and breaks exact ties towards the LOWER index, so every merge strategy returns the same, deterministic
answer. ``-0.0`` is folded into ``+0.0`` first so the two zeros tie.

Two merge strategies for the running top-k held in registers (``[BLOCK_Q, K_PAD]`` keys per program):

* ``replace`` (k ≤ 128): per N tile, count the tile's keys below each query's current k-th key; for that many
  rounds extract the tile minimum and let it replace the running maximum. Random data inserts only ~k·ln(N/k) keys
  per query over the whole base, so most tiles cost one compare per distance and no merge at all.
* ``sort`` (any k up to 512, used for k > 128): the tile is as wide as the top-k (``BLOCK_N = K_PAD``); when any
  key beats the k-th, the running list and the tile are joined and bitonic-sorted (``tl.sort``) and the lower half
  is kept.

Exactness (l2): the expansion only nominates ``kc = k + margin`` candidates; a second kernel ranks them by exact
differences Σ(x−y)² and certifies each query (no row outside the candidates can reach the k-th), the rest take
the direct-difference pass. The expansion's error grows with ‖x − c‖·‖y − c‖ for the centre c it is computed
around, so queries are grouped by cluster and each program is centred at its own queries' mean
(``group_queries``): on clustered data 1000 from the origin (data=offset, Q = 1024, N = 4000, D = 64) that cuts the
queries the certificate refuses from 662 to 47 of 1024 with fp32 products and from 1024 to 359 with TF32 (the
rest sit in programs that straddle two clusters). Refused queries (if at most half) are grouped and searched once
more before the exact pass: 47 -> 22 there, 359 -> 320 with TF32 (8 clusters of 128 queries still straddle
64-query programs).

Split-N (small Q, ``split_plan``): one program per 64 queries leaves Q = 1 with one program walking the whole base
(512 MB at 1M x 128 fp32, at one SM's share of HBM: tens of ms). When the query blocks fill under two waves of
the SMs, grid axis 1 cuts the base into slices of whole tiles (Q = 1, 1M rows: ~260 slices of ~3.8k rows, one
pass over the base at full bandwidth, ~0.15 ms on an H200); each program leaves its slice's running top-k as raw
keys and ``merge_keys`` takes the K smallest per query. The certificate stays sound: a row a slice dropped has a
key above that slice's K-th, which is at least the merged K-th.

Chunked base (``base_rows > 0``, for bases larger than device memory): the base is processed in chunks of
``base_rows`` rows (copied to the device chunk by chunk if it lives on the host); each chunk's launch starts from
the previous chunk's packed keys and adds the chunk's row offset to the indices, so the result equals the unchunked
one bit for bit.

k > N: the workbench returns ``min(k, N)`` neighbours (outputs are ``[Q, min(k, N)]``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.knn_search import base_slices, candidate_count, group_queries

METRICS = {"l2": 0, "ip": 1, "cos": 2}
MAX_K_REPLACE = 128  # above this the running top-k no longer fits the replace-max loop's budget: sort-merge
# sort-merge sorts [BLOCK_Q=16, 2*K_PAD] int64 keys; its layout conversions go through shared memory: 132 KB at
# K_PAD = 512, 260 KB (over the H100's 227 KB) at 1024 (sizes from triton.compile for sm_90)
MAX_K = 512

INT64_MAX = tl.constexpr(9223372036854775807)
INT64_MIN = tl.constexpr(-9223372036854775808)


@triton.jit
def _pack(d, idx):
    """fp32 distance + int64 index -> int64 key; signed integer order == (distance, index) order."""
    bits = d.to(tl.int32, bitcast=True)
    bits = tl.where(bits == -2147483648, 0, bits)  # -0.0 -> +0.0: the two zeros must tie
    key32 = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip magnitude bits so order is monotone
    return (key32.to(tl.int64) << 32) | idx


@triton.jit
def _unpack_dist(key):
    key32 = (key >> 32).to(tl.int32)
    bits = key32 ^ ((key32 >> 31) & 0x7FFFFFFF)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _knn_fused_kernel(
    x_ptr, y_ptr, mu_ptr, keys_in_ptr, keys_out_ptr, dist_ptr, idx_ptr,
    Q, N, D, K, idx_base,
    stride_xq, stride_yn, mu_stride, slice_rows,
    METRIC: tl.constexpr,  # 0 l2, 1 ip, 2 cos
    BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, K_PAD: tl.constexpr,
    SORT_MERGE: tl.constexpr, HAS_INIT: tl.constexpr, FINAL: tl.constexpr, PRECISION: tl.constexpr,
    CENTER: tl.constexpr = False, EXACT: tl.constexpr = False,
):
    """One program = BLOCK_Q queries against the whole base (or one chunk of it).

    x_ptr: [Q, D] queries, row stride ``stride_xq``, unit column stride. y_ptr: [N, D] base rows of this chunk, row
    stride ``stride_yn``, unit column stride. keys_in_ptr / keys_out_ptr: [Q, K_PAD] int64 packed running top-k
    (contiguous) carried between base chunks (read if HAS_INIT, written if not FINAL). dist_ptr: [Q, K] fp32 and
    idx_ptr: [Q, K] int64 (contiguous), written if FINAL. idx_base: index of this chunk's first base row.
    mu_ptr: fp32 centre, subtracted from x and y tiles in fp32 (and rounded back to the input dtype for the dot)
    when CENTER: row ``pid`` of a [programs, D] array (``mu_stride`` = D: each program's own centre, see
    ``group_queries``) or one shared [D] row (``mu_stride`` = 0). EXACT (l2 only): direct differences Σ(x−y)² on a [BLOCK_Q, BLOCK_N, BLOCK_D] broadcast instead of
    tl.dot — exact up to fp32 rounding of the sum, the certificate fallback (small blocks: no tensor cores).

    Napkin math per program and N tile: 2·BLOCK_Q·BLOCK_N·D FLOPs on BLOCK_N·D·s bytes of base (L2-resident across
    the Q/BLOCK_Q programs); the base is read from DRAM ~once when the programs run in lockstep.
    """
    pid = tl.program_id(0)
    offs_q = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = offs_q < Q
    offs_d = tl.arange(0, BLOCK_D)
    cols = tl.arange(0, K_PAD)

    # ‖x‖² once per program (l2 and cos)
    xn = tl.zeros((BLOCK_Q,), dtype=tl.float32)
    if METRIC != 1 and not EXACT:
        for d0 in range(0, D, BLOCK_D):
            dm = (d0 + offs_d) < D
            xb = tl.load(x_ptr + offs_q[:, None] * stride_xq + (d0 + offs_d)[None, :],
                         mask=q_mask[:, None] & dm[None, :], other=0.0)
            if CENTER:  # the norm of exactly the (rounded) centred values the dot sees
                mu = tl.load(mu_ptr + pid * mu_stride + d0 + offs_d, mask=dm, other=0.0)
                xb = (xb.to(tl.float32) - mu[None, :]).to(xb.dtype)
            xb = xb.to(tl.float32)
            xn += tl.sum(xb * xb, axis=1)
    rx = 1.0 / tl.sqrt(tl.where(xn > 0, xn, 1.0))  # cos only; padded rows are never stored

    # running top-k: columns >= K are padding (INT64_MIN: never the maximum, sorted first at the end); live empty
    # slots are +inf with distinct fake indices so the replace-max step always hits exactly one slot.
    empty = (tl.full((BLOCK_Q, K_PAD), 0x7F800000, tl.int64) << 32) | (0x7FFFFFFF - cols[None, :]).to(tl.int64)
    run = tl.where(cols[None, :] < K, empty, INT64_MIN)
    if HAS_INIT:
        # the previous chunk's sorted keys: padding already first, K live keys after it
        run = tl.load(keys_in_ptr + offs_q[:, None] * K_PAD + cols[None, :], mask=q_mask[:, None], other=INT64_MIN)
    curmax = tl.max(run, axis=1)
    kth = _unpack_dist(curmax)

    # split-N (grid axis 1): program (pid, s) walks base rows [s·slice_rows, (s+1)·slice_rows) only
    n_start = tl.program_id(1) * slice_rows
    n_end = tl.minimum(N, n_start + slice_rows)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < n_end
        acc = tl.zeros((BLOCK_Q, BLOCK_N), dtype=tl.float32)
        yn = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dm = (d0 + offs_d) < D
            xb = tl.load(x_ptr + offs_q[:, None] * stride_xq + (d0 + offs_d)[None, :],
                         mask=q_mask[:, None] & dm[None, :], other=0.0)
            yb = tl.load(y_ptr + offs_n[:, None] * stride_yn + (d0 + offs_d)[None, :],
                         mask=n_mask[:, None] & dm[None, :], other=0.0)
            if EXACT:
                diff = xb.to(tl.float32)[:, None, :] - yb.to(tl.float32)[None, :, :]
                acc += tl.sum(diff * diff, axis=2)
            else:
                if CENTER:  # padded columns stay 0 (mu is 0 there); padded rows are masked at selection
                    mu = tl.load(mu_ptr + pid * mu_stride + d0 + offs_d, mask=dm, other=0.0)
                    xb = (xb.to(tl.float32) - mu[None, :]).to(xb.dtype)
                    yb = (yb.to(tl.float32) - mu[None, :]).to(yb.dtype)
                acc = tl.dot(xb, tl.trans(yb), acc, input_precision=PRECISION)
                if METRIC != 1:
                    yf = yb.to(tl.float32)
                    yn += tl.sum(yf * yf, axis=1)
        if EXACT:
            d = acc
        elif METRIC == 0:
            d = xn[:, None] + yn[None, :] - 2.0 * acc
        elif METRIC == 1:
            d = -acc
        else:
            d = 1.0 - acc * rx[:, None] * (1.0 / tl.sqrt(tl.where(yn > 0, yn, 1.0)))[None, :]
        valid = q_mask[:, None] & n_mask[None, :]
        # float pre-filter (<= keeps exact ties with the k-th: the packed compare settles them by index)
        cand = valid & (d <= kth[:, None])
        n_cand = tl.max(tl.sum(cand.to(tl.int32), axis=1), axis=0)
        if n_cand > 0:
            keys = tl.where(cand, _pack(d, (idx_base + offs_n).to(tl.int64)[None, :]), INT64_MAX)
            if SORT_MERGE:
                both = tl.reshape(tl.join(run, keys), (BLOCK_Q, 2 * K_PAD))
                both = tl.sort(both, dim=1)
                run, _ = tl.split(tl.permute(tl.reshape(both, (BLOCK_Q, 2, K_PAD)), (0, 2, 1)))
            else:
                # K extractions always suffice: after them every remaining tile key is above the K taken
                for _ in range(tl.minimum(n_cand, K)):
                    m = tl.min(keys, axis=1)
                    hit = (run == curmax[:, None]) & (m < curmax)[:, None]
                    run = tl.where(hit, m[:, None], run)
                    keys = tl.where(keys == m[:, None], INT64_MAX, keys)
                    curmax = tl.max(run, axis=1)
            curmax = tl.max(run, axis=1)
            kth = _unpack_dist(curmax)

    if not FINAL:  # raw keys for the next chunk's launch or the split-N merge (padding stays where it is)
        tl.store(keys_out_ptr + tl.program_id(1) * Q * K_PAD + offs_q[:, None] * K_PAD + cols[None, :], run,
                 mask=q_mask[:, None])
    elif SORT_MERGE:  # every merge leaves the list sorted: padding (INT64_MIN) first, then the K live keys
        pos = cols - (K_PAD - K)
        omask = q_mask[:, None] & (pos >= 0)[None, :]
        o = offs_q[:, None] * K + pos[None, :]
        tl.store(dist_ptr + o, _unpack_dist(run), mask=omask)
        tl.store(idx_ptr + o, run & 0xFFFFFFFF, mask=omask)
    else:  # unsorted live keys: K ordered extractions (K <= 128, once per program: cheaper than a bitonic sort)
        live = tl.where(cols[None, :] < K, run, INT64_MAX)
        for j in range(0, K):
            m = tl.min(live, axis=1)
            tl.store(dist_ptr + offs_q * K + j, _unpack_dist(m), mask=q_mask)
            tl.store(idx_ptr + offs_q * K + j, m & 0xFFFFFFFF, mask=q_mask)
            live = tl.where(live == m[:, None], INT64_MAX, live)


@triton.jit
def _knn_rerank_kernel(
    x_ptr, y_ptr, mu_ptr, cand_d_ptr, cand_i_ptr, row_ptr, dist_ptr, idx_ptr, ok_ptr,
    Q, D, K, KC, stride_xq, stride_yn, u_prod, u_center, gamma, mu_stride, mu_group,
    CENTER: tl.constexpr,
    BLOCK_Q: tl.constexpr, KC_PAD: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Stage 2 of the exact l2 search: the KC candidates of each query (from the expansion, ascending) get exact fp32
    distances Σ(x−y)² (direct differences: no cancellation against ‖x‖², whatever the offset), the K best in
    (distance, index) order are written, and ok[q] = 1 where the certificate proves them exact.

    cand_d_ptr / cand_i_ptr: [Q, KC] expansion distances (ascending) and base indices; row_ptr: [Q, KC] rows of
    y_ptr to gather (== cand_i, or arange over a gathered copy when the base lives on the host). Certificate (the
    formula of kernels.knn_search.expansion_error): every non-candidate has expansion distance >= cand_d[q, KC-1]
    = last, so with E = 2(2u_p·‖x'‖Y + γ(‖x'‖+Y)² + 2√dk·r + r²), Y = ‖x'‖ + √dk + r, r = 1.01·u_c·(2‖x'‖ + √dk):
    last − E > dk(1+γ) means no row outside the candidates reaches (or ties) the exact k-th dk.
    Napkin math: Q·KC·D·s bytes of gathered rows (10k × 32 × 128 × 4 = 164 MB at the headline, ~0.1 ms) against
    the 2·Q·N·D FLOPs of stage 1."""
    pid = tl.program_id(0)
    offs_q = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_mask = offs_q < Q
    cols = tl.arange(0, KC_PAD)
    c_mask = q_mask[:, None] & (cols < KC)[None, :]
    offs_d = tl.arange(0, BLOCK_D)
    cand = tl.load(cand_i_ptr + offs_q[:, None] * KC + cols[None, :], mask=c_mask, other=0)
    rows = tl.load(row_ptr + offs_q[:, None] * KC + cols[None, :], mask=c_mask, other=0)
    acc = tl.zeros((BLOCK_Q, KC_PAD), dtype=tl.float32)
    nx2 = tl.zeros((BLOCK_Q,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dm = (d0 + offs_d) < D
        xb = tl.load(x_ptr + offs_q[:, None] * stride_xq + (d0 + offs_d)[None, :],
                     mask=q_mask[:, None] & dm[None, :], other=0.0).to(tl.float32)
        yb = tl.load(y_ptr + rows[:, :, None] * stride_yn + (d0 + offs_d)[None, None, :],
                     mask=c_mask[:, :, None] & dm[None, None, :], other=0.0).to(tl.float32)
        diff = xb[:, None, :] - yb
        acc += tl.sum(diff * diff, axis=2)
        if CENTER:
            # query q's centre: row q // mu_group of the stage-1 centres (mu_stride 0: the one shared row)
            mu = tl.load(mu_ptr + (offs_q // mu_group)[:, None] * mu_stride + (d0 + offs_d)[None, :],
                         mask=q_mask[:, None] & dm[None, :], other=0.0)
            xb = tl.where(dm[None, :], xb - mu, 0.0)
        nx2 += tl.sum(xb * xb, axis=1)
    keys = tl.where(c_mask, _pack(acc, cand), INT64_MAX)
    m = tl.zeros((BLOCK_Q,), dtype=tl.int64)
    for j in range(0, K):  # K ordered extractions (K <= KC <= 512, once per query)
        m = tl.min(keys, axis=1)
        tl.store(dist_ptr + offs_q * K + j, _unpack_dist(m), mask=q_mask)
        tl.store(idx_ptr + offs_q * K + j, m & 0xFFFFFFFF, mask=q_mask)
        keys = tl.where(keys == m[:, None], INT64_MAX, keys)
    dk = tl.maximum(_unpack_dist(m), 0.0)
    last = tl.load(cand_d_ptr + offs_q * KC + KC - 1, mask=q_mask, other=0.0)
    nx = tl.sqrt(nx2)
    sk = tl.sqrt(dk)
    r = 1.01 * u_center * (2.0 * nx + sk)
    yb_ = nx + sk + r
    err = 2.0 * (2.0 * u_prod * nx * yb_ + gamma * (nx + yb_) * (nx + yb_) + 2.0 * sk * r + r * r)
    ok = last - err > dk * (1.0 + gamma)
    tl.store(ok_ptr + offs_q, ok.to(tl.int32), mask=q_mask)


def _config(D: int, K: int, sort_merge: bool, dtype: torch.dtype, exact: bool = False) -> dict:
    block_d = min(64 if dtype != torch.float32 else 32, max(16, triton.next_power_of_2(D)))
    if sort_merge:
        k_pad = max(32, triton.next_power_of_2(K))
        if exact:  # [16, K_PAD, 8] fp32 differences per step
            return dict(BLOCK_Q=16, BLOCK_N=k_pad, BLOCK_D=8, K_PAD=k_pad, num_warps=8)
        # BLOCK_Q shrinks with the list: [16, 1024] int64 merge keys spilled 5.3 KB on sm_90a at K_PAD = 512
        return dict(BLOCK_Q=16 if k_pad <= 128 else max(2, 2048 // k_pad), BLOCK_N=k_pad, BLOCK_D=min(block_d, 32),
                    K_PAD=k_pad, num_warps=8 if k_pad >= 256 else 4)
    k_pad = max(16, triton.next_power_of_2(K))
    if exact:  # [16, 32, 8] fp32 differences per step: 32 registers a thread at 4 warps
        return dict(BLOCK_Q=16, BLOCK_N=32, BLOCK_D=8, K_PAD=k_pad, num_warps=4)
    # BLOCK_N = 64: at 128 the [64, 128] int64 candidate keys pushed sm_90a to 255 registers + 92 B of spills
    return dict(BLOCK_Q=64, BLOCK_N=64, BLOCK_D=block_d, K_PAD=k_pad, num_warps=8)


def _rerank_config(KC: int) -> dict:
    kc_pad = max(16, triton.next_power_of_2(KC))
    # [BLOCK_Q, KC_PAD, 16] gathered fp32 values per step: 4096 (32 a thread at 4 warps) up to KC_PAD = 256
    return dict(BLOCK_Q=max(1, min(16, 4096 // (kc_pad * 16))), KC_PAD=kc_pad, BLOCK_D=16,
                num_warps=4 if kc_pad <= 256 else 8)


# relative error of one product of tl.dot's inputs: fp32 FMA (ieee) and fp16/bf16 inputs 0 (exact products), TF32
# rounds each fp32 input to 10 mantissa bits (2^-11 each), 3xTF32 keeps ~21 bits
U_PROD = {"ieee": 0.0, "tf32x3": 2.0 ** -20, "tf32": 2.0 ** -10, None: 0.0}
# rounding of the centred values fed to the dot (fp32 in fp32; fp16/bf16 are rounded back to their storage type)
U_CENTER = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


def split_plan(programs: int, N: int, block_n: int, k_pad: int, sms: int | None = None) -> tuple[int, int]:
    """(S, slice_rows): ``programs`` query blocks against base slices of whole BLOCK_N tiles, at least
    max(1024, 4·K_PAD) rows each, enough for two waves of the SMs (kernels.knn_search.base_slices); S = 1 keeps the
    single pass."""
    if sms is None:
        sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 132
    return base_slices(programs, N, block_n, max(1024, 4 * k_pad), sms)


def merge_keys(keys: torch.Tensor, K: int) -> torch.Tensor:
    """[S, Q, K_PAD] packed keys of the base slices -> the K smallest per query [Q, K], ascending. Padding
    (INT64_MIN) is dropped; a slice's empty slots (+inf with fake indices) sort after every real key."""
    S, Q, kp = keys.shape
    k = keys.permute(1, 0, 2).reshape(Q, S * kp)
    k = torch.where(k == -(1 << 63), torch.full_like(k, (1 << 63) - 1), k)
    return torch.topk(k, K, dim=1, largest=False, sorted=True).values


def unpack_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed keys -> (fp32 distance, int64 index): the inverse of _pack."""
    k32 = (keys >> 32).to(torch.int32)
    bits = k32 ^ ((k32 >> 31) & 0x7FFFFFFF)
    return bits.view(torch.float32), keys & 0xFFFFFFFF


def _fused(x, y, K, metric, base_rows, sort_merge, prec, dist, idx, mu=None, exact=False, split=None):
    """One pass of _knn_fused_kernel over the base (chunk by chunk when base_rows > 0) into dist/idx [Q, K].
    ``split``: base slices in parallel (None: ``split_plan``'s choice; 1: never), merged with ``merge_keys``."""
    Q, D = x.shape
    N = y.shape[0]
    cfg = _config(D, K, sort_merge, x.dtype, exact)
    grid0 = triton.cdiv(Q, cfg["BLOCK_Q"])
    mu_arg = mu if mu is not None else dist  # dummy pointer when unused
    mu_stride = mu.stride(0) if mu is not None and mu.dim() == 2 else 0
    if not (base_rows and base_rows > 0) and y.device == x.device:
        S, rows = (split_plan(grid0, N, cfg["BLOCK_N"], cfg["K_PAD"]) if split is None else
                   (split, -(-N // split)))
        if S > 1:  # split-N: every slice's running top-K as raw keys, merged here
            keys = torch.empty((S, Q, cfg["K_PAD"]), device=x.device, dtype=torch.int64)
            _knn_fused_kernel[(grid0, S)](
                x, y, mu_arg, keys, keys, dist, idx, Q, N, D, K, 0, x.stride(0), y.stride(0), mu_stride, rows,
                METRIC=METRICS[metric], SORT_MERGE=sort_merge, HAS_INIT=False, FINAL=False,
                PRECISION=None if exact else prec, CENTER=mu is not None, EXACT=exact, **cfg,
            )
            d, i = unpack_keys(merge_keys(keys, K))
            dist.copy_(d)
            idx.copy_(i)
            return
    chunk = base_rows if base_rows and base_rows > 0 else N
    starts = list(range(0, N, chunk))
    keys = [torch.empty((Q, cfg["K_PAD"]), device=x.device, dtype=torch.int64) for _ in range(2 if len(starts) > 1
                                                                                              else 0)]
    for i, c0 in enumerate(starts):
        yc = y[c0:c0 + chunk]
        if yc.device != x.device:
            yc = yc.to(x.device, non_blocking=True)
        yc = yc.contiguous()
        final = i == len(starts) - 1
        k_in = keys[(i + 1) % 2] if i > 0 else idx  # dummy pointer when unused
        k_out = keys[i % 2] if not final else idx
        _knn_fused_kernel[(grid0,)](
            x, yc, mu_arg, k_in, k_out, dist, idx,
            Q, yc.shape[0], D, K, c0,
            x.stride(0), yc.stride(0), mu_stride, yc.shape[0],
            METRIC=METRICS[metric], SORT_MERGE=sort_merge, HAS_INIT=i > 0, FINAL=final,
            PRECISION=None if exact else prec, CENTER=mu is not None, EXACT=exact,
            **cfg,
        )


def knn(x: torch.Tensor, y: torch.Tensor, k: int, metric: str = "l2", base_rows: int = 0, merge: str = "auto",
        precision: str = "ieee", out: dict | None = None, mode: str = "rerank", kc: int | None = None,
        stats: dict | None = None, center: str = "block", split: int | None = None, retry: bool = True
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest rows of ``y`` [N, D] for each row of ``x`` [Q, D] -> (dist [Q, k'] fp32 ascending, idx [Q, k'] int64),
    k' = min(k, N); ties go to the lower index.

    merge: "auto" (replace-max for k ≤ 128, else sort-merge), "replace" or "sort". precision: tl.dot input precision
    for fp32 inputs ("ieee" exact fp32 FMA, "tf32x3" split-tf32 tensor cores, "tf32" one tensor-core pass).
    base_rows > 0: chunked base (see the module docstring); ``y`` may then live on the host. ``out``: optional
    {"dist", "idx"} tensors to write into.

    mode (metric l2; ip and cos always run the expansion: it is their metric):
    * "rerank" (default): the expansion on centred data (``center``) keeps ``kc`` candidates (default
      candidate_count(k, N)), _knn_rerank_kernel ranks them by exact differences and certifies each query; the
      queries it cannot certify are searched again by "exact". Exact under the family's rule for any data.
    * "exact": direct differences Σ(x−y)² for every pair (no tensor cores; the fallback, and the ladder's rung 0).
    * "expansion": the plain one-pass ‖x‖²+‖y‖²−2x·y ranking — NOT exact on offset data (tests use it as the
      known-wrong kernel the check must reject).
    split: base slices searched in parallel, merged on the device (None: when the query blocks fill under two
    waves of the SMs, e.g. Q = 1; 1: never; see ``split_plan``). Ignored with ``base_rows``.
    center (mode "rerank"): "block" (default) centres each program at the mean of its queries after grouping them
    by nearest pivot (``group_queries``), "mean" centres everything at the base mean.
    retry (center "block"): queries refused by the certificate (at most half of them) are grouped and searched
    once more before the exact pass.
    stats: optional dict that receives {"kc", "fallback"} (queries that needed the exact pass; "retried": how many
    went through the second grouped search) and, l2 rerank,
    {"certified" [Q] bool, "centres" [G, D], "centre_of" [Q]} (query q was centred at centres[centre_of[q]]).
    """
    if metric not in METRICS:
        raise ValueError(f"knn: metric must be one of {sorted(METRICS)}, got {metric!r}")
    if mode not in ("rerank", "exact", "expansion"):
        raise ValueError(f"knn: mode must be rerank, exact or expansion, got {mode!r}")
    Q, D = x.shape
    N, D2 = y.shape
    if D2 != D:
        raise ValueError(f"knn: query dim {D} != base dim {D2}")
    K = min(k, N)
    if K > MAX_K:
        raise ValueError(f"knn: k={K} > {MAX_K} is not supported by the Triton kernels")
    if merge not in ("auto", "replace", "sort"):
        raise ValueError(f"knn: merge must be auto, replace or sort, got {merge!r}")
    if center not in ("block", "mean"):
        raise ValueError(f"knn: center must be block or mean, got {center!r}")
    x = x.contiguous()
    if out is None:
        out = {"dist": torch.empty((Q, K), device=x.device, dtype=torch.float32),
               "idx": torch.empty((Q, K), device=x.device, dtype=torch.int64)}
    prec = precision if x.dtype == torch.float32 else None

    def sort_for(kk: int) -> bool:
        s = merge == "sort" or (merge == "auto" and kk > MAX_K_REPLACE)
        if not s and kk > MAX_K_REPLACE:
            raise ValueError(f"knn: merge='replace' supports k <= {MAX_K_REPLACE}, got {kk}")
        return s

    if metric != "l2" or mode == "expansion":
        _fused(x, y, K, metric, base_rows, sort_for(K), prec, out["dist"], out["idx"], split=split)
        return out["dist"], out["idx"]
    KC = min(max(kc or candidate_count(K, N, MAX_K), K), N, MAX_K)
    if mode == "exact" or KC >= N:  # nothing to prune: every row is a candidate, take the exact pass at once
        _fused(x, y, K, metric, base_rows, sort_for(K), prec, out["dist"], out["idx"], exact=True, split=split)
        if stats is not None:
            stats.update(kc=N, fallback=0)
        return out["dist"], out["idx"]
    # stage 1: KC candidates from the expansion on centred data
    block_q = _config(D, KC, sort_for(KC), x.dtype)["BLOCK_Q"]
    perm = None
    if center == "block":
        perm, mu = group_queries(x, y, block_q)
    else:  # one fp32 pass over the base for the mean
        mu = y.float().mean(0, dtype=torch.float64).float().to(x.device)
    final = out
    if perm is not None:  # grouped order: run on x[perm], scatter the rows back at the end
        x = x[perm].contiguous()
        out = {"dist": torch.empty_like(final["dist"]), "idx": torch.empty_like(final["idx"])}
    mu_stride = mu.stride(0) if mu.dim() == 2 else 0
    cand_d = torch.empty((Q, KC), device=x.device, dtype=torch.float32)
    cand_i = torch.empty((Q, KC), device=x.device, dtype=torch.int64)
    _fused(x, y, KC, metric, base_rows, sort_for(KC), prec, cand_d, cand_i, mu=mu, split=split)
    # stage 2: exact re-rank + certificate
    if y.device == x.device:
        yr, rows = y.contiguous(), cand_i
    else:  # host-resident base: gather the candidate rows once (Q·KC·D elements)
        yr = y[cand_i.cpu().reshape(-1)].to(x.device).contiguous()
        rows = torch.arange(Q * KC, device=x.device, dtype=torch.int64).view(Q, KC)
    ok = torch.empty(Q, device=x.device, dtype=torch.int32)
    rc = _rerank_config(KC)
    _knn_rerank_kernel[(triton.cdiv(Q, rc["BLOCK_Q"]),)](
        x, yr, mu, cand_d, cand_i, rows, out["dist"], out["idx"], ok,
        Q, D, K, KC, x.stride(0), yr.stride(0), U_PROD[prec], U_CENTER[x.dtype], (D + 4) * 2.0 ** -23,
        mu_stride, block_q, CENTER=True, **rc,
    )
    if ok.is_meta:  # the X-ray: which queries stage 3 re-searches is data; stages 1 and 2 are the launches
        return final["dist"], final["idx"]
    # stage 3: queries the certificate cannot vouch for (margin too thin for the expansion's error bound)
    bad = (ok == 0).nonzero()[:, 0]
    if stats is not None:  # certified[q] in the caller's query order; centre_of[q] = row of centres
        cert = ok.bool()
        row = torch.arange(Q, device=x.device) // block_q if mu.dim() == 2 else torch.zeros_like(ok, dtype=torch.long)
        if perm is not None:
            inv = torch.argsort(perm)
            cert, row = cert[inv], row[inv]
        stats.update(kc=KC, fallback=int(bad.numel()), certified=cert, centres=mu.reshape(-1, D), centre_of=row)
    if bad.numel() and center == "block" and retry and 2 * bad.numel() <= Q:
        # refusals cluster in programs whose queries straddle two clusters: grouped again on their own they get
        # centres of their own cluster (one more pass over the base for <= half the queries; what that pass
        # refuses takes the exact one)
        sub: dict = {}
        d_b, i_b = knn(x[bad].contiguous(), y, k, metric, base_rows, merge, precision, None, mode, kc, sub, center,
                       split, retry=False)
        out["dist"][bad], out["idx"][bad] = d_b, i_b
        if stats is not None:
            stats.update(retried=int(bad.numel()), fallback=sub["fallback"])
    elif bad.numel():
        d_b = torch.empty((bad.numel(), K), device=x.device, dtype=torch.float32)
        i_b = torch.empty((bad.numel(), K), device=x.device, dtype=torch.int64)
        _fused(x[bad].contiguous(), y, K, metric, base_rows, sort_for(K), prec, d_b, i_b, exact=True, split=split)
        out["dist"][bad] = d_b
        out["idx"][bad] = i_b
    if perm is not None:
        final["dist"][perm] = out["dist"]
        final["idx"][perm] = out["idx"]
    return final["dist"], final["idx"]
