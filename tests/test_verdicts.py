"""Verdicts that cannot be fooled (issue 15): every attack in tests/cheats.py is rejected by an isolated run, and
the honest variants next to them pass. Plus the tolerance model: a lower precision than declared fails, honest
results pass.

The isolated run is ``harness.runner.execute`` with ``isolate=True``: variants run in a spawned worker, the judge
(inputs, float64 reference, comparison) in this process. One worker start costs seconds, so all attacks share one
task list (the checker-patching variant forces one extra worker start).
"""

from __future__ import annotations

import math

import pytest
import torch

from harness import check as chk
from harness.registry import Tolerance, derived_tolerance, get_problem
from harness.runner import RunOptions, Task, execute

FAST = dict(max_time_s=0.15, warmup_s=0.0, min_n=5, timeout_s=120.0)


@pytest.fixture(scope="module")
def records():
    import tests.cheats  # noqa: F401  (registers the attacks here too: the judge needs the problems)

    toy = [("toy", v, "fp32") for v in (
        "cheat_rebind_new", "cheat_rebind_f64", "cheat_patches_checker", "wrong_zeros_after_patch", "torch_out",
        "cheat_public_seed_table", "cheat_memo_pointer", "cheat_memo_fingerprint", "cheat_lazy_after_check",
        "slow_honest", "cheat_loose_tolerance", "tight_tolerance_ok", "torch_ref")]
    toy += [("toy", "cheat_bf16_rounded", "fp16"), ("toy", "torch_out", "fp16")]
    copy = [("toy_copy", v, "fp32") for v in ("copy_ok", "copy_ref", "cheat_rebind_to_input", "cheat_return_input",
                                               "cheat_return_wrong_strides")]
    tasks = [Task(f, v, d, "M=3,N=17" if f == "toy" else "M=5,N=33") for f, v, d in toy + copy]
    out: dict[tuple[str, str, str], dict] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WB_FAMILIES", "tests.toy_family,tests.cheats")
        mp.setenv("TRITON_INTERPRET", "1")
        execute(tasks, RunOptions(seeds=(123457, 99991, 31337), isolate=True, **FAST),
                lambda r: out.__setitem__((r["family"], r["variant"], r["dtype"]), r))
    return out


def rec(records, variant, family="toy", dtype="fp32"):
    return records[(family, variant, dtype)]


@pytest.mark.parametrize("variant,family,words", [
    ("cheat_rebind_new", "toy", "rebound"),
    ("cheat_rebind_f64", "toy", "rebound"),
    ("cheat_rebind_to_input", "toy_copy", "rebound"),
    ("cheat_return_input", "toy_copy", "share memory"),
    ("cheat_return_wrong_strides", "toy_copy", "stride"),
])
def test_rebinding_overlap_and_spec_are_rejected_with_a_reason(records, variant, family, words):
    r = rec(records, variant, family)
    assert r["status"] == "incorrect", r
    assert words in r["message"], r["message"]


def test_patching_the_checker_changes_nothing(records):
    r = rec(records, "cheat_patches_checker")
    assert r["status"] == "incorrect"
    assert r["suspect"] and any("replaced harness/torch functions" in x for x in r["suspect_reasons"])
    # the variants after it (same task list: a fresh worker, and the judge never ran the patch) are judged as usual
    assert rec(records, "wrong_zeros_after_patch")["status"] == "incorrect"
    assert rec(records, "torch_out")["status"] == "ok"


def test_a_table_of_public_seeds_fails_on_fresh_ones(records):
    r = rec(records, "cheat_public_seed_table")
    assert r["status"] == "incorrect" and r["seeds"] and r["seeds"][0] not in range(10)


def test_memos_and_lazy_variants_get_no_speedup(records):
    slow_ms = 1e3 * __import__("tests.cheats", fromlist=["SLOW_S"]).SLOW_S
    honest = rec(records, "slow_honest")
    assert honest["status"] == "ok" and honest["sampled_checks"] >= 3 and honest["median_ms"] >= 0.8 * slow_ms
    lazy = rec(records, "cheat_lazy_after_check")
    assert lazy["status"] == "incorrect" and "timed call" in lazy["message"], lazy["message"]
    for name in ("cheat_memo_pointer", "cheat_memo_fingerprint"):
        r = rec(records, name)
        # either a stale memo hit was sampled (incorrect), or every timed call saw new contents and paid full price
        assert r["status"] == "incorrect" or r["median_ms"] >= 0.8 * slow_ms, (name, r["status"], r["median_ms"])


def test_a_variant_cannot_loosen_its_tolerance_and_the_record_says_which(records):
    r = rec(records, "cheat_loose_tolerance")
    fam = rec(records, "torch_out")["tolerance"]
    assert r["status"] == "incorrect"
    assert r["tolerance"]["rel"] == fam["rel"] and not r["tolerance"]["tightened_by_variant"]
    t = rec(records, "tight_tolerance_ok")
    assert t["status"] == "ok" and t["tolerance"]["tightened_by_variant"] and t["tolerance"]["rel"] == 1e-7


def test_lower_precision_than_declared_is_rejected(records):
    assert rec(records, "cheat_bf16_rounded", dtype="fp16")["status"] == "incorrect"
    assert rec(records, "torch_out", dtype="fp16")["status"] == "ok"


def test_overlap_counts_views_at_an_offset():
    x = torch.zeros(100)
    r = lambda t: (t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())  # noqa: E731
    assert chk.overlap({"input 'x'": r(x), "output 'y'": r(x[10:20])})
    assert chk.overlap({"output 'a'": r(x[:50]), "output 'b'": r(x[49:])})
    assert chk.overlap({"input 'x'": r(x[:50]), "output 'y'": r(torch.zeros(50))}) is None
    assert chk.overlap({"input 'a'": r(x[:50]), "input 'b'": r(x[:50])}) is None  # inputs may share


# ------------------------------------------------------------------------------------------- tolerance model
def _softmax_case(shape, seed, rounding):
    P = get_problem("softmax")
    x = P.make_inputs(shape, "fp16", seed, torch.device("cpu"))
    y = torch.softmax(x["x"].float(), -1).to(rounding).to(torch.float16)
    return chk.check_outputs({"y": y}, P.reference(x, shape, "fp16"), P.tol_for("fp16", shape)[0])


def test_fp16_softmax_rejects_bf16_rounding_and_passes_honest_results_on_10_seeds():
    P = get_problem("softmax")
    big = [s for s in P.quick if s["M"] * s["N"] >= 1000]
    for s in big:
        for seed in range(10):
            assert _softmax_case(s, seed, torch.float16).ok, (s, seed)
            assert not _softmax_case(s, seed, torch.bfloat16).ok, (s, seed)


def _attn(q, k, v, dt):  # torch "naive" attention kept in the storage dtype throughout: scores, P and O
    s = (q @ k.transpose(-1, -2)) * (1 / math.sqrt(q.shape[-1]))
    n = q.shape[-2]
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1).to(dt) @ v


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_attention_tolerance_passes_naive_low_precision_and_rejects_a_lower_one(dtype):
    P = get_problem("attention")
    shape = P.shape(B=1, H=2, Hkv=2, Nq=1024, Nkv=1024, D=64, causal=True)
    inp = P.make_inputs(shape, dtype, 7, torch.device("cpu"))
    ref = P.reference(inp, shape, dtype)
    tol = P.tol_for(dtype, shape)[0]
    dt = inp["q"].dtype
    honest = _attn(inp["q"], inp["k"], inp["v"], dt)
    assert chk.compare("o", honest, ref["o"], tol).ok
    if dtype == "fp16":  # fp16 declared, computed in bf16
        low = _attn(*(inp[n].bfloat16() for n in "qkv"), torch.bfloat16).half()
        assert not chk.compare("o", low, ref["o"], tol).ok


def test_derived_tolerance_grows_with_the_reduction_and_separates_precisions():
    a, b = derived_tolerance("fp32", 64), derived_tolerance("fp32", 65536)
    assert b.rel > a.rel and b.atol > a.atol
    assert derived_tolerance("fp16").rel * 2 < 0.43 * 2.0**-8  # a bf16-rounded result (~0.43 u_bf16) fails fp16
    assert derived_tolerance("fp32", 4096).rel * 10 < 3e-4  # tf32 (rel ~3e-4..8e-4) fails fp32 by >10x
    t = Tolerance(1.0, 1.0, 1.0).tightened(Tolerance(0.5, 2.0, 0.1))
    assert (t.rel, t.atol, t.rtol) == (0.5, 1.0, 0.1)
