"""Tables in the layout of the MAT paper's Table 1: methods x data sets, WGA and average accuracy.

Rows are grouped by the group labels a result used:
- "no group labels anywhere": methods that train without true groups, selected label-free
  (va_gi_wga on XRM-inferred validation groups, va_wca or va_avg);
- "group labels in validation only": the same methods selected by va_wga;
- "group labels in training and validation": methods that train with true groups, selected by va_wga.
A method trained with true groups but selected label-free is left out. Each cell is the mean ± sample
standard deviation over seeds of the test metric, in percent, with a percentile bootstrap interval.
The main table shows WGA and average accuracy; the other test metrics (MORE_METRICS: worst-class and
balanced accuracy, macro-F1, AUROC, ECE and worst-group ECE) follow it, one table each, where the
sweep's runs carry them, and every metric is in the CSV.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import atomic_write
from ..metrics import bootstrap_ci

SETTINGS = ("no group labels anywhere", "group labels in validation only", "group labels in training and validation")
LABEL_FREE = ("va_gi_wga", "va_wca", "va_avg")
METRICS = {"wga": ("test_wga", "WGA"), "avg": ("test_avg_acc", "Avg")}
MORE_METRICS = {"wca": ("test_wca", "worst-class accuracy"), "balanced_acc": ("test_balanced_acc", "balanced accuracy"),
                "macro_f1": ("test_macro_f1", "macro-F1"), "auroc": ("test_auroc", "AUROC"),
                "ece": ("test_ece", "expected calibration error"),
                "worst_group_ece": ("test_worst_group_ece", "worst-group expected calibration error")}
ALL_METRICS = {**METRICS, **MORE_METRICS}


@dataclass(frozen=True)
class Cell:
    """Mean, sample standard deviation (None for one value) and bootstrap interval of a metric over seeds."""

    mean: float
    std: float | None
    lo: float
    hi: float
    n: int

    def text(self, latex: bool = False) -> str:
        """'73.9 ± 1.2 (72.0–75.1)' in percent; LaTeX: '73.9 $\\pm$ 1.2'."""
        if self.n == 0:
            return "-"
        pm = " $\\pm$ " if latex else " ± "
        out = f"{100 * self.mean:.1f}" + ("" if self.std is None else f"{pm}{100 * self.std:.1f}")
        return out + (f" ({100 * self.lo:.1f}–{100 * self.hi:.1f})" if self.n > 1 and not latex else "")


def aggregate(values) -> Cell:
    """The Cell of the values that are not None or NaN."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if not len(v):
        return Cell(math.nan, None, math.nan, math.nan, 0)
    lo, hi = bootstrap_ci(v)
    return Cell(float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None, lo, hi, len(v))


@dataclass(frozen=True)
class Row:
    setting: str
    method: str
    criterion: str
    cells: dict  # dataset -> {metric key of ALL_METRICS: Cell}


def row_setting(result: dict, label_free: tuple[str, ...]) -> str | None:
    """The table group of a summary result, or None when the table leaves it out."""
    name = result["setting"]["name"]
    if name == SETTINGS[0]:
        return name if result["criterion"] in label_free else None
    return name if name in SETTINGS else None


def build_table(summary: dict, label_free: tuple[str, ...] | None = None) -> list[Row]:
    """Rows of the table, ordered by setting, then method order, then criterion order."""
    label_free = tuple(label_free or (summary.get("label_free", "va_gi_wga"),))
    grouped: dict[tuple, dict] = {}
    for result in summary["results"]:
        setting = row_setting(result, label_free)
        if setting is None:
            continue
        cells = {k: aggregate([run.get(field) for run in result["runs"]]) for k, (field, _) in ALL_METRICS.items()}
        grouped.setdefault((setting, result["method"], result["criterion"]), {})[result["dataset"]] = cells
    order = lambda key: (SETTINGS.index(key[0]), summary["methods"].index(key[1]),  # noqa: E731
                         (label_free + ("va_wga",)).index(key[2]))
    return [Row(*key, grouped[key]) for key in sorted(grouped, key=order)]


def selection_gaps(summary: dict) -> list[dict]:
    """Per data set, method and label-free criterion: its mean test WGA minus the oracle's (va_wga)."""
    by_key = {(r["dataset"], r["method"], r["criterion"]): aggregate([x["test_wga"] for x in r["runs"]]).mean
              for r in summary["results"] if r["setting"]["train_groups"] != "true"}
    gaps = []
    for (dataset, method, criterion), value in by_key.items():
        oracle = by_key.get((dataset, method, "va_wga"))
        if criterion in LABEL_FREE and oracle is not None:
            gaps.append({"dataset": dataset, "method": method, "criterion": criterion,
                         "test_wga": value, "oracle_test_wga": oracle, "gap": value - oracle})
    return gaps


def _seeds_note(summary: dict) -> str:
    n = len(summary["seeds"])
    return (f"Test accuracy in %, mean ± std over {n} seed{'s' * (n != 1)} "
            f"(95% bootstrap interval in brackets); 'selection' is the criterion that chose the checkpoint "
            f"and the combination.")


def to_markdown(summary: dict, rows: list[Row]) -> str:
    datasets = summary["datasets"]
    head = ["setting", "method", "selection"] + [f"{d} {label}" for d in datasets for _, label in METRICS.values()]
    lines = [f"# {summary['experiment']}", "", _seeds_note(summary), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.cells[d][k].text() if d in row.cells else "-" for d in datasets for k in METRICS]
        lines.append("| " + " | ".join([row.setting, row.method, row.criterion] + cells) + " |")
    gaps = selection_gaps(summary)
    if gaps:
        lines += ["", "## Label-free selection against the oracle (va_wga)", "",
                  "Mean test WGA (%) of the label-free criterion minus that of va_wga; negative: worse.", "",
                  "| data set | method | criterion | test WGA | with va_wga | gap |", "|---|---|---|---|---|---|"]
        lines += [f"| {g['dataset']} | {g['method']} | {g['criterion']} | {100 * g['test_wga']:.1f} | "
                  f"{100 * g['oracle_test_wga']:.1f} | {100 * g['gap']:+.1f} |" for g in gaps]
    lines += failed_runs_table(summary)
    for key, (_, label) in MORE_METRICS.items():
        lines += _metric_table(datasets, rows, key, label)
    return "\n".join(lines) + "\n"


def failed_runs_table(summary: dict) -> list[str]:
    """Markdown lines listing the seed runs missing from the cells, with why (none: no lines)."""
    failed = [(r, f) for r in summary["results"] for f in r.get("failed", [])]
    if not failed:
        return []
    return ["", "## Failed runs", "", "Seeds left out of the cells above, and why.", "",
            "| data set | method | selection | seed | error |", "|---|---|---|---|---|",
            *(f"| {r['dataset']} | {r['method']} | {r['criterion']} | {f['seed']} | {f['error']} |" for r, f in failed)]


def _metric_table(datasets: list[str], rows: list[Row], key: str, label: str) -> list[str]:
    """A Markdown section with one metric per data set, or nothing when no run carries it."""
    if not any(cells[key].n for row in rows for cells in row.cells.values()):
        return []
    lines = ["", f"## Test {label} (%)", "", "| setting | method | selection | " + " | ".join(datasets) + " |",
             "|" + "---|" * (3 + len(datasets))]
    for row in rows:
        cells = [row.cells[d][key].text() if d in row.cells else "-" for d in datasets]
        lines.append("| " + " | ".join([row.setting, row.method, row.criterion] + cells) + " |")
    return lines


def to_csv(summary: dict, rows: list[Row]) -> str:
    """Long format: one line per row and data set, with mean, std and interval of each metric."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    stats = ("mean", "std", "ci_lo", "ci_hi")
    writer.writerow(["setting", "method", "selection", "dataset", "n_seeds"] +
                    [f"{k}_{s}" for k in ALL_METRICS for s in stats])
    for row in rows:
        for dataset, cells in row.cells.items():
            values = [getattr(cells[k], s.removeprefix("ci_")) for k in ALL_METRICS for s in stats]
            writer.writerow([row.setting, row.method, row.criterion, dataset, cells["wga"].n] +
                            ["" if v is None or v != v else f"{v:.6f}" for v in values])
    return out.getvalue()


def _tex_escape(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")


def to_latex(summary: dict, rows: list[Row]) -> str:
    datasets = summary["datasets"]
    n_cols = 2 + 2 * len(datasets)
    lines = ["\\begin{tabular}{ll" + "rr" * len(datasets) + "}", "\\toprule",
             " & & " + " & ".join(f"\\multicolumn{{2}}{{c}}{{{_tex_escape(d)}}}" for d in datasets) + " \\\\",
             "method & selection & " + " & ".join("WGA & Avg" for _ in datasets) + " \\\\"]
    setting = None
    for row in rows:
        if row.setting != setting:
            setting = row.setting
            lines += ["\\midrule", f"\\multicolumn{{{n_cols}}}{{l}}{{\\emph{{{_tex_escape(setting)}}}}} \\\\"]
        cells = [row.cells[d][k].text(latex=True) if d in row.cells else "-" for d in datasets for k in METRICS]
        lines.append(" & ".join([_tex_escape(row.method), _tex_escape(row.criterion)] + cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


WRITERS = {"md": ("table.md", to_markdown), "csv": ("table.csv", to_csv), "tex": ("table.tex", to_latex)}


def write_report(summary: dict, out, formats=("md", "csv", "tex"), label_free=None, plot: bool = True) -> list[Path]:
    """Write the table in each format (and the WGA plot) into `out`, each file atomically."""
    out = Path(out)
    rows = build_table(summary, label_free)
    written = []
    for fmt in formats:
        name, render = WRITERS[fmt]
        text = render(summary, rows)
        atomic_write(out / name, lambda tmp: tmp.write_text(text))
        written.append(out / name)
    if plot:
        from .plots import plot_wga

        written.append(plot_wga(summary, rows, out / "wga.png"))
    return written
