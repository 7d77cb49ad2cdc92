"""docs/adding-a-kernel.md, executed: the page's code blocks are written to files exactly as printed and run through
the harness, so the walkthrough cannot rot.

Blocks are marked in the markdown with ``<!-- walkthrough:step-N file=NAME -->`` (a file to write) or
``<!-- walkthrough:step-N-run -->`` (shell commands the reader types). Python files are imported from a temporary
folder, their variants run through ``harness.runner.run_task`` (Triton under TRITON_INTERPRET=1 here; CUDA variants
compile-only without a GPU), and two of the shell lines run as written via subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import registry
from harness.cuda import nvcc_path
from harness.runner import RunOptions, Task, run_task

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "adding-a-kernel.md"
BLOCK = re.compile(r"<!-- walkthrough:(step-\d+)(-run)?(?: file=(\S+))? -->\s*\n```(\w+)\n(.*?)```", re.S)
OPTS = RunOptions(seeds=(0, 1), time_on_cpu=False, nvml=False, isolate=False)
ON_GPU = torch.cuda.is_available()


def blocks() -> list[tuple[str, bool, str | None, str, str]]:
    return [(m[1], bool(m[2]), m[3], m[4], m[5]) for m in BLOCK.finditer(DOC.read_text())]


def files_of(step: str) -> dict[str, str]:
    return {f: code for s, run, f, _, code in blocks() if s == step and not run and f}


def commands_of(step: str) -> list[str]:
    out = []
    for s, run, _, _, code in blocks():
        if s == step and run:
            out += [ln.strip() for ln in code.splitlines() if ln.strip() and not ln.startswith("#")]
    return out


def load_step(step: str, tmp_path: Path):
    """Write every file of the step, import its Python files (in order); return the last module."""
    mod = None
    files = files_of(step)
    assert files, f"{DOC.name}: no code blocks marked walkthrough:{step}"
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    for name in files:
        if name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"wb_walkthrough_{Path(name).stem}", tmp_path / name)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def restore_registry():
    """The walkthrough registers variants/families in this process: take them out again afterwards."""
    registry.all_problems()
    before_fams = set(registry.REGISTRY)
    before = {n: set(p.variants) for n, p in registry.REGISTRY.items()}
    yield
    for n in set(registry.REGISTRY) - before_fams:
        registry.REGISTRY.pop(n)
    for n, names in before.items():
        p = registry.REGISTRY[n]
        for v in set(p.variants) - names:
            p.variants.pop(v)


def test_doc_has_every_step():
    steps = {s for s, *_ in blocks()}
    assert {"step-1", "step-2", "step-3", "step-4"} <= steps
    for s in ("step-1", "step-2", "step-3", "step-4"):
        assert commands_of(s), f"{s} has no run commands"


def test_step1_triton_variant(tmp_path, restore_registry):
    load_step("step-1", tmp_path)
    p = registry.get_problem("softmax")
    assert "triton_mine" in p.variants
    for dt, shape in (("fp32", "M=7,N=33"), ("fp16", "M=33,N=1000"), ("bf16", "M=1,N=1")):
        rec = run_task(Task("softmax", "triton_mine", dt, shape), OPTS)
        assert rec["status"] == "ok", rec["message"]
    rec = run_task(Task("softmax", "triton_mine", "fp32", "M=2,N=40000"), OPTS)
    assert rec["status"] == "skipped" and "8192" in rec["message"]


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not installed")
def test_step2_templated_cuda_variant(tmp_path, restore_registry, monkeypatch):
    monkeypatch.setenv("WB_CUDA_INTERPRET", "1")  # what the doc says happens without a GPU: the CPU interpreter runs it
    load_step("step-2", tmp_path)
    for dt in ("fp32", "fp16", "bf16"):
        rec = run_task(Task("softmax", "cuda_mine_v1", dt, "M=7,N=33"), OPTS)
        assert rec["status"] == "ok", rec["message"]
        assert rec["interpreted"] != ON_GPU
        res = next(iter(rec["resources"].values()))
        assert res["registers"] > 0 and res["spill_store_bytes"] == 0
    monkeypatch.setenv("WB_CUDA_INTERPRET", "0")
    if not ON_GPU:
        assert run_task(Task("softmax", "cuda_mine_v1", "fp32", "M=7,N=33"), OPTS)["status"] == "compiled"


@pytest.mark.skipif(nvcc_path() is None, reason="nvcc not installed")
def test_step3_assignment_library(tmp_path, restore_registry, monkeypatch):
    monkeypatch.setenv("WB_CUDA_INTERPRET", "1")
    mod = load_step("step-3", tmp_path)
    for num in (1, 2):
        rec = run_task(Task("softmax", f"assignment_{num}", "fp32", "M=33,N=1000"), OPTS)
        assert rec["status"] == "ok", rec["message"]
        assert rec["resources"][f"assignment_softmax_{num}"]["registers"] > 0
    libres = mod.LIB.library_resources()  # the host-mode build (nvcc -shared) compiles too
    assert {"assignment_softmax_1", "assignment_softmax_2"} <= set(libres)


def test_step4_new_family(tmp_path, restore_registry):
    load_step("step-4", tmp_path)
    p = registry.get_problem("axpy")
    assert set(p.variants) == {"triton_axpy", "torch_axpy"}
    for s in p.quick:
        for dt in p.dtypes:
            for v in p.variants:
                rec = run_task(Task("axpy", v, dt, s.key()), OPTS)
                assert rec["status"] == "ok", f"{v} {dt} {s}: {rec['message']}"


def _run_line(line: str, cwd: Path) -> subprocess.CompletedProcess:
    words = shlex.split(line)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(cwd)]), TRITON_INTERPRET="1")
    while words and "=" in words[0] and not words[0].startswith("-"):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    assert words[:3] == ["python", "-m", "harness"], f"only 'python -m harness' lines run here: {line}"
    return subprocess.run([sys.executable, *words[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("step", ["step-4"])  # one is enough to keep the reader's command lines honest (~10 s)
def test_run_commands_as_written(tmp_path, step):
    """The reader's `python -m harness check ...` line of the step works in a fresh process (WB_FAMILIES)."""
    for name, code in files_of(step).items():
        (tmp_path / name).write_text(code)
    line = next(c for c in commands_of(step) if "-m harness check" in c)
    res = _run_line(line, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "incorrect" not in res.stdout and " ok " in res.stdout
