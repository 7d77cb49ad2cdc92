"""Every CUDA variant of the repository on the CPU interpreter at its family's quick shapes: the plain-CUDA rungs and
those whose inline PTX the interpreter models end `ok` (the same judge and seeds as any record), the ones that need
other inline PTX end `skipped: needs <instruction> (not interpreted)`. The whole quick set over three seeds is minutes
of CPU: opt-in with WB_SLOW_TESTS=1. By default (CI) each plain-CUDA variant runs once, at the smallest quick shape
of at least 10^4 FLOPs it supports (the one-element shapes exercise too little), seed 1: every rung still builds and
passes on the CPU, mostly g++ time. The PTX rungs run in CI in test_ptx80_rungs.py (sm_80) and test_ptx90.py
(Hopper), at their quick and dedicated shapes; the interpreter's own checks are test_interp.py and test_ptx80.py.
"""

from __future__ import annotations

import os

import pytest
import torch

from harness.registry import get_problem
from harness.runner import RunOptions, Task, execute, plan

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the runner runs them on it")]
FULL = os.environ.get("WB_SLOW_TESTS") == "1"

PLAIN = {  # family -> CUDA variants written in plain CUDA C++
    "softmax": ["cuda_v1", "cuda_v2", "cuda_v3"],
    "matmul": [f"cuda_v{i}_{n}" for i, n in enumerate(["naive", "coalesced", "smem", "blocktile1d", "blocktile2d",
                                                      "vectorized", "warptile"], 1)],
    "attention": ["cuda_v1_tiled"],
    "attention_decode": ["cuda_decode_splitk"],
    "quant_gemm": ["cuda_v1_w8a16", "cuda_v2_w4a16", "cuda_v3_w8a8_dp4a", "cuda_v5_w8a16_gemv"],
    "knn": ["knn_v1_twopass", "knn_v2_fused"],
    "ann": ["cuda_ivf"],
}
MODELLED = {  # family -> CUDA variants whose inline PTX the interpreter models (issue 28: sm_80 and Hopper)
    "matmul": ["cuda_v8_mma", "cuda_v8b_mma_swizzle", "cuda_v9_wgmma", "cuda_v10_wgmma_ws", "cuda_v11_fp8_wgmma",
               "cuda_v11_fp8_wgmma_relayout"],
    "attention": ["cuda_v2_mma", "cuda_v3_wgmma"],
    "quant_gemm": ["cuda_v4_w4a16_gemv", "cuda_v6_w4a16_mma", "cuda_v7_w4a16_marlin"],
    "knn": ["knn_v3_tc", "knn_v4_tf32_ws"],
}
PTX: dict[str, list[str]] = {}  # family -> CUDA variants that need inline PTX not modelled yet


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("WB_CUDA_INTERPRET", "1")


@pytest.mark.parametrize("family", sorted(PLAIN))
def test_every_cuda_variant_at_the_quick_shapes(family):
    p = get_problem(family)
    cuda = [n for n, v in p.variants.items() if v.backend == "cuda"]
    runs = PLAIN[family] + MODELLED.get(family, [])
    assert sorted(cuda) == sorted(runs + PTX.get(family, [])), "a new CUDA variant: classify it here"
    recs: list[dict] = []
    if FULL:
        tasks, seeds = plan([family], variants=cuda, quick=True), (1, 2, 3)
    else:
        tasks, seeds = [], (1,)
        sized = sorted((s for s in p.quick if float(p.flops(s)) >= 1e4), key=lambda s: float(p.flops(s)))
        for n in PLAIN[family]:
            first = next(((s, d) for s in sized for d in p.dtypes if p.variants[n].skip_reason(s, d) is None), None)
            assert first is not None, f"{n}: no quick shape of >= 1e4 FLOPs it supports"
            tasks.append(Task(family, n, first[1], first[0].key()))
    execute(tasks, RunOptions(seeds=seeds, isolate=False, timing=False), recs.append)
    for r in recs:
        why = f"{r['variant']} {r['dtype']} {r['shape']}: {r['status']} {r['message']}"
        if r["variant"] in runs:
            assert r["status"] == "ok" or (r["status"] == "skipped" and "not interpreted" not in r["message"]), why
        else:
            assert r["status"] == "skipped", why
    ran = {r["variant"] for r in recs if r["status"] == "ok"}
    want = set(runs) if FULL else set(PLAIN[family])
    assert ran == want, f"never ran at a quick shape: {want - ran}"
    ptx = {r["variant"] for r in recs if "not interpreted" in r["message"]}
    if FULL:
        assert ptx == set(PTX.get(family, [])), f"PTX variants that did not reach their instruction: {PTX[family]}"
    else:
        assert not ptx, f"a plain-CUDA rung needs uninterpreted PTX: {ptx}"
