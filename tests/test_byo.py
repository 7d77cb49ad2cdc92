"""Course-project mode (harness/byo.py): a student's own files, unmodified, as variants of saxpy / sgemm / conv1d.

The fixtures under tests/fixtures/course/ follow a course repository's layout (vector_addition/saxpy.cu with its own
main(), matrix_multiply/kernels.cuh with five kernels behind an inline launch_kernel(kernel_num, M, K, N, ...),
depth_conv1d/conv1d_kernel.cuh, ../cuda_error.cuh includes, perf.py). Without a GPU the CUDA variants must report
`compiled` with the ptxas report of their own kernels, and only when the built library loads and exports the entry
point the GPU run calls; broken or unloadable files must be `compile_error` naming the culprit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import byo, registry
from harness.cuda import nvcc_path
from harness.runner import RunOptions, Task, run_task

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "tests" / "fixtures" / "course"
SGEMM = COURSE / "matrix_multiply" / "kernels.cuh"
CONV = COURSE / "depth_conv1d" / "conv1d_kernel.cuh"
SAXPY = COURSE / "vector_addition" / "saxpy.cu"
OPTS = RunOptions(seeds=(0, 1), time_on_cpu=False, nvml=False, isolate=False)
needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not installed")
COMPILED = "compiled"  # without a GPU; on a GPU the same variants must be "ok"


def _expect_run() -> str:
    import torch

    return "ok" if torch.cuda.is_available() else COMPILED


def _hashes() -> dict[str, str]:
    return {str(p.relative_to(COURSE)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(COURSE.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture
def clean_registry():
    """byo.register adds variants to the live registry: take them out again, and keep the student files pristine."""
    registry.all_problems()
    before = {n: set(p.variants) for n, p in registry.REGISTRY.items()}
    files = _hashes()
    env = {k: os.environ.get(k) for k in (byo.ENV, "WB_FAMILIES")}
    yield
    for n, names in before.items():
        for v in set(registry.REGISTRY[n].variants) - names:
            registry.REGISTRY[n].variants.pop(v)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    assert _hashes() == files, "a student file under tests/fixtures/course was modified"


# ------------------------------------------------------------------------------------------- no compiler needed
def test_scanner_reads_the_course_launchers():
    funcs = {f.name: f for f in byo.functions(SGEMM.read_text())}
    assert {"sgemm_naive", "sgemm_coalesced", "sgemm_shared", "sgemm_1d_tiling", "sgemm_2d_tiling",
            "launch_kernel"} <= set(funcs)
    assert funcs["sgemm_shared"].is_global and funcs["sgemm_shared"].is_template
    assert not funcs["launch_kernel"].is_global
    assert [n for _, n in funcs["launch_kernel"].params] == ["kernel_num", "M", "K", "N", "alpha", "d_A", "d_B",
                                                             "beta", "d_C"]
    arms = byo.kernel_numbers(funcs["launch_kernel"], "kernel_num")
    assert sorted(arms) == [1, 2, 3, 4, 5]
    assert [byo.launched(arms[n], funcs) for n in (1, 3, 5)] == [["sgemm_naive"], ["sgemm_shared"],
                                                                  ["sgemm_2d_tiling"]]
    # conv1d's launcher switches on K: those cases are not kernel numbers (it has no kernel-number parameter)
    conv = {f.name: f for f in byo.functions(CONV.read_text())}
    assert byo.kernel_numbers(conv["launch_kernel"], "kernel_num") == {}
    assert byo.launched(conv["launch_kernel"].body, conv) == ["conv1d_fixed", "conv1d_generic"]
    assert byo.functions((COURSE / "cuda_error.cuh").read_text()) == []  # a macro's do { } is not a function


def test_binding_follows_the_students_parameter_order(clean_registry):
    b = byo.bind_cuda(byo.Spec("sgemm", str(SGEMM)))
    assert b.roles == ["kernel_num", "M", "K", "N", "alpha", "A", "B", "beta", "C"]  # M, K, N as the file has it
    assert [v[0] for v in b.variants] == [f"kernels.cuh#{n}" for n in range(1, 6)]
    assert b.source.shim.startswith("launch_kernel(wb_num, wb_i[0], wb_i[1], wb_i[2], wb_f[0]")
    assert b.source.defines == {"main": "__wb_student_main"}
    only = byo.bind_cuda(byo.Spec("sgemm", str(SGEMM), numbers="2,4"))
    assert [v[0] for v in only.variants] == ["kernels.cuh#2", "kernels.cuh#4"]
    sax = byo.bind_cuda(byo.Spec("saxpy", str(SAXPY), block="32x4"))
    assert sax.launch_mode == "kernel" and sax.roles == ["n", "a", "x", "y", "z"]
    sg = registry.get_problem("sgemm")
    grid, block = byo.geometry(byo.convention("sgemm"), sg.shape(M=100, N=70, K=3), (32, 4))
    assert grid == (3, 25, 1) and block == (32, 4, 1)  # x over N's 70 columns, y over M's 100 rows
    e = byo.bind_cuda(byo.Spec("conv1d", str(CONV), entry="conv1d_fixed<3>", block="128"))
    assert e.launch_mode == "kernel" and e.roles == ["u", "filter", "bias", "out", "B", "L", "D"]
    assert e.source.shim.startswith("conv1d_fixed<3><<<dim3(wb_gx, wb_gy, wb_gz)")
    cv = registry.get_problem("conv1d")
    assert byo.geometry(byo.convention("conv1d"), cv.shape(B=2, D=3, L=100, K=3), (128, 1))[0] == (5, 1, 1)


def test_binding_rejects_what_it_cannot_call(tmp_path):
    bad = tmp_path / "bad.cuh"
    bad.write_text("inline void launch_kernel(long kernel_num, int M, int K, int N, float alpha, const float* A, "
                   "const float* B, float beta, float* C, int mystery) { }\n")
    with pytest.raises(byo.ByoError, match="'mystery' matches no role"):
        byo.bind_cuda(byo.Spec("sgemm", str(bad)))
    nocase = tmp_path / "nocase.cuh"
    nocase.write_text("inline void launch_kernel(long kernel_num, int M, int K, int N, float alpha, const float* A, "
                      "const float* B, float beta, float* C) { run_all(kernel_num); }\n")
    with pytest.raises(byo.ByoError, match="--numbers"):
        byo.bind_cuda(byo.Spec("sgemm", str(nocase)))
    assert len(byo.bind_cuda(byo.Spec("sgemm", str(nocase), numbers="1-3")).variants) == 3
    tpl = tmp_path / "tpl.cu"
    tpl.write_text("template <int B> __global__ void saxpy(int n, float a, float* x, float* y, float* z) {}\n")
    with pytest.raises(byo.ByoError, match="template"):
        byo.bind_cuda(byo.Spec("saxpy", str(tpl)))
    with pytest.raises(byo.ByoError, match="no calling convention"):
        byo.convention("softmax")


def test_family_formulas_match_the_course_perf_py():
    spec = importlib.util.spec_from_file_location("course_perf", COURSE / "perf.py")
    perf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(perf)
    p = {n: registry.get_problem(n) for n in ("saxpy", "sgemm", "conv1d")}
    s = p["sgemm"].shape(M=1024, N=512, K=256)
    assert p["sgemm"].flops(s) == perf.sgemm_flops(1024, 512, 256)
    assert p["sgemm"].min_bytes(s, "fp32") == perf.sgemm_bytes(1024, 512, 256)
    c = p["conv1d"].shape(B=2, D=3, L=100, K=5)
    assert p["conv1d"].flops(c) == perf.conv1d_flops(2, 3, 100, 5)
    assert p["conv1d"].min_bytes(c, "fp32") == perf.conv1d_bytes(2, 3, 100, 5)
    assert p["saxpy"].min_bytes(p["saxpy"].shape(N=77), "fp32") == perf.saxpy_bytes(77)
    assert p["sgemm"].inout == ("C",)


@pytest.mark.parametrize("fam", ["saxpy", "sgemm", "conv1d"])
def test_library_baselines_pass_the_float64_reference(fam):
    p = registry.get_problem(fam)
    base = next(v for v in p.variants.values() if v.baseline)
    for s in p.quick[:3]:
        rec = run_task(Task(fam, base.name, "fp32", s.key()), OPTS)
        assert rec["status"] == "ok", f"{fam} {s}: {rec['message']}"


def _triton_file(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "mine.py"
    f.write_text("import triton\nimport triton.language as tl\n\n" + body)
    return f


def test_triton_files_are_checked_and_a_wrong_one_fails(tmp_path, clean_registry):
    [name] = byo.register(byo.Spec("saxpy", str(COURSE / "vector_addition" / "saxpy_triton.py"), kind="triton"))
    assert name == "saxpy_triton.py:saxpy"
    for s in ("N=33", "N=4099"):
        rec = run_task(Task("saxpy", name, "fp32", s), OPTS)
        assert rec["status"] == "ok", rec["message"]
    [sg] = byo.register(byo.Spec("sgemm", str(COURSE / "matrix_multiply" / "sgemm_triton.py"), kind="triton"))
    rec = run_task(Task("sgemm", sg, "fp32", "M=17,N=33,K=65"), OPTS)
    assert rec["status"] == "ok", rec["message"]  # C updated in place: alpha·A@B + beta·C
    # known-wrong: ignores a (returns x + y, the return style) and drops beta·C
    wrong = _triton_file(tmp_path, "def saxpy(x, y):\n    return x + y\n")
    [w] = byo.register(byo.Spec("saxpy", str(wrong), kind="triton"))
    assert registry.get_problem("saxpy").variants[w].style == "return"
    assert run_task(Task("saxpy", w, "fp32", "N=33"), OPTS)["status"] == "incorrect"
    nobeta = tmp_path / "nobeta.py"
    nobeta.write_text("def sgemm(A, B, C, alpha, beta):\n    C.copy_(alpha * (A @ B))\n")
    [nb] = byo.register(byo.Spec("sgemm", str(nobeta), kind="triton"))
    assert run_task(Task("sgemm", nb, "fp32", "M=17,N=33,K=65"), OPTS)["status"] == "incorrect"


# ------------------------------------------------------------------------------------------- nvcc builds
@needs_nvcc
def test_sgemm_kernel_numbers_compile_with_their_own_resources(clean_registry):
    names = byo.register(byo.Spec("sgemm", str(SGEMM)))
    assert names == [f"kernels.cuh#{n}" for n in range(1, 6)]
    want = {1: "sgemm_naive", 2: "sgemm_coalesced<32>", 3: "sgemm_shared<32>", 4: "sgemm_1d_tiling<64,64,8,8>",
            5: "sgemm_2d_tiling<64,64,8,4,4>"}
    for n, kernel in want.items():
        rec = run_task(Task("sgemm", f"kernels.cuh#{n}", "fp32", "M=64,N=48,K=100"), OPTS)
        assert rec["status"] == _expect_run(), rec["message"]
        [res] = rec["resources"].values()
        assert res["kernel"] == kernel and res["registers"] > 0 and res["launcher"] == byo.SYMBOL
    assert rec["resources"]["sgemm_2d_tiling"]["shared_bytes"] == 2 * 64 * 8 * 4  # As + Bs, fp32


@needs_nvcc
def test_saxpy_with_main_and_conv1d_launcher_compile(clean_registry):
    [sx] = byo.register(byo.Spec("saxpy", str(SAXPY)))
    rec = run_task(Task("saxpy", sx, "fp32", "N=1000"), OPTS)
    assert rec["status"] == _expect_run(), rec["message"]
    assert rec["resources"]["saxpy"]["registers"] > 0
    so, _ = registry.get_problem("saxpy").variants[sx].source._build(rec["resources"]["saxpy"]["arch"], "so")
    syms = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout.split()
    assert byo.SYMBOL in syms and "main" not in syms  # the file's main() is an ordinary (C++) function now
    assert any("__wb_student_main" in s for s in syms)
    [cv] = byo.register(byo.Spec("conv1d", str(CONV)))
    rec = run_task(Task("conv1d", cv, "fp32", "B=2,D=8,L=100,K=5"), OPTS)
    assert rec["status"] == _expect_run(), rec["message"]
    assert set(rec["resources"]["conv1d_fixed"]["specialisations"]) == {f"conv1d_fixed<{k}>" for k in (1, 3, 5)}
    assert rec["resources"]["conv1d_generic"]["registers"] > 0


@needs_nvcc
def test_compile_error_names_the_broken_kernel(tmp_path, clean_registry):
    (tmp_path / "matrix_multiply").mkdir()
    shutil.copy(COURSE / "cuda_error.cuh", tmp_path)
    text = SGEMM.read_text()
    good = "acc += As[ty * SMCACHEDIM + k] * Bs[k * SMCACHEDIM + tx];"
    assert good in text
    (tmp_path / "matrix_multiply" / "kernels.cuh").write_text(text.replace(good, good[:-1] + " + not_declared;"))
    byo.register(byo.Spec("sgemm", str(tmp_path / "matrix_multiply" / "kernels.cuh")))
    recs = {n: run_task(Task("sgemm", f"kernels.cuh#{n}", "fp32", "M=17,N=33,K=65"), OPTS) for n in (1, 3)}
    assert all(r["status"] == "compile_error" for r in recs.values())
    assert "not_declared" in recs[3]["message"] and "[in sgemm_shared (kernel #3)]" in recs[3]["message"]
    assert recs[1]["message"].startswith("blocked:") and "sgemm_shared (kernel #3)" in recs[1]["message"]


@needs_nvcc
def test_a_launcher_the_library_cannot_resolve_is_a_compile_error(tmp_path, clean_registry):
    """Declared here, defined in another .cu: nvcc links the .so, but ctypes (what the GPU run uses) cannot load it.
    Reporting `compiled` here would predict a GPU run that fails."""
    f = tmp_path / "launcher.cuh"
    f.write_text("#pragma once\nvoid launch_kernel(const float* u, const float* filter, const float* bias, float* out, "
                 "unsigned B, unsigned L, unsigned D, unsigned K);\n")
    [v] = byo.register(byo.Spec("conv1d", str(f)))
    rec = run_task(Task("conv1d", v, "fp32", "B=1,D=1,L=1,K=3"), OPTS)
    assert rec["status"] == "compile_error" and "undefined symbol" in rec["message"], rec["message"]


@needs_nvcc
def test_cli_one_command_with_worker_processes(tmp_path):
    """`bench/run.py --kernel saxpy --cu saxpy.cu --triton saxpy_triton.py`: spawned workers rebuild the variants
    from WB_BYO; the student's files come back unmodified."""
    files = _hashes()
    out = tmp_path / "run"
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    env.pop(byo.ENV, None)
    env.pop("COLUMNS", None)  # piped: everything printed fits 80 columns (issue 30)
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--kernel", "saxpy", "--cu", str(SAXPY),
                          "--triton", str(COURSE / "vector_addition" / "saxpy_triton.py"), "--shape", "1000",
                          "--check-only", "--no-figures", "--out", str(out)], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    recs = {r["variant"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    assert set(recs) == {"saxpy.cu", "saxpy_triton.py:saxpy", "torch_saxpy"}
    assert recs["saxpy.cu"]["status"] == _expect_run() and recs["saxpy.cu"]["resources"]["saxpy"]["registers"] > 0
    assert recs["saxpy_triton.py:saxpy"]["status"] == "ok" and recs["torch_saxpy"]["status"] == "ok"
    assert _hashes() == files
    wide = [ln for ln in res.stdout.splitlines() if len(ln) > 80 and " " in ln.strip()]  # (a lone long path may not)
    assert not wide, wide
    text = " ".join(res.stdout.split())
    assert "Conventions:" in text and "library time / your time" in text and "1 GB = 10^9 B" in text


def test_list_gives_each_familys_calling_convention(capsys):
    spec = importlib.util.spec_from_file_location("wb_bench_run", ROOT / "bench" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert run.main(["--list", "all"]) == 0
    text = capsys.readouterr().out
    text = " ".join(text.split())  # lines wrap at 80 columns
    for line in ("launch_kernel(long kernel_num, int M, int K, int N", "__global__ void saxpy(size_t n, float a",
                 "uint L, uint D, uint K)", "def conv1d(u, filter, bias, out)"):
        assert line in text
    assert "softmax:" in text  # families without a convention are listed too


def test_documented_command_lines_bind_the_course_fixtures(clean_registry):
    """Every `bench/run.py ... --cu/--triton tests/fixtures/course/...` line of the docs parses with the CLI and
    binds to its family (the builds themselves are the tests above): the worked examples cannot drift."""
    import re
    import shlex

    spec = importlib.util.spec_from_file_location("wb_bench_run2", ROOT / "bench" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    lines = [ln.split("#", 1)[0] for ln in (ROOT / "docs" / "adding-a-kernel.md").read_text().splitlines()
             if re.match(r"python bench/run.py .*--(cu|triton) tests/fixtures/course/", ln)]
    assert len(lines) >= 4
    for ln in lines:
        args = run.parse_args(shlex.split(ln)[2:])
        cu, tr = ([str(ROOT / p) for p in (x or [])] for x in (args.cu, args.triton))  # paths from the repo root
        for s in byo.from_args(args.kernel, cu, tr, args.entry, args.block, args.numbers):
            bound = byo.bind_cuda(s) if s.kind == "cu" else byo.bind_triton(s)
            assert bound, ln
