"""Checks every registered method passes on tiny data: it trains, predicts, repeats, saves and loads.

Parametrized over REGISTRY, so a newly registered method is checked without editing this file.
"""
import copy

import numpy as np
import pytest
import torch

from memaware.data import Dataset, make_figure1, make_multiclass
from memaware.errors import MemawareError
from memaware.heldout import xrm
from memaware.methods import REGISTRY, create
from memaware.train import TrainConfig, fit, predict_logits
from memaware.train.checkpoint import load_checkpoint, save_checkpoint

NAMES = sorted(REGISTRY)
PROBLEMS = ["figure1-linear", "multiclass3-mlp"]


@pytest.fixture(scope="module")
def problems(device):
    """Per problem: data, a short training config, and phase-1 products computed once."""
    out = {}
    for key, data, arch in [("figure1-linear", make_figure1(n=60, d=20, seed=0), "linear"),
                            ("multiclass3-mlp", make_multiclass(n=90, n_classes=3, d=24, seed=0), "mlp")]:
        config = TrainConfig(steps=6, batch_size=16, lr=0.05, checkpoint_freq=3, arch=arch, hidden=[8], seed=0,
                             device=device)
        out[key] = (data, config, xrm(data, config.model_copy(update={"steps": 20})))
    return out


def run(problems, key, name, **hparams):
    data, config, heldout = problems[key]
    method = create(name, **hparams)
    return method, fit(data, method, config, heldout=heldout)


@pytest.mark.parametrize("key", PROBLEMS)
@pytest.mark.parametrize("name", NAMES)
def test_trains_predicts_and_repeats_with_the_same_seed(problems, name, key):
    data, _, _ = problems[key]
    _, first = run(problems, key, name)
    _, second = run(problems, key, name)
    assert all(np.isfinite(record["loss"]) for record in first.history)
    x_test = torch.as_tensor(data.x[data.mask("test")])
    assert predict_logits(first.model, x_test).shape == (len(x_test), data.n_classes)
    assert first.history == second.history
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("key", PROBLEMS)
@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(problems, name, key, tmp_path):
    data, _, _ = problems[key]
    method, result = run(problems, key, name)
    path = save_checkpoint(tmp_path / "ckpt.pt", result.model.state_dict(), method.state_dict())
    saved = load_checkpoint(path)
    restored = copy.deepcopy(result.model)
    with torch.no_grad():
        for p in restored.parameters():
            p.fill_(0.5)
    restored.load_state_dict(saved["model"])
    x_test = torch.as_tensor(data.x[data.mask("test")])
    assert torch.equal(predict_logits(restored, x_test), predict_logits(result.model, x_test))
    fresh = create(name)
    fresh.load_state_dict(saved["method"])
    assert set(fresh.state_dict()) == set(method.state_dict())
    for k, v in method.state_dict().items():
        assert torch.equal(fresh.state_dict()[k].cpu(), v.cpu())


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_validate_and_the_space_draws_reproducibly(name):
    method = create(name)
    assert create(name, **method.hparams).hparams == method.hparams
    with pytest.raises(MemawareError, match="unknown hyperparameter 'no_such_knob'"):
        create(name, no_such_knob=1)
    assert set(method.space) <= set(method.defaults)
    for seed in range(20):
        draw = {k: f(np.random.default_rng(seed)) for k, f in method.space.items()}
        again = {k: f(np.random.default_rng(seed)) for k, f in method.space.items()}
        assert draw == again
        drawn = create(name, **draw).hparams  # choices and bounds are checked on construction
        for key, (low, high) in method.bounds.items():
            assert drawn[key] is None or low <= drawn[key] <= high


@pytest.mark.parametrize("name", NAMES)
def test_missing_groups_or_heldout_is_a_clear_error(problems, name):
    data, config, _ = problems["figure1-linear"]
    method = create(name)
    no_groups = Dataset(data.x, data.y, data.split, name="no-groups")
    if method.needs_heldout:
        with pytest.raises(MemawareError, match="held-out logits"):
            fit(data, name, config)
    elif method.group_source == "inferred":
        with pytest.raises(MemawareError, match="inferred groups"):
            fit(data, name, config)
    elif method.group_source == "true":
        with pytest.raises(MemawareError, match="true group labels"):
            fit(no_groups, name, config)
    else:  # needs neither: trains without group labels and without phase 1
        assert np.isfinite(fit(no_groups, name, config).history[-1]["loss"])
