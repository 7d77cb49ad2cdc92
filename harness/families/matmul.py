"""GEMM family: C[M, N] = A[M, K] @ B[K, N], A and B row-major contiguous, C in the input dtype, fp32 accumulation.

Inputs ``{"a": A, "b": B}`` (fp8 adds ``"a_scale"``, ``"b_scale"``: float32 scalar tensors, and ``"b_t"``: the same B
pre-arranged K-major, B^T [N, K] contiguous, made outside the timed call as an inference engine stores fp8 weights:
the B layout Hopper's fp8 wgmma and cuBLASLt's fp8 GEMM read), output ``{"c": C}``.
FLOPs 2·M·N·K; minimum bytes (M·K + K·N)·s_in + M·N·s_out (anchors.md). Compute bound at the big squares (4096³ fp16:
1365 FLOP/B against a 295 FLOP/B ridge), memory bound at the decode-like M = 1 / 16 shapes.

Data: A = randn, B = randn/sqrt(K), so every C element is ~N(0, 1) at every K and one absolute tolerance fits all
shapes. fp8 (e4m3, Hopper): A and B are quantised per tensor (scale = amax/448, the e4m3 maximum) and the output is
bf16 = (A·a_scale) @ (B·b_scale); the reference uses the stored fp8 values, so only accumulation and the bf16 store
differ from it.

Tolerances are derived (``harness.registry.derived_tolerance``) from the output precision (bf16 for fp8) and the
reduction length K: fp32 at K = 4096 allows rel 5.9e-6, which exact fp32 accumulation meets 20x over (rel ~2.6e-7)
and TF32 (inputs rounded to 10 mantissa bits, rel ~8e-4) misses 130x. Variants that use TF32 declare
``compute_dtype="tf32"`` and are checked, and labelled, at tf32's roundoff.

Variants: Triton grouped-tile and persistent GEMMs (fp32 ieee, fp16, bf16, fp8), a Triton TF32 variant, Triton fp8
on a K-major copy of B (the layout Hopper's fp8 wgmma wants); baselines
torch.matmul (fp16/bf16), torch fp32 with TF32 off (THE fp32 baseline) and on, torch._scaled_mm (fp8). Exactly one
``baseline=True`` variant per dtype: the runner's speed-ups are against it. CUDA variants come from
``harness/families/_matmul_cuda.py`` when present.
"""

from __future__ import annotations

import math

import torch

from harness.check import f64
from harness.registry import (
    DTYPE_SIZE,
    DTYPES,
    Problem,
    Shape,
    abs_reference,
    gpu_arch_reason,
    interpreter,
    on_gpu,
    register,
)

FP8_MAX = 448.0  # largest finite float8_e4m3fn
BF16_INTERP = "bf16 tl.dot is wrong under TRITON_INTERPRET; checked on GPU"


def _dims(shape: Shape) -> tuple[int, int, int]:
    return shape["M"], shape["N"], shape["K"]


def make_inputs(shape: Shape, dtype: str, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    M, N, K = _dims(shape)
    g = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn(M, K, generator=g, device=device, dtype=torch.float32)
    b = torch.randn(K, N, generator=g, device=device, dtype=torch.float32) / math.sqrt(K)  # C ~ N(0, 1)
    if dtype != "fp8":
        return {"a": a.to(DTYPES[dtype]), "b": b.to(DTYPES[dtype])}
    out: dict[str, torch.Tensor] = {}
    for name, x in (("a", a), ("b", b)):
        scale = x.abs().amax().clamp_min(1e-30) / FP8_MAX
        # clamp: x/scale can round past 448; e4m3fn has no inf, and the cast's overflow rule (saturate or NaN)
        # is not one we want to depend on
        out[name] = (x / scale).clamp(-FP8_MAX, FP8_MAX).to(DTYPES["fp8"])
        out[f"{name}_scale"] = scale.to(torch.float32)  # 0-d tensor on the device: no host sync to read it
    out["b_t"] = out["b"].t().contiguous()  # the pre-arranged weight layout (K-major), outside every timed call
    return out


def _out_dtype(dtype: str) -> torch.dtype:
    return torch.bfloat16 if dtype == "fp8" else DTYPES[dtype]


def make_outputs(shape: Shape, dtype: str, device: torch.device) -> dict[str, torch.Tensor]:
    M, N, _ = _dims(shape)
    return {"c": torch.empty(M, N, dtype=_out_dtype(dtype), device=device)}


def reference(inputs: dict[str, torch.Tensor], shape: Shape, dtype: str) -> dict[str, torch.Tensor]:
    a, b = f64(inputs["a"]), f64(inputs["b"])
    if dtype == "fp8":
        a = a * f64(inputs["a_scale"])
        b = b * f64(inputs["b_scale"])
    return {"c": a @ b}


def spot(inputs: dict, outputs: dict, shape: Shape, idx: torch.Tensor) -> tuple[dict, dict, Shape]:
    """Rows ``idx`` of C and of A (C's row i depends only on A's row i; B and the per-tensor scales stay whole)."""
    ins = {k: (t[idx.to(t.device)] if k == "a" else t) for k, t in inputs.items()}
    outs = {k: t[idx.to(t.device)] for k, t in outputs.items()}
    return ins, outs, Shape({**shape, "M": len(idx)})


def flops(shape: Shape) -> float:
    M, N, K = _dims(shape)
    return 2.0 * M * N * K


def min_bytes(shape: Shape, dtype: str) -> float:
    M, N, K = _dims(shape)
    s_out = 2 if dtype == "fp8" else DTYPE_SIZE[dtype]  # fp8 writes bf16
    return float((M * K + K * N) * DTYPE_SIZE[dtype] + M * N * s_out)


PROBLEM = register(Problem(
    name="matmul",
    dims=("M", "N", "K"),
    tol_model=lambda dtype, s: ("bf16" if dtype == "fp8" else dtype, s["K"], 1.0),  # fp8 stores bf16
    spot_dim="M", spot=spot, lower_precisions={"fp32": ("tf32",)},
    dtypes=("fp32", "fp16", "bf16", "fp8"),
    make_inputs=make_inputs,
    make_outputs=make_outputs,
    reference=reference,
    magnitude=abs_reference(reference),
    flops=flops,
    min_bytes=min_bytes,
    shapes=[
        *(Shape(M=n, N=n, K=n) for n in (512, 1024, 2048, 4096, 8192)),
        Shape(M=4096, N=4096, K=14336),  # Llama-3-8B MLP down-projection, 4096 tokens: 4096x14336 @ 14336x4096
        Shape(M=16, N=4096, K=4096),  # decode-like: 16 tokens x a 4096² weight (GEMV-ish, memory bound)
        Shape(M=1000, N=2025, K=4071),  # nothing a multiple of a tile, K odd: masks, unaligned rows
        Shape(M=1025, N=1025, K=1025),  # one row/column/k past a power of two: a nearly empty last tile
        Shape(M=1, N=4096, K=4096),  # a single row: GEMV
    ],
    quick=[
        Shape(M=1, N=1, K=1),
        Shape(M=17, N=33, K=65),
        Shape(M=64, N=48, K=100),
        Shape(M=1, N=40, K=2049),  # a long reduction (cheap at M=1): chunked fp16/bf16 accumulation fails here
        Shape(M=31, N=64, K=96),  # K, N multiples of 16 (torch._scaled_mm's rule), M odd: fp8 baseline runs too
    ],
    description="C[M,N] = A[M,K] @ B[K,N], row-major, fp32 accumulation; fp8 e4m3 with per-tensor scales -> bf16",
))


# ------------------------------------------------------------------------------------------------------ Triton
def _fp8_gpu_reason() -> str | None:
    return gpu_arch_reason("fp8 e4m3 tensor-core GEMM needs Hopper (sm_90+)", minimum=(9, 0))


def _triton_supports(shape: Shape, dtype: str) -> str | None:
    M, N, K = _dims(shape)
    if max(M * K, K * N, M * N) >= 2**31:
        return f"{M}x{N}x{K}: an operand has >= 2**31 elements (the Triton kernels use int32 offsets)"
    if interpreter():
        return BF16_INTERP if dtype == "bf16" else None  # fp8 dots are exact under the interpreter
    if not on_gpu():
        return "Triton needs a CUDA GPU (or TRITON_INTERPRET=1)"
    return _fp8_gpu_reason() if dtype == "fp8" else None


def _triton(launcher: str, input_precision: str = "ieee"):
    def fn(inputs, out, shape):
        import kernels.matmul as km

        getattr(km, launcher)(inputs["a"], inputs["b"], out["c"], a_scale=inputs.get("a_scale"),
                              b_scale=inputs.get("b_scale"), input_precision=input_precision)

    fn.__name__ = f"triton_{launcher}_{input_precision}"
    return fn


PROBLEM.add_variant(
    "triton_matmul", "triton", _triton("matmul"), dtypes=("fp32", "fp16", "bf16", "fp8"), supports=_triton_supports,
    description="autotuned tiles, GROUP_M-swizzled order for L2 reuse, fp32 accumulator; fp32 exact (ieee FMA), "
                "fp8 scaled -> bf16")
PROBLEM.add_variant(
    "triton_matmul_persistent", "triton", _triton("matmul_persistent"), dtypes=("fp32", "fp16", "bf16", "fp8"),
    supports=_triton_supports,
    description="persistent: grid = #SMs, each program loops over tiles in grouped order (no tail wave, no CTA churn)")


def _triton_fp8_kmajor(inputs, out, shape):
    import kernels.matmul as km

    # B in the pre-arranged K-major layout (strides (1, K): a view of b_t, no copy), what Hopper's fp8 wgmma wants
    # for its B operand in shared memory; the baseline gets the same layout
    km.matmul(inputs["a"], inputs["b_t"].t(), out["c"], a_scale=inputs["a_scale"], b_scale=inputs["b_scale"])


PROBLEM.add_variant(
    "triton_matmul_fp8_kmajor", "triton", _triton_fp8_kmajor, dtypes=("fp8",), supports=_triton_supports,
    description="fp8 on the pre-arranged K-major B (b_t, made outside the timed call): both wgmma operands "
                "multi-buffered in shared memory")
PROBLEM.add_variant(
    "triton_matmul_tf32", "triton", _triton("matmul", "tf32"), dtypes=("fp32",), supports=_triton_supports,
    compute_dtype="tf32",
    description="tf32: fp32 inputs rounded to TF32 on tensor cores (495 vs 67 TF roof), ~1e-3 rel. error, "
                "tf32 tolerance")


# ------------------------------------------------------------------------------------------------------ baselines
def _torch_matmul(inputs, out, shape):
    return {"c": torch.matmul(inputs["a"], inputs["b"])}


def _torch_fp32(allow_tf32: bool):
    def fn(inputs, out, shape):
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32  # read by cuBLAS at call time, restored right after
        try:
            return {"c": torch.matmul(inputs["a"], inputs["b"])}
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev

    fn.__name__ = "torch_fp32_tf32" if allow_tf32 else "torch_fp32_ieee"
    return fn


def _scaled_mm_supports(shape: Shape, dtype: str) -> str | None:
    if not on_gpu():
        return "torch._scaled_mm runs on CUDA (Hopper) GPUs only; no GPU here"
    reason = _fp8_gpu_reason()
    if reason:
        return reason
    M, N, K = _dims(shape)
    if K % 16 or N % 16:
        return f"torch._scaled_mm needs K and N multiples of 16 (K={K}, N={N})"
    return None


def _scaled_mm(inputs, b_col):
    c = torch._scaled_mm(inputs["a"], b_col, scale_a=inputs["a_scale"], scale_b=inputs["b_scale"],
                         out_dtype=torch.bfloat16, use_fast_accum=False)
    return {"c": c[0] if isinstance(c, tuple) else c}  # torch < 2.5 returned (out, amax)


def _torch_scaled_mm(inputs, out, shape):
    # cuBLASLt fp8 takes B column-major: the pre-arranged b_t (B^T contiguous) viewed transposed, no copy -- the same
    # weight layout the CUDA and Triton fp8 variants read
    return _scaled_mm(inputs, inputs["b_t"].t())


def _torch_scaled_mm_relayout(inputs, out, shape):
    # a caller holding a row-major B pays the transposing copy (K·N bytes read + written) in the call: this record
    # minus torch_scaled_mm is the cost of the layout
    return _scaled_mm(inputs, inputs["b"].t().contiguous().t())


PROBLEM.add_variant(
    "torch_matmul", "torch", _torch_matmul, dtypes=("fp16", "bf16"), baseline=True, style="return",
    description="torch.matmul (cuBLAS/cuBLASLt tensor cores, fp32 accumulation)")
PROBLEM.add_variant(
    "torch_fp32_ieee", "torch", _torch_fp32(False), dtypes=("fp32",), baseline=True, style="return",
    description="torch.matmul with allow_tf32=False: exact fp32 cuBLAS SGEMM (SIMT, 67 TF roof)")
PROBLEM.add_variant(
    "torch_fp32_tf32", "torch", _torch_fp32(True), dtypes=("fp32",), style="return",
    compute_dtype="tf32",
    description="tf32: torch.matmul with allow_tf32=True (cuBLAS TF32 tensor cores), tf32 tolerance")
PROBLEM.add_variant(
    "torch_scaled_mm", "torch", _torch_scaled_mm, dtypes=("fp8",), baseline=True, style="return",
    supports=_scaled_mm_supports,
    description="torch._scaled_mm, per-tensor scales, bf16 out, fp32 accumulation, on the pre-arranged "
                "column-major B (b_t)")
PROBLEM.add_variant(
    "torch_scaled_mm_relayout", "torch", _torch_scaled_mm_relayout, dtypes=("fp8",), style="return",
    supports=_scaled_mm_supports,
    description="torch._scaled_mm with B made column-major inside the timed call: minus torch_scaled_mm = the "
                "cost of the weight layout")


# ------------------------------------------------------------------------------------------------------ CUDA
try:
    from harness.families._matmul_cuda import register_cuda_variants
except ImportError as e:
    if e.name != "harness.families._matmul_cuda":
        raise  # the module exists but is broken: let load_all() report it
else:
    register_cuda_variants(PROBLEM)

# The benchmark targets: bf16 at 4096^3 and 8192^3 (Triton >= 97% of cuBLAS, mma.sync >= 75%), the fp32
# SGEMM ladder at 4096^3 (top >= 90% of cuBLAS without TF32), fp8 at 8192^3 (>= 85% of torch._scaled_mm).
PROBLEM.headline = [
    (PROBLEM.shape(M=4096, N=4096, K=4096), ("bf16", "fp32")),
    (PROBLEM.shape(M=8192, N=8192, K=8192), ("bf16", "fp8")),
]
