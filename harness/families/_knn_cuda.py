"""Raw-CUDA variants of the kNN family (cuda_src/knn.cu), one rung each: v1 SIMT distances into a Q×N scratch +
block bitonic selection; v2 the tile in shared memory + warp ballot selection; v3 fp16/bf16 WMMA expansion, k+margin
candidates, warp exact re-rank + certificate; v4 fp32 as TF32 WMMA centred per CTA, WarpSelect, split-N.

``harness/families/knn.py`` owns the Problem (queries x [Q, D], base y [N, D] -> ``{"dist": [Q, k'] fp32,
"idx": [Q, k'] int64}``, k' = min(k, N), ties to the lower index) and calls :func:`register_cuda_variants`. The l2
flow around v3's and v4's kernels (query grouping, candidate count, certificate, split-N plan, fallback) is
kernels/knn_search.py's, the Triton path's too; tests/knn_emulation.py runs v4's whole flow on the CPU through this
launcher's host code.
"""

from __future__ import annotations

import functools

import torch

from harness.cuda import CUDA_TYPES, CudaSource
from harness.registry import Shape, gpu_arch_reason
from kernels.knn_search import base_slices, candidate_count, grouped_search

SRC = CudaSource("knn.cu")


@functools.cache
def _kernel(name: str):
    """One Kernel object per name: its loaded function is reused across calls (kept out of the timed path)."""
    return SRC.kernel(name)


def _k(shape: Shape) -> int:
    return min(shape.k, shape.N)  # the family's k' (k > N: N neighbours)


def _outputs(rows: int, k: int, device) -> dict[str, torch.Tensor]:
    """The family's output buffers for ``rows`` queries (a launcher's fallback writes into them)."""
    return {"dist": torch.empty((rows, k), device=device, dtype=torch.float32),
            "idx": torch.empty((rows, k), device=device, dtype=torch.int64)}


_METRIC_ID = {"l2": 0, "ip": 1, "cos": 2}


def _row_norms(inputs, shape, kernel: str):
    """fp32 per-row norm terms of x [Q, D] and y [N, D] from ``kernel`` (knn_norms: inverse norms for cos;
    knn_sqnorms: squared norms for the |x|^2 + |y|^2 - 2 x.y form)."""
    x, y = inputs["x"], inputs["y"]
    k = _kernel(f"{kernel}<{_ctype(x)}>")
    xn = torch.empty(shape.Q, device=x.device, dtype=torch.float32)
    yn = torch.empty(shape.N, device=x.device, dtype=torch.float32)
    k((-(-shape.Q // 8),), (256,), x, shape.Q, shape.D, xn)
    k((-(-shape.N // 8),), (256,), y, shape.N, shape.D, yn)
    return xn, yn


def _inv_norms(inputs, shape):
    """metric=cos: fp32 inverse row norms of x and y (the normalisation pre-pass); dummies otherwise."""
    if shape.metric != "cos":
        dummy = torch.empty(1, device=inputs["x"].device, dtype=torch.float32)
        return dummy, dummy
    return _row_norms(inputs, shape, "knn_norms")


def _ctype(t: torch.Tensor) -> str:
    return CUDA_TYPES[{torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[t.dtype]]


def _kb(k: int, floor: int) -> int:
    return max(floor, 1 << max(0, (k - 1).bit_length()))


def _cuda_v1(inputs, out, shape):
    x, y = inputs["x"].contiguous(), inputs["y"].contiguous()
    Q, N, D, k = shape.Q, shape.N, shape.D, _k(shape)
    xinv, yinv = _inv_norms(inputs, shape)
    dist_k = _kernel(f"knn_v1_dist<{_ctype(x)}>")
    sel_k = _kernel("knn_v1_select")
    kb = _kb(k, 256)
    chunk = max(64, min(Q, ((1 << 29) // N) // 64 * 64))  # scratch <= ~2 GB
    scratch = torch.empty((min(chunk, Q), N), device=x.device, dtype=torch.float32)
    for q0 in range(0, Q, chunk):
        qc = min(chunk, Q - q0)
        xq = x[q0:q0 + qc]
        xi = xinv[q0:q0 + qc] if shape.metric == "cos" else xinv
        dist_k((-(-N // 64), -(-qc // 64)), (256,), xq, y, xi, yinv, scratch, qc, N, D, _METRIC_ID[shape.metric])
        sel_k((qc,), (256,), scratch, N, k, kb, out["dist"][q0:q0 + qc], out["idx"][q0:q0 + qc], shared=2 * kb * 8)


def _cuda_v2(inputs, out, shape):
    x, y = inputs["x"].contiguous(), inputs["y"].contiguous()
    Q, N, D, k = shape.Q, shape.N, shape.D, _k(shape)
    xinv, yinv = _inv_norms(inputs, shape)
    kb = _kb(k, 64)
    kern = _kernel(f"knn_v2_fused<{_ctype(x)},{kb}>")
    smem = 32 * 2 * kb * 8 + 4 * (32 * 33 + 32 * 65 + 32 * 65)
    kern((-(-Q // 32),), (256,), x, y, xinv, yinv, out["dist"], out["idx"], Q, N, D, k, _METRIC_ID[shape.metric],
         shared=smem)


def _sq_norms(inputs, shape):
    """metric=l2 for v3: fp32 squared row norms of x and y (|x|^2 + |y|^2 - 2 x.y)."""
    return _row_norms(inputs, shape, "knn_sqnorms")


V3_MAX_D = 1024  # the query tile (32 x D, zero-padded to a multiple of 16) stays in shared memory


def _v3_smem(D: int, kb: int) -> int:
    """knn_v3_tc's dynamic shared memory (the kernel traps if it gets less): lists, query tile, base stage, dot
    tile, norms."""
    ldx = (D + 15) // 16 * 16 + 8
    return 32 * 2 * kb * 8 + (32 * ldx + 64 * 72) * 2 + (32 * 68 + 32 + 64) * 4


def v3_candidates(k: int, N: int) -> int:
    """knn_v3_tc's l2 candidate count: k + margin as in the Triton path, within the 128-key list (k near 128 leaves
    no margin: the certificate then refuses and v2 answers)."""
    return max(min(k, N), candidate_count(k, N, cap=128))


def _cuda_v3(inputs, out, shape):
    x, y = inputs["x"].contiguous(), inputs["y"].contiguous()
    Q, N, D, k = shape.Q, shape.N, shape.D, _k(shape)
    l2 = shape.metric == "l2"
    if l2:
        xn, yn = _sq_norms({"x": x, "y": y}, shape)
    else:
        xn, yn = _inv_norms({"x": x, "y": y}, shape)  # cos: inverse norms; ip: dummies
    kc = v3_candidates(k, N) if l2 else k
    kb = _kb(kc, 64)
    ok = torch.empty(Q if l2 else 1, device=x.device, dtype=torch.int32)
    vec = int(D % 8 == 0 and x.data_ptr() % 16 == 0 and y.data_ptr() % 16 == 0)  # 16-byte row loads
    kern = _kernel(f"knn_v3_tc<{_ctype(x)},{kb}>")
    kern((-(-Q // 32),), (256,), x, y, xn, yn, out["dist"], out["idx"], ok, Q, N, D, k, kc,
         _METRIC_ID[shape.metric], vec, shared=_v3_smem(D, kb))
    if l2:  # queries whose candidate margin the certificate refused: v2's direct differences (exact)
        bad = (ok == 0).nonzero()[:, 0]
        if bad.numel():
            sub = Shape({**shape, "Q": int(bad.numel())})
            o = _outputs(sub.Q, k, x.device)
            _cuda_v2({"x": x[bad].contiguous(), "y": y}, o, sub)
            out["dist"][bad], out["idx"][bad] = o["dist"], o["idx"]


def _v3_supports(shape: Shape, dtype: str) -> str | None:
    reason = _cuda_supports(128)(shape, dtype)
    if reason:
        return reason
    if shape.D > V3_MAX_D:
        return f"D={shape.D} > {V3_MAX_D}: the query tile would not fit shared memory"
    return gpu_arch_reason("bf16/fp16 WMMA path is built for sm_80+", minimum=(8, 0))


def _cuda_supports(max_k: int):
    def supports(shape: Shape, dtype: str) -> str | None:
        if _k(shape) > max_k:
            return f"k={_k(shape)} > {max_k}: the per-query lists would not fit shared memory"
        if shape.N >= 2 ** 31:
            return "indices are packed into 32 bits"
        return None

    return supports


# ---------------------------------------------------------------------------------- v4: TF32 WarpSelect
V4_MAX_D = 768  # (D + 4)·128 B of query tile: 98.8 KB at D = 768 (+ 32 KB of queues: 154 KB <= A100's 163 KB)
V4_SMEM_DEFAULT = 227 * 1024  # sm_90's opt-in per block; on a GPU the device's own figure is used
V4_BLOCKS_PER_SM = 2  # 112-116 registers x 256 threads (__launch_bounds__(256, 2)); X-rayed in tests/test_knn.py
V4_BQ = 32  # queries per CTA, each CTA centred at its own row of group_queries' centres
V4_MIN_SLICE = 1024  # base rows per split-N slice at least: 8 tiles of 128 amortise the query tile and the list write


def _v4_smem(D: int, kb: int = 32) -> int:
    """knn_v4_tf32_ws<kb>'s dynamic shared memory (the kernel traps on less): per-query queues [32][R][32] keys + kc-th
    keys, query tile, base stage (reused as the dot tile), the CTA's centre, norms. D = 128: 69.5 KB (KB = 32, 64),
    101.5 KB (KB = 128)."""
    kw, nt = v4_queue_shape(kb)
    dp = (D + 7) // 8 * 8
    return 32 * (kw + nt) * 32 * 8 + 32 * 8 + (32 * (dp + 4) + max(128 * 36, 32 * 132) + dp + 32 + 128) * 4


def v4_kb(kc: int) -> int:
    """Warp-queue width KB (32, 64 or 128 keys) for kc candidates."""
    return max(32, 1 << max(0, (kc - 1).bit_length()))


def v4_queue_shape(kb: int) -> tuple[int, int]:
    """(KW, NT) of knn_v4_tf32_ws<KB>: warp-queue registers per lane and thread-queue length (WsShape in knn.cu)."""
    kw = kb // 32
    return kw, (3 if kb == 32 else kw)


def v4_split_plan(Q: int, N: int, sms: int = 132, per_sm: int = V4_BLOCKS_PER_SM) -> tuple[int, int]:
    """(S, ns): base slices for split-N and rows per slice (a multiple of the 128-row tile; the last slice may be
    shorter). S = 1 (no split) when ceil(Q/32) CTAs already fill ~2 waves of ``sms`` x ``per_sm``; otherwise enough
    slices for ~2 waves, each at least V4_MIN_SLICE rows (kernels.knn_search.base_slices)."""
    return base_slices(-(-Q // V4_BQ), N, 128, V4_MIN_SLICE, sms * per_sm)


def _v4_smem_limit() -> int:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return int(getattr(props, "shared_memory_per_block_optin", V4_SMEM_DEFAULT))
    return V4_SMEM_DEFAULT


def _cuda_v4(inputs, out, shape):
    x, y = inputs["x"].contiguous(), inputs["y"].contiguous()
    Q, N, D, k = shape.Q, shape.N, shape.D, _k(shape)
    kc = v3_candidates(k, N)
    kb = v4_kb(kc)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 132
    S, ns = v4_split_plan(Q, N, sms)

    def search(xp, centres, res):
        ok = torch.empty(Q, device=x.device, dtype=torch.int32)
        vec = int(D % 4 == 0 and xp.data_ptr() % 16 == 0 and y.data_ptr() % 16 == 0)
        # split-N: [Q, S, KB] keys (Q = 1, S ~ 264: 67 KB); S = 1 passes a 1-key dummy the kernel never touches
        part = torch.empty((Q * S * kb) if S > 1 else 1, device=x.device, dtype=torch.int64)
        _kernel(f"knn_v4_tf32_ws<{kb}>")((-(-Q // V4_BQ), S), (256,), xp, y, centres, res["dist"], res["idx"], ok,
                                         part, Q, N, D, k, kc, vec, ns, shared=_v4_smem(D, kb))
        if S > 1:
            _kernel(f"knn_v4_merge<{kb}>")((-(-Q // 8),), (256,), xp, y, centres, part, res["dist"], res["idx"], ok,
                                           Q, N, D, k, kc, S, vec)
        return ok

    def fallback(xb):  # v2's direct differences (exact)
        sub = Shape({**shape, "Q": int(xb.shape[0])})
        o = _outputs(sub.Q, k, x.device)
        _cuda_v2({"x": xb, "y": y}, o, sub)
        return o["dist"], o["idx"]

    grouped_search(x, y, out, V4_BQ, search, fallback)


def _v4_supports(shape: Shape, dtype: str) -> str | None:
    reason = _cuda_supports(128)(shape, dtype)
    if reason:
        return reason
    if shape.metric != "l2":
        return f"metric={shape.metric}: TF32 products (2^-10) are far outside the ip/cos tie band; l2 only"
    if shape.D > V4_MAX_D:
        return f"D={shape.D} > {V4_MAX_D}: the query tile would not fit shared memory"
    reason = gpu_arch_reason("TF32 WMMA needs sm_80+", minimum=(8, 0))
    if reason:
        return reason
    kb = v4_kb(v3_candidates(_k(shape), shape.N))
    need, limit = _v4_smem(shape.D, kb), _v4_smem_limit()
    if need > limit:
        return f"D={shape.D}, KB={kb}: {need / 1024:.1f} KB of shared memory > {limit / 1024:.0f} KB per block"
    return None


def register_cuda_variants(problem) -> None:
    """The ladder's four rungs on ``problem`` (the kNN Problem of harness/families/knn.py)."""
    # rung 1 — SIMT direct differences into a Q×N scratch, block bitonic select: exact l2 as written (Σ(x−y)²)
    problem.add_variant("knn_v1_twopass", "cuda", _cuda_v1, source=SRC, ladder=1, supports=_cuda_supports(1024),
                        kernel=("knn_norms<{T}>", "knn_v1_dist<{T}>", "knn_v1_select"),
                        description="SIMT distance tiles -> Q×N fp32 scratch, then block bitonic selection")
    # rung 2 — the same tile in smem + warp ballot selection: no 2·Q·N·4 scratch bytes (~1.7x), still exact l2
    problem.add_variant("knn_v2_fused", "cuda", _cuda_v2, source=SRC, ladder=2, supports=_cuda_supports(128),
                        kernel=("knn_norms<{T}>", "knn_v2_fused<{T},64>", "knn_v2_fused<{T},128>"),
                        description="SIMT distance tile in smem + warp ballot/bitonic selection (no scratch)")
    # rung 3 — WMMA x·yᵀ expansion keeps k+margin candidates, warp exact re-rank + certificate, v2 for refusals:
    # fp16/bf16 tensor cores (~16x v2's FLOP rate) at v2's exactness
    problem.add_variant("knn_v3_tc", "cuda", _cuda_v3, dtypes=("fp16", "bf16"), source=SRC, ladder=3,
                        supports=_v3_supports,
                        kernel=("knn_norms<{T}>", "knn_sqnorms<{T}>", "knn_v3_tc<{T},64>", "knn_v3_tc<{T},128>"),
                        description="WMMA x·yᵀ tile → k+margin candidates (v2's warp selection) → exact re-rank, "
                                    "certified (v2 for refused queries)")
    # rung 4 — fp32 on tensor cores: TF32 WMMA expansion centred per CTA (queries grouped by cluster) + FAISS-style
    # WarpSelect (thread queues, register bitonic merges; queues in smem, 0 local memory, 2 blocks/SM) for kc
    # candidates, exact fp32 re-rank + certificate, v2 for refusals; split-N over base slices + knn_v4_merge when
    # Q/32 CTAs are < 2 waves (Q = 1)
    problem.add_variant("knn_v4_tf32_ws", "cuda", _cuda_v4, dtypes=("fp32",), source=SRC, ladder=4,
                        supports=_v4_supports, compute_dtype="tf32",
                        kernel=("knn_v4_tf32_ws<32>", "knn_v4_tf32_ws<64>", "knn_v4_tf32_ws<128>",
                                "knn_v4_merge<32>", "knn_v4_merge<64>", "knn_v4_merge<128>"),
                        description="(CPU-verified, GPU-pending) queries grouped by cluster, each CTA centred at its "
                                    "32 queries' mean (norms in-kernel); TF32 WMMA x'·y'ᵀ tile in smem → WarpSelect "
                                    "(thread queues + register bitonic merge, no local memory, 2 blocks/SM) keeps "
                                    "k+margin → exact fp32 re-rank, certified (v2 for refused queries); split-N base "
                                    "slices + merge kernel when Q/32 CTAs < 2 waves; l2 only")
