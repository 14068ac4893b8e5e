"""`memaware demo`: the Figure-1 experiment end to end through the CLI."""
import json

from typer.testing import CliRunner

import memaware.cli.core  # noqa: F401
from memaware.cli import app


def test_demo_writes_table_results_and_figure(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    runs = {r["label"]: r for r in results["runs"]}
    assert set(runs) == {"ERM σ=0", "ERM σ=0.5", "MAT σ=0.5", "GroupDRO σ=0.5"}
    assert runs["ERM σ=0"]["test_minority_acc"] >= 0.95
    assert runs["ERM σ=0.5"]["test_minority_acc"] <= 0.30
    assert runs["MAT σ=0.5"]["test_minority_acc"] >= 0.85
    assert results["phase1"]["minority_precision"] >= 0.95
    png = (tmp_path / "demo" / "figure1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "MAT σ=0.5" in result.stdout
