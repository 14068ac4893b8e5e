"""Known answers for the rule of each SubpopBench-style baseline: penalties, weights, sampling, margins, mixing."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import memaware as mw
from memaware.data import Dataset, make_figure1, make_multiclass
from memaware.errors import MemawareError
from memaware.heldout.eiil import eiil
from memaware.methods import create
from memaware.methods.alignment import coral, mmd, pairwise_penalty
from memaware.methods.cnc import contrastive_loss
from memaware.methods.cvar import cvar
from memaware.methods.dfr_val import L1_GRID
from memaware.methods.eiil import eiil_environments
from memaware.methods.focal import focal_loss
from memaware.methods.irm import irm_penalty, irm_scale_gradient
from memaware.methods.ldam import ldam_logits, ldam_margins
from memaware.methods.lisa import selective_partners
from memaware.methods.mixup import mixup_loss
from memaware.methods.reweight import effective_number_weights
from memaware.methods.spare import class_clusters, kmeans, spare_weights
from test_baselines import context, draw_frequencies


LOGITS = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [2.0, -1.0], [0.5, 1.5]])
Y = torch.tensor([0, 0, 1, 1])


def scale_gradient_by_autograd(logits, y):
    scale = torch.tensor(1.0, requires_grad=True)
    return torch.autograd.grad(F.cross_entropy(logits * scale, y), scale)[0]


# IRM
def test_irm_penalty_is_the_squared_scale_gradient_of_each_domain_averaged():
    per_example = torch.stack([scale_gradient_by_autograd(LOGITS[i:i + 1], Y[i:i + 1]) for i in range(4)])
    assert torch.allclose(irm_scale_gradient(LOGITS, Y), per_example, atol=1e-6)
    domains = torch.tensor([0, 1, 1, 0])
    expected = (scale_gradient_by_autograd(LOGITS[[0, 3]], Y[[0, 3]]) ** 2
                + scale_gradient_by_autograd(LOGITS[[1, 2]], Y[[1, 2]]) ** 2) / 2
    assert float(irm_penalty(LOGITS, Y, domains, 3)) == pytest.approx(float(expected), rel=1e-5)


def test_irm_weighs_its_penalty_one_then_lam_after_annealing_and_rescales():
    method = create("irm", lam=10.0, anneal_steps=2)
    groups = Y * 2 + torch.tensor([0, 1, 1, 0])  # domain: the attribute part of (y, a)
    method.setup(context(Y, groups, 4))
    domains = torch.tensor([0, 1, 1, 0])
    risk = (F.cross_entropy(LOGITS[[0, 3]], Y[[0, 3]]) + F.cross_entropy(LOGITS[[1, 2]], Y[[1, 2]])) / 2
    penalty = irm_penalty(LOGITS, Y, domains, 2)
    assert float(method.loss(LOGITS, Y, torch.arange(4))) == pytest.approx(float(risk + penalty), rel=1e-5)
    for _ in range(2):
        method.update(LOGITS, Y, torch.arange(4))
    assert float(method.loss(LOGITS, Y, torch.arange(4))) == pytest.approx(float((risk + 10 * penalty) / 10), rel=1e-5)


# V-REx
def test_vrex_penalises_the_variance_of_the_domain_risks():
    method = create("vrex", lam=4.0, anneal_steps=0)
    method.setup(context([0, 0], groups=[0, 1], n_groups=2))  # one class, two domains
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])  # CE: log 2, log 4
    y = torch.tensor([0, 0])
    mean = (math.log(2) + math.log(4)) / 2
    variance = (math.log(4) - math.log(2)) ** 2 / 4
    assert float(method.loss(logits, y, torch.arange(2))) == pytest.approx((mean + 4 * variance) / 4, rel=1e-6)


# CVaR-DRO
def test_cvar_is_the_mean_of_the_worst_alpha_fraction():
    losses = torch.tensor([0.1, 2.0, 0.3, 4.0, 0.5, 1.0, 0.2, 0.0, 0.4, 3.0])
    assert float(cvar(losses, 0.3)) == pytest.approx((4.0 + 3.0 + 2.0) / 3)
    assert float(cvar(losses, 0.05)) == pytest.approx(4.0)  # at least one example
    assert float(cvar(losses, 1.0)) == pytest.approx(float(losses.mean()))
    method = create("cvar-dro", alpha=0.5)
    method.setup(context(Y))
    ce = F.cross_entropy(LOGITS, Y, reduction="none")
    assert float(method.loss(LOGITS, Y, torch.arange(4))) == pytest.approx(float(ce.topk(2).values.mean()), rel=1e-6)


# Mixup
def test_mixup_on_the_logits_of_a_linear_model_is_input_mixup():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y, partner, lam = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1]), torch.tensor([2, 0, 4, 1, 3]), 0.3
    with torch.no_grad():
        mixed_inputs = model(lam * x + (1 - lam) * x[partner])
        expected = lam * F.cross_entropy(mixed_inputs, y) + (1 - lam) * F.cross_entropy(mixed_inputs, y[partner])
        assert float(mixup_loss(model(x), y, partner, lam)) == pytest.approx(float(expected), rel=1e-5)
        assert float(mixup_loss(model(x), y, partner, 1.0)) == pytest.approx(float(F.cross_entropy(model(x), y)))


def test_mixup_draws_lam_from_beta_alpha_alpha():
    small, large = create("mixup", alpha=0.05), create("mixup", alpha=50.0)
    for m in (small, large):
        m.setup(context(Y))
    near_edges = np.mean([min(lam, 1 - lam) < 0.05 for lam in (small.draw_lam() for _ in range(400))])
    near_half = np.mean([abs(lam - 0.5) < 0.1 for lam in (large.draw_lam() for _ in range(400))])
    assert near_edges > 0.8 and near_half > 0.8


# LISA
def test_lisa_pairs_same_label_other_domain_or_same_domain_other_label():
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    domains = torch.tensor([0, 1, 0, 1, 0, 0])
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        same_label = selective_partners(y, domains, True, g)
        assert (y[same_label] == y).all() and (domains[same_label] != domains).all()
        same_domain = selective_partners(y, domains, False, g)
        assert (domains[same_domain] == domains).all() and (y[same_domain] != y).all()
    y, domains = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])  # no eligible partner: left unmixed
    assert selective_partners(y, domains, False, torch.Generator()).tolist() == [2, 1, 0]
    assert selective_partners(y, domains, True, torch.Generator()).tolist() == [1, 0, 2]


# MMD and CORAL
def test_coral_is_mean_and_covariance_gaps_and_mmd_vanishes_on_equal_samples():
    u = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # mean (1, 1), covariance 4/3 I
    v = u * 2  # mean (2, 2), covariance 16/3 I
    cov_gap = ((16 / 3 - 4 / 3) ** 2 * 2) / 4  # two diagonal entries differ, of four
    assert float(coral(u, v)) == pytest.approx(1.0 + cov_gap, rel=1e-6)
    assert float(mmd(u, u)) == pytest.approx(0.0, abs=1e-6) and float(mmd(u, v)) > 0.1
    features = torch.cat([u, v, u])
    domains = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    expected = (coral(u, v) + coral(u, u) + coral(v, u)) / 3
    assert float(pairwise_penalty(features, domains, coral)) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("name", ["mmd", "coral"])
def test_feature_alignment_changes_an_mlp_and_is_erm_on_a_linear_model(name):
    data = make_figure1(n=80, d=10, seed=0)
    config = mw.TrainConfig(steps=20, batch_size=32, lr=0.1, checkpoint_freq=10)
    assert mw.fit(data, name, config, gamma=10.0).history == mw.fit(data, "erm", config).history
    mlp = config.model_copy(update={"arch": "mlp", "hidden": [8], "zero_init_head": False, "lr": 0.05})
    aligned, erm = mw.fit(data, name, mlp, gamma=10.0).model, mw.fit(data, "erm", mlp).model
    assert not torch.allclose(aligned[1].weight, erm[1].weight)


# Class-imbalance baselines
def test_resample_draws_every_class_equally():
    y = torch.tensor([0] * 6 + [1] * 2 + [2] * 2)
    method = create("resample")
    method.setup(context(y))
    per_class = torch.zeros(3).index_add_(0, y, draw_frequencies(method.sampler(64), 10))
    assert torch.allclose(per_class, torch.full((3,), 1 / 3), atol=0.03)


@pytest.mark.parametrize("name,weights", [
    ("reweight", [0.5, 1.5]),  # 1/n = (1/3, 1), scaled to sum to 2
    ("sqrt-reweight", [2 / (1 + math.sqrt(3)), 2 * math.sqrt(3) / (1 + math.sqrt(3))]),  # 1/sqrt(n)
    ("cbloss", [2 * 0.5 / (0.5 + 0.875), 2 * 0.875 / (0.5 + 0.875)]),  # beta=0.5: (1-b)/(1-b^n) = 0.5/0.875, 0.5/0.5
], ids=["reweight", "sqrt-reweight", "cbloss"])
def test_class_weights_follow_the_counts(name, weights):
    y = torch.tensor([0, 0, 0, 1])
    method = create(name, **({"beta": 0.5} if name == "cbloss" else {}))
    method.setup(context(y))
    assert torch.allclose(method.weights, torch.tensor(weights), atol=1e-6)
    ce = F.cross_entropy(LOGITS, y, reduction="none")
    expected = (torch.tensor(weights)[y] * ce).mean()
    assert float(method.loss(LOGITS, y, torch.arange(4))) == pytest.approx(float(expected), rel=1e-5)


def test_focal_loss_down_weights_confident_examples():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p_y = 1/2, 3/4
    y = torch.tensor([0, 0])
    expected = torch.tensor([0.25 * math.log(2), (1 / 16) * math.log(4 / 3)])
    assert torch.allclose(focal_loss(logits, y, 2.0), expected, atol=1e-6)
    assert torch.allclose(focal_loss(logits, y, 0.0), F.cross_entropy(logits, y, reduction="none"))


def test_balanced_softmax_adds_the_log_class_prior():
    y = torch.tensor([0, 0, 0, 1])
    method = create("balanced-softmax")
    method.setup(context(y))
    expected = F.cross_entropy(LOGITS + torch.log(torch.tensor([0.75, 0.25])), y)
    assert float(method.loss(LOGITS, y, torch.arange(4))) == pytest.approx(float(expected), rel=1e-5)


def test_ldam_margins_scale_with_the_count_to_the_minus_quarter():
    margins = ldam_margins(torch.tensor([16.0, 1.0, 0.0]), 0.5)
    assert torch.allclose(margins, torch.tensor([0.25, 0.5, 0.0]))
    adjusted = ldam_logits(LOGITS[:2], torch.tensor([0, 1]), margins.float(), 30.0)
    expected = 30 * torch.tensor([[-0.25, 0.0], [math.log(3.0), -0.5]])
    assert torch.allclose(adjusted, expected, atol=1e-5)


def test_ldam_reweights_classes_only_after_the_deferred_step():
    y = torch.tensor([0, 0, 0, 1])
    method = create("ldam", max_m=0.5, scale=1.0, drw_start=0.5)
    method.setup(context(y, config=mw.TrainConfig(steps=4)))
    ce = F.cross_entropy(ldam_logits(LOGITS, y, method.margins, 1.0), y, reduction="none")
    assert float(method.loss(LOGITS, y, torch.arange(4))) == pytest.approx(float(ce.mean()), rel=1e-6)
    for _ in range(2):
        method.update(LOGITS, y, torch.arange(4))
    w = effective_number_weights(torch.tensor([3.0, 1.0], dtype=torch.float64), 0.9999).float()[y]
    assert float(method.loss(LOGITS, y, torch.arange(4))) == pytest.approx(float((w * ce).sum() / w.sum()), rel=1e-5)
    assert w[3] > 2.5 * w[0]  # the rare class weighs about 3 times more


# CRT and ReWeightCRT
def test_crt_is_resample_on_a_linear_model_and_retrains_only_the_head_of_an_mlp():
    data = make_multiclass(n=90, n_classes=3, d=12, seed=0)
    config = mw.TrainConfig(steps=10, batch_size=16, checkpoint_freq=5)
    assert mw.fit(data, "crt", config).history == mw.fit(data, "resample", config).history
    assert mw.fit(data, "reweight-crt", config).history == mw.fit(data, "reweight", config).history
    mlp = config.model_copy(update={"arch": "mlp", "hidden": [6], "checkpoint_freq": 0})
    short, long = (mw.fit(data, "crt", mlp.model_copy(update={"steps": s}), first_steps=15) for s in (1, 10))
    for body_a, body_b in zip(short.model[0].parameters(), long.model[0].parameters()):
        assert torch.equal(body_a, body_b) and not body_a.requires_grad
    assert not torch.equal(short.model[1].weight, long.model[1].weight)


# DFR on validation data
def test_dfr_val_fits_the_last_layer_on_balanced_validation_data_not_on_train():
    data = make_figure1(n=200, d=10, seed=0)
    flipped = data.y.copy()
    train = data.mask("train")
    flipped[train] = 1 - flipped[train]  # train labels contradict val and test: only val can teach the rule
    inverted = Dataset(data.x, flipped, data.split, data.a, name="flipped-train")
    config = mw.TrainConfig(steps=200, lr=0.05, momentum=0.0, batch_size=None, checkpoint_freq=0)
    method = create("dfr-val")
    run = mw.fit(inverted, method, config)
    assert run.history[-1]["test"]["avg_acc"] > 0.9
    assert mw.fit(inverted, "erm", config).history[-1]["test"]["avg_acc"] < 0.1
    val = inverted.get("val")
    assert len(set(torch.bincount(val.groups[method.pool]).tolist())) == 1  # group-balanced
    assert float(method.l1) in L1_GRID


def test_dfr_val_needs_validation_groups():
    data = make_figure1(n=40, d=5, seed=0)
    method = create("dfr-val")
    y = torch.as_tensor(data.y[data.mask("train")])
    method.setup(context(y, groups=y * 2, n_groups=4, config=mw.TrainConfig(steps=2)))
    with pytest.raises(MemawareError, match="validation split with true group labels"):
        method.wrap_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5, 2)))


# Correct-n-Contrast
def test_cnc_contrasts_same_class_different_prediction_against_other_class_same_prediction():
    z = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]), dim=1)
    y, spurious, t = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]), 0.5
    sim = (z @ z.T / t).tolist()

    def anchor(i, p, n):  # -log(e^s_ip / (e^s_ip + e^s_in)), one positive and one negative each here
        return -math.log(math.exp(sim[i][p]) / (math.exp(sim[i][p]) + math.exp(sim[i][n])))

    expected = (anchor(0, 1, 2) + anchor(1, 0, 3) + anchor(2, 3, 0) + anchor(3, 2, 1)) / 4
    assert float(contrastive_loss(z, y, spurious, t)) == pytest.approx(expected, rel=1e-5)
    assert float(contrastive_loss(z, y, torch.zeros(4, dtype=torch.long), t)) == 0.0  # no positives


# SPARE
def test_spare_clusters_each_class_and_balances_the_clusters():
    points = torch.tensor([[0.0, 1.0], [0.1, 0.9], [0.05, 0.95], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = kmeans(points[:5], 2, torch.Generator().manual_seed(0))
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4]
    y = torch.tensor([0, 0, 0, 0, 0, 1])
    ids = class_clusters(points, y, 2, 2, torch.Generator().manual_seed(0))
    assert len(set(ids[:3].tolist())) == 1 and ids[3] == ids[4] != ids[0] and ids[5] // 2 == 1
    w = spare_weights(ids, 1.0)
    assert torch.allclose(w, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 2, 1.0], dtype=torch.float64))
    assert torch.allclose(spare_weights(ids, 0.0), torch.ones(6, dtype=torch.float64))


# EIIL
def test_eiil_separates_the_examples_a_reference_model_gets_wrong():
    logits = torch.tensor([[3.0, -3.0]] * 6 + [[-3.0, 3.0]] * 2 + [[2.0, -2.0]] * 4 + [[-2.0, 2.0]] * 3)
    y = torch.tensor([0] * 6 + [0] * 2 + [1] * 4 + [1] * 3)
    wrong = logits.argmax(1) != y
    m = eiil_environments(logits, y, torch.Generator().manual_seed(0))
    assert len(set(m[wrong].tolist())) == 1 and len(set(m[~wrong].tolist())) == 1 and m[wrong][0] != m[~wrong][0]


def test_eiil_groups_train_group_methods_and_serve_as_phase_1():
    data = make_figure1(n=120, d=10, seed=0)
    config = mw.TrainConfig(steps=30, batch_size=32, lr=0.1, checkpoint_freq=0)
    held = eiil(data, config)
    assert held.source == "eiil" and set(held.inferred) == {"train", "val", "test"}
    method = create("eiil+groupdro")
    run = mw.fit(data, method, config)
    train = data.get("train")
    assert torch.equal(method.ctx.groups, train.y * 2 + held.inferred["train"])  # the same inference
    assert run.setting["train_groups"] == "eiil"
