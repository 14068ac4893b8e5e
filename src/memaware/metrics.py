"""Accuracy per group and per class, worst-group, worst-class, average and balanced accuracy, macro-F1,
AUROC (binary, or one-vs-rest macro), expected calibration error (overall and worst-group).

The metrics take predictions with optional leading model dimensions, so that the batched engine
computes every model's figures at once on the device (`split_values`, then `to_host` and `split_record`);
one model's are the same computation with one model."""
from __future__ import annotations

import numpy as np
import torch

from .data.dataset import group_name


def counts_per_row(values: torch.Tensor, n_bins: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Histogram of each row of `values` (..., n) over 0..n_bins-1 -> (..., n_bins); with `weights` of
    the same shape, the sum of the weights in each bin."""
    rows = values.reshape(-1, values.shape[-1])
    bins = (rows + torch.arange(len(rows), device=values.device).unsqueeze(1) * n_bins).reshape(-1)
    weights = torch.ones_like(bins) if weights is None else weights.reshape(-1)
    counts = weights.new_zeros(len(rows) * n_bins).scatter_add_(0, bins, weights)  # no sync on a GPU (bincount has one)
    return counts.view(*values.shape[:-1], n_bins)


def group_accuracy(correct: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Accuracy of each group id in 0..n_groups-1; NaN for groups with no examples. `correct` (..., n) may
    have leading model dimensions: (..., n_groups)."""
    correct = correct.float()
    counts = counts_per_row(groups, n_groups).float()
    hits = counts_per_row(groups.expand_as(correct), n_groups, correct)
    return torch.where(counts > 0, hits / counts.clamp_min(1), torch.full_like(counts, float("nan")))


def lowest(values: torch.Tensor) -> torch.Tensor:
    """The lowest non-NaN entry along the last dimension (NaN where every entry is NaN)."""
    low = torch.where(torch.isnan(values), float("inf"), values).amin(-1)
    return torch.where(torch.isinf(low) & torch.isnan(values).all(-1), float("nan"), low)


def worst(acc: torch.Tensor) -> float:
    """The lowest accuracy among non-empty groups (NaN entries are empty groups)."""
    return float(lowest(acc))


def scalar_or_rows(values: torch.Tensor) -> float | torch.Tensor:
    """A float for one model's value; a tensor of one value per model with leading model dimensions."""
    return float(values) if values.dim() == 0 else values


def accuracy_values(pred: torch.Tensor, y: torch.Tensor, n_classes: int, a: torch.Tensor | None = None,
                    n_attrs: int = 1, inferred: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """accuracy_report's figures as tensors with the leading model dimensions of `pred` (..., n); per
    class and per group accuracies as (..., K) and (..., groups) tensors."""
    correct = pred == y
    class_acc = group_accuracy(correct, y, n_classes)
    out = {"avg_acc": correct.float().mean(-1), "wca": lowest(class_acc), "balanced_acc": class_acc.nanmean(-1),
           "macro_f1": f1_scores(pred, y, n_classes), "class_acc": class_acc}
    if a is not None:
        acc = group_accuracy(correct, y * n_attrs + a, n_classes * n_attrs)
        out["wga"], out["group_acc"] = lowest(acc), acc
    if inferred is not None:
        out["gi_wga"] = lowest(group_accuracy(correct, y * 2 + inferred, n_classes * 2))
    return out


def accuracy_report(pred: torch.Tensor, y: torch.Tensor, n_classes: int, a: torch.Tensor | None = None,
                    n_attrs: int = 1, inferred: torch.Tensor | None = None,
                    attributes: torch.Tensor | None = None, attribute_names: tuple[str, ...] = ()) -> dict:
    """Average, worst-class and balanced accuracy, macro-F1 and (where groups are given) per-group and
    worst-group accuracy.

    `a` is the true attribute; `inferred` an inferred attribute (e.g. XRM's cross-mistake bit, 2 values);
    `attributes` (n, m) 0/1 overlapping attributes, reported as overlap_group_acc and overlap_wga.
    """
    values = {k: v.cpu() for k, v in accuracy_values(pred, y, n_classes, a, n_attrs, inferred).items()}
    out = named_report(values, n_attrs)
    if attributes is not None:
        out.update(overlap_report(pred, y, attributes, attribute_names))
    return out


def named_report(values: dict[str, torch.Tensor], n_attrs: int) -> dict:
    """One model's report from its values (host tensors): floats, and per class and per group accuracies
    keyed by name ("0", "y,a"), empty ones left out."""
    out = {}
    for key, value in values.items():
        if key in ("class_acc", "group_acc"):
            names = [str(i) if key == "class_acc" else group_name(i, n_attrs) for i in range(len(value))]
            out[key] = {name: float(v) for name, v in zip(names, value.tolist()) if v == v}
        else:
            out[key] = float(value)
    return out


def overlap_report(pred: torch.Tensor, y: torch.Tensor, attributes: torch.Tensor, attribute_names) -> dict:
    """Worst and per-group accuracy over overlapping attributes (memaware.data.overlap)."""
    from .data.overlap import overlap_group_accuracy

    overlap = overlap_group_accuracy(pred.cpu().numpy(), y.cpu().numpy(), attributes.cpu().numpy(),
                                     list(attribute_names))
    return {"overlap_wga": overlap["wga"], "overlap_group_acc": overlap["group_acc"]}


def f1_scores(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Macro F1 of each row of `pred` (..., n) -> (...,) (see macro_f1)."""
    tp = counts_per_row(y.expand_as(pred), n_classes, (pred == y).double())
    predicted = counts_per_row(pred, n_classes).double()
    actual = counts_per_row(y, n_classes).double()
    denominator = predicted + actual  # 2 TP + FP + FN
    return torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), float("nan")).nanmean(-1)


def macro_f1(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> float | torch.Tensor:
    """Mean over the classes present in `y` or `pred` of 2 TP / (2 TP + FP + FN) (scikit-learn's macro F1)."""
    return scalar_or_rows(f1_scores(pred, y, n_classes))


def mean_ranks(ordered: torch.Tensor) -> torch.Tensor:
    """1-based ranks of sorted rows (..., n), tied values sharing their mean rank."""
    n = ordered.shape[-1]
    position = torch.arange(n, device=ordered.device).expand_as(ordered)
    differs = ordered[..., 1:] != ordered[..., :-1]
    edge = torch.ones_like(differs[..., :1])
    first = torch.where(torch.cat([edge, differs], -1), position, 0).cummax(-1).values
    last = torch.where(torch.cat([differs, edge], -1), position, n).flip(-1).cummin(-1).values.flip(-1)
    return (first + last + 2).double() / 2


def binary_auroc(scores: torch.Tensor, positive: torch.Tensor) -> float | torch.Tensor:
    """Area under the ROC curve of `scores` (..., n) for the 0/1 `positive` (n,) (Mann-Whitney, tied scores
    sharing their mean rank); NaN with one class only."""
    positive = positive.bool()
    n_pos = positive.sum().double()
    n_neg = len(positive) - n_pos
    ordered, order = scores.double().sort(-1)
    rank_sum = (mean_ranks(ordered) * positive[order]).sum(-1)
    area = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp_min(1)
    return scalar_or_rows(torch.where(n_pos * n_neg > 0, area, float("nan")))


def auroc(probs: torch.Tensor, y: torch.Tensor) -> float | torch.Tensor:
    """Binary AUROC of p(class 1) with two classes; else the mean one-vs-rest AUROC over the classes that
    have both positive and negative examples (NaN when none has). `probs` (..., n, K)."""
    if probs.shape[-1] == 2:
        return binary_auroc(probs[..., 1], y == 1)
    values = torch.stack([torch.as_tensor(binary_auroc(probs[..., c], y == c), dtype=torch.float64)
                          for c in range(probs.shape[-1])], -1)
    return scalar_or_rows(values.nanmean(-1))


ECE_BINS = 15


def group_calibration_errors(probs: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, n_groups: int,
                             bins: int = ECE_BINS) -> torch.Tensor:
    """Expected calibration error of each group (NaN where empty): sum_b (n_b / n) |accuracy_b - mean
    confidence_b| over `bins` equal-width bins (lo, hi] of the top-class probability (0 falls in the first).
    `probs` (..., n, K) -> (..., n_groups)."""
    confidence, pred = probs.double().max(-1)
    which = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    gap = counts_per_row(groups * bins + which, n_groups * bins, (pred == y).double() - confidence)
    counts = counts_per_row(groups, n_groups).double()
    errors = gap.view(*gap.shape[:-1], n_groups, bins).abs().sum(-1) / counts.clamp_min(1)
    return torch.where(counts > 0, errors, float("nan"))


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> float | torch.Tensor:
    """The expected calibration error of all examples (NaN without examples)."""
    return scalar_or_rows(group_calibration_errors(probs, y, torch.zeros_like(y), 1, bins)[..., 0])


def worst_group_ece(probs: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, n_groups: int) -> float | torch.Tensor:
    """The largest expected calibration error among the non-empty groups."""
    return scalar_or_rows(-lowest(-group_calibration_errors(probs, y, groups, n_groups)))


def probability_values(probs: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None,
                       n_groups: int = 0) -> dict[str, torch.Tensor]:
    """probability_report's figures as tensors with the leading model dimensions of `probs` (..., n, K)."""
    out = {"auroc": torch.as_tensor(auroc(probs, y), dtype=torch.float64),
           "ece": torch.as_tensor(expected_calibration_error(probs, y), dtype=torch.float64)}
    if groups is not None:
        out["worst_group_ece"] = torch.as_tensor(worst_group_ece(probs, y, groups, n_groups), dtype=torch.float64)
    return out


def probability_report(probs: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None,
                       n_groups: int = 0) -> dict:
    """AUROC and expected calibration error of predicted probabilities (n, K), with the worst group's ECE
    where groups are given."""
    return {k: float(v) for k, v in probability_values(probs, y, groups, n_groups).items()}


def split_values(logits: torch.Tensor, split, inferred: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every figure of an evaluation record on one split (memaware.data.dataset.Split) from the logits
    (M, n, K) of M models, as tensors with a leading model dimension, on the logits' device."""
    pred = logits.argmax(-1)
    values = {**accuracy_values(pred, split.y, split.n_classes, split.a, split.n_attrs,
                                None if inferred is None else inferred.to(pred.device)),
              **probability_values(torch.softmax(logits, -1), split.y, split.groups, split.n_groups)}
    if split.attributes is not None:
        values["pred"] = pred
    return values


def split_record(values: dict[str, torch.Tensor], split, model: int) -> dict:
    """One model's evaluation record on a split from split_values' values (moved to the host)."""
    own = {k: v[model] for k, v in values.items() if k != "pred"}
    out = named_report({k: own[k] for k in own if k not in ("auroc", "ece", "worst_group_ece")}, split.n_attrs)
    if "pred" in values:
        out.update(overlap_report(values["pred"][model], split.y, split.attributes, split.attribute_names))
    return {**out, **{k: float(own[k]) for k in ("auroc", "ece", "worst_group_ece") if k in own}}


def to_host(values: dict, wait: bool = True) -> dict:
    """The tensors of `values` on the CPU, moved in one transfer per dtype. Without `wait`, copies (also of
    values already on the CPU) that a GPU writes without the host waiting for it (`host_copy`)."""
    if wait and all(v.device.type == "cpu" for v in values.values()):
        return values
    out = {}
    for dtype in {v.dtype for v in values.values()}:
        keys = [k for k, v in values.items() if v.dtype == dtype]
        flat = torch.cat([values[k].reshape(-1) for k in keys])
        flat = flat.cpu() if wait else host_copy(flat)
        for k, part in zip(keys, flat.split([values[k].numel() for k in keys])):
            out[k] = part.view(values[k].shape)
    return out


def host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of `tensor` on the CPU. From a GPU, a copy into pinned memory that the host does not wait
    for: read it only once the device has passed this point (an event recorded after it, say)."""
    if tensor.device.type != "cuda":
        return tensor.clone()
    return torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor, non_blocking=True)


def bootstrap_ci(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of `values`."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float(values.mean()), float(values.mean())) if len(values) else (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
