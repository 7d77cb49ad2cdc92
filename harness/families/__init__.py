"""Every kernel family registers itself here: one module per family (the problem and its variants).

``load_all()`` imports them in order; a family whose module fails to import is reported in ``LOAD_ERRORS``
(and by ``bench/run.py``) instead of taking the other families down. Families kept outside this folder (your own
course-assignment family, a test's toy family) are imported too when named in ``WB_FAMILIES`` (comma-separated
module names importable from the repo root or PYTHONPATH); worker processes inherit it.
"""

from __future__ import annotations

import importlib
import os
import traceback

MODULES = ("softmax", "matmul", "attention", "quant_gemm", "knn", "ann", "saxpy", "sgemm", "conv1d")
LOAD_ERRORS: dict[str, str] = {}
_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    extra = [m.strip() for m in os.environ.get("WB_FAMILIES", "").split(",") if m.strip()]
    for name in [*MODULES, *extra]:
        mod = name if "." in name or name in extra else f"harness.families.{name}"
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod and name in MODULES:
                continue  # family not written yet: bench/run.py says "planned but not implemented"
            LOAD_ERRORS[name] = traceback.format_exc(limit=3)
        except Exception:
            LOAD_ERRORS[name] = traceback.format_exc(limit=3)
    prime_cuda_sources()


def prime_cuda_sources() -> None:
    """Every CUDA variant's kernels (every dtype) join their source's instantiation list before anything compiles:
    one build per .cu and arch, with the same cache key in every process."""
    from harness.registry import REGISTRY

    for problem in REGISTRY.values():
        for v in problem.variants.values():
            if v.backend == "cuda" and v.source is not None and hasattr(v.source, "_ensure_instantiated"):
                for d in v.dtypes:
                    for k in v.kernel_names(d):
                        v.source._ensure_instantiated(k)
