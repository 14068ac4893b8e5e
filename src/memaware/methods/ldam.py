"""LDAM with deferred re-weighting (LDAM-DRW, Cao et al.): label-distribution-aware margins.

The true-class logit is lowered by a margin m_c proportional to n_c^(-1/4), the largest margin being
`max_m`, and the logits are multiplied by `scale` before the cross-entropy (as SubpopBench does, on
the raw logits). For the first `drw_start` fraction of the run's steps every example weighs 1; after,
examples are weighed by the class-balanced weights of the effective number (beta = 0.9999), normalised to
a weighted mean. Groups are not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import MemawareError
from .base import Method, register
from .reweight import class_counts, effective_number_weights

DRW_BETA = 0.9999


def ldam_margins(counts: torch.Tensor, max_m: float) -> torch.Tensor:
    """m_c proportional to n_c^(-1/4) with max_c m_c = max_m (0 for classes absent from training)."""
    raw = torch.where(counts > 0, counts.clamp_min(1) ** -0.25, torch.zeros_like(counts))
    return raw * (max_m / raw.max())


def ldam_logits(logits: torch.Tensor, y: torch.Tensor, margins: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * (logits - margin of the true class on the true class's logit)."""
    return scale * (logits - margins[y][:, None] * F.one_hot(y, logits.shape[1]).to(logits.dtype))


@register()
class LDAM(Method):
    name = "ldam"
    defaults = {"max_m": 0.5, "scale": 30.0, "drw_start": 0.8}
    bounds = {"max_m": (0.0, float("inf")), "scale": (1e-3, float("inf")), "drw_start": (0.0, 1.0)}
    space = {"max_m": lambda rng: float(10 ** rng.uniform(-1, -0.1)),
             "scale": lambda rng: float(rng.choice([10.0, 30.0]))}

    def setup(self, ctx):
        super().setup(ctx)
        if ctx.config is None:
            raise MemawareError("ldam starts its re-weighting at a fraction of the run's steps: it needs the "
                                "run's TrainConfig (ctx.config)")
        counts = class_counts(ctx.y, ctx.n_classes)
        self.margins = ldam_margins(counts, self.hparams["max_m"]).float().to(ctx.device)
        self.drw_weights = effective_number_weights(counts, DRW_BETA).float().to(ctx.device)
        self.drw_step = round(self.hparams["drw_start"] * ctx.config.steps)
        self.step = torch.zeros((), dtype=torch.long)

    def loss(self, logits, y, idx):
        ce = F.cross_entropy(ldam_logits(logits, y, self.margins, self.hparams["scale"]), y, reduction="none")
        if int(self.step) < self.drw_step:
            return ce.mean()
        w = self.drw_weights[y]
        return (w * ce).sum() / w.sum()

    def update(self, logits, y, idx):
        self.step += 1

    def state_dict(self):
        return {"step": self.step}
