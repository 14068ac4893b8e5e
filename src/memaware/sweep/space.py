"""Search spaces per model family, combined with each method's own space, and seeded draws.

Combination 0 is the defaults. Combination i > 0 draws every value from one NumPy generator:
`numpy.random.default_rng(i)` when the sweep seed is 0 (the reference's rule), else
`numpy.random.default_rng([sweep_seed, i])`. Training values are drawn first, in the family's order,
then the method's, in sorted name order, so a combination is the same in every process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import MemawareError
from ..methods.base import REGISTRY

Draw = Callable[[np.random.Generator], Any]


def log_uniform(lo: float, hi: float) -> Draw:
    """10 ** U(lo, hi)."""
    return lambda rng: float(10 ** rng.uniform(lo, hi))


def int_pow2(lo: float, hi: float) -> Draw:
    """int(2 ** U(lo, hi))."""
    return lambda rng: int(2 ** rng.uniform(lo, hi))


@dataclass(frozen=True)
class Family:
    """A model family: fixed training settings, default values (combination 0), and random draws."""

    name: str
    description: str
    fixed: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    draws: dict[str, Draw] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("linear", "linear head on features: SGD with momentum 0.9",
           {"optimizer": "sgd", "momentum": 0.9, "arch": "linear", "lr_schedule": "constant"},
           {"lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4},
           {"lr": log_uniform(-5, -3), "batch_size": int_pow2(5, 7), "weight_decay": log_uniform(-6, -3)}),
    Family("text", "text model: AdamW with linear decay",
           {"optimizer": "adamw", "lr_schedule": "linear", "arch": "linear"},
           {"lr": 1e-5, "batch_size": 32, "weight_decay": 1e-4},
           {"lr": log_uniform(-6, -4), "batch_size": int_pow2(4, 6), "weight_decay": log_uniform(-6, -3)}),
    Family("mlp", "coloured-MNIST MLP (two hidden layers of 390, ReLU): Adam",
           {"optimizer": "adam", "arch": "mlp", "hidden": [390, 390], "zero_init_head": False,
            "lr_schedule": "constant"},
           {"lr": 1e-3, "batch_size": 32, "weight_decay": 0.0},
           {"lr": log_uniform(-5, -3), "batch_size": int_pow2(3, 6)}),
    Family("synthetic", "the Figure-1 problem: bias-free linear model, full-batch SGD, lr 0.01, no momentum",
           {"optimizer": "sgd", "momentum": 0.0, "lr": 0.01, "batch_size": None, "bias": False, "arch": "linear",
            "lr_schedule": "constant"}),
    # Whole networks (a data set with a backbone). The draws are those of the MAT/XRM reference code's
    # registry for ResNet-50 and BERT; the defaults are the usual fine-tuning settings (GroupDRO's ERM
    # ResNet-50: lr 1e-3, wd 1e-4; GroupDRO's and SubpopBench's BERT: AdamW, lr 2e-5, linear decay,
    # gradient norm clipped at 1). docs/finetune.md, "Sweeps", compares them with SubpopBench's and JTT's grids.
    Family("resnet", "image network fine-tuned end to end (ResNet-50 recipe): SGD with momentum 0.9",
           {"optimizer": "sgd", "momentum": 0.9, "lr_schedule": "constant", "grad_clip": None},
           {"lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4},
           {"lr": log_uniform(-5, -3), "batch_size": int_pow2(5, 7), "weight_decay": log_uniform(-6, -3)}),
    # A small network trained from its random initialisation (the `cnn` backbone): Adam, as the reference trains
    # its coloured-MNIST MLP, with a higher learning rate range, as a network without pretrained weights needs.
    Family("cnn", "small image network trained from scratch (the cnn backbone): Adam",
           {"optimizer": "adam", "lr_schedule": "constant", "grad_clip": None},
           {"lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4},
           {"lr": log_uniform(-4, -2.5), "batch_size": int_pow2(5, 7), "weight_decay": log_uniform(-6, -3)}),
    Family("bert", "text network fine-tuned end to end (BERT recipe): AdamW, linear decay, gradient clipping",
           {"optimizer": "adamw", "lr_schedule": "linear", "grad_clip": 1.0},
           {"lr": 2e-5, "batch_size": 32, "weight_decay": 1e-4},
           {"lr": log_uniform(-6, -4), "batch_size": int_pow2(4, 6), "weight_decay": log_uniform(-6, -3)}),
)}
NETWORK_FAMILIES = ("resnet", "cnn", "bert")  # the families of whole networks: data sets with a backbone


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise MemawareError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def method_space(method: str, fixed: dict | None = None) -> tuple[dict, dict[str, Draw]]:
    """The method's default hyperparameters and the draws for those neither the registry nor `fixed` pins."""
    if method not in REGISTRY:
        raise MemawareError(f"unknown method '{method}' (known: {', '.join(sorted(REGISTRY))})")
    cls, pinned = REGISTRY[method]
    pinned = {**pinned, **(fixed or {})}
    defaults = {**cls.defaults, **pinned}
    draws = {k: cls.space[k] for k in sorted(cls.space) if k not in pinned}
    return defaults, draws


def combination_rng(index: int, sweep_seed: int = 0) -> np.random.Generator:
    """The generator of combination `index`: default_rng(index), or default_rng([sweep_seed, index])."""
    return np.random.default_rng(index if sweep_seed == 0 else [sweep_seed, index])


def draw(family: str, method: str, index: int, sweep_seed: int = 0, fixed: dict | None = None) -> dict:
    """Combination `index`: {"train": TrainConfig fields, "hparams": method hyperparameters}."""
    if index < 0:
        raise MemawareError(f"combination index must be >= 0, got {index}")
    fam = get_family(family)
    defaults, draws = method_space(method, fixed)
    train = {**fam.fixed, **fam.defaults}
    hparams = dict(defaults)
    if index > 0:
        rng = combination_rng(index, sweep_seed)
        train.update({k: fn(rng) for k, fn in fam.draws.items()})
        hparams.update({k: fn(rng) for k, fn in draws.items()})
    return {"train": train, "hparams": hparams}

