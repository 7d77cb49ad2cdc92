"""Command line of the roofline package.

    python -m roofline plot RESULTS... -o fig.png|FIG_DIR [--kind roofline|throughput|ladder|recall]
                            [--family F] [--variants a,b] [--dtype D] [--x DIM] [--profile profile.json]
        RESULTS: records.jsonl, JSON files holding a list of records (or {"records": [...]}), <family>.csv files,
        or folders holding such files (searched recursively) and optionally a profile.json. ``-o`` naming a .png,
        .svg or .pdf writes that one figure (--kind, default roofline); anything else is a folder of every figure.
        Works without a GPU.
    python -m roofline profile [--out PATH] [--cache-dir DIR]
        Measure this GPU's ceilings (copy bandwidth; per dtype the best library GEMM of a shape sweep after a
        sustained warm-up, SM clocks logged; ~30-60 s) and save the profile JSON (with the board UUID).
        Without a GPU: a one-line message and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _is_profile(obj: Any) -> bool:
    return isinstance(obj, dict) and "mem" in obj and "compute" in obj


def load_results(paths: list[str]) -> tuple[list[dict[str, Any]], list[Path], list[str]]:
    """(records, profile files found, warnings) from files/folders (JSON, JSONL or the CSV bench/run.py writes)."""
    records: list[dict[str, Any]] = []
    profiles: list[Path] = []
    warnings: list[str] = []
    files: list[Path] = []
    from harness.records import load_jsonl

    for p in map(Path, paths):
        if p.is_dir():
            # an output folder's records.jsonl is the complete record (its <family>.json/.csv files repeat it)
            jsonl_dirs = [j.parent for j in sorted(p.rglob("records.jsonl"))]
            for d in jsonl_dirs:
                records += load_jsonl(d / "records.jsonl")
            files += [f for f in sorted(p.rglob("*.json"))
                      if f.name == "profile.json" or not any(d in f.parents for d in jsonl_dirs)]
            files += [f for f in sorted(p.rglob("*.csv")) if not any(d in f.parents for d in jsonl_dirs)]
        elif p.suffix == ".jsonl" and p.exists():
            records += load_jsonl(p)
        elif p.exists():
            files.append(p)
        else:
            warnings.append(f"{p}: not found")
    for f in files:
        if f.suffix == ".csv":
            try:
                records += load_csv(f)
            except (OSError, ValueError) as e:
                warnings.append(f"{f}: not a records CSV ({e})")
            continue
        try:
            obj = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            warnings.append(f"{f}: not JSON ({e})")
            continue
        if _is_profile(obj):
            profiles.append(f)
        elif isinstance(obj, list):
            records += [r for r in obj if isinstance(r, dict) and "variant" in r]
        elif isinstance(obj, dict) and isinstance(obj.get("records"), list):
            records += [r for r in obj["records"] if isinstance(r, dict)]
        elif isinstance(obj, dict) and "variant" in obj:
            records.append(obj)
    return records, profiles, warnings


def _value(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def load_csv(path: str | Path) -> list[dict[str, Any]]:
    """Records back from a CSV that ``bench/run.py`` wrote: numbers as numbers, the shape's dimension columns as
    ``shape_dims``, ``device_name`` as the device, ``flags`` as a list, the interval as ``speedup_ci95``."""
    import csv

    from harness.records import FIELDS

    out = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"family", "variant", "status"} <= set(reader.fieldnames):
            raise ValueError("no family/variant/status columns")
        dims = [c for c in reader.fieldnames if c not in FIELDS]
        for row in reader:
            r = {k: _value(v) for k, v in row.items() if k in FIELDS}
            r["shape"] = str(row.get("shape") or "")
            r["dtype"] = str(row.get("dtype") or "")
            r["shape_dims"] = {d: _value(row[d]) for d in dims if row.get(d) not in (None, "")}
            r["device"] = {"name": row.get("device_name") or None}
            r["flags"] = [x for x in (row.get("flags") or "").split(";") if x]
            if r.get("speedup_lo") is not None and r.get("speedup_hi") is not None:
                r["speedup_ci95"] = [r["speedup_lo"], r["speedup_hi"]]
            out.append(r)
    return out


def _profile_from_records(records: list[dict[str, Any]]):
    """A theoretical profile from the device dict stored in the records (when it has the clocks)."""
    from roofline.ceilings import theoretical_profile

    for r in records:
        d = r.get("device")
        if isinstance(d, dict) and d.get("sm_count") and d.get("max_sm_clock_mhz") and d.get("cc"):
            return theoretical_profile(d)
    return None


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def cmd_plot(args: argparse.Namespace) -> int:
    from roofline import plot
    from roofline.ceilings import load_profile

    records, found, warnings = load_results(args.results)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.family:
        fams = {f.strip() for f in args.family.split(",")}
        records = [r for r in records if r.get("family") in fams]
    if args.variants:
        keep = {v.strip() for v in args.variants.split(",")}
        records = [r for r in records if r.get("variant") in keep or r.get("baseline")]
    if args.dtype:
        records = [r for r in records if r.get("dtype") in {d.strip() for d in args.dtype.split(",")}]
    if not records:
        print(f"no records found in {' '.join(args.results)} (after the filters)", file=sys.stderr)
        return 1
    profile, src = None, "none (points only)"
    if args.profile:
        profile, src = load_profile(args.profile), args.profile
    elif found:
        profile, src = load_profile(found[0]), str(found[0])
    else:
        profile = _profile_from_records(records)
        if profile is not None:
            src = "theoretical, from the records' device info"
    out = Path(args.out)
    try:
        if out.suffix.lower() in FIGURE_SUFFIXES:
            paths = [_one_figure(plot, records, profile, args, out)]
        else:
            paths = plot.draw_all(records, profile, out, x=args.x)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_ok = len(plot.ok_records(records))
    where = paths[0] if len(paths) == 1 else f"{len(paths)} files in {out}"
    print(f"{where} from {len(records)} records ({n_ok} timed); profile: {src}")
    return 0


def _one_figure(plot, records, profile, args: argparse.Namespace, out: Path) -> str:
    """The one figure ``--kind`` names, written to exactly ``out``."""
    kind = args.kind
    fams = [f for f in dict.fromkeys(r.get("family") for r in plot.ok_records(records)) if f]
    if kind == "roofline":
        fig, _ = plot.roofline_figure(records, profile, width=args.width or "column")
    elif kind == "throughput":
        if not fams:
            raise ValueError("no timed records to plot")
        fig, _ = plot.throughput_figure(records, fams[0], profile, width=args.width or "full", x=args.x)
    elif kind == "recall":
        rfams = [f for f in dict.fromkeys(r.get("family") for r in plot.recall_records(records)) if f]
        if not rfams:
            raise ValueError("no timed records with a recall@10 (the ann family's) to plot")
        fig, _ = plot.recall_qps_figure(records, rfams[0], width=args.width or "column")
    else:
        groups = plot.ladder_groups(records)
        if not groups:
            raise ValueError("no ladder (numbered CUDA rungs with a library baseline) in these records")
        fam, dt = next(iter(sorted(groups)))
        fig, _ = plot.ladder_figure(records, fam, dt, width=args.width or "column")
        if fig is None:
            raise ValueError(f"no ladder for {fam} {dt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=300 if out.suffix.lower() == ".png" else None)
    return str(out)


def cmd_profile(args: argparse.Namespace) -> int:
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        gpu = False
    if not gpu:
        print("no CUDA GPU here: cannot measure a roofline profile (use a stored profile.json with "
              "`python -m roofline plot ... --profile`)", file=sys.stderr)
        return 1
    from harness.device import device_info
    from roofline.ceilings import measure_profile, profile_path

    dev = device_info()
    prof = measure_profile(dev)
    out = Path(args.out) if args.out else profile_path(dev, args.cache_dir)
    prof.save(out)
    mem = prof.mem
    ds = f", datasheet {mem['datasheet'] / 1e12:.3f} TB/s" if mem.get("datasheet") else ""
    print(f"{prof.name} ({prof.board_uuid or 'no UUID'}): DRAM nvml {(mem['nvml'] or 0) / 1e12:.3f} TB/s, "
          f"copy {(mem['measured'] or 0) / 1e12:.3f} TB/s{ds}")
    print(f"  warm-up: {prof.how.get('warmup')}")
    for dt, c in prof.compute.items():
        th = f"{c['theoretical'] / 1e12:.1f}" if c.get("theoretical") else "-"
        me = f"{c['measured'] / 1e12:.1f}" if c.get("measured") else "-"
        pct = f"{c['library_pct']:.0f}%" if c.get("library_pct") else "-"
        print(f"  {dt:10s} theoretical {th:>7s} TFLOP/s  measured {me:>7s} ({pct:>4s})  "
              f"({prof.how.get(f'compute.{dt}.measured')})")
        if prof.roof_note(dt):
            print(f"    note: {prof.roof_note(dt)}")
    print(f"saved {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m roofline", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plot", help="draw figures from stored records")
    p.add_argument("results", nargs="+", help="records.jsonl, record JSON or CSV files, or result folders")
    p.add_argument("-o", "--out", required=True,
                   help="a .png/.svg/.pdf file (one figure, see --kind) or a folder (every figure)")
    p.add_argument("--kind", choices=("roofline", "throughput", "ladder", "recall"), default="roofline",
                   help="the figure -o FILE gets (default roofline; throughput takes the first --family)")
    p.add_argument("--family", help="only these families (comma-separated)")
    p.add_argument("--variants", help="only these variants (comma-separated; library baselines stay)")
    p.add_argument("--dtype", help="only these dtypes (comma-separated)")
    p.add_argument("--x", help="throughput plots: the shape dimension on the x axis (default: the one that varies)")
    p.add_argument("--width", choices=("column", "full"), help="figure width for -o FILE")
    p.add_argument("--profile", help="profile JSON (default: a profile.json among RESULTS)")
    p.set_defaults(fn=cmd_plot)
    q = sub.add_parser("profile", help="measure this GPU's ceilings")
    q.add_argument("--out", help="profile JSON path (default: ~/.cache/gpu-workbench/profiles/<gpu>.json)")
    q.add_argument("--cache-dir", help="e.g. bench/results: saves to DIR/<gpu-slug>/profile.json")
    q.set_defaults(fn=cmd_profile)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
