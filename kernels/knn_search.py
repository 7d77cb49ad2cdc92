"""The exact kNN search flow shared by the Triton kernels (kernels/knn.py), the CUDA launchers
(harness/families/_knn_cuda.py) and the torch baseline: host code in torch, no kernel of its own.

The l2 fast path is exact because of the flow around the kernels, not because of any one kernel:

1. **group** (``group_queries``): queries ordered so the ones a block (a Triton program, a CUDA CTA) searches
   together come from one cluster, and each block centred at its queries' mean: the expansion's error grows with
   ‖x − c‖·‖y − c‖ for the centre c it is computed around;
2. **nominate**: the fast expansion ‖x'‖² + ‖y'‖² − 2x'·y' (tensor cores) keeps ``candidate_count(k, N)``
   candidates per query; when the query blocks fill under two waves of the SMs (Q = 1), the base is cut into
   slices searched in parallel (``base_slices``) and the slices' lists merged;
3. **re-rank**: exact differences Σ(x − y)² order the candidates by (distance, index) (``rerank_l2`` in torch; a
   second kernel on the GPU);
4. **certify** (``certified`` / ``expansion_error``): every row outside the candidates has expansion distance >= the
   last candidate's, so a margin wider than the expansion's error bound proves no such row reaches the k-th;
5. **fall back**: the queries the certificate refuses take an exact pass (direct differences), and every answer
   goes back to the caller's query order. ``grouped_search`` runs 1 and 5 around a launcher's own 2-4 (the CUDA v4
   launcher and its CPU emulation); the Triton launcher runs the same steps itself, with one more grouped search
   of the refused queries before the exact pass.

``torch_knn`` is the flow in torch with one centre (the base mean): the library baseline. ``stable_topk`` /
``lex_sort`` order (distance, index) pairs by the lower-index tie rule: the baseline's selection and its exact pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

U32 = 2.0 ** -24  # fp32 unit roundoff


def candidate_count(k: int, N: int, cap: int = 1 << 30) -> int:
    """Candidates kept from the fast expansion before the exact re-rank: k plus a margin of max(8, k/4), rounded up
    to a power of two (the kernels' list width, which they pad to anyway), at most N and ``cap``."""
    want = k + max(8, k // 4)
    return min(N, cap, 1 << (want - 1).bit_length())


def group_queries(x: torch.Tensor, y: torch.Tensor, block_q: int, pivots: int = 64
                  ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Per-block centres for the l2 expansion: (perm, centres [ceil(Q / block_q), D] fp32).

    The expansion's error bound grows with ‖x − c‖·‖y − c‖ for the rows near x (``expansion_error``), so the best
    centre c for a block is close to its own queries. Queries are ordered by their nearest of ``pivots`` evenly
    spaced base rows (a cheap Q×P×D fp32 expansion: grouping only decides speed, never correctness), pivots taken
    in a nearest-neighbour chain, and each
    block of ``block_q`` consecutive queries is centred at its queries' mean. On clustered data far from the
    origin (data=offset: |x − μ| ~ 540 at the base mean μ, ~11 at its block's mean) this turns a certificate that
    refuses every query into one that vouches for nearly all of them; Q = 1 is centred at the query itself (the
    expansion becomes the direct difference). perm is None when the order is kept (a single block)."""
    Q, D = x.shape
    xf = x.float()
    if Q <= block_q:
        return None, xf.mean(0, keepdim=True).contiguous()
    if x.is_meta or y.is_meta:  # the X-ray (shapes, no data): the grouping reads values, the launches do not
        return torch.arange(Q, device=x.device), xf.new_empty((-(-Q // block_q), D))
    P = min(pivots, y.shape[0])
    piv = y[torch.linspace(0, y.shape[0] - 1, P, device=y.device).long()].float().to(x.device)
    c0 = piv.mean(0)
    xc, pc = xf - c0, piv - c0
    pn = (pc * pc).sum(1)
    near = (pn[None, :] - 2.0 * (xc @ pc.T)).argmin(1)
    # pivots in a greedy nearest-neighbour chain (P² distances, on the host): pivots of one cluster end up adjacent,
    # so a block's queries come from one cluster rather than from the pivots' arbitrary numbering
    pd = (pn[:, None] + pn[None, :] - 2.0 * (pc @ pc.T)).cpu()
    rank = torch.empty(P, dtype=torch.long)
    seen = torch.zeros(P, dtype=torch.bool)
    cur = 0
    for r in range(P):
        rank[cur], seen[cur] = r, True
        if r + 1 < P:
            cur = int(torch.where(seen, torch.full_like(pd[cur], float("inf")), pd[cur]).argmin())
    perm = torch.sort(rank.to(x.device)[near], stable=True).indices
    xs = xf[perm]
    G = -(-Q // block_q)
    pad = G * block_q - Q
    sums = torch.cat([xs, xs.new_zeros((pad, D))]).view(G, block_q, D).sum(1)
    counts = torch.full((G, 1), float(block_q), device=x.device)
    counts[-1] = block_q - pad
    return perm, (sums / counts).contiguous()


def base_slices(blocks: int, N: int, tile: int, min_rows: int, slots: int) -> tuple[int, int]:
    """Split-N: (S, rows) — S base slices of ``rows`` rows each (whole ``tile``-row tiles; the last slice may be
    shorter) searched in parallel when ``blocks`` query blocks fill under two waves of ``slots`` (SMs × blocks per
    SM): Q = 1 would otherwise walk a 1M-row base on one SM, at ~1/132 of the GPU's bandwidth. Enough slices for
    ~2 waves, each at least ``min_rows`` rows; S = 1 keeps the single pass. The certificate stays sound: a row a
    slice dropped has a key above that slice's kc-th, which is at least the merged kc-th."""
    S = min(-(-2 * slots // max(1, blocks)), N // min_rows)
    if S <= 1:
        return 1, N
    rows = -(-N // S)
    rows = -(-rows // tile) * tile
    return -(-N // rows), rows


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


def lex_sort(v: torch.Tensor, i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row's (value, index) pairs lexicographically and keep k: index order, then a stable value sort."""
    o = torch.argsort(i, dim=1)
    i, v = i.gather(1, o), v.gather(1, o)
    o = torch.sort(v, dim=1, stable=True).indices[:, :k]
    return v.gather(1, o), i.gather(1, o)


def stable_topk(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest per row in (distance, index) order — the lower-index tie rule, for any tie-group size.

    torch.topk's order among equal values is unspecified: take a margin of candidates and order them by (distance,
    index) with two stable sorts. If the largest candidate equals the k-th (a tie group at rank k that may reach past
    the margin: > k+16 equal distances), that row gets a full stable sort — an O(Q) test, no extra pass over d."""
    n = d.shape[1]
    k2 = min(n, 2 * k + 16)
    v, i = torch.topk(d, k2, dim=1, largest=False, sorted=False)
    vmax = v.max(1).values
    v, i = lex_sort(v, i, k)
    if k2 < n:
        wide = vmax == v[:, k - 1]
        if bool(wide.any()):
            rows = wide.nonzero()[:, 0]
            sv, si = torch.sort(d[rows], dim=1, stable=True)
            v[rows], i[rows] = sv[:, :k], si[:, :k]
    return v.float().contiguous(), i.contiguous()


def rerank_l2(x: torch.Tensor, y: torch.Tensor, cand: torch.Tensor, last: torch.Tensor, k: int, nx: torch.Tensor,
              u_prod: float, centred: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The re-rank step in torch (the baseline's, and the emulation of the kernels' second stage): exact fp32
    differences Σ(x−y)² of the candidates ``cand`` [q, kc] (ordered by the expansion), lexicographic (distance,
    index) order, the k best, and the certificate per query (True = provably the exact top k)."""
    ex = ((x[:, None, :].float() - y[cand].float()) ** 2).sum(-1)
    v, i = lex_sort(ex, cand, k)
    if cand.shape[1] >= y.shape[0]:
        return v, i, torch.ones_like(last, dtype=torch.bool)
    dk = v[:, k - 1]
    return v, i, certified(last, dk, expansion_error(nx, dk, x.shape[1], u_prod, centred), x.shape[1])


Search = Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]
Fallback = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def grouped_search(x: torch.Tensor, y: torch.Tensor, out: dict[str, torch.Tensor], block_q: int, search: Search,
                   fallback: Fallback, center: str = "block") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The host side of a grouped, certified l2 search around a launcher's kernels (the CUDA v4 launcher and its
    CPU emulation run the same code): group_queries orders the queries so each block's ``block_q`` come from one
    cluster and gives each block's centre (Q <= block_q: the queries' own mean, Q = 1: the query itself);
    ``search(xp, centres, res)`` fills res["dist"/"idx"] in the grouped order and returns the certificates [Q]; the
    refused rows go to ``fallback(x_rows) -> (dist, idx)``; everything is scattered back to the caller's order.
    center="mean": every block at the base mean, order kept (the pre-grouping flow; emulation what-if only).
    Returns (certified [Q] bool, centres [G, D], centre_of [Q]) in the caller's order."""
    Q, D = x.shape
    if center == "block":
        perm, centres = group_queries(x, y, block_q)
    else:
        perm = None
        mu = y.float().mean(0, dtype=torch.float64).float()
        centres = mu.expand(-(-Q // block_q), D).contiguous()
    xp = x if perm is None else x[perm].contiguous()
    res = out if perm is None else {"dist": torch.empty_like(out["dist"]), "idx": torch.empty_like(out["idx"])}
    ok = search(xp, centres, res).bool()
    bad = (~ok).nonzero()[:, 0]
    if bad.numel():  # certificate refused: exact direct differences
        res["dist"][bad], res["idx"][bad] = fallback(xp[bad].contiguous())
    row = torch.arange(Q, device=x.device) // block_q
    if perm is not None:
        out["dist"][perm], out["idx"][perm] = res["dist"], res["idx"]
        okc, rowc = torch.empty_like(ok), torch.empty_like(row)
        okc[perm], rowc[perm] = ok, row
        ok, row = okc, rowc
    return ok, centres, row


def torch_dist(x: torch.Tensor, y: torch.Tensor, metric: str, mm: bool) -> torch.Tensor:
    """fp32 distances [q, n]: l2 as cdist's direct differences, or with ``mm`` as the expansion on one cuBLAS matmul;
    ip and cos as one matmul."""
    x, y = x.float(), y.float()
    if metric == "l2":
        if mm:
            return (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
        return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    if metric == "ip":
        return -(x @ y.T)
    return 1.0 - torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(y, dim=1).T


def torch_knn(x: torch.Tensor, y: torch.Tensor, k: int, metric: str, mm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch baseline: the k (<= N) nearest rows of ``y`` per row of ``x`` in (distance, index) order, fp32
    distances. ``mm=False``: cdist's direct differences + stable_topk (exact as it stands). ``mm=True``, l2: what
    users run (a cuBLAS fp32 expansion + topk) plus the cheap part that makes it exact: the expansion on data centred
    at the base mean keeps candidate_count(k, N) candidates, rerank_l2 ranks and certifies them (a Q·kc·D gather),
    refused queries take cdist. ip / cos: one matmul + stable_topk."""
    Q, N = x.shape[0], y.shape[0]
    # query chunks keep the fp32 Q×N matrix under ~4 GB (the headline's is 40 GB)
    chunk = max(1, min(Q, (1 << 30) // N))
    rerank = mm and metric == "l2"
    if rerank:  # centre at the base mean: the expansion's error then scales with the spread, not the offset
        yf = y.float()
        mu = yf.mean(0, dtype=torch.float64).float()
        yc = yf - mu
        ycn = (yc * yc).sum(1)
        kc = candidate_count(k, N)
    ds, is_ = [], []
    for q0 in range(0, Q, chunk):
        xq = x[q0:q0 + chunk].float()
        if not rerank:
            d, i = stable_topk(torch_dist(xq, y, metric, mm), k)
        else:
            xc = xq - mu
            xcn = (xc * xc).sum(1)
            cv, ci = torch.topk(xcn[:, None] + ycn[None, :] - 2.0 * (xc @ yc.T), kc, dim=1, largest=False)
            d, i, ok = rerank_l2(xq, yf, ci, cv[:, -1], k, xcn.sqrt(), 0.0, True)
            if not bool(ok.all()):  # margin not provably wide enough: direct differences for those queries
                rows = (~ok).nonzero()[:, 0]
                d[rows], i[rows] = stable_topk(torch_dist(xq[rows], y, "l2", False), k)
        ds.append(d.float())
        is_.append(i)
    return torch.cat(ds).contiguous(), torch.cat(is_).contiguous()
