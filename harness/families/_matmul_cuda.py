"""Raw-CUDA variants of the matmul family: the SGEMM ladder (v1-v7, fp32), mma.sync (v8, fp16/bf16) and, on
Hopper, host-mode wgmma + TMA kernels: v9 (one warpgroup), v10 (warp-specialised, persistent, 128x256 tiles) and
v11 (fp8 e4m3 -> bf16, the same structure with QGMMA).

``harness/families/matmul.py`` owns the Problem (C[M,N] = A[M,K] @ B[K,N], row-major contiguous, inputs
``{"a": A, "b": B}``, output ``{"c": C}`` in the input dtype) and calls :func:`register_cuda_variants`.

Kernel objects are created once at import (no GPU needed: nvcc runs lazily on the first launch or resource query).
Tile sizes live here and in the kernel names; they were chosen so that ptxas reports zero spill bytes on sm_80 and
sm_90 (tests/test_matmul_cuda.py checks it).
"""

from __future__ import annotations

import ctypes

import torch

from harness.cuda import CudaSource, CudaUnavailable, ptr, stream_of
from harness.registry import gpu_arch_reason

SRC = CudaSource("matmul.cu")
SRC_SM90 = CudaSource("matmul_sm90.cu", archs=("sm_90a",))

GRID_Y_MAX = 65535
# v1-v3 run at ~0.5-5 TF/s: one 8192^3 call of v1 takes seconds. Above 4096^3 (the ladder's reference size) they
# are skipped so that a default-shape run of the family stays short.
SLOW_RUNGS, SLOW_RUNG_MAX_FLOPS = (1, 2, 3), 2 * 4096**3


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


# ------------------------------------------------------------------------------------------------ fp32 SGEMM ladder
# (ladder rung, variant name, kernel name, description, block tile (BM, BN) or None for v1, threads per block)
V1 = "sgemm_v1_naive"
V2 = "sgemm_v2_coalesced<32>"
V3 = "sgemm_v3_smem<32>"
V4 = "sgemm_v4_blocktile1d<64,64,8,8>"  # BM, BN, BK, TM -> 512 threads
V5 = "sgemm_v5_blocktile2d<128,128,8,8,8>"  # BM, BN, BK, TM, TN -> 256 threads
V6 = "sgemm_v6_vectorized<128,128,8,8,8>"  # same tiles as v5, float4 global/shared access
V7 = "sgemm_v7_warptile<128,128,16,64,64,4,8,4,128>"  # BM, BN, BK, WM, WN, WNITER, TM, TN, threads

SGEMM = [
    # rung, name, kernel, (BM, BN), threads, description
    (1, "cuda_v1_naive", V1, (32, 32), 1024, "one thread per C element, lanes walk rows: uncoalesced A and C"),
    (2, "cuda_v2_coalesced", V2, (32, 32), 1024, "lanes walk columns: coalesced B loads and C stores"),
    (3, "cuda_v3_smem", V3, (32, 32), 1024, "32x32 tiles staged in shared memory: 32x less global traffic"),
    (4, "cuda_v4_blocktile1d", V4, (64, 64), 512, "8 results per thread down a column: B reused from a register"),
    (5, "cuda_v5_blocktile2d", V5, (128, 128), 256, "8x8 outer product per thread: 1/4 shared load per FMA"),
    (6, "cuda_v6_vectorized", V6, (128, 128), 256, "v5 with float4 global/shared access, A transposed in smem"),
    (7, "cuda_v7_warptile", V7, (128, 128), 128, "warp tiles of 64x64 between block and thread tiles"),
]
KERNELS = {kname: SRC.kernel(kname) for _, _, kname, _, _, _ in SGEMM}

# ------------------------------------------------------------------------------------------------ v8: mma.sync
V8_BM, V8_BN, V8_BK, V8_WARPS_M, V8_WARPS_N, V8_STAGES = 128, 128, 32, 2, 4, 3
V8 = f"hgemm_v8_mma<{{T}},{V8_BM},{V8_BN},{V8_BK},{V8_WARPS_M},{V8_WARPS_N},{V8_STAGES}>"
V8_THREADS = 32 * V8_WARPS_M * V8_WARPS_N
V8_SMEM = V8_STAGES * (V8_BM * (V8_BK + 8) + V8_BK * (V8_BN + 8)) * 2  # bytes: 56832 (> 48 KB: opt-in)
V8_TYPES = {torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}
V8_KERNELS = {dt: SRC.kernel(V8.replace("{T}", ct)) for dt, ct in V8_TYPES.items()}
for _k in V8_KERNELS.values():
    _k.set_max_dynamic_shared(V8_SMEM)

# ---------------------------------------------------------------------------------------------- v8b: swizzled mma.sync
# 128x128x32, 8 warps of 64x32, 4 cp.async stages, XOR-swizzled shared memory (no padding), grouped 1-D tile order.
V8B_BM, V8B_BN, V8B_BK, V8B_WARPS_M, V8B_WARPS_N, V8B_STAGES = 128, 128, 32, 2, 4, 4
V8B = f"hgemm_v8b_mma_swizzle<{{T}},{V8B_BM},{V8B_BN},{V8B_BK},{V8B_WARPS_M},{V8B_WARPS_N},{V8B_STAGES}>"
V8B_THREADS = 32 * V8B_WARPS_M * V8B_WARPS_N
V8B_SMEM = V8B_STAGES * (V8B_BM + V8B_BN) * V8B_BK * 2  # bytes: 65536 (> 48 KB: opt-in)
V8B_KERNELS = {dt: SRC.kernel(V8B.replace("{T}", ct)) for dt, ct in V8_TYPES.items()}
for _k in V8B_KERNELS.values():
    _k.set_max_dynamic_shared(V8B_SMEM)
GRID_X_MAX = 2**31 - 1

# ------------------------------------------------------------------------------------------------ v9: wgmma + TMA
V9_BM, V9_BN, V9_BK = 128, 128, 64
V9_KERNEL = "hgemm_v9_wgmma<{T}>"
V9_DTYPES = {torch.float16: 0, torch.bfloat16: 1}  # the launcher's dtype code


def _dims(shape) -> tuple[int, int, int]:
    return int(shape["M"]), int(shape["N"]), int(shape["K"])


def _abc(inputs, out):
    # the Problem hands out contiguous tensors; .contiguous() is then a no-op that returns the same tensor
    return inputs["a"].contiguous(), inputs["b"].contiguous(), out["c"]


def _grid_check(gx: int, gy: int) -> str | None:
    if gy > GRID_Y_MAX:
        return f"grid.y = {gy} exceeds {GRID_Y_MAX}"
    return None


def _make_sgemm(rung: int, kname: str, tile: tuple[int, int], threads: int):
    k = KERNELS[kname]
    bm, bn = tile

    if rung == 1:  # v1: grid.x walks M (lanes walk rows), block (32, 32)
        def grid(M, N):
            return (_cdiv(M, 32), _cdiv(N, 32))

        block = (32, 32)
    else:
        def grid(M, N):
            return (_cdiv(N, bn), _cdiv(M, bm))

        block = (threads,)

    def fn(inputs, out, shape):
        a, b, c = _abc(inputs, out)
        M, N, K = _dims(shape)
        k(grid(M, N), block, a, b, c, M, N, K)

    def supports(shape, dtype):
        M, N, K = _dims(shape)
        if rung in SLOW_RUNGS and 2 * M * N * K > SLOW_RUNG_MAX_FLOPS:
            return f"v{rung} is a slow teaching rung: skipped above 2*4096^3 FLOPs (too slow to time)"
        return _grid_check(*grid(M, N))

    return fn, supports


def _v8(inputs, out, shape):
    a, b, c = _abc(inputs, out)
    M, N, K = _dims(shape)
    k = V8_KERNELS[a.dtype]
    k((_cdiv(N, V8_BN), _cdiv(M, V8_BM)), (V8_THREADS,), a, b, c, M, N, K, shared=V8_SMEM)


def _v8_supports(shape, dtype):
    M, N, _ = _dims(shape)
    return _grid_check(_cdiv(N, V8_BN), _cdiv(M, V8_BM))


def _v8b(inputs, out, shape):
    a, b, c = _abc(inputs, out)
    M, N, K = _dims(shape)
    tiles = _cdiv(M, V8B_BM) * _cdiv(N, V8B_BN)
    V8B_KERNELS[a.dtype]((tiles,), (V8B_THREADS,), a, b, c, M, N, K, shared=V8B_SMEM)


def _v8b_supports(shape, dtype):
    M, N, _ = _dims(shape)
    tiles = _cdiv(M, V8B_BM) * _cdiv(N, V8B_BN)
    return f"{tiles} tiles exceed grid.x = {GRID_X_MAX}" if tiles > GRID_X_MAX else None


# v9-v11 run in host mode: the .cu encodes the TMA tensor maps and launches. Loaded on first use.
_v9_lib = None
_VP, _I = ctypes.c_void_p, ctypes.c_int
SM90_LAUNCHERS = {  # exported launcher -> ctypes argument types (all return an int error code, 0 = ok)
    "launch_hgemm_v9_wgmma": [_I, _VP, _VP, _VP, _I, _I, _I, _VP],
    "launch_hgemm_v10_wgmma_ws": [_I, _VP, _VP, _VP, _I, _I, _I, _VP],
    "launch_qgemm_v11_fp8_wgmma_ws": [_VP, _VP, _VP, _VP, _VP, _I, _I, _I, _VP],
}


def _v9_library():
    global _v9_lib
    if _v9_lib is None:
        lib = SRC_SM90.library("sm_90a")
        for name, argtypes in SM90_LAUNCHERS.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, _I
        _v9_lib = lib
    return _v9_lib


def _v9(inputs, out, shape):
    a, b, c = _abc(inputs, out)
    M, N, K = _dims(shape)
    lib = _v9_library()
    stream = stream_of(c)
    err = lib.launch_hgemm_v9_wgmma(V9_DTYPES[a.dtype], ptr(a), ptr(b), ptr(c), M, N, K, stream)
    if err != 0:
        raise RuntimeError(f"launch_hgemm_v9_wgmma failed with error {err} (M={M}, N={N}, K={K})")


def _v9_supports(shape, dtype):
    reason = _sm90_reason()
    if reason:
        return reason
    M, N, K = _dims(shape)
    if K % 8 or N % 8:
        return "TMA needs 16-byte row strides: K and N must be multiples of 8"
    return _grid_check(_cdiv(N, V9_BN), _cdiv(M, V9_BM))


# ------------------------------------------------------------------------------ v10: warp-specialised wgmma (sm_90a)
# 128x256x64 tiles, 4-stage TMA ring, 1 producer + 2 consumer warpgroups (384 threads), persistent grid.
V10_BM, V10_BN, V10_BK, V10_STAGES, V10_THREADS = 128, 256, 64, 4, 384
V10_SMEM = V10_STAGES * (V10_BM + V10_BN) * V10_BK * 2 + 1024  # 197632 B (+ 1 KB to align the ring to 1024 B)
V10_KERNEL = "hgemm_v10_wgmma_ws<{T}>"
GROUP_M = 8  # cuda_src/matmul_sm90.cu sm90ws::GROUP_M (the persistent tile order)


def _sm90_reason() -> str | None:
    return gpu_arch_reason("wgmma/TMA need sm_90a (Hopper)", exact=(9, 0))


def _v10(inputs, out, shape):
    a, b, c = _abc(inputs, out)
    M, N, K = _dims(shape)
    stream = stream_of(c)
    err = _v9_library().launch_hgemm_v10_wgmma_ws(V9_DTYPES[a.dtype], ptr(a), ptr(b), ptr(c), M, N, K, stream)
    if err != 0:
        raise RuntimeError(f"launch_hgemm_v10_wgmma_ws failed with error {err} (M={M}, N={N}, K={K})")


def _v10_supports(shape, dtype):
    reason = _sm90_reason()
    if reason:
        return reason
    _, N, K = _dims(shape)
    if K % 8 or N % 8:
        return "TMA needs 16-byte row strides: K and N must be multiples of 8"
    return None  # persistent grid: no grid-size limit


# ------------------------------------------------------------------------------ v11: fp8 e4m3 wgmma (sm_90a)
# 128x128x128 tiles, 6-stage ring, same roles as v10; B is taken pre-arranged K-major (B^T contiguous: the family's
# b_t input, made outside the timed call); cuda_v11_fp8_wgmma_relayout makes it inside the call instead.
V11_BM, V11_BN, V11_BK, V11_STAGES = 128, 128, 128, 6
V11_SMEM = V11_STAGES * (V11_BM + V11_BN) * V11_BK + 1024  # 197632 B
V11_KERNEL = "qgemm_v11_fp8_wgmma_ws"


def _v11_launch(inputs, out, shape, bt):
    a, c = inputs["a"].contiguous(), out["c"]
    M, N, K = _dims(shape)
    stream = stream_of(c)
    err = _v9_library().launch_qgemm_v11_fp8_wgmma_ws(ptr(a), ptr(bt), ptr(c), ptr(inputs["a_scale"]),
                                                      ptr(inputs["b_scale"]), M, N, K, stream)
    if err != 0:
        raise RuntimeError(f"launch_qgemm_v11_fp8_wgmma_ws failed with error {err} (M={M}, N={N}, K={K})")


def _v11(inputs, out, shape):
    # fp8 wgmma reads B K-major: the pre-arranged weight layout b_t (B^T [N, K] contiguous, made by the family outside
    # the timed call, as torch_scaled_mm's column-major B is)
    _v11_launch(inputs, out, shape, inputs["b_t"])


def _v11_relayout(inputs, out, shape):
    # the same kernel for a caller holding a row-major B: the transposing copy (K·N bytes read + written) is timed
    # with the call; this record minus cuda_v11_fp8_wgmma is the cost of the layout
    _v11_launch(inputs, out, shape, inputs["b"].t().contiguous())


def _v11_supports(shape, dtype):
    reason = _sm90_reason()
    if reason:
        return reason
    _, _, K = _dims(shape)
    if K % 16:
        return "TMA needs 16-byte row strides: K (fp8 bytes per row of A and B^T) must be a multiple of 16"
    return None


def tile_order(tiles_m: int, tiles_n: int, group_m: int = GROUP_M) -> list[tuple[int, int]]:
    """The persistent kernels' tile index -> (tile row, tile column) map (sm90ws::ws_tile_coords), for tests and
    for reasoning about which panels of A and B one wave of CTAs shares."""
    out = []
    for t in range(tiles_m * tiles_n):
        per_group = group_m * tiles_n
        first_m = (t // per_group) * group_m
        rows = min(tiles_m - first_m, group_m)
        r = t % per_group
        out.append((first_m + r % rows, r // rows))
    return out


def register_cuda_variants(problem) -> None:
    """Add cuda_v1..cuda_v11 to the matmul Problem (called from harness/families/matmul.py)."""
    for rung, name, kname, tile, threads, desc in SGEMM:
        fn, sup = _make_sgemm(rung, kname, tile, threads)
        problem.add_variant(name, "cuda", fn, dtypes=("fp32",), source=SRC, kernel=kname, ladder=rung,
                            supports=sup, description=desc)
    problem.add_variant("cuda_v8_mma", "cuda", _v8, dtypes=("fp16", "bf16"), source=SRC, kernel=V8, ladder=8,
                        supports=_v8_supports,
                        description="mma.sync m16n8k16 + ldmatrix, 3-stage cp.async ring, fp32 accumulation")
    problem.add_variant("cuda_v8b_mma_swizzle", "cuda", _v8b, dtypes=("fp16", "bf16"), source=SRC, kernel=V8B,
                        ladder=8, supports=_v8b_supports,
                        description="(CPU-verified, GPU-pending) v8 with XOR-swizzled shared memory (no padding), "
                                    "4 cp.async stages, grouped tile order; portable sm_80+")
    if SRC_SM90.path.exists():
        problem.add_variant("cuda_v9_wgmma", "cuda", _v9, dtypes=("fp16", "bf16"), source=SRC_SM90,
                            kernel=V9_KERNEL, ladder=9, supports=_v9_supports,
                            description="Hopper wgmma m64nNk16 fed by TMA + mbarrier pipeline (host-mode launcher)")
        problem.add_variant("cuda_v10_wgmma_ws", "cuda", _v10, dtypes=("fp16", "bf16"), source=SRC_SM90,
                            kernel=V10_KERNEL, ladder=10, supports=_v10_supports,
                            description="(CPU-verified, GPU-pending) warp-specialised wgmma: TMA producer warpgroup "
                                        "+ 2 consumer warpgroups (setmaxnreg), 128x256x64 tiles, 4 stages, persistent "
                                        "grouped order")
        problem.add_variant("cuda_v11_fp8_wgmma", "cuda", _v11, dtypes=("fp8",), source=SRC_SM90,
                            kernel=V11_KERNEL, ladder=11, supports=_v11_supports,
                            description="(CPU-verified, GPU-pending) fp8 e4m3 wgmma (QGMMA) like v10, 128x128x128, "
                                        "fp32 promotion per k-slice overlapped with the next slice (wait_group 1), "
                                        "per-tensor scales -> bf16; B pre-arranged K-major (b_t, outside the timed "
                                        "call)")
        problem.add_variant("cuda_v11_fp8_wgmma_relayout", "cuda", _v11_relayout, dtypes=("fp8",),
                            source=SRC_SM90, kernel=V11_KERNEL, supports=_v11_supports,
                            description="(CPU-verified, GPU-pending) cuda_v11_fp8_wgmma with B made K-major inside "
                                        "the timed call: minus cuda_v11_fp8_wgmma = the cost of the weight layout")


__all__ = ["register_cuda_variants", "SRC", "SRC_SM90", "KERNELS", "V8_KERNELS", "V8B_KERNELS", "SGEMM",
           "CudaUnavailable", "tile_order"]
