"""Focal loss (Lin et al.): down-weight well-classified examples, (1 - p_y)^gamma CE, with p_y = exp(-CE).

Groups are not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, register


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-example (1 - p_y)^gamma * cross-entropy."""
    ce = F.cross_entropy(logits, y, reduction="none")
    return (1 - torch.exp(-ce)) ** gamma * ce


@register()
class Focal(Method):
    name = "focal"
    defaults = {"gamma": 1.0}
    bounds = {"gamma": (0.0, float("inf"))}
    space = {"gamma": lambda rng: float(0.5 * 10 ** rng.uniform(0, 1))}
    batched = True

    def loss(self, logits, y, idx):
        return focal_loss(logits, y, self.hparams["gamma"]).mean()

    def stack_state(self):
        return {"gamma": torch.tensor(float(self.hparams["gamma"]), device=self.ctx.device)}

    def batched_loss(self, state, logits, y, idx, weight):
        ce = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
        return (weight * (1 - torch.exp(-ce)) ** state["gamma"].unsqueeze(1) * ce).sum(1)
