"""Every kernel family registers itself here: one module per family (the problem and its variants).

``load_all()`` imports them in order; a family whose module fails to import is reported in ``LOAD_ERRORS``
(and by ``bench/run.py``) instead of taking the other families down.
"""

from __future__ import annotations

import importlib
import traceback

MODULES = ("softmax", "matmul", "attention", "quant_gemm", "knn")
LOAD_ERRORS: dict[str, str] = {}
_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in MODULES:
        try:
            importlib.import_module(f"harness.families.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"harness.families.{name}":
                continue  # family not written yet: bench/run.py says "planned but not implemented"
            LOAD_ERRORS[name] = traceback.format_exc(limit=3)
        except Exception:
            LOAD_ERRORS[name] = traceback.format_exc(limit=3)
