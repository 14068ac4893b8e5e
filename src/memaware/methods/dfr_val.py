"""DFR on validation data (DFR^Va, Kirichenko et al.): the last layer retrained on group-balanced validation data.

Stage 1 trains a copy of the model by ERM on the train split for `first_steps` steps (default: the
run's steps; skipped for a linear model, whose features are the inputs) and freezes its body, whose
output on the validation split (TrainContext.val, with its true groups) gives the features of the last
layer (in evaluation mode, chunk by chunk: for a network, the evaluation form of its inputs). The
validation split is cut at random into two halves. For each
L1 strength in L1_GRID, a head trained from the initial weights on a group-balanced subset of the first
half (every group cut to the smallest, as SUBG draws it) is scored by worst-group accuracy on the second
half; the best strength (ties: the weaker) is kept. The loop then trains the final head from its initial
weights on a group-balanced subset of the whole validation split with that strength: its batches come
from that subset, whatever train batch the loop draws. Loss: mean cross-entropy + l1 * ||W||_1.
It uses true groups of the validation split (and none of the train split); its validation metrics are
measured on the data it trained on.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MemawareError
from ..metrics import group_accuracy, worst
from .base import Method, UniformSampler, register
from .subg import balanced_subset
from .two_stage import has_parameters, last_layer_model, split_head, train_first_model

L1_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)


def head_loss(head: nn.Linear, features: torch.Tensor, y: torch.Tensor,
              l1: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(features)
    return F.cross_entropy(logits, y) + l1 * head.weight.abs().sum(), logits


def fit_head(head: nn.Linear, features: torch.Tensor, y: torch.Tensor, pool: torch.Tensor, l1: float, config,
             generator: torch.Generator) -> nn.Linear:
    """A copy of `head` trained with the run's optimizer settings on the examples `pool`."""
    from ..train.loop import optimize

    head = copy.deepcopy(head).train()
    sampler = UniformSampler(len(y), config.batch_size, generator, pool)
    optimize(head, config, sampler, lambda idx: head_loss(head, features[idx], y[idx], l1), name="dfr-val (L1 search)")
    return head


def choose_l1(head: nn.Linear, features: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, n_groups: int,
              config, generator: torch.Generator) -> float:
    """The L1 strength whose head, fit on a balanced subset of one half, has the best WGA on the other half."""
    order = torch.randperm(len(y), generator=generator)
    fit_half, score_half = order[: len(y) // 2], order[len(y) // 2:]
    pool = fit_half[balanced_subset(groups[fit_half], n_groups, generator)]
    score_half = score_half.to(features.device)
    scores = []
    for l1 in L1_GRID:
        fitted = fit_head(head, features, y, pool, l1, config, generator)
        with torch.no_grad():
            correct = fitted(features[score_half]).argmax(1) == y[score_half]
        scores.append(worst(group_accuracy(correct, groups[score_half], n_groups)))
    return L1_GRID[max(range(len(L1_GRID)), key=lambda i: (scores[i], -i))]


@register()
class DFRVal(Method):
    name = "dfr-val"
    needs_groups = True
    defaults = {"groups": "true", "first_steps": None}
    choices = {"groups": ("true",)}
    bounds = {"first_steps": (1, float("inf"))}

    def wrap_model(self, model):
        from ..train.loop import predict_logits

        val = self.ctx.val
        if val is None or val.a is None or len(val) < 4:
            raise MemawareError("dfr-val needs a validation split with true group labels (at least 4 examples)")
        if self.ctx.config is None:
            raise MemawareError("dfr-val trains a first model and its head: it needs the run's TrainConfig (ctx.config)")
        body, self.head = split_head(model, self.name)
        if has_parameters(body):
            body = split_head(train_first_model(model, self.ctx, self.hparams["first_steps"], self.name), self.name)[0]
        trained = last_layer_model(body, self.head)
        self.features = predict_logits(trained[0], val.x)  # in evaluation mode, chunk by chunk
        self.val_y, groups = val.y, val.groups
        self.l1 = torch.tensor(choose_l1(self.head, self.features, val.y, groups, val.n_groups, self.ctx.config,
                                         self.ctx.generator))
        self.pool = balanced_subset(groups, val.n_groups, self.ctx.generator)
        self.val_sampler = UniformSampler(len(val), self.ctx.config.batch_size, self.ctx.generator, self.pool)
        return trained

    def loss(self, logits, y, idx):
        j = next(self.val_sampler).to(self.features.device)
        return head_loss(self.head, self.features[j], self.val_y[j], float(self.l1))[0]

    def state_dict(self):
        return {"l1": self.l1, "pool": self.pool}

    def resume_state(self):
        sampler = {f"val_sampler.{k}": v for k, v in self.val_sampler.state_dict().items()}
        return {**super().resume_state(), **sampler}

    def load_resume_state(self, state):
        prefix = "val_sampler."
        self.val_sampler.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        super().load_resume_state({k: v for k, v in state.items() if not k.startswith(prefix)})
