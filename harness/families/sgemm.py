"""SGEMM family (course style): C = α·(A @ B) + β·C, row-major fp32, C read *and* written.

Inputs ``{"A": A[M, K], "B": B[K, N], "C": C[M, N], "alpha": float, "beta": float}``, output ``{"C": C[M, N]}``.
C is an in-out operand (``Problem.inout = ("C",)``): a style="out" variant gets in ``out["C"]`` a fresh copy of the
input C (not NaN-poisoned: it must be read) and updates it in place; the harness checks the update against the float64
reference computed from the untouched inputs and that every input, the original C included, is unchanged.

Data: A = randn, B = randn/sqrt(K), C = randn, so every term is ~N(0, 1) at every K. The tolerance is derived from
fp32's unit roundoff over a reduction of K + 1 terms with three more roundings (α·acc, β·C, the add): exact fp32
accumulation passes it, TF32 fails it. α is drawn from [0.5, 1.5) and β from -[0.25, 0.75) per seed: a kernel that
drops β·C, assumes β = 1 or ignores α fails.

FLOPs 2·M·N·K + 3·M·N (α·acc, β·C, the add); minimum bytes 4·(M·K + K·N + 2·M·N) (A, B, C read once, C written
once). Compute bound at 1024³ (~170 FLOP/B) on the fp32 (non-tensor-core) roof. Baseline: cuBLAS through
``torch.addmm(C, A, B, beta=β, alpha=α)`` with TF32 off — what the course's grader compares with.
"""

from __future__ import annotations

import math

import torch

from harness.check import f64
from harness.registry import DTYPE_SIZE, DTYPES, Problem, Shape, abs_reference, register


def _dims(shape: Shape) -> tuple[int, int, int]:
    return shape["M"], shape["N"], shape["K"]


def make_inputs(shape: Shape, dtype: str, seed: int, device: torch.device) -> dict:
    M, N, K = _dims(shape)
    g = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn(M, K, generator=g, device=device, dtype=torch.float32)
    b = torch.randn(K, N, generator=g, device=device, dtype=torch.float32) / math.sqrt(K)
    c = torch.randn(M, N, generator=g, device=device, dtype=torch.float32)
    alpha = 0.5 + float(torch.rand((), generator=g, device=device))
    beta = -(0.25 + 0.5 * float(torch.rand((), generator=g, device=device)))
    t = DTYPES[dtype]
    return {"A": a.to(t), "B": b.to(t), "C": c.to(t), "alpha": alpha, "beta": beta}


def make_outputs(shape: Shape, dtype: str, device: torch.device) -> dict[str, torch.Tensor]:
    M, N, _ = _dims(shape)
    return {"C": torch.empty(M, N, dtype=DTYPES[dtype], device=device)}


def reference(inputs: dict, shape: Shape, dtype: str) -> dict[str, torch.Tensor]:
    return {"C": inputs["alpha"] * (f64(inputs["A"]) @ f64(inputs["B"])) + inputs["beta"] * f64(inputs["C"])}


def flops(shape: Shape) -> float:
    M, N, K = _dims(shape)
    return 2.0 * M * N * K + 3.0 * M * N


def min_bytes(shape: Shape, dtype: str) -> float:
    M, N, K = _dims(shape)
    return float((M * K + K * N + 2 * M * N) * DTYPE_SIZE[dtype])


PROBLEM = register(Problem(
    name="sgemm",
    dims=("M", "N", "K"),
    dtypes=("fp32",),
    make_inputs=make_inputs,
    make_outputs=make_outputs,
    reference=reference,
    magnitude=abs_reference(reference),
    flops=flops,
    min_bytes=min_bytes,
    shapes=[
        *(Shape(M=n, N=n, K=n) for n in (256, 512, 1024, 2048, 4096)),  # 1024³ is what the course grader times
        Shape(M=1023, N=1025, K=1000),  # no dimension a multiple of a tile: edge masks in every direction
        Shape(M=4096, N=128, K=1024),  # tall and thin: few column tiles
        Shape(M=129, N=67, K=513),  # small and ragged
        Shape(M=1, N=1024, K=1024),  # one row: GEMV-like, memory bound
    ],
    quick=[
        Shape(M=1, N=1, K=1),
        Shape(M=17, N=33, K=65),
        Shape(M=64, N=48, K=100),
        Shape(M=3, N=17, K=2049),  # a long reduction, cheap at small M, N: low-precision accumulation fails
        Shape(M=31, N=64, K=96),
    ],
    inout=("C",),
    orders={"course": ("M", "K", "N")},  # the course's driver: ./sgemm KERNEL_NUM M K N
    # K products plus the β·C term per element; α·acc, β·C and the add are three more fp32 roundings
    tol_model=lambda dtype, s: (dtype, s["K"] + 1, 3.0),
    description="C = alpha·A@B + beta·C, row-major fp32, C in-out; fp32 CUDA-core roof (TF32 off)",
))


def _torch_addmm(inputs, out, shape):
    torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS in true fp32: TF32 would fail the fp32 tolerance
    return {"C": torch.addmm(inputs["C"], inputs["A"], inputs["B"], beta=inputs["beta"], alpha=inputs["alpha"])}


PROBLEM.add_variant(
    "torch_addmm", "torch", _torch_addmm, baseline=True, style="return",
    description="cuBLAS SGEMM through torch.addmm(C, A, B, beta, alpha), TF32 off (the course grader's reference)")

CALLING_CONVENTION = {
    "summary": "C = alpha*A@B + beta*C; A[M,K], B[K,N], C[M,N] row-major fp32; C is read and written",
    "cuda": "inline void launch_kernel(long kernel_num, int M, int K, int N, float alpha, const float* d_A, "
            "const float* d_B, float beta, float* d_C)  // one variant per kernel number: file#1, file#2, ...",
    "triton": "def sgemm(A, B, C, alpha, beta): ...  # updates C in place",
    "roles": {
        "kernel_num": ("num", None, ("kernel_number", "kernel_id", "kernel", "num", "which", "version")),
        "M": ("dim", "M", ("m", "rows")),
        "N": ("dim", "N", ("n", "cols")),
        "K": ("dim", "K", ("k", "inner")),
        "alpha": ("scalar", "alpha", ()),
        "beta": ("scalar", "beta", ()),
        "A": ("in", "A", ("a", "mat_a", "lhs")),
        "B": ("in", "B", ("b", "mat_b", "rhs")),
        "C": ("out", "C", ("c", "mat_c", "out")),
    },
    "entry": ("sgemm", "sgemm_naive"),
    "launcher": ("launch_kernel", "launch_sgemm", "run_sgemm"),
    "grid": lambda s: (s["M"], s["N"]),
}
