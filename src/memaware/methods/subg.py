"""Group subsampling (SUBG): train on a random subset with every group cut to the smallest one's size.

The subset is drawn once at setup from the run's generator; batches are then uniform over it.
groups="true" uses the data's group labels (oracle); groups="inferred" uses phase-1 inferred groups
(XRM+SUBG). Empty groups are ignored.
"""
from __future__ import annotations

import torch

from .base import UniformSampler, register
from .rwg import RWG


def balanced_subset(groups: torch.Tensor, n_groups: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted positions of a random subset holding min_g |g| examples of every non-empty group g."""
    groups = groups.cpu()
    counts = torch.bincount(groups, minlength=n_groups)
    smallest = int(counts[counts > 0].min())
    picks = []
    for g in torch.nonzero(counts).squeeze(1).tolist():
        members = torch.nonzero(groups == g).squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=generator)[:smallest]])
    return torch.cat(picks).sort().values


@register()
@register("xrm+subg", groups="inferred")
class SUBG(RWG):
    """RWG's group sources, with a fixed balanced subset in place of weighted draws."""

    name = "subg"

    def setup(self, ctx):
        super().setup(ctx)
        self.subset = balanced_subset(ctx.groups, ctx.n_groups, ctx.generator)

    def sampler(self, batch_size):
        return UniformSampler(len(self.ctx.y), batch_size, self.ctx.generator, pool=self.subset)

    def state_dict(self):
        return {"subset": self.subset}
