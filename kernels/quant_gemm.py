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
