"""Softmax family: the reference, every Triton variant under the interpreter (CPU), the checker rejecting known-wrong
kernels, and softmax.cu compiling for sm_80/sm_90 without spills. The GPU test (marked ``gpu``) runs every variant x
dtype x quick shape on CUDA.
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from harness.check import check_outputs, poison_
from harness.cuda import nvcc_path
from harness.families import softmax as fam
from harness.registry import DTYPES, Shape

P = fam.PROBLEM
CPU = torch.device("cpu")
TRITON_VARIANTS = [n for n, v in P.variants.items() if v.backend == "triton"]
CUDA_VARIANTS = [n for n, v in P.variants.items() if v.backend == "cuda"]
needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc not found")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run_variant(name: str, shape: Shape, dtype: str, seed: int = 0, device=CPU):
    """Inputs, poisoned outputs, the variant, the check against the float64 reference: as the runner does it."""
    v = P.variants[name]
    inputs = P.make_inputs(shape, dtype, seed, device)
    if v.style == "return":
        outs = v.fn(inputs, None, shape)
    else:
        outs = {k: poison_(t) for k, t in P.make_outputs(shape, dtype, device).items()}
        assert v.fn(inputs, outs, shape) is None
    ref = P.reference(inputs, shape, dtype)
    return check_outputs(outs, ref, P.tol(dtype, v, shape), P.make_outputs(shape, dtype, CPU))


def check_fn(fn, shape: Shape, dtype: str = "fp32", seed: int = 0):
    """Run a candidate fn(x, y) on the family's inputs with a poisoned y and check it."""
    inputs = P.make_inputs(shape, dtype, seed, CPU)
    y = poison_(P.make_outputs(shape, dtype, CPU)["y"])
    fn(inputs["x"], y)
    return check_outputs({"y": y}, P.reference(inputs, shape, dtype), P.tol(dtype, shape=shape))


# ------------------------------------------------------------------------------------------------ problem
def test_reference_matches_torch_float64():
    for shape in P.quick:
        x = P.make_inputs(shape, "fp32", 3, CPU)["x"]
        ref = P.reference({"x": x}, shape, "fp32")["y"]
        assert ref.dtype == torch.float64 and ref.shape == (shape.M, shape.N)
        torch.testing.assert_close(ref, torch.softmax(x.double(), -1), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(ref.sum(-1), torch.ones(shape.M, dtype=torch.float64))


def test_inputs_random_per_seed_and_large_magnitude():
    s = Shape(M=33, N=1000)
    a, b = P.make_inputs(s, "fp32", 0, CPU)["x"], P.make_inputs(s, "fp32", 1, CPU)["x"]
    assert torch.equal(a, P.make_inputs(s, "fp32", 0, CPU)["x"])
    assert not torch.equal(a, b)
    assert (a != 0).float().mean() > 0.99
    assert a.abs().amax(-1)[0] > 88.8  # row 0 is shifted: exp() overflows fp32 without the max subtraction
    assert (a.amax(-1) > 88.8).any() and (a.amax(-1) < -80).any()  # both overflow and 0/0 underflow rows
    assert P.make_inputs(Shape(M=1, N=1), "fp16", 0, CPU)["x"].item() > 88.8
    for dt in ("fp16", "bf16"):
        x = P.make_inputs(s, dt, 0, CPU)["x"]
        assert x.dtype == DTYPES[dt] and torch.isfinite(x).all()


def test_models_and_shapes():
    s = Shape(M=4096, N=1024)
    assert P.flops(s) == 5 * 4096 * 1024
    assert P.min_bytes(s, "fp32") == 2 * 4096 * 1024 * 4 and P.min_bytes(s, "bf16") == 2 * 4096 * 1024 * 2
    assert P.throughput_unit == "GB/s"
    keys = {str(s) for s in P.shapes}
    assert {"M=4096,N=32768", "M=1023,N=3001", "M=64,N=262144", "M=1,N=1", "M=4096,N=1000"} <= keys
    assert all(v.description for v in P.variants.values())
    assert [P.variants[n].ladder for n in CUDA_VARIANTS] == [1, 2, 3]
    assert [v.name for v in P.variants.values() if v.baseline] == ["torch_softmax"]
    fused = P.variants["triton_fused"]
    assert fused.skip_reason(Shape(M=64, N=262144), "fp32") is not None
    assert fused.skip_reason(Shape(M=4096, N=32768), "bf16") is None


# ------------------------------------------------------------------------------------------------ Triton (interpreter)
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("name", TRITON_VARIANTS + ["torch_softmax", "torch_naive"])
def test_variant_quick_shapes(name, dtype):
    for shape in P.quick:
        if P.variants[name].skip_reason(shape, dtype):
            continue
        res = run_variant(name, shape, dtype, seed=1)
        assert res.ok, f"{name} {dtype} {shape}: {res.message}"


@pytest.mark.parametrize("block_n", [16, 64])
def test_online_many_tiles(block_n):
    from kernels.softmax import softmax_online

    for shape in (Shape(M=7, N=33), Shape(M=3, N=1000)):
        res = check_fn(lambda x, y: softmax_online(x, out=y, block_n=block_n), shape)
        assert res.ok, res.message


def test_launcher_allocates_and_dispatches():
    from kernels.softmax import softmax

    x = torch.randn(5, 77)
    for variant in ("auto", "fused", "online"):
        torch.testing.assert_close(softmax(x, variant=variant), torch.softmax(x, -1))
    with pytest.raises(ValueError):
        softmax(x, variant="nope")


# ------------------------------------------------------------------------------------------------ known-wrong kernels
@triton.jit
def _softmax_off_by_one_kernel(x_ptr, y_ptr, N, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    # BUG: `cols < N - 1` drops the last element of every row from the max and the sum (and writes 0 there): an
    # irregular width (33, not a multiple of the tile) makes that element 1/33 of the row's mass
    x = tl.load(x_ptr + row * N + cols, mask=cols < N - 1, other=-float("inf")).to(tl.float32)
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + row * N + cols, (e / tl.sum(e, axis=0)).to(y_ptr.dtype.element_ty), mask=cols < N)


@triton.jit
def _softmax_no_max_kernel(x_ptr, y_ptr, N, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    x = tl.load(x_ptr + row * N + cols, mask=cols < N, other=-float("inf")).to(tl.float32)
    e = tl.exp(x)  # BUG: no max subtraction: exp(90) overflows fp32, exp(-150) underflows to 0 -> 0/0
    tl.store(y_ptr + row * N + cols, (e / tl.sum(e, axis=0)).to(y_ptr.dtype.element_ty), mask=cols < N)


def _launch_rowwise(kernel):
    def fn(x, y):
        kernel[(x.shape[0],)](x, y, x.shape[1], BLOCK_N=triton.next_power_of_2(x.shape[1]))

    return fn


def test_rejects_all_zeros():
    res = check_fn(lambda x, y: y.zero_(), Shape(M=7, N=33))
    assert not res.ok and "outside" in res.message


def test_rejects_unwritten_output():
    res = check_fn(lambda x, y: None, Shape(M=7, N=33))
    assert not res.ok and "NaN" in res.message


def test_rejects_partially_written_output():
    res = check_fn(lambda x, y: y[:, :-1].copy_(torch.softmax(x.double(), -1)[:, :-1]), Shape(M=7, N=33))
    assert not res.ok and "NaN" in res.message


def test_rejects_off_by_one_mask():
    res = check_fn(_launch_rowwise(_softmax_off_by_one_kernel), Shape(M=7, N=33))
    assert not res.ok, "an off-by-one mask passed the check"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_rejects_missing_max_subtraction():
    fn = _launch_rowwise(_softmax_no_max_kernel)
    # on N(0, 1) data the bug is invisible ...
    x = torch.randn(7, 33)
    y = poison_(torch.empty_like(x))
    fn(x, y)
    assert check_outputs({"y": y}, {"y": torch.softmax(x.double(), -1)}, P.tol("fp32")).ok
    # ... the family's inputs (rows shifted by ±90..150) expose it
    for shape in (Shape(M=1, N=1), Shape(M=7, N=33)):
        res = check_fn(fn, shape)
        assert not res.ok and "NaN/Inf" in res.message, res.message


def test_rejects_low_precision_compute():
    # an fp32 variant that secretly computes in fp16 fails the fp32 tolerance
    res = check_fn(lambda x, y: y.copy_(torch.softmax(x.half(), -1).float()), Shape(M=33, N=1000))
    assert not res.ok


# ------------------------------------------------------------------------------------------------ CUDA compile
@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_compiles_without_spills(arch):
    for name in CUDA_VARIANTS:
        v = P.variants[name]
        assert v.source is fam.SOURCE and v.source.name == "softmax.cu"
        for dtype in v.dtypes:
            (kname,) = v.kernel_names(dtype)
            r = fam.SOURCE.resources(kname, arch)
            assert r["arch"] == arch and r["registers"] > 0, (kname, r)
            assert r["spill_store_bytes"] == 0 and r["spill_load_bytes"] == 0, (kname, arch, r)
            assert r["stack_bytes"] == 0, (kname, arch, r)


def test_cuda_launch_geometry():
    assert fam._launch(1, 4096, 1024, "fp32") == (32, 128)
    assert fam._launch(2, 4097, 1024, "fp16") == (1025, 128)
    assert fam._launch(3, 4096, 1024, "fp32") == (4096, 128)
    assert fam._launch(3, 64, 262144, "bf16") == (64, 1024)
    assert fam._launch(3, 1, 1, "fp32") == (1, 128)


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("name", list(P.variants))
def test_variant_quick_shapes_gpu(name, dtype):
    dev = torch.device("cuda")
    for shape in P.quick + [Shape(M=3, N=1023), Shape(M=3, N=1025), Shape(M=5, N=3001), Shape(M=2, N=262144)]:
        if P.variants[name].skip_reason(shape, dtype):
            continue
        res = run_variant(name, shape, dtype, seed=2, device=dev)
        assert res.ok, f"{name} {dtype} {shape}: {res.message}"
