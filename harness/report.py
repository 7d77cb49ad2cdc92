"""A self-contained report folder from records: report.md (GitHub-flavoured markdown) + figures/ (PNG, SVG, PDF).

    python -m harness report runs/h100-20261126-1830 -o report/            # any machine, from stored records
    write_report(records, profile, outdir)                                 # from code (bench/run.py)

report.md holds the environment block (GPU, driver, CUDA, torch, triton, clocks), then per family: the results table,
the throughput / ladder figures (relative PNG links, so GitHub renders them) and per (shape, dtype) the napkin math a
writeup asks for: FLOPs, minimum bytes, arithmetic intensity, ridge point, attainable bound and the fraction of it
the best variant achieved. Placement is re-derived from each record's raw fields with the profile given here
(``roofline.model.annotate``), never read from a stored ``record["roofline"]``; without a profile it reads "n/a".
Plain GFM tables, no HTML.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.records import markdown_table

NA = "n/a"


def _si(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}".rstrip()


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
            for dt in sorted(p.compute):
                c, src = p.compute_roof(dt)
                if c:
                    rows.append((f"{dt} compute roof", f"{_si(c, 'FLOP/s')} ({src})"))
        except Exception:
            pass
    if d.get("note"):
        rows.append(("note", d["note"]))
    return rows


def _best(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in recs if r.get("status") == "ok" and r.get("median_ms")]
    return min(ok, key=lambda r: r["median_ms"]) if ok else None


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
            who = f"{best['variant']} ({best.get('timing') or '?'})"
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


def write_report(records: list[dict[str, Any]], profile: Any, outdir: str | Path, title: str = "Benchmark report",
                 figures: bool = True) -> Path:
    """Write ``outdir/report.md`` (+ ``outdir/figures/``) and return the report's path."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    records = [r for r in records if isinstance(r, dict) and r.get("family")]
    prof = _profile_obj(profile)
    pngs, fig_note = _figures(records, prof, outdir / "figures") if figures else ([], None)
    by_name = {p.stem: p for p in pngs}

    def img(stem: str, alt: str) -> str:
        p = by_name.get(stem)
        return f"![{alt}]({p.relative_to(outdir).as_posix()})\n\n" if p and p.exists() else ""

    md = [f"# {title}\n\n## Environment\n\n", _md_table(["item", "value"], [[k, str(v)] for k, v in
                                                                  environment(records, prof)]), "\n"]
    if records and all(r.get("timing") == "cpu" or r.get("timing") is None for r in records):
        md.append("> CPU run: Triton under TRITON_INTERPRET=1 and torch on the CPU; timings are CPU timings, "
                  "not GPU figures. CUDA variants are compiled only.\n\n")
    if fig_note:
        md.append(f"> {fig_note}\n\n")
    md.append(img("roofline_full", "roofline: every timed record against the device's ceilings"))
    for fam in _family_order(records):
        recs = [r for r in records if r.get("family") == fam]
        md.append(f"## {fam}\n\n")
        desc = next((r.get("description") for r in recs if r.get("baseline") and r.get("description")), None)
        unit = recs[0].get("throughput_unit")
        if unit:
            md.append(f"Leads with {unit}." + (f" Baseline: {desc}." if desc else "") + "\n\n")
        md.append(markdown_table(recs) + "\n")
        bad = [r for r in recs if r.get("status") in ("incorrect", "compile_error", "runtime_error", "timeout")]
        for r in bad:
            md.append(f"- **{r['variant']} {r['dtype']} {r['shape']}** {r['status']}: "
                      f"{_cell(r.get('message') or '')}\n")
        if bad:
            md.append("\n")
        md.append(img(f"throughput_{_slug(fam)}", f"{fam}: throughput vs problem size"))
        for dt in sorted({str(r.get("dtype")) for r in recs}):
            md.append(img(f"ladder_{_slug(fam)}_{_slug(dt)}", f"{fam} {dt}: variant ladder"))
        md.append(f"### {fam}: napkin math per shape\n\n")
        md.append("FLOPs and minimum bytes from the family's models (each input read once, each output written "
                  "once); intensity = FLOPs / min bytes; ridge = compute roof / memory roof; attainable = "
                  "min(compute roof, intensity x memory roof); % = best achieved / attainable.\n\n")
        md.append(_md_table(NAPKIN_HEAD, napkin_rows(recs, prof)) + "\n")
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
