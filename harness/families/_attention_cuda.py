"""Raw-CUDA variants of the attention families (cuda_src/attention.cu): a SIMT FlashAttention (v1), the
tensor-core FlashAttention-2 forward (v2, mma.sync m16n8k16), the Hopper FA3-style forward (v3: TMA + wgmma,
producer/consumer warpgroups; sm_90a, host mode, CPU-verified, GPU-pending) and flash-decoding (split-K + LSE
combine).

``harness/families/attention.py`` owns both Problems and calls :func:`register_cuda_variants`:

* ``attention`` (prefill): ``q`` [B, H, Nq, D], ``k``/``v`` [B, Hkv, Nkv, D] contiguous fp16/bf16, option ``causal``
  (bottom-right aligned), scale 1/sqrt(D); outputs ``o`` [B, H, Nq, D] (input dtype) and ``lse`` [B, H, Nq] fp32.
* ``attention_decode``: the same plus ``seqlens`` int32 [B] (valid cache prefix), Nq = 1..4, no causal mask.

Every kernel is a template on the storage type and the head dimension (64 or 128); all instantiations are listed up
front in :data:`SRC` so that nvcc runs once per arch (~15 s) instead of once per newly requested kernel. fp32 inputs
are not supported (the kernels are written for 16-bit inputs: mma.sync takes fp16/bf16 operands) and other head dims
are not instantiated: both return a skip reason.
"""

from __future__ import annotations

import ctypes
import math

import torch

from harness.cuda import CudaSource, ptr, stream_of
from harness.registry import gpu_arch_reason

HEAD_DIMS = (64, 128)
CTYPES = {torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}
DTYPES_16 = ("fp16", "bf16")
LOG2E = 1.4426950408889634

# launch geometry: must match the constants in attention.cu
V1_ROWS = 16  # V1_WARPS * V1_R query rows per block, 128 threads
V2_BM = 64  # 4 warps x 16 query rows, 128 threads
THREADS = 128
DEC_WARPS = 4
DEC_R = (1, 2, 4)  # rows per warp instantiated for decode: a block serves DEC_WARPS * R (head, query) rows
DEC_MIN_SPLIT = 128  # keys: below this a split is mostly launch and combine overhead
DEC_MAX_SPLITS = 64
DEC_BLOCKS_PER_SM = 4  # target resident decode blocks per SM (41 KB smem each at D = 128: 5 fit on H100)

V1 = "attn_v1_tiled<{T}, %d>"
V2 = "attn_v2_mma<{T}, %d>"
DEC = "decode_v1_splitk<{T}, %d, %d>"
COMB = "decode_v1_combine<{T}, %d>"

V1_KERNELS = tuple(V1 % d for d in HEAD_DIMS)
V2_KERNELS = tuple(V2 % d for d in HEAD_DIMS)
DEC_KERNELS = tuple(DEC % (d, r) for d in HEAD_DIMS for r in DEC_R) + tuple(COMB % d for d in HEAD_DIMS)
ALL_KERNELS = tuple(n.replace("{T}", ct) for ct in CTYPES.values()
                    for n in V1_KERNELS + V2_KERNELS + DEC_KERNELS)

SRC = CudaSource("attention.cu", instantiate=list(ALL_KERNELS))

# v3 (sm_90a only): host mode — the .cu encodes the TMA tensor maps and launches (launch_attn_v3_wgmma); the same file
# as a second source restricted to sm_90a, so that wgmma/setmaxnreg never meet an sm_80/sm_90 build.
V3 = "attn_v3_wgmma<{T}, %d>"
V3_KERNELS = tuple(V3 % d for d in HEAD_DIMS)
V3_ALL = tuple(n.replace("{T}", ct) for ct in CTYPES.values() for n in V3_KERNELS)
V3_ROWS, V3_BN, V3_THREADS = 128, 128, 384  # attn90::ROWS (2 consumer warpgroups x 64), BN, 1 + 2 warpgroups
SRC_SM90 = CudaSource("attention.cu", archs=("sm_90a",), instantiate=list(V3_ALL))
_v3_lib = None
_KERNELS: dict = {}


def kernel(name: str, dtype: torch.dtype):
    """The launchable kernel ``name`` ("attn_v2_mma<{T}, 128>") for a torch dtype; created once, compiled lazily."""
    full = name.replace("{T}", CTYPES[dtype])
    k = _KERNELS.get(full)
    if k is None:
        k = _KERNELS[full] = SRC.kernel(full)
    return k


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _supports(shape, dtype):
    if dtype not in DTYPES_16:
        return f"{dtype} not supported: the CUDA attention kernels take fp16/bf16 inputs only (mma.sync operands)"
    if shape["D"] not in HEAD_DIMS:
        return f"head dim D={shape['D']} not instantiated (attention.cu has D in {HEAD_DIMS})"
    if shape["H"] % shape["Hkv"]:
        return f"Hkv={shape['Hkv']} must divide H={shape['H']}"
    return None


def _qkv_out(inputs, out):
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    o, lse = out["o"], out["lse"]
    for name, t in (("q", q), ("k", k), ("v", v), ("o", o), ("lse", lse)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
        if t.data_ptr() % 16:
            raise ValueError(f"{name} must be 16-byte aligned (the kernels move rows with 16-byte loads/stores)")
    if q.dtype not in CTYPES or k.dtype != q.dtype or v.dtype != q.dtype or o.dtype != q.dtype:
        raise ValueError(f"q/k/v/o must share one 16-bit dtype, got {q.dtype}, {k.dtype}, {v.dtype}, {o.dtype}")
    if lse.dtype != torch.float32:
        raise ValueError("lse must be float32")
    return q, k, v, o, lse


def _dims(q, k):
    B, H, Nq, D = q.shape
    Hkv, Nkv = k.shape[1], k.shape[2]
    if H % Hkv:
        raise ValueError(f"Hkv={Hkv} must divide H={H}")
    if D not in HEAD_DIMS:
        raise ValueError(f"head dim {D} not instantiated ({HEAD_DIMS})")
    if B > 65535 or H > 65535:
        raise ValueError("B and H must be <= 65535 (grid.z / grid.y)")
    return B, H, Hkv, Nq, Nkv, D


# ------------------------------------------------------------------------------------------------ prefill
def _make_prefill(template: str, rows_per_block: int):
    def fn(inputs, out, shape):
        q, k, v, o, lse = _qkv_out(inputs, out)
        B, H, Hkv, Nq, Nkv, D = _dims(q, k)
        causal = bool(shape.get("causal", False))
        scale_log2 = LOG2E / math.sqrt(D)
        kern = kernel(template % D, q.dtype)
        kern((_cdiv(Nq, rows_per_block), H, B), THREADS, q, k, v, o, lse, H, Hkv, Nq, Nkv, int(causal), scale_log2)

    return fn


cuda_v1_tiled = _make_prefill(V1, V1_ROWS)
cuda_v2_mma = _make_prefill(V2, V2_BM)


def _v3_library():
    global _v3_lib
    if _v3_lib is None:
        lib = SRC_SM90.library("sm_90a")
        fn = lib.launch_attn_v3_wgmma
        vp, i = ctypes.c_void_p, ctypes.c_int
        fn.argtypes = [i, vp, vp, vp, vp, vp, i, i, i, i, i, i, i, ctypes.c_float, vp]
        fn.restype = i
        _v3_lib = lib
    return _v3_lib


def cuda_v3_wgmma(inputs, out, shape):
    q, k, v, o, lse = _qkv_out(inputs, out)
    B, H, Hkv, Nq, Nkv, D = _dims(q, k)
    causal = bool(shape.get("causal", False))
    stream = stream_of(q)
    err = _v3_library().launch_attn_v3_wgmma(0 if q.dtype == torch.float16 else 1, ptr(q), ptr(k), ptr(v), ptr(o),
                                             ptr(lse), B, H, Hkv, Nq, Nkv, D, int(causal), LOG2E / math.sqrt(D),
                                             stream)
    if err != 0:
        raise RuntimeError(f"launch_attn_v3_wgmma failed with error {err} ({dict(shape)})")


def _supports_v3(shape, dtype):
    reason = _supports(shape, dtype)
    if reason:
        return reason
    if min(shape["Nq"], shape["Nkv"]) < 1:
        return "Nq and Nkv must be >= 1 (TMA tensor maps have no empty dimension)"
    return gpu_arch_reason("wgmma/TMA need sm_90a (Hopper)", exact=(9, 0))


# ------------------------------------------------------------------------------------------------ decode
def decode_plan(B: int, H: int, Hkv: int, Nq: int, Nkv: int, sm_count: int, num_splits: int | None = None):
    """(R, row groups per kv head, num_splits, split_len) for decode_v1_splitk.

    R (rows per warp) is the smallest instantiation that holds the G*Nq (head, query) rows of a kv head in one block
    (beyond 16 rows, several row groups each re-read the slice, from L2). num_splits brings the grid to about
    DEC_BLOCKS_PER_SM blocks per SM, with at least DEC_MIN_SPLIT keys per split; split_len is a multiple of the
    32-key tile.
    """
    rows = (H // Hkv) * Nq
    R = next((r for r in DEC_R if rows <= DEC_WARPS * r), DEC_R[-1])
    n_rg = _cdiv(rows, DEC_WARPS * R)
    if num_splits is None:
        base = B * Hkv * n_rg
        num_splits = _cdiv(DEC_BLOCKS_PER_SM * sm_count, base)
        num_splits = max(1, min(num_splits, DEC_MAX_SPLITS, Nkv // DEC_MIN_SPLIT))
    split_len = _cdiv(_cdiv(Nkv, num_splits), 32) * 32
    num_splits = _cdiv(Nkv, split_len)  # no split that starts past the cache
    return R, n_rg, num_splits, split_len


_SM_COUNT: dict = {}


def _sm_count(device) -> int:
    if device.type != "cuda":
        return 132  # the CPU interpreter: plan the split as on an H100 (the interpreter reports H100 limits)
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def cuda_decode_splitk(inputs, out, shape, num_splits: int | None = None):
    q, k, v, o, lse = _qkv_out(inputs, out)
    B, H, Hkv, Nq, Nkv, D = _dims(q, k)
    seqlens = inputs["seqlens"]
    if seqlens.dtype != torch.int32 or not seqlens.is_contiguous():
        seqlens = seqlens.to(torch.int32).contiguous()
    R, n_rg, S, split_len = decode_plan(B, H, Hkv, Nq, Nkv, _sm_count(q.device), num_splits)
    if Hkv * n_rg > 65535:
        raise ValueError("Hkv * row groups must be <= 65535 (grid.y)")
    rows = B * H * Nq
    # fp32 partials: S*(D+2)*4 bytes per output row (at S = 5, D = 128: 2.6 KB against 2*Nkv*D*2/G cache bytes)
    o_part = torch.empty(rows * S * D, device=q.device, dtype=torch.float32)
    m_part = torch.empty(rows * S, device=q.device, dtype=torch.float32)
    l_part = torch.empty(rows * S, device=q.device, dtype=torch.float32)
    scale_log2 = LOG2E / math.sqrt(D)
    kernel(DEC % (D, R), q.dtype)((S, Hkv * n_rg, B), DEC_WARPS * 32, q, k, v, seqlens, o_part, m_part, l_part,
                                  H, Hkv, Nq, Nkv, split_len, scale_log2)
    kernel(COMB % D, q.dtype)((rows,), D, o_part, m_part, l_part, o, lse, S)


# ------------------------------------------------------------------------------------------------ registration
def register_cuda_variants(prefill, decode) -> None:
    d16 = tuple(d for d in prefill.dtypes if d in DTYPES_16)
    prefill.add_variant(
        "cuda_v1_tiled", "cuda", cuda_v1_tiled, dtypes=d16, source=SRC, kernel=V1_KERNELS, ladder=1,
        supports=_supports,
        description="FlashAttention on CUDA cores: 16 query rows x 32-key K/V tiles in fp32 smem, lane per key, "
                    "online softmax; S/P never leave the SM, but fp32 FMA (<= 67 TF) and smem-bound")
    prefill.add_variant(
        "cuda_v2_mma", "cuda", cuda_v2_mma, dtypes=d16, source=SRC, kernel=V2_KERNELS, ladder=2,
        supports=_supports,
        description="FlashAttention-2 on tensor cores: mma.sync m16n8k16, warp per 16 rows, Q and P in registers, "
                    "ldmatrix(.trans) from XOR-swizzled smem, cp.async V/K prefetch under QK^T/PV")
    prefill.add_variant(
        "cuda_v3_wgmma", "cuda", cuda_v3_wgmma, dtypes=d16, source=SRC_SM90, kernel=V3_KERNELS, ladder=3,
        supports=_supports_v3,
        description="(CPU-verified, GPU-pending) FA3-style Hopper forward: producer warpgroup streams K/V by TMA "
                    "into a 2-3 stage mbarrier ring, 2 consumer warpgroups x 64 rows run S=QK^T (wgmma, smem "
                    "operands), online softmax in registers, O+=PV (wgmma, P register-sourced); setmaxnreg 24/240; "
                    "sm_90a")
    decode.add_variant(
        "cuda_decode_splitk", "cuda", cuda_decode_splitk, dtypes=tuple(d for d in decode.dtypes if d in DTYPES_16),
        source=SRC, kernel=DEC_KERNELS, ladder=1, supports=_supports,
        description="flash-decoding: cache split over ~4 blocks/SM, a block serves every GQA head x query of its kv "
                    "head (cache read once), fp32 partials merged by an LSE combine kernel")
