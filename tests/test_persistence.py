"""Nothing lost, nothing stale: output folders, torn lines, one line per key, manifests, exit status, the nvcc cache.

Every check here has a case it must reject (a non-empty --out, a resume with other options, a torn tail, non-record
JSON, a failing variant, an edited header behind <...>) next to the case it must accept.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from harness import records
from harness.records import OutputDirError, ResultWriter, load_jsonl, record_key

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, str(ROOT / "bench" / "run.py")]
ENV = {**os.environ, "WB_FAMILIES": "tests.toy_family", "COLUMNS": "400"}  # rich: no folded lines
# in-process records (--no-isolate): a run is ~2 s, so the kill -9 test can repeat
FAST = ["--kernel", "toy", "--quick", "--max-time", "0.02", "--no-figures", "--no-isolate"]


def run(args, timeout=120, **kw):
    return subprocess.run(RUN + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV, **kw)


@pytest.fixture(scope="module")
def bench_run():
    """bench/run.py as a module, for checks of its argument handling that need no subprocess."""
    import importlib.util

    import tests.toy_family  # noqa: F401  (registers "toy" in this process)

    spec = importlib.util.spec_from_file_location("wb_bench_run", ROOT / "bench" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rec(variant, shape="M=3,N=17", dtype="fp32", **kw):
    return {"family": "toy", "variant": variant, "dtype": dtype, "shape": shape, "status": "ok", "median_ms": 1.0,
            **kw}


def raw_keys(path: Path) -> Counter:
    """Keys as a plain line-by-line reader counts them (what pandas.read_json(lines=True) would see)."""
    lines = path.read_text().splitlines()
    return Counter(record_key(json.loads(ln)) for ln in lines if ln.strip())


# ---------------------------------------------------------------------------------------------------- records.jsonl
def test_one_line_per_key_when_records_are_replaced(tmp_path):
    w = ResultWriter(tmp_path)
    for v in ("a", "b", "c"):
        w.add(rec(v))
    w.update_many([rec("a", speedup_vs_baseline=2.0), rec("c", speedup_vs_baseline=0.5)])
    w.add(rec("b", median_ms=3.0))  # the same key again: replaced, not appended
    w.update(rec("a", speedup_vs_baseline=2.5))
    keys = raw_keys(tmp_path / "records.jsonl")
    assert set(keys.values()) == {1} and len(keys) == 3
    got = {r["variant"]: r for r in load_jsonl(tmp_path / "records.jsonl")}
    assert got["a"]["speedup_vs_baseline"] == 2.5 and got["b"]["median_ms"] == 3.0
    assert [r["variant"] for r in json.loads((tmp_path / "toy.json").read_text())] == ["a", "b", "c"]


def test_writer_never_deletes_records_it_was_not_asked_to_resume(tmp_path):
    ResultWriter(tmp_path).add(rec("a"))
    with pytest.raises(OutputDirError, match="already holds records"):
        ResultWriter(tmp_path)
    assert len(load_jsonl(tmp_path / "records.jsonl")) == 1


def test_torn_tail_is_cut_kept_aside_and_resume_completes_exactly_once(tmp_path):
    """A kill -9 can stop an append at any byte: every cut point must resume to each record exactly once."""
    src = tmp_path / "src"
    w = ResultWriter(src)
    all_recs = [rec(f"v{i}", samples_ms=[0.1] * i, message="x" * 50) for i in range(6)]
    for r in all_recs:
        w.add(r)
    data = (src / "records.jsonl").read_bytes()
    ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    rng = random.Random(1234)
    cuts = sorted({0, len(data), ends[2] - 1, ends[2] + 1, *rng.sample(range(len(data)), 12)})
    for cut in cuts:
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "records.jsonl").write_bytes(data[:cut])
        complete = sum(e <= cut for e in ends)
        whole_but_newline = cut + 1 in ends  # the record is all there, only its newline is missing
        w2 = ResultWriter(d, resume=True)
        assert len(w2.records) == complete + whole_but_newline, cut
        torn = list(d.glob("records.jsonl.torn-*"))
        mid_line = cut not in ends and cut != 0 and not whole_but_newline
        assert bool(torn) == mid_line, cut
        if mid_line:
            start = max([0] + [e for e in ends if e <= cut])
            assert torn[0].read_bytes() == data[start:cut]  # the fragment is kept, not deleted
        for r in all_recs:
            if not w2.done(record_key(r)):
                w2.add(r)
        keys = raw_keys(d / "records.jsonl")
        assert len(keys) == len(all_recs) and set(keys.values()) == {1}, cut


def test_readers_count_the_lines_they_skip(tmp_path, capsys):
    w = ResultWriter(tmp_path / "run")
    w.add(rec("a", device={"name": "cpu"}))
    w.add(rec("b", device={"name": "cpu"}))
    with open(tmp_path / "run" / "records.jsonl", "a") as f:
        f.write('{"not": "a record"}\n{"family": "toy", "vari')
    got = load_jsonl(tmp_path / "run" / "records.jsonl")
    err = capsys.readouterr().err
    assert {r["variant"] for r in got} == {"a", "b"}
    assert "skipped 2 of 4 line(s)" in err and "line 4: torn" in err and "line 3: JSON but not a record" in err
    # legacy files with a key twice: the later line wins and the reader says so
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text(json.dumps(rec("a", median_ms=1.0)) + "\n" + json.dumps(rec("a", median_ms=2.0)) + "\n")
    assert [r["median_ms"] for r in load_jsonl(legacy)] == [2.0]
    assert "1 older duplicate line(s) superseded" in capsys.readouterr().err

    from harness.__main__ import main as harness_main
    from harness.compare import compare_main

    assert harness_main(["report", str(tmp_path / "run"), "-o", str(tmp_path / "rep"), "--no-figures"]) == 0
    assert "skipped 2 of 4 line(s)" in capsys.readouterr().err
    assert compare_main(tmp_path / "run", tmp_path / "run") == 0
    assert capsys.readouterr().err.count("skipped 2 of 4 line(s)") == 2
    from roofline.__main__ import main as roofline_main

    roofline_main(["plot", str(tmp_path / "run"), "-o", str(tmp_path / "fig")])
    assert "skipped 2 of 4 line(s)" in capsys.readouterr().err


def test_csv_has_flags_and_tolerance_columns(tmp_path):
    w = ResultWriter(tmp_path)
    w.add(rec("a", flags=["launch-bound", "unstable"], tolerance={"rtol": 1e-3, "atol": 1e-5}))
    w.add(rec("b"))  # older records carry neither
    import csv

    rows = list(csv.DictReader((tmp_path / "toy.csv").open()))
    assert {"flags", "tolerance"} <= set(rows[0])
    assert rows[0]["flags"] == "launch-bound;unstable" and rows[0]["tolerance"] == "rtol=0.001 atol=1e-05"
    assert rows[1]["flags"] == "" and rows[1]["tolerance"] == ""


def test_prepare_outdir(tmp_path):
    d, moved = records.prepare_outdir(tmp_path / "new")
    assert d.is_dir() and moved is None and not any(d.iterdir())
    (d / "records.jsonl").write_text(json.dumps(rec("a")) + "\n")
    with pytest.raises(OutputDirError, match="--resume"):
        records.prepare_outdir(d)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="is not empty"):
        records.prepare_outdir(tmp_path / "other")
    d2, moved = records.prepare_outdir(d, force=True)
    assert d2 == d and not any(d.iterdir()) and moved.name.startswith("new.old-")
    assert load_jsonl(moved / "records.jsonl")[0]["variant"] == "a"  # moved, never deleted
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        records.prepare_outdir(tmp_path / "f")
    with pytest.raises(OutputDirError, match="no records.jsonl"):
        records.prepare_outdir(tmp_path / "empty", resume=True)


def test_failure_summary():
    assert records.failure_summary([rec("a"), rec("b", status="compiled"), rec("c", status="skipped")]) is None
    line = records.failure_summary([rec("a"), rec("b", status="runtime_error"), rec("c", status="timeout"),
                                    rec("d", status="runtime_error"), rec("e", status=None)], missing=["toy/f"])
    assert "\n" not in line and line.startswith("5 failed:")
    assert "runtime_error 2" in line and "timeout 1" in line and "no record 1" in line and "+2 more" in line


def test_fresh_seeds_are_31_bit_and_differ():
    a, b = records.fresh_seeds(), records.fresh_seeds()
    assert len(a) == 3 and all(0 <= s < 2**31 for s in a + b) and a != b


# ---------------------------------------------------------------------------------------------------- CLI
def test_out_folder_policy_and_manifest(bench_run, tmp_path):
    out = tmp_path / "run"
    first = run(["--out", str(out), "--dtype", "fp32", "--variants", "torch_out,torch_ref", *FAST])
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["options"]["variants"] == "torch_out,torch_ref" and m["git_sha"] and m["device"]["name"]
    assert m["families"] == ["toy"] and len(m["seeds"]) == 3
    recs = load_jsonl(out / "records.jsonl")
    assert recs and all(r["seeds"] == m["seeds"] for r in recs if r["status"] == "ok")
    before = (out / "records.jsonl").read_bytes()

    with pytest.raises(OutputDirError, match="holds a run: continue it with --resume"):
        bench_run.main(["--out", str(out), "--dtype", "fp32", "--variants", "torch_out", *FAST])
    assert (out / "records.jsonl").read_bytes() == before
    with pytest.raises(bench_run.CliError, match=r"options differ.*max_time \(0.02 -> 0.5\).*seeds \("):
        bench_run.main(["--resume", str(out), "--dtype", "fp32", "--variants", "torch_out,torch_ref", "--seeds",
                        "0,1", "--kernel", "toy", "--quick", "--max-time", "0.5", "--no-figures", "--no-isolate"])
    with pytest.raises(bench_run.CliError, match=r"resumed: variants \(torch_out,torch_ref -> torch_out\)"):
        bench_run.main(["--resume", str(out), "--dtype", "fp32", "--variants", "torch_out", *FAST])

    same = run(["--resume", str(out), "--dtype", "fp32", "--variants", "torch_out,torch_ref", *FAST])
    assert same.returncode == 0 and "4 records done, 0 to go" in same.stdout
    assert (out / "records.jsonl").read_bytes() == before  # nothing re-run, nothing appended
    assert len(json.loads((out / "manifest.json").read_text())["resumes"]) == 1

    forced = run(["--out", str(out), "--force", "--dtype", "fp32", "--variants", "torch_out", *FAST])
    assert forced.returncode == 0, forced.stderr[-2000:]
    olds = list(tmp_path.glob("run.old-*"))
    assert len(olds) == 1 and (olds[0] / "records.jsonl").read_bytes() == before  # moved aside, not deleted
    assert {r["variant"] for r in load_jsonl(out / "records.jsonl")} == {"torch_out"}
    fresh = json.loads((out / "manifest.json").read_text())["seeds"]
    assert fresh != m["seeds"] and fresh != [0, 1, 2]  # drawn anew for every run
    assert all(r["seeds"] == fresh for r in load_jsonl(out / "records.jsonl"))


def test_exit_status_counts_every_failure_kind_and_seeds_replay(tmp_path):
    res = run(["--out", str(tmp_path), "--dtype", "fp32", "--shape", "3x17", "--variants", "torch_out,fault_raise",
               "--seeds", "7,8", *FAST])
    assert res.returncode == 1, res.stdout[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("1 failed: runtime_error 1") and "fault_raise" in last
    assert next(r for r in load_jsonl(tmp_path / "records.jsonl") if r["variant"] == "torch_out")["seeds"] == [7, 8]


def test_resume_of_a_folder_holding_other_json_is_one_line(tmp_path):
    (tmp_path / "records.jsonl").write_text('{"hello": 1}\n')
    res = run(["--resume", str(tmp_path), "--dtype", "fp32", "--variants", "torch_out", *FAST])
    assert res.returncode == 2 and "JSON but not a record" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("args,needle", [
    (["--timeout", "-1"], "--timeout takes a positive"),
    (["--timeout", "0"], "--timeout takes a positive"),
    (["--timeout", "nan"], "--timeout takes a positive"),
    (["--out", "{file}"], "is a file"),
    (["--out", "{file}/sub"], "Not a directory"),
    (["--out", "{tmp}/a", "--resume", "{tmp}/b"], "drop --out"),
    (["--resume", "{tmp}", "--force"], "choose one"),
])
def test_bad_output_options_are_refused(bench_run, tmp_path, args, needle):
    (tmp_path / "file").write_text("x")
    args = [a.format(file=tmp_path / "file", tmp=tmp_path) for a in args]
    with pytest.raises((bench_run.CliError, OutputDirError), match=needle):
        bench_run.main([*args, "--dtype", "fp32", "--variants", "torch_out", *FAST])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_out_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        res = run(["--out", str(ro / "run"), "--dtype", "fp32", "--variants", "torch_out", *FAST])
        assert res.returncode == 2 and "cannot create output folder" in res.stderr and "Traceback" not in res.stderr
    finally:
        ro.chmod(0o700)


def test_harness_report_into_unwritable_path_and_check_exit_status(tmp_path, capsys):
    import tests.toy_family  # noqa: F401  (registers "toy" in this process)
    from harness.__main__ import CliError
    from harness.__main__ import main as harness_main

    w = ResultWriter(tmp_path / "run")
    w.add(rec("a", device={"name": "cpu"}))
    (tmp_path / "file").write_text("x")
    with pytest.raises(CliError, match="cannot write the report"):
        harness_main(["report", str(tmp_path / "run"), "-o", str(tmp_path / "file" / "rep"), "--no-figures"])
    args = ["check", "--kernel", "toy", "--shape", "3x17", "--dtype", "fp32", "--variants"]
    assert harness_main([*args, "torch_out,fault_raise"]) == 1  # a runtime_error alone fails the check
    out, err = capsys.readouterr()
    assert err.startswith("1 failed: runtime_error 1") and "fault_raise" in err
    assert harness_main([*args, "torch_out"]) == 0
    out2 = capsys.readouterr().out
    first, second = ([ln for ln in o.splitlines() if ln.startswith("seeds: ")] for o in (out, out2))
    assert first and second and first != second  # fresh per run


def test_kill9_at_random_moments_then_resume_keeps_every_record_exactly_once(tmp_path):
    """Kill the whole run (-9, process group) at random moments, resume each time, then finish: every record of
    the plan is in records.jsonl exactly once, every line parses, and the seeds never change."""
    out = tmp_path / "run"
    variants = "torch_out,torch_ref,wrong_zeros,triton_axpb"
    args = ["--dtype", "fp32,fp16", "--variants", variants, *FAST]
    n_tasks = 2 * 2 * 4  # quick shapes x dtypes x variants
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    kills = []
    for attempt in range(4):
        first = not (out / "manifest.json").exists()
        cmd = RUN + (["--out", str(out)] if first else ["--resume", str(out)]) + args
        p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
        # the clock starts once the run is live (its manifest written; python + torch take seconds to import)
        deadline = time.time() + 120
        jsonl = out / "records.jsonl"
        size0 = jsonl.stat().st_size if jsonl.exists() else 0
        live = (out / "manifest.json").exists() and not first
        while not live and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
            live = (out / "manifest.json").exists()
        while p.poll() is None and time.time() < deadline and (jsonl.stat().st_size if jsonl.exists() else 0) == \
                size0 and attempt % 2 == 0:  # every other try: only once it is appending records
            time.sleep(0.02)
        delay = rng.uniform(0.0, 1.5)
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        err = p.stderr.read().decode()
        p.stderr.close()
        assert "Traceback" not in err, (seed, err[-2000:])
        kills.append((round(delay, 2), p.returncode, len(load_jsonl(jsonl, quiet=True)) if jsonl.exists() else 0))
    assert any(k[1] == -signal.SIGKILL and k[2] for k in kills), kills  # at least one kill hit a live run
    fin = run(["--resume" if (out / "manifest.json").exists() else "--out", str(out), *args], timeout=180)
    assert fin.returncode == 1, (seed, kills, fin.stdout[-2000:], fin.stderr[-2000:])  # wrong_zeros is incorrect
    assert fin.stderr.strip().splitlines()[-1].startswith("4 failed: incorrect 4")
    keys = raw_keys(out / "records.jsonl")  # raises if any line does not parse
    assert len(keys) == n_tasks and set(keys.values()) == {1}, (seed, kills, keys)
    seeds = json.loads((out / "manifest.json").read_text())["seeds"]
    recs = load_jsonl(out / "records.jsonl")
    assert all(r["seeds"] == seeds for r in recs if r["status"] == "ok"), (seed, kills)
    # CPU timings: a speed-up only between the same backends (never interpreted Triton against ATen)
    assert all(r["speedup_text"] for r in recs if r["status"] == "ok" and not r["baseline"] and r["backend"] == "torch")
    assert not any(r["speedup_text"] for r in recs if r["backend"] == "triton")


# ---------------------------------------------------------------------------------------------------- nvcc cache
KERNEL = """#include <cfg.h>
extern "C" __global__ void k(float* y) {
    __shared__ float buf[SMEM];
    buf[threadIdx.x] = y[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = buf[(threadIdx.x + 1) % SMEM];
}
"""


@pytest.fixture
def angle_source(tmp_path, monkeypatch):
    from harness import cuda

    if cuda.nvcc_path() is None:
        pytest.skip("nvcc not found")
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "cfg.h").write_text("#define SMEM 2048\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "k.cu").write_text(KERNEL)
    flags = ("-O3", "-std=c++17", f"-I{tmp_path / 'inc'}")
    return lambda: cuda.CudaSource(tmp_path / "src" / "k.cu", flags=flags)


def test_cache_sees_headers_included_with_angle_brackets(angle_source, tmp_path):
    a = angle_source().compile("sm_80")
    assert a.resources["k"].shared_bytes == 8192
    b = angle_source().compile("sm_80")  # a new object, same files: the disk cache, not nvcc
    assert b.cubin == a.cubin
    hdr = tmp_path / "inc" / "cfg.h"
    hdr.write_text("#define SMEM 3072\n")
    c = angle_source().compile("sm_80")
    assert c.resources["k"].shared_bytes == 12288 and c.cubin != a.cubin
    hdr.write_text("#define SMEM 2048\n")  # back to the first version: its entry is still indexed
    assert angle_source().compile("sm_80").cubin == a.cubin
    os.utime(hdr, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes: still a hit
    assert angle_source().compile("sm_80").cubin == a.cubin
    assert not list((tmp_path / "cache" / "cuda").glob(".build-*"))  # no half-written entries left


def test_cache_parallel_builders_share_one_entry(angle_source, tmp_path):
    got, errs = [], []

    def build():
        try:
            got.append(angle_source().compile("sm_80").cubin)
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errs and len(set(got)) == 1
    entries = [p for p in (tmp_path / "cache" / "cuda").iterdir() if p.is_dir() and p.name.startswith("k-sm_80")]
    assert len(entries) == 1  # the lock made the others wait and reuse it


def test_cache_moved_tree_hits_and_still_sees_its_own_headers(tmp_path, monkeypatch):
    """The key and index name files relative to the repository, so a copy of the tree elsewhere (the GPU machine's)
    reuses the prebuilt entry; yet that copy's own headers and include dirs decide, never the first tree's."""
    from harness import cuda, cuda_common

    if cuda.nvcc_path() is None:
        pytest.skip("nvcc not found")
    monkeypatch.setenv("WB_CACHE", str(tmp_path / "cache"))
    trees = {}
    for name in ("here", "there"):
        t = tmp_path / name
        for sub, smem in (("inc", 2048), ("inc2", 1024)):
            (t / sub).mkdir(parents=True)
            (t / sub / "cfg.h").write_text(f"#define SMEM {smem}\n")
        (t / "cuda_src").mkdir()
        (t / "cuda_src" / "k.cu").write_text(KERNEL)
        trees[name] = t

    real = cuda.CudaSource._compile_locked

    def no_nvcc(*a, **k):
        raise AssertionError("compiled although the prebuilt entry from the other tree matches")

    def build(tree: Path, inc: str = "inc", compile_ok: bool = True) -> cuda.Build:
        monkeypatch.setattr(cuda_common, "REPO_ROOT", tree)
        monkeypatch.setattr(cuda, "CUDA_SRC", tree / "cuda_src")
        monkeypatch.setattr(cuda.CudaSource, "_compile_locked", real if compile_ok else no_nvcc)
        return cuda.CudaSource("k.cu", flags=("-O3", f"-I{tree / inc}")).compile("sm_80")

    here, there = trees["here"], trees["there"]
    a = build(here)
    assert a.resources["k"].shared_bytes == 8192
    names = [n for f in (tmp_path / "cache" / "cuda").glob("*.deps.json") for e in json.loads(f.read_text())
             for n in e["files"]]
    assert {"$REPO/cuda_src/k.cu", "$REPO/inc/cfg.h"} <= set(names)
    assert not [n for n in names if str(tmp_path) in n]  # nothing in the index ties it to this tree's folder
    if cuda.cuda_root() is not None:
        assert "$CUDA/include/cuda_runtime.h" in names

    (there / "inc" / "cfg.h").write_text("#define SMEM 3072\n")  # the copy's header differs from the first tree's
    assert build(there).resources["k"].shared_bytes == 12288
    (there / "inc" / "cfg.h").write_text("#define SMEM 2048\n")  # same bytes as here's again (a new mtime)
    b = build(there, compile_ok=False)
    assert b.cubin == a.cubin and b.resources["k"].shared_bytes == 8192
    # another include dir holding a cfg.h of its own is another compile, not a hit on inc/cfg.h's entry
    assert build(there, inc="inc2").resources["k"].shared_bytes == 4096
