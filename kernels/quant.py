"""Weight and activation quantizers (plain torch) and their exact dequantizers.

These make the inputs of the ``quant_gemm`` family and define what "the quantized value" means; the float64 reference
is a matmul of exactly what the ``dequantize_*`` functions return (in float64), so a kernel is only allowed
accumulation error (plus, for dequantize-in-register W·A16 kernels, one rounding of each dequantized weight to the
activation dtype -- what every W4A16/W8A16 tensor-core kernel feeds its MMA).

Layouts (all row-major / contiguous unless stated):

* int8 weights, per output channel, symmetric: ``W [K, N] -> qw int8 [K, N], scale fp32 [N]``;
  ``W ~= qw * scale[None, :]``. An all-zero column gets scale 1 (and q = 0), never 0/0.
* int4 weights, group-wise along K (group g in {32, 64, 128, ...}, K % g == 0, g even):
  ``packed uint8 [K // 2, N]``: byte ``packed[p, n]`` holds ``k = 2p`` in its LOW nibble and ``k = 2p + 1`` in its
  HIGH nibble; nibbles are unsigned 0..15. ``scale [K // g, N]`` (dtype chosen by the caller: fp32, or fp16/bf16 as
  the GEMM problem stores them), ``zero uint8 [K // g, N]`` (asymmetric only, integer zero point 0..15).
  Symmetric: ``w = (nibble - 8) * scale`` (q in [-8, 7], scale = amax / 7, so -8 is never produced but decodes).
  Asymmetric: ``w = (nibble - zero) * scale`` (scale = (max - min) / 15, zero = round(-min / scale)).
* int8 activations, per token (row), symmetric: ``x [M, K] -> xq int8 [M, K], scale fp32 [M]``.
* fp8 e4m3 (``torch.float8_e4m3fn``, max 448): ``quantize_fp8(t, per="tensor" | "row" | "col")`` -> q and an fp32
  scale of shape [] / [rows] / [cols]; ``t ~= q * scale``.

Every quantizer computes its scale, rounds it to the storage dtype first, and quantizes with the *stored* scale, so
``dequantize(quantize(w))`` is the exact value a kernel sees. Bad shapes/dtypes raise ``ValueError`` naming the
expected form.
"""

from __future__ import annotations

import torch

FP8_DTYPE = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0

__all__ = [
    "quantize_int8_weight", "dequantize_int8_weight",
    "quantize_int4_weight", "dequantize_int4_weight", "pack_int4", "unpack_int4",
    "quantize_int8_activation", "dequantize_int8_activation",
    "quantize_fp8", "dequantize_fp8", "FP8_DTYPE", "FP8_MAX",
]


def _check_2d(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a 2-D tensor, got {got}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")


def _safe_scale(amax: torch.Tensor, qmax: float, dtype: torch.dtype) -> torch.Tensor:
    """amax / qmax rounded to the storage dtype; 0 (all-zero channel/group) -> 1 so that q = 0 and no 0/0."""
    s = (amax.to(torch.float32) / qmax).to(dtype)
    return torch.where(s > 0, s, torch.ones_like(s))


# ---------------------------------------------------------------------------------------------------- int8 weights
def quantize_int8_weight(w: torch.Tensor, scale_dtype: torch.dtype = torch.float32):
    """W [K, N] float -> (qw int8 [K, N], scale [N]); symmetric per output channel, |q| <= 127."""
    _check_2d(w, "w")
    wf = w.to(torch.float32)
    scale = _safe_scale(wf.abs().amax(dim=0), 127.0, scale_dtype)
    q = torch.round(wf / scale.to(torch.float32)[None, :]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantize_int8_weight(qw: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float64):
    """qw int8 [K, N], scale [N] -> W [K, N] in ``dtype`` (computed in float64, rounded once)."""
    if qw.dtype != torch.int8 or qw.dim() != 2:
        raise ValueError(f"qw must be int8 [K, N], got {qw.dtype} {tuple(qw.shape)}")
    if tuple(scale.shape) != (qw.shape[1],):
        raise ValueError(f"scale must be [N] = [{qw.shape[1]}], got {tuple(scale.shape)}")
    return (qw.to(torch.float64) * scale.to(torch.float64)[None, :]).to(dtype)


# ---------------------------------------------------------------------------------------------------- int4 weights
def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Unsigned nibbles [K, N] (any integer dtype, values 0..15, K even) -> packed uint8 [K // 2, N].

    Row p of the result holds k = 2p in the low nibble and k = 2p + 1 in the high nibble.
    """
    if q.dim() != 2 or q.is_floating_point():
        raise ValueError(f"pack_int4 expects integer nibbles [K, N], got {q.dtype} {tuple(q.shape)}")
    if q.shape[0] % 2:
        raise ValueError(f"pack_int4 needs an even K (two k per byte), got K={q.shape[0]}")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise ValueError("pack_int4 expects values in 0..15 (unsigned nibbles)")
    q = q.to(torch.uint8)
    return (q[0::2] | (q[1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """packed uint8 [K // 2, N] -> unsigned nibbles uint8 [K, N] (inverse of pack_int4)."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"packed int4 weights must be uint8 [K // 2, N], got {packed.dtype} {tuple(packed.shape)}")
    lo, hi = packed & 0xF, packed >> 4
    return torch.stack((lo, hi), dim=1).reshape(packed.shape[0] * 2, packed.shape[1])


def _check_group(k: int, group: int) -> None:
    if not isinstance(group, int) or group < 2 or group % 2:
        raise ValueError(f"group size must be a positive even integer, got {group!r}")
    if k % group:
        raise ValueError(f"K={k} is not divisible by the group size {group}; pad K or pick a group dividing it")


def quantize_int4_weight(w: torch.Tensor, group: int = 128, sym: bool = True,
                         scale_dtype: torch.dtype = torch.float32):
    """W [K, N] float -> (packed uint8 [K//2, N], scale [K//g, N], zero uint8 [K//g, N] or None).

    Symmetric: q = round(w / s) in [-8, 7] with s = amax / 7, stored as nibble q + 8.
    Asymmetric: s = (max - min) / 15, zero = clamp(round(-min / s), 0, 15), nibble = clamp(round(w / s) + zero).
    """
    _check_2d(w, "w")
    k, n = w.shape
    _check_group(k, group)
    wg = w.to(torch.float32).reshape(k // group, group, n)
    if sym:
        scale = _safe_scale(wg.abs().amax(dim=1), 7.0, scale_dtype)  # [K//g, N]
        q = torch.round(wg / scale.to(torch.float32)[:, None, :]).clamp_(-8, 7) + 8
        zero = None
    else:
        lo = wg.amin(dim=1).clamp(max=0.0)  # include 0 in the range so that 0 is exactly representable
        hi = wg.amax(dim=1).clamp(min=0.0)
        scale = _safe_scale(hi - lo, 15.0, scale_dtype)
        sf = scale.to(torch.float32)
        zero_f = torch.round(-lo / sf).clamp_(0, 15)
        q = (torch.round(wg / sf[:, None, :]) + zero_f[:, None, :]).clamp_(0, 15)
        zero = zero_f.to(torch.uint8).contiguous()
    packed = pack_int4(q.reshape(k, n).to(torch.uint8))
    return packed, scale.contiguous(), zero


def dequantize_int4_weight(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None,
                           group: int = 128, dtype: torch.dtype = torch.float64):
    """packed uint8 [K//2, N], scale [K//g, N], zero uint8 [K//g, N] | None -> W [K, N] in ``dtype``.

    (nibble - zero) * scale, zero = 8 when symmetric; computed in float64 and rounded once to ``dtype``.
    """
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"packed int4 weights must be uint8 [K // 2, N], got {packed.dtype} {tuple(packed.shape)}")
    k, n = packed.shape[0] * 2, packed.shape[1]
    _check_group(k, group)
    if tuple(scale.shape) != (k // group, n):
        raise ValueError(f"scale must be [K // group, N] = [{k // group}, {n}] for packed {tuple(packed.shape)} "
                         f"and group {group}, got {tuple(scale.shape)}")
    q = unpack_int4(packed).to(torch.float64).reshape(k // group, group, n)
    if zero is None:
        z = torch.full((k // group, 1, n), 8.0, dtype=torch.float64, device=packed.device)
    else:
        if tuple(zero.shape) != (k // group, n) or zero.is_floating_point():
            raise ValueError(f"zero must be integer [K // group, N] = [{k // group}, {n}], "
                             f"got {zero.dtype} {tuple(zero.shape)}")
        z = zero.to(torch.float64)[:, None, :]
    w = (q - z) * scale.to(torch.float64)[:, None, :]
    return w.reshape(k, n).to(dtype)


# ---------------------------------------------------------------------------------------------------- activations
def quantize_int8_activation(x: torch.Tensor):
    """x [M, K] float -> (xq int8 [M, K], scale fp32 [M]); symmetric per token (row)."""
    _check_2d(x, "x")
    xf = x.to(torch.float32)
    scale = _safe_scale(xf.abs().amax(dim=1), 127.0, torch.float32)
    q = torch.round(xf / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantize_int8_activation(xq: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float64):
    if xq.dtype != torch.int8 or xq.dim() != 2:
        raise ValueError(f"xq must be int8 [M, K], got {xq.dtype} {tuple(xq.shape)}")
    if tuple(scale.shape) != (xq.shape[0],):
        raise ValueError(f"scale must be [M] = [{xq.shape[0]}], got {tuple(scale.shape)}")
    return (xq.to(torch.float64) * scale.to(torch.float64)[:, None]).to(dtype)


# ---------------------------------------------------------------------------------------------------- fp8 e4m3
def quantize_fp8(t: torch.Tensor, per: str = "tensor"):
    """t [R, C] float -> (q float8_e4m3fn [R, C], scale fp32) with scale [] ("tensor"), [R] ("row") or [C] ("col").

    scale = amax / 448 so the largest magnitude maps to e4m3's max; q = t / scale rounded to nearest e4m3.
    """
    if FP8_DTYPE is None:
        raise ValueError("this torch has no float8_e4m3fn")
    _check_2d(t, "t")
    tf = t.to(torch.float32)
    if per == "tensor":
        scale = _safe_scale(tf.abs().amax(), FP8_MAX, torch.float32)
        q = (tf / scale).clamp_(-FP8_MAX, FP8_MAX)
    elif per == "row":
        scale = _safe_scale(tf.abs().amax(dim=1), FP8_MAX, torch.float32)
        q = (tf / scale[:, None]).clamp_(-FP8_MAX, FP8_MAX)
    elif per == "col":
        scale = _safe_scale(tf.abs().amax(dim=0), FP8_MAX, torch.float32)
        q = (tf / scale[None, :]).clamp_(-FP8_MAX, FP8_MAX)
    else:
        raise ValueError(f"per must be 'tensor', 'row' or 'col', got {per!r}")
    return q.to(FP8_DTYPE), scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor, per: str = "tensor", dtype: torch.dtype = torch.float64):
    if FP8_DTYPE is None or q.dtype != FP8_DTYPE or q.dim() != 2:
        raise ValueError(f"q must be float8_e4m3fn [R, C], got {q.dtype} {tuple(q.shape)}")
    qd, sd = q.to(torch.float64), scale.to(torch.float64)
    want = {"tensor": (), "row": (q.shape[0],), "col": (q.shape[1],)}
    if per not in want:
        raise ValueError(f"per must be 'tensor', 'row' or 'col', got {per!r}")
    if tuple(scale.shape) not in (want[per], (1,) if per == "tensor" else want[per]):
        raise ValueError(f"{per} scale must have shape {want[per]}, got {tuple(scale.shape)}")
    if per == "tensor":
        out = qd * sd.reshape(())
    elif per == "row":
        out = qd * sd[:, None]
    else:
        out = qd * sd[None, :]
    return out.to(dtype)
