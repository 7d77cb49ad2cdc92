"""Depthwise 1-D convolution with "same" zero padding (course style), fp32.

Inputs ``{"u": u[B, D, L], "filter": filter[D, K], "bias": bias[D]}``, output ``{"out": out[B, D, L]}`` with
``out[b, d, l] = bias[d] + Σ_k filter[d, k] · u[b, d, l + k - K//2]`` (u is zero outside [0, L)); K odd. This is
``torch.nn.functional.conv1d(u, filter[:, None, :], bias, padding=K//2, groups=D)`` (a cross-correlation, like every
deep-learning "convolution"), which is the library baseline.

FLOPs 2·B·D·L·K (one multiply-add per tap, the bias add counted as the first tap's add); minimum bytes
4·(2·B·D·L + D·K + D): u read once, out written once, the filter and bias once. At K ≤ 5 that is ≤ 1.25 FLOP/B:
memory bound, so the table leads with GB/s.
"""

from __future__ import annotations

import torch

from harness.check import f64
from harness.registry import DTYPE_SIZE, DTYPES, Problem, Shape, abs_reference, register


def make_inputs(shape: Shape, dtype: str, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    B, D, L, K = shape["B"], shape["D"], shape["L"], shape["K"]
    g = torch.Generator(device=device).manual_seed(seed)
    t = DTYPES[dtype]
    u = torch.randn(B, D, L, generator=g, device=device, dtype=torch.float32)
    w = torch.randn(D, K, generator=g, device=device, dtype=torch.float32)
    bias = torch.randn(D, generator=g, device=device, dtype=torch.float32)
    return {"u": u.to(t), "filter": w.to(t), "bias": bias.to(t)}


def make_outputs(shape: Shape, dtype: str, device: torch.device) -> dict[str, torch.Tensor]:
    return {"out": torch.empty(shape["B"], shape["D"], shape["L"], dtype=DTYPES[dtype], device=device)}


def _conv(u: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    D, K = w.shape
    return torch.nn.functional.conv1d(u, w[:, None, :], bias, padding=K // 2, groups=D)


def reference(inputs: dict, shape: Shape, dtype: str) -> dict[str, torch.Tensor]:
    return {"out": _conv(f64(inputs["u"]), f64(inputs["filter"]), f64(inputs["bias"]))}


def flops(shape: Shape) -> float:
    return 2.0 * shape["B"] * shape["D"] * shape["L"] * shape["K"]


def min_bytes(shape: Shape, dtype: str) -> float:
    B, D, L, K = shape["B"], shape["D"], shape["L"], shape["K"]
    return float((2 * B * D * L + D * K + D) * DTYPE_SIZE[dtype])


def odd_k(shape: Shape, dtype: str) -> str | None:
    """"same" padding is only symmetric for odd K; an even K has no agreed-upon output alignment."""
    return None if shape["K"] % 2 == 1 else f"K={shape['K']}: 'same' padding needs an odd filter length"


PROBLEM = register(Problem(
    name="conv1d",
    dims=("B", "D", "L", "K"),
    dtypes=("fp32",),
    make_inputs=make_inputs,
    make_outputs=make_outputs,
    reference=reference,
    magnitude=abs_reference(reference),
    flops=flops,
    min_bytes=min_bytes,
    shapes=[
        Shape(B=8, D=1024, L=4096, K=3),
        Shape(B=8, D=1024, L=4096, K=5),
        Shape(B=16, D=768, L=8192, K=3),  # 400 MB of u: HBM bound on any GPU
        Shape(B=4, D=864, L=2048, K=5),
        Shape(B=3, D=100, L=1001, K=5),  # ragged L: tails, misaligned rows
        Shape(B=1, D=1, L=1, K=5),  # every tap but the centre reads padding
    ],
    quick=[
        Shape(B=1, D=1, L=1, K=3),
        Shape(B=2, D=3, L=17, K=3),
        Shape(B=2, D=8, L=100, K=5),
        Shape(B=3, D=5, L=33, K=1),
    ],
    throughput_unit="GB/s",
    orders={"course": ("B", "L", "D", "K")},  # the course's launcher: launch_kernel(u, filter, bias, out, B, L, D, K)
    tol_model=lambda dtype, s: (dtype, s["K"] + 1, 1.0),  # K taps plus the bias per output
    description="depthwise conv1d, 'same' zero padding: out[b,d,l] = bias[d] + sum_k filter[d,k]·u[b,d,l+k-K//2]",
))


def _torch_conv1d(inputs, out, shape):
    torch.backends.cudnn.allow_tf32 = False
    return {"out": _conv(inputs["u"], inputs["filter"], inputs["bias"])}


PROBLEM.add_variant(
    "torch_conv1d", "torch", _torch_conv1d, baseline=True, style="return", supports=odd_k,
    description="torch.nn.functional.conv1d(u, filter[:, None], bias, padding=K//2, groups=D) (cuDNN), TF32 off")

CALLING_CONVENTION = {
    "summary": "out[b,d,l] = bias[d] + sum_k filter[d,k]*u[b,d,l+k-K/2]; u,out [B,D,L], filter [D,K], bias [D]; K odd",
    "cuda": "inline void launch_kernel(const float* u, const float* filter, const float* bias, float* out, uint B, "
            "uint L, uint D, uint K)  // or a __global__ kernel: default 1-D launch over B*D*L, 256 threads",
    "triton": "def conv1d(u, filter, bias, out): ...  # writes out; a signature without out returns it",
    "roles": {
        "u": ("in", "u", ("x", "input", "inp", "in")),
        "filter": ("in", "filter", ("filt", "w", "weight", "weights")),
        "bias": ("in", "bias", ()),
        "out": ("out", "out", ("y", "output", "result", "res")),
        "B": ("dim", "B", ("batch",)),
        "D": ("dim", "D", ("channels", "dim", "C")),
        "L": ("dim", "L", ("seqlen", "seq_len", "length", "len")),
        "K": ("dim", "K", ("kernel_size", "ksize", "k_size", "filter_len")),
    },
    "entry": ("conv1d", "depthwise_conv1d", "conv1d_kernel"),
    "launcher": ("launch_kernel", "launch_conv1d", "run_conv1d"),
    "grid": lambda s: (s["B"] * s["D"], s["L"]),
    "supports": odd_k,
}
