"""Group distributionally robust optimization (Sagawa et al.): exponentiated weights on group losses.

Each step, a group's weight is multiplied by exp(eta * its mean batch loss) and renormalised; the
loss is the weighted sum of group mean losses. groups="true" uses the data's group labels (oracle);
groups="inferred" uses phase-1 inferred groups (XRM+GroupDRO).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import GROUP_SOURCES, Method, batched_group_mean_losses, group_mean_losses, per_run, register


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

    batched = True

    def stack_state(self):
        return {"group_weights": self.group_weights, "groups": self.ctx.groups,
                "eta": torch.tensor(float(self.hparams["eta"]), device=self.ctx.device)}

    def batched_loss(self, state, logits, y, idx, weight):
        per_example = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
        losses = batched_group_mean_losses(per_example, per_run(state["groups"], idx), self.ctx.n_groups, weight)
        with torch.no_grad():
            weights = state["group_weights"] * torch.exp(state["eta"].unsqueeze(1) * losses)
            state["group_weights"] = weights / weights.sum(1, keepdim=True)
        return (state["group_weights"] * losses).sum(1)
