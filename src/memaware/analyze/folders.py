"""What an analysis needs from a finished run folder: the data, each method as trained, phase 1.

Two kinds of folder: a `memaware run` output (results.json, heldout.npz, predictions/METHOD/seed-S.parquet)
and a sweep run folder runs/KEY (spec.json, best.json, checkpoint-<criterion>.pt; phase 1 in
../../phase1/KEY). Neither keeps a training trajectory, so the scores that need one (self-influence) or
other models (cross-fitting, Feldman-Zhang) retrain with the recorded training configuration. A whole
network fine-tuned on a layout folder is scored by phase1_gap without training, from its stored predictions
(a run) or from its selected checkpoint (a sweep run), or by self-influence with one more fine-tuning.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import MemawareError
from ..heldout.base import HeldOut
from ..train.config import TrainConfig
from .compute import TrainedMethod


@dataclass
class RunFolder:
    kind: str  # "run" or "sweep run"
    data: object
    methods: list[TrainedMethod]
    heldout: HeldOut | None
    setting: dict
    items: np.ndarray | None = None  # per example of the data set: its file name or text, where known
    network: str | None = None  # the backbone of a whole network trained on a layout folder
    stream: Callable[[], object] | None = None  # a network run's folder streamed, to retrain (None: data is)

    def for_scores(self, scores: tuple[str, ...]) -> "RunFolder":
        """This folder, ready for `scores`: one-line errors for what it cannot give; a network's folder
        streamed again when a score retrains it (self-influence: one fine-tuning)."""
        if self.network is None:
            return self
        subsets = [s for s in scores if s in ("crossfit_gap", "feldman_zhang")]
        if subsets:
            raise MemawareError(f"--scores {subsets[0]}: it fine-tunes the network ({self.network}) many times on "
                                f"parts of its folder; a network is scored by phase1_gap (no training) or "
                                f"self_influence (one fine-tuning)")
        if "phase1_gap" in scores and self.heldout is None:
            raise MemawareError("phase1_gap needs phase 1's held-out logits (heldout.npz), and this run has none: "
                                "train it with a method that uses phase 1 beside (e.g. --methods erm,mat)")
        if "phase1_gap" in scores and all(m.heldin_logits is None for m in self.methods):
            raise MemawareError(f"phase1_gap needs the selected network's predictions on the train split, and "
                                f"{', '.join(m.label for m in self.methods)} predicts through more than the network")
        retraining = [s for s in scores if s != "phase1_gap"]
        if not retraining:
            return self
        for m in self.methods:
            if m.config.device.startswith("cuda") and not torch.cuda.is_available():
                raise MemawareError(f"{m.label} fine-tuned the network on {m.config.device}; retraining it for "
                                    f"{', '.join(retraining)} needs a GPU here")
        return self if self.stream is None else replace(self, data=self.stream())


def open_run_folder(path, seed: int | None = None, criterion: str | None = None) -> RunFolder:
    """Read a `memaware run` output folder or a sweep run folder (runs/KEY)."""
    path = Path(path)
    if (path / "results.json").is_file():
        return _run_output(path, seed)
    if (path / "spec.json").is_file() and (path / "done").is_file():
        return _sweep_run(path, criterion)
    raise MemawareError(f"{path}: neither a `memaware run` output folder (results.json) nor a finished sweep run "
                        "folder (spec.json and done)")


ITEM_COLUMNS = ("path", "filename", "file", "text", "item")


def table_items(source: dict) -> np.ndarray | None:
    """The file name or text of each row of a data file: an .npz's array `item` (written by `memaware
    featurize`), a .csv/.parquet file's first column named path, filename, file, text or item (other than
    item, left out of the features with --ignore); else None."""
    from ..data.io import ITEM, read_table

    path = Path(source["data"])
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as arrays:
            return arrays[ITEM].astype(str) if ITEM in arrays.files else None
    if path.suffix not in (".csv", ".parquet") or not path.is_file():
        return None
    table = read_table(path)
    return frame_items(table)


def frame_items(frame) -> np.ndarray | None:
    """The first of a table's columns named path, filename, file, text or item, as strings; else None."""
    column = next((c for c in ITEM_COLUMNS if c in frame.columns), None)
    return None if column is None else frame[column].astype(str).to_numpy()


def _load_heldout(path: Path) -> HeldOut | None:
    return HeldOut.load(path) if path.is_file() else None


def _train_logits(predictions_file: Path, n_classes: int) -> torch.Tensor | None:
    """Log-probabilities of the selected model on the train split, by position, from its predictions file."""
    import pandas as pd

    if not predictions_file.is_file():
        return None
    frame = pd.read_parquet(predictions_file)
    train = frame[frame["split"] == "train"].sort_values("index")
    probs = train[[f"prob_{k}" for k in range(n_classes)]].to_numpy(dtype=np.float64)
    return torch.as_tensor(np.log(np.clip(probs, 1e-12, None)), dtype=torch.float32)


def _run_output(path: Path, seed: int | None) -> RunFolder:
    from ..saved import load_run_data, predictions_path, read_results

    results = read_results(path)
    seeds = results.get("seeds", [0])
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise MemawareError(f"--seed {seed}: the run trained seeds {', '.join(map(str, seeds))}")
    network = results["source"].get("backbone") if "source" in results else None
    if network is None:
        data, items = load_run_data(path), (table_items(results["source"]) if "source" in results else None)
    else:
        data, items = _network_run_labels(path, results, seed)
    stream = None if network is None else lambda: _network_run_stream(path, results, seed)
    methods = []
    for label, entry in results["methods"].items():
        config = TrainConfig(**{**entry["train_config"], "seed": seed})
        logits = _train_logits(predictions_path(path, label, seed), data.n_classes)
        methods.append(TrainedMethod(label, entry["method"], config, entry["hparams"], logits))
    first = next(iter(results["methods"].values()))
    setting = {"folder": str(path), "kind": "memaware run", "seed": seed, "criterion": first["criterion"]}
    return RunFolder("run", data, methods, _load_heldout(path / "heldout.npz"), setting, items, network, stream)


def _network_run_labels(path: Path, results: dict, seed: int):
    """The labels, attributes and splits of a network run's layout folder, and each example's file name,
    from the stored predictions of its first method (every example, by index): the folder is not read
    again. The Dataset has no features, which phase1_gap does not need (`RunFolder.for_scores` streams the
    folder for a score that retrains)."""
    import pandas as pd

    from ..data.dataset import Dataset
    from ..saved import predictions_path

    file = predictions_path(path, next(iter(results["methods"])), seed)
    if not file.is_file():
        raise MemawareError(f"{file}: missing; a network run's analysis reads its stored predictions")
    frame = pd.read_parquet(file).sort_values("index")
    a = frame["a"].to_numpy() if "a" in frame.columns else None
    data = Dataset(np.zeros((len(frame), 0), np.float32), frame["y"].to_numpy(), frame["split"].to_numpy(), a,
                   name=Path(results["source"]["data"]).name)
    return data, frame_items(frame)


def _network_run_stream(path: Path, results: dict, seed: int):
    """A network run's layout folder streamed for its network (the recipe saved with its first model)."""
    from ..saved import load_model, read_network_inputs

    return read_network_inputs(results["source"]["data"], load_model(path, next(iter(results["methods"])), seed))


def _sweep_run(path: Path, criterion: str | None) -> RunFolder:
    from ..sweep import store
    from ..train.checkpoint import load_checkpoint
    from ..train.loop import predict_logits

    spec = json.loads((path / "spec.json").read_text())["spec"].get("run")
    if spec is None:
        raise MemawareError(f"{path}: a phase-1 folder, not a training run")
    best = store.read_best(path)
    if not best:
        raise MemawareError(f"{path}: this run failed ({store.read_json(path / store.DONE).get('error')})")
    criterion = criterion or ("va_wga" if "va_wga" in best else next(iter(best)))
    if criterion not in best:
        raise MemawareError(f"--criterion {criterion}: not recorded for this run (recorded: {', '.join(best)})")
    config = TrainConfig(**spec["train"])
    data, model, train_inputs, items = _sweep_run_data(spec, config)
    heldout = None if spec["phase1"] is None else _load_heldout(path.parent.parent / "phase1" / spec["phase1"] /
                                                                "heldout.npz")
    try:
        model.load_state_dict(load_checkpoint(path / f"checkpoint-{criterion}.pt")["model"])
        logits = predict_logits(model, train_inputs)
    except (RuntimeError, MemawareError):  # a method whose predictor is not the plain model (LfF, AFR)
        logits = None
    method = TrainedMethod(spec["method"], spec["method"], config, spec["hparams"], logits)
    setting = {"folder": str(path), "kind": "sweep run", "dataset": spec["dataset"], "seed": config.seed,
               "criterion": criterion, "selected_step": best[criterion]["step"]}
    network = spec["network"]["name"] if spec.get("network") else None
    return RunFolder("sweep run", data, [method], heldout, setting, items, network)


def _sweep_run_data(spec: dict, config: TrainConfig):
    """(data set, untrained model, train inputs, file names) of a sweep run: its features, or for a whole
    network its layout folder streamed for the backbone (images decoded once into $MEMAWARE_CACHE)."""
    from ..data.registry import load_dataset
    from ..train.models import build_model

    if not spec.get("network"):
        data = load_dataset(spec["dataset"], **spec["dataset_args"])
        model = build_model(data.n_features, data.n_classes, config, torch.Generator())
        return data, model, torch.as_tensor(data.x[data.mask("train")]), None
    from ..sweep.runner import streamed

    streamed_data, _ = streamed(spec["dataset"], spec["dataset_args"], spec["network"])
    items = None if streamed_data.files is None else np.asarray(streamed_data.files)
    return streamed_data, streamed_data.build_model(config, torch.Generator()), streamed_data.get("train").x, items
