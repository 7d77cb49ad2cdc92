"""Bring your own file: a student's ``.cu`` / ``.cuh`` / Triton ``.py``, unmodified, as variants of a family.

    python bench/run.py --kernel sgemm  --cu matrix_multiply/kernels.cuh      # kernels.cuh#1 ... kernels.cuh#5
    python bench/run.py --kernel conv1d --cu depth_conv1d/conv1d_kernel.cuh   # its inline launch_kernel(...)
    python bench/run.py --kernel saxpy  --cu vector_addition/saxpy.cu         # a bare __global__ kernel + main()
    python bench/run.py --kernel saxpy  --triton my_saxpy.py                  # a Triton launcher

How a CUDA file is called. The harness never edits the file; it compiles a small generated unit ("shim") that
``#include``s it (so its relative includes such as ``../cuda_error.cuh`` resolve as usual) and defines one
``extern "C" int wb_byo_launch(...)`` that ctypes can find. The shim calls, in this order of preference:

* ``--entry NAME`` (a launcher function, or a ``__global__`` kernel, template arguments allowed);
* a host *launcher* defined in the file under one of the family's launcher names (``launch_kernel``...). It may be
  ``inline`` or have C++ linkage: the shim's call is what makes the compiler emit it. When one of its parameters is
  the kernel number (sgemm's ``kernel_num``), every number becomes a variant ``file#N``: the numbers are the
  ``case N:`` labels of its ``switch (kernel_num)`` (or ``kernel_num == N`` tests), or ``--numbers 1-5``;
* the family's kernel name (``saxpy``...) or the file's only ``__global__`` kernel, launched with the family's
  default geometry: a 1-D grid over every output element, 256 threads (``--block 128``), or 2-D blocks
  (``--block 32x8``: x over the output's last dimension, y over the rest).

Parameters are matched **by name** to the family's roles (``CALLING_CONVENTION`` in each family module; d_/dev_
prefixes and _ptr suffixes ignored), so ``launch_kernel(kernel_num, M, K, N, alpha, d_A, d_B, beta, d_C)`` gets M, K
and N in its own order. The file is compiled into a shared library with ``-Dmain=__wb_student_main``, so its own
``main()`` is just an unused function. Files that include cuBLAS are linked with ``-lcublas``.

Without a GPU each variant reports ``compiled`` with the ptxas report of the kernels its number launches, and only
after the built library has been loaded with ctypes and ``wb_byo_launch`` found in it: a launcher that is declared but
not defined, or a missing library, is a ``compile_error`` here exactly as it would be on the GPU. A compile error
names the function it is in and the kernel numbers that need it; a launcher holds every kernel of the file, so the
other numbers cannot be built either and say which kernel blocks them.

Worker processes re-create the variants from ``WB_BYO`` (JSON specs) through ``WB_FAMILIES=harness.byo``.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.cuda import CompileError, CudaSource, named_report, normalize_kernel_name

SYMBOL = "wb_byo_launch"
ENV = "WB_BYO"
DEFAULT_BLOCK = 256
_KEYWORDS = {"if", "for", "while", "switch", "catch", "sizeof", "return", "do", "else", "decltype", "alignof",
             "static_assert", "__launch_bounds__", "defined"}


class ByoError(ValueError):
    """The file cannot be bound to the family (no launcher or kernel found, an unmatched parameter): one line."""


# ----------------------------------------------------------------------------------------------- C source scanning
def strip_comments(text: str) -> str:
    """Comments and string/char literal contents blanked, newlines kept (line numbers and offsets stay valid)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + " " * max(0, j - i - 2) + (c if j - i >= 2 else ""))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


@dataclass
class Func:
    name: str
    params: list[tuple[str, str]]  # (type, name)
    is_global: bool
    is_template: bool
    start_line: int
    end_line: int
    body: str


def split_params(text: str) -> list[tuple[str, str]]:
    """'long kernel_num, const float* d_A, uint K = 3' -> [('long', 'kernel_num'), ('const float*', 'd_A'), ...]."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        p = p.split("=", 1)[0].strip()
        p = re.sub(r"\[[^\]]*\]\s*$", "", p).strip()
        if not p or p == "void":
            continue
        m = re.match(r"^(.*?)([A-Za-z_]\w*)$", p, re.S)
        if m and m.group(1).strip():
            out.append((" ".join(m.group(1).split()), m.group(2)))
        else:  # an unnamed parameter: its type only
            out.append((p, ""))
    return out


_HEADER = re.compile(r"([A-Za-z_]\w*)\s*\(((?:[^()]|\([^()]*\))*)\)\s*(?:const\s*|noexcept\s*|override\s*|"
                     r"final\s*|->[^{;]*)*$", re.S)


def _blank_directives(src: str) -> str:
    """Preprocessor lines (with their backslash continuations) emptied: a macro's braces are not code structure."""
    out, cont = [], False
    for ln in src.split("\n"):
        if cont or ln.lstrip().startswith("#"):
            cont = ln.rstrip().endswith("\\")
            out.append("")
        else:
            out.append(ln)
    return "\n".join(out)


def functions(text: str) -> list[Func]:
    """Every function *defined* at namespace scope in ``text`` (comments already stripped or not)."""
    src = _blank_directives(strip_comments(text))
    funcs: list[Func] = []
    stack: list[tuple[str, int, Any]] = []  # (kind, offset of '{', pending Func info)
    last = 0  # offset just after the last ';', '{' or '}' at any level
    for i, ch in enumerate(src):
        if ch == ";":
            last = i + 1
        elif ch == "{":
            info = None
            if not any(k == "func" for k, _, _ in stack):
                raw = header = src[last:i]
                m = _HEADER.search(header)
                if m and m.group(1) not in _KEYWORDS and not re.search(r"\b(struct|class|namespace|enum)\b", header):
                    at = [x.start() for x in re.finditer(r"\b" + re.escape(m.group(1)) + r"\s*\(", raw)]
                    line = src.count("\n", 0, last + (at[-1] if at else 0)) + 1
                    info = (m.group(1), split_params(m.group(2)), "__global__" in header,
                            bool(re.search(r"\btemplate\s*<", header)), line)
            stack.append(("func" if info else "other", i, info))
            last = i + 1
        elif ch == "}":
            if stack:
                kind, start, info = stack.pop()
                if kind == "func":
                    name, params, glob, tpl, line = info
                    funcs.append(Func(name, params, glob, tpl, line, src.count("\n", 0, i) + 1, src[start + 1:i]))
            last = i + 1
    return funcs


def declared(path: Path, name: str) -> Func | None:
    """A prototype ``ret name(type param, ...);`` of a function the file does not define (every parameter typed and
    named, so a call statement never matches)."""
    for f in [path, *_local_headers(path)]:
        src = strip_comments(f.read_text(errors="replace"))
        for m in re.finditer(r"\b(?:void|int|cudaError_t|bool|float|double)\s+(?:__host__\s+)?" + re.escape(name)
                             + r"\s*\(([^;{}()]*)\)\s*;", src):
            params = split_params(m.group(1))
            if all(t and n for t, n in params):
                line = src.count("\n", 0, m.start()) + 1
                return Func(name, params, False, False, line, line, "")
    return None


def _block_after(text: str, pos: int) -> str:
    """The balanced {...} starting at or after ``pos`` (its inside), or the statement up to ';'."""
    j = pos
    while j < len(text) and text[j] in " \t\r\n":
        j += 1
    if j < len(text) and text[j] == "{":
        depth = 0
        for k in range(j, len(text)):
            depth += text[k] == "{"
            depth -= text[k] == "}"
            if depth == 0:
                return text[j + 1:k]
        return text[j + 1:]
    end = text.find(";", j)
    return text[j:end + 1 if end >= 0 else len(text)]


def kernel_numbers(func: Func, num_param: str) -> dict[int, str]:
    """Kernel number -> the code that runs for it: the ``case N:`` arms of ``switch (num_param)`` and the bodies of
    ``if (num_param == N)`` tests in the launcher."""
    body = strip_comments(func.body)
    arms: dict[int, str] = {}
    for sw in re.finditer(r"\bswitch\s*\(\s*" + re.escape(num_param) + r"\s*\)", body):
        block = _block_after(body, sw.end())
        labels = list(re.finditer(r"\b(?:case\s+\(?\s*(\d+)[uUlL]*\s*\)?|default)\s*:", block))
        for k, lab in enumerate(labels):
            if lab.group(1) is None:
                continue
            end = labels[k + 1].start() if k + 1 < len(labels) else len(block)
            arms[int(lab.group(1))] = block[lab.end():end]
    for m in re.finditer(r"\b" + re.escape(num_param) + r"\s*==\s*(\d+)|\b(\d+)\s*==\s*" + re.escape(num_param),
                         body):
        n = int(m.group(1) or m.group(2))
        close = body.find(")", m.end())
        arms.setdefault(n, _block_after(body, close + 1) if close >= 0 else "")
    return dict(sorted(arms.items()))


_LAUNCH = re.compile(r"([A-Za-z_]\w*)\s*(?:<(?:[^<>;]|<[^<>;]*>)*>)?\s*<<<")
_CALL = re.compile(r"([A-Za-z_]\w*)\s*(?:<(?:[^<>;]|<[^<>;]*>)*>)?\s*\(")


def launched(code: str, funcs: dict[str, Func], depth: int = 3, seen: set[str] | None = None) -> list[str]:
    """Base names of the ``__global__`` kernels that ``code`` launches with <<<...>>>, following calls into other
    functions of the file (``depth`` levels) and cudaLaunchKernel-style references to kernels by name."""
    seen = seen if seen is not None else set()
    out = [m.group(1) for m in _LAUNCH.finditer(code)]
    for m in _CALL.finditer(code):
        f = funcs.get(m.group(1))
        if f is None or f.name in seen:
            continue
        if f.is_global:  # passed by name to cudaLaunchKernel / cudaLaunchKernelEx, or called via a wrapper macro
            out.append(f.name)
        elif depth > 0:
            seen.add(f.name)
            out += launched(f.body, funcs, depth - 1, seen)
    for name, f in funcs.items():  # kernels referenced without a call: cudaLaunchKernel((void*)kern, ...)
        if f.is_global and re.search(r"\b" + re.escape(name) + r"\b", code) and name not in out:
            out.append(name)
    return list(dict.fromkeys(out))


def uses(code: str, funcs: dict[str, Func], depth: int = 3, seen: set[str] | None = None) -> set[str]:
    """Every function of the file that ``code`` reaches (kernels and helpers)."""
    seen = seen if seen is not None else set()
    for name, f in funcs.items():
        if name not in seen and re.search(r"\b" + re.escape(name) + r"\b", code):
            seen.add(name)
            if depth > 0:
                uses(f.body, funcs, depth - 1, seen)
    return seen


# ----------------------------------------------------------------------------------------------- roles
def convention(family: str) -> dict[str, Any]:
    mod = importlib.import_module(f"harness.families.{family}")
    conv = getattr(mod, "CALLING_CONVENTION", None)
    if conv is None:
        from harness.registry import REGISTRY

        have = [n for n in REGISTRY if _is_family_module(n)
                and getattr(importlib.import_module(f"harness.families.{n}"), "CALLING_CONVENTION", None)]
        raise ByoError(f"family {family!r} has no calling convention for your own files; families that take "
                       f"--cu/--triton: {', '.join(have)}")
    return conv


def _is_family_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(f"harness.families.{name}") is not None
    except ImportError:
        return False


def _norm(name: str) -> str:
    n = re.sub(r"^(d|dev|device|g|gpu|p)_", "", name)
    return re.sub(r"_(d|dev|ptr|gpu)$", "", n)


def match_role(param: str, roles: dict[str, tuple]) -> str | None:
    """A parameter name -> the role it plays (exact, then aliases, then case-insensitively when unambiguous)."""
    for cand in (param, _norm(param)):
        for role, (_, _, aliases) in roles.items():
            if cand == role or cand in aliases:
                return role
    for cand in (param.lower(), _norm(param).lower()):
        hits = [r for r, (_, _, al) in roles.items() if cand == r.lower() or cand in (a.lower() for a in al)]
        if len(set(hits)) == 1:
            return hits[0]
    return None


def bind(params: list[str], roles: dict[str, tuple], what: str) -> list[str]:
    """Parameter names -> roles, or a ByoError naming the parameter that fits none."""
    out = []
    for p in params:
        r = match_role(p, roles)
        if r is None:
            raise ByoError(f"{what}: parameter {p!r} matches no role of this family; the roles (and accepted names) "
                           f"are {', '.join(f'{k} ({kind})' for k, (kind, _, _) in roles.items())}")
        out.append(r)
    missing = [r for r, (kind, _, _) in roles.items() if kind == "out" and r not in out]
    if missing:
        raise ByoError(f"{what}: no parameter for the output {missing[0]!r}")
    return out


# ----------------------------------------------------------------------------------------------- the shim build
@dataclass
class ByoSource(CudaSource):
    """A student's file compiled with a generated ``extern "C"`` shim into a shared library (host mode)."""

    shim: str = ""  # the call statement inside wb_byo_launch
    numbers: dict[int, tuple[str, ...]] = field(default_factory=dict)  # kernel number -> kernels its arm launches
    # how the shim calls the file, for the X-ray's launch geometry (launch_plan): the launcher or kernel, its
    # parameters as (name, role), the family's convention and the default launch's block (kernel mode)
    callee_func: Any = field(default=None, repr=False, compare=False)
    params: list[tuple[str, str]] = field(default_factory=list, repr=False, compare=False)
    conv: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    mode: str = "launcher"
    callee: str = ""
    block: tuple[int, int] = (DEFAULT_BLOCK, 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._loaded: dict[str, str | None] = {}

    @property
    def name(self) -> str:
        return Path(self.path).name

    def __hash__(self) -> int:
        return hash((str(self.path), self.shim))

    def shim_text(self) -> str:
        return f"""// generated by harness/byo.py: the student's file, unmodified, and a C entry point for ctypes
#include <cstdio>
#include <exception>
#include <cuda_runtime.h>
#include "{Path(self.path).resolve()}"
static char wb_byo_msg[1024];
extern "C" const char* wb_byo_message(void) {{ return wb_byo_msg; }}
extern "C" int {SYMBOL}(long long wb_num, void* const* wb_p, const long long* wb_i, const double* wb_f,
                        unsigned wb_gx, unsigned wb_gy, unsigned wb_gz, unsigned wb_bx, unsigned wb_by,
                        unsigned wb_bz) {{
  (void)wb_num; (void)wb_p; (void)wb_i; (void)wb_f;
  (void)wb_gx; (void)wb_gy; (void)wb_gz; (void)wb_bx; (void)wb_by; (void)wb_bz;
  wb_byo_msg[0] = 0;
  (void)cudaGetLastError();
  try {{
    {self.shim};
  }} catch (const std::exception& e) {{
    std::snprintf(wb_byo_msg, sizeof wb_byo_msg, "C++ exception from the launcher: %s", e.what());
    return -1;
  }} catch (...) {{
    std::snprintf(wb_byo_msg, sizeof wb_byo_msg, "unknown C++ exception from the launcher");
    return -1;
  }}
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {{
    std::snprintf(wb_byo_msg, sizeof wb_byo_msg, "%s: %s", cudaGetErrorName(err), cudaGetErrorString(err));
    return (int)err;
  }}
  return 0;
}}
"""

    def _unit(self, tmp: Path) -> Path:
        unit = tmp / "wb_byo_shim.cu"
        unit.write_text(self.shim_text())
        return unit

    # the shim is generated into the build folder, which the dependency-based cache key leaves out: key it here
    def _config_key(self, arch: str, kind: str) -> str:
        return hashlib.sha256((super()._config_key(arch, kind) + self.shim_text()).encode()).hexdigest()[:24]

    def _key(self, arch: str, kind: str) -> str:  # the content-hash cache key of older harness.cuda versions
        return hashlib.sha256((super()._key(arch, kind) + self.shim_text()).encode()).hexdigest()[:24]

    def _ensure_instantiated(self, kernel: str) -> None:
        pass  # kernel names here are labels of what a launcher runs; the shim instantiates through the call

    def compile(self, arch: str | None = None):  # prebuild: the shared library is the only artefact
        from harness.cuda import Build

        arch = arch or self.default_arch()
        so, logf = self._build(arch, "so")
        res_by, mangled = named_report(logf.read_text())
        return Build(arch=arch, cubin=so, log=logf.read_text(), resources=res_by, mangled=mangled)

    def loadable(self, so: Path) -> str | None:
        """None when ctypes loads the library and finds wb_byo_launch in it (what the GPU run does), else why not."""
        key = str(so)
        if key not in self._loaded:
            try:
                lib = ctypes.CDLL(key)
                getattr(lib, SYMBOL)
                self._loaded[key] = None
            except (OSError, AttributeError) as e:
                self._loaded[key] = f"{type(e).__name__}: {e}"
        return self._loaded[key]

    def resources(self, kernel: str, arch: str | None = None) -> dict[str, Any]:
        arch = arch or self.default_arch()
        failed = self.__dict__.setdefault("_failed", {})
        if arch in failed:  # nvcc's failures are not cached on disk: one failed build per process, not one per kernel
            raise CompileError(self.explain(failed[arch], kernel))
        try:
            so, logf = self._build(arch, "so")
        except CompileError as e:
            failed[arch] = str(e)
            raise CompileError(self.explain(str(e), kernel)) from None
        why = self.loadable(so)
        if why:
            raise CompileError(f"{self.name}: the library built but the GPU run could not call it: {why} (a function "
                               f"the launcher calls is declared but not defined in the file, or a library is missing)")
        res_by, _ = named_report(logf.read_text())
        if "#" in kernel:  # the arm launches no kernel we could name: report every kernel of the library
            return {"arch": arch, "launcher": SYMBOL, "kernels": {k: dict(r.__dict__) for k, r in res_by.items()}}
        want = normalize_kernel_name(kernel)
        hits = {k: r for k, r in res_by.items() if k == want or k.split("<", 1)[0] == want}
        if not hits:
            raise CompileError(f"{self.name}: no kernel {kernel!r} in the build (the launcher never instantiates it?); "
                               f"kernels: {sorted(res_by)}")
        name, r = max(hits.items(), key=lambda kv: kv[1].registers)
        d = dict(r.__dict__, arch=arch, kernel=name, launcher=SYMBOL)
        if len(hits) > 1:
            d["specialisations"] = {k: dict(v.__dict__) for k, v in hits.items()}
        return d

    def launch_plan(self, number: int, shape) -> list[Any]:
        """The kernels kernel ``number`` launches at ``shape``, each with the grid, block and dynamic shared memory
        read from its ``<<<>>>`` (harness.launches; kernel mode: the harness's own default launch)."""
        from harness import launches

        if self.mode == "kernel":
            grid, blk = geometry(self.conv, shape, self.block)
            return [launches.Launch(base=self.callee.split("<", 1)[0].strip(),
                                    kernel=normalize_kernel_name(self.callee),
                                    text=f"{self.callee}<<<grid, {blk[0]}x{blk[1]}>>> (the harness's launch)",
                                    block=blk, grid=grid, dyn_smem=0)]
        path = Path(self.path)
        files = [path, *_local_headers(path)]
        texts = [strip_comments(f.read_text(errors="replace")) for f in files]
        macros: dict = {}
        for t in texts:
            macros.update(launches.macros_of(t))
        env: dict[str, Any] = {}
        for t in texts:  # namespace-scope constants (constexpr int TILE = 32;), function bodies left out
            for stmt in launches.statements(_namespace_scope(t)):
                launches._declare(stmt, env, macros)
        roles = self.conv.get("roles", {})
        for name, role in self.params:
            kind, key, _ = roles[role]
            if kind == "dim":
                env[name] = int(shape[key])
            elif kind == "num":
                env[name] = int(number)
        fn = self.callee_func
        funcs = {f.name: f for t in texts for f in functions(t)}
        return launches.read_launches(fn.body if fn is not None else "", env, funcs, macros)

    def explain(self, err: str, kernel: str) -> str:
        """nvcc's error, with the function it is in and which kernel numbers need it; for a kernel that does not
        need it, that it is blocked (one library holds every kernel) rather than broken."""
        first, _, log = err.partition("\n")
        broken = broken_functions(log or first, Path(self.path))
        if not broken:
            return err
        funcs = {f.name: f for f in _file_functions(Path(self.path))}
        need = {n for n, ks in self.numbers.items() if any(b in uses(" ".join(ks), funcs) | set(ks) for b in broken)}
        where = ", ".join(sorted(broken))
        mine = {n for n, ks in self.numbers.items() if kernel in ks or kernel.endswith(f"#{n}")}
        tag = f" (kernel #{', #'.join(map(str, sorted(need)))})" if need else ""
        if self.numbers and mine and not (mine & need) and need:
            return (f"blocked: {self.name} does not compile, the error is in {where}{tag}, not in this kernel; the "
                    f"launcher holds every kernel, so none can be built until it compiles: {first}\n{log}")
        return f"{first} [in {where}{tag}]\n{log}"


def _namespace_scope(text: str) -> str:
    """``text`` with every function body blanked (lines kept): what is declared at namespace scope."""
    lines = text.split("\n")
    for f in functions(text):
        for i in range(f.start_line, min(f.end_line, len(lines))):  # the header line itself stays
            lines[i] = ""
    return "\n".join(lines)


def _file_functions(path: Path) -> list[Func]:
    try:
        return functions(path.read_text(errors="replace"))
    except OSError:
        return []


def broken_functions(log: str, path: Path) -> list[str]:
    """Names of the functions of the student's file (or its local headers) that nvcc's error lines fall in."""
    files = {p: p for p in [path.resolve(), *_local_headers(path)]}
    out: list[str] = []
    for m in re.finditer(r"^(.*?)\((\d+)\): (?:catastrophic )?error", log, re.M):
        f = Path(m.group(1).strip())
        f = f if f.is_absolute() else (path.parent / f)
        if f.resolve() not in files:
            continue
        line = int(m.group(2))
        for fn in _file_functions(f.resolve()):
            if fn.start_line <= line <= fn.end_line and fn.name not in out:
                out.append(fn.name)
    return out


# ----------------------------------------------------------------------------------------------- specs
@dataclass
class Spec:
    family: str
    path: str
    kind: str = "cu"  # "cu" | "triton"
    entry: str | None = None
    block: str | None = None
    numbers: str | None = None


def parse_numbers(text: str) -> list[int]:
    """'1-5' / '1,3,5' / '1-3,7' -> sorted numbers."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            out.update(range(int(m.group(1)), int(m.group(2)) + 1))
        elif part.isdigit():
            out.add(int(part))
        else:
            raise ByoError(f"--numbers takes e.g. 1-5 or 1,3,5; got {text!r}")
    return sorted(out)


def parse_block(text: str | None) -> tuple[int, int]:
    if not text:
        return DEFAULT_BLOCK, 1
    m = re.fullmatch(r"(\d+)(?:[x×*,](\d+))?", text.strip())
    if not m or int(m.group(1)) < 1 or int(m.group(2) or 1) < 1 or int(m.group(1)) * int(m.group(2) or 1) > 1024:
        raise ByoError(f"--block takes N or XxY with at most 1024 threads, e.g. 256 or 32x8; got {text!r}")
    return int(m.group(1)), int(m.group(2) or 1)


def geometry(conv: dict, shape, block: tuple[int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The default launch: one thread per output element, 1-D (bx) or 2-D (bx over columns, by over rows)."""
    rows, cols = conv["grid"](shape)
    bx, by = block
    if by == 1:
        return (max(1, math.ceil(rows * cols / bx)), 1, 1), (bx, 1, 1)
    return (max(1, math.ceil(cols / bx)), max(1, math.ceil(rows / by)), 1), (bx, by, 1)


# ----------------------------------------------------------------------------------------------- CUDA variants
@dataclass
class Binding:
    """How one CUDA file is called: the source (with its shim) and, per variant, the kernel number and labels."""

    source: ByoSource
    roles: list[str]  # the callee's parameters in order, as roles
    variants: list[tuple[str, int, tuple[str, ...]]]  # (variant name, kernel number or -1, kernel labels)
    launch_mode: str  # "launcher" | "kernel"
    callee: str
    description: str


def bind_cuda(spec: Spec) -> Binding:
    path = Path(spec.path).expanduser().resolve()
    if not path.is_file():
        raise ByoError(f"--cu {spec.path}: no such file")
    conv = convention(spec.family)
    roles = conv["roles"]
    funcs_list = functions(path.read_text(errors="replace"))
    funcs = {f.name: f for f in funcs_list}
    for inc in _local_headers(path):
        for f in functions(inc.read_text(errors="replace")):
            funcs.setdefault(f.name, f)
    entry = spec.entry
    base = entry.split("<", 1)[0].strip() if entry else None
    if base and base not in funcs:
        raise ByoError(f"--entry {entry}: no function {base!r} defined in {path.name} (or its local headers); "
                       f"defined: {', '.join(sorted(funcs)) or 'none'}")
    if base is None:
        base = next((n for n in conv["launcher"] if n in funcs and not funcs[n].is_global), None)
    if base is None:  # a launcher only declared here (defined in another .cu): bound, and the load check reports it
        for name in conv["launcher"]:
            proto = declared(path, name)
            if proto is not None:
                funcs[name] = proto
                base = name
                break
    if base is None:
        kernels = [f for f in funcs_list if f.is_global]
        named = [f for f in kernels if f.name in conv["entry"]]
        pick = named or (kernels if len(kernels) == 1 else [])
        if not pick:
            raise ByoError(f"{path.name}: no launcher ({' / '.join(conv['launcher'])}) and "
                           f"{'no __global__ kernel' if not kernels else 'several kernels'}"
                           f"{': ' + ', '.join(f.name for f in kernels) if kernels else ''}; name one with --entry")
        base = pick[0].name
    fn = funcs[base]
    callee = entry or base
    if fn.is_template and "<" not in callee:
        raise ByoError(f"{base} is a template: give its arguments, e.g. --entry '{base}<32>'")
    names = [n for _, n in fn.params]
    if "" in names:
        raise ByoError(f"{base}: every parameter needs a name to be matched to a role")
    bound = bind(names, roles, f"{path.name}: {base}({', '.join(names)})")
    counters = {"in": 0, "out": 0, "dim": 0, "scalar": 0}
    args = []
    for r in bound:
        kind = roles[r][0]
        if kind in ("in", "out"):
            args.append(f"(float*)wb_p[{counters['in'] + counters['out']}]")
            counters[kind] += 1
        elif kind == "dim":
            args.append(f"wb_i[{counters['dim']}]")
            counters["dim"] += 1
        elif kind == "scalar":
            args.append(f"wb_f[{counters['scalar']}]")
            counters["scalar"] += 1
        else:
            args.append("wb_num")
    if fn.is_global:
        call = f"{callee}<<<dim3(wb_gx, wb_gy, wb_gz), dim3(wb_bx, wb_by, wb_bz)>>>({', '.join(args)})"
        mode = "kernel"
    else:
        call = f"{callee}({', '.join(args)})"
        mode = "launcher"
    text = "\n".join(f.read_text(errors="replace") for f in [path, *_local_headers(path)])
    libs = ("cublas",) if re.search(r"#\s*include\s*[<\"]cublas", text) else ()
    if re.search(r"#\s*include\s*[<\"]cuda\.h[>\"]", text) or re.search(r"\bcu[A-Z]\w+\s*\(", strip_comments(text)):
        libs += ("cuda",)  # driver-API calls (cuTensorMapEncodeTiled...)
    src = ByoSource(path, defines={"main": "__wb_student_main"}, libs=libs, shim=call, callee_func=fn,
                    params=list(zip(names, bound)), conv=conv, mode=mode, callee=callee,
                    block=parse_block(spec.block))
    from harness.cuda import target_archs

    src.archs = (target_archs()[-1],)  # one build: the GPU's arch, or the newest default without a GPU
    variants: list[tuple[str, int, tuple[str, ...]]] = []
    kinds = [roles[r][0] for r in bound]
    if "num" in kinds:
        num_param = names[kinds.index("num")]
        arms = kernel_numbers(fn, num_param)
        numbers = parse_numbers(spec.numbers) if spec.numbers else sorted(arms)
        if not numbers:
            raise ByoError(f"{path.name}: {base}() takes a kernel number ({num_param}) but no `case N:` or "
                           f"`{num_param} == N` was found in it; say which with --numbers 1-5")
        for n in numbers:
            labels = tuple(launched(arms.get(n, ""), funcs)) or (f"{base}#{n}",)
            variants.append((f"{path.name}#{n}", n, labels))
            src.numbers[n] = labels
    else:
        labels = (base,) if fn.is_global else (tuple(launched(fn.body, funcs)) or (f"{base}#0",))
        variants.append((path.name, -1, labels))
    desc = (f"{path.name}: {callee}({', '.join(names)})" if mode == "launcher" else
            f"{path.name}: {callee}<<<{'default ' if not spec.block else ''}grid, "
            f"block {spec.block or DEFAULT_BLOCK}>>>")
    return Binding(src, bound, variants, mode, callee, desc)


def _local_headers(path: Path, seen: set[Path] | None = None) -> list[Path]:
    """Every header that ``path`` includes with quotes, relative to the including file, recursively."""
    seen = seen if seen is not None else {path.resolve()}
    out = []
    for inc in re.findall(r'^\s*#\s*include\s+"([^"]+)"', path.read_text(errors="replace"), re.M):
        p = (path.parent / inc).resolve()
        if p.is_file() and p not in seen:
            seen.add(p)
            out += [p, *_local_headers(p, seen)]
    return out


def _marshal(roles_order: list[str], roles: dict, inputs: dict, out: dict | None, shape) -> tuple[list, list, list]:
    ptrs, ints, floats = [], [], []
    for r in roles_order:
        kind, key, _ = roles[r]
        if kind == "in":
            ptrs.append(inputs[key].data_ptr())
        elif kind == "out":
            ptrs.append(out[key].data_ptr())
        elif kind == "dim":
            ints.append(int(shape[key]))
        elif kind == "scalar":
            floats.append(float(inputs[key]))
    return ptrs, ints, floats


def shim(lib):
    """The generated shim's entry point (SYMBOL) in ``lib``, a GPU build or an interpreted one, with its C signature:
    call(number, ptrs, ints, floats, grid, block) returns None, or the launcher's error message."""
    f = getattr(lib, SYMBOL)
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_longlong, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_longlong),
                  ctypes.POINTER(ctypes.c_double)] + [ctypes.c_uint] * 6
    msg = lib.wb_byo_message
    msg.restype = ctypes.c_char_p

    def call(number: int, ptrs: list, ints: list, floats: list, grid=(1, 1, 1), block=(1, 1, 1)) -> str | None:
        rc = f(number, (ctypes.c_void_p * max(1, len(ptrs)))(*ptrs), (ctypes.c_longlong * max(1, len(ints)))(*ints),
               (ctypes.c_double * max(1, len(floats)))(*floats), *grid, *block)
        return None if rc == 0 else (msg().decode(errors="replace") or f"error {rc}")

    return call


def cuda_variant_fn(b: Binding, conv: dict, number: int, block: tuple[int, int]):
    roles = conv["roles"]
    src = b.source
    state: dict[str, Any] = {}

    def fn(inputs, out, shape):
        if "call" not in state:
            state["call"] = shim(src.library())
        ptrs, ints, floats = _marshal(b.roles, roles, inputs, out, shape)
        grid, blk = geometry(conv, shape, block) if b.launch_mode == "kernel" else ((1, 1, 1), (1, 1, 1))
        err = state["call"](number, ptrs, ints, floats, grid, blk)
        if err is not None:
            raise RuntimeError(f"{b.callee}: {err}")

    return fn


# ----------------------------------------------------------------------------------------------- Triton variants
def _load_module(path: Path):
    name = "wb_byo_" + re.sub(r"\W", "_", path.stem) + "_" + hashlib.sha1(str(path).encode()).hexdigest()[:8]
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # the student's own helper modules next to the file
    try:
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ByoError(f"--triton {path.name}: importing it failed: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(str(path.parent))
    return mod


def bind_triton(spec: Spec):
    path = Path(spec.path).expanduser().resolve()
    if not path.is_file():
        raise ByoError(f"--triton {spec.path}: no such file")
    conv = convention(spec.family)
    roles = conv["roles"]
    mod = _load_module(path)
    cands = [spec.entry] if spec.entry else [n for n in conv["entry"] if callable(getattr(mod, n, None))]
    if not cands:
        public = [n for n, v in vars(mod).items() if inspect.isfunction(v) and v.__module__ == mod.__name__
                  and not n.startswith("_")]
        cands = [n for n in public if all(match_role(p, roles) for p in inspect.signature(getattr(mod, n)).parameters)]
        if len(cands) != 1:
            raise ByoError(f"--triton {path.name}: no function named {' / '.join(conv['entry'])}; "
                           f"{'several' if cands else 'no'} functions fit the family's roles: name one with --entry")
    name = cands[0]
    f = getattr(mod, name, None)
    if not callable(f):
        raise ByoError(f"--triton {path.name}: no function {name!r}")
    params = list(inspect.signature(f).parameters)
    bound = bind_partial(params, roles, f"{path.name}: {name}({', '.join(params)})")
    return f, name, params, bound


def bind_partial(params: list[str], roles: dict, what: str) -> list[str]:
    """Like bind(), but a missing output parameter means the function returns the output."""
    out = []
    for p in params:
        r = match_role(p, roles)
        if r is None:
            raise ByoError(f"{what}: parameter {p!r} matches no role; roles: {', '.join(roles)}")
        out.append(r)
    return out


def triton_variant(spec: Spec, conv: dict):
    f, name, params, bound = bind_triton(spec)
    roles = conv["roles"]
    outs = [r for r, (k, _, _) in roles.items() if k == "out"]
    style = "out" if all(o in bound for o in outs) else "return"

    def fn(inputs, out, shape):
        kw = {}
        for p, r in zip(params, bound):
            kind, key, _ = roles[r]
            kw[p] = (out[key] if kind == "out" else shape[key] if kind == "dim" else inputs[key])
        got = f(**kw)
        if style == "out":
            return None
        if isinstance(got, dict):
            return got
        return {roles[outs[0]][1]: got}

    return name, style, fn


# ----------------------------------------------------------------------------------------------- registration
SPECS: dict[tuple[str, str], Spec] = {}  # (family, variant) -> the file it came from (the X-ray names and keys it)


def register(spec: Spec) -> list[str]:
    """Add the file's variants to its family (replacing earlier ones of the same name); returns their names."""
    from harness.registry import get_problem

    problem = get_problem(spec.family)
    conv = convention(spec.family)
    names: list[str] = []
    if spec.kind == "triton":
        fname, style, fn = triton_variant(spec, conv)
        vname = f"{Path(spec.path).name}:{fname}"
        problem.variants.pop(vname, None)
        problem.add_variant(vname, "triton", fn, style=style, supports=conv.get("supports"),
                            description=f"your Triton {Path(spec.path).name}:{fname} ({style} style)")
        SPECS[(spec.family, vname)] = spec
        return [vname]
    b = bind_cuda(spec)
    block = parse_block(spec.block)
    for vname, number, labels in b.variants:
        problem.variants.pop(vname, None)
        desc = b.description + (f", kernel #{number} ({', '.join(labels)})" if number >= 0 else "")
        problem.add_variant(vname, "cuda", cuda_variant_fn(b, conv, number, block), source=b.source, kernel=labels,
                            ladder=number if number >= 0 else None, supports=conv.get("supports"), description=desc)
        SPECS[(spec.family, vname)] = spec
        names.append(vname)
    return names


def register_all(specs: list[Spec], export: bool = True) -> list[str]:
    """Register every spec; with ``export``, also put them in the environment so spawned workers do the same."""
    names = []
    for s in specs:
        names += register(s)
    if export:
        os.environ[ENV] = json.dumps([asdict(s) for s in specs])
        fams = [m for m in os.environ.get("WB_FAMILIES", "").split(",") if m.strip()]
        if __name__ not in fams:
            os.environ["WB_FAMILIES"] = ",".join([*fams, __name__])
    return names


def from_args(family: str, cu: list[str] | None, triton: list[str] | None, entry: str | None = None,
              block: str | None = None, numbers: str | None = None) -> list[Spec]:
    specs = [Spec(family, str(Path(p).resolve()), "cu", entry, block, numbers) for p in (cu or [])]
    specs += [Spec(family, str(Path(p).resolve()), "triton", entry, None, None) for p in (triton or [])]
    return specs


def _from_env() -> None:
    raw = os.environ.get(ENV)
    if not raw:
        return
    for d in json.loads(raw):
        register(Spec(**d))


def reload_from_env() -> None:
    """Bind WB_BYO's files again, re-importing Triton files (a long-lived X-ray worker: the student may have edited
    them since the last request)."""
    import sys

    for name in [n for n in sys.modules if n.startswith("wb_byo_")]:
        sys.modules.pop(name, None)
    _from_env()


def describe(family: str, width: int = 80) -> str:
    """The family's calling convention for your own files, as --list prints it (wrapped to ``width``)."""
    import textwrap

    try:
        conv = convention(family)
    except (ByoError, ModuleNotFoundError):
        return ""
    roles = ", ".join(f"{r}={kind}" + (f" ({'/'.join(al[:3])})" if al else "") for r, (kind, _, al)
                      in conv["roles"].items())
    out = []
    for head, text in (("", conv["summary"]), ("CUDA:   ", conv["cuda"]), ("Triton: ", conv["triton"]),
                       ("parameters matched by name: ", roles)):
        out += textwrap.wrap(head + text, width=width, initial_indent="  ", subsequent_indent="      ",
                             break_long_words=False, break_on_hyphens=False)
    return "\n".join(out)


_from_env()  # a spawned worker: WB_FAMILIES=harness.byo imports this after the families are registered


# ----------------------------------------------------------------------------------------------- bench/run.py
def add_cli_args(ap) -> None:
    g = ap.add_argument_group("your own file (course-project mode)")
    g.add_argument("--cu", action="append", metavar="FILE",
                   help="a .cu/.cuh file, unmodified: its launcher's kernel numbers (or its kernel) become variants "
                        "of --kernel FAMILY (repeatable)")
    g.add_argument("--triton", action="append", metavar="FILE",
                   help="a Python file with a Triton launcher taking the family's roles by name (repeatable)")
    g.add_argument("--entry", metavar="NAME",
                   help="the launcher or __global__ kernel to call (default: the family's launcher names, then "
                        "its kernel name, then the file's only kernel)")
    g.add_argument("--block", metavar="N|XxY", help="threads per block of a bare kernel's default launch (256)")
    g.add_argument("--numbers", metavar="LIST",
                   help="kernel numbers of a numbered launcher, e.g. 1-5 (default: its case labels)")
    g.add_argument("--list", nargs="?", const="", metavar="FAMILY",
                   help="each family's shapes, variants and calling convention for your own files (FAMILY, else "
                        "--kernel's when given, else all); then exit")


def cli_variants(args, families: list[str]) -> list[str] | None:
    """Register --cu/--triton files for the run (and its workers); the variants to run: theirs and the baseline."""
    if not (getattr(args, "cu", None) or getattr(args, "triton", None)):
        return None
    if len(families) != 1:
        raise ByoError(f"--cu/--triton need one family (--kernel saxpy|sgemm|conv1d), got {', '.join(families)}")
    if args.triton and (args.block or args.numbers):
        raise ByoError("--block and --numbers apply to --cu files only")
    specs = from_args(families[0], args.cu, args.triton, args.entry, args.block, args.numbers)
    names = register_all(specs)
    from harness.registry import REGISTRY

    return names + [n for n, v in REGISTRY[families[0]].variants.items() if v.baseline]
