"""Memorization scores: known answers for the estimators, and on the Figure-1 problem (where ERM is known to
memorize the minority through the noise) the scores single out the minority for ERM, less so for MAT, and
the held-in/held-out gap does not single it out without noise."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import memaware as mw
import memaware.cli.analyze  # noqa: F401  (registers the commands)
from memaware.analyze import TrainedMethod, analyze, crossfit_gap, feldman_zhang, heldout_gap, self_influence
from memaware.analyze.regression import fit_regression
from memaware.analyze.scores import (fold_masks, half_masks, influence_beyond_group, last_layer_grad_norms,
                                     train_subset)
from memaware.analyze.summary import minority_aucs, ranking_auc
from memaware.cli import app
from memaware.data import make_figure1
from memaware.errors import MemawareError

CONFIG = mw.TrainConfig(steps=500, lr=0.01, momentum=0.0, batch_size=None, bias=False, checkpoint_freq=50)


def minority(data):
    train = data.mask("train")
    return data.a[train] != data.y[train]


@pytest.fixture(scope="module")
def noisy():
    data = make_figure1(n=200, d=200, sigma=0.5, seed=0)
    return data, mw.xrm(data, CONFIG)


def per_example_gradients(model, x, y):
    grads = []
    for xi, yi in zip(x, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        grads.append(torch.cat([model[2].weight.grad.flatten(), model[2].bias.grad]))
    return torch.stack(grads)


def test_last_layer_gradients_match_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y, groups = torch.randn(7, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 1, 0, 2])
    g = per_example_gradients(model, x, y)
    dots = g @ g.T
    assert torch.allclose(last_layer_grad_norms(model, x, y), dots.diag(), rtol=1e-4)
    beyond = []
    for i in range(len(x)):
        peers = [j for j in range(len(x)) if groups[j] == groups[i] and j != i]
        beyond.append(dots[i, i] - (dots[i, peers].mean() if peers else 0))
    assert torch.allclose(influence_beyond_group(model, x, y, groups), torch.stack(beyond), rtol=1e-4, atol=1e-6)


def test_heldout_gap_and_ranking_auc_known_answers():
    y = torch.tensor([0, 1])
    heldin, heldout = torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    p = 1 / (1 + np.exp(-2))
    assert np.allclose(heldout_gap(heldin, heldout, y).numpy(), [p - 0.5, 0.5 - p], atol=1e-6)
    assert ranking_auc(np.array([3.0, 2.0, 1.0, np.nan]), np.array([1, 0, 0, 1])) == 1.0
    assert ranking_auc(np.array([1.0, 1.0, 1.0]), np.array([1, 0, 0])) == 0.5


def test_folds_hold_each_example_out_once_and_halves_keep_half():
    folds = fold_masks(10, 5, seed=0)
    assert folds.shape == (5, 10) and ((~folds).sum(0) == 1).all() and ((~folds).sum(1) == 2).all()
    halves = half_masks(11, 4, seed=0)
    assert (halves.sum(1) == 5).all() and not (halves == halves[0]).all()
    with pytest.raises(MemawareError, match="at least 2 folds"):
        fold_masks(10, 1, seed=0)


def test_train_subset_keeps_evaluation_splits_and_slices_heldout(noisy):
    data, heldout = noisy
    keep = np.zeros(200, dtype=bool)
    keep[:50] = True
    sub, sub_heldout = train_subset(data, keep, heldout)
    assert sub.mask("train").sum() == 50 and sub.mask("test").sum() == 200
    assert torch.equal(sub_heldout.logits, heldout.logits[:50])
    assert np.array_equal(sub.x[sub.mask("train")], data.x[data.mask("train")][:50])


def test_erm_scores_rank_the_minority_first_and_mat_lowers_them(noisy):
    data, heldout = noisy
    is_minority = minority(data)
    gap = {m: crossfit_gap(data, m, CONFIG, 5, heldout, **hp).numpy() for m, hp in (("erm", {}), ("mat", {"tau": 0.1}))}
    influence = {m: self_influence(data, m, CONFIG, heldout, **hp)[0].numpy()
                 for m, hp in (("erm", {}), ("mat", {"tau": 0.1}))}
    fz = feldman_zhang(data, "erm", CONFIG, 8, heldout).numpy()
    assert ranking_auc(gap["erm"], is_minority) >= 0.9
    assert ranking_auc(influence["erm"], is_minority) >= 0.9
    assert ranking_auc(fz, is_minority) >= 0.9
    assert gap["erm"][is_minority].mean() > 0.25 > np.abs(gap["erm"][~is_minority]).mean()
    assert gap["mat"][is_minority].mean() < 0.6 * gap["erm"][is_minority].mean()
    assert influence["mat"][is_minority].mean() < 0.5 * influence["erm"][is_minority].mean()


def test_without_noise_the_gap_does_not_single_out_the_minority():
    """sigma = 0: no per-example dimensions to memorize with, so ERM has to learn the core feature and
    models that did not see a minority example predict it as well as those that did."""
    data = make_figure1(n=200, d=200, sigma=0.0, seed=0)
    gap = crossfit_gap(data, "erm", CONFIG, 5).numpy()
    assert gap[minority(data)].mean() < 0.1
    assert (gap > 0.25).mean() == 0


@pytest.fixture(scope="module")
def clean_influence():
    """ERM's self-influence without noise: beyond its group (the default) and raw."""
    data = make_figure1(n=200, d=200, sigma=0.0, seed=0)
    return data, {relative: self_influence(data, "erm", CONFIG, relative=relative)[0].numpy()
                  for relative in (True, False)}


def test_without_noise_self_influence_does_not_single_out_the_minority(noisy, clean_influence):
    """sigma = 0: a minority example is fit through the core feature its group shares, so its influence on
    itself is the influence it has on its group: self-influence beyond the group is near 0 for everyone,
    a small fraction of what ERM's minority gets with noise, and ranks the minority near chance."""
    data, influence = clean_influence
    with_noise = self_influence(*noisy[:1], "erm", CONFIG)[0].numpy()[minority(noisy[0])].mean()
    assert 0.3 < ranking_auc(influence[True], minority(data)) < 0.7
    assert influence[True][minority(data)].mean() < 0.1 * with_noise


def test_raw_self_influence_also_ranks_hard_unmemorized_examples_high(clean_influence):
    """Plain TracIn measures how long an example's loss stays high, not only memorization: at sigma = 0
    the minority is learned late through the core feature and still scores highest (docs/memorization.md)."""
    data, influence = clean_influence
    assert ranking_auc(influence[False], minority(data)) > 0.9


def test_analysis_tables_verdicts_and_files(noisy, tmp_path):
    data, heldout = noisy
    train_x = torch.as_tensor(data.x[data.mask("train")])
    erm = mw.fit(data, "erm", CONFIG)
    methods = [TrainedMethod("erm", "erm", CONFIG, {}, erm.model(train_x).detach()),
               TrainedMethod("mat", "mat", CONFIG, {"tau": 0.1})]
    result = analyze(data, methods, heldout, ("crossfit_gap", "self_influence", "phase1_gap"), folds=3, top=2)
    assert set(result.frame.columns) >= {"method", "index", "split", "y", "a", "group", "inferred_group",
                                         "crossfit_gap", "self_influence"}
    assert result.frame["phase1_gap"].notna().sum() == 200  # only erm has selected-model logits
    assert len(result.frame) == 400 and result.top.groupby(["method", "group"]).size().max() == 2
    lines = dict((line.split(":")[0], line) for line in result.lines)
    assert lines["erm, group 0,1 (n=11)"].endswith(": memorized")
    assert lines["erm, group 0,0 (n=78)"].endswith(": not memorized")
    assert minority_aucs(result.frame)["erm"]["crossfit_gap"] >= 0.9
    written = result.write(tmp_path)
    assert {p.name for p in written} == {"memorization.parquet", "groups.csv", "top.csv", "analysis.json",
                                         "memorization.png"}
    assert json.loads((tmp_path / "analysis.json").read_text())["verdicts"] == result.lines


def test_self_influence_trains_a_method_with_its_own_groups_hyperparameter(noisy):
    """A method's hyperparameter named `groups` (xrm+groupdro's: inferred, recorded in every run of it)
    reaches its training, apart from the peer groups that self-influence compares an example with."""
    data, heldout = noisy
    influence, run = self_influence(data, "xrm+groupdro", CONFIG.model_copy(update={"steps": 50}), heldout,
                                    groups="inferred")
    assert run.hparams["groups"] == "inferred" and run.setting["train_groups"] == "inferred"
    assert len(influence) == 200 and torch.isfinite(influence).all()


def test_self_influence_follows_the_run_that_fit_takes(noisy):
    """The scores follow the run `fit` takes with the same arguments (its initial weights, its batches),
    not another run of the same configuration."""
    data, heldout = noisy
    config = CONFIG.model_copy(update={"steps": 60, "batch_size": 32, "bias": True, "zero_init_head": False})
    _, followed = self_influence(data, "mat", config, heldout, tau=0.1)
    plain = mw.fit(data, "mat", config, heldout, tau=0.1)
    assert json.dumps(followed.history) == json.dumps(plain.history)


def test_unknown_score_is_a_one_line_error(noisy):
    data, heldout = noisy
    with pytest.raises(MemawareError, match="unknown score 'x'"):
        analyze(data, [TrainedMethod("erm", "erm", CONFIG)], heldout, scores=("x",))


def test_regression_without_extra_dimensions_bends_the_curve_through_the_noise():
    """Figure 3: with per-example dimensions (sigma = 1e-3) the MLP fits the 20 points to near-zero loss
    and its curve over x stays smooth; without them (sigma = 0) it must bend the curve through every noisy
    point, so it strays further from the true function."""
    with_dims, without = fit_regression(1e-3, steps=3000), fit_regression(0.0, steps=3000)
    assert with_dims.train_mse < 1e-4 and with_dims.test_mse < 0.03
    assert without.test_mse > 1.5 * with_dims.test_mse


def test_reproduce_figure3_writes_the_png_and_its_numbers(tmp_path):
    result = CliRunner().invoke(app, ["reproduce", "figure3", "--out", str(tmp_path / "f3"), "--steps", "200"])
    assert result.exit_code == 0, result.output
    numbers = json.loads((tmp_path / "f3" / "figure3.json").read_text())
    assert [f["sigma"] for f in numbers["fits"]] == [1e-4, 1e-3, 0.0] and len(numbers["points"]["x"]) == 20
    curves = (tmp_path / "f3" / "curves.csv").read_text().splitlines()
    assert curves[0] == "x,true,sigma=0.0001,sigma=0.001,sigma=0" and len(curves) == 282
    assert (tmp_path / "f3" / "figure3.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["figure4"], "unknown figure 'figure4' (known: figure1, figure2, figure3)"),
    (["figure2", "--dataset", "nope"], "unknown data set 'nope'"),
], ids=["figure", "dataset"])
def test_reproduce_bad_input_is_a_one_line_error(tmp_path, args, message):
    result = CliRunner().invoke(app, ["reproduce", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "out").exists()


def test_without_group_labels_the_summary_uses_phase_1_inferred_groups(noisy):
    data, heldout = noisy
    unlabelled = replace(data, a=None)
    result = analyze(unlabelled, [TrainedMethod("erm", "erm", CONFIG)], heldout, ("crossfit_gap",), folds=5)
    assert "a" not in result.frame and result.settings["groups"] == "inferred_group"
    verdicts = {line.split(" (")[0]: line for line in result.lines}
    assert set(verdicts) == {f"erm, inferred group {y},{m}" for y in (0, 1) for m in (0, 1)}
    assert verdicts["erm, inferred group 0,1"].endswith(": memorized")
    assert verdicts["erm, inferred group 0,0"].endswith(": not memorized")
