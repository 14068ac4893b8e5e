"""Saved models and predictions of `memaware run`, and the data a run used.

A run folder holds, per method and seed, `models/METHOD/seed-S.pt` (the selected model's weights,
weights-only loadable, with what rebuilds it: architecture, input size, classes, feature names and the
standardization statistics) and `predictions/METHOD/seed-S.parquet` (one row per example of every
split: index, split, y, a, pred, prob_0..prob_K-1, inferred group when phase 1 ran).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data.dataset import SPLITS, Dataset
from .data.io import atomic_write
from .errors import DataError, MemawareError
from .train.config import TrainConfig
from .train.models import build_model

ARCH_FIELDS = ("arch", "hidden", "bias")


def model_path(run_dir, method: str, seed: int) -> Path:
    return Path(run_dir) / "models" / method / f"seed-{seed}.pt"


def predictions_path(run_dir, method: str, seed: int) -> Path:
    return Path(run_dir) / "predictions" / method / f"seed-{seed}.parquet"


class SavedModel(nn.Module):
    """A trained model behind the standardization it was trained with: predicts from raw features."""

    def __init__(self, model: nn.Module, mean: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                 meta: dict | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.meta = meta or {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            x = (x.reshape(len(x), -1) - self.mean) / self.scale
        return self.model(x)


def canonical_state(predictor: nn.Module, fresh: nn.Module, method: str) -> dict:
    """`predictor`'s weights in the layout of `fresh` (the plain model of its architecture): methods that
    wrap or split the model (DFR, AFR, LfF) predict with the same sequence of layers."""
    leaves = [m for m in predictor.modules() if not list(m.children())]
    if [type(m) for m in leaves] != [type(m) for m in fresh]:
        raise MemawareError(f"{method}: its predictor is not a plain {len(fresh)}-layer model and cannot be saved")
    for target, source in zip(fresh, leaves):
        target.load_state_dict(source.state_dict())
    return {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}


def save_model(path, predictor: nn.Module, config: TrainConfig, data: Dataset, meta: dict,
               standardization: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write `predictor` (a trained model of `config.arch` on `data`) with what rebuilds it, atomically."""
    fresh = build_model(data.n_features, data.n_classes, config, torch.Generator())
    state = canonical_state(predictor, fresh, meta.get("method", "model"))
    stats = {} if standardization is None else {"mean": torch.as_tensor(standardization[0]),
                                                "scale": torch.as_tensor(standardization[1])}
    meta = {**meta, **{k: getattr(config, k) for k in ARCH_FIELDS}, "n_features": data.n_features,
            "n_classes": data.n_classes, "feature_names": data.feature_names}
    payload = {"model": state, "standardization": stats, "meta": meta}
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))
    return Path(path)


def load_model(path, method: str | None = None, seed: int | None = None) -> SavedModel:
    """A saved model, from its .pt file or from a run folder with `method` (and `seed`: default the
    run's first seed). Read with weights_only=True: no code is unpickled."""
    path = Path(path)
    if path.is_dir():
        if method is None:
            raise MemawareError(f"{path}: a run folder: name the method (saved: {', '.join(saved_methods(path))})")
        path = model_path(path, method, run_seeds(path)[0] if seed is None else seed)
        if not path.is_file():
            raise MemawareError(f"{path}: no saved model (saved methods: {', '.join(saved_methods(path.parents[2]))};"
                                f" seeds: {', '.join(map(str, run_seeds(path.parents[2])))})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = payload["meta"]
        config = TrainConfig(**{k: meta[k] for k in ARCH_FIELDS})
        model = build_model(meta["n_features"], meta["n_classes"], config, torch.Generator())
        model.load_state_dict(payload["model"])
    except FileNotFoundError:
        raise MemawareError(f"{path}: no such model file") from None
    except Exception as err:
        raise MemawareError(f"{path}: not a memaware model file ({type(err).__name__})") from None
    stats = payload["standardization"]
    return SavedModel(model, stats.get("mean"), stats.get("scale"), meta).eval()


def read_results(run_dir) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise MemawareError(f"{run_dir}: no results.json here (a folder written by `memaware run`)")
    return json.loads(path.read_text())


def run_seeds(run_dir) -> list[int]:
    return read_results(run_dir).get("seeds", [0])


def saved_methods(run_dir) -> list[str]:
    folder = Path(run_dir) / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def predictions_frame(model: nn.Module, data: Dataset, inferred: dict | None = None):
    """One row per example of every split: index, split, y, a, pred, prob_k, inferred (where given)."""
    import pandas as pd

    from .train.loop import predict_logits

    frames = []
    for split in SPLITS:
        s = data.get(split)
        probs = torch.softmax(predict_logits(model, s.x).float(), 1).numpy()
        frame = {"index": s.index.numpy(), "split": split, "y": s.y.numpy()}
        if s.a is not None:
            frame["a"] = s.a.numpy()
        frame["pred"] = probs.argmax(1)
        frame.update({f"prob_{k}": probs[:, k] for k in range(probs.shape[1])})
        if inferred and split in inferred:
            frame["inferred"] = inferred[split].cpu().numpy()
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def write_table(frame, path) -> Path:
    """Write a DataFrame as .parquet or .csv (by suffix), atomically."""
    path = Path(path)
    write = (lambda tmp: frame.to_parquet(tmp, index=False)) if path.suffix == ".parquet" else (
        lambda tmp: frame.to_csv(tmp, index=False))
    atomic_write(path, write)
    return path


def open_data(source: str | os.PathLike, features: list[str] | None = None,
              ignore: list[str] | None = None) -> Dataset:
    """A data file (.npz, .csv, .parquet, .pt) or a registered data set's name, as a Dataset."""
    from .data.io import SUFFIXES, load
    from .data.registry import DATASETS, load_dataset

    path = Path(source)
    if path.is_file() or path.suffix in SUFFIXES:
        return load(path, features, ignore=ignore)
    if path.is_dir():
        raise DataError(f"{path}: a folder; turn images or texts into a features file first "
                        f"(memaware featurize {path} --out features.npz)")
    if str(source) not in DATASETS:
        raise DataError(f"{source}: neither a data file (.npz, .csv, .parquet, .pt) nor a registered data set "
                        f"(known: {', '.join(sorted(DATASETS))}; see `memaware datasets`)")
    if features or ignore:
        raise DataError(f"--features and --ignore choose columns of .csv and .parquet files, not of data set "
                        f"'{source}'")
    from .featurize import default_cache_dir

    return load_dataset(str(source), {"cache_dir": default_cache_dir()})


def load_run_data(run_dir) -> Dataset:
    """The data set a `memaware run` folder was trained on, with its feature choice and standardization."""
    source = read_results(run_dir)["source"]
    data = open_data(source["data"], source["features"], source["ignore"])
    return data.standardized() if source["standardize"] else data


def read_inputs(source, meta: dict) -> tuple[np.ndarray, dict]:
    """Inputs for a saved model: the features it was trained on (by column name for tables) and the
    optional columns y, split, a, from a file or a data set's name. Returns (x, {name: column})."""
    path = Path(source)
    if not (path.is_file() and path.suffix in (".csv", ".parquet", ".npz", ".pt")):
        data = open_data(source)
        x, extras = data.x, {"y": data.y, "split": data.split, **({"a": data.a} if data.a is not None else {})}
    else:
        try:
            x, extras = (_table_inputs(path, meta.get("feature_names")) if path.suffix in (".csv", ".parquet")
                         else _array_inputs(path))
        except DataError as err:
            raise DataError(f"{path}: {err}") from None
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if x.shape[1] != meta["n_features"]:
        raise DataError(f"{source}: {x.shape[1]} features, but the model was trained on {meta['n_features']}")
    if not np.isfinite(x).all():
        raise DataError(f"{source}: features contain NaN or infinite values (row {int(np.argwhere(~np.isfinite(x))[0][0])})")
    return x, extras


def _table_inputs(path: Path, names: list[str] | None) -> tuple[np.ndarray, dict]:
    from .data.io import read_table

    if names is None:
        raise DataError("the model was trained on unnamed features (an .npz or .pt file, or a data set): "
                        "give an .npz or .pt with an array 'x'")
    df = read_table(path)
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise DataError(f"missing feature column '{missing[0]}' that the model was trained on "
                        f"({len(missing)} of {len(names)} missing)")
    non_numeric = [c for c in names if df[c].dtype.kind not in "biuf"]
    if non_numeric:
        raise DataError(f"feature column '{non_numeric[0]}' is not numeric")
    return df[names].to_numpy(dtype=np.float32), {c: df[c].to_numpy() for c in ("y", "split", "a") if c in df.columns}


def _array_inputs(path: Path) -> tuple[np.ndarray, dict]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        else:
            arrays = {k: np.asarray(v) for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
    except Exception as err:
        raise DataError(f"cannot read as {path.suffix} ({type(err).__name__})") from None
    if "x" not in arrays:
        raise DataError(f"missing array 'x' (found: {', '.join(sorted(arrays)) or 'none'})")
    return arrays["x"], {k: arrays[k] for k in ("y", "split", "a") if k in arrays}
