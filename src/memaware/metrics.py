"""Accuracy per group and per class, worst-group, worst-class and average accuracy."""
from __future__ import annotations

import numpy as np
import torch

from .data.dataset import group_name


def group_accuracy(correct: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Accuracy of each group id in 0..n_groups-1; NaN for groups with no examples."""
    correct = correct.float()
    counts = torch.bincount(groups, minlength=n_groups).float()
    hits = torch.bincount(groups, weights=correct, minlength=n_groups)
    return torch.where(counts > 0, hits / counts.clamp_min(1), torch.full_like(counts, float("nan")))


def worst(acc: torch.Tensor) -> float:
    """The lowest accuracy among non-empty groups (NaN entries are empty groups)."""
    present = acc[~torch.isnan(acc)]
    return float(present.min()) if len(present) else float("nan")


def accuracy_report(pred: torch.Tensor, y: torch.Tensor, n_classes: int, a: torch.Tensor | None = None,
                    n_attrs: int = 1, inferred: torch.Tensor | None = None,
                    attributes: torch.Tensor | None = None, attribute_names: tuple[str, ...] = ()) -> dict:
    """Average, worst-class and (where groups are given) per-group and worst-group accuracy.

    `a` is the true attribute; `inferred` an inferred attribute (e.g. XRM's cross-mistake bit, 2 values);
    `attributes` (n, m) 0/1 overlapping attributes, reported as overlap_group_acc and overlap_wga.
    """
    correct = pred == y
    class_acc = group_accuracy(correct, y, n_classes)
    out = {"avg_acc": float(correct.float().mean()), "wca": worst(class_acc),
           "class_acc": {str(c): float(v) for c, v in enumerate(class_acc) if not torch.isnan(v)}}
    if a is not None:
        acc = group_accuracy(correct, y * n_attrs + a, n_classes * n_attrs)
        out["wga"] = worst(acc)
        out["group_acc"] = {group_name(g, n_attrs): float(v) for g, v in enumerate(acc) if not torch.isnan(v)}
    if inferred is not None:
        acc = group_accuracy(correct, y * 2 + inferred, n_classes * 2)
        out["gi_wga"] = worst(acc)
    if attributes is not None:
        from .data.overlap import overlap_group_accuracy

        overlap = overlap_group_accuracy(pred.cpu().numpy(), y.cpu().numpy(), attributes.cpu().numpy(),
                                         list(attribute_names))
        out["overlap_wga"], out["overlap_group_acc"] = overlap["wga"], overlap["group_acc"]
    return out


def bootstrap_ci(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of `values`."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float(values.mean()), float(values.mean())) if len(values) else (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
