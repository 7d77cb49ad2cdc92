"""Timing that can be quoted: device events with no host sync inside a timed region, paired A/B rounds, drift,
launch-bound and side-stream checks.

``time_calls(call)`` runs ``call(i)`` for i = 0, 1, 2, ... and returns a ``Timing`` (median / p10 / p90 / mean /
standard error / n / raw samples, plus flags). On a GPU each sample is::

    prepare(i) -> L2 flush -> GPU spin -> start event -> call(i) -> end event -> after(i)

with rounds of k samples queued and one device sync per round (never inside a timed region). The spin is a GPU-side
delay sized from the host enqueue time measured during warm-up, so that the host has finished enqueueing ``call(i)``
before the GPU reaches the start event: the events bracket the GPU work, not the host's launch latency (on an H100
some variants take 0.14-0.32 ms to enqueue; a fixed 0.1 ms spin let that time into the samples).

After the samples, a batch of calls without flush is timed twice: with events on the current stream and with a
device-wide synchronise on the host. Work the events cannot see (a side stream, deferred work) shows up as
``side_stream_gap_ms``; a gap over max(10%, 20 µs) of the median makes the record ``suspect``.

Flags (``Timing.flags``): ``launch-bound`` (median < 5x the empty launch + event pair overhead of the device,
``launch_overhead_ms``), ``unstable`` (first- and last-quarter medians differ by > 3%, or the SM clock's p90/p10
spread > 5% when an NVML sampler ran; on the CPU p90/p10 > 3), ``suspect`` (see above, ``suspect_reasons``).

``paired(call_a, call_b)`` times A and B in rounds (A then B, order alternating per round) under the same flush
and spin, and ``paired_speedup`` turns the per-round pairs into the median of per-round ratios with a bootstrap
interval over rounds (pairs kept): a clock drift that slows both sides of a round cancels in its ratio.

``time_graph(call, n_calls=N)`` captures N calls in one CUDA graph and reports replay time / N (µs-scale kernels).

Without a GPU the same loop runs with a host timer (``method="cpu"``; CPU timings, not GPU figures), with torch's
intra-op threads pinned to an explicit count (``cpu_threads``; oversubscribed threads once turned a 3 µs softmax into
8 ms). The event source is pluggable (``backend=``): tests drive all of this with a simulated device clock.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

# Flag thresholds (see module docstring and issue 17).
LAUNCH_BOUND_FACTOR = 5.0  # median < 5 x empty launch + event overhead
DRIFT_PCT = 3.0  # |last-quarter median / first-quarter median - 1| > 3%
CLOCK_VAR_PCT = 5.0  # SM clock p90/p10 - 1 > 5%
CPU_SPREAD = 3.0  # CPU p90/p10 > 3
SUSPECT_FRAC = 0.10  # side-stream gap > max(10% of the median, 20 µs)
SUSPECT_ABS_MS = 0.020

# Spin sizing: spin = SPIN_FACTOR x p90 host enqueue time of (start event + call + end event) + SPIN_MARGIN_MS,
# clamped. Factor 2 leaves room for a slower-than-usual enqueue (GC, page faults); the cap keeps a 30 ms Python
# launcher from spending 60 ms of GPU idle per sample (its samples then carry some host time; the flag says so).
SPIN_FACTOR = 2.0
SPIN_MARGIN_MS = 0.02
SPIN_MIN_MS = 0.02
SPIN_MAX_MS = 20.0

# Side-stream check: batch length (ms of calls, 3-200 calls) and repeats; the minimum gap over repeats is kept (host
# noise only adds to it).
WALL_BATCH_MS = 5.0
WALL_REPEATS = 3

SMOOTH_BOOT = 0.5  # bandwidth factor of the smoothed bootstrap in paired_speedup (0: plain percentile bootstrap)


@dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    stderr_ms: float
    n: int
    method: str  # "cuda-events" | "cuda-graph" | "cpu" | a test backend's name
    samples_ms: list[float] = field(default_factory=list)
    flush_l2: bool = True
    wall_ms: float | None = None  # device-synchronised host time per call over a batch (no flush)
    side_stream_gap_ms: float | None = None  # wall time the current stream's events do not account for
    batch_event_ms: float | None = None  # event time per call over that same batch
    enqueue_ms: float | None = None  # host time to enqueue start event + call + end event (p90 of the warm-up)
    spin_ms: float | None = None  # GPU delay queued before each start event
    launch_overhead_ms: float | None = None  # empty launch + event pair on this device
    first_q_ms: float | None = None  # median of the first quarter of the samples (in time order)
    last_q_ms: float | None = None
    drift_pct: float | None = None  # (last_q / first_q - 1) x 100
    clock_mhz_p10: float | None = None  # SM clock during the samples (NVML sampler), when sampled
    clock_mhz_p90: float | None = None
    clock_var_pct: float | None = None  # (p90 / p10 - 1) x 100
    cpu_threads: int | None = None  # torch intra-op threads during a CPU timing
    graph_calls: int | None = None  # calls per CUDA-graph replay (time_graph)
    flags: list[str] = field(default_factory=list)  # "launch-bound", "unstable", "suspect"
    suspect_reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a flag was raised, fallbacks, ...

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stats(samples_ms: list[float], method: str, flush: bool) -> Timing:
    a = np.asarray(samples_ms, dtype=np.float64)
    n = len(a)
    se = float(a.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return Timing(
        median_ms=float(np.median(a)), p10_ms=float(np.percentile(a, 10)), p90_ms=float(np.percentile(a, 90)),
        mean_ms=float(a.mean()), stderr_ms=se, n=n, method=method, samples_ms=[round(float(x), 6) for x in a],
        flush_l2=flush,
    )


# ---------------------------------------------------------------------------------------------- event sources
class L2Flusher:
    """A buffer of 2x the device's L2 (allocated once per device); ``flush()`` READS all of it (a sum into a
    preallocated scalar), evicting every line the timed call could reuse.

    Read, not written: a fill leaves 2xL2 of dirty lines, and the next timed kernel pays for writing them back
    (on an H100, 50 MB of write-back inside the sample). After a read pass the L2 holds clean lines of this buffer
    only, which are dropped for free. The 8-byte result is the only write."""

    _buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __init__(self, device: torch.device | str | None = None):
        self.cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        self.buf: torch.Tensor | None = None
        self._out: torch.Tensor | None = None
        if not self.cuda:
            return
        d = torch.device(device) if device is not None else None
        idx = torch.cuda.current_device() if d is None or d.index is None else d.index
        if idx not in self._buffers:
            l2 = getattr(torch.cuda.get_device_properties(idx), "L2_cache_size", 0) or 64 * 2**20
            buf = torch.ones(2 * l2 // 4, dtype=torch.float32, device=f"cuda:{idx}")  # written once, here
            self._buffers[idx] = (buf, torch.empty((), dtype=torch.float32, device=f"cuda:{idx}"))
        self.buf, self._out = self._buffers[idx]

    def flush(self) -> None:
        if self.buf is not None:
            torch.sum(self.buf, dim=0, out=self._out)


class Backend:
    """Where events, spins, flushes and syncs go. ``queued``: the device runs asynchronously from the host (events
    and spins mean something); False for the host-timer CPU backend."""

    method = "cpu"
    queued = False
    key = "cpu"

    def now(self) -> float:  # host seconds
        return time.perf_counter()

    def record(self) -> Any:
        return time.perf_counter()

    def elapsed_ms(self, a: Any, b: Any) -> float:
        return (b - a) * 1e3

    def sync(self) -> None:
        pass

    def wait(self, ev: Any) -> None:
        pass

    def spin(self, ms: float) -> None:
        pass

    def flush(self) -> None:
        pass

    def empty_launch(self) -> None:
        _CPU_TINY.add_(0)


_CPU_TINY = torch.zeros(1)


class CudaBackend(Backend):
    method = "cuda-events"
    queued = True
    _cycles_per_ms: dict[int, float] = {}

    def __init__(self, device: torch.device | str | None = None, flush_l2: bool = True):
        d = torch.device(device) if device is not None else torch.device("cuda")
        self.index = torch.cuda.current_device() if d.index is None else d.index
        self.key = f"cuda:{self.index}"
        self.flusher = L2Flusher(f"cuda:{self.index}") if flush_l2 else None
        self._tiny = torch.zeros(1, device=f"cuda:{self.index}")

    def record(self) -> Any:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def elapsed_ms(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b)

    def sync(self) -> None:
        torch.cuda.synchronize(self.index)

    def wait(self, ev: Any) -> None:
        ev.synchronize()

    def flush(self) -> None:
        if self.flusher is not None:
            self.flusher.flush()

    def empty_launch(self) -> None:
        if hasattr(torch.cuda, "_sleep"):
            torch.cuda._sleep(0)
        else:
            self._tiny.zero_()

    def cycles_per_ms(self) -> float:
        """torch.cuda._sleep spins for clock64 cycles: calibrated once per device at whatever clock it runs now
        (an idle, low clock gives fewer cycles per ms, so a spin sized here only lasts longer at boost)."""
        if self.index not in self._cycles_per_ms:
            n = 1_000_000
            best = float("inf")
            for _ in range(3):
                a = self.record()
                torch.cuda._sleep(n)
                b = self.record()
                b.synchronize()
                best = min(best, a.elapsed_time(b))
            self._cycles_per_ms[self.index] = n / max(best, 1e-3)
        return self._cycles_per_ms[self.index]

    def spin(self, ms: float) -> None:
        if ms > 0 and hasattr(torch.cuda, "_sleep"):
            torch.cuda._sleep(int(ms * self.cycles_per_ms()))


def _on_gpu(device: torch.device | str | None) -> bool:
    if not torch.cuda.is_available():
        return False
    return device is None or torch.device(device).type == "cuda"


def _backend(device: torch.device | str | None, flush_l2: bool, backend: Backend | None) -> Backend:
    if backend is not None:
        return backend
    return CudaBackend(device, flush_l2) if _on_gpu(device) else Backend()


def default_cpu_threads() -> int:
    """``WB_CPU_THREADS`` or half the usable cores (at most 4): an explicit count, never torch's default of every
    core (8 engineers sharing 2 cores oversubscribed it)."""
    env = os.environ.get("WB_CPU_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // 2))


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[int]:
    """Pin torch's intra-op threads to ``n`` for the block, then restore."""
    n = n or default_cpu_threads()
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _sampling(sampler: Any) -> Iterator[None]:
    """Run an NVML sampler over the block unless the caller already runs it."""
    if sampler is None or getattr(sampler, "running", True):
        yield
        return
    with sampler:
        yield


# ---------------------------------------------------------------------------------------------- launch overhead
_LAUNCH_OVERHEAD: dict[str, float] = {}


def launch_overhead_ms(device: torch.device | str | None = None, *, backend: Backend | None = None) -> float:
    """Event time of an empty launch between two events on an idle device (host launch latency + event pair),
    median of 50; measured once per device and cached. On the CPU: a trivial torch op between two host timer
    reads. A kernel whose median is under 5x this is ``launch-bound``."""
    be = _backend(device, False, backend)
    if be.key in _LAUNCH_OVERHEAD:
        return _LAUNCH_OVERHEAD[be.key]
    vals = []
    be.sync()
    for _ in range(55):
        s = be.record()
        be.empty_launch()
        e = be.record()
        be.sync()
        vals.append(be.elapsed_ms(s, e))
    _LAUNCH_OVERHEAD[be.key] = float(np.median(vals[5:]))
    return _LAUNCH_OVERHEAD[be.key]


# ---------------------------------------------------------------------------------------------- time_calls
def _spin_ms(enqueue_ms: float) -> float:
    return float(min(SPIN_MAX_MS, max(SPIN_MIN_MS, SPIN_FACTOR * enqueue_ms + SPIN_MARGIN_MS)))


def _warmup(calls: list[Callable[[int], Any]], be: Backend, prepare: Callable[[int], Any] | None,
            warmup_s: float, start_i: int = 0) -> tuple[int, list[list[float]]]:
    """Warm-up by time (clocks ramp, caches and JITs fill in the first ~100 ms), each call synchronised so that its
    enqueue time (start event + call + end event, host side) is measured with the device idle, as in a sample that
    the spin protects. Returns (next index, enqueue times per callable)."""
    enq: list[list[float]] = [[] for _ in calls]
    i = start_i
    t_end = be.now() + warmup_s
    while True:
        for j, call in enumerate(calls):
            if prepare is not None:
                prepare(i)
            be.flush()
            h0 = be.now()
            be.record()
            call(i)
            be.record()
            enq[j].append((be.now() - h0) * 1e3)
            be.sync()
        i += 1
        if i - start_i >= 2 and be.now() >= t_end:
            return i, enq


def _p90_enqueue(vals: list[float]) -> float:
    v = vals[1:] if len(vals) > 1 else vals  # the first call may compile
    return float(np.percentile(v, 90)) if v else 0.0


def _quarters(samples: list[float]) -> tuple[float | None, float | None, float | None, bool]:
    """(first-quarter median, last-quarter median, drift %, beyond noise). The drift counts only when it also
    exceeds twice the standard error of the difference of the two quarter medians (MAD-based, so a few outliers
    do not mask it), so a noisy but stationary kernel with 8 samples is not called unstable by chance."""
    n = len(samples)
    if n < 8:
        return None, None, None, False
    m = n // 4
    a, b = np.asarray(samples[:m]), np.asarray(samples[-m:])
    fa, fb = float(np.median(a)), float(np.median(b))
    if fa <= 0:
        return fa, fb, None, False
    drift = (fb / fa - 1.0) * 100.0

    def se(x: np.ndarray) -> float:
        return 1.2533 * 1.4826 * float(np.median(np.abs(x - np.median(x)))) / math.sqrt(len(x))

    beyond = abs(fb - fa) > 2.0 * math.hypot(se(a), se(b))
    return fa, fb, drift, beyond


def _clock_stats(sampler: Any, t0: float, t1: float) -> dict[str, Any] | None:
    if sampler is None or not hasattr(sampler, "clock_stats"):
        return None
    try:
        return sampler.clock_stats(t0, t1)
    except Exception:  # noqa: BLE001 - a sampler problem must not lose the timing
        return None


def _finish_flags(t: Timing, be: Backend, sampler: Any, t0: float, t1: float) -> None:
    """Drift, clocks, launch-bound, CPU spread and side-stream flags on a finished Timing."""
    fq, lq, drift, beyond = _quarters(t.samples_ms)
    t.first_q_ms, t.last_q_ms, t.drift_pct = fq, lq, drift
    unstable: list[str] = []
    if be.queued and drift is not None and abs(drift) > DRIFT_PCT and beyond:
        unstable.append(f"samples drifted {drift:+.1f}% from the first to the last quarter "
                        f"({fq:.4g} -> {lq:.4g} ms)")
    cs = _clock_stats(sampler, t0, t1)
    if cs and cs.get("p10") and cs.get("p90"):
        t.clock_mhz_p10, t.clock_mhz_p90 = float(cs["p10"]), float(cs["p90"])
        t.clock_var_pct = (t.clock_mhz_p90 / t.clock_mhz_p10 - 1.0) * 100.0
        if t.clock_var_pct > CLOCK_VAR_PCT:
            unstable.append(f"SM clock varied {t.clock_var_pct:.1f}% (p10 {t.clock_mhz_p10:.0f} / p90 "
                            f"{t.clock_mhz_p90:.0f} MHz)")
    if not be.queued and t.p10_ms > 0 and t.p90_ms / t.p10_ms > CPU_SPREAD:
        unstable.append(f"CPU samples spread p90/p10 = {t.p90_ms / t.p10_ms:.1f} > {CPU_SPREAD:g}")
    if unstable:
        t.flags.append("unstable")
        t.notes += unstable
    if t.launch_overhead_ms and t.median_ms < LAUNCH_BOUND_FACTOR * t.launch_overhead_ms:
        t.flags.append("launch-bound")
        t.notes.append(f"median {t.median_ms:.4g} ms < {LAUNCH_BOUND_FACTOR:g} x the empty launch + event overhead "
                       f"{t.launch_overhead_ms:.4g} ms of this device")
    why = _side_stream_reason(t)
    if why:
        t.flags.append("suspect")
        t.suspect_reasons.append(why)


def _side_stream_reason(t: Timing) -> str | None:
    gap = t.side_stream_gap_ms
    if gap is None:
        return None
    lim = max(SUSPECT_FRAC * t.median_ms, SUSPECT_ABS_MS)
    if gap > lim:
        return (f"device-synchronised wall time exceeds what the timed stream's events and the host enqueue "
                f"account for by {gap:.4g} ms per call (> max(10%, 20 µs) = {lim:.4g} ms): work on a side stream "
                f"or deferred past the end event?")
    return None


def _wall_check(call: Callable[[int], Any], be: Backend, start_i: int, median_ms: float,
                enqueue_ms: float) -> tuple[float, float, float, int]:
    """(wall ms per call, gap ms per call, batch event ms per call, calls used) over a batch without flush.

    wall = device-synchronised host time of the batch / N. What the current stream's events (E0..E1) or the host's
    own enqueue time do not explain is the gap. The tail (host time between E1 completing and a device-wide
    synchronize returning) catches hidden work even when the host is the bottleneck. Minimum over repeats."""
    per_call = max(median_ms, enqueue_ms, 1e-4)
    nb = int(min(200, max(3, math.ceil(WALL_BATCH_MS / per_call))))
    # a 100 ms kernel gets one batch of 3 calls (0.3 s), not 3 x 5 calls
    repeats = WALL_REPEATS if nb * per_call * WALL_REPEATS <= 4 * WALL_BATCH_MS * WALL_REPEATS else 1
    walls, gaps, evs = [], [], []
    i = start_i
    for _ in range(repeats):
        be.sync()
        t0 = be.now()
        e0 = be.record()
        for _ in range(nb):
            call(i)
            i += 1
        e1 = be.record()
        t_enq = be.now()
        be.wait(e1)
        t_e1 = be.now()
        be.sync()
        t1 = be.now()
        wall = (t1 - t0) * 1e3 / nb
        ev = be.elapsed_ms(e0, e1) / nb
        enq = (t_enq - t0) * 1e3 / nb
        tail = (t1 - t_e1) * 1e3
        walls.append(wall)
        evs.append(ev)
        gaps.append(max(wall - max(ev, enq), tail, 0.0))
    k = int(np.argmin(gaps))
    return walls[k], gaps[k], evs[k], i - start_i


def time_calls(call: Callable[[int], Any], *, prepare: Callable[[int], Any] | None = None,
               after: Callable[[int], Any] | None = None, device: torch.device | str | None = None,
               warmup_s: float = 0.1, max_s: float = 1.0, min_n: int = 10, max_n: int = 2000,
               target_rse: float = 0.01, flush_l2: bool = True, sampler: Any = None,
               cpu_threads_n: int | None = None, measure_wall: bool = True,
               backend: Backend | None = None) -> Timing:
    """Time ``call(i)`` (see module docstring). ``prepare(i)`` runs before sample i (and before each warm-up call)
    outside the timed region, before the flush; ``after(i)`` right after sample i's end event is recorded.
    ``sampler``: an ``harness.device.NvmlSampler`` (entered here unless already running) for clock p10/p90.
    ``cpu_threads_n``: torch threads for a CPU timing (default ``default_cpu_threads()``). ``backend``: an event
    source (tests pass a simulated device)."""
    be = _backend(device, flush_l2, backend)
    ctx = cpu_threads(cpu_threads_n) if not be.queued else contextlib.nullcontext(None)
    with ctx as nthreads:
        lo = launch_overhead_ms(device, backend=be)
        i, enq = _warmup([call], be, prepare, warmup_s)
        enqueue_ms = _p90_enqueue(enq[0])
        spin = _spin_ms(enqueue_ms) if be.queued else 0.0
        samples: list[float] = []
        t_start = be.now()
        t_stop = t_start + max_s
        k = 5
        with _sampling(sampler):
            t0 = be.now()
            while len(samples) < max_n:
                k = min(k, max_n - len(samples))
                evs = []
                for _ in range(k):
                    if prepare is not None:
                        prepare(i)
                    be.flush()
                    be.spin(spin)
                    s = be.record()
                    call(i)
                    e = be.record()
                    if after is not None:
                        after(i)
                    evs.append((s, e))
                    i += 1
                be.sync()
                samples += [be.elapsed_ms(s, e) for s, e in evs]
                n = len(samples)
                if n >= min_n:
                    a = np.asarray(samples)
                    med = float(np.median(a))
                    rse = a.std(ddof=1) / math.sqrt(n) / med if med > 0 else 0.0
                    if rse < target_rse or be.now() >= t_stop:
                        break
                k = min(k * 2, 100)
            t1 = be.now()
        t = stats(samples, be.method, flush_l2 and be.queued)
        t.enqueue_ms, t.launch_overhead_ms = enqueue_ms, lo
        t.cpu_threads = None if be.queued else nthreads
        if be.queued:
            t.spin_ms = spin
            if measure_wall:
                t.wall_ms, t.side_stream_gap_ms, t.batch_event_ms, _ = _wall_check(call, be, i, t.median_ms,
                                                                                   enqueue_ms)
        _finish_flags(t, be, sampler, t0, t1)
    return t


# ---------------------------------------------------------------------------------------------- CUDA graphs
def _scaled(t: Timing, n: int) -> Timing:
    """Per-call Timing from a Timing of replays of n calls each."""
    for f in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "stderr_ms", "wall_ms", "side_stream_gap_ms",
              "batch_event_ms", "first_q_ms", "last_q_ms"):
        v = getattr(t, f)
        if v is not None:
            setattr(t, f, v / n)
    t.samples_ms = [round(x / n, 6) for x in t.samples_ms]
    t.graph_calls = n
    return t


def time_graph(call: Callable[[int], Any], *, n_calls: int = 20, prepare: Callable[[int], Any] | None = None,
               after: Callable[[int], Any] | None = None, device: torch.device | str | None = None,
               warmup_s: float = 0.1, max_s: float = 1.0, min_n: int = 10, max_n: int = 2000,
               target_rse: float = 0.01, flush_l2: bool = True, sampler: Any = None) -> Timing:
    """``n_calls`` calls captured in one CUDA graph; each sample is one replay, reported per call (replay / N), so
    one launch's host latency is shared by N µs-scale kernels. ``prepare(i)`` runs before each replay and must
    rewrite the captured input buffers in place (a graph replays fixed addresses). The L2 is flushed before each
    replay, not between the N calls inside it. ``launch-bound`` is judged on the replay, not the per-call time.

    Falls back to ``time_calls`` (call by call) when there is no CUDA device or the capture fails; the reason is in
    ``notes`` and ``method`` stays ``cuda-events``/``cpu``."""
    kw = dict(prepare=prepare, after=after, device=device, warmup_s=warmup_s, max_s=max_s, min_n=min_n,
              max_n=max_n, target_rse=target_rse, flush_l2=flush_l2, sampler=sampler)
    if not _on_gpu(device):
        t = time_calls(call, **kw)
        t.notes.append("time_graph: no CUDA device, timed call by call (no graph)")
        return t
    dev = torch.device(device) if device is not None else torch.device("cuda")
    try:
        with torch.cuda.device(dev):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # capture needs the allocator and lazy inits warmed on a side stream
                for j in range(3):
                    call(j)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for j in range(n_calls):
                    call(j)
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - host syncs, allocations, non-capturable libraries, ...
        with contextlib.suppress(Exception):
            torch.cuda.synchronize()
        t = time_calls(call, **kw)
        t.notes.append(f"CUDA graph capture of {n_calls} calls failed ({type(e).__name__}: {str(e)[:200]}); "
                       f"timed call by call")
        return t
    t = time_calls(lambda i: graph.replay(), **kw)
    t.method = "cuda-graph"
    return _scaled(t, n_calls)


# ---------------------------------------------------------------------------------------------- paired A/B
@dataclass
class Paired:
    """Per-round samples of a paired A/B timing: round r timed A and B back to back (``order[r]`` "AB" or "BA")
    under the same flush, spin and clock conditions."""

    a_ms: list[float]
    b_ms: list[float]
    order: list[str]
    method: str
    spin_ms: float | None = None
    enqueue_a_ms: float | None = None
    enqueue_b_ms: float | None = None
    clock_mhz_p10: float | None = None
    clock_mhz_p90: float | None = None
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def speedup(self, **kw: Any) -> dict[str, Any]:
        """paired_speedup with A as the base: > 1 means B is faster."""
        return paired_speedup(self.a_ms, self.b_ms, **kw)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired(call_a: Callable[[int], Any], call_b: Callable[[int], Any], *, prepare: Callable[[int], Any] | None = None,
           rounds: int = 30, device: torch.device | str | None = None, flush_l2: bool = True,
           warmup_s: float = 0.05, sampler: Any = None, cpu_threads_n: int | None = None,
           alternate: bool = True, rounds_per_sync: int = 5, backend: Backend | None = None) -> Paired:
    """Round r: A then B (B then A on odd rounds when ``alternate``), each sample ``prepare(r) -> flush -> spin ->
    start -> call(r) -> end``; ``rounds_per_sync`` rounds are queued between host syncs. The spin is sized from the
    slower of the two enqueue times, so neither side's host latency enters its events."""
    be = _backend(device, flush_l2, backend)
    ctx = cpu_threads(cpu_threads_n) if not be.queued else contextlib.nullcontext(None)
    with ctx:
        i0, enq = _warmup([call_a, call_b], be, prepare, warmup_s)
        ea, eb = _p90_enqueue(enq[0]), _p90_enqueue(enq[1])
        spin = _spin_ms(max(ea, eb)) if be.queued else 0.0
        a: list[float] = []
        b: list[float] = []
        order: list[str] = []
        with _sampling(sampler):
            t0 = be.now()
            r = 0
            while r < rounds:
                pending = []
                for _ in range(min(rounds_per_sync, rounds - r)):
                    o = "BA" if alternate and r % 2 else "AB"
                    evs = {}
                    for side in o:
                        fn = call_a if side == "A" else call_b
                        if prepare is not None:
                            prepare(i0 + r)
                        be.flush()
                        be.spin(spin)
                        s = be.record()
                        fn(i0 + r)
                        evs[side] = (s, be.record())
                    pending.append(evs)
                    order.append(o)
                    r += 1
                be.sync()
                for evs in pending:
                    a.append(be.elapsed_ms(*evs["A"]))
                    b.append(be.elapsed_ms(*evs["B"]))
            t1 = be.now()
    p = Paired(a_ms=a, b_ms=b, order=order, method=be.method, spin_ms=spin if be.queued else None,
               enqueue_a_ms=ea, enqueue_b_ms=eb)
    cs = _clock_stats(sampler, t0, t1)
    if cs and cs.get("p10") and cs.get("p90"):
        p.clock_mhz_p10, p.clock_mhz_p90 = float(cs["p10"]), float(cs["p90"])
        var = (p.clock_mhz_p90 / p.clock_mhz_p10 - 1.0) * 100.0
        if var > CLOCK_VAR_PCT:
            p.flags.append("unstable")
            p.notes.append(f"SM clock varied {var:.1f}% during the A/B rounds (both sides saw the same clocks)")
    return p


def paired_speedup(base_ms: list[float], var_ms: list[float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Speed-up of the variant over the base from paired rounds: the median of the per-round ratios base/var, with a
    95% (smoothed) bootstrap interval that resamples ROUNDS (each round's pair kept together). The interval is
    widened to contain its own estimate if the bootstrap percentiles miss it (a discrete median of few rounds can);
    ``verdict`` is "noise" when the interval holds 1."""
    a = np.asarray(base_ms, dtype=np.float64)
    b = np.asarray(var_ms, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_speedup needs two equally long, non-empty per-round lists ({a.shape} vs {b.shape})")
    r = a / b
    est = float(np.median(r))
    n = len(r)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    # Smoothed bootstrap of the log ratios: a resampled median only takes the observed values, and the plain
    # percentile interval of a median under-covers at 30 rounds (93.7% over 4000 simulated runs, where 95% is
    # asked); a Gaussian kernel of bandwidth 0.5 x sigma x n^-1/5 (sigma from the MAD) gives 94-97% for 10-60
    # rounds, with or without outliers (tests/test_timing.py checks >= 93% over 1000 simulated runs).
    lr = np.log(r)
    h = SMOOTH_BOOT * 1.4826 * float(np.median(np.abs(lr - np.median(lr)))) * n ** -0.2
    boots = np.median(lr[idx] + h * rng.standard_normal((n_boot, n)), axis=1)
    lo, hi = (float(x) for x in np.exp(np.percentile(boots, [2.5, 97.5])))
    lo, hi = min(lo, est), max(hi, est)
    verdict = "noise" if lo <= 1.0 <= hi else ("faster" if lo > 1.0 else "slower")
    return {"speedup": est, "ci95": [lo, hi], "verdict": verdict, "n_rounds": len(r), "method": "paired-rounds",
            "text": f"{est:.2f}x [{lo:.2f}, {hi:.2f}]" + (" (within noise)" if verdict == "noise" else "")}
