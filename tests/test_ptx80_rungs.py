"""The tensor-core rungs of the sm_80 half of issue 28 on the CPU interpreter: each one runs its real source through
the family's own launcher and judge (float64 reference, fresh random inputs, poisoned outputs) and must end ``ok``.

Shapes: the family's quick shapes, plus dedicated interpret shapes where the quick ones miss a path --
* matmul v8 / v8b: 130 x 136 x 136 -- the cp.async path (the quick shapes' K = 65 / 100 take the element-wise one,
  and their K <= 96 fills at most 3 slices), 5 k-slices through a 3 / 4-stage ring (wrap-around), a K tail of 8,
  M and N edge tiles, 2 x 2 tiles (v8b's grouped 1-D order);
* attention v2: 70 x 150 at D = 64 (several K/V tiles: the prefetch of K_{t+1} under P V_t, a key tail), causal with
  Nq > Nkv (rows that see no key), D = 128 -- the quick shapes have one D = 64 case with a single K/V tile;
* quant v6 / v7 (the quick shapes cover v4 / v5: MT = 1 and 2, split-K, N tails): MT = 2 and 4 (M = 20, 37; the quick
  shapes have M <= 3 for w4a16), split-K 2, groups of 16, 32 and 48 (a 64-k tile straddling 2-4 groups), a K tail
  (208 = 3 x 64 + 16), outlier activations at MT = 4, an N tail of v7's 256-column tile, asymmetric zeros, and
  K = 320 without split-K (as the launcher sizes it for a 1-SM GPU): 5 k tiles through v7's 4-stage ring;
* knn v3 / v4: D = 80 (v3's second 64-deep stage and its 16-byte loads; v4's float4 path), k = 100 and k = 128 (the
  64- and 128-key lists; at k = 128 no margin is left, every query is refused and answered by v2), and Q = 3,
  N = 2100 (v4's split-N over 2 base slices and knn_v4_merge).
Each file is built for the rungs' own kernels only (the family's other kernels are not compiled here), all builds of
this module at once on the machine's cores (the g++ builds are most of its time), without nvcc's ptxas report.

The known-wrong form of qgemm_v7 (before the x-chunk guard, issue 28: with MT = 1 the 128 threads past the x tile's
chunks zero-filled 16 bytes each at stage offsets 2048-4095, the packed tile other threads fill in the same stage) is
re-created from the source by deleting the guard and must end in a racecheck error naming both cp.async sites.

Mutations (issue 28): every ``cp_async_wait<...>()`` / ``cp_async_wait_all()`` and every ``__syncthreads()`` in the
body of each rung that has them is deleted in a copy of the source, one at a time (one build per file: each site is
wrapped in a runtime switch), and the rung must fail on the CPU within 10 seeds. The sites that may be deleted without
consequence are listed with the reason (a redundant wait or barrier is not a defect the interpreter can show).
"""

from __future__ import annotations

import dataclasses
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from harness.registry import get_problem
from harness.runner import RunOptions, execute, plan

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the runner runs these on it")

SEEDS = (1, 2, 3)
TY = {"fp32": "float", "fp16": "__half", "bf16": "__nv_bfloat16"}

# family -> {variant: dedicated interpret shapes}
RUNGS = {
    "matmul": {"cuda_v8_mma": ["M=130,N=136,K=136"], "cuda_v8b_mma_swizzle": ["M=130,N=136,K=136"]},
    "attention": {"cuda_v2_mma": ["B=1,H=2,Hkv=1,Nq=70,Nkv=150,D=64,causal=0",
                                  "B=1,H=2,Hkv=1,Nq=80,Nkv=70,D=64,causal=1",
                                  "B=1,H=1,Hkv=1,Nq=20,Nkv=70,D=128,causal=0"]},
    "quant_gemm": {"cuda_v4_w4a16_gemv": [], "cuda_v5_w8a16_gemv": [],  # quick: MT = 1 and 2, split-K, N tails
                   **{v: ["M=20,N=272,K=208,scheme=w4a16,group=16,sym=1,outliers=0",
                          "M=37,N=64,K=256,scheme=w4a16,group=128,sym=0,outliers=0",
                          "M=3,N=48,K=320,scheme=w4a16,group=32,sym=0,outliers=0",
                          "M=1,N=16,K=192,scheme=w4a16,group=48,sym=1,outliers=0",
                          "M=33,N=48,K=256,scheme=w4a16,group=64,sym=1,outliers=1"]
                      for v in ("cuda_v6_w4a16_mma", "cuda_v7_w4a16_marlin")}},
    "knn": {v: ["Q=40,N=200,D=80,k=7,metric=l2,dups=0,base_rows=0,data=normal",
                "Q=7,N=900,D=20,k=100,metric=l2,dups=0,base_rows=0,data=normal",
                "Q=6,N=130,D=12,k=128,metric=l2,dups=0,base_rows=0,data=normal",
                *(["Q=3,N=2100,D=36,k=5,metric=l2,dups=0,base_rows=0,data=normal"] if v == "knn_v4_tf32_ws" else [])]
            for v in ("knn_v3_tc", "knn_v4_tf32_ws")},
}
# the SIMT SGEMM ladder shares matmul.cu's build: its irregular shapes and misaligned views (the retired g++ emulator's)
LADDER = {"matmul": ["cuda_v1_naive", "cuda_v2_coalesced", "cuda_v3_smem", "cuda_v4_blocktile1d",
                     "cuda_v5_blocktile2d", "cuda_v6_vectorized", "cuda_v7_warptile"]}
NO_SPLIT = "M=20,N=272,K=320,scheme=w4a16,group=32,sym=0,outliers=0"  # 5 k tiles through v7's 4 stages
# kernels a rung's launcher calls besides its own (knn: queries the certificate refuses go to v2)
EXTRA = {"knn_v3_tc": ["knn_v2_fused<{T},64>", "knn_v2_fused<{T},128>", "knn_norms<{T}>"],
         "knn_v4_tf32_ws": ["knn_v2_fused<float,64>", "knn_v2_fused<float,128>", "knn_norms<float>"]}


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("WB_CUDA_INTERPRET", "1")


def rung_kernels(family: str, variants, only_dtype: dict[str, str] | None = None) -> tuple[object, list[str]]:
    """The family's CudaSource and the kernels its launcher calls for these rungs (``only_dtype``: one dtype each)."""
    p = get_problem(family)
    src, names = None, []
    for v in variants:
        var = p.variants[v]
        src = var.source
        for dt in [only_dtype[v]] if only_dtype else var.dtypes:
            for n in (*var.kernel_names(dt), *(e.replace("{T}", TY[dt]) for e in EXTRA.get(v, ()))):
                if n not in names:
                    names.append(n)
    return src, names


def _patched(src, names: list[str], path: Path | None = None):
    """A stand-in of ``src`` with the same flags, for these kernels (and, for a copy, at ``path``): what the tests
    build and what the prebuild fixture compiles ahead (the same cache key)."""
    return dataclasses.replace(src, path=path or src.path, instantiate=list(names))


@pytest.fixture
def only_kernels(monkeypatch):
    """Run a family's source (or a copy of it at ``path``) built for these kernels only -- what the rung's launcher
    calls (another kernel fails its record: "was not built") -- without nvcc's ptxas report (not needed here)."""
    import harness.cuda
    from harness import interp

    monkeypatch.setattr(harness.cuda, "nvcc_path", lambda: None)
    orig = interp.kernel_list

    def restrict(src, names: list[str], path: Path | None = None) -> None:
        monkeypatch.setattr(interp, "kernel_list", lambda s: list(names) if s is src else orig(s))
        monkeypatch.setattr(src, "instantiate", list(names))
        if path is not None:
            monkeypatch.setattr(src, "path", path)

    return restrict


def run(family: str, variant: str, shapes: list[str] | None, seeds=SEEDS, dtypes=None) -> list[dict]:
    recs: list[dict] = []
    tasks = plan([family], variants=[variant], shapes=shapes, quick=shapes is None, dtypes=dtypes)
    execute(tasks, RunOptions(seeds=tuple(seeds), isolate=False, timing=False), recs.append)
    return [r for r in recs if not (r["status"] == "skipped" and "not interpreted" not in r["message"])]


def verdicts(recs: list[dict]) -> list[str]:
    return [f"{r['variant']} {r['dtype']} {r['shape']}: {r['status']} {r['message']}" for r in recs]


# ----------------------------------------------------------------------------------------------- copies
CUDA = Path(__file__).resolve().parent.parent / "cuda_src"
SITE = re.compile(r"__syncthreads\(\)|cp_async_wait<[^>]*>\(\)|cp_async_wait_all\(\)")
UNSWIZZLE = "return r * BN + (((n >> 3) ^ (r & 7)) << 3) + (n & 7);"
V7_GUARD = "if (BM * 8 % NTH != 0 && tid + j * NTH >= BM * 8) continue;  // QG_V7_X_CHUNK_GUARD"


def line_of(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln)


def function_body(text: str, name: str) -> tuple[int, int]:
    """[start, end) of the body of the function ``name`` is defined with."""
    for m in re.finditer(r"\b" + re.escape(name) + r"\s*\(", text):
        i, depth = m.end() - 1, 0
        while True:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        while text[i] in " \t\n":
            i += 1
        if text[i] != "{":
            continue  # a call or a declaration
        j, depth = i, 0
        while True:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                return i, j
    raise AssertionError(f"no definition of {name}")


def mutable_copy(path: Path, functions: list[str], out: Path) -> list[tuple[int, str, str]]:
    """A copy of ``path`` in which site k (a barrier or cp.async wait in one of ``functions``) runs unless the
    library's ``wb_mutant`` is k: one build, every deletion. Returns (line, site, function) per k."""
    text = path.read_text()
    spans = sorted((*function_body(text, f), f) for f in functions)
    edits, sites = [], []
    for a, b, f in spans:
        for m in SITE.finditer(text, a, b):
            k = len(sites)
            sites.append((text.count("\n", 0, m.start()) + 1, m.group(0), f))
            edits.append((m.start(), m.end(), f"(wb_mutant == {k} ? (void)0 : (void)({m.group(0)}))"))
    for s, e, new in reversed(edits):
        text = text[:s] + new + text[e:]
    if UNSWIZZLE in text:  # wb_mutant == -2: v8b's B tile without its XOR (known-wrong for bank conflicts)
        text = text.replace(UNSWIZZLE, "return wb_mutant == -2 ? r * BN + n : r * BN + (((n >> 3) ^ (r & 7)) << 3) + "
                                       "(n & 7);")
    # on the first line, so that every line keeps its number
    out.write_text('extern "C" __attribute__((visibility("default"))) int wb_mutant = -1; ' + text)
    return sites


# file -> {rung: (functions, dtype, [(shape, SM count the launcher assumes or None)])}: one mutable build per file
MUTANTS = {
    "matmul.cu": {"cuda_v8_mma": (["hgemm_v8_mma"], "fp16", [("M=40,N=72,K=136", None)]),
                  "cuda_v8b_mma_swizzle": (["hgemm_v8b_mma_swizzle"], "fp16", [("M=40,N=72,K=136", None)])},
    "attention.cu": {"cuda_v2_mma": (["attn_v2_mma"], "bf16", [("B=1,H=1,Hkv=1,Nq=40,Nkv=150,D=64,causal=0", None)])},
    "quant_gemm.cu": {"cuda_v7_w4a16_marlin": (
        ["qgemm_v7_w4a16_marlin", "qg_last_ticket"], "fp16",
        [("M=20,N=48,K=320,scheme=w4a16,group=32,sym=0,outliers=0", 1),  # no split: 5 k tiles through 4 stages
         ("M=3,N=48,K=256,scheme=w4a16,group=64,sym=0,outliers=0", None)])},  # split 2: the tickets
    "knn.cu": {"knn_v3_tc": (["knn_v3_tc"], "fp16", [("Q=40,N=200,D=80,k=7,metric=l2,dups=0,base_rows=0,data=normal",
                                                     None)]),
               "knn_v4_tf32_ws": (["knn_v4_tf32_ws"], "fp32", [("Q=40,N=300,D=40,k=7,metric=l2,dups=0,base_rows=0,"
                                                                "data=normal", None)])},
}
FAMILY = {"matmul.cu": "matmul", "attention.cu": "attention", "quant_gemm.cu": "quant_gemm", "knn.cu": "knn"}
# the kernels those shapes launch (k = 7: v3 and the v2 fallback take KB = 64, v4 KB = 32; M = 20 / 3: MT = 2 / 1)
MUTANT_KERNELS = {
    "matmul.cu": ["hgemm_v8_mma<__half,128,128,32,2,4,3>", "hgemm_v8b_mma_swizzle<__half,128,128,32,2,4,4>"],
    "attention.cu": ["attn_v2_mma<__nv_bfloat16, 64>"],
    "quant_gemm.cu": ["qgemm_v7_w4a16_marlin<__half,1,8>", "qgemm_v7_w4a16_marlin<__half,2,8>"],
    "knn.cu": ["knn_sqnorms<__half>", "knn_norms<__half>", "knn_v3_tc<__half,64>", "knn_v2_fused<__half,64>",
               "knn_v4_tf32_ws<32>", "knn_v4_merge<32>", "knn_norms<float>", "knn_v2_fused<float,64>"],
}
V7_BAD_KERNELS = ["qgemm_v7_w4a16_marlin<__half,1,8>", "qgemm_v7_w4a16_marlin<__nv_bfloat16,1,8>"]


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict:
    """The mutable copies, the known-wrong v7, and every build of this module compiled at once (2+ cores)."""
    from harness.interp.build import build

    d = tmp_path_factory.mktemp("ptx80_copies")
    out: dict = {"sites": {}, "paths": {}, "jobs": []}
    for fname, rungs in MUTANTS.items():
        out["paths"][fname] = d / fname
        out["sites"][fname] = mutable_copy(CUDA / fname, [f for fns, _, _ in rungs.values() for f in fns], d / fname)
        src = get_problem(FAMILY[fname]).variants[next(iter(rungs))].source
        out["jobs"].append((_patched(src, MUTANT_KERNELS[fname], d / fname), MUTANT_KERNELS[fname]))
    bad = d / "v7_before" / "quant_gemm.cu"
    bad.parent.mkdir()
    text = (CUDA / "quant_gemm.cu").read_text()
    assert text.count(V7_GUARD) == 1
    bad.write_text(text.replace(V7_GUARD, "// (guard removed: the form before issue 28)"))
    out["v7_before"] = bad
    qsrc = get_problem("quant_gemm").variants["cuda_v7_w4a16_marlin"].source
    out["jobs"].append((_patched(qsrc, V7_BAD_KERNELS, bad), V7_BAD_KERNELS))
    for family, rungs in RUNGS.items():
        src, names = rung_kernels(family, [*rungs, *LADDER.get(family, ())])
        out["jobs"].append((_patched(src, names), names))
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:  # g++ runs as subprocesses
        list(ex.map(lambda job: build(*job), out["jobs"]))
    return out


# ----------------------------------------------------------------------------------------------- every rung is ok
@pytest.mark.parametrize("family", sorted(RUNGS))
def test_tensor_core_rungs_ok_on_the_cpu(family, copies, only_kernels, monkeypatch):
    only_kernels(*rung_kernels(family, [*RUNGS[family], *LADDER.get(family, ())]))
    for variant, dedicated in RUNGS[family].items():
        recs = run(family, variant, None) + (run(family, variant, dedicated) if dedicated else [])
        assert recs and all(r["status"] == "ok" for r in recs), "\n".join(verdicts(recs))
        assert all(r["interpreted"] for r in recs)
        ran = {r["shape"] for r in recs}
        assert all(get_problem(family).parse_shape(s).key() in ran for s in dedicated), "a dedicated shape skipped"
    if family == "quant_gemm":  # without split-K (the launcher sized for a 1-SM GPU): v7's 4-stage ring wraps
        import harness.families.quant_gemm as qg

        monkeypatch.setattr(qg, "_MMA_SMS", 1)
        assert qg.v7_launch(20, 272, 320, 1)["SPLIT"] == 1
        for variant in ("cuda_v6_w4a16_mma", "cuda_v7_w4a16_marlin"):
            recs = run(family, variant, [NO_SPLIT])
            assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), "\n".join(verdicts(recs))


# ----------------------------------------------------------------------------------------------- v7's fixed race
CP_LINE = line_of(CUDA / "common.cuh", "cp.async.cg.shared.global [%0], [%1], 16, %2;")
X_LINE = line_of(CUDA / "quant_gemm.cu", "cp_async_16(st + a_dst[j], ok ? a_src[j] + k0 : x, ok);")
B_LINE = line_of(CUDA / "quant_gemm.cu", "cp_async_16(st + b_dst[j], ok ? b_src[j] + (long long)kt")


def test_v7_x_chunk_race_is_caught_before_the_fix(copies, only_kernels):
    """Known-wrong: qgemm_v7 as it was before issue 28 (every thread issues its x-chunk copy, src-size 0 when it has
    no chunk). At MT = 1 threads 128-255 zero-fill stage offsets 2048-4095 while other threads copy the packed tile
    there: two unordered writes in one stage."""
    only_kernels(get_problem("quant_gemm").variants["cuda_v7_w4a16_marlin"].source, V7_BAD_KERNELS,
                 copies["v7_before"])
    recs = run("quant_gemm", "cuda_v7_w4a16_marlin", ["M=3,N=80,K=256,scheme=w4a16,group=64,sym=0,outliers=0"],
               seeds=(1,))
    assert len(recs) == 2  # fp16, bf16
    for r in recs:
        m = re.search(r"racecheck: shared-memory race \((write-after-write|write to bytes an in-flight async copy "
                      r"writes)\) on dynamic shared\+0x([0-9a-f]+) in qgemm_v7_w4a16_marlin<\w+,1,8> block "
                      r"\(0,\d,0\) between thread \((\d+),0,0\) at (.+) and thread \((\d+),0,0\) at (.+)$",
                      r["message"])
        assert r["status"] == "runtime_error" and m, r["message"]
        off = int(m.group(2), 16) % 14336  # QgV7<1, 8>::STAGE
        assert 2048 <= off < 4096, "the zero-fill lands in the packed tile"
        assert max(int(m.group(3)), int(m.group(5))) >= 128  # one side is a thread without an x chunk
        # both sites: the helper's line and the kernel's (the x copy and the packed-tile copy of the load lambda)
        assert {m.group(4), m.group(6)} == {f"common.cuh:{CP_LINE} via quant_gemm.cu:{X_LINE}",
                                            f"common.cuh:{CP_LINE} via quant_gemm.cu:{B_LINE}"}, r["message"]


# ----------------------------------------------------------------------------------------------- mutations
# Deletions the interpreter cannot show, each for a reason that holds on the GPU too (or, for the ticket, a limit of
# the model: blocks run one after another, so the order of one CTA's stores before another CTA's ticket is moot).
# They run one seed (to see that they still pass); every other deletion must fail within 10.
HARMLESS = {
    ("hgemm_v8_mma", "cp_async_wait<0>()"): "after the loop only empty commit groups are pending",
    ("hgemm_v8b_mma_swizzle", "cp_async_wait<0>()"): "after the loop only empty commit groups are pending",
    ("qgemm_v7_w4a16_marlin", "cp_async_wait<0>()"): "after the loop only empty commit groups are pending",
    ("qg_last_ticket", "__syncthreads()#0"): "orders the CTA's partial stores before its ticket for the CTA that sums "
                                             "them: cross-CTA, and the interpreter runs blocks one at a time",
    ("attn_v2_mma", "cp_async_wait_all()#3"): "the last tile prefetches nothing: only an empty group is pending",
    ("attn_v2_mma", "__syncthreads()#3"): "each warp restages only the 16 rows of sQ it read its Q fragments from",
}


def _key(sites: list[tuple[int, str, str]], k: int) -> tuple[str, str]:
    """(function, site) and, for a function with several of the same site, its occurrence #i."""
    line, site, fn = sites[k]
    same = [s for s in sites if s[1:] == (site, fn)]
    return (fn, site) if len(same) == 1 else (fn, f"{site}#{same.index(sites[k])}")


@pytest.mark.parametrize("fname", sorted(MUTANTS))
def test_deleting_a_wait_or_barrier_fails_within_10_seeds(fname, copies, only_kernels, monkeypatch):
    import ctypes

    import harness.families.quant_gemm as qg

    family, rungs, sites = FAMILY[fname], MUTANTS[fname], copies["sites"][fname]
    src = get_problem(family).variants[next(iter(rungs))].source
    only_kernels(src, MUTANT_KERNELS[fname], copies["paths"][fname])
    mutant = ctypes.c_int.in_dll(src.interp_library()._dll, "wb_mutant")
    undetected = []
    for k in range(len(sites)):
        variant = next(v for v, (fns, _, _) in rungs.items() if sites[k][2] in fns)
        _, dtype, cases = rungs[variant]
        key = _key(sites, k)
        mutant.value = k
        caught = None
        for seed in range(1, 2 if key in HARMLESS else 11):
            for shape, sms in cases:
                monkeypatch.setattr(qg, "_MMA_SMS", sms or 132)
                got: list[dict] = []
                execute(plan([family], variants=[variant], dtypes=[dtype], shapes=[shape]),
                        RunOptions(seeds=(seed,), isolate=False, timing=False), got.append)
                assert len(got) == 1 and got[0]["status"] != "skipped", got
                if got[0]["status"] != "ok":
                    caught = got[0]
                    break
            if caught:
                break
        if caught is None:
            undetected.append(key)
        else:
            assert key not in HARMLESS, f"{key} is listed as harmless but failed: {caught['message']}"
    mutant.value = -1
    assert len(sites) >= 2 * len(rungs)
    expected = [key for key in HARMLESS if any(key[0] in fns for fns, _, _ in rungs.values())]
    assert sorted(undetected) == sorted(expected), f"deletions that passed 10 seeds: {set(undetected) - set(expected)}"


# ----------------------------------------------------------------------------------------------- matmul extras
def test_matmul_ladder_irregular_shapes_and_misaligned_views(copies, only_kernels):
    """The SIMT ladder at the shapes the retired g++ emulator used (scalar edges; the float4 paths with K, N multiples
    of 4), and every vector path given pointers one element past 16-byte alignment (v6 / v7 fall back to scalar
    loads, v8 / v8b to the element-wise tile loads): right, and memcheck-clean."""
    from harness.families import _matmul_cuda as mc

    only_kernels(*rung_kernels("matmul", [*RUNGS["matmul"], *LADDER["matmul"]]))
    for variant in LADDER["matmul"]:
        recs = run("matmul", variant, ["M=7,N=37,K=19", "M=33,N=132,K=68"], seeds=(1,))
        assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), "\n".join(verdicts(recs))
    p = get_problem("matmul")
    M, N, K = 33, 132, 68
    g = torch.Generator().manual_seed(7)
    for name, dt, tol in (("cuda_v6_vectorized", torch.float32, 2e-5), ("cuda_v7_warptile", torch.float32, 2e-5),
                          ("cuda_v8_mma", torch.float16, 2e-3), ("cuda_v8b_mma_swizzle", torch.bfloat16, 1e-2)):
        a = torch.randn(M * K + 1, generator=g).to(dt)[1:].view(M, K)
        b = torch.randn(K * N + 1, generator=g).to(dt)[1:].view(K, N)
        c = torch.full((M * N + 1,), float("nan"), dtype=dt)[1:].view(M, N)
        assert a.data_ptr() % 16 and b.data_ptr() % 16 and c.data_ptr() % 16
        p.variants[name].fn({"a": a, "b": b}, {"c": c}, p.parse_shape(f"M={M},N={N},K={K}"))
        ref = a.double() @ b.double()
        assert torch.isfinite(c).all() and ((c.double() - ref).norm() / ref.norm()).item() < tol, name
    assert mc.V8_KERNELS and mc.V8B_KERNELS


def test_v8_ldmatrix_phases_are_bank_conflict_free(copies, only_kernels):
    """Each 8-row phase of every ldmatrix of v8 (padded rows) and v8b (XOR swizzle) reads 8 distinct 16-byte bank
    groups (the model counts them); known-wrong: v8b's B tile without its XOR still multiplies right, but every
    ldmatrix.trans phase of B then reads 8 rows from one bank group."""
    import ctypes

    src = get_problem("matmul").variants["cuda_v8_mma"].source
    only_kernels(src, MUTANT_KERNELS["matmul.cu"], copies["paths"]["matmul.cu"])
    lib = src.interp_library()._dll
    mutant = ctypes.c_int.in_dll(lib, "wb_mutant")

    def phases(variant: str) -> tuple[list[dict], list[int]]:
        before, after = (ctypes.c_ulonglong * 4)(), (ctypes.c_ulonglong * 4)()
        lib.wbp80_stats(before)
        recs = run("matmul", variant, ["M=130,N=136,K=136"], seeds=(1,), dtypes=["fp16"])
        lib.wbp80_stats(after)
        return recs, [after[i] - before[i] for i in range(2)]

    try:
        for variant in ("cuda_v8_mma", "cuda_v8b_mma_swizzle"):
            recs, (n, bad) = phases(variant)
            assert [r["status"] for r in recs] == ["ok"] and n > 1000 and bad == 0, (variant, n, bad)
        mutant.value = -2
        recs, (n, bad) = phases("cuda_v8b_mma_swizzle")
        assert [r["status"] for r in recs] == ["ok"] and bad >= n // 3, (n, bad)  # B's phases: 1 of 3 ldmatrix
    finally:
        mutant.value = -1
