# ruff: noqa: E501  (the CPU emulators below are C++ sources embedded as strings)
"""Raw-CUDA matmul variants (harness/families/_matmul_cuda.py, cuda_src/matmul.cu, cuda_src/matmul_sm90.cu).

CPU: every kernel compiles for sm_80 and sm_90 (v9-v11: sm_90a, kernel and host-mode library) with zero spills; the
SIMT ladder (v1-v7), v8 and v8b run on the CPU interpreter at irregular shapes (tests/test_ptx80_rungs.py), v9-v11 on
its models of mbarrier/TMA/wgmma (tests/test_ptx90.py); SASS and X-ray facts of the new rungs
(HGMMA.64x256 / QGMMA + UTMALDG + setmaxnreg; LDGSTS + HMMA), the grouped tile order (g++ on the kernel's own function
vs brute force) and the epilogue's exactly-once coverage at tails.
GPU (marked ``gpu``): every variant matches a float64 matmul at irregular shapes. The GPU check does not go through
the Problem: it collects the variants with a stub, so it tests exactly this module's launch geometry and kernels.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from harness.cuda import CompileError, nvcc_path
from harness.families import _matmul_cuda as mc
from harness.registry import Shape
from tests.gxx import build_and_run
from tests.gxx import section as _section

needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
# the lead's conftest skips `gpu` tests without CUDA; the skipif keeps this file safe on its own too
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LADDER = [kname for _, _, kname, _, _, _ in mc.SGEMM] + [
    mc.V8.replace("{T}", "__half"),
    mc.V8.replace("{T}", "__nv_bfloat16"),
]


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_ladder_compiles_without_spills(arch):
    for kname in LADDER:
        r = mc.SRC.resources(kname, arch)
        assert r["arch"] == arch
        assert r["registers"] > 0, (kname, r)
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, (kname, arch, r)
        assert r["stack_bytes"] == 0, (kname, arch, r)
        assert r["registers"] <= 255


@needs_nvcc
def test_launch_bounds_fit_registers():
    # threads x registers must fit the 64K-register file for at least one block per SM
    threads = {kname: t for _, _, kname, _, t, _ in mc.SGEMM}
    threads[LADDER[-1]] = threads[LADDER[-2]] = mc.V8_THREADS
    for kname in LADDER:
        r = mc.SRC.resources(kname, "sm_90")
        assert threads[kname] * r["registers"] <= 65536, (kname, r)
    # v8's dynamic shared memory fits an sm_80 / sm_90 block (163 KB / 227 KB opt-in)
    assert mc.V8_SMEM == 56832 and mc.V8_SMEM <= 163 * 1024


@needs_nvcc
def test_sm90_wgmma_compiles():
    if not mc.SRC_SM90.path.exists():
        pytest.skip("matmul_sm90.cu not written")
    for ct in ("__half", "__nv_bfloat16"):
        r = mc.SRC_SM90.resources(mc.V9_KERNEL.replace("{T}", ct), "sm_90a")
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, r



@needs_nvcc
def test_sm90_host_library_links(tmp_path):
    """The host-mode build (kernel + TMA launcher) links into a shared library exporting the launcher.

    The harness links host-mode libraries with -lcuda; a machine without a driver has no libcuda.so, and this file
    does not need it (it fetches cuTensorMapEncodeTiled through the runtime), so the check builds the library the
    same way minus -lcuda when the harness' build cannot link here."""
    if not mc.SRC_SM90.path.exists():
        pytest.skip("matmul_sm90.cu not written")
    try:
        libres = mc.SRC_SM90.library_resources("sm_90a")
        assert any("hgemm_v9_wgmma" in k for k in libres), sorted(libres)
        return
    except CompileError as e:
        if "lcuda" not in str(e):
            raise
    src = mc.SRC_SM90
    unit = tmp_path / "u.cu"
    unit.write_text(f'#include "{src.path}"\n')
    so = tmp_path / "lib.so"
    cmd = [*src._cmd("sm_90a"), "-shared", "-Xcompiler", "-fPIC", "-o", str(so), str(unit)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
        assert "launch_hgemm_v9_wgmma" in syms


# ------------------------------------------------------------------------------------------------ CPU
# The kernels' own source runs on the CPU interpreter (harness/interp, with the PTX models of issue 28): the ladder,
# v8 and v8b at irregular shapes, misaligned views and ldmatrix bank conflicts are in tests/test_ptx80_rungs.py (the
# g++ emulators that were here are retired: they ran the kernels against shims written next to them).


class _Collect:
    """Stands in for the Problem: records add_variant calls."""

    def __init__(self):
        self.variants = {}

    def add_variant(self, name, backend, fn, dtypes=None, **kw):
        assert name not in self.variants
        self.variants[name] = dict(backend=backend, fn=fn, dtypes=dtypes, **kw)


def test_register_names_and_metadata():
    p = _Collect()
    mc.register_cuda_variants(p)
    names = list(p.variants)
    expect = ["cuda_v1_naive", "cuda_v2_coalesced", "cuda_v3_smem", "cuda_v4_blocktile1d", "cuda_v5_blocktile2d",
              "cuda_v6_vectorized", "cuda_v7_warptile", "cuda_v8_mma"]
    assert names[: len(expect)] == expect
    for i, n in enumerate(expect, 1):
        assert p.variants[n]["ladder"] == i and p.variants[n]["backend"] == "cuda"
    assert p.variants["cuda_v8_mma"]["dtypes"] == ("fp16", "bf16")
    if "cuda_v9_wgmma" in p.variants:
        assert p.variants["cuda_v9_wgmma"]["ladder"] == 9
    big, small = Shape(M=8192, N=8192, K=8192), Shape(M=4096, N=4096, K=4096)
    assert p.variants["cuda_v1_naive"]["supports"](big, "fp32") is not None
    assert p.variants["cuda_v1_naive"]["supports"](small, "fp32") is None
    assert p.variants["cuda_v7_warptile"]["supports"](big, "fp32") is None
    assert p.variants["cuda_v8_mma"]["supports"](big, "bf16") is None


SHAPES = [(1, 33, 17), (1, 8, 8), (7, 5, 3), (127, 129, 65), (128, 128, 32), (64, 136, 40), (257, 64, 96),
          (1000, 2025, 4071), (512, 1024, 768)]
TOL = {"fp32": 2e-5, "fp16": 2e-3, "bf16": 1e-2}
DT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("M,N,K", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_variants_match_float64(M, N, K):
    torch.backends.cuda.matmul.allow_tf32 = False
    p = _Collect()
    mc.register_cuda_variants(p)
    shape = Shape(M=M, N=N, K=K)
    g = torch.Generator(device="cuda").manual_seed(M * 1000003 + N * 1009 + K)
    failures = []
    for dname in ("fp32", "fp16", "bf16"):
        a = torch.randn(M, K, device="cuda", generator=g).to(DT[dname])
        b = torch.randn(K, N, device="cuda", generator=g).to(DT[dname])
        ref = (a.double() @ b.double()).cpu()
        for name, v in p.variants.items():
            if dname not in v["dtypes"]:
                continue
            sup = v.get("supports")
            if sup is not None and sup(shape, dname) is not None:
                continue
            c = torch.full((M, N), float("nan"), device="cuda", dtype=DT[dname])
            v["fn"]({"a": a, "b": b}, {"c": c}, shape)
            torch.cuda.synchronize()
            out = c.double().cpu()
            if not torch.isfinite(out).all():
                bad = (~torch.isfinite(out)).nonzero()[:3].tolist()
                failures.append(f"{name} {dname} {M}x{N}x{K}: non-finite (unwritten?) at {bad}")
                continue
            rel = ((out - ref).norm() / ref.norm()).item()
            if rel > TOL[dname]:
                failures.append(f"{name} {dname} {M}x{N}x{K}: rel err {rel:.3g} > {TOL[dname]}")
    assert not failures, "\n".join(failures)


@pytest.mark.gpu
@needs_gpu
def test_v6_v7_v8_misaligned_views():
    """Pointers offset by one element: the 16-byte paths must fall back, not fault or read wrong data."""
    p = _Collect()
    mc.register_cuda_variants(p)
    M, N, K = 65, 72, 48
    shape = Shape(M=M, N=N, K=K)
    for dname, names in (("fp32", ["cuda_v6_vectorized", "cuda_v7_warptile"]), ("fp16", ["cuda_v8_mma"])):
        abuf = torch.randn(M * K + 1, device="cuda").to(DT[dname])
        bbuf = torch.randn(K * N + 1, device="cuda").to(DT[dname])
        a, b = abuf[1:].view(M, K), bbuf[1:].view(K, N)
        ref = (a.double() @ b.double()).cpu()
        for name in names:
            c = torch.full((M, N), float("nan"), device="cuda", dtype=DT[dname])
            p.variants[name]["fn"]({"a": a, "b": b}, {"c": c}, shape)
            torch.cuda.synchronize()
            rel = ((c.double().cpu() - ref).norm() / ref.norm()).item()
            assert rel <= TOL[dname], (name, rel)


# ================================================================================================ new rungs (issue 21)
# v8b (portable, swizzled), v10 (warp-specialised wgmma), v11 (fp8 QGMMA): none has run on a GPU yet (all three run on
# the CUDA interpreter: tests/test_ptx80_rungs.py, tests/test_ptx90.py). What the CPU establishes here: they compile
# for their archs without spills inside their register budgets, their SASS holds the instructions each is built around,
# the tile order is a bijection, the epilogue covers every C element once at irregular shapes, and v8b computes the
# right product on the CPU interpreter with conflict-free ldmatrix phases (tests/test_ptx80_rungs.py).
V8B_NAMES = [mc.V8B.replace("{T}", ct) for ct in ("__half", "__nv_bfloat16")]
V10_NAMES = [mc.V10_KERNEL.replace("{T}", ct) for ct in ("__half", "__nv_bfloat16")]


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_v8b_compiles_without_spills_two_ctas_per_sm(arch):
    for kname in V8B_NAMES:
        r = mc.SRC.resources(kname, arch)
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0 and r["stack_bytes"] == 0, (kname, r)
        # __launch_bounds__(256, 2): two CTAs of 256 threads share the 64K registers
        assert 0 < r["registers"] <= 128, (kname, r)
    assert mc.V8B_SMEM == 65536 and 2 * mc.V8B_SMEM <= 163 * 1024  # two CTAs' rings fit even an A100 SM


@needs_nvcc
def test_sm90_ws_kernels_compile_without_spills():
    for kname in [*V10_NAMES, mc.V11_KERNEL]:
        r = mc.SRC_SM90.resources(kname, "sm_90a")
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0 and r["stack_bytes"] == 0, (kname, r)
        # 384 threads x the compile-time register count must fit the register file (setmaxnreg then moves them)
        assert 0 < r["registers"] and 384 * r["registers"] <= 65536, (kname, r)
    assert mc.V10_SMEM == mc.V11_SMEM == 197632 and mc.V10_SMEM <= 227 * 1024
    libres = None
    try:
        libres = mc.SRC_SM90.library_resources("sm_90a")
    except CompileError as e:  # no libcuda.so to link against here: the kernel build above is the check
        if "lcuda" not in str(e):
            raise
    if libres is not None:  # the host-mode build instantiates what the launchers launch
        for kname in ("hgemm_v10_wgmma_ws", "qgemm_v11_fp8_wgmma_ws"):
            assert any(kname in k for k in libres), sorted(libres)


def _sass_ops(src, kname: str, arch: str) -> list[str]:
    from harness import xray
    from harness.cuda import normalize_kernel_name

    if xray.tool("cuobjdump") is None:
        pytest.skip("cuobjdump not found")
    b = src.build_for(kname, arch)
    return xray.sass_opcodes(b.cubin)[b.mangled[normalize_kernel_name(kname)]]


@needs_nvcc
def test_sm90_ws_sass_has_wgmma_tma_and_setmaxnreg():
    def facts(ops):
        return {"hgmma256": any(o.startswith("HGMMA.64x256x16.F32") for o in ops),
                "qgmma": any(o.startswith("QGMMA.64x128x32.F32.E4M3.E4M3") for o in ops),
                "tma": any(o.startswith("UTMALDG") for o in ops),
                "setmaxnreg": {o.split(".")[1] for o in ops if o.startswith("USETMAXREG")},
                "hmma": any(o.startswith("HMMA") for o in ops)}

    for kname in V10_NAMES:
        f = facts(_sass_ops(mc.SRC_SM90, kname, "sm_90a"))
        assert f["hgmma256"] and f["tma"] and not f["hmma"], (kname, f)
        assert f["setmaxnreg"] == {"DEALLOC", "TRY_ALLOC"}, (kname, f)  # producer gives, consumers take
    f = facts(_sass_ops(mc.SRC_SM90, mc.V11_KERNEL, "sm_90a"))
    assert f["qgmma"] and f["tma"] and f["setmaxnreg"] == {"DEALLOC", "TRY_ALLOC"} and not f["hgmma256"], f
    # known-wrong: v9 (one warpgroup, m64n128) must fail the same facts
    f = facts(_sass_ops(mc.SRC_SM90, mc.V9_KERNEL.replace("{T}", "__nv_bfloat16"), "sm_90a"))
    assert not f["hgmma256"] and not f["setmaxnreg"] and f["tma"], f


@needs_nvcc
def test_new_rungs_xray():
    """`python -m harness inspect` sees HGMMA/QGMMA + TMA for v10/v11 on sm_90a, LDGSTS + HMMA (no wgmma) for v8b on
    sm_80, and no lint on any of them; v8 (padded, unchanged) is X-rayed alongside as the reference rung."""
    from harness import xray

    if xray.tool("cuobjdump") is None:
        pytest.skip("cuobjdump not found")
    big = "M=4096,N=4096,K=4096"
    jobs = [dict(family="matmul", variant="cuda_v10_wgmma_ws", dtype="bf16", shape=big, arch="sm_90a"),
            dict(family="matmul", variant="cuda_v11_fp8_wgmma", dtype="fp8", shape=big, arch="sm_90a"),
            dict(family="matmul", variant="cuda_v8b_mma_swizzle", dtype="bf16", shape=big, arch="sm_80"),
            dict(family="matmul", variant="cuda_v8_mma", dtype="bf16", shape=big, arch="sm_80")]
    prof = xray.load_profile("h100")
    try:
        v10, v11, v8b, v8 = (xray.finish(r, prof) for r in xray.raw_xrays(jobs))
    finally:
        xray._close_workers()
    for r in (v10, v11, v8b, v8):
        assert r["status"] == "ok", r.get("reason")
        assert all(k["spill_bytes"] == 0 for k in r["kernels"]), r["kernels"]

    def tensor(r):
        return {op.split(".")[0] for k in r["kernels"] for op in k["mix"]["tensor"]}

    def total(r, key):
        return sum(k["mix"][key] for k in r["kernels"])

    assert tensor(v10) == {"HGMMA"} and total(v10, "utmaldg") > 0 and not v10["lints"], v10["lints"]
    assert tensor(v11) == {"QGMMA"} and total(v11, "utmaldg") > 0 and not v11["lints"], v11["lints"]
    assert tensor(v8b) == {"HMMA"} and total(v8b, "utmaldg") == 0
    assert sum(sum(k["mix"]["ldgsts"].values()) for k in v8b["kernels"]) > 0
    assert v8b["kernels"][0]["dynamic_smem"] == mc.V8B_SMEM and v8b["kernels"][0]["threads"] == 256
    # v8b's 64 KB ring + <= 128 registers keep two CTAs on an sm_80 SM; v8 (padded, 3 stages) is not less occupied
    assert v8b["kernels"][0]["occupancy"]["blocks_per_sm"] == 2
    assert v8b["kernels"][0]["occupancy"]["blocks_per_sm"] >= v8["kernels"][0]["occupancy"]["blocks_per_sm"]


# ------------------------------------------------------------------------------------------------ tile order
TILE_ORDER_MAIN = r"""#include <algorithm>
#include <cstdio>
using std::min;
#define __host__
#define __device__
#define __forceinline__ inline
namespace sm90ws {
#include "ws_order.inc"
}
#include "v8b_order.inc"
int main(int argc, char** argv) {
  for (int ai = 1; ai < argc; ++ai) {
    int tm, tn;
    if (sscanf(argv[ai], "%d,%d", &tm, &tn) != 2) return 2;
    for (int t = 0; t < tm * tn; ++t) {
      int a, b, c, d;
      sm90ws::ws_tile_coords(t, tm, tn, a, b);
      v8b_tile_coords(t, tm, tn, c, d);
      printf("%d %d %d %d %d %d %d\n", tm, tn, t, a, b, c, d);
    }
  }
  return 0;
}
"""
GRIDS = [(1, 1), (1, 7), (7, 1), (8, 8), (9, 5), (17, 3), (64, 32), (33, 65)]


def _check_order(order: list[tuple[int, int]], tm: int, tn: int, group_m: int = 8) -> None:
    """Brute force: a bijection onto the tm x tn tile grid; and locality: any w = min(32, 8*tn) consecutive tiles
    inside one full band of GROUP_M tile rows (CTAs in flight together) touch <= GROUP_M row panels of A and
    <= w/GROUP_M + 1 column panels of B (row-major order: 1-2 rows but w columns)."""
    assert len(order) == tm * tn
    assert sorted(order) == [(m, n) for m in range(tm) for n in range(tn)], "not a bijection"
    band, w = group_m * tn, min(32, group_m * tn)
    for s in range(0, (tm // group_m) * band - w + 1):
        if s // band != (s + w - 1) // band:
            continue
        rows = {m for m, _ in order[s:s + w]}
        cols = {n for _, n in order[s:s + w]}
        assert len(rows) <= group_m and len(cols) <= -(-w // group_m) + 1, ("locality", s, sorted(rows), sorted(cols))


def test_tile_order_is_a_grouped_bijection(tmp_path):
    sm90 = mc.SRC_SM90.path.read_text()
    mm = mc.SRC.path.read_text()
    out = build_and_run(tmp_path, "order", {"ws_order.inc": _section(sm90, "WS_TILE_ORDER_BEGIN", "WS_TILE_ORDER_END"),
                                            "v8b_order.inc": _section(mm, "V8B_TILE_ORDER_BEGIN", "V8B_TILE_ORDER_END"),
                                            "order.cpp": TILE_ORDER_MAIN},
                        [f"{m},{n}" for m, n in GRIDS], std="c++17")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows: dict[tuple[int, int], list[list[int]]] = {}
    for line in out.stdout.splitlines():
        tm, tn, t, a, b, c, d = map(int, line.split())
        rows.setdefault((tm, tn), []).append([t, a, b, c, d])
    assert sorted(rows) == sorted(GRIDS)
    for (tm, tn), lines in rows.items():
        ws = [(a, b) for _, a, b, _, _ in lines]
        v8b = [(c, d) for _, _, _, c, d in lines]
        _check_order(ws, tm, tn)
        _check_order(v8b, tm, tn)
        assert ws == mc.tile_order(tm, tn), (tm, tn)  # the Python model is the kernel's map


def test_tile_order_checker_rejects_wrong_orders():
    # a band that ignores the short last group revisits tiles; a row-major order breaks the grouping
    def short_band_ignored(tm, tn, g=8):
        return [(min((t // (g * tn)) * g + (t % (g * tn)) % g, tm - 1), (t % (g * tn)) // g % tn)
                for t in range(tm * tn)]

    with pytest.raises(AssertionError, match="bijection"):
        _check_order(short_band_ignored(9, 5), 9, 5)
    with pytest.raises(AssertionError, match="locality"):
        _check_order([(t // 40, t % 40) for t in range(16 * 40)], 16, 40)  # row-major: 32 tiles span 32 columns
    _check_order([(t // 3, t % 3) for t in range(40 * 3)], 40, 3)  # ...but with 3 columns row-major is grouped


# ------------------------------------------------------------------------------------------------ epilogue coverage
def _stored(M: int, N: int, bm: int, bn: int, order) -> torch.Tensor:
    """How often each C element is written by the v10/v11 epilogue (2 consumer warpgroups x 4 warps x 32 lanes;
    m64nNk16 accumulator layout: acc[4i + 2e + {0,1}] -> row 16w + lane/4 + 8e, col 8i + 2(lane%4) + {0,1};
    guard row < M && col < N), over every tile of the grouped order."""
    cnt = torch.zeros(M, N, dtype=torch.int32)
    lane = torch.arange(32)
    for pm, pn in order:
        for c in range(2):
            for w in range(4):
                for e in range(2):
                    rows = pm * bm + c * 64 + w * 16 + lane // 4 + 8 * e  # [32]
                    for i in range(bn // 8):
                        for j in range(2):
                            cols = pn * bn + 8 * i + 2 * (lane % 4) + j
                            ok = (rows < M) & (cols < N)
                            cnt.index_put_((rows[ok], cols[ok]), torch.ones(int(ok.sum()), dtype=torch.int32),
                                           accumulate=True)
    return cnt


@pytest.mark.parametrize("M,N,bm,bn", [(1, 8, 128, 256), (129, 264, 128, 256), (200, 136, 128, 128),
                                       (257, 1, 128, 128)])
def test_ws_epilogue_writes_every_element_once(M, N, bm, bn):
    order = mc.tile_order(-(-M // bm), -(-N // bn))
    assert torch.equal(_stored(M, N, bm, bn, order), torch.ones(M, N, dtype=torch.int32))
    # known-wrong: dropping the last tile leaves elements unwritten
    assert (_stored(M, N, bm, bn, order[:-1]) == 0).any()


def test_new_variants_registered_and_marked_unverified():
    p = _Collect()
    mc.register_cuda_variants(p)
    v = p.variants
    assert v["cuda_v8b_mma_swizzle"]["ladder"] == 8 and v["cuda_v8b_mma_swizzle"]["dtypes"] == ("fp16", "bf16")
    assert v["cuda_v10_wgmma_ws"]["ladder"] == 10 and v["cuda_v10_wgmma_ws"]["dtypes"] == ("fp16", "bf16")
    assert v["cuda_v11_fp8_wgmma"]["ladder"] == 11 and v["cuda_v11_fp8_wgmma"]["dtypes"] == ("fp8",)
    for name in ("cuda_v8b_mma_swizzle", "cuda_v10_wgmma_ws", "cuda_v11_fp8_wgmma", "cuda_v11_fp8_wgmma_relayout"):
        assert v[name]["description"].startswith("(CPU-verified, GPU-pending)"), name  # test_ptx80_rungs / ptx90
    # the relayout record is not a rung: the same kernel, its B made K-major inside the timed call
    assert v["cuda_v11_fp8_wgmma_relayout"].get("ladder") is None
    assert v["cuda_v11_fp8_wgmma_relayout"]["kernel"] == v["cuda_v11_fp8_wgmma"]["kernel"]
    assert v["cuda_v8b_mma_swizzle"]["supports"](Shape(M=8192, N=8192, K=8192), "bf16") is None


# Persistent-grid shapes: more tiles than SMs (each CTA runs several tiles, the ring phase carries over), M and N
# tails, K not a multiple of BK (64 for v10, 128 for v11), one-tile and one-row cases.
WS_SHAPES = [(1, 8, 8), (127, 264, 72), (1928, 4104, 200), (2048, 2048, 64), (300, 520, 1032)]
FP8_SHAPES = [(1, 16, 16), (31, 64, 96), (129, 200, 272), (1928, 2056, 400), (2048, 2048, 128)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("M,N,K", WS_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in WS_SHAPES])
def test_v10_persistent_matches_float64(M, N, K):
    p = _Collect()
    mc.register_cuda_variants(p)
    v = p.variants["cuda_v10_wgmma_ws"]
    shape = Shape(M=M, N=N, K=K)
    if v["supports"](shape, "bf16") is not None:
        pytest.skip(v["supports"](shape, "bf16"))
    g = torch.Generator(device="cuda").manual_seed(M + 7 * N + 13 * K)
    for dname in ("fp16", "bf16"):
        a = torch.randn(M, K, device="cuda", generator=g).to(DT[dname])
        b = (torch.randn(K, N, device="cuda", generator=g) / K**0.5).to(DT[dname])
        c = torch.full((M, N), float("nan"), device="cuda", dtype=DT[dname])
        v["fn"]({"a": a, "b": b}, {"c": c}, shape)
        torch.cuda.synchronize()
        ref = a.double() @ b.double()
        assert torch.isfinite(c).all(), (dname, (~torch.isfinite(c)).nonzero()[:3].tolist())
        rel = ((c.double() - ref).norm() / ref.norm()).item()
        assert rel <= TOL[dname], (dname, rel)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("M,N,K", FP8_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in FP8_SHAPES])
def test_v11_fp8_matches_float64(M, N, K):
    from harness.families.matmul import make_inputs

    p = _Collect()
    mc.register_cuda_variants(p)
    v = p.variants["cuda_v11_fp8_wgmma"]
    shape = Shape(M=M, N=N, K=K)
    if v["supports"](shape, "fp8") is not None:
        pytest.skip(v["supports"](shape, "fp8"))
    ins = make_inputs(shape, "fp8", 0, torch.device("cuda"))
    c = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
    v["fn"](ins, {"c": c}, shape)
    torch.cuda.synchronize()
    ref = (ins["a"].double() * ins["a_scale"].double()) @ (ins["b"].double() * ins["b_scale"].double())
    assert torch.isfinite(c).all(), (~torch.isfinite(c)).nonzero()[:3].tolist()
    rel = ((c.double() - ref).norm() / ref.norm()).item()
    assert rel <= 1e-2, rel  # bf16 output rounding (~3e-3) dominates once the slices are promoted to fp32
