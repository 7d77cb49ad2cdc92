"""Figures from stored records (matplotlib, Agg): roofline, throughput vs shape per family, variant ladder, and
recall vs queries/s for the families that report recall (ann).

Every figure function returns ``(Figure, info)``; ``info["labels"]`` lists the texts drawn for points/bars,
``info["skipped"]`` the point labels dropped to avoid overlaps and ``info["footer"]`` the provenance line that every
figure carries (device, commit, date, and "CPU / interpreter timings" when so). ``save()`` writes PNG (300 dpi), SVG
and PDF. Two widths: "column" (3.5 in, a paper column) and "full" (7.2 in). Numbers go through ``harness.fmt``, the
formatter the tables and the report use.

Conventions: one colour per family (never red: red marks a suspect point), one marker per backend (triton o, cuda s,
torch/library ^), filled; a hollow marker is launch-bound (the legend shows backends filled and "hollow:
launch-bound" hollow, so no two entries look alike), a black + is an unstable timing, a red ring is suspect (above its
roof). A throughput line joins only the points of one sweep (every other dimension fixed, or equal to the x
dimension as in an M = N = K cube); any other shape is a point of its own. Dashed roofs are theoretical (datasheet
FLOP/clk/SM x clock, NVML bandwidth), solid roofs measured (library matmul, D2D copy); each roof is labelled with its
value and unit, each ridge point with FLOP/B. The roofline labels the best of the workbench's own variants per family
and backend; the library's best is labelled too, as "(library)": the reference, never "the best".
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.text
import matplotlib.ticker
import matplotlib.transforms

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from harness import fmt  # noqa: E402
from roofline import model  # noqa: E402
from roofline.ceilings import Profile  # noqa: E402

WIDTHS = {"column": (3.5, 2.9), "full": (7.2, 4.4)}
FONT = {"column": 6.0, "full": 8.0}
MARKERS = {"triton": "o", "cuda": "s", "torch": "^"}
BACKEND_LABEL = {"triton": "Triton", "cuda": "CUDA", "torch": "library (torch)"}
FAMILY_ORDER = ("softmax", "matmul", "attention", "attention_decode", "quant_gemm", "knn", "ann", "saxpy", "sgemm",
                "conv1d")
DTYPE_ORDER = ("fp8", "int8", "bf16", "fp16", "tf32", "fp32", "fp64")
SUSPECT_COLOR = "red"
# tab10 without its red (index 3) and grey (7): a family colour can never be mistaken for the suspect marker
FAMILY_PALETTE = [matplotlib.colormaps["tab10"](i) for i in (0, 1, 2, 4, 5, 6, 8, 9)]
# Default units of the planned families (Problem.throughput_unit); records or the registry override this.
DEFAULT_UNITS = {"softmax": "GB/s"}


# ---------------------------------------------------------------------------------------------- helpers
def ok_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with a timing: status ok and a median."""
    return [r for r in records if isinstance(r, dict) and r.get("status", "ok") == "ok"
            and (r.get("median_ms") or r.get("tflops"))]


def family_colors(records: list[dict[str, Any]]) -> dict[str, Any]:
    fams = sorted({str(r.get("family", "?")) for r in records},
                  key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 99, f))
    return {f: FAMILY_PALETTE[i % len(FAMILY_PALETTE)] for i, f in enumerate(fams)}


def _marker(backend: Any) -> str:
    return MARKERS.get(str(backend), "D")


def _flags(r: dict[str, Any]) -> set[str]:
    out = {str(f) for f in (r.get("flags") or [])}
    if r.get("suspect") or (r.get("roofline") or {}).get("suspect"):
        out.add("suspect")
    return out


def _new_figure(width: str, nrows: int = 1, ncols: int = 1, height: float | None = None):
    w, h = WIDTHS.get(width, WIDTHS["column"])
    fig = Figure(figsize=(w, height or h))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _style(ax, fs: float) -> None:
    ax.tick_params(labelsize=fs, length=2.5, pad=1.5)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    for s in ax.spines.values():
        s.set_linewidth(0.6)


def _fmt_si(v: float, unit: str) -> str:
    """Kept for callers of the old name: the one formatter is harness.fmt.si."""
    return fmt.si(v, unit)


def provenance(records: list[dict[str, Any]], profile: Profile | None = None) -> str:
    """'NVIDIA H100 80GB HBM3 · commit a0d712c · 2026-11-26' (+ ' · CPU / interpreter timings, not GPU figures')."""
    recs = [r for r in records if isinstance(r, dict)]
    devs = []
    for r in recs:
        d = r.get("device")
        name = d.get("name") if isinstance(d, dict) else d
        if name and str(name) not in devs:
            devs.append(str(name))
    if not devs and profile is not None:
        devs = [profile.name]
    shas = sorted({str(r.get("git_sha"))[:7] + ("+dirty" if "dirty" in str(r.get("git_sha")) else "")
                   for r in recs if r.get("git_sha")})
    dates = sorted({str(r.get("timestamp"))[:10] for r in recs if r.get("timestamp")})
    parts = [", ".join(devs[:2]) + (f" +{len(devs) - 2}" if len(devs) > 2 else "") if devs else "device unknown",
             ("commit " + ", ".join(shas[:2]) + (f" +{len(shas) - 2}" if len(shas) > 2 else "")) if shas
             else "commit unknown",
             (dates[0] if len(dates) == 1 else f"{dates[0]}..{dates[-1]}") if dates else "date unknown"]
    if any(r.get("timing") == "cpu" for r in recs):
        parts.append("CPU / interpreter timings, not GPU figures")
    return " · ".join(parts)


def _footer(fig, text: str, fs: float) -> float:
    """Draw the provenance line at the bottom-left; returns the figure fraction it needs."""
    fig.text(0.005, 0.004, text, fontsize=fs * 0.62, color="0.35", ha="left", va="bottom")
    return (fs * 0.62 * 1.6) / 72.0 / fig.get_figheight()


def _wrap(text: str, fig, fs: float) -> str:
    chars = int(fig.get_figwidth() * 72 / (fs * 0.55))
    return "\n".join(textwrap.wrap(text, max(20, chars)))


def _memory_name(profile: Profile | None) -> str:
    name = (profile.name if profile is not None else "") or ""
    return "HBM" if re.search(r"HBM|H100|H200|H800|A100|A800|B200|GH200|MI[0-9]", name) else "DRAM"



def _candidates():
    """Label offsets (points) around a point: near ones first, then further out with a leader line."""
    for r in (4.0, 9.0, 15.0, 22.0, 30.0, 40.0):
        for ang in (0, 35, -35, 70, -70, 180, 145, -145, 110, -110):
            dx, dy = r * math.cos(math.radians(ang)), r * math.sin(math.radians(ang))
            ha = "left" if dx > 1 else "right" if dx < -1 else "center"
            va = "bottom" if dy > 1 else "top" if dy < -1 else "center"
            yield dx, dy, ha, va, r > 5


def _place_labels(fig, ax, points, fs: float, placed=None,
                  max_labels: int | None = None) -> tuple[list[str], list[str]]:
    """Annotate (x, y, text, color) points with small text at the first free offset (not over another label, a
    point, the legend or a roof label; inside the axes), with a leader line when far. A label with no free spot (or
    beyond ``max_labels``) is skipped; the point stays. Returns (drawn, skipped).

    Candidate boxes are computed arithmetically from the text size and checked against all obstacles at once
    (numpy), so hundreds of records cost well under a second."""
    import numpy as np
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()
    boxes = [(b.x0, b.y0, b.x1, b.y1) for b in (placed or [])]
    obst = np.array(boxes, dtype=float).reshape(-1, 4)
    axbb = ax.get_window_extent(renderer)
    prop = FontProperties(size=fs * 0.85)
    px_per_pt = fig.dpi / 72.0
    cands = list(_candidates())
    drawn, skipped = [], []
    for x, y, text, color in points:
        if max_labels is not None and len(drawn) >= max_labels:
            skipped.append(text)
            continue
        w, h, _ = renderer.get_text_width_height_descent(text, prop, ismath=False)
        px, py = ax.transData.transform((x, y))
        for dx, dy, ha, va, lead in cands:
            ax_, ay = px + dx * px_per_pt, py + dy * px_per_pt
            x0 = ax_ - (w if ha == "right" else w / 2 if ha == "center" else 0.0)
            y0 = ay - (h if va == "top" else h / 2 if va == "center" else 0.0)
            x1, y1 = x0 + w, y0 + h
            if x0 < axbb.x0 or x1 > axbb.x1 or y0 < axbb.y0 or y1 > axbb.y1:
                continue
            if len(obst) and np.any((obst[:, 0] < x1) & (obst[:, 2] > x0) & (obst[:, 1] < y1) & (obst[:, 3] > y0)):
                continue
            arrow = {"arrowstyle": "-", "lw": 0.3, "color": color, "shrinkA": 0, "shrinkB": 1.5}
            ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                        fontsize=fs * 0.85, color=color, **({"arrowprops": arrow} if lead else {}))
            obst = np.vstack([obst, [x0 - 1, y0 - 1, x1 + 1, y1 + 1]])
            drawn.append(text)
            break
        else:
            skipped.append(text)
    return drawn, skipped


def save(fig: Figure, stem: str | Path, formats=("png", "svg", "pdf")) -> list[str]:
    """Write ``stem.png`` (300 dpi), ``.svg`` and ``.pdf``; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in formats:
        p = stem.with_suffix(f".{ext}")
        fig.savefig(p, dpi=300 if ext == "png" else None)
        out.append(str(p))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "x"


# ---------------------------------------------------------------------------------------------- roofline
def _legend_handles(records, colors, fs) -> list[Line2D]:
    hs = [Line2D([], [], ls="", marker="o", color=colors[f], ms=fs * 0.7, label=f) for f in colors]
    for b in sorted({str(r.get("backend", "?")) for r in records}, key=lambda b: (b not in MARKERS, b)):
        hs.append(Line2D([], [], ls="", marker=_marker(b), mfc="0.45", mec="0.45", ms=fs * 0.7,
                         label=BACKEND_LABEL.get(b, b)))
    return hs


def _flag_handles(flags_seen: set[str], fs: float) -> list[Line2D]:
    hs = []
    if "launch-bound" in flags_seen:
        hs.append(Line2D([], [], ls="", marker="o", mfc="none", mec="0.2", ms=fs * 0.7,
                         label="hollow: launch-bound"))
    if "unstable" in flags_seen:
        hs.append(Line2D([], [], ls="", marker="+", color="black", ms=fs * 0.8, label="+: unstable timing"))
    if "suspect" in flags_seen:
        hs.append(Line2D([], [], ls="", marker="o", mfc="none", mec=SUSPECT_COLOR, mew=1.0, ms=fs * 1.0,
                         label="above its roof (suspect)"))
    return hs


def _draw_point(ax, x: float, y: float, r: dict[str, Any], color, size: float) -> None:
    flags = _flags(r)
    hollow = "launch-bound" in flags
    ax.scatter([x], [y], marker=_marker(r.get("backend")), s=size,
               c="none" if hollow else [color], edgecolors=[color] if hollow else "none", linewidths=0.8, zorder=3)
    if "unstable" in flags:
        ax.scatter([x], [y], marker="+", s=size * 0.9, c="black", linewidths=0.5, zorder=4)
    if "suspect" in flags:
        ax.scatter([x], [y], marker="o", s=size * 2.6, facecolors="none", edgecolors=SUSPECT_COLOR, linewidths=0.8,
                   zorder=4)


def _is_library(r: dict[str, Any]) -> bool:
    return str(r.get("backend")) == "torch" or bool(r.get("baseline"))


def best_per_family_backend(pts: list[tuple[float, float, dict[str, Any]]]) -> list[tuple[float, float, dict]]:
    """The highest point of each (family, backend): the only ones a roofline labels."""
    best: dict[tuple[str, str], tuple[float, float, dict]] = {}
    for p in pts:
        k = (str(p[2].get("family")), str(p[2].get("backend")))
        if k not in best or p[1] > best[k][1]:
            best[k] = p
    return sorted(best.values(), key=lambda p: -p[1])


def roofline_figure(records: list[dict[str, Any]], profile: Profile | None, width: str = "column",
                    title: str | None = None) -> tuple[Figure, dict[str, Any]]:
    """Log-log roofline: one point per timed record at (intensity, achieved FLOP/s); the roofs of every compute dtype
    present, each labelled with its value ("bf16/fp16 measured 790 TFLOP/s", "HBM copy 3.01 TB/s"); ridge points
    in FLOP/B; only the best variant per family and backend labelled (``info["table"]`` lists every point)."""
    fs = FONT.get(width, 6.0)
    recs = [r for r in ok_records(records) if model.intensity(r.get("flops"), r.get("bytes"))]
    colors = family_colors(recs)
    fig, axes = _new_figure(width)
    ax = axes[0, 0]
    ax.set_xscale("log")
    ax.set_yscale("log")
    _style(ax, fs)
    info: dict[str, Any] = {"labels": [], "skipped": [], "roofs": [], "ridges": {}, "roof_labels": [],
                            "footer": provenance(records, profile)}
    pts = [(model.intensity(r["flops"], r["bytes"]), model.achieved_flops(r), r) for r in recs]
    pts = [(x, y, r) for x, y, r in pts if x and y]
    # placement re-derived from the raw fields at drawing time: a stored "roofline" dict may predate the roofs
    pts = [(x, y, {**r, "roofline": model.annotate(r, profile) if profile is not None else {}}) for x, y, r in pts]
    dtypes = sorted({model.record_compute_dtype(r) for _, _, r in pts},
                    key=lambda d: DTYPE_ORDER.index(d) if d in DTYPE_ORDER else 99)
    if profile is not None and not dtypes:
        dtypes = [d for d in ("bf16", "fp32") if (profile.compute.get(d) or {}).get("theoretical")]
    xs = [x for x, _, _ in pts]
    rid = []
    if profile is not None:
        for d in dtypes:
            for which in ("theoretical", "best"):
                r_ = model.ridge(profile, d, which)
                if r_:
                    rid.append(r_)
    xlo = min(xs + rid or [1.0]) / 4
    xhi = max(xs + rid or [1.0]) * 8
    grid = [xlo * (xhi / xlo) ** (i / 200) for i in range(201)]
    ys = [y for _, y, _ in pts]
    fixed = []  # texts that point labels must not cover
    roof_lines = []  # (xs, ys) polylines: label boxes keep off them
    if profile is not None:
        roof_tops = []
        nvml, meas = profile.mem.get("nvml"), profile.mem.get("measured")
        groups: dict[Any, list[str]] = defaultdict(list)  # dtypes with one theoretical peak share a label
        for d in dtypes:
            groups[(profile.compute.get(d) or {}).get("theoretical")].append(d)
        for d in dtypes:
            c = profile.compute.get(d) or {}
            grp = groups[c.get("theoretical")]
            first = grp[0] == d
            for kind, peak, bw, ls in (("theoretical", c.get("theoretical"), nvml, "--"),
                                       ("measured", c.get("measured"), meas or nvml, "-")):
                if kind == "measured" and not (c.get("measured") or meas):
                    continue
                if kind == "measured" and profile.roof_note(d):  # library < 50% of datasheet: not a roof
                    continue
                peak = peak or (c.get("theoretical") if kind == "measured" else None)
                if not peak and not bw:
                    continue
                yv = [min(peak, x * bw) if peak and bw else (peak if peak else x * bw) for x in grid]
                ax.plot(grid, yv, ls=ls, color="0.35" if kind == "theoretical" else "0.1", lw=0.7, zorder=1)
                roof_lines.append((grid, yv))
                info["roofs"].append((d, kind))
                if not peak:
                    continue
                roof_tops.append(peak)
                if first:
                    names = "/".join(grp)
                    text = f"{names} {kind} {fmt.si(peak, 'FLOP/s')}"
                    below = kind == "measured"
                    fixed.append(ax.text(xhi / 1.1, peak / 1.06 if below else peak * 1.06, text, fontsize=fs * 0.72,
                                         ha="right", va="top" if below else "bottom",
                                         color="0.1" if kind == "measured" else "0.35"))
                    info["roof_labels"].append(text)
                if bw:
                    r_ = peak / bw
                    ax.plot([r_], [peak], marker="o", ms=fs * 0.4, color="0.1" if kind == "measured" else "0.45",
                            zorder=2)
                    if kind == "measured" or not c.get("measured"):
                        info["ridges"][d] = r_
                    if first:
                        text = f"ridge {fmt.sig(r_, 3)} FLOP/B"
                        fixed.append(ax.annotate(text, (r_, peak), xytext=(-3, 3 if kind == "theoretical" else -3),
                                                 textcoords="offset points", ha="right",
                                                 va="bottom" if kind == "theoretical" else "top", fontsize=fs * 0.62,
                                                 color="0.3"))
                        info["roof_labels"].append(text)
        ys += roof_tops
        ylo_mem = (meas or nvml or 0) * xlo
        if ylo_mem:
            ys.append(ylo_mem)
    ys = ys or [1e9, 1e12]
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(min(ys) / 2, max(ys) * 3)
    ax.set_xlabel("arithmetic intensity (FLOP/B, minimum-byte model)", fontsize=fs)
    ax.set_ylabel("performance (FLOP/s)", fontsize=fs)
    ax.yaxis.set_major_formatter(fmt.tick_formatter(""))
    name = profile.name if profile is not None else "no profile: roofs not drawn"
    ax.set_title(_wrap(title or f"Roofline, {name}", fig, fs * 1.05), fontsize=fs * 1.05)
    if profile is not None:
        mem = _memory_name(profile)
        nvml_kind = "NVML" if profile.mem_roof()[1] in ("nvml", "measured") else profile.mem_roof()[1]
        for kind, bw in (("copy", meas), (nvml_kind, nvml)):
            if not bw:
                continue
            xm = xlo * (1.6 if kind == "copy" else 1.3)
            y0 = xm * bw
            p0 = ax.transData.transform((xm, y0))
            p1 = ax.transData.transform((xm * 10, y0 * 10))
            ang = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
            text = f"{mem} {kind} {fmt.si(bw, 'B/s')}"
            upper = kind != "copy" or not nvml or bw >= (nvml or 0)
            fixed.append(ax.text(xm, y0 * (1.35 if upper else 0.72), text, rotation=ang, rotation_mode="anchor",
                                 fontsize=fs * 0.66, color="0.2" if kind == "copy" else "0.4",
                                 va="bottom" if upper else "top"))
            info["roof_labels"].append(text)
    size = (fs * 0.95) ** 2 / 2
    flags_seen: set[str] = set()
    for x, y, r in pts:
        _draw_point(ax, x, y, r, colors[str(r.get("family", "?"))], size)
        flags_seen |= _flags(r)
    handles = _legend_handles([r for _, _, r in pts], colors, fs)
    if profile is not None:
        handles.append(Line2D([], [], ls="--", color="0.35", lw=0.7, label="theoretical roof"))
        if any(kind == "measured" for _, kind in info["roofs"]):
            handles.append(Line2D([], [], ls="-", color="0.1", lw=0.7, label="measured roof"))
    handles += _flag_handles(flags_seen, fs)
    leg = ax.legend(handles=handles, loc="upper left", fontsize=fs * 0.72, frameon=True, framealpha=0.85,
                    borderpad=0.3, handletextpad=0.3, labelspacing=0.2, handlelength=1.4,
                    ncol=2 if len(handles) > 9 else 1, columnspacing=0.8)
    leg.get_frame().set_linewidth(0.4)
    foot = _footer(fig, info["footer"], fs)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.13 + foot, top=0.9)
    fig.canvas.draw()
    rend = fig.canvas.get_renderer()
    placed = [leg.get_window_extent(rend)] + [t.get_window_extent(rend) for t in fixed]
    half = fs * 0.95 / 2 * fig.dpi / 72 * 0.8  # marker half-size in pixels
    for x, y, _ in pts:
        px, py = ax.transData.transform((x, y))
        placed.append(matplotlib.transforms.Bbox([[px - half, py - half], [px + half, py + half]]))
    for gx, gy in roof_lines:  # a label never sits on a roof
        pix = ax.transData.transform(list(zip(gx, gy, strict=True)))
        for (x0, y0), (x1, y1) in zip(pix[:-1:4], pix[4::4], strict=False):
            placed.append(matplotlib.transforms.Bbox([[min(x0, x1), min(y0, y1) - 1], [max(x0, x1), max(y0, y1) + 1]]))
    multi_dt = len(dtypes) > 1
    labels = []
    for x, y, r in best_per_family_backend(pts):
        text = str(r.get("variant", "?")) + (f" {r.get('dtype')}" if multi_dt and r.get("dtype") else "")
        if _is_library(r):  # the library is the reference the kernels' labels are read against, never "the best"
            text += " (library)"
        labels.append((x, y, text, colors[str(r.get("family", "?"))]))
    info["labels"], info["skipped"] = _place_labels(fig, ax, labels, fs, placed)
    info["legend"] = [t.get_text() for t in leg.get_texts()]
    info["n_points"] = len(pts)
    info["table"] = [{"family": r.get("family"), "variant": r.get("variant"), "backend": r.get("backend"),
                      "dtype": r.get("dtype"), "shape": r.get("shape"), "intensity": x, "flops_per_s": y,
                      "pct_of_roofline": (r.get("roofline") or {}).get("pct_of_roofline"),
                      "flags": sorted(_flags(r))} for x, y, r in pts]
    return fig, info


# ---------------------------------------------------------------------------------------------- throughput vs shape
def throughput_unit(family: str, records: list[dict[str, Any]], units: dict[str, str] | None = None,
                    profile: Profile | None = None) -> str:
    """TFLOP/s or GB/s for a family: record["throughput_unit"], then ``units``, then the registry if the family is
    registered (harness.registry already imported), then DEFAULT_UNITS, else by the roofline bound of its
    records (memory-bound -> GB/s)."""
    for r in records:
        if r.get("family") == family and r.get("throughput_unit"):
            return str(r["throughput_unit"])
    if units and family in units:
        return units[family]
    reg = sys.modules.get("harness.registry")
    if reg is not None and family in getattr(reg, "REGISTRY", {}):
        return reg.REGISTRY[family].throughput_unit
    if family in DEFAULT_UNITS:
        return DEFAULT_UNITS[family]
    if profile is not None:
        bounds = [model.annotate(r, profile).get("bound") for r in records if r.get("family") == family]
        if bounds and bounds.count("memory") > len(bounds) / 2:
            return "GB/s"
    return "TFLOP/s"


def _y_of(r: dict[str, Any], unit: str) -> float | None:
    if unit == "GB/s":
        if r.get("gbps") is not None:
            return float(r["gbps"])
        if r.get("bytes") and r.get("median_ms"):
            return float(r["bytes"]) / float(r["median_ms"]) / 1e6
        return None
    if r.get("tflops") is not None:
        return float(r["tflops"])
    f = model.achieved_flops(r)
    return f / 1e12 if f else None


def _is_baseline(r: dict[str, Any]) -> bool:
    return bool(r.get("baseline")) or (r.get("baseline_name") is not None and r.get("variant") == r["baseline_name"])


def _y_of(r: dict[str, Any], unit: str, ms: float | None = None) -> float | None:
    """Throughput in ``unit`` (TFLOP/s or GB/s) at ``ms`` (default the median)."""
    t = ms if ms is not None else r.get("median_ms")
    if unit == "GB/s":
        if t and r.get("bytes"):
            return float(r["bytes"]) / float(t) / 1e6
        return float(r["gbps"]) if r.get("gbps") is not None else None
    if t and r.get("flops"):
        return float(r["flops"]) / float(t) / 1e9
    return float(r["tflops"]) if r.get("tflops") is not None else None


def _dims(r: dict[str, Any]) -> dict[str, Any]:
    from harness.records import shape_dims

    return shape_dims(r)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _log_subs(lo: float, hi: float) -> tuple[float, ...]:
    """Labelled ticks per decade: 1-2-5 over a short range, decades only over a long one (labels never collide)."""
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    return (1.0,) if decades > 2.2 else (1.0, 2.0, 5.0)


def _log_axis(axis, unit: str = "", fmt_fn=None) -> None:
    """Log ticks labelled with the one formatter (no 2x10^3 minor labels); call after the data is drawn."""
    lo, hi = axis.get_view_interval()
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=_log_subs(min(lo, hi), max(lo, hi)),
                                                        numticks=12))
    axis.set_major_formatter(fmt_fn or fmt.tick_formatter(unit))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def x_dimension(records: list[dict[str, Any]], want: str | None = None) -> tuple[str | None, list[str], list[str]]:
    """(x dimension, dimensions that vary with it one-to-one, dimensions that split the points into series).

    x is ``want`` or the dimension with the most distinct values; a dimension whose value is fixed by x (M, N, K of
    a cube sweep) goes along with it; any other varying one (causal, scheme) separates the series: points of
    different cases are never joined."""
    dims: dict[str, set] = defaultdict(set)
    order: list[str] = []
    for r in records:
        for k, v in _dims(r).items():
            dims[k].add(repr(v))
            if k not in order:
                order.append(k)
    varying = [d for d in order if len(dims[d]) > 1]
    numeric = [d for d in varying if all(_is_num(_dims(r).get(d)) for r in records)]
    if want:
        if want not in dims:
            raise ValueError(f"--x {want}: not a dimension of these records (they have {', '.join(order)})")
        x = want
    elif numeric:
        x = max(numeric, key=lambda d: (len(dims[d]), -order.index(d)))
    else:  # nothing numeric varies (causal vs not at one size): no x dimension, one category per case
        return None, [], varying
    along, split = [], []
    for d in varying:
        if d == x:
            continue
        seen: dict[str, set] = defaultdict(set)
        for r in records:
            dd = _dims(r)
            seen[repr(dd.get(x))].add(repr(dd.get(d)))
        (along if all(len(v) == 1 for v in seen.values()) else split).append(d)
    return x, along, split


def sweep_cases(records: list[dict[str, Any]], xdim: str, others: list[str]) -> dict[int, tuple]:
    """id(record) -> its series case: records that share a case form one sweep of ``xdim`` (a line). First the
    sweeps with every other dimension fixed (N at M=4096), then, among the records left, the ones whose other
    dimensions equal x (an M = N = K cube); each record left after that has a case of its own (a point): unrelated
    quick shapes are never joined into a zig-zag."""
    out: dict[int, tuple] = {}
    fixed: dict[tuple, list] = defaultdict(list)
    for r in records:
        d = _dims(r)
        fixed[tuple((k, d.get(k)) for k in others)].append(r)
    left = []
    for case, rs in fixed.items():
        if len({repr(_dims(r).get(xdim)) for r in rs}) > 1:
            out.update({id(r): case for r in rs})
        else:
            left += rs
    equal: dict[tuple, list] = defaultdict(list)
    for r in left:
        d = _dims(r)
        equal[tuple((k, "=" if d.get(k) == d.get(xdim) else d.get(k)) for k in others)].append(r)
    for case, rs in equal.items():
        joined = len({repr(_dims(r).get(xdim)) for r in rs}) > 1
        for r in rs:
            out[id(r)] = case if joined else (*case, ("#", id(r)))
    return out


def throughput_figure(records: list[dict[str, Any]], family: str, profile: Profile | None = None,
                      unit: str | None = None, width: str = "full", x: str | None = None,
                      variants: list[str] | None = None) -> tuple[Figure, dict[str, Any]]:
    """Throughput (TFLOP/s or GB/s, log) against the shape dimension that varies (log), one panel per dtype, one
    series per variant and case (causal / scheme / ... never joined), p10–p90 error bars (the throughput at the p90
    and p10 times), the library baseline dashed black, the roof a dotted horizontal line with its value."""
    fs = FONT.get(width, 8.0)
    recs = [r for r in ok_records(records) if r.get("family") == family
            and (not variants or r.get("variant") in variants)]
    unit = unit or throughput_unit(family, records, profile=profile)
    dts = sorted({str(r.get("dtype")) for r in recs}, key=lambda d: DTYPE_ORDER.index(d) if d in DTYPE_ORDER else 99)
    dts = dts or ["?"]
    ncols = min(len(dts), 3)
    nrows = math.ceil(len(dts) / ncols)
    w, h = WIDTHS.get(width, WIDTHS["full"])
    fig, axes = _new_figure(width, nrows, ncols, height=h if nrows == 1 else h * 0.8 * nrows)
    info: dict[str, Any] = {"labels": [], "unit": unit, "panels": dts, "series": [], "x": {},
                            "footer": provenance(recs or records, profile)}
    cmap = matplotlib.colormaps["tab20"]
    names = sorted({str(r.get("variant")) for r in recs if not _is_baseline(r)})
    vcolor = {v: cmap(i % 20) for i, v in enumerate(names)}
    scale = 1e9 if unit == "GB/s" else 1e12
    base_unit = "B/s" if unit == "GB/s" else "FLOP/s"
    for i, dt in enumerate(dts):
        ax = axes[i // ncols, i % ncols]
        _style(ax, fs)
        sub = [r for r in recs if str(r.get("dtype")) == dt]
        xdim, along, split = x_dimension(sub, x)
        info["x"][dt] = xdim
        series: dict[tuple, list] = defaultdict(list)
        cats = sorted({tuple((k, _dims(r).get(k)) for k in split) for r in sub}, key=repr) if xdim is None else []
        cases = sweep_cases(sub, xdim, [*along, *split]) if xdim is not None else {}
        for r in sub:
            d = _dims(r)
            case = tuple((k, d.get(k)) for k in split) if xdim is None else cases[id(r)]
            xv = d.get(xdim) if xdim is not None else cats.index(case) + 1
            y = _y_of(r, unit)
            if not _is_num(xv) or not y:
                continue
            ylo = _y_of(r, unit, r.get("p90_ms")) if r.get("p90_ms") else None
            yhi = _y_of(r, unit, r.get("p10_ms")) if r.get("p10_ms") else None
            series[(str(r.get("variant")), str(r.get("backend")), case, _is_baseline(r))].append(
                (float(xv), y * scale, (ylo or y) * scale, (yhi or y) * scale, _flags(r)))
        styles = ["-", "--", ":", "-."]
        line_cases = sorted({k[2] for k, p in series.items() if len(p) > 1}, key=repr)
        labelled: set[str] = set()
        for (v, b, case, base), pts in sorted(series.items(), key=lambda kv: (not kv[0][3], -len(kv[1]), kv[0][0],
                                                                              repr(kv[0][2]))):
            pts.sort()
            xs_, ys_ = [p[0] for p in pts], [p[1] for p in pts]
            err = [[max(p[1] - p[2], 0) for p in pts], [max(p[3] - p[1], 0) for p in pts]]
            named = [(k, val) for k, val in case if (k in split or xdim is None) and k != "#"]
            label = v + (" (baseline)" if base else "") + ("" if not named else " " + ",".join(f"{k}={val}"
                                                                                          for k, val in named))
            color = "black" if base else vcolor.get(v)
            joined = len(pts) > 1
            ls = ("--" if base else styles[line_cases.index(case) % len(styles)]) if joined else "none"
            if not joined:  # a lone point: the variant's colour and marker say whose; its case is on the x axis
                label = "_nolegend_" if v in labelled else v + (" (baseline)" if base else "")
            labelled.add(v)
            if xdim is None:  # categories: markers only, a small offset per variant, never a line across cases
                off = (sorted(names + ["~base"]).index(v if not base else "~base") - len(names) / 2) * 0.03
                xs_, ls = [x_ * (1 + off) for x_ in xs_], "none"
            ax.errorbar(xs_, ys_, yerr=err, marker=_marker(b), ms=fs * 0.45, lw=1.3 if base else 0.9, ls=ls,
                        color=color, label=label, zorder=3 if base else 2, elinewidth=0.5, capsize=1.2)
            for xp, p in zip(xs_, pts, strict=True):
                if "launch-bound" in p[4]:
                    ax.scatter([xp], [p[1]], marker=_marker(b), s=(fs * 0.9) ** 2, facecolors="white",
                               edgecolors=[color], linewidths=0.7, zorder=4)
                if "suspect" in p[4]:
                    ax.scatter([xp], [p[1]], marker="o", s=(fs * 1.4) ** 2, facecolors="none",
                               edgecolors=SUSPECT_COLOR, linewidths=0.7, zorder=4)
            if label != "_nolegend_":
                info["series"].append(label)
            if joined and xdim is not None:
                info.setdefault("lines", []).append((label, [p[0] for p in pts]))
            if v not in info["labels"]:
                info["labels"].append(v)
        ax.set_yscale("log")
        if xdim is not None:
            ax.set_xscale("log")
            _log_axis(ax.xaxis)
        else:
            ax.set_xticks(range(1, len(cats) + 1))
            from harness.records import shape_label

            one = shape_label(sub[0]) if sub else "-"  # a single shape: name it
            ax.set_xticklabels([",".join(f"{k}={v}" for k, v in c) or one for c in cats], fontsize=fs * 0.85)
            ax.set_xlim(0.5, len(cats) + 0.5)
        _log_axis(ax.yaxis)
        if profile is not None:  # one roof per compute type in the panel (an fp32 panel holds tf32 variants too)
            cds = sorted({model.record_compute_dtype(r) for r in sub} or {dt})
            roofs = [(profile.mem_roof(), "") ] if unit == "GB/s" else \
                [(profile.compute_roof(cd), f"{cd}, " if len(cds) > 1 else "") for cd in cds]
            for (roof, src), what in roofs:
                if not roof:
                    continue
                ax.axhline(roof, color="0.4", lw=0.7, ls=":")
                ax.annotate(f"roof {fmt.si(roof, base_unit)} ({what}{src})", (0.01, roof),
                            xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points",
                            fontsize=fs * 0.7, va="bottom", color="0.3")
        xl = xdim or "case (no size varies)"
        if along:
            same = all(_dims(r).get(a) == _dims(r).get(xdim) for r in sub for a in along)
            xl += (f" (= {' = '.join(along)})" if same else
                   f" (lines: {', '.join(along)} = {xdim} or fixed; other shapes are points)")
        ax.set_xlabel(xl, fontsize=fs)
        ax.set_ylabel(base_unit, fontsize=fs)
        ax.set_title(dt, fontsize=fs)
        if series:
            ax.legend(fontsize=fs * 0.62, loc="best", frameon=False, handlelength=1.8, labelspacing=0.15,
                      ncol=2 if len(series) > 8 else 1)
    for j in range(len(dts), nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    fig.suptitle(_wrap(f"{family}: throughput vs shape (median, p10–p90 bars)", fig, fs * 1.05), fontsize=fs * 1.05)
    foot = _footer(fig, info["footer"], fs)
    fig.tight_layout(pad=0.4, rect=(0, foot, 1, 1))
    return fig, info


def _device_name(recs: list[dict[str, Any]]) -> str | None:
    for r in recs:
        d = r.get("device")
        if isinstance(d, dict) and d.get("name"):
            return str(d["name"])
    return None


# ---------------------------------------------------------------------------------------------- ladder
def _ladder_member(r: dict[str, Any], base: dict[str, Any] | None) -> bool:
    """A ladder rung (numbered CUDA variant) or a Triton variant; never a ratio that measures an interpreter."""
    if _is_baseline(r):
        return False
    if r.get("ladder") is None and r.get("backend") != "triton":
        return False
    if r.get("timing") == "cpu" and base is not None and r.get("backend") != base.get("backend"):
        return False
    return True


def ladder_groups(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(family, dtype) -> {"shape", "rungs": [records: ladder rungs by number, then Triton], "baseline": record},
    using the largest shape (by flops, then bytes) that has a baseline and at least one rung with a ladder number."""
    recs = ok_records(records)
    by: dict[tuple[str, str, str], list] = defaultdict(list)
    for r in recs:
        by[(str(r.get("family")), str(r.get("dtype")), str(r.get("shape")))].append(r)
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for (fam, dt, shape), rs in by.items():
        bases = [r for r in rs if _is_baseline(r)]
        base = bases[0] if bases else None
        rungs = [r for r in rs if _ladder_member(r, base)]
        if not any(r.get("ladder") is not None for r in rungs):
            continue
        size = (float(rs[0].get("flops") or 0), float(rs[0].get("bytes") or 0), len(rungs))
        cur = best.get((fam, dt))
        if cur is None or (base is not None, size) > (cur["baseline"] is not None, cur["size"]):
            order = sorted(rungs, key=lambda r: (r.get("ladder") is None, float(r.get("ladder") or 0),
                                                 str(r.get("variant"))))
            best[(fam, dt)] = {"shape": shape, "size": size, "baseline": base, "rungs": order}
    return best


def ratio_of_medians(r: dict[str, Any], base: dict[str, Any]) -> tuple[float, float, float] | None:
    from harness.records import ratio_of_medians as rom

    return rom(r, base)


def ladder_figure(records: list[dict[str, Any]], family: str, dtype: str,
                  width: str = "column") -> tuple[Figure | None, dict[str, Any]]:
    """Each rung's speed against the library baseline as the ratio of medians (baseline time / variant time, 1× =
    the library), with its 95% interval, on a log axis; Triton variants next to the numbered CUDA rungs."""
    g = ladder_groups(records).get((family, dtype))
    info: dict[str, Any] = {"labels": []}
    if g is None or g["baseline"] is None:
        return None, info
    fs = FONT.get(width, 6.0)
    base = g["baseline"]
    bars = []
    for r in g["rungs"]:
        q = ratio_of_medians(r, base)
        if q:
            bars.append((str(r.get("variant")), q, r))
    if not bars:
        return None, info
    bars.append((f"{base.get('variant')} (library)", (1.0, 1.0, 1.0), base))
    n = len(bars)
    w, h = WIDTHS.get(width, WIDTHS["column"])
    fig, axes = _new_figure(width, height=max(h, 1.1 + 0.17 * n))
    ax = axes[0, 0]
    _style(ax, fs)
    ax.grid(True, axis="x", which="both", lw=0.3, alpha=0.4)
    ax.grid(False, axis="y")
    ax.set_xscale("log")
    vals = [b[1][0] for b in bars]
    lo_all = min([b[1][1] for b in bars] + vals)
    hi_all = max([b[1][2] for b in bars] + vals)
    xmin = 10 ** math.floor(math.log10(lo_all * 0.8))
    xmax = hi_all * 4.0
    cmap = matplotlib.colormaps["viridis"]
    ys = list(range(n))[::-1]
    colors = ["0.3" if b[2] is base else (cmap(0.2 + 0.6 * i / max(n - 2, 1)) if b[2].get("backend") != "triton"
                                          else FAMILY_PALETTE[1]) for i, b in enumerate(bars)]
    ax.barh(ys, [b[1][0] - xmin for b in bars], left=xmin, color=colors, height=0.65)
    err = [[b[1][0] - b[1][1] for b in bars], [b[1][2] - b[1][0] for b in bars]]
    ax.errorbar([b[1][0] for b in bars], ys, xerr=err, fmt="none", ecolor="black", elinewidth=0.6, capsize=1.5)
    ax.set_yticks(ys)
    ax.set_yticklabels([b[0] for b in bars], fontsize=fs * 0.9)
    for y, b in zip(ys, bars, strict=True):
        text = "1× (baseline)" if b[2] is base else f"{fmt.ratio(b[1][0])} {fmt.interval(b[1][1], b[1][2])}"
        ax.text(b[1][2] * 1.08, y, text, va="center", fontsize=fs * 0.72)
    ax.axvline(1.0, color="black", lw=0.6, ls="--")
    ax.set_xlim(xmin, xmax)
    _log_axis(ax.xaxis, fmt_fn=matplotlib.ticker.FuncFormatter(lambda v, _: fmt.ratio(v)))
    ax.set_xlabel(f"speed vs {base.get('variant')}: ratio of medians (95% interval)", fontsize=fs)
    from harness.records import shape_label

    ax.set_title(_wrap(f"{family} {dtype} ladder, {shape_label(base)}", fig, fs), fontsize=fs)
    info["footer"] = provenance([b[2] for b in bars])
    foot = _footer(fig, info["footer"], fs)
    fig.tight_layout(pad=0.4, rect=(0, foot, 1, 1))
    info["labels"] = [b[0] for b in bars]
    info["ratios"] = {b[0]: b[1] for b in bars}
    info["shape"] = g["shape"]
    return fig, info


# ---------------------------------------------------------------------------------------------- recall vs QPS
RECALL_KEY = "recall@10"
EXACT_VARIANTS = ("torch_bruteforce",)  # exact kNN over the whole base: the figure's exact point
_SWEPT = "nprobe"


def _qps(r: dict[str, Any]) -> float | None:
    q = (r.get("extra") or {}).get("qps")
    if q:
        return float(q)
    Q, ms = _dims(r).get("Q"), r.get("median_ms")
    return float(Q) / (float(ms) * 1e-3) if _is_num(Q) and ms else None


def recall_records(records: list[dict[str, Any]], family: str | None = None) -> list[dict[str, Any]]:
    """Timed records that carry a recall (the ann family's): the recall–QPS figure's points."""
    return [r for r in ok_records(records) if (family is None or r.get("family") == family)
            and _is_num((r.get("extra") or {}).get(RECALL_KEY)) and _qps(r)]


def qps_at_recall(points: list[tuple[float, float]], target: float) -> float | None:
    """QPS of a recall–QPS curve at ``target`` recall: log-linear interpolation between the two points that
    straddle it on the (recall-sorted) curve; the best QPS among points at or above it when several are; None when
    the curve never reaches it."""
    pts = sorted(points)
    above = [q for r, q in pts if r >= target]
    if not above:
        return None
    best = max(above)
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 < target <= r1 and r1 > r0:
            t = (target - r0) / (r1 - r0)
            best = max(best, math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0))))
    return best


def recall_qps_figure(records: list[dict[str, Any]], family: str = "ann", width: str = "column",
                      target: float = 0.9) -> tuple[Figure, dict[str, Any]]:
    """ann-benchmarks' recall–QPS plot: x = recall@10 against the exact neighbours, y = queries/s (log), one curve
    per variant and index (the shape without nprobe: points joined in nprobe order, each labelled with its nprobe
    on the first curve; colour = variant, line style = index configuration, library curves lighter), the exact kNN
    point (brute force, recall 1) a star. ``info["qps_at_recall"]`` gives every curve's QPS at ``target`` recall
    (None: never reached) — the issue's "QPS at equal recall@10" comparison. CPU timings say so on the axis and in
    the footer."""
    fs = FONT.get(width, 6.0)
    recs = recall_records(records, family)
    fig, axes = _new_figure(width)
    ax = axes[0, 0]
    _style(ax, fs)
    info: dict[str, Any] = {"labels": [], "curves": {}, "qps_at_recall": {}, "exact": [], "target": target,
                            "footer": provenance(recs or records)}
    groups: dict[tuple, list] = defaultdict(list)
    for r in recs:
        d = _dims(r)
        cfg = tuple((k, v) for k, v in d.items() if k not in (_SWEPT, "base", "query"))
        groups[(str(r.get("variant")), str(r.get("backend")), _is_baseline(r) or str(r.get("variant")).startswith(
            "faiss"), cfg)].append((float(r["extra"][RECALL_KEY]), _qps(r), d.get(_SWEPT)))
    cfgs = sorted({k[3] for k in groups}, key=repr)
    varying = [k for k in (cfgs[0] if cfgs else ()) if len({dict(c).get(k[0]) for c in cfgs}) > 1]
    names = sorted({k[0] for k in groups})
    cmap = matplotlib.colormaps["tab10"]
    styles = ["-", "--", ":", "-."]
    first = True
    for (v, b, lib, cfg), pts in sorted(groups.items(), key=lambda kv: (kv[0][0] in EXACT_VARIANTS, kv[0][2],
                                                                        kv[0][0], repr(kv[0][3]))):
        c = dict(cfg)
        case = " ".join(f"{k}={c.get(k)}" for k, _ in varying)
        label = v + (f" {case}" if case else "")
        color = cmap(names.index(v) % 10)
        if v in EXACT_VARIANTS:
            for rec, q, _ in pts:
                ax.scatter([rec], [q], marker="*", s=(fs * 1.6) ** 2, color="black", zorder=5,
                           label="exact kNN (brute force)" if not info["exact"] else None)
                info["exact"].append((rec, q))
            continue
        pts.sort(key=lambda p: (p[2] if _is_num(p[2]) else 0, p[0]))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker=_marker(b), ms=fs * 0.5, lw=1.2 if lib else 0.9, alpha=0.75 if lib else 1.0,
                ls=styles[cfgs.index(cfg) % len(styles)], color=color, label=label + (" (library)" if lib else ""))
        if first:
            for x_, y_, p in zip(xs, ys, pts, strict=True):
                ax.annotate(f"{p[2]}", (x_, y_), xytext=(2, 2), textcoords="offset points", fontsize=fs * 0.6,
                            color="0.3")
            first = False
        info["curves"][label] = [(p[2], p[0], p[1]) for p in pts]
        info["qps_at_recall"][label] = qps_at_recall([(p[0], p[1]) for p in pts], target)
        info["labels"].append(label)
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.axvline(target, color="0.6", lw=0.5, ls=":")
    cpu = any(r.get("timing") == "cpu" for r in recs)
    ax.set_xlabel(f"{RECALL_KEY} (against the exact neighbours)", fontsize=fs)
    ax.set_ylabel("queries/s" + (" (CPU timing)" if cpu else ""), fontsize=fs)
    if groups:
        ax.legend(fontsize=fs * 0.62, loc="best", frameon=False, handlelength=1.8, labelspacing=0.15, markerscale=0.6)
    shape = ""
    if recs:
        d = _dims(recs[0])
        shape = f" — Q={d.get('Q')} N={d.get('N')} D={d.get('D')} k={d.get('k')} nlist={d.get('nlist')}"
    fig.suptitle(_wrap(f"{family}: recall vs queries/s over {_SWEPT}{shape}", fig, fs * 1.05), fontsize=fs * 1.05)
    foot = _footer(fig, info["footer"], fs)
    fig.tight_layout(pad=0.4, rect=(0, foot, 1, 1))
    return fig, info


# ---------------------------------------------------------------------------------------------- all
def draw_all(records: list[dict[str, Any]], profile: Profile | None, outdir: str | Path,
             units: dict[str, str] | None = None, x: str | None = None, formats=("png", "svg", "pdf")) -> list[str]:
    """Every figure for ``records`` into ``outdir``: roofline (column and full width), throughput vs shape per
    family, one ladder chart per family/dtype with ladder rungs. Returns the written paths."""
    outdir = Path(outdir)
    paths: list[str] = []
    recs = [r for r in records if isinstance(r, dict)]
    for width, stem in (("column", "roofline"), ("full", "roofline_full")):
        fig, _ = roofline_figure(recs, profile, width=width)
        paths += save(fig, outdir / stem, formats)
    families = sorted({str(r.get("family")) for r in ok_records(recs) if r.get("family")},
                      key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 99, f))
    for fam in families:
        fig, _ = throughput_figure(recs, fam, profile, unit=throughput_unit(fam, recs, units=units, profile=profile),
                                   x=x)
        paths += save(fig, outdir / f"throughput_{_slug(fam)}", formats)
    for fam, dt in sorted(ladder_groups(recs)):
        fig, _ = ladder_figure(recs, fam, dt)
        if fig is not None:
            paths += save(fig, outdir / f"ladder_{_slug(fam)}_{_slug(dt)}", formats)
    for fam in sorted({str(r.get("family")) for r in recall_records(recs)}):
        fig, _ = recall_qps_figure(recs, fam, width="full")
        paths += save(fig, outdir / f"recall_qps_{_slug(fam)}", formats)
    return paths
