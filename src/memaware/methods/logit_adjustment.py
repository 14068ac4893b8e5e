"""Logit adjustment with known groups: MAT's oracle cousin.

With the true attribute a_i of each training example, shift_i = tau * log p(y | a_i), p estimated by
counting on the train split (MAT's calibration matrix with one-hot beliefs in place of held-out
softmaxes). The model trains on cross-entropy(f(x_i) + shift_i, y_i) and predicts with f(x) alone,
so the spurious prior that a explains is not learned into f.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, register
from .mat import EPS, MAT, calibration_matrix


def attribute_prior_shift(a: torch.Tensor, y: torch.Tensor, n_attrs: int, n_classes: int,
                          tau: float = 1.0, eps: float = EPS) -> torch.Tensor:
    """Per-example shift tau * log(p(y = c | a_i) + eps), (n, n_classes), p counted over the examples."""
    onehot = F.one_hot(a, n_attrs).double()
    return tau * torch.log(onehot @ calibration_matrix(onehot, y, n_classes) + eps)


@register()
class LogitAdjustment(Method):
    name = "logit-adjustment"
    needs_groups = True
    defaults = {"tau": 1.0, "groups": "true"}
    choices = {"groups": ("true",)}
    bounds = {"tau": (0.0, float("inf"))}
    space = {"tau": lambda rng: float(rng.choice([0.5, 1.0, 1.5, 2.0]))}

    def setup(self, ctx):
        super().setup(ctx)
        n_attrs = ctx.n_groups // ctx.n_classes
        a = ctx.groups % n_attrs
        self.shift = attribute_prior_shift(a, ctx.y, n_attrs, ctx.n_classes, self.hparams["tau"]).float()

    def loss(self, logits, y, idx):
        return F.cross_entropy(logits + self.shift[idx].to(logits.dtype), y)

    batched = True

    def stack_state(self):
        return {"shift": self.shift}

    batched_loss = MAT.batched_loss
