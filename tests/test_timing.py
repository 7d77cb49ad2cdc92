"""Timing statistics on the CPU with a simulated device clock (issue 17).

``SimDevice`` is an event source for ``harness.timing``: a host clock plus per-stream GPU queues. A launch costs host
time and the GPU starts the work when both the stream is free and the host has enqueued it, so host launch latency
lands inside an event pair exactly when the GPU drains its queue first -- the failure the spin before each start
event prevents. Kernel durations carry a slow clock drift, log-normal noise and outliers drawn in bulk with numpy.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness import timing
from harness.timing import Backend, paired, paired_speedup, time_calls


class SimDevice(Backend):
    method = "sim-events"
    queued = True

    def __init__(self, seed: int = 0, *, drift: float = 0.0, drift_span_ms: float = 50.0, noise: float = 0.0,
                 outlier_p: float = 0.0, outlier_mult: float = 1.5, launch_ms: float = 0.005,
                 record_ms: float = 0.001, sync_ms: float = 0.005, flush_ms: float = 0.02):
        self.key = f"sim-{id(self)}"
        self.host = 0.0  # ms
        self.free = {"main": 0.0, "side": 0.0}  # when each stream's queue drains (ms)
        self.drift, self.span = drift, drift_span_ms
        self.launch_ms, self.record_ms, self.sync_ms, self.flush_ms = launch_ms, record_ms, sync_ms, flush_ms
        rng = np.random.default_rng(seed)
        n = 4096
        self._noise = np.exp(noise * rng.standard_normal(n)) * np.where(rng.random(n) < outlier_p, outlier_mult, 1.0)
        self._k = 0
        self.log: list[str] = []  # "rec" / "sync" / "wait" in host order

    # -- what a variant does: host work, then a kernel on a stream
    def kernel(self, ms: float, *, host_ms: float | None = None, stream: str = "main", exact: bool = False) -> None:
        self.host += self.launch_ms if host_ms is None else host_ms
        start = max(self.free[stream], self.host)
        if not exact:
            # clock slows by `drift` over `span` ms of device time; noise/outliers per kernel
            ms = ms * (1.0 + self.drift * min(start / self.span, 1.0)) * self._noise[self._k % len(self._noise)]
            self._k += 1
        self.free[stream] = start + ms

    # -- Backend
    def now(self) -> float:
        return self.host / 1e3

    def record(self) -> float:
        self.log.append("rec")
        self.host += self.record_ms
        t = max(self.free["main"], self.host)
        self.free["main"] = t
        return t

    def elapsed_ms(self, a: float, b: float) -> float:
        return b - a

    def sync(self) -> None:
        self.log.append("sync")
        self.host = max(self.host, *self.free.values()) + self.sync_ms

    def wait(self, ev: float) -> None:
        self.log.append("wait")
        self.host = max(self.host, ev) + self.sync_ms

    def spin(self, ms: float) -> None:
        self.kernel(ms, exact=True)

    def flush(self) -> None:
        self.kernel(self.flush_ms, exact=True)

    def empty_launch(self) -> None:
        self.kernel(0.001, exact=True)


def _kernel(sim: SimDevice, ms: float, host_ms: float):
    return lambda i: sim.kernel(ms, host_ms=host_ms)


# ------------------------------------------------------------------------------------------------ time_calls
def test_spin_keeps_host_latency_out_of_samples():
    sim = SimDevice()
    # 50 µs kernel, 300 µs to enqueue (a Python launcher): without the spin every sample would read ~0.3 ms
    t = time_calls(_kernel(sim, 0.05, 0.30), backend=sim, warmup_s=0.002, max_s=0.05, min_n=20)
    assert t.median_ms == pytest.approx(0.05, rel=1e-6) and t.p90_ms == pytest.approx(0.05, rel=1e-6)
    assert t.enqueue_ms == pytest.approx(0.302, rel=0.01) and t.spin_ms > t.enqueue_ms
    assert t.flags == [] and t.suspect_reasons == []
    # events come in (start, end) pairs with no host sync between them; rounds of samples share one sync
    inside, run, longest = False, 0, 0
    for what in sim.log:
        if what == "rec":
            inside = not inside
            run += not inside
        else:
            assert not inside, "host sync inside a timed region"
            longest, run = max(longest, run), 0
    assert not inside and longest >= 10  # >= 10 samples queued between two syncs
    # host-bound honest variant: wall ~ enqueue time, explained by the host, so not a side-stream gap
    assert t.wall_ms == pytest.approx(0.30, rel=0.05) and t.side_stream_gap_ms < 0.02


def test_no_spin_lets_launch_latency_in():
    sim = SimDevice()
    old = timing.SPIN_MIN_MS, timing.SPIN_FACTOR, timing.SPIN_MARGIN_MS
    try:
        timing.SPIN_MIN_MS = timing.SPIN_FACTOR = timing.SPIN_MARGIN_MS = 0.0
        bad = time_calls(_kernel(sim, 0.05, 0.30), backend=sim, warmup_s=0.002, max_s=0.05)
    finally:
        timing.SPIN_MIN_MS, timing.SPIN_FACTOR, timing.SPIN_MARGIN_MS = old
    assert bad.median_ms > 0.25  # 5x the kernel: the known-wrong configuration the spin exists for


def test_prepare_and_after_run_outside_the_timed_region():
    sim = SimDevice()
    log: list[tuple[str, int]] = []

    def prepare(i):
        log.append(("prepare", i))
        sim.kernel(1.0, exact=True)  # regenerating inputs: 1 ms of GPU work that must not be timed

    def call(i):
        log.append(("call", i))
        sim.kernel(0.2, exact=True)

    def after(i):
        log.append(("after", i))
        sim.kernel(0.5, exact=True)  # copying outputs for a check

    t = time_calls(call, prepare=prepare, after=after, backend=sim, warmup_s=0.002, min_n=10, max_s=0.1)
    assert t.median_ms == pytest.approx(0.2, rel=1e-6) and t.p90_ms == pytest.approx(0.2, rel=1e-6)
    calls = [i for what, i in log if what == "call"]
    assert calls == list(range(len(calls)))  # every call (warm-up, samples, wall batch) gets its own index
    timed = [i for what, i in log if what == "after"]
    assert len(timed) == t.n
    for i in timed:  # prepare(i) before call(i) before after(i)
        k = log.index(("call", i))
        assert log[k - 1] == ("prepare", i) and log[k + 1] == ("after", i)


def test_launch_bound_flag():
    sim = SimDevice(launch_ms=0.006)
    lo = timing.launch_overhead_ms(backend=sim)
    assert lo == pytest.approx(0.007, rel=0.2)  # launch latency + event record, on an idle device
    tiny = time_calls(_kernel(sim, 0.01, 0.006), backend=sim, warmup_s=0.002, max_s=0.05)
    assert "launch-bound" in tiny.flags and tiny.launch_overhead_ms == lo
    sim2 = SimDevice(launch_ms=0.006)
    big = time_calls(_kernel(sim2, 1.0, 0.006), backend=sim2, warmup_s=0.002, max_s=0.05)
    assert "launch-bound" not in big.flags


def test_drift_makes_a_record_unstable():
    sim = SimDevice(drift=0.08, drift_span_ms=40.0, noise=0.005)  # +8% over the samples, like the H100 matmul
    t = time_calls(_kernel(sim, 0.5, 0.01), backend=sim, warmup_s=0.0, min_n=60, max_n=60, max_s=10)
    assert t.drift_pct > 3 and "unstable" in t.flags and any("drifted" in x for x in t.notes)
    sim2 = SimDevice(noise=0.02, outlier_p=0.05)  # noisy but stationary: not unstable
    ok = time_calls(_kernel(sim2, 0.5, 0.01), backend=sim2, warmup_s=0.0, min_n=60, max_n=60, max_s=10)
    assert abs(ok.drift_pct) < 3 and "unstable" not in ok.flags


class FakeSampler:
    running = True

    def __init__(self, p10, p90):
        self.p10, self.p90 = p10, p90

    def clock_stats(self, t0=None, t1=None):
        return {"p10": self.p10, "p90": self.p90, "n": 20}


def test_clock_variation_makes_a_record_unstable():
    sim = SimDevice()
    t = time_calls(_kernel(sim, 0.5, 0.01), backend=sim, warmup_s=0.0, sampler=FakeSampler(1700, 1980))
    assert t.clock_mhz_p10 == 1700 and t.clock_var_pct > 5 and "unstable" in t.flags
    sim = SimDevice()
    t = time_calls(_kernel(sim, 0.5, 0.01), backend=sim, warmup_s=0.0, sampler=FakeSampler(1950, 1980))
    assert "unstable" not in t.flags and t.clock_mhz_p90 == 1980


def test_side_stream_work_makes_a_record_suspect():
    sim = SimDevice()

    def cheat(i):  # returns after a tiny kernel on the timed stream; the real 0.4 ms runs on a side stream
        sim.kernel(0.4, host_ms=0.005, stream="side")
        sim.kernel(0.002, host_ms=0.005)

    t = time_calls(cheat, backend=sim, warmup_s=0.002, max_s=0.05)
    assert t.median_ms < 0.01
    assert "suspect" in t.flags and t.side_stream_gap_ms > 0.3 and "side stream" in t.suspect_reasons[0]
    # a slow host does not hide hidden work longer than its enqueue time (wall 0.5 ms/call vs 0.3 ms enqueue)
    sim = SimDevice()

    def slow_host_cheat(i):
        sim.kernel(0.5, host_ms=0.005, stream="side")
        sim.kernel(0.002, host_ms=0.3)

    t = time_calls(slow_host_cheat, backend=sim, warmup_s=0.002, max_s=0.05)
    assert "suspect" in t.flags and t.side_stream_gap_ms > 0.15
    # (hidden work SHORTER than the host's enqueue time finishes inside it and no host clock can see it; the
    # runner's after() copy of the outputs on the timed stream is what catches such a variant: it reads them early)
    # honest GPU-bound variant: no gap
    sim = SimDevice(noise=0.01)
    t = time_calls(_kernel(sim, 0.4, 0.01), backend=sim, warmup_s=0.002, max_s=0.05)
    assert "suspect" not in t.flags and t.side_stream_gap_ms < 0.02


def test_cpu_timing_pins_threads_and_flags_spread():
    import torch

    before = torch.get_num_threads()
    seen = []
    t = time_calls(lambda i: seen.append(torch.get_num_threads()), warmup_s=0.0, max_s=0.05, cpu_threads_n=1)
    assert t.method == "cpu" and t.cpu_threads == 1 and set(seen) == {1} and torch.get_num_threads() == before
    assert t.wall_ms is None and t.side_stream_gap_ms is None
    calls = []

    def spiky(i):  # every other call 5x slower: p90/p10 > 3
        calls.append(i)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < (0.002 if i % 2 else 0.0004):
            pass

    t = time_calls(spiky, warmup_s=0.0, max_s=0.1, min_n=20)
    assert "unstable" in t.flags and any("p90/p10" in x for x in t.notes)


def test_time_graph_falls_back_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the graph path is a gpu test")
    t = timing.time_graph(lambda i: None, n_calls=4, warmup_s=0.0, max_s=0.02)
    assert t.method == "cpu" and t.graph_calls is None and "no CUDA device" in t.notes[-1]


# ------------------------------------------------------------------------------------------------ paired A/B
BASE_MS, VAR_MS = 0.20, 0.16  # true ratio 1.25
BASE_HOST, VAR_HOST = 0.02, 0.25  # the variant takes 0.25 ms to enqueue (Python launcher)
TRUE = BASE_MS / VAR_MS


def _scenario(seed: int) -> SimDevice:
    # clock slows 5% over the run, 2% log-normal noise, 5% outliers at 1.5x
    return SimDevice(seed, drift=0.05, drift_span_ms=40.0, noise=0.02, outlier_p=0.05)


def _new_method(seed: int) -> dict:
    sim = _scenario(seed)
    p = paired(_kernel(sim, BASE_MS, BASE_HOST), _kernel(sim, VAR_MS, VAR_HOST), rounds=30, warmup_s=0.001,
               backend=sim)
    return paired_speedup(p.a_ms, p.b_ms, n_boot=1000, seed=seed)


def _old_method(seed: int) -> dict:
    """The method issue 17 found wrong: one sample per round with a host sync after each (a fixed 0.1 ms spin, so
    a slow enqueue lands in the events), then A and B bootstrapped independently (pairs discarded), estimate =
    ratio of medians."""
    sim = _scenario(seed)
    a, b = [], []
    for _ in range(30):
        for fn, out in ((_kernel(sim, BASE_MS, BASE_HOST), a), (_kernel(sim, VAR_MS, VAR_HOST), b)):
            sim.flush()
            sim.spin(0.1)
            s = sim.record()
            fn(0)
            e = sim.record()
            sim.sync()
            out.append(e - s)
    rng = np.random.default_rng(seed)
    a_, b_ = np.asarray(a), np.asarray(b)
    ia = rng.integers(0, 30, (1000, 30))
    ib = rng.integers(0, 30, (1000, 30))
    lo, hi = np.percentile(np.median(a_[ia], 1) / np.median(b_[ib], 1), [2.5, 97.5])
    return {"speedup": float(np.median(a_) / np.median(b_)), "ci95": [float(lo), float(hi)]}


def _coverage(method, runs: int) -> tuple[float, bool]:
    hit, contains = 0, True
    for seed in range(runs):
        r = method(seed)
        lo, hi = r["ci95"]
        hit += lo <= TRUE <= hi
        contains &= lo <= r["speedup"] <= hi
    return hit / runs, contains


def test_paired_rounds_alternate_and_exclude_host_latency():
    sim = SimDevice()
    p = paired(_kernel(sim, BASE_MS, BASE_HOST), _kernel(sim, VAR_MS, VAR_HOST), rounds=10, warmup_s=0.001,
               backend=sim)
    assert p.order == ["AB", "BA"] * 5 and len(p.a_ms) == len(p.b_ms) == 10
    assert np.allclose(p.a_ms, BASE_MS) and np.allclose(p.b_ms, VAR_MS)
    assert p.spin_ms > p.enqueue_b_ms > p.enqueue_a_ms
    r = p.speedup()
    assert r["speedup"] == pytest.approx(TRUE) and r["method"] == "paired-rounds" and r["verdict"] == "faster"


def test_paired_speedup_coverage_and_old_method_fails():
    """1000 simulated runs: the paired 95% interval covers the true ratio >= 93% of the time and always contains
    its estimate; the old method fails the same test."""
    t0 = time.perf_counter()
    cov, contains = _coverage(_new_method, 1000)
    assert contains
    assert cov >= 0.93, cov
    old_cov, old_contains = _coverage(_old_method, 1000)
    assert old_cov < 0.93 or not old_contains, old_cov
    assert time.perf_counter() - t0 < 30  # budget: keep the simulation cheap


def test_paired_speedup_shapes_and_verdicts():
    r = paired_speedup([1.0] * 30, [1.0] * 30)
    assert r["speedup"] == 1.0 and r["verdict"] == "noise" and "within noise" in r["text"]
    rng = np.random.default_rng(1)
    base = 2.0 * np.exp(0.01 * rng.standard_normal(30))
    r = paired_speedup(list(base), list(base * 2.0))
    assert r["verdict"] == "slower" and r["ci95"][0] <= r["speedup"] <= r["ci95"][1] < 1
    with pytest.raises(ValueError):
        paired_speedup([1.0, 2.0], [1.0])
    # a skewed 5-round set whose bootstrap percentiles miss the median: widened to contain it
    r = paired_speedup([1, 1, 1, 10, 10], [1, 1, 1, 1, 1], n_boot=200)
    assert r["ci95"][0] <= r["speedup"] <= r["ci95"][1]


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_gpu_time_calls_flags_and_side_stream():
    import torch

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    out = torch.empty_like(a)
    lo = timing.launch_overhead_ms()
    assert 0.0005 < lo < 0.2, lo
    t = time_calls(lambda i: torch.mm(a, a, out=out), warmup_s=0.2, max_s=0.5)
    assert t.method == "cuda-events" and t.spin_ms >= timing.SPIN_MIN_MS and t.enqueue_ms > 0
    assert "suspect" not in t.flags and "launch-bound" not in t.flags, (t.flags, t.notes, t.suspect_reasons)
    assert t.wall_ms is not None and t.side_stream_gap_ms < 0.1 * t.median_ms + 0.02
    side = torch.cuda.Stream()

    def cheat(i):  # the real work on a side stream, a token kernel on the timed one
        with torch.cuda.stream(side):
            torch.mm(a, a, out=out)
        out[0, 0].zero_()

    c = time_calls(cheat, warmup_s=0.1, max_s=0.3)
    assert "suspect" in c.flags and any("side stream" in r for r in c.suspect_reasons), (c.median_ms, c.wall_ms)
    x = torch.zeros(1024, device="cuda")
    tiny = time_calls(lambda i: x.add_(1), warmup_s=0.05, max_s=0.2)
    assert "launch-bound" in tiny.flags, (tiny.median_ms, lo)


@pytest.mark.gpu
def test_gpu_graph_paired_and_read_only_flush():
    import torch

    x = torch.zeros(1 << 16, device="cuda")
    g = timing.time_graph(lambda i: x.add_(1), n_calls=20, warmup_s=0.05, max_s=0.3)
    assert g.method == "cuda-graph" and g.graph_calls == 20
    per_call = time_calls(lambda i: x.add_(1), warmup_s=0.05, max_s=0.3)
    # per call = replay / 20 (forgetting the division reads ~20x the per-call time)
    assert 0 < g.median_ms < 2 * per_call.median_ms, (g.median_ms, per_call.median_ms)
    bad = timing.time_graph(lambda i: x.sum().item(), n_calls=4, warmup_s=0.02, max_s=0.1)  # host sync: no capture
    assert bad.method == "cuda-events" and "capture" in bad.notes[-1]
    a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
    o1, o2 = torch.empty_like(a), torch.empty(2048, 4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(2048, 4096, device="cuda", dtype=torch.bfloat16)
    p = paired(lambda i: torch.mm(a, b, out=o2), lambda i: torch.mm(a, a, out=o1), rounds=30)
    r = p.speedup()
    assert p.order[:2] == ["AB", "BA"] and r["ci95"][0] <= r["speedup"] <= r["ci95"][1]
    assert 1.6 < r["speedup"] < 2.4, r  # B does half the work of A
    f = timing.L2Flusher()
    f.flush()
    torch.cuda.synchronize()
    assert torch.equal(f.buf, torch.ones_like(f.buf)) and f._out.item() > 0  # read, never written
