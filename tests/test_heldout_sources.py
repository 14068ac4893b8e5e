"""Phase-1 sources beyond XRM, and MAT on the multi-class variant."""
import torch
from typer.testing import CliRunner

import memaware as mw
import memaware.cli.core  # noqa: F401
from memaware.cli import app
from memaware.data import make_figure1, make_multiclass
from memaware.demo import FIGURE1_CONFIG


def minority_mask(data):
    train = data.mask("train")
    return torch.as_tensor(data.a[train] != data.y[train])


def test_crossfit_infers_the_minority_and_mat_uses_its_logits(device):
    data = make_figure1(n=400, d=600, sigma=0.5, seed=0)
    config = mw.TrainConfig(steps=500, checkpoint_freq=0, device=device, **FIGURE1_CONFIG)
    heldout = mw.crossfit(data, folds=4, config=config)
    minority, inferred = minority_mask(data), heldout.inferred["train"].bool()
    hits = int((minority & inferred).sum())
    assert hits / int(inferred.sum()) >= 0.95 and hits / int(minority.sum()) >= 0.95
    assert heldout.logits.shape == (400, 2) and set(heldout.inferred) == {"train", "val", "test"}
    mat = mw.fit(data, "mat", config, heldout=heldout).history[-1]["test"]
    erm = mw.fit(data, "erm", config).history[-1]["test"]
    assert erm["wga"] <= 0.2 and mat["wga"] >= 0.85


def test_mat_improves_worst_group_on_three_classes(device):
    data = make_multiclass(n=600, n_classes=3, d=600, sigma=0.5, seed=0)
    config = mw.TrainConfig(steps=500, checkpoint_freq=0, device=device, **FIGURE1_CONFIG)
    heldout = mw.xrm(data, config)
    assert not heldout.degenerate
    erm = mw.fit(data, "erm", config).history[-1]["test"]
    mat = mw.fit(data, "mat", config, heldout=heldout).history[-1]["test"]
    assert erm["wga"] <= 0.1 and mat["wga"] >= erm["wga"] + 0.3
    assert mat["avg_acc"] >= erm["avg_acc"] + 0.15


def test_cli_crossfit_and_methods_listing(tmp_path):
    path = mw.data.save(make_figure1(n=120, d=30, seed=0), tmp_path / "toy.parquet")
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--data", str(path), "--methods", "mat", "--heldout", "crossfit",
                                 "--folds", "3", "--steps", "30", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert '"source": "crossfit3"' in (tmp_path / "out" / "results.json").read_text()
    listing = runner.invoke(app, ["methods"])
    assert listing.exit_code == 0 and "xrm+groupdro" in listing.stdout and "tau=0.1" in listing.stdout
