"""Quantized GEMM in Triton: y[M, N] = x[M, K] @ dequant(W)[K, N], four weight/activation schemes.

Layouts are those of ``kernels/quant.py`` (read its docstring): int8 weights ``qw [K, N]`` with an fp32 per-column
scale; int4 weights packed two per byte along K (``packed [K//2, N]``, low nibble = even k) with ``scale`` and
optional integer ``zero`` per (group of K, column); per-token int8 / per-row fp8 activations with fp32 scales.

Napkin math (decode, M = 1..16, K = 4096, N = 14336): FLOPs 2MNK = 0.1-1.9 GFLOP, while the weights alone are
58.7 MB (int8) / 29.4 MB + 0.9 MB scales (int4, g=128) versus 117 MB in bf16 -- the kernels are DRAM-bound and the
win over cuBLAS on pre-dequantized bf16 weights is the byte ratio (ideal 3.87x for W4A16 g128, 2x for W8A16).
At M = 256+ the wXa16 kernels turn compute-bound on the bf16 tensor cores, W8A8 on the int8 ones (2x the bf16 roof)
and FP8 on the fp8 ones (Hopper/Ada).

* ``w8a16_gemm``: int8 -> fp16/bf16 in registers (exact: |q| <= 127 fits both), tl.dot with fp32 accumulation, the
  per-column scale applied once in the epilogue (linear, so it commutes with the K sum: no weight rounding at all).
* ``w4a16_gemm``: loads the packed bytes (each byte once per k pair: the two k rows of a byte read the same address,
  served by L1), unpacks the nibble for its k, dequantizes ``(q - zero) * scale`` in fp32 (exact for fp16/bf16
  scales) and rounds once to the activation dtype for tl.dot. BLOCK_K divides the group so each K tile needs one
  row of scales/zeros.
* ``w8a8_gemm``: int8 x int8 tl.dot -> int32 (exact while K * 127^2 < 2^31), epilogue ``acc * xs[m] * ws[n]``.
* ``fp8_gemm``: e4m3 x e4m3 tl.dot -> fp32, same row/column scale epilogue (needs sm_89+ on a GPU).

Small M: BLOCK_M = 16 and split-K (fp32 atomics into a zeroed workspace, cast afterwards) so a decode GEMM still
launches >= ~2 programs per SM. Any M, N, K are correct (masked), except that int4 needs K % group == 0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_SMS = None


def _num_sms(device: torch.device) -> int:
    global _SMS
    if _SMS is None:
        _SMS = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132
    return _SMS


# ------------------------------------------------------------------------------------------------------ kernels
@triton.jit
def _w8a16_kernel(x_ptr, qw_ptr, s_ptr, y_ptr, ws_ptr, M, N, K,
                  stride_xm, stride_xk, stride_qk, stride_qn, stride_ym, stride_yn,
                  SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[M, N] = (x[M, K] @ qw[K, N]) * s[N].

    x: fp16/bf16 [M, K], any strides. qw: int8 [K, N], any strides (row-major: N contiguous, coalesced).
    s: fp32 [N], contiguous. y: x's dtype [M, N]. ws: fp32 [M, N] contiguous zeros when SPLIT_K > 1 (else unused).
    Grid: (cdiv(N, BLOCK_N), cdiv(M, BLOCK_M), SPLIT_K); program (n, m, k) sums its share of the K tiles.
    """
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(t0, t1):
        k = t * BLOCK_K + offs_k
        mask_k = k < K
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        q = tl.load(qw_ptr + k[:, None] * stride_qk + offs_n[None, :] * stride_qn,
                    mask=mask_k[:, None] & mask_n[None, :], other=0)
        acc = tl.dot(a, q.to(a.dtype), acc)  # int8 -> fp16/bf16 is exact
    s = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0)
    acc = acc * s[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K == 1:
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
                 acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(ws_ptr + offs_m[:, None] * N + offs_n[None, :], acc, mask=mask)


@triton.jit
def _w4a16_kernel(x_ptr, pw_ptr, s_ptr, z_ptr, y_ptr, ws_ptr, M, N, K,
                  stride_xm, stride_xk, stride_pk, stride_pn, stride_sg, stride_sn, stride_zg, stride_zn,
                  stride_ym, stride_yn,
                  GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, SPLIT_K: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[M, N] = x[M, K] @ ((nibble(pw)[K, N] - zero) * s)  with per-(K-group, column) s and zero.

    x: fp16/bf16 [M, K]. pw: uint8 [K // 2, N] (k = 2p low nibble, 2p + 1 high nibble), N contiguous for coalescing.
    s: [K // GROUP, N] (fp16/bf16/fp32). z: uint8 [K // GROUP, N] when HAS_ZERO, else zero = 8 (symmetric).
    y: x's dtype [M, N]. ws: fp32 [M, N] zeros when SPLIT_K > 1. Requires K % GROUP == 0 and GROUP % BLOCK_K == 0,
    so K needs no mask and each K tile lies in one group (one [BLOCK_N] row of scales/zeros per tile).
    """
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    k_tiles = K // BLOCK_K
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    shift = (offs_k % 2) * 4  # even k: low nibble, odd k: high nibble
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(t0, t1):
        k = t * BLOCK_K + offs_k
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :] * stride_xk,
                    mask=mask_m[:, None], other=0.0)
        # BLOCK_K/2 distinct packed rows x BLOCK_N bytes; the odd-k row re-reads the even-k row's bytes (L1 hit)
        b = tl.load(pw_ptr + (k // 2)[:, None] * stride_pk + offs_n[None, :] * stride_pn,
                    mask=mask_n[None, :], other=0).to(tl.int32)
        q = (b >> shift[:, None]) & 0xF
        g = (t * BLOCK_K) // GROUP
        s = tl.load(s_ptr + g * stride_sg + offs_n * stride_sn, mask=mask_n, other=0.0).to(tl.float32)
        if HAS_ZERO:
            z = tl.load(z_ptr + g * stride_zg + offs_n * stride_zn, mask=mask_n, other=0).to(tl.int32)
            q = q - z[None, :]
        else:
            q = q - 8
        w = (q.to(tl.float32) * s[None, :]).to(a.dtype)  # exact product for fp16/bf16 scales, one rounding
        acc = tl.dot(a, w, acc)
    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K == 1:
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
                 acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(ws_ptr + offs_m[:, None] * N + offs_n[None, :], acc, mask=mask)


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, KW, ROWS_PER_SPLIT,
                 stride_xm, stride_wk, stride_sg, stride_zg, stride_os,
                 W4: tl.constexpr, GROUP: tl.constexpr, HAS_ZERO: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    """Split-K GEMV, no tl.dot: out[pid_k, m, n] = sum over this split's weight rows of x . dequant(W).

    W4: w = packed uint8 [KW = K // 2, N] (row p: k = 2p low nibble, 2p + 1 high), s [K // GROUP, N], z uint8 or 8;
    each BLOCK_R-row step lies in one group (2 * BLOCK_R divides GROUP) so its scale multiplies the step's integer
    sum once per column. Else: w = int8 [KW = K, N], s fp32 [N] applied by the caller's epilogue (here: 1).
    x [M, K] (K contiguous), N contiguous everywhere. out: fp32 [SPLIT, M, N] (stride_os per split) or, for one
    split, y itself. Grid (cdiv(N, BLOCK_N), SPLIT); ROWS_PER_SPLIT is a multiple of BLOCK_R.
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    r_begin = pid_k * ROWS_PER_SPLIT
    r_end = tl.minimum(r_begin + ROWS_PER_SPLIT, KW)
    for r0 in range(r_begin, r_end, BLOCK_R):
        rows = r0 + offs_r
        mask_r = rows < r_end
        # one coalesced [BLOCK_R, BLOCK_N] tile of weight bytes per step, each byte read once
        b = tl.load(w_ptr + rows[:, None] * stride_wk + offs_n[None, :], mask=mask_r[:, None] & mask_n[None, :],
                    other=0)
        if W4:
            b = b.to(tl.int32)
            g = (2 * r0) // GROUP
            if HAS_ZERO:
                z = tl.load(z_ptr + g * stride_zg + offs_n, mask=mask_n, other=0).to(tl.int32)
            else:
                z = tl.full((BLOCK_N,), 8, tl.int32)
            s = tl.load(s_ptr + g * stride_sg + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            q_lo = ((b & 0xF) - z[None, :]).to(tl.float32)  # k = 2p
            q_hi = ((b >> 4) - z[None, :]).to(tl.float32)  # k = 2p + 1
            xm = mask_m[:, None] & mask_r[None, :]
            x_lo = tl.load(x_ptr + offs_m[:, None] * stride_xm + 2 * rows[None, :], mask=xm, other=0.0)
            x_hi = tl.load(x_ptr + offs_m[:, None] * stride_xm + 2 * rows[None, :] + 1, mask=xm, other=0.0)
            part = tl.sum(x_lo.to(tl.float32)[:, :, None] * q_lo[None, :, :]
                          + x_hi.to(tl.float32)[:, :, None] * q_hi[None, :, :], axis=1)
            acc += part * s[None, :]
        else:
            xv = tl.load(x_ptr + offs_m[:, None] * stride_xm + rows[None, :], mask=mask_m[:, None] & mask_r[None, :],
                         other=0.0)
            acc += tl.sum(xv.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], axis=1)
    mask = mask_m[:, None] & mask_n[None, :]
    tl.store(out_ptr + pid_k * stride_os + offs_m[:, None] * N + offs_n[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _split_sum_kernel(ws_ptr, s_ptr, y_ptr, MN, N, SPLIT: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr):
    """y[i] = sum_s ws[s, i] (fixed order: bitwise reproducible) * scale[i % N]; the second, tiny pass of split-K."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for sp in range(SPLIT):
        acc += tl.load(ws_ptr + sp * MN + offs, mask=mask, other=0.0)
    if HAS_SCALE:
        acc = acc * tl.load(s_ptr + offs % N, mask=mask, other=0.0)
    tl.store(y_ptr + offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _scaled_mm_kernel(a_ptr, b_ptr, as_ptr, bs_ptr, y_ptr, M, N, K,
                      stride_am, stride_ak, stride_bk, stride_bn, stride_ym, stride_yn,
                      ACC_DTYPE: tl.constexpr, GROUP_M: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[M, N] = (a[M, K] @ b[K, N]) * as[M][:, None] * bs[N][None, :] with a low-precision dot.

    a: int8 or fp8 e4m3 [M, K] (K contiguous). b: same dtype [K, N] (any strides; fp8 wants K contiguous, i.e. a
    column-major [K, N], which is what the tensor cores read without a transpose). as: fp32 [M], bs: fp32 [N].
    ACC_DTYPE: tl.int32 for int8 (exact), tl.float32 for fp8. y: fp16/bf16 [M, N].
    Grid: 1-D, grouped ordering (GROUP_M row-blocks share each column block) for L2 reuse at large M.
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    in_group = GROUP_M * num_n
    first_m = (pid // in_group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % size_m
    pid_n = (pid % in_group) // size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        mask_k = k < K
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + k[None, :] * stride_ak,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_ptr + k[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, out_dtype=ACC_DTYPE)
    sa = tl.load(as_ptr + offs_m, mask=mask_m, other=0.0)
    sb = tl.load(bs_ptr + offs_n, mask=mask_n, other=0.0)
    y = acc.to(tl.float32) * sa[:, None] * sb[None, :]
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn,
             y.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# ------------------------------------------------------------------------------------------------------ launchers
def _a16_config(M: int, N: int, K: int, device: torch.device, max_block_k: int = 128):
    """(BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages) for a weight-only GEMM."""
    if M <= 16:
        bm, bn, bk, warps, stages = 16, 64, 128, 4, 4
    elif M <= 64:
        bm, bn, bk, warps, stages = 64, 64, 64, 4, 4
    else:
        bm, bn, bk, warps, stages = 128, 128, 64, 8, 3
    bk = min(bk, max_block_k)
    split = 1
    if M <= 64:  # DRAM-bound: want >= 2 programs per SM in flight, but >= 4 K tiles per split
        tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
        while tiles * split < 2 * _num_sms(device) and triton.cdiv(K, bk) >= 8 * split:
            split *= 2
    return bm, bn, bk, split, warps, stages


def _check_act(x: torch.Tensor, K: int) -> None:
    if x.dim() != 2 or x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be fp16/bf16 [M, K], got {x.dtype} {tuple(x.shape)}")
    if x.shape[1] != K:
        raise ValueError(f"x has K={x.shape[1]}, weights have K={K}")


def _finish_split(y: torch.Tensor, ws: torch.Tensor | None) -> torch.Tensor:
    if ws is not None:
        y.copy_(ws)  # M x N fp32 -> activation dtype: 6 bytes/element, tiny at decode M
    return y


def w8a16_gemm(x: torch.Tensor, qw: torch.Tensor, scale: torch.Tensor, out: torch.Tensor | None = None,
               split_k: int | None = None) -> torch.Tensor:
    """y = x @ (qw * scale): x fp16/bf16 [M, K], qw int8 [K, N], scale fp32 [N] -> y [M, N] in x's dtype."""
    K, N = qw.shape
    _check_act(x, K)
    if qw.dtype != torch.int8 or scale.shape != (N,):
        raise ValueError(f"qw must be int8 [K, N] and scale [N]; got {qw.dtype} {tuple(qw.shape)}, "
                         f"scale {tuple(scale.shape)}")
    M = x.shape[0]
    y = out if out is not None else torch.empty((M, N), dtype=x.dtype, device=x.device)
    bm, bn, bk, split, warps, stages = _a16_config(M, N, K, x.device)
    split = split_k or split
    ws = torch.zeros((M, N), dtype=torch.float32, device=x.device) if split > 1 else None
    grid = (triton.cdiv(N, bn), triton.cdiv(M, bm), split)
    _w8a16_kernel[grid](x, qw, scale.float().contiguous(), y, ws if ws is not None else y, M, N, K,
                        x.stride(0), x.stride(1), qw.stride(0), qw.stride(1), y.stride(0), y.stride(1),
                        SPLIT_K=split, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return _finish_split(y, ws)


def w4a16_gemm(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None,
               group: int = 128, out: torch.Tensor | None = None, split_k: int | None = None) -> torch.Tensor:
    """y = x @ dequant_int4(packed, scale, zero, group).

    x fp16/bf16 [M, K]; packed uint8 [K // 2, N]; scale [K // group, N]; zero uint8 [K // group, N] or None
    (symmetric, zero = 8) -> y [M, N] in x's dtype.
    """
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"packed must be uint8 [K // 2, N], got {packed.dtype} {tuple(packed.shape)}")
    K, N = packed.shape[0] * 2, packed.shape[1]
    _check_act(x, K)
    if group < 16 or group & (group - 1) or K % group:
        raise ValueError(f"group must be a power of two >= 16 dividing K={K}, got {group}")
    if scale.shape != (K // group, N) or (zero is not None and zero.shape != (K // group, N)):
        raise ValueError(f"scale/zero must be [K // group, N] = [{K // group}, {N}], got {tuple(scale.shape)}"
                         f"{'' if zero is None else ' / ' + str(tuple(zero.shape))}")
    M = x.shape[0]
    y = out if out is not None else torch.empty((M, N), dtype=x.dtype, device=x.device)
    bm, bn, bk, split, warps, stages = _a16_config(M, N, K, x.device, max_block_k=group)
    split = split_k or split
    ws = torch.zeros((M, N), dtype=torch.float32, device=x.device) if split > 1 else None
    z = zero if zero is not None else scale  # placeholder pointer, never read when HAS_ZERO is False
    grid = (triton.cdiv(N, bn), triton.cdiv(M, bm), split)
    _w4a16_kernel[grid](x, packed, scale, z, y, ws if ws is not None else y, M, N, K,
                        x.stride(0), x.stride(1), packed.stride(0), packed.stride(1),
                        scale.stride(0), scale.stride(1), z.stride(0), z.stride(1), y.stride(0), y.stride(1),
                        GROUP=group, HAS_ZERO=zero is not None, SPLIT_K=split,
                        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return _finish_split(y, ws)


GEMV_M_MAX = 16


def _gemv_tiles(M: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_R, BLOCK_N): the [BLOCK_M, BLOCK_R, BLOCK_N] product stays <= 4096 fp32 (32 per thread)."""
    bm = triton.next_power_of_2(max(M, 1))
    if bm <= 2:
        return bm, 16, 128
    if bm <= 4:
        return bm, 16, 64
    return bm, 8, 32


def _gemv(x, w, s, z, y, w4, group, split_k):
    M, K = x.shape
    KW, N = w.shape
    bm, br, bn = _gemv_tiles(M)
    while w4 and (group // 2) % br:
        br //= 2  # a step of BLOCK_R packed rows stays inside one group
    steps = triton.cdiv(KW, br)
    if split_k is None:  # ~2 programs per SM, each with >= 4 steps of the K loop
        tiles = triton.cdiv(N, bn)
        split_k = 1
        while tiles * split_k < 2 * _num_sms(x.device) and steps >= 8 * split_k:
            split_k *= 2
    rows = triton.cdiv(steps, split_k) * br
    split_k = triton.cdiv(KW, rows)
    xs = x if x.stride(1) == 1 else x.contiguous()
    one = split_k == 1 and w4  # int8 takes the split-sum pass even unsplit: it applies the column scale
    ws = y if one else torch.empty((split_k, M, N), dtype=torch.float32, device=x.device)
    zz = z if z is not None else w
    _gemv_kernel[(triton.cdiv(N, bn), split_k)](
        xs, w, s if w4 else w, zz, ws, M, N, KW, rows, xs.stride(0), w.stride(0),
        s.stride(0) if w4 else 0, zz.stride(0), M * N if not one else 0,
        W4=w4, GROUP=group if w4 else 1, HAS_ZERO=z is not None, BLOCK_M=bm, BLOCK_R=br, BLOCK_N=bn, num_warps=4)
    if not one:
        BLOCK = 1024
        _split_sum_kernel[(triton.cdiv(M * N, BLOCK),)](ws, s if not w4 else ws, y, M * N, N, SPLIT=split_k,
                                                        HAS_SCALE=not w4, BLOCK=BLOCK, num_warps=4)
    return y


def w4a16_gemv(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None,
               group: int = 128, out: torch.Tensor | None = None, split_k: int | None = None) -> torch.Tensor:
    """Decode-M (<= 16) y = x @ dequant_int4(packed, scale, zero, group) without tl.dot: split-K GEMV over
    [BLOCK_R packed rows x BLOCK_N] byte tiles, fp32 FMAs, the group scale once per step and column, then a fixed-
    order split sum. Layouts as w4a16_gemm; packed/scale/zero rows must be N-contiguous. group: even, K % group == 0.
    """
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"packed must be uint8 [K // 2, N], got {packed.dtype} {tuple(packed.shape)}")
    K, N = packed.shape[0] * 2, packed.shape[1]
    _check_act(x, K)
    if group < 2 or group % 2 or K % group:
        raise ValueError(f"group must be even and divide K={K}, got {group}")
    if scale.shape != (K // group, N) or (zero is not None and zero.shape != (K // group, N)):
        raise ValueError(f"scale/zero must be [K // group, N] = [{K // group}, {N}], got {tuple(scale.shape)}")
    if x.shape[0] > GEMV_M_MAX:
        raise ValueError(f"w4a16_gemv is for decode M <= {GEMV_M_MAX}, got M={x.shape[0]}")
    for t in (packed, scale) + ((zero,) if zero is not None else ()):
        if t.stride(1) != 1:
            raise ValueError("packed, scale and zero must be N-contiguous")
    y = out if out is not None else torch.empty((x.shape[0], N), dtype=x.dtype, device=x.device)
    return _gemv(x, packed, scale, zero, y, True, group, split_k)


def w8a16_gemv(x: torch.Tensor, qw: torch.Tensor, scale: torch.Tensor, out: torch.Tensor | None = None,
               split_k: int | None = None) -> torch.Tensor:
    """Decode-M (<= 16) y = x @ (qw * scale) without tl.dot: split-K GEMV, column scale in the split sum."""
    K, N = qw.shape
    _check_act(x, K)
    if qw.dtype != torch.int8 or scale.shape != (N,) or qw.stride(1) != 1:
        raise ValueError(f"qw must be N-contiguous int8 [K, N] and scale [N]; got {qw.dtype} {tuple(qw.shape)}, "
                         f"scale {tuple(scale.shape)}")
    if x.shape[0] > GEMV_M_MAX:
        raise ValueError(f"w8a16_gemv is for decode M <= {GEMV_M_MAX}, got M={x.shape[0]}")
    y = out if out is not None else torch.empty((x.shape[0], N), dtype=x.dtype, device=x.device)
    return _gemv(x, qw, scale.float().contiguous(), None, y, False, 1, split_k)


def _scaled_mm(a, b, sa, sb, out_dtype, out, acc_dtype):
    M, K = a.shape
    N = b.shape[1]
    if b.shape[0] != K or sa.shape != (M,) or sb.shape != (N,):
        raise ValueError(f"expected a [M, K], b [K, N], a_scale [M], b_scale [N]; got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}, {tuple(sa.shape)}, {tuple(sb.shape)}")
    y = out if out is not None else torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M <= 64:
        bm, bn, bk, warps, stages = 16 if M <= 16 else 64, 64, 128, 4, 4
    else:
        bm, bn, bk, warps, stages = 128, 128, 128, 8, 3
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    _scaled_mm_kernel[grid](a, b, sa.float().contiguous(), sb.float().contiguous(), y, M, N, K,
                            a.stride(0), a.stride(1), b.stride(0), b.stride(1), y.stride(0), y.stride(1),
                            ACC_DTYPE=acc_dtype, GROUP_M=8, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                            num_warps=warps, num_stages=stages)
    return y


def w8a8_gemm(xq: torch.Tensor, x_scale: torch.Tensor, qw: torch.Tensor, w_scale: torch.Tensor,
              out_dtype: torch.dtype = torch.float16, out: torch.Tensor | None = None) -> torch.Tensor:
    """y = (xq @ qw) * x_scale[:, None] * w_scale[None, :]: int8 [M, K] x int8 [K, N] -> int32 -> out_dtype."""
    if xq.dtype != torch.int8 or qw.dtype != torch.int8:
        raise ValueError(f"w8a8 needs int8 xq and qw, got {xq.dtype}, {qw.dtype}")
    return _scaled_mm(xq, qw, x_scale, w_scale, out_dtype, out, tl.int32)


def fp8_gemm(xq: torch.Tensor, x_scale: torch.Tensor, qw: torch.Tensor, w_scale: torch.Tensor,
             out_dtype: torch.dtype = torch.bfloat16, out: torch.Tensor | None = None) -> torch.Tensor:
    """y = (xq @ qw) * x_scale[:, None] * w_scale[None, :]: e4m3 [M, K] x e4m3 [K, N] -> fp32 -> out_dtype."""
    fp8 = getattr(torch, "float8_e4m3fn", None)
    if fp8 is None or xq.dtype != fp8 or qw.dtype != fp8:
        raise ValueError(f"fp8 GEMM needs float8_e4m3fn xq and qw, got {xq.dtype}, {qw.dtype}")
    return _scaled_mm(xq, qw, x_scale, w_scale, out_dtype, out, tl.float32)
