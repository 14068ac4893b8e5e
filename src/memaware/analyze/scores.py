"""Memorization scores of training examples: each with its estimator and its cost.

Every score is a vector over the train split, by position, higher meaning "more memorized".

- `heldout_gap`: p(y_i | model that trained on i) - p(y_i | model that did not). Free once both sets of
  logits exist (a forward pass); it is a memorization score when both models come from the same method.
- `crossfit_gap`: that gap with K models of the method itself, each trained without one fold: the held-in
  probability is the mean over the K - 1 models that saw i, the held-out one that of the model that did
  not. Cost: K trainings.
- `feldman_zhang`: the subsampling estimate of Feldman and Zhang (2020): m models on random halves;
  mean p(y_i) over models that saw i minus the mean over models that did not. Cost: m trainings on n/2
  examples; its standard error shrinks as 1/sqrt(m).
- `self_influence`: TracIn (Pruthi et al. 2020) self-influence beyond the example's group: the sum over
  checkpoints of the learning rate times (the example's gradient . its own gradient minus the mean of its
  gradient . the gradient of each other training example of its group), exact for the last linear layer,
  where an example's gradient is (p_i - e_y) (h_i, 1) with h_i the layer's input. The part of an example's
  influence on itself that its group does not share: an example fit through features it shares with its
  group scores near 0, one fit through features of its own scores high. Cost: one training, plus a
  forward pass over the train split at each checkpoint.
- `raw_self_influence`: plain TracIn self-influence (the same sum with ||gradient||^2): it also ranks
  examples that are merely hard (learned late, not memorized) high.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from ..data.dataset import Dataset
from ..errors import MemawareError
from ..heldout.base import HeldOut
from ..train.config import TrainConfig
from ..train.loop import fit, predict_logits


def true_class_prob(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the true label of each example."""
    return torch.softmax(logits.double(), 1).gather(1, y.view(-1, 1)).squeeze(1).float()


def heldout_gap(heldin_logits: torch.Tensor, heldout_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p(y | held-in logits) - p(y | held-out logits), per example. Cost: none beyond the logits."""
    return true_class_prob(heldin_logits, y) - true_class_prob(heldout_logits, y)


def train_subset(data: Dataset, keep: np.ndarray, heldout: HeldOut | None = None):
    """`data` with only the training examples where `keep` (over train positions) holds; val and test as
    they were; and `heldout` restricted the same way."""
    train = data.mask("train")
    rows = ~train
    rows[np.flatnonzero(train)[keep]] = True
    sub = replace(data, x=data.x[rows], y=data.y[rows], split=data.split[rows],
                  a=None if data.a is None else data.a[rows],
                  attributes=None if data.attributes is None else data.attributes[rows])
    if heldout is None:
        return sub, None
    keep_t = torch.as_tensor(keep)
    inferred = {**heldout.inferred, "train": heldout.inferred["train"][keep_t]} if "train" in heldout.inferred \
        else dict(heldout.inferred)
    return sub, replace(heldout, logits=heldout.logits[keep_t], inferred=inferred)


def subset_scores(data: Dataset, method: str, config: TrainConfig, keep: np.ndarray, heldout: HeldOut | None = None,
                  callback=None, **hparams) -> torch.Tensor:
    """Mean p(y_i) over the models that trained on i minus the mean over those that did not.

    keep: (m, n_train) boolean, row k the training examples model k sees. Each model is `method` trained
    with `config` (seed + k). Examples never held in or never held out score NaN.
    """
    train = data.get("train")
    probs = []
    for k, row in enumerate(keep):
        sub, sub_heldout = train_subset(data, row, heldout)
        run = fit(sub, method, config.model_copy(update={"seed": config.seed + k}), heldout=sub_heldout,
                  evaluate_splits=False, callback=callback, **hparams)
        probs.append(true_class_prob(predict_logits(run.model, train.x.to(config.device)).cpu(), train.y))
    probs, inside = torch.stack(probs), torch.as_tensor(keep)
    n_in, n_out = inside.sum(0), (~inside).sum(0)
    mean_in = (probs * inside).sum(0) / n_in.clamp_min(1)
    mean_out = (probs * ~inside).sum(0) / n_out.clamp_min(1)
    gap = mean_in - mean_out
    return torch.where((n_in > 0) & (n_out > 0), gap, torch.full_like(gap, float("nan")))


def fold_masks(n: int, folds: int, seed: int) -> np.ndarray:
    """(folds, n) boolean: row k keeps every example outside fold k (folds drawn at random from `seed`)."""
    if folds < 2:
        raise MemawareError(f"cross-fitting needs at least 2 folds, got {folds}")
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    return fold_of[None, :] != np.arange(folds)[:, None]


def half_masks(n: int, models: int, seed: int) -> np.ndarray:
    """(models, n) boolean: each row a random half of the examples (n // 2 of them)."""
    if models < 2:
        raise MemawareError(f"the Feldman-Zhang estimate needs at least 2 models, got {models}")
    rng = np.random.default_rng(seed)
    keep = np.zeros((models, n), dtype=bool)
    for row in keep:
        row[rng.permutation(n)[: n // 2]] = True
    return keep


def n_train(data: Dataset) -> int:
    return int(data.mask("train").sum())


def crossfit_gap(data: Dataset, method: str = "erm", config: TrainConfig | None = None, folds: int = 5,
                 heldout: HeldOut | None = None, callback=None, **hparams) -> torch.Tensor:
    """Held-in/held-out gap of `method` by K-fold cross-fitting (K trainings on (K-1)/K of the data)."""
    config = config or TrainConfig()
    keep = fold_masks(n_train(data), folds, config.seed + 11)
    return subset_scores(data, method, config, keep, heldout, callback, **hparams)


def feldman_zhang(data: Dataset, method: str = "erm", config: TrainConfig | None = None, models: int = 8,
                  heldout: HeldOut | None = None, callback=None, **hparams) -> torch.Tensor:
    """Feldman-Zhang memorization estimate of `method` from `models` trainings on random halves."""
    config = config or TrainConfig()
    keep = half_masks(n_train(data), models, config.seed + 13)
    return subset_scores(data, method, config, keep, heldout, callback, **hparams)


def last_linear(model: nn.Module) -> nn.Linear:
    """The last nn.Linear module of `model` (its output layer for feed-forward models)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise MemawareError(f"self-influence needs a model with a linear output layer, got {type(model).__name__}")
    return layers[-1]


@torch.no_grad()
def last_layer_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192):
    """Each example's cross-entropy gradient with respect to the last linear layer, as the factors of its
    outer product: (softmax(logits) - onehot(y), (h, 1 if the layer has a bias)), h the layer's input."""
    layer = last_linear(model)
    inputs = []
    hook = layer.register_forward_hook(lambda module, args, out: inputs.append(args[0].flatten(1)))
    try:
        logits = predict_logits(model, x, chunk)
    finally:
        hook.remove()
    h = torch.cat(inputs).double()
    if layer.bias is not None:
        h = torch.cat([h, h.new_ones(len(h), 1)], 1)
    residual = torch.softmax(logits.double(), 1) - nn.functional.one_hot(y.to(logits.device), logits.shape[1])
    return residual, h


def last_layer_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Squared norm of each example's cross-entropy gradient with respect to the last linear layer:
    ||softmax(logits) - onehot(y)||^2 (||h||^2 + 1 if the layer has a bias)."""
    residual, h = last_layer_gradients(model, x, y, chunk)
    return (residual.pow(2).sum(1) * h.pow(2).sum(1)).float().cpu()


def influence_beyond_group(model: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """g_i . g_i minus the mean of g_i . g_j over the other examples j of i's group (g the last-layer
    gradient); an example alone in its group keeps g_i . g_i."""
    residual, h = last_layer_gradients(model, x, y)
    own = residual.pow(2).sum(1) * h.pow(2).sum(1)
    groups = groups.to(own.device)
    out = own.clone()
    for g in groups.unique():
        members = groups == g
        n = int(members.sum())
        if n > 1:
            total = residual[members].T @ h[members]  # the sum of the group's gradients, (K, d)
            with_self = ((h[members] @ total.T) * residual[members]).sum(1)
            out[members] = own[members] - (with_self - own[members]) / (n - 1)
    return out.float().cpu()


def peer_groups(data: Dataset, heldout: HeldOut | None = None) -> torch.Tensor:
    """The groups self-influence compares an example with: true groups (y, a) where the data has them,
    else phase 1's inferred groups (y, m), else the class."""
    train = data.get("train")
    if train.a is not None:
        return train.groups
    if heldout is not None and "train" in heldout.inferred:
        return train.y * 2 + heldout.inferred["train"].to(train.y.device)
    return train.y


def self_influence(data: Dataset, method: str = "erm", config: TrainConfig | None = None,
                   heldout: HeldOut | None = None, every: int | None = None, model: nn.Module | None = None,
                   callback=None, peers: torch.Tensor | None = None, relative: bool = True, **hparams):
    """TracIn self-influence of each training example over one training run of `method`: the run `fit`
    takes with these arguments (its model, its batches), followed step by step.

    Every `every` steps (default: config.checkpoint_freq, or steps // 20) adds lr(step) * every * the
    example's last-layer gradient . its own gradient, minus (relative=True) the mean . with the gradients
    of the other training examples of its group (`peers`: group ids by train position; default
    `peer_groups`; `hparams` are the method's, among them a method's own `groups`), the last layer being
    that of the model that predicts. The loss is the model's own cross-entropy for every method (MAT's
    shift is a training device, not part of the prediction). Returns (scores, RunResult).
    """
    config = config or TrainConfig()
    every = every or config.checkpoint_freq or max(config.steps // 20, 1)
    train = data.get("train", config.device)
    peers = peer_groups(data, heldout) if relative and peers is None else peers
    total = torch.zeros(len(train))
    followed = []

    def accumulate(step, record):
        if step % every == 0:
            scores = (influence_beyond_group(followed[0], train.x, train.y, peers) if relative
                      else last_layer_grad_norms(followed[0], train.x, train.y))
            total.add_(lr_at(config, step) * every * scores)
        if callback is not None:
            callback(step, record)

    run = fit(data, method, config, heldout=heldout, model=model, callback=accumulate, on_start=followed.append,
              **hparams)
    return total, run


def lr_at(config: TrainConfig, step: int) -> float:
    """The learning rate the schedule of `config` applies at `step`."""
    decay = max(0.0, 1.0 - step / config.steps) if config.lr_schedule == "linear" else 1.0
    return config.lr * decay
