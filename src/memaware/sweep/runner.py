"""Sweep execution: plan run specifications (pure data), hand them to an executor, select, rerun seeds.

Stages, each one `executor.map` over specifications:
1. phase 1 (XRM or cross-fitting) per data set, `phase1.runs` runs; the one `select_xrm_run` picks is
   shared by every run on that data set (training input for MAT and XRM+GroupDRO, inferred validation
   groups for the va_gi_wga criterion of every method);
2. the search: every combination of every method on every data set, with the first seed;
3. per (data set, method, criterion) the best combination (ties: higher validation average accuracy,
   then the lower index), rerun with every seed.
Identical specifications are one run (one directory), whichever stage or criterion asks for them.
A data set with a backbone (a layout folder) trains its network end to end, one run at a time.

Under torchrun (`distributed`, memaware.train.distributed) every process walks the same plan in the same
order: rank 0 reads each run's `done` marker and tells the others whether to train it, trains with them
the network of a run on a backbone (`fit(..., distributed=...)`: batches sharded, rank 0 evaluates), writes
its folder alone, and hands every process the results it reads back. Runs on in-memory features (heads, the
batched engine) are not worth sharding: rank 0 trains them alone while the others wait for their results
(within the process group's timeout, memaware.train.distributed.TIMEOUT). Rank 0 alone writes and prints.
"""
from __future__ import annotations

import functools
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from ..errors import MemawareError
from ..results import SCORE_KEYS, setting
from ..train.distributed import Distributed, first_on_main, is_main, on_main, process_device
from ..train.loop import criterion_value, selection_key
from . import store
from .executors import LocalExecutor, TaskFailed
from .experiment import DatasetEntry, Experiment
from .space import draw

SPEC_VERSION = 1


def plain_spec(spec) -> dict:
    """A specification as plain values; `network` only when set, so that the keys of runs on features stay
    what they were before whole networks."""
    fields = asdict(spec)
    if fields.get("network") is None:
        fields.pop("network", None)
    return fields


@dataclass(frozen=True)
class Phase1Spec:
    """One phase-1 run: held-out logits and inferred groups for a data set (`network`: its backbone, for a
    layout folder)."""

    dataset: str
    dataset_args: dict
    source: str
    folds: int
    train: dict
    version: int = SPEC_VERSION
    network: dict | None = None

    @property
    def key(self) -> str:
        return store.spec_key({"phase1": plain_spec(self)})


@dataclass(frozen=True)
class RunSpec:
    """One training run: data set, method, hyperparameters, training settings (with the seed), phase 1."""

    dataset: str
    dataset_args: dict
    method: str
    hparams: dict
    train: dict
    phase1: str | None
    version: int = SPEC_VERSION
    network: dict | None = None

    @property
    def seed(self) -> int:
        return self.train["seed"]

    @property
    def key(self) -> str:
        return store.spec_key({"run": plain_spec(self)})


class Executor(Protocol):
    """Runs `fn` on every specification; yields the results in the order of `specs`."""

    def map(self, fn: Callable[[Any], Any], specs: list) -> Iterator[Any]: ...


class DataCache:
    """The data sets of one sweep, each loaded once (in each process that runs some of its runs). With a
    `network` (a backbone's settings), the layout folder streamed for it, images decoded once into
    $MEMAWARE_CACHE."""

    def __init__(self):
        self._loaded: dict[tuple[str, str], Any] = {}
        self._on_device: tuple[tuple | None, dict | None] = (None, None)
        self.notes: list[str] = []  # what streaming a folder chose (the size its images train at)

    def __getstate__(self) -> dict:
        """What travels to worker processes: the data sets on features; a folder streamed for a network is
        streamed again there (its images from the decoded cache), since a backbone's recipe holds closures
        that do not pickle, and splits on a device stay in the process that put them there."""
        return {"_loaded": {k: v for k, v in self._loaded.items() if not hasattr(v, "network")},
                "_on_device": (None, None), "notes": []}

    def __call__(self, name: str, args: dict, network: dict | None = None):
        from ..data.registry import load_dataset

        recipe = None if network is None else {k: network.get(k, default) for k, default in NETWORK_RECIPE.items()}
        key = (name, json.dumps([args, recipe], sort_keys=True))
        if key not in self._loaded:
            if recipe is None:
                self._loaded[key] = load_dataset(name, **args)
            else:
                self._loaded[key], note = streamed(name, args, recipe)
                self.notes += [f"{name} {args.get('root', '')}: {recipe['name']} {note}"] if note else []
        return self._loaded[key]

    def splits(self, name: str, args: dict, device) -> dict:
        """The splits of the data set `name` (features) on `device`, kept for the next stack of the same
        data set: one data set's at a time, so that a sweep over several holds one on the device."""
        from ..train.batched import device_splits

        key = (name, json.dumps(args, sort_keys=True), str(device))
        if self._on_device[0] != key:
            self._on_device = (None, None)  # the previous data set's splits freed before the next are sent
            self._on_device = (key, device_splits(self(name, args), device))
        return self._on_device[1]


NETWORK_RECIPE = {"name": None, "weights": None, "image_size": None, "max_length": 128, "pretrained": True}


def streamed(layout: str, args: dict, recipe: dict):
    """The folder of `layout` (args: root=FOLDER and the layout's options) streamed for the backbone
    `recipe` (memaware.data.stream), and for images the line saying the size they train at."""
    from ..data.layouts import read_layout
    from ..data.stream import stream
    from ..featurize import default_cache_dir
    from ..train.backbones import folder_network

    raw = read_layout(layout, **args)
    net, note = folder_network(raw, recipe["name"], recipe["weights"], recipe["image_size"], recipe["max_length"],
                               recipe["pretrained"])
    return stream(raw, net, cache_dir=default_cache_dir()), note


def phase1_dir(root: Path, key: str) -> Path:
    return Path(root) / "phase1" / key


def run_dir(root: Path, key: str) -> Path:
    return Path(root) / "runs" / key


def execute_phase1(spec: Phase1Spec, root: Path, data: DataCache | None = None,
                   reuse_other_versions: bool = False, distributed: Distributed | None = None) -> dict:
    """Run (or read back) one phase-1 run; returns its key, flip rate and degeneracy. A network trains on a
    pretrained backbone's frozen features unless `phase1_finetune`, else end to end. Cross-fitting keeps each
    finished fold (`fold_checkpoints`), so that a killed sweep resumes it fold by fold. Under torchrun: see
    the module's docstring."""
    from ..heldout import train_phase1

    if distributed is not None and spec.network is None:  # in-memory features: rank 0 alone
        return distributed.from_main(lambda: execute_phase1(spec, root, data, reuse_other_versions))
    folder, config = phase1_dir(root, spec.key), run_config(spec, distributed)
    checkpoint = fold_checkpoints(root, spec, config.steps)

    def train():
        net, features = spec.network, (spec.network or {}).get("phase1_features")
        recipe = net if features is None else {**net, "name": features, "weights": None, "pretrained": True}
        loaded = (data or DataCache())(spec.dataset, spec.dataset_args, recipe)
        end_to_end = net is not None and not features and net["phase1_finetune"]
        return train_phase1(loaded, spec.source, config, spec.folds, end_to_end, checkpoint=checkpoint,
                            distributed=distributed)

    def save(held):
        save_phase1(folder, spec, held, config.device)
        if checkpoint is not None:
            shutil.rmtree(checkpoint.path.parent, ignore_errors=True)

    train_unfinished(folder, reuse_other_versions, distributed, train, save)
    return on_main(distributed, lambda: read_phase1(spec, root))


def fold_checkpoints(root: Path, spec: Phase1Spec, steps: int):
    """Cross-fitting's checkpoint in a sweep (None for XRM): each fold's run writes its state after its last
    step to phase1/KEY.folds/phase1-foldK.pt, beside the phase-1 folder that an interrupted run clears; that
    folder goes once phase 1 is saved."""
    from ..train.resume import Checkpointing

    if spec.source != "crossfit":
        return None
    return Checkpointing(phase1_dir(root, f"{spec.key}.folds") / "phase1.pt", every=steps)


def run_config(spec, distributed: Distributed | None):
    """The TrainConfig of a specification, on this process's GPU under torchrun (the key keeps the device)."""
    from ..train import TrainConfig

    config = TrainConfig(**spec.train)
    return config.model_copy(update={"device": process_device(config.device, distributed)})


def train_unfinished(folder: Path, reuse_other_versions: bool, distributed: Distributed | None, train, save) -> None:
    """Unless the run of `folder` is finished: clear the folder, `save(train())`. Under torchrun rank 0 decides
    for every rank, every rank trains (one network) and rank 0 alone writes."""
    if not on_main(distributed, lambda: not store.is_reusable(folder, reuse_other_versions)):
        return
    if is_main(distributed):
        store.fresh(folder)
    outcome = train()
    if is_main(distributed):
        save(outcome)


def save_phase1(folder: Path, spec: Phase1Spec, held, device: str) -> None:
    store.write_spec(folder, {"phase1": plain_spec(spec)}, device)
    held.save(folder / "heldout.npz")
    store.mark_done(folder, {"key": spec.key, "flip_rate": held.flip_rate, "degenerate": held.degenerate})


def read_phase1(spec: Phase1Spec, root: Path) -> dict:
    from ..heldout import HeldOut

    folder = phase1_dir(root, spec.key)
    done = store.read_json(folder / store.DONE)
    return {"key": spec.key, "flip_rate": done["flip_rate"], "degenerate": done["degenerate"],
            "heldout": HeldOut.load(folder / "heldout.npz")}


def execute_stack(specs: list, folder_of, train, save, read, data: DataCache | None,
                  reuse_other_versions: bool, one) -> list[dict]:
    """Specifications that the batched engine trains together, `train(data set, its splits on the device,
    specs, configs)`: all of them when any is unfinished (so that a resumed sweep computes what an
    uninterrupted one does), each unfinished one saved with `save`; `read`'s results in order. Runs that
    cannot stack (see NotStackable) run one by one through `one`."""
    from ..train import TrainConfig
    from ..train.batched import NotStackable

    todo = {s.key for s in specs if not store.is_reusable(folder_of(s.key), reuse_other_versions)}
    if todo:
        for key in todo:
            store.fresh(folder_of(key))
        configs = [TrainConfig(**s.train) for s in specs]
        data, name, args = data or DataCache(), specs[0].dataset, specs[0].dataset_args
        try:
            outcomes = train(data(name, args), data.splits(name, args, configs[0].device), specs, configs)
        except NotStackable as err:
            print(f"batched engine: {specs[0].dataset} trains one run at a time ({err})", file=sys.stderr)
            return [one(spec) for spec in specs]
        for spec, outcome, config in zip(specs, outcomes, configs):
            if spec.key in todo:
                save(folder_of(spec.key), spec, outcome, config.device)
    return [read(spec) for spec in specs]


def execute_phase1_stack(specs: list[Phase1Spec], root: Path, data: DataCache | None = None,
                         reuse_other_versions: bool = False, distributed: Distributed | None = None) -> list[dict]:
    """Phase-1 XRM runs trained together by the batched engine (see execute_stack); on features, so under
    torchrun by rank 0 alone."""
    from ..train.batched import xrm_many

    if distributed is not None:
        return distributed.from_main(lambda: execute_phase1_stack(specs, root, data, reuse_other_versions))
    return execute_stack(specs, functools.partial(phase1_dir, root),
                         lambda d, splits, _, configs: xrm_many(d, configs, splits),
                         save_phase1, functools.partial(read_phase1, root=root), data, reuse_other_versions,
                         functools.partial(execute_phase1, root=root, data=data,
                                           reuse_other_versions=reuse_other_versions))


def execute_run(spec: RunSpec, root: Path, data: DataCache | None = None, reuse_other_versions: bool = False,
                distributed: Distributed | None = None) -> dict:
    """Run (or read back) one training run; returns its key and best records per criterion. Under torchrun:
    see the module's docstring."""
    from ..train import fit

    if distributed is not None and spec.network is None:  # in-memory features: rank 0 alone
        return distributed.from_main(lambda: execute_run(spec, root, data, reuse_other_versions))
    folder, config = run_dir(root, spec.key), run_config(spec, distributed)

    def train():
        loaded = (data or DataCache())(spec.dataset, spec.dataset_args, spec.network)
        try:
            return fit(loaded, spec.method, config, heldout=load_heldout(root, spec.phase1), distributed=distributed,
                       **spec.hparams)
        except MemawareError as err:  # e.g. a drawn learning rate that diverges: the run counts as failed
            return err

    train_unfinished(folder, reuse_other_versions, distributed, train,
                     lambda outcome: save_run(folder, spec, outcome, config.device))
    return on_main(distributed, lambda: read_run(spec, root))


def read_run(spec: RunSpec, root: Path) -> dict:
    folder = run_dir(root, spec.key)
    return {"key": spec.key, "best": store.read_best(folder),
            "error": store.read_json(folder / store.DONE).get("error")}


def load_heldout(root: Path, phase1: str | None):
    from ..heldout import HeldOut

    return None if phase1 is None else HeldOut.load(phase1_dir(root, phase1) / "heldout.npz")


def save_run(folder: Path, spec: RunSpec, outcome, device: str) -> None:
    """Store a run's RunResult, or the MemawareError that stopped it (the run counts as failed)."""
    if isinstance(outcome, MemawareError):
        store.write_failed(folder, {"run": plain_spec(spec)}, device, str(outcome))
    else:
        store.write_run(folder, {"run": plain_spec(spec)}, outcome)


def execute_run_stack(specs: list[RunSpec], root: Path, data: DataCache | None = None,
                      reuse_other_versions: bool = False, distributed: Distributed | None = None) -> list[dict]:
    """Training runs trained together by the batched engine (see execute_stack); on features, so under
    torchrun by rank 0 alone."""
    from ..methods import create
    from ..train.batched import fit_many

    if distributed is not None:
        return distributed.from_main(lambda: execute_run_stack(specs, root, data, reuse_other_versions))
    def train(data, splits, specs, configs):
        methods = [create(s.method, **s.hparams) for s in specs]
        return fit_many(data, methods, configs, load_heldout(root, specs[0].phase1), splits)

    return execute_stack(specs, functools.partial(run_dir, root), train, save_run,
                         functools.partial(read_run, root=root), data, reuse_other_versions,
                         functools.partial(execute_run, root=root, data=data, reuse_other_versions=reuse_other_versions))


def needs_phase1(exp: Experiment) -> bool:
    """Phase 1 runs when a method trains with held-out logits or inferred groups, or va_gi_wga selects."""
    from ..methods import create

    methods = [create(m, **exp.hparams.get(m, {})) for m in exp.methods]
    return "va_gi_wga" in exp.search.criteria or any(
        m.needs_heldout or m.group_source == "inferred" for m in methods)


def phase1_specs(exp: Experiment, entry: DatasetEntry) -> list[Phase1Spec]:
    base = exp.phase1_train(entry)
    return [Phase1Spec(entry.name, entry.args, exp.phase1.source, exp.phase1.folds, {**base, "seed": seed},
                       network=entry.network) for seed in range(exp.phase1.runs)]


def run_spec(exp: Experiment, entry: DatasetEntry, method: str, combination: int, seed: int,
             phase1: str | None) -> RunSpec:
    drawn = draw(entry.family, method, combination, exp.search.seed, exp.hparams.get(method))
    train = {**drawn["train"], **exp.train_settings(entry), "seed": seed}
    return RunSpec(entry.name, entry.args, method, drawn["hparams"], train, phase1, network=entry.network)


def map_unique(executor: Executor, fn, specs: list, stage: str, on_progress, many=None,
               batched: Callable[[Any], bool] = lambda spec: False) -> dict[str, Any]:
    """Run each distinct specification once; results by key. The specifications that `batched` accepts
    run in stacks (`plan_stacks`), `many(stack)` returning their results in order; the others through `fn`."""
    unique = list({spec.key: spec for spec in specs}.values())
    stacks, alone = plan_stacks(unique, batched)
    results = {}
    on_progress(stage, 0, len(unique))
    for stack, outcome in zip(stacks, executor.map(many, stacks)):
        outcome = [failed_task(spec, outcome) for spec in stack] if isinstance(outcome, TaskFailed) else outcome
        results.update(zip([spec.key for spec in stack], outcome))
        on_progress(stage, len(results), len(unique))
    for spec, result in zip(alone, executor.map(fn, alone)):
        results[spec.key] = failed_task(spec, result) if isinstance(result, TaskFailed) else result
        on_progress(stage, len(results), len(unique))
    return results


def failed_task(spec, failure: TaskFailed) -> dict:
    """The result of a run whose worker died more often than its executor retries: no best records, and
    the error for the table. The folder gets no `done` marker, so resuming the sweep tries it again. A
    phase-1 run that failed stops the sweep, since every run on its data set needs it."""
    if isinstance(spec, Phase1Spec):
        raise MemawareError(f"phase-1 run {spec.key} on {spec.dataset} failed: {failure.error}")
    return {"key": spec.key, "best": {}, "error": f"task failed after {failure.attempts} attempts: {failure.error}"}


def plan_stacks(specs: list, batched: Callable[[Any], bool]) -> tuple[list[list], list]:
    """The specifications `batched` accepts, in stacks of at most MAX_STACK that share everything but each
    run's own settings (lr, weight decay, momentum, batch size, seed, method hyperparameters), in order;
    and the others."""
    from ..train import TrainConfig
    from ..train.batched import MAX_STACK, SHARED_SETTINGS

    groups: dict[str, list] = {}
    alone = []
    for spec in specs:
        if not batched(spec):
            alone.append(spec)
            continue
        config = TrainConfig(**spec.train)
        shared = {**{k: v for k, v in asdict(spec).items() if k not in ("train", "hparams")},
                  "train": {k: getattr(config, k) for k in SHARED_SETTINGS}}
        groups.setdefault(json.dumps(shared, sort_keys=True), []).append(spec)
    return [g[i:i + MAX_STACK] for g in groups.values() for i in range(0, len(g), MAX_STACK)], alone


def engine_of(exp: Experiment, engine: str | None = None) -> Callable[[Any], str]:
    """The engine ('batched' or 'single') of a specification's data set; `engine` overrides the experiment."""
    engines = {(d.name, json.dumps(d.args, sort_keys=True)): exp.engine(d, engine) for d in exp.datasets}
    return lambda spec: engines[(spec.dataset, json.dumps(spec.dataset_args, sort_keys=True))]


def stackable(spec) -> bool:
    """Whether the batched engine can train a specification: XRM for phase 1, a method that batches."""
    from ..methods import create
    from ..train import TrainConfig

    if isinstance(spec, Phase1Spec):
        return spec.source == "xrm"
    return create(spec.method, **spec.hparams).batchable(TrainConfig(**spec.train))


def say_fallbacks(specs: list[RunSpec], engine: Callable[[Any], str]) -> None:
    """Print which methods the batched engine leaves to the one-model path, per data set."""
    for dataset, method in sorted({(s.dataset, s.method) for s in specs
                                   if engine(s) == "batched" and not stackable(s)}):
        print(f"batched engine: {method} on {dataset} trains one run at a time (the method does not batch)",
              file=sys.stderr)


def say_network_engine(exp: Experiment, engine: str | None) -> None:
    """Print which data sets with a backbone train one run at a time although the batched engine was asked."""
    for entry in exp.datasets:
        asked = engine or entry.train.get("engine") or exp.train.get("engine")
        if entry.backbone is not None and asked == "batched":
            print(f"batched engine: {entry.key} trains one run at a time (a whole network, backbone "
                  f"{entry.backbone.name}: the batched engine stacks models on features)", file=sys.stderr)


def select_combination(search: list[tuple[int, dict]], criterion: str) -> int | None:
    """The combination whose best record under `criterion` has the highest value (ties: val average)."""
    scored = [(*selection_key(best[criterion], criterion), -i) for i, best in search if criterion in best]
    scored = [s for s in scored if s[0] is not None]
    return -max(scored)[2] if scored else None


def run_sweep(exp: Experiment, root, executor: Executor | None = None,
              on_progress: Callable[[str, int, int], None] | None = None, reuse_other_versions: bool = False,
              engine: str | None = None, distributed: Distributed | None = None) -> dict:
    """Run (or resume) the sweep of `exp` under `root`; writes and returns root/summary.json's content.

    Finished runs are read back, not redone, when this memaware code wrote them (or always, with
    `reuse_other_versions`); runs written by other code are run again. `engine` ('batched' or 'single')
    overrides the experiment's choice of training engine. `distributed`: this process's place under torchrun
    (with the local executor; see the module's docstring); every process returns the summary.
    """
    root = Path(root)
    executor = executor or LocalExecutor()
    on_progress = on_progress or (lambda stage, done, total: None)
    data = DataCache()
    if getattr(executor, "preload_data", False):  # shipped once per stage with the task function
        for entry in exp.datasets:
            data(entry.name, entry.args, entry.network)
    options = {"root": root, "data": data, "reuse_other_versions": reuse_other_versions, "distributed": distributed}
    train, train_stack = functools.partial(execute_run, **options), functools.partial(execute_run_stack, **options)
    engine_name, engine = engine, engine_of(exp, engine)
    batched = lambda spec: engine(spec) == "batched" and stackable(spec)  # noqa: E731
    main = is_main(distributed)
    if main:
        say_network_engine(exp, engine_name)
    first_on_main(distributed, lambda: check_available(exp, data))  # rank 0 fills the image cache
    if main:
        for note in data.notes:
            print(note, file=sys.stderr)
        store.remove_stale_temporaries(root)
        store.write_json(root / "experiment.json", exp.model_dump())
    phase1 = run_phase1(exp, root, executor, on_progress, data, reuse_other_versions, batched, distributed)
    phase1_key = {d.key: phase1.get(d.key, {}).get("key") for d in exp.datasets}
    combos = {(d.key, m, i): run_spec(exp, d, m, i, exp.search.seeds[0], phase1_key[d.key])
              for d in exp.datasets for m in exp.methods for i in range(exp.search.combinations)}
    if main:
        say_fallbacks(list(combos.values()), engine)
    results = map_unique(executor, train, list(combos.values()), "search", on_progress, train_stack, batched)
    chosen = choose_combinations(exp, combos, results)
    reruns = {(d, m, c, s): run_spec(exp, entry_of(exp, d), m, i, s, phase1_key[d])
              for (d, m, c), i in chosen.items() for s in exp.search.seeds}
    results.update(map_unique(executor, train, list(reruns.values()), "seeds", on_progress, train_stack, batched))
    summary = {"experiment": exp.name, "criteria": exp.search.criteria, "seeds": exp.search.seeds,
               "label_free": exp.report.label_free, "datasets": [d.key for d in exp.datasets],
               "methods": exp.methods, "phase1": phase1,
               "results": [result_row(exp, key, i, combos, reruns, results) for key, i in chosen.items()]}
    if main:
        store.write_json(root / "summary.json", summary)
    return summary


def choose_combinations(exp: Experiment, combos: dict, results: dict) -> dict[tuple, int]:
    """(data set, method, criterion) -> the index of the combination that criterion selects."""
    chosen = {}
    for d in exp.datasets:
        for m in exp.methods:
            search = [(i, results[combos[(d.key, m, i)].key]["best"]) for i in range(exp.search.combinations)]
            for criterion in exp.search.criteria:
                best = select_combination(search, criterion)
                if best is not None:
                    chosen[(d.key, m, criterion)] = best
    return chosen


def check_available(exp: Experiment, data: DataCache) -> None:
    """Fail before any run when a data set cannot load here, with the registry's reason. A layout folder
    with a backbone is read and streamed for its network here (in this process, once; its images decoded
    into $MEMAWARE_CACHE, which later processes map): a wrong folder, a missing package or weights file stops
    the sweep before any run."""
    from ..data.registry import get_dataset, is_data_file

    for entry in exp.datasets:
        if entry.backbone is not None:
            data(entry.name, entry.args, entry.network)
            continue
        if is_data_file(entry.name):  # its file was found when the experiment was read
            continue
        reason = get_dataset(entry.name).available()
        if reason:
            raise MemawareError(f"data set '{entry.name}' is not available here: {reason}")


def entry_of(exp: Experiment, key: str) -> DatasetEntry:
    return next(d for d in exp.datasets if d.key == key)


def run_phase1(exp: Experiment, root: Path, executor: Executor, on_progress, data: DataCache,
               reuse_other_versions: bool = False, batched: Callable[[Any], bool] = lambda spec: False,
               distributed: Distributed | None = None) -> dict[str, dict]:
    """Phase 1 on every data set; per data set the selected run's key, flip rate and the candidates'."""
    from ..heldout import select_xrm_run

    if not needs_phase1(exp):
        return {}
    specs = {d.key: phase1_specs(exp, d) for d in exp.datasets}
    options = {"root": root, "data": data, "reuse_other_versions": reuse_other_versions, "distributed": distributed}
    done = map_unique(executor, functools.partial(execute_phase1, **options),
                      [s for group in specs.values() for s in group], "phase 1", on_progress,
                      functools.partial(execute_phase1_stack, **options), batched)
    out = {}
    for name, group in specs.items():
        runs = [done[s.key] for s in group]
        chosen = select_xrm_run([r["heldout"] for r in runs])
        pick = next(r for r in runs if r["heldout"] is chosen)
        out[name] = {"key": pick["key"], "flip_rate": pick["flip_rate"], "degenerate": pick["degenerate"],
                     "candidates": [{"key": r["key"], "flip_rate": r["flip_rate"], "degenerate": r["degenerate"]}
                                    for r in runs]}
    return out


def result_row(exp: Experiment, key: tuple, combination: int, combos: dict, reruns: dict, results: dict) -> dict:
    """One (data set, method, criterion) row: the chosen combination and its selected record per seed."""
    from ..methods import create

    dataset, method, criterion = key
    spec = combos[(dataset, method, combination)]
    train_groups = create(method, **spec.hparams).group_source or "none"
    runs, failed = [], []
    for seed in exp.search.seeds:
        run = reruns[(dataset, method, criterion, seed)]
        record = results[run.key]["best"].get(criterion)
        if record is None:  # a failed run, or the criterion had no value in it
            error = results[run.key].get("error") or f"no value of {criterion} in this run"
            failed.append({"seed": seed, "key": run.key, "error": error})
            continue
        runs.append({"seed": seed, "key": run.key, "step": record["step"],
                     "test_wga": record["test"].get("wga"), "test_avg_acc": record["test"]["avg_acc"],
                     "test_wca": record["test"]["wca"], "val_value": criterion_value(record, criterion),
                     **{f"test_{k}": record["test"].get(k) for k in SCORE_KEYS},
                     "val_avg_acc": record["val"]["avg_acc"]})
    return {"dataset": dataset, "method": method, "criterion": criterion, "combination": combination,
            "hparams": spec.hparams, "train": {k: v for k, v in spec.train.items() if k != "seed"},
            "setting": setting(train_groups, criterion),
            "runs": runs, "failed": failed}

