"""Writeup-grade output: tables at any width, plan-time "not applicable", selection, formats, the one number
formatter, the noise-aware compare, the short report and every figure from the committed H100 records."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from harness import fmt
from harness.compare import compare
from harness.records import (
    csv_fields,
    flat,
    load_jsonl,
    markdown_table,
    parse_columns,
    render_table,
    table_legend,
)

ROOT = Path(__file__).resolve().parent.parent
H100 = ROOT / "bench" / "results" / "h100-80gb-hbm3"
RUN = [sys.executable, str(ROOT / "bench" / "run.py")]


@pytest.fixture(scope="module")
def h100_records() -> list[dict]:
    recs = []
    for f in sorted(glob.glob(str(H100 / "run2" / "head_*" / "records.jsonl"))):
        recs += load_jsonl(f)
    assert recs, "the committed H100 records are missing"
    return recs


def _bench():
    sys.path.insert(0, str(ROOT / "bench"))
    import run as bench_run  # bench/run.py

    return bench_run


# ------------------------------------------------------------------------------------------------ formatter
def test_one_formatter():
    assert fmt.si(714.28e12, "FLOP/s") == "714 TFLOP/s"
    assert fmt.si(9.39e5, "FLOP/s") == "939 kFLOP/s"  # a CPU timing: never "9.39e-07 TFLOP/s"
    assert fmt.si(3.01e12, "B/s") == "3.01 TB/s" and fmt.si(999.96e3, "B") == "1 MB"
    assert fmt.ms(0.1924) == "192 µs" and fmt.ms(1.39) == "1.39 ms" and fmt.ms(None) == "-"
    assert fmt.ratio(0.8089) == "0.809×" and fmt.interval(0.71, 0.875) == "[0.71, 0.875]"
    assert fmt.pct(89.94) == "89.9%" and fmt.pct(107.07) == "107%"
    for v in (1e-9, 3.3e-7, 0.5, 12345.0, 6.02e23):
        assert "e" not in fmt.si(v).lower().replace("µ", ""), v


# ------------------------------------------------------------------------------------------------ tables
@pytest.mark.parametrize("width", [60, 80, 132, 200])
def test_tables_fit_any_width(h100_records, width):
    for fam in sorted({r["family"] for r in h100_records}):
        recs = [r for r in h100_records if r["family"] == fam]
        lines, dropped = render_table(recs, width=width)
        assert all(len(text) <= width for text, _ in lines), fam
        head = lines[0][0].split()
        assert head[:2] == ["variant", "status"]
        if width >= 80:
            assert {"median", "×lib", "flags"} <= set(head), (fam, head)
        assert len(lines) <= len(recs) + 1 + len({(r["shape"], r["dtype"]) for r in recs})  # one line per record


def test_table_shows_skip_reasons_flags_and_xray(h100_records):
    recs = [r for r in h100_records if r["family"] == "attention"]
    lines, _ = render_table(recs, width=80)
    text = "\n".join(t for t, _ in lines)
    assert "WRONG" in text and "outside atol" in text  # the failure's reason in place of the numbers
    assert any(t.rstrip().endswith("S") for t, _ in lines)  # the suspect flag
    assert table_legend(recs) and table_legend(recs)[0].startswith("flags: S suspect")
    r = dict(next(x for x in recs if x["variant"] == "triton_fa2"))
    r["xray"] = {"regs": 168, "spill_bytes": 0, "occupancy": 0.125, "lints": ["a lint"]}
    r["flags"] = ["launch-bound", "unstable"]
    line = render_table([r], width=100)[0][2][0]  # header, shape line, the row
    assert " 168 " in line and "12%" in line and line.rstrip().endswith("LUSx")
    skip = {**r, "status": "skipped", "message": "N=40000 does not fit on chip"}
    assert "does not fit on chip" in render_table([skip], width=80)[0][-1][0]


def test_columns_option():
    assert parse_columns("variant,status,time") == ["variant", "status", "time"]
    cols = parse_columns("+err,-occ")
    assert "err" in cols and "occ" not in cols and cols[0] == "variant"
    assert parse_columns("time")[:2] == ["variant", "status"]  # never without the name and the status
    with pytest.raises(ValueError, match="unknown column"):
        parse_columns("variant,bogus")


def test_no_interpreter_speedup_on_the_cpu():
    base = {"family": "f", "variant": "lib", "backend": "torch", "baseline": True, "dtype": "fp32", "shape": "N=8",
            "status": "ok", "median_ms": 0.01, "timing": "cpu", "throughput_unit": "TFLOP/s", "tflops": 1e-6}
    tri = {**base, "variant": "tri", "backend": "triton", "baseline": False, "median_ms": 5.0,
           "speedup_vs_baseline": 0.002}
    other = {**base, "variant": "naive", "baseline": False, "median_ms": 0.02, "speedup_vs_baseline": 0.5,
             "speedup_method": "paired-rounds"}
    lines = [t for t, _ in render_table([base, tri, other], width=100)[0]]
    tri_line = next(t for t in lines if t.startswith("tri"))
    assert "×" not in tri_line  # the interpreter against ATen: not a speed-up
    assert "0.5×" in next(t for t in lines if t.startswith("naive"))  # same backend: its paired speed-up
    assert "e-0" not in "\n".join(lines) and "1 M" in "\n".join(lines)  # 1e-6 TFLOP/s = 1 MFLOP/s
    assert flat(tri)["speedup_vs_baseline"] is None


def test_csv_columns():
    r = {"family": "matmul", "variant": "v", "dtype": "bf16", "shape": "M=64,N=32,K=16", "status": "ok",
         "shape_dims": {"M": 64, "N": 32, "K": 16}, "speedup_vs_baseline": 0.8, "speedup_ci95": [0.7, 0.9],
         "timing": "cuda-events", "median_ms": 2.0, "device": {"name": "cpu: AMD EPYC"},
         "xray": {"regs": 96, "spill_bytes": 8, "smem_bytes": 4096, "occupancy": 0.5, "tensor_core_ops": 12,
                  "widest_load_bits": 128, "dot_precision": "tf32", "floor_ms": 0.5, "lints": ["x", "y"]}}
    fields = csv_fields([r])
    assert fields[fields.index("shape") + 1: fields.index("shape") + 4] == ["M", "N", "K"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerow(flat(r))
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert (row["M"], row["N"], row["K"]) == ("64", "32", "16")
    assert float(row["speedup_lo"]) == 0.7 and float(row["speedup_hi"]) == 0.9
    assert row["xray_regs"] == "96" and row["xray_occupancy"] == "0.5" and row["xray_dot_precision"] == "tf32"
    assert float(row["measured_over_floor"]) == 4.0 and row["device_name"] == "cpu: AMD EPYC"
    assert flat({**r, "timing": "cpu"})["measured_over_floor"] is None  # a CPU time over a GPU floor: nothing


def test_markdown_table_has_units_and_notes(h100_records):
    md = markdown_table([r for r in h100_records if r["family"] == "softmax"])
    assert md.startswith("| variant | shape | dtype | status | median | B/s |")
    assert "TB/s" not in md and " T |" in md  # the unit is in the header, the prefix in the cell


# ------------------------------------------------------------------------------------------------ planning
def test_not_applicable_at_plan_time():
    br = _bench()
    from harness.runner import plan

    tasks = plan(["matmul"], quick=True)
    keep, na = br.not_applicable(tasks)
    from harness.registry import REGISTRY

    assert keep and all(t.dtype in REGISTRY[t.family].variants[t.variant].dtypes for t in keep)
    assert ("matmul", "cuda_v1_naive") in na and "bf16" in na[("matmul", "cuda_v1_naive")]
    assert len(keep) + sum(len(set(d)) * 0 for d in na.values()) < len(tasks)  # something was left out
    lines = br.na_lines(na, 80)
    assert all(len(x) <= 80 for x in lines) and sum("cuda_v1_naive" in x for x in lines) == 1  # once per variant
    # the pytest-benchmark cases leave them out too
    sys.path.insert(0, str(ROOT / "bench"))
    import test_bench_kernels as tbk

    class Cfg:
        def getoption(self, name):
            return {"--wb-kernel": "matmul", "--wb-shapes": "quick"}[name]

    cases = tbk.cases(Cfg())
    assert cases and all(t.dtype in REGISTRY[t.family].variants[t.variant].dtypes for t in cases)


def test_dtype_names_and_selection():
    br = _bench()
    assert br.normalize_dtypes("bfloat16,float16,torch.float32,fp8") == ["bf16", "fp16", "fp32", "fp8"]
    with pytest.raises(br.CliError, match="float128"):
        br.normalize_dtypes("float128")
    from harness.runner import plan

    tasks = plan(["softmax"], quick=True, dtypes=["fp32"])
    only = br.select(tasks, "triton*", None)
    assert {t.variant for t in only} == {"triton_fused", "triton_online", "torch_softmax"}  # + the baseline
    cuda = br.select(tasks, "cuda", "cuda_v1")
    assert {t.variant for t in cuda} == {"cuda_v2", "cuda_v3", "torch_softmax"}
    assert "torch_softmax" not in {t.variant for t in br.select(tasks, "triton*", "torch_softmax")}
    with pytest.raises(br.CliError, match="matches no variant"):
        br.select(tasks, "nonesuch*", None)


def test_bench_run_imports_no_torch():
    """bench/run.py itself imports torch lazily (what --help waits on beyond it is harness.executors)."""
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('r', 'bench/run.py'); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_cli_list_format_csv_and_piped_progress(tmp_path):
    env = dict(os.environ, COLUMNS="80", WB_XRAY="0")
    res = subprocess.run(RUN + ["--list", "matmul"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "e.g. --shape M=" in res.stdout and "cuda_v1_naive" in res.stdout and "[fp32]" in res.stdout
    assert "one thread per C element" in res.stdout  # the variant's one-line description
    res = subprocess.run(RUN + ["--kernel", "knn", "--list"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)  # a bare --list after --kernel lists that family only
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("knn:") and "knn_v4_tf32_ws" in res.stdout and "matmul:" not in res.stdout
    args = ["--kernel", "softmax", "--dtype", "float32", "--shape", "4x64", "--variants", "torch_softmax,torch_naive",
            "--no-figures", "--seeds", "1"]
    res = subprocess.run(RUN + args + ["--out", str(tmp_path / "a"), "--format", "csv", "--quiet"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(res.stdout)))  # stdout holds the CSV and nothing else
    assert {r["variant"] for r in rows} == {"torch_softmax", "torch_naive"}
    assert all(r["M"] == "4" and r["N"] == "64" for r in rows)
    assert all(r["device_name"].startswith("cpu: ") for r in rows)
    res = subprocess.run(RUN + args + ["--out", str(tmp_path / "b")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)  # piped: a line per finished family, tables within 80 columns
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "softmax: 2 record(s)" in res.stdout
    table = res.stdout[res.stdout.index("\nsoftmax\n"):res.stdout.index("results:")]
    assert all(len(line) <= 80 for line in table.splitlines())


# ------------------------------------------------------------------------------------------------ compare
def _run(seed: int, slow: dict[str, float] | None = None, n_rec: int = 60, timing: str = "cuda-events"):
    """Synthetic records of one commit: each kernel's samples drawn around its true time (lognormal, 3% spread)."""
    rng = random.Random(seed)
    recs = []
    for i in range(n_rec):
        true = 0.05 * (1 + i % 7) * (slow or {}).get(f"v{i}", 1.0)
        samples = sorted(true * rng.lognormvariate(0, 0.03) for _ in range(60))
        recs.append({"family": f"fam{i % 3}", "variant": f"v{i}", "dtype": "bf16", "shape": "N=1", "status": "ok",
                     "median_ms": samples[30], "p10_ms": samples[6], "p90_ms": samples[54], "samples_ms": samples,
                     "timing": timing, "device": {"name": "GPU"}})
    return recs


def test_same_commit_twice_is_no_regression():
    for seed in range(5):
        rows, n = compare(_run(seed), _run(seed + 100), fail_slower_pct=2)
        assert n == 0, [r for r in rows if r["regression"]]
        assert all(r["verdict"] == "same" for r in rows)


def test_real_slowdown_is_found_and_cpu_never_gates():
    rows, n = compare(_run(1), _run(2, slow={"v3": 1.15, "v10": 1.15}), fail_slower_pct=5)
    assert {r["variant"] for r in rows if r["regression"]} == {"v3", "v10"} and n == 2
    rows, n = compare(_run(1, timing="cpu"), _run(2, slow={"v3": 1.5}, timing="cpu"), fail_slower_pct=5)
    assert n == 0 and next(r for r in rows if r["variant"] == "v3")["verdict"] == "slower"
    from harness.compare import geomeans

    g = geomeans(compare(_run(1), _run(2, slow={f"v{i}": 1.25 for i in range(60)}))[0])
    assert set(g) == {"fam0", "fam1", "fam2"} and all(0.75 < v < 0.85 and k == 20 for v, k, _ in g.values())


# ------------------------------------------------------------------------------------------------ report, figures
def _synthetic_all() -> list[dict]:
    """One timed record per (variant, dtype, quick shape) of every registered family: a `--kernel all` run."""
    from harness.registry import all_problems

    rng = random.Random(0)
    recs = []
    for p in all_problems():
        for s in p.quick:
            for dt in p.dtypes:
                for n, v in p.variants.items():
                    if dt not in v.dtypes:
                        continue
                    ms = rng.uniform(0.01, 2.0)
                    recs.append({"family": p.name, "variant": n, "backend": v.backend, "baseline": v.baseline,
                                 "dtype": dt, "shape": s.key(), "status": "ok", "median_ms": ms, "p10_ms": ms * 0.98,
                                 "p90_ms": ms * 1.02, "flops": 1e9, "bytes": 1e8, "tflops": 1e9 / ms / 1e9,
                                 "gbps": 1e8 / ms / 1e6, "timing": "cuda-events", "throughput_unit": p.throughput_unit,
                                 "device": {"name": "GPU"}, "git_sha": "abc1234", "timestamp": "2026-11-29T00:00"})
    return recs


def test_report_is_short_for_all_families(tmp_path):
    from harness.report import write_report

    recs = _synthetic_all()
    assert len({r["family"] for r in recs}) >= 8 and len(recs) > 500
    md = write_report(recs, None, tmp_path / "rep", figures=False).read_text()
    assert len(md.splitlines()) < 200, len(md.splitlines())
    assert md.index("## Summary") < md.index("## Environment")
    assert "tables.md" in md and len((tmp_path / "rep" / "tables.md").read_text().splitlines()) > len(recs)


def test_every_figure_from_the_h100_records(h100_records, tmp_path):
    from roofline import plot
    from roofline.ceilings import load_profile

    prof = load_profile(H100 / "profile.json")
    paths = plot.draw_all(h100_records, prof, tmp_path, formats=("png",))
    names = {Path(p).stem for p in paths}
    fams = {r["family"] for r in plot.ok_records(h100_records)}
    assert {"roofline", "roofline_full"} | {f"throughput_{plot._slug(f)}" for f in fams} <= names
    assert {"ladder_matmul_bf16", "ladder_softmax_bf16"} <= names
    _, info = plot.roofline_figure(h100_records, prof)
    assert info["footer"] == "NVIDIA H100 80GB HBM3 · commit a0d712c · 2026-11-26"
    _, info = plot.ladder_figure(h100_records, "matmul", "bf16")
    assert "triton_matmul" in info["labels"]  # Triton on the ladder
    cpu = [{**r, "timing": "cpu"} for r in h100_records[:5]]
    assert plot.provenance(cpu).endswith("CPU / interpreter timings, not GPU figures")


def test_committed_h100_report_is_current(h100_records):
    md = (H100 / "report.md").read_text()
    assert md.startswith("# ") and "## Summary" in md and len(md.splitlines()) < 200
    assert md.index("## Summary") < md.index("## Roofline") < md.index("## Environment")
    assert json.loads((H100 / "profile.json").read_text())
