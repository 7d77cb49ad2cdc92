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
* an fp16 result rounded through bf16 (a lower precision than declared);
* issue 29: writing the judge's memory, deferred work (patched ``Tensor.numel``, ``sys.setprofile``), stack walking
  to the harness' request, patched RNG and clocks, ``stats.__code__`` swapped, a thread rewriting outputs after the
  call, sabotage of the baseline's torch functions, a declared ``compute_dtype`` coarser than the family's.
"""

from __future__ import annotations

import builtins
import ctypes
import os
import random
import sys
import threading
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


def _busy_right(i, o):
    """The same answer after SLOW_S of CPU work (this thread's CPU clock: a patched perf_counter does not change
    it): what a variant would hide by deferring it."""
    end = time.thread_time() + SLOW_S
    while time.thread_time() < end:
        pass
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


# =========================================================================================== issue 29: the evidence
# Each attack below once passed (ok, with a speed-up). Now each must end incorrect, or suspect with no speed-up; the
# honest variant timed after each of them (a fresh worker) must get the time it gets alone.
CANARY_ENV = "WB_TEST_CANARY"  # "pid:address:length" of a buffer in the judge, set by the test
ATTACK_LOG_ENV = "WB_TEST_ATTACK_LOG"  # where the memory attack writes what each attempt returned


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def write_judge_memory(pid: int, addr: int, n: int, ptrace: bool = True) -> list[str]:
    """Overwrite n bytes at addr in process pid through /proc/<pid>/mem and process_vm_writev, and try to become its
    tracer (PTRACE_SEIZE: it does not stop the target); returns what each attempt did ("wrote" or the errno)."""
    log = []
    try:
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as f:
            f.seek(addr)
            f.write(b"X" * n)
        log.append("/proc/pid/mem: wrote")
    except OSError as e:
        log.append(f"/proc/pid/mem: errno {e.errno}")
    libc = ctypes.CDLL(None, use_errno=True)
    src = ctypes.create_string_buffer(b"Y" * n, n)
    local, remote = _Iovec(ctypes.addressof(src), n), _Iovec(addr, n)
    r = libc.process_vm_writev(pid, ctypes.byref(local), ctypes.c_ulong(1), ctypes.byref(remote), ctypes.c_ulong(1),
                               ctypes.c_ulong(0))
    log.append("process_vm_writev: wrote" if r == n else f"process_vm_writev: errno {ctypes.get_errno()}")
    if ptrace:
        r = libc.ptrace(ctypes.c_long(0x4206), ctypes.c_long(pid), None, None)  # PTRACE_SEIZE
        log.append("ptrace: attached" if r == 0 else f"ptrace: errno {ctypes.get_errno()}")
    return log


def _judge_memory(i, o, s):
    o["y"].zero_()  # wrong, then try to make the judge accept it
    pid, addr, n = (int(x) for x in os.environ[CANARY_ENV].split(":"))
    log = write_judge_memory(pid, addr, n) + write_judge_memory(os.getppid(), addr, n)
    with open(os.environ[ATTACK_LOG_ENV], "a") as f:
        f.write("\n".join(log) + "\n")


_PENDING: list = []
_PATCHED: dict = {}


def _run_pending():
    while _PENDING:
        i, o = _PENDING.pop()
        _busy_right(i, o)


def _numel_defer(i, o, s):
    """Returns at once; the work runs when the harness next calls Tensor.numel (it did so before copying a sample)."""
    if "numel" not in _PATCHED:
        orig = _PATCHED["numel"] = torch.Tensor.numel

        def numel(self):
            _run_pending()
            return orig(self)

        torch.Tensor.numel = numel
    _PENDING.append((i, o))


def _profile_defer(i, o, s):
    """Returns at once; the work runs from a profile hook at the harness' next Python call."""
    def hook(frame, event, arg):
        if event == "call" and _PENDING:
            sys.setprofile(None)
            _run_pending()
            sys.setprofile(hook)

    _PENDING.append((i, o))
    sys.setprofile(hook)


def _stack_walk(i, o, s):
    """Walks up the stack to the harness' request and computes only when the call is not timed (a check call)."""
    f = sys._getframe(1)
    while f is not None:
        for name in ("msg", "kw"):
            m = f.f_locals.get(name)
            kw = m.get("kw") if isinstance(m, dict) and m.get("op") == "call" else m if name == "kw" else None
            if isinstance(kw, dict) and "timed" in kw:
                if kw["timed"]:
                    o["y"].zero_()
                    return
                _slow_right(i, o)
                return
        f = f.f_back
    _slow_right(i, o)


_CALLS_RNG = {"n": 0}


def _rng_patch(i, o, s):
    """Makes the worker's sampling RNG never pick a later call, and stops computing after the three checks."""
    random.SystemRandom.randrange = lambda self, *a, **k: 10**9
    random.Random.randrange = lambda self, *a, **k: 10**9
    _CALLS_RNG["n"] += 1
    if _CALLS_RNG["n"] <= 3:
        _slow_right(i, o)


_REAL_PERF_COUNTER = time.perf_counter


def _timer_patch(i, o, s):
    """Honest work; every clock the worker could time it with runs 10x slow."""
    time.perf_counter = lambda: _REAL_PERF_COUNTER() / 10
    import harness.timing as tmm

    tmm.Backend.elapsed_ms = lambda self, a, b: (b - a) * 100.0
    _busy_right(i, o)


def _fake_stats(samples_ms, method, flush):
    return _ORIG_STATS([x / 10 for x in samples_ms], method, flush)


def _stats_code(i, o, s):
    """Honest work; harness.timing.stats' code swapped in place (same id(): an identity check by id() passes)."""
    import harness.timing as tmm

    if _ORIG_STATS is None:
        globals()["_ORIG_STATS"] = tmm.stats
    tmm.stats.__code__ = _fake_stats.__code__
    _busy_right(i, o)


_ORIG_STATS = None
_CALLS_THREAD = {"n": 0}


def _thread_rewrite(i, o, s):
    """Right on the three checks; afterwards it returns garbage at once and a thread does the work (SLOW_S of CPU)
    and writes the right answer after the output was handed over."""
    _CALLS_THREAD["n"] += 1
    if _CALLS_THREAD["n"] <= 3:
        _busy_right(i, o)
        return
    o["y"].zero_()

    def later(i, o):
        time.sleep(0.002)  # let the call return (the GIL is free) before the work starts
        _busy_right(i, o)

    threading.Thread(target=later, args=(dict(i), dict(o)), daemon=True).start()


def _sabotage_baseline(i, o, s):
    """Fast and right itself (torch.mul/torch.add), but makes Tensor.__mul__ -- which the baseline uses -- sleep."""
    if "mul" not in _PATCHED:
        orig = _PATCHED["mul"] = torch.Tensor.__mul__

        def slow_mul(a, b):
            time.sleep(SLOW_S)
            return orig(a, b)

        torch.Tensor.__mul__ = slow_mul
    torch.add(torch.mul(i["x"], 2), 1, out=o["y"])


for _name, _fn in (("cheat_judge_memory", _judge_memory), ("cheat_numel_defer", _numel_defer),
                   ("cheat_profile_defer", _profile_defer), ("cheat_stack_walk", _stack_walk),
                   ("cheat_rng_patch", _rng_patch), ("cheat_timer_patch", _timer_patch),
                   ("cheat_stats_code", _stats_code), ("cheat_thread_rewrite", _thread_rewrite),
                   ("cheat_sabotage_baseline", _sabotage_baseline)):
    TOY.add_variant(_name, "torch", _fn, dtypes=("fp32",))

# a declaration that could only loosen its own tolerance: fp8 "compute" for fp32, computed in bf16
TOY.add_variant("cheat_declares_fp8", "torch", lambda i, o, s: o["y"].copy_(_right(i).bfloat16()), dtypes=("fp32",),
                compute_dtype="fp8")
