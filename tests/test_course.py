"""The course project end to end (issue 30): its files build as shipped (cuBLAS headers), its shape order, an X-ray
of the student's own kernels at each record's shape, an X-ray cache that never goes stale, spills wherever registers
are shown, honest figures and reports, and 80-column output.

The X-ray cases share one worker batch (module fixture); nvcc and Triton results are cached under WB_CACHE, so a
re-run costs seconds. Known-wrong cases: a stale cache (an edited kernel keeps its old registers), a Triton cache
hit that loses its X-ray, a kNN launcher that reads meta data, a line through unrelated quick shapes, a library
variant reported as "the best", an fp32 roof for a TF32 record.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import byo, cuda, registry, xray
from harness.cuda import nvcc_path

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "tests" / "fixtures" / "course"
SGEMM = COURSE / "matrix_multiply" / "kernels.cuh"
CONV = COURSE / "depth_conv1d" / "conv1d_kernel.cuh"
SAXPY = COURSE / "vector_addition" / "saxpy.cu"
SAXPY_TR = COURSE / "vector_addition" / "saxpy_triton.py"
needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not installed")
needs_tools = pytest.mark.skipif(nvcc_path() is None or xray.tool("cuobjdump") is None,
                                 reason="needs nvcc and cuobjdump (compile-only tools)")


@pytest.fixture
def own_files():
    """Register course files for a test (exported to the X-ray worker through WB_BYO); undo it afterwards."""
    registry.all_problems()
    before = {n: set(p.variants) for n, p in registry.REGISTRY.items()}
    env = {k: os.environ.get(k) for k in (byo.ENV, "WB_FAMILIES")}

    def reg(*specs: byo.Spec) -> list[str]:
        return byo.register_all(list(specs))

    yield reg
    for n, names in before.items():
        for v in set(registry.REGISTRY[n].variants) - names:
            registry.REGISTRY[n].variants.pop(v)
            byo.SPECS.pop((n, v), None)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# ------------------------------------------------------------------------------------------------ 1. cuBLAS
def test_find_cublas_in_a_wheel_layout(tmp_path):
    """The toolkit first, then the nvidia-cublas wheel matching nvcc's major version (cu13: nvidia/cu13, cu12:
    nvidia/cublas), whose lib has only the versioned .so (linked by name, with an rpath)."""
    for sub, so in (("nvidia/cu13", "libcublas.so.13"), ("nvidia/cublas", "libcublas.so.12")):
        (tmp_path / "site" / sub / "include").mkdir(parents=True)
        (tmp_path / "site" / sub / "include" / "cublas_v2.h").write_text("// stub\n")
        (tmp_path / "site" / sub / "lib").mkdir()
        (tmp_path / "site" / sub / "lib" / so).write_bytes(b"")
    sites = [tmp_path / "empty", tmp_path / "site"]
    kind, inc, lib = cuda.find_cublas(None, sites, "13")
    assert (kind, inc.parent.name, lib.name) == ("wheel", "cu13", "libcublas.so.13")
    assert cuda.find_cublas(None, sites, "12")[2].name == "libcublas.so.12"
    (tmp_path / "tk" / "include").mkdir(parents=True)
    assert cuda.find_cublas(tmp_path / "tk", sites, "13")[0] == "wheel"  # a toolkit without cuBLAS
    (tmp_path / "tk" / "include" / "cublas_v2.h").write_text("")
    assert cuda.find_cublas(tmp_path / "tk", sites, "13") == ("toolkit", None, None)
    assert cuda.find_cublas(None, [tmp_path / "empty"], "13") == ("missing", None, None)


COURSE_HEADER = """#pragma once
#include <cstdio>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#define CUBLAS_CHECK(call) do { cublasStatus_t s__ = (call); \\
  if (s__ != CUBLAS_STATUS_SUCCESS) std::fprintf(stderr, "cuBLAS error %d\\n", (int)s__); } while (0)
"""
COURSE_SAXPY = """#include "../cuda_error.cuh"
__global__ void saxpy(size_t n, float a, float* x, float* y, float* z) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) z[i] = a * x[i] + y[i];
}
int main() { cublasHandle_t h; CUBLAS_CHECK(cublasCreate(&h)); return 0; }
"""


def _course_tree(tmp_path: Path, header: str = COURSE_HEADER, saxpy: str = COURSE_SAXPY) -> Path:
    (tmp_path / "vector_addition").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cuda_error.cuh").write_text(header)
    (tmp_path / "vector_addition" / "saxpy.cu").write_text(saxpy)
    return tmp_path / "vector_addition" / "saxpy.cu"


@needs_nvcc
@pytest.mark.skipif(nvcc_path() is None or cuda.cublas_location()[0] == "missing",
                    reason="no cuBLAS here (make installs the nvidia-cublas wheel where nvcc has none)")
def test_a_course_header_with_cublas_builds():
    """A cuda_error.cuh that includes <cublas_v2.h> and a main() calling cublasCreate: with cuBLAS found (toolkit or
    wheel) the library builds, links libcublas (by file name and rpath from a wheel) and loads with ctypes."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = _course_tree(Path(d))
        b = byo.bind_cuda(byo.Spec("saxpy", str(f)))
        assert b.source.libs == ("cublas",)
        assert b.source.resources("saxpy")["registers"] > 0  # built, loaded, wb_byo_launch found (the GPU path)


@needs_nvcc
@pytest.mark.skipif(nvcc_path() is not None and (cuda.cuda_root() or Path("/nonexistent")).joinpath(
    "include", "cublas_v2.h").is_file(), reason="the CUDA toolkit has cuBLAS: nothing can be missing here")
def test_without_cublas_the_error_says_what_to_install(tmp_path, monkeypatch):
    f = _course_tree(tmp_path)
    monkeypatch.setattr(cuda, "cublas_location", lambda: ("missing", None, None))
    b = byo.bind_cuda(byo.Spec("saxpy", str(f)))
    with pytest.raises(cuda.CompileError) as e:
        b.source.resources("saxpy")
    first = str(e.value).splitlines()[0]
    assert "pip install nvidia-cublas" in first and "cublas_v2.h" in first, first


# ------------------------------------------------------------------------------------------------ 2. shape order
def test_positional_shapes_follow_the_family_order_and_the_course_order_on_request():
    sg, cv = registry.get_problem("sgemm"), registry.get_problem("conv1d")
    assert sg.parse_shape("16x32x64") == {"M": 16, "N": 32, "K": 64}  # documented M x N x K
    assert sg.parse_shape("16x32x64", "course") == {"M": 16, "N": 64, "K": 32}  # the course's M, K, N
    assert cv.parse_shape("2x100x8x3", "course") == {"B": 2, "D": 8, "L": 100, "K": 3}  # B, L, D, K
    assert sg.parse_shape("M=16,K=32,N=64", "course") == sg.parse_shape("M=16,K=32,N=64")  # names never reorder
    with pytest.raises(registry.RegistryError, match="no shape order 'course'; its orders: default"):
        registry.get_problem("softmax").parse_shape("4x4", "course")
    from harness.runner import plan

    [t] = plan(["sgemm"], shapes=["16x32x64"], shape_order="course")
    assert t.shape == "M=16,N=64,K=32"  # a task (and so its record) names its dims


def _bench_run():
    import importlib.util

    spec = importlib.util.spec_from_file_location("wb_bench_run_course", ROOT / "bench" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return run


def test_the_cli_says_how_a_positional_shape_was_read():
    run = _bench_run()
    note = " ".join(" ".join(run.shape_notes(["sgemm"], ["16x32x64"], None)).split())
    assert "read as M=16,N=32,K=64" in note and "--shape-order course" in note
    note = " ".join(run.shape_notes(["sgemm"], ["16x32x64"], "course"))
    assert "read as M=16,N=64,K=32" in note
    assert run.shape_notes(["sgemm"], ["M=1,N=2,K=3"], None) == []  # named dims: nothing to say
    args = run.parse_args(["--kernel", "sgemm", "--shape", "16x32x64", "--shape-order", "course"])
    assert run.manifest_options(args, ["sgemm"], 0.1)["shape_order"] == "course"
    assert "shape_order" not in run.manifest_options(run.parse_args(["--kernel", "sgemm"]), ["sgemm"], 0.1)
    text = run.list_text("sgemm")
    assert "shape MxNxK; course order MxKxN with --shape-order course" in " ".join(text.split())


# ------------------------------------------------------------------------------------------------ 3-5. X-ray
SG_SHAPE = "M=100,N=200,K=300"
KNN_SHAPE = "Q=300,N=1000,D=16,k=3,metric=l2,dups=0,base_rows=0,data=normal"  # Q > one program: grouped


@pytest.fixture(scope="module")
def course_xrays():
    """One X-ray batch: the five sgemm kernel numbers, conv1d at K=3 and K=7, saxpy.cu, the Triton saxpy at two
    shapes of one specialisation (the second is a Triton cache hit) and the grouped kNN launcher."""
    registry.all_problems()
    env = {k: os.environ.get(k) for k in (byo.ENV, "WB_FAMILIES")}
    specs = [byo.Spec("sgemm", str(SGEMM)), byo.Spec("conv1d", str(CONV)), byo.Spec("saxpy", str(SAXPY)),
             byo.Spec("saxpy", str(SAXPY_TR), kind="triton")]
    names = byo.register_all(specs)
    jobs = {f"sgemm#{n}": dict(family="sgemm", variant=f"kernels.cuh#{n}", dtype="fp32", shape=SG_SHAPE)
            for n in range(1, 6)}
    for k in (3, 7):
        jobs[f"conv K={k}"] = dict(family="conv1d", variant="conv1d_kernel.cuh", dtype="fp32",
                                   shape=f"B=2,D=3,L=17,K={k}")
    jobs["saxpy.cu"] = dict(family="saxpy", variant="saxpy.cu", dtype="fp32", shape="N=1000")
    jobs["knn"] = dict(family="knn", variant="triton_fused", dtype="fp32", shape=KNN_SHAPE)
    # the two Triton shapes go to ONE worker, in order: the second is a hit in that worker's Triton kernel cache
    tri = {f"triton N={n}": dict(family="saxpy", variant="saxpy_triton.py:saxpy", dtype="fp32", shape=f"N={n}")
           for n in (1000, 4099)}
    try:
        keys = list(jobs)
        raw = xray.raw_xrays([jobs[k] for k in keys], "sm_90a") + xray.raw_xrays(list(tri.values()), "sm_90a",
                                                                                 workers=1)
        prof = xray.load_profile("h100")
        yield {k: xray.finish(r, prof) for k, r in zip(keys + list(tri), raw)}
    finally:
        xray._close_workers()
        for fam in ("sgemm", "conv1d", "saxpy"):
            for v in names:
                registry.REGISTRY[fam].variants.pop(v, None)
                byo.SPECS.pop((fam, v), None)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ok(r):
    assert r["status"] == "ok", r.get("reason")
    return r


def _occupancy_by_hand(regs: int, threads: int, smem: int) -> float:
    """The CUDA occupancy calculator's rules for sm_90, written out independently of harness.xray.occupancy."""
    warps = -(-threads // 32)
    per_warp = -(-regs * 32 // 256) * 256
    by_regs = (65536 // 4 // per_warp) * 4 // warps
    by_smem = 233472 // (-(-(smem + 1024) // 128) * 128)
    blocks = min(64 // warps, 32, by_regs, by_smem)
    return blocks * warps / 64


@needs_tools
def test_every_numbered_kernel_is_xrayed_at_its_launch_geometry(course_xrays):
    """#1..#5 of kernels.cuh: the specialisation each number launches (templated #2-#5 included), its ptxas report,
    and occupancy at the block size read from its <<<>>> at this shape (M=100, N=200: grid = ceil-divided)."""
    want = {1: ("sgemm_naive", 1024, (4, 7, 1)), 2: ("sgemm_coalesced<32>", 1024, (7, 4, 1)),
            3: ("sgemm_shared<32>", 1024, (7, 4, 1)), 4: ("sgemm_1d_tiling<64,64,8,8>", 512, (4, 2, 1)),
            5: ("sgemm_2d_tiling<64,64,8,4,4>", 256, (4, 2, 1))}
    ptxas = byo.bind_cuda(byo.Spec("sgemm", str(SGEMM))).source.compile("sm_90a").resources  # the file's build
    for n, (name, threads, grid) in want.items():
        [k] = _ok(course_xrays[f"sgemm#{n}"])["kernels"]
        assert (k["name"], k["threads"], tuple(k["grid"])) == (name, threads, grid), k
        assert k["registers"] == ptxas[name].registers and k["spill_bytes"] == ptxas[name].spills == 0
        smem = k["static_smem"] + k["dynamic_smem"]
        assert k["occupancy"]["occupancy"] == pytest.approx(_occupancy_by_hand(k["registers"], threads, smem))
        assert "--cu" in course_xrays[f"sgemm#{n}"]["inspect"] and str(SGEMM) in course_xrays[f"sgemm#{n}"]["inspect"]


@needs_tools
def test_the_launcher_arm_that_runs_at_the_shape(course_xrays):
    """conv1d's launcher switches on K: K=3 runs conv1d_fixed<3>, K=7 the generic kernel, never all four; the grid
    is read from `blocks = (total + threads - 1) / threads`. The bare saxpy kernel gets the harness's launch."""
    [k3] = _ok(course_xrays["conv K=3"])["kernels"]
    [k7] = _ok(course_xrays["conv K=7"])["kernels"]
    assert (k3["name"], k7["name"]) == ("conv1d_fixed<3>", "conv1d_generic")
    assert k3["threads"] == 256 and k3["grid"] == [1, 1, 1]  # 2*3*17 = 102 outputs
    [s] = _ok(course_xrays["saxpy.cu"])["kernels"]
    assert s["threads"] == 256 and s["grid"] == [4, 1, 1] and s["occupancy"]["occupancy"] is not None


@needs_tools
def test_a_triton_cache_hit_still_gets_its_own_xray(course_xrays):
    """N=1000 and N=4099 share one Triton specialisation: the second launch is a kernel-cache hit with no compile.
    Known-wrong (before): 'no kernel launched', and that failure cached. Spills come from ptxas -v (not n/a)."""
    a = _ok(course_xrays["triton N=1000"])["kernels"][0]
    b = _ok(course_xrays["triton N=4099"])["kernels"][0]
    assert a["grid"] == [1, 1, 1] and b["grid"] == [5, 1, 1]  # BLOCK = 1024
    assert a["spill_bytes"] == 0 and b["spill_bytes"] == 0 and a["registers"] > 0
    assert xray.compact(course_xrays["triton N=4099"])["spill_bytes"] == 0


@needs_tools
def test_knn_is_xrayed_without_reading_data(course_xrays):
    """triton_fused groups its queries on the host (group_queries): on meta tensors that read no data it still
    launches its fused search and its re-rank (known-wrong: 'Cannot copy out of meta tensor')."""
    names = [k["name"] for k in _ok(course_xrays["knn"])["kernels"]]
    assert names == ["_knn_fused_kernel", "_knn_rerank_kernel"]


@needs_tools
def test_the_xray_cache_follows_every_file_the_build_read(tmp_path, own_files):
    """Edit the kernel: new registers (known-wrong: the old 16 from a cache keyed on the variant name). Edit only
    the included header: the cached X-ray is not used either. A file that fails to build is not cached: once fixed,
    it is X-rayed."""
    f = _course_tree(tmp_path, header="#pragma once\n#include <cuda_runtime.h>\n",
                     saxpy=COURSE_SAXPY.replace("int main() { cublasHandle_t h; CUBLAS_CHECK(cublasCreate(&h)); "
                                                "return 0; }\n", ""))
    own_files(byo.Spec("saxpy", str(f)))
    job = dict(family="saxpy", variant="saxpy.cu", dtype="fp32", shape="N=1000")
    r1 = _ok(xray.raw_xrays([job], "sm_90a")[0])
    assert any(p.endswith("cuda_error.cuh") for p in r1["deps"])  # the header is part of the key
    f.write_text(f.read_text().replace("z[i] = a * x[i] + y[i];",
                                       "z[i] = a * x[i] + y[i] * sinf(x[i]) + cosf(a * y[i]) / (1.f + x[i] * x[i]);"))
    r2 = _ok(xray.raw_xrays([job], "sm_90a")[0])
    assert r2["kernels"][0]["registers"] != r1["kernels"][0]["registers"]
    key = xray._job_key({**job, "arch": "sm_90a"})
    assert xray._lookup_result(key) is not None
    (tmp_path / "cuda_error.cuh").write_text("#pragma once\n#include <cuda_runtime.h>\n// edited\n")
    assert xray._lookup_result(key) is None  # the header changed: no cached X-ray answers
    (tmp_path / "cuda_error.cuh").write_text("#pragma once\n#include <cuda_runtime.h>\n#error broken\n")
    bad = xray.raw_xrays([job], "sm_90a")[0]
    assert bad["status"] != "ok" and xray._lookup_result(key) is None  # the failure is not cached
    (tmp_path / "cuda_error.cuh").write_text("#pragma once\n#include <cuda_runtime.h>\n")
    _ok(xray.raw_xrays([job], "sm_90a")[0])


def test_inspect_finds_the_family_of_your_file_and_points_to_it(own_files, capsys, tmp_path, monkeypatch):
    """`inspect --cu FILE` binds the file to the one family whose calling convention it fits; a file that fits none
    is a one-line error; `inspect --kernel sgemm` (a family with no kernels of its own) says how to X-ray yours
    (known-wrong: "0 of 1 variants X-rayed" and nothing else)."""
    import argparse

    from harness.__main__ import CliError, main

    sg = registry.get_problem("sgemm")  # as shipped: the library baseline only (other tests register files)
    monkeypatch.setattr(sg, "variants", {n: v for n, v in sg.variants.items() if v.backend == "torch"})
    assert main(["inspect", "--kernel", "sgemm"]) == 0  # the library baseline alone: answered without a worker
    out = " ".join(capsys.readouterr().out.split())
    assert "python -m harness inspect --kernel sgemm --cu FILE" in out
    monkeypatch.undo()
    ns = argparse.Namespace(kernel="all", cu=[str(SGEMM)], triton=None, entry=None, block=None, numbers=None)
    assert xray._own_files(ns) == ("sgemm", [f"kernels.cuh#{n}" for n in range(1, 6)])
    ns.cu = [str(SAXPY)]
    assert xray._own_files(ns) == ("saxpy", ["saxpy.cu"])
    odd = tmp_path / "odd.cu"
    odd.write_text("__global__ void odd(float* p, float* q) { p[0] = q[0]; }\n")
    with pytest.raises(CliError, match="name the family with --kernel"):
        main(["inspect", "--cu", str(odd)])


# ------------------------------------------------------------------------------------------------ 6. spills
def test_spills_show_wherever_registers_do():
    """A record with no X-ray block but a ptxas report of 220 B spill stores + 8 B loads: the table, the CSV and the
    markdown show 228 (known-wrong: '-')."""
    from harness.records import cells, flat, markdown_table

    rec = {"family": "saxpy", "variant": "saxpy.cu", "backend": "cuda", "dtype": "fp32", "shape": "N=1000",
           "status": "compiled", "xray": None,
           "resources": {"saxpy": {"registers": 40, "spill_store_bytes": 220, "spill_load_bytes": 8}}}
    assert cells(rec)["spill"] == "228" and cells(rec)["regs"] == "40"
    assert flat(rec)["xray_spill_bytes"] == 228 and flat(rec)["xray_regs"] == 40
    assert "| 40 | 228 |" in markdown_table([rec])
    launcher = {**rec, "resources": {"launch_kernel#0": {"kernels": {
        "a": {"registers": 30, "spill_store_bytes": 4, "spill_load_bytes": 4},
        "b<1>": {"registers": 64, "spill_store_bytes": 0, "spill_load_bytes": 0}}}}}
    assert cells(launcher)["spill"] == "8" and cells(launcher)["regs"] == "64"


# ------------------------------------------------------------------------------------------------ 7. figures
def _rec(variant, shape: dict, ms, backend="triton", **kw):
    return {"family": "softmax", "variant": variant, "backend": backend, "dtype": "fp16", "status": "ok",
            "shape": ",".join(f"{k}={v}" for k, v in shape.items()), "shape_dims": shape,
            "flops": 5.0 * shape["M"] * shape["N"], "bytes": 4.0 * shape["M"] * shape["N"], "median_ms": ms, **kw}


def test_throughput_lines_join_one_sweep_only():
    """Quick shapes (M=1,N=1; M=7,N=33; M=33,N=1000) are unrelated points; a sweep of N at M=4096 is a line.
    Known-wrong: one zig-zag line through all of them."""
    from roofline import plot

    quick = [{"M": 1, "N": 1}, {"M": 7, "N": 33}, {"M": 33, "N": 1000}]
    sweep = [{"M": 4096, "N": n} for n in (1024, 2048, 4096, 8192)]
    recs = [_rec("k", s, 0.01 * (i + 1)) for i, s in enumerate(quick + sweep)]
    fig, info = plot.throughput_figure(recs, "softmax", unit="GB/s")
    assert info["x"]["fp16"] == "N"
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1 and ln.get_linestyle() != "None"]
    assert [sorted(ln.get_xdata()) for ln in lines] == [[1024, 2048, 4096, 8192]]
    assert info["lines"] == [("k", [1024.0, 2048.0, 4096.0, 8192.0])]
    cube = [_rec("c", {"M": n, "N": n}, 0.01) for n in (256, 512, 1024)] + [_rec("c", {"M": 3, "N": 7}, 0.01)]
    _, info = plot.throughput_figure(cube, "softmax", unit="GB/s")
    assert info["lines"] == [("c", [256.0, 512.0, 1024.0])]  # M = N: one sweep; 3x7 is a point


def test_legend_entries_never_look_alike_and_the_library_is_the_reference():
    from roofline import plot
    from roofline.ceilings import known_profile

    recs = [_rec("tri", {"M": 4096, "N": 4096}, 0.05, flags=["launch-bound"]),
            _rec("cu", {"M": 4096, "N": 4096}, 0.06, backend="cuda"),
            _rec("torch_softmax", {"M": 4096, "N": 4096}, 0.04, backend="torch", baseline=True)]
    fig, info = plot.roofline_figure(recs, known_profile("H100 SXM"))
    leg = fig.axes[0].get_legend()
    looks = [(h.get_marker(), str(h.get_markerfacecolor()), str(h.get_markeredgecolor()))
             for h in leg.legend_handles if h.get_marker() not in (None, "None", "")]
    assert len(looks) == len(set(looks)), looks  # known-wrong: Triton 'o' hollow == "hollow: launch-bound"
    assert "hollow: launch-bound" in info["legend"] and "Triton" in info["legend"]
    assert "torch_softmax (library)" in info["labels"] + info["skipped"]


# ------------------------------------------------------------------------------------------------ 7. report
H100 = ROOT / "bench" / "results" / "h100-80gb-hbm3"


def test_report_holds_records_to_their_compute_type_and_names_a_kernel_best():
    """The committed run's torch_fp32_tf32 record says compute_dtype fp32 (it predates the declaration): the report
    holds it to the TF32 roof (about 78% of the datasheet's, not 753% of fp32's). The best fp32 variant is the
    workbench's own fp32 Triton kernel, read as its paired speed-up against the fp32 baseline (known-wrong: a
    library variant as "best", or a TF32 variant shown as the family's fp32 result: issue 29)."""
    from harness import report
    from harness.records import load_records
    from roofline.ceilings import load_profile

    recs = [r for r in load_records([H100 / "run2" / "head_matmul"]) if r.get("dtype") == "fp32"]
    prof = load_profile(H100 / "profile.json")
    tf = next(report.declared_compute(r) for r in recs if r["variant"] == "torch_fp32_tf32" and r["status"] == "ok")
    assert tf["compute_dtype"] == "tf32" and "registry" in tf["compute_dtype_from"]
    placed = report._placed(tf, prof)
    assert placed["roofline"]["pct_of_theoretical"] == pytest.approx(384.44 / 494.7 * 100, rel=0.01)  # ~78%
    assert not placed["suspect"]  # its only reason was the fp32 roof
    s = report.family_summary([report._placed(report.declared_compute(r), prof) for r in recs], prof)
    assert s["best"]["variant"] == "triton_matmul" and s["vs"].endswith("vs torch_fp32_ieee (paired)"), s["vs"]
    assert report.precision_label(next(r for r in recs if r["variant"] == "triton_matmul_tf32")) == "fp32 (tf32)"


def test_the_committed_h100_report_is_regenerated_from_its_records(tmp_path):
    """tables.md (every row) from the stored records and profile equals the committed one: nothing stale."""
    from harness.records import load_records
    from harness.report import write_report
    from roofline.ceilings import load_profile

    recs = load_records(sorted((H100 / "run2").glob("head_*")))
    write_report(recs, load_profile(H100 / "profile.json"), tmp_path, figures=False)
    assert (tmp_path / "tables.md").read_text() == (H100 / "tables.md").read_text()
    committed = (H100 / "report.md").read_text()
    assert "753%" not in committed and "vs torch_fp32_ieee (paired)" in committed


def test_h200_bandwidth_is_labelled_by_how_it_was_obtained():
    from roofline.ceilings import known_profile

    p = known_profile("H200")
    bw, kind = p.mem_roof()
    assert (bw, kind) == (4.8e12, "derived")  # known-wrong: "nvml" for a clock derived from the datasheet
    assert "3201 MHz" in p.how["mem.nvml"] and "4.92 TB/s" in p.how["mem.nvml"]
    assert known_profile("H100 SXM").mem_roof()[1] == "nvml"  # 2619 MHz: read from a board


# ------------------------------------------------------------------------------------------------ 8. 80 columns
def test_list_and_legends_fit_80_columns_when_piped():
    """`bench/run.py --list` piped (no terminal, COLUMNS unset): every line <= 80 (known-wrong: 99 of 116 over);
    the flags legend wraps instead of being cut mid-sentence."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--list"], capture_output=True, text=True,
                         env=env, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert len(lines) > 100 and max(map(len, lines)) <= 80, [ln for ln in lines if len(ln) > 80][:3]
    from harness.records import table_legend

    recs = [{"flags": ["launch-bound", "unstable"], "suspect": True, "family": "sgemm",
             "xray": {"lints": ["x"], "inspect": f"python -m harness inspect --kernel sgemm --cu {SGEMM}"}}]
    legend = table_legend(recs, width=80)
    assert all(len(ln) <= 80 or " " not in ln.strip() for ln in legend)
    text = " ".join(" ".join(legend).split())
    assert "measures the launch, not the kernel)" in text  # the sentence ends, it is not cut
    assert f"--cu {SGEMM}" in text  # the x hint names a command that X-rays the student's file
