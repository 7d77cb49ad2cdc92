"""Fused attention forward in Triton: FlashAttention-2 prefill and split-K flash-decoding.

Both kernels compute ``O = softmax(Q K^T / sqrt(D)) V`` and the row log-sum-exp ``LSE`` (natural log, float32)
without ever materialising the N_q x N_kv score matrix: K/V are streamed tile by tile through an online softmax
(running max ``m``, running denominator ``l``, rescaled fp32 accumulator), so DRAM traffic is ~(Q + K + V + O)
instead of the naive kernel's extra 2-3 passes over a B*H*N_q*N_kv matrix.

Conventions shared by both launchers
* GQA/MQA: K/V have ``Hkv`` heads, ``Hkv`` divides ``H``; query head ``h`` reads kv head ``h // (H // Hkv)``.
* Causal with ``N_q != N_kv`` is bottom-right aligned: query ``i`` sees keys ``j <= i + N_kv - N_q``.
* A row that sees no key gets ``O = 0`` and ``LSE = -inf`` (never NaN).
* Softmax runs in base 2: scores are scaled by ``log2(e)/sqrt(D)`` once so each element costs one ``exp2``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels._tuning import bench_unless_pinned, interpreter, prune_with_pins, tuning

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


def _prefill_configs() -> list[triton.Config]:
    if interpreter():
        # tiny tiles so the CPU quick shapes (17, 33, 40 rows) cross several tiles and hit every mask path
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    # The space is BLOCK_M 64/128 x BLOCK_N 32/64/128 x warps 4/8 x stages 2-4 (36 points); these 10 are the ones
    # that can win: 128-row tiles want 8 warps (the [128, D] fp32 accumulator is 128 registers/thread at D=128
    # with 4 warps), 64-row tiles leave 8 warps idle, and BLOCK_N=128 x 4 stages overflows shared memory at D=128.
    # Every config compiles once per (dtype, D, causal, GQA) and is timed once per length bucket: ~10 s, not ~60.
    pts = [(128, 64, 8, 3), (128, 64, 8, 2), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 3),
           (64, 64, 4, 3), (64, 32, 4, 3), (64, 32, 4, 4), (64, 64, 4, 2), (64, 128, 4, 2)]
    if not tuning():  # WB_TUNE=0: one 128-row and one 64-row tile (the prune below needs a 64-row one)
        pts = [pts[0], pts[5]]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in pts]


def _prune_prefill(configs, named_args, **kwargs):
    """Short query blocks (Nq <= 64: decode-like prefill) cannot fill a 128-row tile: only 64-row configs."""
    if named_args["Nq"] > 64:
        return configs
    return [c for c in configs if c.kwargs["BLOCK_M"] <= 64] or configs[:1]


@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q, K_ptrs, V_ptrs, offs_m, offs_n, offs_d, lo, hi, Nkv, causal_off,
                    stride_kn, stride_vn, qk_scale,
                    BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr,
                    PRECISION: tl.constexpr):
    """Stream key/value tiles [lo, hi) through the online softmax.

    MASKED=False is the hot loop (tiles fully inside N_kv and fully visible under the causal mask): no masks, no
    -inf guards. MASKED=True handles the ragged tail and the diagonal tiles.
    """
    d_ok = offs_d < HEAD_DIM  # folds to all-true when HEAD_DIM is a power of two
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            kt = tl.load(K_ptrs + start_n * stride_kn, mask=d_ok[:, None] & (cols[None, :] < Nkv), other=0.0)
        else:
            kt = tl.load(K_ptrs + start_n * stride_kn, mask=d_ok[:, None], other=0.0)
        # [BLOCK_M, BLOCK_N] scores, fp32 accumulate: 2*BM*BN*D FLOPs
        qk = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        if MASKED:
            keep = cols[None, :] < Nkv
            if IS_CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + causal_off)
            qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        if MASKED:
            # a row with every key masked so far keeps m = -inf; subtract 0 instead so exp2 gives 0, not NaN
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_sub = m_new
        p = tl.math.exp2(qk - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if MASKED:
            v = tl.load(V_ptrs + start_n * stride_vn, mask=(cols[:, None] < Nkv) & d_ok[None, :], other=0.0)
        else:
            v = tl.load(V_ptrs + start_n * stride_vn, mask=d_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_prefill_configs(), key=["NQ_BUCKET", "NKV_BUCKET", "HEAD_DIM", "IS_CAUSAL"],
                 prune_configs_by={"early_config_prune": prune_with_pins(
                     "attention_prefill", lambda a: "short" if a["Nq"] <= 64 else "long", _prune_prefill)},
                 do_bench=bench_unless_pinned())
@triton.jit
def _attn_fwd_kernel(Q, K, V, Out, Lse, qk_scale,
                     stride_qb, stride_qh, stride_qm, stride_qd,
                     stride_kb, stride_kh, stride_kn, stride_kd,
                     stride_vb, stride_vh, stride_vn, stride_vd,
                     stride_ob, stride_oh, stride_om, stride_od,
                     stride_lb, stride_lh,
                     H, Nq, Nkv, NQ_BUCKET, NKV_BUCKET,
                     GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IS_CAUSAL: tl.constexpr,
                     PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program = one BLOCK_M tile of queries of one (batch, head).

    Q, Out: [B, H, Nq, HEAD_DIM] (any strides); K, V: [B, H // GROUP, Nkv, HEAD_DIM]; Lse: [B, H, Nq] float32.
    Bytes per program: Q tile once, K/V tiles streamed once (visible part only), O tile and LSE written once.
    """
    if IS_CAUSAL:
        # the last query tiles see the most keys: launch them first so the short ones fill the tail of the grid
        start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    else:
        start_m = tl.program_id(0) * BLOCK_M
    off_bh = tl.program_id(1)
    off_b = (off_bh // H).to(tl.int64)
    off_h = off_bh % H
    off_kh = (off_h // GROUP).to(tl.int64)
    off_h = off_h.to(tl.int64)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    m_ok = offs_m < Nq

    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    # K is read transposed ([BLOCK_D, BLOCK_N]) straight from memory so QK^T is a plain dot
    K_ptrs = K + off_b * stride_kb + off_kh * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    V_ptrs = V + off_b * stride_vb + off_kh * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    causal_off = Nkv - Nq  # bottom-right alignment
    n_full = (Nkv // BLOCK_N) * BLOCK_N  # tiles wholly inside N_kv
    if IS_CAUSAL:
        # keys this query tile can see at all: j <= (start_m + BLOCK_M - 1) + causal_off  -> block skipping
        hi = tl.minimum(tl.maximum(start_m + BLOCK_M + causal_off, 0), Nkv)
        # keys every row of the tile sees: j <= start_m + causal_off  -> unmasked fast loop
        full_hi = tl.minimum((tl.maximum(start_m + causal_off + 1, 0) // BLOCK_N) * BLOCK_N, n_full)
        full_hi = tl.minimum(full_hi, hi)
    else:
        hi = Nkv
        full_hi = n_full
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, K_ptrs, V_ptrs, offs_m, offs_n, offs_d, 0, full_hi, Nkv,
                                    causal_off, stride_kn, stride_vn, qk_scale,
                                    BLOCK_N, HEAD_DIM, False, IS_CAUSAL, PRECISION)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, K_ptrs, V_ptrs, offs_m, offs_n, offs_d, full_hi, hi, Nkv,
                                    causal_off, stride_kn, stride_vn, qk_scale,
                                    BLOCK_N, HEAD_DIM, True, IS_CAUSAL, PRECISION)

    empty = l_i == 0.0  # row saw no key: O = 0, LSE = -inf
    l_safe = tl.where(empty, 1.0, l_i)
    o = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, o.to(Out.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    tl.store(Lse + off_b * stride_lb + off_h * stride_lh + offs_m, lse, mask=m_ok)


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int, int, int]:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be [B, H, N, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, Nq, D = q.shape
    Bk, Hkv, Nkv, Dk = k.shape
    if k.shape != v.shape or Bk != B or Dk != D:
        raise ValueError(f"k/v shape {tuple(k.shape)}/{tuple(v.shape)} does not match q {tuple(q.shape)}")
    if H % Hkv:
        raise ValueError(f"GQA needs Hkv to divide H; got H={H}, Hkv={Hkv}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    return B, H, Hkv, Nq, Nkv, D


def _block_d(D: int) -> int:
    return max(16, triton.next_power_of_2(D))  # tl.dot needs K >= 16


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: true fp32 FMA dots ("ieee"); TF32 would cost ~3e-4 relative error and fail the fp32 check
    return "ieee" if dtype == torch.float32 else "tf32"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              out: torch.Tensor | None = None, lse: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashAttention-2 forward. Returns (O, LSE).

    q: [B, H, Nq, D]; k, v: [B, Hkv, Nkv, D] (Hkv divides H; any strides, unit stride on D is fastest);
    out: optional [B, H, Nq, D] in q's dtype; lse: optional [B, H, Nq] float32 (contiguous in Nq).
    Napkin math: 4*B*H*Nq*Nkv*D FLOPs (about half when causal and square), (Q + K + V + O)*s + 4*B*H*Nq bytes;
    at D=128 that is ~N/2 FLOP per byte, compute-bound for N >= ~600 on an H100.
    """
    B, H, Hkv, Nq, Nkv, D = _check_qkv(q, k, v)
    if out is None:
        out = torch.empty_like(q)
    if lse is None:
        lse = torch.empty((B, H, Nq), device=q.device, dtype=torch.float32)
    if lse.stride(2) != 1:
        raise ValueError("lse must be contiguous along Nq")
    qk_scale = LOG2E / math.sqrt(D)

    def grid(meta):
        return (triton.cdiv(Nq, meta["BLOCK_M"]), B * H)

    _attn_fwd_kernel[grid](
        q, k, v, out, lse, qk_scale,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), lse.stride(0), lse.stride(1),
        H, Nq, Nkv, triton.next_power_of_2(Nq), triton.next_power_of_2(Nkv),
        GROUP=H // Hkv, HEAD_DIM=D, BLOCK_D=_block_d(D), IS_CAUSAL=bool(causal), PRECISION=_precision(q.dtype),
    )
    return out, lse


# ---------------------------------------------------------------------------------------------- decode


def _decode_configs() -> list[triton.Config]:
    if interpreter():
        return [triton.Config({"BLOCK_N": 16}, num_warps=4, num_stages=1)]
    # memory-bound: what matters is bytes in flight per SM (BLOCK_N x D x stages), not the tensor-core shape
    pts = ((64, 4, 3), (32, 4, 4), (64, 4, 2), (64, 4, 4), (128, 4, 2), (128, 4, 3), (128, 8, 3))
    return [triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=s) for bn, w, s in (pts if tuning() else pts[:1])]


@triton.autotune(configs=_decode_configs(), key=["NKV_BUCKET", "HEAD_DIM", "BLOCK_R", "CHUNK"],
                 prune_configs_by={"early_config_prune": prune_with_pins("attention_decode", lambda a: "*")},
                 do_bench=bench_unless_pinned())
@triton.jit
def _decode_split_kernel(Q, K, V, Seqlens, Op, Mp, Lp, qk_scale,
                         stride_qb, stride_qh, stride_qm, stride_qd,
                         stride_kb, stride_kh, stride_kn, stride_kd,
                         stride_vb, stride_vh, stride_vn, stride_vd,
                         Hkv, Nq, NKV_BUCKET, CHUNK, NUM_SPLITS,
                         GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
                         PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program = one (batch, kv head, split): all GROUP*Nq query rows that share this kv head at once, so
    each K/V byte of the split's chunk [split*CHUNK, min((split+1)*CHUNK, seqlen)) is read exactly once.

    Q: [B, H, Nq, HEAD_DIM]; K, V: [B, Hkv, Nkv, HEAD_DIM]; Seqlens: int32 [B].
    Op: fp32 [B*H*Nq, NUM_SPLITS, BLOCK_D] unnormalised partial outputs; Mp, Lp: fp32 [B*H*Nq, NUM_SPLITS]
    (running max in base 2, softmax denominator). An empty split writes m = -inf, l = 0, o = 0.
    """
    split = tl.program_id(0)
    off_bk = tl.program_id(1)
    off_b = off_bk // Hkv
    off_kh = off_bk % Hkv
    seqlen = tl.load(Seqlens + off_b)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, seqlen)

    offs_r = tl.arange(0, BLOCK_R)  # row r of the group: query head kh*GROUP + r // Nq, query index r % Nq
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    r_ok = offs_r < GROUP * Nq
    d_ok = offs_d < HEAD_DIM
    head = (off_kh * GROUP + offs_r // Nq).to(tl.int64)
    qi = offs_r % Nq
    q_ptrs = Q + off_b.to(tl.int64) * stride_qb + head[:, None] * stride_qh + qi[:, None] * stride_qm \
        + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=r_ok[:, None] & d_ok[None, :], other=0.0)
    kv_base_k = K + off_b.to(tl.int64) * stride_kb + off_kh.to(tl.int64) * stride_kh
    kv_base_v = V + off_b.to(tl.int64) * stride_vb + off_kh.to(tl.int64) * stride_vh

    m_i = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_R], dtype=tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < hi
        kt = tl.load(kv_base_k + cols[None, :].to(tl.int64) * stride_kn + offs_d[:, None] * stride_kd,
                     mask=d_ok[:, None] & n_ok[None, :], other=0.0)
        qk = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        qk = tl.where(n_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))  # finite: every tile has >= 1 valid key
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(kv_base_v + cols[:, None].to(tl.int64) * stride_vn + offs_d[None, :] * stride_vd,
                    mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new

    rows = (off_b * Hkv * GROUP * Nq + off_kh * GROUP * Nq + offs_r).to(tl.int64)  # = (b*H + head)*Nq + qi
    tl.store(Mp + rows * NUM_SPLITS + split, m_i, mask=r_ok)
    tl.store(Lp + rows * NUM_SPLITS + split, l_i, mask=r_ok)
    tl.store(Op + (rows[:, None] * NUM_SPLITS + split) * BLOCK_D + offs_d[None, :], acc, mask=r_ok[:, None])


@triton.jit
def _decode_combine_kernel(Op, Mp, Lp, Out, Lse, NUM_SPLITS,
                           HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
    """One program = one query row: merge the NUM_SPLITS partials by log-sum-exp.

    Op: fp32 [R, NUM_SPLITS, BLOCK_D]; Mp, Lp: fp32 [R, NUM_SPLITS]; Out: [R, HEAD_DIM] contiguous; Lse: fp32 [R].
    Bytes: NUM_SPLITS*(BLOCK_D + 2)*4 read per row, tiny next to the K/V stream.
    """
    row = tl.program_id(0).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < NUM_SPLITS
    m = tl.load(Mp + row * NUM_SPLITS + offs_s, mask=s_ok, other=float("-inf"))
    l_s = tl.load(Lp + row * NUM_SPLITS + offs_s, mask=s_ok, other=0.0)
    o = tl.load(Op + (row * NUM_SPLITS + offs_s[:, None]) * BLOCK_D + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    m_max = tl.max(m, 0)
    m_safe = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.math.exp2(m - m_safe)  # empty splits: exp2(-inf) = 0
    l_tot = tl.sum(l_s * w, 0)
    acc = tl.sum(o * w[:, None], 0)
    empty = l_tot == 0.0
    l_div = tl.where(empty, 1.0, l_tot)
    tl.store(Out + row * HEAD_DIM + offs_d, (acc / l_div).to(Out.dtype.element_ty), mask=offs_d < HEAD_DIM)
    tl.store(Lse + row, tl.where(empty, float("-inf"), (m_safe + tl.math.log2(l_div)) * 0.6931471805599453))


def _default_splits(B: int, Hkv: int, Nkv: int, device: torch.device) -> int:
    if interpreter() or device.type != "cuda":
        return max(1, min(4, triton.cdiv(Nkv, 16)))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    # ~4 resident programs per SM keep enough K/V loads in flight to saturate HBM; never chunks under 256 keys
    return max(1, min(triton.cdiv(4 * sms, B * Hkv), triton.cdiv(Nkv, 256), 128))


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seqlens: torch.Tensor,
                     out: torch.Tensor | None = None, lse: torch.Tensor | None = None,
                     num_splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-K flash-decoding: attention of a few new queries against a KV cache with per-sequence valid lengths.

    q: [B, H, Nq, D] (Nq small, 1..4 typical); k_cache, v_cache: [B, Hkv, Nkv, D]; seqlens: int32 [B], positions
    >= seqlens[b] are ignored; out: optional contiguous [B, H, Nq, D]; lse: optional contiguous fp32 [B, H, Nq].
    Returns (O, LSE). Memory-bound: 2*sum(seqlens)*Hkv*D*s bytes of cache against 4*H*Nq*D FLOPs per key, so the
    kernel's job is to stream K/V at full bandwidth; splitting the sequence gives B*Hkv*num_splits programs instead
    of B*Hkv (128 for B=16, Hkv=8: under one per SM), and a second tiny kernel merges the partials.
    """
    B, H, Hkv, Nq, Nkv, D = _check_qkv(q, k_cache, v_cache)
    if seqlens.shape != (B,) or seqlens.dtype != torch.int32:
        raise ValueError(f"seqlens must be int32 [B={B}], got {seqlens.dtype} {tuple(seqlens.shape)}")
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if lse is None:
        lse = torch.empty((B, H, Nq), device=q.device, dtype=torch.float32)
    if not (out.is_contiguous() and lse.is_contiguous()):
        raise ValueError("out and lse must be contiguous")
    S = num_splits or _default_splits(B, Hkv, Nkv, q.device)
    chunk = triton.cdiv(triton.cdiv(Nkv, S), 16) * 16
    S = triton.cdiv(Nkv, chunk)
    BLOCK_D = _block_d(D)
    G = H // Hkv
    rows = B * H * Nq
    # partials: S*(D + 2)*4 bytes per query row (0.5 MB per split at B=16, H=32, D=128): noise next to the cache
    op = torch.empty((rows, S, BLOCK_D), device=q.device, dtype=torch.float32)
    mp = torch.empty((rows, S), device=q.device, dtype=torch.float32)
    lp = torch.empty((rows, S), device=q.device, dtype=torch.float32)
    _decode_split_kernel[(S, B * Hkv)](
        q, k_cache, v_cache, seqlens, op, mp, lp, LOG2E / math.sqrt(D),
        *q.stride(), *k_cache.stride(), *v_cache.stride(),
        Hkv, Nq, triton.next_power_of_2(Nkv), chunk, S,
        GROUP=G, HEAD_DIM=D, BLOCK_D=BLOCK_D, BLOCK_R=max(16, triton.next_power_of_2(G * Nq)),
        PRECISION=_precision(q.dtype),
    )
    _decode_combine_kernel[(rows,)](op, mp, lp, out, lse, S, HEAD_DIM=D, BLOCK_D=BLOCK_D,
                                    BLOCK_S=max(2, triton.next_power_of_2(S)))
    return out, lse
