"""Throughput of `memaware featurize`: images/s (EfficientNet-Lite0 at 224 and 64 px) and texts/s (MiniLM),
cold (the backbone runs) and warm (the cache answers), on --device cpu or cuda.

Images are synthetic PNG files written to a temporary folder, so decoding and resizing are counted; texts
are synthetic review-like sentences. Model loading and a warm-up batch of 8 are excluded from the cold
figures (timed apart as 'load').

    python benchmarks/featurize_throughput.py --device cuda
    python benchmarks/featurize_throughput.py --device cpu --images-224 64 --images-64 512 --texts 512
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from memaware import featurize as fz

DEFAULTS = {"cpu": {"images_224": 64, "images_64": 512, "texts": 512},
            "cuda": {"images_224": 4096, "images_64": 8192, "texts": 8192}}
WORDS = ("coffee tea sweet bitter taste not never great awful fresh stale price box order would buy again "
         "love hate flavor smell dog treat snack crunchy soft really quite").split()


def write_images(folder: Path, n: int, size: int, rng: np.random.Generator) -> list[Path]:
    """n random PNG images of size x size pixels (smooth blobs plus noise, so PNG does not compress to nothing)."""
    paths = []
    base = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    for i in range(n):
        im = Image.fromarray(base[i]).resize((size, size), Image.BILINEAR)
        noisy = np.clip(np.asarray(im, dtype=np.int16) + rng.integers(-20, 20, (size, size, 3)), 0, 255)
        paths.append(folder / f"{size}_{i}.png")
        Image.fromarray(noisy.astype(np.uint8)).save(paths[-1])
    return paths


def make_texts(n: int, rng: np.random.Generator) -> list[str]:
    lengths = rng.integers(8, 60, n)
    return [" ".join(rng.choice(WORDS, k)) + f" #{i}." for i, k in enumerate(lengths)]


def measure(label: str, inputs, backbone, cache_dir: Path, device: str, batch_size: int) -> None:
    cache = fz.FeatureCache(cache_dir)
    start = time.perf_counter()
    fz.run_backbone(inputs[:8], backbone, 8, device, None)  # load the model and warm the kernels up
    load_s = time.perf_counter() - start
    rows = []
    for state in ("cold", "warm"):
        start = time.perf_counter()
        fz.embed(inputs, backbone, cache=cache, batch_size=batch_size, device=device)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append(f"{state} {len(inputs) / seconds:10.0f}/s ({seconds:6.2f} s)")
    print(f"{label:32s} n={len(inputs):5d}  load {load_s:5.1f} s  " + "  ".join(rows), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--images-224", type=int, help="images at 224 px (default: by device)")
    parser.add_argument("--images-64", type=int, help="images at 64 px (default: by device)")
    parser.add_argument("--texts", type=int, help="texts (default: by device); 0 skips, as for the images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-backbone", help="also time this image backbone at 224 px, e.g. torchvision:resnet50")
    parser.add_argument("--weights", help="weights file of --image-backbone (state dict)")
    parser.add_argument("--text-model", help="a sentence-transformers folder to time instead of the MiniLM package "
                        "(e.g. MiniLM's architecture with random weights where the package can't be installed)")
    args = parser.parse_args()
    sizes = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in DEFAULTS["cuda" if args.device.startswith("cuda") else "cpu"].items()}
    rng = np.random.default_rng(0)
    precision = fz.autocast_dtype(args.device)
    print(f"device {args.device}, autocast {precision or 'off (fp32)'}, batch size {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in (224, 64):
            if sizes[f"images_{size}"]:
                paths = write_images(tmp, sizes[f"images_{size}"], size, rng)
                measure(f"efficientnet-lite0 images {size}px", paths, fz.efficientnet_lite0(size), tmp / "cache",
                        args.device, args.batch_size)
                if args.image_backbone and size == 224:
                    backbone = fz.get_backbone(args.image_backbone, weights=Path(args.weights), image_size=224)
                    measure(f"{args.image_backbone} images 224px", paths, backbone, tmp / "cache", args.device,
                            args.batch_size)
        if sizes["texts"]:
            text_backbone = fz.get_backbone(args.text_model) if args.text_model else fz.minilm()
            measure(f"{text_backbone.name} texts", make_texts(sizes["texts"], rng), text_backbone, tmp / "cache",
                    args.device, args.batch_size)


if __name__ == "__main__":
    main()
