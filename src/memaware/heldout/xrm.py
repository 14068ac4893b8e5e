"""XRM: twin models on random halves with class-balanced loss and held-out label flips.

Each training example is assigned to one twin at random; a twin trains only on its own half with a
class-balanced cross-entropy against dynamic labels. After each step, each example of the batch takes
the label k its held-out twin predicts with probability (p - 1/K) K / (K - 1), p the held-out
confidence; flips persist. At the end, held-out logits come from the twin an example was not assigned
to, and any example (train, val, test) is inferred to be in group (y, m), m = 1 if either twin errs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import SPLITS, Dataset
from ..methods.base import Method, batched_group_mean_losses, group_mean_losses, per_run
from ..train.config import TrainConfig
from ..train.loop import fit, predict_logits
from ..train.models import Twins, model_for, reset_parameters
from .base import HeldOut, is_degenerate, split_labels


def flip_probability(heldout_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability (p - 1/K) K / (K - 1) of taking the held-out argmax k as the label, and k."""
    k = heldout_logits.shape[-1]
    p, pred = torch.softmax(heldout_logits, -1).max(-1)
    return ((p - 1.0 / k) * k / (k - 1)).clamp(0, 1), pred


def class_balanced_loss(logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Sum over the classes present of the mean cross-entropy of that class's examples."""
    per_example = F.cross_entropy(logits, labels, reduction="none")
    losses, _ = group_mean_losses(per_example, labels, n_classes)
    return losses.sum()


class XRMTwins(Method):
    """Phase 1 as a method over a Twins model: held-in class-balanced loss, held-out label flips."""

    name = "xrm"

    def setup(self, ctx):
        super().setup(ctx)
        n = len(ctx.y)
        self.assignment = torch.randint(0, 2, (n,), generator=ctx.generator).to(ctx.device)
        self.labels = ctx.y.clone()

    def _pick(self, logits, idx, twin_of):
        return logits[twin_of, torch.arange(len(idx), device=logits.device)]

    def loss(self, logits, y, idx):
        held_in = self._pick(logits, idx, self.assignment[idx])
        return class_balanced_loss(held_in, self.labels[idx], self.ctx.n_classes)

    def update(self, logits, y, idx):
        prob, pred = flip_probability(self._pick(logits, idx, 1 - self.assignment[idx]))
        flip = self.draws(len(idx)).to(prob.device) < prob
        self.labels[idx[flip]] = pred[flip]

    def draws(self, n):
        return torch.rand(n, generator=self.ctx.generator)

    def flip_rate(self) -> float:
        return float((self.labels != self.ctx.y).float().mean())

    def state_dict(self):
        return {"assignment": self.assignment, "labels": self.labels}

    batched = True

    def stack_state(self):
        return self.state_dict()

    def batched_loss(self, state, logits, y, idx, weight):
        held_in = twin_of_each(logits, per_run(state["assignment"], idx))
        labels = per_run(state["labels"], idx)
        per_example = F.cross_entropy(held_in.transpose(1, 2), labels, reduction="none")
        return batched_group_mean_losses(per_example, labels, self.ctx.n_classes, weight).sum(1)

    def batched_update(self, state, logits, y, idx, weight, draws):
        prob, pred = flip_probability(twin_of_each(logits, 1 - per_run(state["assignment"], idx)))
        flip = (draws < prob) & (weight > 0)
        change = torch.where(flip, pred - per_run(state["labels"], idx), 0)
        state["labels"] = state["labels"].scatter_add(1, idx, change)  # padding adds 0 to a real example


def twin_of_each(logits: torch.Tensor, twin: torch.Tensor) -> torch.Tensor:
    """(M, 2, B, K) stacked twin logits, (M, B) twin per example -> (M, B, K) that twin's logits."""
    index = twin[:, None, :, None].expand(-1, 1, -1, logits.shape[-1])
    return logits.gather(1, index).squeeze(1)


def xrm(data: Dataset, config: TrainConfig | None = None, model: nn.Module | None = None,
        callback=None, **run) -> HeldOut:
    """Run XRM on `data` and return held-out logits and inferred groups for every split.

    `data`: features (twin models of `config.arch`), or a StreamData (twin networks trained end to end; for a
    pretrained backbone's frozen features, see `memaware.train.backbones.phase1_data`). `model` (optional)
    is one twin's architecture; the second twin is a deep copy re-initialised when the model has parameters
    drawn at random (the default linear head starts at zero in both).
    `run`: `fit`'s `checkpoint` and `distributed`.
    """
    config = config or TrainConfig()
    twins = build_twins(data, config) if model is None else Twins(model, _reinitialised_copy(model, config.seed))
    method = XRMTwins()
    fit(data, method, config, model=twins, callback=callback, evaluate_splits=False, **run)
    return _heldout_from_twins(data, twins, method, config.device)


def build_twins(data: Dataset, config: TrainConfig) -> Twins:
    """The two models that XRM starts from (`model_for` the data, from a generator seeded by the run's seed)."""
    generator = torch.Generator().manual_seed(config.seed + 1_000_003)
    return Twins(*(model_for(data, config, generator) for _ in range(2)))


def _reinitialised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with its parameters drawn again, from `seed`, leaving the global RNG untouched."""
    twin = copy.deepcopy(model)
    reset_parameters(twin, seed + 1)
    return twin


def _heldout_from_twins(data: Dataset, twins: Twins, method: XRMTwins, device) -> HeldOut:
    logits = {}
    for split in SPLITS:
        x = data.get(split, device).x
        logits[split] = torch.stack([predict_logits(m, x) for m in twins.twins])  # (2, n, K)
    return heldout_from_twin_logits(data, logits, method)


def heldout_from_twin_logits(data: Dataset, logits: dict[str, torch.Tensor], method: XRMTwins) -> HeldOut:
    """Phase 1's products from both twins' final logits (2, n, K) on every split."""
    device = logits["train"].device
    ys = {s: y.to(device) for s, y in split_labels(data).items()}
    inferred = {}
    for split in SPLITS:
        both = logits[split]
        if split == "train":
            idx = torch.arange(both.shape[1], device=both.device)
            heldout_logits = both[1 - method.assignment, idx]
        inferred[split] = (both.argmax(2) != ys[split]).any(0).long()
    degenerate = is_degenerate(ys, inferred, data.n_classes)
    n_flipped = int((method.labels != method.ctx.y).sum())
    return HeldOut(heldout_logits.cpu(), {k: v.cpu() for k, v in inferred.items()}, "xrm",
                   flip_rate=method.flip_rate(), degenerate=degenerate,
                   info={"n_flipped": n_flipped})


def select_xrm_run(runs: list[HeldOut]) -> HeldOut:
    """Phase-1 selection: the non-degenerate run with the highest final flip rate (any run if all are)."""
    pool = [r for r in runs if not r.degenerate] or runs
    return max(pool, key=lambda r: r.flip_rate or 0.0)
