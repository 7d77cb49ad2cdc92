"""Row softmax family: y[M, N] = softmax(x[M, N], dim=-1), fp32/fp16/bf16 storage, fp32 compute.

Memory bound: ~5·M·N FLOPs against a floor of 2·M·N·s bytes (read x once, write y once), so the table leads with
GB/s. Inputs are randn·2 with every other row shifted by ±(90..150): exp() of such a row overflows (or underflows to
0/0) in fp32 unless the kernel subtracts the row max, while softmax itself is shift-invariant, so the reference is
unaffected. Variants: Triton fused (row on chip) and online (tiled, any N); CUDA ladder v1 (thread per row) -> v2 (warp
per row) -> v3 (block per row, 16-byte vectors, online); torch.softmax as the baseline and an unfused torch
composition for the ~4x that fusion is worth.
"""

from __future__ import annotations

import torch

from harness.check import f64
from harness.cuda import CUDA_TYPES, CudaSource, Kernel
from harness.registry import DTYPE_SIZE, DTYPES, Problem, Shape, register

_DTYPE_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
X_MAX = 160.0  # |x| bound of make_inputs: 150 (the largest row shift) + 2·|randn| (|randn| > 5 once in 1.7e6 draws)


def make_inputs(shape: Shape, dtype: str, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    M, N = shape["M"], shape["N"]
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(M, N, generator=g, device=device, dtype=torch.float32) * 2.0
    # Large-magnitude rows: even rows (row 0 included, so even a 1x1 problem has one) are shifted by ±U(90, 150).
    # exp(90) = 1.2e39 overflows fp32 and exp(-150) underflows to 0: a kernel that skips the max subtraction returns
    # inf/NaN there. |x| <= ~160 stays exact enough in fp16 (spacing 0.125) and bf16 (spacing 1).
    mag = 90.0 + 60.0 * torch.rand(M, 1, generator=g, device=device)
    sign = torch.where(torch.rand(M, 1, generator=g, device=device) < 0.5, -1.0, 1.0)
    sign[0] = 1.0
    even = (torch.arange(M, device=device) % 2 == 0).unsqueeze(1)
    x = x + torch.where(even, sign * mag, torch.zeros_like(mag))
    return {"x": x.to(DTYPES[dtype])}


def make_outputs(shape: Shape, dtype: str, device: torch.device) -> dict[str, torch.Tensor]:
    return {"y": torch.empty(shape["M"], shape["N"], dtype=DTYPES[dtype], device=device)}


def reference(inputs: dict[str, torch.Tensor], shape: Shape, dtype: str) -> dict[str, torch.Tensor]:
    return {"y": torch.softmax(f64(inputs["x"]), dim=-1)}


def flops(shape: Shape) -> float:
    return 5.0 * shape["M"] * shape["N"]  # max, subtract, exp, sum, scale


def min_bytes(shape: Shape, dtype: str) -> float:
    return 2.0 * shape["M"] * shape["N"] * DTYPE_SIZE[dtype]  # x read once, y written once


PROBLEM = register(Problem(
    name="softmax",
    dims=("M", "N"),
    dtypes=("fp32", "fp16", "bf16"),
    make_inputs=make_inputs,
    make_outputs=make_outputs,
    reference=reference,
    flops=flops,
    min_bytes=min_bytes,
    shapes=[
        *(Shape(M=4096, N=n) for n in (1024, 2048, 4096, 8192, 16384, 32768)),
        Shape(M=1023, N=3001),  # odd width: misaligned rows, vector tails
        Shape(M=64, N=262144),  # few, very long rows: too wide for one program's registers, few rows to spread
        Shape(M=1, N=1),
        Shape(M=4096, N=1000),  # not a power of two: masked tails in every row
    ],
    quick=[
        Shape(M=1, N=1),
        Shape(M=7, N=33),
        Shape(M=33, N=1000),
        Shape(M=5, N=5000),
        Shape(M=2, N=40000),  # wider than the fused kernel's limit: exercises the online tiles and the skip reason
    ],
    throughput_unit="GB/s",
    # each output divides by a sum over N terms; exp(x - m) carries an fp32 error ~u32·|x| from its argument (the
    # LSE form exp(x - logsumexp(x)) does: logsumexp is off by ~u32·|x|), and make_inputs' rows reach |x| ~ 160
    tol_model=lambda dtype, s: (dtype, s["N"], 1.0, X_MAX),
    description="row softmax over the last dim of x[M, N]; fp32 compute; memory bound (floor 2·M·N·s bytes)",
))


# ------------------------------------------------------------------------------------------------------ Triton
def _triton_fused(inputs, out, shape):
    from kernels.softmax import softmax_fused

    softmax_fused(inputs["x"], out=out["y"])


def _triton_online(inputs, out, shape):
    from kernels.softmax import softmax_online

    softmax_online(inputs["x"], out=out["y"])


def _fused_supports(shape: Shape, dtype: str) -> str | None:
    from kernels.softmax import FUSED_MAX_N

    if shape["N"] > FUSED_MAX_N:
        return f"N={shape['N']} does not fit on chip (fused keeps a row in registers, N <= {FUSED_MAX_N}); see online"
    return None


PROBLEM.add_variant(
    "triton_fused", "triton", _triton_fused, supports=_fused_supports,
    description="one read + one write: whole row(s) in registers, max/exp/sum/scale fused (N <= 32768)")
PROBLEM.add_variant(
    "triton_online", "triton", _triton_online,
    description="tiles of 4096 per row: running max/sum pass, then normalise pass (2 reads + 1 write), any N")


# ------------------------------------------------------------------------------------------------------ CUDA
SOURCE = CudaSource("softmax.cu")
_CUDA_KERNELS = {1: "softmax_v1_naive<{T}>", 2: "softmax_v2_warp<{T}>", 3: "softmax_v3_block<{T}>"}
# Kernel objects are created once, here: all 9 specialisations are instantiated before the first (cached) compile.
KERNELS: dict[tuple[int, str], Kernel] = {
    (rung, dt): SOURCE.kernel(name.replace("{T}", CUDA_TYPES[dt]))
    for rung, name in _CUDA_KERNELS.items() for dt in ("fp32", "fp16", "bf16")
}


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _launch(rung: int, M: int, N: int, dtype: str) -> tuple[int, int]:
    """(grid, block) of one CUDA rung, as each kernel's header paragraph in softmax.cu states it."""
    if rung == 1:  # one thread per row
        return (M + 127) // 128, 128
    if rung == 2:  # one warp per row, 4 rows per block
        return (M + 3) // 4, 128
    vec = 16 // DTYPE_SIZE[dtype]  # one block per row, ~4 sixteen-byte vectors per thread
    return M, min(1024, max(128, _next_pow2(-(-N // (4 * vec)))))


def _cuda_fn(rung: int):
    def fn(inputs, out, shape):
        x, y = inputs["x"], out["y"]
        dtype = _DTYPE_NAME[x.dtype]
        M, N = x.shape
        grid, block = _launch(rung, M, N, dtype)
        KERNELS[(rung, dtype)](grid, block, x.contiguous(), y, M, N)

    fn.__name__ = f"softmax_cuda_v{rung}"
    return fn


_CUDA_DESCRIPTIONS = {
    1: "one thread per row, three passes (max, sum, normalise): uncoalesced, latency bound — the slow rung",
    2: "one warp per row: coalesced lanes, shuffle reductions, row in registers for N <= 1024 (1 read + 1 write)",
    3: "one block per row, 16-byte vector loads when aligned, online max/sum pass + normalise pass",
}
for _rung, _name in _CUDA_KERNELS.items():
    PROBLEM.add_variant(
        f"cuda_v{_rung}", "cuda", _cuda_fn(_rung), source=SOURCE, kernel=_name, ladder=_rung,
        description=_CUDA_DESCRIPTIONS[_rung])


# ------------------------------------------------------------------------------------------------------ baselines
def _torch_softmax(inputs, out, shape):
    return {"y": torch.softmax(inputs["x"], -1)}


def _torch_naive(inputs, out, shape):
    # five ATen kernels: reads 5MN+2M, writes 3MN+2M elements (vs 1 and 1: the ~4x a fused kernel can win)
    x = inputs["x"]
    e = (x - x.amax(-1, keepdim=True)).exp()
    return {"y": e / e.sum(-1, keepdim=True)}


PROBLEM.add_variant(
    "torch_softmax", "torch", _torch_softmax, baseline=True, style="return",
    description="torch.softmax(x, -1) in the input dtype: ATen's own fused row-softmax kernel")
PROBLEM.add_variant(
    "torch_naive", "torch", _torch_naive, style="return",
    description="unfused amax, sub, exp, sum, div in the input dtype: ~8 passes over M·N (the 4x that fusion saves)")

# The benchmark target: >= 90% of measured copy bandwidth for 4096 x {1024 ... 32768} bf16.
PROBLEM.headline = [(PROBLEM.shape(M=4096, N=n), ("bf16",)) for n in (1024, 2048, 4096, 8192, 16384, 32768)]
