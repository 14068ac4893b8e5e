"""Executors: the same experiment through worker processes, a local Ray instance and submitit's local
executor gives the local executor's numbers; a worker killed with SIGKILL mid-sweep is retried."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from memaware.errors import MemawareError
from memaware.sweep.executors import ProcessExecutor, TaskFailed, chunks, make_executor, tally
from memaware.sweep.experiment import load_experiment
from memaware.sweep.runner import run_sweep

TINY = Path(__file__).resolve().parents[1] / "experiments" / "tiny.yaml"
SMALL = ["search.combinations=2", "datasets.0.train.steps=40", "phase1.runs=1"]


def numbers(summary: dict) -> list:
    """What a sweep reports: per row its choice and each seed's selected step and metrics, rounded."""
    return [(r["dataset"], r["method"], r["criterion"], r["combination"], r["failed"],
             [(run["seed"], run["step"], round(run["test_wga"], 5), round(run["test_avg_acc"], 5))
              for run in r["runs"]]) for r in summary["results"]]


@pytest.fixture(scope="module")
def local_numbers(tmp_path_factory):
    exp = load_experiment(TINY, SMALL)
    return numbers(run_sweep(exp, tmp_path_factory.mktemp("local") / "sweep"))


def test_chunks_keep_order_and_sizes():
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert chunks([1, 2], 5) == [[1], [2]] and chunks([], 3) == []
    assert tally(["running", "queued", "finished"], [[1, 2], [3], [4, 5, 6]]) == {
        "queued": 1, "running": 2, "finished": 3, "failed": 0}


def test_processes_give_the_local_numbers(tmp_path, local_numbers):
    counts = []
    executor = ProcessExecutor(workers=2, status=counts.append)
    try:
        summary = run_sweep(load_experiment(TINY, SMALL), tmp_path / "sweep", executor)
    finally:
        executor.close()
    assert numbers(summary) == local_numbers
    assert counts and counts[-1]["finished"] >= 1 and counts[-1]["failed"] == 0


def test_a_killed_worker_is_retried_and_the_sweep_ends_with_the_uninterrupted_numbers(tmp_path, local_numbers):
    root = tmp_path / "sweep"
    executor = ProcessExecutor(workers=2, retries=3)
    killed = []

    def kill_a_worker_mid_sweep():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            done = list((root / "runs").glob("*/done")) if (root / "runs").exists() else []
            workers = list(getattr(executor.pool, "_processes", None) or {})
            if done and workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_a_worker_mid_sweep, daemon=True)
    watcher.start()
    try:
        summary = run_sweep(load_experiment(TINY, SMALL), root, executor)
    finally:
        executor.close()
    watcher.join()
    assert killed, "no worker was killed"
    assert numbers(summary) == local_numbers


def die(spec):
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_task_that_keeps_dying_is_reported_failed_not_missing():
    executor = ProcessExecutor(workers=1, retries=1, tasks_per_worker=1)
    results = list(executor.map(die, [1, 2]))  # each attempt kills its worker
    executor.close()
    assert all(isinstance(r, TaskFailed) and r.attempts == 2 for r in results)


def test_ray_gives_the_local_numbers(tmp_path, local_numbers):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             configure_logging=False)
    try:
        executor = make_executor("ray", tmp_path / "sweep")
        summary = run_sweep(load_experiment(TINY, SMALL), tmp_path / "sweep", executor)
    finally:
        ray.shutdown()
    assert numbers(summary) == local_numbers


def test_submitit_local_gives_the_local_numbers(tmp_path, local_numbers):
    executor = make_executor("slurm", tmp_path / "sweep", slurm={"cluster": "local", "jobs": 2, "timeout_min": 10})
    summary = run_sweep(load_experiment(TINY, SMALL), tmp_path / "sweep", executor)
    assert numbers(summary) == local_numbers
    assert list((tmp_path / "sweep" / "slurm").iterdir())  # submitit's job files live in the sweep folder


def test_unknown_executor_and_missing_extra_are_one_line_errors(monkeypatch, tmp_path):
    import builtins

    with pytest.raises(MemawareError, match="unknown executor 'mpi'"):
        make_executor("mpi", tmp_path)
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "submitit" else real_import(name, *a, **k))
    with pytest.raises(MemawareError, match=r"pip install 'memaware\[scale\]'"):
        make_executor("slurm", tmp_path)
