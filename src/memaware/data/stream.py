"""Streaming inputs for whole networks: a RawData (image paths or texts) prepared for one backbone.

Images are decoded once, resized (shorter side) and centre-cropped to a square (the network's `cache_side`,
by default `cache_size(image_size)`), and kept as uint8 (n, H, W, 3), in memory or in a .npy file that later
runs map; `image_sizes` chooses a folder's training size, asked for or its images' native size. Texts are
tokenized once to at most `max_length` tokens. Every split's inputs are then fetched by example position,
the same positions that index a method's per-example state (MAT's shift, XRM's labels, JTT's error set):
- `split_inputs.dataset()` is a torch Dataset whose item i is (input, i), for DataLoaders with workers;
- `split_inputs[idx]` is the evaluation form of a batch (images centre-cropped to the training size), and
  `split_inputs.subset(idx)` those examples as inputs of their own (evaluated chunk by chunk);
- `split_inputs.train_batches(seed)(idx)` is the training form, augmented on the batch's device (images:
  random resized crop and horizontal flip, drawn from a generator seeded by `seed`).
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError, MemawareError
from .dataset import Split
from .io import atomic_write
from .raw import RawData

CROP_FRACTION = 0.875  # evaluation: the centre 224 px of a 256 px image
CROP_SCALE = (0.7, 1.0)  # training: area fraction of the random crop
CROP_RATIO = (3 / 4, 4 / 3)
GPU_CACHE_FRACTION = 0.5  # cached images move to a GPU whose free memory is at least twice their size
DEFAULT_IMAGE_SIZE = 224  # the largest training size a folder's images get when none is asked for
CPU_EVAL_PIXELS = 64 * 32 * 32  # pixels of an evaluation chunk on a CPU (see eval_chunk)
Progress = Callable[[int, int], None]


def cache_size(image_size: int) -> int:
    """Side of the cached square images from which `image_size` crops are taken (256 for 224)."""
    return int(round(image_size / CROP_FRACTION))


def native_size(paths: list[str]) -> int:
    """The shorter side of the smallest of the images `paths`, read from the files' headers."""
    from PIL import Image, UnidentifiedImageError

    if not paths:
        raise DataError("no images to read")
    smallest = None
    for path in paths:
        try:
            with Image.open(path) as im:
                side = min(im.size)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise DataError(f"{path}: cannot read as an image ({type(err).__name__})") from None
        smallest = side if smallest is None else min(smallest, side)
    return smallest


def image_sizes(paths: list[str], image_size: int | None = None) -> tuple[int, int, str]:
    """(training size, side of the cached squares, why that size) for the images `paths`. Asked for
    (`image_size`): that size, cached at cache_size(image_size). By default the images' native size
    (`native_size`) up to DEFAULT_IMAGE_SIZE, cached at cache_size of it or the native size if smaller: no
    image is upscaled."""
    if image_size is not None:
        return image_size, cache_size(image_size), "asked for"
    native = native_size(paths)
    size = min(native, DEFAULT_IMAGE_SIZE)
    why = (f"the images' native size: the smallest is {native} px on its shorter side" if native == size else
           f"at most {DEFAULT_IMAGE_SIZE} px by default; the images are at least {native} px on their shorter side")
    return size, min(cache_size(size), native), why


def decode_image(path: str, size: int) -> np.ndarray:
    """An RGB uint8 (size, size, 3) array: shorter side resized to `size`, centre-cropped square."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
            return np.array(im.crop((left, top, left + size, top + size)))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: cannot read as an image ({type(err).__name__})") from None


class DecodedImages(torch.utils.data.Dataset):
    """Item i: (image i decoded at `size`, i, ""), for a DataLoader that decodes with workers; a file that
    cannot be read gives a blank image and the error's one-line message in place of ""."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return torch.from_numpy(decode_image(self.paths[i], self.size)), i, ""
        except DataError as err:
            return torch.zeros(self.size, self.size, 3, dtype=torch.uint8), i, str(err)


def image_cache_path(folder: Path, paths: list[str], size: int) -> Path:
    """Where the decoded images of `paths` at `size` live in `folder` (keyed by files, sizes, mtimes)."""
    from ..featurize import fingerprint

    key = hashlib.sha256(f"{fingerprint([Path(p) for p in paths])}\n{size}".encode()).hexdigest()[:32]
    return Path(folder) / "images" / f"{key}-{size}px.npy"


def decode_all(paths: list[str], size: int, workers: int = 0, cache_dir: Path | None = None,
               callback: Progress | None = None) -> np.ndarray:
    """uint8 (n, size, size, 3) images, decoded once by a DataLoader with `workers` processes; with
    `cache_dir`, stored there as .npy and memory-mapped by later calls."""
    path = image_cache_path(cache_dir, paths, size) if cache_dir is not None else None
    if path is not None and path.is_file():
        cached = np.load(path, mmap_mode="r", allow_pickle=False)
        if cached.shape == (len(paths), size, size, 3):
            if callback:
                callback(len(paths), len(paths))
            return cached
    if path is None:
        return _decode_into(np.empty((len(paths), size, size, 3), np.uint8), paths, size, workers, callback)

    def write(tmp: Path):
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        _decode_into(out, paths, size, workers, callback).flush()

    atomic_write(path, write)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _decode_into(out: np.ndarray, paths: list[str], size: int, workers: int, callback) -> np.ndarray:
    loader = torch.utils.data.DataLoader(DecodedImages(paths, size), batch_size=64, num_workers=workers)
    done = 0
    for images, positions, errors in loader:
        if any(errors):
            raise DataError(next(e for e in errors if e))
        out[positions.numpy()] = images.numpy()
        done += len(positions)
        if callback:
            callback(done, len(paths))
    return out


class SplitInputs:
    """One split's inputs, fetched by position in the split (see the module's docstring)."""

    eval_batch = 256  # evaluation chunk (memaware.train.loop.predict_logits)

    def __init__(self, store: torch.Tensor, rows: np.ndarray):
        self.store, self.rows = store, torch.as_tensor(rows).to(store.device)

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device) -> "SplitInputs":
        return self  # inputs move to the device batch by batch

    def positions(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            return torch.arange(len(self), device=self.store.device)[key]
        return torch.as_tensor(key).to(self.store.device)

    def raw(self, key) -> torch.Tensor:
        """The stored form of the examples `key` (a slice or positions), on the store's device."""
        return self.store[self.rows[self.positions(key)]]

    def __getitem__(self, key) -> torch.Tensor:
        return self.raw(key)

    def subset(self, key) -> "SplitInputs":
        """The inputs of the examples `key` (a slice or positions), themselves fetched by position (k: the
        k-th of `key`): a part of a split to predict chunk by chunk."""
        part = copy.copy(self)
        part.rows = self.rows[self.positions(key)]
        return part

    def dataset(self) -> "ExampleDataset":
        """A torch Dataset of (input, position); for loader workers, take the split on the CPU (data.get(name))."""
        return ExampleDataset(self)

    def train_batches(self, seed: int, augment: bool = True) -> Callable[..., torch.Tensor]:
        """fetch(idx, part=slice(None)) -> the training form of examples idx[part], on idx's device (a
        process of several training one model takes its `part` of each batch, memaware.train.distributed);
        inputs that are not augmented (texts, or `augment` False) are their evaluation form."""
        return lambda idx, part=slice(None): to_device(self[idx[part]], idx.device)


class ExampleDataset(torch.utils.data.Dataset):
    """Item i of a split: (its input in stored form, i)."""

    def __init__(self, inputs: SplitInputs):
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int):
        return self.inputs.raw([i])[0], i


def eval_chunk(image_size: int, device) -> int:
    """Images a chunk of evaluation on `device` takes. On a GPU as many pixels as 256 images of 224 px (up
    to 4096 smaller images), so that small images do not spend an evaluation on launching kernels; on a
    CPU about CPU_EVAL_PIXELS, whose activations stay in its caches (docs/speed.md: 32 px images evaluate
    2-3 times faster in chunks of 64 than of 4096)."""
    if torch.device(device).type == "cpu":
        return max(1, CPU_EVAL_PIXELS // image_size ** 2)
    return min(4096, max(SplitInputs.eval_batch, SplitInputs.eval_batch * 224 ** 2 // image_size ** 2))


class ImageInputs(SplitInputs):
    """uint8 images (n, 3, S, S) channels-last: evaluation takes the centre `image_size` crop, in chunks of
    `eval_chunk` images for the evaluating `device`; training a random resized crop with a random horizontal
    flip, computed on the batch's device."""

    def __init__(self, store: torch.Tensor, rows: np.ndarray, image_size: int, device="cpu"):
        super().__init__(store, rows)
        self.image_size = image_size
        self.eval_batch = eval_chunk(image_size, device)

    def raw(self, key) -> torch.Tensor:
        return super().raw(key).permute(0, 3, 1, 2)

    def __getitem__(self, key) -> torch.Tensor:
        x = self.raw(key)
        top = (x.shape[-1] - self.image_size) // 2
        return x[..., top:top + self.image_size, top:top + self.image_size]

    def train_batches(self, seed: int, augment: bool = True):
        if not augment:
            return super().train_batches(seed, augment)
        return AugmentedBatches(self, torch.Generator().manual_seed(seed))


class AugmentedBatches:
    """fetch(idx, part=slice(None)): the images idx[part] randomly cropped and flipped, on idx's device.
    The crops of the whole batch idx are drawn (from `generator`, whose state a checkpoint keeps) whatever
    `part`, so that processes taking parts of one batch crop each image as a single process would."""

    def __init__(self, inputs: ImageInputs, generator: torch.Generator):
        self.inputs, self.generator = inputs, generator

    def __call__(self, idx: torch.Tensor, part: slice = slice(None)) -> torch.Tensor:
        theta = crop_transforms(len(idx), self.generator)[part]
        x = to_device(self.inputs.raw(idx[part]), idx.device)
        return resample(x, to_device(theta, x.device), self.inputs.image_size)


def random_resized_crop(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """float [0, 1] images (B, 3, size, size): from each uint8 image a crop of random area (CROP_SCALE) and
    aspect ratio (CROP_RATIO), bilinearly resized, flipped horizontally with probability 1/2."""
    return resample(x, to_device(crop_transforms(len(x), generator), x.device), size)


def crop_transforms(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) affine maps of random resized crops with random horizontal flips (see random_resized_crop)."""
    area = torch.empty(n).uniform_(*CROP_SCALE, generator=generator)
    ratio = torch.exp(torch.empty(n).uniform_(*map(math.log, CROP_RATIO), generator=generator))
    width, height = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    zero = torch.zeros(n)
    return torch.stack([torch.stack([width * flip, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1)


def resample(x: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (B, 3, S, S) mapped by the affine maps `theta` to float [0, 1] (B, 3, size, size)."""
    grid = F.affine_grid(theta, [len(x), 3, size, size], align_corners=False)
    out = F.grid_sample(x.float().div_(255), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`x` on `device`; from the CPU to a GPU through pinned memory, so the copy does not wait for the GPU."""
    if x.device == device:
        return x
    return (x.pin_memory() if device.type == "cuda" else x).to(device, non_blocking=True)


class TextInputs(SplitInputs):
    """Token ids and attention masks (n, 2, L) int32; a batch is cut to its longest text, as int64."""

    def raw(self, key) -> torch.Tensor:
        x = super().raw(key)
        length = max(int(x[:, 1].sum(1).max()), 1) if len(x) else 1
        return x[:, :, :length].long()


@dataclass
class StreamData:
    """A RawData prepared for a network: labels, groups and splits as a Dataset has them (`labels`, whose
    attributes this object exposes), and inputs streamed by position (`store`, see `get`).

    network: the backbone recipe (memaware.train.backbones.Network) that builds the model `fit` trains.
    files: for images, each example's file name relative to the folder it was read from (its layout's root).
    """

    labels: object  # a memaware Dataset with a placeholder x, for y, a, split and groups
    store: torch.Tensor
    network: object
    modality: str
    _on_gpu: torch.Tensor | None = field(default=None, repr=False)
    files: list[str] | None = None  # images: each example's file, relative to the layout's folder

    def __getattr__(self, name):
        if name.startswith("_") or name in ("labels", "store", "network", "modality", "files"):
            raise AttributeError(name)
        return getattr(self.labels, name)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.store.shape[1:]))

    def inputs(self, name: str, device="cpu") -> SplitInputs:
        rows = np.flatnonzero(self.labels.mask(name))
        if self.modality == "image":
            return ImageInputs(self.store_for(device), rows, self.network.image_size, device)
        return TextInputs(self.store, rows)

    def get(self, name: str, device="cpu") -> Split:
        """The split `name`: labels as tensors on `device`, inputs streamed (`SplitInputs`)."""
        return replace(self.labels.get(name, device), x=self.inputs(name, device))

    def store_for(self, device) -> torch.Tensor:
        """The cached images on `device` when it is a GPU with room for them (moved once, kept for later
        runs), so that batches are gathered and augmented there; else on the CPU."""
        device = torch.device(device)
        if device.type != "cuda":
            return self.store
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        if self._on_gpu is None or self._on_gpu.device != device:
            free, _ = torch.cuda.mem_get_info(device)
            if self.store.nbytes > GPU_CACHE_FRACTION * free:
                return self.store
            self._on_gpu = self.store.to(device)
        return self._on_gpu

    def build_model(self, config, generator: torch.Generator) -> torch.nn.Module:
        """The network with a head for this data's classes (what `fit` trains when given no model)."""
        return self.network.classifier(self.labels.n_classes, config, generator)


def stream(raw: RawData, network, *, workers: int | None = None, cache_dir: Path | None = None,
           callback: Progress | None = None) -> StreamData:
    """`raw`'s inputs prepared for `network`: images decoded once at its cache size, or texts tokenized."""
    if network.modality != raw.modality:
        raise MemawareError(f"backbone '{network.name}' takes {network.modality}s, but {raw.name} holds "
                            f"{raw.modality}s")
    labels = raw.with_features(np.zeros((len(raw), 1), np.float32))
    if raw.modality == "image":
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        side = network.cache_side or cache_size(network.image_size)
        pixels = decode_all(list(raw.items), side, workers, cache_dir, callback)
        store = _as_tensor(pixels)
        root = raw.info.get("root")
        files = [os.path.relpath(p, root) if root else p for p in raw.items]
    else:
        store, files = network.tokenize(list(raw.items)), None
        if callback:
            callback(len(raw), len(raw))
    return StreamData(labels, store, network, raw.modality, files=files)


def _as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """A tensor over the images, also a read-only memory map (rows are copied out when a batch is taken)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns that the array is not writable
        return torch.from_numpy(pixels)
