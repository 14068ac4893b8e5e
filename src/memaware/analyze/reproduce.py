"""The MAT paper's figures: each writes its PNG and the numbers behind it into a folder.

- figure1: accuracy per group over training and decision boundaries, ERM without and with noise, MAT;
- figure2: memorization scores per group, ERM against MAT, on a named data set (by default
  fashion-on-backgrounds, the offline benchmark closest to Waterbirds);
- figure3: the good, bad and ugly memorization regression.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.io import write_json
from ..saved import write_table

FIGURE2_DATASET = "fashion-on-backgrounds"


def figure1(out, steps: int = 1000, seed: int = 0) -> list[Path]:
    """figure1.png, curves.csv (accuracy per run, step, split and group) and figure1.json (last step)."""
    from ..demo import minority_accuracy, plot_demo, run_demo

    out = Path(out)
    runs, phase1 = run_demo(steps=steps, seed=seed)
    rows = [{"run": run.label, "step": r["step"], "split": split, "group": g, "accuracy": acc}
            for run in runs for r in run.result.history for split in ("train", "test")
            for g, acc in r[split]["group_acc"].items()]
    final = {run.label: {"test_group_acc": run.result.history[-1]["test"]["group_acc"],
                         "test_minority_acc": minority_accuracy(run.result.history[-1]["test"])} for run in runs}
    plot_demo(runs, out / "figure1.png")
    write_table(pd.DataFrame(rows), out / "curves.csv")
    write_json(out / "figure1.json", {"steps": steps, "seed": seed, "selection": "last step", "phase1": phase1,
                                      "runs": final})
    return [out / "figure1.png", out / "curves.csv", out / "figure1.json"]


def figure2_config(dataset: str, steps: int | None, seed: int):
    """The training settings of figure 2: the paper's for the Figure-1 problem, else a linear head by
    SGD (lr 1e-3, momentum 0.9, batch 64, weight decay 1e-4), as `memaware run` trains by default."""
    from ..demo import demo_config
    from ..train.config import TrainConfig

    if dataset == "figure1":
        return demo_config(steps or 1000, seed)
    return TrainConfig(steps=steps or 1001, lr=1e-3, batch_size=64, momentum=0.9, weight_decay=1e-4, seed=seed)


def figure2(out, dataset: str = FIGURE2_DATASET, steps: int | None = None, seed: int = 0, folds: int = 5,
            tau: float = 0.1, data=None, callback=None) -> list[Path]:
    """XRM, then ERM and MAT; their cross-fitting gap and self-influence per training example; figure2.png
    (score distributions per group), memorization.parquet, groups.csv and figure2.json (AUC of each score
    ranking the minority first, test accuracy per group of each method)."""
    from ..data.registry import load_dataset
    from ..featurize import default_cache_dir
    from ..heldout import xrm
    from ..train.loop import fit
    from .compute import TrainedMethod, analyze
    from .figures import plot_score_distributions
    from .summary import minority_aucs

    out = Path(out)
    data = data if data is not None else load_dataset(dataset, {"cache_dir": default_cache_dir()})
    config = figure2_config(dataset, steps, seed)
    heldout = xrm(data, config, callback=callback)
    methods = [TrainedMethod("ERM", "erm", config), TrainedMethod("MAT", "mat", config, {"tau": tau})]
    analysis = analyze(data, methods, heldout, scores=("crossfit_gap", "self_influence"), folds=folds,
                       callback=callback)
    criterion = "va_wga" if data.a is not None else "va_gi_wga"
    accuracy = {m.label: fit(data, m.method, config, heldout=heldout, **m.hparams).selected(criterion)["test"]
                for m in methods}
    title = f"{data.name}: memorization scores of training examples per group (y,a), ERM against MAT"
    written = [plot_score_distributions(analysis.frame, out / "figure2.png", analysis.by, title)]
    written += [write_table(analysis.frame, out / "memorization.parquet"),
                write_table(analysis.summary, out / "groups.csv")]
    summary = {"dataset": data.name, "n_train": analysis.settings["n_train"], "train_config": config.model_dump(),
               "scores": analysis.settings["scores"], "folds": folds, "tau": tau, "phase1_flip_rate": heldout.flip_rate,
               "minority_auc": minority_aucs(analysis.frame) if data.a is not None else None,
               "test": {k: {"wga": v.get("wga"), "avg_acc": v["avg_acc"], "group_acc": v.get("group_acc")}
                        for k, v in accuracy.items()},
               "selection": criterion, "verdicts": analysis.lines}
    write_json(out / "figure2.json", summary)
    return written + [out / "figure2.json"]


def figure3(out, steps: int = 20000, seed: int = 0) -> list[Path]:
    """figure3.png (the fitted curves for sigma = 1e-4, 1e-3, 0), curves.csv and figure3.json."""
    from .regression import SIGMAS, fit_regression, true_function

    out = Path(out)
    fits = [fit_regression(sigma, steps=steps, seed=seed) for sigma in SIGMAS]
    curves = pd.DataFrame({"x": fits[0].grid, "true": true_function(fits[0].grid),
                           **{f"sigma={f.sigma:g}": f.curve for f in fits}})
    summary = {"n_points": len(fits[0].points[0]), "extra_dims": 30, "hidden": [300, 300], "activation": "tanh",
               "optimizer": "full-batch Adam, lr 1e-3", "seed": seed,
               "fits": [{"sigma": f.sigma, "steps": f.steps, "train_mse": f.train_mse, "test_mse": f.test_mse,
                         "centre_mse": centre_mse(f)} for f in fits],
               "points": {"x": fits[0].points[0].tolist(), "target": fits[0].points[1].tolist()}}
    plot_figure3(fits, out / "figure3.png")
    write_table(curves, out / "curves.csv")
    write_json(out / "figure3.json", summary)
    return [out / "figure3.png", out / "curves.csv", out / "figure3.json"]


def centre_mse(fit) -> float:
    """Mean squared error of the curve against the true function over |x| <= 1, where its dip is."""
    from .regression import true_function

    inside = np.abs(fit.grid) <= 1
    return float(np.mean((fit.curve[inside] - true_function(fit.grid[inside])) ** 2))


FIGURE3_TITLES = {1e-4: "sigma = 1e-4", 1e-3: "sigma = 1e-3", 0.0: "sigma = 0 (no extra dimensions to use)"}


def plot_figure3(fits, path) -> Path:
    from .figures import pyplot, save_figure
    from .regression import true_function

    plt = pyplot()
    fig, axes = plt.subplots(1, len(fits), figsize=(4.3 * len(fits), 3.6), sharey=True)
    for ax, f in zip(axes, fits):
        ax.plot(f.grid, true_function(f.grid), ":", color="black", lw=1.2, label="tanh(x) + 0.5 tanh(-5x)")
        ax.plot(f.grid, f.curve, color="#1f77b4", lw=1.6, label="network, extra dims = 0")
        ax.scatter(*f.points, s=14, color="#d62728", zorder=3, label="training points")
        ax.set_title(f"{FIGURE3_TITLES.get(f.sigma, f'sigma = {f.sigma:g}')}\ntrain MSE {f.train_mse:.1e}, "
                     f"test MSE {f.test_mse:.3f}", fontsize=9)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("y")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)
