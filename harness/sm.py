"""The SM as the X-ray (harness/xray.py) and the hot-loop model (harness/hotloop.py) see it: each arch's per-SM
limits, the occupancy calculator, and where the SASS tools (cuobjdump, nvdisasm) are."""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------------------ arch limits
# Per-SM limits of the CUDA occupancy calculator (CUDA C Programming Guide, "Compute capabilities" table).
# smem_sm is the largest carveout; every block also pays reserved_smem (1 KB on sm_80+).
ARCH_LIMITS: dict[str, dict[str, int]] = {
    "sm_80": dict(sms=108, regs_sm=65536, max_regs_thread=255, max_threads_sm=2048, max_warps_sm=64,
                  max_blocks_sm=32, smem_sm=167936, smem_block_max=166912, reserved_smem=1024),
    "sm_86": dict(sms=84, regs_sm=65536, max_regs_thread=255, max_threads_sm=1536, max_warps_sm=48,
                  max_blocks_sm=16, smem_sm=102400, smem_block_max=101376, reserved_smem=1024),
    "sm_89": dict(sms=142, regs_sm=65536, max_regs_thread=255, max_threads_sm=1536, max_warps_sm=48,
                  max_blocks_sm=24, smem_sm=102400, smem_block_max=101376, reserved_smem=1024),
    "sm_90": dict(sms=132, regs_sm=65536, max_regs_thread=255, max_threads_sm=2048, max_warps_sm=64,
                  max_blocks_sm=32, smem_sm=233472, smem_block_max=232448, reserved_smem=1024),
}
REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256 (8 per thread)
SMEM_ALLOC_UNIT = 128
SUBPARTITIONS = 4  # each SM's register file is split over 4 schedulers: a warp's registers come from one quarter
ARCHS = ("sm_90a", "sm_90", "sm_89", "sm_86", "sm_80")


def base_arch(arch: str) -> str:
    """'sm_90a' -> 'sm_90' (the limits table and Triton's capability do not distinguish them)."""
    return arch[:-1] if arch.endswith("a") else arch


def capability(arch: str) -> int:
    return int(re.sub(r"\D", "", base_arch(arch)))


def limits(arch: str) -> dict[str, int]:
    b = base_arch(arch)
    if b not in ARCH_LIMITS:
        raise ValueError(f"no occupancy limits for {arch}; known: {', '.join(ARCH_LIMITS)}")
    return ARCH_LIMITS[b]


def occupancy(arch: str, regs: int, threads: int | None, smem_bytes: int | None) -> dict[str, Any]:
    """Theoretical occupancy of one block shape on one SM (the CUDA occupancy calculator's rules).

    regs: registers per thread; threads: per block; smem_bytes: static + dynamic shared memory per block (the 1 KB
    per-block reservation is added here). Returns blocks/SM, warps/SM, occupancy (0..1) and the limiting factor(s)."""
    lim = limits(arch)
    if not threads:
        return {"occupancy": None, "limiter": "unknown block size", "blocks_per_sm": None}
    warps = -(-threads // 32)
    by = {"warps": lim["max_warps_sm"] // warps, "blocks": lim["max_blocks_sm"]}
    regs = max(int(regs or 0), 1)
    per_warp = -(-regs * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    warps_by_regs = (lim["regs_sm"] // SUBPARTITIONS // per_warp) * SUBPARTITIONS
    by["registers"] = warps_by_regs // warps
    if smem_bytes is not None:
        per_block = -(-(int(smem_bytes) + lim["reserved_smem"]) // SMEM_ALLOC_UNIT) * SMEM_ALLOC_UNIT
        by["shared memory"] = 0 if smem_bytes > lim["smem_block_max"] else lim["smem_sm"] // per_block
    blocks = min(by.values())
    limiters = [k for k, v in by.items() if v == blocks]
    return {"occupancy": blocks * warps / lim["max_warps_sm"], "blocks_per_sm": blocks,
            "warps_per_sm": blocks * warps, "limiter": ", ".join(limiters), "by": by}


@functools.lru_cache(None)
def tool(name: str) -> str | None:
    """cuobjdump / nvdisasm: Triton's bundled copy first (matches its ptxas), else PATH, else the CUDA toolkit."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("triton")
        if spec and spec.origin:
            p = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / name
            if p.exists():
                return str(p)
    except Exception:
        pass
    p = shutil.which(name)
    if p:
        return p
    for base in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if base and (Path(base) / "bin" / name).exists():
            return str(Path(base) / "bin" / name)
    return None
