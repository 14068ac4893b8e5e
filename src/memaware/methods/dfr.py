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
from .two_stage import HeadRetraining


@register()
class DFR(HeadRetraining, SUBG):
    name = "dfr"
    defaults = {"groups": "true", "first_steps": None}
    choices = {"groups": GROUP_SOURCES}
    batched = True
