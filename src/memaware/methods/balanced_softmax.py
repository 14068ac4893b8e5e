"""Balanced softmax (Ren et al.): train on logits shifted by the log class prior, predict without it.

Loss: CE(f(x_i) + log pi, y_i), pi_c = n_c / n the training class frequencies (logit adjustment by
the class prior). Groups are not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, register
from .reweight import class_counts


def log_prior(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """log(n_c / n); classes absent from training get log of a tiny count (never predicted by the shift)."""
    counts = class_counts(y, n_classes)
    return torch.log(counts.clamp_min(1e-12) / counts.sum())


@register()
class BalancedSoftmax(Method):
    name = "balanced-softmax"

    def setup(self, ctx):
        super().setup(ctx)
        self.shift = log_prior(ctx.y, ctx.n_classes).float().to(ctx.device)

    def loss(self, logits, y, idx):
        return F.cross_entropy(logits + self.shift, y)
