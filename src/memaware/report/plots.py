"""Figures: test worst-group accuracy per method and data set (standard deviations as error bars), and
accuracy per group over training."""
from __future__ import annotations

from pathlib import Path

from ..data.io import atomic_write

SETTING_COLOURS = {"no group labels anywhere": "#2b8cbe", "group labels in validation only": "#fdae6b",
                   "group labels in training and validation": "#969696"}


def plot_wga(summary: dict, rows: list, path) -> Path:
    """One panel per data set; a bar per table row (method, selection), coloured by setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = summary["datasets"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(0.45 * len(rows) * len(datasets) + 2.5, 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for i, row in enumerate(rows):
            cell = row.cells.get(dataset, {}).get("wga")
            if cell is None or cell.n == 0:
                continue
            ax.bar(i, 100 * cell.mean, yerr=100 * (cell.std or 0.0), color=SETTING_COLOURS[row.setting],
                   capsize=2, width=0.8)
        ax.set_xticks(range(len(rows)), [f"{r.method} ({r.criterion})" for r in rows], rotation=75, fontsize=7)
        ax.set_title(dataset, fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test worst-group accuracy (%)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in SETTING_COLOURS.values()]
    fig.legend(handles, list(SETTING_COLOURS), loc="upper center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


def plot_group_curves(histories: dict[str, list[dict]], path, selected: dict[str, int] | None = None) -> Path:
    """One panel per method: accuracy of each group (y,a) over training, test solid and validation dashed,
    with the selected step as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    selected = selected or {}
    fig, axes = plt.subplots(1, len(histories), figsize=(3.6 * len(histories) + 1.2, 3.4), squeeze=False, sharey=True)
    for ax, (label, history) in zip(axes[0], histories.items()):
        steps = [r["step"] for r in history]
        groups = sorted(history[-1]["test"].get("group_acc", {}))
        for i, group in enumerate(groups):
            colour = plt.cm.tab10(i % 10)
            for split, style in (("test", "-"), ("val", "--")):
                acc = [r[split].get("group_acc", {}).get(group, float("nan")) for r in history]
                ax.plot(steps, acc, style, color=colour, lw=1.2, label=f"{split} {group}" if split == "test" else None)
        if label in selected:
            ax.axvline(selected[label], color="black", lw=0.8, ls=":")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy per group (y,a)\ntest solid, validation dashed")
    axes[0][0].legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)
