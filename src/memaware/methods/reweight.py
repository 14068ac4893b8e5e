"""Class-imbalance baselines that weigh classes by their training counts n_c (no group labels).

ReSample draws example i with probability proportional to 1 / n_{y_i} (class-balanced batches).
ReWeight, SqrtReWeight and CBLoss keep uniform batches and weigh each example's cross-entropy by
w_{y_i}, w_c proportional to 1 / n_c, 1 / sqrt(n_c), or (1 - beta) / (1 - beta^{n_c}) (the class-balanced
loss of Cui et al., "effective number" of examples), normalised so the weights of the K classes sum to K.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, WeightedSampler, group_balanced_weights, register


def class_counts(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.bincount(y.cpu(), minlength=n_classes).double()


def normalised(raw: torch.Tensor) -> torch.Tensor:
    """Class weights scaled to sum to the number of classes (classes absent from training get 0)."""
    raw = torch.where(torch.isfinite(raw), raw, torch.zeros_like(raw))
    return raw * len(raw) / raw.sum()


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """(1 - beta) / (1 - beta^n_c), normalised."""
    return normalised((1 - beta) / (1 - beta ** counts))


@register()
class ReSample(Method):
    name = "resample"
    batched = True

    def sampler(self, batch_size):
        return WeightedSampler(group_balanced_weights(self.ctx.y.cpu(), self.ctx.n_classes), batch_size,
                               self.ctx.generator)


class ClassWeightedLoss(Method):
    """Mean over the batch of w_{y_i} CE_i, with class weights from `class_weights(counts)`."""

    def class_weights(self, counts: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def setup(self, ctx):
        super().setup(ctx)
        self.weights = self.class_weights(class_counts(ctx.y, ctx.n_classes)).float().to(ctx.device)

    def loss(self, logits, y, idx):
        return (self.weights[y] * F.cross_entropy(logits, y, reduction="none")).mean()


@register()
class ReWeight(ClassWeightedLoss):
    name = "reweight"

    def class_weights(self, counts):
        return normalised(1.0 / counts)


@register()
class SqrtReWeight(ClassWeightedLoss):
    name = "sqrt-reweight"

    def class_weights(self, counts):
        return normalised(counts.rsqrt())


@register()
class CBLoss(ClassWeightedLoss):
    name = "cbloss"
    defaults = {"beta": 0.9999}
    bounds = {"beta": (0.0, 1.0 - 1e-9)}
    space = {"beta": lambda rng: float(1 - 10 ** rng.uniform(-5, -2))}

    def class_weights(self, counts):
        return effective_number_weights(counts, self.hparams["beta"])
