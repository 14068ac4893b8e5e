"""A self-contained HTML report: one file, figures embedded as base64 PNG, no script, no external resource.

For a sweep: the results table (mean ± std over seeds, 95% bootstrap interval), each row's setting and
selection criterion, accuracy per group over training for each method (the first seed's run), and the
memorization figures of runs analysed with `memaware analyze runs/KEY`. For an analysed `memaware run`: its
results (test WGA with a bootstrap interval over test examples), the accuracy curves, the memorization
figure, per-group summaries, verdicts and the most memorized examples.
"""
from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

import numpy as np

from ..data.io import atomic_write

STYLE = """body{font-family:sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}
th{background:#eee}td.l,th.l{text-align:left}img{max-width:100%;display:block;margin:.5em 0}
.note{color:#555;font-size:13px}pre{background:#f6f6f6;padding:.6em;font-size:12px;white-space:pre-wrap}"""


def esc(value) -> str:
    return html.escape(str(value))


def image(path, alt: str) -> str:
    """An <img> holding the PNG file at `path` as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header: list[str], rows: list[list], left: int = 1, table_id: str = "") -> str:
    """An HTML table; the first `left` columns are left-aligned text."""
    cls = lambda i: ' class="l"' if i < left else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{esc(v)}</td>" for i, v in enumerate(row)) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, sections: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")


def write_html(text: str, path) -> Path:
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return Path(path)


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def curves_section(histories: dict[str, list[dict]], selected: dict[str, int], heading: str) -> str:
    """The per-group accuracy curves of each method, drawn into a temporary PNG and embedded."""
    from .plots import plot_group_curves

    histories = {k: v for k, v in histories.items() if v and "group_acc" in v[-1]["test"]}
    if not histories:
        return f"<h2>{esc(heading)}</h2><p class=note>no per-group accuracy recorded (the data has no 'a')</p>"
    with tempfile.TemporaryDirectory() as tmp:
        tag = image(plot_group_curves(histories, Path(tmp) / "curves.png", selected), heading)
    return (f"<h2>{esc(heading)}</h2><p class=note>Accuracy of each group (y,a) every checkpoint; the dotted "
            f"line is the step the selection criterion chose.</p>{tag}")


# --- sweeps ---------------------------------------------------------------------------------------------

def sweep_html(summary: dict, root, label_free=None) -> str:
    """The report of a sweep folder `root` (holding summary.json and runs/)."""
    from .tables import METRICS, _seeds_note, build_table

    root = Path(root)
    rows = build_table(summary, label_free)
    header = ["setting", "method", "selection"] + [f"{d} {label}" for d in summary["datasets"]
                                                   for _, label in METRICS.values()]
    cells = [[r.setting, r.method, r.criterion] + [r.cells[d][k].text() if d in r.cells else "-"
                                                   for d in summary["datasets"] for k in METRICS] for r in rows]
    sections = [f"<p class=note>{esc(_seeds_note(summary))} Setting: which group labels the row's numbers used in "
                "training and in validation; selection: the validation criterion.</p>",
                table(header, cells, left=3, table_id="results")]
    for dataset in summary["datasets"]:
        sections += dataset_sections(summary, root, dataset)
    return page(f"memaware sweep {summary['experiment']}", sections)


def first_seed_runs(summary: dict, dataset: str) -> dict[str, tuple[str, list[str], int]]:
    """Run key -> (method, the criteria whose first-seed run it is, the step chosen) for one data set."""
    runs: dict[str, tuple[str, list[str], int]] = {}
    for r in summary["results"]:
        if r["dataset"] == dataset and r["runs"]:
            first = r["runs"][0]
            runs.setdefault(first["key"], (r["method"], [], first["step"]))[1].append(r["criterion"])
    return runs


def dataset_sections(summary: dict, root: Path, dataset: str) -> list[str]:
    """Accuracy curves of each distinct first-seed run on `dataset`, and the memorization figures of those
    analysed with `memaware analyze runs/KEY`."""
    from ..sweep import store

    histories, selected, analysed = {}, {}, []
    for key, (method, criteria, step) in first_seed_runs(summary, dataset).items():
        folder, label = root / "runs" / key, f"{method} ({', '.join(criteria)})"
        if (folder / "history.jsonl").is_file():
            histories[label], selected[label] = store.read_history(folder), step
        if (folder / "analysis" / "memorization.png").is_file():
            analysed.append((label, folder / "analysis" / "memorization.png"))
    heading = f"{dataset}: accuracy per group over training (seed {summary['seeds'][0]})"
    return [curves_section(histories, selected, heading)] + [
        f"<h2>{esc(dataset)}, {esc(label)}: memorization scores</h2>{image(png, label)}" for label, png in analysed]


# --- an analysed run ------------------------------------------------------------------------------------

def wga_interval(frame, n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of test worst-group accuracy, resampling test examples within each group."""
    test = frame[frame["split"] == "test"]
    rng = np.random.default_rng(seed)
    correct = {g: (part["pred"] == part["y"]).to_numpy() for g, part in test.groupby(["y", "a"])}
    worst = [min(rng.choice(c, len(c)).mean() for c in correct.values()) for _ in range(n_boot)]
    return tuple(float(q) for q in np.quantile(worst, [0.025, 0.975]))


def run_results_rows(run_dir: Path, results: dict, seed: int) -> list[list]:
    """One row per method of a `memaware run`: test WGA with its interval, average, setting and criterion."""
    import pandas as pd

    from ..saved import predictions_path

    rows = []
    for label, entry in results["methods"].items():
        preds = predictions_path(run_dir, label, seed)
        interval = "-"
        if preds.is_file() and entry.get("test_wga") is not None:
            lo, hi = wga_interval(pd.read_parquet(preds))
            interval = f"{lo:.3f}–{hi:.3f}"
        std = entry.get("std", {}).get("test_wga")
        rows.append([label, entry["setting"]["name"], entry["criterion"], entry["selected_step"],
                     fmt(entry.get("test_wga")) + ("" if std is None else f" ± {std:.3f}"), interval,
                     fmt(entry["test_avg_acc"]), fmt(entry.get("val_wga")), fmt(entry.get("val_gi_wga"))])
    return rows


def run_sections(run_dir: Path, seed: int) -> list[str]:
    """Results table and accuracy curves of a `memaware run` folder."""
    from ..saved import read_results

    results = read_results(run_dir)
    header = ["method", "setting", "selection", "step", "test WGA", "95% interval (seed " + str(seed) + ")",
              "test avg", "val WGA", "val WGA, inferred groups"]
    sections = [f"<h2>Results</h2><p class=note>Data {esc(results['data'])}; seeds "
                f"{esc(results.get('seeds', [0]))} (± is the std over seeds); the interval resamples the test "
                "examples of each group. Setting: which group labels training and validation used.</p>",
                table(header, run_results_rows(run_dir, results, seed), left=3, table_id="results")]
    path = run_dir / "history.json"
    if path.is_file():
        histories = json.loads(path.read_text())
        histories = {k: (v[str(seed)] if isinstance(v, dict) else v) for k, v in histories.items()}
        selected = {k: e["selected_step"] for k, e in results["methods"].items()}
        sections.append(curves_section(histories, selected, "Accuracy per group over training"))
    return sections


def sweep_run_sections(setting: dict) -> list[str]:
    from ..sweep import store

    folder = Path(setting["folder"])
    history = store.read_history(folder)
    best = store.read_best(folder)[setting["criterion"]]
    rows = [[setting["criterion"], best["step"], fmt(best["test"].get("wga")), fmt(best["test"]["avg_acc"]),
             fmt(best["val"].get("wga")), fmt(best["val"].get("gi_wga"))]]
    return [f"<h2>Results</h2><p class=note>Sweep run {esc(folder.name)} on {esc(setting['dataset'])}, "
            f"seed {setting['seed']}: the checkpoint chosen by {esc(setting['criterion'])}.</p>",
            table(["selection", "step", "test WGA", "test avg", "val WGA", "val WGA, inferred groups"], rows,
                  table_id="results"),
            curves_section({"run": history}, {"run": best["step"]}, "Accuracy per group over training")]


def analysis_html(run_dir, analysis, figures_dir) -> str:
    """The report of an analysed run folder; `figures_dir` holds the analysis' memorization.png."""
    run_dir = Path(run_dir)
    setting = analysis.settings
    sections = (run_sections(run_dir, setting["seed"]) if setting.get("kind") == "memaware run"
                else sweep_run_sections(setting))
    estimators = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in setting["scores"].items())
    summary = analysis.summary.round(4)
    top = analysis.top.round(4)
    sections += [
        "<h2>Memorization scores</h2>",
        f"<p class=note>Scores of the {setting['n_train']} training examples per {esc(setting['groups'])}; "
        f"dashed lines: the threshold of 'high'.</p><ul>{estimators}</ul>",
        image(Path(figures_dir) / "memorization.png", "memorization scores per group"),
        "<h3>Verdicts</h3><pre>" + esc("\n".join(analysis.lines)) + "</pre>",
        "<h3>Per group</h3>" + table(list(summary.columns), summary.values.tolist(), left=3, table_id="groups"),
        "<h3>Most memorized examples per group</h3>" + table(list(top.columns), top.values.tolist(), left=2),
    ]
    return page(f"memaware analysis of {run_dir.name}", sections)
