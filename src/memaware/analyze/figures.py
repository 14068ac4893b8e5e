"""Figures of memorization scores: per group, one box per method, one panel per score."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.io import atomic_write
from .summary import score_columns, thresholds

METHOD_COLOURS = ("#d62728", "#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b")
TITLES = {"crossfit_gap": "held-in minus held-out p(y), cross-fitting",
          "feldman_zhang": "Feldman-Zhang estimate (random halves)",
          "phase1_gap": "p(y) minus phase-1 held-out p(y)",
          "self_influence": "self-influence beyond the group (TracIn, last layer)",
          "raw_self_influence": "self-influence (TracIn, last layer)"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    pyplot().close(fig)
    return Path(path)


def plot_score_distributions(frame: pd.DataFrame, path, by: str = "group", title: str | None = None) -> Path:
    """Box plots of each score per group, methods side by side (dots: the examples), with each score's
    threshold as a dashed line."""
    plt = pyplot()
    columns, methods = score_columns(frame), list(dict.fromkeys(frame["method"]))
    groups = sorted(frame[by].unique())
    ncols = min(len(columns), 2)
    nrows = -(-len(columns) // ncols)
    panel = max(3.6, 0.55 * len(groups) * len(methods) + 1.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, 3.4 * nrows + 0.4), squeeze=False)
    for ax in axes.flat[len(columns):]:
        ax.set_visible(False)
    rng = np.random.default_rng(0)
    width = 0.8 / len(methods)
    for ax, score in zip(axes.flat, columns):
        for j, method in enumerate(methods):
            part = frame[frame["method"] == method]
            values = [part.loc[part[by] == g, score].dropna().to_numpy() for g in groups]
            pos = np.arange(len(groups)) + (j - (len(methods) - 1) / 2) * width
            colour = METHOD_COLOURS[j % len(METHOD_COLOURS)]
            ax.boxplot(values, positions=pos, widths=width * 0.85, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": colour, "alpha": 0.35}, medianprops={"color": colour})
            for p, v in zip(pos, values):
                ax.scatter(p + rng.uniform(-0.25, 0.25, len(v)) * width, v, s=3, color=colour, alpha=0.5,
                           label=method if p == pos[0] else None)
        ax.axhline(thresholds(frame)[score], ls="--", color="grey", lw=0.8)
        ax.set_xticks(range(len(groups)), [f"{by.replace('_', ' ')}\n{g}" for g in groups], fontsize=8)
        ax.set_title(TITLES[score], fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for row in axes:
        row[0].set_ylabel("memorization score")
    axes[0][0].legend(fontsize=7, markerscale=3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
