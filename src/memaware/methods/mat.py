"""Memorization-aware training (MAT): shift the model's logits by a calibrated held-out belief.

With held-out logits h_i, temperature tau and K classes:
q_i = softmax(h_i / tau); J = q^T onehot(y) / n; C = J row-normalised (p(y = c | held-out class k));
shift_i = log(q_i C + eps). The model trains on cross-entropy(f(x_i) + shift_i, y_i) and predicts
with f(x) alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, per_run, register

EPS = 1e-8


def calibration_matrix(q: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """C[k, c] = p(y = c | held-out class k) from held-out beliefs q (n, K) and labels y.

    A held-out class with no mass (no example predicted as k) gets a uniform row, so every row sums to one.
    """
    joint = q.T @ F.one_hot(y, n_classes).to(q.dtype) / max(len(y), 1)
    mass = joint.sum(1, keepdim=True)
    uniform = torch.full_like(joint, 1.0 / n_classes)
    return torch.where(mass > 0, joint / mass.clamp_min(torch.finfo(q.dtype).tiny), uniform)


def mat_shift(heldout_logits: torch.Tensor, y: torch.Tensor, n_classes: int, tau: float,
              eps: float = EPS) -> torch.Tensor:
    """Per-example logit shift log(softmax(h / tau) C + eps), computed over the given examples."""
    q = torch.softmax(heldout_logits.double() / tau, dim=1)
    calibrated = q @ calibration_matrix(q, y, n_classes)
    return torch.log(calibrated + eps).to(heldout_logits.dtype)


class MATLoss:
    """MAT's loss for any training loop: `loss(logits, y, idx)` with idx the examples' positions.

    heldout_logits: (n, K) held-out logits of the training examples, indexed by position; y: their labels.
    calibration="global" estimates C once over all n examples (the paper's algorithm, stable);
    "batch" re-estimates it on every batch from that batch only (as the reference code does).
    The shift is a constant: no gradient flows through it.
    """

    def __init__(self, heldout_logits: torch.Tensor, y: torch.Tensor, tau: float = 0.1,
                 calibration: str = "global", eps: float = EPS):
        if calibration not in ("global", "batch"):
            raise ValueError(f"calibration must be 'global' or 'batch', got {calibration!r}")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.heldout_logits = heldout_logits.detach()
        self.y = y
        self.n_classes = heldout_logits.shape[1]
        self.tau, self.calibration, self.eps = tau, calibration, eps
        self.shift = (mat_shift(self.heldout_logits, y, self.n_classes, tau, eps)
                      if calibration == "global" else None)

    def batch_shift(self, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.shift is not None:
            return self.shift[idx]
        return mat_shift(self.heldout_logits[idx], y, self.n_classes, self.tau, self.eps)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        shift = self.batch_shift(y, idx.to(self.heldout_logits.device)).to(logits.device, logits.dtype)
        return F.cross_entropy(logits + shift, y)


@register()
class MAT(Method):
    """Memorization-aware training with held-out logits from phase 1."""

    name = "mat"
    needs_heldout = True
    defaults = {"tau": 0.1, "calibration": "global"}
    choices = {"calibration": ("global", "batch")}
    bounds = {"tau": (1e-6, float("inf"))}
    space = {"tau": lambda rng: float(rng.choice([0.001, 0.01, 0.1]))}

    def setup(self, ctx):
        super().setup(ctx)
        self.mat_loss = MATLoss(ctx.heldout_logits, ctx.y, self.hparams["tau"], self.hparams["calibration"])

    def loss(self, logits, y, idx):
        return self.mat_loss(logits, y, idx)

    batched = True

    def batchable(self, config):
        return super().batchable(config) and self.hparams["calibration"] == "global"  # not per batch

    def stack_state(self):
        return {"shift": self.mat_loss.shift}

    def batched_loss(self, state, logits, y, idx, weight):
        shifted = logits + per_run(state["shift"], idx).to(logits.dtype)
        return Method.batched_loss(self, state, shifted, y, idx, weight)
