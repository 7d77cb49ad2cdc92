"""The entry point of the worker processes (``harness.sandbox``): ``python -m harness.worker zygote|worker FD``.

``zygote``: undumpable, imports torch, the harness and every family once, then forks a fresh worker per request
(double fork: the worker is reparented to the judge, a child subreaper) and kills its workers when the judge goes
away. ``worker``: a fresh interpreter that confines itself before torch starts its threads. Either way the worker
serves one task's requests (``harness.runner.worker_main``). This module sits above the runner and the sandbox, so
neither imports the other's entry point.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys

from harness import sandbox


def _cuda_driver_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return any("libcuda.so" in line for line in f)
    except OSError:
        return False


def _zygote_main(fd: int) -> None:
    from multiprocessing.connection import Connection

    sandbox.make_undumpable()
    sock = socket.socket(fileno=fd)
    conn = Connection(os.dup(fd))
    import harness.runner as runner  # torch, the harness and every family, once

    runner.worker_preload()
    why = "the CUDA driver is loaded in the zygote: a forked worker could not use it" if _cuda_driver_loaded() \
        else None
    conn.send({"fork_safe": why is None, "why_not": why})
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    forked: list[int] = []
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = None
        if msg != "fork":  # the judge closed the connection (or died): no worker it stopped may outlive it
            for pid in forked:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            return
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        wfd = fds[0]
        r, w = os.pipe()
        c = os.fork()
        if c == 0:  # the intermediate child: fork the worker and exit, so the worker is reparented to the judge
            try:
                os.close(r)
                me = os.getpid()
                wpid = os.fork()
                if wpid == 0:  # the worker: one thread (fork copies only the caller), nothing of a task yet
                    sandbox.note_parent_at_fork(me)
                    os.close(w)
                    conn.close()
                    sock.close()
                    runner.worker_main(wfd, sandbox.confine_worker())
                    os._exit(0)
                os.write(w, struct.pack("i", wpid))
            finally:
                os._exit(0)
        os.close(w)
        os.close(wfd)
        data = os.read(r, 4)
        os.close(r)
        os.waitpid(c, 0)
        if len(data) != 4:
            conn.send("the intermediate child died")
            continue
        wpid = struct.unpack("i", data)[0]
        forked = [p for p in forked if os.path.exists(f"/proc/{p}")] + [wpid]
        conn.send(wpid)


def main(argv: list[str]) -> None:
    mode, fd = argv[0], int(argv[1])
    if mode == "zygote":
        _zygote_main(fd)
    elif mode == "worker":  # a fresh interpreter per worker: confine before torch starts its threads
        info = sandbox.confine_worker()
        import harness.runner as runner

        runner.worker_main(fd, info)
    else:
        raise SystemExit(f"usage: python -m harness.worker zygote|worker FD (got {mode!r})")


if __name__ == "__main__":
    main(sys.argv[1:])
