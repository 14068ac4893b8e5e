"""Automatic feature reweighting (AFR): retrain the last layer with weights from a first model.

Stage 1 trains a copy of the model by ERM for `first_steps` steps (default: the run's steps) on a
random `first_fraction` of the train split. Stage 2, the loop, trains only the final Linear layer,
starting from the first model's, on the other examples ("reweighting set"), each weighted by
w_i proportional to exp(-gamma * p_first(y_i | x_i)) (normalised per class when `class_balanced`), with
the penalty `lam` * ||head - first head||^2; a batch's loss is the w-weighted mean of its
cross-entropies. Poorly explained examples, mostly the minority, weigh most. Groups are not used.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .base import Method, UniformSampler, register
from .two_stage import label_probability, last_layer_model, split_head, train_first_model


def afr_weights(p_label: torch.Tensor, y: torch.Tensor, gamma: float, n_classes: int,
                class_balanced: bool = True) -> torch.Tensor:
    """w_i proportional to exp(-gamma p_i), summing to 1 (to 1/#classes per class when class_balanced)."""
    w = torch.exp(-gamma * p_label.double())
    if not class_balanced:
        return w / w.sum()
    per_class = torch.zeros(n_classes, dtype=w.dtype, device=w.device).index_add_(0, y, w)
    present = int((per_class > 0).sum())
    return w / per_class[y] / present


@register()
class AFR(Method):
    name = "afr"
    defaults = {"gamma": 4.0, "lam": 0.1, "first_fraction": 0.8, "class_balanced": True, "first_steps": None}
    choices = {"class_balanced": (True, False)}
    bounds = {"gamma": (0.0, float("inf")), "lam": (0.0, float("inf")), "first_fraction": (0.05, 0.95),
              "first_steps": (1, float("inf"))}
    space = {"gamma": lambda rng: float(10 ** rng.uniform(-0.5, 1.5)),
             "lam": lambda rng: float(10 ** rng.uniform(-3, 0))}

    def setup(self, ctx):
        super().setup(ctx)
        n = len(ctx.y)
        order = torch.randperm(n, generator=ctx.generator)
        cut = max(1, min(n - 1, round(self.hparams["first_fraction"] * n)))
        self.first_pool, self.reweight_pool = order[:cut].sort().values, order[cut:].sort().values

    def wrap_model(self, model):
        first = train_first_model(model, self.ctx, self.hparams["first_steps"], self.name, pool=self.first_pool)
        body, head = split_head(first, self.name)
        self.anchor = [p.detach().clone() for p in head.parameters()]
        self.head = copy.deepcopy(head)
        pool = self.reweight_pool.to(self.ctx.device)
        p_label = label_probability(first, self.ctx.x[pool], self.ctx.y[pool])
        self.weights = torch.zeros(len(self.ctx.y), dtype=torch.float64, device=self.ctx.device)
        self.weights[pool] = afr_weights(p_label, self.ctx.y[pool], self.hparams["gamma"], self.ctx.n_classes,
                                         self.hparams["class_balanced"])
        return last_layer_model(body, self.head)

    def sampler(self, batch_size):
        return UniformSampler(len(self.ctx.y), batch_size, self.ctx.generator, pool=self.reweight_pool)

    def loss(self, logits, y, idx):
        w = self.weights[idx].to(logits.dtype)
        fit_term = (w * F.cross_entropy(logits, y, reduction="none")).sum() / w.sum().clamp_min(1e-12)
        penalty = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.head.parameters(), self.anchor))
        return fit_term + self.hparams["lam"] * penalty

    def state_dict(self):
        return {"weights": self.weights}
