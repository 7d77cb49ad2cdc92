"""Test session setup: the Triton interpreter on machines without a GPU, and the `gpu` marker.

TRITON_INTERPRET must be set before triton is first imported, so it happens here, at collection start.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WB_CACHE", str(ROOT / ".cache"))  # compiled cubins shared by tests and CLI runs in CI
os.environ.setdefault("WB_XRAY", "0")  # no X-ray compile per CLI run in tests; tests that need it set WB_XRAY=1
# The CUDA interpreter (harness.interp) is on by default without a GPU; the suite keeps CUDA variants compile-only
# (status `compiled`) so that its CLI runs stay short, and the interpreter's own tests (test_interp.py) turn it on.
os.environ.setdefault("WB_CUDA_INTERPRET", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _xray_where_tested(request, monkeypatch):
    """WB_XRAY=0 above keeps CLI runs cheap; the X-ray's own tests (and tests marked xray) need it on."""
    if request.module.__name__.endswith("test_xray") or "xray" in request.keywords:
        monkeypatch.setenv("WB_XRAY", "1")
