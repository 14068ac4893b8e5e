"""Memorization: per-example scores (held-in/held-out gap, self-influence, Feldman-Zhang), per group."""
from .compute import DEFAULT_SCORES, ESTIMATORS, Analysis, TrainedMethod, analyze, method_scores
from .scores import crossfit_gap, feldman_zhang, heldout_gap, self_influence

__all__ = ["DEFAULT_SCORES", "ESTIMATORS", "Analysis", "TrainedMethod", "analyze", "method_scores", "crossfit_gap",
           "feldman_zhang", "heldout_gap", "self_influence"]
