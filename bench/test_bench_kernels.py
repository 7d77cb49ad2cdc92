"""Every registered variant x dtype x shape as a pytest-benchmark case, timed with the harness' GPU-correct timer.

Each case is first checked for correctness (``harness.cli.check_task``: fresh inputs per seed, NaN-poisoned
outputs, float64 reference, the same path as ``bench/run.py``), then timed with ``benchmark.pedantic``:

* on a GPU the fixture's timer is ``conftest.cuda_event_clock``: each round is one call between two CUDA events on
  the current stream, synchronised on the end event, with the L2 flushed in the (untimed) ``setup`` before every
  round -- the same per-sample method as ``harness.timing.time_calls`` (so the saved JSON holds device times, not
  host launch times). Warm-up rounds come first.
* on the CPU (Triton under TRITON_INTERPRET=1, torch on the CPU) the default host timer is used: CPU timings.
* CUDA variants without a GPU, and variants that cannot run a shape, are skipped with the reason; a dtype a
  variant never supports is not a case at all.

``benchmark.extra_info`` carries family, variant, backend, dtype, shape, device, status, rel_err, flops, bytes,
median_ms, tflops, gbps, pct_of_roofline (when a roofline profile is available), timing and throughput_unit; the
``group`` is "<family> <dtype> <shape>" so ``pytest-benchmark compare --group-by group`` lines variants up.
``--benchmark-disable`` still checks every case (and calls each variant once): that is the CI mode.
"""

from __future__ import annotations

import pytest
import torch

from harness import registry
from harness.runner import Task, _call_variant, device


def _families(config) -> list[str]:
    registry.all_problems()
    names = list(registry.REGISTRY)
    want = [k.strip() for k in str(config.getoption("--wb-kernel")).split(",") if k.strip()]
    if not want or "all" in want:
        return names
    return [n for n in names if any(n == w or n.startswith(w + "_") for w in want)]


def cases(config) -> list[Task]:
    default = config.getoption("--wb-shapes") == "default"
    out = []
    for fam in _families(config):
        p = registry.REGISTRY[fam]
        for s in (p.shapes if default else p.quick):
            for dt in p.dtypes:
                for name, v in p.variants.items():
                    if dt in v.dtypes:  # a variant x dtype that can never run is not a case (not a skip either)
                        out.append(Task(fam, name, dt, s.key()))
    return out


def pytest_generate_tests(metafunc):
    if "wb_task" in metafunc.fixturenames:
        tasks = cases(metafunc.config)
        metafunc.parametrize("wb_task", tasks, ids=[f"{t.family}-{t.variant}-{t.dtype}-{t.shape}" for t in tasks])


@pytest.fixture(scope="session")
def wb_profile(request):
    """Roofline ceilings (None without a GPU or without the roofline package)."""
    path = request.config.getoption("--wb-profile")
    try:
        from roofline.ceilings import get_profile, load_profile
    except Exception:
        return None
    if path:
        return load_profile(path)
    if not torch.cuda.is_available():
        return None
    try:
        return get_profile(measure=False)  # the cached measured profile of this GPU, else the datasheet one
    except Exception:
        return None


def test_families_import():
    """A family whose module fails to import would silently vanish from the cases: fail loudly instead."""
    from harness.registry import LOAD_ERRORS

    registry.all_problems()
    assert not LOAD_ERRORS, "\n".join(f"{k}: {v}" for k, v in LOAD_ERRORS.items())


def test_kernel(benchmark, wb_task: Task, wb_profile, request):
    from harness import check as chk
    from harness.cli import check_task

    cfg = request.config
    seeds = tuple(int(s) for s in str(cfg.getoption("--wb-seeds")).split(",") if s.strip()) or (0,)
    problem = registry.get_problem(wb_task.family)
    v = problem.variants[wb_task.variant]
    shape = problem.parse_shape(wb_task.shape)
    dev = device()
    on_gpu = dev.type == "cuda"
    benchmark.group = f"{wb_task.family} {wb_task.dtype} {wb_task.shape}"
    info = benchmark.extra_info
    info.update(family=wb_task.family, variant=v.name, backend=v.backend, baseline=v.baseline, dtype=wb_task.dtype,
                shape=wb_task.shape, device=torch.cuda.get_device_name() if on_gpu else "cpu",
                throughput_unit=problem.throughput_unit, flops=float(problem.flops(shape)),
                bytes=float(problem.min_bytes(shape, wb_task.dtype)))

    rec = check_task(wb_task, seeds, compile_cuda=False)
    info.update(status=rec["status"], rel_err=rec.get("rel_err"))
    if rec["status"] in ("skipped", "compiled"):
        pytest.skip(f"{rec['status']}: {rec.get('message')}")
    if rec["status"] != "ok":
        pytest.fail(f"{wb_task.label()}: {rec['status']}: {rec.get('message')}", pytrace=False)

    inputs = problem.make_inputs(shape, wb_task.dtype, seeds[0], dev)
    outs = problem.make_outputs(shape, wb_task.dtype, dev) if v.style == "out" else None
    for t in (outs or {}).values():
        chk.poison_(t)
    setup = None
    if on_gpu:
        from conftest import cuda_event_clock

        from harness.timing import L2Flusher

        benchmark._timer = cuda_event_clock  # pytest-benchmark's timer hook (see the module docstring)
        setup = L2Flusher(dev).flush
    rounds = cfg.getoption("--wb-rounds") or (50 if on_gpu else 3)
    benchmark.pedantic(_call_variant, args=(v, inputs, outs, shape), setup=setup, rounds=rounds,
                       warmup_rounds=5 if on_gpu else 1, iterations=1)
    if benchmark.enabled and benchmark.stats is not None:
        med_s = benchmark.stats.stats.median
        info.update(median_ms=med_s * 1e3, timing="cuda-events" if on_gpu else "cpu",
                    tflops=info["flops"] / med_s / 1e12 if med_s > 0 else None,
                    gbps=info["bytes"] / med_s / 1e9 if med_s > 0 else None, pct_of_roofline=None)
        if wb_profile is not None:
            try:
                from roofline.model import annotate

                roof = annotate({**info, "status": "ok", "compute_dtype": problem.compute_dtype(wb_task.dtype)
                                 if problem.compute_dtype else wb_task.dtype}, wb_profile)
                info["pct_of_roofline"] = roof.get("pct_of_roofline")
            except Exception as e:
                info["roofline_note"] = f"{type(e).__name__}: {e}"
