"""Provenance stamped on every record: commit, versions, the CUDA loader, time."""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(None)
def git_sha() -> str:
    """HEAD's sha, with '+dirty' when tracked files differ from it ('unknown' outside a checkout).

    A copy of the tree without its history (a GPU machine's working copy) names its commit in WB_GIT_SHA."""
    import os
    import re

    env = os.environ.get("WB_GIT_SHA", "")
    if re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", env):
        return env
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return None


@functools.lru_cache(None)
def versions() -> dict[str, str | None]:
    import torch

    from harness import cuda

    v = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "nvcc": cuda.nvcc_version(),
        "pycuda": _version("pycuda"),
        "cuda_core": _version("cuda-core"),
        "nvidia_ml_py": _version("nvidia-ml-py"),
    }
    try:
        v["cuda_loader"] = cuda.loader_name() if torch.cuda.is_available() else None
    except Exception:
        v["cuda_loader"] = None
    return v


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
