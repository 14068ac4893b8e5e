"""The HTML reports (`memaware analyze --html`, `memaware report --format html`) in real headless Chromium:
they render with no console error, every figure loads, and the screenshot shows the table and the figures.

Chromium comes from Debian's package (apt-get install chromium); .ci/run installs it and sets
MEMAWARE_REQUIRE_CHROMIUM=1, so CI fails rather than skips when it is missing."""
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import memaware.cli.analyze  # noqa: F401  (registers the commands)
import memaware.cli.core  # noqa: F401
import memaware.cli.sweep  # noqa: F401
from memaware.cli import app
from memaware.data import make_figure1

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
WIDTH = 1280
# Injected into a copy of the page: records console.error calls, script errors and resources that fail to
# load, then (on load) writes them, the images' natural sizes and the boxes of tables and images into <body>.
PROBE = """<script>window.__errors=[];console.error=function(){window.__errors.push(Array.from(arguments).join(' '));};
window.addEventListener('error',function(e){
window.__errors.push(e.message||('failed to load '+e.target.tagName));},true);
window.addEventListener('load',function(){var box=function(el){var r=el.getBoundingClientRect();
return [r.left+window.scrollX,r.top+window.scrollY,r.width,r.height];};
document.body.setAttribute('data-probe',JSON.stringify({errors:window.__errors,
images:Array.from(document.images).map(function(i){return {natural:[i.naturalWidth,i.naturalHeight],box:box(i)};}),
tables:Array.from(document.querySelectorAll('table')).map(function(t){return {id:t.id,box:box(t),rows:t.rows.length};}),
height:document.documentElement.scrollHeight}));});</script>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("MEMAWARE_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def run_chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def render(page: Path, tmp_path: Path) -> tuple[dict, np.ndarray, str]:
    """(what the probe saw, the screenshot of the whole page as an RGB array, Chromium's log of the page)."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    dom = run_chromium(probed, tmp_path / "profile", f"--window-size={WIDTH},900", "--dump-dom").stdout
    probe = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom).group(1)))
    shot = tmp_path / "shot.png"
    log = run_chromium(page, tmp_path / "profile", f"--window-size={WIDTH},{probe['height']}", f"--screenshot={shot}")
    return probe, np.asarray(Image.open(shot).convert("RGB")), log.stderr


def console_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line]


def drawn_share(pixels: np.ndarray, box) -> float:
    """Share of the pixels in `box` (left, top, width, height) that are not white."""
    left, top, width, height = (int(round(v)) for v in box)
    region = pixels[top:top + height, left:left + width]
    return float((region.min(2) < 235).mean()) if region.size else 0.0


def check_page(page: Path, tmp_path: Path, tables: set[str], min_images: int) -> dict:
    probe, pixels, log = render(page, tmp_path)
    assert probe["errors"] == [] and console_lines(log) == []
    assert len(probe["images"]) >= min_images
    for img in probe["images"]:
        assert min(img["natural"]) > 100 and drawn_share(pixels, img["box"]) > 0.03
    found = {t["id"]: t for t in probe["tables"]}
    for ident in tables:
        assert found[ident]["rows"] >= 2 and drawn_share(pixels, found[ident]["box"]) > 0.03
    assert "src=\"http" not in page.read_text() and "<link" not in page.read_text()  # self-contained
    return probe


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory):
    import pandas as pd

    folder = tmp_path_factory.mktemp("run")
    data = make_figure1(n=200, d=100, sigma=0.5, seed=0)
    table = pd.DataFrame(data.x, columns=[f"f{i}" for i in range(data.x.shape[1])])
    table = table.assign(y=data.y, a=data.a, split=data.split, path=[f"images/{i:04d}.png" for i in range(len(data))])
    table.to_csv(folder / "fig1.csv", index=False)
    result = runner.invoke(app, ["run", "--data", str(folder / "fig1.csv"), "--ignore", "path", "--methods", "erm,mat",
                                 "--out",
                                 str(folder / "run"), "--steps", "200", "--lr", "0.01", "--momentum", "0",
                                 "--batch-size", "0", "--weight-decay", "0", "--checkpoint-freq", "20"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["analyze", str(folder / "run"), "--folds", "3", "--html"])
    assert result.exit_code == 0, result.output
    return folder / "run", result.output


def test_analyze_writes_scores_summaries_verdicts_and_a_report(analysed_run):
    import pandas as pd

    run, output = analysed_run
    frame = pd.read_parquet(run / "analysis" / "memorization.parquet")
    assert set(frame["method"]) == {"erm", "mat"} and len(frame) == 400
    assert {"index", "split", "y", "a", "group", "inferred_group", "crossfit_gap", "self_influence"} <= set(frame)
    assert re.search(r"erm, group 0,1 \(n=\d+\): crossfit_gap mean [0-9.]+, \d+% above 0.25", output)
    for name in ("groups.csv", "top.csv", "analysis.json", "memorization.png", "report.html"):
        assert (run / "analysis" / name).is_file()
    top = pd.read_csv(run / "analysis" / "top.csv")
    assert (top["item"] == [f"images/{i:04d}.png" for i in top["index"]]).all()  # the file name of each row


def test_analysis_report_renders_in_chromium_with_table_and_figures(analysed_run, tmp_path):
    run, _ = analysed_run
    probe = check_page(run / "analysis" / "report.html", tmp_path, {"results", "groups"}, min_images=2)
    assert probe["tables"][0]["id"] == "results" and probe["tables"][0]["rows"] == 3  # header, erm, mat


def test_sweep_report_html_renders_in_chromium(tmp_path):
    out = tmp_path / "tiny"
    result = runner.invoke(app, ["sweep", str(ROOT / "experiments" / "tiny.yaml"), "--out", str(out),
                                 "--set", "search.combinations=1", "--set", "search.seeds=[0]",
                                 "--set", "methods=[erm,mat]"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    erm = next(r for r in summary["results"] if r["method"] == "erm" and r["criterion"] == "va_wga")
    result = runner.invoke(app, ["analyze", str(out / "runs" / erm["runs"][0]["key"]), "--folds", "2"])
    assert result.exit_code == 0, result.output
    assert "erm, group 0,1" in result.output
    result = runner.invoke(app, ["report", str(out), "--format", "md,html"])
    assert result.exit_code == 0, result.output
    page = out / "report" / "report.html"
    assert "figure1, erm (va_wga, va_gi_wga, va_wca): memorization scores" in page.read_text()
    check_page(page, tmp_path, {"results"}, min_images=2)  # the curves and the analysed run's scores


def test_analyze_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["analyze", str(tmp_path)])
    assert result.exit_code == 2
    assert "neither a `memaware run` output folder" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "analysis").exists()
