"""Run the registry: check every (variant, dtype, shape), time what is correct, write records as they finish.

The work is split between two sides that never share a process in an isolated run (the default); the threat model
and what each mechanism closes are in docs/verdicts.md.

* the **variant side** (``VariantSide``, in a fresh worker per task, forked from a zygote and confined by
  ``harness.sandbox``) runs submitted code and nothing else: one call at a time, on inputs the judge wrote into a
  shared arena, into output buffers in that arena;
* the **judge** (``judge_task``, in the parent) makes every input, computes the float64 reference and every verdict,
  and drives every call: it writes the inputs while the worker is stopped (SIGSTOP to its process group), continues
  it for exactly one call, stops it again and only then reads the outputs. Its own clock brackets each call; the
  timed calls it checks are chosen after they ran, with its own RNG, and copied while the worker cannot run. The
  paired baseline runs in a second fresh worker that never ran the variant's code.

Seeds are drawn fresh per run by the CLI (``--seeds`` replays given ones) and written into every record; the worker
never sees a seed. A crash, ``os._exit`` or hang kills only the worker: the record becomes ``runtime_error`` /
``timeout``. With ``isolate=False`` (``--no-isolate``, ``python -m harness check``) both sides share one process:
same protocol and checks, no isolation.

The tolerance of a record is the family's, derived from the dtype's unit roundoff and the reduction length
(``Problem.tol_for``); a variant may only tighten it, and the one used is written into the record.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import mmap
import os
import random
import secrets
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import check as chk
from harness import sandbox
from harness import timing as tm
from harness.records import fresh_seeds
from harness.registry import DTYPES, Problem, RegistryError, Shape, Variant, get_problem, interpreter


@dataclass
class Task:
    family: str
    variant: str
    dtype: str
    shape: str  # Shape.key(): the worker re-parses it with the problem

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.family, self.variant, self.dtype, self.shape)

    def label(self) -> str:
        return f"{self.family}/{self.variant} {self.dtype} {self.shape}"


@dataclass
class RunOptions:
    seeds: tuple[int, ...] = field(default_factory=fresh_seeds)  # drawn fresh (OS entropy); pass some to replay
    strict: bool = False  # check 16 randomly chosen timed outputs per record instead of `sample_checks`
    sample_checks: int = 3  # timed calls whose outputs are checked in full (chosen by the judge after the call)
    warmup_s: float = 0.1
    max_time_s: float = 1.0  # timing cap per record
    min_n: int = 10
    flush_l2: bool = True
    ab_rounds: int | None = None  # paired rounds vs the baseline (None: 30 on a GPU, 10 on the CPU)
    graph: bool = False  # also time N calls captured in one CUDA graph (µs-scale kernels)
    nvml: bool = True
    gpm: bool = False  # NVML GPM DRAM bandwidth per record (Hopper+; ~0.3 s each)
    timeout_s: float = 600.0  # per task, in the worker
    isolate: bool = True
    time_on_cpu: bool = True  # time torch/interpreter variants on the CPU (labelled "cpu")
    timing: bool = True  # False: correctness only (--check-only), on any device
    # spot checks (Problem.spot): when the float64 reference of one check, measured on the judge's device, would take
    # more than spot_budget_s, each check compares SPOT_SLICES (or more, as the budget buys) output slices drawn
    # uniformly after the call (see spot_plan)
    spot_budget_s: float = 1.0

    @property
    def n_samples(self) -> int:
        return 16 if self.strict else max(3, self.sample_checks)


def device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def baseline_of(problem: Problem, dtype: str, shape: Shape, exclude: str | None = None) -> Variant | None:
    for v in problem.variants.values():
        if v.baseline and v.name != exclude and v.skip_reason(shape, dtype) is None:
            return v
    return None


def base_record(problem: Problem, v: Variant, dtype: str, shape: Shape) -> dict[str, Any]:
    flops = float(problem.flops(shape))
    nbytes = float(problem.min_bytes(shape, dtype))
    prec = problem.precision_label(dtype, shape, v)
    return {
        "family": problem.name, "variant": v.name, "backend": v.backend, "baseline": v.baseline, "dtype": dtype,
        "dtype_label": prec, "shape": shape.key(), "shape_dims": dict(shape), "status": None, "message": "",
        "description": v.description, "ladder": v.ladder, "rel_err": None, "max_abs_err": None, "median_ms": None,
        "p10_ms": None, "p90_ms": None, "mean_ms": None, "stderr_ms": None, "n": 0, "samples_ms": [],
        "flops": flops, "bytes": nbytes, "tflops": None, "gbps": None, "intensity": flops / nbytes if nbytes else None,
        "compute_dtype": v.roof_dtype or v.compute_dtype or (problem.compute_dtype(dtype, shape)
                                                             if problem.compute_dtype else dtype),
        "throughput_unit": problem.throughput_unit, "timing": None, "resources": None, "seeds": [],
        "tolerance": None, "sampled_checks": 0, "flags": [],
        "extra": {}, "suspect": False, "suspect_reasons": [], "speedup_vs_baseline": None, "speedup_ci95": None,
        "interpreted": False,  # True: a CUDA variant run by the CPU interpreter (harness.interp): checked, not timed
        "speedup_text": None, "baseline_name": None,
    }


def variant_inputs(v: Variant, inputs: dict, shape: Shape) -> dict:
    """What a call passes the variant: the judge's inputs, plus, for a library baseline that keeps its own layout
    (``Variant.prepare``: FAISS's index object), that layout built from them here, outside the timed region, for
    every call. Payloads and checks use ``inputs`` itself."""
    if v.prepare is None:
        return inputs
    return {**inputs, "_prepared": v.prepare(inputs, shape)}


def _call_variant(v: Variant, inputs: dict, outs: dict | None, shape: Shape) -> Any:
    if v.style == "out":
        v.fn(inputs, outs, shape)
        return outs
    return v.fn(inputs, None, shape)


def _to(tensors: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    """Private copies on ``dev`` (never the caller's tensors: the judge's inputs must stay out of a variant's reach)."""
    return {k: (t.detach().to(dev, copy=True) if isinstance(t, torch.Tensor) else t) for k, t in tensors.items()}


def _cpu(tensors: dict[str, Any]) -> dict[str, Any]:
    """Private CPU copies; non-tensor values (a saxpy's ``a``, sgemm's alpha) as they are."""
    return {k: (t.detach().to("cpu", copy=True) if isinstance(t, torch.Tensor) else t) for k, t in tensors.items()}


def _range(t: torch.Tensor) -> tuple[int, int]:
    """[first, last) byte address this tensor's elements can touch (its view, not the whole storage)."""
    if t.numel() == 0:
        return (0, 0)
    lo = t.data_ptr()
    span = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) + 1
    return (lo, lo + span * t.element_size())


# ============================================================================================ the arena
ALIGN = 256  # bytes: every buffer in the arena starts on a 256-byte boundary (vector loads, TMA's 16-byte rule)
_DT_NAMES = {str(t): t for t in DTYPES.values()} | {str(t): t for t in (torch.int32, torch.int64, torch.bool,
                                                                        torch.uint8, torch.float64)}


def _spec(t: torch.Tensor) -> dict[str, Any]:
    return {"dtype": str(t.dtype), "shape": list(t.shape), "stride": list(t.stride())}


def _span_bytes(spec: dict[str, Any]) -> int:
    if any(s == 0 for s in spec["shape"]):
        return 0
    n = sum((s - 1) * st for s, st in zip(spec["shape"], spec["stride"])) + 1
    return n * torch.empty((), dtype=_DT_NAMES[spec["dtype"]]).element_size()


def _view(base: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
    """The tensor described by ``spec`` at byte ``spec["offset"]`` of the uint8 tensor ``base``."""
    dt = _DT_NAMES[spec["dtype"]]
    size = max(_span_bytes(spec), 1)
    raw = base[spec["offset"]: spec["offset"] + size]
    return raw[: size - size % dt.itemsize].view(dt).as_strided(spec["shape"], spec["stride"])


class Arena:
    """The buffers a worker computes on, owned by the judge: every tensor input, the output buffers (``style="out"``)
    or the slots a worker copies returned outputs into (``style="return"``). On the CPU one shared memory file
    (memfd) both processes map; on a GPU device tensors shared by CUDA IPC. The judge writes them only while the
    worker is stopped and reads them only while it is stopped."""

    def __init__(self, problem: Problem, v: Variant, shape: Shape, dtype: str, inputs: dict[str, Any],
                 dev: torch.device, shared: bool = True):
        self.dev, self.style, self.inout = dev, v.style, tuple(problem.inout)
        self.scalar_keys = [k for k, t in inputs.items() if not isinstance(t, torch.Tensor)]
        outs = chk.expected_spec(problem, shape, dtype, dev.type)
        layout: dict[str, dict[str, dict[str, Any]]] = {"inputs": {}, "outputs": {}}
        off = 0
        for group, specs in (("inputs", {k: _spec(t) for k, t in inputs.items() if isinstance(t, torch.Tensor)}),
                             ("outputs", {k: {kk: o[kk] for kk in ("dtype", "shape", "stride")}
                                          for k, o in outs.items()})):
            for k, sp in specs.items():
                layout[group][k] = {**sp, "offset": off}
                off += -(-max(_span_bytes(sp), 1) // ALIGN) * ALIGN
        self.layout, self.size = layout, max(off, ALIGN)
        self.fd: int | None = None
        self._mm: mmap.mmap | None = None
        if dev.type == "cuda":
            self.base = torch.empty(self.size, dtype=torch.uint8, device=dev)
        elif shared:
            self.fd = os.memfd_create("wb-arena", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, self.size)
            self._mm = mmap.mmap(self.fd, self.size)
            self.base = torch.frombuffer(self._mm, dtype=torch.uint8)
        else:
            self.base = torch.empty(self.size, dtype=torch.uint8)
        self.inputs = {k: _view(self.base, sp) for k, sp in layout["inputs"].items()}
        self.outputs = {k: _view(self.base, sp) for k, sp in layout["outputs"].items()}

    def load(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Write one call's inputs; poison the outputs (an in-place output starts as its input). Returns the
        non-tensor inputs, which travel with the call message."""
        for k, t in self.inputs.items():
            t.copy_(inputs[k])
        for k, t in self.outputs.items():
            if k in self.inout and self.style == "out":
                t.copy_(inputs[k])
            else:
                chk.poison_(t)
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
        return {k: inputs[k] for k in self.scalar_keys}

    def read(self, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Private copies of the outputs (all, or the returned ``keys``)."""
        keys = list(self.outputs) if keys is None else [k for k in keys if k in self.outputs]
        return {k: self.outputs[k].clone() for k in keys}

    def inputs_now(self) -> dict[str, torch.Tensor]:
        return {k: t.clone() for k, t in self.inputs.items()}

    def close(self) -> None:
        self.inputs, self.outputs = {}, {}
        self.base = None  # type: ignore[assignment]
        if self._mm is not None:
            with contextlib.suppress(BufferError):
                self._mm.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ============================================================================================ the variant side
class VariantSide:
    """Everything that runs a variant's code, one call per request. Returns plain data: never a verdict, never an
    output (the judge reads those from the arena itself)."""

    def __init__(self, task: Task, opts: RunOptions):
        self.task = task
        self.opts = opts
        self.problem = get_problem(task.family)
        self.v = self.problem.variants[task.variant]
        self.shape = self.problem.parse_shape(task.shape)
        self.dtype = task.dtype
        self.dev = device()
        self.inputs: dict[str, torch.Tensor] = {}
        self.outs: dict[str, torch.Tensor] = {}
        self._noop_ret: dict[str, torch.Tensor] = {}
        self._be: tm.Backend | None = None
        self.interpreted = False  # a CUDA variant run by the CPU interpreter (harness.interp): set by prelim
        self._prepared: Any = None  # Variant.prepare's layout for the next call

    # --------------------------------------------------------------------------------------------- prelim
    def prelim(self) -> dict[str, Any]:
        """Skip reason, compile (CUDA), or {"status": None}: go ahead."""
        v, on_gpu = self.v, self.dev.type == "cuda"
        reason = v.skip_reason(self.shape, self.dtype)
        if reason:
            return {"status": "skipped", "message": reason}
        out: dict[str, Any] = {"status": None}
        if v.backend == "cuda":
            from harness import interp
            from harness.cuda import CompileError, _cublas_missing, nvcc_path

            interpreted = not on_gpu and interp.enabled()
            try:
                # the ptxas report needs nvcc; the CPU interpreter does not (its g++ build is checked below)
                if v.source and (not interpreted or nvcc_path() is not None):
                    try:
                        out["resources"] = {k: v.source.resources(k) for k in v.kernel_names(self.dtype)}
                    except CompileError as e:
                        # a missing cuBLAS stops nvcc, not the interpreter (it brings its own): no ptxas report then
                        if not (interpreted and _cublas_missing(str(e))):
                            raise
                        out["resources_note"] = str(e).split("\n", 1)[0]
                if interpreted and v.source is not None:
                    v.source.interp_library()  # a g++ error is this record's compile_error, not a crash later
            except CompileError as e:
                return {"status": "compile_error", "message": str(e).split("\n", 1)[0],
                        "compile_log": str(e).split("\n", 1)[-1][-4000:]}
            if interpreted:
                out["interpreted"] = self.interpreted = True
            elif not on_gpu:
                return {**out, "status": "compiled", "message": "compiled with nvcc; no GPU here to run it (CUDA "
                                                                "interpret mode is off: WB_CUDA_INTERPRET=0)"}
        if v.backend == "triton" and not on_gpu and not interpreter():
            return {"status": "skipped", "message": "Triton needs a GPU, or TRITON_INTERPRET=1 on the CPU"}
        torch.backends.cuda.matmul.allow_tf32 = False  # library baselines: no silent TF32
        torch.backends.cudnn.allow_tf32 = False
        return out

    # --------------------------------------------------------------------------------------------- the arena
    def attach(self, layout: dict[str, Any], base: torch.Tensor, timed: bool = True) -> dict[str, Any]:
        """Views of the judge's arena (``base``: the mapped memfd, or the IPC-shared device tensor); returns the
        launch overhead of this device, measured here before any variant code has run (when ``timed``)."""
        self.inputs = {k: _view(base, sp) for k, sp in layout["inputs"].items()}
        bufs = {k: _view(base, sp) for k, sp in layout["outputs"].items()}
        if self.v.style == "out":
            self.outs = bufs
        else:
            self.slots = bufs
            self._noop_ret = {k: torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=self.dev)
                              for k, t in bufs.items()}
        self._be = tm.CudaBackend(self.dev, self.opts.flush_l2) if self.dev.type == "cuda" else tm.Backend()
        return {"launch_overhead_ms": tm.launch_overhead_ms(self.dev, backend=self._be) if timed else None}

    # --------------------------------------------------------------------------------------------- one call
    def call(self, scalars: dict[str, Any], noop: bool = False, timed: bool = False, spin_ms: float = 0.0,
             sched: int | None = None) -> dict[str, Any]:
        """One call on the arena's current inputs. ``noop``: the harness' own empty call (the judge's calibration
        of this protocol, before any variant code ran). Returns {"ms": own clock (GPU events when timed on a
        GPU), "enq_ms": host time of the call, "meta": what the judge checks besides values}. ``sched``: the CPU
        interpreter's scheduling seed (block and thread order) for an interpreted CUDA variant."""
        if self.interpreted and not noop:
            return self._interpreted_call(scalars, sched)
        be, gpu = self._be, self.dev.type == "cuda"
        inputs = {**self.inputs, **scalars}  # a fresh dict per call: the variant may mutate it
        if self.v.prepare is not None and not noop:  # built by the ``prepare`` request just before this one
            prepared = self._prepared if self._prepared is not None else self.v.prepare(dict(inputs), self.shape)
            inputs["_prepared"], self._prepared = prepared, None
        given = dict(self.outs) if self.v.style == "out" else None
        outs = dict(given) if given is not None else None
        ev0 = None
        if gpu and timed:
            be.flush()
            be.spin(spin_ms)
            ev0 = be.record()
        h0 = time.perf_counter()
        if noop:
            got: Any = outs if self.v.style == "out" else dict(self._noop_ret)
        else:
            got = _call_variant(self.v, inputs, outs, self.shape)
        ev1 = be.record() if ev0 is not None else None
        h1 = time.perf_counter()
        meta = self._deliver(inputs, given, outs, got)
        if gpu:
            torch.cuda.synchronize()  # device-wide: work on any stream finishes inside the judge's bracket
        ms = be.elapsed_ms(ev0, ev1) if ev0 is not None else (h1 - h0) * 1e3
        return {"ms": ms, "enq_ms": (h1 - h0) * 1e3, "meta": meta}

    def prepare(self, scalars: dict[str, Any]) -> None:
        """``Variant.prepare`` (library baselines only: FAISS's index object) on this call's inputs, as a request of
        its own: outside the timed call and outside the judge's bracket of it."""
        self._prepared = self.v.prepare({**self.inputs, **scalars}, self.shape)

    def _interpreted_call(self, scalars: dict[str, Any], sched: int | None) -> dict[str, Any]:
        """A CUDA variant under the CPU interpreter: on private copies, each tensor its own storage (the
        interpreter's memcheck bounds a kernel's accesses by the storage a pointer came from: views of one arena
        would let it run from one buffer into the next), copied back into the arena after the call."""
        from harness import interp

        priv = {k: t.clone() for k, t in self.inputs.items()}
        given = {k: t.clone() for k, t in self.outs.items()} if self.v.style == "out" else None
        outs = dict(given) if given is not None else None
        interp.set_call(sched, {**priv, **(given or {})})  # the scheduling seed and the buffers' names
        h0 = time.perf_counter()
        got = _call_variant(self.v, {**priv, **scalars}, outs, self.shape)
        h1 = time.perf_counter()
        meta = self._deliver({**priv, **scalars}, given, outs, got)
        for k, t in priv.items():  # a kernel that wrote its inputs shows in the arena, where the judge looks
            self.inputs[k].copy_(t)
        for k, t in (given or {}).items():
            self.outs[k].copy_(t)
        return {"ms": (h1 - h0) * 1e3, "enq_ms": (h1 - h0) * 1e3, "meta": meta}

    def _deliver(self, inputs: dict, given: dict | None, outs: dict | None, got: Any) -> dict[str, Any]:
        """What the judge cannot see in the arena: rebinding, returned specs and address ranges. A returned output
        whose spec matches the problem's is copied into its arena slot (inside the judge's bracket)."""
        meta: dict[str, Any] = {"device": self.dev.type, "ranges": {}}
        for k, t in inputs.items():
            if isinstance(t, torch.Tensor):
                meta["ranges"][f"input {k!r}"] = _range(t)
        if self.v.style == "out":
            meta["rebound"] = sorted(k for k in given if not (isinstance(outs, dict) and outs.get(k) is given[k]))
            for k, t in given.items():
                meta["ranges"][f"output {k!r}"] = _range(t)
            return meta
        if not isinstance(got, dict):
            meta["returned"] = type(got).__name__
            return meta
        meta["spec"], meta["copied"] = {}, []
        for k, t in got.items():
            if not isinstance(t, torch.Tensor):
                meta["spec"][k] = {"type": type(t).__name__}
                continue
            meta["spec"][k] = chk.tensor_spec(t)
            meta["ranges"][f"output {k!r}"] = _range(t)
            slot = self.slots.get(k)
            if slot is not None and t.dtype == slot.dtype and tuple(t.shape) == tuple(slot.shape) \
                    and t.device.type == slot.device.type:
                slot.copy_(t)
                meta["copied"].append(k)
        return meta

    # --------------------------------------------------------------------------------------------- GPU extras
    def graph(self, seed_base: int) -> dict[str, Any]:
        """Per-call time of N calls captured in one CUDA graph (worker-reported: docs/verdicts.md)."""
        outs = dict(self.outs) if self.v.style == "out" else None
        inputs = dict(self.inputs)
        made = [0]

        def call(i: int) -> None:
            _call_variant(self.v, inputs, outs, self.shape)

        def refill(i: int) -> None:  # a graph replays fixed addresses: new contents, same buffers
            fresh = self.problem.make_inputs(self.shape, self.dtype, seed_base + made[0], self.dev)
            made[0] += 1
            for k, x in fresh.items():
                if isinstance(x, torch.Tensor):
                    inputs[k].copy_(x)

        try:
            return tm.time_graph(call, prepare=refill, device=self.dev, flush_l2=self.opts.flush_l2).as_dict()
        except Exception as e:  # noqa: BLE001 - capture can fail (host syncs, allocations): say why
            return {"note": f"graph timing unavailable: {type(e).__name__}: {e}"[:300]}

    def gpm(self) -> dict[str, Any]:
        outs = dict(self.outs) if self.v.style == "out" else None
        try:
            from harness.device import gpm_dram_bw

            return gpm_dram_bw(lambda: _call_variant(self.v, dict(self.inputs), outs, self.shape))
        except Exception as e:  # noqa: BLE001
            return {"available": False, "note": f"{type(e).__name__}: {e}"}


# --------------------------------------------------------------------------------------------- tamper check
def _sig(x: Any) -> tuple:
    """Identity of a callable, deep enough that swapping ``__code__`` (same id()) shows: the code's hash (bytecode,
    constants, names), its globals, defaults and closure cells."""
    f = getattr(x, "__func__", x)
    me = (id(f), id(getattr(x, "__self__", None))) if f is not x else (id(x),)  # a bound method is made per lookup
    if f is x and type(x).__name__ == "builtin_function_or_method" and not isinstance(getattr(x, "__self__", None),
                                                                                       type(sys)):
        me = (id(getattr(x, "__self__", None)), x.__name__)  # a classmethod of a C type: also made per lookup
    code = getattr(f, "__code__", None)
    if code is None:
        return me
    cells = ()
    for c in getattr(f, "__closure__", None) or ():
        try:
            cells += (id(c.cell_contents),)
        except ValueError:
            cells += (None,)
    return (*me, id(code), hash(code), id(getattr(f, "__globals__", None)), id(getattr(f, "__defaults__", None)),
            id(getattr(f, "__kwdefaults__", None)), cells)


def _integrity() -> dict[str, Any]:
    """What the worker's harness code and the judge's protocol rely on, taken before the first variant call and
    compared after the task: functions and classes of the harness modules (class attributes included), the torch,
    time, os, random and connection functions they call, profile/trace/GC/import hooks, the RNG objects and the
    Python threads alive. A change marks the record suspect (no speed-up) and ends the worker. A defence in depth:
    no verdict, time or sampled output depends on the worker's own code (docs/verdicts.md)."""
    import multiprocessing.connection as mpc

    import harness.registry as reg_mod

    objs: dict[str, Any] = {f"builtins.{k}": x for k, x in vars(builtins).items() if callable(x)}
    for mod in (tm, chk, sandbox, reg_mod, sys.modules[__name__]):
        for k, x in vars(mod).items():
            if callable(x) and getattr(x, "__module__", mod.__name__) == mod.__name__:
                objs[f"{mod.__name__}.{k}"] = x
                if isinstance(x, type):
                    for a, y in vars(x).items():
                        objs[f"{mod.__name__}.{k}.{a}"] = y
    # every torch function, Tensor method and torch.nn.functional entry: a variant that replaces one (to slow a
    # baseline or an honest variant down, in its own worker) is flagged, though none of them runs in the judge
    for mod, prefix in ((torch, "torch"), (torch.nn.functional, "torch.nn.functional")):
        for k, x in vars(mod).items():
            if callable(x) and not isinstance(x, type):
                objs[f"{prefix}.{k}"] = x
    for k in dir(torch.Tensor):  # inherited ones too (Tensor.__mul__ lives on torch._C.TensorBase)
        with contextlib.suppress(Exception):
            x = getattr(torch.Tensor, k)
            if callable(x):
                objs[f"torch.Tensor.{k}"] = x
    for name in ("synchronize", "Event", "Stream", "current_stream", "_sleep"):
        if hasattr(torch.cuda, name):
            objs[f"torch.cuda.{name}"] = getattr(torch.cuda, name)
    if hasattr(torch.cuda, "Event"):
        for a in ("record", "elapsed_time", "synchronize"):
            objs[f"torch.cuda.Event.{a}"] = getattr(torch.cuda.Event, a)
    for name in ("randn", "rand", "randint", "empty", "empty_strided", "equal", "allclose", "isfinite", "softmax",
                 "matmul", "frombuffer", "set_num_threads"):
        objs[f"torch.{name}"] = getattr(torch, name)
    for name in ("perf_counter", "perf_counter_ns", "monotonic", "time", "sleep"):
        objs[f"time.{name}"] = getattr(time, name)
    for name in ("read", "write", "kill", "killpg", "getpid", "_exit"):
        objs[f"os.{name}"] = getattr(os, name)
    for cls in (random.Random, random.SystemRandom, mpc.Connection):
        for a, y in vars(cls).items():
            objs[f"{cls.__module__}.{cls.__name__}.{a}"] = y
    sig = {k: _sig(x) for k, x in objs.items()}
    sig["hook:sys.profile"] = (id(sys.getprofile()),)
    sig["hook:sys.trace"] = (id(sys.gettrace()),)
    sig["hook:threading.profile"] = (id(getattr(threading, "_profile_hook", None)),)
    sig["hook:threading.trace"] = (id(getattr(threading, "_trace_hook", None)),)
    import gc

    sig["hook:gc.callbacks"] = tuple(id(c) for c in gc.callbacks)
    sig["hook:sys.meta_path"] = tuple(id(c) for c in sys.meta_path)
    sig["rng:random._inst"] = (id(random._inst), id(type(random._inst)))  # type: ignore[attr-defined]
    for mod in ("time", "os", "random", "torch", "harness.timing", "harness.check", "harness.sandbox", __name__):
        sig[f"sys.modules[{mod!r}]"] = (id(sys.modules.get(mod)),)
    return sig


def _threads_now() -> list[str]:
    """Python threads other than this one (a thread started by the variant keeps running between calls)."""
    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    return sorted(names.get(i, f"unregistered thread {i}") for i in sys._current_frames() if i != me)


# --------------------------------------------------------------------------------------------- the worker
def worker_preload() -> None:
    """What the zygote imports once for every worker it forks: torch, the harness, every family."""
    from harness.registry import load_all

    load_all()


def worker_main(fd: int, isolation: dict[str, Any] | None = None) -> None:
    """A fresh worker: confine (unless the exec'd entry did so already), then serve one task's requests on ``fd``
    until the judge closes the connection."""
    import socket
    from multiprocessing import reduction
    from multiprocessing.connection import Connection

    if isolation is None:
        isolation = sandbox.confine_worker()
    sandbox.after_reparent()
    try:  # a crashing variant should die at once, not spend seconds writing a multi-GB core file
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    with contextlib.suppress(ValueError, OSError, AttributeError):
        import signal  # a fatal-signal handler a library installed (symbolising a stack trace) can stall dying

        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    worker_preload()
    conn = Connection(fd)
    raw = socket.socket(fileno=os.dup(fd))
    conn.send({"ready": os.getpid(), "isolation": isolation, "confined": sandbox.confinement_complete(isolation)})
    side: VariantSide | None = None
    clean: dict[str, Any] | None = None
    threads0: list[str] = []
    keep: list[Any] = []
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as e:  # noqa: BLE001 - unpickling failed: the GPU arena's CUDA IPC handle, say
            conn.send({"error": f"worker could not receive a request: {type(e).__name__}: {e}",
                       "traceback": traceback.format_exc(limit=6)})
            continue
        if msg is None:
            return
        op = msg["op"]
        try:
            if op == "begin":
                if msg.get("crash_file"):
                    os.environ["WB_INTERP_CRASH_FILE"] = msg["crash_file"]
                side = VariantSide(Task(**msg["task"]), RunOptions(**msg["opts"]))
                if side.dev.type == "cpu":  # torch's intra-op threads pinned for this worker's life (one task)
                    torch.set_num_threads(tm.default_cpu_threads())
                reply: Any = {"ok": True}
            elif op == "attach":
                if msg.get("tensor") is not None:  # the GPU arena: a CUDA tensor shared by IPC
                    base = msg["tensor"]
                else:
                    afd = reduction.recvfds(raw, 1)[0]
                    mm = mmap.mmap(afd, msg["size"])
                    os.close(afd)
                    base = torch.frombuffer(mm, dtype=torch.uint8)
                keep[:] = [base]  # the previous task's arena (a reused worker) is let go
                reply = {"ok": True, "value": side.attach(msg["layout"], base, msg.get("timed", True))}
            elif op == "call":
                if clean is None and not msg.get("noop"):  # the state before the first variant call
                    clean, threads0 = _integrity(), _threads_now()
                reply = {"ok": True, "value": side.call(**msg["kw"])}
            elif op == "end":
                now = _integrity() if clean is not None else {}
                # what was there before the first variant call and changed or went away (torch may add attributes)
                tampered = sorted(k for k in (clean or {}) if clean[k] != now.get(k))
                extra = [t for t in _threads_now() if t not in threads0]
                reply = {"tampered": tampered + [f"thread still running: {t}" for t in extra]}
            else:
                reply = {"ok": True, "value": getattr(side, op)(**msg.get("kw", {}))}
        except Exception as e:  # the variant's failure (or a harness bug on the variant side): reported, not fatal
            status, message = failure_of(e)
            reply = {"error": message, "status": status, "traceback": traceback.format_exc(limit=6)}
        conn.send(reply)


# ============================================================================================ the judge
class VariantFailed(Exception):
    """The variant raised (or its worker died) on the variant side: becomes a runtime_error / timeout record."""

    def __init__(self, status: str, message: str, tb: str = "", recycle: bool = False):
        super().__init__(message)
        self.status, self.message, self.tb, self.recycle = status, message, tb, recycle


# Spot checks. A check compares SPOT_SLICES output slices drawn uniformly without replacement. A variant wrong in a
# fraction f = 1% of the slices passes one check with p <= (1 - f)^R; the three checks of one kind in a record (the
# three seeds, or the three sampled timed calls) with p <= (1 - f)^(3R). 3R >= ln(1000) / -ln(0.99) = 687.3 gives
# p <= 0.001: R = 230 (p = 0.99^690 = 9.7e-4). --strict checks 4x as many; a check draws more when the measured
# budget allows.
SPOT_MISS, SPOT_CONFIDENCE, SPOT_CHECKS = 0.01, 0.999, 3
SPOT_SLICES = math.ceil(math.log(1 - SPOT_CONFIDENCE) / (SPOT_CHECKS * math.log(1 - SPOT_MISS)))
GPU_FP64_FLOPS_ESTIMATE = 4e13  # H100/H200 DGEMM ~50-67 TF, less for the rest of a reference: an estimate
_CPU_FP64: list[float] = []


def cpu_fp64_flops() -> float:
    """This CPU's float64 matmul rate (FLOP/s), measured once per process on 256³ (best of 5; ~10 ms)."""
    if not _CPU_FP64:
        a = torch.randn(256, 256, dtype=torch.float64)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
        _CPU_FP64.append(2 * 256**3 / max(best, 1e-9))
    return _CPU_FP64[0]


def ref_seconds_per_slice(problem: Problem, shape: Shape, dtype: str, inputs: dict[str, Any],
                          dev: torch.device) -> float:
    """The float64 reference and comparison of one output slice (``problem.spot_dim``), measured on ``dev`` with the
    judge's own inputs: the best of two runs on up to 4 slices (the first may initialise libraries)."""
    n = int(shape[problem.spot_dim])
    idx = torch.arange(min(n, 4))
    outs = {k: torch.zeros(t["shape"], dtype=_DT_NAMES[t["dtype"]], device=dev)
            for k, t in chk.expected_spec(problem, shape, dtype, dev.type).items()}
    best = float("inf")
    for _ in range(2):
        _sync()
        t0 = time.perf_counter()
        si, so, ss = problem.spot(inputs, outs, shape, idx)
        ref = problem.reference(si, ss, dtype)
        chk.check_outputs({k: r.to(so[k].dtype) if k in so else r for k, r in ref.items()}, ref,
                          problem.tol_for(dtype, ss)[0])
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best / len(idx)


def spot_plan(problem: Problem, shape: Shape, opts: RunOptions, per_slice_s: float | None = None,
              dev: torch.device | None = None) -> dict[str, Any] | None:
    """Whether checks of this shape compare a random subset of output slices (see Problem.spot), and how many.

    Only where the float64 reference and comparison of one check would take more than ``opts.spot_budget_s``:
    ``per_slice_s`` is measured by the judge on its device (``ref_seconds_per_slice``); without it (planning) the
    cost is estimated from the FLOPs: this CPU's measured fp64 rate, or ``GPU_FP64_FLOPS_ESTIMATE`` on a GPU (the
    plan then says "estimate"). Each check draws max(SPOT_SLICES, what the budget buys) slices uniformly, after the
    call; NaN is searched in the whole output."""
    if problem.spot is None or problem.spot_dim is None:
        return None
    n = int(shape[problem.spot_dim])
    strict = 4 if opts.strict else 1
    rows = SPOT_SLICES * strict
    if n <= rows:
        return None
    dev = dev or device()
    measured = per_slice_s is not None
    if per_slice_s is None:
        rate = GPU_FP64_FLOPS_ESTIMATE if dev.type == "cuda" else cpu_fp64_flops()
        per_slice_s = float((problem.ref_flops or problem.flops)(shape)) / n / rate
    budget = opts.spot_budget_s * strict
    full_s = per_slice_s * n
    if full_s <= budget:
        return None
    rows = max(rows, min(n, int(budget / max(per_slice_s, 1e-12))))
    if rows >= n:
        return None
    return {"dim": problem.spot_dim, "rows": rows, "of": n, "full_ref_s": round(full_s, 3),
            "checked_ref_s": round(per_slice_s * rows, 3),
            "cost": f"measured on {dev.type}" if measured else
            ("estimate (GPU fp64 rate not measured)" if dev.type == "cuda" else "estimate (this CPU's fp64 rate)"),
            "how": f"{rows} of {n} slices drawn uniformly after each call (1% wrong slices pass 3 checks with "
                   f"p <= {(1 - SPOT_MISS) ** (SPOT_CHECKS * rows):.1e}); NaN checked in the whole output"}


def spot_indices(n: int, rows: int) -> torch.Tensor:
    """``rows`` distinct indices of range(n), drawn uniformly (OS entropy), sorted."""
    g = torch.Generator().manual_seed(secrets.randbits(62))
    return torch.sort(torch.randperm(n, generator=g)[:rows]).values


def judge_payload(problem: Problem, v: Variant, dtype: str, shape: Shape, inputs: dict[str, Any],
                  pay: dict[str, Any], tol: chk.Tolerance, check_inputs: bool = True,
                  spot: dict[str, Any] | None = None) -> chk.CheckResult:
    """The verdict on one call, from the judge's own inputs and reference: rebinding, output spec, storage overlap,
    inputs untouched, then the family's comparison (on a random subset of output slices when ``spot``)."""
    if pay.get("rebound"):
        k = pay["rebound"][0]
        return chk.CheckResult(False, message=f"out[{k!r}] was rebound to another tensor instead of written: the "
                                              f"harness judges the buffer it allocated (write into out[{k!r}])")
    if "returned" in pay:
        return chk.CheckResult(False, message=f"variant returned {pay['returned']}, expected a dict of outputs")
    if v.style == "return":
        bad = chk.spec_mismatch(pay.get("spec") or {}, chk.expected_spec(problem, shape, dtype, pay["device"]))
        if bad:
            return chk.CheckResult(False, message=bad)
    bad = chk.overlap(pay.get("ranges") or {})
    if bad:
        return chk.CheckResult(False, message=bad)
    if check_inputs:
        bad = chk.inputs_unchanged(_cpu(inputs), _cpu(pay.get("inputs_after") or {}))
        if bad:
            return chk.CheckResult(False, message=bad)
    outs = pay.get("outputs") or {}
    if spot is not None and isinstance(outs, dict):
        for k, t in outs.items():  # the whole output: an unwritten (NaN-poisoned) slice fails wherever it is
            if isinstance(t, torch.Tensor) and t.is_floating_point() and bool(torch.isnan(t).any()):
                n = int(torch.isnan(t).sum())
                return chk.CheckResult(False, float("nan"), None, f"{k}: {n} NaN of {t.numel()} (unwritten?)")
        with contextlib.suppress(IndexError, RuntimeError):  # wrong output shapes: the full comparison says so
            inputs, outs, shape = problem.spot(inputs, outs, shape, spot_indices(spot["of"], spot["rows"]))
    ref = problem.reference(inputs, shape, dtype)
    jdev = next((t.device for t in inputs.values() if isinstance(t, torch.Tensor)), torch.device("cpu"))
    if problem.check is not None:
        return problem.check(_to(outs, jdev), ref, inputs, shape, dtype, tol)
    return chk.check_outputs(outs, ref, tol, scales=_scales(problem, inputs, shape, dtype, ref))


MAG_MAX_ELEMS = 256  # outputs this small are judged against the size of their terms too (Problem.magnitude)


def _scales(problem: Problem, inputs: dict[str, Any], shape: Shape, dtype: str,
            ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Sum of |terms| / sqrt(reduction length) per element, for outputs of at most MAG_MAX_ELEMS elements: where a
    one-element sum cancels (sgemm's α·a·b + β·c at 1x1x1), |ref| alone would make roundoff look like an error. For
    random signs the scale is ~|ref| (so many-element outputs keep their bounds); only cancellation raises it."""
    if problem.magnitude is None or not any(isinstance(r, torch.Tensor) and r.numel() <= MAG_MAX_ELEMS
                                            for r in ref.values()):
        return None
    k = max(1, int(problem.tol_model(dtype, shape)[1])) if problem.tol_model else 1
    mag = problem.magnitude(inputs, shape, dtype)
    return {n: m.abs() / math.sqrt(k) for n, m in mag.items() if n in ref and ref[n].numel() <= MAG_MAX_ELEMS}


def _check_call(side: Any, arena: Arena, inputs: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """One untimed call on the judge's inputs; outputs and inputs-after read from the arena while it is stopped.
    ``seed`` (the check's) gives the CUDA interpreter its scheduling seed, through a one-way hash: reproducible
    with ``--seeds``, and no seed reaches a worker."""
    sched = None
    if seed is not None:
        import hashlib

        sched = int.from_bytes(hashlib.sha256(f"wb-sched-{seed}".encode()).digest()[:4], "little")
    _, _, val = side.run_call(arena, inputs, timed=False, sched=sched)
    return _payload(side, arena, val)


def _payload(side: Any, arena: Arena, val: dict[str, Any]) -> dict[str, Any]:
    meta = val["meta"]
    keys = meta.get("copied") if "copied" in meta else (None if "rebound" in meta else [])
    return {**meta, "outputs": arena.read(keys), "inputs_after": arena.inputs_now()}


def judge_task(task: Task, opts: RunOptions, side: Any,
               base_side: Callable[[Task], Any] | None = None) -> dict[str, Any]:
    """One record. ``side`` runs the variant (``LocalSide`` in-process, ``RemoteSide`` in a worker); ``base_side``
    makes a fresh side for the paired baseline. Everything that decides the verdict happens here. Never raises for a
    variant's own failure: the status says what happened."""
    problem = get_problem(task.family)
    v = problem.variants[task.variant]
    shape = problem.parse_shape(task.shape)
    dtype = task.dtype
    rec = base_record(problem, v, dtype, shape)
    dev = device()
    arena: Arena | None = None
    bside = None
    try:
        pre = side.call("prelim")
        rec["resources"] = pre.get("resources")
        if pre["status"]:
            rec.update(status=pre["status"], message=pre.get("message", ""))
            if pre.get("compile_log"):
                rec["compile_log"] = pre["compile_log"]
            return rec
        try:
            tol, tol_info = problem.tol_for(dtype, shape, v)
        except RegistryError as e:  # a declared precision the family does not accept
            rec.update(status="incorrect", message=str(e))
            return rec
        rec["tolerance"] = tol_info
        torch.backends.cuda.matmul.allow_tf32 = False  # the float64 reference never runs in TF32
        torch.backends.cudnn.allow_tf32 = False
        worst, extra = 0.0, {}
        first = problem.make_inputs(shape, dtype, opts.seeds[0], dev)
        arena = Arena(problem, v, shape, dtype, first, dev, shared=side.isolated)
        if pre.get("interpreted"):  # a CPU model of the GPU: its verdict counts, its speed means nothing
            rec.update(interpreted=True, timing="none")
            if pre.get("resources_note"):
                rec["resources_note"] = pre["resources_note"]  # why there is no ptxas report (nvcc could not build)
        timed = opts.timing and (dev.type == "cuda" or opts.time_on_cpu) and not pre.get("interpreted")
        att = side.attach(arena, timed)
        calib = _calibrate(side, arena, first) if timed else None  # before the first variant call
        spot = None
        if problem.spot is not None and int(shape[problem.spot_dim]) > SPOT_SLICES * (4 if opts.strict else 1):
            spot = spot_plan(problem, shape, opts, ref_seconds_per_slice(problem, shape, dtype, first, dev), dev)
        if spot is not None:
            rec["spot_check"] = spot
        for i, seed in enumerate(opts.seeds):
            inputs = first if i == 0 else problem.make_inputs(shape, dtype, seed, dev)
            pay = _check_call(side, arena, inputs, seed)
            res = judge_payload(problem, v, dtype, shape, inputs, pay, tol, spot=spot)
            rec["seeds"].append(seed)
            if not res.ok:
                rec.update(status="incorrect", message=f"seed {seed}: {res.message}", rel_err=res.rel_err,
                           max_abs_err=res.max_abs_err)
                return rec
            extra.update(res.extra)
            if res.rel_err is not None:
                worst = max(worst, res.rel_err)
                rec["max_abs_err"] = max(rec["max_abs_err"] or 0.0, res.max_abs_err or 0.0)
        rec["rel_err"] = worst
        _label_outputs(rec, extra)
        rec["extra"].update(extra)  # what the checks measured (kNN/ANN recall) belongs in check-only records too
        if pre.get("interpreted"):
            rec.update(status="ok", message="checked by the CUDA interpreter on the CPU (memcheck, racecheck, "
                                            "synccheck over every seed); not timed")
            return rec
        if not timed:
            rec.update(status="ok", message="checked; not timed (--check-only)" if not opts.timing
                       else "checked; not timed (--no-cpu-timing)")
            return rec
        on_gpu = dev.type == "cuda"
        rounds = opts.ab_rounds if opts.ab_rounds is not None else (30 if on_gpu else 10)
        base = None if v.baseline else baseline_of(problem, dtype, shape, exclude=v.name)
        if base is not None and not on_gpu and base.backend != v.backend:
            base = None  # a CPU timing of the Triton interpreter (or a Python loop) against ATen measures nothing
        if base is not None and rounds > 0 and base_side is not None:
            bside = _BaseSide(base_side(Task(task.family, base.name, dtype, task.shape)), problem, base, shape,
                              dtype, first, dev)
        tp = _time_record(problem, v, shape, dtype, opts, side, arena, calib, att, bside, rounds, dev)
        # the timed calls the judge kept, chosen after they ran: a memo, deferred work or a variant that only
        # computes when it is being checked ends here
        for s in tp["samples"]:
            inputs = problem.make_inputs(shape, dtype, s["seed"], dev)
            res = judge_payload(problem, v, dtype, shape, inputs, s, tol, check_inputs=False, spot=spot)
            if not res.ok:
                rec.update(status="incorrect", rel_err=res.rel_err, max_abs_err=res.max_abs_err,
                           message=_timed_failure(side, arena, problem, v, shape, dtype, inputs, s, tol, tp, res))
                return rec
        rec["sampled_checks"] = len(tp["samples"])
        rec["timed_seed_base"] = tp["seed_base"]
        rec["judge_clock"] = tp["judge_clock"]
        if opts.graph and on_gpu:
            tp["graph"] = side.call("graph", seed_base=secrets.randbits(31))
        if opts.gpm and on_gpu:
            tp["gpm"] = side.call("gpm")
        _fill_timing(rec, problem, shape, tp, base)
        return rec
    except VariantFailed as e:
        rec.update(status=e.status, message=e.message[:2000])
        if e.tb:
            rec["traceback"] = e.tb[-3000:]
        rec["_recycle_worker"] = e.recycle or dev.type == "cuda"  # a CUDA error can poison the context
        return rec
    finally:
        if bside is not None:
            bside.close()
        if arena is not None:
            arena.close()


def _label_outputs(rec: dict[str, Any], extra: dict[str, Any]) -> None:
    """A variant checked on part of its family's outputs (an attention baseline without the LSE) says so."""
    unchecked = [k for k, checked in (("lse", extra.get("lse_checked")),) if checked is False]
    if unchecked:
        rec["unchecked_outputs"] = unchecked
        rec["flags"] = list(dict.fromkeys([*rec["flags"], "partial"]))


def _timed_failure(side: Any, arena: Arena, problem: Problem, v: Variant, shape: Shape, dtype: str,
                   inputs: dict[str, Any], s: dict[str, Any], tol: chk.Tolerance, tp: dict[str, Any],
                   res: chk.CheckResult) -> str:
    """The message of a wrong timed output. The same input is run once more as a check call: when that output
    matches the timed one within the tolerance, the kernel is simply wrong (or imprecise) on this input; only when
    they differ beyond roundoff does the message blame cached, deferred or skipped work."""
    head = f"timed call {s['call']} of {tp['timed_calls']} (input seed {s['seed']})"
    try:
        again = _check_call(side, arena, inputs)
    except VariantFailed:
        again = None
    if again is not None:
        common = {k: chk.f64(t) for k, t in again["outputs"].items() if k in s["outputs"]}
        if common:
            same = chk.check_outputs({k: s["outputs"][k] for k in common}, common, tol)
            if same.ok:
                return (f"{head} produced a wrong output, and a check call on the same input gives the same result "
                        f"(within roundoff): {res.message}")
    return f"{head} produced a wrong output that differs from a check call on the same input beyond roundoff — " \
           f"cached, deferred or skipped work? {res.message}"


# --------------------------------------------------------------------------------------------- timing
JUDGE_GAP_FRAC = 0.10  # the judge's clock may see 10% more per call than the worker's own clock reports ...
JUDGE_GAP_ABS_MS = 0.02  # ... or 20 µs ...
JUDGE_GAP_OVERHEAD = 2.0  # ... or twice the protocol's median overhead, whichever is largest
# A sample is never below the judge's floor (``_floor``), which gives up 5% and one empty call's overhead so that an
# honest call's own, more precise clock wins (the judge's wake-up after a 4 ms call took ~0.1 ms more than after an
# empty one here)
FLOOR_SLACK = 0.05
# Work moved from call to call (every third call doing three calls' work) keeps the total the judge's clock sees but
# lowers the median: the 10%-trimmed mean of the judge's floors may be at most TRIMMED_MEAN_MAX x the median sample.
# Such a variant also leaves two outputs in three unfinished when the judge reads them (sampled: caught w.p. 1-1/27).
TRIMMED_MEAN_MAX = 2.0
CALIB_CALLS = 21


def _robust(vals: list[float]) -> tuple[float, float]:
    """(median, median + 3 robust sigmas): a scheduling hiccup during a few calls must not lower every floor."""
    a = np.asarray(vals)
    med = float(np.median(a))
    return med, med + 3 * 1.4826 * float(np.median(np.abs(a - med)))


def _calibrate(side: Any, arena: Arena, inputs: dict[str, Any]) -> dict[str, Any]:
    """The judge's bracket and the worker's CPU time of the harness' own empty call (same protocol, same output
    copies), CALIB_CALLS times, before any variant code has run in this worker: what a floor subtracts."""
    br, cpu = [], []
    for _ in range(CALIB_CALLS):
        b, c, _val = side.run_call(arena, inputs, timed=True, noop=True, spin_ms=0.0)
        br.append(b)
        cpu.append(c)
    med, hi = _robust(br[2:])  # the first calls warm caches and page in the arena
    out: dict[str, Any] = {"med_ms": med, "hi_ms": hi, "spin_ms": 0.0, "n": len(br) - 2, "cpu_hi_ms": None}
    if all(c is not None for c in cpu):
        out["cpu_med_ms"], out["cpu_hi_ms"] = _robust(cpu[2:])
    return out


class _BaseSide:
    """The paired baseline: its own worker (never ran the variant's code: ``_Workers.baseline``), arena and
    calibration."""

    def __init__(self, side: Any, problem: Problem, base: Variant, shape: Shape, dtype: str,
                 first: dict[str, Any], dev: torch.device):
        self.side = side
        pre = side.call("prelim")
        if pre["status"]:
            raise VariantFailed("runtime_error", f"paired baseline {base.name}: {pre['status']} "
                                                 f"{pre.get('message', '')}")
        self.arena = Arena(problem, base, shape, dtype, first, dev, shared=side.isolated)
        side.attach(self.arena)
        self.calib = _calibrate(side, self.arena, first)

    def close(self) -> None:
        self.arena.close()
        self.side.release()


def _time_record(problem: Problem, v: Variant, shape: Shape, dtype: str, opts: RunOptions, side: Any,
                 arena: Arena, calib: dict[str, float], att: dict[str, Any], bside: _BaseSide | None, rounds: int,
                 dev: torch.device) -> dict[str, Any]:
    """Time the variant, call by call, driven by the judge: every call sees inputs the judge made fresh (seed
    base + call number) and wrote while the worker was stopped. A sample is max(the worker's own clock, what the
    judge can prove the call took: ``_floor``). ``keep`` timed calls, chosen by the judge's own RNG after each call
    (reservoir sampling), are copied out of the arena while the worker is stopped and judged later."""
    on_gpu = dev.type == "cuda"
    rng = random.SystemRandom()
    keep = opts.n_samples
    reservoir: list[dict[str, Any]] = []
    st = {"n": 0, "made": 0}
    seed_base = secrets.randbits(31)
    floors: list[float] = []
    own: list[float] = []

    def fresh() -> tuple[int, dict[str, Any]]:
        seed = seed_base + 1 + st["made"]
        st["made"] += 1
        return seed, problem.make_inputs(shape, dtype, seed, dev)

    def one(s: Any, ar: Arena, cal: dict[str, Any], inputs: dict[str, Any], spin: float,
            mine: bool) -> tuple[float, dict[str, Any]]:
        bracket, cpu, val = s.run_call(ar, inputs, timed=True, spin_ms=spin)
        floor = _floor(on_gpu, s.isolated, bracket, cpu, cal, spin)
        if mine:
            floors.append(floor)
            own.append(val["ms"])
        return max(val["ms"], floor), val

    def consider(seed: int, val: dict[str, Any]) -> None:  # a variant call just ran; its worker is stopped
        st["n"] += 1
        slot = len(reservoir) if len(reservoir) < keep else rng.randrange(st["n"])
        if slot >= keep:
            return
        pay = {**_payload(side, arena, val), "seed": seed, "call": st["n"]}
        if slot == len(reservoir):
            reservoir.append(pay)
        else:
            reservoir[slot] = pay

    sampler = None
    if on_gpu and opts.nvml:
        try:
            from harness.device import NvmlSampler

            sampler = NvmlSampler()
        except Exception:  # noqa: BLE001 - no NVML: timing goes on without clock samples
            sampler = None
    res: dict[str, Any] = {"seed_base": seed_base}
    with sampler if sampler is not None else contextlib.nullcontext():
        # warm-up by time (at least 2 calls): clocks ramp, caches and JITs fill; the host enqueue time sizes the spin
        enq: list[float] = []
        t_end = time.perf_counter() + opts.warmup_s
        while len(enq) < 2 or time.perf_counter() < t_end:
            seed, inputs = fresh()
            _, val = one(side, arena, calib, inputs, 0.0, mine=False)
            consider(seed, val)
            enq.append(val["enq_ms"])
        spin = tm._spin_ms(tm._p90_enqueue(enq)) if on_gpu else 0.0
        floors.clear()
        own.clear()
        samples: list[float] = []
        # --strict promises `keep` (16) checked timed outputs: time at least that many calls, however steady
        min_n = max(opts.min_n if on_gpu else 3, keep if opts.strict else 0)
        t0 = time.perf_counter()
        t_stop = t0 + opts.max_time_s
        while len(samples) < 2000:
            seed, inputs = fresh()
            smp, val = one(side, arena, calib, inputs, spin, mine=True)
            consider(seed, val)
            samples.append(smp)
            n = len(samples)
            if n >= min_n:
                a = np.asarray(samples)
                med = float(np.median(a))
                rse = a.std(ddof=1) / math.sqrt(n) / med if med > 0 else 0.0
                if rse < 0.01 or time.perf_counter() >= t_stop:
                    break
        t1 = time.perf_counter()
        t = tm.stats(samples, "cuda-events" if on_gpu else "cpu", opts.flush_l2 and on_gpu)
        t.launch_overhead_ms = att.get("launch_overhead_ms")
        t.enqueue_ms = tm._p90_enqueue(enq)
        t.spin_ms = spin if on_gpu else None
        t.cpu_threads = None if on_gpu else tm.default_cpu_threads()
        tm._finish_flags(t, _Queued(on_gpu), sampler, t0, t1)
        gap = float(np.median(np.asarray(floors) - np.asarray(own)))
        cpu_based = not on_gpu and side.isolated and calib.get("cpu_hi_ms") is not None
        ovh = calib["cpu_med_ms"] if cpu_based else calib["med_ms"]
        lim = max(JUDGE_GAP_FRAC * t.median_ms, JUDGE_GAP_ABS_MS, JUDGE_GAP_OVERHEAD * ovh)
        res["judge_clock"] = {"floor": "worker CPU time (kernel)" if cpu_based else "judge bracket",
                              "overhead_ms": round(ovh, 6), "bracket_overhead_ms": round(calib["med_ms"], 6),
                              "worker_median_ms": round(float(np.median(own)), 6),
                              "judge_floor_median_ms": round(float(np.median(floors)), 6),
                              "gap_ms": round(gap, 6), "gap_limit_ms": round(lim, 6),
                              "floor_above_worker": round(float(np.mean(np.asarray(floors) > np.asarray(own))), 3)}
        if gap > lim:
            t.flags.append("suspect")
            t.suspect_reasons.append(
                f"the judge's clock saw {gap:.4g} ms per call more than the worker's own clock reported (> "
                f"{lim:.4g} ms): a patched timer, or work outside the timed call (a side stream, a thread)?")
        fl = np.sort(np.asarray(floors))
        cut = len(fl) // 10
        tmean = float(fl[cut: len(fl) - cut].mean())
        res["judge_clock"]["floor_trimmed_mean_ms"] = round(tmean, 6)
        if tmean > TRIMMED_MEAN_MAX * t.median_ms and tmean > lim:
            t.flags.append("suspect")
            t.suspect_reasons.append(
                f"the judge's clock saw a (10%-trimmed) mean of {tmean:.4g} ms per call, {tmean / t.median_ms:.1f}x "
                f"the median: work moved from some calls into others?")
        res["timing"] = t.as_dict()
        if bside is not None and rounds > 0:
            enq_b = []
            for _ in range(3):  # the baseline's warm-up; its host enqueue time sizes the pair's spin too
                _, inputs = fresh()
                enq_b.append(one(bside.side, bside.arena, bside.calib, inputs, spin, mine=False)[1]["enq_ms"])
            if on_gpu:  # neither side's host latency may enter its events
                spin = max(spin, tm._spin_ms(tm._p90_enqueue(enq_b)))
            a_ms, b_ms, order = [], [], []
            p0 = time.perf_counter()
            for r in range(rounds):
                seed, inputs = fresh()
                o = "BA" if r % 2 else "AB"
                for who in o:
                    if who == "A":
                        a_ms.append(one(bside.side, bside.arena, bside.calib, inputs, spin, mine=False)[0])
                    else:
                        smp, val = one(side, arena, calib, inputs, spin, mine=False)
                        consider(seed, val)
                        b_ms.append(smp)
                order.append(o)
            p1 = time.perf_counter()
            pr: dict[str, Any] = {"base_ms": a_ms, "var_ms": b_ms, "order": order, "flags": [], "notes": [],
                                  "clock_mhz_p10": None, "clock_mhz_p90": None}
            cs = tm._clock_stats(sampler, p0, p1)
            if cs and cs.get("p10") and cs.get("p90"):
                pr["clock_mhz_p10"], pr["clock_mhz_p90"] = float(cs["p10"]), float(cs["p90"])
                if (pr["clock_mhz_p90"] / pr["clock_mhz_p10"] - 1) * 100 > tm.CLOCK_VAR_PCT:
                    pr["flags"].append("unstable")
            res["paired"] = pr
    if sampler is not None:
        res["nvml"] = sampler.summary()
    res["samples"] = reservoir
    res["timed_calls"] = st["n"]
    return res


def _floor(on_gpu: bool, isolated: bool, bracket: float, cpu: float | None, cal: dict[str, Any],
           spin: float) -> float:
    """What the judge itself can prove a call took, independently of the worker's clock.

    On the CPU: the kernel's CPU account of the worker's threads (busiest thread, or all over the cores), less the
    high end of an empty call's: immune to the judge's own scheduling delays on a busy machine; it cannot see
    sleeping, which is no work. On a GPU (the host waits for the device in the bracket), or in-process (no
    isolation: the same process' clock around the call, which still sees side-stream work the worker's device-wide
    synchronise waits for): the bracket less the high end of an empty call's and the spin. Either way one more
    empty call's worth and 5% are given up, so that an honest call's own clock (more precise) wins: a real call's
    harness work exceeds the empty call's by a few µs."""
    if isolated and not on_gpu and cpu is not None and cal.get("cpu_hi_ms") is not None:
        return max(0.0, (1 - FLOOR_SLACK) * (cpu - cal["cpu_hi_ms"] - cal["cpu_med_ms"]))
    return max(0.0, (1 - FLOOR_SLACK) * (bracket - cal["hi_ms"] - cal["med_ms"] - max(0.0, spin - cal["spin_ms"])))


@dataclass
class _Queued:
    queued: bool


def _fill_timing(rec: dict, problem: Problem, shape: Shape, tp: dict, base: Variant | None) -> None:
    t = tp["timing"]
    med_s = t["median_ms"] / 1e3
    rec.update(status="ok", median_ms=t["median_ms"], p10_ms=t["p10_ms"], p90_ms=t["p90_ms"], mean_ms=t["mean_ms"],
               stderr_ms=t["stderr_ms"], n=t["n"], samples_ms=t["samples_ms"], timing=t["method"],
               flush_l2=t.get("flush_l2"),
               tflops=rec["flops"] / med_s / 1e12 if med_s > 0 else None,
               gbps=rec["bytes"] / med_s / 1e9 if med_s > 0 else None)
    for k in ("drift_pct", "first_q_ms", "last_q_ms", "clock_mhz_p10", "clock_mhz_p90", "launch_overhead_ms"):
        if t.get(k) is not None:
            rec[k] = t[k]
    rec["flags"] = list(dict.fromkeys([*rec["flags"], *(t.get("flags") or [])]))
    rec["suspect_reasons"] += list(t.get("suspect_reasons") or [])
    for k in ("nvml", "gpm", "graph"):
        if k in tp:
            rec[k] = tp[k]
    nv = tp.get("nvml") or {}
    if nv.get("throttled"):
        rec["suspect_reasons"].append("clocks throttled during the measurement: "
                                      + ", ".join(nv.get("throttle_reasons") or []))
    if problem.extra_metrics:
        rec["extra"].update(problem.extra_metrics(shape, t["median_ms"]))
    rec["suspect"] = bool(rec["suspect_reasons"]) or "suspect" in rec["flags"]
    if rec["suspect"] and "suspect" not in rec["flags"]:
        rec["flags"].append("suspect")
    if "paired" in tp and base is not None:
        rec["baseline_median_ms"] = float(np.median(tp["paired"]["base_ms"]))
        if rec["suspect"]:  # a suspect number never enters a speed-up
            rec.update(baseline_name=base.name, speedup_text="suspect: not compared")
            return
        ab = tm.paired_speedup(tp["paired"]["base_ms"], tp["paired"]["var_ms"])
        pr = tp["paired"]
        rec.update(speedup_vs_baseline=ab["speedup"], speedup_ci95=ab["ci95"], speedup_text=ab["text"],
                   baseline_name=base.name, speedup_method=ab.get("method", "paired-rounds"),
                   speedup_rounds=len(pr["var_ms"]),
                   paired_clock_mhz=[pr.get("clock_mhz_p10"), pr.get("clock_mhz_p90")])
        if "unstable" in (pr.get("flags") or []) and "unstable" not in rec["flags"]:
            rec["flags"].append("unstable")


# ============================================================================================ the two sides
def _failed(reply: dict[str, Any]) -> VariantFailed:
    status = reply.get("status", "runtime_error")
    return VariantFailed(status, reply["error"], reply.get("traceback", "") if status == "runtime_error" else "")


def failure_of(e: BaseException) -> tuple[str, str]:
    """(status, message) of a variant call that raised: the CPU interpreter's verdicts keep their own one line
    (a PTX instruction it does not model is a skip, not a failure)."""
    from harness.interp import KernelFault, NotInterpreted

    if isinstance(e, NotInterpreted):
        return "skipped", str(e)
    if isinstance(e, KernelFault):
        return "runtime_error", str(e)
    return "runtime_error", f"{type(e).__name__}: {e}"


class LocalSide:
    """The variant side in this process (``isolate=False``): same protocol and arena, no isolation; the bracket is
    this process' clock around the call."""

    isolated = False

    def __init__(self, task: Task, opts: RunOptions):
        self.side = VariantSide(task, opts)

    def call(self, op: str, **kw: Any) -> Any:
        try:
            return getattr(self.side, op)(**kw)
        except Exception as e:  # the variant's own failure, not the judge's
            status, msg = failure_of(e)
            raise VariantFailed(status, msg, traceback.format_exc(limit=6) if status == "runtime_error" else "") \
                from None


    def attach(self, arena: Arena, timed: bool = True) -> dict[str, Any]:
        return self.call("attach", layout=arena.layout, base=arena.base, timed=timed)

    def run_call(self, arena: Arena, inputs: dict[str, Any], **kw: Any) -> tuple[float, float | None, dict[str, Any]]:
        """(bracket ms, None: no CPU accounting of its own here, the reply)."""
        scalars = arena.load(inputs)
        if self.side.v.prepare is not None and not kw.get("noop"):
            self.call("prepare", scalars=scalars)
        with tm.cpu_threads(None) if arena.dev.type == "cpu" else contextlib.nullcontext():
            t0 = time.perf_counter()
            val = self.call("call", scalars=scalars, **kw)
            t1 = time.perf_counter()
        return (t1 - t0) * 1e3, None, val

    def end(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def release(self) -> None:
        pass


class RemoteSide:
    """The variant side in a fresh, confined worker (``harness.sandbox``). Between calls the worker is stopped; a
    call is: write the inputs, send the request, continue the worker, wait for its reply, stop it. The bracket (the
    judge's clock from continue to confirmed stop) holds everything the worker did for that call."""

    isolated = True

    def __init__(self, worker: sandbox.WorkerProcess, task: Task, opts: RunOptions, deadline: float,
                 isolation: dict[str, Any] | None = None):
        self.worker, self.opts, self.isolation = worker, opts, isolation or {}
        self._raw = None
        # where the CUDA interpreter's crash handler leaves its last words (a real SIGSEGV inside a kernel)
        fd, self.crash_file = tempfile.mkstemp(prefix="wb-interp-crash-", suffix=".txt")
        os.close(fd)
        self._ncpu = worker.ncpu()
        self.keep = False  # the pool keeps this worker for another task (release() does not kill it)
        self.begin(task, deadline)

    def begin(self, task: Task, deadline: float) -> None:
        """A task for this worker: a fresh one, or one that has run no variant code yet (``calls == 0``)."""
        self.deadline, self.task, self.calls = deadline, task, 0
        v = get_problem(task.family).variants[task.variant]
        self.prepares = v.prepare is not None and v.backend == "torch"  # library baselines only
        wopts = {k: getattr(self.opts, k) for k in ("flush_l2", "graph", "gpm", "timing", "time_on_cpu")}
        self._request({"op": "begin", "task": asdict(task), "opts": {**wopts, "seeds": ()},
                       "crash_file": self.crash_file})

    def _wait(self) -> Any:
        w = self.worker
        died = False
        while time.monotonic() < self.deadline:
            if w.conn.poll(0.2):
                try:
                    return w.conn.recv()
                except (EOFError, OSError):  # the connection closed: the worker is dying
                    died = True
                    break
            if not w.alive():
                died = True
                break
        if died:
            try:
                words = Path(self.crash_file).read_text().strip()
            except OSError:
                words = ""
            raise VariantFailed("runtime_error", w.exit_text()
                                + (f": {words}" if words else " (illegal memory access, segfault or os._exit?)"),
                                recycle=True)
        raise VariantFailed("timeout", "no result within the task timeout (hang?); worker killed", recycle=True)

    def _send(self, msg: Any) -> None:
        try:
            self.worker.conn.send(msg)
        except (BrokenPipeError, OSError) as e:
            raise VariantFailed("runtime_error", f"worker gone: {e}", recycle=True) from None

    def _request(self, msg: dict) -> Any:
        self.worker.cont()
        self._send(msg)
        return self._wait()

    def call(self, op: str, **kw: Any) -> Any:
        reply = self._request({"op": op, "kw": kw})
        if "error" in reply:
            raise _failed(reply)
        return reply["value"]

    def attach(self, arena: Arena, timed: bool = True) -> dict[str, Any]:
        import socket
        from multiprocessing import reduction

        self.worker.cont()
        if arena.dev.type == "cuda":
            import torch.multiprocessing  # noqa: F401  (registers the CUDA IPC reductions of tensors)

            self._send({"op": "attach", "layout": arena.layout, "size": arena.size, "tensor": arena.base,
                        "timed": timed})
        else:
            self._send({"op": "attach", "layout": arena.layout, "size": arena.size, "tensor": None, "timed": timed})
            if self._raw is None:
                self._raw = socket.socket(fileno=os.dup(self.worker.conn.fileno()))
            reduction.sendfds(self._raw, [arena.fd])
        reply = self._wait()
        if "error" in reply:
            raise _failed(reply)
        return reply["value"]

    def run_call(self, arena: Arena, inputs: dict[str, Any], **kw: Any) -> tuple[float, float | None, dict[str, Any]]:
        """(bracket ms, CPU ms, the reply). The CPU figure is the kernel's account of the worker's threads over the
        bracket, as a lower bound on the wall time they needed: max(the busiest thread, all of them / cores)."""
        w = self.worker
        self.calls += 1
        if not w.stop(self.deadline):
            raise VariantFailed("runtime_error", w.exit_text(), recycle=True)
        scalars = arena.load(inputs)  # the worker cannot run while its inputs are written
        if self.prepares and not kw.get("noop"):  # a library's own layout, built in a request of its own
            self.call("prepare", scalars=scalars)
            if not w.stop(self.deadline):
                raise VariantFailed("runtime_error", w.exit_text(), recycle=True)
        self._send({"op": "call", "kw": {"scalars": scalars, **kw}})
        c0 = w.cpu_ns()
        t0 = time.perf_counter()
        w.cont()
        reply = self._wait()
        if not w.stop(self.deadline):  # every thread stopped before the judge reads a byte of the arena
            raise VariantFailed("runtime_error", w.exit_text() + " (illegal memory access, segfault or os._exit?)",
                                recycle=True)
        t1 = time.perf_counter()
        c1 = w.cpu_ns()
        cpu = None
        if c0 is not None and c1 is not None:
            d = [max(0, ns - c0.get(tid, 0)) for tid, ns in c1.items()]
            cpu = max(max(d, default=0), sum(d) / self._ncpu) / 1e6
        if "error" in reply:
            raise _failed(reply)
        return (t1 - t0) * 1e3, cpu, reply["value"]

    def end(self) -> list[str]:
        return self._request({"op": "end"}).get("tampered", [])

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.worker.kill()
        with contextlib.suppress(OSError):
            os.unlink(self.crash_file)

    def release(self) -> None:
        """The end of a task: killed, unless the pool keeps it (a paired baseline's worker, which only ever runs the
        baseline's code, serves the baseline of every record of one shape and dtype)."""
        if not self.keep:
            self.close()


def check_once(problem: Problem, v: Variant, dtype: str, shape: Shape, seed: int,
               dev: torch.device | None = None) -> chk.CheckResult:
    """One seed in this process: the judge's inputs, one call on the variant side, the verdict."""
    side = LocalSide(Task(problem.name, v.name, dtype, shape.key()), RunOptions(seeds=(seed,)))
    inputs = problem.make_inputs(shape, dtype, seed, side.side.dev)
    arena = Arena(problem, v, shape, dtype, inputs, side.side.dev, shared=False)
    side.attach(arena)
    pay = _check_call(side, arena, inputs)
    return judge_payload(problem, v, dtype, shape, inputs, pay, problem.tol_for(dtype, shape, v)[0])


def run_task(task: Task, opts: RunOptions) -> dict[str, Any]:
    """One record in this process (no isolation; see ``execute`` for the isolated path)."""
    try:
        side = LocalSide(task, opts)
    except Exception as e:  # noqa: BLE001 - a harness/problem bug: still a record
        return failed_record(task, "runtime_error", f"harness: {type(e).__name__}: {e}")
    rec = judge_task(task, opts, side, base_side=lambda t: LocalSide(t, opts))
    rec["isolation"] = {"isolated": False}
    return rec


# --------------------------------------------------------------------------------------------- execution
class _Workers:
    """Confined workers from the zygote. A variant's worker serves one task; one that ran no variant code (its
    record ended at prelim: skipped, compiled) serves the next task too. A baseline's worker serves the paired
    baseline of consecutive records of the same (family, baseline, dtype, shape): it never runs a variant's code."""

    def __init__(self, opts: RunOptions):
        self.opts = opts
        self.zygote: sandbox.Zygote | None = None
        self.idle: RemoteSide | None = None
        self.base: tuple[tuple, RemoteSide] | None = None

    def task(self, task: Task, deadline: float) -> RemoteSide:
        if self.idle is not None:
            s, self.idle = self.idle, None
            if s.worker.alive():
                try:
                    s.begin(task, deadline)
                    return s
                except VariantFailed:
                    pass
            s.close()
        return self.fresh(task, deadline)

    def park(self, side: RemoteSide) -> bool:
        """Keep a worker that ran no variant code for the next task."""
        if side.calls or not side.worker.alive():
            return False
        if self.idle is not None:
            self.idle.close()
        self.idle = side
        return True

    def baseline(self, task: Task, deadline: float) -> RemoteSide:
        key = task.key
        if self.base is not None:
            k, s = self.base
            if k == key and s.worker.alive():
                s.deadline = deadline
                return s
            s.close()
            self.base = None
        s = self.fresh(task, deadline)
        s.keep = True
        self.base = (key, s)
        return s

    def drop_baseline(self) -> None:
        if self.base is not None:
            self.base[1].close()
            self.base = None

    def close(self) -> None:
        if self.idle is not None:
            self.idle.close()
            self.idle = None
        self.drop_baseline()

    def fresh(self, task: Task, deadline: float) -> RemoteSide:
        try:
            self.zygote = sandbox.Zygote.get()  # the same one, unless the environment changed or it died
            w, how = self.zygote.spawn()
        except (RuntimeError, OSError, EOFError) as e:  # a zygote a variant killed is restarted next time
            self.zygote = None
            raise RuntimeError(f"worker process failed to start ({e})") from None
        while time.monotonic() < deadline:
            if w.conn.poll(0.2):
                try:
                    hello = w.conn.recv()
                except (EOFError, OSError):
                    break
                iso = {**hello["isolation"], "confined": hello["confined"], "start": how, **self.zygote.judge_info}
                return RemoteSide(w, task, self.opts, deadline, iso)
            if not w.alive():
                break
        w.kill()
        raise RuntimeError(f"worker process failed to start ({w.exit_text()})")


def failed_record(task: Task, status: str, message: str) -> dict[str, Any]:
    try:
        p = get_problem(task.family)
        rec = base_record(p, p.variants[task.variant], task.dtype, p.parse_shape(task.shape))
    except Exception:
        rec = {"family": task.family, "variant": task.variant, "dtype": task.dtype, "shape": task.shape}
    rec.update(status=status, message=message)
    return rec


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "worker hung"
    if code < 0:
        import signal

        try:
            return f"worker killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"worker killed by signal {-code}"
    return f"worker exited with code {code}"


def execute(tasks: Iterable[Task], opts: RunOptions, on_record: Callable[[dict[str, Any]], None],
            on_start: Callable[[Task], None] | None = None) -> None:
    """Run tasks in order; each record goes to on_record as soon as it exists. Isolated (the default): every task
    and its paired baseline in fresh confined workers."""
    if not opts.isolate:
        for t in tasks:
            if on_start:
                on_start(t)
            rec = run_task(t, opts)
            rec.pop("_recycle_worker", None)
            on_record(rec)
        return
    pool = _Workers(opts)
    try:
        for t in tasks:
            if on_start:
                on_start(t)
            on_record(_isolated_record(t, opts, pool))
    finally:
        pool.close()


def _isolated_record(t: Task, opts: RunOptions, pool: _Workers) -> dict[str, Any]:
    deadline = time.monotonic() + opts.timeout_s
    try:
        side = pool.task(t, deadline)
    except RuntimeError as e:
        return failed_record(t, "runtime_error", f"harness: {e}")
    tampered: list[str] = []
    parked = False
    try:
        rec = judge_task(t, opts, side, base_side=lambda bt: pool.baseline(bt, deadline))
        if not rec.get("_recycle_worker"):
            tampered = side.end()
            parked = not tampered and pool.park(side)
    except VariantFailed as e:  # the worker died or hung outside a variant call
        rec = failed_record(t, e.status, e.message)
    except Exception as e:  # noqa: BLE001 - a harness or problem bug: still a record
        rec = failed_record(t, "runtime_error", f"harness: {type(e).__name__}: {e}")
        rec["traceback"] = traceback.format_exc(limit=8)
    finally:
        if not parked:
            side.close()
    if rec.pop("_recycle_worker", False) or rec.get("status") in ("runtime_error", "timeout"):
        pool.drop_baseline()  # it may be the worker that died or hung
    rec["isolation"] = dict(side.isolation)
    if rec.get("status") == "timeout":
        rec["message"] = f"no result within {opts.timeout_s:g} s (hang?); worker killed"
    if tampered:
        rec["suspect"] = True
        rec.setdefault("flags", []).append("suspect")
        rec.setdefault("suspect_reasons", []).append(
            "the variant replaced harness/torch functions or hooks in its worker (" + ", ".join(tampered[:5])
            + "): no speed-up")
        if rec.get("speedup_vs_baseline") is not None:
            rec.update(speedup_vs_baseline=None, speedup_ci95=None, speedup_text="suspect: not compared")
    return rec


# --------------------------------------------------------------------------------------------- planning
def plan(families: Iterable[str], *, variants: list[str] | None = None, dtypes: list[str] | None = None,
         shapes: list[str] | None = None, quick: bool = False, headline: bool = False,
         shape_order: str | None = None) -> list[Task]:
    """Tasks in order: shape, then dtype, then variant (a baseline runs next to its variants). ``headline`` takes
    each family's benchmark-target shapes with their own dtypes (Problem.headline). ``shape_order`` names the
    positional order of ``shapes`` (Problem.orders, e.g. "course"); tasks always carry named shapes."""
    tasks: list[Task] = []
    families = list(families)
    for fam in families:
        p = get_problem(fam)
        if variants:
            unknown = [x for x in variants if x not in p.variants]
            if unknown and len(families) == 1:
                raise RegistryError(f"{fam}: unknown variant(s) {unknown}; choose from {sorted(p.variants)}")
        if dtypes:
            bad = [d for d in dtypes if d not in p.dtypes]
            if bad and len(families) == 1:
                raise RegistryError(f"{fam}: unsupported dtype(s) {bad}; choose from {list(p.dtypes)}")
        fam_dtypes = [d for d in (dtypes or p.dtypes) if d in p.dtypes]
        names = [n for n in p.variants if not variants or n in variants]
        if headline and not shapes:
            pairs = [(s, d) for s, ds in p.headline for d in ds if not dtypes or d in dtypes]
        else:
            fam_shapes = ([p.parse_shape(s, shape_order) for s in shapes] if shapes
                          else (p.quick if quick else p.shapes))
            pairs = [(s, d) for s in fam_shapes for d in fam_dtypes]
        for s, d in pairs:
            for n in names:
                tasks.append(Task(fam, n, d, s.key()))
    return tasks


def isolate_default() -> bool:
    return os.environ.get("WB_NO_ISOLATE", "") in ("", "0")
