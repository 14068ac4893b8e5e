"""Evaluation over overlapping groups (CivilComments' identities, or any multi-attribute data).

An example may mention several identities, so it belongs to several groups (label, attribute) at once.
Groups are never encoded into y or a single a: each (label, attribute) group is the set of examples
with that label whose attribute column is 1, and accuracy is computed per group.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from .dataset import Dataset


def overlap_group_accuracy(pred, y, attributes, attribute_names: list[str]) -> dict:
    """Per-(label, attribute) accuracy over overlapping 0/1 attribute columns, and the worst of them.

    pred, y: (n,) class ids; attributes: (n, m) 0/1. Returns {"group_acc": {"y=k,NAME": acc},
    "group_size": {...}, "wga": worst accuracy, "worst_group": its name}; empty groups are left out.
    """
    pred, y = np.asarray(pred).reshape(-1), np.asarray(y).reshape(-1)
    attributes = np.asarray(attributes)
    if attributes.ndim != 2 or len(attributes) != len(y) or len(pred) != len(y):
        raise DataError(f"overlapping groups need pred (n,), y (n,) and attributes (n, m); got "
                        f"{pred.shape}, {y.shape}, {attributes.shape}")
    if attributes.shape[1] != len(attribute_names):
        raise DataError(f"{attributes.shape[1]} attribute columns but {len(attribute_names)} names")
    correct = pred == y
    acc, size = {}, {}
    for label in np.unique(y):
        for j, name in enumerate(attribute_names):
            members = (y == label) & (attributes[:, j] == 1)
            if members.any():
                key = f"y={int(label)},{name}"
                acc[key], size[key] = float(correct[members].mean()), int(members.sum())
    worst = min(acc, key=acc.get) if acc else None
    return {"group_acc": acc, "group_size": size, "wga": acc[worst] if worst else float("nan"),
            "worst_group": worst}


def split_attributes(ds: Dataset, split: str) -> tuple[np.ndarray, list[str]]:
    """The overlapping attribute columns of one split of a Dataset, and their names."""
    if ds.attributes is None:
        raise DataError(f"data set '{ds.name}' has no overlapping attributes")
    return ds.attributes[ds.mask(split)], list(ds.attribute_names)
