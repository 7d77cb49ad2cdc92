"""Worker processes a variant cannot use to reach the judge (docs/verdicts.md has the threat model).

Stdlib only, so that a process can confine itself before torch starts threads. Three parts:

* **The judge** (``harden_judge``): undumpable (``PR_SET_DUMPABLE=0``: ``/proc/<pid>/mem``, ``process_vm_writev`` and
  ``ptrace`` then need ``CAP_SYS_PTRACE``) and a child subreaper (so workers forked by the zygote below become the
  judge's own children: it can wait for them to stop and read their exit status).
* **A worker** (``confine_worker``, in the fresh worker before any variant code runs, while it has one thread):
  its own process group (the judge stops the whole group, children included), undumpable, ``CAP_SYS_PTRACE`` and the
  other capabilities that reach other processes or the kernel dropped from its effective, permitted, inheritable,
  ambient and bounding sets (root stays root for files, but can no longer write an undumpable process), no new
  privileges, and a seccomp filter that answers ``EPERM`` to ``ptrace``, ``process_vm_readv/writev``, ``kcmp``,
  ``pidfd_getfd``, ``process_madvise``, ``setsid``, ``setpgid`` and ``prctl(PR_SET_DUMPABLE)`` (and to every call of
  another syscall ABI, such as i386 ``int 0x80`` on x86-64).
* **The zygote** (``Zygote``): one process per environment that imports torch, the harness and every family once
  (~1 s here), runs no variant code, and forks a fresh worker per task (~20-50 ms) by double fork, so the worker is
  reparented to the judge. Where forking is unsafe (the zygote has loaded the CUDA driver), each worker is a fresh
  interpreter instead. Both processes run ``python -m harness.worker`` (it imports the runner; this module does not).

``WorkerProcess`` is the judge's handle: ``stop()`` (SIGSTOP to the group, then wait until the kernel reports it
stopped), ``cont()``, ``kill()`` and ``exit_text()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import signal
import socket
import struct
import sys
import time
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# Capabilities a worker loses (linux/capability.h numbers). CAP_SYS_PTRACE is the one that matters: with it, root
# writes any process's memory even when that process is undumpable. The rest reach other processes or the kernel
# (modules, raw I/O, BPF, perf, checkpoint/restore, /proc/<pid>/map_files, device nodes). File access (DAC override,
# chown, ...) stays: a worker still reads and writes the caches a root run keeps.
DROPPED_CAPS = {"CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17,
                "CAP_SYS_BOOT": 22, "CAP_MKNOD": 27, "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40,
                "CAP_SETPCAP": 8}

# seccomp: (audit arch, {syscall: number}) per machine. x86-64 also refuses the x32 ABI (nr >= 0x40000000).
_SYSCALLS = {
    "x86_64": (0xC000003E, {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
                            "pidfd_getfd": 438, "process_madvise": 440, "setsid": 112, "setpgid": 109,
                            "prctl": 157, "seccomp": 317}),
    "aarch64": (0xC00000B7, {"ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
                             "pidfd_getfd": 438, "process_madvise": 440, "setsid": 157, "setpgid": 154,
                             "prctl": 167, "seccomp": 277}),
}
DENIED_SYSCALLS = ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
                   "setsid", "setpgid")
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000


def _prctl(option: int, arg2: int = 0) -> int:
    r = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0),
                    ctypes.c_ulong(0))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


# ------------------------------------------------------------------------------------------------ the judge
def harden_judge() -> dict[str, Any]:
    """Undumpable + child subreaper, once per process; returns what holds (for the record's ``isolation``)."""
    out: dict[str, Any] = {}
    for key, opt in (("judge_undumpable", PR_SET_DUMPABLE), ("judge_subreaper", PR_SET_CHILD_SUBREAPER)):
        try:
            _prctl(opt, 0 if opt == PR_SET_DUMPABLE else 1)
            out[key] = True
        except (OSError, AttributeError) as e:
            out[key] = f"failed: {e}"
    return out


# ------------------------------------------------------------------------------------------------ the worker
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_caps() -> list[str]:
    """Drop DROPPED_CAPS from this thread's sets and the bounding set (call while single-threaded: capability sets
    are per thread, and threads created later inherit the calling thread's). Returns the names dropped."""
    for cap in DROPPED_CAPS.values():  # the bounding set first: it needs CAP_SETPCAP, dropped below
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):  # EINVAL: the kernel does not know this capability
                raise
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    hdr = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(hdr), data) < 0:
        raise OSError(ctypes.get_errno(), "capget")
    had = []
    for name, cap in DROPPED_CAPS.items():
        w, bit = divmod(cap, 32)
        m = ~(1 << bit) & 0xFFFFFFFF
        if data[w].effective & (1 << bit) or data[w].permitted & (1 << bit):
            had.append(name)
        data[w].effective &= m
        data[w].permitted &= m
        data[w].inheritable &= m
    if _libc.capset(ctypes.byref(hdr), data) < 0:
        raise OSError(ctypes.get_errno(), "capset")
    return had


def has_cap(cap: int) -> bool:
    """Whether this thread's effective set holds capability number ``cap`` (from /proc/thread-self/status)."""
    try:
        with open("/proc/thread-self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except OSError:
        pass
    return False


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program(machine: str | None = None) -> bytes:
    """The worker's filter as classic BPF over ``struct seccomp_data`` (nr at offset 0, arch at 4, args at 16)."""
    machine = machine or platform.machine()
    if machine not in _SYSCALLS:
        raise OSError(errno.ENOSYS, f"no seccomp syscall table for {machine}")
    arch, nrs = _SYSCALLS[machine]
    LD, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    prog: list[tuple[int, int, int, int] | str] = []  # "D" / "A": jumps to the deny / allow return, resolved below
    prog.append((LD, 0, 0, 4))
    prog.append((JEQ, 1, 0, arch))
    prog.append((RET, 0, 0, deny))  # another ABI (i386 int 0x80 on x86-64): nothing legitimate uses it here
    prog.append((LD, 0, 0, 0))
    if machine == "x86_64":
        prog.append(("JGE_D", 0x40000000))  # type: ignore[arg-type]
    for name in DENIED_SYSCALLS:
        prog.append(("JEQ_D", nrs[name]))  # type: ignore[arg-type]
    prog.append((JEQ, 0, 3, nrs["prctl"]))  # prctl(PR_SET_DUMPABLE, ...) -> deny; other prctl options pass
    prog.append((LD, 0, 0, 16))
    prog.append((JEQ, 0, 1, PR_SET_DUMPABLE))
    prog.append((RET, 0, 0, deny))
    prog.append((RET, 0, 0, SECCOMP_RET_ALLOW))
    prog.append((RET, 0, 0, deny))  # the shared deny target of the JEQ_D / JGE_D lines
    n = len(prog)
    out = b""
    for i, ins in enumerate(prog):
        if isinstance(ins[0], str):
            op, k = ins  # type: ignore[misc]
            out += _bpf(JEQ if op == "JEQ_D" else JGE, n - 1 - i - 1, 0, k)
        else:
            out += _bpf(*ins)  # type: ignore[misc]
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp() -> None:
    code = seccomp_program()
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    nr = _SYSCALLS[platform.machine()][1]["seccomp"]
    # SECCOMP_SET_MODE_FILTER with SECCOMP_FILTER_FLAG_TSYNC: every thread, should there already be more than one
    if _libc.syscall(ctypes.c_long(nr), ctypes.c_uint(1), ctypes.c_uint(1), ctypes.byref(prog)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"seccomp: {os.strerror(e)}")


def confine_worker() -> dict[str, Any]:
    """Everything a fresh worker does to itself before it runs variant code (see the module docstring). Returns
    what holds; a step that fails is named (a record carries this as ``isolation``)."""
    info: dict[str, Any] = {"threads_at_confinement": _threads()}
    try:
        os.setpgid(0, 0)
        info["own_process_group"] = True
    except OSError as e:
        info["own_process_group"] = f"failed: {e}"
    try:
        _prctl(PR_SET_DUMPABLE, 0)
        info["undumpable"] = True
    except OSError as e:
        info["undumpable"] = f"failed: {e}"
    try:
        drop_caps()
        info["cap_sys_ptrace"] = has_cap(DROPPED_CAPS["CAP_SYS_PTRACE"])
    except OSError as e:
        info["cap_sys_ptrace"] = f"drop failed: {e}"
    try:
        install_seccomp()
        info["seccomp"] = list(DENIED_SYSCALLS) + ["prctl(PR_SET_DUMPABLE)"]
    except (OSError, AttributeError) as e:
        info["seccomp"] = f"failed: {e}"
    return info


def confinement_complete(info: dict[str, Any]) -> bool:
    return (info.get("own_process_group") is True and info.get("undumpable") is True
            and info.get("cap_sys_ptrace") is False and isinstance(info.get("seccomp"), list))


_PARENT_AT_FORK = [0]


def note_parent_at_fork(pid: int) -> None:
    """Called first thing in a freshly forked worker with its intermediate parent's pid (taken *before* the fork:
    the parent may already be gone when the worker first runs), which after_reparent waits to lose."""
    _PARENT_AT_FORK[0] = pid


def make_undumpable() -> bool:
    try:
        _prctl(PR_SET_DUMPABLE, 0)
        return True
    except OSError:
        return False


def after_reparent(timeout_s: float = 5.0) -> None:
    """A forked worker waits until its intermediate parent has exited: it is then the judge's child (the judge can
    wait for it to stop). No parent-death signal: it fires when the parent *thread* ends, and the judge's thread
    that adopts it may be any of its threads; the zygote kills its workers when the judge goes away instead."""
    p0 = _PARENT_AT_FORK[0]
    end = time.monotonic() + timeout_s
    while p0 and os.getppid() == p0 and time.monotonic() < end:
        time.sleep(0.0005)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


# ------------------------------------------------------------------------------------------------ judge-side handle
class WorkerProcess:
    """The judge's handle on one worker: its pid (= its process group), its connection, and stop / continue."""

    def __init__(self, pid: int, conn: Any, popen: Any = None):
        self.pid, self.conn, self.popen = pid, conn, popen
        self.stopped = False
        self.status: int | None = None  # wait status once reaped

    def cpu_ns(self) -> dict[int, int] | None:
        """CPU time (ns) each of the worker's threads has run, from the kernel (/proc/<pid>/task/*/schedstat): the
        worker cannot make it smaller. None where /proc does not say."""
        out = {}
        try:
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                        out[int(tid)] = int(f.read().split()[0])
        except OSError:
            return None
        return out or None

    def ncpu(self) -> int:
        try:
            return max(1, len(os.sched_getaffinity(self.pid)))
        except OSError:
            return os.cpu_count() or 1

    def alive(self) -> bool:
        if self.status is not None:
            return False
        try:
            r = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return r is None

    def stop(self, deadline: float | None = None) -> bool:
        """SIGSTOP the worker's process group and wait until the kernel reports the worker stopped (every thread).
        False when it died instead."""
        if self.stopped:
            return True
        try:
            os.killpg(self.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return False
        while True:
            try:
                r = os.waitid(os.P_PID, self.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                return False
            except InterruptedError:
                continue
            if r is not None and r.si_code == os.CLD_STOPPED:
                self.stopped = True
                return True
            if r is not None and r.si_code in (os.CLD_EXITED, os.CLD_KILLED, os.CLD_DUMPED):
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False

    def cont(self) -> None:
        if self.stopped:
            self.stopped = False
            try:
                os.killpg(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        for sig in (signal.SIGKILL,):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    pass
        self.reap()
        try:
            self.conn.close()
        except OSError:
            pass

    def reap(self, timeout: float = 10.0) -> int | None:
        """Collect the exit status (blocks up to ``timeout``); None when it is still running."""
        if self.status is not None:
            return self.status
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
                return None
            rc = self.popen.returncode
            self.status = (-rc) if rc < 0 else (rc << 8)  # as a wait status (signal in the low bits)
            return self.status
        end = time.monotonic() + timeout
        while True:
            try:
                pid, st = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.status = -1
                return self.status
            if pid == self.pid:
                self.status = st
                return st
            if time.monotonic() > end:
                return None
            time.sleep(0.0002)  # a SIGKILLed worker is gone within a millisecond or two

    def exit_text(self) -> str:
        st = self.reap()
        if st is None:
            return "worker hung"
        if st == -1:
            return "worker exited (status unknown)"
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            try:
                return f"worker killed by signal {signal.Signals(sig).name}"
            except ValueError:
                return f"worker killed by signal {sig}"
        return f"worker exited with code {os.WEXITSTATUS(st)}"


# ------------------------------------------------------------------------------------------------ the zygote
def _env_key() -> tuple:
    """What a zygote's imports depend on: the environment (less pytest's per-test bookkeeping) and sys.path."""
    env = sorted((k, v) for k, v in os.environ.items() if not k.startswith("PYTEST_"))
    return (tuple(env), tuple(sys.path))


class Zygote:
    """A process that imported torch, the harness and the families and forks fresh workers on request.

    One per environment (``get()``): a change of ``os.environ`` or ``sys.path`` (a test's WB_FAMILIES) starts a new
    one. It runs no variant code; workers are forked from it, confine themselves, and are reparented to the judge."""

    _current: Zygote | None = None
    START_S = 600.0

    def __init__(self) -> None:
        import subprocess
        from multiprocessing.connection import Connection

        self.key = _env_key()
        self.judge_info = harden_judge()
        a, b = socket.socketpair()
        env = dict(os.environ, PYTORCH_NVML_BASED_CUDA_CHECK="1")  # torch.cuda.is_available() without cuInit
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.worker", "zygote", str(b.fileno())],
                                     pass_fds=(b.fileno(),), env=env, cwd=os.getcwd())
        b.close()
        self.sock = a
        self.conn = Connection(os.dup(a.fileno()))
        if not self.conn.poll(self.START_S):
            self.close()
            raise RuntimeError("worker zygote did not start")
        try:
            hello = self.conn.recv()
        except EOFError:
            self.close()
            raise RuntimeError(f"worker zygote failed to start (exit {self.proc.poll()})") from None
        self.fork_safe = bool(hello.get("fork_safe"))
        self.why_not_fork = hello.get("why_not")

    @classmethod
    def get(cls) -> Zygote:
        z = cls._current
        if z is not None and (z.key != _env_key() or z.proc.poll() is not None):
            z.close()
            z = None
        if z is None:
            z = cls._current = Zygote()
        return z

    def close(self) -> None:
        try:
            self.conn.close()
            self.sock.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if Zygote._current is self:
            Zygote._current = None

    def spawn(self) -> tuple[WorkerProcess, str]:
        """A fresh worker: (handle, how it was made: "fork" or "exec")."""
        from multiprocessing.connection import Connection

        mine, theirs = socket.socketpair()
        if self.fork_safe and os.environ.get("WB_WORKER_START", "fork") != "exec":
            self.conn.send("fork")
            socket.send_fds(self.sock, [b"F"], [theirs.fileno()])
            theirs.close()
            reply = self.conn.recv()
            if not isinstance(reply, int):
                mine.close()
                raise RuntimeError(f"zygote could not fork a worker: {reply}")
            return WorkerProcess(reply, Connection(mine.detach())), "fork"
        import subprocess

        env = dict(os.environ)
        p = subprocess.Popen([sys.executable, "-m", "harness.worker", "worker", str(theirs.fileno())],
                             pass_fds=(theirs.fileno(),), env=env, cwd=os.getcwd())
        theirs.close()
        return WorkerProcess(p.pid, Connection(mine.detach()), popen=p), "exec"
