"""Named data sets: what each is, what it needs, whether it is available here, and how to load it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import MemawareError
from .dataset import Dataset
from .io import SUFFIXES, load


@dataclass
class DatasetSpec:
    """A named data set.

    kind: "synthetic", "real" or "semi-synthetic" (a spurious feature planted into real inputs), or
    "layout" (a standard benchmark read from a folder the user points to).
    load(**kwargs) -> Dataset (for a "layout", load(root=FOLDER) -> RawData, to featurize first);
    available() -> None when it can load here, else a one-line reason.
    build(folder, **options), where given, writes the data set's inputs as a folder in the layout `layout`
    (memaware.data.build), for whole networks.
    """

    name: str
    kind: str
    description: str
    load: Callable[..., Dataset]
    needs: str = ""
    provenance: str = ""
    licence: str = ""
    available: Callable[[], str | None] = field(default=lambda: None)
    build: Callable[..., None] | None = None
    layout: str = ""


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in DATASETS:
        raise RuntimeError(f"data set {spec.name!r} registered twice")
    DATASETS[spec.name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise MemawareError(f"unknown data set '{name}' (known: {', '.join(sorted(DATASETS))})")
    return DATASETS[name]


def is_data_file(name: str) -> bool:
    """Whether `name` is the path of a data file (.npz, .csv, .parquet, .pt) rather than a data set's name."""
    return Path(name).suffix in SUFFIXES


def load_dataset(name: str, options: dict | None = None, *, standardize: bool = False, **required) -> Dataset:
    """Load the registered data set `name`, or the data file at the path `name` (options: features, ignore).

    `options` go to its loader where the loader takes them (e.g. cache_dir, device); `required` options
    must be taken (a MemawareError otherwise). An unavailable data set raises a MemawareError with the reason.
    `standardize` scales every feature by its train-split mean and deviation (Dataset.standardized).
    """
    import inspect

    if is_data_file(name):
        def loader(features: list[str] | None = None, ignore: list[str] | None = None) -> Dataset:
            return load(name, features, ignore=ignore)
    else:
        spec = get_dataset(name)
        if spec.kind == "layout":
            raise MemawareError(f"'{name}' is a layout: featurize its folder first (memaware featurize), "
                                "then `memaware run` the features file")
        reason = spec.available()
        if reason:
            raise MemawareError(f"'{name}' is not available here: {reason}")
        loader = spec.load
    accepted = inspect.signature(loader).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key in required:
        if key not in accepted and not takes_any:
            raise MemawareError(f"data set '{name}' does not take the option '{key}'")
    chosen = {k: v for k, v in (options or {}).items() if k in accepted}
    data = loader(**chosen, **required)
    return data.standardized() if standardize else data


def _register_builtin() -> None:
    from .synthetic import make_figure1, make_multiclass

    register_dataset(DatasetSpec("figure1", "synthetic", "the MAT paper's Figure-1 problem (binary, 1800 dims)",
                                 make_figure1, provenance="generated"))
    register_dataset(DatasetSpec("multiclass", "synthetic", "a K-class variant of the Figure-1 problem",
                                 make_multiclass, provenance="generated"))
    from . import cmnist, layouts

    cmnist.register()
    layouts.register()
    from . import backgrounds, tabular, text

    tabular.register()
    text.register()
    backgrounds.register()


_register_builtin()
