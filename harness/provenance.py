"""Provenance stamped on every record: commit, versions, the CUDA loader, time."""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# written by `make gpu-prep` (harness.gpurun.write_provenance) and carried with a tree that has no .git
PROVENANCE_FILE = ROOT / ".cache" / "gpu-prep" / "provenance.json"


@functools.lru_cache(None)
def git_sha() -> str:
    """HEAD's sha, with '+dirty' when tracked files differ from it ('unknown' outside a checkout).

    A copy of the tree without its history (a GPU machine's working copy) names its commit in WB_GIT_SHA, or in
    PROVENANCE_FILE (``make gpu-prep``): its sha, '+dirty' when it says so or when a tracked file's content no
    longer matches the digest taken then."""
    import os
    import re

    env = os.environ.get("WB_GIT_SHA", "")
    if re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", env):
        return env
    if not (ROOT / ".git").exists():  # never ask git: a copy inside another checkout would name that one
        return _sha_from_file()
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


def tree_digest(files: list[str]) -> str:
    """SHA-256 over (path, content) of the given repo-relative files; a missing file counts as empty."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(files):
        p = ROOT / f
        h.update(f.encode() + b"\0" + (p.read_bytes() if p.is_file() else b"") + b"\0")
    return h.hexdigest()


def _sha_from_file(path: Path | None = None) -> str:
    import json
    import re

    path = path or PROVENANCE_FILE
    try:
        data = json.loads(path.read_text())
        sha = str(data["git_sha"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
    if not re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", sha):
        return "unknown"
    if not sha.endswith("+dirty") and (data.get("dirty") or tree_digest(data.get("files") or []) != data.get("digest")):
        sha += "+dirty"
    return sha


def sha_source() -> str:
    """Where git_sha() came from: 'WB_GIT_SHA', 'git' or the provenance file."""
    import os

    if os.environ.get("WB_GIT_SHA"):
        return "WB_GIT_SHA"
    return "git" if (ROOT / ".git").exists() else str(PROVENANCE_FILE.relative_to(ROOT))


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
