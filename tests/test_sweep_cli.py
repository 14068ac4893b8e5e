"""`memaware sweep` and `memaware report` end to end on the tiny synthetic experiment."""
import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import memaware.cli.sweep  # noqa: F401  (registers the commands)
from memaware.cli import app
from memaware.data.io import save
from memaware.data.synthetic import make_figure1
from memaware.heldout import HeldOut

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "experiments" / "tiny.yaml")
runner = CliRunner()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    result = runner.invoke(app, ["sweep", TINY, "--out", str(out), "--set", "search.combinations=2"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_sweep_writes_runs_a_summary_and_the_report(swept):
    out, output = swept
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "tiny" and summary["seeds"] == [0, 1]
    rows = {(r["method"], r["criterion"]): r for r in summary["results"]}
    assert set(rows) == {(m, c) for m in ("erm", "mat", "groupdro", "xrm+groupdro")
                         for c in ("va_wga", "va_gi_wga", "va_wca")}
    assert rows[("groupdro", "va_wga")]["setting"]["name"] == "group labels in training and validation"
    assert rows[("mat", "va_gi_wga")]["setting"]["name"] == "no group labels anywhere"
    assert rows[("xrm+groupdro", "va_wga")]["setting"]["name"] == "group labels in validation only"
    assert all(len(r["runs"]) == 2 and r["combination"] in (0, 1) for r in rows.values())
    # MAT learns the core feature on the Figure-1 problem where ERM follows the spurious one
    mat = rows[("mat", "va_gi_wga")]["runs"][0]["test_wga"]
    erm = rows[("erm", "va_gi_wga")]["runs"][0]["test_wga"]
    assert mat > 0.8 and erm < 0.3
    for name in ("table.md", "table.csv", "table.tex", "wga.png"):
        assert (out / "report" / name).is_file()
    assert "| group labels in validation only | mat | va_wga |" in output


def test_phase_1_runs_once_per_data_set_and_every_run_uses_the_selected_one(swept):
    out, _ = swept
    summary = json.loads((out / "summary.json").read_text())
    phase1 = summary["phase1"]["figure1"]
    assert len(phase1["candidates"]) == 2 and len(list((out / "phase1").iterdir())) == 2
    candidates = [HeldOut.load(out / "phase1" / c["key"] / "heldout.npz") for c in phase1["candidates"]]
    eligible = [(h.flip_rate, c["key"]) for h, c in zip(candidates, phase1["candidates"]) if not h.degenerate]
    assert phase1["key"] == max(eligible)[1]
    specs = [json.loads(p.read_text())["spec"]["run"] for p in (out / "runs").glob("*/spec.json")]
    assert {s["phase1"] for s in specs} == {phase1["key"]}
    # erm's combinations are all the defaults on the synthetic family: one run per seed, shared by criteria
    assert sum(s["method"] == "erm" for s in specs) == 2


def test_report_rewrites_the_tables_with_other_criteria_and_formats(swept, tmp_path):
    out, _ = swept
    result = runner.invoke(app, ["report", str(out), "--format", "csv", "--criterion", "va_wca,va_gi_wga",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert {r["selection"] for r in rows if r["setting"] == "no group labels anywhere"} == {"va_wca", "va_gi_wga"}
    assert not (tmp_path / "table.md").exists()


def test_html_among_the_files_formats_writes_the_page_that_report_writes(swept, tmp_path):
    out, _ = swept
    result = runner.invoke(app, ["sweep", TINY, "--out", str(out), "--set", "search.combinations=2",
                                 "--set", "report.formats=[md,html]"])
    assert result.exit_code == 0, result.output
    page = out / "report" / "report.html"
    assert page.is_file() and str(page) in result.output.splitlines()[-1]
    result = runner.invoke(app, ["report", str(out), "--format", "md,html", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert page.read_bytes() == (tmp_path / "report.html").read_bytes()
    assert '<table id="results">' in page.read_text()  # the results table, as memaware report writes it


def test_a_second_sweep_resumes_without_new_runs(swept):
    out, _ = swept
    before = sorted(p.name for p in (out / "runs").iterdir())
    result = runner.invoke(app, ["sweep", TINY, "--out", str(out), "--set", "search.combinations=2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "runs").iterdir()) == before


@pytest.mark.parametrize("text, args, message", [
    ("name: bad\ndatasets: [{name: figure1}]\nmethods: [erm]\nsearch: {seeds: []}\n", [],
     "bad.yaml: search.seeds: List should have at least 1 item"),
    ("name: bad\ndatasets: [{name: figure1}]\nmethods: [erm]\n", ["--set", "search.combinations=-1"],
     "bad.yaml: search.combinations: Input should be greater than 0"),
    ("name: bad\ndatasets: [{name: figure1}]\nmethods: [erm]\n", ["--set", "oops"], "expected KEY=VALUE"),
    ("name: [bad\n", [], "bad.yaml: not valid YAML"),
    ("name: bad\ndatasets: [{name: nowhere.npz}]\nmethods: [erm]\n", [],
     "bad.yaml: datasets.0.name: no such data file 'nowhere.npz'"),
    ("name: bad\ndatasets: [{name: TMP/f.npz, args: {n: 3}}]\nmethods: [erm]\n", [],
     "bad.yaml: datasets.0: a data file takes the options features, ignore, standardize, not 'n'"),
], ids=["no-seeds", "negative-combinations", "bad-override", "bad-yaml", "missing-data-file", "data-file-option"])
def test_a_bad_experiment_file_is_a_one_line_error_with_exit_code_2(tmp_path, text, args, message):
    path = tmp_path / "bad.yaml"
    save(make_figure1(n=40, d=10), tmp_path / "f.npz")
    path.write_text(text.replace("TMP", str(tmp_path)))
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["report", "{tmp}"], "no summary.json here"),
    (["report", "{out}", "--format", "pdf"], "--format: unknown value 'pdf'"),
    (["report", "{out}", "--criterion", "va_wga"], "--criterion: unknown value 'va_wga'"),
])
def test_report_errors_are_one_line_with_exit_code_2(swept, tmp_path, args, message):
    out, _ = swept
    result = runner.invoke(app, [a.format(tmp=tmp_path, out=out) for a in args])
    assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output


def test_a_data_file_sweeps_as_the_registered_data_set_it_holds(tmp_path):
    args = {"n": 200, "d": 300, "sigma": 0.5}
    save(make_figure1(**args), tmp_path / "figure1.npz")
    entry = {"family": "synthetic", "train": {"steps": 60, "checkpoint_freq": 20}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "file", "datasets": [{"name": "figure1", "args": args, **entry},
                                     {"name": str(tmp_path / "figure1.npz"), "label": "file", **entry}],
        "methods": ["erm", "mat"], "phase1": {"runs": 2},
        "search": {"combinations": 2, "seeds": [0, 1], "criteria": ["va_wga", "va_gi_wga"]}}))
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = {(r["dataset"], r["method"], r["criterion"]): r for r in summary["results"]}
    for method in ("erm", "mat"):
        for criterion in ("va_wga", "va_gi_wga"):
            registered, from_file = rows[("figure1", method, criterion)], rows[("file", method, criterion)]
            assert registered["combination"] == from_file["combination"]
            assert [r["test_wga"] for r in registered["runs"]] == [r["test_wga"] for r in from_file["runs"]]
    assert rows[("file", "mat", "va_gi_wga")]["runs"][0]["test_wga"] > 0.8  # a real result, not an empty one
