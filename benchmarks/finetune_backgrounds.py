"""fashion-on-backgrounds as images: a linear head on frozen EfficientNet-Lite0 features against the whole
network fine-tuned end to end, with ERM and MAT, on the same images and the same phase 1 (XRM on the
frozen features). Prints test worst-group and average accuracy, selected by validation worst-group accuracy.

The 64 x 64 images of `memaware.data.backgrounds` are written as PNGs in the generic `images` layout and
streamed from there, as a user's folder would be. Needs Fashion-MNIST (apt-get install
dataset-fashion-mnist) and memaware[vision].

    python benchmarks/finetune_backgrounds.py --device cuda                 # the full data, 1001 steps
    python benchmarks/finetune_backgrounds.py --scale 0.02 --steps 6 --checkpoint-freq 3   # a smoke run
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from PIL import Image

from memaware.data.backgrounds import IMAGE_SIZE, make_images
from memaware.data.layouts import read_layout
from memaware.data.stream import stream
from memaware.train import TrainConfig, fit
from memaware.heldout import xrm
from memaware.train.backbones import frozen_features, network


def write_folder(folder: Path, scale: float, seed: int) -> None:
    images, y, a, split = make_images(scale, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    pd.DataFrame({"filename": [f"{i}.png" for i in range(len(y))], "y": y, "a": a, "split": split}).to_csv(
        folder / "metadata.csv", index=False)


def selected(result) -> str:
    record = result.selected("va_wga")
    return f"test WGA {record['test']['wga']:.3f}, avg {record['test']['avg_acc']:.3f} (step {record['step']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of Waterbirds' group sizes")
    parser.add_argument("--steps", type=int, default=1001)
    parser.add_argument("--checkpoint-freq", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (SGD, momentum 0.9)")
    parser.add_argument("--head-lr", type=float, default=1e-2, help="learning rate of the head-only runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=1e-4,
                         checkpoint_freq=args.checkpoint_freq, device=args.device, seed=args.seed)
    head = config.model_copy(update={"lr": args.head_lr})
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp) / "images", args.scale, args.seed)
        data = stream(read_layout("images", Path(tmp) / "images"), network("efficientnet_lite0", image_size=IMAGE_SIZE))
        print(f"fashion-on-backgrounds at scale {args.scale}: {len(data)} images, train groups "
              f"{data.group_sizes()['train']}", flush=True)
        start = time.perf_counter()
        features = frozen_features(data, config)
        phase1 = xrm(features, head)
        print(f"phase 1 (XRM on frozen features): flip rate {phase1.flip_rate:.3f}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        for method in ("erm", "mat"):
            for label, dataset, run_config in (("head only", features, head), ("end to end", data, config)):
                start = time.perf_counter()
                result = fit(dataset, method, run_config, heldout=phase1)
                print(f"{method:4s} {label:10s}: {selected(result)}, {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
