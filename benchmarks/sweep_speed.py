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
    PYTHONPATH=src python benchmarks/sweep_speed.py --cli 5 [--device cuda --warmup]   # from the shell

Prints, per engine, the time of each stage and of the whole sweep, the peak memory, and the selected
test WGA (mean over the seeds); then the ratio of the times and the difference of the WGAs. --scaling
times the batched engine over 1, 10, 100 and 1000 combinations (train split x1) and over the train split
x1, x10 and x100 (10 combinations), each in a fresh process, and appends a row per sweep to --csv.
--cli N times the protocol as a user runs it: `python -m memaware sweep FILE --out DIR` (the `memaware`
command's code) over the features written to a file, in N fresh processes, with the run folders, summary
and report it writes; beside it, in the same loop, the floor of any such command (`python -c "import
torch"`; on CUDA also the context and a first matrix product); it prints each wall time and the medians,
then checks that the commands select the combination and test WGA that the same sweep selects in-process.

The features are generated once and written to an uncompressed .npz file before any sweep; each timed
sweep loads that file, as a sweep over features on disk does (generating the noise would take longer
than the GPU's whole sweep).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
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


def register_features(folder: str, replicate: int = 1) -> Path:
    """Write the features (`replicate` copies of the train split) to an .npz file in `folder`, and
    register the data set NAME as that file: sweeps then time loading it, not generating it. Returns the file."""
    data, path = waterbirds_shaped(replicate), Path(folder) / f"{NAME}-x{replicate}.npz"
    np.savez(path, x=data.x, y=data.y, split=data.split, a=data.a)
    DATASETS.pop(NAME, None)
    register_dataset(DatasetSpec(NAME, "synthetic", "Waterbirds-shaped features (issue 9), from a file",
                                 lambda replicate=replicate: load(path, name=NAME), provenance="generated"))
    return path


def protocol(args, engine: str, dataset: dict) -> dict:
    """The protocol's experiment, as an experiment file's mapping, on `dataset` (a data set entry)."""
    return {
        "name": f"sweep-speed-{engine}",
        "datasets": [{**dataset, "family": "linear"}],
        "methods": ["mat"],
        "train": {"steps": args.steps, "checkpoint_freq": 50, "device": args.device, "engine": engine},
        "phase1": {"source": "xrm", "runs": args.runs},
        "search": {"combinations": args.combinations, "seed": 0, "seeds": list(range(args.seeds)),
                   "criteria": ["va_wga"]},
    }


def experiment(args, engine: str):
    """The protocol on the registered data set NAME (args.replicate copies of the train split)."""
    return validate(protocol(args, engine, {"name": NAME, "args": {"replicate": args.replicate}}), "benchmark")


def selection(summary: dict) -> tuple[int, float, int]:
    """(combination, test WGA as the mean over the seeds, seeds) that the sweep's criterion va_wga selects."""
    row = next(r for r in summary["results"] if r["criterion"] == "va_wga")
    return row["combination"], float(np.mean([r["test_wga"] for r in row["runs"]])), len(row["runs"])


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
    exp = experiment(args, engine)
    clock = StageClock()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as root:
        sync(args.device)
        start = time.perf_counter()
        summary = run_sweep(exp, root, on_progress=clock)
        sync(args.device)
        elapsed = time.perf_counter() - start
    combination, wga, n_seeds = selection(summary)
    gpu = args.device.startswith("cuda")
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{engine:>8}: {elapsed:.2f} s ({clock}); peak {'GPU memory' if gpu else 'process RSS'} {peak:.2f} GiB; "
          f"selected combination {combination}, test WGA {wga:.4f} (mean over {n_seeds} seeds)", flush=True)
    stages = {s: round(clock.end[s] - clock.start[s], 3) for s in clock.start}
    return {"engine": engine, "device": args.device, "combinations": args.combinations, "replicate": args.replicate,
            "seconds": round(elapsed, 3), **stages, "peak_gib": round(peak, 3), "test_wga": round(wga, 4),
            "combination": combination}


def warm_up(args, engines: list[str]) -> None:
    """One short sweep per engine (CUDA context, kernels) before the timed ones."""
    warm = argparse.Namespace(**{**vars(args), "runs": 2, "combinations": 2, "seeds": 2, "steps": 60})
    for engine in engines:
        time_sweep(warm, engine)


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


def floors(device: str) -> dict[str, str]:
    """Python one-liners that a command on `device` pays before any of its work: importing torch and, on
    CUDA, creating the context, and a first matrix product (cuBLAS's initialisation)."""
    one_liners = {"python -c 'import torch'": "import torch"}
    if device.startswith("cuda"):
        one_liners["torch.ones(1, device='cuda')"] = ("import torch; torch.ones(1, device='cuda'); "
                                                      "torch.cuda.synchronize()")
        one_liners["first cuda matmul"] = ("import torch; a = torch.ones(1024, 1024, device='cuda'); "
                                      "print(float((a @ a).sum()))")
    return one_liners


def wall_time(command: list[str]) -> float:
    """Seconds the command takes, start to exit; a failed command ends the benchmark with its error output."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
    return elapsed


def time_cli(args) -> None:
    """The protocol from the shell: the experiment file and the features written once, then `python -m
    memaware sweep FILE --out DIR` (what the `memaware` command runs) in args.cli fresh processes, each into a
    fresh folder, beside the floors (`floors`) timed the same way in the same loop; each wall time and the
    medians. Then the same sweep in this process (its own timer), which must select the same combination
    and test WGA as every command."""
    import importlib.util

    missing = [name for name in ("typer", "rich", "yaml") if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"--cli runs the memaware command, which needs {', '.join(missing)}: pip install typer rich pyyaml")
    from memaware.cli.core import one_cpu_thread

    one_cpu_thread()  # this process's sweep takes the CLI's threads
    with tempfile.TemporaryDirectory() as tmp:  # the features file, registered for this process's sweep too
        times, selected = time_commands(args, Path(tmp))
        print("median: " + ", ".join(f"{label} {statistics.median(t):.2f} s" for label, t in times.items()))
        if args.warmup:
            warm_up(args, ["batched"])
        here = time_sweep(args, "batched")
    print(f"the commands select {', '.join(f'combination {c}, test WGA {w:.4f}' for c, w in sorted(selected))}; "
          f"this process: combination {here['combination']}, test WGA {here['test_wga']:.4f}: "
          f"{'the same' if selected == {(here['combination'], here['test_wga'])} else 'DIFFERENT'}")


def time_commands(args, folder: Path) -> tuple[dict[str, list[float]], set[tuple[int, float]]]:
    """time_cli's commands, args.cli rounds in `folder`: the wall times of each, and the (combination, test WGA)
    that the sweeps selected."""
    import yaml

    features = register_features(str(folder), args.replicate)
    path = folder / "protocol.yaml"
    path.write_text(yaml.safe_dump(protocol(args, "batched", {"name": str(features), "label": NAME})))
    commands = {label: [sys.executable, "-c", code] for label, code in floors(args.device).items()}
    sweep_command = [sys.executable, "-m", "memaware", "sweep", str(path), "--out"]
    threads = os.environ.get("OMP_NUM_THREADS", "1 (the CLI's default; OMP_NUM_THREADS unset)")
    print(f"{' '.join(sweep_command)} DIR, {args.cli} fresh processes; {NAME} x{args.replicate} in {features}; "
          f"device {args.device}, training threads {threads}; floors measured in the same loop", flush=True)
    times, selected = {label: [] for label in [*commands, "memaware sweep"]}, set()
    for i in range(args.cli):
        for label, command in commands.items():
            times[label].append(wall_time(command))
        out = folder / f"out-{i}"
        times["memaware sweep"].append(wall_time(sweep_command + [str(out)]))
        combination, wga, _ = selection(json.loads((out / "summary.json").read_text()))
        selected.add((combination, round(wga, 4)))
        shutil.rmtree(out)
        print(f"  {i + 1}: " + ", ".join(f"{label} {t[-1]:.2f} s" for label, t in times.items()), flush=True)
    return times, selected


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
    parser.add_argument("--cli", type=int, metavar="N", help="time `memaware sweep` from the shell, N fresh processes")
    args = parser.parse_args()
    if args.plot:
        return plot(args.plot[0], args.plot[1:])
    if args.scaling:
        return scaling(args)
    if args.cli:
        return time_cli(args)
    folder = tempfile.TemporaryDirectory()
    register_features(folder.name, args.replicate)
    print(f"{NAME} x{args.replicate}; {args.runs} XRM runs, {args.combinations} MAT combinations, "
          f"{args.seeds} seeds, {args.steps} steps; device {args.device}, torch threads {torch.get_num_threads()}",
          flush=True)
    if args.warmup:
        warm_up(args, args.engines.split(","))
    rows = [time_sweep(args, engine) for engine in args.engines.split(",")]
    if len(rows) == 2:
        fast, slow = sorted(rows, key=lambda r: r["seconds"])
        print(f"{slow['engine']} / {fast['engine']}: {slow['seconds'] / fast['seconds']:.1f}x; "
              f"test WGA difference {abs(fast['test_wga'] - slow['test_wga']):.4f}")
    if args.json:
        print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
