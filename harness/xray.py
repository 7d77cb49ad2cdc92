"""Kernel X-ray without a GPU: registers, spills, shared memory, occupancy, SASS instruction mix, dot precision,
predicted floor and lints, from the compiler's output alone.

    python -m harness inspect --kernel matmul [--variants a,b] [--arch sm_90a] [--dtype bf16] [--shape 4096x4096x4096]
    python -m harness inspect --kernel all --json

How a variant becomes a cubin:

* **CUDA** (``backend="cuda"``): the variant's launcher runs once on *meta* tensors (shapes, no data) with
  ``harness.cuda.Kernel.__call__`` replaced by a recorder, so the X-ray sees exactly the kernels, grid, block and
  dynamic shared memory the harness would launch; each kernel's cubin is the one ``CudaSource`` builds (nvcc, cached
  under ``$WB_CACHE``) and ptxas' report gives registers, stack, spills and static shared memory. A host-mode launcher
  (its own ``.cu`` launch code, e.g. ``cuda_v9_wgmma``) is not run: its registered kernel names are read with the
  launch (block, dynamic shared memory) reported as unknown.
* **Triton**: the same launcher run, with the interpreter off, a stand-in driver that names the chosen target
  (``GPUTarget("cuda", 90, 32)`` for sm_90/sm_90a) and ``triton.compiler.compile`` replaced by a recorder: Triton's own
  binder builds the ``ASTSource`` (signature, constexprs, divisibility attributes: the same specialisation a real
  launch gets, so 16-byte vectorisation shows up as it would on the GPU), which is then compiled for the target on
  the CPU. Autotuned kernels take their first (pruned) config — what ``WB_TUNE=0`` runs. Capturing the ``ASTSource``
  rather than building one keeps this independent of the signature format, which changed between Triton 3.6 and 3.9.

All of that runs in a worker subprocess (``python -m harness.xray --worker``, ``TRITON_INTERPRET`` unset, torch told
that a GPU of the chosen arch exists); results are cached on disk under ``$WB_CACHE/xray`` keyed by the sources, the
tool versions and the arch, and a long-lived worker serves the ``xray_block`` calls of one run, so a run pays at most
one compile per (kernel, config, arch). SASS comes from ``cuobjdump`` (Triton's wheel ships it in
``triton/backends/nvidia/bin``; else the CUDA toolkit's).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import hotloop
from harness.sm import ARCH_LIMITS, ARCHS, base_arch, capability, limits, occupancy, tool

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = 9  # bump when the worker's output changes: old cache entries are then ignored

WGMMA_OPS = ("HGMMA", "QGMMA", "IGMMA", "BGMMA")  # Hopper warpgroup MMA (wgmma)
MMA_OPS = ("HMMA", "IMMA", "DMMA", "BMMA")  # warp-level mma.sync / wmma
TENSOR_OPS = WGMMA_OPS + MMA_OPS
TC_DTYPES = ("fp16", "bf16", "fp8", "int8", "tf32")  # compute dtypes that belong on tensor cores


# ------------------------------------------------------------------------------------------------ SASS
def sass_opcodes(path: str | Path) -> dict[str, list[str]]:
    """Function symbol -> its SASS opcodes with modifiers (``LDG.E.128``, ``HGMMA.64x256x16.F32.BF16``...), from the
    one ``cuobjdump -sass`` listing that the hot-loop model parses too (``hotloop.sass``, cached per file)."""
    return {sym: [i.op for i in insns] for sym, insns in hotloop.sass(path).items()}


@functools.lru_cache(maxsize=64)
def _res_cached(path: str, mtime: float) -> dict[str, dict[str, int]]:
    exe = tool("cuobjdump")
    if exe is None:
        raise FileNotFoundError("cuobjdump not found")
    out = subprocess.run([exe, "-res-usage", path], capture_output=True, text=True).stdout
    res: dict[str, dict[str, int]] = {}
    cur = None
    for line in out.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            cur = m.group(1)
            continue
        if cur and "REG:" in line:
            res[cur] = {k: int(v) for k, v in re.findall(r"(\w+(?:\[\d\])?):(\d+)", line)}
            cur = None
    return res


def res_usage(path: str | Path) -> dict[str, dict[str, int]]:
    """Function symbol -> cuobjdump -res-usage fields (REG, STACK, SHARED, LOCAL, ...)."""
    p = str(path)
    return _res_cached(p, os.path.getmtime(p))


def _width(op: str) -> int:
    mods = op.split(".")[1:]
    for w in ("256", "128", "64"):
        if w in mods:
            return int(w)
    for m in mods:
        if m in ("U16", "S16"):
            return 16
        if m in ("U8", "S8"):
            return 8
    return 32


def instruction_mix(ops: Iterable[str]) -> dict[str, Any]:
    """Counts of the instructions that answer tuning questions, from one function's SASS opcodes."""
    mix: dict[str, Any] = {"total": 0, "tensor": {}, "ldg": {}, "stg": {}, "ldgsts": {}}
    simple = {"FFMA": "ffma", "HFMA2": "hfma2", "DFMA": "dfma", "UTMALDG": "utmaldg", "UTMASTG": "utmastg",
              "UBLKCP": "ubulk", "LDS": "lds", "STS": "sts", "LDSM": "ldsm", "LDL": "ldl", "STL": "stl", "BAR": "bar",
              "SHFL": "shfl", "MUFU": "mufu", "ATOM": "atom", "ATOMG": "atom", "RED": "atom", "REDG": "atom",
              "ATOMS": "atoms", "SYNCS": "syncs", "WARPGROUP": "warpgroup"}
    for k in set(simple.values()):
        mix[k] = 0
    for op in ops:
        mix["total"] += 1
        base = op.split(".", 1)[0]
        if base in TENSOR_OPS:
            key = ".".join(op.split(".")[:2]) if base in WGMMA_OPS else base
            mix["tensor"][key] = mix["tensor"].get(key, 0) + 1
        elif base in ("LDG", "STG", "LDGSTS"):
            d = mix[base.lower()]
            w = _width(op)
            d[w] = d.get(w, 0) + 1
        elif base in simple:
            mix[simple[base]] += 1
    mix["tensor_core_ops"] = sum(mix["tensor"].values())
    mix["wgmma_ops"] = sum(v for k, v in mix["tensor"].items() if k.split(".")[0] in WGMMA_OPS)
    loads = list(mix["ldg"]) + list(mix["ldgsts"])
    mix["widest_load_bits"] = max(loads) if loads else 0
    mix["widest_store_bits"] = max(mix["stg"]) if mix["stg"] else 0
    mix["global_loads"] = sum(mix["ldg"].values()) + sum(mix["ldgsts"].values())
    return mix


_DOT = re.compile(r"tensor<([^>]*)>\s*\*\s*tensor<([^>]*)>")  # operand types; attributes may hold ': i32' too
_PREC = re.compile(r"inputPrecision\s*=\s*(\w+)")


def dot_precisions(ttir: str) -> list[dict[str, str]]:
    """Every ``tt.dot`` of a TTIR module: operand element types and input precision (ieee when not printed)."""
    out = []
    for line in ttir.splitlines():
        if not re.search(r"=\s*tt\.dot(_scaled)?\s", line):
            continue
        m = _DOT.search(line)
        if not m:
            continue
        p = _PREC.search(line)
        prec = p.group(1) if p else "ieee"  # the TTIR printer omits the attribute at its ieee default
        a, b = (t.split(",")[0].rsplit("x", 1)[-1].strip() for t in (m.group(1), m.group(2)))
        out.append({"precision": prec if a == "f32" else a, "a": a, "b": b})  # precision only applies to f32
    return out


# ------------------------------------------------------------------------------------------------ kernel facts
def analyze_kernel(cubin: str | Path, symbol: str | None, arch: str, threads: int | None, dyn_smem: int | None,
                   resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """Registers, local memory, shared memory, occupancy and instruction mix of one function of a cubin (or .so).

    resources: ptxas' report (CUDA builds: spill bytes, static smem without the 1 KB reservation); without it the
    cubin's own resource table is used."""
    funcs = sass_opcodes(cubin)
    if symbol is None:
        if len(funcs) != 1:
            raise ValueError(f"{Path(cubin).name}: {len(funcs)} functions; name one")
        symbol = next(iter(funcs))
    if symbol not in funcs:
        raise KeyError(f"{symbol} not in {Path(cubin).name} (has {len(funcs)} functions)")
    ru = res_usage(cubin).get(symbol, {})
    if resources:
        regs, static = int(resources.get("registers", 0)), int(resources.get("shared_bytes", 0))
        stack = int(resources.get("stack_bytes", 0))
        spill = int(resources.get("spill_store_bytes", 0)) + int(resources.get("spill_load_bytes", 0))
    else:
        regs, stack, spill = ru.get("REG", 0), ru.get("STACK", 0), None
        static = ru.get("SHARED", 0)
        if capability(arch) >= 90 and static >= 1024:  # sm_90 cubins count the 1 KB reservation in SHARED
            static -= 1024
    mix = instruction_mix(funcs[symbol])
    smem = None if dyn_smem is None else static + int(dyn_smem)
    occ = occupancy(arch, regs, threads, smem if smem is not None else static)
    try:
        loops: dict[str, Any] = hotloop.kernel_loops(cubin, symbol, bounds=threads is None)
    except Exception as e:  # the loop model is extra: its failure never costs the rest of the X-ray
        loops = {"error": f"{type(e).__name__}: {e}"[:300]}
    return {"symbol": symbol, "registers": regs, "stack_bytes": stack, "spill_bytes": spill,
            "local_bytes": ru.get("LOCAL", 0), "static_smem": static, "dynamic_smem": dyn_smem, "threads": threads,
            "occupancy": occ, "mix": mix, "loops": loops}


# ------------------------------------------------------------------------------------------------ worker side
class _Captured(Exception):
    pass


class _FakeLaunch:
    """Stands in for a compiled Triton kernel: every time JITFunction.run 'launches' it, a launch with its grid is
    recorded. Triton keeps it in its kernel cache, so a second shape with the same specialisation (a cache hit, no
    compile) is recorded too."""

    def __init__(self, rec: dict[str, Any], env: _Env):
        self._rec, self._env = rec, env

    def run(self, *args, **kwargs):
        self._env.launches.append({**self._rec, "grid": [int(a) for a in args[:3]]})

    def __getattr__(self, name):  # launch_metadata, _init_handles, function, ... across Triton versions
        return lambda *a, **k: None


class _Env:
    """Worker-process setup: a pretend GPU for torch, a stand-in Triton driver, recorders for launches."""

    def __init__(self) -> None:
        import types

        import torch

        self.arch = "sm_90a"
        self.launches: list[dict[str, Any]] = []
        env = self

        def props(*a, **k):
            lim = limits(env.arch)
            cap = capability(env.arch)
            return types.SimpleNamespace(name=f"X-ray target {env.arch}", major=cap // 10, minor=cap % 10,
                                         multi_processor_count=lim["sms"], total_memory=80 << 30,
                                         L2_cache_size=50 << 20, max_threads_per_multi_processor=lim["max_threads_sm"],
                                         shared_memory_per_block_optin=lim["smem_block_max"], warp_size=32)

        torch.cuda.is_available = lambda: True
        torch.cuda.get_device_capability = lambda *a, **k: (capability(env.arch) // 10, capability(env.arch) % 10)
        torch.cuda.get_device_properties = props
        torch.cuda.current_device = lambda: 0
        torch.cuda.device_count = lambda: 1
        torch.cuda.synchronize = lambda *a, **k: None
        torch.cuda.current_stream = lambda *a, **k: types.SimpleNamespace(cuda_stream=0)

        import triton
        import triton.compiler
        from triton.runtime import autotuner
        from triton.runtime.driver import driver

        try:
            from triton.backends.compiler import GPUTarget
        except ImportError:  # older layout
            from triton.compiler.compiler import GPUTarget
        self.GPUTarget = GPUTarget

        class Driver:
            def get_current_device(self):
                return ARCHS.index(env.arch)  # one Triton binder cache per target

            def get_current_stream(self, device=None):
                return 0

            def get_current_target(self):
                return GPUTarget("cuda", capability(env.arch), 32)

            def get_active_torch_device(self):
                return torch.device("meta")

            def get_device_interface(self):
                return torch.cuda

            def get_benchmarker(self):
                return lambda *a, **k: 0.0

            def get_empty_cache_for_benchmark(self):
                return torch.empty(0, device="meta")

            def clear_cache(self, cache):
                pass

        driver.set_active(Driver())
        self.real_compile = triton.compiler.compile

        def record(src, target=None, options=None, **kw):
            rec = {"kind": "triton", "src": src, "options": dict(options or {}),
                   "name": getattr(getattr(src, "fn", None), "__name__", "kernel"), "grid": None}
            return _FakeLaunch(rec, env)

        triton.compiler.compile = record
        orig_prune = autotuner.Autotuner.prune_configs
        # first pruned config (what WB_TUNE=0 runs); nothing is benchmarked
        autotuner.Autotuner.prune_configs = lambda self, kwargs: orig_prune(self, kwargs)[:1]
        autotuner.Autotuner._bench = lambda self, *a, **k: [0.0, 0.0, 0.0]

        from harness import cuda as hc

        def kernel_call(kself, grid, block, *args, shared=0):
            grid = tuple(grid) if isinstance(grid, (tuple, list)) else (int(grid),)
            block = tuple(block) if isinstance(block, (tuple, list)) else (int(block),)
            env.launches.append({"kind": "cuda", "kernel": kself, "name": kself.name, "grid": [int(g) for g in grid],
                                 "threads": math.prod(int(b) for b in block), "dyn_smem": int(shared)})

        def no_library(self, arch=None):
            raise _Captured("host-mode launcher")

        hc.Kernel.__call__ = kernel_call
        hc.CudaSource.library = no_library


def _meta_inputs(problem, shape, dtype):
    """The problem's inputs as meta tensors (shape, dtype, strides; no data): made under FakeTensorMode so that a
    10k x 1M kNN or an 8192^3 GEMM costs nothing."""
    import torch

    try:
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode():
            ins = problem.make_inputs(shape, dtype, 0, torch.device("cpu"))
    except Exception:
        ins = problem.make_inputs(shape, dtype, 0, torch.device("cpu"))  # data-dependent inputs: real, on the CPU
    return {k: (torch.empty_strided(tuple(v.shape), tuple(v.stride()), dtype=v.dtype, device="meta")
                if isinstance(v, torch.Tensor) else v) for k, v in ins.items()}


def _pick(problem, variant, dtype: str | None, shape_text: str | None):
    """(dtype, Shape) to inspect: the given ones, else the family's headline shape/dtype the variant supports, else
    its first supported default or quick shape. Raises ValueError with the reason when none fits."""
    if dtype and dtype not in variant.dtypes:
        raise ValueError(f"{variant.name} does not support {dtype} (supports {', '.join(variant.dtypes)})")
    head_dts = [d for _, dts in problem.headline for d in dts if d in variant.dtypes]
    dts = [dtype] if dtype else list(dict.fromkeys(head_dts + list(variant.dtypes)))
    if shape_text:
        shapes = [problem.parse_shape(shape_text)]
    else:
        shapes = [s for s, _ in problem.headline] + list(problem.shapes) + list(problem.quick)
    reasons = []
    for dt in dts:
        for s in shapes:
            r = variant.skip_reason(s, dt)
            if r is None:
                return dt, s
            reasons.append(r)
        if shape_text:
            break
    raise ValueError(reasons[0] if reasons else "no shape")


def _variant_claims_fp32(problem, variant, dtype: str) -> bool:
    if dtype != "fp32" or (variant.compute_dtype or "fp32") != "fp32":
        return False
    return "fp32" not in variant.tolerance  # a looser fp32 tolerance is a declared reduced-precision mode


def _cache_root() -> Path:
    d = Path(os.environ.get("WB_CACHE", Path.home() / ".cache" / "gpu-workbench")) / "xray"
    d.mkdir(parents=True, exist_ok=True)
    return d


_COMPILED: dict[str, dict[str, Any]] = {}


def _compile_triton(env: _Env, rec: dict[str, Any], arch: str) -> dict[str, Any]:
    """One Triton compile per (source, specialisation, options, target): cubin + TTIR dots + metadata."""
    src, opts = rec["src"], rec["options"]
    key = hashlib.sha256(json.dumps([SCHEMA, src.hash(), sorted((k, repr(v)) for k, v in opts.items()),
                                     capability(arch)],
                                    default=str).encode()).hexdigest()[:24]
    if key in _COMPILED:
        return _COMPILED[key]
    d = _cache_root() / "triton"
    d.mkdir(exist_ok=True)
    cubin, meta_f = d / f"{key}.cubin", d / f"{key}.json"
    if cubin.exists() and meta_f.exists():
        out = json.loads(meta_f.read_text())
    else:
        k, log = _compile_with_ptxas_log(env, src, opts, arch)
        md = k.metadata
        get = (lambda n: getattr(md, n, None)) if not isinstance(md, dict) else md.get
        out = {"symbol": get("name"), "shared": int(get("shared") or 0), "num_warps": int(get("num_warps") or 4),
               "num_stages": get("num_stages"), "num_ctas": get("num_ctas") or 1,
               "dots": dot_precisions(k.asm.get("ttir", "")),
               "constexprs": {str(n): repr(v) for n, v in _constexpr_names(src).items()},
               "ptxas": _triton_ptxas(log)}
        meta_f.write_text(json.dumps(out))
        cubin.write_bytes(k.asm["cubin"])
    out["cubin"] = str(cubin)
    _COMPILED[key] = out
    return out


def _compile_with_ptxas_log(env: _Env, src, opts: dict[str, Any], arch: str):
    """Triton's compile for ``arch`` with ptxas' -v report kept: Triton runs ptxas -v and prints its log when
    dump_ptxas_log is set; always_compile makes sure ptxas runs (Triton's own cache would skip it; this module's
    cache is in front of this call)."""
    import contextlib
    import io

    try:
        from triton import knobs

        saved = {(ns, n): getattr(ns, n) for ns, n in ((knobs.nvidia, "dump_ptxas_log"),
                                                       (knobs.compilation, "always_compile"))}
    except (ImportError, AttributeError):  # an older Triton: no spill report
        knobs, saved = None, {}
    buf = io.StringIO()
    try:
        for ns, n in saved:
            setattr(ns, n, True)
        with contextlib.redirect_stdout(buf):
            k = env.real_compile(src, target=env.GPUTarget("cuda", capability(arch), 32), options=opts)
    finally:
        for (ns, n), v in saved.items():
            setattr(ns, n, v)
    return k, buf.getvalue()


def _triton_ptxas(log: str) -> dict[str, int] | None:
    """Registers, stack and spill bytes of the one kernel in Triton's ptxas log (None when there is no log)."""
    from harness.cuda import parse_ptxas

    found = parse_ptxas(log)
    if not found:
        return None
    r = next(iter(found.values()))
    return {"registers": r.registers, "stack_bytes": r.stack_bytes, "spill_store_bytes": r.spill_store_bytes,
            "spill_load_bytes": r.spill_load_bytes, "shared_bytes": r.shared_bytes}


def _constexpr_names(src) -> dict[str, Any]:
    """BLOCK sizes etc. by parameter name (ASTSource.constants / .constexprs keys are indices or paths by version)."""
    consts = getattr(src, "constexprs", None) or getattr(src, "constants", None) or {}
    try:
        names = list(src.fn.arg_names)
    except Exception:
        return {}
    out = {}
    for k, v in consts.items():
        i = k[0] if isinstance(k, tuple) else k
        if isinstance(i, int) and i < len(names) and names[i].isupper():
            out[names[i]] = v
        elif isinstance(i, str) and i.isupper():
            out[i] = v
    return out


def _kernel_facts(env: _Env, launch: dict[str, Any], arch: str) -> dict[str, Any]:
    if launch["kind"] == "triton":
        t = _compile_triton(env, launch, arch)
        facts = analyze_kernel(t["cubin"], t["symbol"], arch, 32 * t["num_warps"], t["shared"],
                               resources=t.get("ptxas"))
        facts.update(name=launch["name"], backend="triton", grid=launch.get("grid"), num_warps=t["num_warps"],
                     num_stages=t["num_stages"], dots=t["dots"], config=t["constexprs"])
        return facts
    from harness.cuda import normalize_kernel_name

    k = launch["kernel"]
    build = k.src.build_for(k.name, arch)
    key = normalize_kernel_name(k.name)
    sym = build.mangled.get(key)
    if sym is None:
        raise KeyError(f"{k.src.name}: no kernel {k.name!r} in the {arch} build")
    facts = analyze_kernel(build.cubin, sym, arch, launch.get("threads"), launch.get("dyn_smem"),
                           resources=build.resources[key].__dict__)
    facts.update(name=k.name, backend="cuda", grid=launch.get("grid"), dots=[])
    return facts


def _host_mode_facts(variant, dtype: str, arch: str) -> list[dict[str, Any]]:
    """A launcher with its own host code: the registered kernel names, launch shape unknown."""
    from harness.cuda import normalize_kernel_name

    src = variant.source
    out = []
    for name in variant.kernel_names(dtype):
        src._ensure_instantiated(name)
        build = src.build_for(name, arch)
        key = normalize_kernel_name(name)
        facts = analyze_kernel(build.cubin, build.mangled[key], arch, None, None,
                               resources=build.resources[key].__dict__)
        facts.update(name=name, backend="cuda", grid=None, dots=[],
                     note="host-mode launcher: block size and dynamic shared memory are set in the .cu, not seen")
        out.append(facts)
    return out


def _worker_job(env: _Env, job: dict[str, Any]) -> dict[str, Any]:
    from harness.registry import get_problem

    arch = job["arch"]
    env.arch = arch
    out: dict[str, Any] = {"family": job["family"], "variant": job["variant"], "arch": arch, "schema": SCHEMA}
    problem = get_problem(job["family"])
    v = problem.variants.get(job["variant"])
    if v is None:
        return {**out, "status": "unavailable", "reason": f"no variant {job['variant']!r} in {job['family']}"}
    out["backend"] = v.backend
    if v.backend not in ("triton", "cuda"):
        return {**out, "status": "unavailable", "reason": "library baseline: no kernel source here to inspect"}
    try:
        dtype, shape = _pick(problem, v, job.get("dtype"), job.get("shape"))
    except Exception as e:
        return {**out, "dtype": job.get("dtype"), "shape": job.get("shape"), "status": "unavailable",
                "reason": f"skipped: {e}"}
    out.update(dtype=dtype, shape=shape.key(), flops=float(problem.flops(shape)),
               bytes=float(problem.min_bytes(shape, dtype)),
               compute_dtype=v.roof_dtype or v.compute_dtype or (problem.compute_dtype(dtype, shape)
                                                                 if problem.compute_dtype else dtype),
               claims_fp32=_variant_claims_fp32(problem, v, dtype), description=v.description)
    if v.backend == "cuda" and v.source is not None and v.source.archs and arch not in v.source.archs:
        return {**out, "status": "unavailable", "reason": f"{v.source.name} is built for {', '.join(v.source.archs)} "
                                                          f"only, not {arch}"}
    spec = _byo_spec(job["family"], job["variant"])
    out["inspect"] = _inspect_cmd(job["family"], job["variant"], spec)
    env.launches = []
    host_mode = False
    plan = getattr(v.source, "launch_plan", None) if v.backend == "cuda" else None
    kernels, errors, seen = [], [], set()
    if plan is not None:  # a course file's own launcher: its launches read from the source at this shape
        try:
            kernels += _byo_facts(v, shape, arch, errors, problem, dtype)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
    else:
        try:
            ins = _meta_inputs(problem, shape, dtype)
            import torch

            outs = problem.make_outputs(shape, dtype, torch.device("meta")) if v.style == "out" else None
            v.fn(ins, outs, shape)
        except _Captured:
            host_mode = True
        except Exception as e:
            if not env.launches:
                return {**out, "status": "unavailable",
                        "reason": f"launcher did not run on meta tensors: {type(e).__name__}: {str(e)[:200]}"}
    for launch in env.launches:
        ident = (launch["kind"], launch["name"], id(launch.get("src")), launch.get("threads"), launch.get("dyn_smem"))
        if launch["kind"] == "cuda":
            ident = ("cuda", launch["name"], launch.get("threads"), launch.get("dyn_smem"))
        if ident in seen:
            continue
        seen.add(ident)
        try:
            kernels.append(_kernel_facts(env, launch, arch))
        except Exception as e:
            errors.append(f"{launch['name']}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
    if plan is None and (host_mode or (not env.launches and v.backend == "cuda" and v.kernel)):
        try:
            kernels += _host_mode_facts(v, dtype, arch)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
    if not kernels:
        return {**out, "status": "unavailable", "reason": "; ".join(errors) or "no kernel launched"}
    return {**out, "status": "ok", "kernels": kernels, "errors": errors, "deps": _job_deps(v, env.launches, spec)}


def _byo_spec(family: str, variant: str):
    """The harness.byo Spec a course file's variant came from (None for the repository's own variants)."""
    mod = sys.modules.get("harness.byo")
    return getattr(mod, "SPECS", {}).get((family, variant)) if mod is not None else None


def _inspect_cmd(family: str, variant: str, spec) -> str:
    """The command that shows this X-ray (the tables' x flag names it)."""
    import shlex

    if spec is None:
        return f"python -m harness inspect --kernel {family} --variants {variant}"
    extra = "".join(f" --{k} {shlex.quote(str(val))}" for k, val in
                    (("entry", spec.entry), ("block", spec.block), ("numbers", spec.numbers)) if val)
    opt = "--cu" if spec.kind == "cu" else "--triton"
    return f"python -m harness inspect --kernel {family} {opt} {shlex.quote(spec.path)}{extra}"


DRY_RUN_MAX_BYTES = 2 << 30  # host memory a dry run may allocate for the launcher's buffers (2 GiB)
DRY_LABEL = "launch recorded by a dry run of the launcher on the CPU interpreter at this shape (no kernel ran)"


def _byo_facts(v, shape, arch: str, errors: list[str], problem=None, dtype: str | None = None
               ) -> list[dict[str, Any]]:
    """A course file's kernels at ``shape``: the ones its launcher's code launches for this kernel number (switch
    arms on the number and on the shape's dims resolved), each specialisation's ptxas report from the file's own
    build, and occupancy at the block size and dynamic shared memory read from its ``<<<>>>`` (harness.launches).
    Where that reading leaves something unknown (or finds no launch), the launcher runs once in the CPU
    interpreter's dry mode (:func:`_dry_plan`): its launches are logged with their real geometry, no kernel runs."""
    src = v.source
    build = src.compile(arch)  # the shared library and its ptxas report, cached on every file the build read
    number = v.ladder if v.ladder is not None else -1
    plan = src.launch_plan(number, shape)
    label = "launch read from the source at this shape"
    if (not plan or any(la.unknown for la in plan)) and src.mode == "launcher" and problem is not None:
        dry, why = _dry_plan(v, number, problem, shape, dtype, arch, plan, build)
        if dry is not None:
            plan, label = dry, DRY_LABEL
        else:
            for la in plan:
                la.unknown.append(f"dry run: {why}")
            if not plan:
                raise ValueError(f"{src.name}: no <<<...>>> launch found in {src.callee or 'the launcher'}'s code "
                                 f"for this kernel number, and no dry run: {why}")
    if not plan:
        raise ValueError(f"{src.name}: no <<<...>>> launch found in {src.callee or 'the launcher'}'s code for "
                         f"this kernel number")
    out, seen = [], set()
    for la in plan:
        key = la.kernel if la.kernel in build.resources else None
        if key is None:
            cands = [k for k in build.resources if k.split("<", 1)[0] == la.base]
            if len(cands) != 1:
                errors.append(f"{la.text}: specialisation {la.kernel} not in the build"
                              + (f" (it has {', '.join(cands)})" if cands else "")
                              + (f"; {'; '.join(la.unknown)}" if la.unknown else ""))
                continue
            key = cands[0]
        ident = (key, la.threads, la.dyn_smem, la.grid)
        if ident in seen:
            continue
        seen.add(ident)
        facts = analyze_kernel(build.cubin, build.mangled[key], arch, la.threads, la.dyn_smem,
                               resources=build.resources[key].__dict__)
        facts.update(name=key, backend="cuda", grid=list(la.grid) if la.grid else None, dots=[], launch=la.text,
                     geometry=label + "".join(f"; {n}" for n in la.notes) + (
                         f"; not known: {'; '.join(la.unknown)}" if la.unknown else ""))
        out.append(facts)
    return out


def _sized_inputs(problem, shape, dtype: str | None) -> tuple[dict[str, Any], bool]:
    """The problem's inputs as meta tensors at ``shape`` without drawing their data, and whether a scalar among them
    is a placeholder: a scalar drawn from a tensor's value (sgemm's alpha) reads 0.5 (1 for integers) instead."""
    import torch
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class _NoData(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                return 0.5 if args[0].dtype.is_floating_point else 1
            return func(*args, **(kwargs or {}))

    def meta(ins: dict[str, Any]) -> dict[str, Any]:
        return {k: (torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device="meta")
                    if isinstance(t, torch.Tensor) else t) for k, t in ins.items()}

    try:
        with FakeTensorMode():
            return meta(problem.make_inputs(shape, dtype, 0, torch.device("cpu"))), False
    except DataDependentOutputException:
        with FakeTensorMode(), _NoData():
            return meta(problem.make_inputs(shape, dtype, 0, torch.device("cpu"))), True


def _dry_plan(v, number: int, problem, shape, dtype: str | None, arch: str, static: list, build
              ) -> tuple[list | None, str]:
    """The launches the file's launcher makes at ``shape``, recorded by the CPU interpreter's dry mode
    (harness.interp.InterpLibrary.dry: every ``<<<>>>`` is logged and returns cudaSuccess, no thread runs), as
    harness.launches.Launch objects; or (None, why not). The launcher gets real host buffers of the shape's sizes
    (never read: no kernel runs, and a read-back by the launcher is noted, which leaves its later launches unknown).
    Device queries answer as an H100 SXM, so they count only for an sm_90 target; occupancy queries (no register
    model in the interpreter) leave the launches after them unknown."""

    import torch

    from harness import byo, interp
    from harness.cuda import normalize_kernel_name
    from harness.cuda_common import CompileError
    from harness.launches import Launch

    src = v.source
    try:
        ins, placeholders = _sized_inputs(problem, shape, dtype)
        outs = problem.make_outputs(shape, dtype, torch.device("meta")) if v.style == "out" else {}
    except Exception as e:
        return None, f"the problem's buffers could not be sized: {type(e).__name__}: {str(e)[:120]}"
    metas = {k: t for k, t in {**ins, **(outs or {})}.items() if isinstance(t, torch.Tensor)}
    total = sum(t.numel() * t.element_size() for t in metas.values())
    if total > DRY_RUN_MAX_BYTES:
        return None, (f"a dry run needs {total / 2**30:.1f} GiB of host memory for the launcher's buffers at this "
                      f"shape (limit {DRY_RUN_MAX_BYTES / 2**30:.0f} GiB); X-ray a smaller shape")
    if placeholders and total <= 64 << 20:  # small: the record's own scalars (drawn from data) cost little
        ins, placeholders = problem.make_inputs(shape, dtype, 0, torch.device("cpu")), False
    # uninitialised host memory (pages untouched): no kernel reads it, and a read-back by the launcher is noted
    real = {k: torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype) for k, t in metas.items()}
    ins_r = {k: real.get(k, x) for k, x in ins.items()}
    outs_r = {k: real.get(k, x) for k, x in (outs or {}).items()}
    try:
        lib = interp.library(src, [])
    except CompileError as e:
        return None, f"the CPU interpreter's build failed: {str(e).splitlines()[0][:200] if str(e) else ''}"
    call = byo.shim(lib)
    try:
        ptrs, ints, floats = byo._marshal([r for _, r in src.params], src.conv["roles"], ins_r, outs_r, shape)
    except (KeyError, TypeError, AttributeError) as e:
        return None, f"the launcher's arguments could not be made: {type(e).__name__}: {e}"
    interp.set_call(tensors=real)
    try:
        with lib.dry() as log:
            err = call(number, ptrs, ints, floats)
    except Exception as e:  # a fault in the launcher's own host code
        return None, f"the launcher failed in the dry run: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if err is not None:
        return None, f"the launcher failed in the dry run: {err}"
    if not log.launches:
        return None, "the launcher launched no kernel in the dry run"
    h100 = capability(arch) == 90
    static_keys: dict[str, set[str]] = {}
    for la in static:
        if la.kernel in build.resources:
            static_keys.setdefault(la.base, set()).add(la.kernel)
    out = []
    for d in log.launches:
        base = d.name.split("<", 1)[0].strip().split("::")[-1]
        la = Launch(base=base, kernel=normalize_kernel_name(d.name), text=(
            f"{d.name}<<<({d.grid[0]},{d.grid[1]},{d.grid[2]}), ({d.block[0]},{d.block[1]},{d.block[2]}), "
            f"{d.dyn_smem}>>> (dry run)"), block=d.block, grid=d.grid, dyn_smem=d.dyn_smem)
        if la.kernel not in build.resources:  # template arguments as written (BM, T): the specialisation from
            known = static_keys.get(base, set())  # the source reader when it named exactly one
            if len(known) == 1:
                la.kernel = next(iter(known))
        bad = [n for n in d.notes if not (n.startswith("device query") and h100)]
        la.notes = [n for n in d.notes if n not in bad] + (
            ["the launcher's scalar arguments were placeholders (the problem draws them from data)"]
            if placeholders else [])
        if bad:  # what the interpreter answered is not the GPU's: no number of this launch is shown
            la.block = la.grid = la.dyn_smem = None
            la.text = f"{d.name}<<<?>>> (dry run)"
            la.unknown = [f"before this launch, {n}" + (f", but the target is {arch}" if n.startswith("device query")
                                                         else "") for n in bad]
        out.append(la)
    return out, ""


def _job_deps(v, launches: list[dict[str, Any]], spec) -> dict[str, list]:
    """Every file this X-ray read, with its signature (harness.cuda's dependency sets: nvcc's list for each build,
    the Python files of the Triton kernels and of a course file): a cached X-ray is used only while all are
    unchanged."""
    from harness.cuda_common import _portable, _signature

    srcs = [v.source] if v.backend == "cuda" and hasattr(v.source, "dependencies") else []
    srcs += [la["kernel"].src for la in launches if la["kind"] == "cuda"]
    deps: dict[str, list] = {}
    for s_ in srcs:
        deps.update(s_.dependencies())
        for sub in s_.__dict__.get("_subsets", {}).values():
            deps.update(sub.dependencies())
    files = set()
    for la in launches:
        code = getattr(getattr(getattr(la.get("src"), "fn", None), "fn", None), "__code__", None)
        if code is not None:
            files.add(code.co_filename)
    if spec is not None and spec.kind == "triton":
        folder = Path(spec.path).parent
        files.add(spec.path)
        files |= {m.__file__ for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) and Path(m.__file__).parent == folder}
    for f in files:
        try:
            deps[_portable(f)] = _signature(Path(f))
        except OSError:
            pass
    return deps


def worker_main() -> None:
    """Line protocol: one JSON request {"jobs": [...]} per stdin line -> one JSON list per stdout line."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints go to the log, not into the protocol
    sys.stdout = sys.stderr
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["WB_TUNE"] = "0"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    import warnings

    warnings.filterwarnings("ignore")
    env = _Env()
    from harness.registry import load_all

    load_all()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if os.environ.get("WB_BYO"):  # a course file may have been edited since the last request: bind it again
            from harness import byo

            byo.reload_from_env()
        results = []
        for job in req["jobs"]:
            try:
                results.append(_worker_job(env, job))
            except Exception as e:  # never let one variant end the worker
                results.append({**job, "status": "unavailable", "reason": f"{type(e).__name__}: {e}"[:400]})
        proto.write(json.dumps(results, default=str) + "\n")
        proto.flush()


# ------------------------------------------------------------------------------------------------ parent side
def _content_hash() -> str:
    return _content_hash_for(os.environ.get("WB_FAMILIES", ""))


@functools.lru_cache(None)
def _content_hash_for(extra_families: str) -> str:
    """Sources whose change can change an X-ray, plus the tool versions."""
    h = hashlib.sha256()
    files = sorted([*ROOT.glob("kernels/*.py"), *ROOT.glob("harness/families/*.py"), *ROOT.glob("cuda_src/*"),
                    *(ROOT / "harness" / f for f in ("xray.py", "hotloop.py", "sm.py", "cuda.py", "cuda_common.py",
                                                     "registry.py"))])
    for f in files:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    try:
        from importlib.metadata import version

        h.update(version("triton").encode())
    except Exception:
        pass
    try:
        from harness.cuda import nvcc_version

        h.update(str(nvcc_version()).encode())
    except Exception:
        pass
    for mod in (m.strip() for m in extra_families.split(",") if m.strip()):
        f = ROOT / (mod.replace(".", "/") + ".py")  # an out-of-tree family and the .cu files beside it
        for g in sorted([f, *f.parent.glob("*.cu*")]) if f.exists() else []:
            h.update(g.read_bytes())
        h.update(mod.encode())
    h.update(str(SCHEMA).encode())
    return h.hexdigest()[:16]


def _job_key(job: dict[str, Any]) -> str:
    """Which cached X-rays can answer a job: its fields, the repository's sources and tools, and for a course file
    the spec it was bound with. The entries under the key are then checked file by file (_lookup_result)."""
    mod = sys.modules.get("harness.byo")
    spec = getattr(mod, "SPECS", {}).get((job["family"], job["variant"])) if mod is not None else None
    j = json.dumps([job["family"], job["variant"], job.get("dtype"), job.get("shape"), job["arch"], _content_hash(),
                    None if spec is None else [spec.path, spec.kind, spec.entry, spec.block, spec.numbers]])
    return hashlib.sha256(j.encode()).hexdigest()[:24]


def _lookup_result(key: str) -> dict[str, Any] | None:
    """A cached X-ray whose every file is unchanged (harness.cuda's ccache-style dependency check: size and mtime,
    else the content hash), newest first."""
    from harness.cuda_common import _read_index, _unchanged

    for e in _read_index(_cache_root() / "results" / f"{key}.json"):
        files, res = e.get("files"), e.get("result")
        if isinstance(files, dict) and isinstance(res, dict) and all(_unchanged(f, sig) for f, sig in files.items()):
            return res
    return None


def _store_result(key: str, res: dict[str, Any]) -> None:
    """Keep an X-ray with the files it read (the 4 latest dependency sets per key). Failures are never kept: a
    compile error, a launcher that did not run or a worker that died is tried again next time."""
    from filelock import FileLock

    from harness.cuda_common import _read_index, _write_atomic

    if res.get("status") != "ok":
        return
    root = _cache_root() / "results"
    root.mkdir(exist_ok=True)
    idx = root / f"{key}.json"
    files = res.get("deps") or {}
    with FileLock(str(root / f"{key}.lock")):
        entries = [e for e in _read_index(idx) if e.get("files") != files]
        _write_atomic(idx, json.dumps([{"files": files, "result": res}, *entries][:4]).encode())


class _Worker:
    """A long-lived worker subprocess (imports torch/triton/families once, ~3-5 s)."""

    def __init__(self) -> None:
        self.sig = _worker_signature()
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        log = open(_cache_root() / "worker.log", "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.xray", "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, cwd=str(ROOT), env=env)
        log.close()
        self.lock = threading.Lock()

    def ask(self, jobs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        with self.lock:
            assert self.proc.stdin and self.proc.stdout
            self.proc.stdin.write(json.dumps({"jobs": jobs}) + "\n")
            self.proc.stdin.flush()
            result: list[str] = []
            t = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
            t.start()
            t.join(timeout)
            if not result or not result[0]:
                self.close()
                raise RuntimeError("X-ray worker died or timed out (see $WB_CACHE/xray/worker.log)")
            return json.loads(result[0])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except Exception:
                self.proc.kill()


_WORKERS: list[_Worker] = []


def _worker_signature() -> tuple:
    """What a worker loads at start: a worker started with other families or course files is replaced."""
    return tuple(os.environ.get(k, "") for k in ("WB_FAMILIES", "WB_BYO", "WB_CACHE"))


def _workers(n: int) -> list[_Worker]:
    sig = _worker_signature()
    for w in [w for w in _WORKERS if w.sig != sig]:
        w.close()
    _WORKERS[:] = [w for w in _WORKERS if w.proc.poll() is None and w.sig == sig]
    while len(_WORKERS) < n:
        _WORKERS.append(_Worker())
    return _WORKERS[:n]


@atexit.register
def _close_workers() -> None:
    for w in _WORKERS:
        w.close()


def default_arch() -> str:
    """The GPU's arch; without one the first of WB_ARCHS; else sm_90a (the H100/H200 target of the profiles)."""
    from harness.cuda import device_arch

    a = device_arch()
    if a:
        return a
    env = [x.strip() for x in os.environ.get("WB_ARCHS", "").split(",") if x.strip()]
    return env[0] if env else "sm_90a"


def raw_xrays(jobs: list[dict[str, Any]], arch: str | None = None, workers: int | None = None,
              timeout: float = 1800.0) -> list[dict[str, Any]]:
    """Worker facts for each job {family, variant, dtype?, shape?}: the disk cache first (an entry counts only while
    every file it read is unchanged), the misses in worker(s)."""
    arch = arch or default_arch()
    if base_arch(arch) not in ARCH_LIMITS:
        raise ValueError(f"unknown arch {arch}; choose from {', '.join(ARCHS)}")
    jobs = [{**j, "arch": j.get("arch") or arch} for j in jobs]
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    miss = []
    reg = sys.modules.get("harness.registry")
    for i, j in enumerate(jobs):
        fam = getattr(reg, "REGISTRY", {}).get(j["family"]) if reg is not None else None
        v = fam.variants.get(j["variant"]) if fam is not None else None
        if v is not None and v.backend not in ("triton", "cuda"):  # known here: no worker needed to say so
            out[i] = {"family": j["family"], "variant": j["variant"], "arch": j["arch"], "schema": SCHEMA,
                      "backend": v.backend, "status": "unavailable",
                      "reason": "library baseline: no kernel source here to inspect"}
            continue
        out[i] = _lookup_result(_job_key(j))
        if out[i] is None:
            miss.append(i)
    if miss:
        n = max(1, min(workers or min(2, os.cpu_count() or 1), len(miss)))
        # families first grouped: one worker per half keeps each worker's compile caches warm for its families
        chunks = [miss[k::n] for k in range(n)] if n > 1 else [miss]
        results: dict[int, dict[str, Any]] = {}

        def run(w: _Worker, idx: list[int]) -> None:
            try:
                res = w.ask([jobs[i] for i in idx], timeout)
            except Exception as e:
                res = [{**jobs[i], "status": "unavailable", "reason": str(e)} for i in idx]
            for i, r in zip(idx, res):
                results[i] = r

        ws = _workers(n)
        threads = [threading.Thread(target=run, args=(w, c)) for w, c in zip(ws, chunks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in miss:
            out[i] = results[i]
            _store_result(_job_key(jobs[i]), results[i])
    return [r for r in out if r is not None]


# ------------------------------------------------------------------------------------------------ floor and lints
def load_profile(name: str | None):
    """'h100' (the committed measured H100 SXM profile), 'h200' (datasheet), or a profile JSON path."""
    from roofline import ceilings

    name = name or "h100"
    if name.lower() in ("h100", "h100-sxm"):
        return ceilings.load_profile(ROOT / "bench" / "results" / "h100-80gb-hbm3" / "profile.json")
    if name.lower() == "h200":
        try:
            return ceilings.known_profile("H200")
        except KeyError:
            raise ValueError("no H200 profile in roofline.ceilings.KNOWN_GPUS") from None
    p = Path(name)
    if p.exists():
        return ceilings.load_profile(p)
    raise ValueError(f"--profile takes h100, h200 or a profile.json path, got {name!r}")


def predicted_floor(flops: float, nbytes: float, compute_dtype: str, profile) -> dict[str, Any]:
    """max(min bytes / memory roof, FLOPs / compute roof of the dtype): the fastest this record can possibly run."""
    try:  # the shared roofline helper when present, so both sides agree on roofs
        from roofline.model import predicted_floor_ms  # type: ignore[attr-defined]
    except ImportError:
        predicted_floor_ms = None
    comp, comp_kind = profile.compute_roof(compute_dtype)
    mem, mem_kind = profile.mem_roof()
    t_mem = nbytes / mem if mem and nbytes else 0.0
    t_comp = flops / comp if comp and flops else 0.0
    ms = max(t_mem, t_comp) * 1e3 if (mem or comp) else None
    if predicted_floor_ms is not None:
        try:
            ms = predicted_floor_ms(flops, nbytes, compute_dtype, profile)
        except Exception:
            pass
    return {"floor_ms": ms, "bound": "memory" if t_mem >= t_comp else "compute", "profile": profile.name,
            "mem_roof": mem, "mem_roof_kind": mem_kind, "compute_roof": comp, "compute_roof_kind": comp_kind,
            "compute_dtype": compute_dtype}


def lints(rec: dict[str, Any], floor: dict[str, Any] | None) -> list[str]:
    """One line per problem found, each with its evidence."""
    out: list[str] = []
    arch = rec.get("arch", "")
    kernels = rec.get("kernels") or []
    bound = floor.get("bound") if floor else None
    cdt = rec.get("compute_dtype")
    hopper_a = arch == "sm_90a" or (capability(arch) == 90 and rec.get("backend") == "triton")
    if hopper_a and bound == "compute" and cdt in TC_DTYPES:
        wg = sum(k["mix"]["wgmma_ops"] for k in kernels)
        if wg == 0:
            tc = {op: n for k in kernels for op, n in k["mix"]["tensor"].items()}
            seen = ", ".join(f"{op}×{n}" for op, n in tc.items()) or "no tensor-core ops at all"
            out.append(f"compute-bound {cdt} matrix kernel for {arch} without HGMMA/QGMMA/IGMMA (wgmma): {seen}")
    for k in kernels:
        mix, name = k["mix"], _short(k["name"])
        if bound == "memory" and mix["global_loads"] and mix["widest_load_bits"] < 128 and not mix["utmaldg"]:
            out.append(f"{name}: memory-bound, widest global load {mix['widest_load_bits'] // 8} B < 16 B "
                       f"(LDG {_widths(mix['ldg']) or 'none'}; LDGSTS {_widths(mix['ldgsts']) or 'none'})")
        spill = k.get("spill_bytes")
        if mix["ldl"] or mix["stl"] or spill or k.get("local_bytes") or k.get("stack_bytes"):
            said = "no ptxas spill report" if spill is None else f"{spill} B spilled (ptxas)"
            out.append(f"{name}: local memory: {said}, stack {k.get('stack_bytes', 0)} B, "
                       f"LDL×{mix['ldl']} STL×{mix['stl']} in SASS")
        occ = k["occupancy"]
        if occ.get("occupancy") is not None and occ["occupancy"] < 0.25 and "shared memory" not in occ["limiter"]:
            out.append(f"{name}: occupancy {occ['occupancy']:.1%} ({occ['blocks_per_sm']} block(s) of "
                       f"{k['threads']} threads/SM) limited by {occ['limiter']}, not shared memory "
                       f"({k['registers']} regs/thread)")
        if rec.get("claims_fp32"):
            tf = [d for d in k.get("dots") or [] if d["a"] == "f32" and d["precision"] in ("tf32", "tf32x3")]
            if any(d["precision"] == "tf32" for d in tf):
                out.append(f"{name}: fp32 variant (fp32 tolerance, no tf32 compute_dtype) runs tl.dot at tf32 "
                           f"(TTIR inputPrecision = tf32 on f32 operands, ~1e-3 rel. error): pass "
                           f"input_precision='ieee' or declare compute_dtype='tf32'")
    return out


def _widths(d: dict) -> str:
    return ", ".join(f"{w}-bit×{n}" for w, n in sorted(((int(a), b) for a, b in d.items()), reverse=True))


def _short(name: str) -> str:
    return name if len(name) <= 48 else name[:45] + "..."


def finish(rec: dict[str, Any], profile=None) -> dict[str, Any]:
    """Worker facts + predicted floor + lints."""
    rec = dict(rec)
    if rec.get("status") == "ok" and profile is not None and rec.get("flops") is not None:
        rec["floor"] = predicted_floor(rec["flops"], rec["bytes"], rec["compute_dtype"], profile)
    if rec.get("status") == "ok":
        rec["lints"] = lints(rec, rec.get("floor"))
        hotloop.attach(rec, profile)
    return rec


def xray(family: str, variants: list[str] | None = None, dtype: str | None = None, shape: str | None = None,
         arch: str | None = None, profile: str | None = None, workers: int | None = None) -> list[dict[str, Any]]:
    """Full X-rays of a family's Triton and CUDA variants (library baselines are listed as unavailable)."""
    from harness.registry import get_problem

    jobs = [{"family": family, "variant": name, "dtype": dtype, "shape": shape}
            for name in get_problem(family).variants if not variants or name in variants]
    prof = load_profile(profile)
    return [finish(r, prof) for r in raw_xrays(jobs, arch, workers=workers)]


def xray_block(family: str, variant: str, dtype: str, shape: Any, arch: str | None = None,
               profile: str | None = None) -> dict[str, Any] | None:
    """Compact X-ray of one record for ``records.jsonl``; None for library baselines, when no compiler is usable or
    ``WB_XRAY=0``. Cached on disk with the files it read (a hit costs a few stat calls); misses go to one long-lived
    worker; failures are never cached.

    Keys: arch, kernels, regs (max over the record's kernels), spill_bytes (sum, ptxas' stores + loads; None where a
    kernel has no ptxas report), stack_bytes,
    smem_bytes (max static + dynamic per block), occupancy (min, 0..1), occupancy_limiter, tensor_core_ops (sum),
    wgmma_ops, widest_load_bits (max LDG/LDGSTS width), tma (UTMALDG seen), dot_precision, floor_ms, bound,
    floor_profile, lints (list of one-line strings), inspect (the command that shows the full X-ray)."""
    if os.environ.get("WB_XRAY", "1") == "0":
        return None
    shape_s = shape.key() if hasattr(shape, "key") else str(shape)
    block = None
    try:
        from harness.registry import REGISTRY

        v = REGISTRY.get(family).variants.get(variant) if family in REGISTRY else None
        if v is None or v.backend in ("triton", "cuda"):
            rec = raw_xrays([{"family": family, "variant": variant, "dtype": dtype, "shape": shape_s}], arch)[0]
            block = compact(finish(rec, load_profile(profile)))
    except Exception:
        block = None
    return block


def compact(rec: dict[str, Any]) -> dict[str, Any] | None:
    if rec.get("status") != "ok":
        return None
    ks = rec["kernels"]
    occs = [k["occupancy"] for k in ks if k["occupancy"].get("occupancy") is not None]
    worst = min(occs, key=lambda o: o["occupancy"]) if occs else None
    spills = [k.get("spill_bytes") for k in ks]
    smem = [(k["static_smem"] + (k["dynamic_smem"] or 0)) for k in ks]
    precs = sorted({d["precision"] for k in ks for d in k.get("dots") or []})
    fl = rec.get("floor") or {}
    return {
        "arch": rec["arch"], "kernels": len(ks), "regs": max(k["registers"] for k in ks),
        "spill_bytes": None if any(s is None for s in spills) else sum(spills),
        "stack_bytes": max(k.get("stack_bytes") or 0 for k in ks),
        "local_insts": sum(k["mix"]["ldl"] + k["mix"]["stl"] for k in ks),
        "smem_bytes": max(smem), "occupancy": round(worst["occupancy"], 4) if worst else None,
        "occupancy_limiter": worst["limiter"] if worst else None,
        "tensor_core_ops": sum(k["mix"]["tensor_core_ops"] for k in ks),
        "wgmma_ops": sum(k["mix"]["wgmma_ops"] for k in ks),
        "widest_load_bits": max(k["mix"]["widest_load_bits"] for k in ks),
        "tma": any(k["mix"]["utmaldg"] for k in ks),
        "dot_precision": ",".join(precs) or None,
        "floor_ms": fl.get("floor_ms"), "bound": fl.get("bound"), "floor_profile": fl.get("profile"),
        "lints": rec.get("lints", []), "inspect": rec.get("inspect"), "hot_loop": hotloop.compact(rec),
    }


# ------------------------------------------------------------------------------------------------ CLI
def _fmt_kernel_row(k: dict[str, Any]) -> list[str]:
    mix, occ = k["mix"], k["occupancy"]
    tc = " ".join(f"{op}×{n}" for op, n in mix["tensor"].items()) or "-"
    fma = " ".join(f"{n}×{c}" for n, c in (("FFMA", mix["ffma"]), ("HFMA2", mix["hfma2"]), ("DFMA", mix["dfma"]))
                   if c) or "-"
    glob = f"ld {_widths(mix['ldg']) or '-'} / st {_widths(mix['stg']) or '-'}"
    asyn = " ".join(s for s in (f"LDGSTS {_widths(mix['ldgsts'])}" if mix["ldgsts"] else "",
                                f"TMA×{mix['utmaldg']}" if mix["utmaldg"] else "") if s) or "-"
    smem = k["static_smem"] + (k["dynamic_smem"] or 0)
    smem_s = f"{smem / 1024:.1f}" + ("" if k["dynamic_smem"] is not None else "+?")
    short = {"registers": "regs", "shared memory": "smem", "warps": "warps", "blocks": "blocks"}
    lim = ",".join(short.get(x, x) for x in str(occ.get("limiter")).split(", "))
    occ_s = "?" if occ.get("occupancy") is None else f"{occ['occupancy']:.0%} {lim}"
    spill = "n/a" if k.get("spill_bytes") is None else str(k["spill_bytes"])
    dots = ",".join(sorted({d["precision"] for d in k.get("dots") or []})) or "-"
    other = f"{mix['lds']}/{mix['sts']}/{mix['ldsm']} {mix['bar']}/{mix['shfl']}"
    return [_short(k["name"]), str(k["registers"]), f"{spill}/{mix['ldl']}/{mix['stl']}", smem_s,
            str(k["threads"] or "?"), occ_s, tc, fma, glob.replace("-bit", ""), asyn.replace("-bit", ""), other, dots]


def render(recs: list[dict[str, Any]], con) -> None:
    from rich.table import Table

    ok = [r for r in recs if r.get("status") == "ok"]
    t = Table(title=f"kernel X-ray, {recs[0]['arch'] if recs else ''} (compiler output, no GPU)", title_justify="left",
              header_style="bold")
    for h in ("variant", "kernel", "regs", "spill B/LDL/STL", "smem KB", "thr", "occupancy (limit)", "tensor ops",
              "FMA", "global bits×n", "async", "LDS/STS/LDSM BAR/SHFL", "dot"):
        t.add_column(h, overflow="fold")
    for r in ok:
        for i, k in enumerate(r["kernels"]):
            head = f"{r['variant']} [dim]{r['dtype']}[/]" if i == 0 else ""
            t.add_row(head, *_fmt_kernel_row(k))
    if ok:
        con.print(t)
    lib = [r["variant"] for r in recs if r.get("status") != "ok" and r.get("backend") not in ("triton", "cuda")]
    if lib:
        con.print(f"[dim]not inspected (library baselines): {', '.join(lib)}[/]")
    for r in recs:
        if r.get("status") != "ok" and r.get("backend") in ("triton", "cuda"):
            con.print(f"[dim]{r['variant']}: not inspected: {r.get('reason')}[/]")
    for r in ok:
        for k in r["kernels"]:
            if k.get("launch"):  # a course file's launch, read from its source (or a dry run) at this shape
                grid = "x".join(map(str, k["grid"])) if k.get("grid") else "?"
                from rich.markup import escape

                con.print(f"[dim]{escape(r['variant'])}: {escape(k['launch'])} = grid {grid}, block "
                          f"{k['threads'] or '?'}, "
                          f"{k['dynamic_smem'] if k['dynamic_smem'] is not None else '?'} B dynamic smem"
                          + (f" ({k['geometry'].split('; ', 1)[1]})" if "; " in (k.get("geometry") or "") else "")
                          + "[/]", markup=True, highlight=False)
        fl = r.get("floor") or {}
        if fl.get("floor_ms") is not None:
            con.print(f"[bold]{r['variant']}[/] {r['dtype']} {r['shape']}: {floor_label(fl)} "
                      f"on {fl['profile']} ({fl['bound']}-bound: {r['bytes'] / 1e6:.3g} MB "
                      f"at {(fl['mem_roof'] or 0) / 1e12:.2f} TB/s {fl['mem_roof_kind']}, {r['flops'] / 1e9:.3g} "
                      f"GFLOP at {(fl['compute_roof'] or 0) / 1e12:.0f} TF/s {fl['compute_dtype']} "
                      f"{fl['compute_roof_kind']})")
        for line in hotloop.lines(r):
            con.print(line, markup=False, highlight=False)
        for line in r.get("lints", []):
            con.print(f"  [yellow]lint[/] {r['variant']}: {line}")
        for line in r.get("errors", []):
            con.print(f"  [red]error[/] {r['variant']}: {line}")


def floor_label(fl: dict[str, Any]) -> str:
    """The floor, said as what it is: a lower bound only when the roof that binds is a datasheet/NVML one. A
    *measured* roof is what the best library GEMM or a device copy reached (a kernel can beat it), so the time at it
    is a reference, not a bound (int8's library roof is set aside below 50% of the datasheet: its floor is a bound)."""
    kind = fl.get("compute_roof_kind") if fl.get("bound") == "compute" else fl.get("mem_roof_kind")
    t = _fmt_ms(fl["floor_ms"])
    if kind == "measured":
        what = "library GEMM" if fl.get("bound") == "compute" else "copy"
        return f"{t} at the measured {what} roof (a reference, not a lower bound)"
    return f"≥ {t} (a lower bound: {kind} roof)"


def _fmt_ms(ms: float) -> str:
    return f"{ms * 1e3:.3g} µs" if ms < 1 else f"{ms:.3g} ms"


def add_parser(sub) -> None:
    """Register ``inspect`` on ``python -m harness``'s subparsers."""
    c = sub.add_parser("inspect", help="kernel X-ray without a GPU: registers, occupancy, SASS mix, floor, lints")
    c.add_argument("--kernel", default="all", help="family or 'all' (default all; with --cu/--triton: the family "
                                                   "the file binds to)")
    c.add_argument("--variants", help="comma-separated variant names")
    c.add_argument("--arch", help=f"target ({', '.join(ARCHS)}); default the GPU's, else WB_ARCHS, else sm_90a")
    c.add_argument("--dtype", help="dtype (default: the headline dtype the variant supports)")
    c.add_argument("--shape", help="shape (default: the family's headline shape, else the first that fits)")
    c.add_argument("--shape-order", metavar="NAME", help="positional --shape in another order, e.g. 'course'")
    c.add_argument("--profile", help="device profile for the floor: h100 (measured, default), h200, or a path")
    c.add_argument("--json", action="store_true", help="machine-readable")
    g = c.add_argument_group("your own file (course-project mode, as bench/run.py takes it)")
    g.add_argument("--cu", action="append", metavar="FILE", help="a .cu/.cuh: every kernel number of its launcher")
    g.add_argument("--triton", action="append", metavar="FILE", help="a Python file with a Triton launcher")
    g.add_argument("--entry", metavar="NAME", help="the launcher or __global__ kernel to call")
    g.add_argument("--block", metavar="N|XxY", help="threads per block of a bare kernel's default launch")
    g.add_argument("--numbers", metavar="LIST", help="kernel numbers of a numbered launcher, e.g. 1-5")
    c.set_defaults(func=cmd_inspect)


def _own_files(args: argparse.Namespace) -> tuple[str, list[str]]:
    """--cu/--triton: (family, the file's variant names), registered here and exported to the X-ray worker. The
    family is --kernel, else the one family whose calling convention the file binds to."""
    from harness import byo
    from harness.cli import CliError
    from harness.registry import REGISTRY, all_problems

    all_problems()
    if args.kernel != "all":
        fams = [args.kernel]
    else:
        fams = []
        for f in REGISTRY:
            try:
                byo.convention(f)  # a family that takes your own files
                for s_ in byo.from_args(f, args.cu, args.triton, args.entry, args.block, args.numbers):
                    byo.bind_cuda(s_) if s_.kind == "cu" else byo.bind_triton(s_)
                fams.append(f)
            except (byo.ByoError, ModuleNotFoundError):
                continue
        if len(fams) != 1:
            raise CliError("name the family with --kernel: the file binds to "
                           + (", ".join(fams) if fams else "no family's calling convention (python bench/run.py "
                              "--list shows them)"))
    try:
        specs = byo.from_args(fams[0], args.cu, args.triton, args.entry, args.block, args.numbers)
        return fams[0], byo.register_all(specs)
    except byo.ByoError as e:
        raise CliError(str(e)) from None


def cmd_inspect(args: argparse.Namespace) -> int:
    from harness.cli import CliError, console, resolve_families, split
    from harness.registry import DTYPES, REGISTRY

    own = None
    if args.cu or args.triton:
        fam, own = _own_files(args)
        fams = [fam]
    else:
        if args.entry or args.block or args.numbers:
            raise CliError("--entry, --block and --numbers go with --cu/--triton FILE")
        fams = resolve_families(args.kernel)
    if args.arch and base_arch(args.arch) not in ARCH_LIMITS:
        raise CliError(f"--arch takes one of {', '.join(ARCHS)}, got {args.arch!r}")
    if args.dtype and args.dtype not in DTYPES:
        raise CliError(f"unknown dtype {args.dtype!r}; choose from {', '.join(DTYPES)}")
    variants = split(args.variants) or own
    if variants:
        known = {n for f in fams for n in REGISTRY[f].variants}
        bad = [v for v in variants if v not in known]
        if bad:
            raise CliError(f"unknown variant(s) {bad}; {args.kernel} has: {', '.join(sorted(known))}")
    shapes: dict[str, str | None] = {f: None for f in fams}
    if args.shape:
        for f in fams:
            try:
                shapes[f] = REGISTRY[f].parse_shape(args.shape, args.shape_order).key()
            except ValueError as e:
                raise CliError(str(e)) from None
    try:
        load_profile(args.profile)
    except (ValueError, OSError) as e:
        raise CliError(str(e)) from None
    t0 = time.time()
    recs = []
    for f in fams:
        recs += xray(f, variants, args.dtype, shapes[f], args.arch, args.profile)
    if args.json:
        print(json.dumps(recs, indent=1, default=str))
        return 0
    con = console()
    for f in fams:
        part = [r for r in recs if r["family"] == f]
        if part:
            con.rule(f"[bold]{f}")
            render(part, con)
        if own is None and not any(v.backend in ("triton", "cuda") for v in REGISTRY[f].variants.values()):
            con.print(f"[dim]{f} has no kernels of its own (only its library baseline): X-ray yours with "
                      f"python -m harness inspect --kernel {f} --cu FILE (or --triton FILE)[/]")
    n_ok = sum(r.get("status") == "ok" for r in recs)
    con.print(f"{n_ok} of {len(recs)} variants X-rayed in {time.time() - t0:.1f} s "
              f"({sum(len(r.get('lints', [])) for r in recs)} lint(s))")
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker_main()
