"""The synthetic problem of the MAT paper's Figure 1, and a multi-class variant.

Each example has a core feature that determines the label, a spurious feature that agrees with the
label in the majority of training examples (and in half of the validation/test examples), and noise
dimensions that let a linear model memorize individual examples. The attribute a is the label the
spurious feature points to, so the group (y, a) is a majority group when a == y.
"""
from __future__ import annotations

import numpy as np

from .dataset import SPLITS, Dataset


def make_figure1(
    n: int = 1000,
    d: int = 1800,
    sigma: float = 0.5,
    majority_fraction: float = 0.9,
    eval_majority_fraction: float = 0.5,
    spurious_scale: float = 5.0,
    core_spread: float = 0.12,
    seed: int = 0,
) -> Dataset:
    """Binary problem of the paper's Figure 1: n examples per split, d dimensions.

    Column 0 is the core feature s(core_spread z - 1) with s = 2y - 1, column 1 the spurious feature
    (same form, its sign flipped for the minority, times spurious_scale), columns 2.. are noise sigma N(0,1).
    """
    if d < 2:
        raise ValueError("d must be at least 2 (core and spurious features)")
    rng = np.random.default_rng(seed)
    xs, ys, as_, splits = [], [], [], []
    for split in SPLITS:
        frac = majority_fraction if split == "train" else eval_majority_fraction
        y = rng.integers(0, 2, n)
        s = 2.0 * y - 1.0
        agree = rng.random(n) < frac
        core = s * (core_spread * rng.standard_normal(n) - 1.0)
        spur = np.where(agree, 1.0, -1.0) * s * (core_spread * rng.standard_normal(n) - 1.0) * spurious_scale
        noise = sigma * rng.standard_normal((n, d - 2))
        xs.append(np.column_stack([core, spur, noise]))
        ys.append(y)
        as_.append(np.where(agree, y, 1 - y))
        splits.append(np.full(n, split))
    params = dict(n=n, d=d, sigma=sigma, majority_fraction=majority_fraction,
                  eval_majority_fraction=eval_majority_fraction, spurious_scale=spurious_scale,
                  core_spread=core_spread, seed=seed)
    return Dataset(np.concatenate(xs), np.concatenate(ys), np.concatenate(splits), np.concatenate(as_),
                   name="figure1", info={"generator": "make_figure1", "params": params,
                                         "kind": "synthetic", "core_columns": [0], "spurious_columns": [1]})


def make_multiclass(
    n: int = 1500,
    n_classes: int = 3,
    d: int = 600,
    sigma: float = 0.5,
    majority_fraction: float = 0.9,
    eval_majority_fraction: float | None = None,
    spurious_scale: float = 5.0,
    core_spread: float = 0.12,
    seed: int = 0,
) -> Dataset:
    """K-class variant: one-hot core and spurious blocks of K columns each, then noise columns.

    The spurious block encodes a = y for a majority_fraction of training examples and a uniformly
    drawn other class otherwise; evaluation splits draw a uniformly from all classes by default.
    """
    k = n_classes
    if d < 2 * k:
        raise ValueError(f"d must be at least 2 * n_classes = {2 * k}")
    eval_frac = 1.0 / k if eval_majority_fraction is None else eval_majority_fraction
    rng = np.random.default_rng(seed)
    eye = np.eye(k)
    xs, ys, as_, splits = [], [], [], []
    for split in SPLITS:
        frac = majority_fraction if split == "train" else eval_frac
        y = rng.integers(0, k, n)
        other = (y + rng.integers(1, k, n)) % k
        a = np.where(rng.random(n) < frac, y, other)
        core = eye[y] + core_spread * rng.standard_normal((n, k))
        spur = (eye[a] + core_spread * rng.standard_normal((n, k))) * spurious_scale
        noise = sigma * rng.standard_normal((n, d - 2 * k))
        xs.append(np.column_stack([core, spur, noise]))
        ys.append(y)
        as_.append(a)
        splits.append(np.full(n, split))
    params = dict(n=n, n_classes=k, d=d, sigma=sigma, majority_fraction=majority_fraction,
                  eval_majority_fraction=eval_frac, spurious_scale=spurious_scale, core_spread=core_spread,
                  seed=seed)
    return Dataset(np.concatenate(xs), np.concatenate(ys), np.concatenate(splits), np.concatenate(as_),
                   name=f"multiclass{k}", n_classes=k, n_attrs=k,
                   info={"generator": "make_multiclass", "params": params, "kind": "synthetic",
                         "core_columns": list(range(k)), "spurious_columns": list(range(k, 2 * k))})
