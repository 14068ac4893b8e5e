"""Sweeps over layout folders with a backbone: the network families, the experiment schema's checks, a tiny
CNN sweep that writes its runs and table and resumes without redoing finished runs."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_finetune import image_folder, text_folder
from typer.testing import CliRunner

import memaware.cli.analyze  # noqa: F401  (registers the command)
import memaware.cli.sweep  # noqa: F401
from memaware.cli import app
from memaware.errors import MemawareError
from memaware.sweep import store
from memaware.sweep.experiment import validate
from memaware.sweep.runner import RunSpec
from memaware.sweep.space import draw

runner = CliRunner()


def experiment(folder, **entry) -> dict:
    """Two combinations of ERM and MAT, seeds 0 and 1, on a 16 px CNN trained for 4 steps."""
    dataset = {"name": "images", "args": {"root": str(folder)}, "backbone": {"name": "cnn", "image_size": 16},
               "train": {"steps": 4, "checkpoint_freq": 2, "batch_size": 8}, "phase1": {"steps": 4}, **entry}
    return {"name": "tiny-cnn", "datasets": [dataset], "methods": ["erm", "mat"], "train": {"device": "cpu"},
            "search": {"combinations": 2, "seeds": [0, 1], "criteria": ["va_wga", "va_gi_wga"]},
            "report": {"formats": ["md"]}}


def sweep(path, out, *args):
    return runner.invoke(app, ["sweep", str(path), "--out", str(out), *args])


def finished(out) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/*/done")}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("netsweep")
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment(image_folder(root / "imgs", n=32))))
    result = sweep(path, root / "out", "--engine", "batched")
    assert result.exit_code == 0, result.output
    return path, root / "out", result


def test_a_backbone_sweep_trains_networks_one_at_a_time_and_writes_runs_and_table(swept):
    _, out, result = swept
    assert "batched engine: images trains one run at a time (a whole network, backbone cnn" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["method"], r["criterion"]) for r in summary["results"]} == {
        (m, c) for m in ("erm", "mat") for c in ("va_wga", "va_gi_wga")}
    assert all(len(r["runs"]) == 2 and not r["failed"] for r in summary["results"])
    specs = [json.loads(p.read_text())["spec"]["run"] for p in (out / "runs").glob("*/spec.json")]
    assert 4 < len(specs) <= 8 and all(s["network"]["name"] == "cnn" and s["dataset"] == "images" for s in specs)
    assert {(s["train"]["optimizer"], s["train"]["steps"]) for s in specs} == {("adam", 4)}  # the cnn family
    assert {s["train"]["lr"] for s in specs} == {1e-3, draw("cnn", "erm", 1)["train"]["lr"]}
    phase1 = json.loads(next((out / "phase1").glob("*/spec.json")).read_text())["spec"]["phase1"]
    assert phase1["network"]["image_size"] == 16 and len(list((out / "phase1").iterdir())) == 1
    assert all((run / "checkpoint-va_wga.pt").is_file() for run in (out / "runs").iterdir())
    assert "| mat |" in (out / "report" / "table.md").read_text()


def test_a_backbone_sweep_resumes_without_redoing_finished_runs(swept):
    path, out, _ = swept
    before, summary = finished(out), (out / "summary.json").read_text()
    interrupted = next(iter(sorted((out / "runs").iterdir())))
    (interrupted / "done").unlink()  # as a kill during that run leaves it
    result = sweep(path, out)
    assert result.exit_code == 0, result.output
    after = finished(out)
    assert set(after) == set(before)
    assert {k for k in after if after[k] != before[k]} == {interrupted.name}  # only the unfinished run trained
    assert json.loads((out / "summary.json").read_text()) == json.loads(summary)


def test_analyze_scores_a_network_sweep_run_with_the_network_it_selected(swept, tmp_path):
    """phase1_gap from the run's selected checkpoint: p(y) rebuilt from the gap and phase 1's held-out p(y)
    gives, in each group, the train accuracy that the run recorded at its selected step."""
    _, out, _ = swept
    run = next(p.parent for p in sorted(out.glob("runs/*/spec.json"))
               if json.loads(p.read_text())["spec"]["run"]["network"])
    result = runner.invoke(app, ["analyze", str(run), "--out", str(tmp_path / "a")])  # default: phase1_gap
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "a" / "memorization.parquet").sort_values("index")
    spec = json.loads((run / "spec.json").read_text())["spec"]["run"]
    heldout = torch.as_tensor(np.load(out / "phase1" / spec["phase1"] / "heldout.npz")["logits"], dtype=torch.float64)
    y = frame["y"].to_numpy()
    own = frame["phase1_gap"].to_numpy() + torch.softmax(heldout, 1).numpy()[np.arange(len(y)), y]
    step = json.loads((run / "best.json").read_text())["va_wga"]["step"]
    record = next(r for r in map(json.loads, (run / "history.jsonl").read_text().splitlines()) if r["step"] == step)
    correct = pd.Series(own > 0.5).groupby(frame["group"].to_numpy()).mean()
    assert correct.to_dict() == pytest.approx(record["train"]["group_acc"])
    top = pd.read_csv(tmp_path / "a" / "top.csv")
    assert top["item"].tolist() == [f"{k}.png" for k in top["index"]]
    result = runner.invoke(app, ["analyze", str(run), "--scores", "crossfit_gap", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "fine-tunes the network (cnn) many times" in result.stderr
    assert not (tmp_path / "b").exists()


def test_a_backbone_sweep_cross_fits_networks_and_trains_dfr_val_and_eiil(tmp_path):
    raw = {**experiment(image_folder(tmp_path / "imgs", n=32)), "methods": ["mat", "dfr-val", "eiil+groupdro"],
           "phase1": {"source": "crossfit", "folds": 2}, "search": {"combinations": 1, "seeds": [0],
                                                                   "criteria": ["va_wga"]}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    result = sweep(tmp_path / "exp.yaml", tmp_path / "out")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {r["method"] for r in summary["results"]} == {"mat", "dfr-val", "eiil+groupdro"}
    assert all(len(r["runs"]) == 1 and not r["failed"] for r in summary["results"])
    phase1 = json.loads(next((tmp_path / "out" / "phase1").glob("*/spec.json")).read_text())["spec"]["phase1"]
    assert (phase1["source"], phase1["folds"], phase1["network"]["name"]) == ("crossfit", 2, "cnn")


def test_runs_on_features_keep_their_keys():
    spec = RunSpec("figure1", {"n": 60}, "erm", {}, {"steps": 3, "seed": 0}, None)
    before = {"dataset": "figure1", "dataset_args": {"n": 60}, "method": "erm", "hparams": {},
              "train": {"steps": 3, "seed": 0}, "phase1": None, "version": 1}
    assert spec.key == store.spec_key({"run": before})
    assert RunSpec(*before.values(), network={"name": "cnn"}).key != spec.key


def test_network_families_fix_the_optimizer_and_draw_from_the_reference_ranges():
    resnet, bert = draw("resnet", "erm", 0)["train"], draw("bert", "erm", 0)["train"]
    assert (resnet["optimizer"], resnet["momentum"], resnet["lr"], resnet["weight_decay"]) == ("sgd", 0.9, 1e-3, 1e-4)
    assert (bert["optimizer"], bert["lr_schedule"], bert["grad_clip"], bert["lr"]) == ("adamw", "linear", 1.0, 2e-5)
    assert (draw("cnn", "erm", 0)["train"]["optimizer"], draw("cnn", "erm", 0)["train"]["lr"]) == ("adam", 1e-3)
    for i in range(1, 30):
        resnet, bert, cnn = (draw(f, "mat", i)["train"] for f in ("resnet", "bert", "cnn"))
        assert 1e-5 <= resnet["lr"] <= 1e-3 and 32 <= resnet["batch_size"] <= 128
        assert 1e-6 <= resnet["weight_decay"] <= 1e-3 and resnet["optimizer"] == "sgd"
        assert 1e-6 <= bert["lr"] <= 1e-4 and 16 <= bert["batch_size"] <= 64 and bert["grad_clip"] == 1.0
        assert 1e-4 <= cnn["lr"] <= 10 ** -2.5 and 32 <= cnn["batch_size"] <= 128 and cnn["optimizer"] == "adam"


def test_the_family_defaults_to_the_backbones_kind(tmp_path):
    cnn = validate(experiment(tmp_path), "exp.yaml").datasets[0]
    pretrained = validate(experiment(tmp_path, backbone={"name": "efficientnet_lite0"}), "exp.yaml").datasets[0]
    texts = validate(experiment(tmp_path, name="texts", backbone={"name": "minilm"}), "exp.yaml").datasets[0]
    assert (cnn.family, pretrained.family, texts.family) == ("cnn", "resnet", "bert")
    assert validate({**experiment(tmp_path), "datasets": [{"name": "figure1"}]}, "e").datasets[0].family == "linear"


@pytest.mark.parametrize("edit, message", [
    ({"backbone": None}, "datasets.0: 'images' is a layout folder: give it a backbone"),
    ({"name": "figure1"}, "datasets.0: a backbone trains on a layout folder, and 'figure1' is not a layout"),
    ({"backbone": {"name": "resnet9"}}, "datasets.0.backbone.name: unknown backbone 'resnet9'"),
    ({"backbone": {"name": "timm:resnet18"}}, "backbone 'timm:resnet18' needs weights: FILE"),
    ({"backbone": {"name": "cnn", "image_size": 4}}, "datasets.0.backbone.image_size"),
    ({"backbone": {"name": "cnn", "epochs": 3}}, "datasets.0.backbone.epochs: Extra inputs are not permitted"),
    ({"family": "linear"}, "family 'linear' trains a head on features; a backbone trains with resnet, cnn, bert"),
    ({"name": "texts"}, "backbone 'cnn' takes images, but layout 'texts' holds texts"),
    ({"features": "resnet"}, "datasets.0: family 'resnet' fine-tunes a whole network: give the data set a backbone"),
], ids=["no-backbone", "not-a-layout", "unknown", "no-weights", "small", "extra", "family", "modality",
        "resnet-on-features"])
def test_bad_backbone_entries_are_one_line_errors_naming_the_field(tmp_path, edit, message):
    raw = experiment(tmp_path)
    entry = raw["datasets"][0]
    if "features" in edit:
        raw["datasets"][0] = {"name": "figure1", "family": edit["features"]}
    else:
        entry.update(edit)
        if entry["backbone"] is None:
            del entry["backbone"]
    with pytest.raises(MemawareError) as err:
        validate(raw, "exp.yaml")
    assert str(err.value).startswith("exp.yaml: ") and message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_folder_stops_the_sweep_before_any_run(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment(tmp_path / "nowhere")))
    result = sweep(path, tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "nowhere: not a images folder" in lines[0], result.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_texts_layout_with_a_text_backbone_validates(tmp_path):
    raw = experiment(text_folder(tmp_path / "t"), name="texts", backbone={"name": "minilm", "max_length": 16})
    entry = validate(raw, "exp.yaml").datasets[0]
    assert entry.network == {"name": "minilm", "weights": None, "image_size": None, "max_length": 16,
                             "phase1_finetune": False, "phase1_features": None, "pretrained": True}
