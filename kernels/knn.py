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
    x_ptr, y_ptr, keys_in_ptr, keys_out_ptr, dist_ptr, idx_ptr,
    Q, N, D, K, idx_base,
    stride_xq, stride_yn,
    METRIC: tl.constexpr,  # 0 l2, 1 ip, 2 cos
    BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, K_PAD: tl.constexpr,
    SORT_MERGE: tl.constexpr, HAS_INIT: tl.constexpr, FINAL: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program = BLOCK_Q queries against the whole base (or one chunk of it).

    x_ptr: [Q, D] queries, row stride ``stride_xq``, unit column stride. y_ptr: [N, D] base rows of this chunk, row
    stride ``stride_yn``, unit column stride. keys_in_ptr / keys_out_ptr: [Q, K_PAD] int64 packed running top-k
    (contiguous) carried between base chunks (read if HAS_INIT, written if not FINAL). dist_ptr: [Q, K] fp32 and
    idx_ptr: [Q, K] int64 (contiguous), written if FINAL. idx_base: index of this chunk's first base row.

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
    if METRIC != 1:
        for d0 in range(0, D, BLOCK_D):
            dm = (d0 + offs_d) < D
            xb = tl.load(x_ptr + offs_q[:, None] * stride_xq + (d0 + offs_d)[None, :],
                         mask=q_mask[:, None] & dm[None, :], other=0.0).to(tl.float32)
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

    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        acc = tl.zeros((BLOCK_Q, BLOCK_N), dtype=tl.float32)
        yn = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dm = (d0 + offs_d) < D
            xb = tl.load(x_ptr + offs_q[:, None] * stride_xq + (d0 + offs_d)[None, :],
                         mask=q_mask[:, None] & dm[None, :], other=0.0)
            yb = tl.load(y_ptr + offs_n[:, None] * stride_yn + (d0 + offs_d)[None, :],
                         mask=n_mask[:, None] & dm[None, :], other=0.0)
            acc = tl.dot(xb, tl.trans(yb), acc, input_precision=PRECISION)
            if METRIC != 1:
                yf = yb.to(tl.float32)
                yn += tl.sum(yf * yf, axis=1)
        if METRIC == 0:
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

    if not FINAL:  # raw keys for the next chunk's launch (padding stays where it is)
        tl.store(keys_out_ptr + offs_q[:, None] * K_PAD + cols[None, :], run, mask=q_mask[:, None])
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


def _config(D: int, K: int, sort_merge: bool, dtype: torch.dtype) -> dict:
    block_d = min(64 if dtype != torch.float32 else 32, max(16, triton.next_power_of_2(D)))
    if sort_merge:
        k_pad = max(32, triton.next_power_of_2(K))
        return dict(BLOCK_Q=16, BLOCK_N=k_pad, BLOCK_D=min(block_d, 32), K_PAD=k_pad,
                    num_warps=8 if k_pad >= 256 else 4)
    k_pad = max(16, triton.next_power_of_2(K))
    return dict(BLOCK_Q=64, BLOCK_N=64 if k_pad >= 64 else 128, BLOCK_D=block_d, K_PAD=k_pad, num_warps=8)


def knn(x: torch.Tensor, y: torch.Tensor, k: int, metric: str = "l2", base_rows: int = 0, merge: str = "auto",
        precision: str = "ieee", out: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest rows of ``y`` [N, D] for each row of ``x`` [Q, D] -> (dist [Q, k'] fp32 ascending, idx [Q, k'] int64),
    k' = min(k, N); ties go to the lower index.

    merge: "auto" (replace-max for k ≤ 128, else sort-merge), "replace" or "sort". precision: tl.dot input precision
    for fp32 inputs ("ieee" exact fp32 FMA, "tf32x3" split-tf32 tensor cores). base_rows > 0: chunked base (see the
    module docstring); ``y`` may then live on the host. ``out``: optional {"dist", "idx"} tensors to write into.
    """
    if metric not in METRICS:
        raise ValueError(f"knn: metric must be one of {sorted(METRICS)}, got {metric!r}")
    Q, D = x.shape
    N, D2 = y.shape
    if D2 != D:
        raise ValueError(f"knn: query dim {D} != base dim {D2}")
    K = min(k, N)
    if K > MAX_K:
        raise ValueError(f"knn: k={K} > {MAX_K} is not supported by the Triton kernels")
    sort_merge = merge == "sort" or (merge == "auto" and K > MAX_K_REPLACE)
    if not sort_merge and K > MAX_K_REPLACE:
        raise ValueError(f"knn: merge='replace' supports k <= {MAX_K_REPLACE}, got {K}")
    x = x.contiguous()
    cfg = _config(D, K, sort_merge, x.dtype)
    if out is None:
        out = {"dist": torch.empty((Q, K), device=x.device, dtype=torch.float32),
               "idx": torch.empty((Q, K), device=x.device, dtype=torch.int64)}
    prec = precision if x.dtype == torch.float32 else None
    chunk = base_rows if base_rows and base_rows > 0 else N
    starts = list(range(0, N, chunk))
    keys = [torch.empty((Q, cfg["K_PAD"]), device=x.device, dtype=torch.int64) for _ in range(2 if len(starts) > 1
                                                                                              else 0)]
    grid = (triton.cdiv(Q, cfg["BLOCK_Q"]),)
    for i, c0 in enumerate(starts):
        yc = y[c0:c0 + chunk]
        if yc.device != x.device:
            yc = yc.to(x.device, non_blocking=True)
        yc = yc.contiguous()
        final = i == len(starts) - 1
        k_in = keys[(i + 1) % 2] if i > 0 else out["idx"]  # dummy pointer when unused
        k_out = keys[i % 2] if not final else out["idx"]
        _knn_fused_kernel[grid](
            x, yc, k_in, k_out, out["dist"], out["idx"],
            Q, yc.shape[0], D, K, c0,
            x.stride(0), yc.stride(0),
            METRIC=METRICS[metric], SORT_MERGE=sort_merge, HAS_INIT=i > 0, FINAL=final, PRECISION=prec,
            **cfg,
        )
    return out["dist"], out["idx"]
