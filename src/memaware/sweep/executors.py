"""Executors: where a stage's run specifications are trained. The sweep runner plans; they only run.

Every executor has `map(fn, specs)`, yielding one result per specification in order. A task whose worker
died (a killed process, a lost Ray node, a pre-empted Slurm job) is retried up to `retries` times, then
yields a `TaskFailed` that the runner records as a failed run. A retried task is safe: a run folder
with its `done` marker is read back, never redone, so only unfinished runs of the task train again.

- `local`: one run after another in this process.
- `processes`: a pool of worker processes on this machine, one GPU each where there are GPUs.
- `ray`: Ray tasks on a running cluster (or a local instance); the stage's data sets travel once per
  stage through Ray's object store.
- `slurm`: Slurm jobs through submitit, one job array per stage (submitit's local executor runs the
  same path without a cluster).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..errors import MemawareError

Status = Callable[[dict], None]


@dataclass(frozen=True)
class TaskFailed:
    """What a task yields when its worker died more often than the executor retries."""

    error: str
    attempts: int


def chunks(items: list, n: int) -> list[list]:
    """`items` split into at most `n` contiguous chunks of near-equal size (order kept)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        stop = start + size + (i < extra)
        out.append(items[start:stop])
        start = stop
    return [c for c in out if c]


STATES = ("queued", "running", "finished", "failed")


def tally(states: list[str], tasks: list[list]) -> dict[str, int]:
    """Runs per state, from each task's state and its number of specifications."""
    counts = dict.fromkeys(STATES, 0)
    for state, task in zip(states, tasks):
        counts[state] += len(task)
    return counts


def run_chunk(fn: Callable, specs: list) -> list:
    """A task: run `fn` on a few specifications in one worker (their data set is loaded once there)."""
    return [fn(spec) for spec in specs]


def flatten(task_results: list, task_sizes: list[int]) -> Iterator:
    """Per specification, its result (a failed task's TaskFailed repeated for each of its specifications)."""
    for result, size in zip(task_results, task_sizes):
        yield from (result if isinstance(result, list) else [result] * size)


def missing_extra(module: str, executor: str) -> MemawareError:
    return MemawareError(f"--executor {executor} needs the package '{module}': pip install 'memaware[scale]' "
                         f"(or pip install {module})")


class LocalExecutor:
    """One run after another in this process."""

    status: Status | None = None

    def map(self, fn, specs):
        return (fn(spec) for spec in specs)


class ProcessExecutor:
    """A pool of `workers` processes (default: one per GPU, else one per CPU core), kept from stage to
    stage; each task runs a chunk of specifications, and a task whose worker died is resubmitted to a
    fresh pool. `close()` ends the workers."""

    def __init__(self, workers: int | None = None, retries: int = 2, tasks_per_worker: int = 4,
                 status: Status | None = None):
        self.workers, self.retries, self.tasks_per_worker, self.status = workers, retries, tasks_per_worker, status
        self.pool = None

    def devices(self) -> list[str | None]:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        n = self.workers or gpus or os.cpu_count() or 1
        return [str(i % gpus) if gpus else None for i in range(n)]

    def start(self):
        """The pool of worker processes, started with one device each if none is running."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self.pool is None:
            devices = self.devices()
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            for device in devices:
                queue.put(device)
            self.pool = ProcessPoolExecutor(len(devices), mp_context=context, initializer=claim_device,
                                            initargs=(queue,))
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None

    def map(self, fn, specs):
        specs = list(specs)
        if not specs:
            return iter([])
        tasks = chunks(specs, len(self.devices()) * self.tasks_per_worker)
        results: list[Any] = [None] * len(tasks)
        states, attempts = ["queued"] * len(tasks), [0] * len(tasks)
        while "queued" in states:
            pool = self.start()
            futures = {pool.submit(run_chunk, fn, tasks[i]): i for i, s in enumerate(states) if s == "queued"}
            lost = self._collect(futures, results, states, tasks)
            if lost:
                self.close()  # a broken pool takes no more work: the next round starts a fresh one
            for i in lost:
                attempts[i] += 1
                if attempts[i] > self.retries:
                    results[i], states[i] = TaskFailed(f"its worker process died {attempts[i]} times",
                                                       attempts[i]), "failed"
        return flatten(results, [len(t) for t in tasks])

    def _collect(self, futures: dict, results: list, states: list[str], tasks: list[list]) -> list[int]:
        """Wait for the futures of one pool; returns the tasks that were running when a worker died (they
        and the tasks still queued are set back to 'queued')."""
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        waiting = set(futures)
        while waiting:
            for future in waiting:
                states[futures[future]] = "running" if future.running() else "queued"
            running = [futures[f] for f in waiting if f.running()]
            done, waiting = wait(waiting, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    results[futures[future]] = future.result()
                    states[futures[future]] = "finished"
                except BrokenProcessPool:
                    for i in futures.values():
                        states[i] = "queued" if states[i] != "finished" else "finished"
                    return running or [futures[future]]
            if self.status is not None:
                self.status(tally(states, tasks))
        return []


def claim_device(queue) -> None:
    """Pool initializer: this worker takes one GPU (CUDA_VISIBLE_DEVICES) and one CPU thread."""
    import torch

    device = queue.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    torch.set_num_threads(1)


class RayExecutor:
    """Ray tasks, each a chunk of specifications asking for `cpus` CPUs and `gpus` of a GPU; Ray retries a
    task whose worker or node died (`retries` times). `fn` (with the data sets the runner loaded into it)
    is put in the object store once per stage."""

    preload_data = True  # the runner loads the stage's data sets before `map`, to ship them once

    def __init__(self, address: str | None = None, cpus: float = 1, gpus: float = 0, retries: int = 2,
                 tasks: int | None = None, status: Status | None = None):
        try:
            import ray
        except ImportError:
            raise missing_extra("ray", "ray") from None
        self.ray, self.retries, self.cpus, self.gpus, self.status = ray, retries, cpus, gpus, status
        if not ray.is_initialized():
            options = {"address": address} if address else {"num_cpus": os.cpu_count(), "include_dashboard": False}
            ray.init(**options, log_to_driver=False, configure_logging=False)
        self.tasks = tasks or max(1, int(ray.cluster_resources().get("CPU", 1) / cpus) * 4)
        self.remote = ray.remote(run_chunk).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries)

    def map(self, fn, specs):
        ray = self.ray
        tasks = chunks(list(specs), self.tasks)
        fn_ref = ray.put(fn)
        refs = [self.remote.remote(fn_ref, task) for task in tasks]
        results: list[Any] = [None] * len(tasks)
        index = {ref: i for i, ref in enumerate(refs)}
        states = ["running"] * len(tasks)  # Ray does not tell queued from running cheaply
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=0.5)
            for ref in done:
                i = index[ref]
                try:
                    results[i], states[i] = ray.get(ref), "finished"
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.RayTaskError) as err:
                    if isinstance(err, ray.exceptions.RayTaskError) and isinstance(err.cause, MemawareError):
                        raise err.cause from None
                    results[i] = TaskFailed(f"{type(err).__name__}: {str(err).splitlines()[0]}", self.retries + 1)
                    states[i] = "failed"
            if self.status is not None:
                self.status(tally(states, tasks))
        return flatten(results, [len(t) for t in tasks])


class SlurmExecutor:
    """Slurm job arrays through submitit, one array per stage; a job that failed (pre-empted, killed, out
    of time) is resubmitted up to `retries` times. `options` are submitit's (partition, timeout_min,
    gpus_per_node, cpus_per_task, mem_gb, ...); `cluster="local"` runs the jobs as local processes."""

    def __init__(self, folder, options: dict | None = None, retries: int = 2, jobs: int = 32,
                 cluster: str | None = None, status: Status | None = None):
        try:
            import submitit
        except ImportError:
            raise missing_extra("submitit", "slurm") from None
        self.submitit, self.retries, self.jobs, self.status = submitit, retries, jobs, status
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        self.executor.update_parameters(**(options or {}))

    def map(self, fn, specs):
        tasks = chunks(list(specs), self.jobs)
        results: list[Any] = [None] * len(tasks)
        attempts = [0] * len(tasks)
        pending = list(range(len(tasks)))
        while pending:
            jobs = self.executor.map_array(run_chunk, [fn] * len(pending), [tasks[i] for i in pending])
            states = ["queued" if r is None else "failed" if isinstance(r, TaskFailed) else "finished" for r in results]
            retry = []
            errors = (self.submitit.core.utils.FailedJobError, self.submitit.core.utils.UncompletedJobError)
            for i, job in self._wait(pending, jobs, states, tasks):
                try:
                    results[i], states[i] = job.result(), "finished"
                except errors as err:  # pre-empted, killed, out of time or crashed
                    attempts[i] += 1
                    if attempts[i] > self.retries:
                        results[i], states[i] = TaskFailed(str(err).splitlines()[0], attempts[i]), "failed"
                    else:
                        retry.append(i)
            pending = retry
        return flatten(results, [len(t) for t in tasks])

    def _wait(self, indices: list[int], jobs: list, states: list[str], tasks: list[list]):
        """(task index, job) as jobs finish, reporting runs queued, running, finished and failed meanwhile."""
        left = dict(zip(indices, jobs))
        while left:
            for i in [i for i, job in left.items() if job.done()]:
                yield i, left.pop(i)
            for i, job in left.items():
                states[i] = "running" if job.state == "RUNNING" else "queued"
            if self.status is not None:
                self.status(tally(states, tasks))
            if left:
                time.sleep(0.5)


EXECUTORS = ("local", "processes", "ray", "slurm")


def make_executor(name: str, root, workers: int | None = None, retries: int = 2, ray_address: str | None = None,
                  slurm: dict | None = None, status: Status | None = None, cpus_per_task: float = 1,
                  gpus_per_task: float = 0):
    """The executor `name` (one of EXECUTORS) for a sweep folder `root`, with the settings of the
    experiment file's `execution` section (sweep/experiment.py: Execution)."""
    if name == "local":
        executor = LocalExecutor()
        executor.status = status
        return executor
    if name == "processes":
        return ProcessExecutor(workers, retries, status=status)
    if name == "ray":
        return RayExecutor(ray_address, cpus_per_task, gpus_per_task, retries, status=status)
    if name == "slurm":
        options = dict(slurm or {})
        cluster = options.pop("cluster", None)
        jobs = options.pop("jobs", 32)
        return SlurmExecutor(os.path.join(root, "slurm"), options, retries, jobs, cluster, status)
    raise MemawareError(f"--executor: unknown executor '{name}' (known: {', '.join(EXECUTORS)})")
