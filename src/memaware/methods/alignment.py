"""Domain alignment of features (DomainBed's MMD and Deep CORAL): cross-entropy plus gamma times the
mean, over pairs of domains present in the batch, of a distance between their penultimate features.

MMD: the squared maximum mean discrepancy with a sum of Gaussian kernels exp(-g ||u - v||^2),
g in {1e-3, ..., 1e3}. CORAL: the mean squared difference of the feature means plus that of the
feature covariances. Domains with fewer than two examples in a batch are left out. Domains: see
`domains`; features: see `features` (on a linear model these train exactly as ERM).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from .base import register
from .domains import DomainMethod
from .features import PenultimateFeatures

BANDWIDTHS = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)


def gaussian_kernel(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    distances = torch.cdist(u, v).pow(2)
    return sum(torch.exp(-g * distances) for g in BANDWIDTHS)


def mmd(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Squared MMD of two samples under the multi-bandwidth Gaussian kernel (biased estimate)."""
    return gaussian_kernel(u, u).mean() + gaussian_kernel(v, v).mean() - 2 * gaussian_kernel(u, v).mean()


def coral(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the means plus mean squared difference of the covariances."""
    mean_u, mean_v = u.mean(0), v.mean(0)
    cov_u, cov_v = torch.cov(u.T, correction=1), torch.cov(v.T, correction=1)
    return (mean_u - mean_v).pow(2).mean() + (cov_u - cov_v).pow(2).reshape(-1).mean()


def pairwise_penalty(features: torch.Tensor, domains: torch.Tensor, distance) -> torch.Tensor:
    """Mean of distance(domain i, domain j) over pairs of domains with at least two examples each."""
    samples = [features[domains == d] for d in torch.unique(domains).tolist()]
    samples = [s for s in samples if len(s) >= 2]
    pairs = list(itertools.combinations(samples, 2))
    if not pairs:
        return features.new_zeros(())
    return sum(distance(u, v) for u, v in pairs) / len(pairs)


class FeatureAlignment(PenultimateFeatures, DomainMethod):
    defaults = {"gamma": 1.0, "groups": "true"}
    bounds = {"gamma": (0.0, float("inf"))}
    space = {"gamma": lambda rng: float(10 ** rng.uniform(-1, 1))}
    distance = staticmethod(mmd)

    def loss(self, output, y, idx):
        if not self.learns_features:
            return F.cross_entropy(output, y)
        logits, features = self.logits_and_features(output)
        penalty = pairwise_penalty(features, self.domains[idx], self.distance)
        return F.cross_entropy(logits, y) + self.hparams["gamma"] * penalty


@register()
@register("xrm+mmd", groups="inferred")
class MMD(FeatureAlignment):
    name = "mmd"


@register()
@register("xrm+coral", groups="inferred")
class CORAL(FeatureAlignment):
    name = "coral"
    distance = staticmethod(coral)
