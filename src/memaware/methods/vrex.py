"""Risk extrapolation (V-REx, Krueger et al.): penalise the variance of the domains' risks.

Loss: mean of the batch's domain mean cross-entropies plus the penalty weight times their variance
(population variance over the domains present). Penalty weight and annealing: see `domains`.
"""
from __future__ import annotations

import torch.nn.functional as F

from .base import register
from .domains import AnnealedPenalty, domain_means


@register()
@register("xrm+vrex", groups="inferred")
class VREx(AnnealedPenalty):
    name = "vrex"
    defaults = {"lam": 10.0, "anneal_steps": 500, "groups": "true"}

    def risk_and_penalty(self, logits, y, domains):
        risks = domain_means(F.cross_entropy(logits, y, reduction="none"), domains, self.n_domains)
        return risks.mean(), ((risks - risks.mean()) ** 2).mean()
