"""The X-ray's hot-loop model (harness/hotloop.py) against loops counted by hand.

Three layers: (1) SASS text written here by hand (no tools): control flow, longest/shortest path, cold blocks,
nesting, trip counts, the wgmma wait exposure and the cycle formulas, each worked out in the comments; (2) two CUDA
kernels of tests/fixtures/hotloop_kernels.cu and one Triton kernel, compiled for sm_90a on the CPU, whose loops were
counted instruction by instruction from their ``cuobjdump -sass`` listings (quoted below; nvcc 13.0, the Triton
wheel of this venv: a new toolchain may schedule differently -- then recount from the listing the failure prints);
(3) the kernels issue 32 tuned, through the full X-ray: attention v3's hot loop meets its target.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import hotloop as hl
from harness.cuda import nvcc_path

FIXTURES = Path(__file__).with_name("fixtures")


def _fn(text: str) -> list[hl.Insn]:
    return next(iter(hl.parse_sass("Function : f\n" + text).values()))


def _line(addr: int, text: str) -> str:
    return f"        /*{addr:04x}*/                   {text} ;\n"


def _sass(rows: list[str], start: int = 0) -> str:
    return "".join(_line(start + 16 * i, r) for i, r in enumerate(rows))


# ------------------------------------------------------------------------------------------------ hand-written SASS
# 0x00 entry; 0x20..0x90 a loop: header 0x20, an if/else (0x40 branch over the 2-instruction then-part 0x50..0x60 to
# 0x70), a cold retry at 0xc0 (outside [header, latch]) that returns into the loop, latch 0x90 -> 0x20.
LOOP = _sass([
    "MOV R0, RZ",                            # 0x00
    "IMAD.MOV.U32 R1, RZ, RZ, RZ",           # 0x10
    "LDG.E.128 R4, desc[UR4][R2.64]",        # 0x20  header: 16 B x 32 lanes = 512 B
    "@!P1 BRA 0xc0",                         # 0x30  -> cold block
    "@P0 BRA 0x70",                          # 0x40  skip the then-part
    "FFMA R5, R5, R6, R7",                   # 0x50
    "MUFU.EX2 R5, R5",                       # 0x60
    "HFMA2 R8, R8, R9, R10",                 # 0x70  join
    "IADD3 R1, R1, 0x1, RZ",                 # 0x80
    "@!P2 BRA 0x20",                         # 0x90  latch
    "STG.E desc[UR4][R2.64], R5",            # 0xa0
    "EXIT",                                  # 0xb0
    "SYNCS.PHASECHK.TRANS64.TRYWAIT P1, [UR4], R3",  # 0xc0  cold: a wait retry, back into the loop
    "@!P1 BRA 0xc0",                         # 0xd0
    "BRA 0x40",                              # 0xe0
])


def test_loop_paths_cold_blocks_and_pipes():
    loops = hl.find_loops(_fn(LOOP))
    main = [lp for lp in loops if lp["addr"] == "0x0020"]
    assert len(main) == 1, loops
    lp = main[0]
    # longest path 0x20..0x90 with the then-part: 8 instructions; shortest skips 0x50, 0x60: 6
    assert (lp["instr"], lp["instr_min"], lp["latch"], lp["kind"]) == (8, 6, "0x0090", "loop")
    assert lp["cold_instr"] == 3  # 0xc0..0xe0 are in the natural loop but out of line
    assert lp["pipes"] == {"lsu": 1, "branch": 3, "fp32": 1, "xu": 1, "fp16x2": 1, "alu": 1}
    assert lp["global_bytes"] == 512 and lp["shared_bytes"] == 0 and lp["tensor_ops"] == {}
    # the cold retry is its own wait loop (2 instructions, a try-wait): not a hot loop
    wait = [x for x in loops if x["addr"] == "0x00c0"]
    assert wait and wait[0]["kind"] == "wait"
    assert hl.pick_hot(loops) is lp


def test_cycle_formulas_by_hand():
    lp = next(x for x in hl.find_loops(_fn(LOOP)) if x["addr"] == "0x0020")
    mach = {"tensor_fma_per_sp": {"bf16": 512.0}, "lanes": hl.PIPE_LANES["sm_90"], "dram_bytes_per_clk_sm": 16.0,
            "profile": None}
    m = hl.model(lp, 8, mach)  # 8 warps: 2 per scheduler
    # issue 8 x 2 = 16; xu (MUFU at 16 lanes/clk/SM = 4 per scheduler): 1 x 32 / 4 x 2 = 16; alu 1 x 32/16 x 2 = 4;
    # memory 8 warps x 512 B / 16 B/clk = 256; no tensor work
    assert m["cycles"]["issue"] == 16 and m["cycles"]["tensor"] == 0
    assert m["pipe_name"] == "xu" and m["cycles"]["pipe"] == 16
    assert m["cycles"]["memory"] == 256 and m["bound"] == "memory"
    m5 = hl.model(lp, 5, mach)  # 5 warps: the busiest scheduler holds 2
    assert m5["warps_per_scheduler"] == 2 and m5["cycles"]["issue"] == 16
    # DRAM share: the iteration does FFMA x 32 lanes x 2 + HFMA2 x 32 x 4 = 192 FLOP; a problem of 1 MFLOP over
    # 1 MB makes that 192 B of DRAM (< the 512 B requested): 8 warps x 192 B / 16 B/clk = 96 cycles
    ms = hl.model(lp, 8, mach, flops=1e6, nbytes=1e6)
    assert ms["dram_basis"] == "share of min bytes" and ms["cycles"]["memory"] == 96
    assert hl.model(lp, 8, mach, flops=1e6, nbytes=1e7)["cycles"]["memory"] == 256  # share 1920 B > requested


# a counted inner loop (trips 6: r7 = 2, 4, .. 12; the compare sees the stepped value) inside a runtime outer loop,
# and a wgmma loop whose wait_group 0 exposes the instructions after it
NEST = _sass([
    "S2R R0, SR_TID.X",                      # 0x00
    "MOV R7, 0x0",                           # 0x10  inner counter
    "HMMA.16816.F32.BF16 R8, R12, R16, R8",  # 0x20  inner header: 16x8x16 = 2048 FMA
    "VIADD R7, R7, 0x2",                     # 0x30
    "ISETP.NE.AND P0, PT, R7, 0xc, PT",      # 0x40
    "@P0 BRA 0x20",                          # 0x50  inner latch
    "LDS.64 R2, [R3]",                       # 0x60  8 B x 32 = 256 B of shared
    "ISETP.GE.AND P1, PT, R0, UR4, PT",      # 0x70
    "@!P1 BRA 0x10",                         # 0x80  outer latch (header 0x10)
    "EXIT",                                  # 0x90
])


def test_nested_loop_trip_count_and_contraction():
    loops = {lp["addr"]: lp for lp in hl.find_loops(_fn(NEST))}
    inner, outer = loops["0x0020"], loops["0x0010"]
    assert inner["trips"] == 6 and inner["depth"] == 1 and inner["parent"] == "0x0010" and inner["instr"] == 4
    # outer: MOV + 6 x 4 inner + LDS, ISETP, BRA = 28 instructions; 6 HMMA
    assert outer["trips"] is None and outer["inner"] == [{"addr": "0x0020", "trips": 6}] and not outer["partial"]
    assert outer["instr"] == 28 and outer["pipes"]["tensor"] == 6 and outer["tensor_fma"] == {"bf16": 6 * 2048}
    assert outer["shared_bytes"] == 256
    assert hl.pick_hot(list(loops.values())) is inner  # the innermost loop with tensor ops


def test_trip_count_is_not_guessed():
    # counter stepped twice, or compared against a register: no trip count
    twice = NEST.replace("ISETP.NE.AND P0, PT, R7, 0xc, PT", "IADD3 R7, R7, 0x1, RZ")
    loops = {lp["addr"]: lp for lp in hl.find_loops(_fn(twice))}
    assert loops["0x0020"]["trips"] is None
    reg = NEST.replace("R7, 0xc, PT", "R7, R9, PT")
    loops = {lp["addr"]: lp for lp in hl.find_loops(_fn(reg))}
    assert loops["0x0020"]["trips"] is None and loops["0x0010"]["partial"]


WGMMA = _sass([
    "MOV R1, RZ",                                              # 0x00
    "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R3",            # 0x10  header: wait for the tile
    "WARPGROUP.ARRIVE",                                        # 0x20
    "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24, gsb0",     # 0x30  16 x 128 x 16 = 32768 FMA per warp
    "WARPGROUP.DEPBAR.LE gsb0, 0x0",                           # 0x40  wait_group 0 (or 0x1 below)
    "FADD R0, R24, R0",                                        # 0x50  exposed
    "FMUL R2, R0, R0",                                         # 0x60  exposed
    "IADD3 R1, R1, 0x1, RZ",                                   # 0x70  exposed
    "@P1 BRA 0x10",                                            # 0x80  exposed (latch)
    "EXIT",
])


def test_wgmma_wait0_exposes_the_rest_of_the_iteration():
    lp = next(x for x in hl.find_loops(_fn(WGMMA)) if x["addr"] == "0x0010")
    # after DEPBAR 0x0: FADD, FMUL, IADD3, BRA, then (cyclically) the header's TRYWAIT, until the next HGMMA: 5
    assert lp["exposed"] == 5 and lp["tensor_fma"] == {"bf16": 32768}
    # wgmma smem operands: A 64x16x2 + B 128x16x2 bytes per warpgroup = 6144, a quarter per warp
    assert lp["shared_bytes"] == 1536
    mach = {"tensor_fma_per_sp": {"bf16": 512.0}, "lanes": hl.PIPE_LANES["sm_90"], "dram_bytes_per_clk_sm": 16.0,
            "profile": None}
    m = hl.model(lp, 8, mach)
    # tensor: 32768 / 512 x 2 warps per scheduler = 128; serial: 128 + 5 x 2 = 138
    assert m["cycles"]["tensor"] == 128 and m["cycles"]["serial"] == 138 and m["exposed_issue"] == 10
    one = next(x for x in hl.find_loops(_fn(WGMMA.replace("gsb0, 0x0", "gsb0, 0x1"))) if x["addr"] == "0x0010")
    assert one["exposed"] == 0 and "serial" not in hl.model(one, 8, mach)["cycles"]


def test_uniform_loop_counts_once_and_is_not_hot():
    text = _sass([
        "MOV R1, RZ",                            # 0x00
        "UTMALDG.2D [UR8], [UR4]",               # 0x10  outer header
        "R2UR UR6, R4",                          # 0x20  uniform loop header
        "@P0 BRA.U.ANY 0x20",                    # 0x30
        "IADD3 R1, R1, 0x1, RZ",                 # 0x40
        "@P1 BRA 0x10",                          # 0x50
        "EXIT",
    ])
    loops = {lp["addr"]: lp for lp in hl.find_loops(_fn(text))}
    assert loops["0x0020"]["kind"] == "uniform"
    assert loops["0x0010"]["instr"] == 5 and loops["0x0010"]["tma_ops"] == 1  # the uniform loop once
    assert hl.pick_hot(list(loops.values())) is loops["0x0010"]


def test_tensor_op_shapes():
    assert hl.tensor_op("HGMMA.64x256x16.F32.BF16") == ("bf16", 16 * 256 * 16, 0)
    assert hl.tensor_op("QGMMA.64x128x32.F32.E4M3.E4M3") == ("fp8", 16 * 128 * 32, 0)
    assert hl.tensor_op("HMMA.16816.F32.BF16") == ("bf16", 2048, 0)
    assert hl.tensor_op("HMMA.1684.F32.TF32") == ("tf32", 512, 0)
    assert hl.tensor_op("IMMA.16832.S32.S8.S8") == ("int8", 4096, 0)
    assert hl.tensor_op("HMMA.16816.F16") == ("fp16_acc16", 2048, 0)


def test_machine_rates_come_from_the_roofline_tables():
    h100 = hl.machine("sm_90a")
    # H100 whitepaper: 4096 dense bf16 FLOP/clk/SM = 2048 FMA over 4 tensor cores; fp8 twice that
    assert h100["tensor_fma_per_sp"]["bf16"] == 512 and h100["tensor_fma_per_sp"]["fp8"] == 1024
    # A100 whitepaper: 256 fp16 FMA/clk per tensor core
    assert hl.machine("sm_80")["tensor_fma_per_sp"]["bf16"] == 256
    # H100 SXM datasheet 3.35 TB/s over 132 SMs at the 1830 MHz tensor clock: ~13.9 B/clk/SM
    assert 13.5 < h100["dram_bytes_per_clk_sm"] < 14.2


# ------------------------------------------------------------------------------------------------ compiled kernels
@pytest.fixture(scope="module")
def cuda_loops():
    from harness import xray
    from harness.cuda import CudaSource

    if nvcc_path() is None or xray.tool("cuobjdump") is None:
        pytest.skip("needs nvcc and cuobjdump (compile-only tools)")
    src = CudaSource(FIXTURES / "hotloop_kernels.cu", archs=("sm_90a",))
    out = {}
    for name in ("hl_ffma", "hl_nested_mma"):
        b = src.build_for(name, "sm_90a")
        out[name] = (hl.kernel_loops(b.cubin, name), hl.sass(b.cubin)[name])
    return out


def _listing(insns, lo: int, hi: int) -> str:
    return "\n".join(f"/*{i.addr:04x}*/ {('@' + i.pred + ' ') if i.pred else ''}{i.op} {i.args}"
                     for i in insns if lo <= i.addr <= hi)


def test_cuda_ffma_loop_counted_by_hand(cuda_loops):
    facts, insns = cuda_loops["hl_ffma"]
    loops = [lp for lp in facts["loops"] if lp["kind"] == "loop"]
    # nvcc 13.0 -O3 sm_90a, by hand:
    #   /*00e0*/ MOV R2, R4                      alu      /*0130*/ IMAD.X R3, RZ, RZ, R3, P1  imad
    #   /*00f0*/ LDG.E.CONSTANT R2, [R2.64]      lsu      /*0140*/ FFMA R5, R2, R5, 1         fp32
    #   /*0100*/ UIADD3 UR4, UR4, 0x1, URZ       uniform  /*0150*/ FFMA R7, R2, R0, R5        fp32
    #   /*0110*/ IADD3 R4, P1, R4, 0x80, RZ      alu      /*0160*/ FFMA R5, R5, R7, R2        fp32
    #   /*0120*/ ISETP.LE.AND P0, PT, R8, UR4    alu      /*0170*/ FFMA R0, R7, R5, R2        fp32
    #                                                     /*0180*/ @!P0 BRA 0xe0              branch
    # 11 instructions: alu 3, imad 1, uniform 1, lsu 1, fp32 4, branch 1; one 4-byte load per lane = 128 B per warp
    assert len(loops) == 1, loops
    lp = loops[0]
    listing = _listing(insns, 0xE0, 0x180)
    assert (lp["addr"], lp["latch"]) == ("0x00e0", "0x0180"), listing
    assert lp["instr"] == 11 and lp["instr_min"] == 11, listing
    assert lp["pipes"] == {"alu": 3, "imad": 1, "uniform": 1, "lsu": 1, "fp32": 4, "branch": 1}, listing
    assert lp["global_bytes"] == 128 and lp["trips"] is None and not facts["warp_specialised"]
    assert lp["flops"] == 4 * 2 * 32  # 4 FFMA x 32 lanes


def test_cuda_nested_mma_loops_counted_by_hand(cuda_loops):
    facts, insns = cuda_loops["hl_nested_mma"]
    loops = {lp["addr"]: lp for lp in facts["loops"]}
    listing = _listing(insns, 0x130, 0x250)
    # inner, by hand: /*0140*/ HMMA.16816.F32.BF16, /*0150*/ LOP3.LUT, /*0160*/ VIADD R3, R3, 0x1,
    #   /*0170*/ ISETP.NE.AND P0, PT, R3, 0x4, /*0180*/ @P0 BRA 0x140; R3 = 0 at /*0130*/ (IMAD.MOV.U32 R3, RZ, RZ, RZ)
    #   -> 5 instructions, 4 trips
    inner = loops.get("0x0140")
    assert inner is not None and inner["instr"] == 5 and inner["trips"] == 4, listing
    assert inner["pipes"] == {"tensor": 1, "alu": 3, "branch": 1} and inner["tensor_fma"] == {"bf16": 2048}
    # outer 0x130..0x250: its own 14 (IMAD.MOV; USHF, LDC, ULDC, ULOP3, UIADD3, UIADD3.X, MOV, IMAD.U32, LDG, UIADD3,
    # ISETP, IADD3, BRA) + 4 x 5 inner = 34; 4 HMMA per outer iteration
    outer = loops["0x0130"]
    assert outer["instr"] == 34 and outer["inner"] == [{"addr": "0x0140", "trips": 4}], listing
    assert outer["pipes"] == {"imad": 2, "tensor": 4, "alu": 15, "branch": 5, "uniform": 6, "lsu": 2}, listing
    assert outer["flops"] == 4 * 2 * 2048  # 4 m16n8k16 per outer iteration
    assert hl.pick_hot(facts["loops"]) is inner


def test_triton_loop_counted_by_hand(tmp_path):
    from harness import xray

    if xray.tool("cuobjdump") is None:
        pytest.skip("needs cuobjdump (ships with the triton wheel)")
    cubin = tmp_path / "hl.cubin"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled for the GPU target
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    run = subprocess.run([sys.executable, "-m", "tests.fixtures.hotloop_triton", str(cubin)], env=env,
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    insns = hl.sass(cubin)["_hl_kernel"]
    loops = {lp["addr"]: lp for lp in hl.find_loops(insns)}
    listing = _listing(insns, 0x1F0, 0x360)
    # LLVM unrolled the loop by 4 (+ remainder loops): the main loop 0x1f0..0x360, by hand:
    #   3 VIADD, 4 LEA, 4 LEA.HI.X.SX32, 4 LDG.E, IADD3, ISETP.GE.U32, ISETP.GE.AND.EX  -> alu 14, lsu 4
    #   IMAD.X -> imad 1; 4 FFMA -> fp32 4; @!P1 BRA 0x1f0 -> branch 1: 24 instructions, 4 x 128 B loaded per warp
    lp = loops.get("0x01f0")
    assert lp is not None and lp["latch"] == "0x0360", listing
    assert lp["instr"] == 24 and lp["pipes"] == {"alu": 14, "lsu": 4, "imad": 1, "fp32": 4, "branch": 1}, listing
    assert lp["global_bytes"] == 512
    # the remainder loop 0x4b0..0x530: LEA, LEA.HI.X, LDG, IADD3, IMAD.X, 2 ISETP, FFMA, BRA = 9
    assert loops["0x04b0"]["instr"] == 9
    assert hl.pick_hot(list(loops.values())) is lp  # the most bytes per iteration


# ------------------------------------------------------------------------------------------------ issue 32's kernels
def test_attention_v3_hot_loop_meets_its_target():
    """Unmasked tiles of attn_v3_wgmma (D = 128): non-tensor issue <= 0.8 x tensor cycles; the masked copy exists
    and costs more (it is the other candidate loop)."""
    from harness import xray

    if nvcc_path() is None or xray.tool("cuobjdump") is None:
        pytest.skip("needs nvcc and cuobjdump (compile-only tools)")
    from harness.families import _attention_cuda as ac

    kname = ac.V3.replace("{T}", "__nv_bfloat16") % 128
    rec = {"arch": "sm_90a", "kernels": [xray.analyze_kernel(*_v3_build(ac, kname), "sm_90a", None, None)]}
    rec["kernels"][0]["name"] = kname
    hl.attach(rec)
    lps = rec["kernels"][0]["hot_loops"]
    hot = next(lp for lp in lps if lp["hot"])
    alt = [lp for lp in lps if lp["alt"]]
    assert hot["warps"] == 8 and "consumer" in hot["warps_note"]  # 2 consumer warpgroups of the 384-thread CTA
    assert hot["tensor_ops"] == {"HGMMA.64x128x16.F32.BF16": 16}
    assert hot["non_tensor_issue"] <= 0.8 * hot["cycles"]["tensor"], hot
    assert hot["bound"] == "tensor", hot
    assert alt and alt[0]["instr"] > hot["instr"] and alt[0]["tensor_ops"] == hot["tensor_ops"]
    c = hl.compact(rec)  # the records' xray.hot_loop
    assert c["kernel"] == kname and c["bound"] == "tensor" and c["issue"] == hot["cycles"]["issue"]
    assert c["serial"] > c["tensor"] and c["non_tensor_issue"] == hot["non_tensor_issue"]
    assert any(line.startswith("  hot loop @") for line in hl.lines(rec)) and max(map(len, hl.lines(rec))) <= 80


def _v3_build(ac, kname):
    from harness.cuda import normalize_kernel_name

    b = ac.SRC_SM90.build_for(kname, "sm_90a")
    return b.cubin, b.mangled[normalize_kernel_name(kname)]
