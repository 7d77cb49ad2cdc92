"""What the two ways of running a ``.cu`` file share — nvcc and a GPU (``harness.cuda``), g++ and the CPU
(``harness.interp``): where the CUDA toolkit is, the compile cache both builds go through, the compile error, and the
scalar types of kernel arguments.

Compiled artefacts are cached under ``$WB_CACHE`` (default ``~/.cache/gpu-workbench``). The key is every file the
compile actually read — nvcc's own dependency list (``-MD -MF``), so headers included with ``<...>`` through ``-I``
or from the file's folder count as much as ``"..."`` ones — plus the flags, defines, instantiations, nvcc's version,
the arch and the kind of build (ccache's "direct mode": a per-configuration index lists the dependency sets seen,
each with the files' sizes, mtimes and SHA-256; a hit needs every file unchanged). Entries are written to a temporary
folder and renamed into place, under a per-configuration file lock, so parallel workers never see half an entry or
compile the same thing twice. Keys and indexes name files relative to the repository or the CUDA toolkit
(``$REPO/cuda_src/x.cu``, ``$CUDA/include/cuda_runtime.h``; absolute only outside both), so a cache built here by
``make gpu-prep`` hits in a copy of the tree at another path (the GPU machine's) whose files have the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

CUDA_SRC = Path(__file__).resolve().parent.parent / "cuda_src"
REPO_ROOT = CUDA_SRC.parent


class CompileError(RuntimeError):
    """nvcc failed. ``str(e)`` starts with the first ``file(line): error`` message."""


# ----------------------------------------------------------------------------------------------- the toolkit
@functools.lru_cache(None)
def nvcc_path() -> str | None:
    p = shutil.which("nvcc")
    if p is None:
        for cand in ("/usr/local/cuda/bin/nvcc", os.path.join(os.environ.get("CUDA_HOME", "/nonexistent"), "bin/nvcc")):
            if os.path.exists(cand):
                return cand
    return p


@functools.lru_cache(None)
def nvcc_version() -> str | None:
    nv = nvcc_path()
    if nv is None:
        return None
    out = subprocess.run([nv, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([\d.]+), V([\d.]+)", out)
    return m.group(2) if m else out.strip().splitlines()[-1]


@functools.lru_cache(None)
def cuda_root() -> Path | None:
    """The CUDA toolkit's folder (the one holding include/cuda_runtime.h): nvcc's own (symlinks followed), else
    $CUDA_HOME, $CUDA_PATH, /usr/local/cuda. Only makes cache entries portable; a wrong guess costs hits, not
    correctness, since every file's content is checked anyway."""
    cands: list[str | Path | None] = []
    if (nv := nvcc_path()) is not None:
        cands.append(Path(nv).resolve().parent.parent)  # a wrapper script (/usr/local/bin/nvcc) has no include/
    cands += [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for c in cands:
        if c and (Path(c) / "include" / "cuda_runtime.h").is_file():
            return Path(c).resolve()
    return None


# ----------------------------------------------------------------------------------------------- the compile cache
def cache_dir() -> Path:
    d = Path(os.environ.get("WB_CACHE", Path.home() / ".cache" / "gpu-workbench")) / "cuda"
    d.mkdir(parents=True, exist_ok=True)
    return d


def parse_depfile(text: str, cwd: Path) -> list[Path]:
    """Prerequisites of a make-style dependency file (nvcc -MD -MF): continuation lines joined, ``\\ `` escapes a
    space in a path; relative paths are resolved against the compile's working folder."""
    body = text.replace("\\\n", " ")
    _, _, deps = body.partition(": ")
    out: list[Path] = []
    for tok in re.split(r"(?<!\\)\s+", deps.strip()):
        if tok:
            p = Path(tok.replace("\\ ", " "))
            out.append((p if p.is_absolute() else cwd / p).resolve())
    return list(dict.fromkeys(out))


# Cache keys and dependency indexes name files relative to the repository ("$REPO/cuda_src/x.cu") or the toolkit
# ("$CUDA/include/cuda_runtime.h"), so a cache built here (make gpu-prep) hits in a copy of the tree elsewhere on the
# GPU machine. Files outside both (/usr/include, a user's own folder) stay absolute: they are no more portable.


def _roots() -> tuple[tuple[str, Path | None], ...]:
    return ("$REPO", REPO_ROOT), ("$CUDA", cuda_root())


def _portable(path: str | Path) -> str:
    p = Path(path).resolve()
    for tag, root in _roots():
        if root is not None and p.is_relative_to(root):
            return f"{tag}/{p.relative_to(root).as_posix()}"
    return str(p)


def _local(name: str) -> Path | None:
    """A _portable name on this machine (None: its root, the toolkit, is not found here)."""
    for tag, root in _roots():
        if name == tag or name.startswith(tag + "/"):
            return None if root is None else root / name[len(tag) + 1:]
    return Path(name)


_PATH_ARG = re.compile(r"^(-I|-isystem|-iquote|-idirafter|-include|-L|--[\w-]+=)?(/.*)$")


def _portable_args(args: list[str]) -> list[str]:
    """nvcc arguments with absolute paths (-I/x, "-I" "/x", --include-path=/x) made _portable, for the cache key."""
    out = []
    for a in args:
        m = _PATH_ARG.match(a)
        out.append((m.group(1) or "") + _portable(m.group(2)) if m else a)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _signature(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, _sha(path)]


def _unchanged(name: str, sig: list) -> bool:
    """Same size and mtime: unchanged (no read). Otherwise the content hash decides (a touch is not an edit, and a
    copied tree has new mtimes). ``name`` is _portable: resolved against this copy's roots."""
    path = _local(name)
    if path is None:
        return False
    try:
        st = os.stat(path)
        if [st.st_size, st.st_mtime_ns] == sig[:2]:
            return True
        return st.st_size == sig[0] and _sha(path) == sig[2]
    except OSError:
        return False


def _read_index(index: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(index.read_text())
        return entries if isinstance(entries, list) else []
    except (OSError, ValueError):
        return []


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_build(stem: str, name: str, run: Any, primary: Path) -> tuple[Path, Path, dict[str, list]]:
    """One cached compile (ccache's direct mode, see the module docstring): ``run(tmp)`` writes ``tmp/name`` and
    returns (the files the compile read, its log); the entry is keyed by ``stem`` (everything but the files'
    contents) and the content of every file read. Returns (artefact, log file, {_portable file: signature}). Used by
    harness.cuda's nvcc builds and by the CPU interpreter's g++ builds (harness/interp)."""
    index = cache_dir() / f"{stem}.deps.json"
    hit = _lookup(index, name)
    if hit is not None:
        return hit[0] / name, hit[0] / "ptxas.log", hit[1]
    with FileLock(str(cache_dir() / f"{stem}.lock")):
        hit = _lookup(index, name)  # another worker built it while this one waited for the lock
        if hit is not None:
            return hit[0] / name, hit[0] / "ptxas.log", hit[1]
        started = time.time_ns()
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".build-") as td:
            tdp = Path(td)
            deps, log = run(tdp)
            (tdp / "ptxas.log").write_text(log)
            deps = [p for p in deps if tdp.resolve() not in p.parents]
            if primary.resolve() not in deps:
                deps.insert(0, primary.resolve())
            files = {_portable(p): _signature(p) for p in deps}
            h = hashlib.sha256(stem.encode())
            for f in sorted(files):
                h.update(f"{f}\0{files[f][2]}\0".encode())
            cdir = cache_dir() / f"{stem}-{h.hexdigest()[:16]}"
            # an input edited while the compiler ran: this build may hold either version, so it is used, never indexed
            racy = any(sig[1] >= started for sig in files.values())
            if not cdir.exists():
                entry = tdp / "entry"
                entry.mkdir()
                shutil.move(str(tdp / name), entry / name)
                shutil.move(str(tdp / "ptxas.log"), entry / "ptxas.log")
                if racy:
                    keep = cache_dir() / f".racy-{stem}-{os.getpid()}-{time.time_ns()}"
                    os.rename(entry, keep)
                    return keep / name, keep / "ptxas.log", files
                os.rename(entry, cdir)  # atomic: the entry is complete or absent
            if not racy:
                entries = [e for e in _read_index(index) if e.get("dir") != cdir.name]
                entries.insert(0, {"dir": cdir.name, "files": files})
                _write_atomic(index, json.dumps(entries[:8]).encode())  # the 8 latest dependency sets
        return cdir / name, cdir / "ptxas.log", files


def _lookup(index: Path, artefact: str) -> tuple[Path, dict[str, list]] | None:
    """The index entry whose every file is unchanged: (its folder, its files), else None."""
    for e in _read_index(index):
        cdir = cache_dir() / str(e.get("dir", ""))
        files = e.get("files") or {}
        if files and (cdir / artefact).exists() and all(_unchanged(f, sig) for f, sig in files.items()):
            return cdir, files
    return None


# ----------------------------------------------------------------------------------------------- scalar types
@dataclass(frozen=True)
class _Scalar:
    value: Any
    np_type: Any


def i32(x: int) -> _Scalar:
    return _Scalar(x, np.int32)


def i64(x: int) -> _Scalar:
    return _Scalar(x, np.int64)


def u32(x: int) -> _Scalar:
    return _Scalar(x, np.uint32)


def f32(x: float) -> _Scalar:
    return _Scalar(x, np.float32)


def f64(x: float) -> _Scalar:
    return _Scalar(x, np.float64)


def scalar_arg(a: Any) -> Any:
    """A kernel's scalar argument as the numpy scalar it is passed as: ``i64(x)``-style wrappers their type, Python
    ints int32, floats float32, numpy scalars as they are."""
    if isinstance(a, _Scalar):
        return a.np_type(a.value)
    if isinstance(a, bool):
        return np.int32(int(a))
    if isinstance(a, int):
        if not -(2**31) <= a < 2**31:
            raise OverflowError(f"int argument {a} does not fit int32: wrap it in harness.cuda.i64()")
        return np.int32(a)
    if isinstance(a, float):
        return np.float32(a)
    if isinstance(a, np.generic):
        return a
    raise TypeError(f"unsupported kernel argument {type(a).__name__}: pass tensors, ints, floats or i64()/f64()...")
