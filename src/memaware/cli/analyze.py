"""`memaware analyze RUN_DIR` (memorization scores per example and per group) and `memaware reproduce`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import MemawareError
from . import app, user_errors
from .core import check_output, one_cpu_thread, output_dir, progress_bar, stage_updater, stdout

FIGURES = ("figure1", "figure2", "figure3")


def parse_scores(value: str, fz_models: int) -> tuple[str, ...]:
    from ..analyze import ESTIMATORS
    from .sweep import parse_list

    scores = parse_list(value, tuple(ESTIMATORS), "--scores")
    return scores + (("feldman_zhang",) if fz_models and "feldman_zhang" not in scores else ())


@app.command()
@user_errors
def analyze(
    run_dir: Path = typer.Argument(..., help="a `memaware run` output folder or a sweep run folder (runs/KEY)"),
    out: Optional[Path] = typer.Option(None, help="folder for the analysis (default: RUN_DIR/analysis)"),
    scores: Optional[str] = typer.Option(None, help="comma-separated: crossfit_gap, self_influence, "
                                         "raw_self_influence, phase1_gap, feldman_zhang (default: crossfit_gap,"
                                         "self_influence; phase1_gap for a network fine-tuned on a folder)"),
    folds: int = typer.Option(5, min=2, help="cross-fitting folds (crossfit_gap: this many trainings per method)"),
    fz_models: int = typer.Option(0, min=0, help="models on random halves for feldman_zhang (0: not computed "
                                  "unless --scores names it, then 8)"),
    seed: Optional[int] = typer.Option(None, help="which seed of a `memaware run` folder (default: its first)"),
    criterion: Optional[str] = typer.Option(None, help="which checkpoint of a sweep run (default: va_wga)"),
    top: int = typer.Option(5, min=1, help="most memorized examples listed per group"),
    html: bool = typer.Option(False, "--html", help="also write OUT/report.html (figures embedded)"),
):
    """Memorization scores of every training example per method, summarized per group, with verdicts."""
    from ..analyze import analyze as run_analysis
    from ..analyze.folders import open_run_folder

    out = out or run_dir / "analysis"
    check_output(out)
    folder = open_run_folder(run_dir, seed, criterion)
    default = "phase1_gap" if folder.network is not None else "crossfit_gap,self_influence"
    chosen = parse_scores(scores or default, fz_models)
    folder = folder.for_scores(chosen)
    one_cpu_thread()
    start = time.perf_counter()
    with progress_bar() as progress:
        update = stage_updater(progress)
        counter = iter(range(1, 10**9))
        tick = lambda step, record: update("training for the scores", next(counter), None)  # noqa: E731
        analysis = run_analysis(folder.data, folder.methods, folder.heldout, chosen, folds, fz_models or 8, top,
                                folder.items, tick, folder.setting)
    with output_dir(out) as tmp:
        written = analysis.write(tmp)
        if html:
            from ..report.html import analysis_html, write_html

            written.append(write_html(analysis_html(run_dir, analysis, tmp), tmp / "report.html"))
    for line in analysis.lines:
        stdout.print(line, highlight=False)
    stdout.print(f"wrote {', '.join(str(out / p.name) for p in written)} in {time.perf_counter() - start:.1f} s")


@app.command()
@user_errors
def reproduce(
    figure: str = typer.Argument(..., help="figure1, figure2 or figure3"),
    out: Path = typer.Option(..., help="folder for the PNG and the numbers behind it"),
    dataset: str = typer.Option("fashion-on-backgrounds", help="figure2: a registered data set's name"),
    steps: Optional[int] = typer.Option(None, help="training steps (default: the figure's)"),
    seed: int = typer.Option(0),
):
    """The MAT paper's figures: 1 (accuracy curves, boundaries), 2 (memorization per group), 3 (regression)."""
    from ..analyze import reproduce as figures

    if figure not in FIGURES:
        raise MemawareError(f"unknown figure '{figure}' (known: {', '.join(FIGURES)})")
    if figure == "figure2":
        from ..data.registry import get_dataset

        reason = get_dataset(dataset).available()
        if reason:
            raise MemawareError(f"data set '{dataset}' is not available here: {reason}")
    check_output(out)
    one_cpu_thread()
    start = time.perf_counter()
    extra = {"dataset": dataset} if figure == "figure2" else {}
    with output_dir(out) as tmp:
        written = getattr(figures, figure)(tmp, **({"steps": steps} if steps else {}), seed=seed, **extra)
    stdout.print(f"wrote {', '.join(str(out / p.name) for p in written)} in {time.perf_counter() - start:.1f} s")
