"""quant_gemm: y[M, N] = x[M, K] @ dequant(W)[K, N] with quantized weights (and, for w8a8/fp8, activations).

One family; the scheme is a shape option (``scheme=w8a16|w4a16|w8a8|fp8``, plus ``group`` and ``sym`` which only
w4a16 reads). The dtype is the activation dtype (fp16/bf16); w8a8/fp8 produce their output in it.

Inputs per scheme (layouts: kernels/quant.py):

* w8a16: ``x [M, K]``, ``qw int8 [K, N]``, ``scale fp32 [N]``.
* w4a16: ``x [M, K]``, ``qw uint8 [K // 2, N]`` (packed, low nibble = even k), ``scale [K // g, N]`` in the
  activation dtype (as GPTQ/Marlin store them; the anchors' byte formula assumes 16-bit scales), and for
  ``sym=0`` ``zero uint8 [K // g, N]``.
* w8a8: ``xq int8 [M, K]``, ``x_scale fp32 [M]`` (per token), ``qw int8 [K, N]``, ``w_scale fp32 [N]``.
* fp8: ``xq e4m3 [M, K]``, ``x_scale fp32 [M]`` (per row), ``qw e4m3 [K, N]`` stored COLUMN-major (stride (1, K):
  the layout torch._scaled_mm and the fp8 tensor cores want), ``w_scale fp32 [N]`` (per column).
* every scheme also carries ``w_deq`` (and for w8a8/fp8 ``x_deq``): the same values dequantized to the activation
  dtype, made outside the timed call, for the cuBLAS baseline ``torch_bf16_dequant`` (the thing to beat).

Data: x ~ N(0, 1) (``outliers=1``: 0.1% of the channels, at least one, x100: LLM outlier features); W ~ N(0, 1/K)
with per-column magnitudes log-uniform in [1/8, 1/2] (so scales vary across
columns, and |y| <~ 2: the elementwise atol stays >= 10 sigma of the baselines' bf16/fp16 rounding error even at
M = 4096 x N = 14336 outputs), and one edge per input: an all-zero weight group (w4a16: the first K group of the
last column; other schemes: the whole last column, i.e. scale 0 -> stored as 1, q = 0). Extreme scales (column
magnitudes 1e-3..10, row magnitudes 1e-2..10) go through ``inputs_from`` in tests/test_quant_gemm.py.

Reference: float64 matmul of exactly the dequantized values (``kernels.quant.dequantize_*`` in float64), so a kernel
is allowed accumulation error, plus -- for dequantize-in-register W·A16 kernels and the baselines -- one rounding of
each dequantized weight to the activation dtype.

Roofline: the compute roof depends on the scheme, so ``Problem.compute_dtype(dtype, shape)`` calls
``compute_dtype_for(shape)``: "bf16" for w8a16/w4a16 (dequantize in registers, fp16/bf16 tensor-core math), "int8"
for w8a8, "fp8" for fp8.
"""

from __future__ import annotations

import math

import torch

from harness.check import f64
from harness.cuda import CUDA_TYPES, CudaSource
from harness.registry import DTYPES, Problem, Shape, gpu_arch_reason, interpreter, on_gpu, register
from kernels import quant as Q
from kernels import quant_gemm as TK

SCHEMES = ("w8a16", "w4a16", "w8a8", "fp8")
# ``outliers=1`` shapes: this fraction of the K activation channels (at least one) scaled by OUTLIER_SCALE, the
# outlier features of LLM activations (LLM.int8(), Dettmers et al. 2022: a few hidden dimensions carry magnitudes
# ~20-100x the rest in every token; Sun et al. 2024 report "massive activations" of 1000s). With x ~ N(0, 1) the
# outlier channels reach |x| ~ 300-400; an fp16 partial of 8 products with |q - z| <= 15 can reach 65504 from
# |x| ~ 550 (the old v4's), so the W·A16 rungs accumulate in fp32.
OUTLIER_FRACTION, OUTLIER_SCALE = 0.001, 100.0
BF16_DOT_REASON = "bf16 tl.dot is wrong under TRITON_INTERPRET; checked on GPU"


def compute_dtype_for(shape: Shape, dtype: str | None = None) -> str:
    """The compute roof that applies to this shape: bf16 (weight-only, fp16/bf16 MMA), int8 (w8a8) or fp8."""
    return {"w8a16": "bf16", "w4a16": "bf16", "w8a8": "int8", "fp8": "fp8"}[shape["scheme"]]


def _validate(shape: Shape) -> None:
    if shape["scheme"] not in SCHEMES:
        raise ValueError(f"quant_gemm: scheme must be one of {SCHEMES}, got {shape['scheme']!r}")
    if shape["scheme"] == "w4a16":
        g = shape["group"]
        if g < 2 or g % 2:
            raise ValueError(f"quant_gemm: w4a16 group must be a positive even integer, got {g}")
        if shape["K"] % g:
            raise ValueError(f"quant_gemm: w4a16 needs K % group == 0, got K={shape['K']}, group={g}")


# ---------------------------------------------------------------------------------------------------- inputs
def make_inputs(shape: Shape, dtype: str, seed: int, device) -> dict[str, torch.Tensor]:
    _validate(shape)
    M, N, K, scheme = shape["M"], shape["N"], shape["K"], shape["scheme"]
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn((M, K), generator=gen, device=dev, dtype=torch.float32)
    if shape["outliers"]:  # LLM.int8-style outlier features: a few hidden channels ~100x the rest, in every token
        n_out = max(1, round(OUTLIER_FRACTION * K))
        ch = torch.randperm(K, generator=gen, device=dev)[:n_out]
        x[:, ch] *= OUTLIER_SCALE
    mag = torch.exp(torch.empty(N, device=dev).uniform_(math.log(0.125), math.log(0.5), generator=gen))
    w = torch.randn((K, N), generator=gen, device=dev, dtype=torch.float32) * (mag / math.sqrt(K))[None, :]
    if scheme == "w4a16":
        w[: shape["group"], N - 1] = 0.0  # one all-zero group
    elif N > 1:
        w[:, N - 1] = 0.0  # one all-zero output channel
    return inputs_from(x, w, shape, dtype)


def inputs_from(x: torch.Tensor, w: torch.Tensor, shape: Shape, dtype: str) -> dict[str, torch.Tensor]:
    """Quantize float ``x [M, K]`` and ``W [K, N]`` per ``shape["scheme"]`` into the variants' input dict (tests use
    it to feed hand-made edge cases -- zero groups, extreme scales -- through the same path as make_inputs)."""
    _validate(shape)
    scheme = shape["scheme"]
    dt = DTYPES[dtype]
    if scheme == "w8a16":
        x = x.to(dt)
        qw, scale = Q.quantize_int8_weight(w)
        return {"x": x, "qw": qw, "scale": scale, "w_deq": Q.dequantize_int8_weight(qw, scale, dt)}
    if scheme == "w4a16":
        x = x.to(dt)
        g, sym = shape["group"], bool(shape["sym"])
        packed, scale, zero = Q.quantize_int4_weight(w, g, sym, scale_dtype=dt)
        out = {"x": x, "qw": packed, "scale": scale}
        if not sym:
            out["zero"] = zero
        out["w_deq"] = Q.dequantize_int4_weight(packed, scale, zero, g, dt)
        return out
    if scheme == "w8a8":
        xq, xs = Q.quantize_int8_activation(x.to(dt))
        qw, ws = Q.quantize_int8_weight(w)
        return {"xq": xq, "x_scale": xs, "qw": qw, "w_scale": ws,
                "x_deq": Q.dequantize_int8_activation(xq, xs, dt), "w_deq": Q.dequantize_int8_weight(qw, ws, dt)}
    xq, xs = Q.quantize_fp8(x.to(dt), "row")
    qw, ws = Q.quantize_fp8(w, "col")
    return {"xq": xq, "x_scale": xs, "qw": qw.t().contiguous().t(), "w_scale": ws,
            "x_deq": Q.dequantize_fp8(xq, xs, "row", dt), "w_deq": Q.dequantize_fp8(qw, ws, "col", dt)}


def make_outputs(shape: Shape, dtype: str, device) -> dict[str, torch.Tensor]:
    return {"y": torch.empty((shape["M"], shape["N"]), dtype=DTYPES[dtype], device=device)}


def dequantized(inputs: dict[str, torch.Tensor], shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, W) in float64, exactly as quantized (no rounding to the activation dtype)."""
    scheme = shape["scheme"]
    if scheme == "w8a16":
        return f64(inputs["x"]), Q.dequantize_int8_weight(inputs["qw"], inputs["scale"])
    if scheme == "w4a16":
        return f64(inputs["x"]), Q.dequantize_int4_weight(inputs["qw"], inputs["scale"], inputs.get("zero"),
                                                          shape["group"])
    if scheme == "w8a8":
        return (Q.dequantize_int8_activation(inputs["xq"], inputs["x_scale"]),
                Q.dequantize_int8_weight(inputs["qw"], inputs["w_scale"]))
    return (Q.dequantize_fp8(inputs["xq"], inputs["x_scale"], "row"),
            Q.dequantize_fp8(inputs["qw"], inputs["w_scale"], "col"))


def reference(inputs: dict[str, torch.Tensor], shape: Shape, dtype: str) -> dict[str, torch.Tensor]:
    x, w = dequantized(inputs, shape)
    return {"y": x @ w}


def spot(inputs: dict, outputs: dict, shape: Shape, idx: torch.Tensor) -> tuple[dict, dict, Shape]:
    """Rows ``idx`` of y and of the activations (x, or xq with its per-token scales); weights stay whole."""
    M = shape["M"]
    ins = {k: (t[idx.to(t.device)] if k.startswith("x") and t.dim() >= 1 and t.shape[0] == M else t)
           for k, t in inputs.items()}
    outs = {k: t[idx.to(t.device)] for k, t in outputs.items()}
    return ins, outs, Shape({**shape, "M": len(idx)})


# ---------------------------------------------------------------------------------------------------- models
def flops(shape: Shape) -> float:
    return 2.0 * shape["M"] * shape["N"] * shape["K"]


def min_bytes(shape: Shape, dtype: str) -> float:
    """Packed weights + scales (+ zeros) + activations (+ their scales) + output, each moved once.

    w4a16 with 16-bit scales and no zeros is the anchors' formula K·N·(4 + 16/g)/8 + M·K·2 + M·N·2.
    """
    M, N, K, scheme = shape["M"], shape["N"], shape["K"], shape["scheme"]
    s = 2  # fp16/bf16 activations and output
    out = M * N * s
    if scheme == "w8a16":
        return K * N + 4 * N + M * K * s + out
    if scheme == "w4a16":
        groups = K // shape["group"]
        zeros = 0 if shape["sym"] else groups * N
        return K * N / 2 + groups * N * s + zeros + M * K * s + out
    return M * K + 4 * M + K * N + 4 * N + out  # w8a8 / fp8: 1-byte operands, fp32 row/column scales


_COPY_BPS: list[float | None] = []  # per process: this GPU's measured device-to-device copy rate (B/s), or None


def copy_bandwidth() -> float | None:
    """The measured copy bandwidth of the cached roofline profile (bench/run.py measures it before the workers
    start); None without a GPU or a measured profile -- then no bandwidth metrics are claimed."""
    if not _COPY_BPS:
        bw = None
        try:
            if torch.cuda.is_available():
                from roofline.ceilings import get_profile

                bw = get_profile(measure=False).mem.get("measured")
        except Exception:  # noqa: BLE001 - a missing/corrupt profile only drops the extra metric
            bw = None
        _COPY_BPS.append(float(bw) if bw else None)
    return _COPY_BPS[0]


def extra_metrics(shape: Shape, median_ms: float) -> dict[str, float]:
    """pct_of_copy_bw: min_bytes / time as % of the measured copy rate; floor_us_copy: min_bytes at that rate (the
    predicted floor of a decode GEMM)."""
    bw = copy_bandwidth()
    if not bw or not median_ms or median_ms <= 0:
        return {}
    nbytes = min_bytes(shape, "bf16")
    return {"pct_of_copy_bw": 100.0 * nbytes / (median_ms * 1e-3) / bw, "floor_us_copy": nbytes / bw * 1e6}


# ---------------------------------------------------------------------------------------------------- shapes
def _s(M, N, K, scheme, group=128, sym=True, outliers=0) -> Shape:
    return PROBLEM.shape(M=M, N=N, K=K, scheme=scheme, group=group, sym=sym, outliers=outliers)


PROBLEM = register(Problem(
    name="quant_gemm",
    dims=("M", "N", "K"),
    dtypes=("fp16", "bf16"),
    make_inputs=make_inputs,
    make_outputs=make_outputs,
    reference=reference,
    flops=flops,
    min_bytes=min_bytes,
    shapes=[],
    quick=[],
    options={"scheme": "w4a16", "group": 128, "sym": True, "outliers": 0},
    description="quantized GEMM (W8A16, W4A16 group-wise, W8A8 per-token/channel, FP8 row/col) vs cuBLAS on "
                "pre-dequantized weights",
    compute_dtype=lambda dtype, shape: compute_dtype_for(shape, dtype),
    extra_metrics=extra_metrics,
    spot_dim="M", spot=spot,
))

# Llama-3-8B MLP projections: (K, N) = up/gate (4096 -> 14336), down (14336 -> 4096), and a square 8192.
_KN = ((4096, 14336), (14336, 4096), (8192, 8192))
PROBLEM.shapes = (
    [_s(M, N, K, "w4a16") for K, N in _KN for M in (1, 16, 256)]
    + [_s(M, 14336, 4096, "w8a16") for M in (1, 16, 256)]
    + [_s(1, N, K, "w8a16") for K, N in _KN[1:]]
    + [_s(16, 14336, 4096, "w4a16", group=64, sym=False)]
    + [_s(M, 14336, 4096, "w8a8") for M in (256, 4096)]
    + [_s(8192, 8192, 8192, "fp8")]
    + [_s(7, 4099, 4097, "w8a16")]  # odd N and K: every tile edge, no aligned vector loads
)
PROBLEM.quick = [
    _s(1, 40, 128, "w8a16"), _s(17, 72, 256, "w8a16"), _s(3, 41, 131, "w8a16"),
    _s(1, 72, 256, "w4a16"), _s(17, 40, 128, "w4a16"), _s(3, 40, 256, "w4a16", group=64, sym=False),
    _s(3, 80, 256, "w4a16", group=64, sym=False),  # N % 16 == 0: the CUDA 16-byte-load kernel runs too
    _s(2, 48, 2048, "w4a16", group=64), _s(1, 48, 2060, "w8a16"),  # the v4/v5 split-K ticket path; K >= 2048:
    # chunked fp16/bf16 accumulation fails at these two
    _s(17, 72, 256, "w8a8"), _s(3, 40, 128, "w8a8"),
    _s(3, 72, 256, "fp8"), _s(17, 48, 128, "fp8"),
    # outlier channels, every scheme (one channel x100 at these K; N % 16 == 0 so the CUDA rungs run too on a GPU)
    _s(2, 48, 256, "w4a16", group=64, sym=False, outliers=1), _s(3, 48, 256, "w8a16", outliers=1),
    _s(17, 48, 256, "w8a8", outliers=1), _s(3, 48, 128, "fp8", outliers=1),
]


# ---------------------------------------------------------------------------------------------------- helpers
def _needs(scheme: str):
    def check(shape: Shape, dtype: str) -> str | None:
        if shape["scheme"] != scheme:
            return f"{scheme} variant; shape has scheme={shape['scheme']}"
        return None

    return check


def _all(*checks):
    def check(shape: Shape, dtype: str) -> str | None:
        for c in checks:
            r = c(shape, dtype)
            if r:
                return r
        return None

    return check


def _triton_dot(shape: Shape, dtype: str) -> str | None:
    return BF16_DOT_REASON if dtype == "bf16" and interpreter() else None


def _sm89(what: str):
    def check(shape: Shape, dtype: str) -> str | None:
        return gpu_arch_reason(f"{what} needs fp8 tensor cores (sm_89+ / Hopper)", minimum=(8, 9))

    return check


# ---------------------------------------------------------------------------------------------------- triton


@PROBLEM.variant("triton_w8a16", "triton", supports=_all(_needs("w8a16"), _triton_dot),
                 description="int8 -> fp16/bf16 in registers, tl.dot fp32 acc, column scale in the epilogue; "
                             "BLOCK_M 16 + split-K at decode M")
def triton_w8a16(inputs, out, shape):
    TK.w8a16_gemm(inputs["x"], inputs["qw"], inputs["scale"], out=out["y"])


@PROBLEM.variant("triton_w4a16", "triton",
                 supports=_all(_needs("w4a16"), _triton_dot,
                               lambda s, d: None if s["group"] >= 16 and s["group"] & (s["group"] - 1) == 0
                               else f"Triton w4a16 needs a power-of-two group >= 16, got {s['group']}"),
                 description="packed int4 loaded as bytes, nibble unpack + (q - z) * s in registers, tl.dot fp32 acc")
def triton_w4a16(inputs, out, shape):
    TK.w4a16_gemm(inputs["x"], inputs["qw"], inputs["scale"], inputs.get("zero"), shape["group"], out=out["y"])


def _triton_gemv_ok(shape: Shape, dtype: str) -> str | None:
    return None if shape["M"] <= TK.GEMV_M_MAX else f"split-K GEMV: M <= {TK.GEMV_M_MAX} (M={shape['M']})"


@PROBLEM.variant("triton_w4a16_gemv", "triton", supports=_all(_needs("w4a16"), _triton_gemv_ok),
                 description="split-K GEMV, no tl.dot: each packed byte loaded once, both nibbles FMA'd in fp32, "
                             "group scale once per step, fixed-order split sum")
def triton_w4a16_gemv(inputs, out, shape):
    TK.w4a16_gemv(inputs["x"], inputs["qw"], inputs["scale"], inputs.get("zero"), shape["group"], out=out["y"])


@PROBLEM.variant("triton_w8a16_gemv", "triton", supports=_all(_needs("w8a16"), _triton_gemv_ok),
                 description="split-K GEMV, no tl.dot: int8 rows FMA'd in fp32, column scale in the split sum")
def triton_w8a16_gemv(inputs, out, shape):
    TK.w8a16_gemv(inputs["x"], inputs["qw"], inputs["scale"], out=out["y"])


@PROBLEM.variant("triton_w8a8", "triton", supports=_needs("w8a8"),
                 description="int8 x int8 tl.dot -> int32, per-token x per-channel scale epilogue")
def triton_w8a8(inputs, out, shape):
    TK.w8a8_gemm(inputs["xq"], inputs["x_scale"], inputs["qw"], inputs["w_scale"], out["y"].dtype, out=out["y"])


@PROBLEM.variant("triton_fp8", "triton", supports=_all(_needs("fp8"), _sm89("Triton fp8 tl.dot")),
                 description="e4m3 x e4m3 tl.dot -> fp32, row x column scale epilogue")
def triton_fp8(inputs, out, shape):
    TK.fp8_gemm(inputs["xq"], inputs["x_scale"], inputs["qw"], inputs["w_scale"], out["y"].dtype, out=out["y"])


# ---------------------------------------------------------------------------------------------------- cuda
# every specialisation up front: one nvcc run per arch builds them all (adding one later would rebuild the unit)
_NAMES = ("qgemm_v1_w8a16<{T}>", "qgemm_v2_w4a16<{T},4>", "qgemm_v3_w8a8_dp4a<{T}>",
          "qgemm_v4_w4a16_gemv<{T},1>", "qgemm_v4_w4a16_gemv<{T},2>",
          "qgemm_v5_w8a16_gemv<{T},1>", "qgemm_v5_w8a16_gemv<{T},2>",
          "qgemm_v6_w4a16_mma<{T},1,4>", "qgemm_v6_w4a16_mma<{T},2,4>",
          "qgemm_v7_w4a16_marlin<{T},1,8>", "qgemm_v7_w4a16_marlin<{T},2,8>", "qgemm_v7_w4a16_marlin<{T},4,8>")
SRC = CudaSource("quant_gemm.cu",
                 instantiate=[n.replace("{T}", CUDA_TYPES[d]) for d in ("fp16", "bf16") for n in _NAMES])
_KERNELS: dict[str, object] = {}
_CUDA_M_MAX = 64  # v1/v2 are SIMT decode kernels: beyond this M the tensor-core variants are the ones to time


def _kernel(name: str, dt: torch.dtype):
    cname = name.replace("{T}", CUDA_TYPES["bf16" if dt == torch.bfloat16 else "fp16"])
    k = _KERNELS.get(cname)
    if k is None:
        k = _KERNELS[cname] = SRC.kernel(cname)
    return k


def _decode_m(shape: Shape, dtype: str) -> str | None:
    return None if shape["M"] <= _CUDA_M_MAX else f"SIMT decode kernel: M <= {_CUDA_M_MAX} (M={shape['M']})"


@PROBLEM.variant("cuda_v1_w8a16", "cuda", source=SRC, kernel="qgemm_v1_w8a16<{T}>", ladder=1,
                 supports=_all(_needs("w8a16"), _decode_m),
                 description="one thread per output, int8 dequantized on the fly, fp32 acc, scale at the end")
def cuda_v1_w8a16(inputs, out, shape):
    x, y = inputs["x"], out["y"]
    M, N, K = shape["M"], shape["N"], shape["K"]
    _kernel("qgemm_v1_w8a16<{T}>", x.dtype)(((N + 127) // 128, M), 128, x, inputs["qw"], inputs["scale"], y, M, N, K)


def _v2_ok(shape: Shape, dtype: str) -> str | None:
    if shape["N"] % 16:
        return f"16-byte weight loads need N % 16 == 0 (N={shape['N']})"
    if shape["group"] % 32:
        return f"32-k chunks need group % 32 == 0 (group={shape['group']})"
    return None


@PROBLEM.variant("cuda_v2_w4a16", "cuda", source=SRC, kernel="qgemm_v2_w4a16<{T},4>", ladder=2,
                 supports=_all(_needs("w4a16"), _decode_m, _v2_ok),
                 description="packed int4, 16-byte weight loads (32 weights), 32 k-slices per block, shuffle reduce")
def cuda_v2_w4a16(inputs, out, shape):
    x, y, scale = inputs["x"], out["y"], inputs["scale"]
    M, N, K = shape["M"], shape["N"], shape["K"]
    zero = inputs.get("zero")
    if scale.dtype != x.dtype:
        raise ValueError(f"cuda_v2_w4a16 reads scales in the activation dtype, got {scale.dtype}")
    _kernel("qgemm_v2_w4a16<{T},4>", x.dtype)(
        ((N + 63) // 64, (M + 3) // 4), 128, x, inputs["qw"], scale, zero if zero is not None else inputs["qw"],
        int(zero is not None), y, M, N, K, shape["group"])


def _v3_ok(shape: Shape, dtype: str) -> str | None:
    if shape["K"] % 4 or shape["N"] % 4:
        return f"dp4a 4-byte loads need K % 4 == 0 and N % 4 == 0 (K={shape['K']}, N={shape['N']})"
    return None


@PROBLEM.variant("cuda_v3_w8a8_dp4a", "cuda", source=SRC, kernel="qgemm_v3_w8a8_dp4a<{T}>", ladder=3,
                 supports=_all(_needs("w8a8"), _v3_ok),
                 description="int8 dp4a -> int32, 64x64 smem tiles, k-quad transpose while staging, scale epilogue")
def cuda_v3_w8a8_dp4a(inputs, out, shape):
    y = out["y"]
    M, N, K = shape["M"], shape["N"], shape["K"]
    _kernel("qgemm_v3_w8a8_dp4a<{T}>", y.dtype)(
        ((N + 63) // 64, (M + 63) // 64), 256, inputs["xq"], inputs["x_scale"], inputs["qw"], inputs["w_scale"], y,
        M, N, K)


# v4 / v5: split-K decode GEMVs (cuda_src/quant_gemm.cu header has the napkin math). A CTA is 128 columns x 16
# k-slices; a slice takes whole 64-k tasks; SPLIT CTAs along K, reduced in-kernel by the last CTA of each column
# block (an atomic ticket that it re-arms to zero), so one launch and no memset per call.
_GEMV_TASK_K = 64
_GEMV_SLICES = 16
_GEMV_M_MAX = 16  # rows are processed MT (1 or 2) at a time, each row block re-reading W (from L2 at decode sizes)
_TICKETS: dict[str, torch.Tensor] = {}


def _tickets(n: int, device: torch.device) -> torch.Tensor:
    """A zeroed int32 buffer of >= n tickets per device, kept across calls (every launch leaves it zero). On the CPU
    (the interpreter) a fresh one per call: a launch that faults there ends before its last CTA re-arms the tickets,
    and the process goes on (on a GPU the fault is sticky)."""
    if torch.device(device).type == "cpu":
        return torch.zeros(max(n, 1), dtype=torch.int32)
    key = str(device)
    t = _TICKETS.get(key)
    if t is None or t.numel() < n:
        t = _TICKETS[key] = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
    return t


def gemv_launch(M: int, N: int, K: int) -> dict[str, int]:
    """Grid and split of the v4/v5 GEMVs: MT rows per row block, SPLIT = ceil(tasks / 16) so every k-slice of a CTA
    has one 64-k task (the total thread count N/16 * K/64 is what keeps the loads in flight; more splits only add
    idle slices)."""
    mt = 1 if M == 1 else 2
    tasks = -(-K // _GEMV_TASK_K)
    split = max(1, -(-tasks // _GEMV_SLICES))
    return {"MT": mt, "SPLIT": split, "grid": (-(-N // 128), split, -(-M // mt))}


def _gemv_ok(shape: Shape, dtype: str) -> str | None:
    if shape["M"] > _GEMV_M_MAX:
        return f"split-K GEMV: M <= {_GEMV_M_MAX} (M={shape['M']})"
    if shape["N"] % 16:
        return f"16-byte weight loads need N % 16 == 0 (N={shape['N']})"
    if shape["scheme"] == "w4a16" and shape["group"] % _GEMV_TASK_K:
        return f"64-k tasks need group % 64 == 0 (group={shape['group']})"
    return None


def _gemv_buffers(y: torch.Tensor, lc: dict) -> tuple[torch.Tensor, torch.Tensor]:
    M, N = y.shape
    gx, split, gz = lc["grid"]
    ws = torch.empty((split, M, N) if split > 1 else (1,), dtype=torch.float32, device=y.device)
    return ws, _tickets(gx * gz, y.device)


@PROBLEM.variant("cuda_v4_w4a16_gemv", "cuda", source=SRC, kernel=("qgemm_v4_w4a16_gemv<{T},1>",
                                                                  "qgemm_v4_w4a16_gemv<{T},2>"), ladder=4,
                 supports=_all(_needs("w4a16"), _gemv_ok),
                 description="split-K GEMV: 8 LDG.128 in flight, lop3 magic-number int4 dequant, hfma2 over 8 k "
                             "then group scale in fp32, one-launch ticket reduction")
def cuda_v4_w4a16_gemv(inputs, out, shape):
    lc = gemv_launch(shape["M"], shape["N"], shape["K"])
    _launch_w4a16("cuda_v4_w4a16_gemv", f"qgemm_v4_w4a16_gemv<{{T}},{lc['MT']}>", lc, 128, inputs, out, shape)


def _launch_w4a16(variant: str, kernel: str, lc: dict, block: int, inputs, out, shape, shared: int = 0) -> None:
    """The W4A16 rungs' shared call: x [M, K], packed qw, scale (and zero) [K/group, N] in the activation dtype,
    y [M, N]; split-K workspace and tickets from ``lc`` (gemv_launch / mma_launch). No zero: qw stands in, flag 0."""
    x, y, scale = inputs["x"], out["y"], inputs["scale"]
    zero = inputs.get("zero")
    if scale.dtype != x.dtype:
        raise ValueError(f"{variant} reads scales in the activation dtype, got {scale.dtype}")
    ws, tickets = _gemv_buffers(y, lc)
    _kernel(kernel, x.dtype)(
        lc["grid"], block, x.contiguous(), inputs["qw"], scale.contiguous(),
        zero if zero is not None else inputs["qw"], int(zero is not None), y, ws, tickets,
        shape["M"], shape["N"], shape["K"], shape["group"], shared=shared)


@PROBLEM.variant("cuda_v5_w8a16_gemv", "cuda", source=SRC, kernel=("qgemm_v5_w8a16_gemv<{T},1>",
                                                                  "qgemm_v5_w8a16_gemv<{T},2>"), ladder=5,
                 supports=_all(_needs("w8a16"), _gemv_ok),
                 description="split-K GEMV: 16 int8 per LDG.128, prmt + FADD magic-number int8 -> fp32, column "
                             "scale once, one-launch ticket reduction")
def cuda_v5_w8a16_gemv(inputs, out, shape):
    x, y = inputs["x"], out["y"]
    M, N, K = shape["M"], shape["N"], shape["K"]
    lc = gemv_launch(M, N, K)
    ws, tickets = _gemv_buffers(y, lc)
    _kernel(f"qgemm_v5_w8a16_gemv<{{T}},{lc['MT']}>", x.dtype)(
        lc["grid"], 128, x.contiguous(), inputs["qw"], inputs["scale"].float().contiguous(), y, ws, tickets,
        M, N, K)


# v6: mma.sync m16n8k16 W4A16 (cuda_src/quant_gemm.cu header). A warp owns 128 columns x 16 MT rows, a CTA 4 warps
# (512 columns); split-K over CTAs in k16 steps when the output tiles are fewer than 2 waves, reduced with v4's
# tickets.
_MMA_WARPS = 4
_MMA_SMS = 132  # H100 / H200; the launcher asks the GPU when there is one


def mma_launch(M: int, N: int, K: int, sms: int = _MMA_SMS) -> dict:
    """Grid of qgemm_v6: MT m16 tiles per warp (1 at decode M, 2 beyond 16 rows), SPLIT CTAs along K so that the
    (N / 512) x (M / 16 MT) tiles make >= 2 waves, each split keeping >= 4 k16 steps; no empty split."""
    mt = 1 if M <= 16 else 2
    gx, gz = -(-N // (128 * _MMA_WARPS)), -(-M // (16 * mt))
    steps = K // 16
    split = 1
    if gx * gz < 2 * sms:
        split = max(1, min(-(-2 * sms // (gx * gz)), steps // 4))
        split = -(-steps // -(-steps // split))  # every split gets >= 1 step
    return {"MT": mt, "SPLIT": split, "grid": (gx, split, gz), "block": 32 * _MMA_WARPS}


def _mma_ok(shape: Shape, dtype: str) -> str | None:
    if shape["N"] % 16:
        return f"16-byte weight loads need N % 16 == 0 (N={shape['N']})"
    if shape["group"] % 16:
        return f"k16 MMA steps need group % 16 == 0 (group={shape['group']})"
    return None


@PROBLEM.variant("cuda_v6_w4a16_mma", "cuda", source=SRC, kernel=("qgemm_v6_w4a16_mma<{T},1,4>",
                                                                 "qgemm_v6_w4a16_mma<{T},2,4>"), ladder=6,
                 supports=_all(_needs("w4a16"), _mma_ok),
                 description="(CPU-verified, GPU-pending) mma.sync m16n8k16: packed bytes are B-fragment k-pairs, "
                             "LDG.128 per lane feeds 16 HMMAs, prmt+lop3 magic dequant, scales once per group, split-K "
                             "tickets")
def cuda_v6_w4a16_mma(inputs, out, shape):
    y = out["y"]
    sms = torch.cuda.get_device_properties(y.device).multi_processor_count if y.is_cuda else _MMA_SMS
    lc = mma_launch(shape["M"], shape["N"], shape["K"], sms)
    _launch_w4a16("cuda_v6_w4a16_mma", f"qgemm_v6_w4a16_mma<{{T}},{lc['MT']},{_MMA_WARPS}>", lc, lc["block"],
                  inputs, out, shape)


# v7: Marlin-style W4A16 (cuda_src/quant_gemm.cu header): 256-thread CTAs of 16 MT rows x 256 columns x 64 k, a
# 4-stage cp.async pipeline through shared memory, every dequantised B fragment reused by the warp's MT m16 tiles.
_V7_WARPS, _V7_BN, _V7_BK, _V7_STAGES = 8, 256, 64, 4
_V7_L2 = 50e6  # H100 L2 bytes: fp32 partials past it go to DRAM


def v7_smem_bytes(mt: int) -> int:
    """Dynamic shared memory of qgemm_v7<T, mt, 8> (QgV7::SMEM): 4 stages of x (16 mt x 64 x 2 B), packed rows
    (32 x (256 + 32) B), 4 scale slots (4 x 512 B) and 4 zero slots (4 x 256 B)."""
    stage = 16 * mt * _V7_BK * 2 + (_V7_BK // 2) * (_V7_BN + 32) + (_V7_BK // 16) * _V7_BN * 3
    return _V7_STAGES * stage


def v7_grid_cost(M: int, N: int, K: int, mt: int, split: int, sms: int = _MMA_SMS) -> float:
    """The compute-bound grid's time on its busiest SM scheduler, in units of one CTA's whole-K work on one warp slot
    (the X-ray's hot-loop model: issue- and tensor-cycles per iteration grow with the warps per scheduler, so the SM
    with the most warp-work sets the time): ceil(CTAs / SMs) CTAs x 8 warps / 4 schedulers x 1 / split; a split
    grid adds its fp32 partials (written, then read back by the last CTA) at 3.35 TB/s past the 50 MB L2, 3x that
    inside it, converted at the bf16 tensor rate of one SM (989 TF / 132)."""
    gm, gn = -(-M // (16 * mt)), -(-N // _V7_BN)
    ctas = gm * gn * split
    work = -(-ctas // sms) * _V7_WARPS / 4 / split
    if split == 1:
        return work
    pbytes = 2.0 * split * M * N * 4
    bw = 3.35e12 if pbytes > _V7_L2 else 3 * 3.35e12
    cta_s = 2.0 * 16 * mt * _V7_BN * K / (989e12 / 132) / (_V7_WARPS / 4)  # one CTA's work per warp slot
    return work + pbytes / bw / cta_s


def v7_launch(M: int, N: int, K: int, sms: int = _MMA_SMS) -> dict:
    """Grid of qgemm_v7: MT = 1 / 2 / 4 m16 tiles per CTA (M <= 16 / 32 / beyond), grid (M blocks, SPLIT, N tiles).
    Decode M (output tiles fewer than the SMs): split-K so that >= 2 waves of CTAs keep the weight stream in flight,
    each split >= 2 k tiles, none empty. Compute-bound M: the split (1-4) with the least ``v7_grid_cost``. At
    M = 256, 4096 x 14336 that is no split: the 224 CTAs leave 92 SMs with 2 (16 warps, 4 per scheduler) and 40
    with 1, cost 4.0 against 3.39 balanced; split 2 / 3 keep the busiest SM at 4.0 and add 29 / 44 MB of partials;
    split 4 reaches 3.5 but its 117 MB of partial traffic (59 MB written and read back, past L2) costs ~3.9 more.
    (A 7-warp CTA, 256 CTAs of 224 columns, also leaves 14 warps = 4 per scheduler on the busiest SMs: no gain.)"""
    mt = 1 if M <= 16 else 2 if M <= 32 else 4
    gm, gn = -(-M // (16 * mt)), -(-N // _V7_BN)
    ktiles = -(-K // _V7_BK)
    split = 1
    if gm * gn < sms:
        split = max(1, min(-(-2 * sms // (gm * gn)), ktiles // 2))
    else:
        cands = [s for s in (1, 2, 3, 4) if s == 1 or s <= ktiles // 2]
        split = min(cands, key=lambda s: (round(v7_grid_cost(M, N, K, mt, s, sms), 6), s))
    split = -(-ktiles // -(-ktiles // split))  # every split gets >= 1 k tile
    return {"MT": mt, "SPLIT": split, "grid": (gm, split, gn), "block": 32 * _V7_WARPS, "smem": v7_smem_bytes(mt)}


@PROBLEM.variant("cuda_v7_w4a16_marlin", "cuda", source=SRC,
                 kernel=tuple(f"qgemm_v7_w4a16_marlin<{{T}},{mt},8>" for mt in (1, 2, 4)), ladder=7,
                 supports=_all(_needs("w4a16"), _mma_ok),
                 description="(CPU-verified, GPU-pending) Marlin-style: 4-stage cp.async of x/packed/scale tiles "
                             "to smem, ldmatrix A, lop3 dequant once per CTA reused by MT m16 tiles, split-K at decode "
                             "M")
def cuda_v7_w4a16_marlin(inputs, out, shape):
    y = out["y"]
    sms = torch.cuda.get_device_properties(y.device).multi_processor_count if y.is_cuda else _MMA_SMS
    lc = v7_launch(shape["M"], shape["N"], shape["K"], sms)
    _launch_w4a16("cuda_v7_w4a16_marlin", f"qgemm_v7_w4a16_marlin<{{T}},{lc['MT']},{_V7_WARPS}>", lc, lc["block"],
                  inputs, out, shape, shared=lc["smem"])


# ---------------------------------------------------------------------------------------------------- torch
@PROBLEM.variant("torch_bf16_dequant", "torch", style="return", baseline=True, roof_dtype="bf16",
                 description="cuBLAS fp16/bf16 matmul on weights (and activations) dequantized outside the timed "
                             "call: what a quantized kernel must beat")
def torch_bf16_dequant(inputs, out, shape):
    x = inputs["x_deq"] if "x_deq" in inputs else inputs["x"]
    return {"y": x @ inputs["w_deq"]}


def _dequant_torch(inputs, shape, dt):
    scheme = shape["scheme"]
    if scheme == "w8a16":
        return inputs["x"], inputs["qw"].to(dt) * inputs["scale"].to(dt)[None, :]
    if scheme == "w4a16":
        p = inputs["qw"]
        q = torch.stack((p & 0xF, p >> 4), dim=1).reshape(p.shape[0] * 2, p.shape[1]).to(dt)
        g = shape["group"]
        z = inputs["zero"].to(dt) if "zero" in inputs else 8.0
        s = inputs["scale"].to(dt)
        if isinstance(z, torch.Tensor):
            z = z.repeat_interleave(g, dim=0)
        return inputs["x"], (q - z) * s.repeat_interleave(g, dim=0)
    x = inputs["xq"].to(dt) * inputs["x_scale"].to(dt)[:, None]
    w = inputs["qw"].to(dt) * inputs["w_scale"].to(dt)[None, :]
    return x, w


@PROBLEM.variant("torch_dequant_matmul", "torch", style="return", roof_dtype="bf16",
                 description="torch: dequantize (unpack, subtract zero, scale) inside the call, then matmul")
def torch_dequant_matmul(inputs, out, shape):
    dt = inputs["w_deq"].dtype
    x, w = _dequant_torch(inputs, shape, dt)
    return {"y": x @ w}


def _int_mm_ok(shape: Shape, dtype: str) -> str | None:
    if shape["M"] <= 16:
        return f"torch._int_mm needs M > 16 (M={shape['M']})"
    if shape["K"] % 8 or shape["N"] % 8:
        return f"torch._int_mm needs K and N multiples of 8 (K={shape['K']}, N={shape['N']})"
    return None


@PROBLEM.variant("torch_int_mm", "torch", style="return", supports=_all(_needs("w8a8"), _int_mm_ok),
                 description="torch._int_mm (cuBLASLt int8 -> int32), scales applied after in torch")
def torch_int_mm(inputs, out, shape):
    acc = torch._int_mm(inputs["xq"], inputs["qw"])
    y = acc.to(torch.float32) * inputs["x_scale"][:, None] * inputs["w_scale"][None, :]
    return {"y": y.to(inputs["w_deq"].dtype)}


def _scaled_mm_ok(shape: Shape, dtype: str) -> str | None:
    if not on_gpu():
        return "torch._scaled_mm runs on CUDA only"
    if dtype != "bf16":
        return "row-wise scaled torch._scaled_mm outputs bf16 only"
    if shape["K"] % 16 or shape["N"] % 16:
        return f"torch._scaled_mm needs K and N multiples of 16 (K={shape['K']}, N={shape['N']})"
    return None


@PROBLEM.variant("torch_scaled_mm", "torch", style="return",
                 supports=_all(_needs("fp8"), _sm89("torch._scaled_mm"), _scaled_mm_ok),
                 description="torch._scaled_mm fp8 e4m3 with row-wise x column-wise fp32 scales (cuBLASLt)")
def torch_scaled_mm(inputs, out, shape):
    y = torch._scaled_mm(inputs["xq"], inputs["qw"], scale_a=inputs["x_scale"][:, None].contiguous(),
                         scale_b=inputs["w_scale"][None, :].contiguous(), out_dtype=torch.bfloat16)
    return {"y": y}


# The dequantize-in-register W·A16 kernels round each dequantized weight once to the activation dtype, then the
# output once more: two roundings at the activation precision over a K-term reduction (derived_tolerance).
PROBLEM.tol_model = lambda dtype, s: (dtype, s["K"], 2.0)

# The benchmark targets, each timed next to the cuBLAS bf16 baseline (torch_bf16_dequant) in the same run:
# W4A16 g128 (sym and asym) M=1 >= 3.0x at 4096 x 14336 and >= 3.4x at 8192 x 28672, M=16 >= 2.5x, M=256 >= 1.0x;
# W8A16 M=1 >= 1.7x / >= 1.85x on the same two weights; W8A8 >= 90% of torch._int_mm at M >= 256.
_HEAD_KN = ((4096, 14336), (8192, 28672))
PROBLEM.headline = (
    [(PROBLEM.shape(M=1, N=n, K=k, scheme="w4a16", group=128, sym=sym), ("bf16",))
     for k, n in _HEAD_KN for sym in (True, False)]
    + [(PROBLEM.shape(M=m, N=14336, K=4096, scheme="w4a16", group=128, sym=sym), ("bf16",))
       for m in (16, 256) for sym in (True, False)]
    + [(PROBLEM.shape(M=1, N=n, K=k, scheme="w8a16", group=128, sym=True), ("bf16",)) for k, n in _HEAD_KN]
    + [(PROBLEM.shape(M=16, N=14336, K=4096, scheme="w8a16", group=128, sym=True), ("bf16",))]
    + [(PROBLEM.shape(M=256, N=14336, K=4096, scheme="w8a8", group=128, sym=True), ("bf16",))]
    # the same weights with outlier activation channels: every variant must stay finite and within tolerance
    + [(PROBLEM.shape(M=m, N=14336, K=4096, scheme="w4a16", group=128, sym=True, outliers=1), ("bf16", "fp16"))
       for m in (1, 16)]
    + [(PROBLEM.shape(M=1, N=14336, K=4096, scheme="w8a16", group=128, sym=True, outliers=1), ("bf16", "fp16"))]
)
