
import pytest
import torch

from memaware.metrics import accuracy_report, bootstrap_ci, group_accuracy


def test_group_accuracy_and_worst_group():
    pred = torch.tensor([0, 0, 1, 1, 1, 0])
    y = torch.tensor([0, 0, 1, 1, 0, 1])
    a = torch.tensor([0, 1, 1, 0, 0, 1])
    report = accuracy_report(pred, y, 2, a, 2)
    # groups: (0,0): ex 0 right, ex 4 wrong -> 0.5; (0,1): 1.0; (1,1): ex 2 right, ex 5 wrong -> 0.5; (1,0): 1.0
    assert report["group_acc"] == {"0,0": 0.5, "0,1": 1.0, "1,0": 1.0, "1,1": 0.5}
    assert report["wga"] == 0.5
    assert report["avg_acc"] == pytest.approx(4 / 6)
    assert report["class_acc"] == pytest.approx({"0": 2 / 3, "1": 2 / 3})
    assert report["wca"] == pytest.approx(2 / 3)


def test_empty_groups_are_ignored():
    acc = group_accuracy(torch.tensor([True, False]), torch.tensor([0, 0]), 3)
    assert acc[0] == 0.5 and torch.isnan(acc[1:]).all()


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_agreement():
    lo, hi = bootstrap_ci([0.7, 0.8, 0.9])
    assert lo <= 0.8 <= hi
    assert bootstrap_ci([0.8, 0.8, 0.8]) == pytest.approx((0.8, 0.8))
