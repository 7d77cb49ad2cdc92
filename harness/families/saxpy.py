"""SAXPY family: z[i] = a·x[i] + y[i] for i < N, fp32 (a course assignment's first kernel).

Inputs ``{"x": x[N], "y": y[N], "a": float}`` (``a`` is a Python float, drawn per seed from [0.5, 1.5) so a kernel
that ignores it or uses 1 fails), output ``{"z": z[N]}``. 2·N FLOPs against 12·N bytes (x, y read once, z written
once): 1/6 FLOP/B, deep in the memory-bound corner of the roofline, so the table leads with GB/s.

The only library baseline is torch (``torch.add(y, x, alpha=a)``, one fused ATen kernel). A student's own kernel comes
in through ``bench/run.py --kernel saxpy --cu saxpy.cu`` (harness/byo.py): the parameters of the kernel or launcher
are matched by name to the roles in ``CALLING_CONVENTION``.
"""

from __future__ import annotations

import torch

from harness.check import f64
from harness.registry import DTYPE_SIZE, DTYPES, Problem, Shape, abs_reference, register


def make_inputs(shape: Shape, dtype: str, seed: int, device: torch.device) -> dict:
    n = shape["N"]
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, generator=g, device=device, dtype=torch.float32)
    y = torch.randn(n, generator=g, device=device, dtype=torch.float32)
    a = 0.5 + float(torch.rand((), generator=g, device=device))
    return {"x": x.to(DTYPES[dtype]), "y": y.to(DTYPES[dtype]), "a": a}


def make_outputs(shape: Shape, dtype: str, device: torch.device) -> dict[str, torch.Tensor]:
    return {"z": torch.empty(shape["N"], dtype=DTYPES[dtype], device=device)}


def reference(inputs: dict, shape: Shape, dtype: str) -> dict[str, torch.Tensor]:
    return {"z": inputs["a"] * f64(inputs["x"]) + f64(inputs["y"])}


def flops(shape: Shape) -> float:
    return 2.0 * shape["N"]  # one multiply, one add per element


def min_bytes(shape: Shape, dtype: str) -> float:
    return 3.0 * shape["N"] * DTYPE_SIZE[dtype]  # x and y read once, z written once (12 B per element in fp32)


PROBLEM = register(Problem(
    name="saxpy",
    dims=("N",),
    dtypes=("fp32",),
    make_inputs=make_inputs,
    make_outputs=make_outputs,
    reference=reference,
    magnitude=abs_reference(reference),
    flops=flops,
    min_bytes=min_bytes,
    shapes=[
        *(Shape(N=1 << p) for p in (20, 24, 26, 28)),  # 4 MiB .. 1 GiB per vector: L2-resident up to HBM-bound
        Shape(N=1_000_003),  # prime: a tail block, no vector alignment
        Shape(N=1),
    ],
    quick=[Shape(N=1), Shape(N=33), Shape(N=1000), Shape(N=4099)],
    throughput_unit="GB/s",
    tol_model=lambda dtype, s: (dtype, 2, 1.0),  # a·x rounded, then the add (or one fma)
    description="z = a·x + y over N fp32 elements; memory bound (12·N bytes for 2·N FLOPs)",
))


def _torch_saxpy(inputs, out, shape):
    return {"z": torch.add(inputs["y"], inputs["x"], alpha=inputs["a"])}


PROBLEM.add_variant(
    "torch_saxpy", "torch", _torch_saxpy, baseline=True, style="return",
    description="torch.add(y, x, alpha=a): one fused ATen elementwise kernel")

# How a student's file is called (harness/byo.py): every parameter of the CUDA kernel / launcher / Triton function
# is matched by name (case-sensitive first; d_/dev_ prefixes and _ptr suffixes ignored) to one of these roles.
# kind: "dim" (a shape dimension, passed as an integer), "scalar" (a float input), "in" (input pointer), "out"
# (output pointer), "num" (the kernel number of a numbered launcher).
CALLING_CONVENTION = {
    "summary": "z[i] = a*x[i] + y[i] for i < n; fp32 vectors",
    "cuda": "__global__ void saxpy(size_t n, float a, float* x, float* y, float* z)  // default launch: "
            "1-D grid over n, 256 threads (--block N); or any launcher taking the same roles",
    "triton": "def saxpy(a, x, y, z): ...  # writes z in place; a signature without z returns z",
    "roles": {
        "n": ("dim", "N", ("N", "size", "len", "length", "numel", "num_elements", "count")),
        "a": ("scalar", "a", ("alpha", "scale")),
        "x": ("in", "x", ()),
        "y": ("in", "y", ()),
        "z": ("out", "z", ("out", "output", "result", "res")),
    },
    "entry": ("saxpy",),
    "launcher": ("launch_kernel", "launch_saxpy", "run_saxpy"),
    # (rows, cols) of the output that a default launch covers: 1-D over rows*cols, 2-D blocks (--block 32x8) x over
    # cols and y over rows
    "grid": lambda s: (1, s["N"]),
}
