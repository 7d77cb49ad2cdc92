"""Raw CUDA: compile ``cuda_src/*.cu`` with nvcc, cache the cubin, parse ptxas' resource report, load and launch.

Two ways to run a ``.cu`` file, both as users write CUDA:

* **Kernel mode** — ``CudaSource("softmax.cu").kernel("softmax_v3_block<float, 256>")`` returns a launchable kernel.
  The name is the kernel as written in the source, template arguments included; the harness instantiates templates
  itself (it compiles a small generated unit that includes the file and takes the address of each requested
  specialisation), so a templated kernel needs no ``extern "C"`` wrapper. Launch with
  ``k(grid, block, *args, shared=bytes)``: tensors pass as device pointers, Python ints as ``int32`` and floats as
  ``float32`` (use ``i64(x)``, ``u32(x)``, ``f64(x)`` for other scalar types). ``k.set_max_dynamic_shared(bytes)``
  raises the opt-in shared-memory limit above 48 KB.
* **Host mode** — ``CudaSource("assignment.cu").library()`` compiles the file into a shared library (nvcc -shared)
  and returns a ``ctypes.CDLL``: the file's own host code does its setup (``cudaFuncSetAttribute``, TMA tensor maps
  with ``cuTensorMapEncodeTiled``, a ``launch_kernel(kernel_num, ...)`` switch as course assignments ship it) and is
  called with device pointers (``ptr(tensor)``). It runs on the runtime API's primary context, which torch shares.

**Interpret mode** (``harness.interp``; on without a GPU, ``WB_CUDA_INTERPRET=1/0`` forces it): both ways run on the
CPU instead, from the same source, with memcheck, racecheck and synccheck; CPU tensors are valid arguments and
``ptr(t)`` makes ``t`` device memory for the library's kernels.

Loading prefers pycuda (sharing torch's primary context via ``pycuda.autoprimaryctx``) and falls back to
cuda-python's ``cuda.core`` where pycuda is not installed. ``WB_CUDA_LOADER=pycuda|cuda.core`` forces one.
Compiled artefacts are cached by the content of every file the compile read (``harness.cuda_common``, shared with
the CPU interpreter's builds). ``CudaSource.dependencies()`` returns the files a source's builds read (the X-ray's
cache is keyed on them). A file that links cuBLAS takes it from the toolkit, else from an nvidia-cublas wheel in
site-packages (``cublas_location``); with neither, the compile error names the package to install.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.cuda_common import (  # i32 ... f64: the kernel-argument types, harness.cuda.i64(x) as before
    CUDA_SRC,
    CompileError,
    _portable,
    _portable_args,
    cached_build,
    cuda_root,
    f32,  # noqa: F401
    f64,  # noqa: F401
    i32,  # noqa: F401
    i64,  # noqa: F401
    nvcc_path,
    nvcc_version,
    parse_depfile,
    scalar_arg,
    u32,  # noqa: F401
)

DEFAULT_ARCHS = ("sm_80", "sm_90")  # compiled when no GPU is visible
# the CUDA C++ storage type of each workbench dtype: Variant.kernel may say "softmax_v1<{T}>"
CUDA_TYPES = {"fp32": "float", "fp16": "__half", "bf16": "__nv_bfloat16", "fp64": "double", "int8": "int8_t",
              "fp8": "__nv_fp8_e4m3"}


class CudaUnavailable(RuntimeError):
    """No GPU, or neither pycuda nor cuda.core is importable: the kernel can be compiled, not run."""


# ----------------------------------------------------------------------------------------------- toolchain facts
@functools.lru_cache(None)
def device_arch() -> str | None:
    """The visible GPU's target (``sm_90a`` on Hopper so wgmma/setmaxnreg are available), or None without a GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability()
    except Exception:
        return None
    arch = f"sm_{major}{minor}"
    return arch + "a" if (major, minor) in ((9, 0), (10, 0)) else arch


def target_archs() -> tuple[str, ...]:
    """The GPU's arch; without one, WB_ARCHS (e.g. "sm_90a" to pre-build a cache for an H100) or DEFAULT_ARCHS."""
    a = device_arch()
    if a:
        return (a,)
    env = tuple(x.strip() for x in os.environ.get("WB_ARCHS", "").split(",") if x.strip())
    return env or DEFAULT_ARCHS


def arch_flags(arch: str) -> list[str]:
    num = arch[3:]
    # sm_90a must be spelled with -gencode: the -arch shorthand also runs a plain sm_90 pass that rejects wgmma.
    return [f"-gencode=arch=compute_{num},code={arch}"]


# ----------------------------------------------------------------------------------------------- cuBLAS (issue 30)
# A course's cuda_error.cuh includes <cublas_v2.h> and its files link -lcublas. A CUDA toolkit without cuBLAS (a
# compiler-only install like this repository's CI: nvcc 13 with no cublas_v2.h) takes it from the nvidia-cublas
# wheel instead: nvidia/cu13/{include,lib} (CUDA 13, `pip install nvidia-cublas`) or nvidia/cublas/{include,lib}
# (CUDA 12, `nvidia-cublas-cu12`, which torch's CUDA 12 wheels already depend on). The wheel ships only the
# versioned libcublas.so.N, so it is linked by file name with an rpath to its folder.
CUBLAS_WHEELS = {"13": ("nvidia/cu13", "nvidia-cublas"), "12": ("nvidia/cublas", "nvidia-cublas-cu12")}


def _site_dirs() -> list[Path]:
    import site
    import sys

    dirs = [Path(p) for p in sys.path if p and p.endswith("-packages")]
    try:
        dirs += [Path(p) for p in site.getsitepackages()]
    except AttributeError:  # virtualenv's old site module
        pass
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


@functools.lru_cache(None)
def cublas_location() -> tuple[str, Path | None, Path | None]:
    """Where cuBLAS comes from for this nvcc: see find_cublas."""
    return find_cublas(cuda_root(), _site_dirs(), (nvcc_version() or "").split(".")[0])


def find_cublas(toolkit: Path | None, sites: list[Path], major: str) -> tuple[str, Path | None, Path | None]:
    """("toolkit", None, None) when the toolkit's own include/ has cublas_v2.h; ("wheel", include dir,
    libcublas.so.N) from an nvidia-cublas wheel in ``sites`` (the one matching nvcc's ``major`` version first);
    ("missing", None, None) otherwise."""
    if toolkit is not None and (toolkit / "include" / "cublas_v2.h").is_file():
        return "toolkit", None, None
    order = [major] + [m for m in CUBLAS_WHEELS if m != major]
    for m in order:
        sub, _ = CUBLAS_WHEELS.get(m, (None, None))
        for d in sites if sub else []:
            inc, lib = d / sub / "include", d / sub / "lib"
            libs = sorted(lib.glob("libcublas.so*")) if lib.is_dir() else []
            if (inc / "cublas_v2.h").is_file() and libs:
                return "wheel", inc, libs[0]
    return "missing", None, None


def cublas_hint() -> str:
    """What to install when no cuBLAS is found (the package matching this nvcc)."""
    major = (nvcc_version() or "13").split(".")[0]
    pkg = CUBLAS_WHEELS.get(major, CUBLAS_WHEELS["13"])[1]
    where = cuda_root()
    return (f"cuBLAS not found: the CUDA toolkit{f' at {where}' if where else ''} (nvcc {nvcc_version() or '?'}) has "
            f"no cublas_v2.h and no {pkg} wheel is in this Python's site-packages; install it with "
            f"`python -m pip install {pkg}` (~450 MB; `make` does this in .venv where nvcc is found) or the "
            f"toolkit's cuBLAS")


def cublas_needed() -> str:
    """The wheel to install for course files that include <cublas_v2.h>: "" when nvcc is absent (nothing compiles
    here) or cuBLAS is already found. ``make`` installs it (--no-deps: its nvrtc dependency is not needed to link)."""
    if nvcc_path() is None or cublas_location()[0] != "missing":
        return ""
    return CUBLAS_WHEELS.get((nvcc_version() or "13").split(".")[0], CUBLAS_WHEELS["13"])[1]


def cublas_compile_flags() -> list[str]:
    kind, inc, _ = cublas_location()
    return [f"-I{inc}"] if kind == "wheel" else []


def cublas_link_flags() -> list[str]:
    kind, _, lib = cublas_location()
    if kind == "wheel" and lib is not None:
        return [f"-L{lib.parent}", f"-l:{lib.name}", "-Xlinker", f"-rpath={lib.parent}"]
    return ["-lcublas"]


def _cublas_missing(log: str) -> bool:
    return bool(re.search(r'cublas(_v2|_api|Lt)?\.h: No such file|cannot open source file "cublas|'
                          r"cannot find -l:?(lib)?cublas", log))


# ----------------------------------------------------------------------------------------------- resource report
@dataclass
class Resources:
    """ptxas' report for one kernel (per arch)."""

    registers: int = 0
    shared_bytes: int = 0  # static shared memory
    stack_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    barriers: int = 0
    cmem_bytes: int = 0

    @property
    def spills(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")


def parse_ptxas(log: str) -> dict[str, Resources]:
    """Mangled kernel name -> Resources, from ``-Xptxas -v`` output."""
    out: dict[str, Resources] = {}
    cur: Resources | None = None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = out.setdefault(m.group(1), Resources())
            continue
        if cur is None:
            continue
        m = _PROPS.search(line)
        if m:
            cur.stack_bytes, cur.spill_store_bytes, cur.spill_load_bytes = map(int, m.groups())
            continue
        m = _USED.search(line)
        if m:
            cur.registers = int(m.group(1))
            if (b := re.search(r"used (\d+) barriers", line)) is not None:
                cur.barriers = int(b.group(1))
            if (s := re.search(r"(\d+) bytes smem", line)) is not None:
                cur.shared_bytes = int(s.group(1))
            if (c := re.search(r"(\d+) bytes cmem\[0\]", line)) is not None:
                cur.cmem_bytes = int(c.group(1))
    return out


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled -> demangled (``void foo<float, 256>(float const*, ...)``); extern "C" names map to themselves."""
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not names:
        return {}
    if tool is None:
        return {n: n for n in names}
    res = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    lines = res.stdout.splitlines()
    return dict(zip(names, lines)) if len(lines) == len(names) else {n: n for n in names}


def named_report(log: str) -> tuple[dict[str, Resources], dict[str, str]]:
    """ptxas log -> (normalised kernel name -> Resources, normalised name -> mangled symbol)."""
    raw = parse_ptxas(log)
    names = demangle(list(raw))
    res_by, mangled = {}, {}
    for m, r in raw.items():
        n = normalize_kernel_name(names.get(m, m))
        res_by[n], mangled[n] = r, m
    return res_by, mangled


def normalize_kernel_name(name: str) -> str:
    """'void foo<float, 256>(float const*, int)' and 'foo<float,256>' -> 'foo<float,256>'."""
    s = name.strip()
    s = re.sub(r"^(void|__global__|static)\s+", "", s)
    depth = 0
    for i, ch in enumerate(s):  # cut the parameter list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            s = s[:i]
            break
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"\(\w+\)(-?\d+)", r"\1", s)  # (int)256 -> 256
    s = re.sub(r"(?<=[<,])(-?\d+)[uUlL]+(?=[,>])", r"\1", s)  # 256u -> 256
    return s


# ----------------------------------------------------------------------------------------------- compile
@dataclass
class Build:
    arch: str
    cubin: Path
    log: str
    resources: dict[str, Resources]  # normalised name -> resources
    mangled: dict[str, str]  # normalised name -> mangled symbol


def first_error(log: str) -> str:
    """The most useful line: nvcc's 'file(line): error', else a linker complaint, else any error line."""
    lines = log.splitlines()
    for pat in (r"\(\d+\): (catastrophic )?error", r"undefined reference|cannot find|multiple definition",
                r"error"):
        for line in lines:
            if re.search(pat, line, re.I):
                return line.strip()
    lines = [ln for ln in log.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "nvcc failed"


@dataclass
class CudaSource:
    """One ``.cu`` file under ``cuda_src/`` (or an absolute path: a user's own file) and how to compile it."""

    path: str | Path
    flags: tuple[str, ...] = ("-O3", "-std=c++17", "-lineinfo")
    defines: dict[str, Any] = field(default_factory=dict)
    # template specialisations to instantiate, e.g. "softmax_block<float, 256>"; kernel() adds to it
    instantiate: list[str] = field(default_factory=list)
    archs: tuple[str, ...] | None = None  # restrict (e.g. ("sm_90a",) for wgmma); None = every target arch
    # host mode: extra libraries to link (e.g. ("cuda",) for driver-API calls; cudaGetDriverEntryPoint avoids it)
    libs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        p = Path(self.path)
        self.path = p if p.is_absolute() else CUDA_SRC / p
        self._builds: dict[str, Build] = {}
        self._modules: dict[str, Any] = {}
        self._libs: dict[str, ctypes.CDLL] = {}
        self._kernel_names: list[str] = []  # every kernel() asked for: the CPU interpreter's entry points
        self._deps: dict[tuple[str, str], dict[str, list]] = {}  # (arch, kind) -> the files that build read

    @property
    def name(self) -> str:
        return Path(self.path).name

    def __hash__(self) -> int:
        return hash(str(self.path))

    def _config_key(self, arch: str, kind: str) -> str:
        """Everything but the files' contents: which index to look in. Paths in it are _portable (the include
        dirs stay in the key: the same files found through other dirs would be another compile)."""
        cmd = _portable_args(self._cmd(arch)[1:])  # flags, defines, include dirs; nvcc's path: its version
        # where cuBLAS is linked from (toolkit or wheel) is part of a host build; other builds keep their keys
        links = _portable_args(self._link_flags()) if kind == "so" and "cublas" in self.libs else []
        h = hashlib.sha256(json.dumps([kind, arch, _portable(self.path), cmd, sorted(self.instantiate),
                                       list(self.libs), nvcc_version(), *([links] if links else [])],
                                      default=str).encode())
        return h.hexdigest()[:24]

    def dependencies(self) -> dict[str, list]:
        """Every file the builds of this source so far read ({_portable name: [size, mtime_ns, sha256]}, nvcc's own
        dependency list): what anything derived from the builds (the X-ray) is keyed on."""
        out: dict[str, list] = {}
        for files in self._deps.values():
            out.update(files)
        return out

    def _cmd(self, arch: str) -> list[str]:
        nv = nvcc_path()
        if nv is None:
            raise CompileError("nvcc not found: install the CUDA toolkit or put nvcc on PATH")
        if not Path(self.path).exists():
            raise CompileError(f"{self.path}: no such .cu file")
        d = [f"-D{k}={v}" for k, v in self.defines.items()]
        cublas = cublas_compile_flags() if "cublas" in self.libs else []
        return [nv, *arch_flags(arch), *self.flags, *d, f"-I{CUDA_SRC}", f"-I{Path(self.path).parent}", *cublas,
                "-diag-suppress=177"]

    def _link_flags(self) -> list[str]:
        """-l flags of a host-mode build; cuBLAS from the toolkit or an nvidia-cublas wheel (cublas_location)."""
        return [f for lib in self.libs for f in (cublas_link_flags() if lib == "cublas" else [f"-l{lib}"])]

    def _unit(self, tmp: Path) -> Path:
        """Generated unit: include the file, take each requested specialisation's address (forces instantiation)."""
        unit = tmp / "wb_unit.cu"
        refs = ", ".join(f"(void*)&{t}" for t in self.instantiate)
        body = f'#include "{Path(self.path).resolve()}"\n'
        if refs:
            body += f"__attribute__((used)) static void* __wb_instantiations[] = {{ {refs} }};\n"
        unit.write_text(body)
        return unit

    def _build(self, arch: str, kind: str) -> tuple[Path, Path]:
        """nvcc once per (source and everything it reads, flags, instantiations, nvcc, arch, kind) -> (artefact,
        ptxas log), cached on disk. kind "cubin": device code for kernel mode; "so": the whole file as a shared
        library (host mode)."""
        name = "k.cubin" if kind == "cubin" else "lib.so"
        stem = f"{Path(self.path).stem}-{arch}-{kind}-{self._config_key(arch, kind)}"
        art, log, files = cached_build(stem, name, lambda tdp: self._compile_locked(arch, kind, name, tdp),
                                       Path(self.path))
        self._deps[(arch, kind)] = files
        return art, log

    def _compile_locked(self, arch: str, kind: str, name: str, tdp: Path) -> tuple[list[Path], str]:
        """nvcc into ``tdp/name`` (under the cache entry's lock) -> (the files it read, its log)."""
        extra = ["-cubin"] if kind == "cubin" else ["-shared", "-Xcompiler", "-fPIC", *self._link_flags()]
        unit = self._unit(tdp)
        depf = tdp / "deps.d"
        cmd = [*self._cmd(arch), *extra, "-Xptxas", "-v", "-MD", "-MF", str(depf), "-o", str(tdp / name), str(unit)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        log = res.stdout + res.stderr
        if res.returncode != 0:
            if _cublas_missing(log):  # say what to install, not only nvcc's "No such file"
                raise CompileError(f"{self.name}: {cublas_hint()} ({first_error(log)})\n{log}")
            raise CompileError(f"{first_error(log)}\n{log}")
        return parse_depfile(depf.read_text(), Path.cwd()), log

    def compile(self, arch: str | None = None) -> Build:
        """nvcc -> cubin for one arch (default: the GPU's, else the first default). Cached on disk."""
        arch = arch or target_archs()[0]
        if arch in self._builds:
            return self._builds[arch]
        cubin, logf = self._build(arch, "cubin")
        log = logf.read_text()
        res_by, mangled = named_report(log)
        b = Build(arch=arch, cubin=cubin, log=log, resources=res_by, mangled=mangled)
        self._builds[arch] = b
        return b

    def compile_all(self) -> dict[str, Build]:
        archs = [a for a in target_archs() if self.archs is None or a in self.archs] or list(self.archs or [])
        return {a: self.compile(a) for a in archs}

    def resources(self, kernel: str, arch: str | None = None) -> dict[str, Any]:
        """The ptxas report of one kernel as a plain dict (attached to every record of the kernel)."""
        self._ensure_instantiated(kernel)
        b = self.build_for(kernel, arch or self.default_arch())
        r = b.resources.get(normalize_kernel_name(kernel))
        if r is None:
            raise CompileError(f"{self.name}: no kernel {kernel!r} in the build; kernels: {sorted(b.resources)}")
        d = dict(r.__dict__)
        d["arch"] = b.arch
        return d

    def build_for(self, kernel: str, arch: str | None = None) -> Build:
        """The build holding ``kernel``: the whole file's, or — when that fails — one with only this kernel's
        specialisation, so an error inside another variant's template instantiation does not fail this one.
        (An error outside templates still fails every kernel of the file: there is no build without it.)"""
        try:
            return self.compile(arch)
        except CompileError:
            if "<" not in kernel or len(self.instantiate) <= 1:
                raise
            return self.only(kernel).compile(arch)

    def only(self, kernel: str) -> CudaSource:
        """A copy of this source that instantiates ``kernel`` alone (cached per kernel)."""
        key = normalize_kernel_name(kernel)
        subs = self.__dict__.setdefault("_subsets", {})
        if key not in subs:
            subs[key] = CudaSource(self.path, flags=self.flags, defines=dict(self.defines), instantiate=[kernel],
                                   archs=self.archs, libs=self.libs)
        return subs[key]

    def default_arch(self) -> str:
        archs = target_archs()
        if self.archs:
            ok = [a for a in archs if a in self.archs]
            return ok[0] if ok else self.archs[0]
        return archs[-1]  # without a GPU: the newest default arch (sm_90) is the one reported

    def _ensure_instantiated(self, kernel: str) -> None:
        """Add a template specialisation to the build (a rebuild unless it is there already).

        ``harness.registry.load_all`` primes every registered variant's kernels before the first compile, so the
        set — and hence the cache key — is the same in every process and nothing is compiled twice.
        """
        if "<" not in kernel:
            return
        have = {normalize_kernel_name(k) for k in self.instantiate}
        if normalize_kernel_name(kernel) not in have:
            self.instantiate.append(kernel)
            self._builds.clear()
            self._modules.clear()

    # ------------------------------------------------------------------------------------------- kernel mode
    def kernel(self, name: str) -> Kernel:
        self._ensure_instantiated(name)
        if name not in self._kernel_names:
            self._kernel_names.append(name)
        return Kernel(self, name)

    def interp_library(self, kernel: str | None = None) -> Any:
        """The CPU interpreter's build of this file (harness.interp): entry points for every kernel asked for so
        far; when that build fails, one for ``kernel`` alone (an error in another template specialisation must
        not fail this kernel, as with nvcc)."""
        from harness import interp

        names = interp.kernel_list(self)
        try:
            return interp.library(self, names)
        except CompileError:
            if kernel is None or len(names) <= 1:
                raise
            return interp.library(self, [kernel])

    # ------------------------------------------------------------------------------------------- host mode
    def library(self, arch: str | None = None) -> ctypes.CDLL:
        """Compile the file as a shared library (its host code included) and load it with ctypes. In interpret mode
        (harness.interp.enabled()) the library is the CPU interpreter's build: the same exported functions, run on
        host memory, with memcheck/racecheck/synccheck (a fault raises harness.interp.KernelFault)."""
        from harness import interp

        if interp.enabled():
            return interp.library(self, [])
        arch = arch or self.default_arch()
        if arch in self._libs:
            return self._libs[arch]
        so, _ = self._build(arch, "so")
        if device_arch() is None:
            raise CudaUnavailable(f"{self.name}: built {so.name} for {arch}; no GPU here to load it on")
        lib = ctypes.CDLL(str(so))
        self._libs[arch] = lib
        return lib

    def library_resources(self, arch: str | None = None) -> dict[str, Resources]:
        """Resource report of a host-mode build (builds it if needed, without loading it)."""
        _, logf = self._build(arch or self.default_arch(), "so")
        return named_report(logf.read_text())[0]


def stream_of(t: Any) -> int:
    """The CUDA stream handle a host-mode launcher takes for work on tensor ``t``: torch's current stream on a GPU,
    the default stream (0) for CPU tensors (the CPU interpreter runs every launch on it)."""
    if getattr(t, "is_cuda", False):
        import torch

        return int(torch.cuda.current_stream().cuda_stream)
    return 0


def ptr(t: Any) -> int:
    """Device address of a torch tensor (for host-mode libraries and kernel arguments). In interpret mode the
    tensor's storage also becomes valid device memory for the library's kernels (memcheck)."""
    if t is None:
        return 0
    from harness import interp

    if not getattr(t, "is_cuda", False) and interp.enabled():
        interp.register(t)
    return int(t.data_ptr())


def _convert(a: Any) -> tuple[str, Any]:
    """-> ("ptr", int) or ("scalar", numpy scalar)."""
    if hasattr(a, "data_ptr"):
        if not a.is_cuda:
            raise CudaUnavailable("CUDA kernel argument is a CPU tensor")
        return "ptr", int(a.data_ptr())
    return "scalar", scalar_arg(a)


# ----------------------------------------------------------------------------------------------- loaders
@functools.lru_cache(None)
def loader_name() -> str:
    """'pycuda' or 'cuda.core' (the first importable, unless WB_CUDA_LOADER forces one)."""
    forced = os.environ.get("WB_CUDA_LOADER")
    order = [forced] if forced else ["pycuda", "cuda.core"]
    errors = []
    for name in order:
        try:
            if name == "pycuda":
                import pycuda.driver  # noqa: F401
            elif name == "cuda.core":
                _cuda_core()
            else:
                raise ImportError(f"unknown loader {name!r} (pycuda | cuda.core)")
            return name
        except Exception as e:  # ImportError, or a broken install
            errors.append(f"{name}: {e}")
    raise CudaUnavailable("no CUDA loader importable (" + "; ".join(errors) + ")")


def _cuda_core():
    try:
        import cuda.core as cc

        cc.Device  # noqa: B018  (1.x exports at top level)
        return cc
    except (ImportError, AttributeError):
        import cuda.core.experimental as cc

        return cc


class Kernel:
    """A launchable kernel from a CudaSource (kernel mode)."""

    def __init__(self, src: CudaSource, name: str):
        self.src, self.name = src, name
        self._fn = None
        self._max_dyn = 0

    def resources(self) -> dict[str, Any]:
        return self.src.resources(self.name)

    def set_max_dynamic_shared(self, nbytes: int) -> None:
        """Opt in to more than 48 KB of dynamic shared memory (cudaFuncSetAttribute on the host side)."""
        self._max_dyn = nbytes
        if self._fn is not None:
            self._apply_max_dyn()

    def _load(self):
        if self._fn is not None:
            return self._fn
        import torch

        if not torch.cuda.is_available():
            raise CudaUnavailable("no GPU: CUDA kernels are compiled here, not run")
        torch.cuda.init()
        torch.empty(1, device="cuda")  # make torch create (and retain) the primary context first
        src = self.src
        build = src.build_for(self.name)
        if build is not src._builds.get(build.arch):  # the whole file failed: this kernel has a build of its own
            src = src.only(self.name)
        key = normalize_kernel_name(self.name)
        sym = build.mangled.get(key)
        if sym is None:
            raise CompileError(f"{self.src.name}: no kernel {self.name!r}; kernels: {sorted(build.mangled)}")
        loader = loader_name()
        if loader == "pycuda":
            import pycuda.autoprimaryctx  # noqa: F401  (retains the primary context torch uses)
            import pycuda.driver as drv

            mod = src._modules.get(build.arch)
            if mod is None:
                mod = src._modules[build.arch] = drv.module_from_buffer(build.cubin.read_bytes())
            self._fn = ("pycuda", mod.get_function(sym))
        else:
            cc = _cuda_core()
            dev = cc.Device(torch.cuda.current_device())
            dev.set_current()
            mod = src._modules.get(build.arch)
            if mod is None:
                mod = src._modules[build.arch] = cc.ObjectCode.from_cubin(build.cubin.read_bytes())
            self._fn = ("cuda.core", mod.get_kernel(sym))
        if self._max_dyn:
            self._apply_max_dyn()
        return self._fn

    def _apply_max_dyn(self) -> None:
        kind, fn = self._fn
        if kind == "pycuda":
            import pycuda.driver as drv

            fn.set_attribute(drv.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, int(self._max_dyn))
            return
        from cuda.bindings import driver

        attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        import torch

        dev = torch.cuda.current_device()
        handle = fn.handle
        err = None
        try:
            (err,) = driver.cuKernelSetAttribute(attr, int(self._max_dyn), handle, dev)
        except Exception:
            (err,) = driver.cuFuncSetAttribute(handle, attr, int(self._max_dyn))
        if int(err) != 0:
            raise RuntimeError(f"setting max dynamic shared memory to {self._max_dyn} failed: {err}")

    def __call__(self, grid, block, *args, shared: int = 0) -> None:
        grid = tuple(grid) if isinstance(grid, (tuple, list)) else (int(grid),)
        block = tuple(block) if isinstance(block, (tuple, list)) else (int(block),)
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        block = tuple(int(b) for b in block) + (1,) * (3 - len(block))
        if min(grid) < 1 or min(block) < 1:
            raise ValueError(f"{self.name}: empty launch grid={grid} block={block}")
        if shared > 48 * 1024 and self._max_dyn < shared:
            self.set_max_dynamic_shared(shared)
        from harness import interp

        if interp.enabled():  # the CPU interpreter: CPU tensors are valid arguments
            lib = self.src.interp_library(self.name)
            lib.launch(self.name, grid, block, int(shared), args, max_dyn=self._max_dyn or -1)
            return
        kind, fn = self._load()
        conv = [_convert(a) for a in args]
        import torch

        stream = torch.cuda.current_stream().cuda_stream
        if kind == "pycuda":
            import pycuda.driver as drv

            vals = [np.uintp(v) if k == "ptr" else v for k, v in conv]
            fn(*vals, grid=grid, block=block, shared=int(shared), stream=_pycuda_stream(drv, stream))
        else:
            cc = _cuda_core()
            vals = [v if k == "ptr" else v for k, v in conv]  # Python int -> intptr_t in cuda.core
            cfg = cc.LaunchConfig(grid=grid, block=block, shmem_size=int(shared))
            cc.launch(_core_stream(cc, stream), cfg, fn, *vals)


_STREAMS: dict[Any, Any] = {}


def _pycuda_stream(drv, handle: int):
    """pycuda has no public 'wrap a foreign stream'; the legacy default stream (0) is torch's default too."""
    if handle == 0:
        return None
    # torch is on a non-default stream: pycuda launches on stream 0 would not be ordered with it
    raise CudaUnavailable("pycuda launches only on the default stream; run under torch's default stream")


def _core_stream(cc, handle: int):
    s = _STREAMS.get(("core", handle))
    if s is None:
        s = _STREAMS[("core", handle)] = cc.Stream.from_handle(handle)
    return s


def prebuild(sources: list[CudaSource], workers: int | None = None) -> None:
    """Compile several sources for their target archs in parallel threads (nvcc runs as subprocesses), filling the
    disk cache before the worker processes need the cubins. Failures are left for each variant's record to report."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(src, arch) for src in dict.fromkeys(sources)
            for arch in ([a for a in target_archs() if src.archs is None or a in src.archs] or [src.default_arch()])]
    if not jobs or nvcc_path() is None:
        return

    def build(job):
        try:
            job[0].compile(job[1])
        except (CompileError, OSError):
            pass

    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as ex:
        list(ex.map(build, jobs))
