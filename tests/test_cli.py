"""bench/run.py end to end on the CPU: smoke run, fault injection, kill -9 + --resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.records import load_jsonl

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, str(ROOT / "bench" / "run.py")]


def run(args, env_extra=None, timeout=300):
    env = {**os.environ, "WB_FAMILIES": "tests.toy_family", **(env_extra or {})}
    return subprocess.run(RUN + args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def jsonl(outdir: Path) -> list[dict]:
    """The records of an output folder (an updated record appends a newer line: the latest per key wins)."""
    return load_jsonl(outdir / "records.jsonl")


def test_softmax_quick_smoke(tmp_path):
    res = run(["--kernel", "softmax", "--quick", "--out", str(tmp_path), "--max-time", "0.05", "--no-figures"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    if not torch.cuda.is_available():
        assert "CPU timings" in res.stdout  # the one-line note on a machine without a GPU
    recs = json.loads((tmp_path / "softmax.json").read_text())
    seeds = json.loads((tmp_path / "manifest.json").read_text())["seeds"]
    assert len(seeds) == 3 and seeds != [0, 1, 2]  # drawn fresh per run, written into the manifest
    assert {"softmax.csv", "softmax.md", "records.jsonl", "manifest.json"} <= {p.name for p in tmp_path.iterdir()}
    statuses = {r["status"] for r in recs}
    assert statuses <= {"ok", "compiled", "skipped"}, [(r["variant"], r["status"], r["message"]) for r in recs]
    for r in recs:
        assert r["git_sha"] and r["timestamp"] and r["versions"]["torch"] and r["device"]
        if r["backend"] == "cuda" and r["status"] == "compiled":
            assert r["resources"] and all("registers" in v for v in r["resources"].values())
        if r["status"] == "ok":
            assert r["median_ms"] > 0 and r["seeds"] == seeds
            assert r["timing"] == ("cuda-events" if torch.cuda.is_available() else "cpu")
    assert any(r["status"] == "ok" and r["backend"] == "triton" for r in recs)


def test_faults_are_recorded_and_the_run_continues(tmp_path):
    variants = "fault_raise,fault_exit,fault_segfault,fault_hang,torch_out,wrong_zeros"
    res = run(["--kernel", "toy", "--shape", "3x17", "--dtype", "fp32", "--variants", variants, "--out",
               str(tmp_path), "--timeout", "8", "--max-time", "0.05", "--no-figures"])
    assert res.returncode == 1  # an incorrect variant (wrong_zeros) makes the exit status non-zero
    by = {r["variant"]: r for r in jsonl(tmp_path)}
    assert by["fault_raise"]["status"] == "runtime_error" and "boom" in by["fault_raise"]["message"]
    assert by["fault_exit"]["status"] == "runtime_error" and "code 3" in by["fault_exit"]["message"]
    assert by["fault_segfault"]["status"] == "runtime_error" and "SIGSEGV" in by["fault_segfault"]["message"]
    assert by["fault_hang"]["status"] == "timeout"
    assert by["torch_out"]["status"] == "ok"  # the run went on after every fault
    assert by["wrong_zeros"]["status"] == "incorrect"


def test_kill_and_resume(tmp_path):
    variants = "torch_out,torch_ref,wrong_zeros,fault_hang,triton_axpb"
    args = ["--kernel", "toy", "--quick", "--dtype", "fp32,fp16", "--variants", variants, "--out", str(tmp_path),
            "--timeout", "600", "--max-time", "0.05", "--no-figures"]
    env = {**os.environ, "WB_FAMILIES": "tests.toy_family"}
    p = subprocess.Popen(RUN + args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 240
    try:  # the first fault_hang blocks the run: wait until the records before it are in, then kill -9 everything
        while time.time() < deadline:
            f = tmp_path / "records.jsonl"
            if f.exists() and len(f.read_text().splitlines()) >= 3:
                break
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    before = {(r["variant"], r["dtype"], r["shape"]): r["timestamp"] for r in jsonl(tmp_path)}
    assert len(before) >= 3
    res = run(["--resume", str(tmp_path)] + args[:-7] + ["--timeout", "6", "--max-time", "0.05", "--no-figures"])
    assert "records done" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    after = jsonl(tmp_path)
    raw = [json.loads(ln) for ln in (tmp_path / "records.jsonl").read_text().splitlines()]  # every line parses
    keys = [(r["variant"], r["dtype"], r["shape"]) for r in raw]  # as a plain line reader counts them
    assert len(keys) == len(set(keys)) == 2 * 2 * 5  # shapes x dtypes x variants, each exactly once
    for k, ts in before.items():  # finished records survived untouched
        assert next(r for r in after if (r["variant"], r["dtype"], r["shape"]) == k)["timestamp"] == ts


@pytest.mark.parametrize("args,needle", [
    (["--kernel", "nosuch"], "choose from"),
    (["--kernel", "toy", "--variants", "nosuch"], "toy has:"),
    (["--kernel", "toy", "--dtype", "fp7"], "choose from"),
    (["--kernel", "toy", "--shape", "3y"], "expected MxN"),
    (["--kernel", "toy", "--seeds", "a"], "--seeds"),
    (["--kernel", "toy", "--shape", "4000000x4000000"], "GiB"),
    (["--resume", "/nonexistent/dir", "--kernel", "toy"], "no records.jsonl"),
])
def test_bad_input_is_one_line_without_traceback(args, needle):
    res = run(args, timeout=120)
    assert res.returncode == 2
    out = res.stdout + res.stderr
    assert needle in out and "Traceback" not in out, out
