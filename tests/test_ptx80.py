"""PTX on the CPU, the sm_80 half of issue 28: each modelled instruction against values worked out by hand from the
PTX ISA's tables, independent of any kernel (tests/fixtures/interp/ptx80.cu runs the asm text directly).

The fragment tables below are transcribed from the ISA's "Matrix Fragments for mma.m16n8kK" sections (groupID =
%laneid >> 2, threadID_in_group = %laneid % 4) and anchored by rows written out by hand for lanes 5 and 31; the
model in harness/interp/include/wbcpu_ptx80.h is a separate implementation of the same tables, so a transposed index
in either disagrees here. Inputs are small integers, so every fp32 sum is exact and the comparisons are equalities.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import interp
from harness.cuda import CudaSource
from harness.interp import KernelFault, ptx80
from harness.interp import rewrite as rw

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "fixtures" / "interp" / "ptx80.cu"
SEEDS = range(10)


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("WB_CUDA_INTERPRET", "1")


WM = "nvcuda::wmma::"
PROBES = ([f"mma_probe<{v}>" for v in range(11)]
          + [f"ldmatrix_probe<{n},{t}>" for n in (1, 2, 4) for t in ("false", "true")]
          + [f"lop3_probe<{lut}>" for lut in (0x80, 0xFE, 0x40, 0x1A, 0xEA, 0x96, 0xCA, 0xE8)]
          + [f"prmt_probe<{m}>" for m in range(7)]
          + ["cp_async_fill<4,false>", "cp_async_fill<8,false>", "cp_async_fill<16,false>", "cp_async_fill<16,true>"]
          + [f"cp_async_groups<{m}>" for m in range(10)]
          + [f"shfl_probe<{m}>" for m in range(4)]
          + ["specials", "ex2_probe", "mem_probe", "wmma_bad_ldm",
             f"wmma_probe<__half,__half,16,{WM}row_major,{WM}col_major,false>",
             f"wmma_probe<__half,__half,16,{WM}col_major,{WM}row_major,true>",
             f"wmma_probe<__nv_bfloat16,__nv_bfloat16,16,{WM}row_major,{WM}col_major,false>",
             f"wmma_probe<{WM}precision::tf32,float,8,{WM}row_major,{WM}row_major,false>"])


@pytest.fixture(scope="module")
def k():
    src = CudaSource(FIX)
    return {n: src.kernel(n) for n in PROBES}


def fault_of(fn, *a, **kw) -> KernelFault:
    with pytest.raises(KernelFault) as e:
        fn(*a, **kw)
    return e.value


def u32(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.uint32).view(np.int32).copy())


def as_u32(t: torch.Tensor) -> np.ndarray:
    return t.numpy().view(np.uint32)


# ----------------------------------------------------------------------------------------------- ISA fragment tables
# (row, col) of element i held by a lane, per operand, from the ISA's formulas for each shape and type.
def a_rc(k: int, ty: str, lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    if ty in ("f16", "bf16") and k == 16:  # row = g for a0,a1,a4,a5 else g+8; col = 2t + (i&1) (+8 for i >= 4)
        return (g if i in (0, 1, 4, 5) else g + 8), 2 * t + (i & 1) + (8 if i >= 4 else 0)
    if ty in ("f16", "bf16") and k == 8:  # row = g for a0,a1, g+8 for a2,a3; col = 2t + (i&1)
        return (g if i < 2 else g + 8), 2 * t + (i & 1)
    if ty == "tf32" and k == 8:  # row = g for a0,a2, g+8 for a1,a3; col = t for a0,a1, t+4 for a2,a3
        return (g if i in (0, 2) else g + 8), (t if i < 2 else t + 4)
    if ty == "tf32" and k == 4:  # row = g for a0, g+8 for a1; col = t
        return (g if i == 0 else g + 8), t
    if ty in ("s8", "u8") and k == 32:  # row = g for 0<=i<4 || 8<=i<12; col = 4t + (i&3) (+16 for i >= 8)
        return (g if (i < 4 or 8 <= i < 12) else g + 8), 4 * t + (i & 3) + (16 if i >= 8 else 0)
    if ty in ("s8", "u8") and k == 16:  # row = g for i < 4, g+8 for i >= 4; col = 4t + (i&3)
        return (g if i < 4 else g + 8), 4 * t + (i & 3)
    raise ValueError((k, ty))


def b_rc(k: int, ty: str, lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    if ty in ("f16", "bf16") and k == 16:  # row = 2t + (i&1) for b0,b1, +8 for b2,b3; col = g
        return 2 * t + (i & 1) + (8 if i >= 2 else 0), g
    if ty in ("f16", "bf16") and k == 8:  # row = 2t + i; col = g
        return 2 * t + i, g
    if ty == "tf32" and k == 8:  # row = t for b0, t+4 for b1; col = g
        return t + 4 * i, g
    if ty == "tf32" and k == 4:
        return t, g
    if ty in ("s8", "u8") and k == 32:  # row = 4t + (i&3) for i < 4, +16 for i >= 4; col = g
        return 4 * t + (i & 3) + (16 if i >= 4 else 0), g
    if ty in ("s8", "u8") and k == 16:
        return 4 * t + i, g
    raise ValueError((k, ty))


def c_rc(lane: int, i: int) -> tuple[int, int]:  # row = g for c0,c1, g+8 for c2,c3; col = 2t + (i&1)
    return (lane >> 2) + (8 if i >= 2 else 0), 2 * (lane % 4) + (i & 1)


def test_fragment_tables_match_the_hand_written_rows():
    """Lanes 5 (g = 1, t = 1) and 31 (g = 7, t = 3), written out by hand from the ISA's figures."""
    assert [a_rc(16, "f16", 5, i) for i in range(8)] == [(1, 2), (1, 3), (9, 2), (9, 3), (1, 10), (1, 11), (9, 10),
                                                          (9, 11)]
    assert [a_rc(16, "f16", 31, i) for i in range(8)] == [(7, 6), (7, 7), (15, 6), (15, 7), (7, 14), (7, 15),
                                                           (15, 14), (15, 15)]
    assert [b_rc(16, "f16", 5, i) for i in range(4)] == [(2, 1), (3, 1), (10, 1), (11, 1)]
    assert [b_rc(16, "bf16", 31, i) for i in range(4)] == [(6, 7), (7, 7), (14, 7), (15, 7)]
    assert [c_rc(5, i) for i in range(4)] == [(1, 2), (1, 3), (9, 2), (9, 3)]
    assert [a_rc(8, "f16", 5, i) for i in range(4)] == [(1, 2), (1, 3), (9, 2), (9, 3)]
    assert [b_rc(8, "f16", 5, i) for i in range(2)] == [(2, 1), (3, 1)]
    assert [a_rc(8, "tf32", 5, i) for i in range(4)] == [(1, 1), (9, 1), (1, 5), (9, 5)]
    assert [b_rc(8, "tf32", 5, i) for i in range(2)] == [(1, 1), (5, 1)]
    assert [a_rc(4, "tf32", 5, i) for i in range(2)] == [(1, 1), (9, 1)] and b_rc(4, "tf32", 5, 0) == (1, 1)
    assert [a_rc(32, "s8", 5, i) for i in range(16)] == ([(1, c) for c in range(4, 8)] + [(9, c) for c in range(4, 8)]
                                                         + [(1, c) for c in range(20, 24)]
                                                         + [(9, c) for c in range(20, 24)])
    assert [b_rc(32, "s8", 5, i) for i in range(8)] == [(r, 1) for r in (4, 5, 6, 7, 20, 21, 22, 23)]
    assert [a_rc(16, "s8", 5, i) for i in range(8)] == [(1, c) for c in range(4, 8)] + [(9, c) for c in range(4, 8)]
    assert [b_rc(16, "u8", 5, i) for i in range(4)] == [(r, 1) for r in range(4, 8)]
    # every (row, col) of each operand is held by exactly one (lane, element)
    for k, ty in ((16, "f16"), (8, "f16"), (8, "tf32"), (4, "tf32"), (32, "s8"), (16, "s8")):
        assert sorted(a_rc(k, ty, ln, i) for ln in range(32) for i in range(16 * k // 32)) == \
            [(r, c) for r in range(16) for c in range(k)]
        assert sorted(b_rc(k, ty, ln, i) for ln in range(32) for i in range(8 * k // 32)) == \
            [(r, c) for r in range(k) for c in range(8)]


# ----------------------------------------------------------------------------------------------- mma.sync
BITS = {"f16": 16, "bf16": 16, "tf32": 32, "s8": 8, "u8": 8}
# probe index -> (k, operand type, accumulator type)
MMA = {0: (16, "f16", "f32"), 1: (16, "bf16", "f32"), 2: (8, "f16", "f32"), 3: (8, "bf16", "f32"),
       4: (8, "tf32", "f32"), 5: (4, "tf32", "f32"), 6: (32, "s8", "s32"), 7: (16, "s8", "s32"),
       8: (16, "u8", "s32"), 9: (32, "s8", "s32"), 10: (16, "f16", "f16")}


def elem_bits(ty: str, v: float) -> int:
    if ty == "f16":
        return int(np.float16(v).view(np.uint16))
    if ty == "bf16":
        return int(torch.tensor(v, dtype=torch.bfloat16).view(torch.int16).item()) & 0xFFFF
    if ty == "tf32":
        return int(np.float32(v).view(np.uint32))
    return int(v) & 0xFF


def pack(ty: str, vals: list[float]) -> list[int]:
    """Elements low to high into 32-bit registers (low half / byte first)."""
    per = 32 // BITS[ty]
    regs = []
    for r in range(len(vals) // per):
        w = 0
        for j in range(per):
            w |= elem_bits(ty, vals[r * per + j]) << (BITS[ty] * j)
        regs.append(w)
    return regs


def run_mma(kern, v: int, A: np.ndarray, B: np.ndarray, C: np.ndarray) -> np.ndarray:
    k, ty, acc = MMA[v]
    na, nb = 16 * k // 32, 8 * k // 32
    a = [pack(ty, [A[a_rc(k, ty, ln, i)] for i in range(na)]) for ln in range(32)]
    b = [pack(ty, [B[b_rc(k, ty, ln, i)] for i in range(nb)]) for ln in range(32)]
    if acc == "f16":
        c = [pack("f16", [C[c_rc(ln, i)] for i in range(4)]) for ln in range(32)]
    elif acc == "s32":
        c = [[int(C[c_rc(ln, i)]) & 0xFFFFFFFF for i in range(4)] for ln in range(32)]
    else:
        c = [[int(np.float32(C[c_rc(ln, i)]).view(np.uint32)) for i in range(4)] for ln in range(32)]
    d = torch.zeros(32 * (2 if acc == "f16" else 4), dtype=torch.int32)
    kern(1, 32, u32(a).flatten(), u32(b).flatten(), u32(c).flatten(), d)
    dr = as_u32(d).reshape(32, -1)
    D = np.zeros((16, 8))
    for ln in range(32):
        for i in range(4):
            if acc == "f16":
                val = np.uint16((int(dr[ln, i // 2]) >> (16 * (i % 2))) & 0xFFFF).view(np.float16)
            elif acc == "s32":
                val = np.uint32(dr[ln, i]).view(np.int32)
            else:
                val = np.uint32(dr[ln, i]).view(np.float32)
            D[c_rc(ln, i)] = float(val)
    return D


@pytest.mark.parametrize("v", sorted(MMA), ids=[f"m16n8k{MMA[v][0]}.{MMA[v][1]}.{MMA[v][2]}"
                                                  + (".satfinite" if v == 9 else "") for v in sorted(MMA)])
def test_mma_fragment_layouts_and_products(k, v):
    kk, ty, acc = MMA[v]
    rng = np.random.default_rng(v)
    lo, hi = (0, 16) if ty == "u8" else (-8, 8) if ty in ("s8",) else (-4, 5)
    A = rng.integers(lo, hi, (16, kk)).astype(float)
    B = rng.integers(lo, hi, (kk, 8)).astype(float)
    C = rng.integers(-50, 50, (16, 8)).astype(float)
    D = run_mma(k[f"mma_probe<{v}>"], v, A, B, C)
    assert np.array_equal(D, A @ B + C), f"first mismatch at {np.argwhere(D != A @ B + C)[:3].tolist()}"
    # two elements of A changed (to the range's ends): each (lane, register) must land at its own (row, col)
    A2 = A.copy()
    A2[3, 1], A2[1, 3] = lo, hi - 1
    assert np.array_equal(run_mma(k[f"mma_probe<{v}>"], v, A2, B, C), A2 @ B + C)


def test_mma_rounding_model_and_integer_wrap(k):
    """Documented rounding: exact products, fp32 sums in k order starting from C (round to nearest even): with
    C = 2^24 every +1 is a tie that rounds back to 2^24. tf32 operands drop their low 13 bits. s32 wraps, and
    .satfinite clamps."""
    A, B = np.ones((16, 16)), np.ones((16, 8))
    D = run_mma(k["mma_probe<0>"], 0, A, B, np.full((16, 8), 2.0 ** 24))
    assert (D == 2.0 ** 24).all()  # the exact sum is 2^24 + 16
    D = run_mma(k["mma_probe<0>"], 0, A, B, np.full((16, 8), -(2.0 ** 24)))
    assert (D == -(2.0 ** 24) + 16).all()  # exact below 2^24
    x = float(np.float32(1 + 2.0 ** -20))  # not a tf32 value: its low 13 bits are dropped
    D = run_mma(k["mma_probe<4>"], 4, np.full((16, 8), x), np.ones((8, 8)), np.zeros((16, 8)))
    assert (D == 8.0).all()
    big = np.full((16, 8), 2 ** 31 - 100, dtype=float)
    A, B = np.full((16, 32), 2.0), np.full((32, 8), 3.0)  # + 192
    D = run_mma(k["mma_probe<6>"], 6, A, B, big)
    assert (D == -(2 ** 31) + 92).all()  # wraps
    D = run_mma(k["mma_probe<9>"], 9, A, B, big)
    assert (D == 2 ** 31 - 1).all()  # .satfinite


# ----------------------------------------------------------------------------------------------- ldmatrix
def test_ldmatrix_lane_maps(k):
    """Lane 8j + i addresses row i of matrix j (rows here are 32 shuffled 16-byte rows of a tile holding 100 r + c);
    lane l gets (l / 4, 2 (l % 4)) and (l / 4, 2 (l % 4) + 1) of each matrix, .trans the transposed pair. Lanes past
    8 x num supply no address (an unaligned one here)."""
    tile = (100 * np.arange(32)[:, None] + np.arange(8)[None, :]).astype(np.uint16)
    perm = np.random.default_rng(1).permutation(32)
    for num in (1, 2, 4):
        for trans in (False, True):
            off = [16 * int(perm[ln]) if ln < 8 * num else 3 for ln in range(32)]
            out = torch.zeros(32 * num, dtype=torch.int32)
            k[f"ldmatrix_probe<{num},{'true' if trans else 'false'}>"](
                1, 32, torch.from_numpy(tile.view(np.int16).flatten().copy()), torch.tensor(off, dtype=torch.int32),
                out)
            got = as_u32(out).reshape(32, num)
            for ln in range(32):
                for j in range(num):
                    m = tile[perm[8 * j:8 * j + 8]]  # matrix j: row i is the row lane 8j + i addressed
                    if trans:
                        lo, hi = m[2 * (ln % 4), ln // 4], m[2 * (ln % 4) + 1, ln // 4]
                    else:
                        lo, hi = m[ln // 4, 2 * (ln % 4)], m[ln // 4, 2 * (ln % 4) + 1]
                    assert got[ln, j] == int(lo) | (int(hi) << 16), (num, trans, ln, j)
    # by hand: x4, lane 5, register 2 = matrix 2 (rows addressed by lanes 16-23), row 1, columns 2 and 3
    off = [16 * ln for ln in range(32)]
    out = torch.zeros(128, dtype=torch.int32)
    k["ldmatrix_probe<4,false>"](1, 32, torch.from_numpy(tile.view(np.int16).flatten().copy()),
                                 torch.tensor(off, dtype=torch.int32), out)
    assert as_u32(out).reshape(32, 4)[5, 2] == 1702 | (1703 << 16)
    k["ldmatrix_probe<4,true>"](1, 32, torch.from_numpy(tile.view(np.int16).flatten().copy()),
                                torch.tensor(off, dtype=torch.int32), out)
    assert as_u32(out).reshape(32, 4)[5, 2] == 1801 | (1901 << 16)  # .trans: rows 2, 3 of matrix 2, column 1


def _stats(kern) -> list[int]:
    lib = kern.src.interp_library()
    arr = (ctypes.c_ulonglong * 4)()
    lib._dll.wbp80_stats(arr)
    return list(arr)


def test_ldmatrix_alignment_and_bank_conflicts(k):
    tile = torch.zeros(256, dtype=torch.int16)
    kern = k["ldmatrix_probe<4,false>"]
    out = torch.zeros(128, dtype=torch.int32)
    off = [16 * ln for ln in range(32)]
    off[3] = 40  # 8 bytes past a 16-byte row boundary
    e = fault_of(kern, 1, 32, tile, torch.tensor(off, dtype=torch.int32), out)
    assert e.kind == "memcheck" and "lane 3's row address is not 16-byte aligned" in str(e), str(e)
    before = _stats(kern)
    kern(1, 32, tile, torch.tensor([16 * ln for ln in range(32)], dtype=torch.int32), out)  # 8 consecutive rows
    mid = _stats(kern)
    assert mid[0] - before[0] == 4 and mid[1] == before[1]
    kern(1, 32, tile, torch.tensor([32 * (ln % 16) for ln in range(32)], dtype=torch.int32), out)  # 32-byte stride
    after = _stats(kern)
    assert after[0] - mid[0] == 4 and after[1] - mid[1] == 4  # rows r and r + 4 share a bank group: all 4 phases


# ----------------------------------------------------------------------------------------------- lop3, prmt
LOP3 = {  # immLut = F(0xF0, 0xCC, 0xAA): the ISA's examples and the kernels' (a & b) | c
    0x80: lambda a, b, c: a & b & c, 0xFE: lambda a, b, c: a | b | c, 0x40: lambda a, b, c: a & b & ~c,
    0x1A: lambda a, b, c: (a & b | c) ^ a, 0xEA: lambda a, b, c: (a & b) | c, 0x96: lambda a, b, c: a ^ b ^ c,
    0xCA: lambda a, b, c: (a & b) | (~a & c), 0xE8: lambda a, b, c: (a & b) | (a & c) | (b & c)}


def test_lop3_truth_tables(k):
    rng = np.random.default_rng(3)
    a, b, c = (rng.integers(0, 2 ** 32, 32, dtype=np.uint64).astype(np.uint32) for _ in range(3))
    a[0], b[0], c[0] = 0xF0, 0xCC, 0xAA
    for lut, f in LOP3.items():
        assert f(0xF0, 0xCC, 0xAA) & 0xFF == lut
        d = torch.zeros(32, dtype=torch.int32)
        k[f"lop3_probe<{lut}>"](1, 32, u32(a), u32(b), u32(c), d)
        assert as_u32(d)[0] == lut
        assert np.array_equal(as_u32(d), f(a, b, c).astype(np.uint32)), hex(lut)


# a = bytes [00 81 02 83], b = bytes [84 05 86 07] (byte 0 first): source bytes 0..7 of {b, a}
PRMT_A, PRMT_B = 0x83028100, 0x07860584
PRMT = [  # (mode, c, d) worked out by hand from the ISA's prmt table
    (0, 0x3210, 0x83028100), (0, 0x7654, 0x07860584), (0, 0x0123, 0x00810283), (0, 0x4444, 0x84848484),
    (0, 0x9999, 0xFFFFFFFF), (0, 0x000B, 0x000000FF), (0, 0xA9C8, 0x00FFFF00),
    (1, 1, 0x84830281), (1, 0x1235, 0x84830281), (2, 0, 0x05860700), (3, 2, 0x02020202), (4, 1, 0x83028181),
    (5, 2, 0x02028100), (6, 1, 0x83028302), (6, 2, 0x81008100)]


def test_prmt_selectors_and_modes(k):
    for mode, c, want in PRMT:
        d = torch.zeros(1, dtype=torch.int32)
        k[f"prmt_probe<{mode}>"](1, 1, u32([PRMT_A]), u32([PRMT_B]), u32([c]), d)
        assert as_u32(d)[0] == want, (mode, hex(c), hex(int(as_u32(d)[0])), hex(want))


# ----------------------------------------------------------------------------------------------- cp.async
@pytest.mark.parametrize("cp,cg,src_size", [(4, False, -1), (4, False, 0), (4, False, 3), (8, False, 5),
                                            (16, False, 16), (16, True, -1), (16, True, 0), (16, True, 9)])
def test_cp_async_copies_and_zero_fills(k, cp, cg, src_size):
    src = torch.arange(1, 32 * 16 + 1, dtype=torch.int32).to(torch.uint8)
    out = torch.full((32 * cp,), 0xEE, dtype=torch.uint8)
    for seed in (0, 1):
        interp.set_call(seed, {"src": src})
        k[f"cp_async_fill<{cp},{'true' if cg else 'false'}>"](1, 32, src, src_size, out)
        n = cp if src_size < 0 else src_size
        want = torch.tensor([int(src[i]) if i % cp < n else 0 for i in range(32 * cp)], dtype=torch.uint8)
        assert torch.equal(out, want)


def test_cp_async_groups_retire_oldest_first(k):
    src = torch.arange(100, 116, dtype=torch.int32)
    out = torch.zeros(8, dtype=torch.int32)
    for seed in SEEDS:  # copies land at a random point before the wait: right whenever they land
        interp.set_call(seed, {"src": src, "out": out})
        k["cp_async_groups<0>"](1, 2, src, out)
        assert out.tolist() == list(range(100, 108))  # g1 = src[0..3], g2 = src[4..7]
        k["cp_async_groups<9>"](1, 2, src, out)  # wait_all: g3 too
        assert out[:4].tolist() == list(range(108, 112))
        k["cp_async_groups<5>"](1, 2, src, out)  # another thread, after a barrier
        assert out[:4].tolist() == list(range(100, 104))
    e = fault_of(k["cp_async_groups<1>"], 1, 2, src, out)  # g3 is still pending after wait_group 1
    assert e.kind == "racecheck" and "read before the cp.async wait" in str(e)
    e = fault_of(k["cp_async_groups<2>"], 1, 2, src, out)  # wait_group 2 retires g1 only
    assert e.kind == "racecheck" and "read before the cp.async wait" in str(e)
    e = fault_of(k["cp_async_groups<3>"], 1, 2, src, out)  # two copies onto one 16-byte line in one group
    assert e.kind == "racecheck" and "in-flight async copy" in str(e)
    for seed in SEEDS:
        interp.set_call(seed, {"src": src, "out": out})
        e = fault_of(k["cp_async_groups<4>"], 1, 2, src, out)  # another thread's bytes need a barrier
        assert e.kind == "racecheck" and re.search(r"\((read-after-write|write-after-read|read before the cp.async "
                                                   r"wait)\)", str(e)), str(e)
    e = fault_of(k["cp_async_groups<6>"], 1, 2, src, out)
    assert e.kind == "memcheck" and "misaligned destination (shared offset % 16 = 4)" in str(e), str(e)
    e = fault_of(k["cp_async_groups<7>"], 1, 2, src, out)
    assert e.kind == "trap" and "src-size 20 exceeds cp-size 16" in str(e), str(e)
    e = fault_of(k["cp_async_groups<8>"], 1, 2, src, out)
    assert e.kind == "trap" and "cp.async.cg copies 16 bytes, not 8" in str(e), str(e)


# ----------------------------------------------------------------------------------------------- shfl.sync
SHFL = [  # (mode, b, c, mask, source lane of each lane, by the ISA's pseudo-code; None: lane not in the mask)
    (2, 1, 0x1F, 0xFFFFFFFF, [i ^ 1 for i in range(32)]),
    (0, 2, 0x00, 0xFFFFFFFF, [i if i < 2 else i - 2 for i in range(32)]),
    (1, 3, 0x1F, 0xFFFFFFFF, [i + 3 if i + 3 <= 31 else i for i in range(32)]),
    (3, 5, 0x1F, 0xFFFFFFFF, [5] * 32),
    (2, 4, 0x181F, 0xFFFFFFFF, [i ^ 4 for i in range(32)]),  # width 8: c = (32 - 8) << 8 | 31
    (3, 3, 0x181F, 0xFFFFFFFF, [(i & ~7) | 3 for i in range(32)]),
    (0, 1, 0x1800, 0xFFFFFFFF, [i if i % 8 == 0 else i - 1 for i in range(32)]),
    (3, 20, 0x1F, 0x0000FFFF, [-1] * 16 + [None] * 16),  # lane 20 is not in the mask: undefined (poisoned)
]


def test_shfl_sync_c_operand_and_mask(k):
    a = torch.arange(100, 132, dtype=torch.int32)
    for mode, b, c, mask, src_lane in SHFL:
        d = torch.full((32,), 7, dtype=torch.int32)
        k[f"shfl_probe<{mode}>"](1, 32, a, np.uint32(b), np.uint32(c), np.uint32(mask), d)
        want = [7 if s is None else (-1 if s < 0 else 100 + s) for s in src_lane]
        assert d.tolist() == want, (mode, b, hex(c))


# ----------------------------------------------------------------------------------------------- registers, ex2
def test_special_registers(k):
    out = torch.zeros(2 * 64 * 7, dtype=torch.int32)
    k["specials"](2, 64, out, shared=96)
    o = out.view(2, 64, 7)
    for blk in range(2):
        for t in range(64):
            assert o[blk, t].tolist() == [t % 32, t // 32, 96, t, 64, blk, 2]


def test_ex2_approx(k):
    x = torch.tensor([-1.5, 0.0, 1.0, 10.0, 0.3, -127.0, -126.0, float("-inf"), float("inf"), -149.0, 1e-40])
    y, yf = torch.empty_like(x), torch.empty_like(x)
    k["ex2_probe"](1, 32, x, y, yf, x.numel())
    ref = torch.exp2(x.double())
    fin = torch.isfinite(ref) & (ref > 0)
    assert ((y.double()[fin] - ref[fin]).abs() <= 2.0 ** -22 * ref[fin]).all()
    assert y[7] == 0 and y[8] == float("inf") and y[5] == 2.0 ** -127  # subnormal result kept without .ftz
    assert yf[5] == 0 and yf[9] == 0 and yf[6] == 2.0 ** -126  # .ftz: subnormal results flush to +0
    assert yf[10] == 1.0  # a subnormal input counts as 0


# ----------------------------------------------------------------------------------------------- ld / st / atom / red
def test_loads_stores_and_atomics(k):
    rng = np.random.default_rng(5)
    src = torch.from_numpy(rng.integers(0, 1000, 132).astype(np.int32))
    dst = torch.zeros(128, dtype=torch.int32)
    counter, old, cas = torch.zeros(2, dtype=torch.int32), torch.zeros(64, dtype=torch.int32), \
        torch.arange(32, dtype=torch.int32)
    k["mem_probe"](1, 32, src, dst, counter, old, cas, 0)
    assert torch.equal(dst.view(32, 4), src[:128].view(32, 4).flip(1))  # ld.global.nc.v4 then st.global.cg.v4
    inc = src[:128].view(32, 4)[:, 0] + 1  # through st.shared / ld.shared
    assert counter.tolist() == [int(inc.sum()), 32]  # atom.add and red.add
    order = torch.argsort(old[:32])  # atom.add returns the running sum in whatever order the threads ran
    assert torch.equal(old[:32][order][1:], (old[:32][order] + inc[order])[:-1])
    assert old[32:].tolist() == list(range(32)) and cas.tolist() == [t + 7 for t in range(32)]  # atom.cas
    e = fault_of(k["mem_probe"], 1, 32, src, dst, counter, old, cas, 1)
    assert e.kind == "memcheck" and "misaligned" in str(e), str(e)


# ----------------------------------------------------------------------------------------------- wmma
@pytest.mark.parametrize("name,dt,kk", [
    (f"wmma_probe<__half,__half,16,{WM}row_major,{WM}col_major,false>", torch.float16, 16),
    (f"wmma_probe<__half,__half,16,{WM}col_major,{WM}row_major,true>", torch.float16, 16),
    (f"wmma_probe<__nv_bfloat16,__nv_bfloat16,16,{WM}row_major,{WM}col_major,false>", torch.bfloat16, 16),
    (f"wmma_probe<{WM}precision::tf32,float,8,{WM}row_major,{WM}row_major,false>", torch.float32, 8)],
    ids=["f16-row-col", "f16-col-row-Ccol", "bf16", "tf32"])
def test_wmma_load_mma_store(k, name, dt, kk):
    """WMMA's fragment layout is unspecified by CUDA: load, mma and store only have to agree. A and B are read
    through their layouts with a padded stride, C row- or column-major."""
    g = torch.Generator().manual_seed(kk)
    A = torch.randint(-4, 5, (16, kk), generator=g).double()
    B = torch.randint(-4, 5, (kk, 16), generator=g).double()
    C = torch.randint(-20, 20, (16, 16), generator=g).double()
    a_col, b_col, c_col = "col_major,nvcuda::wmma::row" in name, "col_major,false>" in name, name.endswith("true>")
    lda = ldb = 24
    a_mem = torch.zeros(24 * 24, dtype=dt)
    b_mem = torch.zeros(24 * 24, dtype=dt)
    a_mem.view(24, 24)[: (kk if a_col else 16), : (16 if a_col else kk)] = (A.t() if a_col else A).to(dt)
    b_mem.view(24, 24)[: (16 if b_col else kk), : (kk if b_col else 16)] = (B.t() if b_col else B).to(dt)
    c = (C.t() if c_col else C).contiguous().float().flatten()
    d = torch.full((256,), float("nan"))
    k[name](1, 32, a_mem, b_mem, c, d, lda, ldb)
    assert torch.equal(d.double().view(16, 16), A @ B + C)


def test_wmma_needs_one_matrix_per_warp(k):
    e = fault_of(k["wmma_bad_ldm"], 1, 32, torch.zeros(1024, dtype=torch.float16), torch.zeros(32))
    assert e.kind == "synccheck" and "load/store_matrix_sync take one matrix for the whole warp" in str(e)


# ----------------------------------------------------------------------------------------------- the repository's asm
def _asm_statements(text: str) -> list[rw.AsmStmt]:
    out = []
    for m in rw._ASM.finditer(text):
        depth, j = 0, m.end() - 1
        while True:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                break
            j += 1
        out.append(rw.parse_asm(text[m.end():j], "f.cu", text.count("\n", 0, m.start()) + 1))
    return out


def test_every_asm_of_the_sm80_kernels_is_modelled():
    """common.cuh holds every asm statement of matmul.cu, quant_gemm.cu and attention.cu's v2 part (none left in
    them); each one, and knn.cu's, translates to a model call."""
    cuda = ROOT / "cuda_src"
    for name in ("matmul.cu", "quant_gemm.cu"):
        assert not _asm_statements((cuda / name).read_text()), name
    att = (cuda / "attention.cu").read_text()
    assert not _asm_statements(att[: att.index("attn_v3_wgmma")]), "attention.cu v2"
    stmts = _asm_statements((cuda / "common.cuh").read_text()) + _asm_statements((cuda / "knn.cu").read_text())
    assert len(stmts) >= 10
    for s in stmts:
        assert ptx80.translate(s) is not None, s.template
