"""Launchers of the ``ann`` family's CUDA variant (cuda_src/ann.cu); see that file for the kernels and their napkin
math. The coarse step is the GEMM FAISS's GPU index runs too: cuBLAS SGEMM (torch.mm, TF32 off in every worker)
for |c|² − 2x·c, then ann_select's warp selection of the nprobe nearest lists.
"""

from __future__ import annotations

import functools

import torch

from harness.registry import Shape

_SRC = None  # the CudaSource, set by register()
KBS = (32, 128)  # running-list widths: k (or k·r) up to 32, up to 128
SELECT_KBS = (32, 128, 256)  # nprobe up to 256
SMEM_OPTIN = 227 * 1024  # sm_90's opt-in per block; the device's own figure on a GPU


@functools.cache
def _kernel(name: str):
    return _SRC.kernel(name)


def _kb(n: int, widths: tuple[int, ...]) -> int | None:
    return next((w for w in widths if n <= w), None)


def smem(kind: str, kb: int, D: int, m: int = 0) -> int:
    """Dynamic shared memory of ann_select / ann_flat_scan / ann_pq_scan (the layouts in ann.cu)."""
    if kind == "select":
        return 8 * 2 * kb * 8
    lists = 8 * 2 * kb * 8 + 8 * kb * 8
    return lists + 4 * D if kind == "flat" else lists + 4 * (m * 256 + 2 * D)


def _smem_limit() -> int:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return int(getattr(props, "shared_memory_per_block_optin", SMEM_OPTIN))
    return SMEM_OPTIN


def coarse(x: torch.Tensor, cent: torch.Tensor, nprobe: int) -> torch.Tensor:
    Q, nlist = x.shape[0], cent.shape[0]
    if nprobe >= nlist:
        return torch.arange(nlist, device=x.device).expand(Q, nlist).contiguous()
    cd = ((cent * cent).sum(1)[None, :] - 2.0 * (x @ cent.T)).contiguous()
    kb = _kb(nprobe, SELECT_KBS)
    probe = torch.empty((Q, nprobe), device=x.device, dtype=torch.int64)
    k = _kernel(f"ann_select<{kb}>")
    k((-(-Q // 8),), (256,), cd, Q, nlist, nprobe, probe, shared=smem("select", kb, 0))
    return probe


def search(inputs, out, shape: Shape) -> None:
    x = inputs["x"].contiguous()
    Q, D = x.shape
    k = min(shape.k, shape.N)
    probe = coarse(x, inputs["centroids"], shape.nprobe)
    out["probe"].copy_(probe)
    off, ids = inputs["list_offsets"], inputs["list_ids"]
    if shape.pq == 0:
        vecs = inputs["list_vecs"]
        kb = _kb(k, KBS)
        vec4 = int(D % 4 == 0 and vecs.data_ptr() % 16 == 0)
        kern = _kernel(f"ann_flat_scan<{kb}>")
        kern((Q,), (256,), x, probe, off, vecs, ids, D, shape.nprobe, k, vec4, out["dist"], out["idx"],
             shared=smem("flat", kb, D))
        return
    m = shape.pq
    rr = shape.rerank > 0
    kr = min(shape.N, k * shape.rerank) if rr else k
    kb = _kb(kr, KBS)
    kern = _kernel(f"ann_pq_scan<{kb}>")
    codes, cb = inputs["list_codes"], inputs["codebooks"]
    vec = int(codes.data_ptr() % 16 == 0 and cb.data_ptr() % 16 == 0)
    kern((Q,), (256,), x, inputs["centroids"], probe, off, codes, cb, ids, inputs["base"], D, m, shape.nprobe, k, kr,
         int(rr), vec, out["dist"], out["idx"], shared=smem("pq", kb, D, m))


def supports(shape: Shape, dtype: str) -> str | None:
    k = min(shape.k, shape.N)
    if shape.nprobe < shape.nlist and shape.nprobe > SELECT_KBS[-1]:
        return f"nprobe={shape.nprobe} > {SELECT_KBS[-1]}: the coarse selection's list would not fit shared memory"
    kr = k * shape.rerank if shape.pq > 0 and shape.rerank > 0 else k
    if kr > KBS[-1]:
        return f"{kr} candidates per query > {KBS[-1]}: the running lists would not fit shared memory"
    kb = _kb(kr, KBS)
    need = smem("flat", kb, shape.D) if shape.pq == 0 else smem("pq", kb, shape.D, shape.pq)
    if need > _smem_limit():
        return f"{need / 1024:.1f} KB of shared memory > {_smem_limit() / 1024:.0f} KB per block"
    return None


KERNELS = tuple(f"ann_select<{kb}>" for kb in SELECT_KBS) + tuple(
    f"ann_{kind}_scan<{kb}>" for kind in ("flat", "pq") for kb in KBS)


def make_kernels() -> None:
    """Every Kernel of _SRC made now (at import): the CPU interpreter (harness.interp) builds one library with an
    entry point per kernel asked for, so asking for them one launch at a time would rebuild it per new kernel."""
    _kernel.cache_clear()
    for name in KERNELS:
        _kernel(name)


def register_cuda_variants(problem) -> None:
    from harness.cuda import CudaSource

    global _SRC
    _SRC = CudaSource("ann.cu")
    make_kernels()
    problem.add_variant("cuda_ivf", "cuda", search, source=_SRC, kernel=KERNELS, supports=supports, ladder=1,
                        description="(CPU-verified, GPU-pending) coarse = cuBLAS SGEMM + warp select; one CTA per "
                                    "query: flat 32-row tiles, transpose-reduced Σ(x−v)²; PQ m×256 LUT in smem per "
                                    "(query, list) + ADC; fused warp top-k, exact re-rank")
