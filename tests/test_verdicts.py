"""Verdicts that cannot be fooled (issues 15 and 29): every attack in tests/cheats.py ends incorrect, or suspect
with no speed-up, in an isolated run, and the honest variants next to them pass -- the same honest variant timed
right after each tamperer gets the time it gets alone. Plus the tolerance model (a lower precision than declared
fails, honest results pass, conditioning and one-element outputs), precision labels, the paired ×lib and the long
quick reductions.

The isolated run is ``harness.runner.execute`` with ``isolate=True``: each task in a fresh confined worker forked
from a zygote, the judge (inputs, float64 reference, comparison, sampling, clock) in this process. All attacks share
one task list: one zygote start (~1 s), then ~0.1-0.3 s per task.
"""

from __future__ import annotations

import ctypes
import math
import os

import pytest
import torch

from harness import check as chk
from harness.registry import Tolerance, derived_tolerance, get_problem
from harness.runner import RunOptions, Task, execute

FAST = dict(max_time_s=0.15, warmup_s=0.0, min_n=5, timeout_s=120.0, ab_rounds=4)


TAMPERERS = ("cheat_judge_memory", "cheat_numel_defer", "cheat_profile_defer", "cheat_stack_walk", "cheat_rng_patch",
             "cheat_timer_patch", "cheat_stats_code", "cheat_thread_rewrite", "cheat_sabotage_baseline")
CANARY = ctypes.create_string_buffer(b"judge-canary-" * 8)  # a buffer in the judge the memory attack aims at


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One isolated run of every attack. The honest ``slow_honest`` is timed alone first and last and right after
    each issue-29 tamperer (a fresh worker each: nothing a tamperer did may reach it)."""
    import tests.cheats as cheats  # registers the attacks here too: the judge needs the problems

    toy = [("toy", v, "fp32") for v in (
        "slow_honest", "cheat_rebind_new", "cheat_rebind_f64", "cheat_patches_checker", "wrong_zeros_after_patch",
        "torch_out", "cheat_public_seed_table", "cheat_memo_pointer", "cheat_memo_fingerprint",
        "cheat_lazy_after_check", "cheat_loose_tolerance", "tight_tolerance_ok", "torch_ref", "cheat_declares_fp8")]
    toy += [("toy", "cheat_bf16_rounded", "fp16"), ("toy", "torch_out", "fp16")]
    for t in TAMPERERS:
        toy += [("toy", t, "fp32"), ("toy", "slow_honest", "fp32")]
    copy = [("toy_copy", v, "fp32") for v in ("copy_ok", "copy_ref", "cheat_rebind_to_input", "cheat_return_input",
                                               "cheat_return_wrong_strides")]
    last = [("toy", "slow_honest", "fp32")]
    tasks = [Task(f, v, d, "M=3,N=17" if f == "toy" else "M=5,N=33") for f, v, d in toy + copy + last]
    log = tmp_path_factory.mktemp("attack") / "log.txt"
    out: list[dict] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WB_FAMILIES", "tests.toy_family,tests.cheats")
        mp.setenv("TRITON_INTERPRET", "1")
        mp.setenv(cheats.CANARY_ENV, f"{os.getpid()}:{ctypes.addressof(CANARY)}:{len(CANARY.raw)}")
        mp.setenv(cheats.ATTACK_LOG_ENV, str(log))
        execute(tasks, RunOptions(seeds=(123457, 99991, 31337), isolate=True, **FAST), out.append)
    return out, log.read_text() if log.exists() else ""


@pytest.fixture(scope="module")
def records(run):
    return {(r["family"], r["variant"], r["dtype"]): r for r in run[0]}


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


# ------------------------------------------------------------------------------------------- issue 29: the evidence
def _no_speedup(r):
    return r.get("speedup_vs_baseline") is None


def _rejected_or_flagged(r, slow_ms):
    """incorrect, or a time that includes the work it tried to hide (and, when suspect, no speed-up)."""
    if r["status"] == "incorrect":
        return True
    return r["status"] == "ok" and r["median_ms"] >= 0.8 * slow_ms and (_no_speedup(r) or not r["suspect"])


def test_the_worker_cannot_write_the_judge(run, records):
    r = rec(records, "cheat_judge_memory")
    assert r["status"] == "incorrect", r["message"]
    assert CANARY.raw.startswith(b"judge-canary-"), "the judge's memory was written"
    log = run[1]
    assert log.count("/proc/pid/mem: errno") == 2 and "wrote" not in log and "attached" not in log, log
    iso = r["isolation"]
    assert iso["confined"] and iso["cap_sys_ptrace"] is False and iso["judge_undumpable"] is True, iso


@pytest.mark.skipif(os.geteuid() != 0, reason="the control needs root (CAP_SYS_PTRACE) to show the attack works")
def test_the_memory_attack_works_on_an_unconfined_process():
    """The control: the same code from an ordinary child of a dumpable process does write it (so the test above
    could fail)."""
    import tests.cheats as cheats

    buf = ctypes.create_string_buffer(b"canary" * 4)
    pid = os.fork()
    if pid == 0:  # no torch here: the attack is ctypes and /proc only
        try:
            log = cheats.write_judge_memory(os.getppid(), ctypes.addressof(buf), 6, ptrace=False)
        finally:
            os._exit(0 if "wrote" in " ".join(log) else 1)
    _, st = os.waitpid(pid, 0)
    import harness.sandbox as sb

    if os.WEXITSTATUS(st) == 1 and not sb.has_cap(sb.DROPPED_CAPS["CAP_SYS_PTRACE"]):
        pytest.skip("this process runs without CAP_SYS_PTRACE")
    assert os.WEXITSTATUS(st) == 0 and not buf.raw.startswith(b"canary"), buf.raw


@pytest.mark.parametrize("variant", ["cheat_numel_defer", "cheat_profile_defer", "cheat_stack_walk",
                                     "cheat_rng_patch", "cheat_timer_patch", "cheat_stats_code",
                                     "cheat_thread_rewrite"])
def test_deferred_work_and_patched_measurement_get_no_speedup(records, variant):
    slow_ms = 1e3 * __import__("tests.cheats", fromlist=["SLOW_S"]).SLOW_S
    r = rec(records, variant)
    assert _rejected_or_flagged(r, slow_ms), (variant, r["status"], r.get("suspect_reasons"), r.get("median_ms"),
                                              r["message"])
    if variant in ("cheat_stack_walk", "cheat_rng_patch"):  # wrong when timed: sampled
        assert r["status"] == "incorrect" and "timed call" in r["message"], r["message"]
    if variant in ("cheat_timer_patch", "cheat_stats_code"):  # honest work, patched measurement: flagged
        assert r["status"] == "ok" and r["suspect"], r
        assert r["median_ms"] >= 0.8 * slow_ms  # the judge's clock, not the patched one


def test_a_tamperer_is_named(records):
    for name, what in (("cheat_stats_code", "harness.timing.stats"), ("cheat_timer_patch", "time.perf_counter"),
                       ("cheat_numel_defer", "torch.Tensor.numel"), ("cheat_profile_defer", "hook:sys.profile")):
        r = rec(records, name)
        assert any(what in x for x in r.get("suspect_reasons", [])), (name, r.get("suspect_reasons"))


def test_sabotaging_the_baseline_changes_nothing(records):
    r = rec(records, "cheat_sabotage_baseline")
    base = rec(records, "torch_ref")
    slow_ms = 1e3 * __import__("tests.cheats", fromlist=["SLOW_S"]).SLOW_S
    assert r["status"] == "ok" and r["suspect"] and _no_speedup(r)
    # the paired baseline ran in its own worker: Tensor.__mul__ there was never patched
    assert r["baseline_median_ms"] < 0.5 * slow_ms and base["median_ms"] < 0.5 * slow_ms, r["baseline_median_ms"]


def test_an_honest_variant_after_each_tamperer_gets_its_own_time(run):
    """slow_honest alone (first and last in the run) and right after each tamperer: within ±10% of the range of the
    two alone runs. A leaked timer patch (10x), a sabotaged torch op (+4 ms) or a crash would be far outside it. The
    statistic is each record's p10: a busy machine only adds delay to a 4 ms sleep (its median moved 14% between
    records at load 35 on these 2 cores), while every leak above moves the whole distribution."""
    recs = run[0]
    honest = [(i, r) for i, r in enumerate(recs) if r["variant"] == "slow_honest"]
    alone = [honest[0][1]["p10_ms"], honest[-1][1]["p10_ms"]]
    lo, hi = 0.9 * min(alone), 1.1 * max(alone)
    assert max(alone) / min(alone) < 1.1, alone  # the machine was steady enough for the comparison to mean something
    after = {recs[i - 1]["variant"]: r for i, r in honest[1:-1]}
    assert set(after) == set(TAMPERERS)
    for name, r in after.items():
        assert r["status"] == "ok" and not r["suspect"], (name, r["status"], r.get("suspect_reasons"), r["message"])
        assert lo <= r["p10_ms"] <= hi, (name, r["p10_ms"], alone)


def test_a_coarser_declared_precision_is_refused(records):
    r = rec(records, "cheat_declares_fp8")
    assert r["status"] == "incorrect" and "compute_dtype='fp8'" in r["message"], r["message"]


# ------------------------------------------------------------------------------------------- precision and reporting
def _register(problem, name, fn, **kw):
    problem.add_variant(name, "torch", fn, **kw)
    return name


@pytest.fixture
def mm_probe():
    P = get_problem("matmul")
    added = []

    def add(name, fn, **kw):
        added.append(_register(P, name, fn, **kw))
        return name

    yield P, add
    for n in added:
        del P.variants[n]


def _bf16_mm(i, o, s):
    o["c"].copy_(i["a"].bfloat16().float() @ i["b"].bfloat16().float())


def _tf32_mm(i, o, s):  # TF32 emulated: inputs rounded to 10 mantissa bits, fp32 accumulation
    def tf32(x):
        return (x.view(torch.int32) + 0x1000 & ~0x1FFF).view(torch.float32)

    o["c"].copy_(tf32(i["a"]) @ tf32(i["b"]))


def test_a_declared_precision_labels_its_own_row_and_never_loosens_the_family(mm_probe):
    from harness.records import render_table
    from harness.runner import RunOptions, Task, run_task

    P, add = mm_probe
    opts = RunOptions(seeds=(1, 2, 3), timing=False, isolate=False)
    s = "M=17,N=33,K=65"
    fp8 = add("probe_fp8_declared", _bf16_mm, dtypes=("fp32",), compute_dtype="fp8")
    r = run_task(Task("matmul", fp8, "fp32", s), opts)
    assert r["status"] == "incorrect" and "does not accept" in r["message"] and r["dtype_label"] == "fp32 (fp8)"
    bf = add("probe_bf16_as_tf32", _bf16_mm, dtypes=("fp32",), compute_dtype="tf32")
    r = run_task(Task("matmul", bf, "fp32", s), opts)
    assert r["status"] == "incorrect", r["message"]  # bf16 is coarser than the tf32 it declared
    tf = add("probe_tf32", _tf32_mm, dtypes=("fp32",), compute_dtype="tf32")
    r = run_task(Task("matmul", tf, "fp32", s), opts)
    assert r["status"] == "ok" and r["dtype_label"] == "fp32 (tf32)" and r["tolerance"]["precision"] == "tf32"
    fam = P.tol_for("fp32", P.parse_shape(s))[1]
    assert r["tolerance"]["rel"] > fam["rel"]  # its own tolerance, never the family's
    base = run_task(Task("matmul", "torch_fp32_ieee", "fp32", s), opts)
    lines = [t for t, _ in render_table([base, r], width=100)[0]]
    assert any("fp32 (tf32)" in t for t in lines) and any(t.endswith("· fp32") for t in lines), lines


def test_xlib_is_the_paired_estimate_everywhere():
    from harness.records import flat, markdown_table, render_table
    from harness.report import family_summary

    base = {"family": "f", "variant": "lib", "dtype": "fp32", "shape": "M=1", "status": "ok", "baseline": True,
            "backend": "torch", "median_ms": 1.0, "timing": "cuda-events", "flops": 1e9, "bytes": 1e6}
    var = {**base, "variant": "mine", "baseline": False, "backend": "cuda", "median_ms": 0.5,
           "speedup_vs_baseline": 1.5, "speedup_ci95": [1.4, 1.6], "speedup_method": "paired-rounds",
           "baseline_median_ms": 0.75}
    # the ratio of medians would say 2.00x; the paired rounds say 1.50x [1.40, 1.60]
    text = "\n".join(t for t, _ in render_table([base, var], width=120, columns=["variant", "time", "vs_lib", "ci",
                                                                                   "lib_time"])[0])
    assert "1.5×" in text and "[1.4, 1.6]" in text and "2×" not in text, text
    assert "| 1.5× | [1.4, 1.6] |" in markdown_table([base, var])
    row = flat(var)
    assert (row["speedup_vs_baseline"], row["speedup_lo"], row["speedup_hi"], row["median_ms"]) == (1.5, 1.4, 1.6, 0.5)
    assert family_summary([base, var])["vs"].startswith("1.5× [1.4, 1.6]")
    # suspect, or not paired (an old median ratio): no ×lib at all
    for bad in ({**var, "suspect": True}, {**var, "speedup_method": "median-ratio"}):
        assert flat(bad)["speedup_vs_baseline"] is None


def _chunked(x, y, dt, chunk=16):
    """x @ y (batched over leading dims) with the running sum rounded to ``dt`` every ``chunk`` products (fp32
    inside a chunk)."""
    acc = torch.zeros(*x.shape[:-1], y.shape[-1], dtype=dt)
    for k0 in range(0, x.shape[-1], chunk):
        acc = (acc.float() + x[..., k0:k0 + chunk].float() @ y[..., k0:k0 + chunk, :].float()).to(dt)
    return acc


def test_chunked_low_precision_accumulation_fails_at_quick_shapes():
    """Every quick shape set has a reduction >= 2048 where an fp16/bf16 accumulator rounded every 16 products
    fails on each of 10 seeds (at K <= 100 it passed every quick shape)."""
    mm = get_problem("matmul")
    long_k = [s for s in mm.quick if s["K"] >= 2048]
    assert long_k
    for s in long_k:
        for dtype, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            tol = mm.tol_for(dtype, s)[0]
            for seed in range(10):
                inp = mm.make_inputs(s, dtype, seed, torch.device("cpu"))
                ref = mm.reference(inp, s, dtype)
                assert not chk.check_outputs({"c": _chunked(inp["a"], inp["b"], dt)}, ref, tol).ok, (s, dtype, seed)
                honest = (inp["a"].float() @ inp["b"].float()).to(dt)
                assert chk.check_outputs({"c": honest}, ref, tol).ok, (s, dtype, seed)
    for fam, key in (("sgemm", "K"), ("quant_gemm", "K"), ("attention", "Nkv"), ("attention_decode", "Nkv")):
        assert any(s[key] >= 2048 for s in get_problem(fam).quick), fam
    att = get_problem("attention")
    s = next(s for s in att.quick if s["Nkv"] >= 2048)
    tol = att.tol_for("fp16", s)[0]
    for seed in range(10):  # P@V accumulated in fp16 chunks of 16 keys
        inp = att.make_inputs(s, "fp16", seed, torch.device("cpu"))
        ref = att.reference(inp, s, "fp16")
        q, k, v = (inp[n].float() for n in "qkv")
        sc = (q @ k.transpose(-1, -2)) / math.sqrt(s.D)
        keep = torch.ones(s.Nq, s.Nkv, dtype=torch.bool).tril(s.Nkv - s.Nq)
        p = torch.softmax(sc.masked_fill(~keep, float("-inf")), -1).half()
        o = _chunked(p, v.repeat_interleave(s.H // s.Hkv, dim=1).half(), torch.float16)
        assert not chk.compare("o", o, ref["o"], tol).ok, seed


def test_the_lse_form_softmax_and_one_element_baselines_pass_while_lower_precision_fails():
    from harness.runner import check_once

    P = get_problem("softmax")
    for s in P.quick:
        tol = P.tol_for("fp32", s)[0]
        for seed in range(10):
            x = P.make_inputs(s, "fp32", seed, torch.device("cpu"))
            xf = x["x"]
            lse_form = torch.exp(xf - torch.logsumexp(xf, -1, keepdim=True))
            assert chk.check_outputs({"y": lse_form}, P.reference(x, s, "fp32"), tol).ok, (s, seed)
            if s["N"] > 1:  # computed in bf16: still rejected at fp32
                low = torch.softmax(xf.bfloat16().float(), -1).bfloat16().float()
                assert not chk.check_outputs({"y": low}, P.reference(x, s, "fp32"), tol).ok, (s, seed)
    for fam, variant, dtype, shape in (("conv1d", "torch_conv1d", "fp32", "B=1,D=1,L=1,K=3"),
                                       ("sgemm", "torch_addmm", "fp32", "M=1,N=1,K=1"),
                                       ("matmul", "triton_matmul_fp8_kmajor", "fp8", "M=1,N=1,K=1")):
        p = get_problem(fam)
        for seed in range(10):
            res = check_once(p, p.variants[variant], dtype, p.parse_shape(shape), seed)
            assert res.ok, (fam, variant, seed, res.message)


def test_an_attention_variant_without_lse_is_labelled():
    from harness.records import flag_letters
    from harness.runner import RunOptions, Task, run_task

    opts = RunOptions(seeds=(1, 2), timing=False, isolate=False)
    r = run_task(Task("attention", "torch_naive", "fp16", "B=1,H=2,Hkv=1,Nq=17,Nkv=17,D=16,causal=0"), opts)
    assert r["status"] == "ok" and r["unchecked_outputs"] == ["lse"] and "P" in flag_letters(r)
    r = run_task(Task("attention", "triton_fa2", "fp16", "B=1,H=2,Hkv=1,Nq=17,Nkv=17,D=16,causal=0"), opts)
    assert r["status"] == "ok" and "unchecked_outputs" not in r and r["extra"]["lse_checked"], r["message"]


def test_only_a_timed_output_unlike_a_checked_one_is_blamed_on_cached_work(records):
    lazy = rec(records, "cheat_lazy_after_check")  # right when checked, wrong when timed... and when rechecked
    assert lazy["status"] == "incorrect" and "timed call" in lazy["message"]
    walk = rec(records, "cheat_stack_walk")  # right in a check call on the same input: blamed
    assert "cached, deferred or skipped work?" in walk["message"], walk["message"]
