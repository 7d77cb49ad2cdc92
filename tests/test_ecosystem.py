"""The ecosystem layer: run comparison, the report folder, ``python -m harness`` and the pytest-benchmark suite."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.compare import compare, compare_main
from harness.records import ResultWriter
from harness.report import write_report

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "roofline_records.json"


def rec(variant, ms, shape="M=8,N=8", status="ok", device="GPU-A", family="softmax", dtype="fp16", **kw):
    return {"family": family, "variant": variant, "dtype": dtype, "shape": shape, "status": status,
            "median_ms": ms, "device": {"name": device}, **kw}


# ---------------------------------------------------------------------------------------------------- compare
def test_compare_speedups_and_threshold():
    # no samples: the p10..p90 range is each median's interval (here +-1%), so 20% apart is separated
    old = [rec("a", 2.0, p10_ms=1.98, p90_ms=2.02, timing="cuda-events"),
           rec("b", 1.0, p10_ms=0.99, p90_ms=1.01, timing="cuda-events"),
           rec("c", 1.0, p10_ms=0.99, p90_ms=1.01, timing="cuda-events")]
    new = [rec("a", 1.0, p10_ms=0.99, p90_ms=1.01, timing="cuda-events"),
           rec("b", 1.04, p10_ms=1.03, p90_ms=1.05, timing="cuda-events"),
           rec("c", 1.2, p10_ms=1.19, p90_ms=1.21, timing="cuda-events")]
    rows, n = compare(old, new, fail_slower_pct=5)  # OLD NEW, as diff and git
    by = {r["variant"]: r for r in rows}
    assert by["a"]["speedup"] == pytest.approx(2.0) and by["a"]["verdict"] == "faster"
    assert by["b"]["change_pct"] == pytest.approx(4.0) and not by["b"]["regression"]  # below the threshold
    assert by["c"]["speedup"] == pytest.approx(1 / 1.2) and by["c"]["verdict"] == "regression"
    assert n == 1
    rows, n = compare(old, new, fail_slower_pct=None)  # no threshold: reported, never counted
    assert n == 0 and {r["variant"]: r["verdict"] for r in rows}["c"] == "slower"
    rows, n = compare(old, new, fail_slower_pct=25)
    assert n == 0


def test_compare_unmatched_and_broken():
    old = [rec("a", 1.0), rec("gone", 1.0), rec("x", 1.0), rec("a", 1.0, device="GPU-B"),
           rec("k", None, status="compiled")]
    new = [rec("a", 1.0), rec("fresh", 1.0), rec("x", None, status="incorrect"), rec("s", None, status="skipped"),
           rec("k", None, status="compiled")]
    rows, n = compare(old, new, fail_slower_pct=5)
    v = {(r["variant"], r["device"]): r["verdict"] for r in rows}
    assert v[("a", "GPU-A")] == "same"
    assert v[("fresh", "GPU-A")] == "new only" and v[("s", "GPU-A")] == "new only"
    assert v[("gone", "GPU-A")] == "old only" and v[("a", "GPU-B")] == "old only"  # device is part of the key
    assert v[("x", "GPU-A")] == "broken"
    assert v[("k", "GPU-A")] == "compiled"  # compiled-only on both sides: not "not timed"
    assert n == 1  # only the broken one; unmatched rows never count


def _save(tmp: Path, name: str, records: list[dict]) -> Path:
    w = ResultWriter(tmp / name)
    for r in records:
        w.add(r)
    return tmp / name


def test_compare_main_exit_codes(tmp_path, capsys):
    g = {"timing": "cuda-events"}
    old = _save(tmp_path, "old", [rec("a", 1.0, **g), rec("b", 1.0, **g)])
    fast = _save(tmp_path, "fast", [rec("a", 0.5, **g), rec("b", 1.0, **g)])
    slow = _save(tmp_path, "slow", [rec("a", 1.5, **g), rec("b", 1.0, **g)])
    assert compare_main(old, fast, 5) == 0
    assert compare_main(old, slow, 5) == 1
    assert compare_main(old, slow, None) == 0
    assert compare_main(old, [rec("a", 2.0, **g)], 10) == 1  # the records of the run just done
    assert compare_main(tmp_path / "missing", fast, 5) == 2
    out = capsys.readouterr().out
    assert "regression" in out and "geomean" in out
    cpu_slow = _save(tmp_path, "cpu_slow", [rec("a", 1.5, timing="cpu")])
    cpu_old = _save(tmp_path, "cpu_old", [rec("a", 1.0, timing="cpu")])
    assert compare_main(cpu_old, cpu_slow, 5) == 0  # CPU timings never gate


# ---------------------------------------------------------------------------------------------------- report
def _fixture_records(n_per_family=None):
    recs = json.loads(FIXTURE.read_text())
    for r in recs:
        r.setdefault("versions", {"torch": "2.11", "triton": "3.6", "torch_cuda": "12.8", "nvcc": "13.0"})
        r["device"] = {**r["device"], "driver": "580.1", "max_sm_clock_mhz": 1980}
    return recs


def test_report_folder(tmp_path):
    recs = [r for r in _fixture_records() if r["family"] == "softmax" or r["variant"] == "cuda_v6_broken"]
    path = write_report(recs, None, tmp_path / "rep")
    md = path.read_text()
    assert path.name == "report.md"
    assert "## Environment" in md and "| GPU | NVIDIA H100" in md and "| torch / triton | 2.11 / 3.6 |" in md
    assert "| driver / CUDA driver | 580.1" in md
    assert "## softmax" in md and "## matmul" in md
    assert "| variant | shape | dtype | status |" in md  # records.markdown_table
    tables = (path.parent / "tables.md").read_text()
    assert "napkin math" in tables and "| M=4096,N=4096 | fp16 | 83.9 M | 67.1 MB | 1.25 |" in tables
    assert md.index("## Summary") < md.index("## Environment") < md.index("## softmax")
    assert "cuda_v6_broken" in md and "incorrect" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all(not lk.startswith("/") for lk in links)  # relative: renders on GitHub
    for lk in links:
        assert (path.parent / lk).is_file(), lk
    assert any("roofline" in lk for lk in links) and any("throughput_softmax" in lk for lk in links)
    assert "<" not in md.replace("<->", "")  # no HTML needed


def test_report_without_figures_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "roofline.plot", None)  # as if the roofline package were missing
    recs = _fixture_records()[:3]
    md = write_report(recs, None, tmp_path / "rep").read_text()
    assert "figures unavailable" in md and "![" not in md and "## Summary" in md


def test_report_cli_from_stored_records(tmp_path):
    from harness.__main__ import CliError, main

    run = _save(tmp_path, "run", _fixture_records()[:5])
    assert main(["report", str(run), "-o", str(tmp_path / "r"), "--no-figures"]) == 0
    assert (tmp_path / "r" / "report.md").read_text().startswith("# Benchmark report")
    with pytest.raises(CliError, match="no records"):
        (tmp_path / "empty").mkdir()
        main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r2")])


# ---------------------------------------------------------------------------------------------------- CLI smoke
def _harness(*args, timeout=300, columns=80):
    # a pipe gets rich's default width unless COLUMNS says otherwise: pin it, the tables must read at 80 columns
    env = dict(os.environ, TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "1"), COLUMNS=str(columns))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_info():
    res = _harness("info")
    assert res.returncode == 0, res.stderr
    assert "torch" in res.stdout and "nvcc" in res.stdout
    if not torch.cuda.is_available():
        assert "No GPU here" in res.stdout


def test_cli_compile_softmax():
    from harness.cuda import nvcc_path

    res = _harness("compile", "--kernel", "softmax")
    if nvcc_path() is None:
        assert res.returncode == 2 and "nvcc not found" in res.stderr
        return
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "softmax_v3_block" in res.stdout and "regs" in res.stdout
    assert "softmax_v1_naive<__nv_bfloat16>" in res.stdout  # at 80 columns the longest name still reads whole


def test_cli_check_and_bad_input():
    res = _harness("check", "--kernel", "softmax", "--variants", "triton_fused,torch_softmax", "--dtype", "fp32",
                   "--seeds", "0")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "ok" in res.stdout and "incorrect" not in res.stdout
    bad = _harness("report", str(ROOT / "no-such-run"), "-o", "/tmp/never")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stdout + bad.stderr


# ---------------------------------------------------------------------------------------------------- benchmarks
def _bench(tmp_path: Path, *extra: str):
    env = dict(os.environ, WB_FAMILIES="tests.toy_family", TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "1"))
    for k in [k for k in env if k.startswith("PYTEST_XDIST")]:  # pytest-benchmark saves nothing inside an xdist worker
        del env[k]
    cmd = [sys.executable, "-m", "pytest", "bench/test_bench_kernels.py", "-q", "-p", "no:cacheprovider",
           "--wb-kernel", "toy", "-k", "fp32 and (torch_ref or triton_axpb)", "--benchmark-autosave",
           f"--benchmark-storage=file://{tmp_path}", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _compare_cli() -> list[str]:
    from shutil import which

    exe = which("pytest-benchmark") or which("py.test-benchmark")
    return [exe] if exe else [sys.executable, "-m", "pytest_benchmark.cli"]


def test_bench_suite_autosave_and_pytest_benchmark_compare(tmp_path):
    res = _bench(tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    saved = glob.glob(str(tmp_path / "*" / "*.json"))
    assert len(saved) == 1, res.stdout[-3000:]
    data = json.loads(Path(saved[0]).read_text())
    names = {b["extra_info"]["variant"] for b in data["benchmarks"]}
    assert names == {"torch_ref", "triton_axpb"}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        assert info["status"] == "ok" and info["rel_err"] is not None and info["shape"] and info["device"]
        assert {"tflops", "gbps", "pct_of_roofline", "dtype", "median_ms"} <= set(info)
        assert b["group"] == f"toy fp32 {info['shape']}"
        assert info["timing"] == ("cuda-events" if torch.cuda.is_available() else "cpu")
        if torch.cuda.is_available():
            assert b["options"]["timer"] == "cuda_event_clock"
    cmp = subprocess.run([*_compare_cli(), "--storage", f"file://{tmp_path}", "compare", "--group-by", "group",
                          saved[0]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert cmp.returncode == 0, cmp.stdout[-2000:] + cmp.stderr[-2000:]
    assert "toy fp32" in cmp.stdout


@pytest.mark.gpu
def test_bench_suite_times_with_cuda_events(tmp_path):
    """On a GPU every round is one call between two CUDA events (conftest.cuda_event_clock), L2 flushed before."""
    res = _bench(tmp_path, "--wb-rounds", "20")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    data = json.loads(Path(glob.glob(str(tmp_path / "*" / "*.json"))[0]).read_text())
    for b in data["benchmarks"]:
        assert b["options"]["timer"] == "cuda_event_clock"
        assert b["extra_info"]["timing"] == "cuda-events" and b["extra_info"]["median_ms"] > 0
        assert b["stats"]["rounds"] == 20 and 0 < b["stats"]["median"] < 0.1
