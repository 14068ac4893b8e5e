"""Small models for feature inputs (a linear head and an MLP, initialised from a seeded generator), the model
a run trains when given none, and twin models (XRM's, LfF's pair)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def build_model(n_features: int, n_classes: int, config: TrainConfig, generator: torch.Generator) -> nn.Module:
    """The model `config.arch` on flattened inputs; the last layer starts at zero if `zero_init_head`."""
    widths = [n_features] + (list(config.hidden) if config.arch == "mlp" else []) + [n_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layer = nn.Linear(w_in, w_out, bias=config.bias)
        head = i == len(widths) - 2
        _init_linear(layer, generator, zero=head and config.zero_init_head)
        layers.append(layer)
        if not head:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def model_for(data, config: TrainConfig, generator: torch.Generator) -> nn.Module:
    """The model a run on `data` trains when given none: the data's own network (a StreamData's backbone)
    or the model `config.arch` on its features, drawn from `generator`."""
    if hasattr(data, "build_model"):
        return data.build_model(config, generator)
    return build_model(data.n_features, data.n_classes, config, generator)


class Twins(nn.Module):
    """Two models of the same architecture; forward returns their stacked logits (2, B, K)."""

    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        self.twins = nn.ModuleList([first, second])

    def forward(self, x):
        return torch.stack([m(x) for m in self.twins])


def _init_linear(layer: nn.Linear, generator: torch.Generator, zero: bool) -> None:
    """PyTorch's default uniform initialisation, drawn from `generator` (or zeros)."""
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
            return
        bound = 1.0 / math.sqrt(layer.in_features)
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=generator)


def reset_parameters(module: nn.Module, seed: int) -> None:
    """Every submodule's parameters drawn again by its own `reset_parameters`, from `seed`, leaving torch's
    global generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
