"""`memaware sweep EXPERIMENT` and `memaware report DIR`."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import MemawareError
from . import app, user_errors
from .core import check_output, one_cpu_thread, progress_bar, stage_updater


def parse_list(value: str, allowed, option: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    for item in items:
        if item not in allowed:
            raise MemawareError(f"{option}: unknown value '{item}' (known: {', '.join(allowed)})")
    if not items:
        raise MemawareError(f"{option} is empty")
    return items


@app.command()
@user_errors
def sweep(
    experiment: Path = typer.Argument(..., help="experiment file (.yaml, .yml or .toml)"),
    out: Optional[Path] = typer.Option(None, help="sweep folder (default: runs/NAME); rerun to resume"),
    set_: list[str] = typer.Option([], "--set", help="override a setting, KEY=VALUE with dotted keys (repeatable)"),
    reuse: bool = typer.Option(False, "--reuse-runs-from-other-versions", "--reuse",
                               help="keep finished runs that another memaware version wrote (default: rerun them)"),
    engine: Optional[str] = typer.Option(
        None, help="batched (train many models at once) or single (one at a time); default: the file's "
                   "train.engine, else batched for the linear, mlp and synthetic families"),
    executor: Optional[str] = typer.Option(None, help="local, processes, ray or slurm (default: the file's "
                                           "execution.executor, else local)"),
    workers: Optional[int] = typer.Option(None, min=1, help="worker processes for --executor processes"),
    ray_address: Optional[str] = typer.Option(None, help="a running Ray cluster (default: start a local one)"),
):
    """Run (or resume) the sweep of an experiment file, then write its report into OUT/report. Under
    torchrun, every run on a backbone trains once across the processes (docs/finetune.md)."""
    from ..sweep.executors import EXECUTORS
    from ..sweep.experiment import ENGINES, load_experiment
    from ..sweep.store import other_version_runs
    from ..train.distributed import is_main, start_from_environment, stop

    exp = load_experiment(experiment, set_)
    engine = parse_list(engine, ENGINES, "--engine")[0] if engine is not None else None
    execution = exp.execution.model_copy(update={k: v for k, v in {
        "executor": executor and parse_list(executor, EXECUTORS, "--executor")[0], "workers": workers,
        "ray_address": ray_address}.items() if v is not None})
    out = out or Path("runs") / exp.name
    check_output(out)
    one_cpu_thread()
    distributed = start_from_environment(sweep_device(exp))
    try:
        if distributed is not None and execution.executor != "local":
            raise MemawareError(f"--executor {execution.executor}: under torchrun a sweep runs with the local "
                                f"executor (its networks train across the processes)")
        if is_main(distributed):
            say_other_versions(other_version_runs(out), reuse)
        start = time.perf_counter()
        summary = run_stages(exp, out, execution, reuse, engine, distributed)
    finally:
        stop(distributed)
    if not is_main(distributed):
        return  # rank 0 writes the report
    written = write_sweep_report(summary, out, out / "report", exp.report.formats)
    if "md" in exp.report.formats:
        typer.echo((out / "report" / "table.md").read_text())
    typer.echo(f"sweep {exp.name}: {len(list((out / 'runs').iterdir()))} runs in {out}, "
                 f"{time.perf_counter() - start:.1f} s; wrote {', '.join(str(p) for p in written)}")


def sweep_device(exp) -> str:
    """'cuda' when the networks of `exp` (its data sets with a backbone; without any, all its data sets)
    train on a GPU, so that torchrun's processes use nccl, else 'cpu' (gloo). Under torchrun, networks on
    a GPU and on the CPU in one sweep are refused: one process group serves them all."""
    from ..train.distributed import under_torchrun

    networks = [d for d in exp.datasets if d.backbone is not None]
    kinds = {}
    for entry in networks or exp.datasets:
        for train in (exp.base_train(entry), exp.phase1_train(entry)):
            kind = "cuda" if str(train.get("device", "cpu")).startswith("cuda") else "cpu"
            kinds.setdefault(kind, entry.label or entry.name)
    if len(kinds) > 1 and networks and under_torchrun():
        raise MemawareError(f"under torchrun the networks of a sweep train on one kind of device: "
                            f"{kinds['cuda']} is on cuda, {kinds['cpu']} on cpu")
    return "cuda" if "cuda" in kinds else "cpu"


def run_stages(exp, out: Path, execution, reuse: bool, engine: str | None, distributed) -> dict:
    """The sweep's runs through its executor, with progress bars (rank 0's only, under torchrun)."""
    from ..sweep.executors import make_executor
    from ..sweep.runner import run_sweep
    from ..train.distributed import is_main

    with progress_bar(is_main(distributed)) as progress:
        runner = make_executor(execution.executor, out, execution.workers, execution.retries, execution.ray_address,
                               execution.slurm, task_counter(progress), execution.cpus_per_task,
                               execution.gpus_per_task)
        try:
            return run_sweep(exp, out, runner, on_progress=stage_updater(progress), reuse_other_versions=reuse,
                             engine=engine, distributed=distributed)
        finally:
            getattr(runner, "close", lambda: None)()


def task_counter(progress):
    """A status callback showing the executor's tasks queued, running, finished and failed."""
    task = None

    def show(counts: dict) -> None:
        nonlocal task
        text = "tasks: " + ", ".join(f"{n} {state}" for state, n in counts.items())
        if task is None:
            task = progress.add_task(text, total=None)
        progress.update(task, description=text)

    return show


def say_other_versions(counts: dict[str, int], reuse: bool) -> None:
    """Tell the user that finished runs were written by other memaware code, and what happens to them."""
    from ..runinfo import code_version

    if not counts:
        return
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    found = ", ".join(f"{n} by {version}" for version, n in ranked[:3])
    if len(ranked) > 3:
        found += f", {sum(n for _, n in ranked[3:])} by {len(ranked) - 3} other versions"
    action = ("reusing them (--reuse-runs-from-other-versions)" if reuse else
              "running them again; pass --reuse-runs-from-other-versions to keep them")
    typer.echo(f"note: finished runs here were written by other memaware code ({found}; this is "
               f"{code_version()}): {action}", err=True)


@app.command()
@user_errors
def report(
    folder: Path = typer.Argument(..., help="a sweep folder (holding summary.json)"),
    format: str = typer.Option("md,csv,tex", "--format", help="comma-separated: md, csv, tex, html (one "
                               "self-contained page with the figures)"),
    criterion: Optional[str] = typer.Option(
        None, help="label-free criteria for 'no group labels anywhere', comma-separated: va_gi_wga, va_wca, "
                   "va_avg (default: the experiment's report.label_free)"),
    out: Optional[Path] = typer.Option(None, help="folder for the tables, wga.png and report.html (default: "
                                                           "FOLDER/report)"),
):
    """Write the sweep's table (Markdown, CSV, LaTeX), its WGA plot, and (html) one page with the figures."""
    from ..report.tables import LABEL_FREE, WRITERS

    path = folder / "summary.json"
    if not path.is_file():
        raise MemawareError(f"{folder}: no summary.json here (run `memaware sweep` first)")
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MemawareError(f"{path}: cannot read ({type(err).__name__})") from None
    formats = parse_list(format, (*WRITERS, "html"), "--format")
    label_free = parse_list(criterion, LABEL_FREE, "--criterion") if criterion else None
    out = out or folder / "report"
    check_output(out)
    written = write_sweep_report(summary, folder, out, formats, label_free)
    if "md" in formats:
        typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {', '.join(str(p) for p in written)}")


def write_sweep_report(summary: dict, folder: Path, out: Path, formats, label_free=None) -> list[Path]:
    """The report of the sweep `folder` into `out`: its table in each of `formats` (md, csv, tex), the WGA
    plot, and with html the self-contained page of `memaware.report.html`; the paths written."""
    from ..report import write_report

    written = write_report(summary, out, [f for f in formats if f != "html"], label_free)
    if "html" in formats:
        from ..report.html import sweep_html, write_html

        written.append(write_html(sweep_html(summary, folder, label_free), out / "report.html"))
    return written
