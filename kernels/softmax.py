"""Row softmax in Triton: a fused one-pass kernel for rows that fit on chip, an online kernel for rows that do not.

``y[m, :] = exp(x[m, :] - max(x[m, :])) / sum(exp(x[m, :] - max(x[m, :])))`` over the last dim of a 2-D ``x[M, N]``;
fp32 / fp16 / bf16 storage, fp32 arithmetic.

Napkin math (per call): ~5·M·N FLOPs (max, sub, exp, sum, mul) against 2·M·N·s bytes at the floor (x read once,
y written once) — under 1.3 FLOP/byte, so the only thing that matters is bytes moved. Naive torch
(``x.max``, ``x - max``, ``exp``, ``sum``, ``/``) reads 5MN+2M and writes 3MN+2M elements: a fused kernel's ideal
speed-up over it is ~4x. The fused kernel hits the floor (one read, one write); the online kernel reads the row twice
(running max/sum pass, then the normalise pass), i.e. 3·M·N·s bytes unless the re-read hits L2.

Launchers: ``softmax_fused(x, out=None)``, ``softmax_online(x, out=None, block_n=None)`` and
``softmax(x, out=None, variant="auto")`` (fused when the row fits, else online). All run under
``TRITON_INTERPRET=1`` on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# A row is kept whole in registers up to this width (BLOCK_N = next_power_of_2(N)): 32768 fp32 values over 16 warps is
# 64 registers per thread; wider rows spill, so they go to the online kernel.
FUSED_MAX_N = 32768
# Tile width of the online kernel: 4096 fp32 over 8 warps = 16 values per thread per tile.
ONLINE_BLOCK_N = 4096


@triton.jit
def softmax_fused_kernel(x_ptr, y_ptr, M, N, stride_xm, stride_ym, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Softmax of BLOCK_M whole rows per program, each row held in registers: one read and one write per element.

    Args:
        x_ptr: input, shape [M, N], last dim contiguous (row stride ``stride_xm`` elements), fp32/fp16/bf16.
        y_ptr: output, shape [M, N], last dim contiguous (row stride ``stride_ym``), same dtype as x.
        M, N: rows and row length. BLOCK_N = next_power_of_2(N) >= N; BLOCK_M rows per program (> 1 only for short
            rows, so that a program still moves a few KB).
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    # rows past M (last program) re-read row M-1 instead of an all -inf row, whose max would give (-inf) - (-inf)
    rows64 = tl.minimum(rows, M - 1).to(tl.int64)  # int64: M·N can exceed 2**31 elements
    # -inf padding: drops out of the max, and exp(-inf - max) = 0 drops out of the sum
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :], mask=cols[None, :] < N,
                other=-float("inf")).to(tl.float32)
    row_max = tl.max(x, axis=1)
    e = tl.exp(x - row_max[:, None])
    denom = tl.sum(e, axis=1)
    y = e * (1.0 / denom)[:, None]
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(y_ptr + rows64[:, None] * stride_ym + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_online_kernel(x_ptr, y_ptr, N, stride_xm, stride_ym, BLOCK_N: tl.constexpr):
    """Softmax of one row per program, tiled over N: an online pass (running max and sum), then a normalise pass.

    Args:
        x_ptr: input, shape [M, N], last dim contiguous (row stride ``stride_xm`` elements), fp32/fp16/bf16.
        y_ptr: output, shape [M, N], last dim contiguous (row stride ``stride_ym``), same dtype as x.
        N: row length, any size (tiles of BLOCK_N, the last one masked). Grid: (M,).
    """
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    y_row = y_ptr + row * stride_ym
    cols = tl.arange(0, BLOCK_N)
    # Per-lane running max / sum: no cross-warp reduction inside the loop. The max starts finite (-1e38) so that a
    # lane whose every element is masked (-inf) computes exp(-inf - (-1e38)) = 0, never (-inf) - (-inf) = NaN.
    m = tl.full([BLOCK_N], -1e38, tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs = start + cols
        x = tl.load(x_row + offs, mask=offs < N, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        s = s * tl.exp(m - m_new) + tl.exp(x - m_new)
        m = m_new
    row_max = tl.max(m, axis=0)
    inv = 1.0 / tl.sum(s * tl.exp(m - row_max), axis=0)
    # second read of the row: from L2 when the rows in flight fit (50 MB on H100), else DRAM (3·N·s bytes per row)
    for start in range(0, N, BLOCK_N):
        offs = start + cols
        mask = offs < N
        x = tl.load(x_row + offs, mask=mask, other=-float("inf")).to(tl.float32)
        y = tl.exp(x - row_max) * inv
        tl.store(y_row + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def _num_warps(elems_per_program: int) -> int:
    """Enough threads that each holds <= ~64 fp32 values (and small programs don't waste warps)."""
    if elems_per_program <= 2048:
        return 4
    if elems_per_program <= 8192:
        return 8
    return 16


def _prepare(x: torch.Tensor, out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 2:
        raise ValueError(f"softmax expects a 2-D tensor [M, N], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"softmax supports float32/float16/bfloat16, got {x.dtype}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must be {tuple(x.shape)} {x.dtype} on {x.device}, got {tuple(out.shape)} {out.dtype} "
                         f"on {out.device}")
    if out.stride(-1) != 1:
        raise ValueError("out must have a contiguous last dim")
    return x, out


def softmax_fused(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dim of x[M, N] with N <= FUSED_MAX_N; one read and one write of every element."""
    x, out = _prepare(x, out)
    M, N = x.shape
    if N > FUSED_MAX_N:
        raise ValueError(f"softmax_fused keeps a row on chip: N={N} > {FUSED_MAX_N}; use softmax_online")
    if M == 0 or N == 0:
        return out
    BLOCK_N = triton.next_power_of_2(N)
    # short rows: several per program so that each program moves ~2K elements (N=1 would otherwise be 1 element)
    BLOCK_M = max(1, min(2048 // BLOCK_N, 64, triton.next_power_of_2(M)))
    grid = (triton.cdiv(M, BLOCK_M),)
    softmax_fused_kernel[grid](x, out, M, N, x.stride(0), out.stride(0), BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                               num_warps=_num_warps(BLOCK_M * BLOCK_N))
    return out


def softmax_online(x: torch.Tensor, out: torch.Tensor | None = None, block_n: int | None = None) -> torch.Tensor:
    """Softmax over the last dim of x[M, N], any N: tiles of block_n (default min(next_pow2(N), 4096)) per row."""
    x, out = _prepare(x, out)
    M, N = x.shape
    if M == 0 or N == 0:
        return out
    BLOCK_N = block_n or min(triton.next_power_of_2(N), ONLINE_BLOCK_N)
    if BLOCK_N & (BLOCK_N - 1):
        raise ValueError(f"block_n must be a power of two, got {BLOCK_N}")
    softmax_online_kernel[(M,)](x, out, N, x.stride(0), out.stride(0), BLOCK_N=BLOCK_N,
                                num_warps=8 if BLOCK_N >= 2048 else 4)
    return out


def softmax(x: torch.Tensor, out: torch.Tensor | None = None, variant: str = "auto") -> torch.Tensor:
    """Softmax over the last dim of x[M, N]. variant: "fused", "online" or "auto" (fused when the row fits)."""
    if variant == "auto":
        variant = "fused" if x.shape[-1] <= FUSED_MAX_N else "online"
    if variant == "fused":
        return softmax_fused(x, out)
    if variant == "online":
        return softmax_online(x, out)
    raise ValueError(f"variant must be 'fused', 'online' or 'auto', got {variant!r}")
