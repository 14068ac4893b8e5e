"""Invariant risk minimization (IRMv1, Arjovsky et al.): a classifier optimal in every domain at once.

The penalty of a domain is the squared derivative of its mean cross-entropy with respect to a scalar
w multiplying the logits, at w = 1: (mean_i g_i)^2 with g_i = sum_k p_ik z_ik - z_{i,y_i} (p = softmax(z)),
averaged over the batch's domains; the risk is the mean of the domains' cross-entropies. Penalty
weight and annealing: see `domains`. groups: true attribute (oracle), XRM's or EIIL's inferred bit
(EIIL+IRM is the EIIL paper's method).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import register
from .domains import AnnealedPenalty, domain_means


def irm_scale_gradient(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example d/dw cross-entropy(w * logits, y) at w = 1."""
    return (torch.softmax(logits, 1) * logits).sum(1) - logits.gather(1, y[:, None]).squeeze(1)


def irm_penalty(logits: torch.Tensor, y: torch.Tensor, domains: torch.Tensor, n_domains: int) -> torch.Tensor:
    """Mean over present domains of the squared scale gradient of the domain's mean cross-entropy."""
    return (domain_means(irm_scale_gradient(logits, y), domains, n_domains) ** 2).mean()


@register()
@register("xrm+irm", groups="inferred")
@register("eiil+irm", groups="eiil")
class IRM(AnnealedPenalty):
    name = "irm"

    def risk_and_penalty(self, logits, y, domains):
        risk = domain_means(F.cross_entropy(logits, y, reduction="none"), domains, self.n_domains).mean()
        return risk, irm_penalty(logits, y, domains, self.n_domains)
