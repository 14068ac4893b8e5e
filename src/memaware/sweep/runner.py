"""Sweep execution: plan run specifications (pure data), hand them to an executor, select, rerun seeds.

Stages, each one `executor.map` over specifications:
1. phase 1 (XRM or cross-fitting) per data set, `phase1.runs` runs; the one `select_xrm_run` picks is
   shared by every run on that data set (training input for MAT and XRM+GroupDRO, inferred validation
   groups for the va_gi_wga criterion of every method);
2. the search: every combination of every method on every data set, with the first seed;
3. per (data set, method, criterion) the best combination (ties: higher validation average accuracy,
   then the lower index), rerun with every seed.
Identical specifications are one run (one directory), whichever stage or criterion asks for them.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from ..errors import MemawareError
from ..results import setting
from ..train.loop import criterion_value, selection_key
from . import store
from .experiment import DatasetEntry, Experiment
from .space import draw

SPEC_VERSION = 1


@dataclass(frozen=True)
class Phase1Spec:
    """One phase-1 run: held-out logits and inferred groups for a data set."""

    dataset: str
    dataset_args: dict
    source: str
    folds: int
    train: dict
    version: int = SPEC_VERSION

    @property
    def key(self) -> str:
        return store.spec_key({"phase1": asdict(self)})


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

    @property
    def seed(self) -> int:
        return self.train["seed"]

    @property
    def key(self) -> str:
        return store.spec_key({"run": asdict(self)})


class Executor(Protocol):
    """Runs `fn` on every specification; yields the results in the order of `specs`."""

    def map(self, fn: Callable[[Any], Any], specs: list) -> Iterator[Any]: ...


class LocalExecutor:
    """One run after another in this process."""

    def map(self, fn, specs):
        return (fn(spec) for spec in specs)


class DataCache:
    """The data sets of one sweep, each loaded once (in each process that runs some of its runs)."""

    def __init__(self):
        self._loaded: dict[tuple[str, str], Any] = {}

    def __call__(self, name: str, args: dict):
        from ..data.registry import load_dataset

        key = (name, json.dumps(args, sort_keys=True))
        if key not in self._loaded:
            self._loaded[key] = load_dataset(name, **args)
        return self._loaded[key]


def phase1_dir(root: Path, key: str) -> Path:
    return Path(root) / "phase1" / key


def run_dir(root: Path, key: str) -> Path:
    return Path(root) / "runs" / key


def execute_phase1(spec: Phase1Spec, root: Path, data: DataCache | None = None,
                   reuse_other_versions: bool = False) -> dict:
    """Run (or read back) one phase-1 run; returns its key, flip rate and degeneracy."""
    from ..heldout import HeldOut, crossfit, xrm
    from ..train import TrainConfig

    folder = phase1_dir(root, spec.key)
    if not store.is_reusable(folder, reuse_other_versions):
        store.fresh(folder)
        data = (data or DataCache())(spec.dataset, spec.dataset_args)
        config = TrainConfig(**spec.train)
        held = xrm(data, config) if spec.source == "xrm" else crossfit(data, spec.folds, config)
        store.write_spec(folder, {"phase1": asdict(spec)}, config.device)
        held.save(folder / "heldout.npz")
        store.mark_done(folder, {"key": spec.key, "flip_rate": held.flip_rate, "degenerate": held.degenerate})
    done = store.read_json(folder / store.DONE)
    return {"key": spec.key, "flip_rate": done["flip_rate"], "degenerate": done["degenerate"],
            "heldout": HeldOut.load(folder / "heldout.npz")}


def execute_run(spec: RunSpec, root: Path, data: DataCache | None = None, reuse_other_versions: bool = False) -> dict:
    """Run (or read back) one training run; returns its key and best records per criterion."""
    from ..heldout import HeldOut
    from ..train import TrainConfig, fit

    folder = run_dir(root, spec.key)
    if not store.is_reusable(folder, reuse_other_versions):
        store.fresh(folder)
        data = (data or DataCache())(spec.dataset, spec.dataset_args)
        heldout = None if spec.phase1 is None else HeldOut.load(phase1_dir(root, spec.phase1) / "heldout.npz")
        config = TrainConfig(**spec.train)
        try:
            result = fit(data, spec.method, config, heldout=heldout, **spec.hparams)
        except MemawareError as err:  # e.g. a drawn learning rate that diverges: the run counts as failed
            store.write_failed(folder, {"run": asdict(spec)}, config.device, str(err))
        else:
            store.write_run(folder, {"run": asdict(spec)}, result)
    return {"key": spec.key, "best": store.read_best(folder)}


def needs_phase1(exp: Experiment) -> bool:
    """Phase 1 runs when a method trains with held-out logits or inferred groups, or va_gi_wga selects."""
    from ..methods import create

    methods = [create(m, **exp.hparams.get(m, {})) for m in exp.methods]
    return "va_gi_wga" in exp.search.criteria or any(
        m.needs_heldout or m.group_source == "inferred" for m in methods)


def phase1_specs(exp: Experiment, entry: DatasetEntry) -> list[Phase1Spec]:
    base = exp.phase1_train(entry)
    return [Phase1Spec(entry.name, entry.args, exp.phase1.source, exp.phase1.folds, {**base, "seed": seed})
            for seed in range(exp.phase1.runs)]


def run_spec(exp: Experiment, entry: DatasetEntry, method: str, combination: int, seed: int,
             phase1: str | None) -> RunSpec:
    drawn = draw(entry.family, method, combination, exp.search.seed, exp.hparams.get(method))
    train = {**drawn["train"], **exp.train, **entry.train, "seed": seed}
    return RunSpec(entry.name, entry.args, method, drawn["hparams"], train, phase1)


def map_unique(executor: Executor, fn, specs: list, stage: str, on_progress) -> dict[str, Any]:
    """Run each distinct specification once; results by key."""
    unique = list({spec.key: spec for spec in specs}.values())
    results = {}
    on_progress(stage, 0, len(unique))
    for i, (spec, result) in enumerate(zip(unique, executor.map(fn, unique)), 1):
        results[spec.key] = result
        on_progress(stage, i, len(unique))
    return results


def select_combination(search: list[tuple[int, dict]], criterion: str) -> int | None:
    """The combination whose best record under `criterion` has the highest value (ties: val average)."""
    scored = [(*selection_key(best[criterion], criterion), -i) for i, best in search if criterion in best]
    scored = [s for s in scored if s[0] is not None]
    return -max(scored)[2] if scored else None


def run_sweep(exp: Experiment, root, executor: Executor | None = None,
              on_progress: Callable[[str, int, int], None] | None = None, reuse_other_versions: bool = False) -> dict:
    """Run (or resume) the sweep of `exp` under `root`; writes and returns root/summary.json's content.

    Finished runs are read back, not redone, when this memaware code wrote them (or always, with
    `reuse_other_versions`); runs written by other code are run again.
    """
    root = Path(root)
    executor = executor or LocalExecutor()
    on_progress = on_progress or (lambda stage, done, total: None)
    data = DataCache()
    train = functools.partial(execute_run, root=root, data=data, reuse_other_versions=reuse_other_versions)
    check_available(exp)
    store.remove_stale_temporaries(root)
    store.write_json(root / "experiment.json", exp.model_dump())
    phase1 = run_phase1(exp, root, executor, on_progress, data, reuse_other_versions)
    phase1_key = {d.key: phase1.get(d.key, {}).get("key") for d in exp.datasets}
    combos = {(d.key, m, i): run_spec(exp, d, m, i, exp.search.seeds[0], phase1_key[d.key])
              for d in exp.datasets for m in exp.methods for i in range(exp.search.combinations)}
    results = map_unique(executor, train, list(combos.values()), "search", on_progress)
    chosen = choose_combinations(exp, combos, results)
    reruns = {(d, m, c, s): run_spec(exp, entry_of(exp, d), m, i, s, phase1_key[d])
              for (d, m, c), i in chosen.items() for s in exp.search.seeds}
    results.update(map_unique(executor, train, list(reruns.values()), "seeds", on_progress))
    summary = {"experiment": exp.name, "criteria": exp.search.criteria, "seeds": exp.search.seeds,
               "label_free": exp.report.label_free, "datasets": [d.key for d in exp.datasets],
               "methods": exp.methods, "phase1": phase1,
               "results": [result_row(exp, key, i, combos, reruns, results) for key, i in chosen.items()]}
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


def check_available(exp: Experiment) -> None:
    """Fail before any run when a data set cannot load here, with the registry's reason."""
    from ..data.registry import get_dataset

    for entry in exp.datasets:
        reason = get_dataset(entry.name).available()
        if reason:
            raise MemawareError(f"data set '{entry.name}' is not available here: {reason}")


def entry_of(exp: Experiment, key: str) -> DatasetEntry:
    return next(d for d in exp.datasets if d.key == key)


def run_phase1(exp: Experiment, root: Path, executor: Executor, on_progress, data: DataCache,
               reuse_other_versions: bool = False) -> dict[str, dict]:
    """Phase 1 on every data set; per data set the selected run's key, flip rate and the candidates'."""
    from ..heldout import select_xrm_run

    if not needs_phase1(exp):
        return {}
    specs = {d.key: phase1_specs(exp, d) for d in exp.datasets}
    done = map_unique(executor, functools.partial(execute_phase1, root=root, data=data,
                                                  reuse_other_versions=reuse_other_versions),
                      [s for group in specs.values() for s in group], "phase 1", on_progress)
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
    runs = []
    for seed in exp.search.seeds:
        run = reruns[(dataset, method, criterion, seed)]
        record = results[run.key]["best"].get(criterion)
        if record is None:  # a failed run, or the criterion had no value in it
            continue
        runs.append({"seed": seed, "key": run.key, "step": record["step"],
                     "test_wga": record["test"].get("wga"), "test_avg_acc": record["test"]["avg_acc"],
                     "test_wca": record["test"]["wca"], "val_value": criterion_value(record, criterion),
                     "val_avg_acc": record["val"]["avg_acc"]})
    return {"dataset": dataset, "method": method, "criterion": criterion, "combination": combination,
            "hparams": spec.hparams, "train": {k: v for k, v in spec.train.items() if k != "seed"},
            "setting": setting(train_groups, criterion),
            "runs": runs}

