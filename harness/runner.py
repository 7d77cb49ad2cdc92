"""Run the registry: check every (variant, dtype, shape), time what is correct, write records as they finish.

The work is split between two sides that never share a process in an isolated run (the default):

* the **variant side** (``VariantSide``, in a spawned worker) runs submitted code and nothing else: it calls the
  variant on inputs it is given, sends back the buffers the harness allocated (or what a ``style="return"`` variant
  returned), a copy of the inputs after the call and where every tensor lives; then it times the variant with fresh
  input contents for every timed call and keeps a few timed outputs, chosen at random *after* each call;
* the **judge** (``judge_task``, in the parent) makes the inputs, computes the float64 reference and every verdict.
  It never calls a variant, so a variant that patches ``harness.check``, torch or ``builtins`` in its worker changes
  nothing that decides its verdict, and the worker is replaced when its harness/torch functions were swapped.

Seeds are drawn fresh per run by the CLI (``--seeds`` replays given ones) and written into every record, so a
lookup table keyed on public seeds cannot pass. A crash, ``os._exit`` or hang kills only the worker: the record
becomes ``runtime_error`` / ``timeout`` and a fresh worker takes the remaining tasks. With ``isolate=False``
(``--no-isolate``, ``python -m harness check``) both sides share one process: same checks, no tamper-proofing.

The tolerance of a record is the family's, derived from the dtype's unit roundoff and the reduction length
(``Problem.tol``); a variant may only tighten it, and the one used is written into the record.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import multiprocessing as mp
import os
import random
import secrets
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness import check as chk
from harness import timing as tm
from harness.records import fresh_seeds
from harness.registry import Problem, RegistryError, Shape, Variant, get_problem, interpreter


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
    sample_checks: int = 3  # timed calls whose outputs are checked in full (chosen after the call, at random)
    warmup_s: float = 0.1
    max_time_s: float = 1.0  # timing cap per record
    min_n: int = 10
    flush_l2: bool = True
    ab_rounds: int | None = None  # paired rounds vs the baseline (None: 30 on a GPU, 0 on the CPU)
    graph: bool = False  # also time N calls captured in one CUDA graph (µs-scale kernels)
    nvml: bool = True
    gpm: bool = False  # NVML GPM DRAM bandwidth per record (Hopper+; ~0.3 s each)
    timeout_s: float = 600.0  # per task, in the worker
    isolate: bool = True
    time_on_cpu: bool = True  # time torch/interpreter variants on the CPU (labelled "cpu")
    timing: bool = True  # False: correctness only (--check-only), on any device
    # spot checks (Problem.spot): when one float64 reference of the shape costs more than spot_flops (~1 s of fp64
    # on an H100/H200), each check compares random output slices worth about spot_flops instead of everything
    spot_flops: float = 5e10

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
    return {
        "family": problem.name, "variant": v.name, "backend": v.backend, "baseline": v.baseline, "dtype": dtype,
        "shape": shape.key(), "shape_dims": dict(shape), "status": None, "message": "", "description": v.description,
        "ladder": v.ladder, "rel_err": None, "max_abs_err": None, "median_ms": None, "p10_ms": None, "p90_ms": None,
        "mean_ms": None, "stderr_ms": None, "n": 0, "samples_ms": [], "flops": flops, "bytes": nbytes,
        "tflops": None, "gbps": None, "intensity": flops / nbytes if nbytes else None,
        "compute_dtype": v.compute_dtype or (problem.compute_dtype(dtype, shape) if problem.compute_dtype else dtype),
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


# ============================================================================================ the variant side
def _to(tensors: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    """Private copies on ``dev`` (never the caller's tensors: the judge's inputs must stay out of a variant's reach)."""
    return {k: (t.detach().to(dev, copy=True) if isinstance(t, torch.Tensor) else t) for k, t in tensors.items()}


def _cpu(tensors: dict[str, Any]) -> dict[str, Any]:
    """Private CPU copies; non-tensor values (a saxpy's ``a``, sgemm's alpha) as they are."""
    return {k: (t.detach().to("cpu", copy=True) if isinstance(t, torch.Tensor) else t) for k, t in tensors.items()}


def _clone(tensors: dict[str, Any]) -> dict[str, Any]:
    """Device copies (no host sync), non-tensor values (a saxpy's ``a``) as they are."""
    return {k: (t.detach().clone() if isinstance(t, torch.Tensor) else t) for k, t in tensors.items()}


def _range(t: torch.Tensor) -> tuple[int, int]:
    """[first, last) byte address this tensor's elements can touch (its view, not the whole storage)."""
    if t.numel() == 0:
        return (0, 0)
    lo = t.data_ptr()
    span = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) + 1
    return (lo, lo + span * t.element_size())


class VariantSide:
    """Everything that runs a variant's code. Returns plain data (CPU tensors, dicts): never a verdict."""

    def __init__(self, task: Task, opts: RunOptions):
        self.task = task
        self.opts = opts
        self.problem = get_problem(task.family)
        self.v = self.problem.variants[task.variant]
        self.shape = self.problem.parse_shape(task.shape)
        self.dtype = task.dtype
        self.dev = device()

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
                out["interpreted"] = True
            elif not on_gpu:
                return {**out, "status": "compiled", "message": "compiled with nvcc; no GPU here to run it (CUDA "
                                                                "interpret mode is off: WB_CUDA_INTERPRET=0)"}
        if v.backend == "triton" and not on_gpu and not interpreter():
            return {"status": "skipped", "message": "Triton needs a GPU, or TRITON_INTERPRET=1 on the CPU"}
        torch.backends.cuda.matmul.allow_tf32 = False  # library baselines: no silent TF32
        torch.backends.cudnn.allow_tf32 = False
        return out

    # --------------------------------------------------------------------------------------------- one call
    def _outputs(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        outs = self.problem.make_outputs(self.shape, self.dtype, self.dev)
        for k, t in outs.items():
            if k in self.problem.inout:
                t.copy_(inputs[k])  # updated in place: starts as the input's value, not poison
            else:
                chk.poison_(t)
        return outs

    def _payload(self, inputs: dict, given: dict | None, outs: dict | None, got: Any,
                 copy: Callable[[dict], dict] = _cpu) -> dict[str, Any]:
        """What the judge needs: outputs (the harness' own buffers for style="out"), specs, address ranges.
        ``copy`` takes the tensors out (to the CPU; a device clone inside a timing loop, moved at the end)."""
        pay: dict[str, Any] = {"device": self.dev.type, "ranges": {}}
        for k, t in inputs.items():
            if isinstance(t, torch.Tensor):
                pay["ranges"][f"input {k!r}"] = _range(t)
        if self.v.style == "out":
            # judged: the buffers the harness allocated and poisoned, whatever the dict holds afterwards
            pay["rebound"] = sorted(k for k in given if not (isinstance(outs, dict) and outs.get(k) is given[k]))
            pay["outputs"] = copy(given)
            for k, t in given.items():
                pay["ranges"][f"output {k!r}"] = _range(t)
            return pay
        if not isinstance(got, dict):
            pay["returned"] = type(got).__name__
            return pay
        pay["outputs"], pay["spec"] = {}, {}
        for k, t in got.items():
            if isinstance(t, torch.Tensor):
                pay["spec"][k] = chk.tensor_spec(t)
                pay["outputs"][k] = copy({k: t})[k]
                pay["ranges"][f"output {k!r}"] = _range(t)
            else:
                pay["spec"][k] = {"type": type(t).__name__}
        return pay

    def check(self, inputs: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
        """One correctness call on the judge's inputs (CPU tensors): outputs and inputs-after go back."""
        inputs = _to(inputs, self.dev)
        outs = self._outputs(inputs) if self.v.style == "out" else None
        given = dict(outs) if outs is not None else None
        if self.v.backend == "cuda" and self.dev.type != "cuda":
            from harness import interp

            # the CPU interpreter's scheduling seed (block order, thread order) and the buffers' names in its messages
            named = {k: t for k, t in inputs.items() if isinstance(t, torch.Tensor)}
            named.update(outs or {})
            interp.set_call(seed, named)
        got = _call_variant(self.v, variant_inputs(self.v, inputs, self.shape), outs, self.shape)
        _sync()
        pay = self._payload(inputs, given, outs, got)
        pay["inputs_after"] = _cpu(inputs)
        return pay

    # --------------------------------------------------------------------------------------------- timing
    def time(self, seed_base: int, keep: int, baseline: str | None, ab_rounds: int) -> dict[str, Any]:
        """Time the variant; every timed call sees inputs made fresh (seed_base + call number) outside the timed
        region. ``keep`` timed calls, chosen at random *after* they ran (reservoir sampling with a system RNG, so
        the variant cannot know which), go back with their inputs and outputs for the judge."""
        opts, v, shape, dev = self.opts, self.v, self.shape, self.dev
        on_gpu = dev.type == "cuda"
        rng = random.SystemRandom()
        outs = self._outputs(self.problem.make_inputs(shape, self.dtype, seed_base, dev)) \
            if v.style == "out" else None
        given = dict(outs) if outs is not None else None
        st: dict[str, Any] = {"inputs": None, "seed": None, "got": None, "n": 0, "made": 0, "ran": False}
        reservoir: list[dict[str, Any]] = []
        base_side = base_outs = None
        if baseline:
            base_side = VariantSide(Task(self.task.family, baseline, self.dtype, self.task.shape), opts)
            base_outs = base_side._outputs(self.problem.make_inputs(shape, self.dtype, seed_base, dev)) \
                if base_side.v.style == "out" else None

        def consider_last() -> None:  # the call that just ran: keep it with probability keep/n (reservoir)
            if not st["ran"]:
                return
            st["ran"] = False
            st["n"] += 1
            slot = len(reservoir) if len(reservoir) < keep else rng.randrange(st["n"])
            if slot >= keep:
                return
            pay = self._payload(st["inputs"], given, outs, st["got"], copy=_clone)  # no host sync in the loop
            pay.update(seed=st["seed"], inputs=_clone(st["inputs"]), call=st["n"])
            if slot == len(reservoir):
                reservoir.append(pay)
            else:
                reservoir[slot] = pay

        def prepare(i: int) -> None:
            consider_last()
            st["seed"] = seed_base + 1 + st["made"]
            st["made"] += 1
            st["inputs"] = self.problem.make_inputs(shape, self.dtype, st["seed"], dev)
            st["v_in"] = variant_inputs(v, st["inputs"], shape)
            if base_side is not None:
                st["b_in"] = variant_inputs(base_side.v, st["inputs"], shape)
            for k in self.problem.inout:  # an in-place update starts from this call's input value
                if outs is not None:
                    given[k].copy_(st["inputs"][k])
                if base_outs is not None:
                    base_outs[k].copy_(st["inputs"][k])

        def call(i: int) -> None:
            st["got"] = _call_variant(v, st["v_in"], outs, shape)
            st["ran"] = True

        def call_base(i: int) -> None:
            _call_variant(base_side.v, st["b_in"], base_outs, shape)

        res: dict[str, Any] = {}
        sampler = None
        if on_gpu and opts.nvml:
            try:
                from harness.device import NvmlSampler

                sampler = NvmlSampler()
            except Exception:  # noqa: BLE001 - no NVML: timing goes on without clock samples
                sampler = None
        kw = dict(prepare=prepare, device=dev, warmup_s=opts.warmup_s, max_s=opts.max_time_s,
                  min_n=opts.min_n if on_gpu else 3, flush_l2=opts.flush_l2)
        with sampler if sampler is not None else contextlib.nullcontext():  # one sampler over all timed loops
            self._timed_loops(res, call, call_base, prepare, consider_last, seed_base, st, kw, sampler,
                              base_side is not None and ab_rounds > 0, ab_rounds)
        if sampler is not None:
            res["nvml"] = sampler.summary()
        consider_last()
        _sync()
        res["samples"] = [{**p, "outputs": _cpu(p.get("outputs") or {}), "inputs": _cpu(p["inputs"])}
                          for p in reservoir]
        res["timed_calls"] = st["n"]
        return res

    def _timed_loops(self, res: dict, call: Callable, call_base: Callable, prepare: Callable,
                     consider_last: Callable, seed_base: int, st: dict, kw: dict, sampler: Any, ab: bool,
                     ab_rounds: int) -> None:
        opts, shape, dev = self.opts, self.shape, self.dev
        on_gpu = dev.type == "cuda"
        t = tm.time_calls(call, sampler=sampler, **kw)
        _sync()
        res["timing"] = t.as_dict()
        if opts.graph and on_gpu:
            try:
                consider_last()

                def refill(i: int) -> None:  # a graph replays fixed addresses: new contents, same buffers
                    fresh = self.problem.make_inputs(shape, self.dtype, seed_base + 1 + st["made"], dev)
                    st["made"] += 1
                    for k, x in fresh.items():
                        if isinstance(x, torch.Tensor):
                            st["inputs"][k].copy_(x)

                res["graph"] = tm.time_graph(call, prepare=refill, device=dev, flush_l2=opts.flush_l2).as_dict()
                st["ran"] = False  # the captured call's output is the graph's, not a timed sample to judge
            except Exception as e:  # noqa: BLE001 - capture can fail (host syncs, allocations): say why
                res["graph"] = {"note": f"graph timing unavailable: {type(e).__name__}: {e}"[:300]}
        if on_gpu and opts.gpm:
            try:
                from harness.device import gpm_dram_bw

                res["gpm"] = gpm_dram_bw(lambda: call(0))
            except Exception as e:  # noqa: BLE001
                res["gpm"] = {"available": False, "note": f"{type(e).__name__}: {e}"}
        if ab:
            pr = tm.paired(call_base, call, prepare=prepare, rounds=ab_rounds, device=dev, flush_l2=opts.flush_l2,
                           sampler=sampler)
            # both sides under the same clock conditions: one clock spread for the pair, written with it
            res["paired"] = {"base_ms": list(pr.a_ms), "var_ms": list(pr.b_ms), "order": list(pr.order),
                             "clock_mhz_p10": pr.clock_mhz_p10, "clock_mhz_p90": pr.clock_mhz_p90,
                             "flags": list(pr.flags), "notes": list(pr.notes)}


# ============================================================================================ the judge
class VariantFailed(Exception):
    """The variant raised (or its worker died) on the variant side: becomes a runtime_error / timeout record."""

    def __init__(self, status: str, message: str, tb: str = "", recycle: bool = False):
        super().__init__(message)
        self.status, self.message, self.tb, self.recycle = status, message, tb, recycle


def spot_plan(problem: Problem, shape: Shape, opts: RunOptions) -> dict[str, Any] | None:
    """Whether checks of this shape compare a random subset of output slices (see Problem.spot), and how many.

    Applies when the family defines ``spot`` and one float64 reference costs more than ``opts.spot_flops`` (~1 s of
    fp64 on an H100/H200: matmul 4096³ and up, attention at N = 4096, kNN 10k x 1M). Each check then compares as
    many slices of ``spot_dim`` as ``spot_flops`` buys (4x with --strict; at least 2: the first and the last, where
    tile tails live), drawn after the call, so a variant cannot know which ones. A variant wrong on a fraction f of
    the slices survives one check with probability (1 - f)^rows: matmul 8192³ checks 372 rows, so 1% wrong rows
    pass one check with p = 0.024 and the five checks of a record with p < 1e-8."""
    if problem.spot is None or problem.spot_dim is None:
        return None
    n = int(shape[problem.spot_dim])
    ref_flops = float((problem.ref_flops or problem.flops)(shape))
    budget = opts.spot_flops * (4 if opts.strict else 1)
    if ref_flops <= budget:
        return None
    rows = min(n, max(2, math.ceil(n * budget / ref_flops)))
    if rows >= n:
        return None
    return {"dim": problem.spot_dim, "rows": rows, "of": n, "ref_gflop_full": round(ref_flops / 1e9, 1),
            "ref_gflop_checked": round(ref_flops * rows / n / 1e9, 1),
            "how": "random slices drawn after each call (first and last always); NaN checked in the whole output"}


def spot_indices(n: int, rows: int) -> torch.Tensor:
    """``rows`` distinct indices of range(n), sorted: 0 and n - 1 (the edge tiles) plus a random draw."""
    g = torch.Generator().manual_seed(secrets.randbits(62))
    pick = torch.randperm(max(0, n - 2), generator=g)[: max(0, rows - 2)] + 1
    return torch.sort(torch.cat([torch.tensor([0, n - 1]), pick])).values


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
        bad = chk.inputs_unchanged(_cpu(inputs), pay.get("inputs_after") or {})
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
    if problem.check is not None:
        jdev = next((t.device for t in inputs.values() if isinstance(t, torch.Tensor)), torch.device("cpu"))
        return problem.check(_to(outs, jdev), ref, inputs, shape, dtype, tol)
    return chk.check_outputs(outs, ref, tol)


def judge_task(task: Task, opts: RunOptions, side: Any) -> dict[str, Any]:
    """One record. ``side`` runs the variant (``LocalSide`` in-process, ``RemoteSide`` in a worker); everything that
    decides the verdict happens here. Never raises for a variant's own failure: the status says what happened."""
    problem = get_problem(task.family)
    v = problem.variants[task.variant]
    shape = problem.parse_shape(task.shape)
    dtype = task.dtype
    rec = base_record(problem, v, dtype, shape)
    dev = device()
    try:
        pre = side.call("prelim")
        rec["resources"] = pre.get("resources")
        if pre["status"]:
            rec.update(status=pre["status"], message=pre.get("message", ""))
            if pre.get("compile_log"):
                rec["compile_log"] = pre["compile_log"]
            return rec
        tol, tol_info = problem.tol_for(dtype, shape, v)
        rec["tolerance"] = tol_info
        torch.backends.cuda.matmul.allow_tf32 = False  # the float64 reference never runs in TF32
        torch.backends.cudnn.allow_tf32 = False
        worst, extra = 0.0, {}
        spot = spot_plan(problem, shape, opts)
        if spot is not None:
            rec["spot_check"] = spot
        if pre.get("interpreted"):
            rec.update(interpreted=True, timing="none")
            if pre.get("resources_note"):
                rec["resources_note"] = pre["resources_note"]  # why there is no ptxas report (nvcc could not build)
        for seed in opts.seeds:
            inputs = problem.make_inputs(shape, dtype, seed, dev)
            pay = side.call("check", inputs=_cpu(inputs), seed=seed)
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
        rec["extra"].update(extra)  # what the checks measured (kNN/ANN recall) belongs in check-only records too
        on_gpu = dev.type == "cuda"
        if pre.get("interpreted"):  # a CPU model of the GPU: its verdict counts, its speed means nothing
            rec.update(status="ok", message="checked by the CUDA interpreter on the CPU (memcheck, racecheck, "
                                            "synccheck over every seed); not timed")
            return rec
        if not opts.timing or (not on_gpu and not opts.time_on_cpu):
            rec.update(status="ok", message="checked; not timed (--check-only)" if not opts.timing
                       else "checked; not timed (--no-cpu-timing)")
            return rec
        rounds = opts.ab_rounds if opts.ab_rounds is not None else (30 if on_gpu else 0)
        base = None if v.baseline else baseline_of(problem, dtype, shape, exclude=v.name)
        seed_base = secrets.randbits(31)
        tp = side.call("time", seed_base=seed_base, keep=opts.n_samples, baseline=base.name if base else None,
                       ab_rounds=rounds if base is not None else 0)
        # the timed calls' outputs, sampled after the fact: a memo, deferred work or a variant that only computes
        # when it is being checked ends here
        for s in tp["samples"]:
            inputs = _to(s["inputs"], dev)
            res = judge_payload(problem, v, dtype, shape, inputs, s, tol, check_inputs=False, spot=spot)
            if not res.ok:
                rec.update(status="incorrect", message=f"timed call {s['call']} of {tp['timed_calls']} (input seed "
                                                       f"{s['seed']}) produced a wrong output — cached, deferred or "
                                                       f"skipped work? {res.message}")
                return rec
        rec["sampled_checks"] = len(tp["samples"])
        rec["timed_seed_base"] = seed_base
        _fill_timing(rec, problem, shape, tp, base)
        return rec
    except VariantFailed as e:
        rec.update(status=e.status, message=e.message[:2000])
        if e.tb:
            rec["traceback"] = e.tb[-3000:]
        rec["_recycle_worker"] = e.recycle or dev.type == "cuda"  # a CUDA error can poison the context
        return rec


def _fill_timing(rec: dict, problem: Problem, shape: Shape, tp: dict, base: Variant | None) -> None:
    t = tp["timing"]
    med_s = t["median_ms"] / 1e3
    rec.update(status="ok", median_ms=t["median_ms"], p10_ms=t["p10_ms"], p90_ms=t["p90_ms"], mean_ms=t["mean_ms"],
               stderr_ms=t["stderr_ms"], n=t["n"], samples_ms=t["samples_ms"], timing=t["method"],
               wall_ms=t.get("wall_ms"), flush_l2=t.get("flush_l2"),
               tflops=rec["flops"] / med_s / 1e12 if med_s > 0 else None,
               gbps=rec["bytes"] / med_s / 1e9 if med_s > 0 else None)
    for k in ("drift_pct", "first_q_ms", "last_q_ms", "clock_mhz_p10", "clock_mhz_p90", "launch_overhead_ms",
              "side_stream_gap_ms"):
        if t.get(k) is not None:
            rec[k] = t[k]
    rec["flags"] = list(dict.fromkeys(t.get("flags") or []))
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
        if rec["suspect"]:  # a suspect number never enters a speed-up
            rec.update(baseline_name=base.name, speedup_text="suspect: not compared")
            return
        ab = tm.paired_speedup(tp["paired"]["base_ms"], tp["paired"]["var_ms"])
        pr = tp["paired"]
        rec.update(speedup_vs_baseline=ab["speedup"], speedup_ci95=ab["ci95"], speedup_text=ab["text"],
                   baseline_name=base.name, speedup_method=ab.get("method", "paired-rounds"),
                   speedup_rounds=len(pr["var_ms"]), paired_clock_mhz=[pr.get("clock_mhz_p10"),
                                                                       pr.get("clock_mhz_p90")])
        if "unstable" in (pr.get("flags") or []) and "unstable" not in rec["flags"]:
            rec["flags"].append("unstable")


# ============================================================================================ the two sides
class LocalSide:
    """The variant side in this process (``isolate=False``): same protocol, no isolation."""

    def __init__(self, task: Task, opts: RunOptions):
        self.side = VariantSide(task, opts)

    def call(self, op: str, **kw: Any) -> Any:
        try:
            return getattr(self.side, op)(**kw)
        except Exception as e:  # the variant's own failure, not the judge's
            status, msg = failure_of(e)
            raise VariantFailed(status, msg, traceback.format_exc(limit=6) if status == "runtime_error" else "") \
                from None


def failure_of(e: BaseException) -> tuple[str, str]:
    """(status, message) of a variant call that raised: the CPU interpreter's verdicts keep their own one line
    (a PTX instruction it does not model is a skip, not a failure)."""
    from harness.interp import KernelFault, NotInterpreted

    if isinstance(e, NotInterpreted):
        return "skipped", str(e)
    if isinstance(e, KernelFault):
        return "runtime_error", str(e)
    return "runtime_error", f"{type(e).__name__}: {e}"


def check_once(problem: Problem, v: Variant, dtype: str, shape: Shape, seed: int,
               dev: torch.device | None = None) -> chk.CheckResult:
    """One seed in this process: the judge's inputs, one call on the variant side, the verdict."""
    side = VariantSide(Task(problem.name, v.name, dtype, shape.key()), RunOptions(seeds=(seed,)))
    inputs = problem.make_inputs(shape, dtype, seed, side.dev)
    pay = side.check(inputs=_cpu(inputs))
    return judge_payload(problem, v, dtype, shape, inputs, pay, problem.tol_for(dtype, shape, v)[0])


def run_task(task: Task, opts: RunOptions) -> dict[str, Any]:
    """One record in this process (no isolation; see ``execute`` for the isolated path)."""
    try:
        side = LocalSide(task, opts)
    except Exception as e:  # noqa: BLE001 - a harness/problem bug: still a record
        return failed_record(task, "runtime_error", f"harness: {type(e).__name__}: {e}")
    return judge_task(task, opts, side)


# --------------------------------------------------------------------------------------------- tamper check
def _integrity() -> dict[str, int]:
    """Identities of what the variant side relies on: a variant that swaps one of them (to fake timings for itself or
    for later variants in the same worker) is detected after its task and the worker is replaced."""
    import harness.timing as timing_mod

    objs: dict[str, Any] = {f"builtins.{k}": x for k, x in vars(builtins).items() if callable(x)}
    objs.update({f"harness.timing.{k}": x for k, x in vars(timing_mod).items() if callable(x)})
    objs.update({f"harness.runner.{k}": x for k, x in globals().items() if callable(x)})
    objs.update({f"harness.check.{k}": x for k, x in vars(chk).items() if callable(x)})
    for name in ("clone", "copy_", "cpu", "to", "detach", "data_ptr", "fill_", "__eq__"):
        objs[f"torch.Tensor.{name}"] = getattr(torch.Tensor, name)
    for name in ("synchronize", "Event", "Stream", "current_stream", "_sleep"):
        if hasattr(torch.cuda, name):
            objs[f"torch.cuda.{name}"] = getattr(torch.cuda, name)
    for name in ("randn", "rand", "randint", "empty", "equal", "allclose", "isfinite"):
        objs[f"torch.{name}"] = getattr(torch, name)
    return {k: id(x) for k, x in objs.items()}


# --------------------------------------------------------------------------------------------- execution
def _worker_main(conn, opts_dict: dict) -> None:
    opts = RunOptions(**{**opts_dict, "seeds": tuple(opts_dict.get("seeds", ()))})
    try:  # a crashing variant should die at once, not spend seconds writing a multi-GB core file
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    from harness.registry import load_all

    load_all()  # imports (torch, triton, every family) happen before the first task's clock starts
    try:  # a fatal-signal handler a library installed (symbolising a stack trace) can stall a dying worker
        import signal

        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    except (ValueError, OSError, AttributeError):
        pass
    clean = _integrity()
    conn.send("ready")
    side: VariantSide | None = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        op = msg["op"]
        try:
            if op == "begin":
                side = VariantSide(Task(**msg["task"]), opts)
                reply: Any = {"ok": True}
            elif op == "end":
                now = _integrity()
                reply = {"tampered": sorted(k for k in set(clean) | set(now) if clean.get(k) != now.get(k))}
            else:
                reply = {"ok": True, "value": getattr(side, op)(**msg.get("kw", {}))}
        except Exception as e:  # the variant's failure (or a harness bug on the variant side): reported, not fatal
            status, message = failure_of(e)
            reply = {"error": message, "status": status, "traceback": traceback.format_exc(limit=6)}
        conn.send(reply)


class _Worker:
    STARTUP_S = 600.0

    def __init__(self, opts: RunOptions):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, asdict(opts)), daemon=True)
        # where the CUDA interpreter's crash handler leaves its last words (a real SIGSEGV inside a kernel)
        fd, self.crash_file = tempfile.mkstemp(prefix="wb-interp-crash-", suffix=".txt")
        os.close(fd)
        old = os.environ.get("WB_INTERP_CRASH_FILE")
        os.environ["WB_INTERP_CRASH_FILE"] = self.crash_file
        try:
            self.proc.start()
        finally:
            if old is None:
                os.environ.pop("WB_INTERP_CRASH_FILE", None)
            else:
                os.environ["WB_INTERP_CRASH_FILE"] = old
        child.close()
        deadline = time.monotonic() + self.STARTUP_S
        while time.monotonic() < deadline:
            if self.conn.poll(0.2):
                if self.conn.recv() == "ready":
                    return
            if not self.proc.is_alive():
                break
        self.stop(kill=True)
        raise RuntimeError(f"worker process failed to start ({_describe_exit(self.proc.exitcode)})")

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.crash_file)

    def last_words(self) -> str:
        """What the CUDA interpreter's crash handler wrote before the worker died (empty: nothing)."""
        try:
            return Path(self.crash_file).read_text().strip()
        except OSError:
            return ""


class RemoteSide:
    """The variant side in a worker process; each call waits at most until the task's deadline."""

    def __init__(self, worker: _Worker, task: Task, deadline: float):
        self.worker, self.deadline = worker, deadline
        self._request({"op": "begin", "task": asdict(task)})

    def _request(self, msg: dict) -> Any:
        w = self.worker
        try:
            w.conn.send(msg)
        except (BrokenPipeError, OSError) as e:
            raise VariantFailed("runtime_error", f"worker gone: {e}", recycle=True) from None
        died = False
        while time.monotonic() < self.deadline:
            if w.conn.poll(0.2):
                try:
                    return w.conn.recv()
                except (EOFError, OSError):  # the pipe closed: the worker is dying
                    died = True
                    break
            if not w.proc.is_alive():
                died = True
                break
        if died:
            w.proc.join(timeout=10)  # reap it, so the exit code / signal is known
            words = w.last_words()
            raise VariantFailed("runtime_error", _describe_exit(w.proc.exitcode)
                                + (f": {words}" if words else " (illegal memory access, segfault or os._exit?)"),
                                recycle=True)
        raise VariantFailed("timeout", "no result within the task timeout (hang?); worker killed", recycle=True)

    def call(self, op: str, **kw: Any) -> Any:
        reply = self._request({"op": op, "kw": kw})
        if "error" in reply:
            status = reply.get("status", "runtime_error")
            raise VariantFailed(status, reply["error"], reply.get("traceback", "") if status == "runtime_error" else "")
        return reply["value"]

    def end(self) -> list[str]:
        return self._request({"op": "end"}).get("tampered", [])


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
    """Run tasks in order; each record goes to on_record as soon as it exists."""
    if not opts.isolate:
        for t in tasks:
            if on_start:
                on_start(t)
            rec = run_task(t, opts)
            rec.pop("_recycle_worker", None)
            on_record(rec)
        return
    worker: _Worker | None = None
    try:
        for t in tasks:
            if on_start:
                on_start(t)
            try:
                if worker is None or not worker.proc.is_alive():
                    worker = _Worker(opts)
            except RuntimeError as e:
                worker = None
                on_record(failed_record(t, "runtime_error", f"harness: {e}"))
                continue
            try:
                side = RemoteSide(worker, t, time.monotonic() + opts.timeout_s)
                rec = judge_task(t, opts, side)
                tampered = side.end() if not rec.get("_recycle_worker") else []
            except VariantFailed as e:  # the worker died or hung outside a variant call
                rec, tampered = failed_record(t, e.status, e.message), []
                rec["_recycle_worker"] = True
            except Exception as e:  # noqa: BLE001 - a harness or problem bug: still a record
                rec, tampered = failed_record(t, "runtime_error", f"harness: {type(e).__name__}: {e}"), []
                rec["traceback"] = traceback.format_exc(limit=8)
                rec["_recycle_worker"] = True
            if rec.get("status") == "timeout":
                rec["message"] = f"no result within {opts.timeout_s:g} s (hang?); worker killed"
            if tampered:
                rec["suspect"] = True
                rec.setdefault("flags", []).append("suspect")
                rec.setdefault("suspect_reasons", []).append(
                    "the variant replaced harness/torch functions in its worker (" + ", ".join(tampered[:5])
                    + "): its worker was replaced")
            if rec.pop("_recycle_worker", False) or tampered:
                worker.stop(kill=True)
                worker = None
            on_record(rec)
    finally:
        if worker is not None:
            worker.stop()


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
