"""Scale-out executors on the CPU: 2 local workers, submitit's local and debug clusters, a dying shard + resume.

Every worker process imports torch (seconds each), so the task lists are small and the process count low.
"""

from __future__ import annotations

import argparse
import json
import socket
from dataclasses import replace

import pytest

from harness import executors
from harness.records import ResultWriter, load_jsonl, record_key
from harness.runner import RunOptions, execute, plan

pytest.importorskip("submitit")

OPTS = RunOptions(seeds=(0, 1), max_time_s=0.02, warmup_s=0.0, min_n=3, timeout_s=120.0)
VARIANTS = ["triton_axpb", "torch_out", "torch_ref", "wrong_zeros", "fault_raise"]


@pytest.fixture(autouse=True)
def toy_env(monkeypatch):
    monkeypatch.setenv("WB_FAMILIES", "tests.toy_family")  # spawned workers and jobs import the toy family
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    import tests.toy_family  # noqa: F401  (registers "toy" here too)


def toy_tasks(variants=VARIANTS):
    return plan(["toy"], variants=variants, dtypes=["fp32"], quick=True)


@pytest.fixture(scope="module")
def serial():
    """The reference: harness.runner.execute, one task after another (in-process: same records, no spawn)."""
    import tests.toy_family  # noqa: F401

    recs: list[dict] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WB_FAMILIES", "tests.toy_family")
        execute(toy_tasks(), replace(OPTS, isolate=False), recs.append)
    return {record_key(r): r for r in recs}


def summary(recs) -> dict:
    return {record_key(r): (r["status"], r["backend"], r["baseline"]) for r in recs}


def test_local_two_cpu_workers_match_serial(serial, tmp_path):
    tasks = toy_tasks()
    writer = ResultWriter(tmp_path)
    starts = []
    executors.run_tasks(tasks, OPTS, writer.add, executor="local", workers=2, on_start=starts.append)
    got = load_jsonl(tmp_path / "records.jsonl")
    assert summary(got) == summary(serial.values())
    assert len(got) == len(tasks) and sorted(t.key for t in starts) == sorted(t.key for t in tasks)
    assert all(r["node"] == socket.gethostname() and r["gpu_index"] is None for r in got)
    assert {p.name for p in tmp_path.iterdir()} >= {"records.jsonl", "toy.json", "toy.csv", "toy.md"}
    assert len(json.loads((tmp_path / "toy.json").read_text())) == len(tasks)
    rep = executors.LAST_REPORT
    assert rep.complete and rep.slots == ["cpu", "cpu"] and rep.records == len(tasks)


def test_slurm_through_submitit_local_cluster_matches_serial(serial, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the jobs' python must find the repo without the submitter's cwd
    tasks = toy_tasks()
    out = tmp_path / "out"
    writer = ResultWriter(out)
    executors.run_tasks(tasks, OPTS, writer.add, executor="slurm", folder=out,
                        slurm={"cluster": "local", "jobs": 2, "poll_s": 0.5, "time_min": 10, "gpus_per_node": 0})
    got = load_jsonl(out / "records.jsonl")
    assert summary(got) == summary(serial.values()), executors.LAST_REPORT.failures
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert len(shards) == 2 and {r["shard"] for r in got} == set(shards)
    assert all(r["slurm_job_id"] and r["node"] == socket.gethostname() for r in got)
    for name in shards:  # each job wrote its own resumable folder
        n = len(load_jsonl(out / "shards" / name / "records.jsonl"))
        assert n in (len(tasks) // 2, len(tasks) - len(tasks) // 2)
    assert (out / "slurm" / "submissions.jsonl").exists() and executors.LAST_REPORT.complete


def test_slurm_resume_gathers_finished_shards_and_submits_only_the_rest(tmp_path):
    """The submitter died while its jobs ran on: --resume takes their records and runs only what is missing."""
    tasks = toy_tasks(["torch_out", "torch_ref"])
    out = tmp_path / "out"
    old = ResultWriter(out / "shards" / "old-0000")
    for t in tasks[:2]:  # a previous job finished these two
        old.add({"family": t.family, "variant": t.variant, "dtype": t.dtype, "shape": t.shape, "status": "ok",
                 "slurm_job_id": "old", "shard": "old-0000"})
    writer = ResultWriter(out, resume=True)
    todo = [t for t in tasks if not writer.done(t.key)]
    executors.run_tasks(todo, OPTS, writer.add, executor="slurm", folder=out,
                        slurm={"cluster": "debug", "jobs": 1, "poll_s": 0.1})
    got = {record_key(r): r for r in load_jsonl(out / "records.jsonl")}
    assert set(got) == {t.key for t in tasks} and all(r["status"] == "ok" for r in got.values())
    assert [got[t.key]["slurm_job_id"] for t in tasks[:2]] == ["old", "old"]  # gathered, not re-run
    assert all(got[t.key]["slurm_job_id"] != "old" for t in tasks[2:])
    assert executors.LAST_REPORT.complete and len(executors.LAST_REPORT.slots) == 1


def test_dead_shard_is_reported_and_resume_reruns_its_share(tmp_path, capfd):
    """Without per-task isolation, fault_exit kills the whole shard process: its task is lost, not recorded."""
    tasks = toy_tasks(["torch_out", "torch_ref", "fault_exit"])
    writer = ResultWriter(tmp_path)
    executors.run_tasks(tasks, replace(OPTS, isolate=False), writer.add, executor="local", workers=2)
    rep = executors.LAST_REPORT
    lost = {t.key for t in rep.lost}
    assert lost and (all(k[1] == "fault_exit" for k in lost) or any("no shard left" in f for f in rep.failures))
    assert any("died" in f and "code 3" in f for f in rep.failures)
    assert "--resume" in capfd.readouterr().err
    assert not any(writer.done(k) for k in lost)  # nothing recorded for them: resume will run them

    writer = ResultWriter(tmp_path, resume=True)  # --resume: only the tasks with no record
    todo = [t for t in tasks if not writer.done(t.key)]
    assert todo and {t.key for t in todo} >= lost
    executors.run_tasks(todo, OPTS, writer.add, executor="local", workers=1)  # one worker: fewer torch imports
    got = {record_key(r): r for r in load_jsonl(tmp_path / "records.jsonl")}
    assert set(got) == {t.key for t in tasks} and executors.LAST_REPORT.complete
    for k, r in got.items():
        if k[1] == "fault_exit":
            # isolated this time: a record. (runtime_error "code 3"; under heavy load harness.runner.execute can
            # see the dead worker as still alive right after its pipe closed and call it a timeout)
            assert r["status"] in ("runtime_error", "timeout"), r
        else:
            assert r["status"] == "ok", r


def test_single_slot_is_plain_execute(monkeypatch):
    calls = []
    monkeypatch.setattr(executors, "execute", lambda tasks, opts, on_record, on_start=None: calls.append(tasks))
    executors.run_tasks(toy_tasks(["torch_out"]), OPTS, lambda r: None)
    assert len(calls) == 1 and executors.LAST_REPORT.slots == ["cpu"]


def test_cli_args_and_slurm_options():
    ap = argparse.ArgumentParser()
    executors.add_cli_args(ap)
    args = ap.parse_args(["--executor", "slurm", "--slurm-partition", "gpu", "--slurm-gpus-per-node", "4",
                          "--slurm-time", "90", "--slurm-gpu-type", "h100", "--slurm-array-parallelism", "3"])
    s = executors.slurm_options(args)
    assert args.executor == "slurm" and args.workers is None
    assert s["partition"] == "gpu" and s["gpus_per_node"] == 4 and s["time_min"] == 90 and s["gpu_type"] == "h100"
    assert s["array_parallelism"] == 3
    p = executors._submitit_params(s, "slurm")
    assert p["slurm_gres"] == "gpu:h100:4" and "gpus_per_node" not in p and p["slurm_partition"] == "gpu"
    assert p["timeout_min"] == 90 and p["slurm_array_parallelism"] == 3 and p["cpus_per_task"] == 32
    assert executors._submitit_params({"gpus_per_node": 2}, "slurm")["gpus_per_node"] == 2
    with pytest.raises(ValueError):
        executors.run_tasks([], OPTS, lambda r: None, executor="slurm")


def test_visible_gpus_parses_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert executors.visible_gpus() == ["3", "5"]
    assert executors._slots(1) == ["3"] and executors._gpu_index("5") == 5
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc,GPU-def,GPU-xyz")
    assert executors.visible_gpus() == ["GPU-abc", "GPU-def"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert executors.visible_gpus() == ["0", "1"]
