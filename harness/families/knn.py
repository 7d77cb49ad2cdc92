"""Exact k-nearest-neighbour search ("distance search"): queries x [Q, D], base y [N, D] -> the k nearest base rows.

Outputs ``{"dist": [Q, k'] float32 ascending, "idx": [Q, k'] int64}`` with ``k' = min(k, N)`` (the k > N rule: fewer
neighbours, never an error). Distances, smaller = nearer, accumulated in fp32:

* ``metric=l2``  squared L2 ``‖x − y‖²``;
* ``metric=ip``  ``−x·y`` (maximum inner product as a minimum);
* ``metric=cos`` ``1 − cos(x, y)``; kernels normalise *fused* (norms summed in-kernel, no normalised copy).

Ties: equal distances resolve to the LOWER base index, in the reference and every kernel variant.

Options: ``dups=1`` builds the deliberate-ties data set (values on a 1/8 grid, so every correct kernel computes
distances *exactly* in fp32/fp16/bf16 and the float64 reference equals them bit for bit; plus a quarter of the base
rows are copies of other rows): the check then demands the exact reference indices, which tests the lower-index
tie rule. ``base_rows=N'`` (> 0) makes the chunked-base variants process the base N' rows at a time.

Check (``check_knn``), per query q with the float64 reference on exactly the inputs given (fp16/bf16 upcast):
``tol_q = 32·√D·2⁻²⁴·s_q`` (fp32 accumulation, with ``s_q = (‖x_q‖ + max‖y‖)²`` for l2, ``‖x_q‖·max‖y‖`` for ip and
1 for cos) — a TF32 downcast (2⁻¹¹) is ~250× outside it. Position p passes when ``idx[p] == ref_idx[p]``, or when the
reference distance of the returned row is within ``tol_q`` of the reference distance at rank p (a near-tie swap
inside fp32 rounding) and not *exactly* equal to it (exact ties must follow the index order). Indices must be in
range and distinct per query, every distance within ``tol_q`` of the reference distance of the returned row, and
the list ascending; NaN (unwritten, poisoned) fails. ``extra["recall"]`` = |returned ∩ reference top-k| / (Q·k').
"""

from __future__ import annotations

import functools
import math

import torch

from harness.check import CheckResult
from harness.registry import DTYPE_SIZE, DTYPES, Problem, Shape, interpreter, register

METRICS = ("l2", "ip", "cos")


def k_eff(shape: Shape) -> int:
    return min(shape.k, shape.N)


def _validate(shape: Shape) -> None:
    if shape.metric not in METRICS:
        raise ValueError(f"knn: metric must be one of {METRICS}, got {shape.metric!r}")


def make_inputs(shape: Shape, dtype: str, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    _validate(shape)
    g = torch.Generator(device=device).manual_seed(seed)
    Q, N, D = shape.Q, shape.N, shape.D
    if shape.dups:
        # values ±{1..16}/8: exact in bf16, products and sums exact in fp32 -> exact, comparable ties
        def grid(rows):
            mag = torch.randint(1, 17, (rows, D), generator=g, device=device).float() / 8
            sgn = torch.randint(0, 2, (rows, D), generator=g, device=device).float() * 2 - 1
            return mag * sgn

        x, y = grid(Q), grid(N)
        if N > 1:
            n_dup = max(1, N // 4)
            src = torch.randint(0, N, (n_dup,), generator=g, device=device)
            dst = torch.randint(0, N, (n_dup,), generator=g, device=device)
            y[dst] = y[src]  # copies in both directions: the duplicate may sit below or above the original
            x[: min(Q, n_dup)] = y[src[: min(Q, n_dup)]]  # some queries equal a duplicated base row (distance 0)
    else:
        x = torch.randn((Q, D), generator=g, device=device)
        y = torch.randn((N, D), generator=g, device=device)
    return {"x": x.to(DTYPES[dtype]), "y": y.to(DTYPES[dtype])}


def make_outputs(shape: Shape, dtype: str, device: torch.device) -> dict[str, torch.Tensor]:
    k = k_eff(shape)
    return {"dist": torch.empty((shape.Q, k), device=device, dtype=torch.float32),
            "idx": torch.empty((shape.Q, k), device=device, dtype=torch.int64)}


def _dist64(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 distances [q, n] (x, y already float64)."""
    if metric == "l2":
        return (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    if metric == "ip":
        return -(x @ y.T)
    return 1.0 - (x @ y.T) / (x.norm(dim=1)[:, None] * y.norm(dim=1)[None, :])


def _pair_dist64(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 distance of query q to base row idx[q, p] (same formula as _dist64), [Q, k]."""
    yg = y[idx]  # [Q, k, D]
    dot = (x[:, None, :] * yg).sum(-1)
    if metric == "l2":
        return (x * x).sum(1)[:, None] + (yg * yg).sum(-1) - 2.0 * dot
    if metric == "ip":
        return -dot
    return 1.0 - dot / (x.norm(dim=1)[:, None] * yg.norm(dim=-1))


def reference(inputs: dict[str, torch.Tensor], shape: Shape, dtype: str) -> dict[str, torch.Tensor]:
    """float64 brute force in query chunks (the Q×N float64 matrix of the headline shape would be 80 GB), ordered
    lexicographically by (distance, index)."""
    x, y = inputs["x"].double(), inputs["y"].double()
    N, k = shape.N, k_eff(shape)
    k2 = min(N, 2 * k + 16)  # candidates beyond k so a tie group straddling rank k is ordered by index
    chunk = max(1, min(shape.Q, (1 << 27) // N))
    dists, idxs = [], []
    for q0 in range(0, shape.Q, chunk):
        d = _dist64(x[q0:q0 + chunk], y, shape.metric)
        cv, ci = torch.topk(d, k2, dim=1, largest=False, sorted=True)
        # rows whose tie group at rank k may reach past the k2 candidates: full stable sort (index order)
        full = (d <= cv[:, k - 1:k]).sum(1) > k2 if k2 < N else torch.zeros(d.shape[0], dtype=torch.bool,
                                                                                  device=d.device)
        o = torch.argsort(ci, dim=1)  # index order, then a stable sort by distance = lexicographic
        ci, cv = ci.gather(1, o), cv.gather(1, o)
        o = torch.sort(cv, dim=1, stable=True).indices
        ci, cv = ci.gather(1, o)[:, :k], cv.gather(1, o)[:, :k]
        if bool(full.any()):
            rows = full.nonzero()[:, 0]
            sv, si = torch.sort(d[rows], dim=1, stable=True)
            cv[rows], ci[rows] = sv[:, :k], si[:, :k]
        dists.append(cv)
        idxs.append(ci)
    return {"dist": torch.cat(dists), "idx": torch.cat(idxs)}


def tolerance_per_query(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """fp32 accumulation tolerance tol_q (float64 [Q]); see the module docstring."""
    D = x.shape[1]
    xn = x.norm(dim=1)
    ymax = y.norm(dim=1).max()
    scale = (xn + ymax) ** 2 if metric == "l2" else (xn * ymax if metric == "ip" else torch.ones_like(xn))
    return 32.0 * math.sqrt(D) * 2.0 ** -24 * scale + 1e-30


def check_knn(out, ref, inputs, shape: Shape, dtype: str, tol=None) -> CheckResult:
    if not isinstance(out, dict) or "dist" not in out or "idx" not in out:
        return CheckResult(False, message=f"variant returned {type(out).__name__}, expected {{'dist', 'idx'}}")
    Q, N, k = shape.Q, shape.N, k_eff(shape)
    dist, idx = out["dist"], out["idx"]
    for name, t, dt in (("dist", dist, torch.float32), ("idx", idx, torch.int64)):
        if not isinstance(t, torch.Tensor):
            return CheckResult(False, message=f"{name}: variant returned {type(t).__name__}, expected a tensor")
        if tuple(t.shape) != (Q, k):
            return CheckResult(False, message=f"{name}: shape {tuple(t.shape)} != expected {(Q, k)} (k' = min(k, N))")
        if t.dtype != dt:
            return CheckResult(False, message=f"{name}: dtype {t.dtype} != expected {dt}")
    dev = ref["dist"].device
    dist, idx = dist.detach().to(dev).double(), idx.detach().to(dev)
    r_d, r_i = ref["dist"].to(dev), ref["idx"].to(dev)
    if not bool(torch.isfinite(dist).all()):
        n = int((~torch.isfinite(dist)).sum())
        return CheckResult(False, float("nan"), None, f"dist: {n} NaN/Inf of {dist.numel()} (unwritten?)")
    bad_range = (idx < 0) | (idx >= N)
    if bool(bad_range.any()):
        q, p = bad_range.nonzero()[0].tolist()
        return CheckResult(False, 1.0, None, f"idx: {int(bad_range.sum())} indices outside [0, {N}); first at "
                                             f"({q}, {p}) = {int(idx[q, p])} (unwritten?)")
    s = torch.sort(idx, dim=1).values
    if k > 1 and bool((s[:, 1:] == s[:, :-1]).any()):
        q = int((s[:, 1:] == s[:, :-1]).any(1).nonzero()[0, 0])
        return CheckResult(False, 1.0, None, f"idx: query {q} returns a base row twice: {idx[q].tolist()[:16]}")
    x, y = inputs["x"].to(dev).double(), inputs["y"].to(dev).double()
    tol_q = tolerance_per_query(x, y, shape.metric)[:, None]
    d_ret = _pair_dist64(x, y, idx, shape.metric)  # reference distance of each returned row
    recall = float((idx[:, :, None] == r_i[:, None, :]).any(2).double().mean())
    rel = float(torch.linalg.vector_norm(dist - r_d) / max(float(torch.linalg.vector_norm(r_d)), 1e-300))
    max_abs = float((dist - r_d).abs().max()) if dist.numel() else 0.0
    extra = {"recall": recall}

    def fail(mask: torch.Tensor, what: str) -> CheckResult:
        q, p = mask.nonzero()[0].tolist()
        return CheckResult(False, rel, max_abs, f"{int(mask.sum())} of {mask.numel()} {what}; first at ({q}, {p}): "
                                               f"got idx {int(idx[q, p])} dist {float(dist[q, p]):.9g}, want idx "
                                               f"{int(r_i[q, p])} dist {float(r_d[q, p]):.9g} "
                                               f"(tol {float(tol_q[q]):.3g}, recall {recall:.4f})", extra)

    same = idx == r_i
    near = (d_ret - r_d).abs() <= tol_q
    exact_tie = d_ret == r_d
    pos_bad = ~same & (~near | exact_tie)
    if bool(pos_bad.any()):
        return fail(pos_bad, "positions hold the wrong row (not a near-tie within fp32 rounding; exact ties must go "
                             "to the lower index)")
    d_bad = (dist - d_ret).abs() > tol_q
    if bool(d_bad.any()):
        return fail(d_bad, "distances outside tol_q of the reference distance of the returned row")
    if k > 1 and bool((dist[:, 1:] < dist[:, :-1]).any()):
        m = torch.zeros_like(same)
        m[:, 1:] = dist[:, 1:] < dist[:, :-1]
        return fail(m, "distances not ascending")
    return CheckResult(True, rel, max_abs, "", extra)


def flops(shape: Shape) -> float:
    return 2.0 * shape.Q * shape.N * shape.D


def min_bytes(shape: Shape, dtype: str) -> float:
    return (shape.N + shape.Q) * shape.D * DTYPE_SIZE[dtype] + shape.Q * k_eff(shape) * (4 + 8)


def extra_metrics(shape: Shape, median_ms: float) -> dict[str, float]:
    return {"qps": shape.Q / (median_ms * 1e-3)} if median_ms and median_ms > 0 else {}


PROBLEM = register(Problem(
    name="knn",
    dims=("Q", "N", "D", "k"),
    dtypes=("fp32", "fp16", "bf16"),
    make_inputs=make_inputs,
    make_outputs=make_outputs,
    reference=reference,
    flops=flops,
    min_bytes=min_bytes,
    options={"metric": "l2", "dups": False, "base_rows": 0},
    check=check_knn,
    extra_metrics=extra_metrics,
    description="exact kNN: fused distance tiles + running top-k (l2 | ip | cos), ties to the lower index",
    shapes=[
        Shape(Q=10000, N=1000000, D=128, k=10, metric="l2", dups=False, base_rows=0),  # headline (SIFT1M-like)
        *[Shape(Q=4096, N=100000, D=d, k=10, metric="l2", dups=False, base_rows=0) for d in (32, 64, 100, 256)],
        Shape(Q=1024, N=100000, D=768, k=10, metric="l2", dups=False, base_rows=0),
        Shape(Q=4096, N=100000, D=128, k=1, metric="l2", dups=False, base_rows=0),
        Shape(Q=4096, N=100000, D=128, k=100, metric="l2", dups=False, base_rows=0),
        Shape(Q=1024, N=100000, D=128, k=1024, metric="l2", dups=False, base_rows=0),
        Shape(Q=4096, N=100000, D=128, k=10, metric="ip", dups=False, base_rows=0),
        Shape(Q=4096, N=100000, D=128, k=10, metric="cos", dups=False, base_rows=0),
        Shape(Q=1024, N=100000, D=64, k=16, metric="l2", dups=True, base_rows=0),
    ],
    quick=[
        Shape(Q=5, N=300, D=33, k=1, metric="l2", dups=False, base_rows=0),
        Shape(Q=5, N=300, D=33, k=7, metric="l2", dups=False, base_rows=0),
        Shape(Q=5, N=300, D=33, k=16, metric="ip", dups=False, base_rows=0),
        Shape(Q=5, N=300, D=33, k=7, metric="cos", dups=False, base_rows=0),
        Shape(Q=3, N=5, D=33, k=7, metric="l2", dups=False, base_rows=0),  # k > N: returns min(k, N) = 5
        Shape(Q=5, N=300, D=33, k=16, metric="l2", dups=True, base_rows=0),  # exact ties -> lower index
        Shape(Q=5, N=300, D=33, k=7, metric="l2", dups=False, base_rows=128),  # chunked base
    ],
))


# ------------------------------------------------------------------------------------------------ Triton variants
def _triton(merge: str = "auto", precision: str = "ieee", chunked: bool = False):
    def fn(inputs, out, shape):
        from kernels.knn import knn

        base_rows = shape.base_rows
        if chunked and not base_rows:
            base_rows = max(1, -(-shape.N // 4))  # no size given: four chunks, to exercise the path
        knn(inputs["x"], inputs["y"], shape.k, shape.metric, base_rows=base_rows if chunked else 0, merge=merge,
            precision=precision, out=out)

    return fn


def _triton_supports(max_k: int, sort_merge: bool = False):
    def supports(shape: Shape, dtype: str) -> str | None:
        if dtype == "bf16" and interpreter():
            return "bf16 tl.dot is wrong under TRITON_INTERPRET; checked on GPU"
        if sort_merge and interpreter():
            return "tl.sort takes seconds per tile under TRITON_INTERPRET; tests/test_knn.py runs it on a tiny shape"
        if k_eff(shape) > max_k:
            return f"k={k_eff(shape)} > {max_k} not supported by this merge strategy"
        return None

    return supports


PROBLEM.add_variant("triton_fused", "triton", _triton(), supports=_triton_supports(512),
                    description="fused tl.dot distances + register top-k (replace-max k<=128, sort-merge above)")
PROBLEM.add_variant("triton_sortmerge", "triton", _triton(merge="sort"),
                    supports=_triton_supports(512, sort_merge=True),
                    description="fused distances + bitonic sort-merge of running top-k with each tile")
PROBLEM.add_variant("triton_tf32x3", "triton", _triton(precision="tf32x3"), dtypes=("fp32",), compute_dtype="tf32",
                    supports=_triton_supports(512),
                    description="triton_fused with split-TF32 (3 tensor-core passes) instead of FMA for fp32")
PROBLEM.add_variant("triton_chunked", "triton", _triton(chunked=True), supports=_triton_supports(512),
                    description="triton_fused over base chunks of base_rows rows (N/4 if 0), running top-k merge")


# ------------------------------------------------------------------------------------------------ baselines
def _stable_topk(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk's order among equal values is unspecified: take a margin of candidates, then order them by
    (distance, index) with two stable sorts, so the baselines obey the lower-index tie rule too (a tie group wider
    than the margin at rank k could still pick a higher index: only possible with > k+16 equal distances)."""
    k2 = min(d.shape[1], 2 * k + 16)
    v, i = torch.topk(d, k2, dim=1, largest=False, sorted=False)
    o = torch.argsort(i, dim=1)
    i, v = i.gather(1, o), v.gather(1, o)
    o = torch.sort(v, dim=1, stable=True).indices[:, :k]
    return v.gather(1, o).float().contiguous(), i.gather(1, o).contiguous()


def _torch_dist(x: torch.Tensor, y: torch.Tensor, metric: str, mm: bool) -> torch.Tensor:
    x, y = x.float(), y.float()
    if metric == "l2":
        if mm:
            return (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
        return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    if metric == "ip":
        return -(x @ y.T)
    return 1.0 - torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(y, dim=1).T


def _torch_baseline(mm: bool):
    def fn(inputs, out, shape):
        x, y, k = inputs["x"], inputs["y"], k_eff(shape)
        # query chunks keep the fp32 Q×N matrix under ~4 GB (the headline's is 40 GB)
        chunk = max(1, min(shape.Q, (1 << 30) // shape.N))
        ds, is_ = [], []
        for q0 in range(0, shape.Q, chunk):
            d, i = _stable_topk(_torch_dist(x[q0:q0 + chunk], y, shape.metric, mm), k)
            ds.append(d)
            is_.append(i)
        return {"dist": torch.cat(ds), "idx": torch.cat(is_)}

    return fn


PROBLEM.add_variant("torch_cdist_topk", "torch", _torch_baseline(mm=False), style="return",
                    description="torch.cdist (direct differences) + topk, stable tie order; ip/cos via matmul")
PROBLEM.add_variant("torch_mm_topk", "torch", _torch_baseline(mm=True), style="return", baseline=True,
                    description="‖x‖²+‖y‖²−2x·yᵀ (cuBLAS fp32) + topk, stable tie order")


def _faiss_supports(shape: Shape, dtype: str) -> str | None:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "faiss is not installed (optional baseline)"
    if dtype != "fp32":
        return "faiss_flat runs fp32 only"
    return None


def _faiss(inputs, out, shape):
    import faiss

    x, y = inputs["x"].float().contiguous(), inputs["y"].float().contiguous()
    if shape.metric == "cos":
        x, y = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(y, dim=1)
    l2 = shape.metric == "l2"
    k = k_eff(shape)
    if x.is_cuda and hasattr(faiss, "StandardGpuResources"):
        import faiss.contrib.torch_utils  # noqa: F401  (torch tensors in/out)

        res = faiss.StandardGpuResources()
        fn = faiss.knn_gpu
        d, i = fn(res, x, y, k, metric=faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
    else:
        d, i = faiss.knn(x.cpu().numpy(), y.cpu().numpy(), k, metric=faiss.METRIC_L2 if l2 else
                         faiss.METRIC_INNER_PRODUCT)
        d, i = torch.from_numpy(d).to(x.device), torch.from_numpy(i).to(x.device)
    d = d.float()
    if shape.metric == "ip":
        d = -d
    elif shape.metric == "cos":
        d = 1.0 - d
    return {"dist": d.contiguous(), "idx": i.long().contiguous()}


PROBLEM.add_variant("faiss_flat", "torch", _faiss, style="return", dtypes=("fp32",), supports=_faiss_supports,
                    description="FAISS brute force (knn_gpu / IndexFlat); tie order is FAISS's own")


# ------------------------------------------------------------------------------------------------ CUDA variants
_SRC = None  # the CudaSource, set by _register_cuda()


@functools.cache
def _kernel(name: str):
    """One Kernel object per name: its loaded function is reused across calls (kept out of the timed path)."""
    return _SRC.kernel(name)


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
    from harness.cuda import CUDA_TYPES

    return CUDA_TYPES[{torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[t.dtype]]


def _kb(k: int, floor: int) -> int:
    return max(floor, 1 << max(0, (k - 1).bit_length()))


def _cuda_v1(inputs, out, shape):
    x, y = inputs["x"].contiguous(), inputs["y"].contiguous()
    Q, N, D, k = shape.Q, shape.N, shape.D, k_eff(shape)
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
    Q, N, D, k = shape.Q, shape.N, shape.D, k_eff(shape)
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


def _cuda_v3(inputs, out, shape):
    x, y = inputs["x"].contiguous(), inputs["y"].contiguous()
    Q, N, D, k = shape.Q, shape.N, shape.D, k_eff(shape)
    if shape.metric == "l2":
        xn, yn = _sq_norms({"x": x, "y": y}, shape)
    else:
        xn, yn = _inv_norms({"x": x, "y": y}, shape)  # cos: inverse norms; ip: dummies
    kb = _kb(k, 64)
    vec = int(D % 8 == 0 and x.data_ptr() % 16 == 0 and y.data_ptr() % 16 == 0)  # 16-byte row loads
    kern = _kernel(f"knn_v3_tc<{_ctype(x)},{kb}>")
    kern((-(-Q // 32),), (256,), x, y, xn, yn, out["dist"], out["idx"], Q, N, D, k, _METRIC_ID[shape.metric], vec,
         shared=_v3_smem(D, kb))


def _v3_supports(shape: Shape, dtype: str) -> str | None:
    reason = _cuda_supports(128)(shape, dtype)
    if reason:
        return reason
    if shape.D > V3_MAX_D:
        return f"D={shape.D} > {V3_MAX_D}: the query tile would not fit shared memory"
    if torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 0):
        major, minor = torch.cuda.get_device_capability()
        return f"bf16/fp16 WMMA path is built for sm_80+; this GPU is sm_{major}{minor}"
    return None


def _cuda_supports(max_k: int):
    def supports(shape: Shape, dtype: str) -> str | None:
        if k_eff(shape) > max_k:
            return f"k={k_eff(shape)} > {max_k}: the per-query lists would not fit shared memory"
        if shape.N >= 2 ** 31:
            return "indices are packed into 32 bits"
        return None

    return supports


def _register_cuda() -> None:
    from harness.cuda import CudaSource

    src = CudaSource("knn.cu")
    global _SRC
    _SRC = src
    PROBLEM.add_variant("knn_v1_twopass", "cuda", _cuda_v1, source=src, ladder=1, supports=_cuda_supports(1024),
                        kernel=("knn_norms<{T}>", "knn_v1_dist<{T}>", "knn_v1_select"),
                        description="SIMT distance tiles -> Q×N fp32 scratch, then block bitonic selection")
    PROBLEM.add_variant("knn_v2_fused", "cuda", _cuda_v2, source=src, ladder=2, supports=_cuda_supports(128),
                        kernel=("knn_norms<{T}>", "knn_v2_fused<{T},64>", "knn_v2_fused<{T},128>"),
                        description="SIMT distance tile in smem + warp ballot/bitonic selection (no scratch)")
    PROBLEM.add_variant("knn_v3_tc", "cuda", _cuda_v3, dtypes=("fp16", "bf16"), source=src, ladder=3,
                        supports=_v3_supports,
                        kernel=("knn_norms<{T}>", "knn_sqnorms<{T}>", "knn_v3_tc<{T},64>", "knn_v3_tc<{T},128>"),
                        description="WMMA (tensor-core) x·yᵀ tile in smem, distances via norms + v2's warp selection")


_register_cuda()

# The benchmark target: base 1M x 128, 10k queries, k = 10: >= 150k queries/s exact in fp32, and the fp16
# tensor-core path >= 3x the fp32 one at recall@10 >= 0.99.
PROBLEM.headline = [(PROBLEM.shape(Q=10_000, N=1_000_000, D=128, k=10), ("fp32", "fp16"))]
