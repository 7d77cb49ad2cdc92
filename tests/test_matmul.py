"""matmul family: problem definition, precision guards (TF32 / bf16-rounded inputs must fail fp32), Triton kernels
under the interpreter at the quick shapes, and every variant x dtype x quick shape on a GPU (marked ``gpu``)."""

from __future__ import annotations

import pytest
import torch

from harness.check import check_outputs, poison_
from harness.registry import derived_tolerance, get_problem, interpreter

P = get_problem("matmul")
CPU = torch.device("cpu")
QUICK = [str(s) for s in P.quick]


def _run(variant, shape, dtype, device, seed=0):
    """Harness protocol in miniature: poisoned outputs for style="out", returned outputs for style="return"."""
    inputs = P.make_inputs(shape, dtype, seed, device)
    ref = P.reference(inputs, shape, dtype)
    expected = P.make_outputs(shape, dtype, device)
    if variant.style == "out":
        out = {k: poison_(v) for k, v in P.make_outputs(shape, dtype, device).items()}
        assert variant.fn(inputs, out, shape) is None
    else:
        out = variant.fn(inputs, None, shape)
    return check_outputs(out, ref, P.tol(dtype, variant, shape), expected)


def _tf32_round(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> nearest TF32 value (10 explicit mantissa bits), kept in fp32: what a TF32 tensor core multiplies."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


# ------------------------------------------------------------------------------------------------ problem
def test_registry_entries():
    assert P.dims == ("M", "N", "K") and P.dtypes == ("fp32", "fp16", "bf16", "fp8")
    for name in ("triton_matmul", "triton_matmul_persistent", "triton_matmul_tf32", "triton_matmul_fp8_kmajor",
                 "torch_matmul",
                 "torch_fp32_ieee", "torch_fp32_tf32", "torch_scaled_mm", "torch_scaled_mm_relayout"):
        assert name in P.variants, name
    # exactly one speed-up baseline per dtype
    main = {"fp32": "torch_fp32_ieee", "fp16": "torch_matmul", "bf16": "torch_matmul", "fp8": "torch_scaled_mm"}
    for dt, name in main.items():
        assert [v.name for v in P.variants.values() if v.baseline and dt in v.dtypes] == [name], dt
    for v in P.variants.values():
        assert v.description, v.name
        if v.backend == "torch":
            assert v.style == "return", v.name
        uses_tf32 = "tf32" in v.name
        assert uses_tf32 == v.description.startswith("tf32:"), v.name  # labelled in name and description alike
        # and only they are checked at tf32's roundoff (declared, and written into every record's tolerance)
        assert uses_tf32 == (v.compute_dtype == "tf32"), v.name
        assert uses_tf32 == (P.tol_for("fp32", P.quick[0], v)[1]["precision"] == "tf32"), v.name
    assert len(P.shapes) <= 10 and len(P.quick) <= 5
    assert str(P.parse_shape("4096x4096x14336")) == "M=4096,N=4096,K=14336"


def test_flops_bytes():
    s = P.shape(M=2, N=3, K=5)
    assert P.flops(s) == 60
    assert P.min_bytes(s, "fp16") == (10 + 15 + 6) * 2
    assert P.min_bytes(s, "fp32") == (10 + 15 + 6) * 4
    assert P.min_bytes(s, "fp8") == (10 + 15) * 1 + 6 * 2  # bf16 output


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16", "fp8"])
def test_reference_and_inputs(dtype):
    s = P.shape(M=17, N=33, K=65)
    x = P.make_inputs(s, dtype, 0, CPU)
    y = P.make_inputs(s, dtype, 1, CPU)
    assert x["a"].shape == (17, 65) and x["b"].shape == (65, 33) and x["a"].is_contiguous() and x["b"].is_contiguous()
    assert not torch.equal(x["a"].float(), y["a"].float())  # fresh data per seed
    assert x["a"].float().abs().sum() > 0
    ref = P.reference(x, s, dtype)["c"]
    assert ref.dtype == torch.float64 and ref.shape == (17, 33)
    a, b = x["a"].double(), x["b"].double()
    if dtype == "fp8":
        assert x["a"].dtype == torch.float8_e4m3fn and x["a_scale"].dtype == torch.float32 and x["a_scale"].dim() == 0
        assert float(x["a"].float().abs().max()) == 448.0  # the amax maps to e4m3's largest value
        a, b = a * float(x["a_scale"]), b * float(x["b_scale"])
        assert P.make_outputs(s, dtype, CPU)["c"].dtype == torch.bfloat16
        # the pre-arranged weight layout: the same B, K-major (B^T contiguous), made with the inputs
        assert x["b_t"].shape == (33, 65) and x["b_t"].is_contiguous() and torch.equal(x["b_t"].t(), x["b"])
    torch.testing.assert_close(ref, a @ b, rtol=1e-12, atol=1e-12)
    assert 0.3 < float(ref.std()) < 3.0  # C ~ N(0, 1) whatever K is


# ------------------------------------------------------------------------------------------------ precision guards
def _fp32_case(K=4096):
    s = P.shape(M=48, N=64, K=K)
    x = P.make_inputs(s, "fp32", 0, CPU)
    return s, x, P.reference(x, s, "fp32")


def test_exact_fp32_passes_default():
    s, x, ref = _fp32_case()
    res = check_outputs({"c": (x["a"].double() @ x["b"].double()).float()}, ref, P.tol("fp32", shape=s))
    assert res.ok, res.message


def test_tf32_rejected_by_default_fp32_tolerance():
    s, x, ref = _fp32_case()
    c = (_tf32_round(x["a"]).double() @ _tf32_round(x["b"]).double()).float()
    assert not check_outputs({"c": c}, ref, derived_tolerance("fp32", s["K"])), "TF32-rounded inputs must fail fp32"
    assert not check_outputs({"c": c}, ref, P.tol("fp32", shape=s))
    res = check_outputs({"c": c}, ref, P.tol("fp32", P.variants["triton_matmul_tf32"], s))
    assert res.ok, res.message  # ... and pass the tf32 variants' own tolerance
    assert 5e-5 < res.rel_err < 2e-3


def test_low_precision_fp32_variant_rejected():
    """A 'wrong' fp32 variant (inputs rounded to bf16 / fp16, then upcast) must fail the default fp32 tolerance."""
    s, x, ref = _fp32_case()
    for low in (torch.bfloat16, torch.float16):
        c = (x["a"].to(low).double() @ x["b"].to(low).double()).float()
        res = check_outputs({"c": c}, ref, P.tol("fp32", shape=s))
        assert not res.ok, low
    c = torch.matmul(x["a"].half(), x["b"].half()).float()  # fp16 matmul then upcast
    assert not check_outputs({"c": c}, ref, P.tol("fp32", shape=s))
    assert not check_outputs({"c": torch.zeros_like(c)}, ref, P.tol("fp32", shape=s))


# ------------------------------------------------------------------------------------------------ variants (CPU)
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", QUICK)
def test_torch_baselines_cpu(shape, dtype):
    s = P.parse_shape(shape)
    for v in P.variants.values():
        if v.backend == "torch" and dtype in v.dtypes:
            res = _run(v, s, dtype, CPU)
            assert res.ok, (v.name, res.message)


def test_baseline_skip_reasons_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    s = P.parse_shape("64x48x100")
    reason = P.variants["torch_scaled_mm"].skip_reason(s, "fp8")
    assert reason and "GPU" in reason
    assert P.variants["torch_matmul"].skip_reason(s, "fp32")  # not its dtype


needs_interp = pytest.mark.skipif(not interpreter(), reason="runs the Triton interpreter (no GPU here)")
TRITON = ["triton_matmul", "triton_matmul_persistent"]


@needs_interp
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("shape", QUICK)
@pytest.mark.parametrize("name", TRITON)
def test_triton_interpreter(name, shape, dtype):
    s = P.parse_shape(shape)
    v = P.variants[name]
    assert v.skip_reason(s, dtype) is None
    res = _run(v, s, dtype, CPU)
    assert res.ok, res.message


@needs_interp
@pytest.mark.parametrize("name", [*TRITON, "triton_matmul_tf32", "triton_matmul_fp8_kmajor"])
def test_triton_interpreter_fp8_and_tf32(name):
    s = P.parse_shape("17x33x65")
    v = P.variants[name]
    dtype = "fp32" if name.endswith("tf32") else "fp8"
    assert v.skip_reason(s, dtype) is None
    res = _run(v, s, dtype, CPU)
    assert res.ok, res.message


@needs_interp
def test_triton_bf16_skipped_under_interpreter():
    for name in [*TRITON]:
        assert P.variants[name].skip_reason(P.quick[0], "bf16") == "bf16 tl.dot is wrong under TRITON_INTERPRET; " \
                                                                  "checked on GPU"


@needs_interp
def test_triton_launcher_contract():
    from kernels.matmul import matmul, matmul_persistent

    a, b = torch.randn(5, 40), torch.randn(40, 7)
    for f in (matmul, matmul_persistent):
        c = f(a, b)  # allocates out
        assert c.shape == (5, 7) and c.dtype == torch.float32
        torch.testing.assert_close(c, a @ b, rtol=1e-5, atol=1e-5)
        c2 = f(a.t().contiguous().t(), b)  # column-major A: strides are honoured
        torch.testing.assert_close(c2, c, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        matmul(a, torch.randn(41, 7))
    with pytest.raises(ValueError):
        matmul(a, b, input_precision="tf32x3")
    with pytest.raises(ValueError):
        matmul(a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn))  # fp8 without scales


# ------------------------------------------------------------------------------------------------ GPU
GPU_CASES = [(v, dt, sh) for v in sorted(P.variants) for dt in P.dtypes for sh in QUICK]


@pytest.mark.gpu
@pytest.mark.parametrize("name,dtype,shape", GPU_CASES)
def test_variant_gpu(name, dtype, shape, monkeypatch):
    import kernels.matmul as km

    monkeypatch.setattr(km, "TUNE", False)  # one config per tile class: correctness, not speed (saves compiles)
    v = P.variants[name]
    s = P.parse_shape(shape)
    reason = v.skip_reason(s, dtype)
    if reason:
        pytest.skip(reason)
    res = _run(v, s, dtype, torch.device("cuda"))
    assert res.ok, res.message
