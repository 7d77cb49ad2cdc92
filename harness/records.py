"""Records: one dict per (family, variant, dtype, shape), written as they finish and never lost.

Every finished record is appended to ``records.jsonl`` (one ``write`` per line, fsynced: a crash or kill -9 loses
at most the record in flight) and the per-family ``<family>.json`` / ``.csv`` / ``.md`` are rewritten atomically
(temp file + rename). The file holds exactly one line per record key: replacing a finished record (speed-ups filled
in at the end of a run) rewrites the file atomically instead of appending a second line, so a plain
``pandas.read_json(lines=True)`` never double-counts.

``--resume`` reads ``records.jsonl`` back and skips what is already there. Before it appends, a torn last line (a
kill -9 in the middle of a write) is cut off and kept in ``records.jsonl.torn-<time>``; every reader says on stderr
how many lines it skipped. ``manifest.json`` holds the run's options, seeds, commit and device: a resume with other
options is refused (``manifest_diff``), and an output folder that already holds a run is never overwritten
(``prepare_outdir``: ``--resume`` continues it, ``--force`` moves it aside to ``<dir>.old-<time>``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("ok", "incorrect", "compile_error", "runtime_error", "timeout", "compiled", "skipped")
OK_STATUSES = ("ok", "compiled", "skipped")  # anything else (or no record at all) makes the exit status 1
KEY_FIELDS = ("family", "variant", "dtype", "shape")
FIELDS = [  # column order of the CSV; the JSON carries everything. The shape's dimensions (M, N, K, ...) follow
    # "shape" as columns of their own (``csv_fields``); the 95% interval is two numeric columns.
    "family", "variant", "backend", "baseline", "dtype", "dtype_label", "shape", "status", "rel_err", "median_ms",
    "p10_ms", "p90_ms", "n", "flops", "bytes", "tflops", "gbps", "intensity", "pct_of_roofline", "speedup_vs_baseline",
    "speedup_lo", "speedup_hi", "speedup_method", "baseline_name", "baseline_median_ms", "timing", "interpreted",
    "suspect", "flags", "unchecked_outputs", "tolerance",
    "xray_regs", "xray_spill_bytes", "xray_smem_bytes", "xray_occupancy", "xray_tc_ops", "xray_widest_load_bits",
    "xray_dot_precision", "floor_ms", "measured_over_floor", "xray_lints", "message", "device_name", "git_sha",
    "timestamp",
]
MANIFEST = "manifest.json"


class OutputDirError(ValueError):
    """An output folder that cannot be used as asked (one line, user-facing: the CLIs exit 2 with it)."""


def record_key(r: dict[str, Any]) -> tuple[str, str, str, str]:
    return (r["family"], r["variant"], r["dtype"], r["shape"])


def is_record(obj: Any) -> bool:
    return isinstance(obj, dict) and all(isinstance(obj.get(k), str) for k in KEY_FIELDS)


def fresh_seeds(n: int = 3) -> tuple[int, ...]:
    """Correctness seeds drawn from the OS entropy pool: a variant cannot know them in advance (31 bits each, so
    every torch/numpy seeding API takes them)."""
    return tuple(secrets.randbits(31) for _ in range(n))


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _flags_text(v: Any) -> str | None:
    if not v:
        return None
    return ";".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _tolerance_text(v: Any) -> str | None:
    """A Tolerance as written into a record (a dict such as {"rtol": .., "atol": ..}, or a plain number/string)."""
    if v is None:
        return None
    if isinstance(v, dict):
        return " ".join(f"{k}={x:g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else f"{k}={x}"
                        for k, x in v.items())
    return str(v)


def shape_dims(r: dict[str, Any]) -> dict[str, Any]:
    """The shape's dimensions as a dict ({"M": 4096, "N": 4096, "K": 4096}): ``shape_dims`` if the record has it,
    else parsed from the shape key ("M=4096,N=4096,K=4096"); numbers become ints or floats."""
    dims = r.get("shape_dims")
    if isinstance(dims, dict) and dims:
        return dict(dims)
    out: dict[str, Any] = {}
    for part in str(r.get("shape") or "").split(","):
        k, eq, v = part.partition("=")
        if not eq:
            continue
        try:
            out[k.strip()] = int(v) if v.strip().lstrip("-").isdigit() else float(v)
        except ValueError:
            out[k.strip()] = v.strip()
    return out


def csv_fields(records: Iterable[dict[str, Any]]) -> list[str]:
    """FIELDS with the shape's dimensions (in order of first appearance) inserted after "shape"."""
    dims: list[str] = []
    for r in records:
        for d in shape_dims(r):
            if d not in dims and d not in FIELDS:
                dims.append(d)
    i = FIELDS.index("shape") + 1
    return FIELDS[:i] + dims + FIELDS[i:]


Z95 = 1.959964


def median_interval(r: dict[str, Any]) -> tuple[float, float]:
    """A 95% interval of the record's median: order statistics of ``samples_ms`` (n >= 6: ranks n/2 -+ 1.96 sqrt(n)/2),
    else its p10..p90 range, else the median itself (an interval of zero width, which never overlaps by luck)."""
    s = r.get("samples_ms")
    if isinstance(s, list) and len(s) >= 6:
        xs = sorted(float(x) for x in s if isinstance(x, (int, float)))
        n = len(xs)
        if n >= 6:
            half = Z95 * math.sqrt(n) / 2
            lo = max(0, math.floor(n / 2 - half) - 1)
            hi = min(n - 1, math.ceil(n / 2 + half))
            return xs[lo], xs[hi]
    p10, p90 = r.get("p10_ms"), r.get("p90_ms")
    if isinstance(p10, (int, float)) and isinstance(p90, (int, float)) and p10 <= p90:
        return float(p10), float(p90)
    m = float(r["median_ms"])
    return m, m


def ratio_of_medians(r: dict[str, Any], base: dict[str, Any]) -> tuple[float, float, float] | None:
    """(baseline median / variant median, 95% lo, hi), the interval from each median's own 95% interval (the
    ladder's and the report's one metric against the library)."""
    if not (base.get("median_ms") and r.get("median_ms")):
        return None
    blo, bhi = median_interval(base)
    vlo, vhi = median_interval(r)
    v = float(base["median_ms"]) / float(r["median_ms"])
    return v, (blo / vhi if vhi else v), (bhi / vlo if vlo else v)


def speedup_shown(r: dict[str, Any]) -> tuple[float, float | None, float | None] | None:
    """(speed-up, 95% lo, 95% hi) against the library baseline from paired rounds, or None when there is none or it
    means nothing: a suspect record, a ratio of medians (older records: not paired), a CPU timing of an interpreted
    Triton variant (TRITON_INTERPRET) against compiled ATen code (it measures the interpreter, not the kernel)."""
    sp = r.get("speedup_vs_baseline")
    if sp is None or r.get("baseline") or r.get("suspect") or r.get("speedup_method") == "median-ratio":
        return None
    if r.get("timing") == "cpu" and r.get("backend") == "triton":
        return None
    ci = r.get("speedup_ci95")
    lo, hi = (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    return float(sp), lo, hi


def lib_ratios(records: Iterable[dict[str, Any]]) -> dict[int, tuple[float, float, float] | None]:
    """id(record) -> (speed-up, 95% lo, hi) against the library baseline: the paired estimate of the record (the
    median of per-round ratios, each round timing both back to back, with its bootstrap interval over rounds), the
    one ×lib of tables, CSV, JSON and report. None where there is none or it means nothing (a suspect record, a CPU
    timing of an interpreted Triton variant against ATen). Medians stay in their own columns."""
    return {id(r): speedup_shown(r) for r in records if not r.get("baseline") and r.get("status") == "ok"}


def measured_over_floor(r: dict[str, Any]) -> float | None:
    """GPU median / the X-ray's predicted floor (>= 1 unless something is wrong); None for CPU timings."""
    x = r.get("xray") if isinstance(r.get("xray"), dict) else {}
    fl, med = x.get("floor_ms"), r.get("median_ms")
    if r.get("status") != "ok" or r.get("timing") in (None, "cpu") or not fl or not med:
        return None
    return float(med) / float(fl)


def flat(r: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: FIELDS plus the shape's dimensions; lists and dicts as short text, numbers as numbers."""
    roof = r.get("roofline") or {}
    dev = r.get("device")
    x = r.get("xray") if isinstance(r.get("xray"), dict) else {}
    sp = speedup_shown(r)
    dims = {k: v for k, v in shape_dims(r).items() if k not in FIELDS}
    return {
        **{k: r.get(k) for k in FIELDS},
        **dims,
        "pct_of_roofline": roof.get("pct_of_roofline") if isinstance(roof, dict) else None,
        "suspect": bool(r.get("suspect")),
        "speedup_vs_baseline": sp[0] if sp else None,
        "speedup_lo": sp[1] if sp else None,
        "speedup_hi": sp[2] if sp else None,
        "speedup_method": r.get("speedup_method") if sp else None,
        "baseline_median_ms": r.get("baseline_median_ms") if sp else None,
        "flags": _flags_text(r.get("flags")),
        "unchecked_outputs": _flags_text(r.get("unchecked_outputs")),
        "tolerance": _tolerance_text(r.get("tolerance")),
        "xray_regs": _regs_of(r), "xray_spill_bytes": _spill_of(r), "xray_smem_bytes": x.get("smem_bytes"),
        "xray_occupancy": x.get("occupancy"), "xray_tc_ops": x.get("tensor_core_ops"),
        "xray_widest_load_bits": x.get("widest_load_bits"), "xray_dot_precision": x.get("dot_precision"),
        "floor_ms": x.get("floor_ms"), "measured_over_floor": measured_over_floor(r),
        "xray_lints": " | ".join(x.get("lints") or []) or None,
        "device_name": dev.get("name") if isinstance(dev, dict) else dev,
    }


# ------------------------------------------------------------------------------------------------ tables
STATUS_SHORT = {"ok": "ok", "skipped": "skip", "compiled": "built", "incorrect": "WRONG", "compile_error": "cc-err",
                "runtime_error": "crash", "timeout": "t/o"}
INTERPRETED = "cpu-int"  # the time cell of a CUDA variant run by the CPU interpreter (checked, never timed)
FLAG_LETTERS = {"launch-bound": "L", "unstable": "U", "suspect": "S", "lint": "x", "partial": "P"}
FLAG_LEGEND = {"L": "launch-bound (median < 5x an empty launch: measures the launch, not the kernel)",
               "U": "unstable (samples drifted or clocks varied)",
               "S": "suspect (above its roof, work hidden, or its worker tampered with: no speed-up)",
               "x": "X-ray lint",
               "P": "partial outputs: checked on what it returns only (an attention baseline without the LSE)"}


@dataclass(frozen=True)
class Column:
    head: str
    prio: int  # columns are dropped highest-prio first when the table does not fit (0: never dropped)
    right: bool = True
    doc: str = ""


COLUMNS: dict[str, Column] = {
    "variant": Column("variant", 0, False, "variant name"),
    "backend": Column("backend", 9, False, "triton, cuda or torch"),
    "shape": Column("shape", 8, False, "shape key (default: a header line per shape and dtype)"),
    "dtype": Column("dtype", 8, False, "dtype (default: in the header line)"),
    "status": Column("status", 0, False, "ok, skip (reason follows), built (CUDA compiled, not run), WRONG, crash"),
    "time": Column("median", 1, True, "median time per call"),
    "p10": Column("p10", 9, True, "10th percentile time"),
    "p90": Column("p90", 9, True, "90th percentile time"),
    "perf": Column("perf", 1, True, "throughput: FLOP/s, or B/s for memory-bound families (the header says)"),
    "vs_lib": Column("×lib", 2, True, "paired speed-up against the library baseline (median of per-round ratios)"),
    "ci": Column("95% CI", 7, True, "95% bootstrap interval of ×lib over the paired rounds"),
    "lib_time": Column("lib", 9, True, "the library baseline's median in this record's paired rounds"),
    "roof": Column("%roof", 3, True, "% of the attainable roofline"),
    "err": Column("rel err", 8, True, "relative error against the float64 reference"),
    "regs": Column("regs", 4, True, "registers per thread (X-ray)"),
    "spill": Column("spill", 5, True, "spilled bytes (X-ray)"),
    "smem": Column("smem", 9, True, "shared memory per block (X-ray)"),
    "occ": Column("occ", 4, True, "theoretical occupancy (X-ray)"),
    "tc": Column("TC ops", 9, True, "tensor-core instructions in the SASS (X-ray)"),
    "floor": Column("floor", 9, True, "predicted floor time (X-ray, device profile)"),
    "flags": Column("flags", 2, False, "L launch-bound, U unstable, S suspect, x X-ray lint, P partial outputs"),
}
DEFAULT_COLUMNS = ("variant", "status", "time", "perf", "vs_lib", "roof", "regs", "spill", "occ", "flags")


def parse_columns(text: str | None) -> list[str]:
    """``--columns`` ("variant,status,time" or "+err,-occ" to add to / remove from the defaults)."""
    if not text:
        return list(DEFAULT_COLUMNS)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    cols = list(DEFAULT_COLUMNS) if all(p[0] in "+-" for p in parts) else []
    for p in parts:
        name = p.lstrip("+-")
        if name not in COLUMNS:
            raise ValueError(f"unknown column {name!r}; choose from {', '.join(COLUMNS)}")
        if p.startswith("-"):
            cols = [c for c in cols if c != name]
        elif name not in cols:
            cols.append(name)
    for must in ("variant", "status"):
        if must not in cols:
            cols.insert(0 if must == "variant" else 1, must)
    return cols


def perf_unit(records: Iterable[dict[str, Any]]) -> str:
    """'B/s' when the family leads with bandwidth, else 'FLOP/s'."""
    units = [r.get("throughput_unit") for r in records if r.get("throughput_unit")]
    return "B/s" if units and units[0] == "GB/s" else "FLOP/s"


def flag_letters(r: dict[str, Any]) -> str:
    flags = list(r.get("flags") or [])
    if r.get("suspect") and "suspect" not in flags:
        flags.append("suspect")
    x = r.get("xray") if isinstance(r.get("xray"), dict) else {}
    if x.get("lints"):
        flags.append("lint")
    return "".join(dict.fromkeys(FLAG_LETTERS.get(str(f), str(f)[:1].upper()) for f in flags))


def _kernel_reports(res: Any) -> list[dict[str, Any]]:
    """The per-kernel ptxas reports in a record's ``resources``: one kernel's dict, {kernel: report} of a launcher,
    or a course launcher's {"kernels": {...}} (harness.byo)."""
    if not isinstance(res, dict):
        return []
    if isinstance(res.get("specialisations"), dict):  # several instantiations of one template: each counts
        return _kernel_reports(res["specialisations"])
    if "registers" in res:
        return [res]
    return [k for v in res.values() if isinstance(v, dict) for k in _kernel_reports(v)]


def _spill_of(r: dict[str, Any]) -> Any:
    """Spilled bytes (stores + loads): the X-ray's, else the ptxas report in ``resources`` (a record whose X-ray is
    missing still shows the spills its build reported, exactly as it shows the registers)."""
    x = r.get("xray") if isinstance(r.get("xray"), dict) else {}
    if x.get("spill_bytes") is not None:
        return x["spill_bytes"]
    ks = _kernel_reports(r.get("resources"))
    if not ks:
        return None
    return sum(int(k.get("spill_store_bytes") or 0) + int(k.get("spill_load_bytes") or 0) for k in ks)


def _regs_of(r: dict[str, Any]) -> Any:
    x = r.get("xray") if isinstance(r.get("xray"), dict) else {}
    if x.get("regs") is not None:
        return x["regs"]
    regs = [k["registers"] for k in _kernel_reports(r.get("resources")) if k.get("registers") is not None]
    return max(regs) if regs else None


_RECORDED = object()


def cells(r: dict[str, Any], unit: str | None = None, ratio: Any = _RECORDED) -> dict[str, str]:
    """Every column's text for one record (the one number formatter: harness.fmt). ``ratio`` is the record's entry of
    ``lib_ratios`` (the paired speed-up, or None: not comparable); without it, the recorded speed-up."""
    from harness import fmt

    unit = unit or perf_unit([r])
    x = r.get("xray") if isinstance(r.get("xray"), dict) else {}
    roof = r.get("roofline") if isinstance(r.get("roofline"), dict) else {}
    sp = speedup_shown(r) if ratio is _RECORDED else ratio
    if r.get("baseline"):
        vs = "lib"
    elif sp:
        vs = fmt.ratio(sp[0])
    else:
        vs = "-"
    if unit == "B/s":
        perf = fmt.plain(r["gbps"] * 1e9) if isinstance(r.get("gbps"), (int, float)) else "-"
    else:
        perf = fmt.plain(r["tflops"] * 1e12) if isinstance(r.get("tflops"), (int, float)) else "-"
    occ = x.get("occupancy")
    spill = _spill_of(r)
    return {
        "variant": str(r.get("variant")),
        "backend": str(r.get("backend") or "-") + ("-cpu" if r.get("interpreted") else ""),
        "shape": str(r.get("shape")),
        "dtype": str(r.get("dtype_label") or r.get("dtype")),
        "status": STATUS_SHORT.get(str(r.get("status")), str(r.get("status"))),
        "time": INTERPRETED if r.get("interpreted") and not r.get("median_ms") else fmt.ms(r.get("median_ms")),
        "p10": fmt.ms(r.get("p10_ms")), "p90": fmt.ms(r.get("p90_ms")),
        "lib_time": fmt.ms(r.get("baseline_median_ms")) if sp else "-",
        "perf": perf if r.get("median_ms") else "-", "vs_lib": vs,
        "ci": fmt.interval(sp[1], sp[2]) if sp else "-",
        "roof": fmt.pct(roof.get("pct_of_roofline")),
        "err": fmt.sig(r["rel_err"], 2) if isinstance(r.get("rel_err"), float) and r["rel_err"] >= 1e-3
        else (f"{r['rel_err']:.1e}" if isinstance(r.get("rel_err"), (int, float)) else "-"),
        "regs": str(_regs_of(r)) if _regs_of(r) is not None else "-",
        "spill": "-" if spill is None else (str(spill) if spill < 1000 else fmt.si(spill, "B", space=False)),
        "smem": "-" if x.get("smem_bytes") is None else fmt.si(x["smem_bytes"], "B", space=False),
        "occ": "-" if occ is None else f"{occ * 100:.0f}%",
        "tc": "-" if x.get("tensor_core_ops") is None else str(x["tensor_core_ops"]),
        "floor": fmt.ms(x.get("floor_ms")),
        "flags": flag_letters(r),
    }


def note_of(r: dict[str, Any]) -> str | None:
    """What a row that did not run says instead of numbers: the skip reason or the failure's first line."""
    if r.get("status") in ("ok", "compiled"):
        return None
    msg = str(r.get("message") or r.get("status") or "").strip().splitlines()
    return msg[0] if msg else ""


def _cut(text: str, n: int) -> str:
    if len(text) <= n:
        return text
    if n <= 1:
        return text[:n]
    return text[: n - 1] + "…"


def _cut_middle(text: str, n: int) -> str:
    if len(text) <= n:
        return text
    head = (n - 1) // 2 + (n - 1) % 2
    return text[:head] + "…" + text[len(text) - (n - 1 - head):]


def shape_label(r: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in shape_dims(r).items()) or str(r.get("shape"))


def render_table(records: list[dict[str, Any]], width: int = 80, columns: list[str] | None = None,
                 group: bool | None = None) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Plain-text table lines that never exceed ``width``: ``[(line, style)]`` and the columns dropped to fit.

    Rows are grouped under a header line per (shape, dtype) unless the shape or dtype is a column. Columns are
    dropped highest-prio first until the table fits, then variant names are shortened in the middle. A row that
    did not run shows its reason in place of the numbers."""
    cols = list(columns or DEFAULT_COLUMNS)
    if group is None:
        group = "shape" not in cols and "dtype" not in cols
    unit = perf_unit(records)
    heads = {c: COLUMNS[c].head for c in cols}
    if "perf" in heads:
        heads["perf"] = unit
    ratios = lib_ratios(records)
    rows = [(r, cells(r, unit, ratios.get(id(r), _RECORDED)), note_of(r)) for r in records]
    numeric = [c for c in cols if c not in ("variant", "status")]
    sep = 2

    def widths(cs: list[str]) -> dict[str, int]:
        w = {c: len(heads[c]) for c in cs}
        for _, cl, note in rows:
            for c in cs:
                if note is not None and c in numeric:
                    continue
                w[c] = max(w[c], len(cl[c]))
        return w

    dropped: list[str] = []
    while True:
        w = widths(cols)
        total = sum(w.values()) + sep * (len(cols) - 1)
        if total <= width:
            break
        if sep == 2:
            sep = 1
            continue
        cand = [c for c in cols if COLUMNS[c].prio > 0]
        if not cand:
            break
        worst = max(cand, key=lambda c: (COLUMNS[c].prio, cols.index(c)))
        cols.remove(worst)
        dropped.append(worst)
        numeric = [c for c in cols if c not in ("variant", "status")]
    w = widths(cols)
    total = sum(w.values()) + sep * (len(cols) - 1)
    if total > width:
        w["variant"] = max(8, w["variant"] - (total - width))
    gap = " " * sep

    def line(vals: dict[str, str]) -> str:
        out = []
        for c in cols:
            v = _cut_middle(vals[c], w[c]) if c == "variant" else _cut(vals[c], w[c])
            out.append(v.rjust(w[c]) if COLUMNS[c].right else v.ljust(w[c]))
        return gap.join(out).rstrip()

    out: list[tuple[str, str | None]] = [(_cut(line(heads), width), "bold")]
    last = None
    for r, cl, note in rows:
        if group:
            g = (shape_label(r), str(r.get("dtype_label") or r.get("dtype")))
            if g != last:
                out.append((_cut(f"· {g[0]} · {g[1]}", width), "dim bold"))
                last = g
        style = {"skipped": "dim", "compiled": "cyan"}.get(str(r.get("status")),
                                                           None if r.get("status") == "ok" else "red")
        if note is None:
            out.append((_cut(line(cl), width), style))
        else:
            lead = [c for c in cols if c in ("variant", "status")]
            text = gap.join((_cut_middle(cl[c], w[c]) if c == "variant" else cl[c]).ljust(w[c]) for c in lead)
            out.append((_cut(f"{text}{gap}{note}", width), style))
    return out, dropped


def inspect_command(records: Iterable[dict[str, Any]]) -> str:
    """The command that shows the X-ray lints of these records: the one their X-ray names (a course file's
    ``inspect --cu FILE``), else ``python -m harness inspect --kernel FAMILY``."""
    cmds = []
    for r in records:
        x = r.get("xray") if isinstance(r.get("xray"), dict) else {}
        if not x.get("lints"):
            continue
        cmd = x.get("inspect") or f"python -m harness inspect --kernel {r.get('family')}"
        if cmd not in cmds:
            cmds.append(cmd)
    return "; ".join(cmds[:2]) + (" …" if len(cmds) > 2 else "") if cmds else "python -m harness inspect"


def table_legend(records: list[dict[str, Any]], columns: list[str] | None = None,
                 width: int | None = None) -> list[str]:
    """One entry per flag letter that appears ("flags: L launch-bound (...)"), word-wrapped to ``width``; none when
    no record has a flag. The x entry names the command that shows the lints. First, when a CUDA variant ran on
    the CPU interpreter, what its ``cpu-int`` time cell means."""
    import textwrap

    out = []
    if any(r.get("interpreted") and r.get("status") == "ok" for r in records):
        out.append(f"{INTERPRETED}: checked by the CUDA interpreter on the CPU; not timed")
    if "flags" not in (columns or DEFAULT_COLUMNS):
        return out
    seen = "".join(dict.fromkeys("".join(flag_letters(r) for r in records)))
    for c in seen:
        text = f"flags: {c} {FLAG_LEGEND.get(c, c)}"
        if c == "x":
            text += f": {inspect_command(records)}"
        out += (textwrap.wrap(text, width=width, subsequent_indent="         ", break_long_words=False,
                              break_on_hyphens=False) if width else [text])
    return out


def table_row(r: dict[str, Any], columns: list[str] | None = None) -> list[str]:
    """The cells of one record for ``columns`` (a skip or failure puts its reason in the last column)."""
    cols = list(columns or MD_COLUMNS)
    cl = cells(r)
    note = note_of(r)
    vals = [cl[c] for c in cols]
    if note is not None:
        vals[-1] = note
    return vals


MD_COLUMNS = ("variant", "shape", "dtype", "status", "time", "perf", "vs_lib", "ci", "roof", "regs", "spill", "occ",
              "flags")


def markdown_table(records: Iterable[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A GFM table (no width limit): the throughput column's header carries its unit; a row that did not run
    carries its reason in a last "note" column."""
    records = list(records)
    cols = list(columns or MD_COLUMNS)
    unit = perf_unit(records)
    heads = [unit if c == "perf" else COLUMNS[c].head for c in cols] + ["note"]
    out = io.StringIO()
    out.write("| " + " | ".join(heads) + " |\n")
    out.write("|" + "---|" * len(heads) + "\n")
    ratios = lib_ratios(records)
    for r in records:
        cl = cells(r, unit, ratios.get(id(r), _RECORDED))
        row = [cl[c] for c in cols] + [note_of(r) or ""]
        out.write("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |\n")
    return out.getvalue()


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class JsonlScan:
    """What a records.jsonl holds: the records (latest line per key, in order of first appearance) and what was
    not a record."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (1-based line number, why)
    superseded: int = 0  # older lines of a key that appears again later (files written before one-line-per-key)
    torn_tail: bool = False  # the last line has no newline: a write was cut short

    def message(self) -> str | None:
        """One line for stderr, or None when every line was a record."""
        parts = []
        if self.skipped:
            first = ", ".join(f"line {n}: {why}" for n, why in self.skipped[:3])
            more = f", +{len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            parts.append(f"skipped {len(self.skipped)} of {self.lines} line(s) ({first}{more})")
        if self.superseded:
            parts.append(f"{self.superseded} older duplicate line(s) superseded by a later line for the same record")
        return f"{self.path}: " + "; ".join(parts) if parts else None


def scan_jsonl(path: str | Path) -> JsonlScan:
    path = Path(path)
    data = path.read_bytes()
    scan = JsonlScan(path, torn_tail=bool(data) and not data.endswith(b"\n"))
    out: dict[tuple, dict[str, Any]] = {}
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        scan.lines += 1
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            last = n == data.count(b"\n") + 1
            scan.skipped.append((n, "torn (no newline)" if last and scan.torn_tail else "not JSON"))
            continue
        if not is_record(obj):
            scan.skipped.append((n, "JSON but not a record (no family/variant/dtype/shape)"))
            continue
        k = record_key(obj)
        if k in out:
            scan.superseded += 1
        out[k] = obj
    scan.records = list(out.values())
    return scan


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def load_jsonl(path: str | Path, *, quiet: bool = False) -> list[dict[str, Any]]:
    """The records of a records.jsonl (latest line per key). Lines that are not records (a torn last line, other
    JSON) are skipped and counted on stderr, never silently."""
    scan = scan_jsonl(path)
    msg = scan.message()
    if msg and not quiet:
        warn(msg)
    return scan.records


def repair_tail(path: Path) -> Path | None:
    """Cut records.jsonl back to its last complete line before appending (a kill -9 mid-write leaves half a line;
    appending onto it would make the next finished record unreadable too). The fragment is kept in
    ``records.jsonl.torn-<time>``; returns that file, or None when the file ended cleanly. A last line that is a
    whole record but lost only its newline is kept (the newline is added)."""
    if not path.exists():
        return None
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return None
        cut = data.rfind(b"\n") + 1
        frag = data[cut:]
        try:
            whole = is_record(json.loads(frag))
        except (json.JSONDecodeError, UnicodeDecodeError):
            whole = False
        if whole:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
            return None
        side = path.with_name(f"{path.name}.torn-{stamp()}")
        n = 0
        while side.exists():
            n += 1
            side = path.with_name(f"{path.name}.torn-{stamp()}-{n}")
        side.write_bytes(frag)
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    return side


class ResultWriter:
    """Owns an output folder: records.jsonl (one line per record key) and per-family json/csv/md (atomic rewrites).

    ``resume=False`` needs a folder whose records.jsonl is absent or empty (it never deletes records: see
    ``prepare_outdir``); ``resume=True`` repairs a torn tail, refuses a file with non-record JSON and compacts a file
    that holds a key twice (written before one-line-per-key)."""

    def __init__(self, outdir: Path, resume: bool = False):
        self.outdir = Path(outdir)
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputDirError(f"cannot create output folder {self.outdir}: {e.strerror or e}") from None
        self.jsonl = self.outdir / "records.jsonl"
        self.records: dict[tuple, dict[str, Any]] = {}
        self.torn: Path | None = None  # where a torn tail went (resume)
        if not self.jsonl.exists():
            return
        if not resume:
            if self.jsonl.stat().st_size:
                raise OutputDirError(f"{self.jsonl} already holds records: resume it (--resume {self.outdir}) or "
                                     "choose another output folder")
            return
        self.torn = repair_tail(self.jsonl)
        if self.torn is not None:
            warn(f"{self.jsonl}: cut a torn last line (a write killed half-way); the fragment is in {self.torn.name}")
        scan = scan_jsonl(self.jsonl)
        alien = [(n, why) for n, why in scan.skipped if "not a record" in why]
        if alien:
            raise OutputDirError(f"--resume {self.outdir}: records.jsonl line {alien[0][0]} is JSON but not a record "
                                 f"({len(alien)} such line(s)): not a workbench output folder?")
        if scan.skipped:  # unreadable lines in the middle (older versions appended onto torn tails): re-run those
            warn(scan.message() + "; their records will be run again")
        for r in scan.records:
            self.records[record_key(r)] = r
        if scan.superseded or scan.skipped:
            self._rewrite()  # one line per key from here on

    def done(self, key: tuple) -> bool:
        return key in self.records

    def _append(self, r: dict[str, Any]) -> None:
        line = (json.dumps(r) + "\n").encode()
        fd = os.open(self.jsonl, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:  # one write(2) in practice; the loop covers a short write
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rewrite(self) -> None:
        atomic_write(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.records.values()))

    def add(self, r: dict[str, Any]) -> None:
        """A finished record: appended, or — when its key is already there — replaced in place (atomic rewrite)."""
        r = _clean(r)
        k = record_key(r)
        if k in self.records:
            self.records[k] = r
            self._rewrite()
        else:
            self._append(r)
            self.records[k] = r
        self.write_family(r["family"])

    def update(self, r: dict[str, Any]) -> None:
        """Replace a finished record (e.g. after speed-ups are known): still one line per key."""
        self.update_many([r])

    def update_many(self, recs: Iterable[dict[str, Any]]) -> None:
        """Replace several finished records with one atomic rewrite of records.jsonl."""
        fams = set()
        for r in recs:
            r = _clean(r)
            self.records[record_key(r)] = r
            fams.add(r["family"])
        if fams:
            self._rewrite()
            for fam in sorted(fams):
                self.write_family(fam)

    def family_records(self, family: str) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r["family"] == family]

    def write_family(self, family: str) -> None:
        recs = self.family_records(family)
        atomic_write(self.outdir / f"{family}.json", json.dumps(recs, indent=1))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=csv_fields(recs))
        w.writeheader()
        for r in recs:
            w.writerow(flat(r))
        atomic_write(self.outdir / f"{family}.csv", buf.getvalue())
        head = f"# {family}\n\n"
        if recs:
            d = recs[0].get("device") or {}
            head += (f"Device: {d.get('name', 'n/a') if isinstance(d, dict) else d} · timing: "
                     f"{recs[0].get('timing')} · commit `{recs[0].get('git_sha')}`\n\n")
        atomic_write(self.outdir / f"{family}.md", head + markdown_table(recs))


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from output folders (records.jsonl or *.json) or from json files holding a list of records.
    Skipped lines and entries are reported on stderr."""
    recs: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if p.is_dir():
            if (p / "records.jsonl").exists():
                recs += load_jsonl(p / "records.jsonl")
                continue
            for f in sorted(p.glob("*.json")):
                if f.name in (MANIFEST, "profile.json"):
                    continue
                data = json.loads(f.read_text())
                if isinstance(data, list) and data and isinstance(data[0], dict) and "family" in data[0]:
                    recs += _only_records(data, f)
        elif p.suffix == ".jsonl":
            recs += load_jsonl(p)
        else:
            data = json.loads(p.read_text())
            recs += _only_records(data if isinstance(data, list) else [data], p)
    return recs


def _only_records(items: list[Any], where: Path) -> list[dict[str, Any]]:
    good = [r for r in items if is_record(r)]
    if len(good) < len(items):
        warn(f"{where}: skipped {len(items) - len(good)} of {len(items)} entries that are not records")
    return good


# ------------------------------------------------------------------------------------------------ output folders
def prepare_outdir(path: str | Path, *, resume: bool = False, force: bool = False) -> tuple[Path, Path | None]:
    """Make ``path`` ready for a run; returns (folder, where an older run was moved to or None).

    A folder that holds anything is refused unless ``resume`` (continue it) or ``force`` (rename it to
    ``<dir>.old-<time>``; nothing is deleted). A regular file, or a folder that cannot be created or written, is a
    one-line OutputDirError."""
    path = Path(path)
    moved = None
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{path} is a file, not a folder: choose an output folder")
    if resume:
        if not path.is_dir() or not ((path / "records.jsonl").exists() or (path / MANIFEST).exists()):
            raise OutputDirError(f"--resume {path}: no records.jsonl or {MANIFEST} there to resume")
    elif path.is_dir() and any(not _is_temp(f) for f in path.iterdir()):
        if not force:
            what = "holds a run" if (path / "records.jsonl").exists() or (path / MANIFEST).exists() else \
                "is not empty"
            raise OutputDirError(f"output folder {path} {what}: continue it with --resume {path}, or pass --force "
                                 f"to move it aside to {path.name}.old-<time>")
        moved = path.with_name(f"{path.name}.old-{stamp()}")
        n = 0
        while moved.exists():
            n += 1
            moved = path.with_name(f"{path.name}.old-{stamp()}-{n}")
        try:
            os.rename(path, moved)
        except OSError as e:
            raise OutputDirError(f"--force: cannot move {path} aside to {moved.name}: {e.strerror or e}") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"cannot create output folder {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):  # no probe file: a kill -9 must not leave one behind
        raise OutputDirError(f"cannot write to output folder {path}: permission denied")
    return path, moved


def _is_temp(f: Path) -> bool:
    """A temporary file of ``atomic_write`` left by a kill -9 (``.manifest.json.tmp<pid>``): not a run's content."""
    return f.name.startswith(".") and ".tmp" in f.name and f.is_file()


def read_manifest(outdir: str | Path) -> dict[str, Any] | None:
    f = Path(outdir) / MANIFEST
    if not f.exists():
        return None
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise OutputDirError(f"{f}: unreadable run manifest ({e})") from None
    if not isinstance(m, dict) or not isinstance(m.get("options"), dict):
        raise OutputDirError(f"{f}: not a run manifest (no options)")
    return m


def write_manifest(outdir: str | Path, manifest: dict[str, Any]) -> None:
    atomic_write(Path(outdir) / MANIFEST, json.dumps(_clean(manifest), indent=1, default=str) + "\n")


def manifest_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'name (old -> new)' for every option whose value differs (JSON-normalised: tuples compare as lists)."""
    norm = lambda v: json.loads(json.dumps(_clean(v), default=str))  # noqa: E731
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = norm(old.get(k)), norm(new.get(k))
        if a != b:
            out.append(f"{k} ({_short(a)} -> {_short(b)})")
    return out


def _short(v: Any) -> str:
    if isinstance(v, list):
        v = ",".join(map(str, v))
    text = "unset" if v is None else str(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------------------------------------ exit status
def failure_summary(records: Iterable[dict[str, Any]], missing: Iterable[str] = (), show: int = 3) -> str | None:
    """One line naming what did not end ok/compiled/skipped (counts per status, then the first few), or None."""
    bad = [r for r in records if r.get("status") not in OK_STATUSES]
    missing = list(missing)
    if not bad and not missing:
        return None
    counts: dict[str, int] = {}
    for r in bad:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    if missing:
        counts["no record"] = len(missing)
    names = [f"{r.get('family')}/{r.get('variant')} {r.get('dtype')} {r.get('shape')} ({r.get('status')})"
             for r in bad] + [f"{m} (no record)" for m in missing]
    more = f", +{len(names) - show} more" if len(names) > show else ""
    return (f"{len(bad) + len(missing)} failed: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            + " -- " + "; ".join(names[:show]) + more)
