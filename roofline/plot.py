"""Figures from stored records (matplotlib, Agg): roofline, throughput vs size per family, variant ladder.

Every figure function returns ``(Figure, info)``; ``info["labels"]`` lists the texts drawn for points/bars (tests
check that every variant is there) and ``info["skipped"]`` the point labels dropped to avoid overlaps. ``save()``
writes PNG (300 dpi), SVG and PDF. Two widths: "column" (3.5 in, a paper column) and "full" (7.2 in).

Conventions: one colour per family, one marker per backend (triton o, cuda s, torch/library ^), dashed roofs are
theoretical (datasheet FLOP/clk/SM x clock, NVML bandwidth), solid roofs measured (cuBLAS matmul, D2D copy).
"""

from __future__ import annotations

import math
import re
import sys
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

from roofline import model  # noqa: E402
from roofline.ceilings import Profile  # noqa: E402

WIDTHS = {"column": (3.5, 2.7), "full": (7.2, 4.2)}
FONT = {"column": 6.0, "full": 8.0}
MARKERS = {"triton": "o", "cuda": "s", "torch": "^"}
BACKEND_LABEL = {"triton": "Triton", "cuda": "CUDA", "torch": "library (torch)"}
FAMILY_ORDER = ("softmax", "matmul", "attention", "quant_gemm", "knn")
DTYPE_ORDER = ("fp8", "int8", "bf16", "fp16", "tf32", "fp32", "fp64")
# Default units of the planned families (Problem.throughput_unit); records or the registry override this.
DEFAULT_UNITS = {"softmax": "GB/s"}


# ---------------------------------------------------------------------------------------------- helpers
def ok_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with a timing: status ok and a median."""
    return [r for r in records if r.get("status", "ok") == "ok" and (r.get("median_ms") or r.get("tflops"))]


def family_colors(records: list[dict[str, Any]]) -> dict[str, Any]:
    fams = sorted({str(r.get("family", "?")) for r in records},
                  key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else 99, f))
    cmap = matplotlib.colormaps["tab10"]
    return {f: cmap(i % 10) for i, f in enumerate(fams)}


def _marker(backend: Any) -> str:
    return MARKERS.get(str(backend), "D")


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
    for div, p in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g} {p}{unit}"
    return f"{v:.3g} {unit}"


def _candidates():
    """Label offsets (points) around a point: near ones first, then further out with a leader line."""
    for r in (4.0, 9.0, 15.0, 22.0):
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


def _legend_handles(records, colors, fs) -> list[Line2D]:
    hs = [Line2D([], [], ls="", marker="o", color=colors[f], ms=fs * 0.7, label=f) for f in colors]
    for b in sorted({str(r.get("backend", "?")) for r in records}, key=lambda b: (b not in MARKERS, b)):
        hs.append(Line2D([], [], ls="", marker=_marker(b), mfc="none", mec="0.2", ms=fs * 0.7,
                         label=BACKEND_LABEL.get(b, b)))
    return hs


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
def roofline_figure(records: list[dict[str, Any]], profile: Profile | None, width: str = "column",
                    title: str | None = None) -> tuple[Figure, dict[str, Any]]:
    """Log-log roofline: one point per timed record at (intensity, achieved TFLOP/s); roofs of every compute dtype
    present (dashed theoretical, solid measured); labelled ridge points."""
    fs = FONT.get(width, 6.0)
    recs = [r for r in ok_records(records) if model.intensity(r.get("flops"), r.get("bytes"))]
    colors = family_colors(recs)
    fig, axes = _new_figure(width)
    ax = axes[0, 0]
    ax.set_xscale("log")
    ax.set_yscale("log")
    _style(ax, fs)
    info: dict[str, Any] = {"labels": [], "skipped": [], "roofs": [], "ridges": {}}
    pts = [(model.intensity(r["flops"], r["bytes"]), model.achieved_flops(r), r) for r in recs]
    pts = [(x, y, r) for x, y, r in pts if x and y]
    # placement re-derived from the raw fields at drawing time: a stored "roofline" dict may predate the roofs
    pts = [(x, y, {**r, "roofline": model.annotate(r, profile) if profile is not None else {}}) for x, y, r in pts]
    dtypes = sorted({model.record_compute_dtype(r) for _, _, r in pts},
                    key=lambda d: DTYPE_ORDER.index(d) if d in DTYPE_ORDER else 99)
    if profile is not None and not dtypes:
        dtypes = [d for d in ("bf16", "fp32") if (profile.compute.get(d) or {}).get("theoretical")]
    # Axis range: every point, every ridge (x4 to show the flat part).
    xs = [x for x, _, _ in pts]
    rid = []
    if profile is not None:
        for d in dtypes:
            for which in ("theoretical", "best"):
                r_ = model.ridge(profile, d, which)
                if r_:
                    rid.append(r_)
    xlo = min(xs + rid or [1.0]) / 4
    xhi = max(xs + rid or [1.0]) * 5
    grid = [xlo * (xhi / xlo) ** (i / 200) for i in range(201)]
    ys = [y for _, y, _ in pts]
    fixed = []  # texts that point labels must not cover
    if profile is not None:
        roof_tops = []
        nvml, meas = profile.mem.get("nvml"), profile.mem.get("measured")
        # dtypes with the same theoretical peak (bf16/fp16, fp8/int8) share one label and one ridge annotation
        groups: dict[Any, list[str]] = defaultdict(list)
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
                info["roofs"].append((d, kind))
                if not peak:
                    continue
                roof_tops.append(peak)
                label_here = first and (kind == "measured" or not c.get("measured"))
                if label_here:
                    fixed.append(ax.text(xhi / 1.15, peak * 1.04, "/".join(grp), fontsize=fs * 0.8, ha="right",
                                         va="bottom", color="0.1"))
                if bw:
                    r_ = peak / bw
                    ax.plot([r_], [peak], marker="o", ms=fs * 0.4, color="0.1" if kind == "measured" else "0.45",
                            zorder=2)
                    if kind == "measured" or not c.get("measured"):
                        info["ridges"][d] = r_
                    if label_here:
                        fixed.append(ax.annotate(f"{r_:.0f}", (r_, peak), xytext=(-2, 2), textcoords="offset points",
                                                 ha="right", va="bottom", fontsize=fs * 0.7, color="0.3"))
        ys += roof_tops
        ylo_mem = (meas or nvml or 0) * xlo
        if ylo_mem:
            ys.append(ylo_mem)
    ys = ys or [1e9, 1e12]
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(min(ys) / 2, max(ys) * 3)
    ax.set_xlabel("arithmetic intensity (FLOP/byte, minimum-byte model)", fontsize=fs)
    ax.set_ylabel("performance (FLOP/s)", fontsize=fs)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _fmt_si(v, "")))
    name = profile.name if profile is not None else "no profile: roofs not drawn"
    ax.set_title(title or f"Roofline, {name}", fontsize=fs * 1.05)
    if profile is not None:
        bw_best, src = profile.mem_roof()
        if bw_best:
            xm = xlo * 3
            y0 = xm * bw_best
            p0 = ax.transData.transform((xm, y0))
            p1 = ax.transData.transform((xm * 10, y0 * 10))
            ang = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
            txt = f"DRAM {_fmt_si(bw_best, 'B/s')} ({'copy' if src == 'measured' else 'NVML'})"
            fixed.append(ax.text(xm, y0 * 1.25, txt, rotation=ang, rotation_mode="anchor", fontsize=fs * 0.75,
                                 color="0.2"))
    # points
    for x, y, r in pts:
        suspect = bool((r.get("roofline") or {}).get("suspect"))
        ax.scatter([x], [y], marker=_marker(r.get("backend")), s=(fs * 0.95) ** 2 / 2,
                   c=[colors[str(r.get("family", "?"))]], edgecolors="red" if suspect else "none",
                   linewidths=0.8, zorder=3)
    handles = _legend_handles([r for _, _, r in pts], colors, fs)
    if profile is not None:
        handles.append(Line2D([], [], ls="--", color="0.35", lw=0.7, label="theoretical roof"))
        if any(kind == "measured" for _, kind in info["roofs"]):
            handles.append(Line2D([], [], ls="-", color="0.1", lw=0.7, label="measured roof"))
    if any((r.get("roofline") or {}).get("suspect") for _, _, r in pts):
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="red", ms=fs * 0.7,
                              label="above its roof (suspect)"))
    leg = ax.legend(handles=handles,
                    loc="upper left", fontsize=fs * 0.8, frameon=True, framealpha=0.85, borderpad=0.3,
                    handletextpad=0.3, labelspacing=0.25, handlelength=1.4)
    leg.get_frame().set_linewidth(0.4)
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.14, top=0.92)
    fig.canvas.draw()
    rend = fig.canvas.get_renderer()
    placed = [leg.get_window_extent(rend)] + [t.get_window_extent(rend) for t in fixed]
    half = fs * 0.95 / 2 * fig.dpi / 72 * 0.8  # marker half-size in pixels
    for x, y, _ in pts:
        px, py = ax.transData.transform((x, y))
        placed.append(matplotlib.transforms.Bbox([[px - half, py - half], [px + half, py + half]]))
    # Largest (most interesting) first so they win the label space; label = variant (dtype when several).
    multi_dt = len(dtypes) > 1
    labels = []
    for x, y, r in sorted(pts, key=lambda p: -p[1]):
        text = str(r.get("variant", "?")) + (f" {r.get('dtype')}" if multi_dt and r.get("dtype") else "")
        labels.append((x, y, text, colors[str(r.get("family", "?"))]))
    # One label per (variant, dtype): the largest shape's point.
    seen, uniq = set(), []
    for lab in labels:
        if lab[2] not in seen:
            seen.add(lab[2])
            uniq.append(lab)
    info["labels"], info["skipped"] = _place_labels(fig, ax, uniq, fs, placed)
    info["legend"] = [t.get_text() for t in leg.get_texts()]
    info["n_points"] = len(pts)
    return fig, info


# ---------------------------------------------------------------------------------------------- throughput vs size
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


def throughput_figure(records: list[dict[str, Any]], family: str, profile: Profile | None = None,
                      unit: str | None = None, width: str = "full") -> tuple[Figure, dict[str, Any]]:
    """Throughput (TFLOP/s or GB/s) vs problem size (FLOPs or bytes of the shape), one line per variant, one panel
    per dtype; the library baseline in black, the roof as a horizontal line."""
    fs = FONT.get(width, 8.0)
    recs = [r for r in ok_records(records) if r.get("family") == family]
    unit = unit or throughput_unit(family, records, profile=profile)
    xkey = "bytes" if unit == "GB/s" else "flops"
    dts = sorted({str(r.get("dtype")) for r in recs}, key=lambda d: DTYPE_ORDER.index(d) if d in DTYPE_ORDER else 99)
    dts = dts or ["?"]
    ncols = min(len(dts), 3)
    nrows = math.ceil(len(dts) / ncols)
    w, h = WIDTHS.get(width, WIDTHS["full"])
    fig, axes = _new_figure(width, nrows, ncols, height=h if nrows == 1 else h * 0.75 * nrows)
    info: dict[str, Any] = {"labels": [], "unit": unit, "panels": dts}
    cmap = matplotlib.colormaps["tab20"]
    variants = sorted({str(r.get("variant")) for r in recs if not _is_baseline(r)})
    vcolor = {v: cmap(i % 20) for i, v in enumerate(variants)}
    for i, dt in enumerate(dts):
        ax = axes[i // ncols, i % ncols]
        _style(ax, fs)
        ax.set_xscale("log")
        sub = [r for r in recs if str(r.get("dtype")) == dt]
        by_var: dict[tuple[str, str], list] = defaultdict(list)
        for r in sub:
            x, y = r.get(xkey), _y_of(r, unit)
            if x and y is not None:
                by_var[(str(r.get("variant")), str(r.get("backend")))].append((float(x), y, _is_baseline(r)))
        for (v, b), xy in sorted(by_var.items(), key=lambda kv: (not kv[1][0][2], kv[0])):
            xy.sort()
            base = xy[0][2]
            ax.plot([p[0] for p in xy], [p[1] for p in xy], marker=_marker(b), ms=fs * 0.45,
                    lw=1.4 if base else 0.9, ls="--" if base else "-", color="black" if base else vcolor.get(v),
                    label=f"{v} (baseline)" if base else v, zorder=3 if base else 2)
            if v not in info["labels"]:
                info["labels"].append(v)
        if profile is not None:
            if unit == "GB/s":
                roof, src = profile.mem_roof()
                roof = roof / 1e9 if roof else None
            else:
                cd = model.record_compute_dtype(sub[0]) if sub else dt
                roof, src = profile.compute_roof(cd)
                roof = roof / 1e12 if roof else None
            if roof:
                ax.axhline(roof, color="0.4", lw=0.7, ls=":")
                ax.text(ax.get_xlim()[0], roof, f" roof ({src})", fontsize=fs * 0.7, va="bottom", color="0.3")
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"problem size ({'minimum bytes' if xkey == 'bytes' else 'FLOPs'})", fontsize=fs)
        ax.set_ylabel(unit, fontsize=fs)
        ax.set_title(dt, fontsize=fs)
        ax.legend(fontsize=fs * 0.7, loc="best", frameon=False, handlelength=1.6, labelspacing=0.2)
    for j in range(len(dts), nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    dev = (profile.name if profile is not None else None) or _device_name(recs)
    fig.suptitle(f"{family}: throughput vs size" + (f", {dev}" if dev else ""), fontsize=fs * 1.05)
    fig.tight_layout(pad=0.4)
    return fig, info


def _device_name(recs: list[dict[str, Any]]) -> str | None:
    for r in recs:
        d = r.get("device")
        if isinstance(d, dict) and d.get("name"):
            return str(d["name"])
    return None


# ---------------------------------------------------------------------------------------------- ladder
def ladder_groups(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(family, dtype) -> {"shape", "rungs": [records sorted by ladder], "baseline": record or None}, using the
    largest shape (by flops, then bytes) that has ladder records of that family/dtype."""
    recs = ok_records(records)
    groups: dict[tuple[str, str, str], list] = defaultdict(list)
    for r in recs:
        if r.get("ladder") is not None:
            groups[(str(r.get("family")), str(r.get("dtype")), str(r.get("shape")))].append(r)
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for (fam, dt, shape), rungs in groups.items():
        size = (float(rungs[0].get("flops") or 0), float(rungs[0].get("bytes") or 0), len(rungs))
        cur = best.get((fam, dt))
        if cur is None or size > cur["size"]:
            base = [r for r in recs if r.get("family") == fam and str(r.get("dtype")) == dt
                    and str(r.get("shape")) == shape and _is_baseline(r)]
            best[(fam, dt)] = {"shape": shape, "size": size, "baseline": base[0] if base else None,
                               "rungs": sorted(rungs, key=lambda r: (float(r["ladder"]), str(r.get("variant"))))}
    return best


def _pct_of_baseline(r: dict[str, Any], base: dict[str, Any] | None) -> float | None:
    if base is not None and base.get("median_ms") and r.get("median_ms"):
        return float(base["median_ms"]) / float(r["median_ms"]) * 100.0
    if r.get("speedup_vs_baseline") is not None:
        return float(r["speedup_vs_baseline"]) * 100.0
    return None


def ladder_figure(records: list[dict[str, Any]], family: str, dtype: str,
                  width: str = "column") -> tuple[Figure | None, dict[str, Any]]:
    """Bar chart of each ladder rung's throughput as % of the library baseline (same family, dtype and shape)."""
    g = ladder_groups(records).get((family, dtype))
    info: dict[str, Any] = {"labels": []}
    if g is None:
        return None, info
    fs = FONT.get(width, 6.0)
    base = g["baseline"]
    bars = [(str(r.get("variant")), _pct_of_baseline(r, base), r) for r in g["rungs"]]
    bars = [b for b in bars if b[1] is not None]
    if base is not None:
        bars.append((f"{base.get('variant')} (library)", 100.0, base))
    if not bars:
        return None, info
    n = len(bars)
    w, h = WIDTHS.get(width, WIDTHS["column"])
    fig, axes = _new_figure(width, height=max(h, 0.9 + 0.16 * n))
    ax = axes[0, 0]
    _style(ax, fs)
    ax.grid(True, axis="x", lw=0.3, alpha=0.5)
    ax.grid(False, axis="y")
    cmap = matplotlib.colormaps["viridis"]
    ys = list(range(n))[::-1]
    colors = ["0.3" if b[2] is base else cmap(0.15 + 0.7 * i / max(n - 2, 1)) for i, b in enumerate(bars)]
    ax.barh(ys, [b[1] for b in bars], color=colors, height=0.7)
    ax.set_yticks(ys)
    ax.set_yticklabels([b[0] for b in bars], fontsize=fs * 0.9)
    xmax = max(b[1] for b in bars)
    for y, b in zip(ys, bars, strict=True):
        ax.text(b[1] + xmax * 0.01, y, f"{b[1]:.1f}%", va="center", fontsize=fs * 0.8)
    ax.axvline(100.0, color="black", lw=0.6, ls="--")
    ax.set_xlim(0, xmax * 1.18)
    ax.set_xlabel("throughput, % of the library baseline" if base is not None else "% of baseline (recorded speed-up)",
                  fontsize=fs)
    ax.set_title(f"{family} {dtype} ladder, {g['shape']}", fontsize=fs)
    fig.tight_layout(pad=0.4)
    info["labels"] = [b[0] for b in bars]
    info["shape"] = g["shape"]
    return fig, info


# ---------------------------------------------------------------------------------------------- all
def draw_all(records: list[dict[str, Any]], profile: Profile | None, outdir: str | Path,
             units: dict[str, str] | None = None) -> list[str]:
    """Every figure for ``records`` into ``outdir``: roofline (column and full width), throughput vs size per family,
    one ladder chart per family/dtype with ladder records. Returns the written paths (png, svg, pdf each)."""
    outdir = Path(outdir)
    paths: list[str] = []
    recs = [r for r in records if isinstance(r, dict)]
    for width, stem in (("column", "roofline"), ("full", "roofline_full")):
        fig, _ = roofline_figure(recs, profile, width=width)
        paths += save(fig, outdir / stem)
    families = sorted({str(r.get("family")) for r in ok_records(recs) if r.get("family")})
    for fam in families:
        fig, _ = throughput_figure(recs, fam, profile,
                                   unit=throughput_unit(fam, recs, units=units, profile=profile))
        paths += save(fig, outdir / f"throughput_{_slug(fam)}")
    for fam, dt in sorted(ladder_groups(recs)):
        fig, _ = ladder_figure(recs, fam, dt)
        if fig is not None:
            paths += save(fig, outdir / f"ladder_{_slug(fam)}_{_slug(dt)}")
    return paths
