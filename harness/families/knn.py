"""Exact k-nearest-neighbour search ("distance search"): queries x [Q, D], base y [N, D] -> the k nearest base rows.

Outputs ``{"dist": [Q, k'] float32 ascending, "idx": [Q, k'] int64}`` with ``k' = min(k, N)`` (the k > N rule: fewer
neighbours, never an error). Distances, smaller = nearer, accumulated in fp32:

* ``metric=l2``  squared L2 ``‖x − y‖²``;
* ``metric=ip``  ``−x·y`` (maximum inner product as a minimum);
* ``metric=cos`` ``1 − cos(x, y)``; kernels normalise *fused* (norms summed in-kernel, no normalised copy).

Ties: equal distances resolve to the LOWER base index, in the reference and every kernel variant.

Options: ``data=normal`` (default: x, y ~ N(0, 1)) or ``data=offset`` (clustered points far from the origin: 8
clusters with centres ~1000 per coordinate (fp32; 128 for fp16/bf16, so the rows stay distinct), spread 5% of that,
unit-variance points around them, queries drawn from the same clusters). On offset data the fast expansion
``‖x‖² + ‖y‖² − 2x·y`` in fp32 loses the neighbours (its error scales with ‖x‖², the distances with the cluster
spread): kernels must re-rank with exact differences (see kernels/knn.py). ``dups=1`` builds the deliberate-ties
data set (values on a 1/8 grid, so every correct kernel computes distances *exactly* in fp32/fp16/bf16 and the
float64 reference equals them bit for bit; plus a quarter of the base rows are copies of other rows): the check then
demands the exact reference indices, which tests the lower-index tie rule. ``base_rows=N'`` (> 0) makes the
chunked-base variants process the base N' rows at a time.

Exactness rule (``check_knn``): "exact" means what FAISS ``IndexFlatL2`` (direct differences) and ``torch.cdist``
deliver — recall 1.0 against a float64 exact search (the reference: float64 on exactly the inputs given, fp16/bf16
upcast; l2 distances of the candidates recomputed as direct differences Σ(x−y)²), where only GENUINE TIES may be
swapped. Per query q, with ``d_k`` the true (float64) k-th distance:

* tie band ``band_q``: l2 ``max(1e-6, 4·√D·2⁻²⁴)·d_k`` (relative, ~1e-6: 1.5e-6 at D=37, 2.7e-6 at D=128 — the
  statistical fp32 rounding of a D-term sum of squares; nothing an honest fp32 kernel computes moves that far);
  ip / cos ``32·√D·2⁻²⁴·s_q`` with ``s_q = ‖x_q‖·max‖y‖`` (ip) or 1 (cos): their fp32 dot product is the metric
  itself, so its rounding is the finest distinction any implementation (FAISS, cdist) makes;
* every reference neighbour with true distance ``< d_k − band_q`` must be returned (else: "query q: neighbour j
  missing, true distance d_j vs the k-th d_k");
* every returned row must have true distance ``<= d_k + band_q`` (no (k+1)-th / far row passes as a tie);
* the returned rows must be in ascending true-distance order up to ``band_q`` (non-tied neighbours never swap);
* exactly equal float64 distances (duplicate rows, the 1/8-grid set) follow the lower index, position by position;
* reported distances within ``(D+2)·2⁻²⁴·d`` (l2: the worst-case fp32 error of a direct-difference sum of the
  returned row's true distance ``d``) or ``band_q`` (ip / cos) of the true distance of the returned row, ascending;
* indices in range, distinct per query; NaN (unwritten, poisoned) fails.

``extra["recall"]`` = |returned ∩ reference top-k| / (Q·k'). The check uses only its arguments (it runs in the judge
process): its cost is one gather of Q·k'·D float64 values, negligible next to the float64 reference.
"""

from __future__ import annotations

import functools
import math

import torch

from harness.check import CheckResult
from harness.registry import DTYPE_SIZE, DTYPES, Problem, Shape, gpu_arch_reason, interpreter, register

METRICS = ("l2", "ip", "cos")
DATA = ("normal", "offset")
U32 = 2.0 ** -24  # fp32 unit roundoff


def k_eff(shape: Shape) -> int:
    return min(shape.k, shape.N)


def _validate(shape: Shape) -> None:
    if shape.metric not in METRICS:
        raise ValueError(f"knn: metric must be one of {METRICS}, got {shape.metric!r}")
    if shape.get("data", "normal") not in DATA:
        raise ValueError(f"knn: data must be one of {DATA}, got {shape.data!r}")
    if shape.dups and shape.get("data", "normal") != "normal":
        raise ValueError("knn: dups=1 builds its own (1/8-grid) data set; use it with data=normal")


def _offset_clusters(Q: int, N: int, D: int, dtype: str, g: torch.Generator, device) -> tuple[torch.Tensor, ...]:
    """Clustered points far from the origin. The offset is as large as the storage dtype keeps unit-variance noise
    distinct (fp16 spacing at 128 is 1/8); fp32's 1000 makes ‖x‖² ~4e7 against within-cluster distances ~2D."""
    off = 1000.0 if dtype == "fp32" else 128.0
    n_c = 8
    centres = off * (1.0 + 0.05 * torch.randn((n_c, D), generator=g, device=device))
    cy = torch.randint(0, n_c, (N,), generator=g, device=device)
    cx = torch.randint(0, n_c, (Q,), generator=g, device=device)
    y = centres[cy] + torch.randn((N, D), generator=g, device=device)
    x = centres[cx] + torch.randn((Q, D), generator=g, device=device)
    return x, y


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
    elif shape.get("data", "normal") == "offset":
        x, y = _offset_clusters(Q, N, D, dtype, g, device)
    else:
        x = torch.randn((Q, D), generator=g, device=device)
        y = torch.randn((N, D), generator=g, device=device)
    return {"x": x.to(DTYPES[dtype]), "y": y.to(DTYPES[dtype])}


def make_outputs(shape: Shape, dtype: str, device: torch.device) -> dict[str, torch.Tensor]:
    k = k_eff(shape)
    return {"dist": torch.empty((shape.Q, k), device=device, dtype=torch.float32),
            "idx": torch.empty((shape.Q, k), device=device, dtype=torch.int64)}


def _dist64(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 distances [q, n] (x, y already float64; for l2 already centred, see reference())."""
    if metric == "l2":
        return (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    if metric == "ip":
        return -(x @ y.T)
    return 1.0 - (x @ y.T) / (x.norm(dim=1)[:, None] * y.norm(dim=1)[None, :])


def _pair_dist64(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 distance of query q to base row idx[q, p], [Q, k]; l2 as direct differences Σ(x−y)² (exact up to
    float64 rounding of the sum, whatever the offset)."""
    yg = y[idx]  # [Q, k, D]
    if metric == "l2":
        return ((x[:, None, :] - yg) ** 2).sum(-1)
    dot = (x[:, None, :] * yg).sum(-1)
    if metric == "ip":
        return -dot
    return 1.0 - dot / (x.norm(dim=1)[:, None] * yg.norm(dim=-1))


def _lex_sort(v: torch.Tensor, i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row's (value, index) pairs lexicographically and keep k: index order, then a stable value sort."""
    o = torch.argsort(i, dim=1)
    i, v = i.gather(1, o), v.gather(1, o)
    o = torch.sort(v, dim=1, stable=True).indices[:, :k]
    return v.gather(1, o), i.gather(1, o)


def _full_rows(x: torch.Tensor, y: torch.Tensor, metric: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every base row of a few queries, exactly (l2 as direct differences, in base blocks), (distance, index) order."""
    blk = max(1, (1 << 25) // max(1, x.shape[0] * x.shape[1]))  # ~256 MB of float64 differences per block
    ds = []
    for n0 in range(0, y.shape[0], blk):
        yb = y[n0:n0 + blk]
        ds.append(((x[:, None, :] - yb[None]) ** 2).sum(-1) if metric == "l2" else _dist64(x, yb, metric))
    sv, si = torch.sort(torch.cat(ds, 1), dim=1, stable=True)
    return sv[:, :k], si[:, :k]


def reference(inputs: dict[str, torch.Tensor], shape: Shape, dtype: str) -> dict[str, torch.Tensor]:
    """float64 exact search in query chunks (the Q×N float64 matrix of the headline shape would be 80 GB), ordered
    lexicographically by (distance, index). l2: candidates from the float64 expansion on data centred at the base
    mean (error ~1e-16·(‖x−μ‖+‖y−μ‖)², not ~1e-16·‖x‖²), re-ranked by direct differences; queries whose candidate
    margin cannot be certified against that error (or whose tie group at rank k reaches past the margin) get a full
    direct-difference search."""
    x, y = inputs["x"].double(), inputs["y"].double()
    N, k, metric = shape.N, k_eff(shape), shape.metric
    k2 = min(N, 2 * k + 16)  # candidates beyond k so a tie group straddling rank k is ordered by index
    if metric == "l2":
        mu = y.mean(0)
        xc, yc = x - mu, y - mu
        ymax = float(yc.norm(dim=1).max())
    else:
        xc, yc = x, y
    chunk = max(1, min(shape.Q, (1 << 27) // N))
    dists, idxs = [], []
    for q0 in range(0, shape.Q, chunk):
        xq = x[q0:q0 + chunk]
        d = _dist64(xc[q0:q0 + chunk], yc, metric)
        cv, ci = torch.topk(d, k2, dim=1, largest=False, sorted=True)
        last = cv[:, -1].clone()
        if metric == "l2":
            cv = ((xq[:, None, :] - y[ci]) ** 2).sum(-1)  # exact differences of the candidates
            err = 1e-13 * (xc[q0:q0 + chunk].norm(dim=1) + ymax) ** 2  # float64 expansion error, generous
        else:
            err = torch.zeros_like(last)
        cv, ci = _lex_sort(cv, ci, k)
        # a non-candidate has expansion distance >= last; it may still reach the k-th (or tie it) only if
        # last - err <= k-th: then search the query's whole base
        full = (last - err <= cv[:, k - 1] + err) if k2 < N else torch.zeros_like(last, dtype=torch.bool)
        if bool(full.any()):
            rows = full.nonzero()[:, 0]
            cv[rows], ci[rows] = _full_rows(xq[rows], y, metric, k)
        dists.append(cv)
        idxs.append(ci)
    return {"dist": torch.cat(dists), "idx": torch.cat(idxs)}


def tie_band(x: torch.Tensor, y: torch.Tensor, kth: torch.Tensor, metric: str) -> torch.Tensor:
    """Genuine-tie width band_q (float64 [Q]); see the module docstring. kth: true k-th distance per query."""
    D = x.shape[1]
    if metric == "l2":
        return max(1e-6, 4.0 * math.sqrt(D) * U32) * kth.abs()
    xn = x.norm(dim=1)
    scale = xn * y.norm(dim=1).max() if metric == "ip" else torch.ones_like(xn)
    return 32.0 * math.sqrt(D) * U32 * scale + 1e-30


def check_knn(out, ref, inputs, shape: Shape, dtype: str, tol=None) -> CheckResult:
    """The exactness rule of the module docstring. Depends on its arguments only (runs in the judge process)."""
    if not isinstance(out, dict) or "dist" not in out or "idx" not in out:
        return CheckResult(False, message=f"variant returned {type(out).__name__}, expected {{'dist', 'idx'}}")
    Q, N, D, k, metric = shape.Q, shape.N, shape.D, k_eff(shape), shape.metric
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
    kth = r_d[:, k - 1]
    band = tie_band(x, y, kth, metric)[:, None]
    d_ret = _pair_dist64(x, y, idx, metric)  # true distance of each returned row
    recall = float((idx[:, :, None] == r_i[:, None, :]).any(2).double().mean())
    rel = float(torch.linalg.vector_norm(dist - r_d) / max(float(torch.linalg.vector_norm(r_d)), 1e-300))
    max_abs = float((dist - r_d).abs().max()) if dist.numel() else 0.0
    extra = {"recall": recall}
    rule = (f"exactness rule: recall 1.0 against float64, only genuine ties (true distances within the tie band "
            f"of the k-th) may be swapped, exact ties to the lower index; recall {recall:.4f}")

    def first(mask: torch.Tensor) -> tuple[int, int]:
        q, p = mask.nonzero()[0].tolist()
        return q, p

    # 1. missing neighbours: a reference row clearly inside the top k (below d_k - band) that was not returned
    returned = (r_i[:, :, None] == idx[:, None, :]).any(2)
    missing = ~returned & (r_d < kth[:, None] - band)
    if bool(missing.any()):
        q, p = first(missing)
        return CheckResult(False, rel, max_abs, f"{int(missing.sum())} of {Q * k} reference neighbours missing; "
                           f"query {q}: neighbour idx {int(r_i[q, p])} (reference rank {p}) with true distance "
                           f"{float(r_d[q, p]):.9g} is missing, the k-th true distance is {float(kth[q]):.9g} "
                           f"(tie band {float(band[q]):.3g}); {rule}", extra)
    # 2. intruders: a returned row beyond the k-th by more than the band ((k+1)-th, far rows)
    far = d_ret > kth[:, None] + band
    if bool(far.any()):
        q, p = first(far)
        return CheckResult(False, rel, max_abs, f"{int(far.sum())} returned rows are not in the top k; query {q} "
                           f"position {p}: idx {int(idx[q, p])} has true distance {float(d_ret[q, p]):.9g} > the "
                           f"k-th {float(kth[q]):.9g} + tie band {float(band[q]):.3g}; {rule}", extra)
    # 3. order: non-tied neighbours must not swap
    if k > 1:
        unordered = torch.zeros_like(far)
        unordered[:, 1:] = d_ret[:, 1:] < d_ret[:, :-1] - band
        if bool(unordered.any()):
            q, p = first(unordered)
            return CheckResult(False, rel, max_abs, f"query {q}: positions {p - 1} and {p} swap non-tied neighbours "
                               f"(idx {int(idx[q, p - 1])} true distance {float(d_ret[q, p - 1]):.9g} before idx "
                               f"{int(idx[q, p])} true distance {float(d_ret[q, p]):.9g}, tie band "
                               f"{float(band[q]):.3g}); {rule}", extra)
    # 4. exact ties follow the lower index
    tie_bad = (idx != r_i) & (d_ret == r_d)
    if bool(tie_bad.any()):
        q, p = first(tie_bad)
        return CheckResult(False, rel, max_abs, f"query {q} position {p}: idx {int(idx[q, p])} instead of "
                           f"{int(r_i[q, p])} with exactly the same float64 distance {float(r_d[q, p]):.9g}: exact "
                           f"ties must go to the lower index", extra)
    # 5. reported distances
    dtol = (D + 2) * U32 * d_ret.abs() + 1e-30 if metric == "l2" else band
    d_bad = (dist - d_ret).abs() > dtol
    if bool(d_bad.any()):
        q, p = first(d_bad)
        return CheckResult(False, rel, max_abs, f"{int(d_bad.sum())} of {Q * k} distances outside tolerance; first "
                           f"at query {q} position {p}: got {float(dist[q, p]):.9g}, true distance of idx "
                           f"{int(idx[q, p])} is {float(d_ret[q, p]):.9g} (tol {float(dtol[q, p]):.3g})", extra)
    if k > 1 and bool((dist[:, 1:] < dist[:, :-1]).any()):
        q, p = first(dist[:, 1:] < dist[:, :-1])
        return CheckResult(False, rel, max_abs, f"query {q}: distances not ascending at positions {p}, {p + 1}: "
                           f"{float(dist[q, p]):.9g} > {float(dist[q, p + 1]):.9g}", extra)
    return CheckResult(True, rel, max_abs, "", extra)


def spot(inputs: dict, outputs: dict, shape: Shape, idx: torch.Tensor) -> tuple[dict, dict, Shape]:
    """Queries ``idx``: their rows of x and of the outputs (each query's answer depends on it and the base only)."""
    ins = {"x": inputs["x"][idx.to(inputs["x"].device)], "y": inputs["y"]}
    outs = {k: t[idx.to(t.device)] for k, t in outputs.items()}
    return ins, outs, Shape({**shape, "Q": len(idx)})


def flops(shape: Shape) -> float:
    return 2.0 * shape.Q * shape.N * shape.D


def min_bytes(shape: Shape, dtype: str) -> float:
    return (shape.N + shape.Q) * shape.D * DTYPE_SIZE[dtype] + shape.Q * k_eff(shape) * (4 + 8)


def extra_metrics(shape: Shape, median_ms: float) -> dict[str, float]:
    return {"qps": shape.Q / (median_ms * 1e-3)} if median_ms and median_ms > 0 else {}


def _S(Q: int, N: int, D: int, k: int, metric: str = "l2", dups: bool = False, base_rows: int = 0,
       data: str = "normal") -> Shape:
    """A Shape with every option in the registry's order (what PROBLEM.shape() would build)."""
    return Shape(Q=Q, N=N, D=D, k=k, metric=metric, dups=dups, base_rows=base_rows, data=data)


PROBLEM = register(Problem(
    name="knn",
    dims=("Q", "N", "D", "k"),
    dtypes=("fp32", "fp16", "bf16"),
    make_inputs=make_inputs,
    make_outputs=make_outputs,
    reference=reference,
    flops=flops,
    min_bytes=min_bytes,
    options={"metric": "l2", "dups": False, "base_rows": 0, "data": "normal"},
    check=check_knn,
    extra_metrics=extra_metrics,
    spot_dim="Q", spot=spot, lower_precisions={"fp32": ("tf32",)},
    description="exact kNN: fused distance tiles + running top-k (l2 | ip | cos), ties to the lower index",
    shapes=[
        _S(10000, 1000000, 128, 10),  # headline (SIFT1M-like)
        _S(100000, 1000000, 128, 10),  # throughput: 25.6 TFLOP of distances
        *[_S(4096, 100000, d, 10) for d in (32, 64, 100, 256)],
        _S(1024, 100000, 768, 10),
        _S(4096, 100000, 128, 1),
        _S(4096, 100000, 128, 100),
        _S(1024, 100000, 128, 1024),
        _S(4096, 100000, 128, 10, metric="ip"),
        _S(4096, 100000, 128, 10, metric="cos"),
        _S(1024, 100000, 64, 16, dups=True),
        _S(4096, 100000, 128, 10, data="offset"),  # the expansion alone loses the neighbours here
        _S(4096, 100000, 128, 1, data="offset"),
    ],
    quick=[
        _S(5, 300, 33, 1),
        _S(5, 300, 33, 7),
        _S(5, 300, 33, 16, metric="ip"),
        _S(5, 300, 33, 7, metric="cos"),
        _S(3, 5, 33, 7),  # k > N: returns min(k, N) = 5
        _S(5, 300, 33, 16, dups=True),  # exact ties -> lower index
        _S(5, 300, 33, 7, base_rows=128),  # chunked base
        _S(17, 1000, 37, 10, data="offset"),  # clustered far from the origin: fp32 expansion recall ~0.5
        _S(17, 1000, 37, 1, data="offset"),  # ... and the wrong nearest neighbour for most queries
    ],
))


# ------------------------------------------------------------------------------------------------ Triton variants
# The ladder (l2; ip/cos run the fused expansion in every variant: it is their metric). Every l2 rung is exact under
# the rule above: the expansion only nominates candidates, exact differences rank them, a certificate vouches.
def _triton(merge: str = "auto", precision: str = "ieee", chunked: bool = False, mode: str = "rerank"):
    def fn(inputs, out, shape):
        from kernels.knn import knn

        base_rows = shape.base_rows
        if chunked and not base_rows:
            base_rows = max(1, -(-shape.N // 4))  # no size given: four chunks, to exercise the path
        knn(inputs["x"], inputs["y"], shape.k, shape.metric, base_rows=base_rows if chunked else 0, merge=merge,
            precision=precision, out=out, mode=mode)

    return fn


def _triton_supports(max_k: int, sort_merge: bool = False, exact: bool = False):
    def supports(shape: Shape, dtype: str) -> str | None:
        if dtype == "bf16" and interpreter():
            return "bf16 tl.dot is wrong under TRITON_INTERPRET; checked on GPU"
        if sort_merge and interpreter():
            return "tl.sort takes seconds per tile under TRITON_INTERPRET; tests/test_knn.py runs it on a tiny shape"
        if exact and interpreter() and shape.Q * shape.N * shape.D > 4_000_000:
            return "direct differences take seconds per 1M pairs·D under TRITON_INTERPRET; tests run small shapes"
        if k_eff(shape) > max_k:
            return f"k={k_eff(shape)} > {max_k} not supported by this merge strategy"
        return None

    return supports


# rung 0 — direct differences Σ(x−y)² for every pair, no tensor cores: exact by construction; ~D extra subtracts and
# no tl.dot, so it should run at a fraction of the FMA roof (the certificate's fallback)
PROBLEM.add_variant("triton_exact", "triton", _triton(mode="exact"), supports=_triton_supports(512, exact=True),
                    description="rung 0: direct differences Σ(x−y)² per pair (no dot, no re-rank): exact, slow")
# rung 1 — fused tl.dot expansion on centred data keeps k+margin candidates, exact fp32 re-rank + certificate
# (each program centred at the mean of its queries, grouped by cluster: kernels.knn.group_queries — on clustered
# offset data (Q = 1024) it refuses 47 queries instead of 662, which take rung 0):
# the distance math moves back onto tl.dot (~4x the FLOP rate of rung 0) at Q·kc·D re-rank bytes (~0.2% extra)
PROBLEM.add_variant("triton_fused", "triton", _triton(), supports=_triton_supports(512),
                    description="block-centred tl.dot expansion → k+margin candidates → exact re-rank, certified")
PROBLEM.add_variant("triton_sortmerge", "triton", _triton(merge="sort"),
                    supports=_triton_supports(512, sort_merge=True),
                    description="rung 1 with a bitonic sort-merge of the running candidates with each tile")
# rung 2 — 3xTF32 candidates: fp32-level products on tensor cores (3 passes), same re-rank; ~2-3x rung 1 on H100
PROBLEM.add_variant("triton_tf32x3", "triton", _triton(precision="tf32x3"), dtypes=("fp32",), compute_dtype="tf32",
                    supports=_triton_supports(512),
                    description="rung 1 with split-TF32 (3 tensor-core passes) candidates, exact fp32 re-rank")
# rung 3 — 1-pass TF32 candidates (issue 20's design: ~3x fewer tensor-core passes than rung 2); the certificate
# charges 2^-10 per product, so data far from its mean falls back to rung 0 (correct, slower)
PROBLEM.add_variant("triton_tf32", "triton", _triton(precision="tf32"), dtypes=("fp32",), compute_dtype="tf32",
                    supports=_triton_supports(512),
                    description="TF32 tensor-core candidates (1 pass) + exact fp32 re-rank, certified")
PROBLEM.add_variant("triton_chunked", "triton", _triton(chunked=True), supports=_triton_supports(512),
                    description="rung 1 over base chunks of base_rows rows (N/4 if 0), running candidate merge")


# ------------------------------------------------------------------------------------------------ baselines
def _stable_topk(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest per row in (distance, index) order — the lower-index tie rule, for any tie-group size.

    torch.topk's order among equal values is unspecified: take a margin of candidates and order them by (distance,
    index) with two stable sorts. If the largest candidate equals the k-th (a tie group at rank k that may reach past
    the margin: > k+16 equal distances), that row gets a full stable sort — an O(Q) test, no extra pass over d."""
    n = d.shape[1]
    k2 = min(n, 2 * k + 16)
    v, i = torch.topk(d, k2, dim=1, largest=False, sorted=False)
    vmax = v.max(1).values
    v, i = _lex_sort(v, i, k)
    if k2 < n:
        wide = vmax == v[:, k - 1]
        if bool(wide.any()):
            rows = wide.nonzero()[:, 0]
            sv, si = torch.sort(d[rows], dim=1, stable=True)
            v[rows], i[rows] = sv[:, :k], si[:, :k]
    return v.float().contiguous(), i.contiguous()


def _torch_dist(x: torch.Tensor, y: torch.Tensor, metric: str, mm: bool) -> torch.Tensor:
    x, y = x.float(), y.float()
    if metric == "l2":
        if mm:
            return (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
        return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    if metric == "ip":
        return -(x @ y.T)
    return 1.0 - torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(y, dim=1).T


def candidate_count(k: int, N: int, cap: int = 1 << 30) -> int:
    """Candidates kept from the fast expansion before the exact re-rank: k plus a margin of max(8, k/4), rounded up
    to a power of two (the kernels' list width), at most N and ``cap``."""
    want = k + max(8, k // 4)
    return min(N, cap, 1 << (want - 1).bit_length())


def expansion_error(nx: torch.Tensor, dk: torch.Tensor, D: int, u_prod: float, centred: bool) -> torch.Tensor:
    """Bound (×2 safety) on |d̃ − d| of the fp32 expansion ‖x'‖² + ‖y'‖² − 2x'·y' for every base row y that could
    still be a neighbour (true distance <= dk), per query. nx = ‖x'‖ (x' = x − μ when centred), dk = exact k-th
    distance of the re-ranked candidates, u_prod = relative error of one product of the dot's inputs (0 for fp32
    FMA and fp16/bf16 inputs, 2⁻¹⁰ for TF32, 2⁻²⁰ for 3xTF32). Terms: the dot's products (2u_p‖x'‖‖y'‖), the fp32
    sums of D terms and the final adds (γ = (D+4)·2⁻²³, tensor-core accumulation is not round-to-nearest) over
    (‖x'‖+‖y'‖)², and the rounding of the centring itself (r = ‖x'−(x−μ)‖ + ‖y'−(y−μ)‖ <= u·(‖x'‖+‖y'‖)), with
    ‖y'‖ <= ‖x'‖ + √dk + r for such rows. The same formula runs inside the Triton and CUDA re-rank kernels."""
    g = (D + 4) * 2.0 ** -23
    sk = dk.clamp_min(0).sqrt()
    r = 1.01 * U32 * (2 * nx + sk) if centred else torch.zeros_like(nx)
    yb = nx + sk + r
    return 2.0 * (2.0 * u_prod * nx * yb + g * (nx + yb) ** 2 + 2.0 * sk * r + r * r)


def certified(last: torch.Tensor, dk: torch.Tensor, err: torch.Tensor, D: int) -> torch.Tensor:
    """True where no base row outside the candidates can reach the exact k-th: every non-candidate's expansion
    distance is >= ``last`` (the largest candidate's), so its true distance is >= last − err > dk·(1+γ)."""
    return last - err > dk * (1.0 + (D + 4) * 2.0 ** -23)


def rerank_l2(x: torch.Tensor, y: torch.Tensor, cand: torch.Tensor, last: torch.Tensor, k: int, nx: torch.Tensor,
              u_prod: float, centred: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The re-rank step in torch (the baseline's, and the emulation of the kernels' second stage): exact fp32
    differences Σ(x−y)² of the candidates ``cand`` [q, kc] (ordered by the expansion), lexicographic (distance,
    index) order, the k best, and the certificate per query (True = provably the exact top k)."""
    ex = ((x[:, None, :].float() - y[cand].float()) ** 2).sum(-1)
    v, i = _lex_sort(ex, cand, k)
    if cand.shape[1] >= y.shape[0]:
        return v, i, torch.ones_like(last, dtype=torch.bool)
    dk = v[:, k - 1]
    return v, i, certified(last, dk, expansion_error(nx, dk, x.shape[1], u_prod, centred), x.shape[1])


def _torch_baseline(mm: bool):
    def fn(inputs, out, shape):
        x, y, k = inputs["x"], inputs["y"], k_eff(shape)
        # query chunks keep the fp32 Q×N matrix under ~4 GB (the headline's is 40 GB)
        chunk = max(1, min(shape.Q, (1 << 30) // shape.N))
        rerank = mm and shape.metric == "l2"
        if rerank:  # centre at the base mean: the expansion's error then scales with the spread, not the offset
            yf = y.float()
            mu = yf.mean(0, dtype=torch.float64).float()
            yc = yf - mu
            ycn = (yc * yc).sum(1)
            kc = candidate_count(k, shape.N)
        ds, is_ = [], []
        for q0 in range(0, shape.Q, chunk):
            xq = x[q0:q0 + chunk].float()
            if not rerank:
                d, i = _stable_topk(_torch_dist(xq, y, shape.metric, mm), k)
            else:
                xc = xq - mu
                xcn = (xc * xc).sum(1)
                cv, ci = torch.topk(xcn[:, None] + ycn[None, :] - 2.0 * (xc @ yc.T), kc, dim=1, largest=False)
                d, i, ok = rerank_l2(xq, yf, ci, cv[:, -1], k, xcn.sqrt(), 0.0, True)
                if not bool(ok.all()):  # margin not provably wide enough: direct differences for those queries
                    rows = (~ok).nonzero()[:, 0]
                    d[rows], i[rows] = _stable_topk(_torch_dist(xq[rows], y, "l2", False), k)
            ds.append(d.float())
            is_.append(i)
        return {"dist": torch.cat(ds).contiguous(), "idx": torch.cat(is_).contiguous()}

    return fn


# cdist (direct differences) is exact as it stands; mm+topk alone is not on offset data, so the baseline keeps
# what users run (cuBLAS fp32 mm + topk) plus the cheap part that makes it exact (a Q·kc·D re-rank)
PROBLEM.add_variant("torch_cdist_topk", "torch", _torch_baseline(mm=False), style="return",
                    description="torch.cdist (direct differences) + topk, (distance, index) order; ip/cos via matmul")
PROBLEM.add_variant("torch_mm_topk", "torch", _torch_baseline(mm=True), style="return", baseline=True,
                    description="‖x'‖²+‖y'‖²−2x'·y'ᵀ on centred data (cuBLAS fp32) + topk of k+margin, exact fp32 "
                                "re-rank, certified (cdist fallback); ip/cos: mm + topk")


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


def v3_candidates(k: int, N: int) -> int:
    """knn_v3_tc's l2 candidate count: k + margin as in the Triton path, within the 128-key list (k near 128 leaves
    no margin: the certificate then refuses and v2 answers)."""
    from kernels.knn import candidate_count

    return max(min(k, N), candidate_count(k, N, cap=128))


def _cuda_v3(inputs, out, shape):
    x, y = inputs["x"].contiguous(), inputs["y"].contiguous()
    Q, N, D, k = shape.Q, shape.N, shape.D, k_eff(shape)
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
            o = make_outputs(sub, "fp32", x.device)
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
    # rung 1 — SIMT direct differences into a Q×N scratch, block bitonic select: exact l2 as written (Σ(x−y)²)
    PROBLEM.add_variant("knn_v1_twopass", "cuda", _cuda_v1, source=src, ladder=1, supports=_cuda_supports(1024),
                        kernel=("knn_norms<{T}>", "knn_v1_dist<{T}>", "knn_v1_select"),
                        description="SIMT distance tiles -> Q×N fp32 scratch, then block bitonic selection")
    # rung 2 — the same tile in smem + warp ballot selection: no 2·Q·N·4 scratch bytes (~1.7x), still exact l2
    PROBLEM.add_variant("knn_v2_fused", "cuda", _cuda_v2, source=src, ladder=2, supports=_cuda_supports(128),
                        kernel=("knn_norms<{T}>", "knn_v2_fused<{T},64>", "knn_v2_fused<{T},128>"),
                        description="SIMT distance tile in smem + warp ballot/bitonic selection (no scratch)")
    # rung 3 — WMMA x·yᵀ expansion keeps k+margin candidates, warp exact re-rank + certificate, v2 for refusals:
    # fp16/bf16 tensor cores (~16x v2's FLOP rate) at v2's exactness
    PROBLEM.add_variant("knn_v3_tc", "cuda", _cuda_v3, dtypes=("fp16", "bf16"), source=src, ladder=3,
                        supports=_v3_supports,
                        kernel=("knn_norms<{T}>", "knn_sqnorms<{T}>", "knn_v3_tc<{T},64>", "knn_v3_tc<{T},128>"),
                        description="WMMA x·yᵀ tile → k+margin candidates (v2's warp selection) → exact re-rank, "
                                    "certified (v2 for refused queries)")
    # rung 4 — fp32 on tensor cores: TF32 WMMA expansion centred per CTA (queries grouped by cluster) + FAISS-style
    # WarpSelect (thread queues, register bitonic merges; queues in smem, 0 local memory, 2 blocks/SM) for kc
    # candidates, exact fp32 re-rank + certificate, v2 for refusals; split-N over base slices + knn_v4_merge when
    # Q/32 CTAs are < 2 waves (Q = 1)
    PROBLEM.add_variant("knn_v4_tf32_ws", "cuda", _cuda_v4, dtypes=("fp32",), source=src, ladder=4,
                        supports=_v4_supports, compute_dtype="tf32",
                        kernel=("knn_v4_tf32_ws<32>", "knn_v4_tf32_ws<64>", "knn_v4_tf32_ws<128>",
                                "knn_v4_merge<32>", "knn_v4_merge<64>", "knn_v4_merge<128>"),
                        description="(GPU-unverified) queries grouped by cluster, each CTA centred at its 32 queries' "
                                    "mean (norms in-kernel); TF32 WMMA x'·y'ᵀ tile in smem → WarpSelect (thread "
                                    "queues + register bitonic merge, no local memory, 2 blocks/SM) keeps k+margin → "
                                    "exact fp32 re-rank, certified (v2 for refused queries); split-N base slices + "
                                    "merge kernel when Q/32 CTAs < 2 waves; l2 only")


# ---------------------------------------------------------------------------------- v4: launcher and CPU emulation
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
    slices for ~2 waves, each at least V4_MIN_SLICE rows."""
    blocks = -(-Q // 32)
    want = 2 * sms * per_sm
    S = min(-(-want // blocks), N // V4_MIN_SLICE)
    if S <= 1:
        return 1, N
    ns = math.ceil(math.ceil(N / S) / 128) * 128
    return -(-N // ns), ns


def _v4_smem_limit() -> int:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return int(getattr(props, "shared_memory_per_block_optin", V4_SMEM_DEFAULT))
    return V4_SMEM_DEFAULT


def _v4_flow(x: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor], search, fallback,
             center: str = "block") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The host side of knn_v4_tf32_ws, shared by the launcher and v4_emulated (so the CPU tests run the same
    grouping, scatter and fallback code as the GPU): group_queries orders the queries so each CTA's 32 come from one
    cluster and gives each CTA's centre (Q <= 32: the queries' own mean, Q = 1: the query itself);
    ``search(xp, centres, res)`` fills res["dist"/"idx"] in the grouped order and returns the certificates [Q]; the
    refused rows go to ``fallback(x_rows) -> (dist, idx)``; everything is scattered back to the caller's order.
    center="mean": every CTA at the base mean, order kept (the pre-grouping flow; emulation what-if only).
    Returns (certified [Q] bool, centres [G, D], centre_of [Q]) in the caller's order."""
    from kernels.knn import group_queries

    Q, D = x.shape
    if center == "block":
        perm, centres = group_queries(x, y, V4_BQ)
    else:
        perm = None
        mu = y.float().mean(0, dtype=torch.float64).float()
        centres = mu.expand(-(-Q // V4_BQ), D).contiguous()
    xp = x if perm is None else x[perm].contiguous()
    res = out if perm is None else {"dist": torch.empty_like(out["dist"]), "idx": torch.empty_like(out["idx"])}
    ok = search(xp, centres, res).bool()
    bad = (~ok).nonzero()[:, 0]
    if bad.numel():  # certificate refused: exact direct differences
        res["dist"][bad], res["idx"][bad] = fallback(xp[bad].contiguous())
    row = torch.arange(Q, device=x.device) // V4_BQ
    if perm is not None:
        out["dist"][perm], out["idx"][perm] = res["dist"], res["idx"]
        okc, rowc = torch.empty_like(ok), torch.empty_like(row)
        okc[perm], rowc[perm] = ok, row
        ok, row = okc, rowc
    return ok, centres, row


def _cuda_v4(inputs, out, shape):
    x, y = inputs["x"].contiguous(), inputs["y"].contiguous()
    Q, N, D, k = shape.Q, shape.N, shape.D, k_eff(shape)
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
        o = make_outputs(sub, "fp32", x.device)
        _cuda_v2({"x": xb, "y": y}, o, sub)
        return o["dist"], o["idx"]

    _v4_flow(x, y, out, search, fallback)


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
    kb = v4_kb(v3_candidates(k_eff(shape), shape.N))
    need, limit = _v4_smem(shape.D, kb), _v4_smem_limit()
    if need > limit:
        return f"D={shape.D}, KB={kb}: {need / 1024:.1f} KB of shared memory > {limit / 1024:.0f} KB per block"
    return None


_KEY_EMPTY = (1 << 63) - 1  # signed stand-in for EMPTY_KEY (0xFFFF...): sorts after every real key


def pack_keys(d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """pack_key of knn.cu as signed int64: (monotone fp32 bits − 2³¹) << 32 | index. Same order as the kernel's
    unsigned keys: (distance, index) lexicographic, so exactly equal distances go to the lower index."""
    b = d.float().contiguous().view(torch.int32).long() & 0xFFFFFFFF
    b = torch.where(b == 0x80000000, torch.zeros_like(b), b)  # -0.0 ties with +0.0
    b = torch.where(b >= 0x80000000, 0xFFFFFFFF - b, b | 0x80000000)
    return ((b - (1 << 31)) << 32) | idx.long()


def unpack_keys(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b = (key >> 32) + (1 << 31)
    b = torch.where(b >= 0x80000000, b & 0x7FFFFFFF, 0xFFFFFFFF - b)
    return b.to(torch.int32).view(torch.float32) if b.numel() else b.float(), key & 0xFFFFFFFF


def ws_sort_emulated(reg: torch.Tensor) -> torch.Tensor:
    """ws_sort of knn.cu step by step: reg [..., R, 32] (register j, lane), position p = 32·j + lane; stride < 32
    exchanges with lane ^ stride (__shfl_xor_sync), stride >= 32 with register j ^ (stride/32) of the same lane."""
    reg = reg.clone()
    R = reg.shape[-2]
    lane = torch.arange(32)
    pos = 32 * torch.arange(R)[:, None] + lane[None, :]
    size = 2
    while size <= 32 * R:
        stride = size >> 1
        while stride > 0:
            if stride >= 32:
                other = reg[..., torch.arange(R) ^ (stride >> 5), :]
            else:
                other = reg[..., :, lane ^ stride]
            up = (pos & size) == 0
            lower = (pos & stride) == 0
            reg = torch.where(lower == up, torch.minimum(reg, other), torch.maximum(reg, other))
            stride >>= 1
        size <<= 1
    return reg


def _ws_select(keys: torch.Tensor, kc: int, kb: int, bn: int, bug: str | None) -> torch.Tensor:
    """WarpSelect over the key stream ``keys`` [Q, N] in the kernel's order (tiles of ``bn`` columns, 32-column
    steps, lane l takes column l of a step); returns the kc best [Q, kc] ascending (EMPTY past the stream)."""
    Q, N = keys.shape
    kw, nt = v4_queue_shape(kb)
    R = kw + nt
    reg = torch.full((Q, R, 32), _KEY_EMPTY, dtype=torch.int64)
    tc = torch.zeros((Q, 32), dtype=torch.int64)
    wk = torch.full((Q,), _KEY_EMPTY, dtype=torch.int64)
    qs = torch.arange(Q)[:, None].expand(Q, 32)
    lanes = torch.arange(32)[None, :].expand(Q, 32)

    def merge(rows: torch.Tensor) -> None:
        r = reg[rows]
        if bug == "drop_last":
            r[:, R - 1, 31] = _KEY_EMPTY
        r = ws_sort_emulated(r)
        r[:, kw:, :] = _KEY_EMPTY
        reg[rows] = r
        tc[rows] = 0
        wk[rows] = r.reshape(len(rows), -1)[:, kc - 1]

    for n0 in range(0, N, bn):
        for h in range(bn // 32):
            n = n0 + 32 * h + torch.arange(32)
            valid = n < N
            key = torch.where(valid[None, :], keys[:, n.clamp(max=max(N - 1, 0))], torch.full((Q, 32), _KEY_EMPTY))
            take = key < wk[:, None]
            slot = (kw + tc).clamp(max=R - 1)
            reg[qs[take], slot[take], lanes[take]] = key[take]
            tc += take.long()
            full = (tc == nt).any(1)
            if bool(full.any()):
                merge(full.nonzero()[:, 0])
    if bug != "no_flush":
        merge(torch.arange(Q))
    return reg.reshape(Q, -1)[:, :kc]


def warp_select_emulated(dist: torch.Tensor, kc: int, kb: int, bn: int = 128, bug: str | None = None,
                         splits: int = 1, return_last: bool = False):
    """knn_v4_tf32_ws's selection for every query of ``dist`` [Q, N] (fp32 expansion distances), as the kernel runs
    it: base tiles of ``bn`` columns (the last one partial), lane l takes columns l, l+32, ... of a tile; a key
    beating the warp's kc-th goes into the lane's thread queue; after each 32-column step, if any lane's queue is
    full, ws_sort over the [warp queue | thread queues] registers keeps the KB best; a last merge at the end.
    Returns the kc best keys [Q, kc] in ascending order (EMPTY past the base), and with ``return_last`` also the
    certificate's ``last`` key [Q] (the kc-th). ``splits`` > 1 runs split-N: slices of v4_split_plan's length
    (a multiple of ``bn``), each selecting its kc best into a KB-wide list (EMPTY past kc), then knn_v4_merge's
    WarpSelect over the S·KB listed keys (32 per step); ``last`` = the merged kc-th key. ``bug`` plants known-wrong
    variants: "drop_last" (each merge loses the last thread-queue slot of lane 31), "no_flush" (no final merge),
    "no_tiebreak" (keys without the index: equal distances keep an arbitrary row), and for splits > 1
    "min_slice_last" (last = the smallest slice's kc-th key, which is >= the merged one: unsound) and "drop_slice"
    (the merge reads S-1 slices)."""
    Q, N = dist.shape
    keys = pack_keys(dist, torch.arange(N).expand(Q, N))
    if bug == "no_tiebreak":  # order by distance only, last writer wins among equals
        keys = (keys & ~0xFFFFFFFF) | (0xFFFFFFFF - torch.arange(N).expand(Q, N))
    sel_bug = bug if bug in ("drop_last", "no_flush") else None
    if splits <= 1:
        best = _ws_select(keys, kc, kb, bn, sel_bug)
        return (best, best[:, kc - 1]) if return_last else best
    ns = math.ceil(math.ceil(N / splits) / bn) * bn  # v4_split_plan's slice length
    lists = []
    for n0 in range(0, N, ns):
        lst = torch.full((Q, kb), _KEY_EMPTY, dtype=torch.int64)
        lst[:, :kc] = _ws_select(keys[:, n0:n0 + ns], kc, kb, bn, sel_bug)
        lists.append(lst)
    slice_last = torch.stack([lst[:, kc - 1] for lst in lists], 1)
    if bug == "drop_slice":
        lists = lists[:-1]
    best = _ws_select(torch.cat(lists, 1), kc, kb, 32, sel_bug)
    last = slice_last.min(1).values if bug == "min_slice_last" else best[:, kc - 1]
    return (best, last) if return_last else best


def tf32_round(t: torch.Tensor) -> torch.Tensor:
    """cvt.rna.tf32.f32: round fp32 to 10 mantissa bits, ties away from zero (finite inputs)."""
    b = t.float().contiguous().view(torch.int32)
    b = (b + 0x1000) & ~0x1FFF  # sign-magnitude: adding half an ulp to the magnitude rounds half away from zero
    return b.view(torch.float32)


def _fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """fmaf in fp32: the product is exact in float64, one rounding to float64 then one to fp32 (differs from a
    single rounding only when the float64 sum lands exactly on an fp32 midpoint: ~2⁻²⁹ per operation)."""
    return (a.double() * b.double() + c.double()).float()


def v4_row_sqnorm_emulated(v: torch.Tensor) -> torch.Tensor:
    """v4_centred_sqnorm of knn.cu for rows v [..., D] (already centred, fp32): lane l sums columns l, l+32, ...
    with fmaf, then warp_reduce_sum's xor butterfly (16, 8, 4, 2, 1)."""
    D = v.shape[-1]
    L = -(-D // 32) * 32
    vp = torch.nn.functional.pad(v.float(), (0, L - D)).reshape(*v.shape[:-1], L // 32, 32)
    s = torch.zeros((*v.shape[:-1], 32), dtype=torch.float32)
    for j in range(L // 32):  # fmaf(0, 0, s) == s: the padded lanes change nothing
        s = _fma32(vp[..., j, :], vp[..., j, :], s)
    lane = torch.arange(32)
    for o in (16, 8, 4, 2, 1):
        s = s + s[..., lane ^ o]
    return s[..., 0]


def v4_stage_sqnorm_emulated(v: torch.Tensor) -> torch.Tensor:
    """The base rows' |y − c|² as knn_v4_tf32_ws builds yn (v [..., D] centred fp32): 8 threads a row, thread g
    takes columns 32·st + 4g .. 32·st + 4g + 3 of every 32-column stage st, one fmaf per value in that order, then
    an xor tree (1, 2, 4) over the 8 threads."""
    D = v.shape[-1]
    L = -(-D // 32) * 32
    vp = torch.nn.functional.pad(v.float(), (0, L - D)).reshape(*v.shape[:-1], L // 32, 8, 4)
    p = torch.zeros(vp.shape[:-3] + (8,), dtype=torch.float32)
    for st in range(L // 32):  # fmaf(0, 0, p) == p: the padded columns change nothing
        for j in range(4):
            p = _fma32(vp[..., st, :, j], vp[..., st, :, j], p)
    g = torch.arange(8)
    for o in (1, 2, 4):
        p = p + p[..., g ^ o]
    return p[..., 0]


V4_PRODUCTS = {"tf32": 2.0 ** -10, "3xtf32": 2.0 ** -20, "exact": 0.0}  # u_prod of the dot's products


def v4_emulated(inputs, shape, bug: str | None = None, splits: int = 1, products: str = "tf32",
                center: str = "block") -> dict[str, torch.Tensor]:
    """knn_v4_tf32_ws's whole l2 flow on the CPU, through the launcher's own host code (_v4_flow: group_queries,
    grouped order, scatter back, fallback): per CTA of 32 grouped queries its centre c (a row of centres), |x − c|²
    and |y − c|² in the kernel's fp32 order (v4_row_sqnorm_emulated / v4_stage_sqnorm_emulated, from the unrounded
    centred values), the dot of the tf32-rounded centred rows (products exact in float64 here; the tensor core's
    accumulation order is not emulated: the certificate's γ covers it), the expansion (xn + yn) − 2·dot in fp32,
    WarpSelect of kc candidates (``splits`` > 1: split-N slices + merge, as knn_v4_merge), exact fp32 re-rank from
    the original rows, the certificate (u_prod of ``products``, centred, |x − c| of the query's own CTA centre) and
    the exact fallback for refused queries. ``products``: "tf32" (the kernel), "3xtf32" (hi·hi + hi·lo + lo·hi with
    hi = tf32(x'), lo = tf32(x' − hi)) or "exact"; ``center="mean"``: every CTA at the base mean (the flow before
    per-CTA centres). ``bug`` plants known-wrong variants: WarpSelect's (see warp_select_emulated), "centre0" (the
    certificate charges every query |x − centres[0]|, a merge / finish reading centre row 0) and "mean_norms" (the
    norms from the base mean while the dot uses the CTA centre). Returns dist, idx, ok (certified), centres and
    centre_of (query q's row of centres), all in the caller's order."""
    x, y = inputs["x"].float(), inputs["y"].float()
    Q, N, D, k = shape.Q, shape.N, shape.D, k_eff(shape)
    kc = v3_candidates(k, N)
    mu = y.mean(0, dtype=torch.float64).float()

    def search(xp, centres, res):
        exp_d = torch.empty((Q, N), dtype=torch.float32)
        xn = torch.empty(Q, dtype=torch.float32)
        for g in range(centres.shape[0]):  # one CTA: queries 32g .. 32g+31 of the grouped order
            rows = slice(V4_BQ * g, min(Q, V4_BQ * (g + 1)))
            c = centres[g]
            xc, yc = xp[rows] - c, y - c
            nc = mu if bug == "mean_norms" else c
            xn[rows] = v4_row_sqnorm_emulated(xp[rows] - nc)
            yn = v4_stage_sqnorm_emulated(y - nc)
            if products == "exact":
                dot = (xc.double() @ yc.double().T).float()
            else:
                xh, yh = tf32_round(xc).double(), tf32_round(yc).double()
                dot = xh @ yh.T
                if products == "3xtf32":
                    dot = (dot + xh @ tf32_round(yc - yh.float()).double().T
                           + tf32_round(xc - xh.float()).double() @ yh.T)
                dot = dot.float()
            exp_d[rows] = (xn[rows, None] + yn[None, :]) - 2.0 * dot
        if bug == "centre0":
            xn = v4_row_sqnorm_emulated(xp - centres[0])
        keys, last_key = warp_select_emulated(exp_d, kc, v4_kb(kc), bug=bug, splits=splits, return_last=True)
        ev, ci = unpack_keys(keys)
        lv, _ = unpack_keys(last_key)
        last = torch.where(last_key == _KEY_EMPTY, torch.full_like(lv, float("inf")), lv)
        ci = ci.clamp(max=N - 1)  # EMPTY slots only exist when kc >= N, i.e. never past the re-rank's k
        ex = ((xp[:, None, :] - y[ci]) ** 2).sum(-1)
        d, i = _lex_sort(ex, ci, k)
        res["dist"][:], res["idx"][:] = d.float(), i
        if kc >= N:
            return torch.ones(Q, dtype=torch.bool)
        dk = d[:, k - 1].double()
        return certified(last, dk, expansion_error(xn.double().sqrt(), dk, D, V4_PRODUCTS[products], True), D)

    out = make_outputs(shape, "fp32", x.device)
    ok, centres, row = _v4_flow(x, y, out, search, lambda xb: _stable_topk(_torch_dist(xb, y, "l2", False), k),
                                center=center)
    return {"dist": out["dist"], "idx": out["idx"], "ok": ok, "centres": centres, "centre_of": row}


_register_cuda()

# The benchmark targets (issue 20): base 1M x 128, 10k queries, k = 10: >= 150k queries/s exact in fp32
# (recall 1.0 under the rule above) and >= 300k with an fp16/bf16 base; plus Q = 1 (latency) and k = 100.
PROBLEM.headline = [
    (PROBLEM.shape(Q=10_000, N=1_000_000, D=128, k=10), ("fp32", "fp16")),
    (PROBLEM.shape(Q=1, N=1_000_000, D=128, k=10), ("fp32", "fp16")),
    (PROBLEM.shape(Q=10_000, N=1_000_000, D=128, k=100), ("fp32",)),
]
