"""Learning from failure (LfF): a biased model guides the reweighting of a debiased one.

Two copies of the model train together. The biased one minimises the generalized cross-entropy
(1 - p_y^q) / q, which favours easy (spurious) patterns. Each example's cross-entropy under both
models is smoothed by an exponential moving average (EMA, factor `ema`, kept by example position;
an example's first value is its loss); the debiased model minimises the batch mean of
w_i * CE_debiased_i with w_i = EMA_b / (EMA_b + EMA_d) (no gradient through w). The debiased model
predicts. Groups are not used. (The original also divides each EMA by its class maximum; omitted.)
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .base import Method, register


def generalized_cross_entropy(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Per-example (1 - p_y^q) / q."""
    p_label = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    return (1 - p_label.clamp_min(1e-12) ** q) / q


def lff_weights(ema_biased: torch.Tensor, ema_debiased: torch.Tensor) -> torch.Tensor:
    """w = CE_b / (CE_b + CE_d): near 1 where the biased model fails and the debiased one does not."""
    return ema_biased / (ema_biased + ema_debiased).clamp_min(1e-12)


def ema_update(ema: torch.Tensor, idx: torch.Tensor, value: torch.Tensor, alpha: float, first: torch.Tensor) -> None:
    """ema[idx] <- alpha ema[idx] + (1 - alpha) value, or value where `first` (an example's first visit)."""
    ema[idx] = torch.where(first, value, alpha * ema[idx] + (1 - alpha) * value)


@register()
class LfF(Method):
    name = "lff"
    defaults = {"q": 0.7, "ema": 0.7}
    bounds = {"q": (1e-3, 1.0), "ema": (0.0, 0.999)}
    space = {"ema": lambda rng: float(rng.choice([0.5, 0.7, 0.9]))}

    def setup(self, ctx):
        super().setup(ctx)
        n = len(ctx.y)
        self.ema_biased = torch.zeros(n, device=ctx.device)
        self.ema_debiased = torch.zeros(n, device=ctx.device)
        self.seen = torch.zeros(n, dtype=torch.bool, device=ctx.device)

    def wrap_model(self, model):
        from ..train.models import Twins

        return Twins(copy.deepcopy(model), model)  # (biased, debiased)

    def predictor(self, trained):
        return trained.twins[1]

    def loss(self, logits, y, idx):
        biased, debiased = logits[0], logits[1]
        ce_debiased = F.cross_entropy(debiased, y, reduction="none")
        with torch.no_grad():
            first, alpha = ~self.seen[idx], self.hparams["ema"]
            ema_update(self.ema_biased, idx, F.cross_entropy(biased, y, reduction="none"), alpha, first)
            ema_update(self.ema_debiased, idx, ce_debiased, alpha, first)
            self.seen[idx] = True
            w = lff_weights(self.ema_biased[idx], self.ema_debiased[idx])
        gce = generalized_cross_entropy(biased, y, self.hparams["q"])
        return gce.mean() + (w * ce_debiased).mean()

    def state_dict(self):
        return {"ema_biased": self.ema_biased, "ema_debiased": self.ema_debiased, "seen": self.seen}
