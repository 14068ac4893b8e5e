"""SPARE (Yang et al.): groups found by clustering an early ERM model's outputs, then balanced by sampling.

Stage 1 trains a copy of the model by ERM for `first_epochs` passes over the train split (default 1,
searched over 1 and 2, SpuCo's grid for SPARE: early in training, where simplicity bias makes the output
reflect the spurious feature). Within each class, its softmax outputs are clustered by k-means into
`clusters` clusters (seeded random initial centres, 50 Lloyd iterations). Stage 2, the loop, trains the
model from its initial weights on batches drawing example i with probability proportional to
|cluster(i)|^(-power): power 1 makes every cluster equally likely. (The paper picks the number of
clusters per class by silhouette score; here it is a hyperparameter.) Groups are not used.
"""
from __future__ import annotations

import torch

from .base import Method, WeightedSampler, register
from .two_stage import train_for_epochs

KMEANS_ITERATIONS = 50


def kmeans(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Cluster ids in 0..k-1 of `points` (n, d) by Lloyd's algorithm from k random distinct points."""
    points = points.double().cpu()
    k = min(k, len(points))
    centres = points[torch.randperm(len(points), generator=generator)[:k]]
    for _ in range(KMEANS_ITERATIONS):
        labels = torch.cdist(points, centres).argmin(1)
        onehot = torch.nn.functional.one_hot(labels, k).double()
        counts = onehot.sum(0)
        moved = (onehot.T @ points) / counts.clamp_min(1)[:, None]
        centres = torch.where(counts[:, None] > 0, moved, centres)
    return torch.cdist(points, centres).argmin(1)


def class_clusters(outputs: torch.Tensor, y: torch.Tensor, n_classes: int, k: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Cluster id y * k + c of each example, c its k-means cluster among its class's outputs."""
    y = y.cpu()
    ids = torch.zeros(len(y), dtype=torch.long)
    for c in range(n_classes):
        members = torch.nonzero(y == c).squeeze(1)
        if len(members):
            ids[members] = c * k + kmeans(outputs[members], k, generator)
    return ids


def spare_weights(clusters: torch.Tensor, power: float) -> torch.Tensor:
    """Sampling weight |cluster(i)|^(-power) of each example."""
    counts = torch.bincount(clusters).double()
    return counts[clusters] ** -power


@register()
class SPARE(Method):
    name = "spare"
    defaults = {"first_epochs": 1.0, "clusters": 2, "power": 1.0}
    bounds = {"first_epochs": (0.01, 1000.0), "clusters": (1, 100), "power": (0.0, float("inf"))}
    space = {"first_epochs": lambda rng: float(rng.choice([1, 2])),
             "clusters": lambda rng: int(rng.choice([2, 3, 4])),
             "power": lambda rng: float(rng.choice([0.5, 1.0, 2.0]))}

    def wrap_model(self, model):
        from ..train.loop import predict_logits

        first = train_for_epochs(model, self.ctx, self.hparams["first_epochs"], self.name)
        outputs = torch.softmax(predict_logits(first, self.ctx.x), 1).cpu()
        self.clusters = class_clusters(outputs, self.ctx.y, self.ctx.n_classes, int(self.hparams["clusters"]),
                                       self.ctx.generator)
        return model

    def sampler(self, batch_size):
        return WeightedSampler(spare_weights(self.clusters, self.hparams["power"]), batch_size, self.ctx.generator)

    def state_dict(self):
        return {"clusters": self.clusters}
