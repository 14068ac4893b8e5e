"""K-fold cross-fitting: K models, each trained by ERM without one fold, predict that fold.

Held-out logits of a training example come from the model that did not see it. The inferred
attribute m is 1 where the held-out argmax differs from the label (train) or where the mean logits
of the K models err (validation and test). The models are those a run on the data trains (`config.arch`
on features; a StreamData's network, end to end). With a checkpoint, each fold's run resumes from its own
file, and a finished fold is read back, not trained again.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..data.dataset import SPLITS, Dataset
from ..errors import MemawareError
from ..methods.base import Method, UniformSampler
from ..train.config import TrainConfig
from ..train.loop import fit, predict_logits
from ..train.resume import Checkpointing
from .base import HeldOut, is_degenerate, split_labels


class _ERMOnPool(Method):
    """ERM on the examples `pool`; `fold` and `folds` say which (and enter a checkpoint's fingerprint)."""

    name = "erm-on-fold"
    defaults = {"fold": 0, "folds": 0}

    def __init__(self, pool: torch.Tensor, **hparams):
        super().__init__(**hparams)
        self.pool = pool

    def sampler(self, batch_size):
        return UniformSampler(len(self.ctx.y), batch_size, self.ctx.generator, pool=self.pool)


def crossfit(data: Dataset, folds: int = 5, config: TrainConfig | None = None, callback=None,
             checkpoint: Checkpointing | None = None, **run) -> HeldOut:
    """Held-out logits from `folds`-fold cross-fitting with ERM models (see the module's docstring).
    `checkpoint`: each fold's run writes and resumes from PATH-foldK (`fold_checkpoint`); `run`: `fit`'s
    `distributed`."""
    if folds < 2:
        raise MemawareError(f"cross-fitting needs at least 2 folds, got {folds}")
    config = config or TrainConfig()
    splits = {s: data.get(s, config.device) for s in SPLITS}
    n = len(splits["train"])
    if n < folds:
        raise MemawareError(f"cross-fitting with {folds} folds needs at least {folds} training examples, got {n}")
    fold_of = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 7)) % folds
    heldout_logits = torch.zeros(n, data.n_classes)
    eval_logits = {s: 0.0 for s in ("val", "test")}
    for k in range(folds):
        fold = config.model_copy(update={"seed": config.seed * folds + k})
        method = _ERMOnPool(torch.nonzero(fold_of != k).squeeze(1), fold=k, folds=folds)
        model = fit(data, method, fold, callback=callback, evaluate_splits=False,
                    checkpoint=fold_checkpoint(checkpoint, k), **run).model
        held = torch.nonzero(fold_of == k).squeeze(1)
        heldout_logits[held] = predict_logits(model, examples(splits["train"].x, held)).cpu()
        for s in eval_logits:
            eval_logits[s] = eval_logits[s] + predict_logits(model, splits[s].x).cpu() / folds
    ys = split_labels(data)
    inferred = {"train": (heldout_logits.argmax(1) != ys["train"]).long()}
    inferred.update({s: (eval_logits[s].argmax(1) != ys[s]).long() for s in eval_logits})
    return HeldOut(heldout_logits, inferred, f"crossfit{folds}",
                   degenerate=is_degenerate(ys, inferred, data.n_classes), info={"folds": folds})


def fold_checkpoint(checkpoint: Checkpointing | None, fold: int) -> Checkpointing | None:
    """The checkpoint of fold `fold`'s run: `checkpoint`'s path with -fold<fold> before its suffix."""
    if checkpoint is None:
        return None
    path = Path(checkpoint.path)
    return replace(checkpoint, path=path.with_name(f"{path.stem}-fold{fold}{path.suffix}"))


def examples(x, positions: torch.Tensor):
    """The inputs of the examples at `positions` of a split: rows of a tensor, or streamed inputs that are
    fetched chunk by chunk when predicted (memaware.data.stream.SplitInputs.subset)."""
    return x.subset(positions) if hasattr(x, "subset") else x[positions.to(x.device)]
