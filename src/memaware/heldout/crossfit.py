"""K-fold cross-fitting: K models, each trained by ERM without one fold, predict that fold.

Held-out logits of a training example come from the model that did not see it. The inferred
attribute m is 1 where the held-out argmax differs from the label (train) or where the mean logits
of the K models err (validation and test).
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.dataset import Dataset
from ..errors import MemawareError
from ..methods.base import Method, UniformSampler
from ..train.config import TrainConfig
from ..train.loop import fit, predict_logits
from .base import HeldOut, is_degenerate, split_labels


class _ERMOnPool(Method):
    name = "erm-on-fold"

    def __init__(self, pool: torch.Tensor):
        super().__init__()
        self.pool = pool

    def sampler(self, batch_size):
        return UniformSampler(len(self.ctx.y), batch_size, self.ctx.generator, pool=self.pool)


def crossfit(data: Dataset, folds: int = 5, config: TrainConfig | None = None, callback=None) -> HeldOut:
    """Held-out logits from `folds`-fold cross-fitting with ERM models of `config.arch`."""
    if folds < 2:
        raise MemawareError(f"cross-fitting needs at least 2 folds, got {folds}")
    config = config or TrainConfig()
    n = int(data.mask("train").sum())
    fold_of = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 7)) % folds
    heldout_logits = torch.zeros(n, data.n_classes)
    eval_logits = {s: 0.0 for s in ("val", "test")}
    x_train = torch.as_tensor(data.x[data.mask("train")]).to(config.device)
    for k in range(folds):
        fold = config.model_copy(update={"seed": config.seed * folds + k})
        run = fit(data, _ERMOnPool(torch.nonzero(fold_of != k).squeeze(1)), fold, callback=callback,
                  evaluate_splits=False)
        model: nn.Module = run.model
        held = fold_of == k
        heldout_logits[held] = predict_logits(model, x_train[held.to(x_train.device)]).cpu()
        for s in eval_logits:
            x = torch.as_tensor(data.x[data.mask(s)]).to(config.device)
            eval_logits[s] = eval_logits[s] + predict_logits(model, x).cpu() / folds
    ys = split_labels(data)
    inferred = {"train": (heldout_logits.argmax(1) != ys["train"]).long()}
    inferred.update({s: (eval_logits[s].argmax(1) != ys[s]).long() for s in eval_logits})
    return HeldOut(heldout_logits, inferred, f"crossfit{folds}",
                   degenerate=is_degenerate(ys, inferred, data.n_classes), info={"folds": folds})
