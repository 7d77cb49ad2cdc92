"""``bench/run.py --sanitize``: every CUDA and Triton variant once, at a small shape, under compute-sanitizer.

memcheck finds out-of-bounds and misaligned accesses, racecheck shared-memory races. Each (variant, tool) runs in its
own ``compute-sanitizer`` process (``python -m harness.sanitize FAMILY VARIANT DTYPE SHAPE`` does one checked call);
the findings are parsed from the tool's ``ERROR SUMMARY`` and the first reported errors.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("memcheck", "racecheck")


def sanitizer_path() -> str | None:
    p = shutil.which("compute-sanitizer")
    if p:
        return p
    for cand in ("/usr/local/cuda/bin/compute-sanitizer", "/usr/local/cuda/compute-sanitizer/compute-sanitizer"):
        if os.path.exists(cand):
            return cand
    return None


def unavailable_reason() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "--sanitize needs a GPU (compute-sanitizer runs kernels); nothing to sanitize on this machine"
    if sanitizer_path() is None:
        return "--sanitize needs compute-sanitizer (CUDA toolkit) on PATH"
    return None


def sanitize_task(family: str, variant: str, dtype: str, shape: str, tool: str, timeout_s: float = 300) -> dict:
    cmd = [sanitizer_path(), f"--tool={tool}", "--error-exitcode=99", "--print-limit=5",
           sys.executable, "-m", "harness.sanitize", family, variant, dtype, shape]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
        out = res.stdout + res.stderr
        rc = res.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), None
    m = re.search(r"ERROR SUMMARY: (\d+) error", out)
    errors = int(m.group(1)) if m else None
    first = [ln.strip() for ln in out.splitlines() if ln.startswith("=========") and
             ("Invalid" in ln or "Race" in ln or "Error" in ln or "hazard" in ln.lower())][:5]
    status = "clean" if errors == 0 and rc == 0 else ("timeout" if rc is None else "findings" if errors else "error")
    return {"family": family, "variant": variant, "dtype": dtype, "shape": shape, "tool": tool, "status": status,
            "errors": errors, "first": first, "exit_code": rc, "tail": out[-1500:] if status != "clean" else ""}


def plan_sanitize(families: list[str], variants: list[str] | None) -> list[tuple[str, str, str, str]]:
    """One small shape and one dtype per CUDA/Triton variant: the first quick shape it supports."""
    from harness.registry import get_problem

    out = []
    for fam in families:
        p = get_problem(fam)
        for v in p.variants.values():
            if v.backend not in ("cuda", "triton") or (variants and v.name not in variants):
                continue
            for shape in p.quick:
                d = next((d for d in v.dtypes if v.skip_reason(shape, d) is None), None)
                if d is not None:
                    out.append((fam, v.name, d, shape.key()))
                    break
    return out


def _one(family: str, variant: str, dtype: str, shape: str) -> int:
    sys.path.insert(0, str(ROOT))
    import torch

    from harness.registry import get_problem
    from harness.runner import check_once

    p = get_problem(family)
    res = check_once(p, p.variants[variant], dtype, p.parse_shape(shape), 0, torch.device("cuda"))
    torch.cuda.synchronize()
    print(f"check: {'ok' if res.ok else 'incorrect: ' + res.message}")
    return 0


if __name__ == "__main__":
    sys.exit(_one(*sys.argv[1:5]))
