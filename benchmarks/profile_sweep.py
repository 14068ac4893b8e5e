"""Where the batched engine's time goes on the issue-9 protocol: torch.profiler over one sweep (after a
short warm-up sweep), printing the wall time, the GPU's busy time (the sum of its kernels' times), and the
operations that take the most GPU time and the most host time.

    PYTHONPATH=src python benchmarks/profile_sweep.py          # on a GPU: the protocol's 1001 steps
    PYTHONPATH=src python benchmarks/profile_sweep.py --steps 101
    PYTHONPATH=src python benchmarks/profile_sweep.py --eager     # steps taken eagerly: kernels under their ops
    PYTHONPATH=src python benchmarks/profile_sweep.py --python    # cProfile: where the host's time goes
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import sweep_speed
from memaware.sweep.runner import run_sweep
from memaware.train import batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1001)
    parser.add_argument("--rows", type=int, default=25, help="operations listed per table")
    parser.add_argument("--eager", action="store_true", help="no CUDA graphs: each kernel under its operation")
    parser.add_argument("--python", action="store_true", help="cProfile instead of torch.profiler")
    args = parser.parse_args()
    if args.eager:
        batched.record_cuda_graph = None  # train_stack then takes its steps eagerly
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    features = tempfile.TemporaryDirectory()
    sweep_speed.register_features(features.name)
    warm = sweep_speed.experiment(device, "batched", 2, 2, 2, 60, 1)
    timed = sweep_speed.experiment(device, "batched", 10, 10, 10, args.steps, 1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with tempfile.TemporaryDirectory() as folder:
        run_sweep(warm, f"{folder}/warm")
        if args.python:
            host = cProfile.Profile()
            host.runcall(run_sweep, timed, f"{folder}/timed")
            for order in ("cumulative", "tottime"):
                pstats.Stats(host).sort_stats(order).print_stats(args.rows)
            return
        with profile(activities=activities, record_shapes=args.eager) as prof:
            start = time.perf_counter()
            run_sweep(timed, f"{folder}/timed")
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
    events = prof.key_averages(group_by_input_shape=args.eager)
    busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e6  # kernels, copies
    print(f"{device}: wall {wall:.2f} s under the profiler; GPU busy {busy:.2f} s (sum of kernel times)")
    if cuda:
        print(events.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
