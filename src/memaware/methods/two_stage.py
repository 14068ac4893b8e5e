"""Helpers for two-stage methods (JTT, DFR, AFR): a first ERM model, and its body/head split.

The first model is a copy of the model the loop is about to train (same architecture and initial
weights), trained by plain ERM with the run's TrainConfig (optimizer, lr, batch size, weight decay)
for a given number of steps (or epochs: JTT, CnC, SPARE), on all training examples or a pool of them.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MemawareError
from .base import TrainContext, UniformSampler


def train_first_model(model: nn.Module, ctx: TrainContext, steps: int | None, name: str,
                      pool: torch.Tensor | None = None) -> nn.Module:
    """A copy of `model` trained by ERM for `steps` (None: the run's steps) on `pool` (default: all)."""
    from ..train.loop import optimize  # the loop imports methods: import it only when used

    if ctx.config is None:
        raise MemawareError(f"{name} trains a first model and needs the run's TrainConfig (ctx.config)")
    config = ctx.config.model_copy(update={"steps": int(steps or ctx.config.steps)})
    first = copy.deepcopy(model).train()
    seed = int(torch.randint(2**62, (1,), generator=ctx.generator))
    sampler = UniformSampler(len(ctx.y), config.batch_size, torch.Generator().manual_seed(seed), pool)

    def batch_loss(idx):
        logits = first(ctx.x[idx].to(ctx.device))  # streamed inputs (texts) may be stored on the CPU
        return F.cross_entropy(logits, ctx.y[idx]), logits

    optimize(first, config, sampler, batch_loss, name=f"{name} (first stage)")
    return first.eval()


def epochs_to_steps(epochs: float, n: int, batch_size: int | None) -> int:
    """Optimizer steps for `epochs` passes over `n` examples in batches of `batch_size` (None: full batch)."""
    return max(1, math.ceil(epochs * n / (batch_size or n)))


def train_for_epochs(model: nn.Module, ctx: TrainContext, epochs: float, name: str) -> nn.Module:
    """`train_first_model` for `epochs` passes over the train split, in batches of the run's batch size."""
    batch_size = None if ctx.config is None else ctx.config.batch_size
    return train_first_model(model, ctx, epochs_to_steps(epochs, len(ctx.y), batch_size), name)


def split_head(model: nn.Module, name: str) -> tuple[nn.Module, nn.Linear]:
    """(body, head) of a Sequential model whose last module is the Linear head."""
    if not (isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear)):
        raise MemawareError(f"{name} retrains the last layer: the model must be an nn.Sequential ending in nn.Linear")
    return model[:-1], model[-1]


def has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


class FrozenBody(nn.Sequential):
    """The layers of a body that does not learn: no gradients, and always in evaluation mode (BatchNorm
    normalises with its running statistics and leaves them as they are), so that the head trained on its
    output sees the features that it is evaluated with."""

    def train(self, mode: bool = True):
        return super().train(False)


def last_layer_model(body: nn.Sequential, head: nn.Linear) -> nn.Sequential:
    """A copy of the layers of `body`, frozen (`FrozenBody`), followed by the trainable `head`."""
    body = FrozenBody(*copy.deepcopy(body))
    body.requires_grad_(False)
    return nn.Sequential(body, head)


def label_probability(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p_model(y_i | x_i) for each example."""
    from ..train.loop import predict_logits

    return torch.softmax(predict_logits(model, x), 1).gather(1, y[:, None]).squeeze(1)


def training_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 where the model's argmax differs from the label, else 0."""
    from ..train.loop import predict_logits

    return (predict_logits(model, x).argmax(1) != y).long()


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
