"""The g++ side of the CPU emulators (tests/test_matmul_cuda.py, tests/test_attention_cuda.py): cut a marked section
out of a .cu file, build an emulator around it, run it."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def section(text: str, begin: str, end: str | None) -> str:
    """The lines of ``text`` from the one holding ``begin`` up to ``end`` (exclusive; None: to the end)."""
    i = text.index(begin)
    i = text.rindex("\n", 0, i) + 1
    j = text.index(end, i) if end else len(text)
    return text[i:j]


def build_and_run(tmp_path, name: str, files: dict[str, str], args: list[str], timeout: float = 300,
                  std: str = "c++20") -> subprocess.CompletedProcess:
    """Write ``files`` (``{name}.cpp`` among them) into tmp_path, build ``{name}.cpp`` with g++ and run it with
    ``args``. Skips without g++, or when it lacks C++20 <barrier> / _Float16 (what the emulators' shims need)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    exe = tmp_path / name
    res = subprocess.run([gxx, f"-std={std}", "-O1", "-w", "-pthread", "-o", str(exe), str(tmp_path / f"{name}.cpp")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        if "barrier" in res.stderr and "No such file" in res.stderr or "_Float16" in res.stderr:
            pytest.skip(f"g++ lacks C++20 <barrier> or _Float16: {res.stderr.splitlines()[0]}")
        raise AssertionError(res.stderr[-4000:])
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)
