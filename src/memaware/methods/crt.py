"""Classifier re-training (CRT and ReWeightCRT, Kang et al.): ERM, then the last layer alone, class-balanced.

Stage 1 trains a copy of the model by ERM for `first_steps` steps (default: the run's steps); stage 2,
the loop, freezes its body and trains the final Linear layer from its initial weights with
class-balanced sampling (CRT, as ReSample draws) or the class-reweighted loss (ReWeightCRT, as
ReWeight weighs). For a linear model there is no body: stage 1 is skipped and CRT is ReSample,
ReWeightCRT is ReWeight (as DFR^Tr is SUBG). Groups are not used.
"""
from __future__ import annotations

from .base import register
from .reweight import ReSample, ReWeight
from .two_stage import has_parameters, last_layer_model, split_head, train_first_model


class HeadRetraining:
    """Mixin: train a first ERM model and hand the loop its frozen body under the initial head."""

    defaults = {"first_steps": None}
    bounds = {"first_steps": (1, float("inf"))}

    def batchable(self, config):
        return super().batchable(config) and config.arch == "linear"  # a deeper one trains a first model apart

    def wrap_model(self, model):
        body, head = split_head(model, self.name)
        if not has_parameters(body):
            return model
        first = train_first_model(model, self.ctx, self.hparams["first_steps"], self.name)
        return last_layer_model(split_head(first, self.name)[0], head)


@register()
class CRT(HeadRetraining, ReSample):
    name = "crt"


@register()
class ReWeightCRT(HeadRetraining, ReWeight):
    name = "reweight-crt"
