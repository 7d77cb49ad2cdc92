"""Tiled GEMM in Triton: C[M, N] = A[M, K] @ B[K, N], fp32 accumulation (Triton tutorials 03 and 09 shape).

Napkin math (H100 SXM, published figures): 2·M·N·K FLOPs against (M·K + K·N)·s_in + M·N·s_out bytes. A
4096³ fp16 GEMM is 137 GFLOP over 100 MB: intensity 1365 FLOP/B, far right of the 295 FLOP/B bf16 ridge, so big
squares are compute bound (cuBLAS ~760-790 TF; the tutorial kernel reaches ~95-100% of it). Decode-like shapes
(M = 1 or 16, N = K = 4096) are the opposite: 33 MB of B for 0.03-0.5 GFLOP, i.e. a GEMV bound by DRAM (~11 µs).

Two kernels share the per-tile code:

* ``matmul_kernel``: one program per C tile, tiles visited in GROUP_M-row groups ("super-grouping") so that the
  GROUP_M tiles of A and the column tiles of B a wave touches stay in L2: one B column tile is re-read from L2 by
  GROUP_M programs instead of from DRAM.
* ``matmul_persistent_kernel``: grid = number of SMs; each program loops over tiles tile_id, tile_id + NUM_SMS, ...
  (same grouped order). Saves launching/retiring ~thousands of CTAs and keeps the tail wave full.

Precision modes: fp16/bf16 use tensor cores with fp32 accumulation; fp32 runs with ``input_precision="ieee"``
(exact fp32 FMA, SIMT roof ~67 TF) or ``"tf32"`` (inputs rounded to 10-bit mantissas: ~1e-3 relative error, 495 TF
roof); fp8 e4m3 (Hopper) multiplies the fp32 tile by a_scale·b_scale and writes bf16. For fp8, Triton's sm_90 default
accumulates the whole K loop in the tensor core's reduced-precision accumulator ("fast accumulation"); we pass
``max_num_imprecise_acc=BLOCK_K`` so every BLOCK_K slice is promoted into a true fp32 accumulator, the accuracy that
``torch._scaled_mm(use_fast_accum=False)`` (the baseline) also has. Hopper's fp8 wgmma reads B K-major from shared
memory: with the problem's row-major B the sm_90 compile multi-buffers only A (80 KB of shared memory instead of
144 KB at 128x256x128, Triton 3.6 and 3.9); a K-major B (strides (1, K)) pipelines both operands.

Edge tiles: rows/columns of A and B are wrapped with ``% M`` / ``% N`` (the loads stay in bounds without masks and
the extra rows only feed C elements that the masked store drops); the K tail is masked to zero, so any M, N, K works.

Autotuning: configs are chosen at import. Under ``TRITON_INTERPRET=1`` there is ONE small config (tuning under the
interpreter would run every config on the CPU). On a GPU, a pruning hook keeps the few configs that fit the element
size (shared memory per stage = (BLOCK_M + BLOCK_N)·BLOCK_K·s) and M (small-M tiles for decode-like shapes).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from kernels._tuning import bench_unless_pinned, interpreter, prune_with_pins, tuning

FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))

# --------------------------------------------------------------------------------------------- configurations
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages). Shared memory = stages·(BM + BN)·BK·s_in; H100 allows 227 KB.
_TILES: dict[object, list[tuple[int, int, int, int, int]]] = {
    2: [  # fp16 / bf16
        (128, 256, 64, 8, 3),  # the tutorial's H100 pick: 2 warpgroups of 64x256 wgmma, 144 KB over 3 stages
        (128, 128, 64, 4, 4),  # 128 KB; more CTAs for 1-2k squares
        (64, 128, 32, 4, 4),  # odd shapes: small tiles waste less on the % M / masked edges
    ],
    4: [  # fp32 (ieee FMA or tf32): 4-byte operands -> half the K per stage for the same shared memory
        (128, 128, 32, 8, 3),  # 96 KB
        (64, 128, 32, 4, 4),
    ],
    1: [  # fp8: 1-byte operands -> twice the K per stage (wgmma fp8 consumes K = 32 per instruction)
        (128, 256, 128, 8, 3),  # 144 KB
        (128, 128, 128, 4, 4),  # 128 KB
    ],
    "small_m": [  # M <= 32 (decode-like): a GEMV over B; many narrow N tiles keep all 132 SMs streaming B
        (16, 32, 128, 4, 4),  # N = 4096 -> 128 CTAs
        (16, 64, 128, 4, 4),
    ],
}
GROUP_M = 8  # 8 row tiles per group: a 128x256 group touches 8 A tiles + 1 B tile per k-step while in L2

_INTERP_TILE = (16, 16, 32, 4, 1)  # tl.dot needs >= 16 per dim; tiny so quick shapes still span several tiles
_INTERP_GROUP_M = 2  # < number of row tiles at the quick shapes: partial last groups get exercised


def _config(t: tuple[int, int, int, int, int], group_m: int) -> triton.Config:
    bm, bn, bk, w, s = t
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m}, num_warps=w,
                         num_stages=s)


def _configs() -> list[triton.Config]:
    if interpreter():
        return [_config(_INTERP_TILE, _INTERP_GROUP_M)]
    seen: list[tuple[int, int, int, int, int]] = []
    for tiles in _TILES.values():
        seen += [t for t in tiles if t not in seen]
    return [_config(t, GROUP_M) for t in seen]


# WB_MATMUL_TUNE=0 (or setting TUNE = False): no tuning, the first listed tile of each class. A cold GPU run compiles
# every kept config once per integer specialisation (M == 1, multiples of 16, ...): ~2-3 s each, so quick GPU checks
# turn tuning off.
TUNE = os.environ.get("WB_MATMUL_TUNE", "1") != "0" and tuning()


def _prune(configs, named_args, **kwargs):
    """Keep the tiles listed for this element size, or the small-M tiles when M <= 32 (autotuning stays 2-3 runs)."""
    a = named_args["a_ptr"]
    wanted = set(_TILES["small_m"] if named_args["M"] <= 32 else _TILES[a.element_size()])
    kept = [c for c in configs
            if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps, c.num_stages) in wanted]
    kept = kept or configs[:1]
    return kept if TUNE else kept[:1]


def _bench(fn, quantiles):
    # shorter than triton's default (25 ms warm-up, 100 ms rep): ~10 shapes x 5 dtypes x 2 kernels get tuned per run
    return triton.testing.do_bench(fn, warmup=10, rep=40, quantiles=quantiles)


# the strides are in the key: a K-major B (stride_bk == 1) is a different kernel from a row-major one
def _pin_class(named_args) -> str:
    """Call class of a pinned config (bench/tuned/<gpu>.json, kernels/_tuning.py): the tile list _prune picks from."""
    if named_args["M"] <= 32:
        return "small_m"
    return {1: "8bit", 2: "16bit", 4: "32bit"}.get(named_args["a_ptr"].element_size(), "*")


_AUTOTUNE = dict(configs=_configs(), key=["M", "N", "K", "stride_ak", "stride_bk"],
                 prune_configs_by={"early_config_prune": prune_with_pins("matmul", _pin_class, _prune)},
                 do_bench=bench_unless_pinned(_bench))


# --------------------------------------------------------------------------------------------- per-tile pieces
@triton.jit
def _tile_coords(tile_id, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped order: GROUP_M row tiles are walked column by column, so consecutive programs share B tiles in L2."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)  # the last group may be short
    pid_m = first_pid_m + ((tile_id % num_pid_in_group) % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _tile_acc(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              INPUT_PRECISION: tl.constexpr, FP8: tl.constexpr):
    """fp32 [BLOCK_M, BLOCK_N] = A[rows of pid_m, :] @ B[:, cols of pid_n]: K/BLOCK_K steps of one tl.dot each."""
    # wrapped rows/cols: always in bounds, so the loads need only the K-tail mask
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)  # zeros past K add nothing to the dot
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if FP8:
            acc = tl.dot(a, b, acc, max_num_imprecise_acc=BLOCK_K)  # promote to fp32 after every BLOCK_K slice
        else:
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc


@triton.jit
def _tile_store(c_ptr, acc, a_scale_ptr, b_scale_ptr, M, N, stride_cm, stride_cn, pid_m, pid_n,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FP8: tl.constexpr):
    if FP8:
        acc = acc * (tl.load(a_scale_ptr) * tl.load(b_scale_ptr))  # per-tensor dequantisation: one multiply
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------- kernels
@triton.autotune(**_AUTOTUNE)
@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, M, N, K,
                  stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                  INPUT_PRECISION: tl.constexpr, FP8: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """One program per C tile, grouped order.

    a_ptr: A [M, K], strides (stride_am, stride_ak) (row-major contiguous in the problem); fp32/fp16/bf16/fp8.
    b_ptr: B [K, N], strides (stride_bk, stride_bn) (row-major contiguous in the problem); same dtype as A.
    c_ptr: C [M, N], strides (stride_cm, stride_cn); A's dtype, or bf16 for fp8 inputs.
    a_scale_ptr, b_scale_ptr: float32 scalars (read only when FP8).
    Bytes per tile: (BLOCK_M + BLOCK_N)·K·s_in read (mostly L2 hits thanks to grouping) + BLOCK_M·BLOCK_N·s_out.
    """
    pid_m, pid_n = _tile_coords(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = _tile_acc(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
                    BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION, FP8)
    _tile_store(c_ptr, acc, a_scale_ptr, b_scale_ptr, M, N, stride_cm, stride_cn, pid_m, pid_n, BLOCK_M, BLOCK_N, FP8)


@triton.autotune(**_AUTOTUNE)
@triton.jit
def matmul_persistent_kernel(a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, M, N, K,
                             stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                             INPUT_PRECISION: tl.constexpr, FP8: tl.constexpr, NUM_SMS: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                             GROUP_M: tl.constexpr):
    """Persistent: program p computes tiles p, p + NUM_SMS, p + 2·NUM_SMS, ... (grouped order). Pointers as in
    ``matmul_kernel``; the grid is min(NUM_SMS, number of tiles)."""
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    for tile_id in range(tl.program_id(0), num_tiles, NUM_SMS):
        pid_m, pid_n = _tile_coords(tile_id, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = _tile_acc(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, pid_m, pid_n,
                        BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION, FP8)
        _tile_store(c_ptr, acc, a_scale_ptr, b_scale_ptr, M, N, stride_cm, stride_cn, pid_m, pid_n,
                    BLOCK_M, BLOCK_N, FP8)


# --------------------------------------------------------------------------------------------- launchers
@functools.lru_cache(None)
def num_sms(device_index: int) -> int:
    if interpreter():
        return 2  # < tiles at the quick shapes: each program loops over several tiles
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def fits_int32(M: int, N: int, K: int) -> bool:
    """Offsets are int32 inside the kernels: every operand must have < 2**31 elements."""
    return max(M * K, K * N, M * N) < 2**31


def _prepare(a, b, out, a_scale, b_scale, input_precision):
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: expected A [M, K] and B [K, N], got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"matmul: A and B must share a dtype, got {a.dtype} and {b.dtype}")
    M, K = a.shape
    N = b.shape[1]
    if not fits_int32(M, N, K):
        raise ValueError(f"matmul: {M}x{N}x{K} overflows the kernels' int32 offsets")
    fp8 = a.dtype in FP8_DTYPES
    if fp8 and (a_scale is None or b_scale is None):
        raise ValueError("matmul: fp8 inputs need a_scale and b_scale (float32 scalar tensors)")
    if not fp8 and a.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"matmul: unsupported dtype {a.dtype}")
    c_dtype = torch.bfloat16 if fp8 else a.dtype
    if out is None:
        out = torch.empty((M, N), device=a.device, dtype=c_dtype)
    elif tuple(out.shape) != (M, N) or out.dtype != c_dtype:
        raise ValueError(f"matmul: out must be [{M}, {N}] {c_dtype}, got {tuple(out.shape)} {out.dtype}")
    if a.dtype == torch.float32:
        if input_precision not in ("ieee", "tf32"):
            raise ValueError(f"matmul: input_precision must be 'ieee' or 'tf32', got {input_precision!r}")
    else:
        input_precision = None  # fp16/bf16/fp8 always run on tensor cores: the flag only matters for fp32
    if not fp8:  # never read (FP8 is a constexpr False): pass A so the pointer arguments stay tensors
        a_scale = b_scale = a
    return M, N, K, out, a_scale, b_scale, input_precision, fp8


def matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None, *,
           a_scale: torch.Tensor | None = None, b_scale: torch.Tensor | None = None,
           input_precision: str = "ieee") -> torch.Tensor:
    """C = A @ B with fp32 accumulation (fp8: C = (A·a_scale) @ (B·b_scale) in bf16). Returns ``out``.

    a: [M, K], b: [K, N], any strides (the problem passes row-major contiguous). fp32, fp16, bf16 or fp8 e4m3.
    out: [M, N] in A's dtype (bf16 for fp8), any strides; allocated when None.
    a_scale, b_scale: float32 scalar tensors on A's device, fp8 only.
    input_precision: fp32 only: "ieee" (exact fp32) or "tf32" (tensor cores, ~1e-3 relative error).
    """
    M, N, K, out, a_scale, b_scale, prec, fp8 = _prepare(a, b, out, a_scale, b_scale, input_precision)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    matmul_kernel[grid](a, b, out, a_scale, b_scale, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                        out.stride(0), out.stride(1), INPUT_PRECISION=prec, FP8=fp8)
    return out


def matmul_persistent(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None, *,
                      a_scale: torch.Tensor | None = None, b_scale: torch.Tensor | None = None,
                      input_precision: str = "ieee") -> torch.Tensor:
    """Same contract as :func:`matmul`; launches min(#SMs, #tiles) programs that loop over the tiles."""
    M, N, K, out, a_scale, b_scale, prec, fp8 = _prepare(a, b, out, a_scale, b_scale, input_precision)
    sms = num_sms((a.device.index or 0) if a.is_cuda else 0)

    def grid(meta):
        return (min(sms, triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])),)

    matmul_persistent_kernel[grid](a, b, out, a_scale, b_scale, M, N, K, a.stride(0), a.stride(1), b.stride(0),
                                   b.stride(1), out.stride(0), out.stride(1), INPUT_PRECISION=prec, FP8=fp8,
                                   NUM_SMS=sms)
    return out
