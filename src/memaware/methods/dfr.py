"""Deep feature reweighting (DFR), in its DFR^Tr form: retrain the last layer on group-balanced data.

The original DFR retrains the last layer on held-out validation data with group labels. The loop
trains on the train split, so this is the variant the DFR paper calls DFR^Tr: stage 1 trains a copy
of the model by ERM on the train split for `first_steps` steps (default: the run's steps); stage 2,
the loop, freezes everything but the final Linear layer and trains that layer from its initial
weights (zero by default: from scratch) on a random subset with every group cut to the smallest
group's size (as SUBG draws it). For a linear model there are no features to learn, so stage 1 is
skipped and DFR^Tr is SUBG. Oracle by default (true groups); groups="inferred" uses XRM's.
"""
from __future__ import annotations

from .base import GROUP_SOURCES, register
from .subg import SUBG
from .two_stage import has_parameters, last_layer_model, split_head, train_first_model


@register()
class DFR(SUBG):
    name = "dfr"
    defaults = {"groups": "true", "first_steps": None}
    choices = {"groups": GROUP_SOURCES}
    bounds = {"first_steps": (1, float("inf"))}

    batched = True

    def batchable(self, config):
        return super().batchable(config) and config.arch == "linear"  # a deeper one trains a first model apart

    def wrap_model(self, model):
        body, head = split_head(model, self.name)
        if not has_parameters(body):
            return model
        first = train_first_model(model, self.ctx, self.hparams["first_steps"], self.name)
        return last_layer_model(split_head(first, self.name)[0], head)
