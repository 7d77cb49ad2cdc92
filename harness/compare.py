"""Compare two runs: speed-up per matching record, and a regression gate for CI.

Records match on (family, variant, dtype, shape, device name). Speed-up = old median / new median, so 2.0 means the
new run is twice as fast. A record is a *regression* when its new median is more than ``fail_slower_pct`` percent
above the old one, or when it was ``ok`` before and is now incorrect / failing (a broken kernel is slower than any
threshold). Records present on one side only are listed ("new only" / "old only") and never counted.

    python bench/run.py --kernel softmax --out runs/new --compare runs/old --fail-slower 5    # exit 1 on a regression
    python -m harness compare runs/new runs/old --fail-slower 5
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

FAILED = ("incorrect", "compile_error", "runtime_error", "timeout")


def match_key(r: dict[str, Any]) -> tuple[str, str, str, str, str]:
    dev = r.get("device")
    name = dev.get("name") if isinstance(dev, dict) else dev
    return (str(r.get("family")), str(r.get("variant")), str(r.get("dtype")), str(r.get("shape")), str(name or "?"))


def _timed(r: dict[str, Any] | None) -> bool:
    return bool(r) and r.get("status") == "ok" and bool(r.get("median_ms"))


def compare(new_records: Iterable[dict[str, Any]], old_records: Iterable[dict[str, Any]],
            fail_slower_pct: float | None = None) -> tuple[list[dict[str, Any]], int]:
    """Rows (one per key on either side, new-run order first) and the number of regressions.

    Each row: family, variant, dtype, shape, device, old_ms, new_ms, speedup (old/new), change_pct ((new-old)/old),
    old_status, new_status, verdict ("faster" | "slower" | "same" | "regression" | "broken" | "new only" |
    "old only" | "not timed") and regression (bool). Without a threshold nothing is a regression by speed, but
    "broken" (ok before, failing now) always counts.
    """
    new = {match_key(r): r for r in new_records}
    old = {match_key(r): r for r in old_records}
    rows: list[dict[str, Any]] = []
    n_reg = 0
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key), new.get(key)
        fam, var, dt, shape, dev = key
        row: dict[str, Any] = {
            "family": fam, "variant": var, "dtype": dt, "shape": shape, "device": dev,
            "old_ms": a.get("median_ms") if a else None, "new_ms": b.get("median_ms") if b else None,
            "old_status": a.get("status") if a else None, "new_status": b.get("status") if b else None,
            "speedup": None, "change_pct": None, "regression": False,
        }
        if a is None:
            row["verdict"] = "new only"
        elif b is None:
            row["verdict"] = "old only"
        elif a.get("status") == "ok" and b.get("status") in FAILED:
            row["verdict"] = "broken"
            row["regression"] = True
        elif _timed(a) and _timed(b):
            sp = float(a["median_ms"]) / float(b["median_ms"])
            change = (float(b["median_ms"]) / float(a["median_ms"]) - 1.0) * 100.0
            row.update(speedup=sp, change_pct=change)
            if fail_slower_pct is not None and change > fail_slower_pct:
                row.update(verdict="regression", regression=True)
            else:
                row["verdict"] = "faster" if change < -1.0 else ("slower" if change > 1.0 else "same")
        else:
            row["verdict"] = "not timed"
        n_reg += row["regression"]
        rows.append(row)
    return rows, n_reg


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def _default_console():
    import os
    import sys

    from rich.console import Console

    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


def print_compare(rows: list[dict[str, Any]], fail_slower_pct: float | None = None, console: Any = None) -> None:
    """A rich table, one row per match; regressions red, speed-ups green."""
    from rich.table import Table

    console = console or _default_console()
    title = "new vs old (speed-up = old median / new median)"
    if fail_slower_pct is not None:
        title += f"; regression: > {fail_slower_pct:g}% slower"
    t = Table(title=title, title_justify="left", header_style="bold")
    for h in ("family", "variant", "dtype", "shape", "old ms", "new ms", "speed-up", "change", "verdict"):
        t.add_column(h, overflow="fold")
    for r in rows:
        style = {"regression": "red", "broken": "red", "faster": "green", "new only": "dim", "old only": "dim",
                 "not timed": "dim"}.get(r["verdict"])
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        ch = "-" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%"
        verdict = r["verdict"]
        if verdict in ("broken", "not timed"):
            verdict += f" ({r['old_status']} -> {r['new_status']})"
        t.add_row(r["family"], r["variant"], r["dtype"], r["shape"], _ms(r["old_ms"]), _ms(r["new_ms"]), sp, ch,
                  verdict, style=style)
    console.print(t)
    matched = [r for r in rows if r["old_status"] and r["new_status"]]
    if not matched and rows:
        devs_new = sorted({r["device"] for r in rows if r["verdict"] == "new only"})
        devs_old = sorted({r["device"] for r in rows if r["verdict"] == "old only"})
        console.print(f"[yellow]no record matches (family, variant, dtype, shape, device); devices: new "
                      f"{devs_new}, old {devs_old}[/]")


def _error(msg: str) -> None:
    """Errors go to stderr (one line), whatever console the table goes to."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"error: {msg}", style="red")


def compare_main(new: Path | str | list[dict[str, Any]], old: Path | str, fail_slower_pct: float | None = None,
                 console: Any = None) -> int:
    """Load, compare, print. Returns the exit code: 1 when anything regressed (see ``compare``), 2 when the old
    results cannot be read, else 0. ``new`` is an output folder / records file, or the records of the run just done.
    Lines of a records.jsonl that are not records are skipped and counted on stderr (``records.load_jsonl``).
    """
    from harness.records import load_records

    console = console or _default_console()
    try:
        new_recs = list(new) if isinstance(new, list) else load_records([new])
        if not Path(old).exists():
            raise FileNotFoundError(f"{old}: no such file or folder")
        old_recs = load_records([old])
    except (OSError, ValueError, KeyError) as e:
        _error(f"cannot read results to compare: {e}")
        return 2
    if not old_recs:
        _error(f"no records in {old}")
        return 2
    rows, n_reg = compare(new_recs, old_recs, fail_slower_pct)
    print_compare(rows, fail_slower_pct, console)
    if n_reg:
        console.print(f"[red]{n_reg} regression(s)[/] against {old}")
        return 1
    return 0
