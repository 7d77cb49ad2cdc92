"""``python -m harness``: correctness, compilation, environment and reports without the benchmark run.

    python -m harness check [--kernel softmax] [--quick] [--dtype fp16] [--variants a,b] [--shape 7x33] [--seeds 0,1]
    python -m harness compile [--kernel all] [--arch sm_90]      # nvcc every registered .cu; ptxas resource table
    python -m harness info                                       # GPU / NVML / versions / nvcc / CUDA loader
    python -m harness report RESULTS... -o DIR [--profile P]     # report.md + figures from stored records
    python -m harness compare OLD NEW [--fail-slower PCT]        # noise-aware changes, regression exit code
    python -m harness inspect [--kernel matmul] [--arch sm_90a]  # kernel X-ray: regs, occupancy, SASS mix, lints

``check`` runs every selected (variant, dtype, shape) through the same correctness path as the benchmark (fresh
inputs per seed, NaN-poisoned outputs, float64 reference) and never times. It runs in this process: a variant that
crashes the process ends the check (bench/run.py isolates each record in a worker). Exit status: 0 all correct,
1 something incorrect / failing, 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from harness.cli import CliError, check_task, console, info_dict, resolve_families, split

if not torch.cuda.is_available():  # before triton is imported: the interpreter on a machine without a GPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

FAILED = ("incorrect", "compile_error", "runtime_error", "timeout")


# ---------------------------------------------------------------------------------------------------- check
def _plan(args: argparse.Namespace):
    from harness import registry
    from harness.runner import plan

    families = resolve_families(args.kernel)
    dtypes = split(args.dtype) or None
    if dtypes:
        bad = [d for d in dtypes if d not in registry.DTYPES]
        if bad:
            raise CliError(f"unknown dtype(s) {bad}; choose from {', '.join(registry.DTYPES)}")
    variants = split(args.variants) or None
    if variants:
        known = {n for f in families for n in registry.REGISTRY[f].variants}
        bad = [v for v in variants if v not in known]
        if bad:
            raise CliError(f"unknown variant(s) {bad}; {args.kernel} has: {', '.join(sorted(known))}")
    try:
        tasks = plan(families, variants=variants, dtypes=dtypes, shapes=args.shape, quick=args.quick,
                     shape_order=getattr(args, "shape_order", None))
    except registry.RegistryError as e:
        raise CliError(str(e)) from None
    if not tasks:
        raise CliError(f"nothing to check for --kernel {args.kernel} with these filters")
    return tasks


def cmd_check(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.records import failure_summary, fresh_seeds

    try:
        seeds = tuple(int(s) for s in split(args.seeds)) if args.seeds is not None else fresh_seeds()
    except ValueError:
        raise CliError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
    if not seeds:
        raise CliError("--seeds needs at least one seed")
    tasks = _plan(args)
    con = console()
    from harness.registry import LOAD_ERRORS

    for fam, err in LOAD_ERRORS.items():
        con.print(f"[red]family {fam} failed to import:[/] {err.strip().splitlines()[-1]}")
    t = Table(title="correctness (not timed)", title_justify="left", header_style="bold")
    for h in ("family", "variant", "dtype", "shape", "status", "rel err", "message"):
        t.add_column(h, overflow="fold")
    counts: dict[str, int] = {}
    recs = []
    for task in tasks:
        rec = check_task(task, seeds, compile_cuda=not args.no_compile)
        recs.append(rec)
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
        style = "red" if rec["status"] in FAILED else ("dim" if rec["status"] == "skipped" else None)
        err = "-" if rec.get("rel_err") is None else f"{rec['rel_err']:.2g}"
        msg = rec.get("message") or ""
        t.add_row(task.family, task.variant, task.dtype, task.shape, rec["status"], err,
                  msg if rec["status"] not in ("ok", "compiled") else "", style=style)
    con.print(t)
    con.print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    con.print(f"seeds: {','.join(map(str, seeds))} (replay with --seeds {','.join(map(str, seeds))})")
    failed = failure_summary(recs)  # anything but ok/compiled/skipped fails, as in bench/run.py
    if failed:
        print(failed, file=sys.stderr)
    return 1 if failed or LOAD_ERRORS else 0


# ---------------------------------------------------------------------------------------------------- compile
def compile_rows(families: list[str], archs: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per (source, kernel, arch) of every registered CUDA variant: registers, smem, stack, spills; or the
    first compile error. Host-mode variants (no ``kernel``) report every kernel in their shared library."""
    from harness.cuda import CompileError, CudaUnavailable, target_archs
    from harness.registry import REGISTRY

    rows: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for fam in families:
        for v in REGISTRY[fam].variants.values():
            if v.backend != "cuda" or v.source is None:
                continue
            src = v.source
            want = archs or [a for a in target_archs() if src.archs is None or a in src.archs] or list(src.archs)
            names = sorted({n for dt in v.dtypes for n in v.kernel_names(dt)})
            for arch in want:
                if src.archs and arch not in src.archs:
                    continue
                base = {"family": fam, "variant": v.name, "source": src.name, "arch": arch}
                if not names:  # host mode: the library's own kernels
                    key = (str(src.path), None, arch)
                    if key in seen:
                        continue
                    seen.add(key)
                    try:
                        res = src.library_resources(arch)
                    except (CompileError, CudaUnavailable, OSError) as e:
                        rows.append({**base, "kernel": "(library)", "error": str(e).split("\n", 1)[0]})
                        continue
                    for k, r in res.items():
                        rows.append({**base, "kernel": k, **dict(r.__dict__), "spills": r.spills})
                    continue
                for k in names:
                    key = (str(src.path), k, arch)
                    if key in seen:
                        continue
                    seen.add(key)
                    try:
                        d = src.resources(k, arch)
                    except CompileError as e:
                        rows.append({**base, "kernel": k, "error": str(e).split("\n", 1)[0]})
                        continue
                    d["spills"] = d.get("spill_store_bytes", 0) + d.get("spill_load_bytes", 0)
                    rows.append({**base, "kernel": k, **d})
    return rows


def cmd_compile(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from harness.cuda import nvcc_path

    families = resolve_families(args.kernel)
    if nvcc_path() is None:
        raise CliError("nvcc not found: install the CUDA toolkit or put nvcc on PATH")
    archs = split(args.arch) or None
    if archs:
        bad = [a for a in archs if not a.startswith("sm_")]
        if bad:
            raise CliError(f"--arch takes sm_XY names (e.g. sm_80,sm_90,sm_90a), got {bad}")
    con = console()
    rows = compile_rows(families, archs)
    if not rows:
        con.print(f"no CUDA variants registered for --kernel {args.kernel}")
        return 0
    # 80 columns: short headers, bytes in the title, and one source named there rather than on every row, so a
    # kernel name such as softmax_v1_naive<__nv_bfloat16> stays on one line
    sources = sorted({r["source"] for r in rows})
    one = len(sources) == 1
    t = Table(title="ptxas resources per kernel" + (f" in {sources[0]}" if one else "") + " (smem/stack/spill: bytes)",
              title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              padding=(0, 1), collapse_padding=True)
    heads = ["kernel"] + ([] if one else ["source"]) + ["arch", "regs", "smem", "stack", "spill", "variant"]
    fixed = {"arch": 6, "regs": 5, "smem": 6, "stack": 5, "spill": 5,  # sm_90a, "error", 232448 B of smem
             "source": max(map(len, sources))}
    for h in heads:
        t.add_column(h, overflow="fold", width=fixed.get(h))
    n_err = 0
    for r in rows:
        lead = [r["kernel"]] + ([] if one else [r["source"]]) + [r["arch"]]
        if "error" in r:
            n_err += 1
            t.add_row(*lead, "[red]error[/]", "", "", "", r["variant"])
            continue
        spill = r["spills"]
        t.add_row(*lead, str(r.get("registers")), str(r.get("shared_bytes")),
                  str(r.get("stack_bytes")), f"[red]{spill}[/]" if spill else "0", r["variant"])
    con.print(t)
    for r in rows:
        if "error" in r:
            con.print(f"[red]{r['source']} {r['kernel']} ({r['arch']})[/]: {r['error']}")
    return 1 if n_err else 0


# ---------------------------------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    info = info_dict()
    con = console()
    if args.json:
        import json

        print(json.dumps(info, indent=1, default=str))
        return 0
    dev = info["device"]
    if not torch.cuda.is_available():
        con.print("No GPU here: Triton runs under TRITON_INTERPRET=1, torch on the CPU, .cu files compile only"
                  + (f" ({dev.get('note')})" if dev.get("note") else "") + ".")
    t = Table(title="device", title_justify="left", show_header=False)
    t.add_column("key")
    t.add_column("value", overflow="fold")
    for k, v in dev.items():
        if v is not None and k != "note":
            t.add_row(k, str(v))
    if t.row_count:
        con.print(t)
    t = Table(title="toolchain", title_justify="left", show_header=False)
    t.add_column("key")
    t.add_column("value", overflow="fold")
    for k, v in info["versions"].items():
        t.add_row(k, str(v) if v is not None else "-")
    t.add_row("nvcc path", str(info["nvcc_path"] or "not found"))
    t.add_row("git", str(info["git_sha"]))
    con.print(t)
    return 0


# ---------------------------------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace) -> int:
    from harness.records import load_records
    from harness.report import load_profile_for, write_report

    missing = [p for p in args.results if not Path(p).exists()]
    if missing:
        raise CliError(f"no such results file or folder: {', '.join(missing)}")
    try:
        records = load_records(args.results)
    except (ValueError, KeyError, OSError) as e:
        raise CliError(f"cannot read records from {' '.join(args.results)}: {e}") from None
    records = [r for r in records if isinstance(r, dict) and r.get("family") and r.get("variant")]
    if not records:
        raise CliError(f"no records in {' '.join(args.results)} (expected records.jsonl or <family>.json)")
    try:
        profile = load_profile_for(args.results, args.profile, records)
    except (OSError, ValueError, KeyError) as e:
        raise CliError(f"cannot read profile: {e}") from None
    try:
        path = write_report(records, profile, args.out, figures=not args.no_figures)
    except OSError as e:
        raise CliError(f"cannot write the report to {args.out}: {e.strerror or e}") from None
    console().print(f"report: {path} ({len(records)} records)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import compare_main

    for p in (args.old, args.new):
        if not Path(p).exists():
            raise CliError(f"no such results file or folder: {p}")
    return compare_main(Path(args.old), Path(args.new), args.fail_slower)


def cmd_gpu_run(args: argparse.Namespace) -> int:
    from harness.gpurun import main as gpu_run

    return gpu_run(args)


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m harness", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", metavar="{check,compile,info,report,compare,inspect}")
    sub.required = True
    c = sub.add_parser("check", help="correctness of every selected variant (no timing)")
    c.add_argument("--kernel", default="all", help="family or 'all' (default all)")
    c.add_argument("--dtype", help="comma-separated dtypes")
    c.add_argument("--variants", help="comma-separated variant names")
    c.add_argument("--shape", action="append", help="shape, e.g. 7x33 or M=7,N=33 (repeatable)")
    c.add_argument("--shape-order", metavar="NAME", help="positional --shape in another order the family names, "
                                                         "e.g. 'course' (sgemm MxKxN, conv1d BxLxDxK)")
    c.add_argument("--quick", action="store_true", help="the families' small shapes (default on the CPU)")
    c.add_argument("--default-shapes", action="store_true", help="the default (GPU) shape set even on the CPU")
    c.add_argument("--seeds", help="comma-separated seeds to replay (default: 3 drawn fresh per run, printed)")
    c.add_argument("--no-compile", action="store_true", help="without a GPU, do not nvcc the CUDA variants")
    c.set_defaults(func=cmd_check)
    c = sub.add_parser("compile", help="nvcc every registered .cu for the target archs; ptxas resource table")
    c.add_argument("--kernel", default="all", help="family or 'all' (default all)")
    c.add_argument("--arch", help="comma-separated archs (default: the GPU's, else sm_80,sm_90)")
    c.set_defaults(func=cmd_compile)
    c = sub.add_parser("info", help="device, NVML, versions, nvcc, CUDA loader")
    c.add_argument("--json", action="store_true", help="machine-readable")
    c.set_defaults(func=cmd_info)
    c = sub.add_parser("report", help="report.md + figures from stored records")
    c.add_argument("results", nargs="+", help="output folders (records.jsonl) or record JSON files")
    c.add_argument("-o", "--out", required=True, help="report folder to write")
    c.add_argument("--profile", help="roofline profile JSON (default: profile.json next to the records)")
    c.add_argument("--no-figures", action="store_true", help="tables only")
    c.set_defaults(func=cmd_report)
    c = sub.add_parser("compare", help="OLD NEW (as diff and git): noise-aware change per record, geomean per "
                                       "family; exit 1 on a regression")
    c.add_argument("old", help="old results (folder or records file)")
    c.add_argument("new", help="new results (folder or records file)")
    c.add_argument("--fail-slower", type=float, metavar="PCT",
                   help="regression: more than PCT%% slower with separated 95%% intervals, GPU timings only")
    c.set_defaults(func=cmd_compare)
    from harness.xray import add_parser as add_inspect_parser  # python -m harness inspect (kernel X-ray)

    add_inspect_parser(sub)
    c = sub.add_parser("gpu-run", help="the one prepared GPU run: steps by priority under a deadline (--plan)")
    from harness.gpurun import add_args as gpu_run_args

    gpu_run_args(c)
    c.set_defaults(func=cmd_gpu_run)
    args = ap.parse_args(argv)
    if args.cmd == "check" and not args.shape and not args.default_shapes and not torch.cuda.is_available():
        args.quick = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return args.func(args)


def cli() -> None:
    try:
        sys.exit(main())
    except CliError as e:
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(f"error: {e}", style="red")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
