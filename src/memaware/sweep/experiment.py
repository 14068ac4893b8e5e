"""Typed experiment files (YAML or TOML) that a sweep is launched from, with dotted-key overrides.

A file names the data sets (with the model family of each), the methods, the search (number of
combinations, seeds, criteria) and phase 1. Problems are reported in one line naming the file and field.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from ..errors import MemawareError
from ..train.config import TrainConfig
from .space import FAMILIES, NETWORK_FAMILIES

Criterion = Literal["va_wga", "va_gi_wga", "va_wca", "va_avg"]


ENGINES = ("batched", "single")
BATCHED_FAMILIES = ("linear", "mlp", "synthetic")  # the families that train with the batched engine by default
FILE_OPTIONS = ("features", "ignore", "standardize")  # the args of a data set given as a data file


def _check_train_fields(fields: dict) -> dict:
    """Known TrainConfig fields, and `engine` (how a sweep trains: 'batched' or 'single')."""
    unknown = sorted(set(fields) - set(TrainConfig.model_fields) - {"engine"})
    if unknown:
        raise ValueError(f"unknown training setting '{unknown[0]}' (known: {', '.join(TrainConfig.model_fields)}, "
                         "engine)")
    if fields.get("engine", ENGINES[0]) not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {fields['engine']!r}")
    return fields


def without_engine(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k != "engine"}


def _check_train_values(where: str, fields: dict) -> None:
    try:
        TrainConfig(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"{where}.{first['loc'][0]}: {first['msg']} (got {first.get('input')!r})") from None


def _known(name: str, table: dict, what: str) -> str:
    if name not in table:
        raise ValueError(f"unknown {what} '{name}' (known: {', '.join(sorted(table))})")
    return name


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Backbone(Strict):
    """A whole network trained end to end on a layout folder (docs/finetune.md): what `memaware run
    --backbone NAME --weights FILE --image-size N --max-length L --phase1-finetune` takes."""

    name: str = Field(description="cnn, efficientnet_lite0, minilm, torchvision:ARCH, timm:NAME, hf:FOLDER")
    weights: str | None = Field(None, description="weights file of torchvision: and timm: backbones")
    image_size: int | None = Field(None, ge=8, description="training resolution of images (default: the "
                                   "folder's native size, at most 224)")
    max_length: int = Field(128, ge=2, description="tokens kept of each text")
    phase1_finetune: bool = Field(False, description="phase 1 (XRM's twins, cross-fitting's folds) trains networks "
                                  "end to end even for a pretrained backbone")
    phase1_features: str | None = Field(None, description="XRM on the frozen features of this pretrained backbone "
                                        "(same image size) instead of the default (the backbone's own features if "
                                        "pretrained, else twin networks)")
    pretrained: bool = Field(True, description="false: a pretrained backbone's architecture with weights drawn "
                             "afresh from the run's seed")

    @field_validator("name")
    @classmethod
    def _known_backbone(cls, name):
        from ..train.backbones import backbone_modality

        try:
            backbone_modality(name)
        except MemawareError as err:
            raise ValueError(str(err)) from None
        return name

    @model_validator(mode="after")
    def _weights_given(self):
        from ..train.backbones import backbone_modality

        if self.name.partition(":")[0] in ("torchvision", "timm") and self.weights is None:
            raise ValueError(f"backbone '{self.name}' needs weights: FILE (weights are never downloaded)")
        if self.phase1_features is not None:
            try:
                modality = backbone_modality(self.phase1_features)
            except MemawareError as err:
                raise ValueError(f"phase1_features: {err}") from None
            if modality != "image" or backbone_modality(self.name) != "image" or self.phase1_features == "cnn":
                raise ValueError(f"phase1_features '{self.phase1_features}': a pretrained image backbone without a "
                                 "weights file (efficientnet_lite0), for an image backbone")
            if self.phase1_finetune:
                raise ValueError("phase1_features and phase1_finetune exclude each other")
        return self


class DatasetEntry(Strict):
    """One data set of the sweep: a registered name or a data file's path (.npz, .csv, .parquet, .pt; args:
    features, ignore, standardize), its loader arguments and its model family; or a layout folder (name: the
    layout, args: {root: FOLDER}) with the backbone trained end to end on it."""

    name: str = Field(description="a registered data set, a data file (.npz, .csv, .parquet, .pt) or a layout")
    label: str | None = Field(None, description="name in tables (default: name); needed to list a data set twice")
    args: dict[str, Any] = {}
    family: str | None = Field(None, description="linear, text, mlp, synthetic; resnet, cnn or bert with a "
                               "backbone (default: linear, or the backbone's: cnn for the cnn backbone, resnet for "
                               "other image backbones, bert for texts)")
    backbone: Backbone | None = Field(None, description="train this network end to end on the layout folder")
    train: dict[str, Any] = Field({}, description="training settings for this data set (over the family's)")
    phase1: dict[str, Any] = Field({}, description="training settings of phase 1 for this data set")

    _train_fields = field_validator("train", "phase1")(_check_train_fields)

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name):
        from ..data.registry import DATASETS, is_data_file

        if is_data_file(name):
            if not Path(name).is_file():
                raise ValueError(f"no such data file '{name}'")
            return name
        return _known(name, DATASETS, "data set")

    @field_validator("family")
    @classmethod
    def _known_family(cls, family):
        return family if family is None else _known(family, FAMILIES, "model family")

    @model_validator(mode="after")
    def _file_options(self):
        """A data file takes FILE_OPTIONS only."""
        from ..data.registry import is_data_file

        unknown = sorted(set(self.args) - set(FILE_OPTIONS)) if is_data_file(self.name) else []
        if unknown:
            raise ValueError(f"a data file takes the options {', '.join(FILE_OPTIONS)}, not '{unknown[0]}'")
        return self

    @model_validator(mode="after")
    def _network_or_features(self):
        """A layout folder needs a backbone and a network family; a feature data set neither."""
        from ..data.layouts import LAYOUTS

        if self.backbone is None:
            if self.name in LAYOUTS:
                raise ValueError(f"'{self.name}' is a layout folder: give it a backbone (e.g. backbone: {{name: cnn}})"
                                 " to train a network on it, or featurize it first (memaware featurize)")
            if self.family in NETWORK_FAMILIES:
                raise ValueError(f"family '{self.family}' fine-tunes a whole network: give the data set a backbone")
            self.family = self.family or "linear"
            return self
        if self.name not in LAYOUTS:
            raise ValueError(f"a backbone trains on a layout folder, and '{self.name}' is not a layout "
                             f"(layouts: {', '.join(LAYOUTS)}; e.g. name: images, args: {{root: FOLDER}})")
        from ..train.backbones import backbone_modality

        modality = backbone_modality(self.backbone.name)
        if modality != LAYOUTS[self.name].modality:
            raise ValueError(f"backbone '{self.backbone.name}' takes {modality}s, but layout '{self.name}' holds "
                             f"{LAYOUTS[self.name].modality}s")
        if self.family is not None and self.family not in NETWORK_FAMILIES:
            raise ValueError(f"family '{self.family}' trains a head on features; a backbone trains with "
                             f"{', '.join(NETWORK_FAMILIES)}")
        self.family = self.family or ("bert" if modality == "text" else "cnn" if self.backbone.name == "cnn"
                                      else "resnet")
        return self

    @property
    def key(self) -> str:
        return self.label or self.name

    @property
    def network(self) -> dict | None:
        """The backbone as plain values (part of a run's specification), or None for features."""
        return None if self.backbone is None else self.backbone.model_dump()


class Phase1(Strict):
    """How held-out logits and inferred groups are made: XRM (best of `runs` by flip rate) or cross-fitting."""

    source: Literal["xrm", "crossfit"] = "xrm"
    runs: PositiveInt = 1
    folds: int = Field(5, ge=2)
    train: dict[str, Any] = Field({}, description="training settings of phase 1 (over the data set's)")

    _train_fields = field_validator("train")(_check_train_fields)


class Search(Strict):
    """Random search: `combinations` drawn with the first seed, the best per criterion rerun over `seeds`."""

    combinations: PositiveInt = 10
    seed: int = Field(0, description="sweep seed: combination i draws from default_rng(i) when 0")
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    criteria: list[Criterion] = Field(["va_wga", "va_gi_wga", "va_wca"], min_length=1)


class Report(Strict):
    """What `memaware report` shows by default."""

    label_free: Literal["va_gi_wga", "va_wca", "va_avg"] = "va_gi_wga"
    formats: list[Literal["md", "csv", "tex", "html"]] = ["md", "csv", "tex"]  # html: one page with the figures


class Execution(Strict):
    """Where the runs train: this process, worker processes, a Ray cluster or Slurm (sweep/executors.py)."""

    executor: Literal["local", "processes", "ray", "slurm"] = "local"
    workers: PositiveInt | None = Field(None, description="processes: how many (default: one per GPU, else "
                                        "one per CPU core)")
    retries: int = Field(2, ge=0, description="a task whose worker died is retried this many times, then failed")
    ray_address: str | None = Field(None, description="a running Ray cluster (default: start a local one)")
    cpus_per_task: float = Field(1, gt=0, description="ray: CPUs each task asks for")
    gpus_per_task: float = Field(0, ge=0, description="ray: the share of a GPU each task asks for (e.g. 0.25)")
    slurm: dict[str, Any] = Field({}, description="submitit options: timeout_min, gpus_per_node, cpus_per_task, "
                                  "mem_gb, slurm_partition, ...; jobs (tasks per stage); cluster ('local' to test)")


class Experiment(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    datasets: list[DatasetEntry] = Field(min_length=1)
    methods: list[str] = Field(min_length=1)
    hparams: dict[str, dict[str, Any]] = Field({}, description="fixed hyperparameters per method")
    train: dict[str, Any] = Field({}, description="training settings for every data set")
    phase1: Phase1 = Phase1()
    search: Search = Search()
    report: Report = Report()
    execution: Execution = Execution()

    _train_fields = field_validator("train")(_check_train_fields)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods):
        from ..methods import REGISTRY

        for m in methods:
            _known(m, REGISTRY, "method")
        if len(set(methods)) != len(methods):
            raise ValueError("a method is listed twice")
        return methods

    def train_settings(self, entry: DatasetEntry) -> dict:
        """The file's training settings, then the data set's (over any drawn value)."""
        return without_engine({**self.train, **entry.train})

    def base_train(self, entry: DatasetEntry) -> dict:
        """Training settings of `entry` before any draw: its family's, then the file's, then the data set's."""
        family = FAMILIES[entry.family]
        return {**family.fixed, **family.defaults, **self.train_settings(entry)}

    def phase1_train(self, entry: DatasetEntry) -> dict:
        """Training settings of phase 1 on `entry`."""
        return {**self.base_train(entry), **without_engine({**self.phase1.train, **entry.phase1})}

    def engine(self, entry: DatasetEntry, override: str | None = None) -> str:
        """How a sweep trains the runs on `entry`: 'single' for a whole network (a backbone); else `override`,
        the data set's or the file's `train.engine`, else 'batched' for the families in BATCHED_FAMILIES and
        'single' for the others."""
        if entry.backbone is not None:
            return "single"
        chosen = override or entry.train.get("engine") or self.train.get("engine")
        return chosen or ("batched" if entry.family in BATCHED_FAMILIES else "single")

    @model_validator(mode="after")
    def _consistent(self):
        keys = [d.key for d in self.datasets]
        if len(set(keys)) != len(keys):
            raise ValueError("two data sets share a name: give them distinct 'label's")
        for i, entry in enumerate(self.datasets):
            _check_train_values(f"datasets.{i}.train", self.base_train(entry))
            _check_train_values(f"datasets.{i}.phase1", self.phase1_train(entry))
        for method, fixed in self.hparams.items():
            if method not in self.methods:
                raise ValueError(f"hparams: method '{method}' is not among methods")
            from ..methods import create

            try:
                create(method, **fixed)
            except MemawareError as err:
                raise ValueError(f"hparams: {err}") from None
        return self


def read_mapping(path: Path) -> dict:
    """The raw contents of a .yaml/.yml/.toml experiment file as a dict."""
    if path.suffix not in (".yaml", ".yml", ".toml"):
        raise MemawareError(f"{path}: unknown extension '{path.suffix}', expected .yaml, .yml or .toml")
    try:
        text = path.read_text()
    except OSError as err:
        raise MemawareError(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MemawareError(f"{path}: not valid {path.suffix[1:].upper()} ({first})") from None
    if not isinstance(raw, dict):
        raise MemawareError(f"{path}: expected a mapping of settings at the top level")
    return raw


def apply_override(raw: dict, assignment: str) -> None:
    """Apply 'a.b.c=value' to the nested dict `raw` (value parsed as YAML; list items by index)."""
    key, sep, value = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise MemawareError(f"--set {assignment!r}: expected KEY=VALUE with a dotted KEY, e.g. search.combinations=3")
    node = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise MemawareError(f"--set {assignment!r}: '{'.'.join(parts[:i])}' has no item {part}")
            part = int(part)
        elif not isinstance(node, dict):
            raise MemawareError(f"--set {assignment!r}: '{'.'.join(parts[:i])}' is not a mapping")
        if last:
            node[part] = yaml.safe_load(value)
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]


def validate(raw: dict, source: str) -> Experiment:
    """An Experiment from a raw mapping; a ValidationError becomes one line naming `source` and the field."""
    try:
        return Experiment.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = "".join(f"{p}: " for p in [".".join(str(p) for p in first["loc"])] if p)
        message = first["msg"].removeprefix("Value error, ")
        got = "" if first["type"] in ("missing", "value_error") else f" (got {first.get('input')!r})"
        raise MemawareError(f"{source}: {where}{message}{got}") from None


def load_experiment(path, overrides: list[str] = ()) -> Experiment:
    """Read, override and validate an experiment file."""
    path = Path(path)
    if not path.is_file():
        raise MemawareError(f"{path}: no such experiment file")
    raw = read_mapping(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate(raw, str(path))
