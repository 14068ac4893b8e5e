"""The penultimate features (the input of the final Linear layer) of the model being trained.

Methods that act on representations (MMD, CORAL, Correct-n-Contrast) train, in `wrap_model`, a module
that returns the logits and the penultimate features of a batch from one forward pass, side by side:
(B, K + D). Their loss splits them (`logits_and_features`); under several processes the loop gathers
that output as it gathers logits, so the penalty sees the features of the global batch. The model
itself predicts. For a linear model the body is the identity (nn.Flatten): the features are the inputs
and have no trainable parameters, so a penalty on them is a constant with no gradient; it is then not
computed (`learns_features` False), the model trains as it is, and these methods train exactly as ERM
(CnC as ERM on (1 - lam) CE).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Method
from .two_stage import has_parameters, split_head


class LogitsAndFeatures(nn.Module):
    """A Sequential (body..., Linear head) whose output is its logits, then its penultimate features."""

    def __init__(self, model: nn.Sequential):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model[:-1](x).flatten(1)
        return torch.cat([self.model[-1](features), features], 1)


class PenultimateFeatures(Method):
    """Mixin: train `LogitsAndFeatures(model)` where the model's body has parameters."""

    def wrap_model(self, model):
        self.learns_features = has_parameters(split_head(model, self.name)[0])
        return LogitsAndFeatures(model) if self.learns_features else model

    def predictor(self, trained):
        return trained.model if self.learns_features else trained

    def logits_and_features(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits (B, K) and the penultimate features (B, D) in the trained module's output."""
        return output[:, :self.ctx.n_classes], output[:, self.ctx.n_classes:]
