"""What the command lines share: one-line errors, the console, comma lists, ``--kernel`` groups, a correctness-only
record, what this machine is, and a finished record's place on the roofline.

``bench/run.py``, ``python -m harness`` (``__main__.py``) and its ``inspect`` (``xray.py``) and ``gpu-run``
(``gpurun.py``) commands take these from here, so no command imports another one's entry point. Importing this
module is free: torch, rich, the registry and the roofline come in on first use (``bench/run.py --help`` stays
fast).
"""

from __future__ import annotations

import os
import sys
from typing import Any


class CliError(Exception):
    """One-line user-facing error: printed without a traceback, exit status 2."""


def console():
    from rich.console import Console

    # piped (CI logs, tests): wide enough that kernel names are not folded into columns of 8 characters
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


def split(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def resolve_families(kernel: str) -> list[str]:
    from harness import registry

    try:
        return registry.resolve_group(kernel)
    except registry.RegistryError as e:
        raise CliError(str(e)) from None


def check_task(task: Any, seeds: tuple[int, ...] | None = None, compile_cuda: bool = True) -> dict[str, Any]:
    """One record, correctness only: ``run_task`` with timing off (on a GPU as on the CPU).

    With ``compile_cuda=False`` a CUDA variant on a machine without a GPU is not even compiled (status skipped)."""
    import torch

    from harness.registry import get_problem
    from harness.runner import RunOptions, base_record, run_task

    problem = get_problem(task.family)
    v = problem.variants[task.variant]
    if v.backend == "cuda" and not compile_cuda and not torch.cuda.is_available():
        rec = base_record(problem, v, task.dtype, problem.parse_shape(task.shape))
        rec.update(status="skipped", message="CUDA variant, no GPU here: not compiled (see python -m harness compile)")
        return rec
    if seeds is None:  # fresh per call: a variant cannot know them in advance
        from harness.records import fresh_seeds

        seeds = fresh_seeds()
    rec = run_task(task, RunOptions(seeds=tuple(seeds), timing=False))
    rec.pop("_recycle_worker", None)
    return rec


def info_dict() -> dict[str, Any]:
    """``python -m harness info``: device, versions, nvcc, git, the Triton interpreter switch."""
    from harness import provenance
    from harness.cuda import nvcc_path

    try:
        from harness.device import device_info

        dev = device_info()
    except Exception as e:
        dev = {"available": False, "note": f"device info unavailable ({type(e).__name__}: {e})"}
    return {"device": dev, "versions": provenance.versions(), "nvcc_path": nvcc_path(),
            "git_sha": provenance.git_sha(), "triton_interpret": os.environ.get("TRITON_INTERPRET")}


def get_device_info() -> dict:
    """The device a run's records and manifest name; without NVML, torch's name and SM count (or "cpu")."""
    import torch

    try:
        from harness.device import device_info

        return device_info()
    except Exception as e:  # roofline/NVML layer missing or broken: say so, keep running
        info = {"available": False, "note": f"device info unavailable ({type(e).__name__}: {e})"}
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info.update(name=p.name, sm_count=p.multi_processor_count)
        else:
            info["name"] = "cpu"
        return info


def annotate(rec: dict, profile) -> None:
    """A timed record's roofline placement (``rec["roofline"]``); a point above its roof makes the record suspect."""
    if profile is None or rec.get("status") != "ok":
        return
    try:
        from roofline.model import annotate as roof

        rec["roofline"] = roof(rec, profile)
        if rec["roofline"].get("suspect"):
            rec["suspect"] = True
            rec.setdefault("suspect_reasons", []).append(rec["roofline"].get("suspect_reason") or "above roofline")
    except Exception as e:
        rec["roofline"] = {"note": f"{type(e).__name__}: {e}"}
