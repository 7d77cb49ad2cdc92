"""Records: one dict per (family, variant, dtype, shape), written as they finish and never lost.

Every finished record is appended to ``records.jsonl`` (flushed and fsynced: a crash or kill -9 loses at most the
record in flight) and the per-family ``<family>.json`` / ``.csv`` / ``.md`` are rewritten atomically (temp file +
rename). ``--resume`` reads ``records.jsonl`` back and skips what is already there.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STATUSES = ("ok", "incorrect", "compile_error", "runtime_error", "timeout", "compiled", "skipped")
FIELDS = [  # column order of the CSV; the JSON carries everything
    "family", "variant", "backend", "baseline", "dtype", "shape", "status", "rel_err", "median_ms", "p10_ms",
    "p90_ms", "n", "flops", "bytes", "tflops", "gbps", "intensity", "pct_of_roofline", "speedup_vs_baseline",
    "speedup_ci95", "baseline_name", "timing", "suspect", "message", "device_name", "git_sha", "timestamp",
]


def record_key(r: dict[str, Any]) -> tuple[str, str, str, str]:
    return (r["family"], r["variant"], r["dtype"], r["shape"])


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


def flat(r: dict[str, Any]) -> dict[str, Any]:
    roof = r.get("roofline") or {}
    ci = r.get("speedup_ci95")
    return {
        **{k: r.get(k) for k in FIELDS},
        "pct_of_roofline": roof.get("pct_of_roofline"),
        "suspect": bool(r.get("suspect")),
        "speedup_ci95": f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else None,
        "device_name": (r.get("device") or {}).get("name"),
    }


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:.0f}"
    return str(v)


TABLE_COLS = [("variant", "variant"), ("shape", "shape"), ("dtype", "dtype"), ("status", "status"),
              ("rel_err", "rel err"), ("median_ms", "median ms"), ("tflops", "TFLOP/s"), ("gbps", "GB/s"),
              ("pct_of_roofline", "% roof"), ("speedup", "vs baseline")]


def table_row(r: dict[str, Any]) -> list[str]:
    f = flat(r)
    sp = r.get("speedup_vs_baseline")
    sp_txt = "-"
    if r.get("baseline"):
        sp_txt = "baseline"
    elif sp is not None:
        sp_txt = r.get("speedup_text") or f"{sp:.2f}x"
    status = r["status"] + (" (suspect)" if r.get("suspect") else "")
    vals = {**f, "status": status, "speedup": sp_txt,
            "pct_of_roofline": None if f["pct_of_roofline"] is None else f"{f['pct_of_roofline']:.0f}%"}
    return [fmt(vals.get(k)) for k, _ in TABLE_COLS]


def markdown_table(records: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    out.write("| " + " | ".join(h for _, h in TABLE_COLS) + " |\n")
    out.write("|" + "---|" * len(TABLE_COLS) + "\n")
    for r in records:
        out.write("| " + " | ".join(c.replace("|", "\\|") for c in table_row(r)) + " |\n")
    return out.getvalue()


class ResultWriter:
    """Owns an output folder: records.jsonl (append-only) and per-family json/csv/md (atomic rewrites)."""

    def __init__(self, outdir: Path, resume: bool = False):
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.outdir / "records.jsonl"
        self.records: dict[tuple, dict[str, Any]] = {}
        if resume and self.jsonl.exists():
            for r in load_jsonl(self.jsonl):
                self.records[record_key(r)] = r
        elif self.jsonl.exists() and not resume:
            self.jsonl.unlink()

    def done(self, key: tuple) -> bool:
        return key in self.records

    def add(self, r: dict[str, Any]) -> None:
        r = _clean(r)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record_key(r)] = r
        self.write_family(r["family"])

    def update(self, r: dict[str, Any]) -> None:
        """Replace a finished record (e.g. after speed-ups are known); the jsonl keeps the latest line per key."""
        self.add(r)

    def family_records(self, family: str) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r["family"] == family]

    def write_family(self, family: str) -> None:
        recs = self.family_records(family)
        atomic_write(self.outdir / f"{family}.json", json.dumps(recs, indent=1))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS)
        w.writeheader()
        for r in recs:
            w.writerow(flat(r))
        atomic_write(self.outdir / f"{family}.csv", buf.getvalue())
        head = f"# {family}\n\n"
        if recs:
            d = recs[0].get("device") or {}
            head += (f"Device: {d.get('name', 'n/a')} · timing: {recs[0].get('timing')} · commit "
                     f"`{recs[0].get('git_sha')}`\n\n")
        atomic_write(self.outdir / f"{family}.md", head + markdown_table(recs))


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Latest line per key wins; a torn last line (killed mid-write) is ignored."""
    out: dict[tuple, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[record_key(r)] = r
    return list(out.values())


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from output folders (records.jsonl or *.json) or from json files holding a list of records."""
    recs: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if p.is_dir():
            if (p / "records.jsonl").exists():
                recs += load_jsonl(p / "records.jsonl")
                continue
            for f in sorted(p.glob("*.json")):
                data = json.loads(f.read_text())
                if isinstance(data, list) and data and isinstance(data[0], dict) and "family" in data[0]:
                    recs += data
        elif p.suffix == ".jsonl":
            recs += load_jsonl(p)
        else:
            data = json.loads(p.read_text())
            recs += data if isinstance(data, list) else [data]
    return recs
