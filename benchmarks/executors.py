"""Wall time of one experiment's sweep through several executors, from scratch each, and whether each
reports the local executor's numbers.

    python benchmarks/executors.py experiments/offline-table.yaml --executors local,processes,ray
    python benchmarks/executors.py experiments/tiny.yaml --set train.device=cuda --executors local,processes

Prints the machine (CPU model and cores, GPUs), then one line per executor. Each sweep writes into a
fresh temporary folder, so nothing is resumed; data sets' feature caches (cache_dir) are kept.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from memaware.sweep.executors import make_executor
from memaware.sweep.experiment import load_experiment
from memaware.sweep.runner import run_sweep


def machine() -> str:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")),
                 platform.processor())
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{model}, {torch.get_num_threads()} threads" + (f"; GPUs: {', '.join(gpus)}" if gpus else "; no GPU")


def numbers(summary: dict) -> list:
    return [(r["dataset"], r["method"], r["criterion"], r["combination"],
             [(x["seed"], x["step"], round(x["test_wga"] or 0, 4)) for x in r["runs"]]) for r in summary["results"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--executors", default="local,processes")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    exp = load_experiment(Path(args.experiment), args.overrides)
    print(f"machine: {machine()}")
    print(f"experiment: {args.experiment} {' '.join('--set ' + o for o in args.overrides)}")
    reference = None
    for name in args.executors.split(","):
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder) / "sweep"
            start = time.perf_counter()
            executor = make_executor(name, root, workers=args.workers)
            summary = run_sweep(exp, root, executor)
            elapsed = time.perf_counter() - start
            getattr(executor, "close", lambda: None)()
            runs = len(list((root / "runs").iterdir()))
        reference = reference or numbers(summary)
        same = "same numbers as the first" if numbers(summary) == reference else "DIFFERENT numbers"
        print(f"{name:>10}: {elapsed:7.1f} s wall, {runs} runs; {same}", flush=True)
        if name == "ray":
            import ray

            ray.shutdown()


if __name__ == "__main__":
    main()
