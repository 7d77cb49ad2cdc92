#!/usr/bin/env python3
"""The workbench's main entry point: is my kernel right, how fast is it, how far from the roof, vs the library.

    python bench/run.py --kernel attention            # every variant vs every SDPA backend, tables, JSON/CSV, figures
    python bench/run.py --kernel all --quick          # every family at its small shapes
    python bench/run.py --kernel softmax --shape 4096x8192 --dtype bf16 --variants triton_fused,torch_softmax

On a machine without a GPU it does what is meaningful there: Triton variants run under TRITON_INTERPRET=1 and are
checked, torch baselines run on the CPU, .cu variants are compiled (status ``compiled``, with their ptxas report),
and the timings are labelled CPU timings. The exit status is 1 when any selected variant did not end ok, compiled
or skipped (records are still written; one line on stderr says what failed), 2 for bad input.

An output folder that already holds something is never overwritten: ``--resume DIR`` continues it (with the options
and seeds in its manifest.json; other options are refused), ``--force`` moves it aside to ``DIR.old-<time>``.
Correctness seeds are drawn fresh per run and written into the manifest and every record; ``--seeds`` replays some.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402  (before triton: decides the interpreter)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from harness import provenance, registry  # noqa: E402
from harness.records import (  # noqa: E402
    MANIFEST,
    TABLE_COLS,
    OutputDirError,
    ResultWriter,
    failure_summary,
    fresh_seeds,
    manifest_diff,
    prepare_outdir,
    read_manifest,
    record_key,
    table_row,
    write_manifest,
)
from harness.runner import RunOptions, Task, isolate_default, plan  # noqa: E402

console = Console(stderr=False, highlight=False)
errconsole = Console(stderr=True, highlight=False)


class CliError(Exception):
    """A one-line, user-facing error: printed without a traceback, exit status 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="softmax",
                    help="family: softmax, matmul, attention, quant_gemm, knn, or all (default softmax)")
    ap.add_argument("--dtype", help="comma-separated dtypes (default: every dtype the family supports)")
    ap.add_argument("--shape", action="append", help="shape, e.g. 4096x1024 or M=4096,N=1024 (repeatable)")
    ap.add_argument("--variants", help="comma-separated variant names (default: all)")
    ap.add_argument("--quick", action="store_true", help="the family's small shape set")
    ap.add_argument("--headline", action="store_true",
                    help="the shapes and dtypes that the family's benchmark targets name")
    ap.add_argument("--check-only", action="store_true", help="correctness only: no timing, no roofline profile")
    ap.add_argument("--out", help="output folder (default runs/<device>-<time>/, git-ignored); must be empty or new")
    ap.add_argument("--resume", metavar="DIR", help="continue an interrupted output folder, skipping finished records "
                                                    "(same options and seeds as its manifest.json)")
    ap.add_argument("--force", action="store_true",
                    help="--out into a folder that holds something: move it aside to DIR.old-<time> first")
    ap.add_argument("--seeds", help="comma-separated correctness seeds to replay (default: 3 drawn fresh per run, "
                                    "written into manifest.json and every record)")
    ap.add_argument("--strict", action="store_true",
                    help="fresh inputs per timed call from a pool, and every timed output checked")
    ap.add_argument("--max-time", type=float,
                    help="timing cap per record in seconds (default 1 on a GPU, 0.1 for CPU timings)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-record worker timeout in seconds")
    ap.add_argument("--ab-rounds", type=int, help="interleaved rounds vs the baseline (default 30 on a GPU)")
    ap.add_argument("--gpm", action="store_true", help="NVML GPM DRAM bandwidth per record (Hopper+)")
    ap.add_argument("--no-isolate", action="store_true", help="run in this process (debugging; a crash ends the run)")
    ap.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    ap.add_argument("--no-cpu-timing", action="store_true", help="on the CPU, check only")
    ap.add_argument("--compare", metavar="OLD_OUTPUT",
                    help="after the run, speed-up or regression per record against an earlier output folder")
    ap.add_argument("--fail-slower", type=float, metavar="PCT",
                    help="with --compare: exit non-zero when any record is more than PCT%% slower")
    ap.add_argument("--report", metavar="DIR", help="write a self-contained markdown report (tables, figures, napkin "
                                                    "math) into DIR")
    ap.add_argument("--sanitize", action="store_true",
                    help="run each CUDA/Triton variant once at a small shape under compute-sanitizer (GPU only)")
    from harness.byo import add_cli_args as byo_cli_args
    from harness.executors import add_cli_args

    byo_cli_args(ap)  # --cu, --triton, --entry, --block, --numbers, --list
    add_cli_args(ap)
    return ap.parse_args(argv)


def resolve_families(kernel: str) -> list[str]:
    try:
        return registry.resolve_group(kernel)
    except registry.RegistryError as e:
        raise CliError(str(e)) from None


def device_line(info: dict) -> str:
    if not torch.cuda.is_available():
        return ("No GPU here: Triton variants run under TRITON_INTERPRET=1, torch baselines on the CPU, .cu variants "
                "are compiled only. Timings are CPU timings, not GPU figures.")
    return (f"GPU: {info.get('name')} · {info.get('sm_count')} SMs · L2 {info.get('l2_bytes', 0) / 2**20:.0f} MiB · "
            f"SM clock {info.get('cur_sm_clock_mhz')}/{info.get('max_sm_clock_mhz')} MHz · "
            f"driver {info.get('driver')}")


def get_device_info() -> dict:
    try:
        from harness.device import device_info

        return device_info()
    except Exception as e:  # roofline/NVML layer missing or broken: say so, keep running
        info = {"available": False, "note": f"device info unavailable ({type(e).__name__}: {e})"}
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info.update(name=p.name, sm_count=p.multi_processor_count)
        else:
            info["name"] = "cpu"
        return info


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def load_profile(info: dict, outdir: Path):
    """Roof ceilings for % of roofline: measured once per GPU and cached; None on the CPU."""
    if not torch.cuda.is_available():
        return None
    try:
        from roofline.ceilings import get_profile

        return get_profile(measure=True)
    except Exception as e:
        console.print(f"[yellow]roofline profile unavailable: {type(e).__name__}: {e}[/]")
        return None


def annotate(rec: dict, profile) -> None:
    if profile is None or rec.get("status") != "ok":
        return
    try:
        from roofline.model import annotate as roof

        rec["roofline"] = roof(rec, profile)
        if rec["roofline"].get("suspect"):
            rec["suspect"] = True
            rec.setdefault("suspect_reasons", []).append(rec["roofline"].get("suspect_reason") or "above roofline")
    except Exception as e:
        rec["roofline"] = {"note": f"{type(e).__name__}: {e}"}


def fill_median_speedups(records: list[dict]) -> list[dict]:
    """Where no paired A/B ran (CPU), speed-up = baseline median / variant median, labelled as such. Never for an
    interpreted Triton variant against compiled ATen code, and never with a suspect record on either side."""
    changed = []
    base = {(r["family"], r["dtype"], r["shape"]): r for r in records
            if r.get("baseline") and r.get("status") == "ok"}
    for r in records:
        if r.get("status") != "ok" or r.get("baseline") or r.get("speedup_vs_baseline") is not None:
            continue
        b = base.get((r["family"], r["dtype"], r["shape"]))
        if r.get("timing") == "cpu" and r.get("backend") != (b or {}).get("backend"):
            continue  # the Triton interpreter (or a Python loop) against ATen measures nothing about the kernel
        if b and b.get("median_ms") and r.get("median_ms") and not (r.get("suspect") or b.get("suspect")):
            r.update(speedup_vs_baseline=b["median_ms"] / r["median_ms"], baseline_name=b["variant"],
                     speedup_method="median-ratio", speedup_text=f"{b['median_ms'] / r['median_ms']:.2f}x")
            changed.append(r)
    return changed


def print_tables(records: list[dict]) -> None:
    fams = sorted({r["family"] for r in records})
    for fam in fams:
        recs = [r for r in records if r["family"] == fam]
        t = Table(title=f"{fam}", title_justify="left", show_lines=False, header_style="bold")
        for _, h in TABLE_COLS:
            t.add_column(h, overflow="fold")
        for r in recs:
            style = {"incorrect": "red", "runtime_error": "red", "timeout": "red", "compile_error": "red",
                     "skipped": "dim", "compiled": "cyan"}.get(r["status"], None)
            t.add_row(*table_row(r), style=style)
        console.print(t)
        for r in recs:
            if r["status"] in ("incorrect", "runtime_error", "timeout", "compile_error"):
                console.print(f"  [red]{r['variant']} {r['dtype']} {r['shape']}[/]: {r.get('message', '')}")


def check_fits(tasks: list[Task]) -> None:
    """A shape whose inputs and outputs alone exceed the memory they would live in is a one-line error."""
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        where = "free GPU memory"
    else:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        where = "available RAM"
    for t in tasks:
        p = registry.REGISTRY[t.family]
        need = p.min_bytes(p.parse_shape(t.shape), t.dtype)
        if need > free:
            raise CliError(f"{t.family} shape {t.shape} ({t.dtype}) needs at least {need / 2**30:.1f} GiB for its "
                           f"inputs and outputs; {where} is {free / 2**30:.1f} GiB")


def prebuild_cuda(tasks: list[Task]) -> None:
    """nvcc every .cu the run needs, in parallel, before the workers start (they then load cached cubins)."""
    from harness.cuda import prebuild

    sources = []
    for t in tasks:
        v = registry.REGISTRY[t.family].variants[t.variant]
        if v.backend == "cuda" and v.source is not None and hasattr(v.source, "compile"):
            sources.append(v.source)
    if sources:
        prebuild(sources)


def split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def run_sanitize(families: list[str], variants: list[str] | None, args: argparse.Namespace) -> int:
    import json

    from harness import sanitize

    reason = sanitize.unavailable_reason()
    if reason:
        raise CliError(reason)
    jobs = sanitize.plan_sanitize(families, variants)
    outdir = Path(args.out) if args.out else ROOT / "runs" / f"sanitize-{time.strftime('%Y%m%d-%H%M%S')}"
    outdir.mkdir(parents=True, exist_ok=True)
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as prog:
        bar = prog.add_task("sanitize", total=len(jobs) * len(sanitize.TOOLS))
        for job in jobs:
            for tool in sanitize.TOOLS:
                prog.update(bar, description=f"{tool} {job[0]}/{job[1]}")
                results.append(sanitize.sanitize_task(*job, tool=tool, timeout_s=args.timeout))
                (outdir / "sanitize.json").write_text(json.dumps(results, indent=1))
                prog.advance(bar)
    t = Table(title="compute-sanitizer", title_justify="left")
    for h in ("family", "variant", "dtype", "shape", "tool", "status", "errors", "first finding"):
        t.add_column(h, overflow="fold")
    for r in results:
        t.add_row(r["family"], r["variant"], r["dtype"], r["shape"], r["tool"], r["status"], str(r["errors"]),
                  (r["first"] or [""])[0][:100], style=None if r["status"] == "clean" else "red")
    console.print(t)
    console.print(f"results: {outdir / 'sanitize.json'}")
    return 0 if all(r["status"] == "clean" for r in results) else 1


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        seeds = tuple(int(s) for s in split(text))
    except ValueError:
        raise CliError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds:
        raise CliError("--seeds needs at least one seed")
    return seeds


def manifest_options(args: argparse.Namespace, families: list[str], max_time: float) -> dict:
    """The options that decide which records a run makes and what they hold: a resume must match them.
    (--timeout, --executor, --workers, figures and reports do not change a finished record.)"""
    return {"kernel": args.kernel, "families": families, "dtype": args.dtype, "shape": args.shape,
            "variants": args.variants, "quick": bool(args.quick), "headline": bool(args.headline),
            "check_only": bool(args.check_only), "strict": bool(args.strict), "max_time": max_time,
            "ab_rounds": args.ab_rounds, "gpm": bool(args.gpm), "no_cpu_timing": bool(args.no_cpu_timing),
            # your own file (harness.byo): which file and launch make the variants; absent options stay out, so a
            # manifest written before they existed still matches
            **{k: getattr(args, k) for k in ("cu", "triton", "entry", "block", "numbers")
               if getattr(args, k, None) is not None}}


def open_outdir(args: argparse.Namespace, info: dict, options: dict, seeds: tuple[int, ...] | None):
    """-> (outdir, seeds, manifest). New folder: refused when it holds anything (unless --force moves it aside).
    --resume: the manifest's seeds unless --seeds names the same; any other differing option is refused."""
    from harness import provenance

    if args.resume and args.force:
        raise CliError("--resume continues a folder, --force moves it aside: choose one")
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise CliError("--resume DIR is the output folder: drop --out (or make it the same folder)")
    device = {"name": info.get("name") or "cpu", "sm_count": info.get("sm_count"), "cc": info.get("cc")}
    if args.resume:
        outdir, _ = prepare_outdir(args.resume, resume=True)
        old = read_manifest(outdir)
        if old is None:
            console.print(f"[yellow]{outdir} has no {MANIFEST} (an older run): its options cannot be checked; "
                          "writing one now[/]")
            seeds = seeds or fresh_seeds()
            manifest = {"format": 1, "created": provenance.now(), "options": options, "seeds": list(seeds),
                        "git_sha": provenance.git_sha(), "device": device, "families": options["families"],
                        "argv": sys.argv[1:], "resumes": []}
        else:
            manifest = old
            old_seeds = tuple(old.get("seeds") or ())
            diff = manifest_diff(old["options"], options)
            if seeds is not None and seeds != old_seeds:
                diff.append(f"seeds ({','.join(map(str, old_seeds))} -> {','.join(map(str, seeds))})")
            if (old.get("device") or {}).get("name") != device["name"]:
                diff.append(f"device ({(old.get('device') or {}).get('name')} -> {device['name']})")
            if diff:
                raise CliError(f"--resume {outdir}: options differ from the run being resumed: {'; '.join(diff)}. "
                               f"Resume with the same options, or start a new --out folder")
            seeds = old_seeds
            if old.get("git_sha") != provenance.git_sha():
                console.print(f"[yellow]note: resuming at commit {provenance.git_sha()}; the run started at "
                              f"{old.get('git_sha')} (each record carries its own git_sha)[/]")
            manifest.setdefault("resumes", []).append({"at": provenance.now(), "git_sha": provenance.git_sha(),
                                                       "argv": sys.argv[1:]})
    else:
        outdir = Path(args.out) if args.out else ROOT / "runs" / \
            f"{slug(info.get('name') or 'cpu')}-{time.strftime('%Y%m%d-%H%M%S')}"
        outdir, moved = prepare_outdir(outdir, force=args.force)
        if moved is not None:
            console.print(f"--force: the folder's previous contents are now in {moved}")
        seeds = seeds or fresh_seeds()
        manifest = {"format": 1, "created": provenance.now(), "options": options, "seeds": list(seeds),
                    "git_sha": provenance.git_sha(), "device": device, "families": options["families"],
                    "argv": sys.argv[1:], "resumes": []}
    try:
        write_manifest(outdir, manifest)
    except OSError as e:
        raise CliError(f"cannot write {outdir / MANIFEST}: {e.strerror or e}") from None
    return outdir, tuple(seeds), manifest


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise CliError(f"--timeout takes a positive number of seconds, got {args.timeout:g}")
    if args.max_time is not None and not (math.isfinite(args.max_time) and args.max_time >= 0):
        raise CliError(f"--max-time takes a non-negative number of seconds, got {args.max_time:g}")
    families = resolve_families(args.kernel)
    from harness.families import LOAD_ERRORS

    for fam, err in LOAD_ERRORS.items():
        console.print(f"[red]family {fam} failed to import[/] (its records are missing):\n{err}")
    from harness import byo

    if args.list:
        try:
            console.print(byo.list_text(args.list), markup=False)
        except registry.RegistryError as e:
            raise CliError(str(e)) from None
        return 0
    try:  # --cu / --triton: the student's file as variants, run next to the family baseline
        byo_variants = byo.cli_variants(args, families)
    except byo.ByoError as e:
        raise CliError(str(e)) from None
    seeds = parse_seeds(args.seeds)
    dtypes = split(args.dtype) if args.dtype else None
    if dtypes:
        unknown = [d for d in dtypes if d not in registry.DTYPES]
        if unknown:
            raise CliError(f"unknown dtype(s) {unknown}; choose from {', '.join(registry.DTYPES)}")
    variants = split(args.variants) if args.variants else byo_variants
    if variants:
        known = {n for f in families for n in registry.REGISTRY[f].variants}
        unknown = [v for v in variants if v not in known]
        if unknown:
            raise CliError(f"unknown variant(s) {unknown}; {args.kernel} has: {', '.join(sorted(known))}")
    if not torch.cuda.is_available() and not (args.shape or args.quick or args.headline):
        args.quick = True  # the default shapes are GPU-sized: hours under the interpreter
        console.print("No GPU: using the quick shapes (the default set is GPU-sized); --shape overrides.")
    try:
        tasks = plan(families, variants=variants, dtypes=dtypes, shapes=args.shape, quick=args.quick,
                     headline=args.headline)
    except registry.RegistryError as e:
        raise CliError(str(e)) from None
    if dtypes and not tasks:
        raise CliError(f"no {args.kernel} variant supports dtype(s) {dtypes}")
    if args.shape:
        check_fits(tasks)
    if any(registry.REGISTRY[t.family].variants[t.variant].backend == "cuda" for t in tasks):
        from harness.cuda import nvcc_path

        if nvcc_path() is None:
            console.print("note: nvcc not found (install the CUDA toolkit or put nvcc on PATH): CUDA variants will "
                          "report compile_error")

    if args.compare and not Path(args.compare).exists():
        raise CliError(f"--compare {args.compare}: no such output folder or file")
    if args.fail_slower is not None and not args.compare:
        raise CliError("--fail-slower needs --compare OLD_OUTPUT")
    if args.sanitize:
        return run_sanitize(families, variants, args)
    info = get_device_info()
    console.print(device_line(info))
    on_gpu = torch.cuda.is_available()
    max_time = args.max_time if args.max_time is not None else (1.0 if on_gpu else 0.1)
    outdir, seeds, _ = open_outdir(args, info, manifest_options(args, families, max_time), seeds)
    writer = ResultWriter(outdir, resume=True)  # new folders are empty here; resumed ones keep their records
    todo = [t for t in tasks if not writer.done(t.key)]
    if args.resume:
        console.print(f"resuming {outdir}: {len(tasks) - len(todo)} records done, {len(todo)} to go")
    console.print(f"seeds: {','.join(map(str, seeds))} (replay with --seeds {','.join(map(str, seeds))})")
    profile = None if args.check_only else load_profile(info, outdir)
    if profile is not None:
        try:
            import json

            (outdir / "profile.json").write_text(json.dumps(profile if isinstance(profile, dict)
                                                            else profile.to_dict(), indent=1, default=str))
        except Exception:
            pass
    prebuild_cuda(todo)
    opts = RunOptions(seeds=seeds, strict=args.strict, max_time_s=max_time, timeout_s=args.timeout,
                      warmup_s=0.1 if on_gpu else 0.0,
                      ab_rounds=args.ab_rounds, gpm=args.gpm, isolate=isolate_default() and not args.no_isolate,
                      time_on_cpu=not args.no_cpu_timing, timing=not args.check_only)
    stamp = {"device": info, "git_sha": provenance.git_sha(), "versions": provenance.versions()}

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as prog:
        bar = prog.add_task("starting", total=len(todo))

        def on_start(t: Task) -> None:
            prog.update(bar, description=t.label()[:70])

        def on_record(rec: dict) -> None:
            # records from another node (Slurm) carry their own device and versions: keep those
            rec.update({k: v for k, v in stamp.items() if k not in rec}, timestamp=provenance.now())
            annotate(rec, profile)
            writer.add(rec)
            prog.advance(bar)

        from harness import executors

        executors.run_tasks(todo, opts, on_record, executor=args.executor, workers=args.workers,
                            slurm=executors.slurm_options(args), folder=outdir, on_start=on_start)
        prog.update(bar, description="done")

    selected = {t.key for t in tasks}
    records = [r for r in writer.records.values() if record_key(r) in selected]
    writer.update_many(fill_median_speedups(records))  # one atomic rewrite: still one line per record
    print_tables(records)
    if not args.no_figures:
        try:
            from roofline.plot import draw_all

            paths = draw_all(records, profile, outdir / "figures")
            if paths:
                console.print(f"figures: {outdir / 'figures'} ({len(paths)} files)")
        except Exception as e:
            console.print(f"[yellow]figures skipped: {type(e).__name__}: {e}[/]")
    if args.report:
        from harness.report import write_report

        path = write_report(records, profile, Path(args.report))
        console.print(f"report: {path}")
    rc_cmp = 0
    if args.compare:
        from harness.compare import compare_main

        rc_cmp = compare_main(records, Path(args.compare), args.fail_slower, console=console)
    missing = [t.label() for t in tasks if not writer.done(t.key)]
    if missing:
        console.print(f"[red]{len(missing)} task(s) ended with no record (a worker or job died): rerun with --resume "
                      f"{outdir}[/]")
    counts = {s: sum(r["status"] == s for r in records) for s in sorted({str(r["status"]) for r in records})}
    console.print(f"results: {outdir}  ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    if not torch.cuda.is_available():
        console.print("Note: no GPU — these are CPU/interpreter timings, not GPU figures.")
    failed = failure_summary(records, missing)
    if failed:
        errconsole.print(failed, style="red", soft_wrap=True)
    return 1 if (failed or rc_cmp) else 0


def cli() -> None:
    try:
        sys.exit(main())
    except (CliError, OutputDirError) as e:
        errconsole.print(f"error: {e}", style="red", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: finished records are in the output folder; continue with --resume DIR")
        sys.exit(130)


if __name__ == "__main__":
    cli()
