"""Saved networks of `memaware run --backbone`: models/ and predictions/ as for features, `memaware
predict` rebuilding the network from its saved recipe, and `memaware analyze` scoring it from them."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from test_finetune import FAST, image_folder, invoke, text_folder

import memaware.cli.analyze  # noqa: F401  (registers the command)
import memaware.cli.predict  # noqa: F401
from memaware.errors import MemawareError
from memaware.saved import canonical_state, load_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A CNN run (erm, mat, and dfr, whose predictor is a wrapped model) over two seeds on a tiny folder."""
    root = tmp_path_factory.mktemp("saved")
    folder, out = image_folder(root / "imgs"), root / "run"
    result = invoke("run", "--data", folder, "--backbone", "cnn", "--methods", "erm,mat,dfr", "--seeds", "0,1",
                    "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    return folder, out, json.loads((out / "results.json").read_text())


def test_a_backbone_run_saves_each_network_and_its_predictions_with_file_names(trained):
    folder, out, results = trained
    for method in ("erm", "mat", "dfr"):
        for seed in (0, 1):
            model = load_model(out, method, seed)
            assert model.meta["network"]["backbone"] == "cnn" and model.meta["network"]["image_size"] == 16
            assert model.meta["network"]["layout"] == "images" and model.meta["n_classes"] == 2
            frame = pd.read_parquet(out / "predictions" / method / f"seed-{seed}.parquet")
            assert len(frame) == 64 and frame["file"].tolist() == [f"{k}.png" for k in frame["index"]]
            for split in ("val", "test"):
                rows = frame[frame["split"] == split]
                accuracy = float((rows["pred"] == rows["y"]).mean())
                assert abs(accuracy - results["methods"][method]["per_seed"][str(seed)][f"{split}_avg_acc"]) < 1e-6
    weights = torch.load(out / "models" / "erm" / "seed-0.pt", weights_only=True)["model"]
    assert list(weights) == list(load_model(out, "erm").model.state_dict())  # the plain model's names
    assert not torch.equal(load_model(out, "erm", 0).model[1].weight, load_model(out, "erm", 1).model[1].weight)


@pytest.mark.parametrize("method", ["erm", "mat", "dfr"])
def test_predict_rebuilds_the_network_and_reproduces_val_and_test_accuracy(trained, tmp_path, method):
    folder, out, results = trained
    result = invoke("predict", out, "--method", method, "--data", folder, "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "p.csv")
    assert {"index", "split", "y", "a", "file", "pred", "prob_0", "prob_1"} <= set(frame.columns)
    saved = pd.read_parquet(out / "predictions" / method / "seed-0.parquet")
    assert np.allclose(frame["prob_1"], saved["prob_1"], atol=1e-6)
    for split in ("val", "test"):
        rows = frame[frame["split"] == split]
        expected = results["methods"][method]["per_seed"]["0"][f"{split}_avg_acc"]
        assert abs(float((rows["pred"] == rows["y"]).mean()) - expected) < 1e-6
        assert f"{split}: accuracy {expected:.4f}" in result.output


def test_predict_on_a_folder_of_new_images_in_another_layout_order(trained, tmp_path):
    """The same images listed in reverse order: each file gets the prediction it had in the run."""
    folder, out, _ = trained
    meta = pd.read_csv(folder / "metadata.csv").iloc[::-1]
    other = tmp_path / "reversed"
    other.mkdir()
    for name in meta["filename"]:
        (other / name).write_bytes((folder / name).read_bytes())
    meta.to_csv(other / "metadata.csv", index=False)
    assert invoke("predict", out, "--method", "mat", "--data", other, "--out", tmp_path / "p.parquet").exit_code == 0
    fresh = pd.read_parquet(tmp_path / "p.parquet").set_index("file")
    saved = pd.read_parquet(out / "predictions" / "mat" / "seed-0.parquet").set_index("file")
    assert np.allclose(fresh.loc[saved.index, "prob_0"], saved["prob_0"], atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--data", "FILE"], "the model is a cnn network; give a folder of images in a layout"),
    (["--data", "TEXTS"], "backbone 'cnn' takes images, but texts holds texts"),
    (["--data", "EMPTY"], "no known layout found"),
    (["--data", "MISSING"], "missing: no such folder"),
    (["--method", "jtt"], "no saved model (saved methods: dfr, erm, mat; seeds: 0, 1)"),
    (["--seed", "7"], "no saved model"),
], ids=["file", "texts", "no-layout", "missing", "method", "seed"])
def test_predict_bad_input_is_one_line_exit_2_nothing_written(trained, tmp_path, args, message):
    folder, out, _ = trained
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty").mkdir()
    where = {"FILE": tmp_path / "x.csv", "TEXTS": text_folder(tmp_path / "texts"), "EMPTY": tmp_path / "empty",
             "MISSING": tmp_path / "missing"}
    options = {"--method": "erm", "--data": folder, **dict(zip(args[::2], args[1::2]))}
    options = {k: where.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
    result = invoke("predict", out, *[x for kv in options.items() for x in kv], "--out", tmp_path / "p.csv")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "p.csv").exists()


def test_a_network_whose_weights_file_is_gone_is_a_one_line_error(trained, tmp_path):
    _, out, _ = trained
    payload = torch.load(out / "models" / "erm" / "seed-0.pt", weights_only=True)
    payload["meta"]["network"].update(backbone="timm:resnet18", weights=None)
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(MemawareError, match="needs --weights FILE"):
        load_model(tmp_path / "m.pt")


def test_canonical_state_refuses_a_predictor_that_is_not_the_plain_model():
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    wrapped = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(3, 4)), torch.nn.Linear(4, 2))
    assert list(canonical_state(wrapped, fresh, "dfr")) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(MemawareError, match="lff: its predictor does not hold the weights of the plain model"):
        canonical_state(torch.nn.Sequential(torch.nn.Linear(3, 2)), fresh, "lff")


def test_analyze_scores_a_network_run_from_its_predictions_and_phase_1_without_the_folder(trained, tmp_path):
    """phase1_gap of each training image: the network's p(y) in its stored predictions minus phase 1's
    held-out p(y) in heldout.npz; the layout folder is not read again (the run folder alone is enough)."""
    _, out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    results = json.loads((run / "results.json").read_text())
    results["source"]["data"] = str(tmp_path / "gone")
    (run / "results.json").write_text(json.dumps(results))
    result = invoke("analyze", run, "--seed", 1)  # default scores for a network: phase1_gap
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(run / "analysis" / "memorization.parquet")
    heldout = np.load(run / "heldout.npz")["logits"]
    held_p = torch.softmax(torch.as_tensor(heldout, dtype=torch.float64), 1).numpy()
    for method in ("erm", "mat", "dfr"):
        stored = pd.read_parquet(run / "predictions" / method / "seed-1.parquet")
        train = stored[stored["split"] == "train"].sort_values("index")
        own = train[["prob_0", "prob_1"]].to_numpy()[np.arange(len(train)), train["y"].to_numpy()]
        expected = own - held_p[np.arange(len(train)), train["y"].to_numpy()]
        scored = frame[frame["method"] == method].sort_values("index")
        assert scored["index"].tolist() == train["index"].tolist()
        np.testing.assert_allclose(scored["phase1_gap"].to_numpy(), expected, atol=1e-5)
    assert frame["phase1_gap"].std() > 0  # the scores are not all one value
    top = pd.read_csv(run / "analysis" / "top.csv")
    assert top["item"].tolist() == [f"{k}.png" for k in top["index"]]


@pytest.mark.parametrize("methods, scores, message", [
    ("erm,mat", "crossfit_gap", "--scores crossfit_gap: it fine-tunes the network (cnn) many times on parts of "
                                "its folder; a network is scored by phase1_gap (no training) or self_influence"),
    ("erm", "phase1_gap", "phase1_gap needs phase 1's held-out logits (heldout.npz), and this run has none"),
], ids=["subsets", "no-phase-1"])
def test_analyze_refuses_what_a_network_run_cannot_give_in_one_line(trained, tmp_path, methods, scores, message):
    folder, out, _ = trained
    if methods == "erm":
        out = tmp_path / "erm"
        assert invoke("run", "--data", folder, "--backbone", "cnn", "--methods", "erm", "--out", out,
                      *FAST).exit_code == 0
    result = invoke("analyze", out, "--scores", scores, "--out", tmp_path / "a")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "a").exists()


def test_self_influence_follows_the_networks_run_again_step_by_step(trained, tmp_path):
    """self_influence on a network run streams its folder again and fine-tunes the network as the run did
    (the same history, loss for loss); every training image gets a finite score, the same from Python and
    from the CLI."""
    from memaware.analyze import scores
    from memaware.analyze.folders import open_run_folder

    _, out, _ = trained
    folder = open_run_folder(out, seed=0).for_scores(("self_influence",))
    erm = next(m for m in folder.methods if m.label == "erm")
    influence, run = scores.self_influence(folder.data, erm.method, erm.config, folder.heldout)
    stored = json.loads((out / "history.json").read_text())["erm"]["0"]
    assert [(r["step"], r["loss"], r["val"]["avg_acc"]) for r in run.history] == [
        (r["step"], r["loss"], r["val"]["avg_acc"]) for r in stored]
    assert len(influence) == 32 and torch.isfinite(influence).all() and influence.std() > 0
    result = invoke("analyze", out, "--seed", 0, "--scores", "self_influence", "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "a" / "memorization.parquet")
    assert sorted(frame["method"].unique()) == ["dfr", "erm", "mat"] and frame["self_influence"].notna().all()
    np.testing.assert_allclose(frame[frame["method"] == "erm"].sort_values("index")["self_influence"], influence,
                               rtol=1e-5)
