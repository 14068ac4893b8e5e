"""`memaware demo` and `memaware run`."""
from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..data.io import write_json
from ..errors import DataError, MemawareError
from . import app, user_errors

stdout = Console()


@contextmanager
def progress_bar():
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield progress


def stage_updater(progress: Progress):
    """A callback(stage, done, total) keeping one progress task per stage, added when it first reports."""
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return update


@contextmanager
def output_dir(out: Path):
    """Yield a temporary folder beside `out`; on success its files move into `out`, else nothing is left."""
    out.parent.mkdir(parents=True, exist_ok=True) if out.parent != Path("") else None
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else "."))
    try:
        yield tmp
        out.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            item.replace(out / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_config(**fields):
    from ..train import TrainConfig

    try:
        return TrainConfig(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        raise MemawareError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']} "
                            f"(got {first.get('input')!r})") from None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MemawareError(f"--device {device}: CUDA is not available on this machine")
    return device


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("memaware-demo"), help="folder for results.json and figure1.png"),
    steps: int = typer.Option(1000, min=1, help="full-batch steps per run (the paper: 1000)"),
    seed: int = typer.Option(0, help="seed of the data, the XRM split and the flips"),
    device: str = typer.Option("cpu", help="cpu, cuda or auto"),
):
    """The paper's Figure-1 experiment: ERM without and with noise, MAT, and oracle GroupDRO."""
    from ..demo import minority_accuracy, plan, plot_demo, run_demo

    device = resolve_device(device)
    start = time.perf_counter()
    with progress_bar() as progress:
        update = stage_updater(progress)
        runs, phase1 = run_demo(steps=steps, seed=seed, device=device, callback=lambda stage, step: update(
            "phase 1: XRM twins" if stage == "xrm" else stage, step + 1, steps))
    elapsed = time.perf_counter() - start
    table = Table(title="Figure-1 problem: test accuracy per group (y,a) at the last step",
                  caption="* minority groups; 'train': training WGA; GroupDRO uses true groups (oracle)")
    table.add_column("run", no_wrap=True)
    for col in ("0,0", "1,1", "0,1*", "1,0*", "min*", "WGA", "train"):
        table.add_column(col, justify="right", no_wrap=True)
    results = {"experiment": "figure1", "selection": "last step (as in the paper's figure)", "seed": seed,
               "steps": steps, "phase1": phase1, "runs": []}
    for run in runs:
        final = run.result.history[-1]
        test = final["test"]
        groups = test["group_acc"]
        table.add_row(run.label, *(f"{groups[g]:.3f}" for g in ("0,0", "1,1", "0,1", "1,0")),
                      f"{minority_accuracy(test):.3f}", f"{test['wga']:.3f}", f"{final['train']['wga']:.3f}")
        results["runs"].append({"label": run.label, "method": run.method, "sigma": run.sigma,
                                "hparams": run.result.hparams, "test_group_acc": groups,
                                "test_minority_acc": minority_accuracy(test), "test_wga": test["wga"],
                                "test_avg_acc": test["avg_acc"], "train_group_acc": final["train"]["group_acc"],
                                "train_config": run.result.config})
    results["info"] = runs[0].result.info
    results["seconds"] = round(elapsed, 1)
    with output_dir(out) as tmp:
        write_json(tmp / "results.json", results)
        plot_demo(runs, tmp / "figure1.png")
    stdout.print(table)
    stdout.print(f"XRM phase 1: flip rate {phase1['flip_rate']:.3f}; inferred minority precision "
                 f"{phase1['minority_precision']:.3f}, recall {phase1['minority_recall']:.3f}")
    stdout.print(f"wrote {out / 'results.json'} and {out / 'figure1.png'} in {elapsed:.1f} s")


def parse_params(pairs: list[str], methods: list[str]) -> dict[str, dict]:
    """'--param mat.tau=0.01' -> {'mat': {'tau': 0.01}} (values parsed as YAML scalars)."""
    params: dict[str, dict] = {m: {} for m in methods}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise MemawareError(f"--param {pair!r}: expected METHOD.NAME=VALUE, e.g. mat.tau=0.01")
        if method not in params:
            raise MemawareError(f"--param {pair!r}: method '{method}' is not among --methods")
        params[method][name] = yaml.safe_load(value)
    return params


def load_heldout_file(path: Path, data):
    """User-supplied held-out logits: .npz with 'train' (and optional 'val', 'test') arrays, or .npy."""
    import numpy as np

    from ..heldout import from_logits

    if not path.is_file():
        raise DataError(f"{path}: no such held-out logits file")
    try:
        if path.suffix == ".npy":
            return from_logits(data, np.load(path, allow_pickle=False))
        with np.load(path, allow_pickle=False) as f:
            if "train" not in f.files:
                raise DataError(f"missing array 'train' (found: {', '.join(f.files)})")
            return from_logits(data, f["train"], *(f[s] if s in f.files else None for s in ("val", "test")))
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read held-out logits ({type(err).__name__})") from None


@app.command()
@user_errors
def run(
    data: Path = typer.Option(..., help="data file: .npz, .csv, .parquet or .pt (see the README's data contract)"),
    out: Path = typer.Option(..., help="output folder for results.json, history.json and heldout.npz"),
    methods: str = typer.Option("erm,mat", help="comma-separated method names (see `memaware methods`)"),
    features: Optional[str] = typer.Option(None, help="comma-separated feature columns (.csv/.parquet)"),
    standardize: bool = typer.Option(False, help="scale each feature by its train-split mean and deviation "
                                     "(helps SGD on embeddings of unit norm)"),
    select: str = typer.Option("auto", help="criterion: auto, va_wga, va_gi_wga, va_wca, va_avg"),
    heldout: str = typer.Option("xrm", help="phase 1: xrm, crossfit, or a .npz/.npy file of held-out logits"),
    folds: int = typer.Option(5, help="folds for --heldout crossfit"),
    steps: int = typer.Option(1001, help="training steps per method"),
    xrm_steps: Optional[int] = typer.Option(None, help="steps of phase 1 (default: --steps)"),
    lr: float = typer.Option(1e-3),
    batch_size: Optional[int] = typer.Option(64, help="0 for full-batch training"),
    optimizer: str = typer.Option("sgd", help="sgd, adam or adamw"),
    momentum: float = typer.Option(0.9),
    weight_decay: float = typer.Option(1e-4),
    arch: str = typer.Option("linear", help="linear or mlp"),
    checkpoint_freq: int = typer.Option(50, help="evaluate every this many steps"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="cpu, cuda or auto"),
    param: list[str] = typer.Option([], help="method hyperparameter, METHOD.NAME=VALUE (repeatable)"),
):
    """Train methods on your own data and write DIR/results.json."""
    from ..data import load
    from ..heldout import crossfit, xrm
    from ..methods import create
    from ..results import default_criterion, summarize
    from ..train import CRITERIA, fit

    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise MemawareError("--methods is empty")
    hparams = parse_params(param, names)
    method_objs = {name: create(name, **hparams[name]) for name in names}
    if select != "auto" and select not in CRITERIA:
        raise MemawareError(f"--select: unknown criterion '{select}' (known: auto, {', '.join(CRITERIA)})")
    config = train_config(steps=steps, lr=lr, batch_size=batch_size or None, optimizer=optimizer, momentum=momentum,
                          weight_decay=weight_decay, arch=arch, checkpoint_freq=checkpoint_freq, seed=seed,
                          device=resolve_device(device))
    dataset = load(data, features=features.split(",") if features else None)
    if standardize:
        dataset = dataset.standardized()
    for name, method in method_objs.items():
        if method.group_source == "true" and not dataset.has_groups:
            raise MemawareError(f"method '{name}' needs true group labels: {data} has no 'a'")
    if select == "va_wga" and not dataset.has_groups:
        raise MemawareError(f"--select va_wga needs validation group labels: {data} has no 'a'")
    needs_phase1 = select == "va_gi_wga" or (select == "auto" and not dataset.has_groups) or any(
        m.needs_heldout or m.group_source == "inferred" for m in method_objs.values())
    phase1_config = config.model_copy(update={"steps": xrm_steps or steps})
    user_heldout = heldout not in ("xrm", "crossfit")
    phase1 = load_heldout_file(Path(heldout), dataset) if user_heldout and needs_phase1 else None
    criterion = select if select != "auto" else default_criterion(dataset.has_groups, needs_phase1)

    start = time.perf_counter()
    with progress_bar() as progress:
        update = stage_updater(progress)
        if needs_phase1 and phase1 is None:
            total = phase1_config.steps * (folds if heldout == "crossfit" else 1)
            counter = iter(range(1, total + 1))
            tick = lambda step, record: update(f"phase 1: {heldout}", next(counter), total)  # noqa: E731
            phase1 = (xrm(dataset, phase1_config, callback=tick) if heldout == "xrm"
                      else crossfit(dataset, folds, phase1_config, callback=tick))
        runs = {name: fit(dataset, method, config, heldout=phase1,
                          callback=lambda step, record, name=name: update(name, step + 1, config.steps))
                for name, method in method_objs.items()}

    results = {"data": str(data), "n_examples": len(dataset), "standardized": standardize,
               "group_sizes": dataset.group_sizes(),
               "methods": {name: summarize(run, criterion) for name, run in runs.items()},
               "phase1": None if phase1 is None else {"source": phase1.source, "flip_rate": phase1.flip_rate,
                                                      "degenerate": phase1.degenerate},
               "info": next(iter(runs.values())).info, "seconds": round(time.perf_counter() - start, 1)}
    with output_dir(out) as tmp:
        write_json(tmp / "results.json", results)
        write_json(tmp / "history.json", {name: run.history for name, run in runs.items()})
        if phase1 is not None:
            phase1.save(tmp / "heldout.npz")
    print_results(results, criterion)
    stdout.print(f"wrote {out / 'results.json'}")


def print_results(results: dict, criterion: str) -> None:
    table = Table(title=f"test accuracy, selected by {criterion}",
                  caption="groups: which group labels training / validation used (true, inferred, none)")
    for col in ("method", "groups", "step", "test WGA", "test avg", "val WGA", "val avg"):
        table.add_column(col, justify="left" if col in ("method", "groups") else "right", no_wrap=True)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for name, r in results["methods"].items():
        groups = f"{r['setting']['train_groups']} / {r['setting']['val_groups']}"
        table.add_row(name, groups, str(r["selected_step"]), fmt(r["test_wga"]),
                      fmt(r["test_avg_acc"]), fmt(r["val_wga"]), fmt(r["val_avg_acc"]))
    stdout.print(table)


@app.command("methods")
def list_methods():
    """List the registered methods, what they need, and their hyperparameters."""
    from ..methods import REGISTRY

    table = Table(title="methods")
    for col in ("name", "needs", "hyperparameters (defaults)"):
        table.add_column(col)
    for name, (cls, fixed) in sorted(REGISTRY.items()):
        needs = [w for w, flag in (("held-out logits", cls.needs_heldout), ("groups", cls.needs_groups)) if flag]
        defaults = {**cls.defaults, **fixed}
        table.add_row(name, ", ".join(needs) or "-", ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-")
    stdout.print(table)
