"""Methods over domains (environments): IRM, V-REx, MMD, CORAL, LISA.

A domain is the attribute part of an example's group (y, a): the true attribute a with
groups="true" (as SubpopBench uses it), the inferred bit m with groups="inferred" (XRM) or "eiil".
Penalty methods (IRM, V-REx) weigh their penalty 1 for the first `anneal_steps` steps and `lam`
after; when lam > 1 the whole loss is divided by it, so the gradient scale stays that of the risk
(the IRM paper's rule; the optimizer is not reset).
"""
from __future__ import annotations

import torch

from .base import GROUP_SOURCES, Method, group_mean_losses


class DomainMethod(Method):
    """A method whose training reads each example's domain, the attribute part of its group."""

    needs_groups = True
    defaults = {"groups": "true"}
    choices = {"groups": GROUP_SOURCES}

    def setup(self, ctx):
        super().setup(ctx)
        self.n_domains = ctx.n_groups // ctx.n_classes
        self.domains = ctx.groups % self.n_domains


def domain_means(per_example: torch.Tensor, domains: torch.Tensor, n_domains: int) -> torch.Tensor:
    """The mean of `per_example` over each domain present in the batch (absent domains dropped)."""
    means, counts = group_mean_losses(per_example, domains, n_domains)
    return means[counts > 0]


class AnnealedPenalty(DomainMethod):
    """Mean domain risk plus a penalty weighted 1 before `anneal_steps`, `lam` after (loss / lam if lam > 1)."""

    defaults = {"lam": 100.0, "anneal_steps": 500, "groups": "true"}
    bounds = {"lam": (0.0, float("inf")), "anneal_steps": (0, float("inf"))}
    space = {"lam": lambda rng: float(10 ** rng.uniform(-1, 5)),
             "anneal_steps": lambda rng: int(10 ** rng.uniform(0, 4))}

    def setup(self, ctx):
        super().setup(ctx)
        self.step = torch.zeros((), dtype=torch.long)

    def penalty_weight(self) -> float:
        return float(self.hparams["lam"]) if int(self.step) >= self.hparams["anneal_steps"] else 1.0

    def risk_and_penalty(self, logits, y, domains) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, logits, y, idx):
        risk, penalty = self.risk_and_penalty(logits, y, self.domains[idx])
        weight = self.penalty_weight()
        return (risk + weight * penalty) / max(weight, 1.0)

    def update(self, logits, y, idx):
        self.step += 1

    def state_dict(self):
        return {"step": self.step}
