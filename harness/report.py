"""A self-contained report folder from records: report.md (short, GFM) + tables.md (every row) + figures/.

    python -m harness report runs/h100-20261126-1830 -o report/            # any machine, from stored records
    write_report(records, profile, outdir)                                 # from code (bench/run.py)

report.md reads top-down like a writeup: a provenance line, the **summary** (per family: the best variant against
the library as the paired speed-up with its 95% interval, % of the roof, launch-bound / unstable / suspect notes and
one sentence of napkin math), **one roofline**, the environment, then per family its figures, the napkin-math table
and the timed rows of its largest shapes; rows that were only compiled, skipped or not applicable are summarised in
one line each. Every row of every family is in tables.md, so report.md stays under ~200 lines for ``--kernel all``.
Placement is re-derived from each record's raw fields with the profile given here (``roofline.model.annotate``),
never read from a stored ``record["roofline"]``; without a profile it reads "n/a". Each record is held to the roof of
its compute type: a record written before its variant declared one (``torch_fp32_tf32`` at commit a0d712c says
fp32) takes the registry's declaration (``declared_compute``), and says so. The "best variant" is always one of the
workbench's own kernels (Triton, CUDA, yours) of the dtype's own precision (a TF32 variant is its own row, "fp32
(tf32)": ``precision_label``), read against the library as its paired speed-up (median of per-round ratios against
the family baseline, with its bootstrap interval: the one ×lib of tables, CSV and report). Numbers go through
``harness.fmt``, the one formatter of tables, report and figures. Plain GFM, no HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import fmt
from harness.records import markdown_table, shape_label

NA = "n/a"
TIMED_ROWS = 24  # at most, per family in report.md; tables.md has them all
LINE_BUDGET = 195  # report.md lines
DTYPE_PREF = ("bf16", "fp16", "fp8", "int8", "fp32", "tf32", "fp64")  # a summary speaks for bf16 when sizes tie


def _si(v: float | None, unit: str = "") -> str:
    text = fmt.si(v, unit)
    return NA if text == fmt.NA else text


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return NA
    try:
        return f"{float(v):.{digits}g}"
    except (TypeError, ValueError):
        return str(v)


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _profile_obj(profile: Any) -> Any:
    if profile is None or not isinstance(profile, dict):
        return profile
    try:
        from roofline.ceilings import Profile

        return Profile.from_dict(profile)
    except Exception:
        return None


def environment(records: list[dict[str, Any]], profile: Any = None) -> list[tuple[str, str]]:
    """(label, value) pairs from the first record's device/versions stamp."""
    r0 = next((r for r in records if r.get("device")), records[0] if records else {})
    d = r0.get("device") or {}
    v = r0.get("versions") or {}
    timings = sorted({str(r.get("timing")) for r in records if r.get("timing")})
    rows = [
        ("GPU", d.get("name") or "none (CPU run)"),
        ("compute capability / SMs", f"{d.get('cc') or NA} / {d.get('sm_count') or NA}"),
        ("driver / CUDA driver", f"{d.get('driver') or NA} / {d.get('cuda_driver_version') or NA}"),
        ("SM clock now / max (MHz)", f"{d.get('cur_sm_clock_mhz') or NA} / {d.get('max_sm_clock_mhz') or NA}"),
        ("memory clock max (MHz) / bus (bit)", f"{d.get('max_mem_clock_mhz') or NA} / "
                                                f"{d.get('mem_bus_width_bits') or NA}"),
        ("power limit (W)", _num(d.get("power_limit_w"))),
        ("CUDA (torch) / nvcc", f"{v.get('torch_cuda') or NA} / {v.get('nvcc') or NA}"),
        ("torch / triton", f"{v.get('torch') or NA} / {v.get('triton') or NA}"),
        ("python", v.get("python") or NA),
        ("CUDA loader", v.get("cuda_loader") or NA),
        ("commit", f"`{r0.get('git_sha') or NA}`"),
        ("timing", ", ".join(timings) or NA),
        ("records", f"{len(records)} ({r0.get('timestamp') or 'time unknown'})"),
    ]
    p = _profile_obj(profile)
    if p is not None:
        try:
            mem, mem_src = p.mem_roof()
            rows.append(("memory roof", f"{_si(mem, 'B/s')} ({mem_src})"))
            roofs = []
            for dt in sorted(p.compute):
                c, src = p.compute_roof(dt)
                if c:
                    roofs.append(f"{dt} {_si(c, 'FLOP/s')}" + ("" if src == "measured" else f" ({src})"))
            if roofs:  # one row: the environment table stays short
                rows.append(("compute roofs (measured unless noted)", ", ".join(roofs)))
        except Exception:
            pass
    if d.get("note"):
        rows.append(("note", d["note"]))
    return rows


def declared_compute(r: dict[str, Any]) -> dict[str, Any]:
    """The record with the compute dtype its variant declares in the registry when the record itself names only its
    storage dtype (older records: the declaration came later); the change is noted in ``compute_dtype_from``."""
    try:
        from harness.registry import REGISTRY, all_problems

        all_problems()
        v = REGISTRY[str(r.get("family"))].variants.get(str(r.get("variant")))
    except Exception:  # noqa: BLE001  (a family or variant this checkout no longer has: keep the record as it is)
        return r
    cd = getattr(v, "compute_dtype", None)
    if cd and r.get("compute_dtype") in (None, r.get("dtype")) and cd != r.get("compute_dtype"):
        return {**r, "compute_dtype": cd,
                "compute_dtype_from": f"registry: {r.get('variant')} declares compute_dtype={cd!r} (the record "
                                      f"says {r.get('compute_dtype')!r})"}
    return r


def precision_label(r: dict[str, Any]) -> str:
    """The record's row label: its ``dtype_label`` ("fp32 (tf32)" for a variant that declared a coarser compute
    precision), or, for older records, the same derived from the registry's declaration."""
    if r.get("dtype_label"):
        return str(r["dtype_label"])
    dt = str(r.get("dtype"))
    try:
        from harness.registry import REGISTRY, UNIT_ROUNDOFF, all_problems

        all_problems()
        cd = getattr(REGISTRY[str(r.get("family"))].variants.get(str(r.get("variant"))), "compute_dtype", None)
    except Exception:  # noqa: BLE001  (a family or variant this checkout no longer has)
        return dt
    if cd in UNIT_ROUNDOFF and dt in UNIT_ROUNDOFF and UNIT_ROUNDOFF[cd] > UNIT_ROUNDOFF[dt]:
        return f"{dt} ({cd})"
    return dt


def is_library(r: dict[str, Any]) -> bool:
    """A library variant (torch/cuBLAS/cuDNN/SDPA/FAISS): never reported as the best kernel, only as a reference."""
    return bool(r.get("baseline")) or str(r.get("backend")) == "torch"


def library_reference(best: dict[str, Any], timed: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What ``best`` is read against: the timed library record of the same compute type (a TF32 kernel against
    cuBLAS TF32), else the family baseline, else any timed library record."""
    from roofline.model import record_compute_dtype

    libs = [r for r in timed if is_library(r) and r is not best]
    same = [r for r in libs if record_compute_dtype(r) == record_compute_dtype(best)]
    base = [r for r in libs if r.get("baseline")]
    pool = [r for r in base if r in same] or same or base or libs
    return min(pool, key=lambda r: float(r["median_ms"])) if pool else None


def _best(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest timed record of the workbench's own variants; a library one only when nothing else was timed."""
    ok = [r for r in recs if r.get("status") == "ok" and r.get("median_ms")]
    own = [r for r in ok if not is_library(r)]
    return min(own or ok, key=lambda r: r["median_ms"]) if ok else None


def _roof_fields(r: dict[str, Any], profile: Any) -> dict[str, Any]:
    """Placement re-derived from the record's raw fields and the profile at report time (issue 17): a stored
    ``record["roofline"]`` may predate the current roofs, so it is never read. No profile: no placement."""
    if profile is None or r.get("status") != "ok":
        return {}
    try:
        from roofline.model import annotate

        return annotate(r, _profile_obj(profile)) or {}
    except Exception:
        return {}


def _placed(r: dict[str, Any], profile: Any) -> dict[str, Any]:
    """The record with its placement re-derived; a ``suspect`` flag whose only reasons were the run's own roofline
    placement ("above the roofline: ...") is re-derived with it, one with any other reason (work outside the timed
    stream, ...) stays."""
    roof = _roof_fields(r, profile)
    out = {**r, "roofline": roof}
    reasons = [str(x) for x in (r.get("suspect_reasons") or [])]
    if r.get("suspect") and roof and reasons and all(x.startswith("above the roofline") for x in reasons):
        out["suspect"] = bool(roof.get("suspect"))
        out["suspect_reasons"] = [roof["suspect_reason"]] if roof.get("suspect") else []
    return out


def napkin_rows(recs: list[dict[str, Any]], profile: Any = None) -> list[list[str]]:
    """One row per (shape, dtype): FLOPs, min bytes, intensity, ridge, attainable, best variant, achieved, % of it."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault((str(r.get("shape")), str(r.get("dtype"))), []).append(r)
    rows = []
    for (shape, dt), rs in groups.items():
        r0 = rs[0]
        flops, nbytes = r0.get("flops"), r0.get("bytes")
        ai = float(flops) / float(nbytes) if flops is not None and nbytes else None
        best = _best(rs)
        roof = _roof_fields(best, profile) if best else {}
        ridge = roof.get("ridge")
        att = roof.get("attainable_tflops")
        bound = roof.get("bound")
        mem_bound = bound == "memory" or (bound is None and r0.get("throughput_unit") == "GB/s")
        if best is None:
            achieved, pct, who = NA, NA, "none timed"
        else:
            who = f"{best['variant']} ({best.get('timing') or '?'})" + (" (library)" if is_library(best) else "")
            if best.get("suspect") or roof.get("suspect"):
                who += " (suspect)"
            if mem_bound:
                achieved = _si((best.get("gbps") or 0) * 1e9, "B/s") if best.get("gbps") is not None else NA
            else:
                achieved = _si((best.get("tflops") or 0) * 1e12, "FLOP/s") if best.get("tflops") is not None else NA
            p = roof.get("pct_of_roofline")
            pct = f"{p:.0f}%" if isinstance(p, (int, float)) else NA
        rows.append([shape, dt, _si(flops), _si(nbytes, "B"), _num(ai), _num(ridge), bound or NA,
                     _si(att * 1e12, "FLOP/s") if att else NA, who, achieved, pct])
    return rows


NAPKIN_HEAD = ["shape", "dtype", "FLOPs", "min bytes", "intensity (FLOP/B)", "ridge (FLOP/B)", "bound",
               "attainable", "best variant", "achieved", "% of attainable"]


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    out = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
    for row in rows:
        out += "| " + " | ".join(_cell(c) for c in row) + " |\n"
    return out


def _figures(records: list[dict[str, Any]], profile: Any, figdir: Path) -> tuple[list[Path], str | None]:
    try:
        from roofline.plot import draw_all
    except Exception as e:  # the roofline package is optional here
        return [], f"figures unavailable ({type(e).__name__}: {e})"
    try:
        paths = draw_all(records, _profile_obj(profile), figdir)
    except Exception as e:
        return [], f"figures failed ({type(e).__name__}: {e})"
    return [Path(p) for p in paths if str(p).endswith(".png")], None


def _family_order(records: list[dict[str, Any]]) -> list[str]:
    from harness.registry import FAMILIES

    fams = {str(r.get("family")) for r in records}
    return [f for f in FAMILIES if f in fams] + sorted(fams - set(FAMILIES))


def _roof_of(r: dict[str, Any], profile: Any) -> dict[str, Any]:
    return _roof_fields(r, profile) if r is not None else {}


def anchor_group(recs: list[dict[str, Any]]) -> tuple[str, str, list[dict[str, Any]]] | None:
    """The (shape, dtype) a family's summary speaks for: the largest (FLOPs, then bytes) with a timed library baseline
    and a timed variant, else the largest with anything timed."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault((str(r.get("shape")), str(r.get("dtype"))), []).append(r)

    def size(rs: list[dict[str, Any]]) -> tuple[float, float, int]:
        dt = str(rs[0].get("dtype"))
        pref = DTYPE_PREF.index(dt) if dt in DTYPE_PREF else len(DTYPE_PREF)
        return float(rs[0].get("flops") or 0), float(rs[0].get("bytes") or 0), -pref

    timed = {k: rs for k, rs in groups.items() if any(_timed(r) for r in rs)}
    full = {k: rs for k, rs in timed.items() if any(_timed(r) and r.get("baseline") for r in rs)
            and any(_timed(r) and not r.get("baseline") for r in rs)}
    pool = full or timed
    if not pool:
        return None
    (shape, dt), rs = max(pool.items(), key=lambda kv: size(kv[1]))
    return shape, dt, rs


def _timed(r: dict[str, Any]) -> bool:
    return r.get("status") == "ok" and bool(r.get("median_ms"))


def _throughput(r: dict[str, Any]) -> str:
    if r.get("throughput_unit") == "GB/s" and r.get("gbps") is not None:
        return fmt.si(float(r["gbps"]) * 1e9, "B/s")
    if r.get("tflops") is not None:
        return fmt.si(float(r["tflops"]) * 1e12, "FLOP/s")
    return NA


def flag_notes(recs: list[dict[str, Any]]) -> str:
    """'2 launch-bound (a, b), 1 unstable (c)' over a family's timed records; '' when none."""
    from harness.records import flag_letters

    names = {"L": "launch-bound", "U": "unstable", "S": "suspect"}
    out = []
    for letter, word in names.items():
        hit = [r for r in recs if letter in flag_letters(r)]
        if hit:
            vs = list(dict.fromkeys(str(r.get("variant")) for r in hit))
            out.append(f"{len(hit)} {word} ({', '.join(vs[:3])}{', …' if len(vs) > 3 else ''})")
    return "; ".join(out)


def family_summary(recs: list[dict[str, Any]], profile: Any = None) -> dict[str, Any] | None:
    """Best variant vs the library at the anchor shape, % of roof, flag notes, one sentence of napkin math."""
    from harness.records import speedup_shown

    g = anchor_group(recs)
    if g is None:
        return None
    shape, dt, rs = g
    timed = [r for r in rs if _timed(r)]
    # a variant that declared a coarser precision ("fp32 (tf32)") is its own row, never the family's fp32 result
    cands = [r for r in timed if not is_library(r) and precision_label(r) == dt]
    trusted = [r for r in cands if not (r.get("suspect") or (r.get("roofline") or {}).get("suspect"))]
    cands = trusted or cands  # a point above its roof is a question, not the headline
    best = min(cands, key=lambda r: float(r["median_ms"])) if cands else None
    base = library_reference(best, timed) if best is not None else None
    if best is None:  # only library records timed here: the summary names the library, as the library
        best = base = next((r for r in timed if r.get("baseline")), None) or (
            min(timed, key=lambda r: float(r["median_ms"])) if timed else None)
    vs = NA
    if best is not None and base is not None and best is not base:
        if best.get("timing") == "cpu" and speedup_shown({**best, "speedup_vs_baseline": 1.0}) is None:
            vs = "not compared (CPU: interpreter vs ATen)"
        else:  # the paired estimate with its interval, as in the tables (against the record's own baseline)
            q = speedup_shown(best)
            vs = (f"{fmt.ratio(q[0])} {fmt.interval(q[1], q[2])} vs {best.get('baseline_name')} (paired)" if q
                  else "n/a (no paired rounds)")
    elif best is base and base is not None:
        vs = "(the library itself)"
    roof = _roof_of(best, profile)
    sentence = napkin_sentence(rs[0], best, roof, profile)
    return {"family": rs[0].get("family"), "shape": shape, "dtype": dt, "best": best, "baseline": base, "vs": vs,
            "pct": fmt.pct(roof.get("pct_of_roofline")) if roof.get("pct_of_roofline") is not None else NA,
            "notes": flag_notes([r for r in recs if _timed(r)]), "sentence": sentence}


def napkin_sentence(r0: dict[str, Any], best: dict[str, Any] | None, roof: dict[str, Any], profile: Any) -> str:
    """'4096³ bf16: 137 GFLOP over 101 MB (1.37 k FLOP/B) is above the 222 FLOP/B ridge: compute-bound, floor
    0.206 ms at 667 TFLOP/s; best 0.181 ms.'"""
    flops, nbytes = r0.get("flops"), r0.get("bytes")
    head = f"{shape_label(r0)} {r0.get('dtype')}: {fmt.si(flops, 'FLOP')} over {fmt.si(nbytes, 'B')} minimum traffic"
    if not flops or not nbytes:
        return head + "."
    ai = float(flops) / float(nbytes)
    head += f" ({fmt.sig(ai, 3)} FLOP/B)"
    p = _profile_obj(profile)
    ridge = roof.get("ridge")
    if p is None or not ridge:
        x = (best or {}).get("xray") if isinstance((best or {}).get("xray"), dict) else {}
        if x.get("floor_ms"):
            return head + f"; predicted floor on {x.get('floor_profile')}: {fmt.ms(x['floor_ms'])}."
        return head + "; no device profile: no roof."
    try:
        from roofline.model import predicted_floor_ms, record_compute_dtype

        cd = record_compute_dtype(best or r0)
        floor = predicted_floor_ms(flops, nbytes, cd, p)
        comp, _ = p.compute_roof(cd)
        mem, _ = p.mem_roof()
    except Exception:  # noqa: BLE001
        return head + "."
    bound = "compute" if ai >= ridge else "memory"
    at = fmt.si(comp, "FLOP/s") if bound == "compute" else fmt.si(mem, "B/s")
    text = (f"{head} is {'above' if bound == 'compute' else 'below'} the {fmt.sig(ridge, 3)} FLOP/B ridge: "
            f"{bound}-bound, floor {fmt.ms(floor)} at {at}")
    if best is not None and best.get("median_ms"):
        text += f"; best {best.get('variant')} {fmt.ms(best['median_ms'])}"
        if best.get("timing") == "cpu":
            text += " (CPU timing)"
    return text + "."


def _summary_lines(kind: str, recs: list[dict[str, Any]]) -> list[str]:
    """One line per kind of row that report.md does not list: compiled only, skipped (per reason), not applicable."""
    out = []
    if kind == "compiled":
        vs = list(dict.fromkeys(str(r.get("variant")) for r in recs))
        out.append(f"- compiled only (no GPU to run them; registers and spills in tables.md): {len(recs)} record(s) of "
                   f"{', '.join(vs[:8])}{', …' if len(vs) > 8 else ''}")
    elif kind == "na":
        vs = list(dict.fromkeys(str(r.get("variant")) for r in recs))
        out.append(f"- not applicable (the variant never supports that dtype; an older run recorded them): {len(recs)} "
                   f"record(s) of {', '.join(vs[:6])}{', …' if len(vs) > 6 else ''}")
    else:
        by: dict[str, list[str]] = {}
        for r in recs:
            by.setdefault(str(r.get("variant")), []).append(str(r.get("message") or "").splitlines()[0]
                                                             if r.get("message") else "")
        parts = [f"{v} ×{len(m)} ({_cell(m[0])[:90]})" for v, m in by.items()]
        out.append(f"- skipped: {'; '.join(parts[:4])}{f'; +{len(parts) - 4} more variants' if len(parts) > 4 else ''}")
    return out


def is_not_applicable(r: dict[str, Any]) -> bool:
    """A skip that planning now leaves out (the variant never supports the dtype): older runs recorded these."""
    msg = str(r.get("message") or "")
    return r.get("status") == "skipped" and f"does not support {r.get('dtype')} (supports" in msg


def _largest_first(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order: dict[tuple[str, str], float] = {}
    for r in recs:
        k = (str(r.get("shape")), str(r.get("dtype")))
        order[k] = max(order.get(k, 0.0), float(r.get("flops") or 0) + float(r.get("bytes") or 0) * 1e-6)
    return sorted(recs, key=lambda r: -order[(str(r.get("shape")), str(r.get("dtype")))])


def write_report(records: list[dict[str, Any]], profile: Any, outdir: str | Path, title: str = "Benchmark report",
                 figures: bool = True, timed_rows: int = TIMED_ROWS) -> Path:
    """Write ``outdir/report.md`` (+ ``tables.md`` and ``figures/``) and return the report's path."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    records = [declared_compute(r) for r in records if isinstance(r, dict) and r.get("family")]
    prof = _profile_obj(profile)
    placed = [_placed(r, prof) for r in records]  # the tables' %roof (and roof suspicion) from this profile
    pngs, fig_note = _figures(placed, prof, outdir / "figures") if figures else ([], None)
    by_name = {p.stem: p for p in pngs}

    def img(stem: str, alt: str) -> str:
        p = by_name.get(stem)
        return f"![{alt}]({p.relative_to(outdir).as_posix()})" if p and p.exists() else ""

    try:
        from roofline.plot import provenance

        prov = provenance(records, prof)
    except Exception:  # noqa: BLE001  (roofline/matplotlib missing: the environment table still says it)
        prov = ""
    cpu = bool(records) and all(r.get("timing") in ("cpu", None) for r in records)
    md = [f"# {title}\n\n"]
    if prov:
        md.append(f"{prov}\n\n")
    if cpu:
        md.append("> CPU run: Triton under TRITON_INTERPRET=1 and torch on the CPU; timings are CPU timings, not GPU "
                  "figures. CUDA variants are compiled only; an interpreted Triton variant is never compared with "
                  "ATen.\n\n")
    if fig_note:
        md.append(f"> {fig_note}\n\n")
    fams = _family_order(records)
    summ = {f: family_summary([r for r in placed if r.get("family") == f], prof) for f in fams}
    md.append("## Summary\n\nPer family, at its largest timed shape: the fastest of the workbench's own variants "
              "at the dtype's own precision (a variant that declared a coarser one, \"fp32 (tf32)\", is its own row "
              "in tables.md) against the library baseline as its paired speed-up (the median of per-round ratios, "
              "each round timing both back to back, with its 95% bootstrap interval), its % of the roofline of its "
              "compute type, and the timing flags over all of the family's records.\n\n")
    rows = []
    for f in fams:
        s_ = summ[f]
        if s_ is None:
            rows.append([f, "-", "nothing timed", "-", "-", "-", "-"])
            continue
        b = s_["best"]
        rows.append([f, f"{shape_label(b)} · {s_['dtype']}", str(b.get("variant")),
                     f"{fmt.ms(b.get('median_ms'))}, {_throughput(b)}", s_["vs"], s_["pct"], s_["notes"] or "-"])
    md.append(_md_table(["family", "shape · dtype", "best variant", "time, throughput", "vs library [95%]",
                         "% roof", "flags"], rows) + "\n")
    redeclared = sorted({str(r["variant"]) + " → " + str(r["compute_dtype"]) for r in records
                         if r.get("compute_dtype_from")})
    if redeclared:
        md.append(f"Compute types from the registry (these records predate their variant's declaration): "
                  f"{', '.join(redeclared)}.\n\n")
    for f in fams:
        if summ[f] is not None:
            md.append(f"- **{f}**: {summ[f]['sentence']}\n")
    md.append("\n")
    roof_img = img("roofline_full", "roofline: every timed record against the device's ceilings")
    if roof_img:
        md.append(f"## Roofline\n\n{roof_img}\n\n")
    md.append("## Environment\n\n" + _md_table(["item", "value"], [[k, str(v)] for k, v in
                                                                  environment(records, prof)]) + "\n")
    tables = [f"# {title}: every record\n\n"]
    # report.md stays under ~200 lines: each family gets the timed rows that fit, largest shapes first
    used = "".join(md).count("\n") + 2
    per_family = (LINE_BUDGET - used) // max(len(fams), 1) - 10
    timed_rows = max(3, min(timed_rows, per_family))
    for f in fams:
        recs = [r for r in placed if r.get("family") == f]
        md.append(f"## {f}\n\n")
        desc = next((r.get("description") for r in recs if r.get("baseline") and r.get("description")), None)
        if desc:
            md.append(f"Baseline: {_cell(desc)}\n\n")
        imgs = [img(f"throughput_{_slug(f)}", f"{f}: throughput vs shape")]
        imgs += [img(f"ladder_{_slug(f)}_{_slug(dt)}", f"{f} {dt}: ladder")
                 for dt in sorted({str(r.get("dtype")) for r in recs})]
        imgs = [i for i in imgs if i]
        if imgs:
            md.append(" ".join(imgs) + "\n\n")
        timed = _largest_first([r for r in recs if r.get("status") == "ok"])
        if timed:
            md.append(markdown_table(timed[:timed_rows]))
            if len(timed) > timed_rows:
                md.append(f"\n{len(timed) - timed_rows} more timed row(s) at smaller shapes: tables.md.\n")
            md.append("\n")
        bad = [r for r in recs if r.get("status") in ("incorrect", "compile_error", "runtime_error", "timeout")]
        for r in bad[:8]:
            first = str(r.get("message") or "").splitlines()[0] if r.get("message") else ""
            md.append(f"- **{r['variant']} {r['dtype']} {r['shape']}** {r['status']}: {_cell(first)[:200]}\n")
        if len(bad) > 8:
            md.append(f"- … {len(bad) - 8} more failures: tables.md\n")
        comp = [r for r in recs if r.get("status") == "compiled"]
        na = [r for r in recs if is_not_applicable(r)]
        skip = [r for r in recs if r.get("status") == "skipped" and not is_not_applicable(r)]
        for kind, rs in (("compiled", comp), ("skipped", skip), ("na", na)):
            if rs:
                md += [line + "\n" for line in _summary_lines(kind, rs)]
        if bad or comp or skip or na:
            md.append("\n")
        tables.append(f"## {f}\n\n" + markdown_table(_largest_first(recs)) + "\n")
        tables.append(f"### {f}: napkin math per shape\n\n" + _md_table(NAPKIN_HEAD, napkin_rows(recs, prof)) + "\n")
    md.append("Every row (compiled, skipped, all shapes) and the napkin math per shape: [tables.md](tables.md).\n")
    (outdir / "tables.md").write_text("".join(tables))
    path = outdir / "report.md"
    path.write_text("".join(md))
    return path


def _slug(text: str) -> str:
    try:
        from roofline.plot import _slug as slug

        return slug(text)
    except Exception:
        import re

        return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def load_profile_for(paths: list[str | Path], profile_path: str | Path | None = None,
                     records: list[dict[str, Any]] | None = None) -> Any:
    """The profile for a stored run: ``profile_path`` if given, else a profile.json next to the records, else a
    theoretical profile from the records' device stamp (roofline package permitting), else None."""
    try:
        from roofline.ceilings import load_profile
    except Exception:
        return None
    cands = [Path(profile_path)] if profile_path else []
    for p in map(Path, paths):
        cands.append((p if p.is_dir() else p.parent) / "profile.json")
    for c in cands:
        if c.exists():
            return load_profile(c)
    if profile_path:
        raise FileNotFoundError(f"{profile_path}: no such profile")
    for r in records or []:
        d = r.get("device")
        if isinstance(d, dict) and d.get("cc") and d.get("sm_count") and d.get("max_sm_clock_mhz"):
            try:
                from roofline.ceilings import theoretical_profile

                return theoretical_profile(d)
            except Exception:
                return None
    return None
