"""Timing that can be trusted: device events, warm-up by time, L2 flushed before every call, adaptive repeats.

``time_calls(call)`` runs ``call(i)`` (i = call index, so a strict run can hand each call a fresh input set) and
returns a ``Timing`` with median / p10 / p90 / mean / standard error / n and the raw samples. On a GPU every sample
is the time between two CUDA events recorded on the current stream around one call, after the L2 was flushed by
writing a buffer of 2x the L2 size (allocated once). Without a GPU the same statistics come from a host timer and
are labelled ``cpu``: CPU/interpreter timings, not GPU figures. A short GPU spin is queued between the flush and
the start event so that host launch latency stays out of µs-scale samples (``SPIN_CYCLES``).

Repeats stop when the standard error of the mean is under ``target_rse`` (1%) of the median, or at ``max_s``.
``interleaved(call_a, call_b)`` times two callables ABAB... in one process under the same flush policy, and
``bootstrap_ratio`` turns the two sample sets into a speed-up with a 95% interval.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    stderr_ms: float
    n: int
    method: str  # "cuda-events" | "cpu"
    samples_ms: list[float] = field(default_factory=list)
    flush_l2: bool = True
    wall_ms: float | None = None  # device-synchronised host time per call (side-stream / async-work detection)

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


class L2Flusher:
    """A buffer of 2x the device's L2, allocated once per device; ``flush()`` overwrites it (evicting everything)."""

    _buffers: dict[int, torch.Tensor] = {}

    def __init__(self, device: torch.device | None = None):
        self.cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        if not self.cuda:
            self.buf = None
            return
        idx = torch.cuda.current_device() if device is None or torch.device(device).index is None \
            else torch.device(device).index
        if idx not in self._buffers:
            l2 = getattr(torch.cuda.get_device_properties(idx), "L2_cache_size", 0) or 64 * 2**20
            self._buffers[idx] = torch.empty(2 * l2 // 4, dtype=torch.int32, device=f"cuda:{idx}")
        self.buf = self._buffers[idx]

    def flush(self) -> None:
        if self.buf is not None:
            self.buf.fill_(0x5A5A5A5A)  # a write pass: dirty lines are evicted too


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# GPU-side spin queued before each start event (~100 µs at boost clock). Without it a µs-scale kernel's sample
# includes the host's launch latency whenever the GPU drains its queue first (seen on an H100: a pycuda launch
# looked 3x slower than ATen's in interleaved A/B rounds, which synchronise between samples). With it the host has
# enqueued the call before the GPU reaches the start event, so the events bracket the kernel alone.
SPIN_CYCLES = 200_000


def _spin() -> None:
    if SPIN_CYCLES and hasattr(torch.cuda, "_sleep"):
        torch.cuda._sleep(SPIN_CYCLES)


def _sample_round(call: Callable[[int], Any], start_i: int, k: int, flusher: L2Flusher | None,
                  use_events: bool) -> list[float]:
    if use_events:
        evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(k)]
        for j, (s, e) in enumerate(evs):
            if flusher is not None:
                flusher.flush()
            _spin()
            s.record()
            call(start_i + j)
            e.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in evs]
    out = []
    for j in range(k):
        t0 = time.perf_counter()
        call(start_i + j)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_calls(call: Callable[[int], Any], *, device: torch.device | str | None = None, warmup_s: float = 0.1,
               max_s: float = 1.0, min_n: int = 10, max_n: int = 2000, target_rse: float = 0.01,
               flush_l2: bool = True, measure_wall: bool = True) -> Timing:
    """Time ``call(i)`` for i = 0, 1, 2, ... (see module docstring)."""
    dev = torch.device(device) if device is not None else None
    use_events = torch.cuda.is_available() and (dev is None or dev.type == "cuda")
    flusher = L2Flusher(dev) if (use_events and flush_l2) else None
    i = 0
    # warm-up by time, not by count: the clocks ramp and caches/JITs fill during the first ~100 ms
    t_end = time.perf_counter() + warmup_s
    while True:
        if flusher is not None:
            flusher.flush()
        call(i)
        i += 1
        if use_events:
            torch.cuda.synchronize()
        if i >= 2 and time.perf_counter() >= t_end:
            break
    samples: list[float] = []
    t_stop = time.perf_counter() + max_s
    k = 5
    while len(samples) < max_n:
        samples += _sample_round(call, i, k, flusher, use_events)
        i += k
        n = len(samples)
        if n >= min_n:
            a = np.asarray(samples)
            med = float(np.median(a))
            rse = a.std(ddof=1) / math.sqrt(n) / med if med > 0 else 0.0
            if rse < target_rse or time.perf_counter() >= t_stop:
                break
        k = min(k * 2, 100)
    t = stats(samples, "cuda-events" if use_events else "cpu", flusher is not None)
    if measure_wall and use_events:
        walls = []
        for _ in range(5):
            if flusher is not None:
                flusher.flush()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            call(i)
            torch.cuda.synchronize()
            walls.append((time.perf_counter() - t0) * 1e3)
            i += 1
        t.wall_ms = float(np.median(walls))
    return t


def side_stream_suspect(t: Timing, slack_ms: float = 0.25) -> str | None:
    """Events on the current stream miss work launched elsewhere; a synchronised wall time does not.

    The slack absorbs host launch overhead (tens of µs per Python-launched kernel, more for multi-kernel variants),
    so µs-scale kernels are not flagged for it; hidden work of more than ~0.25 ms per call is."""
    if t.wall_ms is None or t.method != "cuda-events":
        return None
    if t.wall_ms > 3.0 * t.median_ms + slack_ms:
        return (f"device-synchronised wall time {t.wall_ms:.4g} ms per call is far above the event-timed median "
                f"{t.median_ms:.4g} ms: work outside the timed stream (side stream or deferred work)?")
    return None


def interleaved(call_a: Callable[[int], Any], call_b: Callable[[int], Any], *, rounds: int = 30,
                device: torch.device | str | None = None, flush_l2: bool = True,
                warmup_s: float = 0.05) -> tuple[list[float], list[float], str]:
    """A and B timed alternately (ABAB...) with the same flush policy: drift affects both equally."""
    dev = torch.device(device) if device is not None else None
    use_events = torch.cuda.is_available() and (dev is None or dev.type == "cuda")
    flusher = L2Flusher(dev) if (use_events and flush_l2) else None
    t_end = time.perf_counter() + warmup_s
    i = 0
    while i < 2 or time.perf_counter() < t_end:
        call_a(i)
        call_b(i)
        i += 1
    _sync()
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        a += _sample_round(call_a, i + r, 1, flusher, use_events)
        b += _sample_round(call_b, i + r, 1, flusher, use_events)
    return a, b, "cuda-events" if use_events else "cpu"


def bootstrap_ratio(base_ms: list[float], var_ms: list[float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Speed-up = median(base)/median(variant) with a bootstrap 95% interval; 'noise' when the interval holds 1."""
    rng = np.random.default_rng(seed)
    a = np.asarray(base_ms)
    b = np.asarray(var_ms)
    ia = rng.integers(0, len(a), size=(n_boot, len(a)))
    ib = rng.integers(0, len(b), size=(n_boot, len(b)))
    ratios = np.median(a[ia], axis=1) / np.median(b[ib], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    sp = float(np.median(a) / np.median(b))
    verdict = "noise" if lo <= 1.0 <= hi else ("faster" if lo > 1.0 else "slower")
    return {"speedup": sp, "ci95": [float(lo), float(hi)], "verdict": verdict,
            "text": f"{sp:.2f}x [{lo:.2f}, {hi:.2f}]" + (" (within noise)" if verdict == "noise" else "")}
