"""Scale-out: the same tasks on every local GPU (``local``) or as Slurm job arrays through submitit (``slurm``).

``run_tasks`` is what ``bench/run.py`` calls instead of ``harness.runner.execute``. Whatever the executor, records
come back to the caller's ``on_record`` in *this* process, so one ``ResultWriter`` owns the one output folder and
it looks exactly like a single-GPU run's (line order follows completion order).

local
    One shard process per visible GPU (``CUDA_VISIBLE_DEVICES`` honoured; else ``torch.cuda.device_count()``), each
    started with ``CUDA_VISIBLE_DEVICES=<its GPU>`` before it or its workers touch CUDA. Each shard runs
    ``harness.runner.execute`` (so every task keeps its own isolated worker and timeout) over a lazy stream of tasks
    pulled one at a time from the parent: a dynamic queue, so a GPU that finishes early takes more work. Records go
    back over a pipe. Without GPUs, ``workers`` CPU shards (default 1). One slot = a plain ``execute`` call.
    A shard that dies (killed, OOM) loses only the task it was running; the survivors drain the queue; the lost
    tasks have no record, are reported (stderr and ``LAST_REPORT``) and ``--resume`` runs them again.

slurm
    The tasks are split round-robin into shards; ``executor.map_array`` submits one array job per shard. Each job
    runs the local executor over the GPUs Slurm gave it and writes its own ``<out>/shards/<stamp>-<i>/`` folder
    (records.jsonl etc.). The submitting process tails those files and forwards every record to ``on_record`` as it
    lands. On a Slurm timeout the job checkpoints and requeues itself; the shard folder resumes where it stopped.
    On ``--resume``, records already in any shard folder are gathered first (the submitting process may have died
    while its jobs went on), and only tasks with no record anywhere are submitted again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.records import ResultWriter, load_jsonl, record_key

if TYPE_CHECKING:  # the runner imports torch: only where tasks actually run (``bench/run.py --help`` stays fast)
    from harness.runner import RunOptions, Task

EXECUTORS = ("local", "slurm")


@dataclass
class ExecutorReport:
    """What the last ``run_tasks`` call did: where it ran, what was lost (no record: ``--resume`` re-runs it)."""

    executor: str = "local"
    slots: list[str] = field(default_factory=list)  # GPU ids, "cpu" workers or Slurm job ids
    records: int = 0
    lost: list[Task] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.lost


LAST_REPORT = ExecutorReport()
_ENV_LOCK = threading.Lock()


def _warn(msg: str) -> None:
    print(f"[executor] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ GPUs
def visible_gpus() -> list[str]:
    """The GPU ids this process may use, as CUDA_VISIBLE_DEVICES spells them (indices, UUIDs or MIG ids)."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(n)]
    ids = [x.strip() for x in env.split(",") if x.strip()]
    return ids[:n]  # CUDA stops at the first invalid entry; device_count() already counted that


def _gpu_index(gpu: str | None) -> int | str | None:
    if gpu is None:
        return None
    return int(gpu) if gpu.isdigit() else gpu


def _slots(workers: int | None) -> list[str | None]:
    """GPU ids (one shard each; ``workers`` caps how many), or ``workers`` CPU slots (None) without GPUs."""
    gpus = visible_gpus()
    if gpus:
        return list(gpus[: workers] if workers else gpus)
    return [None] * max(1, workers or 1)


# ------------------------------------------------------------------------------------------------ public API
def run_tasks(tasks: list[Task], opts: RunOptions, on_record: Callable[[dict], None], *, executor: str = "local",
              workers: int | None = None, slurm: dict | None = None, folder: Path | None = None,
              on_start: Callable[[Task], None] | None = None) -> None:
    """Run ``tasks`` on every local GPU (``local``) or on Slurm (``slurm``); every record goes to ``on_record``.

    Records carry ``node`` (host name) and ``gpu_index`` (the CUDA_VISIBLE_DEVICES entry, None on the CPU); Slurm
    records also ``slurm_job_id``, ``shard`` and, from GPU nodes, ``device`` and ``versions`` taken on the node
    (the caller should keep those rather than stamp its own: the submitting host may be a GPU-less login node).
    Tasks that end with no record (a shard or job died) are reported on stderr and in
    ``harness.executors.LAST_REPORT.lost``; a later call with the missing tasks (``--resume``) runs them.
    ``folder`` (the output folder) is needed by ``slurm`` for its shard folders and logs; ``local`` ignores it.
    """
    global LAST_REPORT
    tasks = list(tasks)
    report = ExecutorReport(executor)
    if executor == "local":
        _run_local(tasks, opts, on_record, on_start, workers, report)
    elif executor == "slurm":
        if folder is None:
            raise ValueError("executor 'slurm' needs folder= (the output folder: shards and logs go there)")
        _run_slurm(tasks, opts, on_record, on_start, dict(slurm or {}), Path(folder), workers, report)
    else:
        raise ValueError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    LAST_REPORT = report  # after the run: a nested run (a debug-executor job runs in this process) comes first
    if report.lost:
        _warn(f"{len(report.lost)} task(s) have no record ({'; '.join(report.failures)}); "
              "run again with --resume DIR to run them")


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("scale-out", "run on every local GPU, or on a Slurm cluster (docs/scale-out.md)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: one worker per visible GPU (default); slurm: job arrays through submitit")
    g.add_argument("--workers", type=int, default=None,
                   help="local: use at most N GPUs; without GPUs, N CPU workers (default 1)")
    g.add_argument("--slurm-partition", help="Slurm partition")
    g.add_argument("--slurm-gpus-per-node", type=int, default=1, help="GPUs per job (default 1)")
    g.add_argument("--slurm-gpu-type", help="GPU type for --gres=gpu:TYPE:N (e.g. h100)")
    g.add_argument("--slurm-time", type=int, default=60, help="job time limit in minutes (default 60)")
    g.add_argument("--slurm-array-parallelism", type=int, default=8, help="array jobs running at once (default 8)")
    g.add_argument("--slurm-jobs", type=int, default=None,
                   help="number of shards/array jobs (default: --slurm-array-parallelism)")
    g.add_argument("--slurm-cpus-per-task", type=int, default=None, help="CPUs per job (default 8 per GPU)")
    g.add_argument("--slurm-mem-gb", type=int, default=None, help="memory per job in GB")
    g.add_argument("--slurm-account", help="Slurm account")
    g.add_argument("--slurm-qos", help="Slurm QOS")
    g.add_argument("--slurm-constraint", help="Slurm --constraint (node features)")
    g.add_argument("--slurm-setup", action="append", default=None,
                   help="shell line run in the job before python, e.g. 'source .venv/bin/activate' (repeatable)")
    g.add_argument("--slurm-cluster", choices=("slurm", "local", "debug"), default=None,
                   help="submitit cluster (default: slurm if sbatch is found; local/debug run the jobs here)")
    g.add_argument("--slurm-poll", type=float, default=10.0, help="seconds between looks at the jobs (default 10)")


def slurm_options(args: argparse.Namespace) -> dict:
    """The --slurm-* options as the ``slurm=`` dict of ``run_tasks``."""
    keys = ("partition", "gpus_per_node", "gpu_type", "time", "array_parallelism", "jobs", "cpus_per_task",
            "mem_gb", "account", "qos", "constraint", "setup", "cluster", "poll")
    out = {k: getattr(args, f"slurm_{k}", None) for k in keys}
    out["time_min"] = out.pop("time")
    out["poll_s"] = out.pop("poll")
    return {k: v for k, v in out.items() if v is not None}


# ------------------------------------------------------------------------------------------------ local
def _run_local(tasks: list[Task], opts: RunOptions, on_record: Callable[[dict], None],
               on_start: Callable[[Task], None] | None, workers: int | None, report: ExecutorReport) -> None:
    from harness.runner import execute

    slots = _slots(workers)
    report.slots = [s if s is not None else "cpu" for s in slots]
    node = socket.gethostname()
    if len(slots) == 1 or len(tasks) <= 1:  # the single-GPU path, unchanged
        gpu = _gpu_index(slots[0])

        def stamped(rec: dict) -> None:
            rec.update(node=node, gpu_index=gpu)
            report.records += 1
            on_record(rec)

        execute(tasks, opts, stamped, on_start)
        return
    _run_shards(tasks, opts, on_record, on_start, slots[: len(tasks)], report)


def _shard_main(conn, opts_dict: dict, gpu: str | None) -> None:
    """A shard process: ``execute`` over tasks pulled one by one from the parent; records go back on ``conn``."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # also set by the parent before spawning us
    from harness.runner import RunOptions, Task, execute  # torch comes in after the GPU is chosen
    opts = RunOptions(**opts_dict)
    node, gpu_index = socket.gethostname(), _gpu_index(gpu)

    def stream():
        while True:
            conn.send(("next", None))
            msg = conn.recv()
            if msg is None:
                return
            yield Task(**msg)

    def on_start(t: Task) -> None:
        conn.send(("start", asdict(t)))

    def on_record(rec: dict) -> None:
        rec.update(node=node, gpu_index=gpu_index)
        conn.send(("record", rec))

    try:
        execute(stream(), opts, on_record, on_start)  # type: ignore[arg-type]  (any iterable of tasks)
        conn.send(("done", None))
        conn.close()
    except (EOFError, BrokenPipeError, OSError):
        pass  # the parent went away
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # everything is sent; skip seconds of torch/triton interpreter teardown


class _Shard:
    def __init__(self, ctx, gpu: str | None, opts: RunOptions):
        self.gpu = gpu
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_shard_main, args=(child, asdict(opts), gpu), daemon=False)
        with _ENV_LOCK:  # the spawned interpreter inherits os.environ as it is at start()
            old = os.environ.get("CUDA_VISIBLE_DEVICES")
            if gpu is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            try:
                self.proc.start()
            finally:
                if gpu is not None:
                    if old is None:
                        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                    else:
                        os.environ["CUDA_VISIBLE_DEVICES"] = old
        child.close()
        self.inflight: Task | None = None
        self.finished = False
        self.closed = False

    @property
    def name(self) -> str:
        return f"shard pid {self.proc.pid} ({'GPU ' + self.gpu if self.gpu is not None else 'CPU'})"

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)


def _run_shards(tasks: list[Task], opts: RunOptions, on_record: Callable[[dict], None],
                on_start: Callable[[Task], None] | None, slots: list[str | None], report: ExecutorReport) -> None:
    from multiprocessing.connection import wait

    from harness.runner import Task, _describe_exit

    ctx = mp.get_context("spawn")
    queue = deque(tasks)
    shards = [_Shard(ctx, gpu, opts) for gpu in slots]
    try:
        while any(not s.closed for s in shards):
            live = [s for s in shards if not s.closed]
            wait([s.conn for s in live] + [s.proc.sentinel for s in live], timeout=1.0)
            for s in live:
                dead = False
                while True:
                    try:
                        if not s.conn.poll():
                            break
                        kind, body = s.conn.recv()
                    except (EOFError, OSError):
                        dead = True
                        break
                    if kind == "next":
                        s.inflight = queue.popleft() if queue else None
                        try:
                            s.conn.send(asdict(s.inflight) if s.inflight else None)
                        except (BrokenPipeError, OSError):
                            dead = True
                            break
                    elif kind == "start":
                        if on_start:
                            on_start(Task(**body))
                    elif kind == "record":
                        if s.inflight is not None and record_key(body) == s.inflight.key:
                            s.inflight = None
                        report.records += 1
                        on_record(body)
                    elif kind == "done":
                        s.finished = True
                if dead or not s.proc.is_alive():
                    if not dead and s.conn.poll():
                        continue  # drain what it sent before exiting first
                    s.proc.join(timeout=5)
                    s.closed = True
                    if not s.finished:
                        why = _describe_exit(s.proc.exitcode)
                        lost = f"; lost {s.inflight.label()}" if s.inflight else ""
                        report.failures.append(f"{s.name} died: {why}{lost}")
                        _warn(report.failures[-1])
                        if s.inflight is not None:
                            report.lost.append(s.inflight)
                    s.inflight = None
        if queue:  # every shard died before the queue drained
            report.lost.extend(queue)
            report.failures.append(f"no shard left for {len(queue)} queued task(s)")
    finally:
        for s in shards:
            s.stop()


# ------------------------------------------------------------------------------------------------ slurm
def _prepare_env(env: dict[str, str]) -> list[str]:
    """In a job: the submitter's WB_* variables; the Triton interpreter only where the node has no GPU."""
    os.environ.update(env)
    gpus = visible_gpus()
    if gpus and not os.environ.get("WB_KEEP_TRITON_INTERPRET"):
        os.environ.pop("TRITON_INTERPRET", None)  # a GPU-less login node set it for itself, not for us
    elif not gpus:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return gpus


def _node_facts() -> dict[str, Any]:
    """Run in a throw-away process on the job's node: its GPU and software (CUDA stays out of the job process)."""
    from harness import provenance
    from harness.device import device_info

    return {"device": device_info(0), "versions": provenance.versions()}


def _node_facts_isolated(timeout_s: float = 180.0) -> dict[str, Any]:
    from concurrent.futures import ProcessPoolExecutor

    try:
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            return pool.submit(_node_facts).result(timeout=timeout_s)
    except Exception as e:
        _warn(f"device info unavailable on {socket.gethostname()}: {type(e).__name__}: {e}")
        return {}


class ShardJob:
    """The submitit job: run one shard's tasks with the local executor into its own folder (resumable).

    A plain class with a ``checkpoint`` method (submitit's duck-typed Checkpointable): on a Slurm timeout or
    preemption submitit requeues the same call, and the shard folder's records.jsonl says what is already done.
    """

    def __call__(self, shard_dir: str, tasks: list[dict], opts: dict, env: dict[str, str],
                 workers: int | None = None) -> dict[str, Any]:
        gpus = _prepare_env(env)
        from harness.runner import RunOptions, Task

        out = Path(shard_dir)
        writer = ResultWriter(out, resume=True)
        todo = [Task(**t) for t in tasks if not writer.done(Task(**t).key)]
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID"))
        if job_id and os.environ.get("SLURM_ARRAY_TASK_ID"):
            job_id = f"{job_id}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        job_id = job_id or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or f"pid{os.getpid()}"
        (out / "shard.json").write_text(json.dumps({"tasks": tasks, "node": socket.gethostname(), "gpus": gpus,
                                                    "job_id": job_id}, indent=1))

        facts = _node_facts_isolated() if gpus and todo else {}  # the submitter's own device may be a login node

        def on_record(rec: dict) -> None:
            rec.update(facts, slurm_job_id=job_id, shard=out.name)
            writer.add(rec)

        run_tasks(todo, RunOptions(**opts), on_record, executor="local", workers=workers)
        missing = [t["variant"] + " " + t["shape"] for t in tasks if not writer.done(Task(**t).key)]
        return {"shard": out.name, "job_id": job_id, "node": socket.gethostname(), "ran": len(todo),
                "missing": missing}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _submitit_params(s: dict, cluster: str) -> dict[str, Any]:
    n = int(s.get("gpus_per_node", 1) or 0)
    p: dict[str, Any] = {"timeout_min": int(s.get("time_min", 60)), "name": s.get("name", "wb-bench"), "nodes": 1,
                         "tasks_per_node": 1}
    if cluster == "slurm":
        if s.get("gpu_type") and n:
            p["slurm_gres"] = f"gpu:{s['gpu_type']}:{n}"
        elif n:
            p["gpus_per_node"] = n
        p["cpus_per_task"] = int(s.get("cpus_per_task") or 8 * max(1, n))
        for k in ("partition", "account", "qos", "constraint", "setup", "array_parallelism"):
            if s.get(k) is not None:
                p[f"slurm_{k}"] = s[k]
        if s.get("additional"):
            p["slurm_additional_parameters"] = dict(s["additional"])
    elif cluster == "local":
        if n:
            p["gpus_per_node"] = n
        if s.get("cpus_per_task"):
            p["cpus_per_task"] = int(s["cpus_per_task"])
    if s.get("mem_gb"):
        p["mem_gb"] = int(s["mem_gb"])
    return p


def _run_slurm(tasks: list[Task], opts: RunOptions, on_record: Callable[[dict], None],
               on_start: Callable[[Task], None] | None, s: dict, folder: Path, workers: int | None,
               report: ExecutorReport) -> None:
    want = {t.key: t for t in tasks}
    sent: set[tuple] = set()
    offsets: dict[Path, int] = {}
    shard_root = folder / "shards"

    def forward(rec: dict) -> None:
        k = record_key(rec)
        if k in want and k not in sent:
            sent.add(k)
            if on_start:
                on_start(want[k])
            report.records += 1
            on_record(rec)

    def tail(path: Path) -> None:  # new complete lines only: a line being written is read next time
        if not path.exists():
            return
        with open(path, "rb") as f:
            f.seek(offsets.get(path, 0))
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        offsets[path] = offsets.get(path, 0) + end + 1
        for line in data[:end].splitlines():
            try:
                forward(json.loads(line))
            except (json.JSONDecodeError, KeyError):
                continue

    # 1. records earlier submissions left behind (their submitter may have died while the jobs went on)
    for path in sorted(shard_root.glob("*/records.jsonl")):
        for rec in load_jsonl(path):
            forward(rec)
    todo = [t for t in tasks if t.key not in sent]
    if not todo:
        return
    import submitit

    n_jobs = max(1, min(len(todo), int(s.get("jobs") or s.get("array_parallelism") or 8)))
    shards = [todo[i::n_jobs] for i in range(n_jobs)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dirs = [shard_root / f"{stamp}-{i:04d}" for i in range(n_jobs)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    ex = submitit.AutoExecutor(folder=folder / "slurm", cluster=s.get("cluster"))
    ex.update_parameters(**_submitit_params(s, ex.cluster))
    env = {k: v for k, v in os.environ.items() if k.startswith("WB_")}
    root = str(Path(__file__).resolve().parent.parent)
    with _ENV_LOCK:  # the job's python unpickles harness.executors.ShardJob: the repo must be importable there
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([root, old] if old else [root])
        try:
            jobs = ex.map_array(ShardJob(), [str(d) for d in dirs], [[asdict(t) for t in sh] for sh in shards],
                                [asdict(opts)] * n_jobs, [env] * n_jobs, [workers] * n_jobs)
        finally:
            if old is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old
    report.slots = [str(j.job_id) for j in jobs]
    (folder / "slurm").mkdir(parents=True, exist_ok=True)
    with open(folder / "slurm" / "submissions.jsonl", "a") as f:
        f.write(json.dumps({"stamp": stamp, "cluster": ex.cluster, "jobs": report.slots,
                            "shards": [d.name for d in dirs], "tasks": [len(sh) for sh in shards]}) + "\n")
    _warn(f"submitted {n_jobs} job(s) to {ex.cluster} ({len(todo)} tasks): {', '.join(report.slots)}; "
          f"logs in {folder / 'slurm'}")
    poll = float(s.get("poll_s", 10.0))
    pending = list(zip(jobs, dirs, strict=True))
    while pending:
        for job, d in list(pending):
            if not job.done():
                continue
            pending.remove((job, d))
            tail(d / "records.jsonl")
            try:
                err = job.exception()
            except Exception as e:  # an unreadable result: the job died without writing one
                err = e
            if err is not None:
                report.failures.append(f"job {job.job_id} ({d.name}) failed: {str(err).strip()[-500:]}")
                _warn(report.failures[-1])
        for _, d in pending:
            tail(d / "records.jsonl")
        if pending:
            time.sleep(poll)
    for d in dirs:
        tail(d / "records.jsonl")
    report.lost = [t for t in todo if t.key not in sent]
    if report.lost and not report.failures:
        report.failures.append("jobs ended without a record for every task")
