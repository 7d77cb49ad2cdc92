"""Compare two runs, noise-aware: ``python -m harness compare OLD NEW`` (the order of diff and git).

Records match on (family, variant, dtype, shape, device name). ``change`` = new median / old median - 1 (+10% = the
new run is 10% slower); ``speedup`` = old / new. Each median carries a 95% interval (distribution-free, from the
order statistics of its stored samples; without samples the p10..p90 range, which is wider). A record is

- **slower** / **faster** only when the two intervals are separated *and* the change is above the threshold
  (``fail_slower_pct``, else 2%); otherwise **same** (within noise) — so re-running one commit twice reports no
  regression;
- a **regression** when it is slower with a threshold given, on GPU timings only (CPU timings never gate: they
  measure the interpreter and a shared machine), or **broken** (ok before, failing now; that gates everywhere).

Rows that were only compiled or skipped on both sides are counted, not listed. A geometric mean of old/new per family
summarises the matched timed rows.

    python -m harness compare runs/old runs/new --fail-slower 5          # exit 1 on a regression
    python bench/run.py --kernel softmax --out runs/new --compare runs/old --fail-slower 5
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.records import load_records, median_interval

FAILED = ("incorrect", "compile_error", "runtime_error", "timeout")
NOISE_PCT = 2.0  # the smallest change called faster/slower when no threshold is given


def match_key(r: dict[str, Any]) -> tuple[str, str, str, str, str]:
    dev = r.get("device")
    name = dev.get("name") if isinstance(dev, dict) else dev
    return (str(r.get("family")), str(r.get("variant")), str(r.get("dtype")), str(r.get("shape")), str(name or "?"))


def _timed(r: dict[str, Any] | None) -> bool:
    return bool(r) and r.get("status") == "ok" and bool(r.get("median_ms"))


def is_cpu(r: dict[str, Any] | None) -> bool:
    return bool(r) and r.get("timing") in ("cpu", None)


def compare(old_records: Iterable[dict[str, Any]], new_records: Iterable[dict[str, Any]],
            fail_slower_pct: float | None = None) -> tuple[list[dict[str, Any]], int]:
    """Rows (one per key on either side, new-run order first) and the number of regressions.

    Each row: family, variant, dtype, shape, device, old_ms, new_ms, old_ci, new_ci, speedup (old/new), change_pct,
    separated, cpu, old_status, new_status, verdict ("faster" | "slower" | "same" | "regression" | "broken" |
    "fixed" | "compiled" | "skipped" | "new only" | "old only" | "not timed") and regression (bool)."""
    new = {match_key(r): r for r in new_records}
    old = {match_key(r): r for r in old_records}
    effect = NOISE_PCT if fail_slower_pct is None else max(float(fail_slower_pct), 0.0)
    rows: list[dict[str, Any]] = []
    n_reg = 0
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key), new.get(key)
        fam, var, dt, shape, dev = key
        row: dict[str, Any] = {
            "family": fam, "variant": var, "dtype": dt, "shape": shape, "device": dev,
            "old_ms": a.get("median_ms") if a else None, "new_ms": b.get("median_ms") if b else None,
            "old_status": a.get("status") if a else None, "new_status": b.get("status") if b else None,
            "old_ci": None, "new_ci": None, "speedup": None, "change_pct": None, "separated": False,
            "cpu": is_cpu(a) or is_cpu(b), "regression": False,
        }
        sa, sb = row["old_status"], row["new_status"]
        if a is None:
            row["verdict"] = "new only"
        elif b is None:
            row["verdict"] = "old only"
        elif sa == "ok" and sb in FAILED:
            row.update(verdict="broken", regression=True)
        elif sa in FAILED and sb == "ok":
            row["verdict"] = "fixed"
        elif _timed(a) and _timed(b):
            oa, ob = median_interval(a), median_interval(b)
            change = (float(b["median_ms"]) / float(a["median_ms"]) - 1.0) * 100.0
            sep = ob[0] > oa[1] or ob[1] < oa[0]
            row.update(speedup=float(a["median_ms"]) / float(b["median_ms"]), change_pct=change, old_ci=oa,
                       new_ci=ob, separated=sep)
            if sep and change > effect:
                gate = fail_slower_pct is not None and not row["cpu"]
                row.update(verdict="regression" if gate else "slower", regression=gate)
            elif sep and change < -effect:
                row["verdict"] = "faster"
            else:
                row["verdict"] = "same"
        elif sa == sb and sa in ("compiled", "skipped"):
            row["verdict"] = sa
        else:
            row["verdict"] = "not timed"
        n_reg += row["regression"]
        rows.append(row)
    return rows, n_reg


def geomeans(rows: list[dict[str, Any]]) -> dict[str, tuple[float, int, bool]]:
    """family -> (geometric mean of old/new over its matched timed rows, how many, any CPU timing)."""
    acc: dict[str, list[float]] = {}
    cpu: dict[str, bool] = {}
    for r in rows:
        if r["speedup"]:
            acc.setdefault(r["family"], []).append(math.log(r["speedup"]))
            cpu[r["family"]] = cpu.get(r["family"], False) or r["cpu"]
    return {f: (math.exp(sum(v) / len(v)), len(v), cpu[f]) for f, v in acc.items()}


def _default_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _fit(cols: list[list[str]], heads: list[str], right: set[int], width: int, shrink: list[int]) -> list[str]:
    """Plain-text rows no wider than ``width``: the ``shrink`` columns lose characters (ellipsis) first."""
    w = [max([len(h)] + [len(c) for c in col]) for h, col in zip(heads, cols, strict=True)]
    total = sum(w) + 2 * (len(w) - 1)
    for i in shrink:
        if total <= width:
            break
        cut = min(total - width, w[i] - max(6, len(heads[i])))
        if cut > 0:
            w[i] -= cut
            total -= cut

    def cell(text: str, i: int) -> str:
        text = text if len(text) <= w[i] else text[: w[i] - 1] + "…"
        return text.rjust(w[i]) if i in right else text.ljust(w[i])

    lines = ["  ".join(cell(h, i) for i, h in enumerate(heads)).rstrip()]
    for j in range(len(cols[0]) if cols else 0):
        lines.append("  ".join(cell(cols[i][j], i) for i in range(len(cols))).rstrip())
    return [ln[:width] for ln in lines]


def print_compare(rows: list[dict[str, Any]], fail_slower_pct: float | None = None, console: Any = None,
                  width: int | None = None) -> None:
    """Timed, broken and one-sided rows, one line each (regressions red, faster green); compiled-only and skipped
    rows are counted; then the geometric mean per family."""
    import shutil

    from harness import fmt

    console = console or _default_console()
    width = width or max(60, shutil.get_terminal_size((100, 24)).columns)
    thr = f"> {fail_slower_pct:g}% slower with separated 95% intervals" if fail_slower_pct is not None else \
        f"no threshold: faster/slower need separated 95% intervals and > {NOISE_PCT:g}%"
    console.print(f"old -> new (change = new/old - 1; {thr}; CPU timings never gate)", markup=False)
    shown = [r for r in rows if r["verdict"] not in ("compiled", "skipped")]
    counted = {v: sum(r["verdict"] == v for r in rows) for v in ("compiled", "skipped")}
    if shown:
        heads = ["variant", "dtype", "shape", "old", "new", "change", "verdict"]
        cols: list[list[str]] = [[] for _ in heads]
        styles = []
        for r in shown:
            verdict = r["verdict"] + (" (cpu)" if r["cpu"] and r["verdict"] in ("slower", "faster") else "")
            if r["verdict"] in ("broken", "fixed", "not timed"):
                verdict += f" ({r['old_status']} -> {r['new_status']})"
            vals = [f"{r['family']}/{r['variant']}", r["dtype"], r["shape"], fmt.ms(r["old_ms"]), fmt.ms(r["new_ms"]),
                    "-" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%", verdict]
            for i, v in enumerate(vals):
                cols[i].append(v)
            styles.append({"regression": "red", "broken": "red", "faster": "green", "fixed": "green",
                           "new only": "dim", "old only": "dim", "not timed": "dim"}.get(r["verdict"]))
        lines = _fit(cols, heads, {3, 4, 5}, width, shrink=[2, 0, 6])
        console.print(lines[0], style="bold", markup=False)
        for line, style in zip(lines[1:], styles, strict=True):
            console.print(line, style=style, markup=False)
    extra = [f"{n} {v}-only on both sides (not listed)" for v, n in counted.items() if n]
    if extra:
        console.print("; ".join(extra), style="dim", markup=False)
    for fam, (g, n, cpu) in geomeans(rows).items():
        console.print(f"{fam}: geomean speed-up old/new {fmt.ratio(g)} over {n} timed record(s)"
                      + (" (CPU timings: informative only)" if cpu else ""), markup=False)
    matched = [r for r in rows if r["old_status"] and r["new_status"]]
    if not matched and rows:
        devs_new = sorted({r["device"] for r in rows if r["verdict"] == "new only"})
        devs_old = sorted({r["device"] for r in rows if r["verdict"] == "old only"})
        console.print(f"no record matches (family, variant, dtype, shape, device); devices: old {devs_old}, new "
                      f"{devs_new}", style="yellow", markup=False)


def _error(msg: str) -> None:
    """Errors go to stderr (one line), whatever console the table goes to."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"error: {msg}", style="red")


def _latest(recs: list[dict[str, Any]]) -> str:
    return max((str(r.get("timestamp") or "") for r in recs), default="")


def compare_main(old: Path | str | list[dict[str, Any]], new: Path | str | list[dict[str, Any]],
                 fail_slower_pct: float | None = None, console: Any = None) -> int:
    """Load, compare, print. OLD first, NEW second (like diff and git); either may be an output folder, a records
    file or a list of records (the run just done). Returns 1 when anything regressed, 2 when a side cannot be read
    or holds no records, else 0."""
    console = console or _default_console()

    def load(side: Path | str | list[dict[str, Any]]) -> list[dict[str, Any]]:
        if isinstance(side, list):
            return side
        if not Path(side).exists():
            raise FileNotFoundError(f"{side}: no such file or folder")
        return load_records([side])

    try:
        old_recs, new_recs = load(old), load(new)
    except (OSError, ValueError, KeyError) as e:
        _error(f"cannot read results to compare: {e}")
        return 2
    if not old_recs:
        _error(f"no records in {old}")
        return 2
    if _latest(old_recs) and _latest(new_recs) and _latest(old_recs) > _latest(new_recs):
        console.print("note: the OLD results are newer than the NEW ones; the order is OLD NEW (as diff and git)",
                      style="yellow", markup=False)
    rows, n_reg = compare(old_recs, new_recs, fail_slower_pct)
    print_compare(rows, fail_slower_pct, console)
    if n_reg:
        console.print(f"{n_reg} regression(s) against {old if not isinstance(old, list) else 'the old records'}",
                      style="red", markup=False)
        return 1
    return 0
