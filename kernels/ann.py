"""IVF search in Triton: coarse search, IVF-Flat and IVF-PQ (ADC) list scans fused with a running top-k, and the
exact re-rank of PQ candidates. The index layout is the ``ann`` family's (harness/families/ann.py): centroids
[nlist, D], ``list_offsets`` [nlist + 1], entries in list order (``list_ids`` [N], ``list_vecs`` [N, D] fp32 or
``list_codes`` [N, m] uint8), PQ ``codebooks`` [m, 256, D/m] of the residuals x − c.

Stages of ``ivf_search``:

1. **Coarse**: the nprobe nearest centroids of every query — ``kernels.knn.knn`` (a fused tl.dot distance tile with
   a running top-k, exact fp32 re-rank; 2·Q·nlist·D FLOPs, 10.7 GFLOP at the headline: ~0.3 ms, never the
   bottleneck). nprobe = nlist probes every list (no selection).
2. **Scan** (``_ivf_scan_kernel``): program (q, g) walks probes g·PPG .. (g+1)·PPG − 1 of query q in tiles of
   BLOCK_N entries and keeps its K best (distance, entry) keys (replace-max: a tile costs one compare per entry
   unless one of its keys beats the running K-th); the G partial lists are merged on the device (``select_keys``).
   G > 1 only when Q alone would not fill the SMs (Q = 1: one program per probe). What it should change against
   torch_ivf: no [q, nprobe·L] gathered copy of the entries and no full top-k over it — the vectors or codes are
   read once, straight from the lists, and the selection stays in registers. Under TRITON_INTERPRET the scan takes
   a whole list per tile and merges a tile into the running list by ranks (``RANK_MERGE``: seven reductions instead
   of two per inserted key; the interpreter pays ~1 ms per reduction); the GPU path is the replace-max loop, which
   tests/test_ann.py also runs on the CPU.
   * Flat: direct differences Σ(x − v)² in fp32 (the distances FAISS's IVF-Flat computes; no expansion, so the
     result is exact under the kNN rule whatever the offset). Napkin math per query: nprobe·L·4D bytes of vectors
     (L = N/nlist; headline nprobe 32: 32 × 244 × 512 B = 4.0 MB, 40 GB for Q = 10k: ~12 ms at 3.35 TB/s if
     every probe misses L2) and 3·nprobe·L·D FLOPs (~3 per 4 bytes: memory-bound).
   * PQ: per (query, list) the lookup table lut[j][c] = ‖(x − c_l)_j − C_j[c]‖² (m × 256 fp32, direct
     differences) goes to a per-program scratch row (L1/L2-resident: Triton has no explicit shared memory), then
     every entry's distance is Σ_j lut[j][code_j] (m gathered loads). Per (query, list): 256·D·3 FLOPs and 1 KB × D
     of codebook reads (L2) for the table, L·m code bytes (headline m = 16: 3.9 KB) + L·m table loads for the scan.
3. **Re-rank** (PQ, ``rerank = r > 0``): the K = k·r best ADC candidates get exact distances Σ(x − base[id])² from
   the raw vectors (``_rerank_kernel``, k·r·4D bytes per query) and the k best of those are returned.

Keys are ``(orderable fp32 bits << 32) | entry`` (kernels.knn's packing), so exact ties go to the lower list position;
the family does not demand an order among exact ties (FAISS's differs). Slots a query cannot fill (its probed
lists hold fewer than k entries) come back as idx −1, distance +inf.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._tuning import interpreter
from kernels.knn import unpack_keys

INT64_MAX = tl.constexpr(9223372036854775807)
INT64_MIN = tl.constexpr(-9223372036854775808)
MAX_LIST = 512  # running list width (K_PAD) at most: the replace-max loop is O(K) per inserting tile


@triton.jit
def _ivf_scan_kernel(
    x_ptr, cent_ptr, probe_ptr, off_ptr, vec_ptr, codes_ptr, cb_ptr, lut_ptr, keys_ptr,
    D, NPROBE, PPG, K, M, DSUB,
    PQ: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, K_PAD: tl.constexpr,
    M_PAD: tl.constexpr, DSUB_PAD: tl.constexpr, JB: tl.constexpr, RANK_MERGE: tl.constexpr = False,
):
    """Program (q, g): probes [g·PPG, min(NPROBE, (g+1)·PPG)) of query q -> its K best keys, unsorted, into
    keys_ptr[(q·G + g)·K_PAD + 0 .. K_PAD) (columns >= K hold INT64_MIN padding, unfilled slots INT64_MAX − col).

    x_ptr [Q, D] fp32, cent_ptr [nlist, D] fp32, probe_ptr [Q, NPROBE] int64, off_ptr [nlist + 1] int64;
    flat: vec_ptr [N, D] fp32 (list order); PQ: codes_ptr [N, M] uint8, cb_ptr [M, 256, DSUB] fp32, lut_ptr a
    scratch row of M·256 fp32 per program."""
    q = tl.program_id(0)
    g = tl.program_id(1)
    prog = q * tl.num_programs(1) + g
    cols = tl.arange(0, K_PAD)
    # distinct fake keys above every real one, so the replace step always hits exactly one slot
    run = tl.where(cols < K, INT64_MAX - cols.to(tl.int64), INT64_MIN)
    curmax = tl.max(run, axis=0)
    offs_d = tl.arange(0, BLOCK_D)
    offs_j = tl.arange(0, M_PAD)
    offs_c = tl.arange(0, 256)
    offs_i = tl.arange(0, DSUB_PAD)
    p_end = tl.minimum(NPROBE, (g + 1) * PPG)
    for p in range(g * PPG, p_end):
        lst = tl.load(probe_ptr + q * NPROBE + p)
        start = tl.load(off_ptr + lst)
        end = tl.load(off_ptr + lst + 1)
        if PQ:
            tl.debug_barrier()  # the previous list's table is no longer read
            # JB sub-quantizers per step: a [JB, 256, DSUB_PAD] block of codebook and residual differences
            offs_jb = tl.arange(0, JB)
            im = offs_i < DSUB
            for j0 in range(0, M, JB):
                jm = (j0 + offs_jb) < M
                dim = (j0 + offs_jb)[:, None] * DSUB + offs_i[None, :]  # [JB, DSUB_PAD] dimension index
                rm = jm[:, None] & im[None, :]
                r = (tl.load(x_ptr + q * D + dim, mask=rm, other=0.0)
                     - tl.load(cent_ptr + lst * D + dim, mask=rm, other=0.0))
                c = tl.load(cb_ptr + ((j0 + offs_jb)[:, None, None] * 256 + offs_c[None, :, None]) * DSUB
                            + offs_i[None, None, :], mask=rm[:, None, :], other=0.0)
                diff = tl.where(rm[:, None, :], r[:, None, :] - c, 0.0)
                tl.store(lut_ptr + prog * M * 256 + (j0 + offs_jb)[:, None] * 256 + offs_c[None, :],
                         tl.sum(diff * diff, axis=2), mask=jm[:, None])
            tl.debug_barrier()  # the table is complete before any entry reads it
        for n0 in range(start, end, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            nm = offs_n < end
            if PQ:
                jm = offs_j < M
                cm = nm[:, None] & jm[None, :]
                code = tl.load(codes_ptr + offs_n[:, None] * M + offs_j[None, :], mask=cm, other=0).to(tl.int32)
                t = tl.load(lut_ptr + prog * M * 256 + offs_j[None, :] * 256 + code, mask=cm, other=0.0)
                d = tl.sum(t, axis=1)
            else:
                d = tl.zeros((BLOCK_N,), dtype=tl.float32)
                for d0 in range(0, D, BLOCK_D):
                    dm = (d0 + offs_d) < D
                    xb = tl.load(x_ptr + q * D + d0 + offs_d, mask=dm, other=0.0)
                    vb = tl.load(vec_ptr + offs_n[:, None] * D + (d0 + offs_d)[None, :],
                                 mask=nm[:, None] & dm[None, :], other=0.0)
                    diff = tl.where(dm[None, :], xb[None, :] - vb, 0.0)
                    d += tl.sum(diff * diff, axis=1)
            # kernels.knn._pack inlined: under TRITON_INTERPRET every device-function call re-patches the
            # language (~0.25 ms), which is most of an interpreted scan when done per tile
            bits = d.to(tl.int32, bitcast=True)
            bits = tl.where(bits == -2147483648, 0, bits)  # -0.0 ties with +0.0
            key32 = bits ^ ((bits >> 31) & 0x7FFFFFFF)
            keys = tl.where(nm, (key32.to(tl.int64) << 32) | offs_n.to(tl.int64), INT64_MAX)
            n_cand = tl.sum((keys < curmax).to(tl.int32), axis=0)
            if RANK_MERGE and n_cand > 2:
                # all at once: the rank of every key among run ∪ tile (ties: run first, then position), and the K
                # lowest ranks become the run. O((K_PAD + BLOCK_N)²) compares in seven reductions: for the
                # interpreter, where a reduction costs ~1 ms and the loop below spends two per insert
                rk = tl.where(run == INT64_MIN, INT64_MAX, run)
                tn = tl.arange(0, BLOCK_N)
                t_rank = (tl.sum((rk[None, :] <= keys[:, None]).to(tl.int32), axis=1)
                          + tl.sum(((keys[None, :] < keys[:, None]) | ((keys[None, :] == keys[:, None])
                                                                      & (tn[None, :] < tn[:, None]))).to(tl.int32),
                                   axis=1))
                r_rank = (tl.sum(((rk[None, :] < rk[:, None]) | ((rk[None, :] == rk[:, None])
                                                                & (cols[None, :] < cols[:, None]))).to(tl.int32),
                                 axis=1)
                          + tl.sum((keys[None, :] < rk[:, None]).to(tl.int32), axis=1))
                new = tl.maximum(tl.max(tl.where(r_rank[None, :] == cols[:, None], rk[None, :], INT64_MIN), axis=1),
                                 tl.max(tl.where(t_rank[None, :] == cols[:, None], keys[None, :], INT64_MIN), axis=1))
                run = tl.where(cols < K, new, INT64_MIN)
                curmax = tl.max(run, axis=0)
            else:
                # at most K extractions: after them every remaining key of the tile is above the K kept
                for _ in range(tl.minimum(n_cand, K)):
                    mn = tl.min(keys, axis=0)
                    run = tl.where((run == curmax) & (mn < curmax), mn, run)
                    keys = tl.where(keys == mn, INT64_MAX, keys)
                    curmax = tl.max(run, axis=0)
    tl.store(keys_ptr + prog * K_PAD + cols, run)


@triton.jit
def _rerank_kernel(x_ptr, base_ptr, ids_ptr, out_ptr, D, KR, KR_PAD: tl.constexpr, BLOCK_D: tl.constexpr):
    """Exact fp32 distances Σ(x − base[id])² of query q's KR candidates (ids_ptr [Q, KR], −1 = none -> +inf) into
    out_ptr [Q, KR]: direct differences from the raw vectors, KR·4D bytes per query."""
    q = tl.program_id(0)
    cols = tl.arange(0, KR_PAD)
    cm = cols < KR
    ids = tl.load(ids_ptr + q * KR + cols, mask=cm, other=-1)
    ok = ids >= 0
    offs_d = tl.arange(0, BLOCK_D)
    acc = tl.zeros((KR_PAD,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dm = (d0 + offs_d) < D
        xb = tl.load(x_ptr + q * D + d0 + offs_d, mask=dm, other=0.0)
        yb = tl.load(base_ptr + tl.where(ok, ids, 0)[:, None] * D + (d0 + offs_d)[None, :],
                     mask=ok[:, None] & dm[None, :], other=0.0)
        diff = tl.where(dm[None, :], xb[None, :] - yb, 0.0)
        acc += tl.sum(diff * diff, axis=1)
    tl.store(out_ptr + q * KR + cols, tl.where(ok, acc, float("inf")), mask=cm)


# ---------------------------------------------------------------------------------------------- host side
def probe_groups(Q: int, nprobe: int, on_gpu: bool) -> int:
    """G: programs per query. On a GPU enough (query, probe-group) programs for ~4 waves of the SMs (Q = 10k needs
    none; Q = 1 gets one program per probe); under the interpreter one program per query (fewer, longer loops)."""
    if not on_gpu:
        return 1
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return max(1, min(nprobe, -(-4 * sms // max(1, Q))))


def select_keys(keys: torch.Tensor, K: int) -> torch.Tensor:
    """[Q, G·K_PAD] raw program keys -> the K smallest per query, ascending (padding dropped; unfilled slots, which
    sort after every real key, stay INT64_MAX − col)."""
    k = torch.where(keys == -(1 << 63), torch.full_like(keys, (1 << 63) - 1), keys)
    return torch.topk(k, K, dim=1, largest=False, sorted=True).values


def empty_keys(keys: torch.Tensor) -> torch.Tensor:
    """True where a key is an unfilled slot (no entry): INT64_MAX − col for col < K_PAD <= MAX_LIST."""
    return keys >= (1 << 63) - 1 - MAX_LIST


def coarse(x: torch.Tensor, centroids: torch.Tensor, nprobe: int) -> torch.Tensor:
    """[Q, nprobe] int64 probed lists: the nprobe nearest centroids (kernels.knn, exact l2), every list when
    nprobe = nlist."""
    Q, nlist = x.shape[0], centroids.shape[0]
    if nprobe >= nlist:
        return torch.arange(nlist, device=x.device).expand(Q, nlist).contiguous()
    if x.is_meta:  # the X-ray's meta tensors: the scan is what it inspects here (the kNN kernel is X-rayed with knn)
        return torch.empty((Q, nprobe), dtype=torch.int64, device=x.device)
    from kernels.knn import knn

    return knn(x, centroids, nprobe, "l2")[1]


def ivf_search(x: torch.Tensor, centroids: torch.Tensor, offsets: torch.Tensor, ids: torch.Tensor, k: int,
               nprobe: int, vecs: torch.Tensor | None = None, codes: torch.Tensor | None = None,
               codebooks: torch.Tensor | None = None, base: torch.Tensor | None = None, rerank: int = 0,
               probe: torch.Tensor | None = None, groups: int | None = None, rank_merge: bool | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IVF-Flat (``vecs``) or IVF-PQ (``codes`` + ``codebooks``; ``base`` and ``rerank`` = r > 0 for the exact
    re-rank of k·r candidates) search -> (dist [Q, k] fp32 ascending, idx [Q, k] int64 base ids, probe [Q, nprobe]).
    ``probe``: the lists to scan (default: the coarse search's); ``groups``: programs per query (default
    ``probe_groups``); ``rank_merge``: the interpreter's all-at-once merge (default: under the interpreter only;
    the GPU's replace-max loop is what runs with False)."""
    Q, D = x.shape
    pq = codes is not None
    if probe is None:
        probe = coarse(x, centroids, nprobe)
    probe = probe.contiguous()
    nprobe = probe.shape[1]
    K = k * rerank if (pq and rerank > 0) else k
    if K > MAX_LIST:
        raise ValueError(f"ann: {K} candidates per query > {MAX_LIST} (the running list's limit)")
    K_PAD = max(16, triton.next_power_of_2(K))
    G = groups or probe_groups(Q, nprobe, x.is_cuda)
    PPG = -(-nprobe // G)
    G = -(-nprobe // PPG)
    keys = torch.empty((Q, G, K_PAD), device=x.device, dtype=torch.int64)
    x = x.contiguous()
    # the interpreter pays per operation, not per element: a whole list per tile, every sub-quantizer per step
    interp = interpreter()
    block_n = 256 if interp else 64
    rank = interp if rank_merge is None else rank_merge
    if pq:
        m = codes.shape[1]
        dsub = D // m
        m_pad, ds_pad = max(2, triton.next_power_of_2(m)), max(2, triton.next_power_of_2(dsub))
        jb = m_pad if interp else max(1, min(m_pad, 4096 // (256 * ds_pad)))
        lut = torch.empty((Q * G, m * 256), device=x.device, dtype=torch.float32)
        _ivf_scan_kernel[(Q, G)](
            x, centroids, probe, offsets, x, codes, codebooks, lut, keys, D, nprobe, PPG, K, m, dsub,
            PQ=True, BLOCK_N=block_n, BLOCK_D=16, K_PAD=K_PAD, M_PAD=m_pad, DSUB_PAD=ds_pad, JB=jb,
            RANK_MERGE=rank, num_warps=4)
    else:
        block_d = max(16, triton.next_power_of_2(D)) if interp else min(64, max(16, triton.next_power_of_2(D)))
        _ivf_scan_kernel[(Q, G)](
            x, centroids, probe, offsets, vecs, x, x, x, keys, D, nprobe, PPG, K, 1, 1,
            PQ=False, BLOCK_N=block_n, BLOCK_D=block_d, K_PAD=K_PAD, M_PAD=2, DSUB_PAD=2, JB=1,
            RANK_MERGE=rank, num_warps=4)
    best = select_keys(keys.view(Q, G * K_PAD), K)
    empty = empty_keys(best)
    d, entry = unpack_keys(best)
    idx = torch.where(empty, torch.full_like(entry, -1), ids[entry.clamp(max=ids.shape[0] - 1)])
    d = torch.where(empty, torch.full_like(d, float("inf")), d)
    if pq and rerank > 0:
        ex = torch.empty((Q, K), device=x.device, dtype=torch.float32)
        _rerank_kernel[(Q,)](x, base, idx.contiguous(), ex, D, K, KR_PAD=K_PAD,
                             BLOCK_D=min(32, max(16, triton.next_power_of_2(D))), num_warps=4)
        d, idx = rank_exact(ex, idx, k)
    return d[:, :k].contiguous(), idx[:, :k].contiguous(), probe


def rank_exact(d: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of candidates (d [Q, KR] fp32, idx [Q, KR], −1 = none) in (distance, id) order on the device."""
    key = _pack_host(d, torch.where(idx < 0, torch.full_like(idx, 0xFFFFFFFF), idx))
    key = torch.where(idx < 0, torch.full_like(key, (1 << 63) - 1), key)
    best = torch.topk(key, k, dim=1, largest=False, sorted=True).values
    dd, ii = unpack_keys(best)
    none = best == (1 << 63) - 1
    return torch.where(none, torch.full_like(dd, float("inf")), dd), torch.where(none, torch.full_like(ii, -1), ii)


def _pack_host(d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """kernels.knn._pack on the host side (torch): orderable fp32 bits << 32 | index (index < 2^32)."""
    bits = d.float().contiguous().view(torch.int32)
    bits = torch.where(bits == -(1 << 31), torch.zeros_like(bits), bits)
    key32 = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (key32.long() << 32) | idx.long()
