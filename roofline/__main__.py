"""Command line of the roofline package.

    python -m roofline plot RESULTS... -o FIG_DIR [--profile profile.json]
        RESULTS: JSON files holding a list of records (or {"records": [...]}), or folders holding such files (searched
        recursively) and optionally a profile.json. Works without a GPU.
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
    """(records, profile files found, warnings) from files/folders."""
    records: list[dict[str, Any]] = []
    profiles: list[Path] = []
    warnings: list[str] = []
    files: list[Path] = []
    from harness.records import load_jsonl

    for p in map(Path, paths):
        if p.is_dir():
            # an output folder's records.jsonl is the complete record (its <family>.json files repeat it)
            jsonl_dirs = [j.parent for j in sorted(p.rglob("records.jsonl"))]
            for d in jsonl_dirs:
                records += load_jsonl(d / "records.jsonl")
            files += [f for f in sorted(p.rglob("*.json"))
                      if f.name == "profile.json" or not any(d in f.parents for d in jsonl_dirs)]
        elif p.suffix == ".jsonl" and p.exists():
            records += load_jsonl(p)
        elif p.exists():
            files.append(p)
        else:
            warnings.append(f"{p}: not found")
    for f in files:
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


def _profile_from_records(records: list[dict[str, Any]]):
    """A theoretical profile from the device dict stored in the records (when it has the clocks)."""
    from roofline.ceilings import theoretical_profile

    for r in records:
        d = r.get("device")
        if isinstance(d, dict) and d.get("sm_count") and d.get("max_sm_clock_mhz") and d.get("cc"):
            return theoretical_profile(d)
    return None


def cmd_plot(args: argparse.Namespace) -> int:
    from roofline import plot
    from roofline.ceilings import load_profile

    records, found, warnings = load_results(args.results)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not records:
        print(f"no records found in {' '.join(args.results)}", file=sys.stderr)
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
    paths = plot.draw_all(records, profile, args.out)
    n_ok = len(plot.ok_records(records))
    print(f"{len(paths)} files from {len(records)} records ({n_ok} timed) in {args.out}; profile: {src}")
    return 0


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
    p.add_argument("results", nargs="+", help="record JSON files or result folders")
    p.add_argument("-o", "--out", required=True, help="figure folder")
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
