"""`memaware datasets`: every registered data set, its kind, needs and availability here."""
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

import memaware.cli.data  # noqa: F401  (registers the commands)
from memaware.cli import app
from memaware.data.registry import DATASETS

KINDS = {"synthetic", "real", "semi-synthetic", "layout"}


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMAWARE_DATA", str(tmp_path))
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(app, ["datasets", *args])


def test_json_lists_every_registered_data_set(data_home):
    result = invoke("--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == set(DATASETS)
    assert all(r["kind"] in KINDS and r["description"] for r in rows.values())
    assert rows["cmnist-5k"]["kind"] == "semi-synthetic" and rows["cmnist-5k"]["available"]
    assert rows["fashion-cmnist"]["licence"] == "MIT"
    water = rows["waterbirds"]
    assert water["kind"] == "layout" and not water["available"]
    assert water["reason"] == (f"not found in {data_home / 'waterbirds'}: pass root=FOLDER or run "
                               "`memaware download waterbirds`")
    assert "metadata.csv" in water["needs"]


def test_a_layout_in_the_data_home_counts_as_available(data_home):
    base = data_home / "waterbirds" / "waterbird_complete95_forest2water2"
    (base / "001.Albatross").mkdir(parents=True)
    Image.new("RGB", (2, 2)).save(base / "001.Albatross" / "a.jpg")
    (base / "metadata.csv").write_text("img_id,img_filename,y,split,place\n1,001.Albatross/a.jpg,1,0,1\n")
    rows = {r["name"]: r for r in json.loads(invoke("--json").output)}
    assert rows["waterbirds"]["available"] and rows["waterbirds"]["reason"] is None


def test_table_and_one_data_set_with_group_sizes(data_home):
    table = invoke()
    assert table.exit_code == 0
    for name in ("figure1", "cmnist-5k", "fashion-cmnist", "waterbirds", "civilcomments"):
        assert name in table.output
    one = invoke("cmnist-5k", "--json")
    row = json.loads(one.output)
    assert {s: sum(g.values()) for s, g in row["group_sizes"].items()} == {"train": 3000, "val": 1000, "test": 1000}
    shown = invoke("cmnist-5k")
    assert "examples per group (y,a)" in shown.output and "3000" in shown.output
    layout = json.loads(invoke("multinli", "--json").output)
    assert layout["kind"] == "layout" and layout["group_sizes"] is None


def test_unknown_name_is_a_one_line_error():
    result = invoke("waterbird")
    assert result.exit_code == 2
    assert "unknown data set 'waterbird' (known: " in result.output and "Traceback" not in result.output
