"""Saved models and predictions of `memaware run`, and the data a run used.

A run folder holds, per method and seed, `models/METHOD/seed-S.pt` (the selected model's weights,
weights-only loadable, with what rebuilds it: architecture, input size, classes, feature names and the
standardization statistics) and `predictions/METHOD/seed-S.parquet` (one row per example of every
split: index, split, y, a, pred, prob_0..prob_K-1, inferred group when phase 1 ran).

A whole network (`memaware run --backbone`) is saved the same way: its state dict, weights-only, with the
JSON-able recipe that rebuilds it (`meta["network"]`: backbone, weights file, image size or maximum length,
layout); its predictions add each image's file name (`file`, relative to the folder).
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
    """`predictor`'s weights under the names of `fresh` (the plain model of its architecture): methods that
    wrap or split the model (DFR, AFR: Sequential(Sequential(body), head); LfF) hold the same tensors in
    the same order, under other names."""
    source, target = predictor.state_dict(), fresh.state_dict()
    if [tuple(v.shape) for v in source.values()] != [tuple(v.shape) for v in target.values()]:
        raise MemawareError(f"{method}: its predictor does not hold the weights of the plain model "
                            f"({len(source)} tensors against {len(target)}) and cannot be saved")
    return {name: value.detach().cpu().clone() for name, value in zip(target, source.values())}


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


def network_spec(data, weights=None) -> dict:
    """What rebuilds the network of `data` (a StreamData), as plain values: backbone name, weights file,
    image size and side of the cached images or maximum text length, layout and modality (paths made absolute)."""
    net = data.network
    name = f"hf:{Path(net.name[3:]).absolute()}" if net.name.startswith("hf:") else net.name
    return {"backbone": name, "weights": None if weights is None else str(Path(weights).absolute()),
            "image_size": net.image_size or None, "cache_side": net.cache_side or None,
            "max_length": net.max_length or None,
            "layout": data.info.get("layout"), "modality": data.modality}


def save_network(path, predictor: nn.Module, data, spec: dict, meta: dict) -> Path:
    """Write the network `predictor` (trained on `data`, a StreamData) with `spec` (network_spec), atomically."""
    fresh = data.build_model(TrainConfig(), torch.Generator())
    state = canonical_state(predictor, fresh, meta.get("method", "model"))
    meta = {**meta, "network": spec, "n_classes": data.n_classes}
    atomic_write(Path(path), lambda tmp: torch.save({"model": state, "standardization": {}, "meta": meta}, tmp))
    return Path(path)


def rebuild_network(meta: dict):
    """(the untrained classifier, its Network recipe) that `meta["network"]` describes; the backbone's
    package and weights file must be there (a one-line MemawareError says what is missing)."""
    from .train.backbones import network

    spec = meta["network"]
    recipe = network(spec["backbone"], spec["weights"], spec["image_size"] or 224, spec["max_length"] or 128,
                     spec.get("cache_side") or 0)
    return recipe.classifier(meta["n_classes"], TrainConfig(), torch.Generator()), recipe


def load_model(path, method: str | None = None, seed: int | None = None) -> SavedModel:
    """A saved model, from its .pt file or from a run folder with `method` (and `seed`: default the
    run's first seed). Read with weights_only=True: no code is unpickled. A network's model carries its
    recipe as `.network` (memaware.train.backbones.Network)."""
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
    except FileNotFoundError:
        raise MemawareError(f"{path}: no such model file") from None
    except Exception as err:
        raise MemawareError(f"{path}: not a memaware model file ({type(err).__name__})") from None
    recipe = None
    try:
        if "network" in meta:
            model, recipe = rebuild_network(meta)
        else:
            config = TrainConfig(**{k: meta[k] for k in ARCH_FIELDS})
            model = build_model(meta["n_features"], meta["n_classes"], config, torch.Generator())
        model.load_state_dict(payload["model"])
    except MemawareError:
        raise
    except Exception as err:
        raise MemawareError(f"{path}: not a memaware model file ({type(err).__name__})") from None
    stats = payload["standardization"]
    saved = SavedModel(model, stats.get("mean"), stats.get("scale"), meta).eval()
    saved.network = recipe
    return saved


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
    """One row per example of every split: index, split, y, a, file (a network's images), pred, prob_k,
    inferred (where given)."""
    import pandas as pd

    from .train.loop import predict_logits

    frames = []
    for split in SPLITS:
        s = data.get(split)
        if len(s) == 0:
            continue
        probs = torch.softmax(predict_logits(model, s.x).float(), 1).numpy()
        frame = {"index": s.index.numpy(), "split": split, "y": s.y.numpy()}
        if s.a is not None:
            frame["a"] = s.a.numpy()
        files = getattr(data, "files", None)
        if files is not None:
            frame["file"] = np.asarray(files, dtype=object)[data.mask(split)]
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


def read_network_inputs(source, model: SavedModel):
    """The layout folder `source` (its layout detected) streamed for the saved network `model`: a StreamData
    whose inputs `predictions_frame` evaluates (images decoded once into $MEMAWARE_CACHE)."""
    from .data.layouts import detect_layout, read_layout
    from .data.stream import stream
    from .featurize import default_cache_dir

    path = Path(source)
    if not path.exists():
        raise DataError(f"{source}: no such folder")
    if not path.is_dir():
        raise DataError(f"{source}: the model is a {model.meta['network']['backbone']} network; give a folder of "
                        f"{model.network.modality}s in a layout (e.g. {model.meta['network']['layout']}), not a file")
    return stream(read_layout(detect_layout(path), path), model.network, cache_dir=default_cache_dir())


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
