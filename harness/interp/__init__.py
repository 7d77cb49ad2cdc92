"""CUDA kernels on the CPU: an interpret mode that runs the real ``.cu`` source with memcheck, racecheck and synccheck.

Without a GPU (or with ``WB_CUDA_INTERPRET=1``), ``harness.cuda.Kernel.__call__`` and ``CudaSource.library()`` run
here instead: the file is compiled as host C++ with g++ against our own CUDA headers (``include/``) and a small runtime
(``runtime/wbcpu_rt.cpp``) in which every CUDA thread is a fiber. See ``build.py`` (compile), ``rewrite.py`` (what is
translated) and the runtime's header comment (execution model and checks). Mode switch, like Triton's
``TRITON_INTERPRET``: ``WB_CUDA_INTERPRET=1`` forces it on, ``=0`` off (CUDA variants then end ``compiled`` on a
machine without a GPU), unset = on exactly when no GPU is visible.

Faults raise :class:`KernelFault` (kind: memcheck, racecheck, synccheck, trap, assert, launch) with a one-line message
naming the kernel, block, thread and source line; a PTX instruction raises :class:`NotInterpreted` (the runner records
``skipped: needs <instruction> (not interpreted)``). The runner names the buffers (``set_call``): its input and output
dict keys appear in messages ("C+65536"); other tensors are "arg<i>".
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cuda_common import CompileError, scalar_arg

ENV = "WB_CUDA_INTERPRET"
FAULT_KINDS = {1: "memcheck", 2: "racecheck", 3: "synccheck", 4: "trap", 5: "assert", 6: "not interpreted",
               7: "launch", 8: "crash"}
DEFAULT_SEED = 0x5EED


class KernelFault(RuntimeError):
    """A kernel ended with a memcheck / racecheck / synccheck error, a trap, a failed assert or a bad launch."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


class NotInterpreted(KernelFault):
    """The kernel reached a PTX instruction the interpreter does not model (inline asm)."""


def enabled() -> bool:
    """Interpret mode: WB_CUDA_INTERPRET=1 on, =0 off, unset -> on when no GPU is visible. (Asked on every kernel
    launch: an environment lookup, then a cached answer.)"""
    v = os.environ.get(ENV, "").strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    return _no_gpu()


@functools.lru_cache(None)
def _no_gpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch: no GPU either
        return True


# ----------------------------------------------------------------------------------------------- call context
class _Context:
    """What the runner tells the interpreter before each check call: the seed and the buffers' names."""

    def __init__(self) -> None:
        self.gen = 0
        self.seed = DEFAULT_SEED
        self.names: dict[int, str] = {}  # storage data_ptr -> name
        self.ranges: list[tuple[int, int, str]] = []  # (lo, nbytes, name): tensors host-mode code may touch
        self.ptr_count = 0


_CTX = _Context()


def _storage(t: Any) -> tuple[int, int]:
    s = t.untyped_storage()
    return int(s.data_ptr()), int(s.nbytes())


def set_call(seed: int | None = None, tensors: dict[str, Any] | None = None) -> None:
    """Start a new call: the scheduling seed and the named tensors (inputs and outputs) of this call."""
    _CTX.gen += 1
    _CTX.seed = DEFAULT_SEED if seed is None else int(seed)
    _CTX.names, _CTX.ranges, _CTX.ptr_count = {}, [], 0
    for name, t in (tensors or {}).items():
        if hasattr(t, "untyped_storage") and t.numel():
            lo, n = _storage(t)
            _CTX.names[lo] = name
            _CTX.ranges.append((lo, n, name))


def register(t: Any, name: str | None = None) -> None:
    """A tensor host-mode code receives by address (harness.cuda.ptr): valid device memory for this call."""
    if t is None or not hasattr(t, "untyped_storage") or not t.numel():
        return
    lo, n = _storage(t)
    if any(r[0] == lo for r in _CTX.ranges):
        return
    _CTX.ptr_count += 1
    _CTX.ranges.append((lo, n, name or _CTX.names.get(lo) or f"ptr#{_CTX.ptr_count}"))


# ----------------------------------------------------------------------------------------------- dry runs
@dataclass
class DryLaunch:
    """One ``<<<>>>`` (or typed cudaLaunchKernel) a dry run logged: the kernel as written at the launch (template
    arguments as source text; ``"cudaLaunchKernel"`` for that path), grid, block and dynamic shared bytes."""

    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dyn_smem: int
    notes: list[str] = field(default_factory=list)  # calls before this launch whose answer is not the GPU's


@dataclass
class DryLog:
    launches: list[DryLaunch] = field(default_factory=list)
    notes: list[tuple[int, str]] = field(default_factory=list)  # (launches logged before it, what)


# ----------------------------------------------------------------------------------------------- libraries
class InterpLibrary:
    """One interpreted shared library. Kernel mode: :meth:`launch`; host mode: attribute access gives the library's
    exported functions (ctypes), each call checked for a fault afterwards."""

    def __init__(self, path: Path, kernels: list[str]):
        self.path = path
        self.kernels = {k: i for i, k in enumerate(kernels)}
        self._dll = ctypes.CDLL(str(path))
        d = self._dll
        d.wbi_fault_message.restype = ctypes.c_char_p
        d.wbi_set_seed.argtypes = [ctypes.c_ulonglong]
        d.wbi_add_buffer.argtypes = [ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.c_char_p]
        d.wbi_set_options.argtypes = [ctypes.c_int, ctypes.c_int]
        self._gen = -1
        self._funcs: dict[str, InterpFunction] = {}
        self.lock = threading.Lock()  # the runtime runs one launch at a time (its scheduler state is global)
        d.wbi_reset()

    # ---- state
    def _begin(self, buffers: list[tuple[int, int, str]]) -> None:
        d = self._dll
        if self._gen != _CTX.gen:
            d.wbi_reset()
            d.wbi_set_seed(_CTX.seed)
            self._gen = _CTX.gen
        d.wbi_clear_fault()
        d.wbi_clear_buffers()
        for lo, n, name in buffers:
            d.wbi_add_buffer(lo, n, name.encode())

    def _raise_fault(self) -> None:
        kind = self._dll.wbi_fault_kind()
        if kind:
            msg = self._dll.wbi_fault_message().decode(errors="replace")
            self._dll.wbi_clear_fault()
            if kind == 6:
                raise NotInterpreted("not interpreted", msg)
            raise KernelFault(FAULT_KINDS.get(kind, "error"), msg)

    def stats(self) -> dict[str, int]:
        out = (ctypes.c_ulonglong * 8)()
        self._dll.wbi_stats(out)
        keys = ("launches", "blocks", "threads", "switches", "global_checks", "shared_checks", "barriers",
                "collectives")
        return dict(zip(keys, (int(v) for v in out)))

    @contextlib.contextmanager
    def dry(self):
        """Dry mode for the calls made inside the block: every launch is logged (:class:`DryLog`) and returns
        cudaSuccess without running a thread. Device queries answer as an H100 SXM (sm_90, 132 SMs); calls whose
        answer is not a real GPU's (cudaOccupancy*, cudaFuncGetAttributes: no register count here; a read of device
        memory, which no kernel wrote) are noted, and each launch carries the notes made before it."""
        d = self._dll
        log = DryLog()
        d.wbi_set_dry(1)
        try:
            yield log
        finally:
            d.wbi_dry_launch.restype = d.wbi_dry_note.restype = ctypes.c_char_p
            out = (ctypes.c_ulonglong * 7)()
            for i in range(d.wbi_dry_count()):
                name = d.wbi_dry_launch(i, out).decode(errors="replace")
                v = [int(x) for x in out]
                log.launches.append(DryLaunch(name, (v[0], v[1], v[2]), (v[3], v[4], v[5]), v[6]))
            before = ctypes.c_ulonglong()
            for i in range(d.wbi_dry_note_count()):
                what = d.wbi_dry_note(i, ctypes.byref(before)).decode(errors="replace")
                log.notes.append((int(before.value), what))
                for la in log.launches[int(before.value):]:
                    if what not in la.notes:
                        la.notes.append(what)
            d.wbi_set_dry(0)

    # ---- kernel mode
    def launch(self, kernel: str, grid: tuple[int, int, int], block: tuple[int, int, int], shared: int,
               args: tuple, max_dyn: int = -1) -> None:
        import numpy as np

        idx = self.kernels.get(kernel)
        if idx is None:
            raise KeyError(f"{self.path.name}: kernel {kernel!r} was not built; built: {sorted(self.kernels)}")
        gpu = [i for i, a in enumerate(args) if getattr(a, "is_cuda", False)]
        if gpu:  # WB_CUDA_INTERPRET=1 on a GPU machine: the kernel runs on CPU copies, copied back afterwards
            cpu = list(args)
            for i in gpu:
                cpu[i] = args[i].cpu()
            self.launch(kernel, grid, block, shared, tuple(cpu), max_dyn)
            for i in gpu:
                args[i].copy_(cpu[i])
            return
        bufs: list[tuple[int, int, str]] = []
        holders: list[Any] = []
        for i, a in enumerate(args):
            if hasattr(a, "data_ptr"):
                v = np.uint64(int(a.data_ptr()))
                if a.numel():
                    lo, n = _storage(a)
                    bufs.append((lo, n, _CTX.names.get(lo, f"arg{i}")))
            else:
                v = scalar_arg(a)
            holders.append(np.array([v]))
        argv = (ctypes.c_void_p * max(1, len(holders)))(*[h.ctypes.data for h in holders])
        sizes = (ctypes.c_size_t * max(1, len(holders)))(*[h.itemsize for h in holders])
        fn = getattr(self._dll, f"wbk_{idx}")
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_ulonglong, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.c_int]
        with self.lock:
            self._begin(bufs)
            rc = fn(*grid, *block, int(shared), int(max_dyn), ctypes.cast(argv, ctypes.c_void_p),
                    ctypes.cast(sizes, ctypes.c_void_p), len(holders))
            self._raise_fault()
        if rc != 0:
            raise KernelFault("launch", f"{kernel}: launch failed with CUDA error {rc}")

    # ---- host mode
    def __getattr__(self, name: str) -> InterpFunction:
        if name.startswith("_"):
            raise AttributeError(name)
        f = self._funcs.get(name)
        if f is None:
            f = self._funcs[name] = InterpFunction(self, getattr(self._dll, name))
        return f


class InterpFunction:
    """A host-mode function of an interpreted library (ctypes underneath: set argtypes/restype as usual)."""

    def __init__(self, lib: InterpLibrary, fn: Any):
        self.__dict__["_lib"] = lib
        self.__dict__["_fn"] = fn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._fn, name, value)

    def __call__(self, *args: Any) -> Any:
        with self._lib.lock:
            self._lib._begin(list(_CTX.ranges))
            rc = self._fn(*args)
            self._lib._raise_fault()  # a launch inside the call faulted: the verdict, whatever the code returned
        return rc


_LIBS: dict[tuple[str, tuple[str, ...]], InterpLibrary] = {}


def kernel_list(src: Any) -> list[str]:
    """The kernels a CudaSource's interpreted build has entry points for: every kernel() asked for, then its
    explicit instantiations (the same list in every process: families create their kernels at import)."""
    return list(dict.fromkeys([*getattr(src, "_kernel_names", []), *getattr(src, "instantiate", [])]))


def prebuild(sources: list[Any], workers: int | None = None) -> None:
    """Compile the interpreted libraries of several sources in parallel threads (g++ runs as subprocesses) before the
    workers need them; failures are left for each variant's record to report."""
    from concurrent.futures import ThreadPoolExecutor

    from harness.interp.build import build

    def one(src: Any) -> None:
        try:
            build(src, kernel_list(src))
        except (CompileError, OSError):
            pass

    todo = list({id(s): s for s in sources}.values())
    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as ex:
        list(ex.map(one, todo))


def library(src: Any, kernels: list[str] | tuple[str, ...] = ()) -> InterpLibrary:
    """The interpreted library of a CudaSource with entry points for ``kernels`` (built and loaded once)."""
    from harness.interp.build import build

    key = (f"{src.path}|{getattr(src, 'shim', '')}|{sorted(src.defines.items())}|{src.flags}", tuple(kernels))
    lib = _LIBS.get(key)
    if lib is None:
        lib = _LIBS[key] = InterpLibrary(build(src, list(kernels)), list(kernels))
    return lib


__all__ = ["KernelFault", "NotInterpreted", "enabled", "set_call", "register", "library", "InterpLibrary", "DryLaunch",
           "DryLog"]
