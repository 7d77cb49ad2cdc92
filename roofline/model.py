"""The roofline model: where a record sits relative to its ceilings.

    intensity  = flops / bytes                       (FLOP per DRAM byte, from the problem's minimum-byte model)
    attainable = min(compute roof, intensity x memory roof)
    ridge      = compute roof / memory roof          (intensity where the two roofs meet)

Roofs: the *measured* ceiling when the profile has one (cuBLAS matmul, device-to-device copy), else the theoretical
one (datasheet FLOP/clk/SM x clock; NVML bandwidth). A record above 100% of its roof is flagged ``suspect``: with the
minimum-byte model it means a wrong FLOP/byte model, data served from L2 between calls, or work skipped -- never a
silent win.

Placement is always re-derived from a record's raw fields (flops, bytes, median_ms, dtype, compute_dtype,
accumulate, device) and a profile at the time a table or figure is made: a stored ``record["roofline"]`` is a cache
of this function's output, never an input. Above a *measured* roof a record gets a stated reason (the library roof
is beatable, another board, ...); above the datasheet roof it is suspect. A record measured on another board than
the profile (UUIDs differ) says so.

``predicted_floor_ms(flops, nbytes, compute_dtype, profile)``: the roofline's lower bound on a call's time.
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
        return profile.entry(compute_dtype)[0].get("theoretical"), profile.mem.get("nvml")
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
    """Which compute roof a record is held to: its ``compute_dtype`` field, else its dtype; ``accumulate: "fp16"``
    on an fp16/fp8 record selects the fp16-accumulate roof (``fp16_acc16``), which GeForce runs at twice the rate."""
    dt = str(record.get("compute_dtype") or record.get("dtype") or "fp32")
    if str(record.get("accumulate") or "").lower() in ("fp16", "f16", "half") and dt in ("fp16", "fp8"):
        return f"{dt}_acc16"
    return dt


def predicted_floor_ms(flops: float | None, nbytes: float | None, compute_dtype: str, profile: Profile) -> float:
    """Roofline lower bound on one call, in ms: max(bytes / memory roof, flops / compute roof), with the roofs
    ``annotate`` places records against (measured where trusted, else datasheet). A missing roof or quantity
    contributes nothing; ValueError when neither term can be computed."""
    comp, _ = profile.compute_roof(compute_dtype)
    mem, _ = profile.mem_roof()
    terms = []
    if nbytes and mem:
        terms.append(float(nbytes) / mem)
    if flops and comp:
        terms.append(float(flops) / comp)
    if not terms:
        raise ValueError(f"no roof to bound flops={flops} bytes={nbytes} ({compute_dtype}) with {profile.name}")
    return max(terms) * 1e3


def achieved_flops(record: dict[str, Any]) -> float | None:
    """FLOP/s of a record: flops / median time, else its ``tflops`` field."""
    ms = record.get("median_ms")
    if record.get("flops") and ms:
        return float(record["flops"]) / (float(ms) / 1e3)
    if record.get("tflops") is not None:
        return float(record["tflops"]) * 1e12
    return None


def _board(record: dict[str, Any]) -> tuple[str | None, str | None]:
    d = record.get("device")
    return (d.get("uuid"), d.get("name")) if isinstance(d, dict) else (None, None)


def annotate(record: dict[str, Any], profile: Profile | None) -> dict[str, Any]:
    """Roofline fields for one record, derived from its raw fields (see module docstring).

    Returns {} for records without a timing (status != "ok") or without a profile. Otherwise: intensity (FLOP/B),
    attainable_tflops, achieved_tflops, achieved_gbps, bound ("memory"|"compute"), pct_of_roofline (achieved /
    attainable x 100, placement roofs), pct_of_theoretical (against datasheet/NVML roofs), ridge, roofs (which roof
    was used), compute_dtype, suspect (bool) and suspect_reason, above_measured_roof (bool) with
    above_roof_reason, other_board (bool), notes (list) and note (the notes joined).
    """
    if profile is None or record.get("status", "ok") != "ok":
        return {}
    dt = record_compute_dtype(record)
    flops, nbytes = record.get("flops"), record.get("bytes")
    ms = record.get("median_ms")
    out: dict[str, Any] = {"compute_dtype": dt, "suspect": False, "suspect_reason": None,
                           "above_measured_roof": False, "above_roof_reason": None, "other_board": False}
    notes: list[str] = []
    uuid, name = _board(record)
    if uuid and profile.board_uuid and uuid != profile.board_uuid:
        out["other_board"] = True
        notes.append(f"measured on board {uuid} ({name or '?'}), the profile's roofs on {profile.board_uuid}")
    ai = intensity(flops, nbytes)
    out["intensity"] = ai
    out["ridge"] = ridge(profile, dt)
    comp, comp_src = profile.compute_roof(dt)
    mem, mem_src = profile.mem_roof()
    out["roofs"] = {"compute": comp_src, "memory": mem_src}
    poor = profile.roof_note(dt)
    if poor:
        notes.append(poor)
    perf = achieved_flops(record)
    out["achieved_tflops"] = perf / 1e12 if perf is not None else None
    if nbytes and ms:
        out["achieved_gbps"] = float(nbytes) / (float(ms) / 1e3) / 1e9
    elif record.get("gbps") is not None:
        out["achieved_gbps"] = float(record["gbps"])
    else:
        out["achieved_gbps"] = None

    def done() -> dict[str, Any]:
        out["notes"] = notes
        if notes:
            out["note"] = "; ".join(notes)
        return out

    if ai is None:
        out.update(attainable_tflops=None, bound=None, pct_of_roofline=None, pct_of_theoretical=None)
        notes.append("no flops/bytes model in the record: cannot place it on the roofline")
        return done()
    att = attainable(profile, dt, ai)
    out["attainable_tflops"] = att / 1e12 if att else None
    r = out["ridge"]
    if r is not None:
        out["bound"] = "memory" if ai < r else "compute"
    else:
        out["bound"] = "memory" if mem and not comp else ("compute" if comp and not mem else None)
    if not comp:
        notes.append(f"no {dt} compute roof in the profile: memory roof only")
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
    src = comp_src if out["bound"] == "compute" else mem_src
    pth = out["pct_of_theoretical"]
    # Beating a *measured* roof (the library's best, a copy kernel) is possible and gets a stated reason; beating
    # the physical (datasheet / NVML) roof means the FLOP/byte model or the timing is wrong: suspect.
    if pct is not None and pct > 100.0 + SUSPECT_MARGIN and src == "measured" and not (pth and pth > 100.0):
        out["above_measured_roof"] = True
        what = "best library GEMM of the profile's shape sweep" if out["bound"] == "compute" else \
            "device-to-device copy"
        reason = (f"{pct:.0f}% of the measured {out['bound']} roof ({what}), {pth:.0f}% of the datasheet roof: "
                  if pth is not None else f"{pct:.0f}% of the measured {out['bound']} roof ({what}): ")
        reason += "a measured roof is what the library reached, not a hardware limit, so a better kernel can pass it"
        if out["other_board"]:
            reason += "; and this record ran on another board than the profile (clocks and bins differ)"
        out["above_roof_reason"] = reason
        notes.append(reason)
    if pth is not None and pth > 100.0 + SUSPECT_MARGIN:
        out["suspect"] = True
        out["suspect_reason"] = (
            f"above the roofline: {pth:.0f}% of the theoretical roof"
            " -- check the FLOP/byte model, L2 reuse between calls, or skipped work"
        )
    return done()
