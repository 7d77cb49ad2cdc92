"""Known-wrong submissions that attack the verdict itself (issue 15), each of which an isolated run must reject.

Registered on the toy family (y = 2x + 1) and on ``toy_copy`` (y = x, where returning the input looks right):

* rebinding instead of writing: ``out["y"] = <new tensor>`` (even float64), ``out["y"] = inputs["x"]``;
* return-style outputs that are the input itself, or have other strides than the spec;
* patching the checker (``harness.check``, ``torch.allclose``, ``Tensor.__sub__``, ``builtins.abs``) from inside a
  variant, which must change nothing for it or for the variants after it in the same worker;
* a lookup table that is right on public seeds (0-9, the old strict pool 10000+) and writes zeros elsewhere;
* memos (keyed on the data pointer, or on pointer + a sampled fingerprint) and a variant that stops computing once it
  has been checked: none may end ``ok`` with a speed-up;
* a variant that loosens its own tolerance (``Tolerance(1e9, ...)``) and writes zeros;
* an fp16 result rounded through bf16 (a lower precision than declared).
"""

from __future__ import annotations

import builtins
import time

import torch

import harness.check as hc
from harness.registry import DTYPE_SIZE, DTYPES, Problem, Tolerance, register
from tests.toy_family import TOY
from tests.toy_family import make_inputs as toy_inputs


def _right(i):
    return i["x"] * 2 + 1


# ------------------------------------------------------------------------------------------- rebinding / overlap
def _rebind_new(i, o, s):
    o["y"] = _right(i)


def _rebind_f64(i, o, s):
    o["y"] = i["x"].double() * 2 + 1


COPY = register(Problem(
    name="toy_copy", dims=("M", "N"), dtypes=("fp32",), make_inputs=toy_inputs,
    make_outputs=lambda s, d, dev: {"y": torch.empty(s.M, s.N, dtype=DTYPES[d], device=dev)},
    reference=lambda i, s, d: {"y": i["x"].to(torch.float64)}, flops=lambda s: 0.0,
    min_bytes=lambda s, d: 2.0 * s.M * s.N * DTYPE_SIZE[d], shapes=[], quick=[], throughput_unit="GB/s",
    description="toy copy: y = x (returning or rebinding to the input would look right)",
))
COPY.quick = [COPY.shape(M=5, N=33)]
COPY.add_variant("copy_ok", "torch", lambda i, o, s: o["y"].copy_(i["x"]))
COPY.add_variant("copy_ref", "torch", lambda i, o, s: {"y": i["x"].clone()}, baseline=True, style="return")
COPY.add_variant("cheat_rebind_to_input", "torch", lambda i, o, s: o.__setitem__("y", i["x"]))
COPY.add_variant("cheat_return_input", "torch", lambda i, o, s: {"y": i["x"]}, style="return")


COPY.add_variant("cheat_return_wrong_strides", "torch",
                 lambda i, o, s: {"y": i["x"].t().contiguous().t()}, style="return")

TOY.add_variant("cheat_rebind_new", "torch", _rebind_new)
TOY.add_variant("cheat_rebind_f64", "torch", _rebind_f64)


# ------------------------------------------------------------------------------------------- patching the checker
def _patch_everything(i, o, s):
    ok = hc.CheckResult(True, 0.0, 0.0)
    hc.compare = lambda *a, **k: ok
    hc.check_outputs = lambda *a, **k: ok
    hc.inputs_unchanged = lambda *a, **k: None
    torch.allclose = lambda *a, **k: True
    torch.Tensor.__sub__ = lambda a, b: torch.zeros_like(a)
    builtins.abs = lambda x: 0
    o["y"].zero_()


TOY.add_variant("cheat_patches_checker", "torch", _patch_everything)
TOY.add_variant("wrong_zeros_after_patch", "torch", lambda i, o, s: o["y"].zero_())

# ------------------------------------------------------------------------------------------- public seeds
_PUBLIC: dict = {}


def _lookup_table(i, o, s):
    x = i["x"]
    key = (tuple(x.shape), str(x.dtype))
    if key not in _PUBLIC:
        _PUBLIC[key] = {}
        for seed in [*range(10), *range(10_000, 10_016)]:
            xs = toy_inputs(s, {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[x.dtype],
                            seed, x.device)["x"]
            _PUBLIC[key][seed] = (xs, xs * 2 + 1)
    for xs, ys in _PUBLIC[key].values():
        if torch.equal(xs, x):
            o["y"].copy_(ys)
            return
    o["y"].zero_()


TOY.add_variant("cheat_public_seed_table", "torch", _lookup_table)

# ------------------------------------------------------------------------------------------- memos and laziness
SLOW_S = 0.004  # the honest work each memo saves: a memo that hits would time far below it
_MEMO: dict = {}


def _slow_right(i, o):
    time.sleep(SLOW_S)
    o["y"].copy_(_right(i))


def _memo_ptr(i, o, s):
    k = i["x"].data_ptr()
    if k in _MEMO:
        o["y"].copy_(_MEMO[k])
        return
    _slow_right(i, o)
    _MEMO[k] = o["y"].clone()


def _memo_fingerprint(i, o, s):
    x = i["x"].reshape(-1)
    k = (x.data_ptr(), float(x[0]), float(x[-1]), float(x[x.numel() // 2]))
    if k in _MEMO:
        o["y"].copy_(_MEMO[k])
        return
    _slow_right(i, o)
    _MEMO[k] = o["y"].clone()


_CALLS = {"n": 0}


def _lazy_after_check(i, o, s):
    """Computes for its first 3 calls (the correctness seeds), then returns at once."""
    _CALLS["n"] += 1
    if _CALLS["n"] <= 3:
        _slow_right(i, o)


TOY.add_variant("cheat_memo_pointer", "torch", _memo_ptr)
TOY.add_variant("cheat_memo_fingerprint", "torch", _memo_fingerprint)
TOY.add_variant("cheat_lazy_after_check", "torch", _lazy_after_check)
TOY.add_variant("slow_honest", "torch", lambda i, o, s: _slow_right(i, o))

# ------------------------------------------------------------------------------------------- tolerance games
TOY.add_variant("cheat_loose_tolerance", "torch", lambda i, o, s: o["y"].zero_(),
                tolerance={d: Tolerance(1e9, 1e9, 1e9) for d in ("fp32", "fp16", "bf16")})
TOY.add_variant("tight_tolerance_ok", "torch", lambda i, o, s: torch.add(i["x"] * 2, 1, out=o["y"]),
                tolerance={"fp32": Tolerance(1e-7, 1e-6, 1e-6)})
TOY.add_variant("cheat_bf16_rounded", "torch", lambda i, o, s: o["y"].copy_(_right(i).float().bfloat16()),
                dtypes=("fp16",))
