"""pytest setup for the pytest-benchmark suite (bench/test_bench_kernels.py); not part of the CPU test suite.

Run it explicitly (``testpaths`` in pyproject.toml is ``tests``, so ``pytest`` alone never collects it)::

    python -m pytest bench/test_bench_kernels.py                                  # quick shapes, timed
    python -m pytest bench/test_bench_kernels.py --wb-shapes default --benchmark-autosave
    python -m pytest bench/test_bench_kernels.py --benchmark-disable -q           # CI: correctness of every case
    pytest-benchmark compare 0001 0002 --group-by group                           # saved runs, pytest-benchmark's own

Options: ``--wb-shapes quick|default``, ``--wb-kernel softmax,matmul`` (families, default all), ``--wb-seeds 0,1``
(correctness seeds before timing), ``--wb-rounds N`` (timed rounds; default 50 on a GPU, 3 on the CPU),
``--wb-profile profile.json`` (roofline ceilings for ``pct_of_roofline``; default the cached profile of this GPU).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if not torch.cuda.is_available():  # before triton is first imported
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WB_CACHE", str(ROOT / ".cache"))


def pytest_addoption(parser):
    g = parser.getgroup("workbench", "GPU kernel workbench benchmark suite")
    g.addoption("--wb-shapes", choices=("quick", "default"), default=os.environ.get("WB_BENCH_SHAPES", "quick"),
                help="each family's quick (tiny, default) or default (GPU) shape set")
    g.addoption("--wb-kernel", default=os.environ.get("WB_BENCH_KERNEL", "all"),
                help="comma-separated families (a name also selects its '<name>_*' families); default all")
    g.addoption("--wb-seeds", default="0", help="correctness seeds checked before timing (default 0)")
    g.addoption("--wb-rounds", type=int, default=None, help="timed rounds per case (default 50 GPU / 3 CPU)")
    g.addoption("--wb-profile", default=None, help="roofline profile JSON for pct_of_roofline")


def _stamp_event():
    ev = torch.cuda.Event(enable_timing=True)
    ev.record()
    return ev


class _Stamp:
    """A point on the current CUDA stream; ``end - start`` waits for ``end`` and returns the seconds between them."""

    __slots__ = ("ev",)

    def __init__(self) -> None:
        self.ev = _stamp_event()

    def __sub__(self, other: _Stamp) -> float:
        self.ev.synchronize()
        return other.ev.elapsed_time(self.ev) / 1e3


def cuda_event_clock() -> _Stamp:
    """pytest-benchmark timer made of CUDA events: the fixture computes ``timer() ... call ... timer()`` as
    ``end - start``, which here is the device time between two events recorded on the current stream around the
    call (synchronised on ``end``: every round is device-synchronised), exactly like ``harness.timing.time_calls``.
    Usable globally as ``--benchmark-timer conftest.cuda_event_clock`` too."""
    return _Stamp()
