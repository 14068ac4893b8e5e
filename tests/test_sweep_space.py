"""Search spaces: combination 0 is the defaults, draws are seeded by the index and stay in bounds; selection."""
import json
import subprocess
import sys

import numpy as np
import pytest

from memaware.errors import MemawareError
from memaware.sweep.space import FAMILIES, draw
from memaware.sweep.runner import select_combination
from memaware.train import TrainConfig

BOUNDS = {  # family -> field -> (low, high), closed
    "linear": {"lr": (1e-5, 1e-3), "batch_size": (32, 127), "weight_decay": (1e-6, 1e-3)},
    "text": {"lr": (1e-6, 1e-4), "batch_size": (16, 63), "weight_decay": (1e-6, 1e-3)},
    "mlp": {"lr": (1e-5, 1e-3), "batch_size": (8, 63)},
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_combination_zero_is_the_defaults(family):
    combo = draw(family, "groupdro", 0)
    fam = FAMILIES[family]
    assert combo["train"] == {**fam.fixed, **fam.defaults}
    assert combo["hparams"] == {"eta": 0.01, "groups": "true"}
    assert draw(family, "mat", 0)["hparams"] == {"tau": 0.1, "calibration": "global"}
    assert draw(family, "erm", 0)["hparams"] == {}
    TrainConfig(**combo["train"])


def test_combination_one_of_the_linear_family_is_the_first_draws_of_default_rng_1():
    rng = np.random.default_rng(1)
    lr, batch, wd = 10 ** rng.uniform(-5, -3), int(2 ** rng.uniform(5, 7)), 10 ** rng.uniform(-6, -3)
    eta = 10 ** rng.uniform(-3, -1)  # the method's values come after the family's
    combo = draw("linear", "groupdro", 1)
    assert combo["train"]["lr"] == pytest.approx(lr, rel=1e-12)
    assert combo["train"]["batch_size"] == batch
    assert combo["train"]["weight_decay"] == pytest.approx(wd, rel=1e-12)
    assert combo["hparams"] == {"eta": pytest.approx(eta, rel=1e-12), "groups": "true"}


def test_the_text_family_draws_its_weight_decay_as_bert_and_the_reference_do():
    for i in range(1, 4):
        rng = np.random.default_rng(i)
        lr, batch, wd = 10 ** rng.uniform(-6, -4), int(2 ** rng.uniform(4, 6)), 10 ** rng.uniform(-6, -3)
        for family in ("text", "bert"):
            train = draw(family, "erm", i)["train"]
            assert train["lr"] == pytest.approx(lr, rel=1e-12) and train["batch_size"] == batch
            assert train["weight_decay"] == pytest.approx(wd, rel=1e-12), (family, i)


@pytest.mark.parametrize("family", ["linear", "text", "mlp"])
def test_draws_stay_within_the_bounds_of_the_space(family):
    taus, etas = set(), []
    for i in range(1, 201):
        combo = draw(family, "groupdro", i)
        for name, (lo, hi) in BOUNDS[family].items():
            assert lo <= combo["train"][name] <= hi, (i, name, combo["train"][name])
        assert isinstance(combo["train"]["batch_size"], int)
        etas.append(combo["hparams"]["eta"])
        taus.add(draw(family, "mat", i)["hparams"]["tau"])
        TrainConfig(**combo["train"])
    assert taus == {0.001, 0.01, 0.1}
    assert 1e-3 <= min(etas) and max(etas) <= 1e-1 and max(etas) / min(etas) > 10


def test_the_synthetic_family_searches_only_the_method_and_fixed_values_are_never_drawn():
    combos = [draw("synthetic", "xrm+groupdro", i) for i in range(1, 6)]
    assert all(c["train"]["lr"] == 0.01 and c["train"]["batch_size"] is None for c in combos)
    assert all(c["hparams"]["groups"] == "inferred" for c in combos)  # pinned by the registry
    assert len({c["hparams"]["eta"] for c in combos}) == 5
    assert all(draw("linear", "mat", i, fixed={"tau": 0.5})["hparams"]["tau"] == 0.5 for i in range(5))


def test_a_combination_is_the_same_across_calls_and_processes_and_the_sweep_seed_changes_it():
    here = [draw("linear", "mat", i) for i in range(4)]
    assert here == [draw("linear", "mat", i) for i in range(4)]
    code = ("import json; from memaware.sweep.space import draw; "
            "print(json.dumps([draw('linear', 'mat', i) for i in range(4)]))")
    there = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout)
    assert there == json.loads(json.dumps(here))
    seeded = draw("linear", "mat", 2, sweep_seed=5)
    rng = np.random.default_rng([5, 2])
    assert seeded["train"]["lr"] == pytest.approx(10 ** rng.uniform(-5, -3), rel=1e-12)
    assert seeded != here[2] and draw("linear", "mat", 0, sweep_seed=5) == here[0]


def test_unknown_family_method_or_negative_index_is_a_one_line_error():
    with pytest.raises(MemawareError, match="unknown model family 'vit'"):
        draw("vit", "erm", 1)
    with pytest.raises(MemawareError, match="unknown method 'nope'"):
        draw("linear", "nope", 1)
    with pytest.raises(MemawareError, match=">= 0"):
        draw("linear", "erm", -1)


def record(value, avg):
    return {"step": 0, "val": {"wga": value, "avg_acc": avg}, "test": {}}


def test_selection_takes_the_highest_criterion_then_validation_average_then_the_lower_index():
    search = [(0, {"va_wga": record(0.5, 0.9)}), (1, {"va_wga": record(0.7, 0.6)}),
              (2, {"va_wga": record(0.7, 0.8)}), (3, {"va_wga": record(0.7, 0.8)}), (4, {})]
    assert select_combination(search, "va_wga") == 2
    assert select_combination(search, "va_gi_wga") is None
