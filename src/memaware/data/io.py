"""Read and write data files in the `memaware run` contract (.npz, .csv, .parquet, .pt).

.npz / .pt: arrays (tensors) `x` (n x d), `y` (n), `split` (n), optional `a` (n), optional `attributes`
(n x m, 0/1) with `attribute_names` (m). .csv / .parquet: columns `y`, `split`, optional `a`, optional
overlapping attributes `attr:NAME`; every other column is a feature unless `features` names the
columns to use or `ignore` leaves some out; a non-numeric column that is neither is an error. In every
format `split` holds names (train, val, test) or codes (0, 1, 2).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset

SUFFIXES = (".npz", ".csv", ".parquet", ".pt")
ATTRIBUTE_PREFIX = "attr:"  # table columns of overlapping 0/1 attributes, e.g. "attr:female"
ITEM = "item"  # an optional column (array) naming each example: its file or its text; never a feature


def load(path: str | os.PathLike, features: list[str] | None = None, name: str | None = None,
         ignore: list[str] | None = None) -> Dataset:
    """Load a data file into a validated Dataset; any problem raises DataError naming the file.

    `features` (columns to use) and `ignore` (columns to leave out) apply to .csv and .parquet only.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown extension '{path.suffix}', expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix in (".npz", ".pt"):
            if features or ignore:
                raise DataError(f"--{'features' if features else 'ignore'} chooses columns of .csv and .parquet "
                                f"files; a {path.suffix} file has one array 'x' of features")
            arrays = (_read_npz if path.suffix == ".npz" else _read_pt)(path)
        else:
            arrays = _read_table(path, features, ignore or [])
        return Dataset(name=name or path.stem, **arrays)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as err:  # zip, header or pickle problems all mean an unreadable file
        raise DataError(f"cannot read as .npz ({type(err).__name__}: {err})") from None
    return _pick_arrays(arrays)


def _read_pt(path: Path) -> dict:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"cannot read as .pt with weights_only=True ({type(err).__name__})") from None
    if not isinstance(obj, dict):
        raise DataError("a .pt file must hold a dict of tensors with keys x, y, split")
    arrays = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in obj.items()}
    return _pick_arrays(arrays)


def _pick_arrays(arrays: dict) -> dict:
    for key in ("x", "y", "split"):
        if key not in arrays:
            raise DataError(f"missing array '{key}' (found: {', '.join(sorted(arrays)) or 'none'})")
    out = {"x": arrays["x"], "y": arrays["y"], "split": arrays["split"], "a": arrays.get("a")}
    if "attributes" in arrays:
        names = arrays.get("attribute_names")
        if names is None:
            raise DataError("array 'attributes' needs an array 'attribute_names'")
        out.update(attributes=arrays["attributes"], attribute_names=[str(n) for n in np.asarray(names).tolist()])
    return out


def read_table(path: Path):
    """A .csv or .parquet file as a pandas DataFrame (DataError when it cannot be read)."""
    import pandas as pd

    try:
        return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as err:
        raise DataError(f"cannot read as {path.suffix} ({type(err).__name__}: {err})".splitlines()[0]) from None


def feature_columns(df, features: list[str] | None, ignore: list[str]) -> list[str]:
    """The feature columns of a table: `features` if given, else every column that is not y, split, a,
    an `attr:` attribute or in `ignore`; every one must exist and be numeric."""
    import pandas as pd

    for c in [*(features or []), *ignore]:
        if c not in df.columns:
            raise DataError(f"column '{c}' not found (found: {', '.join(map(str, df.columns))})")
    if features is None:
        reserved = {"y", "split", "a", ITEM, *ignore}
        features = [c for c in df.columns if c not in reserved and not str(c).startswith(ATTRIBUTE_PREFIX)]
    if not features:
        raise DataError("no feature columns")
    for c in features:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise DataError(f"column '{c}' is not numeric (e.g. {df[c].iloc[0]!r}): choose the feature columns "
                            f"with --features, or leave it out with --ignore {c}")
    return [str(c) for c in features]


def _read_table(path: Path, features: list[str] | None, ignore: list[str]) -> dict:
    df = read_table(path)
    for col in ("y", "split"):
        if col not in df.columns:
            raise DataError(f"missing column '{col}' (found: {', '.join(map(str, df.columns))})")
    attribute_columns = [c for c in df.columns if str(c).startswith(ATTRIBUTE_PREFIX)]
    features = feature_columns(df, features, ignore)
    y = df["y"].to_numpy()
    if y.dtype == object:
        raise DataError(f"'y' must hold integer labels, found {y[0]!r}")
    a = df["a"].to_numpy() if "a" in df.columns else None
    out = {"x": df[features].to_numpy(dtype=np.float32), "y": y, "split": df["split"].to_numpy(), "a": a,
           "feature_names": features}
    if attribute_columns:
        out.update(attributes=df[attribute_columns].to_numpy(),
                   attribute_names=[c[len(ATTRIBUTE_PREFIX):] for c in attribute_columns])
    return out


def save(ds: Dataset, path: str | os.PathLike, items=None) -> Path:
    """Write a Dataset to .npz, .csv or .parquet (chosen by suffix), atomically; `items` (one file name or
    text per example) is written as the column (array) `item`."""
    path = Path(path)
    if path.suffix not in (".npz", ".csv", ".parquet"):
        raise DataError(f"{path}: cannot write '{path.suffix}', use .npz, .csv or .parquet")

    def write(tmp: Path):
        if path.suffix == ".npz":
            extra = {} if ds.a is None else {"a": ds.a}
            if items is not None:
                extra[ITEM] = np.asarray(items, dtype=str)
            if ds.attributes is not None:
                extra.update(attributes=ds.attributes, attribute_names=np.asarray(ds.attribute_names, dtype=str))
            with open(tmp, "wb") as f:
                np.savez_compressed(f, x=ds.x.reshape(len(ds), -1), y=ds.y, split=ds.split, **extra)
        else:
            import pandas as pd

            x = ds.x.reshape(len(ds), -1)
            df = pd.DataFrame(x, columns=ds.feature_names or [f"f{i}" for i in range(x.shape[1])])
            df["y"] = ds.y
            if ds.a is not None:
                df["a"] = ds.a
            if ds.attributes is not None:
                for j, name in enumerate(ds.attribute_names):
                    df[ATTRIBUTE_PREFIX + name] = ds.attributes[:, j]
            df["split"] = ds.split
            if items is not None:
                df[ITEM] = np.asarray(items, dtype=str)
            df.to_csv(tmp, index=False) if path.suffix == ".csv" else df.to_parquet(tmp, index=False)

    atomic_write(path, write)
    return path


def write_json(path, obj, sort_keys: bool = False) -> None:
    """Write `obj` as indented JSON (NaN and tensors' floats as numbers), atomically."""
    import json

    text = json.dumps(obj, indent=2, sort_keys=sort_keys, default=float) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
