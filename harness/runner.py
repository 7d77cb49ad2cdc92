"""Run the registry: check every (variant, dtype, shape), time what is correct, write records as they finish.

``run_task`` does one record: skip reasons, compile (CUDA), correctness over several seeds on NaN-poisoned outputs
(inputs verified unmodified, reference computed from an untouched snapshot), then timing (``harness.timing``), NVML
samples and the speed-up against the family's baseline, timed interleaved with the variant.

``execute`` runs tasks in a spawned worker process (``isolate=True``): an illegal memory access, a segfault, an
``os._exit`` or a hang kills only that worker; the record becomes ``runtime_error`` / ``timeout`` with the message,
and a fresh worker takes the remaining tasks. Each finished record goes straight to the ``ResultWriter``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harness import check as chk
from harness.registry import Problem, RegistryError, Shape, Variant, get_problem, interpreter
from harness.timing import bootstrap_ratio, interleaved, side_stream_suspect, time_calls


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
    seeds: tuple[int, ...] = (0, 1, 2)
    strict: bool = False  # fresh input set per timed call from a pool; every pool entry's output checked after
    strict_pool: int = 4
    warmup_s: float = 0.1
    max_time_s: float = 1.0  # timing cap per record
    min_n: int = 10
    flush_l2: bool = True
    ab_rounds: int | None = None  # interleaved rounds vs the baseline (None: 30 on a GPU, 0 on the CPU)
    nvml: bool = True
    gpm: bool = False  # NVML GPM DRAM bandwidth per record (Hopper+; ~0.3 s each)
    timeout_s: float = 600.0  # per task, in the worker
    isolate: bool = True
    time_on_cpu: bool = True  # time torch/interpreter variants on the CPU (labelled "cpu")
    timing: bool = True  # False: correctness only (--check-only), on any device


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
        "extra": {}, "suspect": False, "suspect_reasons": [], "speedup_vs_baseline": None, "speedup_ci95": None,
        "speedup_text": None, "baseline_name": None,
    }


def _call_variant(v: Variant, inputs: dict, outs: dict | None, shape: Shape) -> dict:
    if v.style == "out":
        v.fn(inputs, outs, shape)
        return outs
    got = v.fn(inputs, None, shape)
    if isinstance(got, torch.Tensor):
        raise TypeError(f"{v.name}: style='return' variants return a dict of outputs, got a bare tensor")
    return got


def _aliases(got: dict, inputs: dict) -> str | None:
    ptrs = {t.data_ptr(): k for k, t in inputs.items() if isinstance(t, torch.Tensor) and t.numel()}
    for k, t in (got or {}).items():
        if isinstance(t, torch.Tensor) and t.numel() and t.data_ptr() in ptrs:
            return f"output {k!r} aliases input {ptrs[t.data_ptr()]!r}"
    return None


def check_once(problem: Problem, v: Variant, dtype: str, shape: Shape, seed: int,
               dev: torch.device) -> chk.CheckResult:
    """One seed: fresh inputs, poisoned outputs, call, then compare with the float64 reference."""
    inputs = problem.make_inputs(shape, dtype, seed, dev)
    snapshot = {k: (t.clone() if isinstance(t, torch.Tensor) else t) for k, t in inputs.items()}
    outs = problem.make_outputs(shape, dtype, dev)
    for t in outs.values():
        chk.poison_(t)
    got = _call_variant(v, inputs, outs if v.style == "out" else None, shape)
    _sync()
    bad = chk.inputs_unchanged(snapshot, inputs) or _aliases(got, snapshot if v.style == "out" else inputs)
    if bad:
        return chk.CheckResult(False, message=bad)
    ref = problem.reference(snapshot, shape, dtype)  # from the untouched snapshot, after the call
    tol = problem.tol(dtype, v)
    if problem.check is not None:
        return problem.check(got, ref, snapshot, shape, dtype, tol)
    return chk.check_outputs(got, ref, tol, expected=outs)


def run_task(task: Task, opts: RunOptions) -> dict[str, Any]:
    """Produce one record. Never raises for a variant's own failure: the status says what happened."""
    problem = get_problem(task.family)
    v = problem.variants[task.variant]
    shape = problem.parse_shape(task.shape)
    dtype = task.dtype
    rec = base_record(problem, v, dtype, shape)
    dev = device()
    on_gpu = dev.type == "cuda"

    reason = v.skip_reason(shape, dtype)
    if reason:
        rec.update(status="skipped", message=reason)
        return rec
    if v.backend == "cuda":
        from harness.cuda import CompileError

        try:
            rec["resources"] = {k: v.source.resources(k) for k in v.kernel_names(dtype)} if v.source else None
        except CompileError as e:
            rec.update(status="compile_error", message=str(e).split("\n", 1)[0],
                       compile_log=str(e).split("\n", 1)[-1][-4000:])
            return rec
        if not on_gpu:
            rec.update(status="compiled", message="compiled with nvcc; no GPU here to run it")
            return rec
    if v.backend == "triton" and not on_gpu and not interpreter():
        rec.update(status="skipped", message="Triton needs a GPU, or TRITON_INTERPRET=1 on the CPU")
        return rec

    torch.backends.cuda.matmul.allow_tf32 = False  # the reference and library baselines: no silent TF32
    torch.backends.cudnn.allow_tf32 = False
    worst = 0.0
    extra: dict[str, Any] = {}
    try:
        for seed in opts.seeds:
            res = check_once(problem, v, dtype, shape, seed, dev)
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
    except Exception as e:
        rec.update(status="runtime_error", message=f"{type(e).__name__}: {e}"[:2000],
                   traceback=traceback.format_exc(limit=6)[-3000:])
        rec["_recycle_worker"] = on_gpu  # a CUDA error can poison the context: start a fresh worker
        return rec
    if not opts.timing or (not on_gpu and not opts.time_on_cpu):
        rec.update(status="ok", message="checked; not timed (--check-only)" if not opts.timing
                   else "checked; not timed (--no-cpu-timing)")
        return rec
    try:
        _time_record(rec, problem, v, dtype, shape, dev, opts)
    except Exception as e:
        rec.update(status="runtime_error", message=f"timing: {type(e).__name__}: {e}"[:2000],
                   traceback=traceback.format_exc(limit=6)[-3000:])
        rec["_recycle_worker"] = on_gpu
        return rec
    rec["extra"].update(extra)
    return rec


def _time_record(rec: dict, problem: Problem, v: Variant, dtype: str, shape: Shape, dev: torch.device,
                 opts: RunOptions) -> None:
    on_gpu = dev.type == "cuda"
    if opts.strict:
        seeds = [10_000 + i for i in range(opts.strict_pool)]
    else:
        seeds = [opts.seeds[0] if opts.seeds else 0]
    pool = [problem.make_inputs(shape, dtype, s, dev) for s in seeds]
    outs = []
    for _ in pool:
        o = problem.make_outputs(shape, dtype, dev)
        for t in o.values():
            chk.poison_(t)
        outs.append(o)
    returned: list[Any] = [None] * len(pool)

    def call(i: int) -> None:
        j = i % len(pool)
        r = _call_variant(v, pool[j], outs[j] if v.style == "out" else None, shape)
        if opts.strict:
            returned[j] = r

    sampler = None
    if on_gpu and opts.nvml:
        try:
            from harness.device import NvmlSampler

            sampler = NvmlSampler()
        except Exception:
            sampler = None
    if sampler is not None:
        with sampler:
            t = time_calls(call, device=dev, warmup_s=opts.warmup_s, max_s=opts.max_time_s, min_n=opts.min_n,
                           flush_l2=opts.flush_l2)
        rec["nvml"] = sampler.summary()
        if rec["nvml"].get("throttled"):
            rec["suspect_reasons"].append("clocks throttled during the measurement: "
                                          + ", ".join(rec["nvml"].get("throttle_reasons") or []))
    else:
        t = time_calls(call, device=dev, warmup_s=opts.warmup_s, max_s=opts.max_time_s,
                       min_n=opts.min_n if on_gpu else 3, flush_l2=opts.flush_l2)
    _sync()
    if opts.strict:  # every pool entry's last timed output must still be right for *its* inputs
        for j, s in enumerate(seeds):
            ref = problem.reference(pool[j], shape, dtype)
            got = returned[j] if v.style == "return" else outs[j]
            tol = problem.tol(dtype, v)
            res = problem.check(got, ref, pool[j], shape, dtype, tol) if problem.check else \
                chk.check_outputs(got, ref, tol, expected=outs[j])
            if not res.ok:
                rec.update(status="incorrect", message=f"strict: timed output for pool input {s} is wrong "
                                                       f"(cached or deferred work?): {res.message}")
                return
    med_s = t.median_ms / 1e3
    rec.update(status="ok", median_ms=t.median_ms, p10_ms=t.p10_ms, p90_ms=t.p90_ms, mean_ms=t.mean_ms,
               stderr_ms=t.stderr_ms, n=t.n, samples_ms=t.samples_ms, timing=t.method, wall_ms=t.wall_ms,
               flush_l2=t.flush_l2, tflops=rec["flops"] / med_s / 1e12 if med_s > 0 else None,
               gbps=rec["bytes"] / med_s / 1e9 if med_s > 0 else None)
    if problem.extra_metrics:
        rec["extra"].update(problem.extra_metrics(shape, t.median_ms))
    why = side_stream_suspect(t)
    if why:
        rec["suspect_reasons"].append(why)
    if on_gpu and opts.gpm:
        try:
            from harness.device import gpm_dram_bw

            rec["gpm"] = gpm_dram_bw(lambda: call(0))
        except Exception as e:
            rec["gpm"] = {"available": False, "note": f"{type(e).__name__}: {e}"}
    # speed-up against the family's baseline, timed ABAB in this process on the same inputs
    rounds = opts.ab_rounds if opts.ab_rounds is not None else (30 if on_gpu else 0)
    base = None if v.baseline else baseline_of(problem, dtype, shape, exclude=v.name)
    if base is not None and rounds > 0:
        bout = problem.make_outputs(shape, dtype, dev) if base.style == "out" else None

        def call_base(i: int) -> None:
            _call_variant(base, pool[0], bout, shape)

        a, b, _ = interleaved(call_base, lambda i: call(0), rounds=rounds, device=dev, flush_l2=opts.flush_l2)
        ab = bootstrap_ratio(a, b)
        rec.update(speedup_vs_baseline=ab["speedup"], speedup_ci95=ab["ci95"], speedup_text=ab["text"],
                   baseline_name=base.name, speedup_method="interleaved-ABAB")
    rec["suspect"] = bool(rec["suspect_reasons"])


# --------------------------------------------------------------------------------------------- planning
def plan(families: Iterable[str], *, variants: list[str] | None = None, dtypes: list[str] | None = None,
         shapes: list[str] | None = None, quick: bool = False, headline: bool = False) -> list[Task]:
    """Tasks in order: shape, then dtype, then variant (a baseline runs next to its variants). ``headline`` takes
    each family's benchmark-target shapes with their own dtypes (Problem.headline)."""
    tasks: list[Task] = []
    for fam in families:
        p = get_problem(fam)
        if variants:
            unknown = [x for x in variants if x not in p.variants]
            if unknown and len(list(families)) == 1:
                raise RegistryError(f"{fam}: unknown variant(s) {unknown}; choose from {sorted(p.variants)}")
        if dtypes:
            bad = [d for d in dtypes if d not in p.dtypes]
            if bad and len(list(families)) == 1:
                raise RegistryError(f"{fam}: unsupported dtype(s) {bad}; choose from {list(p.dtypes)}")
        fam_dtypes = [d for d in (dtypes or p.dtypes) if d in p.dtypes]
        names = [n for n in p.variants if not variants or n in variants]
        if headline and not shapes:
            pairs = [(s, d) for s, ds in p.headline for d in ds if not dtypes or d in dtypes]
        else:
            fam_shapes = [p.parse_shape(s) for s in shapes] if shapes else (p.quick if quick else p.shapes)
            pairs = [(s, d) for s in fam_shapes for d in fam_dtypes]
        for s, d in pairs:
            for n in names:
                tasks.append(Task(fam, n, d, s.key()))
    return tasks


# --------------------------------------------------------------------------------------------- execution
def _worker_main(conn, opts_dict: dict) -> None:
    opts = RunOptions(**opts_dict)
    try:  # a crashing variant should die at once, not spend seconds writing a multi-GB core file
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    from harness.families import load_all

    load_all()  # imports (torch, triton, every family) happen before the first task's clock starts
    try:  # a fatal-signal handler a library installed (symbolising a stack trace) can stall a dying worker
        import signal

        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    except (ValueError, OSError, AttributeError):
        pass
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        task = Task(**msg)
        try:
            rec = run_task(task, opts)
        except Exception as e:  # a harness or problem bug, not the variant's: still a record
            rec = {"family": task.family, "variant": task.variant, "dtype": task.dtype, "shape": task.shape,
                   "status": "runtime_error", "message": f"harness: {type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(limit=8)}
        conn.send(rec)


class _Worker:
    STARTUP_S = 600.0

    def __init__(self, opts: RunOptions):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, asdict(opts)), daemon=True)
        self.proc.start()
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


def execute(tasks: list[Task], opts: RunOptions, on_record: Callable[[dict[str, Any]], None],
            on_start: Callable[[Task], None] | None = None) -> None:
    """Run tasks in order; each record goes to on_record as soon as it exists."""
    if not opts.isolate:
        for t in tasks:
            if on_start:
                on_start(t)
            try:
                rec = run_task(t, opts)
            except Exception as e:
                rec = failed_record(t, "runtime_error", f"harness: {type(e).__name__}: {e}")
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
                worker.conn.send(asdict(t))
            except (RuntimeError, BrokenPipeError, OSError) as e:
                if worker is not None:
                    worker.stop(kill=True)
                worker = None
                on_record(failed_record(t, "runtime_error", f"harness: {e}"))
                continue
            deadline = time.monotonic() + opts.timeout_s
            rec, died = None, False
            while time.monotonic() < deadline:
                if worker.conn.poll(0.2):
                    try:
                        rec = worker.conn.recv()
                    except (EOFError, OSError):  # the pipe closed: the worker is dying
                        died = True
                    break
                if not worker.proc.is_alive():
                    died = True
                    break
            if rec is None:
                if died:
                    worker.proc.join(timeout=10)  # reap it, so the exit code / signal is known
                    status, msg = "runtime_error", (_describe_exit(worker.proc.exitcode)
                                                    + " (illegal memory access, segfault or os._exit?)")
                else:
                    status, msg = "timeout", f"no result within {opts.timeout_s:g} s (hang?); worker killed"
                worker.stop(kill=True)
                worker = None
                rec = failed_record(t, status, msg)
            elif rec.pop("_recycle_worker", False):
                worker.stop(kill=True)
                worker = None
            on_record(rec)
    finally:
        if worker is not None:
            worker.stop()


@dataclass
class RunSummary:
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def incorrect(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "incorrect"]


def isolate_default() -> bool:
    return os.environ.get("WB_NO_ISOLATE", "") in ("", "0")
