"""Access to the penultimate features (the input of the final Linear layer) of the model being trained.

Methods that act on representations (MMD, CORAL, Correct-n-Contrast) keep the model's body in
`wrap_model` and recompute body(x) for a batch in their loss, with gradients. For a linear model the
body is the identity (nn.Flatten): the features are the inputs and have no trainable parameters, so
a penalty on them is a constant with no gradient; it is then not computed (`learns_features` False),
and these methods train exactly as ERM (CnC as ERM on (1 - lam) CE).
"""
from __future__ import annotations

import torch

from .base import Method
from .two_stage import has_parameters, split_head


class PenultimateFeatures(Method):
    """Mixin: `features(idx)`, the body's output for the training examples at positions idx."""

    def wrap_model(self, model):
        self.body = split_head(model, self.name)[0]
        self.learns_features = has_parameters(self.body)
        return model

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        return self.body(self.ctx.x[idx]).flatten(1)
