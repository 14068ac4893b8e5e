"""CVaR-DRO (Levy et al.): minimise the mean of the worst `alpha` fraction of a batch's losses.

The conditional value at risk at level alpha: of a batch of B examples, the mean cross-entropy of
the ceil(alpha B) examples with the largest losses. Groups are not used.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Method, register


def cvar(per_example: torch.Tensor, alpha: float) -> torch.Tensor:
    """Mean of the ceil(alpha * n) largest values."""
    k = max(1, math.ceil(alpha * len(per_example)))
    return per_example.topk(k).values.mean()


@register()
class CVaRDRO(Method):
    name = "cvar-dro"
    defaults = {"alpha": 0.1}
    bounds = {"alpha": (1e-3, 1.0)}
    space = {"alpha": lambda rng: float(10 ** rng.uniform(-2, 0))}

    def loss(self, logits, y, idx):
        return cvar(F.cross_entropy(logits, y, reduction="none"), self.hparams["alpha"])
