"""Typed experiment files: YAML and TOML, validation with one-line errors, dotted overrides."""
from pathlib import Path

import pytest

from memaware.errors import MemawareError
from memaware.sweep.experiment import apply_override, load_experiment

ROOT = Path(__file__).resolve().parents[1]

YAML = """
name: small
datasets:
  - name: figure1
    args: {n: 100, d: 20}
    family: synthetic
    train: {steps: 10}
methods: [erm, mat]
hparams: {mat: {tau: 0.01}}
search: {combinations: 2, seeds: [0, 1], criteria: [va_wga, va_gi_wga]}
"""

TOML = """
name = "small"
methods = ["erm", "mat"]
hparams = {mat = {tau = 0.01}}

[[datasets]]
name = "figure1"
args = {n = 100, d = 20}
family = "synthetic"
train = {steps = 10}

[search]
combinations = 2
seeds = [0, 1]
criteria = ["va_wga", "va_gi_wga"]
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_toml_give_the_same_experiment(tmp_path):
    a = load_experiment(write(tmp_path, "e.yaml", YAML))
    b = load_experiment(write(tmp_path, "e.toml", TOML))
    assert a == b
    assert a.search.combinations == 2 and a.phase1.source == "xrm" and a.report.label_free == "va_gi_wga"
    assert a.base_train(a.datasets[0])["lr"] == 0.01 and a.base_train(a.datasets[0])["steps"] == 10


def test_dotted_overrides_reach_nested_fields_and_list_items(tmp_path):
    exp = load_experiment(write(tmp_path, "e.yaml", YAML),
                          ["search.combinations=5", "datasets.0.train.steps=7", "train.device=cpu",
                           "phase1.train.steps=3", "search.seeds=[4, 5, 6]"])
    assert exp.search.combinations == 5 and exp.search.seeds == [4, 5, 6]
    assert exp.datasets[0].train == {"steps": 7}
    assert exp.phase1_train(exp.datasets[0])["steps"] == 3 and exp.train == {"device": "cpu"}


@pytest.mark.parametrize("assignment, message", [
    ("search.combinations", "expected KEY=VALUE"),
    ("datasets.3.name=x", "'datasets' has no item 3"),
    ("name.x=1", "'name' is not a mapping"),
])
def test_malformed_overrides_are_one_line_errors(assignment, message):
    raw = {"name": "n", "datasets": [{"name": "figure1"}]}
    with pytest.raises(MemawareError, match=message):
        apply_override(raw, assignment)


@pytest.mark.parametrize("edit, message", [
    ("search: {combinations: 0}", r"e\.yaml: search\.combinations: Input should be greater than 0 \(got 0\)"),
    ("colour: blue", r"e\.yaml: colour: Extra inputs are not permitted"),
    ("methods: [erm, magic]", r"e\.yaml: methods: unknown method 'magic' \(known: .*mat"),
    ("datasets: [{name: nowhere}]", r"e\.yaml: datasets\.0\.name: unknown data set 'nowhere'"),
    ("datasets: [{name: figure1, family: vit}]", r"datasets\.0\.family: unknown model family 'vit'"),
    ("datasets: [{name: figure1, train: {stepz: 3}}]", r"datasets\.0\.train: unknown training setting 'stepz'"),
    ("datasets: [{name: figure1, train: {lr: fast}}]", r"datasets\.0\.train\.lr: Input should be a valid number"),
    ("hparams: {mat: {tua: 1}}", r"hparams: mat: unknown hyperparameter 'tua'"),
    ("hparams: {groupdro: {eta: 1}}", r"hparams: method 'groupdro' is not among methods"),
    ("search: {criteria: [va_best]}", r"search\.criteria\.0: Input should be 'va_wga'"),
])
def test_invalid_fields_name_the_file_and_the_field_in_one_line(tmp_path, edit, message):
    path = write(tmp_path, "e.yaml", YAML + edit + "\n")
    with pytest.raises(MemawareError, match=message) as err:
        load_experiment(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, text, message", [
    ("e.json", "{}", "unknown extension '.json'"),
    ("e.yaml", "name: [unclosed", "not valid YAML"),
    ("e.toml", "name = ", "not valid TOML"),
    ("e.yaml", "- a list", "expected a mapping"),
])
def test_unreadable_files_are_one_line_errors(tmp_path, name, text, message):
    with pytest.raises(MemawareError, match=message):
        load_experiment(write(tmp_path, name, text))
    with pytest.raises(MemawareError, match="no such experiment file"):
        load_experiment(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["tiny.yaml", "offline-table.yaml", "adult-reference.yaml", "celeba-resnet50.yaml",
                                  "multinli-bert.yaml"])
def test_the_example_experiment_files_validate(name):
    exp = load_experiment(ROOT / "experiments" / name)
    assert exp.name == Path(name).stem
