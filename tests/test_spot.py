"""Spot checks (harness.runner.spot_plan, Problem.spot): where the float64 reference of one check, measured on the
judge's device, costs more than a budget, each check compares output slices drawn uniformly after the call -- enough
(SPOT_SLICES = 230) that a variant wrong in 1% of the slices fails three checks with p >= 0.999. The plan must apply
only where the reference is costly (an H100's fp64 makes matmul 8192³ a ~30 ms full check), the record must say how
the cost was known, and the known-wrong variants it could miss by design are still caught: 1% wrong rows, a NaN left
anywhere, a wrong row half, attention computing two KV heads of 16 (the old fixed first/last pair), a wrong slice in
every family's subset."""

from __future__ import annotations

import contextlib

import pytest
import torch

from harness.registry import get_problem
from harness.runner import SPOT_SLICES, RunOptions, Task, ref_seconds_per_slice, run_task, spot_indices, spot_plan

OPTS = RunOptions(seeds=(0, 1), timing=False, isolate=False)
GPU = torch.device("cuda")  # an estimate only: spot_plan does not touch the device without a measurement


def test_the_slice_count_is_the_stated_arithmetic():
    assert SPOT_SLICES == 230
    assert 0.99 ** (3 * SPOT_SLICES) <= 1e-3 < 0.99 ** (3 * (SPOT_SLICES - 1))


def test_plan_applies_to_costly_references_only():
    mm, knn, att = get_problem("matmul"), get_problem("knn"), get_problem("attention")
    # on a GPU (estimated at 4e13 fp64 FLOP/s): the headline shapes are checked in full
    assert spot_plan(mm, mm.shape(M=8192, N=8192, K=8192), OPTS, dev=GPU) is None  # ~0.03 s
    assert spot_plan(knn, knn.shape(Q=10000, N=1000000, D=128, k=10), OPTS, dev=GPU) is None
    # 16 KV heads < 230 slices: attention is always checked in full, whatever it costs
    assert spot_plan(att, att.shape(B=4, H=16, Hkv=16, Nq=4096, Nkv=4096, D=128), OPTS, per_slice_s=10.0) is None
    # a measured cost over the budget: 230 uniformly drawn rows, the record says it was measured
    p = spot_plan(mm, mm.shape(M=8192, N=8192, K=8192), OPTS, per_slice_s=0.05, dev=torch.device("cpu"))
    assert p["dim"] == "M" and p["of"] == 8192 and p["rows"] == SPOT_SLICES and p["cost"] == "measured on cpu"
    assert "p <= 9.7e-04" in p["how"]
    # more rows where the budget buys them; 4x with --strict
    assert spot_plan(mm, mm.shape(M=100000, N=64, K=64), OPTS, per_slice_s=1e-4)["rows"] == 10000
    strict = RunOptions(seeds=(0,), strict=True)
    assert spot_plan(mm, mm.shape(M=8192, N=8192, K=8192), strict, per_slice_s=0.05)["rows"] == 4 * SPOT_SLICES
    # the planner's estimate on the CPU comes from this CPU's measured fp64 rate, and says so
    p = spot_plan(mm, mm.shape(M=8192, N=8192, K=8192), OPTS, dev=torch.device("cpu"))
    assert p is not None and p["cost"].startswith("estimate")
    assert spot_plan(mm, mm.shape(M=512, N=512, K=512), OPTS, dev=torch.device("cpu")) is None


def test_the_cost_is_measured_on_the_judges_device():
    mm = get_problem("matmul")
    s = mm.shape(M=1000, N=64, K=64)
    inp = mm.make_inputs(s, "fp32", 0, torch.device("cpu"))
    per = ref_seconds_per_slice(mm, s, "fp32", inp, torch.device("cpu"))
    assert 0 < per < 0.05  # one 64x64 row of fp64 plus its comparison: microseconds, whatever the machine


def test_indices_are_uniform_distinct_and_fresh():
    a, b = spot_indices(1000, 230), spot_indices(1000, 230)
    for i in (a, b):
        assert len(i) == 230 and len(set(i.tolist())) == 230 and bool((i[1:] > i[:-1]).all())
    assert not torch.equal(a, b)  # drawn per check
    hits = torch.zeros(10, dtype=torch.long)  # no fixed pair: the first and last rows are drawn as often as any
    for _ in range(400):
        i = spot_indices(10, 3)
        hits[i] += 1
    assert int(hits.min()) > 60 and int(hits.max()) < 180, hits.tolist()  # expected 120 each (sd ~9)


@contextlib.contextmanager
def _variant(problem, name, fn, **kw):
    problem.add_variant(name, "torch", fn, **kw)
    try:
        yield name
    finally:
        del problem.variants[name]


def _mm_correct(i, o, s):
    torch.matmul(i["a"], i["b"], out=o["c"])


def _mm_one_percent_wrong(i, o, s):
    _mm_correct(i, o, s)
    o["c"][5::100] += 1.0  # 10 of 1000 rows


def _mm_one_nan(i, o, s):
    _mm_correct(i, o, s)
    o["c"][o["c"].shape[0] // 2, 3] = float("nan")


def _mm_half_rows_wrong(i, o, s):
    _mm_correct(i, o, s)
    o["c"][1::2] *= 1.01


def _run(problem, name, shape, dtype, opts):
    return run_task(Task(problem.name, name, dtype, shape.key()), opts)


SPOT_OPTS = RunOptions(seeds=(0, 1, 2, 3, 4), timing=False, isolate=False, spot_budget_s=1e-9)


@pytest.mark.parametrize("fn,ok", [(_mm_correct, True), (_mm_one_percent_wrong, False), (_mm_one_nan, False),
                                   (_mm_half_rows_wrong, False)], ids=lambda v: getattr(v, "__name__", str(v)))
def test_matmul_spot_check_verdicts(fn, ok):
    """1% wrong rows pass five checks of 230 of 1000 rows with p = (C(990,230)/C(1000,230))^5 < 3e-6."""
    mm = get_problem("matmul")
    s = mm.shape(M=1000, N=16, K=16)
    with _variant(mm, "spot_probe", fn, dtypes=("fp32",)) as name:
        rec = _run(mm, name, s, "fp32", SPOT_OPTS)
    assert rec["spot_check"]["rows"] == SPOT_SLICES and rec["spot_check"]["of"] == 1000
    assert rec["spot_check"]["cost"] == "measured on cpu"
    assert (rec["status"] == "ok") is ok, rec["message"]
    if fn is _mm_one_nan:
        assert "NaN" in rec["message"]


def test_timed_samples_are_spot_checked_too():
    """Right while being checked and wrong on 5% of the rows when timed: the sampled timed outputs go through the
    same spot check (three of them: p(pass) <= 0.95^690 ~ 4e-16)."""
    mm = get_problem("matmul")
    s = mm.shape(M=1000, N=16, K=16)
    calls = {"n": 0}

    def lazy(i, o, s_):
        calls["n"] += 1
        _mm_correct(i, o, s_)
        if calls["n"] > 2:  # the two seed checks come first
            o["c"][::20] += 1.0

    opts = RunOptions(seeds=(0, 1), isolate=False, spot_budget_s=1e-9, max_time_s=0.05, min_n=3, warmup_s=0.0,
                      flush_l2=False, nvml=False, ab_rounds=0)
    with _variant(mm, "spot_lazy", lazy, dtypes=("fp32",)) as name:
        rec = _run(mm, name, s, "fp32", opts)
    assert rec["status"] == "incorrect" and "timed call" in rec["message"], rec["message"]


def _attention_two_heads(i, o, s):
    """Computes KV heads 0 and Hkv-1 only (the old spot plan's fixed pair); the others are left at zero."""
    from harness.families.attention import attention_reference

    q, k, v = i["q"], i["k"], i["v"]
    out = torch.zeros_like(q)
    g = s.H // s.Hkv
    for h in (0, s.Hkv - 1):
        ref, _ = attention_reference(q[:, h * g:(h + 1) * g], k[:, h:h + 1], v[:, h:h + 1], causal=bool(s.causal))
        out[:, h * g:(h + 1) * g] = ref.to(q.dtype)
    return {"o": out}


def test_attention_heads_are_never_spot_checked():
    att = get_problem("attention")
    s = att.shape(B=1, H=16, Hkv=16, Nq=8, Nkv=8, D=16)
    with _variant(att, "two_heads", _attention_two_heads, style="return") as name:
        rec = _run(att, name, s, "fp16", SPOT_OPTS)
    assert "spot_check" not in rec and rec["status"] == "incorrect", rec["message"]


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
