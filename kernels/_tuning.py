"""Pinned Triton autotune choices per device, so a short GPU lease compiles one config per (kernel, call class)
instead of compiling and timing every candidate (2-3 s of compile each, ~10 candidates for attention).

The table is ``bench/tuned/<gpu-slug>.json`` (slug as in ``bench/results/``: "NVIDIA H200" -> ``h200``)::

    {"device": "NVIDIA H200", "source": "...", "kernels": {"matmul_kernel": {"16bit": {"kwargs": {...},
     "num_warps": 8, "num_stages": 3}, "*": {...}}}}

Each autotuned kernel names its call class (matmul: operand size or small M; attention: short or long queries);
a missing class falls back to ``"*"``, a missing kernel or file to plain autotuning.

``WB_TUNE`` unset (or ``pin``): pinned config where the table has one, else autotune. ``WB_TUNE=1``: autotune and
ignore the table (``TRITON_PRINT_AUTOTUNING=1`` prints the winners to copy into it). ``WB_TUNE=0``: each kernel's
first listed config. ``WB_TUNED=path.json`` reads that table whatever the GPU (tests; another card's pins).
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

TUNED_DIR = Path(__file__).resolve().parent.parent / "bench" / "tuned"
_STATE = threading.local()  # pinned: the last prune in this thread returned a pinned config (Triton 3.6 benches it)


def interpreter() -> bool:
    """True when Triton runs under TRITON_INTERPRET=1 (the CPU machine): slow, and bf16 tl.dot is wrong there."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def tuning() -> bool:
    """Autotune Triton kernels (default). WB_TUNE=0 takes each kernel's first listed config instead: correctness
    sweeps on a fresh GPU machine then compile one config per kernel, not ten."""
    return os.environ.get("WB_TUNE", "1") != "0" and not interpreter()


def mode() -> str:
    """'pin' (default), 'tune' (WB_TUNE=1) or 'first' (WB_TUNE=0)."""
    v = os.environ.get("WB_TUNE", "").strip().lower()
    return {"1": "tune", "0": "first"}.get(v, "pin")


def gpu_slug(name: str) -> str:
    """Same spelling as roofline.ceilings.gpu_slug (not imported: kernels stay free of the roofline package)."""
    s = re.sub(r"[^a-z0-9]+", "-", (name or "unknown-gpu").lower()).strip("-")
    return s.replace("nvidia-", "", 1) if s.startswith("nvidia-") else s


def table_path() -> Path | None:
    env = os.environ.get("WB_TUNED", "").strip()
    if env:
        return Path(env)
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return TUNED_DIR / f"{gpu_slug(torch.cuda.get_device_name())}.json"
    except Exception:
        return None


@functools.lru_cache(None)
def _load(path: str, mtime: float) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("kernels"), dict):
        raise ValueError(f"{path}: expected {{'kernels': {{kernel: {{class: config}}}}}}")
    return data


def pinned_entry(kernel: str, cls: str) -> dict[str, Any] | None:
    """The table's entry for (kernel, class), its '*' entry, or None (no table, no entry, or not pinning)."""
    if mode() != "pin":
        return None
    path = table_path()
    if path is None or not path.exists():
        return None
    table = _load(str(path), path.stat().st_mtime)["kernels"].get(kernel) or {}
    return table.get(cls) or table.get("*")


def pinned(kernel: str, cls: str):
    """The pinned ``triton.Config`` for this kernel and call class, or None."""
    e = pinned_entry(kernel, cls)
    if e is None:
        return None
    import triton

    return triton.Config(dict(e["kwargs"]), num_warps=int(e["num_warps"]), num_stages=int(e["num_stages"]))


def prune_with_pins(kernel: str, classify: Callable[[dict], str], prune: Callable | None = None) -> Callable:
    """An ``early_config_prune`` for ``triton.autotune``: the pinned config alone when there is one (Triton then
    compiles one config and, from 3.9 on, times nothing), else the kernel's own pruning."""

    def hook(configs, named_args, **kwargs):
        cfg = pinned(kernel, classify(named_args))
        _STATE.pinned = cfg is not None
        if cfg is not None:
            return [cfg]
        return prune(configs, named_args, **kwargs) if prune is not None else configs

    hook.kernel = kernel  # type: ignore[attr-defined]
    return hook


def bench_unless_pinned(do_bench: Callable | None = None) -> Callable:
    """``do_bench`` for ``triton.autotune``: after a pinned prune, one call (it compiles and runs) and no timing;
    Triton 3.6 still benchmarks a single pruned config (~25 + 100 ms per call class), 3.9 skips it itself."""

    def bench(fn, quantiles=None, **kw):
        if getattr(_STATE, "pinned", False):
            fn()
            return [0.0] * len(quantiles) if quantiles else 0.0
        if do_bench is not None:
            return do_bench(fn, quantiles=quantiles, **kw)
        import triton

        return triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=quantiles)

    return bench


def config_entry(cfg) -> dict[str, Any]:
    """A ``triton.Config`` as a table entry (what ``bench/tuned/*.json`` holds)."""
    return {"kwargs": dict(cfg.kwargs), "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
