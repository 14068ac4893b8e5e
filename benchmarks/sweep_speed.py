"""Time the paper's featurized protocol through `run_sweep`: the batched engine against `engine: single`.

Waterbirds-shaped features (issue 9): 2048 dimensions; train groups (y, a) of 3498, 184, 56 and 1057
examples, validation 467, 466, 133, 133, test 2255, 2255, 642, 642; each example is its core direction
times +-1 (by y) plus its spurious direction times +-2 (by a), two orthogonal unit vectors, plus Gaussian
noise of deviation 0.5 in every dimension. The protocol: 10 XRM runs, 10 MAT combinations (linear family,
criterion va_wga), the chosen one over seeds 0..9, each 1001 steps with an evaluation every 50.

    PYTHONPATH=src python benchmarks/sweep_speed.py                       # both engines, this CPU
    PYTHONPATH=src python benchmarks/sweep_speed.py --device cuda
    PYTHONPATH=src python benchmarks/sweep_speed.py --scaling --csv scaling-cpu.csv   # batched engine only
    PYTHONPATH=src python benchmarks/sweep_speed.py --plot docs/speed-scaling.png scaling-cpu.csv scaling-gpu.csv

Prints, per engine, the time of each stage and of the whole sweep, the peak memory, and the selected
test WGA (mean over the seeds); then the ratio of the times and the difference of the WGAs. --scaling
times the batched engine over 1, 10, 100 and 1000 combinations (train split x1) and over the train split
x1, x10 and x100 (10 combinations), each in a fresh process, and appends a row per sweep to --csv.

The features are generated once and written to an uncompressed .npz file before any sweep; each timed
sweep loads that file, as a sweep over features on disk does (generating the noise would take longer
than the GPU's whole sweep).
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from memaware.data import load
from memaware.data.dataset import Dataset
from memaware.data.registry import DATASETS, DatasetSpec, register_dataset
from memaware.sweep.experiment import validate
from memaware.sweep.runner import run_sweep

GROUP_SIZES = {"train": (3498, 184, 56, 1057), "val": (467, 466, 133, 133), "test": (2255, 2255, 642, 642)}
NAME = "waterbirds-shaped"


def waterbirds_shaped(replicate: int = 1, d: int = 2048, noise: float = 0.5, seed: int = 0) -> Dataset:
    """The features above; `replicate` copies of the train split's examples, each with fresh noise."""
    rng = np.random.default_rng(seed)
    core, spurious = np.linalg.qr(rng.standard_normal((d, 2)))[0].T
    y, a, split, blocks = [], [], [], []
    for name, sizes in GROUP_SIZES.items():
        copies = replicate if name == "train" else 1
        for g, size in enumerate(sizes):
            blocks.append((len(y), len(y) + size * copies, g // 2, g % 2))
            y += [g // 2] * size * copies
            a += [g % 2] * size * copies
            split += [name] * size * copies
    y, a = np.asarray(y), np.asarray(a)
    x = rng.standard_normal((len(y), d), dtype=np.float32)
    x *= noise
    for start, end, label, attribute in blocks:  # each group's examples are one block of rows: added in place
        x[start:end] += (np.float32(2 * label - 1) * core.astype(np.float32) +
                         (2 * (2 * attribute - 1) * spurious).astype(np.float32))
    return Dataset(x, y, np.asarray(split), a, name=NAME)


def register_features(folder: str, replicate: int = 1) -> None:
    """Write the features (`replicate` copies of the train split) to an .npz file in `folder`, and
    register the data set NAME as that file: sweeps then time loading it, not generating it."""
    data, path = waterbirds_shaped(replicate), Path(folder) / f"{NAME}-x{replicate}.npz"
    np.savez(path, x=data.x, y=data.y, split=data.split, a=data.a)
    DATASETS.pop(NAME, None)
    register_dataset(DatasetSpec(NAME, "synthetic", "Waterbirds-shaped features (issue 9), from a file",
                                 lambda replicate=replicate: load(path, name=NAME), provenance="generated"))


def experiment(device: str, engine: str, runs: int, combinations: int, seeds: int, steps: int, replicate: int):
    return validate({
        "name": f"sweep-speed-{engine}",
        "datasets": [{"name": NAME, "family": "linear", "args": {"replicate": replicate}}],
        "methods": ["mat"],
        "train": {"steps": steps, "checkpoint_freq": 50, "device": device, "engine": engine},
        "phase1": {"source": "xrm", "runs": runs},
        "search": {"combinations": combinations, "seed": 0, "seeds": list(range(seeds)), "criteria": ["va_wga"]},
    }, "benchmark")


class StageClock:
    """on_progress callback: the wall time from each stage's first report to its last."""

    def __init__(self):
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.start.setdefault(stage, now)
        self.end[stage] = now

    def __str__(self) -> str:
        return ", ".join(f"{s} {self.end[s] - self.start[s]:.2f} s" for s in self.start)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_sweep(args, engine: str) -> dict:
    exp = experiment(args.device, engine, args.runs, args.combinations, args.seeds, args.steps, args.replicate)
    clock = StageClock()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as root:
        sync(args.device)
        start = time.perf_counter()
        summary = run_sweep(exp, root, on_progress=clock)
        sync(args.device)
        elapsed = time.perf_counter() - start
    row = next(r for r in summary["results"] if r["criterion"] == "va_wga")
    wga = float(np.mean([r["test_wga"] for r in row["runs"]]))
    gpu = args.device.startswith("cuda")
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{engine:>8}: {elapsed:.2f} s ({clock}); peak {'GPU memory' if gpu else 'process RSS'} {peak:.2f} GiB; "
          f"selected combination {row['combination']}, test WGA {wga:.4f} (mean over {len(row['runs'])} seeds)",
          flush=True)
    stages = {s: round(clock.end[s] - clock.start[s], 3) for s in clock.start}
    return {"engine": engine, "device": args.device, "combinations": args.combinations, "replicate": args.replicate,
            "seconds": round(elapsed, 3), **stages, "peak_gib": round(peak, 3), "test_wga": round(wga, 4)}


SCALING = [(1, 1), (10, 1), (100, 1), (1000, 1), (10, 10), (10, 100)]  # (combinations, train split copies)


def scaling(args) -> None:
    """Each sweep of SCALING in a fresh process (its own peak memory); rows appended to args.csv."""
    for combinations, replicate in SCALING:
        cmd = [sys.executable, __file__, "--engines", "batched", "--device", args.device, "--combinations",
               str(combinations), "--replicate", str(replicate), "--json"] + (["--warmup"] if args.warmup else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"{combinations} combinations x{replicate}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        path = Path(args.csv)
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


def plot(out: str, paths: list[str]) -> None:
    """Time against the number of combinations and against the train split's size, one line per device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for p in paths for r in csv.DictReader(open(p))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for device in sorted({r["device"] for r in rows}):
        mine = [r for r in rows if r["device"] == device]
        for ax, x, fixed in ((axes[0], "combinations", ("replicate", "1")), (axes[1], "replicate", ("combinations", "10"))):
            points = sorted((int(r[x]), float(r["seconds"])) for r in mine if r[fixed[0]] == fixed[1])
            ax.plot(*zip(*points), marker="o", label=device)
    for ax, label in zip(axes, ("MAT combinations searched (train split x1)", "copies of the train split (10 combinations)")):
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel(label), ax.set_ylabel("whole sweep (s)")
        ax.grid(True, which="both", alpha=0.3), ax.legend()
    fig.suptitle("batched engine: 10 XRM runs, the search, 10 seeds; 1001 steps each")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engines", default="batched,single")
    parser.add_argument("--runs", type=int, default=10, help="phase-1 XRM runs")
    parser.add_argument("--combinations", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1001)
    parser.add_argument("--replicate", type=int, default=1, help="copies of the train split, fresh noise each")
    parser.add_argument("--warmup", action="store_true", help="one short sweep first (CUDA context, kernels)")
    parser.add_argument("--json", action="store_true", help="end with the last sweep's figures as one JSON line")
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--csv", default="sweep-scaling.csv")
    parser.add_argument("--plot", nargs="+", metavar=("PNG", "CSV"))
    args = parser.parse_args()
    if args.plot:
        return plot(args.plot[0], args.plot[1:])
    if args.scaling:
        return scaling(args)
    folder = tempfile.TemporaryDirectory()
    register_features(folder.name, args.replicate)
    print(f"{NAME} x{args.replicate}; {args.runs} XRM runs, {args.combinations} MAT combinations, "
          f"{args.seeds} seeds, {args.steps} steps; device {args.device}, torch threads {torch.get_num_threads()}",
          flush=True)
    if args.warmup:
        warm = argparse.Namespace(**{**vars(args), "runs": 2, "combinations": 2, "seeds": 2, "steps": 60})
        for engine in args.engines.split(","):
            time_sweep(warm, engine)
    rows = [time_sweep(args, engine) for engine in args.engines.split(",")]
    if len(rows) == 2:
        fast, slow = sorted(rows, key=lambda r: r["seconds"])
        print(f"{slow['engine']} / {fast['engine']}: {slow['seconds'] / fast['seconds']:.1f}x; "
              f"test WGA difference {abs(fast['test_wga'] - slow['test_wga']):.4f}")
    if args.json:
        print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
