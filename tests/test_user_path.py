"""The user's path through the CLI: data by name, outputs checked before any work, no column dropped
silently, saved models and `memaware predict`, several seeds, --version and `python -m memaware`."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import memaware.cli.core  # noqa: F401  (registers the commands)
import memaware.cli.predict  # noqa: F401
import memaware.train.loop
from memaware import __version__
from memaware.cli import app
from memaware.data import make_figure1, save

runner = CliRunner()
FAST = ["--steps", "40", "--checkpoint-freq", "10"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, message: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    """The Figure-1 problem with 15% of labels flipped (so seeds differ), as a CSV with named feature
    columns and split codes 0/1/2."""
    ds = make_figure1(n=150, d=12, seed=0)
    frame = pd.DataFrame(ds.x, columns=[f"feat{i}" for i in range(ds.x.shape[1])])
    flip = np.random.default_rng(0).random(len(ds.y)) < 0.15
    frame["y"], frame["a"] = np.where(flip, 1 - ds.y, ds.y), ds.a
    frame["split"] = pd.Series(ds.split).map({"train": 0, "val": 1, "test": 2})
    path = tmp_path_factory.mktemp("data") / "toy.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def finished_run(table_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = invoke("run", "--data", table_file, "--methods", "erm,mat,dfr", "--seeds", "0,1,2", "--out", out,
                    "--standardize", *FAST)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "results.json").read_text())


def test_run_by_registered_name(tmp_path):
    result = invoke("run", "--data", "compas", "--methods", "erm", "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["data"] == "compas" and results["n_examples"] > 5000
    assert results["methods"]["erm"]["criterion"] == "va_wga" and 0.5 < results["methods"]["erm"]["test_avg_acc"] < 0.8


def test_data_neither_file_nor_name_says_what_it_can_be(tmp_path):
    one_line_error(invoke("run", "--data", "adulty", "--out", tmp_path / "o"),
                   "adulty: neither a data file (.npz, .csv, .parquet, .pt) nor a registered data set (known: ")
    one_line_error(invoke("run", "--data", tmp_path, "--out", tmp_path / "o"), "memaware featurize")


@pytest.fixture
def no_training(monkeypatch):
    """Counts optimizer loops started: a check done before any work leaves it at zero."""
    calls = []
    monkeypatch.setattr(memaware.train.loop, "optimize", lambda *a, **k: calls.append(1))
    return calls


@pytest.mark.parametrize("case", ["out is a file", "parent is a file"])
def test_run_output_checked_before_training(table_file, tmp_path, no_training, case):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" if case == "out is a file" else tmp_path / "file" / "sub" / "out"
    result = invoke("run", "--data", table_file, "--methods", "erm,mat", "--out", out, *FAST)
    one_line_error(result, f"--out {out}: ")
    assert no_training == [] and (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("command", [
    ["demo", "--out", "{file}"],
    ["featurize", "figure1", "--out", "{file}/f.npz"],
    ["predict", "{dir}", "--method", "erm", "--data", "x.csv", "--out", "{file}/p.csv"],
    ["sweep", "experiments/tiny.yaml", "--out", "{file}"],
    ["download", "waterbirds", "--to", "{file}"],
], ids=["demo", "featurize", "predict", "sweep", "download"])
def test_every_command_checks_its_output_first(tmp_path, no_training, command):
    import memaware.cli.data  # noqa: F401
    import memaware.cli.featurize  # noqa: F401
    import memaware.cli.sweep  # noqa: F401

    (tmp_path / "file").write_text("x")
    args = [a.format(file=tmp_path / "file", dir=tmp_path) for a in command]
    result = runner.invoke(app, args)
    one_line_error(result, str(tmp_path / "file"))
    assert no_training == []


def test_non_numeric_column_is_an_error_not_dropped(tmp_path):
    ds = make_figure1(n=60, d=3, seed=0)
    frame = pd.DataFrame({"f0": ds.x[:, 0], "f1": ds.x[:, 1], "city": ["Paris", "Oslo"] * (len(ds.y) // 2), "y": ds.y,
                          "split": ds.split})
    frame.to_csv(tmp_path / "d.csv", index=False)
    one_line_error(invoke("run", "--data", tmp_path / "d.csv", "--out", tmp_path / "o", *FAST),
                   "column 'city' is not numeric (e.g. 'Paris'): choose the feature columns with --features, "
                   "or leave it out with --ignore city")
    result = invoke("run", "--data", tmp_path / "d.csv", "--ignore", "city", "--methods", "erm", "--out",
                    tmp_path / "o", *FAST)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["feature_names"] == ["f0", "f1"] and results["n_features"] == 2


def test_features_option_on_an_array_file_is_an_error(tmp_path):
    path = save(make_figure1(n=60, d=3, seed=0), tmp_path / "d.npz")
    one_line_error(invoke("run", "--data", path, "--features", "f0", "--out", tmp_path / "o", *FAST),
                   "--features chooses columns of .csv and .parquet files")


def test_results_record_features_and_seeds(finished_run):
    out, results = finished_run
    assert results["feature_names"] == [f"feat{i}" for i in range(12)] and results["seeds"] == [0, 1, 2]
    mat = results["methods"]["mat"]
    per_seed = [mat["per_seed"][s]["test_wga"] for s in ("0", "1", "2")]
    assert len(set(per_seed)) > 1  # the seeds differ (batches and initialisation)
    assert mat["test_wga"] == pytest.approx(np.mean(per_seed))
    assert mat["std"]["test_wga"] == pytest.approx(np.std(per_seed, ddof=1))
    assert mat["test_group_acc"]["0,1"] == pytest.approx(np.mean([mat["per_seed"][s]["test_group_acc"]["0,1"]
                                                                  for s in ("0", "1", "2")]))
    history = json.loads((out / "history.json").read_text())
    assert set(history["mat"]) == {"0", "1", "2"}


def test_multi_seed_table_prints_mean_and_std(table_file, tmp_path):
    result = invoke("run", "--data", table_file, "--methods", "erm", "--seeds", "0,1", "--out", tmp_path / "o", *FAST)
    assert result.exit_code == 0 and "mean ± std over seeds 0, 1" in result.stdout and "seed 1" in result.stdout


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("method", ["mat", "dfr"])
def test_predict_on_the_training_file_reproduces_results(finished_run, table_file, tmp_path, suffix, method):
    out, results = finished_run
    preds = tmp_path / f"p{suffix}"
    result = invoke("predict", out, "--method", method, "--seed", "1", "--data", table_file, "--out", preds)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(preds) if suffix == ".csv" else pd.read_parquet(preds)
    entry = results["methods"][method]["per_seed"]["1"]
    for split in ("val", "test"):
        rows = frame[frame["split"] == split]
        assert (rows["pred"] == rows["y"]).mean() == pytest.approx(entry[f"{split}_avg_acc"], abs=1e-6)
    saved = pd.read_parquet(out / "predictions" / method / "seed-1.parquet")
    assert np.array_equal(saved.sort_values("index")["pred"].to_numpy(), frame["pred"].to_numpy())
    assert {"index", "split", "y", "a", "pred", "prob_0", "prob_1", "inferred"} <= set(saved.columns)


def test_saved_model_loads_weights_only_and_predicts_raw_features(finished_run, table_file):
    import torch

    from memaware.saved import load_model, model_path

    out, _ = finished_run
    payload = torch.load(model_path(out, "erm", 0), weights_only=True)
    assert payload["meta"]["feature_names"][0] == "feat0" and payload["meta"]["arch"] == "linear"
    model = load_model(out, "erm")
    frame = pd.read_csv(table_file)
    logits = model(torch.as_tensor(frame[payload["meta"]["feature_names"]].to_numpy(np.float32)))
    saved = pd.read_parquet(out / "predictions" / "erm" / "seed-0.parquet").sort_values("index")
    assert np.array_equal(logits.argmax(1).numpy(), saved["pred"].to_numpy())


def test_predict_with_different_columns_is_a_clear_error(finished_run, table_file, tmp_path):
    out, _ = finished_run
    pd.read_csv(table_file).drop(columns=["feat3"]).to_csv(tmp_path / "other.csv", index=False)
    one_line_error(invoke("predict", out, "--method", "erm", "--data", tmp_path / "other.csv", "--out",
                          tmp_path / "p.csv"), "missing feature column 'feat3' that the model was trained on")
    one_line_error(invoke("predict", out, "--method", "nope", "--data", table_file, "--out", tmp_path / "p.csv"),
                   "no saved model (saved methods: dfr, erm, mat; seeds: 0, 1, 2)")
    assert not (tmp_path / "p.csv").exists()


def test_version_and_python_dash_m():
    assert invoke("--version").stdout.strip() == f"memaware {__version__}"
    proc = subprocess.run([sys.executable, "-m", "memaware", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"memaware {__version__}"


def test_help_does_not_import_torch():
    code = "import sys\nfrom memaware.cli import register_commands\nregister_commands()\nprint('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


def test_split_codes_and_names_are_accepted_by_every_format(tmp_path):
    import torch

    from memaware.data import load

    ds = make_figure1(n=60, d=3, seed=0)
    codes = pd.Series(ds.split).map({"train": 0, "val": 1, "test": 2}).to_numpy()
    np.savez(tmp_path / "codes.npz", x=ds.x, y=ds.y, split=codes)
    torch.save({"x": torch.tensor(ds.x), "y": torch.tensor(ds.y), "split": torch.tensor(codes)}, tmp_path / "codes.pt")
    frame = pd.DataFrame({"f0": ds.x[:, 0], "y": ds.y, "split": codes})
    frame.to_csv(tmp_path / "codes.csv", index=False)
    frame.to_parquet(tmp_path / "codes.parquet")
    for name in ("codes.npz", "codes.pt", "codes.csv", "codes.parquet"):
        assert np.array_equal(load(tmp_path / name).split, ds.split), name


def test_a_named_data_set_can_be_standardized_on_its_train_split():
    from memaware.data.registry import load_dataset

    raw = load_dataset("figure1", n=50, d=6, seed=0)
    data = load_dataset("figure1", n=50, d=6, seed=0, standardize=True)
    train = data.x[data.mask("train")]
    assert np.allclose(train.mean(0), 0, atol=1e-5) and np.allclose(train.std(0), 1, atol=1e-4)
    assert not np.allclose(raw.x[raw.mask("train")].std(0), 1, atol=1e-2)


def test_running_again_into_the_same_folder_replaces_its_outputs(table_file, tmp_path):
    out = tmp_path / "out"
    assert invoke("run", "--data", table_file, "--methods", "erm,mat", "--out", out, *FAST).exit_code == 0
    result = invoke("run", "--data", table_file, "--methods", "erm", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert set(json.loads((out / "results.json").read_text())["methods"]) == {"erm"}
    assert sorted(p.name for p in (out / "models").iterdir()) == ["erm"]
