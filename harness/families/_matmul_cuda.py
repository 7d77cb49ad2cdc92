"""Raw-CUDA variants of the matmul family: the SGEMM ladder (v1-v7, fp32), mma.sync (v8, fp16/bf16) and, on
Hopper, wgmma + TMA (v9, bf16/fp16, host mode).

``harness/families/matmul.py`` owns the Problem (C[M,N] = A[M,K] @ B[K,N], row-major contiguous, inputs
``{"a": A, "b": B}``, output ``{"c": C}`` in the input dtype) and calls :func:`register_cuda_variants`.

Kernel objects are created once at import (no GPU needed: nvcc runs lazily on the first launch or resource query).
Tile sizes live here and in the kernel names; they were chosen so that ptxas reports zero spill bytes on sm_80 and
sm_90 (tests/test_matmul_cuda.py checks it).
"""

from __future__ import annotations

import torch

from harness.cuda import CudaSource, CudaUnavailable, ptr

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


# v9 runs in host mode: the .cu encodes the TMA tensor maps and launches. Loaded on first use.
_v9_lib = None


def _v9_library():
    global _v9_lib
    if _v9_lib is None:
        import ctypes

        lib = SRC_SM90.library("sm_90a")
        lib.launch_hgemm_v9_wgmma.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                              ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        lib.launch_hgemm_v9_wgmma.restype = ctypes.c_int
        _v9_lib = lib
    return _v9_lib


def _v9(inputs, out, shape):
    a, b, c = _abc(inputs, out)
    M, N, K = _dims(shape)
    lib = _v9_library()
    stream = torch.cuda.current_stream().cuda_stream
    err = lib.launch_hgemm_v9_wgmma(V9_DTYPES[a.dtype], ptr(a), ptr(b), ptr(c), M, N, K, stream)
    if err != 0:
        raise RuntimeError(f"launch_hgemm_v9_wgmma failed with error {err} (M={M}, N={N}, K={K})")


def _v9_supports(shape, dtype):
    if not torch.cuda.is_available():
        return None  # no GPU: the runner only compiles (status "compiled")
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) != (9, 0):
        return f"wgmma/TMA need sm_90a (Hopper); this GPU is sm_{major}{minor}"
    M, N, K = _dims(shape)
    if K % 8 or N % 8:
        return "TMA needs 16-byte row strides: K and N must be multiples of 8"
    return _grid_check(_cdiv(N, V9_BN), _cdiv(M, V9_BM))


def register_cuda_variants(problem) -> None:
    """Add cuda_v1..cuda_v9 to the matmul Problem (called from harness/families/matmul.py)."""
    for rung, name, kname, tile, threads, desc in SGEMM:
        fn, sup = _make_sgemm(rung, kname, tile, threads)
        problem.add_variant(name, "cuda", fn, dtypes=("fp32",), source=SRC, kernel=kname, ladder=rung,
                            supports=sup, description=desc)
    problem.add_variant("cuda_v8_mma", "cuda", _v8, dtypes=("fp16", "bf16"), source=SRC, kernel=V8, ladder=8,
                        supports=_v8_supports,
                        description="mma.sync m16n8k16 + ldmatrix, 3-stage cp.async ring, fp32 accumulation")
    if SRC_SM90.path.exists():
        problem.add_variant("cuda_v9_wgmma", "cuda", _v9, dtypes=("fp16", "bf16"), source=SRC_SM90,
                            kernel=V9_KERNEL, ladder=9, supports=_v9_supports,
                            description="Hopper wgmma m64nNk16 fed by TMA + mbarrier pipeline (host-mode launcher)")


__all__ = ["register_cuda_variants", "SRC", "SRC_SM90", "KERNELS", "V8_KERNELS", "SGEMM", "CudaUnavailable"]
