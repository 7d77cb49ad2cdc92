"""Bit-exact CPU emulation of the CUDA quant_gemm rungs v4-v7 in cuda_src/quant_gemm.cu (they cannot run here).

The 32-bit steps are done as the kernel does them -- ``lop3`` by its truth table, ``prmt`` by its byte selector,
shifts and xors on uint32 -- with the constants parsed from the .cu itself (the ``#define QG_*`` block), so a changed
mask or LUT there changes the emulation too. Arithmetic is emulated op by op with one correct rounding each: fp16/bf16
``hsub2``/``hfma2`` (computed exactly in float64, rounded to 11 / 8 significant bits), fp32 ``fmaf``/adds (float64 ->
float32), in the kernel's order: v4's exact (q - z) in fp16/bf16 widened to fp32 and accumulated with fmaf over a
64-k task, the group-scale FFMA once per task, the warp shuffles (xor 8,
then 16), the 4-warp shared-memory sum, the split partials summed in split order, one rounding to the output dtype.
The index math (64-k tasks, SPLIT ranges, 16 slices per CTA, 16 columns per thread, MT-row blocks) is the kernel's.
``MUTATIONS`` are known-wrong variants the tests must see fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

CU = Path(__file__).resolve().parent.parent / "cuda_src" / "quant_gemm.cu"
MUTATIONS = ("lut", "bf16_in_place_hi", "column_pairs", "no_i8_flip", "group_index", "half_partials")


def constants(path: Path = CU) -> dict[str, int]:
    text = path.read_text()
    return {k: int(v, 16) for k, v in re.findall(r"#define (QG_\w+) (0x[0-9A-Fa-f]+)u?", text)}


def lop3(a: np.ndarray, b: int, c: int, lut: int) -> np.ndarray:
    """PTX lop3.b32 from its 8-bit truth table (a = 0xF0, b = 0xCC, c = 0xAA convention)."""
    a = a.astype(np.uint32)
    b, c = np.uint32(b), np.uint32(c)
    out = np.zeros_like(a)
    for i in range(8):
        if lut >> i & 1:
            out |= (a if i & 4 else ~a) & (b if i & 2 else ~b) & (c if i & 1 else ~c)
    return out


def prmt(a: np.ndarray, b: int, sel: int) -> np.ndarray:
    """PTX prmt.b32 (default mode): output byte i = byte sel[i] of the 8-byte {b, a}; no sign-replicate bit."""
    a = a.astype(np.uint64)
    src = a | (np.uint64(b) << np.uint64(32))
    out = np.zeros(a.shape, dtype=np.uint64)
    for i in range(4):
        s = sel >> (4 * i) & 0xF
        assert s < 8, "sign-replicate selectors are not emulated"
        out |= ((src >> np.uint64(8 * s)) & np.uint64(0xFF)) << np.uint64(8 * i)
    return out.astype(np.uint32)


def rnd(v: np.ndarray, bits: int) -> np.ndarray:
    """Round float64 to ``bits`` significant bits, ties to even (fp16: 11, bf16: 8; no subnormals); fp16 results of
    magnitude >= 65520 (max 65504 + half an ulp) overflow to inf, as the hardware's round-to-nearest does."""
    m, e = np.frexp(np.asarray(v, dtype=np.float64))
    out = np.ldexp(np.rint(m * (1 << bits)), e - bits)
    if bits == 11:
        out = np.where(np.abs(out) >= 65520.0, np.copysign(np.inf, out), out)
    return out


def halves(u: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """uint32 holding a half2 / bfloat162 -> (low, high) as float64."""
    lo, hi = (u & np.uint32(0xFFFF)).astype(np.uint16), (u >> np.uint32(16)).astype(np.uint16)
    if dtype == "fp16":
        return lo.view(np.float16).astype(np.float64), hi.view(np.float16).astype(np.float64)
    f = (lambda h: (h.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64))
    return f(lo), f(hi)


def f32(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).astype(np.float32).astype(np.float64)


def _words(rows: np.ndarray) -> np.ndarray:
    """[..., 16] uint8 (one 16-byte load) -> [..., 4] little-endian uint32 words."""
    return np.ascontiguousarray(rows).view(np.uint32)


def _to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


def _finish(acc_slices, M, N, MT, split_parts, colscale, dtype):
    """acc_slices[s][sl]: fp32 [M, N] per split and slice -> y (float64 values of the dtype)."""
    bits = 11 if dtype == "fp16" else 8
    parts = []
    for sl_acc in acc_slices:
        warp = [f32(f32(sl_acc[4 * w] + sl_acc[4 * w + 1]) + f32(sl_acc[4 * w + 2] + sl_acc[4 * w + 3]))
                for w in range(4)]  # shfl xor 8 pairs slices (0,1), (2,3); xor 16 adds the pairs
        parts.append(f32(f32(f32(warp[0] + warp[1]) + warp[2]) + warp[3]))
    if len(parts) == 1:
        v = parts[0]
    else:
        v = np.zeros((M, N))
        for p in parts:  # v starts at 0.f and adds splits 0, 1, ... (ws read back with __ldcg)
            v = f32(v + p)
    if colscale is not None:
        v = f32(v * colscale[None, :])
    return rnd(v, bits)


def v4_w4a16(x, packed, scale, zero, group, split, mutate: str | None = None, consts=None) -> np.ndarray:
    """Emulate qgemm_v4_w4a16_gemv; x [M, K] fp16/bf16, packed uint8 [K/2, N], scale [K/g, N], zero or None."""
    with np.errstate(invalid="ignore", over="ignore"):  # a mutated LUT makes NaN/Inf bit patterns on purpose
        return _v4(x, packed, scale, zero, group, split, mutate, consts)


def _v4(x, packed, scale, zero, group, split, mutate, consts):
    C = consts or constants()
    dtype = "fp16" if x.dtype == torch.float16 else "bf16"
    bits = 11 if dtype == "fp16" else 8
    M, K = x.shape
    N = packed.shape[1]
    KP, R, SLICES = 32, 4, 16
    assert N % 16 == 0 and group % 64 == 0
    xs, pk, sc = _to_np(x), _to_np(packed).astype(np.uint8), _to_np(scale)
    zr = _to_np(zero).astype(np.float64) if zero is not None else np.full(sc.shape, 8.0)
    lut = C["QG_LOP3_AND_OR"] ^ (0x10 if mutate == "lut" else 0)
    magic = C["QG_MAGIC_FP16"] if dtype == "fp16" else C["QG_MAGIC_BF16"]
    mag = 1024.0 if dtype == "fp16" else 128.0
    hi_in_place = dtype == "fp16" or mutate == "bf16_in_place_hi"
    half = mutate == "half_partials"  # known-wrong: the pre-fp32 design (8 products per hfma2 chain)
    T = N // 16  # column-threads, vectorised: thread c owns columns 16c .. 16c + 15
    tasks = K // (2 * KP)
    per_split = -(-tasks // split)
    # word w of a thread holds columns 4w..4w+3; pair h=0 -> (4w, 4w+2), h=1 -> (4w+1, 4w+3)
    pair_cols = [(0, 2), (1, 3)] if mutate != "column_pairs" else [(0, 1), (2, 3)]
    acc_splits = []
    for s in range(split):
        t_begin, t_end = s * per_split, min(s * per_split + per_split, tasks)
        slices = []
        for sl in range(SLICES):
            acc = np.zeros((M, T, 16))
            for t in range(t_begin + sl, t_end, SLICES):
                p0 = t * KP
                g = (p0 if mutate == "group_index" else 2 * p0) // group  # mutation: packed row taken for k
                sg = sc[g].reshape(T, 16).astype(np.float64)  # fp16/bf16 -> float exactly
                zg = zr[g].reshape(T, 16)
                part = np.zeros((M, T, 16))  # fp32 (q - z) . x of this task per column
                hpart = np.zeros((M, T, 16))  # mutation half_partials: 8-k partials in fp16 / bf16 (overflow: inf)
                for rb in range(0, KP, R):
                    for r in range(R):
                        p = p0 + rb + r
                        words = _words(pk[p].reshape(T, 16))  # [T, 4]
                        x0, x1 = xs[:, 2 * p], xs[:, 2 * p + 1]  # widened to fp32: exact
                        for w in range(4):
                            u = words[:, w]
                            if dtype == "fp16":
                                raw = [lop3(u, C["QG_MASK_LO"], magic, lut),
                                       lop3(u, C["QG_MASK_HI_FP16"], magic, lut),
                                       lop3(u >> np.uint32(8), C["QG_MASK_LO"], magic, lut),
                                       lop3(u >> np.uint32(8), C["QG_MASK_HI_FP16"], magic, lut)]
                            elif hi_in_place:  # mutation: the fp16 recipe on bf16 (mantissa too short)
                                raw = [lop3(u, C["QG_MASK_LO"], magic, lut),
                                       lop3(u, C["QG_MASK_HI_FP16"], magic, lut),
                                       lop3(u >> np.uint32(8), C["QG_MASK_LO"], magic, lut),
                                       lop3(u >> np.uint32(8), C["QG_MASK_HI_FP16"], magic, lut)]
                            else:
                                raw = [lop3(u >> np.uint32(sh), C["QG_MASK_LO"], magic, lut) for sh in (0, 4, 8, 12)]
                            for h in range(2):
                                ca, cb = (4 * w + pair_cols[h][0], 4 * w + pair_cols[h][1])
                                z2 = np.stack([zg[:, ca], zg[:, cb]], axis=-1)
                                lo = np.stack(halves(raw[2 * h], dtype), axis=-1)
                                hi = np.stack(halves(raw[2 * h + 1], dtype), axis=-1)
                                q_lo = rnd(lo - rnd(mag + z2, bits), bits)  # hsub2 against {MAGIC + z}
                                if hi_in_place:  # hfma2(hi, 1/16, -(64 + z))
                                    q_hi = rnd(hi * 0.0625 + rnd(-(64.0 + z2), bits), bits)
                                else:
                                    q_hi = rnd(hi - rnd(mag + z2, bits), bits)
                                for lane, col in enumerate((ca, cb)):  # fmaf(q_hi, x1, fmaf(q_lo, x0, part))
                                    if half:  # the old hfma2 chain in the activation dtype
                                        pa = rnd(q_lo[None, :, lane] * x0[:, None] + hpart[:, :, col], bits)
                                        hpart[:, :, col] = rnd(q_hi[None, :, lane] * x1[:, None] + pa, bits)
                                        continue
                                    pa = f32(q_lo[None, :, lane] * x0[:, None] + part[:, :, col])
                                    part[:, :, col] = f32(q_hi[None, :, lane] * x1[:, None] + pa)
                    if half:  # ... widened and scaled every 8 k
                        acc = f32(sg[None, :, :] * hpart + acc)
                        hpart[:] = 0.0
                if not half:
                    acc = f32(sg[None, :, :] * part + acc)  # the group scale once per task
            slices.append(acc.reshape(M, N))
        acc_splits.append(slices)
    return _finish(acc_splits, M, N, 1, split, None, dtype)


def v5_w8a16(x, qw, scale, split, mutate: str | None = None, consts=None) -> np.ndarray:
    """Emulate qgemm_v5_w8a16_gemv; x [M, K] fp16/bf16, qw int8 [K, N], scale fp32 [N]."""
    C = consts or constants()
    dtype = "fp16" if x.dtype == torch.float16 else "bf16"
    M, K = x.shape
    N = qw.shape[1]
    KR, SLICES = 64, 16
    assert N % 16 == 0
    xs, sc = _to_np(x), _to_np(scale).astype(np.float32).astype(np.float64)
    q8 = qw.detach().cpu().numpy().view(np.uint8)
    T = N // 16
    tasks = -(-K // KR)
    per_split = -(-tasks // split)
    unmagic = -(8388608.0 + 128.0)
    flip = 0 if mutate == "no_i8_flip" else C["QG_I8_FLIP"]
    acc_splits = []
    for s in range(split):
        t_begin, t_end = s * per_split, min(s * per_split + per_split, tasks)
        slices = []
        for sl in range(SLICES):
            acc = np.zeros((M, T, 16))
            for t in range(t_begin + sl, t_end, SLICES):
                for k in range(t * KR, t * KR + KR):
                    row = q8[k].reshape(T, 16) if k < K else np.zeros((T, 16), np.uint8)
                    xk = xs[:, k] if k < K else np.zeros(M)
                    words = _words(row) ^ np.uint32(flip)
                    for w in range(4):
                        for j in range(4):
                            f = prmt(words[:, w], C["QG_MAGIC_F32"], C["QG_PRMT_I8_F32"] | j).view(np.float32)
                            q = f32(f.astype(np.float64) + unmagic)
                            acc[:, :, 4 * w + j] = f32(xk[:, None] * q[None, :] + acc[:, :, 4 * w + j])
            slices.append(acc.reshape(M, N))
        acc_splits.append(slices)
    return _finish(acc_splits, M, N, 1, split, sc, dtype)


# ---------------------------------------------------------------------------------------------------- v6 (mma)
V6_MUTATIONS = ("prmt_sel", "b_col_owner", "c_col_map", "a_k_half")


def prmt2(a: np.ndarray, b: np.ndarray, sel: int) -> np.ndarray:
    """PTX prmt.b32 with both sources as arrays (bytes 0-3 from a, 4-7 from b)."""
    src = a.astype(np.uint64) | (b.astype(np.uint64) << np.uint64(32))
    out = np.zeros(src.shape, dtype=np.uint64)
    for i in range(4):
        s = sel >> (4 * i) & 0xF
        assert s < 8
        out |= ((src >> np.uint64(8 * s)) & np.uint64(0xFF)) << np.uint64(8 * i)
    return out.astype(np.uint32)


def _round_t(v: np.ndarray, dtype: str) -> np.ndarray:
    """One correct rounding to fp16 (subnormals included) / bf16 (normal range)."""
    return np.asarray(v).astype(np.float16).astype(np.float64) if dtype == "fp16" else rnd(v, 8)


def mma_m16n8k16(a_regs: np.ndarray, b_regs: np.ndarray, c: np.ndarray) -> np.ndarray:
    """D = A @ B + C from per-lane fragments, by the PTX ISA ownership tables of mma.m16n8k16 (.row.col, f32 acc).

    a_regs [..., 32, 8] (a0..a7), b_regs [..., 32, 4] (b0..b3), c [..., 32, 4] -> d [..., 32, 4]. The sum of the 16
    products and c is formed exactly and rounded once to fp32 (a model: the hardware's internal alignment/truncation
    is not specified, so GPU results match this to accumulation error, not bitwise)."""
    lane = np.arange(32)
    gid, tig = lane // 4, lane % 4
    A = np.zeros(a_regs.shape[:-2] + (16, 16))
    B = np.zeros(b_regs.shape[:-2] + (16, 8))
    C = np.zeros(c.shape[:-2] + (16, 8))
    for i in range(8):  # a_i: row gid + 8 * (i // 2 % 2), col 2 tig + (i % 2) + 8 * (i // 4)
        A[..., gid + 8 * (i // 2 % 2), 2 * tig + i % 2 + 8 * (i // 4)] = a_regs[..., i]
    for i in range(4):  # b_i: row (k) 2 tig + (i % 2) + 8 * (i // 2), col gid
        B[..., 2 * tig + i % 2 + 8 * (i // 2), gid] = b_regs[..., i]
    for i in range(4):  # c_i: row gid + 8 * (i // 2), col 2 tig + (i % 2)
        C[..., gid + 8 * (i // 2), 2 * tig + i % 2] = c[..., i]
    D = f32(A @ B + C)
    return np.stack([D[..., gid + 8 * (i // 2), 2 * tig + i % 2] for i in range(4)], axis=-1)


def v6_w4a16(x, packed, scale, zero, group, split, MT=1, warps=4, mutate: str | None = None, consts=None):
    """Emulate qgemm_v6_w4a16_mma lane by lane: each lane's two LDG.128 of packed rows 8s + c / 8s + 4 + c at columns
    warp_n0 + 16 g .. + 15, the prmt/lop3/hsub2/hmul2 dequant per B register, A fragments loaded from x, the HMMA by
    the PTX fragment tables (mma_m16n8k16), the permuted epilogue, split partials and the fixed-order split sum."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _v6(x, packed, scale, zero, group, split, MT, warps, mutate, consts or constants())


def _v6(x, packed, scale, zero, group, split, MT, warps, mutate, C):
    dtype = "fp16" if x.dtype == torch.float16 else "bf16"
    M, K = x.shape
    N = packed.shape[1]
    assert N % 16 == 0 and group % 16 == 0
    xs, pk, sc = _to_np(x), _to_np(packed).astype(np.uint8), _to_np(scale)
    zr = _to_np(zero).astype(np.float64) if zero is not None else np.full(sc.shape, 8.0)
    magic = C["QG_MAGIC_FP16"] if dtype == "fp16" else C["QG_MAGIC_BF16"]
    mag = 1024.0 if dtype == "fp16" else 128.0
    sel0 = C["QG_PRMT_PAIR0"] ^ (0x0400 if mutate == "prmt_sel" else 0)  # mutation: high half from w, not w >> 4
    gx, gz = -(-N // (128 * warps)), -(-M // (16 * MT))
    W = gx * warps  # warps along N, all CTAs
    lane = np.arange(32)
    g, c = lane // 4, lane % 4
    if mutate == "b_col_owner":  # loads indexed by the C-fragment owner (2 tig) instead of gid
        g = (lane % 4) * 2
    n_ld = (np.arange(W) * 128)[:, None] + 16 * g[None, :]  # [W, 32]
    ld_ok = n_ld < N
    cols = np.clip(n_ld[..., None] + np.arange(16), 0, N - 1)  # [W, 32, 16]
    steps = K // 16
    per = -(-steps // split)
    parts = []
    for s in range(split):
        s_begin, s_end = s * per, min(s * per + per, steps)
        acc = np.zeros((gz, MT, W, 16, 32, 4))
        for st in range(s_begin, s_end):
            k0 = st * 16
            grp = k0 // group
            sg = np.where(ld_ok[..., None], sc[grp][cols], 0.0)  # [W, 32, 16]: lanes out of range load zeros
            zg = np.where(ld_ok[..., None], zr[grp][cols], 0.0) if zero is not None else np.full(sg.shape, 8.0)
            mz = _round_t(mag + zg, dtype)
            breg = np.zeros((W, 16, 32, 4))
            for half, roff in ((0, 0), (1, 4)):
                rows = 8 * st + roff + c  # [32]
                byts = np.where(ld_ok[..., None], pk[rows[None, :, None], cols], 0).astype(np.uint8)  # [W, 32, 16]
                words = _words(byts)  # [W, 32, 4]
                for w in range(4):
                    u = words[..., w]
                    u4 = u >> np.uint32(4)
                    for t in range(4):
                        j = 4 * w + t
                        r = lop3(prmt2(u, u4, sel0 + 0x1111 * t), C["QG_MASK_LO"], magic, C["QG_LOP3_AND_OR"])
                        lo, hi = halves(r, dtype)
                        for e, v in ((0, lo), (1, hi)):
                            q = _round_t(v - mz[..., j], dtype)  # hsub2: exact small integer
                            breg[:, j, :, 2 * half + e] = _round_t(q * sg[..., j], dtype)  # hmul2
            for bz in range(gz):
                for i in range(MT):
                    r0 = bz * 16 * MT + 16 * i + (lane // 4)
                    ka = k0 + 2 * (lane % 4)
                    if mutate == "a_k_half":  # A's second k-half taken from k + 4 instead of k + 8
                        kb = ka + 4
                    else:
                        kb = ka + 8
                    areg = np.zeros((32, 8))
                    for idx, (rr, kk) in enumerate(((r0, ka), (r0 + 8, ka), (r0, kb), (r0 + 8, kb))):
                        ok = rr < M
                        rc = np.clip(rr, 0, M - 1)
                        areg[:, 2 * idx] = np.where(ok, xs[rc, kk], 0.0)
                        areg[:, 2 * idx + 1] = np.where(ok, xs[rc, kk + 1], 0.0)
                    a_b = np.broadcast_to(areg, (W, 16, 32, 8))
                    acc[bz, i] = mma_m16n8k16(a_b, breg, acc[bz, i])
        parts.append(acc)
    # epilogue: acc[bz, i, wn, j, lane, e] -> row bz 16 MT + 16 i + gid + 8 (e >> 1), col wn 128 + 16 (2 tig + e%2) + j
    y = np.zeros((M, N))
    tot = parts[0] if split == 1 else None
    if split > 1:
        tot = np.zeros_like(parts[0])
        for p in parts:
            tot = f32(tot + p)
    gid, tig = lane // 4, lane % 4
    for bz in range(gz):
        for i in range(MT):
            for wn in range(W):
                for j in range(16):
                    for e in range(4):
                        rows = bz * 16 * MT + 16 * i + gid + 8 * (e >> 1)
                        lc = 2 * tig + (e & 1) if mutate != "c_col_map" else gid
                        cc = wn * 128 + 16 * lc + j
                        ok = (rows < M) & (cc < N)
                        y[rows[ok], cc[ok]] = tot[bz, i, wn, j, ok, e]
    return _round_t(y, dtype)


# ---------------------------------------------------------------------------------------------------- v7 (marlin)
V7_MUTATIONS = ("nibble_swap", "group_slot", "wait_depth", "load_stage", "a_swizzle", "b_pad")
V7_WARPS = 8


def v7_constants(path: Path = CU) -> dict[str, int]:
    """The decimal tile constants of qgemm_v7 (QG_V7_BK, QG_V7_STAGES, QG_V7_BPAD, QG_V7_NT) parsed from the .cu."""
    return {k: int(v) for k, v in re.findall(r"#define (QG_V7_\w+) (\d+)\b(?!x)", path.read_text())}


def _t_from_bits(bits: np.ndarray, dtype: str) -> np.ndarray:
    """uint16 bit patterns -> float64 values of fp16 / bf16."""
    bits = bits.astype(np.uint16)
    if dtype == "fp16":
        return bits.view(np.float16).astype(np.float64)
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def v7_w4a16(x, packed, scale, zero, group, split, MT, mutate: str | None = None, consts=None) -> np.ndarray:
    """Emulate qgemm_v7_w4a16_marlin CTA by CTA and lane by lane, through a byte-level model of its shared memory:
    every cp.async (16 B, zero-filled when its predicate is off) of the x / packed / scale / zero tiles to the kernel's
    smem offsets (x chunks XOR-swizzled, packed rows padded), landing only at the cp.async.wait_group that retires
    its commit group (smem starts as 0xFF poison, so a read before landing is wrong or NaN); then per k16 step the
    LDS.32 B words at the lane's offsets, the group-slot walk, prmt/lop3/hsub2/hmul2 dequant, ldmatrix.x4 A
    fragments gathered by the lanes' row addresses, the HMMA by the PTX fragment tables, the 8-consecutive-column
    epilogue, split partials summed in split order, one rounding to the output dtype."""
    C = dict(consts or constants())
    C.update(v7_constants())
    with np.errstate(invalid="ignore", over="ignore"):
        return _v7(x, packed, scale, zero, group, split, MT, mutate, C)


def _v7(x, packed, scale, zero, group, split, MT, mutate, C):
    dtype = "fp16" if x.dtype == torch.float16 else "bf16"
    M, K = x.shape
    N = packed.shape[1]
    assert N % 16 == 0 and group % 16 == 0 and K % group == 0
    BK, ST, PAD, NT = C["QG_V7_BK"], C["QG_V7_STAGES"], C["QG_V7_BPAD"], C["QG_V7_NT"]
    BM, BN = 16 * MT, 8 * NT * V7_WARPS
    B_ROW, SLOTS = BN + PAD, BK // 16
    A_BYTES, B_BYTES, S_BYTES, Z_BYTES = BM * BK * 2, (BK // 2) * B_ROW, SLOTS * BN * 2, SLOTS * BN
    STAGE = A_BYTES + B_BYTES + S_BYTES + Z_BYTES
    magic = C["QG_MAGIC_FP16"] if dtype == "fp16" else C["QG_MAGIC_BF16"]
    pair0 = C["QG_PRMT_PAIR0"]
    if mutate == "nibble_swap":  # high nibble taken for the even k
        pair0 = 0x0044
    xg = x.detach().cpu().contiguous().view(torch.int16).numpy().view(np.uint8).reshape(M, 2 * K)
    pg = packed.detach().cpu().numpy().astype(np.uint8)
    sg = scale.detach().cpu().contiguous().view(torch.int16).numpy().view(np.uint8).reshape(-1, 2 * N)
    zg = zero.detach().cpu().numpy().astype(np.uint8) if zero is not None else None
    gm, gn = -(-M // BM), -(-N // BN)
    ktiles = -(-K // BK)
    per = -(-ktiles // split)
    lane = np.arange(32)
    gid, tig = lane // 4, lane % 4
    wc = (np.arange(V7_WARPS)[:, None] * 8 * NT + 4 * gid[None, :])  # [W, 32]
    y_parts = np.zeros((split, M, N))

    def words(buf, offs, nbytes):  # little-endian uint32 / uint64 read of smem at byte offsets [..]
        idx = offs[..., None] + np.arange(nbytes)
        b = buf[idx].astype(np.uint64)
        return (b << (np.uint64(8) * np.arange(nbytes, dtype=np.uint64))).sum(-1).astype(np.uint64)

    for bm in range(gm):
        for bn in range(gn):
            for sidx in range(split):
                m0, n0 = bm * BM, bn * BN
                kt_begin = sidx * per
                nkt = max(min(kt_begin + per, ktiles) - kt_begin, 0)
                smem = np.full((ST, STAGE), 0xFF, dtype=np.uint8)
                groups: list[list] = []  # commit groups of (stage, dst offset, 16 bytes)

                def load(buf, kt):
                    k0, ops = kt * BK, []
                    for ch in range(BM * 8):
                        r, c = ch >> 3, ch & 7
                        m, k = m0 + r, k0 + 8 * c
                        ok = m < M and k < K
                        src = xg[m, 2 * k:2 * k + 16] if ok else np.zeros(16, np.uint8)
                        ops.append((buf, r * BK * 2 + ((c ^ (r & 7)) << 4), src))
                    for ch in range((BK // 2) * (BN // 16)):
                        r, c = ch // (BN // 16), ch % (BN // 16)
                        p, n = k0 // 2 + r, n0 + 16 * c
                        ok = 2 * p < K and n < N
                        src = pg[p, n:n + 16] if ok else np.zeros(16, np.uint8)
                        ops.append((buf, A_BYTES + r * B_ROW + 16 * c, src))
                    g0, rem, kl = k0 // group, k0 % group, min(BK, K - k0)
                    for sl in range(SLOTS):
                        if not (sl == 0 or sl * group - rem < kl):
                            continue
                        for c in range(BN // 8):
                            n = n0 + 8 * c
                            src = sg[g0 + sl, 2 * n:2 * n + 16] if n < N else np.zeros(16, np.uint8)
                            ops.append((buf, A_BYTES + B_BYTES + sl * BN * 2 + 16 * c, src))
                        if zg is not None:
                            for c in range(BN // 16):
                                n = n0 + 16 * c
                                src = zg[g0 + sl, n:n + 16] if n < N else np.zeros(16, np.uint8)
                                ops.append((buf, A_BYTES + B_BYTES + S_BYTES + sl * BN + 16 * c, src))
                    return ops

                def wait(n_pending):
                    while len(groups) > n_pending:
                        for buf, off, src in groups.pop(0):
                            smem[buf, off:off + 16] = src

                for s in range(ST - 1):
                    groups.append(load(s, kt_begin + s) if s < nkt else [])
                acc = np.zeros((MT, NT, V7_WARPS, 32, 4))
                for it in range(nkt):
                    wait(ST - 1 if mutate == "wait_depth" else ST - 2)
                    nb = (it + ST if mutate == "load_stage" else it + ST - 1) % ST
                    groups.append(load(nb, kt_begin + it + ST - 1) if it + ST - 1 < nkt else [])
                    buf = smem[it % ST]
                    k0 = (kt_begin + it) * BK
                    slot, off = 0, k0 % group
                    for ks in range(BK // 16):
                        if k0 + 16 * ks >= K:
                            break
                        if ks > 0:
                            off += 16
                            if off >= group:
                                off -= group
                                slot += 1
                        if ks == 0 or off == 0:
                            sl = 0 if mutate == "group_slot" else slot
                            sv = words(buf, A_BYTES + B_BYTES + sl * BN * 2 + 2 * wc, 8)
                            svx = (sv & np.uint64(0xFFFFFFFF)).astype(np.uint32)
                            svy = (sv >> np.uint64(32)).astype(np.uint32)
                            s2 = [prmt(svx, 0, 0x1010), prmt(svx, 0, 0x3232),
                                  prmt(svy, 0, 0x1010), prmt(svy, 0, 0x3232)]
                            if zg is not None:
                                zw = words(buf, A_BYTES + B_BYTES + S_BYTES + sl * BN + wc, 4).astype(np.uint32)
                            else:
                                zw = np.full(wc.shape, C["QG_V7_SYM_ZERO"], dtype=np.uint32)
                            mz2 = [prmt(zw, 0, C["QG_V7_PRMT_Z0"] + 0x0101 * t) | np.uint32(magic) for t in range(NT)]
                        b_row = BN if mutate == "b_pad" else B_ROW
                        boff = A_BYTES + (8 * ks + tig)[None, :] * b_row + wc
                        w0 = words(buf, boff, 4).astype(np.uint32)
                        w1 = words(buf, boff + 4 * b_row, 4).astype(np.uint32)
                        breg = np.zeros((NT, V7_WARPS, 32, 4))
                        for t in range(NT):
                            s_lo, s_hi = halves(s2[t], dtype)
                            z_lo, z_hi = halves(mz2[t], dtype)
                            for half, w in ((0, w0), (1, w1)):
                                r = lop3(prmt2(w, w >> np.uint32(4), pair0 + 0x1111 * t), C["QG_MASK_LO"], magic,
                                         C["QG_LOP3_AND_OR"])
                                lo, hi = halves(r, dtype)
                                breg[t, ..., 2 * half] = _round_t(_round_t(lo - z_lo, dtype) * s_lo, dtype)
                                breg[t, ..., 2 * half + 1] = _round_t(_round_t(hi - z_hi, dtype) * s_hi, dtype)
                        for i in range(MT):
                            rows = 16 * i + (lane & 15)
                            chunk = 2 * ks + (lane >> 4)
                            slotc = chunk if mutate == "a_swizzle" else chunk ^ (lane & 7)
                            addr = rows * BK * 2 + 16 * slotc  # [32]: lane l supplies row l of matrix l // 8
                            rowdat = buf[addr[:, None] + np.arange(16)]  # [32, 16] bytes
                            vals = _t_from_bits(rowdat.view(np.uint16), dtype)  # [32, 8]
                            areg = np.zeros((32, 8))
                            for j in range(4):
                                for h in range(2):
                                    areg[:, 2 * j + h] = vals[8 * j + lane // 4, 2 * (lane % 4) + h]
                            a_b = np.broadcast_to(areg, (V7_WARPS, 32, 8))
                            for t in range(NT):
                                acc[i, t] = mma_m16n8k16(a_b, breg[t], acc[i, t])
                wait(0)
                # epilogue: acc[i, t, w, l, e] -> row m0 + 16 i + gid + 8 (e >> 1),
                #                                  col n0 + 32 w + 8 tig + 4 (e & 1) + t
                for i in range(MT):
                    for t in range(NT):
                        for e in range(4):
                            rows = m0 + 16 * i + gid + 8 * (e >> 1)
                            cols = n0 + np.arange(V7_WARPS)[:, None] * 8 * NT + (8 * tig + 4 * (e & 1) + t)[None, :]
                            rr = np.broadcast_to(rows[None, :], cols.shape)
                            ok = (rr < M) & (cols < N)
                            y_parts[sidx, rr[ok], cols[ok]] = acc[i, t, ..., e][ok]
    if split == 1:
        tot = y_parts[0]
    else:
        tot = np.zeros((M, N))
        for p in y_parts:  # u starts at 0.f and adds splits 0, 1, ... (fixed order)
            tot = f32(tot + p)
    return _round_t(tot, dtype)
