#!/usr/bin/env python3
"""The workbench's main entry point: is my kernel right, how fast is it, how far from the roof, vs the library.

    python bench/run.py --kernel attention            # every variant vs every SDPA backend, tables, JSON/CSV, figures
    python bench/run.py --kernel all --quick          # every family at its small shapes
    python bench/run.py --kernel softmax --shape 4096x8192 --dtype bf16 --variants triton_fused,torch_softmax

On a machine without a GPU it does what is meaningful there: Triton variants run under TRITON_INTERPRET=1 and are
checked, torch baselines run on the CPU, .cu variants run on the CPU under the CUDA interpreter (harness.interp:
checked with memcheck, racecheck and synccheck, never timed; ``--no-interpret`` only compiles them, status
``compiled``), and the timings are labelled CPU timings. The exit status is 1 when any selected variant did not end
ok, compiled or skipped (records are still written; one line on stderr says what failed), 2 for bad input.

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

# torch, triton and the registry are imported in main(), after the arguments are parsed: `--help`, `--list` of a bad
# option and argument errors answer without the ~1.5 s torch import.
from rich.console import Console  # noqa: E402

from harness.cli import CliError, annotate, get_device_info, resolve_families, split  # noqa: E402
from harness.records import (  # noqa: E402
    MANIFEST,
    OutputDirError,
    ResultWriter,
    failure_summary,
    fresh_seeds,
    manifest_diff,
    prepare_outdir,
    read_manifest,
    record_key,
    write_manifest,
)

# notes wrap at word boundaries to the terminal's width (80 columns when piped); tables and the legend are laid out
# to that width by themselves and printed with soft_wrap=True (a token longer than the width, a long path, folds)
console = Console(stderr=False, highlight=False)
errconsole = Console(stderr=True, highlight=False, soft_wrap=True)


def _torch():
    """torch, imported on first use; without a GPU, TRITON_INTERPRET=1 is set before triton is imported."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="softmax",
                    help="family: softmax, matmul, attention, quant_gemm, knn, saxpy, sgemm, conv1d, or all "
                         "(default softmax; --list shows each)")
    ap.add_argument("--dtype", help="comma-separated dtypes: fp32, fp16, bf16, fp64, fp8, int8 or torch's names "
                                    "(float16, bfloat16, float32, ...); default every dtype the family supports")
    ap.add_argument("--shape", action="append", help="shape, e.g. 4096x1024 or M=4096,N=1024 (repeatable); "
                                                     "positional numbers follow the family's order (--list)")
    ap.add_argument("--shape-order", metavar="NAME",
                    help="read positional --shape numbers in another order the family names, e.g. 'course' "
                         "(sgemm MxKxN, conv1d BxLxDxK as the course's launchers take them); --list shows them")
    ap.add_argument("--variants", help="comma-separated variant names, exactly (default: all)")
    ap.add_argument("--only", metavar="PATTERNS",
                    help="comma-separated globs over variant names, backends (triton, cuda, torch) or family/variant; "
                         "e.g. --only 'triton*,cuda_v8*'. The library baseline stays unless --skip names it")
    ap.add_argument("--skip", metavar="PATTERNS", help="the same patterns, removed from the selection")
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
    ap.add_argument("--ab-rounds", type=int, help="paired rounds vs the baseline, each in its own fresh worker "
                                                  "(default 30 on a GPU, 10 on the CPU; 0: none)")
    ap.add_argument("--gpm", action="store_true", help="NVML GPM DRAM bandwidth per record (Hopper+)")
    ap.add_argument("--graph", action="store_true",
                    help="also time 20 calls captured in one CUDA graph (per-call time in each record's `graph`): "
                         "for launch-bound, µs-scale kernels (GPU)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--interpret", dest="interpret", action="store_const", const=True,
                      help="run CUDA variants on the CPU interpreter (memcheck, racecheck, synccheck; not timed); = "
                           "WB_CUDA_INTERPRET=1. The default on a machine without a GPU (hide one with "
                           "CUDA_VISIBLE_DEVICES=)")
    mode.add_argument("--no-interpret", dest="interpret", action="store_const", const=False,
                      help="never interpret CUDA variants: without a GPU they are compiled only (status compiled); "
                           "= WB_CUDA_INTERPRET=0")
    ap.add_argument("--no-isolate", action="store_true", help="run in this process (debugging; a crash ends the run)")
    ap.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    ap.add_argument("--no-cpu-timing", action="store_true", help="on the CPU, check only")
    ap.add_argument("--no-xray", action="store_true",
                    help="no X-ray block (registers, spills, occupancy, predicted floor) in the records; = WB_XRAY=0")
    out = ap.add_argument_group("output")
    out.add_argument("--columns", metavar="LIST",
                     help="table columns, e.g. variant,status,time,perf or +err,-occ to change the default set; "
                          "choose from " + ", ".join(_column_names()))
    out.add_argument("--format", choices=("table", "csv", "json", "md"), default="table",
                     help="csv/json/md: the selected records to stdout at the end (progress goes to stderr)")
    out.add_argument("--quiet", "-q", action="store_true",
                     help="no progress, tables or notes (errors still go to stderr); with --format for pipes")
    ap.add_argument("--compare", metavar="OLD_OUTPUT",
                    help="after the run, speed-up or regression per record against an earlier output folder")
    ap.add_argument("--fail-slower", type=float, metavar="PCT",
                    help="with --compare: exit non-zero when a record is more than PCT%% slower with separated "
                         "95%% intervals (GPU timings only)")
    ap.add_argument("--report", metavar="DIR", help="write a self-contained markdown report (tables, figures, napkin "
                                                    "math) into DIR")
    ap.add_argument("--sanitize", action="store_true",
                    help="run each CUDA/Triton variant once at a small shape under compute-sanitizer (GPU only)")
    from harness.byo import add_cli_args as byo_cli_args
    from harness.executors import add_cli_args

    byo_cli_args(ap)  # --cu, --triton, --entry, --block, --numbers, --list
    add_cli_args(ap)
    return ap.parse_args(argv)


def _column_names() -> list[str]:
    from harness.records import COLUMNS

    return list(COLUMNS)


# torch's spellings (and a few common ones) of the registry's dtype names
DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "f32": "fp32", "float16": "fp16", "half": "fp16", "f16": "fp16",
                 "bfloat16": "bf16", "float64": "fp64", "double": "fp64", "f64": "fp64", "float8_e4m3fn": "fp8",
                 "float8": "fp8", "e4m3": "fp8", "int8": "int8", "i8": "int8"}


def normalize_dtypes(text: str | None) -> list[str] | None:
    """--dtype: registry names or torch's ("bfloat16", "torch.float16"), case-insensitive; unknown ones are an error
    naming the valid choices."""
    if not text:
        return None
    from harness.registry import DTYPES

    out, unknown = [], []
    for d in split(text):
        key = d.lower().removeprefix("torch.")
        name = key if key in DTYPES else DTYPE_ALIASES.get(key)
        if name is None:
            unknown.append(d)
        elif name not in out:
            out.append(name)
    if unknown:
        raise CliError(f"unknown dtype(s) {unknown}; choose from {', '.join(DTYPES)} (or torch's float32, float16, "
                       "bfloat16, float64, float8_e4m3fn, int8)")
    return out


def _matches(pattern: str, family: str, variant) -> bool:
    from fnmatch import fnmatchcase

    return (fnmatchcase(variant.name, pattern) or pattern == variant.backend or pattern == family
            or fnmatchcase(f"{family}/{variant.name}", pattern))


def select(tasks: list, only: str | None, skip: str | None) -> list:
    """--only / --skip over planned tasks; a pattern that matches no variant is an error naming the variants."""
    from harness.registry import REGISTRY

    if not only and not skip:
        return tasks
    pats_only, pats_skip = split(only or ""), split(skip or "")
    variants = {(t.family, t.variant): REGISTRY[t.family].variants[t.variant] for t in tasks}
    for p in pats_only + pats_skip:
        if not any(_matches(p, f, v) for (f, _), v in variants.items()):
            names = sorted({n for _, n in variants})
            raise CliError(f"--only/--skip pattern {p!r} matches no variant; the selection has: {', '.join(names)}")

    def keep(t) -> bool:
        v = variants[(t.family, t.variant)]
        if any(_matches(p, t.family, v) for p in pats_skip):
            return False
        return not pats_only or v.baseline or any(_matches(p, t.family, v) for p in pats_only)

    out = [t for t in tasks if keep(t)]
    if not out:
        raise CliError("--only/--skip leave nothing to run")
    return out


def not_applicable(tasks: list) -> tuple[list, dict]:
    """Split off the variant x dtype pairs that can never run (the dtype is not one the variant supports): they are
    listed once per variant at plan time, never records. Returns (runnable tasks, {(family, variant): dtypes})."""
    from harness.registry import REGISTRY

    keep, na = [], {}
    for t in tasks:
        v = REGISTRY[t.family].variants[t.variant]
        if t.dtype in v.dtypes:
            keep.append(t)
        else:
            na.setdefault((t.family, t.variant), [])
            if t.dtype not in na[(t.family, t.variant)]:
                na[(t.family, t.variant)].append(t.dtype)
    return keep, na


def na_lines(na: dict, width: int) -> list[str]:
    """One line per family and (supported, unsupported) pattern: 'matmul: fp32 only, not bf16/fp16: cuda_v1...'."""
    import textwrap

    from harness.registry import REGISTRY

    groups: dict[tuple, list[str]] = {}
    for (fam, var), dts in na.items():
        sup = REGISTRY[fam].variants[var].dtypes
        groups.setdefault((fam, tuple(sup), tuple(dts)), []).append(var)
    out = []
    for (fam, sup, dts), names in groups.items():
        text = f"{fam}: {'/'.join(sup)} only, never {'/'.join(dts)}: {', '.join(names)}"
        out += textwrap.wrap(text, width=max(40, width), initial_indent="  ", subsequent_indent="    ")
    return out


# printed after a run of your own files (--cu/--triton), and in the README's course section
COURSE_CONVENTIONS = (
    "Conventions: a course's own scripts print your kernel's time / cuBLAS's (\"2.0x slower\"); the ×lib column "
    "here is the inverse, library time / your time (0.5× = twice as slow; higher is faster). Bytes are decimal: "
    "1 GB = 10^9 B and GB/s = 10^9 B/s, where a course's GB is often 2^30 B (1 GiB = 1.074 GB).")


def list_text(which: str, width: int = 80) -> str:
    """--list: per family its description, shape syntax (with the other orders it takes) and an example, dtypes, each
    variant with its backend, dtypes and one-line description, then the calling convention for your own files
    (harness.byo); every line wrapped to ``width`` (80 when piped)."""
    from harness import byo, registry

    registry.all_problems()
    fams = list(registry.REGISTRY) if which == "all" else registry.resolve_group(which)
    out: list[str] = []
    for f in fams:
        p = registry.REGISTRY[f]
        ex = (p.shapes or p.quick or [None])[0]
        opts = "".join(f",{o}=…" for o in p.options)
        shape = f"shape {'x'.join(p.dims)}{opts}" + "".join(
            f"; {name} order {'x'.join(dims)} with --shape-order {name}" for name, dims in p.orders.items())
        out += wrap(f"{f}: {p.description}".rstrip(": "), width, "", "  ")
        out += wrap(shape + (f"; e.g. --shape {ex.key()}" if ex is not None else ""), width, "  ", "    ")
        out += wrap(f"dtypes {', '.join(p.dtypes)}; leads with {p.throughput_unit}", width, "  ", "    ")
        for n, v in p.variants.items():
            dts = "" if tuple(v.dtypes) == tuple(p.dtypes) else f" [{'/'.join(v.dtypes)}]"
            desc = (v.description or "").strip().splitlines()[0] if v.description else ""
            head = f"{n}  {v.backend}{' baseline' if v.baseline else ''}{dts}"
            out += wrap(head + (f" — {desc}" if desc else ""), width, "    ", "        ")
        d = byo.describe(f, width)
        if d:
            out.append(d)
    return "\n".join(out)


def wrap(text: str, width: int, indent: str = "", more: str = "  ") -> list[str]:
    """Word-wrapped lines of at most ``width`` columns (a single word longer than that stays whole)."""
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=more,
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


def shape_notes(families: list[str], shapes: list[str], order: str | None) -> list[str]:
    """How each positional --shape was read, by dim name, for a family that takes more than one order: a course's
    16x32x64 (M, K, N) is never silently read as M x N x K."""
    from harness import registry

    registry.all_problems()
    out = []
    for fam in families:
        p = registry.REGISTRY[fam]
        if not p.orders:
            continue
        for s in shapes:
            if "=" in s.split(",")[0]:
                continue  # named dims: no order involved
            got = p.parse_shape(s, order)
            dims = p.order(order)
            others = "; ".join(f"{name} order {'x'.join(d)}: --shape-order {name}"
                               for name, d in [("default", p.dims), *p.orders.items()] if d != dims)
            out += wrap(f"{fam}: --shape {s} read as {got.key()} ({'x'.join(dims)}; {others})", table_width(),
                        "", "  ")
    return out


def device_line(info: dict) -> str:
    from harness import interp

    cuda = ("run on the CPU by the CUDA interpreter (memcheck, racecheck, synccheck; not timed)" if interp.enabled()
            else "are compiled only (--no-interpret)")
    if not _torch().cuda.is_available():
        return (f"No GPU here: timings are CPU timings, not GPU figures; Triton variants run under TRITON_INTERPRET=1, "
                f"torch baselines on the CPU, .cu variants {cuda}.")
    return (f"GPU: {info.get('name')} · {info.get('sm_count')} SMs · L2 {info.get('l2_bytes', 0) / 2**20:.0f} MiB · "
            f"SM clock {info.get('cur_sm_clock_mhz')}/{info.get('max_sm_clock_mhz')} MHz · "
            f"driver {info.get('driver')}")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else platform): records of a CPU run say "cpu: <model>"."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def load_profile(info: dict, outdir: Path):
    """Roof ceilings for % of roofline: measured once per GPU and cached; None on the CPU."""
    if not _torch().cuda.is_available():
        return None
    try:
        from roofline.ceilings import get_profile

        return get_profile(measure=True)
    except Exception as e:
        console.print(f"[yellow]roofline profile unavailable: {type(e).__name__}: {e}[/]")
        return None


def fill_xray(records: list[dict], profile: str | None, arch: str | None = None) -> list[dict]:
    """Give every record an ``xray`` block (None when there is none: a library baseline, a variant that did not
    build or run, no usable compiler, or WB_XRAY=0), computed here in the parent after the timed run (compiling
    during it would load the CPU that the timings share). Triton and CUDA kernels are compiled for ``arch`` in one
    batch (``harness.xray.raw_xrays``, cached on disk); returns the records that changed."""
    todo = [r for r in records if "xray" not in r]
    if not todo:
        return []
    if os.environ.get("WB_XRAY", "1") == "0":
        for r in todo:
            r["xray"] = None
        return todo
    try:
        from harness import xray
    except Exception as e:  # noqa: BLE001  (the X-ray is extra information: never fails a run)
        console.print(f"[yellow]X-ray unavailable: {type(e).__name__}: {e}[/]")
        for r in todo:
            r["xray"] = None
        return todo
    want = [r for r in todo if r.get("backend") in ("triton", "cuda") and r.get("status") in ("ok", "compiled")]
    t0 = time.time()
    if want:
        try:
            xray.raw_xrays([{k: r[k] for k in ("family", "variant", "dtype", "shape")} for r in want], arch)
        except Exception as e:  # noqa: BLE001
            console.print(f"[yellow]X-ray batch failed ({type(e).__name__}: {e}); trying record by record[/]")
    wanted = {id(r) for r in want}
    for r in todo:
        r["xray"] = None
        if id(r) in wanted:
            try:
                r["xray"] = xray.xray_block(r["family"], r["variant"], r["dtype"], r["shape"], arch=arch,
                                            profile=profile)
            except Exception:  # noqa: BLE001
                r["xray"] = None
    if want:
        got = sum(r["xray"] is not None for r in want)
        console.print(f"X-ray: {got} of {len(want)} kernel records ({time.time() - t0:.0f} s, cached; "
                      "--no-xray or WB_XRAY=0 skips)")
    return todo


def table_width() -> int:
    """The terminal's width, or $COLUMNS, or 80 when piped: tables never wrap."""
    import shutil

    return max(40, shutil.get_terminal_size((80, 24)).columns)


def print_tables(records: list[dict], columns: list[str] | None = None, width: int | None = None) -> None:
    from harness.records import render_table, table_legend
    from harness.registry import REGISTRY

    width = width or table_width()
    order = [f for f in REGISTRY if any(r["family"] == f for r in records)]
    order += sorted({r["family"] for r in records} - set(order))
    all_dropped: list[str] = []
    for fam in order:
        recs = [r for r in records if r["family"] == fam]
        lines, dropped = render_table(recs, width=width, columns=columns)
        all_dropped += [d for d in dropped if d not in all_dropped]
        console.print(f"\n{fam}", style="bold", markup=False, highlight=False)
        for text, style in lines:
            console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)
        for line in table_legend(recs, columns, width=width):
            console.print(line, style="dim", markup=False, highlight=False, soft_wrap=True)
    if all_dropped:
        console.print(f"(not shown at {width} columns: {', '.join(all_dropped)}; --columns picks, a wider terminal "
                      "or COLUMNS=160 shows more)", style="dim", markup=False, highlight=False)


def emit(records: list[dict], fmt: str) -> None:
    """--format csv|json|md: the records to stdout (nothing else goes there)."""
    import csv
    import io
    import json

    from harness.records import csv_fields, flat, markdown_table

    if fmt == "json":
        sys.stdout.write(json.dumps(records, indent=1, default=str) + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=csv_fields(records), extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow(flat(r))
        sys.stdout.write(buf.getvalue())
    elif fmt == "md":
        for fam in dict.fromkeys(r["family"] for r in records):
            sys.stdout.write(f"## {fam}\n\n" + markdown_table([r for r in records if r["family"] == fam]) + "\n")
    sys.stdout.flush()


class FamilyTicker:
    """One line per finished family (and, when piped, a heartbeat line every 30 s): a log never goes silent."""

    def __init__(self, tasks: list, piped: bool, heartbeat_s: float = 30.0):
        self.left: dict[str, int] = {}
        for t in tasks:
            self.left[t.family] = self.left.get(t.family, 0) + 1
        self.counts: dict[str, dict[str, int]] = {f: {} for f in self.left}
        self.t0 = {f: None for f in self.left}
        self.piped, self.heartbeat_s = piped, heartbeat_s
        self.last = time.time()
        self.done = 0
        self.total = len(tasks)

    def start(self, family: str) -> None:
        if self.t0.get(family) is None:
            self.t0[family] = time.time()

    def record(self, rec: dict, out) -> None:
        fam = rec.get("family")
        self.done += 1
        if fam not in self.left:
            return
        self.start(fam)
        c = self.counts[fam]
        c[rec.get("status")] = c.get(rec.get("status"), 0) + 1
        self.left[fam] -= 1
        now = time.time()
        if self.left[fam] == 0:
            n = sum(c.values())
            parts = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
            out.print(f"{fam}: {n} record(s) in {now - self.t0[fam]:.0f} s ({parts}) [{self.done}/{self.total}]",
                      markup=False, highlight=False)
            self.last = now
        elif self.piped and now - self.last >= self.heartbeat_s:
            out.print(f"  ... {self.done}/{self.total} records; {fam}: {rec.get('variant')} {rec.get('dtype')} "
                      f"{rec.get('shape')} {rec.get('status')}", markup=False, highlight=False)
            self.last = now


def check_fits(tasks: list) -> None:
    """A shape whose inputs and outputs alone exceed the memory they would live in is a one-line error."""
    from harness import registry

    torch = _torch()
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


def prebuild_cuda(tasks: list) -> None:
    """nvcc every .cu the run needs, in parallel, before the workers start (they then load cached cubins); in
    interpret mode, the CPU interpreter's g++ builds too."""
    from harness import interp, registry
    from harness.cuda import prebuild

    sources = []
    for t in tasks:
        v = registry.REGISTRY[t.family].variants[t.variant]
        if v.backend == "cuda" and v.source is not None and hasattr(v.source, "compile"):
            sources.append(v.source)
    if not sources:
        return
    if interp.enabled() and not _torch().cuda.is_available():
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2) as ex:  # nvcc (the ptxas report) and g++ (the interpreter) side by side
            for f in [ex.submit(prebuild, sources), ex.submit(interp.prebuild, sources)]:
                f.result()
    else:
        prebuild(sources)


def run_sanitize(families: list[str], variants: list[str] | None, args: argparse.Namespace) -> int:
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

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
    dtype = ",".join(normalize_dtypes(args.dtype) or []) or None  # "bfloat16" and "bf16" are the same run
    return {"kernel": args.kernel, "families": families, "dtype": dtype, "shape": args.shape,
            "variants": args.variants, "quick": bool(args.quick), "headline": bool(args.headline),
            "check_only": bool(args.check_only), "strict": bool(args.strict), "max_time": max_time,
            "ab_rounds": args.ab_rounds, "gpm": bool(args.gpm), "no_cpu_timing": bool(args.no_cpu_timing),
            **({"graph": True} if args.graph else {}),  # absent when off: older manifests still match
            **({"interpret": args.interpret} if args.interpret is not None else {}),
            # your own file (harness.byo): which file and launch make the variants; absent options stay out, so a
            # manifest written before they existed still matches
            **{k: getattr(args, k) for k in ("cu", "triton", "entry", "block", "numbers")
               if getattr(args, k, None) is not None},
            # --only/--skip select records too; absent when unset, like the options above
            **{k: getattr(args, k) for k in ("only", "skip") if getattr(args, k, None)},
            **({"shape_order": args.shape_order} if getattr(args, "shape_order", None) else {})}


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


def _set_consoles(args: argparse.Namespace) -> None:
    """--format csv|json|md keeps stdout for the data (the human output goes to stderr); --quiet silences it."""
    global console
    if args.format != "table" or args.quiet:
        console = Console(stderr=True, highlight=False, soft_wrap=True, quiet=bool(args.quiet))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _set_consoles(args)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise CliError(f"--timeout takes a positive number of seconds, got {args.timeout:g}")
    if args.max_time is not None and not (math.isfinite(args.max_time) and args.max_time >= 0):
        raise CliError(f"--max-time takes a non-negative number of seconds, got {args.max_time:g}")
    from harness.records import parse_columns

    try:
        columns = parse_columns(args.columns)
    except ValueError as e:
        raise CliError(f"--columns: {e}") from None
    if args.no_xray:
        os.environ["WB_XRAY"] = "0"
    if args.interpret is not None:  # before any worker starts: they inherit it
        os.environ["WB_CUDA_INTERPRET"] = "1" if args.interpret else "0"
    torch = _torch()
    if args.interpret and torch.cuda.is_available():
        raise CliError("--interpret runs CUDA variants on the CPU, and this run would use the GPU for everything "
                       "else: hide the GPU (CUDA_VISIBLE_DEVICES= python bench/run.py ...) or use --sanitize "
                       "(compute-sanitizer on the GPU)")
    from harness import provenance, registry
    from harness.runner import RunOptions, Task, isolate_default, plan

    if args.list is not None:
        argv_ = sys.argv[1:] if argv is None else argv
        kernel_given = any(a == "--kernel" or a.startswith("--kernel=") for a in argv_)
        which = args.list or (args.kernel if kernel_given else "all")
        try:
            console.print(list_text(which, width=table_width()), markup=False, highlight=False, soft_wrap=True)
        except registry.RegistryError as e:
            raise CliError(str(e)) from None
        return 0
    families = resolve_families(args.kernel)
    from harness.registry import LOAD_ERRORS

    for fam, err in LOAD_ERRORS.items():
        console.print(f"[red]family {fam} failed to import[/] (its records are missing):\n{err}")
    from harness import byo

    try:  # --cu / --triton: the student's file as variants, run next to the family baseline
        byo_variants = byo.cli_variants(args, families)
    except byo.ByoError as e:
        raise CliError(str(e)) from None
    seeds = parse_seeds(args.seeds)
    dtypes = normalize_dtypes(args.dtype)
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
                     headline=args.headline, shape_order=args.shape_order)
    except registry.RegistryError as e:
        raise CliError(str(e)) from None
    tasks = select(tasks, args.only, args.skip)
    tasks, na = not_applicable(tasks)
    if not tasks:
        what = f"dtype(s) {', '.join(dtypes)}" if dtypes else "any planned dtype"
        sup = "; ".join(f"{v}: {'/'.join(registry.REGISTRY[f].variants[v].dtypes)}" for f, v in na)
        raise CliError(f"no selected {args.kernel} variant supports {what}" + (f" ({sup})" if sup else ""))
    if na:
        console.print(f"not applicable (the variant never supports the dtype; {sum(map(len, na.values()))} pair(s) "
                      "left out, not records):", style="dim", markup=False)
        for line in na_lines(na, table_width()):
            console.print(line, style="dim", markup=False, highlight=False)
    if args.shape:
        for line in shape_notes(families, args.shape, args.shape_order):
            console.print(line, markup=False, highlight=False)
        check_fits(tasks)
    if any(registry.REGISTRY[t.family].variants[t.variant].backend == "cuda" for t in tasks):
        from harness import interp
        from harness.cuda import nvcc_path

        if nvcc_path() is None and interp.enabled():
            console.print("note: nvcc not found: CUDA variants run on the CPU interpreter without a ptxas report")
        elif nvcc_path() is None:
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
    profile_file = None
    if profile is not None:
        try:
            import json

            (outdir / "profile.json").write_text(json.dumps(profile if isinstance(profile, dict)
                                                            else profile.to_dict(), indent=1, default=str))
            profile_file = str(outdir / "profile.json")
        except Exception:
            pass
    prebuild_cuda(todo)
    opts = RunOptions(seeds=seeds, strict=args.strict, max_time_s=max_time, timeout_s=args.timeout,
                      warmup_s=0.1 if on_gpu else 0.0,
                      ab_rounds=args.ab_rounds, gpm=args.gpm, graph=args.graph,
                      isolate=isolate_default() and not args.no_isolate,
                      time_on_cpu=not args.no_cpu_timing, timing=not args.check_only)
    # a CPU run's records name the CPU ("cpu: <model>"); the manifest keeps the device name it always had
    rec_device = info if on_gpu else {**info, "name": f"cpu: {cpu_model()}"}
    stamp = {"device": rec_device, "git_sha": provenance.git_sha(), "versions": provenance.versions()}
    ticker = FamilyTicker(todo, piped=not console.is_terminal)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False, disable=not console.is_terminal) as prog:
        bar = prog.add_task("starting", total=len(todo))

        def on_start(t: Task) -> None:
            ticker.start(t.family)
            prog.update(bar, description=t.label()[:70])

        def on_record(rec: dict) -> None:
            # records from another node (Slurm) carry their own device and versions: keep those
            rec.update({k: v for k, v in stamp.items() if k not in rec}, timestamp=provenance.now())
            annotate(rec, profile)
            writer.add(rec)
            prog.advance(bar)
            ticker.record(rec, prog.console)

        from harness import executors

        executors.run_tasks(todo, opts, on_record, executor=args.executor, workers=args.workers,
                            slurm=executors.slurm_options(args), folder=outdir, on_start=on_start)
        prog.update(bar, description="done")

    selected = {t.key for t in tasks}
    records = [r for r in writer.records.values() if record_key(r) in selected]
    changed = {id(r): r for r in fill_xray(records, profile_file)}
    writer.update_many(changed.values())  # one atomic rewrite: still one line per record
    records = [r for r in writer.records.values() if record_key(r) in selected]
    if args.format == "table":
        print_tables(records, columns)
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

        rc_cmp = compare_main(Path(args.compare), records, args.fail_slower, console=console)
    missing = [t.label() for t in tasks if not writer.done(t.key)]
    if missing:
        console.print(f"[red]{len(missing)} task(s) ended with no record (a worker or job died): rerun with --resume "
                      f"{outdir}[/]")
    counts = {s: sum(r["status"] == s for r in records) for s in sorted({str(r["status"]) for r in records})}
    console.print(f"results: {outdir}  ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    if not on_gpu:
        console.print("Note: no GPU — these are CPU/interpreter timings, not GPU figures"
                      + ("; CUDA variants were checked by the CPU interpreter, not timed." if any(
                          r.get("interpreted") for r in records) else "."))
    if byo_variants:
        console.print(COURSE_CONVENTIONS, markup=False, highlight=False)
    if args.format != "table":
        emit(records, args.format)
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
