"""`memaware run` on a user's data: results.json keys, and every bad-input case (exit 2, one line, nothing left)."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import memaware.cli.core  # noqa: F401  (registers the commands)
from memaware.cli import app
from memaware.data import make_figure1, save

runner = CliRunner()
FAST = ["--steps", "40", "--checkpoint-freq", "10"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return save(make_figure1(n=120, d=30, seed=0), tmp_path_factory.mktemp("data") / "toy.npz")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_writes_stable_results_keys(data_file, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--data", data_file, "--methods", "erm,mat,groupdro,xrm+groupdro", "--out", out, *FAST,
                    "--param", "mat.tau=0.01")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    for name in ("erm", "mat", "groupdro", "xrm+groupdro"):
        entry = results["methods"][name]
        for key in ("test_wga", "test_avg_acc", "test_group_acc", "val_wga", "val_avg_acc", "criterion",
                    "selected_step", "hparams", "setting"):
            assert key in entry, (name, key)
        assert set(entry["test_group_acc"]) == {"0,0", "0,1", "1,0", "1,1"}
        assert entry["criterion"] == "va_wga"
    assert results["methods"]["mat"]["hparams"]["tau"] == 0.01
    assert results["methods"]["groupdro"]["setting"]["train_groups"] == "true"
    assert results["methods"]["xrm+groupdro"]["setting"]["train_groups"] == "inferred"
    assert results["methods"]["mat"]["setting"]["name"] == "group labels in validation only"
    assert results["info"]["torch"] and results["info"]["device"] == "cpu"
    assert (out / "heldout.npz").exists() and (out / "history.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_run_without_group_labels_selects_on_inferred_groups(tmp_path):
    ds = make_figure1(n=120, d=30, seed=1)
    path = tmp_path / "noa.csv"
    pd.DataFrame({"f0": ds.x[:, 0], "f1": ds.x[:, 1], "y": ds.y, "split": ds.split}).to_csv(path, index=False)
    result = invoke("run", "--data", path, "--methods", "erm,mat", "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "out" / "results.json").read_text())["methods"]["mat"]
    assert entry["criterion"] == "va_gi_wga" and entry["test_wga"] is None
    assert entry["setting"]["name"] == "no group labels anywhere"


def test_user_heldout_logits_file(data_file, tmp_path):
    ds = make_figure1(n=120, d=30, seed=0)
    logits = np.eye(2)[ds.y[ds.mask("train")]] * 3.0
    np.savez(tmp_path / "logits.npz", train=logits)
    result = invoke("run", "--data", data_file, "--methods", "mat", "--heldout", tmp_path / "logits.npz",
                    "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["phase1"]["source"] == "user"


def test_a_runs_own_heldout_npz_is_reused_and_recorded_even_for_erm(data_file, tmp_path):
    """The heldout.npz that a run writes (phase 1's logits and inferred groups) feeds another run's --heldout:
    MAT ends as in the run that trained phase 1; an ERM-only run records it (for memaware analyze)."""
    first = invoke("run", "--data", data_file, "--methods", "erm,mat", "--out", tmp_path / "a", *FAST)
    assert first.exit_code == 0, first.output
    again = invoke("run", "--data", data_file, "--methods", "mat", "--heldout", tmp_path / "a" / "heldout.npz",
                   "--out", tmp_path / "b", *FAST)
    assert again.exit_code == 0, again.output
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("a", "b")]
    assert results[1]["methods"]["mat"]["per_seed"] == results[0]["methods"]["mat"]["per_seed"]
    assert results[1]["phase1"]["source"] == "xrm"
    erm = invoke("run", "--data", data_file, "--methods", "erm", "--heldout", tmp_path / "a" / "heldout.npz",
                 "--out", tmp_path / "c", *FAST)
    assert erm.exit_code == 0, erm.output
    saved = np.load(tmp_path / "c" / "heldout.npz")
    assert np.array_equal(saved["logits"], np.load(tmp_path / "a" / "heldout.npz")["logits"])


def test_a_saved_phase_1_of_other_data_is_one_line(tmp_path):
    small, large = (save(make_figure1(n=n, d=30, seed=0), tmp_path / f"{n}.npz") for n in (120, 160))
    assert invoke("run", "--data", small, "--methods", "erm,mat", "--out", tmp_path / "a", *FAST).exit_code == 0
    result = invoke("run", "--data", large, "--methods", "mat", "--heldout", tmp_path / "a" / "heldout.npz",
                    "--out", tmp_path / "b", *FAST)
    assert result.exit_code == 2 and not (tmp_path / "b").exists()
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'a' / 'heldout.npz'}: a phase 1 of other data: its logits has shape (120, 2), "
        "this data needs (160, 2)"], result.stderr


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_arrays(n=30):
    rng = np.random.default_rng(0)
    return dict(x=rng.normal(size=(n, 4)), y=np.tile([0, 1], n // 2),
                split=np.array(["train"] * 10 + ["val"] * 10 + ["test"] * 10))


def bad_file(tmp_path, case):
    a = good_arrays()
    if case == "missing file":
        return tmp_path / "absent.npz", "no such file"
    if case == "unreadable file":
        (tmp_path / "broken.npz").write_bytes(b"not a zip archive")
        return tmp_path / "broken.npz", "cannot read as .npz"
    if case == "unknown extension":
        (tmp_path / "data.xlsx").write_text("x")
        return tmp_path / "data.xlsx", "unknown extension '.xlsx'"
    if case == "missing y":
        return write_npz(tmp_path / "d.npz", x=a["x"], split=a["split"]), "missing array 'y'"
    if case == "missing split column":
        path = tmp_path / "d.csv"
        pd.DataFrame({"f": a["x"][:, 0], "y": a["y"]}).to_csv(path, index=False)
        return path, "missing column 'split'"
    if case == "NaN feature":
        a["x"][3, 2] = np.nan
        return write_npz(tmp_path / "d.npz", **a), "NaN or infinite values (row 3, feature 2)"
    if case == "infinite feature":
        a["x"][0, 0] = np.inf
        return write_npz(tmp_path / "d.npz", **a), "NaN or infinite"
    if case == "non-integer labels":
        a["y"] = a["y"] + 0.5
        return write_npz(tmp_path / "d.npz", **a), "'y' must hold integer labels, found 0.5"
    if case == "string labels in csv":
        path = tmp_path / "d.csv"
        pd.DataFrame({"f": a["x"][:, 0], "y": ["cat", "dog"] * 15, "split": a["split"]}).to_csv(path, index=False)
        return path, "'y' must hold integer labels, found 'cat'"
    if case == "single class":
        a["y"] = np.zeros(30, int)
        return write_npz(tmp_path / "d.npz", **a), "single class"
    if case == "empty split":
        a["split"] = np.array(["train"] * 20 + ["test"] * 10)
        return write_npz(tmp_path / "d.npz", **a), "split 'val' is empty"
    if case == "different lengths":
        a["y"] = a["y"][:-2]
        return write_npz(tmp_path / "d.npz", **a), "different lengths: x=30, y=28, split=30"
    raise AssertionError(case)


CASES = ["missing file", "unreadable file", "unknown extension", "missing y", "missing split column", "NaN feature",
         "infinite feature", "non-integer labels", "string labels in csv", "single class", "empty split",
         "different lengths"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_error_exit_2_nothing_left(tmp_path, case):
    path, message = bad_file(tmp_path, case)
    out = tmp_path / "out"
    result = invoke("run", "--data", path, "--out", out, *FAST)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert str(path.name) in lines[0] or case == "missing file"
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--methods", "erm,magic"], "unknown method 'magic'"),
    (["--select", "best"], "unknown criterion 'best'"),
    (["--param", "mat.temperature=1"], "unknown hyperparameter 'temperature'"),
    (["--param", "tau=1"], "expected METHOD.NAME=VALUE"),
    (["--lr", "-1"], "--lr"),
    (["--param", "mat.calibration=minibatch"], "calibration must be one of global, batch"),
])
def test_bad_options_exit_2(data_file, tmp_path, args, message):
    result = invoke("run", "--data", data_file, "--out", tmp_path / "out", *FAST, *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_group_method_on_data_without_groups_is_refused(tmp_path):
    path = write_npz(tmp_path / "noa.npz", **good_arrays())
    result = invoke("run", "--data", path, "--methods", "groupdro", "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and "needs true group labels" in result.stderr


def test_installed_entry_point_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "memaware.cli", "run", "--data", str(tmp_path / "x.npz"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'x.npz'}: no such file"]


def test_diverging_training_stops_with_a_clear_error(data_file, tmp_path):
    result = invoke("run", "--data", data_file, "--methods", "erm", "--lr", "1e30", "--momentum", "0.99",
                    "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and "erm: the loss became" in result.stderr and "lower the learning rate" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    ({"val": np.zeros((3, 2))}, "missing array 'train'"),
    ({"train": np.zeros((5, 2))}, "train held-out logits must have shape"),
])
def test_bad_heldout_logits_file(data_file, tmp_path, content, message):
    np.savez(tmp_path / "h.npz", **content)
    result = invoke("run", "--data", data_file, "--methods", "mat", "--heldout", tmp_path / "h.npz",
                    "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 2 and f"{tmp_path / 'h.npz'}: {message}" in result.stderr, result.stderr
