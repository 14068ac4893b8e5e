"""`memaware demo` and `memaware run`."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..errors import DataError, MemawareError
from . import app, user_errors
from .checkpoints import Saving

stdout = Console()


class ExamplesPerSecond(ProgressColumn):
    """Examples a second, for a task whose steps take `batch` examples each (blank for other tasks)."""

    def render(self, task) -> Text:
        batch = task.fields.get("batch")
        return Text("" if not batch or not task.speed else f"{task.speed * batch:,.0f} ex/s")


@contextmanager
def progress_bar(shown: bool = True):
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               ExamplesPerSecond())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not shown) as progress:
        yield progress


def stage_updater(progress: Progress, batch: int | None = None):
    """A callback(stage, done, total) keeping one progress task per stage, added when it first reports;
    with `batch` (examples a step), the bar shows examples a second."""
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total, batch=batch)
        progress.update(tasks[stage], completed=done, total=total)

    return update


def check_output(path: Path, option: str = "--out", folder: bool = True) -> None:
    """Fail before any work when `path` cannot be written: a file where a folder is wanted (or the
    reverse), or a nearest existing parent that is not a writable folder."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise MemawareError(f"{option} {path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise MemawareError(f"{option} {path}: is a folder; give a file name")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise MemawareError(f"{option} {path}: {parent} is a file, not a folder")
    for target in (parent, *([path] if folder and path.is_dir() else [])):
        if not os.access(target, os.W_OK | os.X_OK):
            raise MemawareError(f"{option} {path}: {target} is not writable")


@contextmanager
def output_dir(out: Path):
    """Yield a temporary folder beside `out`; on success its files and folders replace those of the same
    name in `out` (a folder such as models/ as a whole), else nothing is left."""
    out.parent.mkdir(parents=True, exist_ok=True) if out.parent != Path("") else None
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else "."))
    try:
        yield tmp
        out.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            if item.is_dir() and (out / item.name).is_dir():
                shutil.rmtree(out / item.name)
            item.replace(out / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_config(**fields):
    from pydantic import ValidationError

    from ..train import TrainConfig

    try:
        return TrainConfig(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        raise MemawareError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']} "
                            f"(got {first.get('input')!r})") from None


def one_cpu_thread() -> None:
    """Models train on one CPU thread unless OMP_NUM_THREADS says otherwise: small ones as fast on an idle
    machine, small networks at most 1.6 times slower on an idle 2-core one, and all many times faster on
    a busy one, where PyTorch's threads wait for each other."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


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
    from ..data.io import write_json
    from ..demo import minority_accuracy, plot_demo, run_demo

    check_output(out)
    device = resolve_device(device)
    one_cpu_thread()
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
    import yaml

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
    """Held-out logits from a file: .npz with 'train' (and optional 'val', 'test') arrays, or .npy; or the
    heldout.npz of a memaware run or sweep (phase 1's logits and inferred groups), checked against `data`."""
    import numpy as np

    from ..heldout import HeldOut, from_logits

    if not path.is_file():
        raise DataError(f"{path}: no such held-out logits file")
    try:
        if path.suffix == ".npy":
            return from_logits(data, np.load(path, allow_pickle=False))
        with np.load(path, allow_pickle=False) as f:
            if {"logits", "meta"} <= set(f.files):
                return check_saved_phase1(HeldOut.from_arrays(f), data)
            if "train" not in f.files:
                raise DataError(f"missing array 'train' (found: {', '.join(f.files)})")
            return from_logits(data, f["train"], *(f[s] if s in f.files else None for s in ("val", "test")))
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read held-out logits ({type(err).__name__})") from None


def check_saved_phase1(heldout, data):
    """A saved phase 1 whose logits and inferred groups have the sizes of `data`'s splits and classes."""
    arrays = {"logits": (heldout.logits, "train"), **{f"inferred_{s}": (v, s) for s, v in heldout.inferred.items()}}
    for name, (array, split) in arrays.items():
        needed = (int(data.mask(split).sum()),) + ((data.n_classes,) if name == "logits" else ())
        if tuple(array.shape) != needed:
            raise DataError(f"a phase 1 of other data: its {name} has shape {tuple(array.shape)}, this data needs "
                            f"{needed}")
    return heldout


def parse_names(value: str | None, option: str) -> list[str] | None:
    """'a, b,c' -> ['a', 'b', 'c']; None stays None; an empty list is an error."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise MemawareError(f"{option} is empty")
    return names


def parse_seeds(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in parse_names(value, "--seeds")]
    except ValueError:
        raise MemawareError(f"--seeds {value!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise MemawareError(f"--seeds {value!r}: a seed is repeated")
    return seeds


@app.command()
@user_errors
def run(
    data: str = typer.Option(..., help="a data file (.npz, .csv, .parquet, .pt: see the README's data contract) "
                             "or a registered data set's name (see `memaware datasets`)"),
    out: Path = typer.Option(..., help="output folder: results.json, history.json, heldout.npz, models/, "
                             "predictions/"),
    methods: str = typer.Option("erm,mat", help="comma-separated method names (see `memaware methods`)"),
    features: Optional[str] = typer.Option(None, help="comma-separated feature columns (.csv/.parquet)"),
    ignore: Optional[str] = typer.Option(None, help="comma-separated columns to leave out (.csv/.parquet)"),
    standardize: bool = typer.Option(False, help="scale each feature by its train-split mean and deviation "
                                     "(helps SGD on embeddings of unit norm)"),
    select: str = typer.Option("auto", help="criterion: auto, va_wga, va_gi_wga, va_wca, va_avg"),
    heldout: str = typer.Option("xrm", help="phase 1: xrm, crossfit, a .npz/.npy file of held-out logits, or the heldout.npz of a run or sweep"),
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
    seeds: str = typer.Option("0", "--seeds", "--seed", help="training seeds, comma-separated (e.g. 0,1,2): "
                              "results report each metric's mean and std over them; phase 1 uses the first"),
    device: str = typer.Option("cpu", help="cpu, cuda or auto"),
    param: list[str] = typer.Option([], help="method hyperparameter, METHOD.NAME=VALUE (repeatable)"),
    backbone: Optional[str] = typer.Option(None, help="train a whole network end to end on the image or text "
                                           "folder --data: cnn, efficientnet_lite0, minilm, torchvision:ARCH, "
                                           "timm:NAME, hf:FOLDER (see docs/finetune.md)"),
    weights: Optional[Path] = typer.Option(None, help="--backbone's weights file (torchvision:, timm:)"),
    layout: Optional[str] = typer.Option(None, help="--backbone: the folder's layout (default: detected)"),
    image_size: Optional[int] = typer.Option(None, min=8, help="--backbone: training resolution of images "
                                             "(default: the folder's native size, at most 224)"),
    max_length: int = typer.Option(128, min=2, help="--backbone: tokens kept of each text"),
    workers: Optional[int] = typer.Option(None, min=0, help="--backbone: processes that decode images "
                                          "(default: up to 8)"),
    lr_schedule: str = typer.Option("constant", help="constant, or linear decay to 0"),
    grad_clip: Optional[float] = typer.Option(None, help="clip the gradient's norm to this"),
    augment: bool = typer.Option(True, help="--backbone on images: random resized crops and flips in training"),
    batchnorm: str = typer.Option("train", help="--backbone: train, or frozen (BatchNorm layers in evaluation "
                                  "mode, their running statistics fixed)"),
    phase1_finetune: bool = typer.Option(False, help="--backbone: phase 1 (XRM's twins, cross-fitting's folds) trains "
                                         "networks end to end even for a pretrained backbone (default: on its "
                                         "frozen features)"),
    checkpoint_every: Optional[int] = typer.Option(None, help="write OUT/checkpoint/ every this many steps; the same "
                                                   "command, rerun after a kill, resumes from it"),
    sync_batchnorm: bool = typer.Option(True, help="under torchrun: BatchNorm normalises with the global batch's "
                                        "statistics, as one process would (--no-sync-batchnorm: each process's part)"),
):
    """Train methods on your own data (or a named data set) and write OUT/results.json."""
    from ..methods import create
    from ..results import default_criterion
    from ..saved import open_data
    from ..train.distributed import process_device, start_from_environment

    names = parse_names(methods, "--methods")
    hparams = parse_params(param, names)
    method_objs = {name: create(name, **hparams[name]) for name in names}
    check_criterion(select)
    seed_list = parse_seeds(seeds)
    if checkpoint_every is not None and checkpoint_every < 1:
        raise MemawareError(f"--checkpoint-every {checkpoint_every}: give a positive number of steps")
    distributed = start_from_environment(resolve_device(device))
    config = train_config(steps=steps, lr=lr, batch_size=batch_size or None, optimizer=optimizer, momentum=momentum,
                          weight_decay=weight_decay, arch=arch, checkpoint_freq=checkpoint_freq, seed=seed_list[0],
                          device=process_device(resolve_device(device), distributed), lr_schedule=lr_schedule,
                          grad_clip=grad_clip, augment=augment, batchnorm=batchnorm, sync_batchnorm=sync_batchnorm)
    check_output(out)
    saving = Saving(out / "checkpoint", checkpoint_every, distributed)
    feature_list, ignore_list = parse_names(features, "--features"), parse_names(ignore, "--ignore")
    if backbone is None:
        if weights is not None or layout is not None:
            raise MemawareError("--weights and --layout apply to --backbone")
        dataset = open_data(data, feature_list, ignore_list)
        one_cpu_thread()
    else:
        check_network_options(standardize, feature_list or ignore_list)
        dataset = saving.first_on_main(lambda: open_stream(data, layout, backbone, weights, image_size, max_length,
                                                            workers, saving.main))
        if config.device == "cpu":  # a network on a CPU too: docs/speed.md, "Small networks on a CPU"
            one_cpu_thread()
    stats = dataset.standardization() if standardize else None
    if standardize:
        dataset = dataset.standardized()
    for name, method in method_objs.items():
        if method.group_source == "true" and not dataset.has_groups:
            raise MemawareError(f"method '{name}' needs true group labels: {data} has no 'a'")
    if select == "va_wga" and not dataset.has_groups:
        raise MemawareError(f"--select va_wga needs validation group labels: {data} has no 'a'")
    needs_phase1 = select == "va_gi_wga" or (select == "auto" and not dataset.has_groups) or any(
        m.needs_heldout or m.group_source == "inferred" for m in method_objs.values())
    user_heldout = heldout not in ("xrm", "crossfit")
    phase1 = load_heldout_file(Path(heldout), dataset) if user_heldout else None  # recorded even if unused
    criterion = select if select != "auto" else default_criterion(dataset.has_groups, needs_phase1)

    start = time.perf_counter()
    with progress_bar(saving.main) as progress:
        update = stage_updater(progress, None if backbone is None else config.batch_size)
        if needs_phase1 and phase1 is None:
            phase1 = run_phase1(dataset, heldout, folds, config.model_copy(update={"steps": xrm_steps or steps}),
                                update, phase1_finetune, saving)
        runs = train_methods(dataset, method_objs, hparams, config, seed_list, phase1, update, saving)
    elapsed = time.perf_counter() - start
    if not saving.main:
        return saving.close()  # rank 0 of several processes writes the outputs
    source = {"data": str(data), "features": feature_list, "ignore": ignore_list, "standardize": standardize,
              **({} if backbone is None else {"backbone": backbone, "weights": weights and str(weights),
                                               "layout": dataset.info["layout"],
                                               "image_size": dataset.network.image_size or None})}
    results = run_results(dataset, runs, criterion, phase1, source, seed_list)
    results["seconds"] = round(elapsed, 1)
    with output_dir(out) as tmp:
        write_run_outputs(tmp, results, runs, dataset, phase1, criterion, stats, weights)
    saving.finished()
    saving.close()
    print_results(results, criterion)
    stdout.print(f"wrote {out / 'results.json'}, models/ and predictions/ in {elapsed:.1f} s")


def check_network_options(standardize: bool, columns) -> None:
    """--backbone trains on a folder of images or texts: refuse what only applies to features."""
    if standardize or columns:
        raise MemawareError("--standardize, --features and --ignore apply to feature files, not to --backbone")


def open_stream(data: str, layout: str | None, backbone: str, weights: Path | None, image_size: int | None,
                max_length: int, workers: int | None, main: bool = True):
    """The folder `data` (in `layout`, else the one detected) streamed for the network `backbone`; images
    are decoded once into $MEMAWARE_CACHE, at `image_size` or by default their native size (which the main
    process says)."""
    from ..data.layouts import detect_layout, read_layout
    from ..data.stream import stream
    from ..featurize import default_cache_dir
    from ..train.backbones import folder_network

    raw = read_layout(layout or detect_layout(data), data)
    net, size_note = folder_network(raw, backbone, weights, image_size, max_length)
    if size_note and main:
        stdout.print(f"{data}: {size_note}", highlight=False, soft_wrap=True)
    with progress_bar() as progress:
        update = stage_updater(progress)
        return stream(raw, net, workers=workers, cache_dir=default_cache_dir(),
                      callback=lambda done, total: update(f"preparing {raw.name}", done, total))


def check_criterion(select: str) -> None:
    from ..train.loop import CRITERIA

    if select != "auto" and select not in CRITERIA:
        raise MemawareError(f"--select: unknown criterion '{select}' (known: auto, {', '.join(CRITERIA)})")


def run_phase1(dataset, source: str, folds: int, config, update, end_to_end: bool = False, saving=None):
    """Held-out logits and inferred groups by XRM or cross-fitting, with a progress bar (a whole network: on
    its frozen features if pretrained, else, or with `end_to_end`, networks trained end to end). With
    `saving`'s checkpoints, a finished phase 1 is read back, an unfinished XRM resumes, and so does
    cross-fitting, fold by fold."""
    from ..heldout import train_phase1

    saving = saving or Saving(None, None, None)
    done = saving.phase1_done()
    if done is not None:
        return done
    total = config.steps * (folds if source == "crossfit" else 1)
    counter = iter(range(1, total + 1))
    tick = lambda step, record: update(f"phase 1: {source}", next(counter), total)  # noqa: E731
    phase1 = train_phase1(dataset, source, config, folds, end_to_end, callback=tick, **saving.run_options("phase1"))
    return saving.phase1_finished(phase1)


def train_methods(dataset, method_objs: dict, hparams: dict, config, seeds: list[int], phase1, update,
                  saving=None) -> dict:
    """{method: {seed: RunResult}}: every method trained once per seed (a fresh method object per run); with
    `saving`'s checkpoints and processes (`Saving`)."""
    from ..methods import create
    from ..train import fit

    saving = saving or Saving(None, None, None)
    runs: dict[str, dict] = {name: {} for name in method_objs}
    for seed in seeds:
        seeded = config.model_copy(update={"seed": seed})
        for name in method_objs:
            label = name if len(seeds) == 1 else f"{name}, seed {seed}"
            method = method_objs[name] if seed == seeds[0] else create(name, **hparams[name])
            runs[name][seed] = fit(dataset, method, seeded, heldout=phase1, **saving.run_options(f"{name}-seed{seed}"),
                                   callback=lambda step, record, label=label: update(label, step + 1, config.steps))
    return runs


def run_results(dataset, runs: dict, criterion: str, phase1, source: dict, seeds: list[int]) -> dict:
    from ..results import over_seeds, summarize

    return {"data": source["data"], "source": source, "n_examples": len(dataset),
            "n_features": dataset.n_features, "feature_names": dataset.feature_names,
            "standardized": source["standardize"], "group_sizes": dataset.group_sizes(), "seeds": seeds,
            "methods": {name: over_seeds({s: summarize(r, criterion) for s, r in per_seed.items()})
                        for name, per_seed in runs.items()},
            "phase1": None if phase1 is None else {"source": phase1.source, "flip_rate": phase1.flip_rate,
                                                   "degenerate": phase1.degenerate},
            "info": next(iter(next(iter(runs.values())).values())).info}


def write_run_outputs(folder: Path, results: dict, runs: dict, dataset, phase1, criterion: str, stats,
                      weights: Path | None = None) -> None:
    """results.json, history.json, heldout.npz, and per method and seed the selected model and its predictions
    (a whole network with the recipe that rebuilds it, `weights` its backbone's weights file)."""
    from ..data.io import write_json
    from ..results import selected_record
    from ..saved import (model_path, network_spec, predictions_frame, predictions_path, save_model, save_network,
                         write_table)
    from ..train import TrainConfig

    write_json(folder / "results.json", results)
    write_json(folder / "history.json", {name: {str(s): r.history for s, r in per_seed.items()}
                                         for name, per_seed in runs.items()})
    if phase1 is not None:
        phase1.save(folder / "heldout.npz")
    inferred = None if phase1 is None else phase1.inferred
    network = network_spec(dataset, weights) if hasattr(dataset, "network") else None
    for name, per_seed in runs.items():
        for seed, result in per_seed.items():
            model = result.model_at(criterion) if criterion in result.best_states else result.model
            meta = {"method": name, "seed": seed, "criterion": criterion,
                    "step": selected_record(result, criterion)["step"], "memaware": result.info["memaware"]}
            if network is None:
                save_model(model_path(folder, name, seed), model, TrainConfig(**result.config), dataset, meta, stats)
            else:
                save_network(model_path(folder, name, seed), model, dataset, network, meta)
            write_table(predictions_frame(model, dataset, inferred), predictions_path(folder, name, seed))


METRIC_COLUMNS = {"test WGA": "test_wga", "test avg": "test_avg_acc", "val WGA": "val_wga"}


def print_results(results: dict, criterion: str) -> None:
    """The results table: one row per method (mean ± std over seeds), then one per seed when several."""
    seeds = results["seeds"]
    over = f", mean ± std over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ""
    table = Table(title=f"accuracy, selected by {criterion}{over}", box=box.SIMPLE_HEAD, show_edge=False)
    for col in ("method", "groups", "step", *METRIC_COLUMNS):
        table.add_column(col, justify="left" if col in ("method", "groups") else "right", no_wrap=True,
                         min_width=11 if col in METRIC_COLUMNS else None)
    short = {"true": "true", "inferred": "inf", "eiil": "eiil", "none": "-"}
    for name, r in results["methods"].items():
        groups = f"{short[r['setting']['train_groups']]}/{short[r['setting']['val_groups']]}"
        step = str(r["selected_step"]) if len(seeds) == 1 else ""
        table.add_row(name, groups, step, *(mean_std(r[k], r["std"].get(k)) for k in METRIC_COLUMNS.values()))
        if len(seeds) > 1:
            for seed, e in r["per_seed"].items():
                table.add_row(f"  seed {seed}", "", str(e["selected_step"]),
                              *(mean_std(e[k]) for k in METRIC_COLUMNS.values()), style="dim")
    stdout.print(table)
    stdout.print("groups: the group labels training/validation used (true, inf: XRM-inferred, eiil: "
                 "EIIL-inferred, -: none)")


def mean_std(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f}" + ("" if std is None else f"±{std:.3f}")


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
