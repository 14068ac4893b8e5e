"""Mixup (Zhang et al.): train on convex combinations of pairs of examples and of their labels.

Each batch draws lam ~ Beta(alpha, alpha) and a random partner j(i) for every example; the loss is
lam CE(mix_i, y_i) + (1 - lam) CE(mix_i, y_j(i)). The mixing happens on the logits,
mix_i = lam f(x_i) + (1 - lam) f(x_j(i)): because the last layer is affine, this is mixup of the
penultimate features (manifold mixup at the last layer), and exact input mixup for a linear model.
Groups are not used.
"""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from .base import Method, register


def mixup_loss(logits: torch.Tensor, y: torch.Tensor, partner: torch.Tensor, lam: float) -> torch.Tensor:
    """lam CE(mix, y) + (1 - lam) CE(mix, y[partner]), mix = lam logits + (1 - lam) logits[partner]."""
    mixed = lam * logits + (1 - lam) * logits[partner]
    return lam * F.cross_entropy(mixed, y) + (1 - lam) * F.cross_entropy(mixed, y[partner])


class MixingMethod(Method):
    """Shared by Mixup and LISA: a seeded Beta(alpha, alpha) draw per batch."""

    def setup(self, ctx):
        super().setup(ctx)
        self.rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=ctx.generator)))

    def draw_lam(self) -> float:
        return float(self.rng.beta(self.hparams["alpha"], self.hparams["alpha"]))

    def resume_state(self):
        state = json.dumps(self.rng.bit_generator.state).encode()  # a dict of ints and strings, as uint8 bytes
        return {**super().resume_state(), "rng": torch.frombuffer(bytearray(state), dtype=torch.uint8)}

    def load_resume_state(self, state):
        state = dict(state)
        self.rng.bit_generator.state = json.loads(bytes(state.pop("rng").tolist()).decode())
        super().load_resume_state(state)


@register()
class Mixup(MixingMethod):
    name = "mixup"
    defaults = {"alpha": 0.2}
    bounds = {"alpha": (1e-3, float("inf"))}
    space = {"alpha": lambda rng: float(10 ** rng.uniform(-1, 1))}

    def loss(self, logits, y, idx):
        partner = torch.randperm(len(y), generator=self.ctx.generator).to(y.device)
        return mixup_loss(logits, y, partner, self.draw_lam())
