"""The prepared GPU run on the CPU: its plan fits the lease, the deadline stops between records with the finished
ones on disk, provenance without .git, pinned autotune configs, and a prebuilt nvcc cache that survives the move
to another folder (the GPU machine's copy of the tree)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _gpu_run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    e = {**os.environ, "TRITON_INTERPRET": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness", "gpu-run", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=e)


# ------------------------------------------------------------------------------------------------ plan
def test_default_plan_fits_540s_and_a_short_deadline_does_not():
    r = _gpu_run("--plan")
    assert r.returncode == 0, r.stdout + r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("total ")][-1]
    total = float(line.split()[1])
    assert total <= 540 and "fits" in line
    for step in ("env", "features", "headline", "checks", "tests"):
        assert f"│ {step}" in r.stdout
    r = _gpu_run("--plan", "--deadline", "200")  # known-wrong: the same plan cannot fit 200 s
    assert r.returncode == 1 and "does NOT fit" in r.stdout


def test_headline_order_puts_big_gemms_and_attention_first_and_naive_rungs_last():
    from harness import gpurun
    from harness.runner import Task

    order = sorted([Task("matmul", "cuda_v1_naive", "fp32", "M=4096,N=4096,K=4096"),
                    Task("softmax", "triton_fused", "bf16", "M=4096,N=1024"),
                    Task("matmul", "triton_matmul", "bf16", "M=8192,N=8192,K=8192"),
                    Task("attention", "triton_fa2", "bf16", "B=4,H=16,Hkv=16,Nq=4096,Nkv=4096,D=128,causal=0")],
                   key=gpurun.headline_rank)
    assert [t.variant for t in order] == ["triton_matmul", "triton_fa2", "triton_fused", "cuda_v1_naive"]
    assert gpurun.low_value("matmul", "cuda_v1_naive") and not gpurun.low_value("matmul", "cuda_v9_wgmma")
    # shape-aware: the top three rungs that RUN the task stay (the M = 1 GEMV rung is not pushed out by v5-v7)
    m1 = "M=1,N=14336,K=4096,scheme=w4a16,group=128,sym=1"
    assert not gpurun.low_value("quant_gemm", "cuda_v4_w4a16_gemv", m1, "bf16")
    assert gpurun.low_value("quant_gemm", "cuda_v2_w4a16", m1, "bf16")


# ------------------------------------------------------------------------------------------------ deadline
def test_deadline_stops_between_records_and_keeps_finished_ones(tmp_path):
    out = tmp_path / "run"
    t = time.monotonic()
    r = _gpu_run("--deadline", "24", str(out), "--steps", "checks", "--families", "toy",
                 "--variants", "triton_axpb,torch_out,torch_ref,fault_hang", env={"WB_FAMILIES": "tests.toy_family"})
    took = time.monotonic() - t
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert took < 24 + 15  # the hang is killed at the deadline, not after its 3600 s
    recs = [json.loads(ln) for ln in (out / "checks" / "records.jsonl").read_text().splitlines()]
    done = {(x["variant"], x["dtype"]) for x in recs}
    assert {("triton_axpb", "fp32"), ("torch_out", "fp32"), ("torch_ref", "fp32")} <= done
    assert all(x["status"] == "ok" for x in recs)
    assert not any(x["variant"] == "fault_hang" for x in recs)  # in flight at the deadline: not a record
    cut = (out / "cut.txt").read_text()
    assert "fault_hang fp32" in cut and "in flight at the deadline" in cut
    assert "not started" in cut  # the tasks after it were never launched
    assert all(x.get("record_s") is not None and x.get("git_sha") for x in recs)
    assert "gpu-run summary" in r.stdout.splitlines()[-12:][0] or "gpu-run summary" in r.stdout


# ------------------------------------------------------------------------------------------------ provenance
def test_provenance_file_is_read_without_git(tmp_path, monkeypatch):
    from harness import provenance

    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)  # a tree with no .git, like the GPU machine's copy
    pf = tmp_path / ".cache" / "gpu-prep" / "provenance.json"
    monkeypatch.setattr(provenance, "PROVENANCE_FILE", pf)
    monkeypatch.delenv("WB_GIT_SHA", raising=False)
    sha = "0123456789abcdef0123456789abcdef01234567"

    def current() -> str:
        provenance.git_sha.cache_clear()
        try:
            return provenance.git_sha()
        finally:
            provenance.git_sha.cache_clear()

    assert current() == "unknown"  # no file, no .git: never another checkout's sha
    pf.parent.mkdir(parents=True)
    pf.write_text(json.dumps({"git_sha": sha, "dirty": False, "files": ["a.py"],
                              "digest": provenance.tree_digest(["a.py"])}))
    assert current() == sha
    (tmp_path / "a.py").write_text("x = 2\n")  # edited after the prep: must not claim the clean commit
    assert current() == sha + "+dirty"
    pf.write_text(json.dumps({"git_sha": sha + "+dirty", "files": [], "digest": provenance.tree_digest([])}))
    assert current() == sha + "+dirty"


# ------------------------------------------------------------------------------------------------ pinned configs
def test_pinned_config_is_selected_and_wb_tune_1_ignores_it(tmp_path, monkeypatch):
    import torch
    import triton

    from kernels import _tuning

    table = {"kernels": {"matmul": {"16bit": {"kwargs": {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32,
                                                          "GROUP_M": 4}, "num_warps": 4, "num_stages": 2}},
                         "other": {"*": {"kwargs": {"B": 1}, "num_warps": 2, "num_stages": 1}}}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
    monkeypatch.setenv("WB_TUNED", str(path))
    configs = [triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8,
                             num_stages=3), triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 128,
                                                           "GROUP_M": 8}, num_warps=4, num_stages=4)]
    from kernels.matmul import _AUTOTUNE

    hook = _AUTOTUNE["prune_configs_by"]["early_config_prune"]  # the real matmul hook
    args = {"a_ptr": torch.empty(4, dtype=torch.bfloat16), "M": 512}
    monkeypatch.delenv("WB_TUNE", raising=False)
    got = hook(configs, args)
    assert len(got) == 1 and got[0].kwargs["BLOCK_M"] == 64 and got[0].num_stages == 2
    monkeypatch.setenv("WB_TUNE", "1")  # re-tune: the table is ignored, the kernel's own pruning applies
    got = hook(configs, args)
    assert all(c.kwargs["BLOCK_M"] != 64 for c in got) and got
    monkeypatch.setenv("WB_TUNE", "0")
    assert all(c.kwargs["BLOCK_M"] != 64 for c in hook(configs, args))
    monkeypatch.delenv("WB_TUNE")
    small = hook(configs, {"a_ptr": args["a_ptr"], "M": 8})  # class small_m: not in this table -> no pin
    assert all(c.kwargs["BLOCK_M"] != 64 for c in small)
    assert _tuning.pinned("other", "anything").kwargs == {"B": 1}  # '*' is the class fallback
    calls = []
    bench = _tuning.bench_unless_pinned(lambda fn, quantiles=None: [9.0, 9.0, 9.0])
    hook(configs, args)  # pinned: one call, no timing
    assert bench(lambda: calls.append(1), quantiles=(0.5, 0.2, 0.8)) == [0.0, 0.0, 0.0] and calls == [1]
    hook(configs, {"a_ptr": args["a_ptr"], "M": 8})  # not pinned: the real benchmark runs
    assert bench(lambda: calls.append(1), quantiles=(0.5, 0.2, 0.8)) == [9.0, 9.0, 9.0]


def test_committed_tables_pin_configs_the_kernels_list():
    from kernels import attention, matmul

    tiles = {t for ts in matmul._TILES.values() for t in ts}
    for f in sorted((ROOT / "bench" / "tuned").glob("*.json")):
        k = json.loads(f.read_text())["kernels"]
        for cls, e in k["matmul"].items():
            kw = e["kwargs"]
            assert (kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"], e["num_warps"], e["num_stages"]) in tiles, (f, cls)
        assert k["attention_prefill"]["short"]["kwargs"]["BLOCK_M"] <= 64  # the prune's rule for Nq <= 64
    assert (ROOT / "bench" / "tuned" / "h200.json").exists()
    assert attention._prefill_configs  # module imports with the hook in place


# ------------------------------------------------------------------------------------------------ nvcc cache
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_prebuilt_cubin_is_reused_from_another_folder(tmp_path):
    """gpu-prep builds here; the GPU machine runs a copy of the tree somewhere else with the carried cache. The second
    copy must find the cubin without compiling (its nvcc answers --version and fails anything else)."""
    probe = "__global__ void wb_probe(float* x) { x[threadIdx.x] += 1.0f; }\n"
    copies = []
    for name in ("here", "there"):
        d = tmp_path / name
        shutil.copytree(ROOT / "harness", d / "harness", ignore=shutil.ignore_patterns("__pycache__"))
        (d / "cuda_src").mkdir()
        shutil.copy(ROOT / "cuda_src" / "common.cuh", d / "cuda_src" / "common.cuh")
        (d / "cuda_src" / "probe.cu").write_text(probe)
        copies.append(d)
    fake = tmp_path / "bin"
    fake.mkdir()
    real = shutil.which("nvcc")
    (fake / "nvcc").write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then exec {real} --version; fi\n'
                               'echo "nvcc called on the device copy" >&2; exit 3\n')
    (fake / "nvcc").chmod(0o755)
    code = ("import sys; from harness.cuda import CudaSource; b = CudaSource('probe.cu').compile('sm_90a'); "
            "print(b.cubin)")
    cache = tmp_path / "cache"
    env = {**os.environ, "WB_CACHE": str(cache)}
    r = subprocess.run([sys.executable, "-c", code], cwd=copies[0], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    env2 = {**env, "PATH": f"{fake}:{env['PATH']}"}
    r = subprocess.run([sys.executable, "-c", code], cwd=copies[1], env=env2, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, "the moved tree missed the prebuilt cache: " + r.stderr[-1500:]
