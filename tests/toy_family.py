"""A toy family (y = 2·x + 1 over [M, N]) with correct variants, known-wrong ones and fault injectors.

It exercises the harness without any real kernel: the checker must reject every `wrong_*` variant and accept the
correct ones on every seed; the runner must survive every `fault_*` variant. Imported through WB_FAMILIES.
"""

from __future__ import annotations

import ctypes
import os
import time

import torch
import triton
import triton.language as tl

from harness.registry import DTYPE_SIZE, DTYPES, Problem, register


def make_inputs(shape, dtype, seed, device):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(shape.M, shape.N, generator=g, dtype=torch.float32) * 3 + 0.5
    return {"x": x.to(DTYPES[dtype]).to(device)}


def make_outputs(shape, dtype, device):
    return {"y": torch.empty(shape.M, shape.N, dtype=DTYPES[dtype], device=device)}


def reference(inputs, shape, dtype):
    return {"y": inputs["x"].to(torch.float64) * 2 + 1}


TOY = register(Problem(
    name="toy", dims=("M", "N"), dtypes=("fp32", "fp16", "bf16"), make_inputs=make_inputs, make_outputs=make_outputs,
    reference=reference, flops=lambda s: 2.0 * s.M * s.N,
    min_bytes=lambda s, d: 2.0 * s.M * s.N * DTYPE_SIZE[d],
    shapes=[], quick=[], throughput_unit="GB/s", description="toy: y = 2x + 1",
))
TOY.shapes = [TOY.shape(M=37, N=129)]
TOY.quick = [TOY.shape(M=3, N=17), TOY.shape(M=37, N=129)]


@triton.jit
def _axpb_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr, SHORT: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n - SHORT  # SHORT=1 is the classic off-by-one: the last element is never written
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)  # fp32 math (bf16 arithmetic is wrong in the interpreter)
    tl.store(y_ptr + offs, x * 2 + 1, mask=mask)


def _triton(inputs, out, shape, short=0):
    x, y = inputs["x"], out["y"]
    n = x.numel()
    _axpb_kernel[(triton.cdiv(n, 64),)](x, y, n, BLOCK=64, SHORT=short)


TOY.add_variant("triton_axpb", "triton", _triton, description="one masked pass")
TOY.add_variant("torch_out", "torch", lambda i, o, s: torch.add(i["x"] * 2, 1, out=o["y"]))
TOY.add_variant("torch_ref", "torch", lambda i, o, s: {"y": i["x"] * 2 + 1}, baseline=True, style="return")

# ---------------------------------------------------------------- known-wrong solutions (must all be rejected)
_cache: dict = {}


def _first_call_cached(i, o, s):
    if "y" not in _cache:
        _cache["y"] = i["x"] * 2 + 1
    o["y"].copy_(_cache["y"])


def _mutates(i, o, s):
    i["x"].mul_(1.0001)
    torch.add(i["x"] * 2, 1, out=o["y"])


def _one_nan(i, o, s):
    torch.add(i["x"] * 2, 1, out=o["y"])
    o["y"].view(-1)[o["y"].numel() // 2] = float("nan")


def _partial(i, o, s):
    o["y"][: max(1, s.M // 2)] = i["x"][: max(1, s.M // 2)] * 2 + 1


def _low_precision(i, o, s):
    o["y"].copy_((i["x"].to(torch.bfloat16) * 2 + 1).to(o["y"].dtype))


WRONG = {
    "wrong_zeros": lambda i, o, s: o["y"].zero_(),
    "wrong_unwritten": lambda i, o, s: None,
    "wrong_off_by_one_mask": lambda i, o, s: _triton(i, o, s, short=1),
    "wrong_mutates_input": _mutates,
    "wrong_cached_first_result": _first_call_cached,
    "wrong_one_nan": _one_nan,
    "wrong_transposed": lambda i, o, s: o["y"].copy_((i["x"] * 2 + 1).t().reshape(s.M, s.N)),
    "wrong_partial_write": _partial,
    "wrong_low_precision": _low_precision,
}
for name, fn in WRONG.items():
    TOY.add_variant(name, "triton" if "mask" in name else "torch", fn,
                    dtypes=("fp32",) if name == "wrong_low_precision" else None)
TOY.add_variant("wrong_dtype", "torch", lambda i, o, s: {"y": i["x"].double() * 2 + 1}, style="return")
TOY.add_variant("wrong_returns_input", "torch", lambda i, o, s: {"y": i["x"]}, style="return")


def _side_stream(i, o, s):  # GPU only: the work runs where the timing events do not look
    st = _cache.setdefault("stream", torch.cuda.Stream())
    st.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(st):
        for _ in range(50):
            torch.add(i["x"] * 2, 1, out=o["y"])


TOY.add_variant("suspect_side_stream", "torch", _side_stream,
                supports=lambda s, d: None if torch.cuda.is_available() else "needs a GPU (side streams)")

# ---------------------------------------------------------------- fault injectors (the run must survive them)
TOY.add_variant("fault_raise", "torch", lambda i, o, s: (_ for _ in ()).throw(RuntimeError("boom")))
TOY.add_variant("fault_hang", "torch", lambda i, o, s: time.sleep(3600))
TOY.add_variant("fault_exit", "torch", lambda i, o, s: os._exit(3))
TOY.add_variant("fault_segfault", "torch", lambda i, o, s: ctypes.string_at(0))
