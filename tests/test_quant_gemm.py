"""quant_gemm family: quantizers, packing layout, Triton kernels under the interpreter, CUDA compile, GPU checks.

CPU part runs in a few seconds with TRITON_INTERPRET=1 (tiny shapes). ``@pytest.mark.gpu`` tests run every variant x
dtype x quick shape on a GPU and are skipped here.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():  # the lead's conftest does this too; keep the file runnable on its own
    os.environ.setdefault("TRITON_INTERPRET", "1")

from harness.check import check_outputs, poison_  # noqa: E402
from harness.families import quant_gemm as fam  # noqa: E402
from harness.registry import get_problem  # noqa: E402
from kernels import quant as Q  # noqa: E402
from kernels import quant_gemm as TK  # noqa: E402

P = get_problem("quant_gemm")
FP8 = Q.FP8_DTYPE


def _rand(shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


def _run_variant(v, shape, dtype, device="cpu", seed=0):
    inputs = P.make_inputs(shape, dtype, seed, device)
    ref = P.reference(inputs, shape, dtype)
    expected = P.make_outputs(shape, dtype, device)
    if v.style == "out":
        out = {k: poison_(t) for k, t in P.make_outputs(shape, dtype, device).items()}
        assert v.fn(inputs, out, shape) is None
    else:
        out = v.fn(inputs, None, shape)
    return check_outputs(out, ref, P.tol(dtype, v, shape), expected)


# ------------------------------------------------------------------------------------------------ quantizers
def test_int8_weight_round_trip():
    w = _rand((96, 40))
    qw, s = Q.quantize_int8_weight(w)
    assert qw.dtype == torch.int8 and s.dtype == torch.float32 and s.shape == (40,)
    assert int(qw.abs().max()) <= 127
    err = (Q.dequantize_int8_weight(qw, s) - w.double()).abs()
    assert bool((err <= s.double()[None, :] / 2 * (1 + 1e-6)).all())
    assert torch.allclose(s, w.abs().amax(0) / 127)


@pytest.mark.parametrize("group", [64, 128])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16])
def test_int4_weight_round_trip(group, sym, scale_dtype):
    K, N = 256, 24
    w = _rand((K, N), seed=1)
    packed, s, z = Q.quantize_int4_weight(w, group, sym, scale_dtype=scale_dtype)
    assert packed.dtype == torch.uint8 and packed.shape == (K // 2, N)
    assert s.shape == (K // group, N) and s.dtype == scale_dtype
    assert (z is None) == sym
    if not sym:
        assert z.dtype == torch.uint8 and z.shape == (K // group, N) and int(z.max()) <= 15
    deq = Q.dequantize_int4_weight(packed, s, z, group)
    err = (deq - w.double()).reshape(K // group, group, N).abs()
    sd = s.double()[:, None, :]
    # symmetric: round to nearest within [-8, 7] -> |err| <= s/2; asymmetric: the rounded zero point can push one
    # end of the range to the clamp -> |err| <= s
    bound = sd / 2 * (1 + 2e-3) if sym else sd * (1 + 2e-3)
    assert bool((err <= bound).all())
    rel = float((deq - w.double()).norm() / w.double().norm())
    assert rel < 0.13  # 4-bit: ~0.1 relative for Gaussian weights
    # in float16 the dequantized values are exactly what the Triton kernel computes before its dot
    if scale_dtype == torch.float16:
        q = Q.unpack_int4(packed).to(torch.float32).reshape(K // group, group, N)
        zz = 8.0 if z is None else z.float()[:, None, :]
        mine = ((q - zz) * s.float()[:, None, :]).reshape(K, N).half()
        assert torch.equal(mine, Q.dequantize_int4_weight(packed, s, z, group, torch.float16))


def test_int8_activation_round_trip():
    x = _rand((7, 64), seed=2) * torch.logspace(-3, 2, 7)[:, None]
    xq, s = Q.quantize_int8_activation(x)
    assert xq.dtype == torch.int8 and s.shape == (7,)
    err = (Q.dequantize_int8_activation(xq, s) - x.double()).abs()
    assert bool((err <= s.double()[:, None] / 2 * (1 + 1e-6)).all())


@pytest.mark.skipif(FP8 is None, reason="torch without float8_e4m3fn")
@pytest.mark.parametrize("per", ["tensor", "row", "col"])
def test_fp8_round_trip(per):
    t = _rand((12, 20), seed=3) * torch.logspace(-2, 2, 20)[None, :]
    q, s = Q.quantize_fp8(t, per)
    assert q.dtype == FP8
    assert s.shape == {"tensor": (), "row": (12,), "col": (20,)}[per]
    deq = Q.dequantize_fp8(q, s, per)
    sb = s.double().reshape(()) if per == "tensor" else (s.double()[:, None] if per == "row" else s.double()[None, :])
    # e4m3: 3 mantissa bits -> half-ulp 2^-4 relative for normals; subnormal step 2^-9 (times the scale)
    assert bool(((deq - t.double()).abs() <= 2.0**-4 * t.double().abs() + 2.0**-10 * sb + 1e-12).all())
    assert float(q.to(torch.float32).abs().max()) <= Q.FP8_MAX


def test_pack_layout():
    q = torch.tensor([[1, 15], [2, 0], [3, 7], [4, 8]], dtype=torch.uint8)  # K=4, N=2
    p = Q.pack_int4(q)
    assert p.shape == (2, 2) and p.dtype == torch.uint8
    assert p.tolist() == [[0x21, 0x0F], [0x43, 0x87]]  # low nibble = even k, high nibble = odd k
    assert torch.equal(Q.unpack_int4(p), q)
    r = torch.randint(0, 16, (64, 9), dtype=torch.uint8)
    assert torch.equal(Q.unpack_int4(Q.pack_int4(r)), r)


def test_all_zero_groups_and_columns():
    w = _rand((256, 8), seed=4)
    w[64:128, 3] = 0  # one zero group
    w[:, 5] = 0  # one zero column
    for sym in (True, False):
        p, s, z = Q.quantize_int4_weight(w, 64, sym)
        deq = Q.dequantize_int4_weight(p, s, z, 64)
        assert bool(torch.isfinite(s).all()) and bool((s > 0).all())
        assert bool((deq[64:128, 3] == 0).all()) and bool((deq[:, 5] == 0).all())
    qw, s8 = Q.quantize_int8_weight(w)
    assert float(s8[5]) == 1.0 and bool((qw[:, 5] == 0).all())
    xq, xs = Q.quantize_int8_activation(torch.zeros(2, 16))
    assert bool((xq == 0).all()) and bool((xs == 1).all())


# ------------------------------------------------------------------------------------------------ errors
def test_bad_group_and_packed_shapes():
    w = _rand((96, 8))
    with pytest.raises(ValueError, match="not divisible by the group size 64"):
        Q.quantize_int4_weight(w, 64)
    with pytest.raises(ValueError, match="even integer"):
        Q.quantize_int4_weight(_rand((99, 8)), 33)
    p, s, z = Q.quantize_int4_weight(_rand((128, 8)), 64, sym=False)
    with pytest.raises(ValueError, match="uint8"):
        Q.dequantize_int4_weight(p.to(torch.int8), s, z, 64)
    with pytest.raises(ValueError, match="scale must be"):
        Q.dequantize_int4_weight(p, s[:1], z, 64)
    with pytest.raises(ValueError, match="zero must be"):
        Q.dequantize_int4_weight(p, s, z.float(), 64)
    with pytest.raises(ValueError, match="not divisible"):
        Q.dequantize_int4_weight(p, s, z, 48)
    with pytest.raises(ValueError, match="even K"):
        Q.pack_int4(torch.zeros(3, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="0..15"):
        Q.pack_int4(torch.full((2, 2), 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="int8"):
        Q.dequantize_int8_weight(torch.zeros(4, 4, dtype=torch.uint8), torch.ones(4))
    with pytest.raises(ValueError, match="2-D"):
        Q.quantize_int8_weight(torch.zeros(4))
    with pytest.raises(ValueError, match="per must be"):
        Q.quantize_fp8(torch.ones(2, 2), "block")
    x = torch.randn(3, 128, dtype=torch.float16)
    with pytest.raises(ValueError, match="K % group|group must be"):
        TK.w4a16_gemm(x, p, s, z, group=48)
    with pytest.raises(ValueError, match="packed must be uint8"):
        TK.w4a16_gemm(x, p.view(torch.int8), s, z, group=64)
    with pytest.raises(ValueError, match="K="):
        TK.w8a16_gemm(x[:, :100], *Q.quantize_int8_weight(_rand((128, 8))))
    with pytest.raises(ValueError, match="K % group"):
        P.make_inputs(P.shape(M=1, N=8, K=96, scheme="w4a16", group=64), "fp16", 0, "cpu")


# ------------------------------------------------------------------------------------------------ problem
def test_problem_models_and_shapes():
    s = P.shape(M=16, N=14336, K=4096, scheme="w4a16", group=128, sym=True)
    assert P.flops(s) == 2 * 16 * 14336 * 4096
    anchors = 4096 * 14336 * (4 + 16 / 128) / 8 + 16 * 4096 * 2 + 16 * 14336 * 2
    assert math.isclose(P.min_bytes(s, "fp16"), anchors)
    assert fam.compute_dtype_for(s) == "bf16"
    assert fam.compute_dtype_for(P.shape(M=256, N=64, K=64, scheme="w8a8")) == "int8"
    assert fam.compute_dtype_for(P.shape(M=256, N=64, K=64, scheme="fp8")) == "fp8"
    assert len(P.shapes) <= 20 and {sh["scheme"] for sh in P.shapes} == set(fam.SCHEMES)
    for sh in P.shapes + P.quick:
        assert P.parse_shape(str(sh)) == sh
    assert any(sh["N"] % 16 and sh["K"] % 16 for sh in P.quick)  # tile edges in both N and K
    # every scheme-specific variant declines other schemes with a reason
    own = {"triton_w8a16": "w8a16", "triton_w4a16": "w4a16", "triton_w8a8": "w8a8", "triton_fp8": "fp8",
           "cuda_v1_w8a16": "w8a16", "cuda_v2_w4a16": "w4a16", "cuda_v3_w8a8_dp4a": "w8a8",
           "cuda_v4_w4a16_gemv": "w4a16", "cuda_v5_w8a16_gemv": "w8a16", "cuda_v6_w4a16_mma": "w4a16",
           "cuda_v7_w4a16_marlin": "w4a16",
           "triton_w4a16_gemv": "w4a16", "triton_w8a16_gemv": "w8a16",
           "torch_int_mm": "w8a8", "torch_scaled_mm": "fp8"}
    assert set(own) | {"torch_bf16_dequant", "torch_dequant_matmul"} == set(P.variants)
    assert [v.name for v in P.variants.values() if v.baseline] == ["torch_bf16_dequant"]
    for name, scheme in own.items():
        other = "w8a8" if scheme != "w8a8" else "w4a16"
        reason = P.variants[name].skip_reason(P.shape(M=32, N=64, K=128, scheme=other), "fp16")
        assert reason and "scheme" in reason, (name, reason)


def test_inputs_carry_dequantized_baseline_weights():
    for sh in P.quick:
        inp = P.make_inputs(sh, "fp16", 1, "cpu")
        x, w = fam.dequantized(inp, sh)
        assert torch.allclose(inp["w_deq"].double(), w, rtol=1e-3, atol=1e-6)
        if sh["scheme"] == "fp8":
            assert inp["qw"].stride() == (1, sh["K"])  # column-major for _scaled_mm / fp8 MMA
        assert float(w.abs().sum()) > 0 and float(x.abs().sum()) > 0


# ------------------------------------------------------------------------------------------------ triton (interpreter)
TRITON = [v for v in P.variants.values() if v.backend == "triton"]
TORCH = [v for v in P.variants.values() if v.backend == "torch"]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", P.quick, ids=str)
def test_triton_and_torch_variants_quick(shape, dtype):
    ran = 0
    for v in TRITON + TORCH:
        reason = v.skip_reason(shape, dtype)
        if reason:
            if v.name in ("triton_w8a16", "triton_w4a16") and dtype == "bf16" and v.name.endswith(shape["scheme"]):
                assert reason == fam.BF16_DOT_REASON
            continue
        res = _run_variant(v, shape, dtype)
        assert res.ok, f"{v.name} {shape} {dtype}: {res.message}"
        ran += 1
    assert ran >= 1


@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("sym", [True, False])
def test_triton_split_k_zero_groups_extreme_scales(split_k, sym):
    """Split-K atomics, half the groups all-zero, column magnitudes from 1e-3 to 1e2: per-column relative error."""
    M, K, N, g = 5, 256, 72, 64
    x = _rand((M, K), seed=5).half()
    mag = torch.logspace(-3, 2, N)
    w = _rand((K, N), seed=6) * mag[None, :] / math.sqrt(K)
    w[0:64, :] = 0
    w[128:192, ::2] = 0
    p, s, z = Q.quantize_int4_weight(w, g, sym, scale_dtype=torch.float16)
    ref = x.double() @ Q.dequantize_int4_weight(p, s, z, g)
    y = TK.w4a16_gemm(x, p, s, z, g, split_k=split_k)
    col_err = (y.double() - ref).norm(dim=0) / ref.norm(dim=0)
    assert float(col_err.max()) < 2e-3, col_err
    qw, s8 = Q.quantize_int8_weight(w)
    ref8 = x.double() @ Q.dequantize_int8_weight(qw, s8)
    y8 = TK.w8a16_gemm(x, qw, s8, split_k=split_k)
    assert float(((y8.double() - ref8).norm(dim=0) / ref8.norm(dim=0)).max()) < 2e-3


def test_triton_w8a8_fp8_extreme_row_scales():
    M, K, N = 6, 128, 40
    x = _rand((M, K), seed=7) * torch.logspace(-3, 2, M)[:, None]
    w = _rand((K, N), seed=8) * torch.logspace(-3, 1, N)[None, :] / math.sqrt(K)
    xq, xs = Q.quantize_int8_activation(x)
    qw, ws = Q.quantize_int8_weight(w)
    ref = Q.dequantize_int8_activation(xq, xs) @ Q.dequantize_int8_weight(qw, ws)
    y = TK.w8a8_gemm(xq, xs, qw, ws, torch.float16)
    assert float(((y.double() - ref).abs() / ref.abs().clamp_min(1e-30)).median()) < 1e-3
    assert float(((y.double() - ref).norm(dim=1) / ref.norm(dim=1)).max()) < 2e-3
    if FP8 is not None:
        a, sa = Q.quantize_fp8(x, "row")
        b, sb = Q.quantize_fp8(w, "col")
        ref = Q.dequantize_fp8(a, sa, "row") @ Q.dequantize_fp8(b, sb, "col")
        y = TK.fp8_gemm(a, sa, b.t().contiguous().t(), sb, torch.float16)
        assert float(((y.double() - ref).norm(dim=1) / ref.norm(dim=1)).max()) < 2e-3


EDGE_SHAPES = [P.shape(M=5, N=80, K=256, scheme="w8a16"), P.shape(M=5, N=80, K=256, scheme="w4a16", group=64),
               P.shape(M=5, N=80, K=256, scheme="w4a16", group=128, sym=False),
               P.shape(M=20, N=80, K=256, scheme="w8a8"), P.shape(M=20, N=80, K=256, scheme="fp8")]


def _check_edge(v, shape, dtype, device):
    """All-zero groups and columns, column magnitudes 1e-3..10, row magnitudes 1e-2..10: elementwise error bound."""
    M, N, K = shape["M"], shape["N"], shape["K"]
    x = _rand((M, K), seed=11) * torch.logspace(-2, 1, M)[:, None]
    w = _rand((K, N), seed=12) * torch.logspace(-3, 1, N)[None, :]
    w[: K // 2, ::3] = 0  # whole groups of zeros (both group sizes)
    w[:, 1] = 0  # a zero output channel
    inputs = fam.inputs_from(x.to(device), w.to(device), shape, dtype)
    ref = P.reference(inputs, shape, dtype)["y"].cpu()
    if v.style == "out":
        out = {k: poison_(t) for k, t in P.make_outputs(shape, dtype, device).items()}
        v.fn(inputs, out, shape)
    else:
        out = v.fn(inputs, None, shape)
    y = out["y"].double().cpu()
    assert bool(torch.isfinite(y).all()), f"{v.name}: non-finite outputs"
    assert bool((y[:, 1] == 0).all()), f"{v.name}: zero channel gives {y[:, 1]}"
    # rounding bounds scale with sum_k |x||w| (not |y|: one element may cancel), per element, whatever the scales
    xd, wd = (t.cpu() for t in fam.dequantized(inputs, shape))
    bound = P.tol(dtype, v).rel * (xd.abs() @ wd.abs())
    worst = float(((y - ref).abs() / bound.clamp_min(1e-300)).max())
    assert worst <= 1.0, f"{v.name} {shape} {dtype}: error {worst:.3g}x the bound rel * (|x| @ |W|)"


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
def test_edge_data_cpu(shape, dtype):
    ran = 0
    for v in TRITON + TORCH:
        if v.skip_reason(shape, dtype) is None:
            _check_edge(v, shape, dtype, "cpu")
            ran += 1
    assert ran >= 1


# ------------------------------------------------------------------------------------------------ cuda compile
CUDA = [v for v in P.variants.values() if v.backend == "cuda"]


def _nvcc():
    from harness.cuda import nvcc_path

    return nvcc_path() is not None


@pytest.mark.skipif(not _nvcc(), reason="nvcc not found")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("variant", CUDA, ids=lambda v: v.name)
def test_cuda_compiles_without_spills(variant, dtype, arch):
    for name in variant.kernel_names(dtype):
        r = variant.source.resources(name, arch)
        assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, (name, arch, r)
        assert 0 < r["registers"] <= 255
        assert r["shared_bytes"] <= 48 * 1024


# ------------------------------------------------------------------------------------------------ decode GEMVs
GEMV_SHAPES = [P.shape(M=1, N=40, K=128, scheme="w4a16", group=64),  # N, K off every tile
               P.shape(M=3, N=72, K=384, scheme="w4a16", group=128, sym=False),
               P.shape(M=16, N=40, K=256, scheme="w4a16", group=64, sym=False),
               P.shape(M=3, N=41, K=131, scheme="w8a16"), P.shape(M=16, N=24, K=200, scheme="w8a16")]


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])  # no tl.dot: bf16 is right under the interpreter too
@pytest.mark.parametrize("shape", GEMV_SHAPES, ids=str)
def test_triton_gemv_irregular(shape, dtype):
    name = "triton_w4a16_gemv" if shape["scheme"] == "w4a16" else "triton_w8a16_gemv"
    v = P.variants[name]
    assert v.skip_reason(shape, dtype) is None
    res = _run_variant(v, shape, dtype)
    assert res.ok, res.message
    # forced uneven splits (fixed-order second pass), and a known-wrong call: the zero points dropped
    inputs = P.make_inputs(shape, dtype, 1, "cpu")
    ref = P.reference(inputs, shape, dtype)
    x, tol, exp = inputs["x"], P.tol(dtype, v), P.make_outputs(shape, dtype, "cpu")
    if shape["scheme"] == "w4a16":
        y = TK.w4a16_gemv(x, inputs["qw"], inputs["scale"], inputs.get("zero"), shape["group"], split_k=3)
        if "zero" in inputs:
            bad = TK.w4a16_gemv(x, inputs["qw"], inputs["scale"], None, shape["group"])
            assert not check_outputs({"y": bad}, ref, tol, exp).ok
    else:
        y = TK.w8a16_gemv(x, inputs["qw"], inputs["scale"], split_k=3)
        bad = TK.w8a16_gemv(x, inputs["qw"], torch.ones_like(inputs["scale"]))
        assert not check_outputs({"y": bad}, ref, tol, exp).ok
    assert check_outputs({"y": y}, ref, tol, exp).ok


def test_gemv_launch_fills_the_gpu():
    """The headline decode shapes launch >= 2 CTAs per SM (132 SMs) with every k-slice holding one 64-k task."""
    for k, n in ((4096, 14336), (8192, 28672), (14336, 4096)):
        lc = fam.gemv_launch(1, n, k)
        gx, split, gz = lc["grid"]
        assert gx * split * gz >= 2 * 132, (k, n, lc)
        assert split * fam._GEMV_SLICES >= k // fam._GEMV_TASK_K > (split - 1) * fam._GEMV_SLICES
    assert fam.gemv_launch(3, 48, 256)["grid"] == (1, 1, 2) and fam.gemv_launch(1, 48, 1152)["SPLIT"] == 2


def test_headline_has_targets_and_baseline():
    head = {(s["scheme"], s["M"], s["K"], s["N"], s["sym"]) for s, dts in P.headline if "bf16" in dts}
    for want in [("w4a16", 1, 4096, 14336, True), ("w4a16", 1, 8192, 28672, True), ("w4a16", 1, 4096, 14336, False),
                 ("w4a16", 16, 4096, 14336, True), ("w4a16", 256, 4096, 14336, True),
                 ("w8a16", 1, 4096, 14336, True), ("w8a16", 1, 8192, 28672, True)]:
        assert want in head, want
    base = P.variants["torch_bf16_dequant"]
    for s, _ in P.headline:
        assert base.skip_reason(s, "bf16") is None
        if s["scheme"] in ("w4a16", "w8a16") and s["M"] <= 16:
            assert P.variants[f"cuda_v{4 if s['scheme'] == 'w4a16' else 5}_{s['scheme']}_gemv"].skip_reason(
                s, "bf16") is None, s


def test_extra_metrics_copy_bandwidth(monkeypatch):
    s = P.shape(M=1, N=14336, K=4096, scheme="w4a16", group=128, sym=True)
    monkeypatch.setattr(fam, "_COPY_BPS", [None])
    assert fam.extra_metrics(s, 0.01) == {}  # no measured copy rate: nothing claimed
    monkeypatch.setattr(fam, "_COPY_BPS", [3.0e12])
    m = fam.extra_metrics(s, 0.0201)
    nbytes = P.min_bytes(s, "bf16")
    assert math.isclose(m["floor_us_copy"], nbytes / 3.0e12 * 1e6) and 10.0 < m["floor_us_copy"] < 10.3
    assert math.isclose(m["pct_of_copy_bw"], 100 * nbytes / 0.0201e-3 / 3.0e12) and 49 < m["pct_of_copy_bw"] < 51


# CUDA v4-v7 run on the CPU interpreter (tests/test_ptx80_rungs.py: quick and dedicated shapes, the family's judge).
# The lane-level numpy emulation that stood in for them (tests/qgemm_emulation.py) is retired; what is left here is what
# the interpreter cannot run (a former design, which has no source any more) and the GPU checks against the interpreter.
EMU_CASES = [P.shape(M=3, N=48, K=256, scheme="w4a16", group=64, sym=False),  # split 3 of 4 tasks: one empty
             P.shape(M=1, N=32, K=384, scheme="w4a16", group=128, sym=True),
             P.shape(M=3, N=48, K=200, scheme="w8a16"), P.shape(M=1, N=32, K=1100, scheme="w8a16"),
             P.shape(M=2, N=32, K=384, scheme="w4a16", group=64, sym=False, outliers=1),
             P.shape(M=2, N=32, K=256, scheme="w8a16", outliers=1)]


def _interpreted(variant, inputs: dict, shape, dtype: str, sms: int | None = None) -> torch.Tensor:
    """``variant``'s launcher on the CPU interpreter (CPU copies of ``inputs``; ``sms``: the SM count the launcher
    sizes split-K for, as on that GPU): y. Built for the W4A16/W8A16 rungs' kernels only, as tests/test_ptx80_rungs.py
    builds them (the same g++ build)."""
    import unittest.mock

    from harness import interp
    from tests.test_ptx80_rungs import RUNGS, rung_kernels

    src, names = rung_kernels("quant_gemm", RUNGS["quant_gemm"])
    orig = interp.kernel_list
    cpu = {k: t.cpu() for k, t in inputs.items()}
    out = P.make_outputs(shape, dtype, "cpu")
    with unittest.mock.patch.dict(os.environ, {"WB_CUDA_INTERPRET": "1"}), \
            unittest.mock.patch.object(fam, "_MMA_SMS", sms or fam._MMA_SMS), \
            unittest.mock.patch.object(src, "instantiate", list(names)), \
            unittest.mock.patch.object(interp, "kernel_list", lambda s: list(names) if s is src else orig(s)):
        variant.fn(cpu, out, shape)
    return out["y"]


def _old_v4_partials(inputs: dict, shape, dtype: str) -> torch.Tensor:
    """y of v4's former design, as its header describes it: (q - z) . x over each 8 k in the activation dtype (one
    rounding per hfma2 step), the 8-k partials summed in fp32 and scaled per group. Only a model of that arithmetic
    (the design has no source left to interpret), kept to show why it was replaced."""
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    x = inputs["x"].to(dt).double()
    K = x.shape[1]
    q = Q.unpack_int4(inputs["qw"]).double() - 8.0  # symmetric: z = 8
    s = inputs["scale"].double().repeat_interleave(shape["group"], 0)[:K]
    acc = torch.zeros(x.shape[0], q.shape[1], dtype=torch.float64)
    for k0 in range(0, K, 8):
        part = torch.zeros_like(acc).to(dt)
        for k in range(k0, k0 + 8):  # hfma2 chain: exact product and sum, one rounding to the activation dtype
            part = (part.double() + x[:, k:k + 1] * q[k]).to(dt)
        acc = (acc + part.double() * s[k0]).float().double()  # the group scale: one fp32 FMA per 8-k partial
    return acc


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_v4_outlier_block_stays_finite(dtype, monkeypatch):
    """Eight consecutive activation channels of magnitude 1500 against weights at the top of their group (q - z = 7):
    one 8-k partial is 8 x 7 x 1500 = 84000, past fp16's 65504. v4 itself (on the CPU interpreter) accumulates in
    fp32: y stays finite and within the tolerance. The former design (8 products per hfma2 chain in the activation
    dtype, a model of its arithmetic) gives inf in fp16, and in bf16 (8 roundings at 8 bits) twice the error."""
    monkeypatch.setenv("WB_CUDA_INTERPRET", "1")
    shape = P.shape(M=2, N=32, K=256, scheme="w4a16", group=64, sym=True)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 256, generator=g)
    x[:, 8:16] = 1500.0
    w = torch.randn(256, 32, generator=g) * 0.01
    w[8:16, :16] = 0.7  # the group maximum: q - 8 = 7
    inputs = fam.inputs_from(x, w, shape, dtype)
    ref = P.reference(inputs, shape, dtype)
    exp = P.make_outputs(shape, dtype, "cpu")
    v = P.variants["cuda_v4_w4a16_gemv"]
    got = {"y": _interpreted(v, inputs, shape, dtype)}
    assert torch.isfinite(got["y"]).all()
    res = check_outputs(got, ref, P.tol(dtype, v), exp)
    assert res.ok, res.message
    if dtype == "fp16":
        old = {"y": _old_v4_partials(inputs, shape, dtype).to(torch.float16)}
        assert not torch.isfinite(old["y"]).all()
        assert not check_outputs(old, ref, P.tol(dtype, v), exp).ok
    else:  # bf16 stays finite either way; its 8 roundings at 8 bits per partial show on ordinary data
        shape = P.shape(M=4, N=64, K=512, scheme="w4a16", group=64, sym=True)
        inputs = P.make_inputs(shape, dtype, 7, "cpu")
        r = P.reference(inputs, shape, dtype)["y"].double()
        err = {"fp32 partials (v4)": float((_interpreted(v, inputs, shape, dtype).double() - r).norm() / r.norm()),
               "bf16 partials (former)": float((_old_v4_partials(inputs, shape, dtype).to(torch.bfloat16).double()
                                                - r).norm() / r.norm())}
        assert err["fp32 partials (v4)"] < err["bf16 partials (former)"] / 1.5, err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", EMU_CASES, ids=str)
def test_gpu_gemv_bitwise_equals_interpreter(shape, dtype):
    """On a GPU v4 / v5 reproduce the CPU interpreter's run of the same source bit for bit (the same fmaf order, the
    same split; IEEE single-rounding ops on both sides), run twice so the tickets must have been re-armed."""
    v = P.variants["cuda_v4_w4a16_gemv" if shape["scheme"] == "w4a16" else "cuda_v5_w8a16_gemv"]
    inputs = P.make_inputs(shape, dtype, 2, "cuda")
    out = P.make_outputs(shape, dtype, "cuda")
    v.fn(inputs, out, shape)
    v.fn(inputs, out, shape)
    assert torch.equal(out["y"].cpu(), _interpreted(v, inputs, shape, dtype)), "GPU result differs from the CPU's"


# ------------------------------------------------------------------------------------------------ gpu
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", P.quick, ids=str)
@pytest.mark.parametrize("variant", list(P.variants.values()), ids=lambda v: v.name)
def test_gpu_every_variant(variant, shape, dtype):
    reason = variant.skip_reason(shape, dtype)
    if reason:
        pytest.skip(reason)
    res = _run_variant(variant, shape, dtype, device="cuda")
    assert res.ok, res.message


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("variant", list(P.variants.values()), ids=lambda v: v.name)
def test_gpu_edge_data(variant, shape, dtype):
    reason = variant.skip_reason(shape, dtype)
    if reason:
        pytest.skip(reason)
    _check_edge(variant, shape, dtype, "cuda")


# ------------------------------------------------------------------------------------------------ v6 (mma.sync)
# (shape, split, MT): M tails (3, 20 rows: partial m16 tiles, 2 row blocks), N tails (48, 80, 144: warps and lanes
# past N inside a 512-column CTA), K splits that do not divide the k16 steps (one split empty), g16 .. g128, asym.
V6_CASES = [(P.shape(M=3, N=48, K=192, scheme="w4a16", group=64, sym=False), 5, 1),
            (P.shape(M=20, N=144, K=128, scheme="w4a16", group=32, sym=True), 1, 1),
            (P.shape(M=17, N=80, K=256, scheme="w4a16", group=128, sym=False), 3, 2),
            (P.shape(M=1, N=16, K=64, scheme="w4a16", group=16, sym=True), 2, 1),
            (P.shape(M=17, N=48, K=256, scheme="w4a16", group=64, sym=False, outliers=1), 2, 2)]  # outlier x


def test_v6_launch_two_waves():
    for m, mt in ((16, 1), (256, 2)):
        lc = fam.mma_launch(m, 14336, 4096)
        gx, split, gz = lc["grid"]
        assert lc["MT"] == mt and gx * split * gz >= 2 * 132, lc
        per = -(-(4096 // 16) // split)
        assert (split - 1) * per < 4096 // 16  # no empty split
    assert fam.mma_launch(16, 14336, 4096)["SPLIT"] > 1 and fam.mma_launch(4096, 14336, 4096)["SPLIT"] == 1
    assert fam.mma_launch(1, 16, 64)["SPLIT"] == 1  # 4 k16 steps: no split below 4 steps each


def test_v6_skips_unsupported():
    v = P.variants["cuda_v6_w4a16_mma"]
    assert "N % 16" in v.skip_reason(P.shape(M=16, N=40, K=128, scheme="w4a16", group=64), "fp16")
    assert "group % 16" in v.skip_reason(P.shape(M=16, N=48, K=120, scheme="w4a16", group=40), "fp16")
    assert v.skip_reason(P.shape(M=16, N=48, K=128, scheme="w8a16"), "fp16")


def _gpu_vs_interpreter(variant: str, case, dtype: str) -> None:
    """On a GPU: the rung equals the CPU interpreter's run of the same source (split-K sized for this GPU's SM count)
    to fp32 accumulation error (the mma.sync model sums in k order, the HMMA in its own), run twice so the split-K
    tickets must have been re-armed."""
    shape = case[0]
    v = P.variants[variant]
    inputs = P.make_inputs(shape, dtype, 4, "cuda")
    out = P.make_outputs(shape, dtype, "cuda")
    v.fn(inputs, out, shape)
    v.fn(inputs, out, shape)
    y = _interpreted(v, inputs, shape, dtype, torch.cuda.get_device_properties(0).multi_processor_count)
    ulp = 2.0 ** (-10 if dtype == "fp16" else -7)
    got, want = out["y"].cpu().double(), y.double()
    assert bool(((got - want).abs() <= ulp * want.abs() + 1e-6).all()), "GPU result differs from the CPU's"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("case", V6_CASES, ids=lambda c: f"{c[0]}-split{c[1]}-mt{c[2]}")
def test_gpu_v6_matches_interpreter(case, dtype):
    _gpu_vs_interpreter("cuda_v6_w4a16_mma", case, dtype)


# ------------------------------------------------------------------------------------------------ v7 (marlin)
# (shape, split, MT): M tails (3, 20, 37 rows in 16 / 32 / 64-row CTAs), N tails (48, 272: lanes past N, a second
# 256-column CTA with 16 live columns), K tails (208: a last 64-k tile with one k16 step), groups that straddle a
# 64-k tile (g16, g32, g48: 2-4 scale slots per tile), 5 k tiles (a ring of 4 stages wraps), splits that do not divide
# the k tiles (split 3 of 4 tiles: one empty split), sym and asym, MT = 1 / 2 / 4.
V7_CASES = [(P.shape(M=3, N=48, K=320, scheme="w4a16", group=32, sym=False), 1, 1),
            (P.shape(M=20, N=272, K=208, scheme="w4a16", group=16, sym=True), 2, 2),
            (P.shape(M=37, N=64, K=256, scheme="w4a16", group=128, sym=False), 3, 4),
            (P.shape(M=1, N=16, K=192, scheme="w4a16", group=48, sym=True), 2, 1),
            (P.shape(M=33, N=48, K=256, scheme="w4a16", group=64, sym=True, outliers=1), 2, 4)]  # outlier x
def test_v7_launch_and_smem():
    """M = 16 makes >= 2 waves of CTAs on 132 SMs at both headline weights (split-K, no empty split); at M = 256 the
    grid model keeps one split (see v7_launch); the dynamic shared memory matches the kernel's stage layout."""
    # the busiest scheduler's warp-work: 224 CTAs -> 2 on the busiest SM x 8 warps / 4 = 4.0; split 4 -> 7 quarter
    # CTAs x 2 warps per scheduler = 3.5, plus 117 MB of partial traffic; split 2 / 3 -> 4.0 plus partials
    cost = [fam.v7_grid_cost(256, 14336, 4096, 4, s) for s in (1, 2, 3, 4)]
    assert cost[0] == 4.0 and min(cost[1:]) > 4.0 and cost[3] - (7 * 2 / 4) > 2.0, cost
    assert fam.v7_grid_cost(4096, 14336, 4096, 4, 1) == -(-64 * 56 // 132) * 2
    for k, n in ((4096, 14336), (8192, 28672)):
        lc = fam.v7_launch(16, n, k)
        gm, split, gn = lc["grid"]
        assert lc["MT"] == 1 and gm * split * gn >= 2 * 132 and split > 1, lc
        ktiles = k // 64
        assert (split - 1) * -(-ktiles // split) < ktiles  # no empty split
        lc = fam.v7_launch(256, n, k)
        assert lc["MT"] == 4 and lc["SPLIT"] == 1 and math.prod(lc["grid"]) >= 1.5 * 132, lc
    assert [fam.v7_launch(m, 14336, 4096)["MT"] for m in (1, 16, 17, 32, 33, 256)] == [1, 1, 2, 2, 4, 4]
    assert fam.v7_launch(1, 16, 64)["SPLIT"] == 1  # one k tile: nothing to split
    # 4 stages x (x tile + 32 padded packed rows of 288 B + 4 scale and 4 zero slots of 256 columns)
    assert [fam.v7_smem_bytes(mt) for mt in (1, 2, 4)] == [57344, 65536, 81920]
    assert 2 * (fam.v7_smem_bytes(4) + 1024) <= 228 * 1024  # 2 CTAs per H100/H200 SM at M = 256


def test_v7_skips_unsupported():
    v = P.variants["cuda_v7_w4a16_marlin"]
    assert v.description.startswith("(CPU-verified, GPU-pending)") and v.ladder == 7
    assert "N % 16" in v.skip_reason(P.shape(M=16, N=40, K=128, scheme="w4a16", group=64), "fp16")
    assert "group % 16" in v.skip_reason(P.shape(M=16, N=48, K=120, scheme="w4a16", group=40), "fp16")
    assert v.skip_reason(P.shape(M=16, N=48, K=128, scheme="w8a16"), "fp16")
    assert v.skip_reason(P.shape(M=256, N=14336, K=4096, scheme="w4a16", group=128, sym=False), "bf16") is None


@pytest.mark.skipif(not _nvcc(), reason="nvcc not found")
def test_v7_sass_has_hmma_ldgsts_ldsm():
    """sm_90a only (the sm_80 build is covered by test_cuda_compiles_without_spills): every v7 instantiation has
    HMMA.16816, cp.async (LDGSTS), ldmatrix (LDSM), no local memory, and MT x 16 HMMAs per 64-k tile."""
    from harness import xray
    from harness.cuda import normalize_kernel_name

    if xray.tool("cuobjdump") is None:
        pytest.skip("cuobjdump not found")
    v = P.variants["cuda_v7_w4a16_marlin"]
    for dtype in ("fp16", "bf16"):
        for name, mt in zip(v.kernel_names(dtype), (1, 2, 4)):
            r = v.source.resources(name, "sm_90a")
            assert r["spill_store_bytes"] == r["spill_load_bytes"] == r["stack_bytes"] == 0, (name, r)
            assert r["registers"] <= 128, (name, r)  # 2 CTAs of 256 threads per SM at MT = 4
            b = v.source.build_for(name, "sm_90a")
            ops = xray.sass_opcodes(b.cubin)[b.mangled[normalize_kernel_name(name)]]
            hmma = [o for o in ops if o.startswith("HMMA.16816.F32")]
            assert len(hmma) == 16 * mt, (name, len(hmma))
            assert any(o.startswith("LDGSTS") for o in ops) and any(o.startswith("LDSM") for o in ops), name
            assert not any(o.startswith(("LDL", "STL")) for o in ops), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("case", V7_CASES, ids=lambda c: f"{c[0]}-split{c[1]}-mt{c[2]}")
def test_gpu_v7_matches_interpreter(case, dtype):
    _gpu_vs_interpreter("cuda_v7_w4a16_marlin", case, dtype)
