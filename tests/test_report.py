"""Reports: known answers for mean/std/CI formatting, Table-1 layout and setting groups, parseable outputs."""
import csv
import io
import re

import numpy as np
import pytest

from memaware.metrics import bootstrap_ci
from memaware.report import SETTINGS, aggregate, build_table, selection_gaps, write_report

SETTING_OF = {("none", "inferred"): SETTINGS[0], ("none", "none"): SETTINGS[0], ("none", "true"): SETTINGS[1],
              ("inferred", "inferred"): SETTINGS[0], ("inferred", "true"): SETTINGS[1],
              ("true", "true"): SETTINGS[2], ("true", "inferred"): "group labels in training only"}
VAL_GROUPS = {"va_wga": "true", "va_gi_wga": "inferred", "va_wca": "none"}
TRAIN_GROUPS = {"erm": "none", "mat": "none", "xrm+groupdro": "inferred", "groupdro": "true"}


def result(dataset, method, criterion, wgas, avgs=None):
    train, val = TRAIN_GROUPS[method], VAL_GROUPS[criterion]
    avgs = avgs or [0.9] * len(wgas)
    return {"dataset": dataset, "method": method, "criterion": criterion, "combination": 0, "hparams": {},
            "setting": {"train_groups": train, "val_groups": val, "name": SETTING_OF[(train, val)]},
            "runs": [{"seed": s, "key": f"k{s}", "test_wga": w, "test_avg_acc": a} for s, (w, a) in
                     enumerate(zip(wgas, avgs))]}


@pytest.fixture
def summary():
    results = []
    for ds, shift in (("adult", 0.0), ("figure1", 0.1)):
        results += [
            result(ds, "erm", "va_wga", [0.2 + shift, 0.3 + shift, 0.4 + shift]),
            result(ds, "erm", "va_gi_wga", [0.1, 0.2, 0.3]),
            result(ds, "mat", "va_wga", [0.7, 0.8, 0.9], [0.8, 0.8, 0.8]),
            result(ds, "mat", "va_gi_wga", [0.6, 0.7, 0.8]),
            result(ds, "mat", "va_wca", [0.5, 0.6, 0.7]),
            result(ds, "groupdro", "va_wga", [0.75, 0.75, 0.75]),
            result(ds, "groupdro", "va_gi_wga", [0.5, 0.5, 0.5]),  # true groups, label-free: left out
        ]
    results.append(result("adult", "xrm+groupdro", "va_gi_wga", [0.6]))
    return {"experiment": "fabricated", "seeds": [0, 1, 2], "criteria": ["va_wga", "va_gi_wga", "va_wca"],
            "label_free": "va_gi_wga", "datasets": ["adult", "figure1"],
            "methods": ["erm", "mat", "xrm+groupdro", "groupdro"], "phase1": {}, "results": results}


def test_cells_are_mean_and_sample_std_in_percent_with_the_bootstrap_interval():
    cell = aggregate([0.7, 0.8, 0.9])
    assert cell.mean == pytest.approx(0.8) and cell.std == pytest.approx(0.1) and cell.n == 3
    lo, hi = bootstrap_ci(np.array([0.7, 0.8, 0.9]))
    assert (cell.lo, cell.hi) == (lo, hi) and 0.7 - 1e-9 <= lo < 0.8 < hi <= 0.9 + 1e-9
    assert cell.text() == f"80.0 ± 10.0 ({100 * lo:.1f}–{100 * hi:.1f})"
    assert cell.text(latex=True) == "80.0 $\\pm$ 10.0"
    assert aggregate([0.7312]).text() == "73.1"  # one seed: no spread, no interval
    assert aggregate([None, float("nan")]).text() == "-"
    assert aggregate([0.5, None, 0.7]).n == 2


def test_rows_are_grouped_by_setting_in_table_1_order(summary):
    rows = build_table(summary)
    layout = [(r.setting, r.method, r.criterion) for r in rows]
    assert layout == [
        (SETTINGS[0], "erm", "va_gi_wga"), (SETTINGS[0], "mat", "va_gi_wga"), (SETTINGS[0], "xrm+groupdro", "va_gi_wga"),
        (SETTINGS[1], "erm", "va_wga"), (SETTINGS[1], "mat", "va_wga"),
        (SETTINGS[2], "groupdro", "va_wga"),
    ]
    assert rows[4].cells["figure1"]["wga"].mean == pytest.approx(0.8)
    assert set(rows[2].cells) == {"adult"}  # xrm+groupdro only ran on adult
    both = build_table(summary, label_free=("va_gi_wga", "va_wca"))
    assert [(r.method, r.criterion) for r in both if r.setting == SETTINGS[0]] == [
        ("erm", "va_gi_wga"), ("mat", "va_gi_wga"), ("mat", "va_wca"), ("xrm+groupdro", "va_gi_wga")]


def test_the_gap_of_each_label_free_criterion_to_the_oracle(summary):
    gaps = {(g["dataset"], g["method"], g["criterion"]): g["gap"] for g in selection_gaps(summary)}
    assert gaps[("adult", "mat", "va_gi_wga")] == pytest.approx(-0.1)
    assert gaps[("adult", "mat", "va_wca")] == pytest.approx(-0.2)
    assert gaps[("figure1", "erm", "va_gi_wga")] == pytest.approx(-0.2)
    assert ("adult", "groupdro", "va_gi_wga") not in gaps  # trained with true groups
    assert ("adult", "xrm+groupdro", "va_gi_wga") not in gaps  # no va_wga run to compare with


def test_markdown_csv_and_latex_parse_and_carry_the_same_numbers(summary, tmp_path):
    written = write_report(summary, tmp_path / "report")
    assert [p.name for p in written] == ["table.md", "table.csv", "table.tex", "wga.png"]
    assert (tmp_path / "report" / "wga.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "report").glob(".*"))  # no temporary files left

    md = (tmp_path / "report" / "table.md").read_text().splitlines()
    table = [line for line in md if line.startswith("| ")]
    header = table[0]
    assert header == "| setting | method | selection | adult WGA | adult Avg | figure1 WGA | figure1 Avg |"
    main_rows = table[1:7]
    assert all(row.count("|") == header.count("|") for row in main_rows)
    mat_oracle = next(r for r in main_rows if "| mat | va_wga |" in r)
    assert mat_oracle.split(" | ")[3].startswith("80.0 ± 10.0 (") and mat_oracle.split(" | ")[4].startswith("80.0 ± 0.0")
    assert any(line.startswith("| adult | mat | va_gi_wga | 70.0 | 80.0 | -10.0 |") for line in md)

    rows = list(csv.DictReader(io.StringIO((tmp_path / "report" / "table.csv").read_text())))
    assert len(rows) == 11  # 6 table rows x 2 data sets, less xrm+groupdro on figure1
    mat = next(r for r in rows if r["method"] == "mat" and r["selection"] == "va_wga" and r["dataset"] == "adult")
    assert mat["setting"] == SETTINGS[1] and mat["n_seeds"] == "3"
    assert float(mat["wga_mean"]) == pytest.approx(0.8) and float(mat["wga_std"]) == pytest.approx(0.1)
    assert float(mat["wga_ci_lo"]) < 0.8 < float(mat["wga_ci_hi"])
    single = next(r for r in rows if r["method"] == "xrm+groupdro")
    assert single["wga_std"] == "" and float(single["wga_mean"]) == pytest.approx(0.6)

    tex = (tmp_path / "report" / "table.tex").read_text()
    assert tex.startswith("\\begin{tabular}{llrrrr}") and tex.rstrip().endswith("\\end{tabular}")
    body = [line for line in tex.splitlines() if line.endswith("\\\\") and "multicolumn" not in line]
    assert all(line.count("&") == 5 for line in body)
    assert re.search(r"\\emph\{group labels in validation only\}", tex)
    assert "mat & va\\_wga & 80.0 $\\pm$ 10.0 & 80.0 $\\pm$ 0.0 & 80.0 $\\pm$ 10.0 & 80.0 $\\pm$ 0.0" in tex
    assert tex.index("no group labels anywhere") < tex.index("validation only") < tex.index("training and validation")
