"""LISA (Yao et al.): selective mixup, pairing examples so that mixing cancels the spurious attribute.

Each batch, with probability `p_same_label` every example is mixed with a partner of the same label
and another domain (intra-label), otherwise with a partner of the same domain and another label
(intra-domain); partners are drawn at random among the eligible examples of the batch, an example
with none is left unmixed. Mixing as in `mixup` (on the logits, i.e. the penultimate features),
lam ~ Beta(alpha, alpha). Domains: see `domains` (true attribute, or XRM's inferred bit).
"""
from __future__ import annotations

import torch

from .base import register
from .domains import DomainMethod
from .mixup import MixingMethod, mixup_loss


def selective_partners(y: torch.Tensor, domains: torch.Tensor, same_label: bool,
                       generator: torch.Generator) -> torch.Tensor:
    """For each example, a random partner with the same label and another domain (same_label) or the same
    domain and another label; itself where no example qualifies."""
    y, domains = y.cpu(), domains.cpu()
    same_y, same_d = y[:, None] == y[None, :], domains[:, None] == domains[None, :]
    eligible = (same_y & ~same_d) if same_label else (same_d & ~same_y)
    scores = torch.rand(eligible.shape, generator=generator).masked_fill(~eligible, -1.0)
    best = scores.argmax(1)
    return torch.where(eligible.any(1), best, torch.arange(len(y)))


@register()
@register("xrm+lisa", groups="inferred")
class LISA(MixingMethod, DomainMethod):
    name = "lisa"
    defaults = {"alpha": 2.0, "p_same_label": 0.5, "groups": "true"}
    bounds = {"alpha": (1e-3, float("inf")), "p_same_label": (0.0, 1.0)}
    space = {"alpha": lambda rng: float(10 ** rng.uniform(-1, 1)), "p_same_label": lambda rng: float(rng.uniform(0, 1))}

    def loss(self, logits, y, idx):
        same_label = bool(torch.rand((), generator=self.ctx.generator) < self.hparams["p_same_label"])
        partner = selective_partners(y, self.domains[idx], same_label, self.ctx.generator).to(y.device)
        return mixup_loss(logits, y, partner, self.draw_lam())
