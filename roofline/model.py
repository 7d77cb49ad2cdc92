"""The roofline model: where a record sits relative to its ceilings.

    intensity  = flops / bytes                       (FLOP per DRAM byte, from the problem's minimum-byte model)
    attainable = min(compute roof, intensity x memory roof)
    ridge      = compute roof / memory roof          (intensity where the two roofs meet)

Roofs: the *measured* ceiling when the profile has one (cuBLAS matmul, device-to-device copy), else the theoretical
one (datasheet FLOP/clk/SM x clock; NVML bandwidth). A record above 100% of its roof is flagged ``suspect``: with the
minimum-byte model it means a wrong FLOP/byte model, data served from L2 between calls, or work skipped -- never a
silent win.
"""

from __future__ import annotations

from typing import Any

from roofline.ceilings import Profile

# Percentage points above 100% before a record is called suspect. 0: anything above its roof is flagged (a kernel
# that truly beats the cuBLAS-measured roof gets flagged too, and the reason says which roof: look, then explain).
SUSPECT_MARGIN = 0.0


def intensity(flops: float | None, nbytes: float | None) -> float | None:
    """FLOP per byte; None when either is unknown or bytes is 0."""
    if not flops or not nbytes:
        return None if not nbytes or flops is None else 0.0
    return float(flops) / float(nbytes)


def _roofs(profile: Profile, compute_dtype: str, which: str = "best") -> tuple[float | None, float | None]:
    """(compute FLOP/s, memory B/s). which="best": measured if present else theoretical; "theoretical": datasheet
    and NVML only."""
    if which == "theoretical":
        return (profile.compute.get(compute_dtype) or {}).get("theoretical"), profile.mem.get("nvml")
    return profile.compute_roof(compute_dtype)[0], profile.mem_roof()[0]


def attainable(profile: Profile, compute_dtype: str, intensity: float, which: str = "best") -> float | None:
    """Attainable FLOP/s at ``intensity`` (FLOP/B): min(compute roof, intensity x memory roof). A dtype the profile
    has no compute roof for is treated as memory-bound only; None when no roof is known at all."""
    comp, mem = _roofs(profile, compute_dtype, which)
    mem_lim = intensity * mem if mem else None
    if comp and mem_lim is not None:
        return min(comp, mem_lim)
    return comp if mem_lim is None else mem_lim


def ridge(profile: Profile, compute_dtype: str, which: str = "best") -> float | None:
    """Ridge point (FLOP/B) of ``compute_dtype``: compute roof / memory roof."""
    comp, mem = _roofs(profile, compute_dtype, which)
    return comp / mem if comp and mem else None


def ridges(profile: Profile, which: str = "best") -> dict[str, float]:
    """Ridge point per dtype that has a compute roof."""
    out = {}
    for dt in profile.compute:
        r = ridge(profile, dt, which)
        if r:
            out[dt] = r
    return out


def record_compute_dtype(record: dict[str, Any]) -> str:
    """Which compute roof a record is held to: its ``compute_dtype`` field, else its dtype."""
    return str(record.get("compute_dtype") or record.get("dtype") or "fp32")


def achieved_flops(record: dict[str, Any]) -> float | None:
    """FLOP/s of a record: flops / median time, else its ``tflops`` field."""
    ms = record.get("median_ms")
    if record.get("flops") and ms:
        return float(record["flops"]) / (float(ms) / 1e3)
    if record.get("tflops") is not None:
        return float(record["tflops"]) * 1e12
    return None


def annotate(record: dict[str, Any], profile: Profile | None) -> dict[str, Any]:
    """Roofline fields for one record (the runner stores them as ``record["roofline"]``).

    Returns {} for records without a timing (status != "ok") or without a profile. Otherwise: intensity (FLOP/B),
    attainable_tflops, achieved_tflops, achieved_gbps, bound ("memory"|"compute"), pct_of_roofline (achieved /
    attainable x 100, best roofs), pct_of_theoretical (against datasheet/NVML roofs), ridge, roofs (which roof was
    used), compute_dtype, suspect (bool) and suspect_reason.
    """
    if profile is None or record.get("status", "ok") != "ok":
        return {}
    dt = record_compute_dtype(record)
    flops, nbytes = record.get("flops"), record.get("bytes")
    ms = record.get("median_ms")
    out: dict[str, Any] = {"compute_dtype": dt, "suspect": False, "suspect_reason": None}
    ai = intensity(flops, nbytes)
    out["intensity"] = ai
    out["ridge"] = ridge(profile, dt)
    comp, comp_src = profile.compute_roof(dt)
    mem, mem_src = profile.mem_roof()
    out["roofs"] = {"compute": comp_src, "memory": mem_src}
    perf = achieved_flops(record)
    out["achieved_tflops"] = perf / 1e12 if perf is not None else None
    if nbytes and ms:
        out["achieved_gbps"] = float(nbytes) / (float(ms) / 1e3) / 1e9
    elif record.get("gbps") is not None:
        out["achieved_gbps"] = float(record["gbps"])
    else:
        out["achieved_gbps"] = None
    if ai is None:
        out.update(attainable_tflops=None, bound=None, pct_of_roofline=None, pct_of_theoretical=None)
        out["note"] = "no flops/bytes model in the record: cannot place it on the roofline"
        return out
    att = attainable(profile, dt, ai)
    out["attainable_tflops"] = att / 1e12 if att else None
    r = out["ridge"]
    if r is not None:
        out["bound"] = "memory" if ai < r else "compute"
    else:
        out["bound"] = "memory" if mem and not comp else ("compute" if comp and not mem else None)
    if not comp:
        out["note"] = f"no {dt} compute roof in the profile: memory roof only"
    # Memory-bound records carry no useful FLOPs (softmax): compare bytes/s with the memory roof directly then.
    if out["bound"] == "memory" and out["achieved_gbps"] is not None and mem:
        pct = out["achieved_gbps"] * 1e9 / mem * 100.0
    elif perf is not None and att:
        pct = perf / att * 100.0
    else:
        pct = None
    out["pct_of_roofline"] = pct
    att_th = attainable(profile, dt, ai, which="theoretical")
    nvml_bw = profile.mem.get("nvml")
    if out["bound"] == "memory" and out["achieved_gbps"] is not None and nvml_bw:
        out["pct_of_theoretical"] = out["achieved_gbps"] * 1e9 / nvml_bw * 100.0
    else:
        out["pct_of_theoretical"] = perf / att_th * 100.0 if perf is not None and att_th else None
    reasons = []
    # Beating a *measured* roof (the library's best, a copy kernel) is possible and worth saying, not suspect;
    # beating the physical (datasheet / NVML) roof means the FLOP/byte model or the timing is wrong.
    if pct is not None and pct > 100.0 + SUSPECT_MARGIN:
        out["note"] = (f"{pct:.0f}% of the measured {out['bound']} roof "
                       f"({comp_src if out['bound'] == 'compute' else mem_src}): faster than the library ceiling")
    if out["pct_of_theoretical"] is not None and out["pct_of_theoretical"] > 100.0 + SUSPECT_MARGIN:
        reasons.append(f"{out['pct_of_theoretical']:.0f}% of the theoretical roof")
    if reasons:
        out["suspect"] = True
        out["suspect_reason"] = (
            "above the roofline: " + "; ".join(reasons)
            + " -- check the FLOP/byte model, L2 reuse between calls, or skipped work"
        )
    return out
