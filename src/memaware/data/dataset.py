"""What a data set is: inputs x, integer labels y, an optional group attribute a, and a split.

Groups are the pairs (y, a). Every split keeps the positions of its examples in the whole data set
(`index`), and training state elsewhere in memaware is addressed by position within the train split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DataError

SPLITS = ("train", "val", "test")


def group_ids(y: torch.Tensor, a: torch.Tensor, n_attrs: int) -> torch.Tensor:
    """Encode the group (y, a) as the integer y * n_attrs + a."""
    return y * n_attrs + a


def group_name(g: int, n_attrs: int) -> str:
    """The "y,a" name of group id g."""
    return f"{g // n_attrs},{g % n_attrs}"


@dataclass
class Split:
    """One split of a data set, as tensors on one device."""

    x: torch.Tensor
    y: torch.Tensor
    a: torch.Tensor | None
    index: torch.Tensor
    n_classes: int
    n_attrs: int
    attributes: torch.Tensor | None = None  # (n, m) 0/1 overlapping attributes
    attribute_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.y)

    @property
    def groups(self) -> torch.Tensor | None:
        """Group id y * n_attrs + a of each example, or None without a group attribute."""
        return None if self.a is None else group_ids(self.y, self.a, self.n_attrs)

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_attrs

    def to(self, device) -> "Split":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Split(move(self.x), move(self.y), move(self.a), move(self.index), self.n_classes, self.n_attrs,
                     move(self.attributes), self.attribute_names)


@dataclass
class Dataset:
    """A classification data set with labels, an optional group attribute and train/val/test splits.

    x: float array (n, ...) of inputs or features; y: int labels in 0..K-1; a: int attribute in 0..A-1
    or None; split: array of "train"/"val"/"test". attributes: optional (n, m) 0/1 array of possibly
    overlapping attributes (e.g. CivilComments' identities) named by attribute_names, evaluated as
    overlapping groups (label, attribute) beside the groups (y, a).
    """

    x: np.ndarray
    y: np.ndarray
    split: np.ndarray
    a: np.ndarray | None = None
    name: str = "data"
    n_classes: int = field(default=0)
    n_attrs: int = field(default=0)
    info: dict = field(default_factory=dict)
    attributes: np.ndarray | None = None
    attribute_names: list[str] = field(default_factory=list)
    feature_names: list[str] | None = None

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float32)
        self.feature_names = None if self.feature_names is None else [str(n) for n in self.feature_names]
        if self.attributes is not None:
            self.attributes = np.asarray(self.attributes).astype(np.int64)
            self.attribute_names = [str(n) for n in self.attribute_names]
        self.y = int_labels(self.y, "y")
        self.split = split_names(self.split)
        self.a = None if self.a is None else int_labels(self.a, "a")
        validate(self)
        self.n_classes = max(self.n_classes, int(self.y.max()) + 1)
        if self.a is not None:
            self.n_attrs = max(self.n_attrs, int(self.a.max()) + 1)
        else:
            self.n_attrs = max(self.n_attrs, 1)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def has_groups(self) -> bool:
        return self.a is not None

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x.shape[1:]))

    def mask(self, name: str) -> np.ndarray:
        return self.split == name

    def get(self, name: str, device="cpu") -> Split:
        """The split `name` as tensors on `device` (its own copies: on another device, a split that is one
        block of rows is sent from the data set's arrays, without a copy on the host first)."""
        idx = np.flatnonzero(self.mask(name))
        own = torch.device(device).type == "cpu" or len(idx) == 0 or idx[-1] - idx[0] + 1 != len(idx)
        rows = idx if own else slice(int(idx[0]), int(idx[-1]) + 1)
        take = lambda array: None if array is None else torch.as_tensor(array[rows])  # noqa: E731
        return Split(take(self.x), take(self.y), take(self.a), torch.as_tensor(idx), self.n_classes, self.n_attrs,
                     take(self.attributes), tuple(self.attribute_names)).to(device)

    def standardization(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale) of each flattened feature on the train split; constant features get scale 1."""
        train = self.x[self.mask("train")].reshape(int(self.mask("train").sum()), -1)
        std = train.std(0)
        return train.mean(0), np.where(std > 0, std, 1.0).astype(np.float32)

    def standardized(self) -> "Dataset":
        """A copy with every feature centred and scaled by its mean and deviation on the train split
        (constant features are only centred)."""
        mean, scale = self.standardization()
        x = (self.x.reshape(len(self), -1) - mean) / scale
        info = {**self.info, "standardized": "train mean and deviation"}
        return Dataset(x.reshape(self.x.shape), self.y, self.split, self.a, self.name, self.n_classes,
                       self.n_attrs, info, self.attributes, self.attribute_names, self.feature_names)

    def group_sizes(self) -> dict[str, dict[str, int]]:
        """Number of examples in each group "y,a" (or class "y" without groups) per split."""
        out = {}
        for s in SPLITS:
            m = self.mask(s)
            keys = self.y[m] * self.n_attrs + (self.a[m] if self.a is not None else 0)
            names = [group_name(int(g), self.n_attrs) if self.a is not None else str(int(g)) for g in keys]
            out[s] = {str(k): int(v) for k, v in sorted(zip(*np.unique(names, return_counts=True)))}
        return out


def split_names(split) -> np.ndarray:
    """Split names from names ("train", "val", "test") or integer codes 0, 1, 2, in any input format."""
    split = np.asarray(split)
    if split.dtype.kind in "iu" or (split.dtype.kind == "f" and np.all(split == np.round(split))):
        codes = split.astype(np.int64)
        bad = codes[(codes < 0) | (codes >= len(SPLITS))]
        if len(bad):
            raise DataError(f"'split' has unknown code {int(bad[0])}: expected 0 (train), 1 (val) or 2 (test)")
        return np.asarray(SPLITS)[codes]
    return split.astype(str)


def int_labels(v, name: str) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim != 1:
        raise DataError(f"'{name}' must be one-dimensional, got shape {v.shape}")
    if v.dtype.kind == "f":
        if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
            bad = v[~(np.isfinite(v) & (v == np.round(np.nan_to_num(v))))][0].item()
            raise DataError(f"'{name}' must hold integer labels, found {bad!r}")
        v = v.astype(np.int64)
    elif v.dtype.kind == "b":
        v = v.astype(np.int64)
    elif v.dtype.kind not in "iu":
        raise DataError(f"'{name}' must hold integer labels, found values of type {v.dtype} (e.g. {v[0].item()!r})")
    v = v.astype(np.int64)
    if len(v) and v.min() < 0:
        raise DataError(f"'{name}' must hold labels >= 0, found {int(v.min())}")
    return v


def validate(ds: Dataset) -> None:
    """Raise DataError on any breach of the data contract."""
    n = len(ds.y)
    if n == 0:
        raise DataError("the data set is empty")
    lengths = {"x": len(ds.x), "y": n, "split": len(ds.split)}
    if ds.a is not None:
        lengths["a"] = len(ds.a)
    if len(set(lengths.values())) > 1:
        raise DataError("arrays have different lengths: " + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    if ds.x.ndim < 2:
        raise DataError(f"'x' must be (n, d) features, got shape {ds.x.shape}")
    finite = np.isfinite(ds.x.reshape(n, -1))
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise DataError(f"features contain NaN or infinite values (row {row}, feature {col})")
    unknown = sorted(set(ds.split.tolist()) - set(SPLITS))
    if unknown:
        raise DataError(f"'split' has unknown value {unknown[0]!r}: expected train, val or test (or 0, 1, 2)")
    if ds.feature_names is not None and len(ds.feature_names) != ds.n_features:
        raise DataError(f"{len(ds.feature_names)} feature names for {ds.n_features} features")
    for s in SPLITS:
        if not (ds.split == s).any():
            raise DataError(f"split '{s}' is empty")
    if ds.attributes is not None:
        _validate_attributes(ds.attributes, ds.attribute_names, n)
    if len(np.unique(ds.y[ds.split == "train"])) < 2:
        raise DataError("'y' has a single class in the train split: need at least two")


def _validate_attributes(attributes: np.ndarray, names: list[str], n: int) -> None:
    if attributes.ndim != 2 or len(attributes) != n:
        raise DataError(f"'attributes' must be (n, m) with n={n}, got shape {attributes.shape}")
    if attributes.shape[1] != len(names):
        raise DataError(f"'attributes' has {attributes.shape[1]} columns but {len(names)} attribute names")
    if not np.isin(attributes, (0, 1)).all():
        raise DataError("'attributes' must hold 0/1 values")
