"""Spot checks (harness.runner.spot_plan, Problem.spot): shapes whose float64 reference costs more than a budget are
checked on random output slices drawn after each call. The plan must pick them only where the reference is costly,
the record must say so, and the known-wrong variants it could miss by design are still caught: a wrong last row
(the edge slice is always drawn), a NaN left anywhere, a wrong row half, a wrong slice in every family's subset."""

from __future__ import annotations

import contextlib

import pytest
import torch

from harness.registry import get_problem
from harness.runner import RunOptions, Task, run_task, spot_indices, spot_plan

OPTS = RunOptions(seeds=(0, 1), timing=False, isolate=False)


def test_plan_applies_to_costly_references_only():
    mm, knn, att = get_problem("matmul"), get_problem("knn"), get_problem("attention")
    p = spot_plan(mm, mm.shape(M=8192, N=8192, K=8192), OPTS)
    assert p["dim"] == "M" and p["of"] == 8192 and p["rows"] == 373  # ~5e10 FLOP of fp64 per check
    assert spot_plan(mm, mm.shape(M=512, N=512, K=512), OPTS) is None
    strict = spot_plan(mm, mm.shape(M=8192, N=8192, K=8192), RunOptions(seeds=(0,), strict=True))
    assert 1480 < strict["rows"] < 1500  # --strict checks 4x as many
    p = spot_plan(knn, knn.shape(Q=10000, N=1000000, D=128, k=10), OPTS)
    assert p["dim"] == "Q" and 150 < p["rows"] < 250
    assert spot_plan(knn, knn.shape(Q=1, N=1000000, D=128, k=10), OPTS) is None
    p = spot_plan(att, att.shape(B=1, H=16, Hkv=16, Nq=16384, Nkv=16384, D=128), OPTS)
    assert p["dim"] == "Hkv" and p["rows"] == 2  # first and last KV head
    assert spot_plan(get_problem("softmax"), get_problem("softmax").shape(M=4096, N=32768), OPTS) is None


def test_indices_always_hold_the_edges_and_are_fresh():
    a, b = spot_indices(1000, 20), spot_indices(1000, 20)
    for i in (a, b):
        assert len(i) == 20 and int(i[0]) == 0 and int(i[-1]) == 999 and len(set(i.tolist())) == 20
        assert bool((i[1:] > i[:-1]).all())
    assert not torch.equal(a, b)  # drawn per check (2^-62-ish chance of a false failure)
    assert spot_indices(2, 2).tolist() == [0, 1]


@contextlib.contextmanager
def _variant(problem, name, fn, **kw):
    problem.add_variant(name, "torch", fn, **kw)
    try:
        yield name
    finally:
        del problem.variants[name]


def _mm_correct(i, o, s):
    torch.matmul(i["a"], i["b"], out=o["c"])


def _mm_last_row_wrong(i, o, s):
    _mm_correct(i, o, s)
    o["c"][-1] += 1.0


def _mm_one_nan(i, o, s):
    _mm_correct(i, o, s)
    o["c"][o["c"].shape[0] // 2, 3] = float("nan")


def _mm_half_rows_wrong(i, o, s):
    _mm_correct(i, o, s)
    o["c"][1::2] *= 1.01


def _run(problem, name, shape, dtype, opts):
    return run_task(Task(problem.name, name, dtype, shape.key()), opts)


@pytest.mark.parametrize("fn,ok", [(_mm_correct, True), (_mm_last_row_wrong, False), (_mm_one_nan, False),
                                   (_mm_half_rows_wrong, False)], ids=lambda v: getattr(v, "__name__", str(v)))
def test_matmul_spot_check_verdicts(fn, ok):
    mm = get_problem("matmul")
    s = mm.shape(M=300, N=64, K=64)
    opts = RunOptions(seeds=(0, 1), timing=False, isolate=False, spot_flops=2e5)  # 25 of 300 rows per check
    with _variant(mm, "spot_probe", fn, dtypes=("fp32",)) as name:
        rec = _run(mm, name, s, "fp32", opts)
    assert rec["spot_check"]["rows"] == 25 and rec["spot_check"]["of"] == 300
    assert (rec["status"] == "ok") is ok, rec["message"]
    if fn is _mm_one_nan:
        assert "NaN" in rec["message"]


def test_timed_samples_are_spot_checked_too():
    """A variant that is right while being checked and wrong (on one edge row) when timed: the sampled timed
    outputs go through the same spot check, whose edge rows catch it."""
    mm = get_problem("matmul")
    s = mm.shape(M=300, N=64, K=64)
    calls = {"n": 0}

    def lazy(i, o, s_):
        calls["n"] += 1
        _mm_correct(i, o, s_)
        if calls["n"] > 2:  # the two seed checks come first
            o["c"][0] += 1.0

    opts = RunOptions(seeds=(0, 1), isolate=False, spot_flops=2e5, max_time_s=0.05, min_n=3, warmup_s=0.0,
                      flush_l2=False, nvml=False)
    with _variant(mm, "spot_lazy", lazy, dtypes=("fp32",)) as name:
        rec = _run(mm, name, s, "fp32", opts)
    assert rec["status"] == "incorrect" and "timed call" in rec["message"], rec["message"]


def test_each_family_subset_matches_the_full_reference():
    """Problem.spot's slices of the inputs, outputs and shape give exactly the matching slice of the full
    reference (matmul rows, quant_gemm rows incl. per-token scales, kNN queries, attention KV-head groups with GQA
    and causal), and the wrong GQA mapping (KV head = h % Hkv instead of h // (H / Hkv)) does not."""
    dev = torch.device("cpu")
    cases = [
        ("matmul", dict(M=40, N=24, K=16), "fp32", 0, "c"),
        ("quant_gemm", dict(M=12, N=32, K=128, scheme="w8a8"), "fp16", 0, "y"),
        ("quant_gemm", dict(M=9, N=40, K=128, scheme="w4a16", group=64, sym=False), "fp16", 0, "y"),
        ("knn", dict(Q=30, N=200, D=8, k=5), "fp32", 0, "idx"),
        ("attention", dict(B=2, H=8, Hkv=4, Nq=24, Nkv=40, D=16, causal=True), "fp32", 1, "o"),
    ]
    for fam, kw, dtype, dim, key in cases:
        p = get_problem(fam)
        s = p.shape(**kw)
        inp = p.make_inputs(s, dtype, 3, dev)
        full = p.reference(inp, s, dtype)
        n = s[p.spot_dim]
        idx = torch.tensor([0, 2, n - 1])
        si, so, ss = p.spot(inp, {key: full[key]}, s, idx)
        sub = p.reference(si, ss, dtype)
        want = full[key].index_select(dim, _expand(p, s, idx))
        assert torch.equal(so[key], want), fam
        assert torch.allclose(sub[key].double(), want.double(), rtol=1e-12, atol=1e-12), fam
        if fam == "attention":  # the known-wrong mapping: KV head of query head h taken as h % Hkv, not h // g
            g = s.H // s.Hkv
            hw = (idx[:, None] + torch.arange(g)[None, :] * s.Hkv).reshape(-1)
            wi = {"q": inp["q"][:, hw], "k": inp["k"][:, idx], "v": inp["v"][:, idx]}
            assert not torch.allclose(p.reference(wi, ss, dtype)["o"].double(), want.double()), fam


def _expand(p, s, idx):
    if p.name == "attention":  # query heads of the chosen KV heads
        g = s.H // s.Hkv
        return (idx[:, None] * g + torch.arange(g)[None, :]).reshape(-1)
    return idx
