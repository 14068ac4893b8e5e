"""Group distributionally robust optimization (Sagawa et al.): exponentiated weights on group losses.

Each step, a group's weight is multiplied by exp(eta * its mean batch loss) and renormalised; the
loss is the weighted sum of group mean losses. groups="true" uses the data's group labels (oracle);
groups="inferred" uses phase-1 inferred groups (XRM+GroupDRO).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import GROUP_SOURCES, Method, group_mean_losses, register


@register()
@register("xrm+groupdro", groups="inferred")
class GroupDRO(Method):
    name = "groupdro"
    needs_groups = True
    defaults = {"eta": 0.01, "groups": "true"}
    choices = {"groups": GROUP_SOURCES}
    bounds = {"eta": (0.0, float("inf"))}
    space = {"eta": lambda rng: float(10 ** rng.uniform(-3, -1))}

    def setup(self, ctx):
        super().setup(ctx)
        self.group_weights = torch.full((ctx.n_groups,), 1.0 / ctx.n_groups, device=ctx.device)

    def loss(self, logits, y, idx):
        per_example = F.cross_entropy(logits, y, reduction="none")
        losses, _ = group_mean_losses(per_example, self.ctx.groups[idx], self.ctx.n_groups)
        with torch.no_grad():
            weights = self.group_weights * torch.exp(self.hparams["eta"] * losses)
            self.group_weights = weights / weights.sum()
        return (self.group_weights * losses).sum()

    def state_dict(self):
        return {"group_weights": self.group_weights}
