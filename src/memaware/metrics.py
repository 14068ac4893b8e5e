"""Accuracy per group and per class, worst-group, worst-class, average and balanced accuracy, macro-F1,
AUROC (binary, or one-vs-rest macro), expected calibration error (overall and worst-group)."""
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
    """Average, worst-class and balanced accuracy, macro-F1 and (where groups are given) per-group and
    worst-group accuracy.

    `a` is the true attribute; `inferred` an inferred attribute (e.g. XRM's cross-mistake bit, 2 values);
    `attributes` (n, m) 0/1 overlapping attributes, reported as overlap_group_acc and overlap_wga.
    """
    correct = pred == y
    class_acc = group_accuracy(correct, y, n_classes)
    out = {"avg_acc": float(correct.float().mean()), "wca": worst(class_acc),
           "balanced_acc": float(class_acc[~torch.isnan(class_acc)].mean()), "macro_f1": macro_f1(pred, y, n_classes),
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


def macro_f1(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    """Mean over the classes present in `y` or `pred` of 2 TP / (2 TP + FP + FN) (scikit-learn's macro F1)."""
    tp = torch.bincount(y[pred == y], minlength=n_classes).double()
    predicted = torch.bincount(pred, minlength=n_classes).double()
    actual = torch.bincount(y, minlength=n_classes).double()
    denominator = predicted + actual  # 2 TP + FP + FN
    present = denominator > 0
    return float((2 * tp[present] / denominator[present]).mean()) if present.any() else float("nan")


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of `x`, tied values sharing their mean rank."""
    order = torch.argsort(x)
    _, inverse, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(mean_rank[inverse])
    ranks[order] = mean_rank[inverse]
    return ranks


def binary_auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of `scores` for the 0/1 `positive` (Mann-Whitney); NaN with one class only."""
    positive = positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(average_ranks(scores.double())[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Binary AUROC of p(class 1) with two classes; else the mean one-vs-rest AUROC over the classes that
    have both positive and negative examples (NaN when none has)."""
    if probs.shape[1] == 2:
        return binary_auroc(probs[:, 1], y == 1)
    values = [binary_auroc(probs[:, c], y == c) for c in range(probs.shape[1])]
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


ECE_BINS = 15


def group_calibration_errors(probs: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, n_groups: int,
                             bins: int = ECE_BINS) -> torch.Tensor:
    """Expected calibration error of each group (NaN where empty): sum_b (n_b / n) |accuracy_b - mean
    confidence_b| over `bins` equal-width bins (lo, hi] of the top-class probability (0 falls in the first)."""
    confidence, pred = probs.double().max(1)
    which = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    gap = torch.bincount(groups * bins + which, weights=(pred == y).double() - confidence, minlength=n_groups * bins)
    counts = torch.bincount(groups, minlength=n_groups).double()
    return torch.where(counts > 0, gap.view(n_groups, bins).abs().sum(1) / counts.clamp_min(1), float("nan"))


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> float:
    """The expected calibration error of all examples (NaN without examples)."""
    return float(group_calibration_errors(probs, y, torch.zeros_like(y), 1, bins)[0])


def worst_group_ece(probs: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, n_groups: int) -> float:
    """The largest expected calibration error among the non-empty groups."""
    errors = group_calibration_errors(probs, y, groups, n_groups)
    present = errors[~torch.isnan(errors)]
    return float(present.max()) if len(present) else float("nan")


def probability_report(probs: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None,
                       n_groups: int = 0) -> dict:
    """AUROC and expected calibration error of predicted probabilities (n, K), with the worst group's ECE
    where groups are given."""
    out = {"auroc": auroc(probs, y), "ece": expected_calibration_error(probs, y)}
    if groups is not None:
        out["worst_group_ece"] = worst_group_ece(probs, y, groups, n_groups)
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
