"""Correct-n-Contrast (CnC, Zhang et al.): contrast examples that an ERM model confuses by its spurious view.

Stage 1 trains a copy of the model by ERM for `first_epochs` passes over the train split (in epochs, as
JTT's first model); its predictions on the train split stand for the spurious attribute. Stage 2, the
loop, trains the model from its initial weights on (1 - lam) CE + lam * contrastive loss over the
normalised penultimate features z of the batch: for an anchor i, positives are examples of the same class
that the first model predicts differently, negatives examples of another class that it predicts the same;
each (anchor, positive) pair adds -log(exp(z_i.z_p / t) / (exp(z_i.z_p / t) + sum_n exp(z_i.z_n / t))),
averaged per anchor, then over anchors with a positive. Groups are not used. Features: see `features`,
those of the batch's forward pass (a linear model has none to learn: CnC then trains on (1 - lam) CE,
without a first model).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import register
from .features import PenultimateFeatures
from .two_stage import train_for_epochs


def contrastive_loss(z: torch.Tensor, y: torch.Tensor, spurious: torch.Tensor, temperature: float) -> torch.Tensor:
    """CnC's loss of a batch of normalised features z, labels y and first-model predictions `spurious`."""
    sim = z @ z.T / temperature
    same_y, same_s = y[:, None] == y[None, :], spurious[:, None] == spurious[None, :]
    positive, negative = same_y & ~same_s, ~same_y & same_s
    log_negatives = sim.masked_fill(~negative, float("-inf")).logsumexp(1, keepdim=True)
    pair_loss = F.softplus(log_negatives - sim).masked_fill(~positive, 0.0)  # -log(e^s / (e^s + sum_n e^s_n))
    n_pos = positive.sum(1)
    anchors = n_pos > 0
    if not anchors.any():
        return z.new_zeros(())
    return (pair_loss.sum(1)[anchors] / n_pos[anchors]).mean()


@register()
class CorrectNContrast(PenultimateFeatures):
    name = "cnc"
    defaults = {"first_epochs": 2.0, "lam": 0.5, "temperature": 0.1}
    bounds = {"first_epochs": (0.01, 1000.0), "lam": (0.0, 1.0), "temperature": (1e-3, float("inf"))}
    space = {"first_epochs": lambda rng: float(rng.choice([1, 2, 5, 10])),
             "lam": lambda rng: float(rng.choice([0.25, 0.5, 0.75])),
             "temperature": lambda rng: float(rng.choice([0.05, 0.1, 0.5]))}

    def wrap_model(self, model):
        from ..train.loop import predict_logits

        trained = super().wrap_model(model)
        if self.learns_features:
            first = train_for_epochs(model, self.ctx, self.hparams["first_epochs"], self.name)
            self.spurious = predict_logits(first, self.ctx.x).argmax(1)
        else:  # no contrastive term to feed: no first model
            self.spurious = torch.zeros_like(self.ctx.y)
        return trained

    def loss(self, output, y, idx):
        lam = self.hparams["lam"]
        if not self.learns_features:
            return (1 - lam) * F.cross_entropy(output, y)
        logits, features = self.logits_and_features(output)
        contrastive = contrastive_loss(F.normalize(features, dim=1), y, self.spurious[idx], self.hparams["temperature"])
        return (1 - lam) * F.cross_entropy(logits, y) + lam * contrastive

    def state_dict(self):
        return {"spurious": self.spurious}
