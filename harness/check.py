"""Correctness: float64 references, poisoned outputs, relative + elementwise tolerances, NaN never passes.

A check fails (and the variant is never timed) when any of these holds for any output tensor:
shape or dtype differ from the expected output; an element is NaN/Inf where the reference is finite (so a NaN-poisoned
element the kernel never wrote fails); ``||out-ref|| / ||ref|| > tol.rel``; or some element has
``|out-ref| > tol.atol*rms(ref) + tol.rtol*|ref|`` (``atol`` is in units of the reference's root-mean-square, so the
bound means the same for softmax outputs of 1e-4 and GEMM outputs of 60). Integer outputs must match exactly. The
message names the first mismatching indices with both values.

The judge also checks what a call did besides its outputs: a ``style="return"`` variant's tensors must match the
problem's output spec exactly (dtype, shape, device, strides: ``expected_spec``), and no output may share a byte of
memory with an input or another output (``overlap``: address ranges, so views at an offset count too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from harness.registry import Tolerance


@dataclass
class CheckResult:
    ok: bool
    rel_err: float | None = None
    max_abs_err: float | None = None
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. recall for kNN

    def __bool__(self) -> bool:
        return self.ok


def f64(t: torch.Tensor) -> torch.Tensor:
    """Upcast floating tensors to float64 (the reference precision); integer tensors pass through."""
    return t.to(torch.float64) if (t.is_floating_point() or t.is_complex()) else t


def poison_(t: torch.Tensor) -> torch.Tensor:
    """NaN for floating outputs, the most negative value for integer ones: an unwritten element cannot pass."""
    if t.is_floating_point():
        t.fill_(float("nan"))
    elif t.dtype == torch.bool:
        t.fill_(True)
    else:
        t.fill_(torch.iinfo(t.dtype).min)
    return t


def _idx(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for s in reversed(shape):
        out.append(flat % s)
        flat //= s
    return tuple(reversed(out))


# The normwise bound of an output with n elements is tol.rel x (1 + SMALL_N / sqrt(n)): tol.rel (1.5x the rounding
# budget) is what the RMS error of many elements concentrates at; a few elements can each carry their worst case (a
# faithful rounding is off by up to one ulp, 2u), so one element may reach 4x the budget, 100 elements 1.75x.
SMALL_N = 5.0 / 3.0


def compare(name: str, out: Any, ref: torch.Tensor, tol: Tolerance, expected_dtype: torch.dtype | None = None,
            show: int = 3, scale: torch.Tensor | None = None) -> CheckResult:
    """``scale`` (optional, per element): the size of the terms behind each reference element (sum of |terms| /
    sqrt(reduction length), ``Problem.magnitude``). Where a sum cancels, |ref| understates the rounding error an
    honest result carries; the bounds then use max(|ref|, scale) instead of |ref|."""
    if not isinstance(out, torch.Tensor):
        return CheckResult(False, message=f"{name}: variant returned {type(out).__name__}, expected a tensor")
    if tuple(out.shape) != tuple(ref.shape):
        return CheckResult(False, message=f"{name}: shape {tuple(out.shape)} != expected {tuple(ref.shape)}")
    if expected_dtype is not None and out.dtype != expected_dtype:
        return CheckResult(False, message=f"{name}: dtype {out.dtype} != expected {expected_dtype}")
    r = ref.detach()
    o = out.detach().to(r.device)  # compared where the reference is (the judge's GPU): no copy to the host
    if not (r.is_floating_point() or o.is_floating_point()):
        bad = (o != r).reshape(-1)
        n = int(bad.sum())
        if n:
            first = bad.nonzero()[:show, 0].tolist()
            where = "; ".join(f"{_idx(i, tuple(r.shape))}: got {o.reshape(-1)[i].item()} want {r.reshape(-1)[i].item()}"
                              for i in first)
            return CheckResult(False, 1.0, None, f"{name}: {n} of {r.numel()} elements differ; first at {where}")
        return CheckResult(True, 0.0, 0.0)
    o, r = o.to(torch.float64), r.to(torch.float64)
    fin_r = torch.isfinite(r)
    fin_o = torch.isfinite(o)
    # non-finite reference positions must be matched exactly (same inf sign, or NaN for NaN)
    nf = ~fin_r
    nonfinite_bad = nf & ~((o == r) | (torch.isnan(o) & torch.isnan(r)))
    nan_bad = fin_r & ~fin_o
    diff = torch.where(fin_r & fin_o, (o - r).abs(), torch.zeros_like(r))
    rr = torch.where(fin_r, r, torch.zeros_like(r)).abs()
    if scale is not None:
        rr = torch.maximum(rr, torch.where(fin_r, scale.to(rr.device, torch.float64), torch.zeros_like(rr)))
    ref_norm = float(torch.linalg.vector_norm(rr))
    err_norm = float(torch.linalg.vector_norm(diff))
    rel = err_norm / ref_norm if ref_norm > 0 else err_norm
    rms = ref_norm / max(1, rr.numel()) ** 0.5
    rel_lim = tol.rel * (1.0 + SMALL_N / max(1, rr.numel()) ** 0.5)
    elem_bad = diff > (tol.atol * rms + tol.rtol * rr)
    bad = (nan_bad | nonfinite_bad | elem_bad).reshape(-1)
    max_abs = float(diff.max()) if diff.numel() else 0.0
    nbad = int(bad.sum())
    if int(nan_bad.sum()):
        rel = float("nan")
    if nbad or not rel <= rel_lim:
        parts = []
        if int(nan_bad.sum()):
            parts.append(f"{int(nan_bad.sum())} NaN/Inf where the reference is finite (unwritten or overflowed)")
        if nbad:
            first = bad.nonzero()[:show, 0].tolist()
            where = "; ".join(
                f"{_idx(i, tuple(r.shape))}: got {o.reshape(-1)[i].item():.6g} want {r.reshape(-1)[i].item():.6g}"
                for i in first)
            parts.append(f"{nbad} of {r.numel()} elements outside {tol.atol:.3g}*rms(ref)+{tol.rtol:.3g}*|ref| "
                         f"(rms {rms:.3g}); first at {where}")
        if not rel <= rel_lim:
            parts.append(f"rel. error {rel:.3g} > {rel_lim:.3g}")
        return CheckResult(False, rel, max_abs, f"{name}: " + "; ".join(parts))
    return CheckResult(True, rel, max_abs)


def check_outputs(outs: dict[str, Any], refs: dict[str, torch.Tensor], tol: Tolerance,
                  expected: dict[str, torch.Tensor] | None = None,
                  scales: dict[str, torch.Tensor] | None = None) -> CheckResult:
    """Compare every reference output; the result's rel_err is the worst over outputs. ``scales``: see compare."""
    if not isinstance(outs, dict):
        return CheckResult(False, message=f"variant returned {type(outs).__name__}, expected dict of outputs "
                                           f"{sorted(refs)}")
    missing = [k for k in refs if k not in outs]
    if missing:
        return CheckResult(False, message=f"missing outputs {missing}")
    worst = CheckResult(True, 0.0, 0.0)
    for k, ref in refs.items():
        exp_dtype = expected[k].dtype if expected and k in expected else None
        res = compare(k, outs[k], ref, tol, exp_dtype, scale=(scales or {}).get(k))
        if not res.ok:
            return res
        if res.rel_err is not None and (worst.rel_err is None or res.rel_err > worst.rel_err):
            worst.rel_err = res.rel_err
        if res.max_abs_err is not None:
            worst.max_abs_err = max(worst.max_abs_err or 0.0, res.max_abs_err)
    return worst


def inputs_unchanged(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> str | None:
    """None when every input tensor is bit-identical to its snapshot, else which one changed."""
    for k, t in before.items():
        if not isinstance(t, torch.Tensor):
            continue
        a = after.get(k)
        if a is None:
            return f"input {k!r} was not returned by the variant side"
        same = torch.equal(t.view(torch.uint8) if t.dtype.itemsize == 1 and t.is_floating_point() else t,
                           a.view(torch.uint8) if a.dtype.itemsize == 1 and a.is_floating_point() else a)
        if not same and not (t.is_floating_point() and torch.equal(torch.isnan(t), torch.isnan(a))
                             and torch.equal(torch.nan_to_num(t), torch.nan_to_num(a))):
            return f"input {k!r} was modified by the variant"
    return None


# ------------------------------------------------------------------------------------------ what else a call did
def tensor_spec(t: torch.Tensor) -> dict[str, Any]:
    return {"dtype": str(t.dtype), "shape": list(t.shape), "stride": list(t.stride()), "device": t.device.type}


def expected_spec(problem: Any, shape: Any, dtype: str, device_type: str) -> dict[str, dict[str, Any]]:
    """The output spec a variant must meet: ``problem.make_outputs`` on the meta device (no memory)."""
    try:
        outs = problem.make_outputs(shape, dtype, torch.device("meta"))
    except Exception:  # noqa: BLE001 - a family whose make_outputs needs a real device
        outs = problem.make_outputs(shape, dtype, torch.device("cpu"))
    return {k: {**tensor_spec(t), "device": device_type} for k, t in outs.items()}


def spec_mismatch(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> str | None:
    """None when every returned output has exactly the expected dtype, shape, strides and device. A missing output is
    the comparison's business (a family may make one optional: attention baselines return no LSE)."""
    for k, w in want.items():
        if k not in got:
            continue
        g = got[k]
        if "type" in g:
            return f"output {k!r}: variant returned {g['type']}, expected a tensor"
        for field_ in ("dtype", "shape", "device", "stride"):
            if field_ == "stride" and w["shape"] != g["shape"]:
                break
            if g[field_] != w[field_]:
                return (f"output {k!r}: {field_} {g[field_]} != expected {w[field_]} (outputs must match the "
                        f"problem's output spec exactly)")
    return None


def overlap(ranges: dict[str, tuple[int, int]]) -> str | None:
    """None when no two of the named [lo, hi) address ranges share a byte (outputs vs inputs and each other)."""
    items = sorted((lo, hi, name) for name, (lo, hi) in ranges.items() if hi > lo)
    for i, (_lo1, hi1, n1) in enumerate(items):
        for lo2, _hi2, n2 in items[i + 1:]:
            if lo2 >= hi1:  # sorted by start: nothing later can overlap this one
                break
            if n1.startswith("output") or n2.startswith("output"):
                return f"{n1} and {n2} share memory (storage overlap): an output must be its own buffer"
    return None
