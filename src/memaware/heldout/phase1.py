"""Phase 1 by name, on features or for a whole network: XRM's twins or K-fold cross-fitting."""
from __future__ import annotations

from ..data.dataset import Dataset
from ..errors import MemawareError
from ..train.backbones import phase1_data
from ..train.config import TrainConfig
from .base import HeldOut
from .crossfit import crossfit
from .xrm import xrm

SOURCES = ("xrm", "crossfit")


def train_phase1(data: Dataset, source: str = "xrm", config: TrainConfig | None = None, folds: int = 5,
                 end_to_end: bool = False, callback=None, **run) -> HeldOut:
    """Held-out logits and inferred groups of `data` by `source` (XRM, or cross-fitting with `folds` folds).
    For a whole network (a StreamData), the models train on a pretrained backbone's frozen features unless
    `end_to_end`, else as networks end to end (`memaware.train.backbones.phase1_data`). `run`: `fit`'s
    `checkpoint` (cross-fitting: one per fold) and `distributed`."""
    if source not in SOURCES:
        raise MemawareError(f"unknown phase-1 source '{source}' (known: {', '.join(SOURCES)})")
    config = config or TrainConfig()
    inputs = phase1_data(data, config, end_to_end)
    if source == "xrm":
        return xrm(inputs, config, callback=callback, **run)
    return crossfit(inputs, folds, config, callback, **run)
