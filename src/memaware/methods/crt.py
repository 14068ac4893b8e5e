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
from .two_stage import HeadRetraining


@register()
class CRT(HeadRetraining, ReSample):
    name = "crt"


@register()
class ReWeightCRT(HeadRetraining, ReWeight):
    name = "reweight-crt"
