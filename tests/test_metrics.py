
import math

import pytest
import torch

from memaware.metrics import (accuracy_report, auroc, bootstrap_ci, expected_calibration_error, group_accuracy,
                              worst_group_ece)


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


# Balanced accuracy, macro-F1, AUROC, calibration
def test_expected_calibration_error_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.7 (right): three of the 15 bins are used
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.3, 0.7]])
    y = torch.tensor([0, 1, 1, 1])
    # bin of 0.9: accuracy 1/2, confidence 0.9, 2 of 4 examples; bin of 0.6: 1 vs 0.6; bin of 0.7: 1 vs 0.7
    expected = 2 / 4 * 0.4 + 1 / 4 * 0.4 + 1 / 4 * 0.3
    assert expected_calibration_error(probs, y) == pytest.approx(expected)
    assert expected_calibration_error(probs, y, bins=1) == pytest.approx(abs(3 / 4 - (0.9 + 0.9 + 0.6 + 0.7) / 4))
    # groups {0, 1} and {2, 3}: ECE 0.4 and (0.4 + 0.3) / 2
    assert worst_group_ece(probs, y, torch.tensor([0, 0, 1, 1]), 3) == pytest.approx(0.4)


@pytest.mark.parametrize("n_classes", [2, 4], ids=["binary", "four-classes"])
def test_auroc_macro_f1_and_balanced_accuracy_equal_scikit_learns_on_random_data(n_classes):
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    g = torch.Generator().manual_seed(n_classes)
    for _ in range(5):
        pool = torch.softmax(torch.randn(8, n_classes, generator=g, dtype=torch.float64), 1)
        probs = torch.cat([pool[torch.randint(0, 8, (200,), generator=g)],  # many ties
                           torch.softmax(torch.randn(100, n_classes, generator=g, dtype=torch.float64), 1)])
        y = torch.randint(0, n_classes, (300,), generator=g)
        expected = (roc_auc_score(y.numpy(), probs[:, 1].numpy()) if n_classes == 2 else
                    roc_auc_score(y.numpy(), probs.numpy(), multi_class="ovr"))
        assert auroc(probs, y) == pytest.approx(expected, abs=1e-12)
        pred = probs.argmax(1)
        report = accuracy_report(pred, y, n_classes)
        assert report["macro_f1"] == pytest.approx(f1_score(y.numpy(), pred.numpy(), average="macro"))
        assert report["balanced_acc"] == pytest.approx(balanced_accuracy_score(y.numpy(), pred.numpy()))


def test_auroc_known_answers():
    assert auroc(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 1])) == 1.0
    assert auroc(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([0, 1])) == 0.0
    assert auroc(torch.tensor([[0.5, 0.5], [0.5, 0.5]]), torch.tensor([0, 1])) == 0.5  # a tie counts half
    assert math.isnan(auroc(torch.tensor([[0.5, 0.5]]), torch.tensor([1])))  # one class: undefined


def test_scores_reach_evaluation_records_results_json_and_sweep_tables(tmp_path):
    import memaware as mw
    from memaware.data import make_figure1
    from memaware.report import write_report
    from memaware.results import SCORE_KEYS, summarize

    run = mw.fit(make_figure1(n=60, d=8, seed=0), "erm", mw.TrainConfig(steps=5, checkpoint_freq=0))
    test = run.history[-1]["test"]
    assert set(SCORE_KEYS) <= set(test) and 0 <= test["ece"] <= 1 and 0 <= test["auroc"] <= 1
    summary = summarize(run, "va_wga")
    assert summary["test_auroc"] == test["auroc"] and summary["val_worst_group_ece"] == run.best["va_wga"]["val"][
        "worst_group_ece"]
    runs = [{"seed": s, "key": str(s), "test_wga": 0.5, "test_avg_acc": 0.8, "test_auroc": v}
            for s, v in enumerate([0.7, 0.8, 0.9])]
    sweep = {"experiment": "x", "seeds": [0, 1, 2], "datasets": ["d"], "methods": ["erm"], "label_free": "va_gi_wga",
             "results": [{"dataset": "d", "method": "erm", "criterion": "va_gi_wga", "runs": runs,
                          "setting": {"train_groups": "none", "val_groups": "inferred",
                                      "name": "no group labels anywhere"}}]}
    write_report(sweep, tmp_path, plot=False)
    md = (tmp_path / "table.md").read_text()
    lo, hi = bootstrap_ci([0.7, 0.8, 0.9])
    assert "## Test AUROC (%)" in md and f"80.0 ± 10.0 ({100 * lo:.1f}–{100 * hi:.1f})" in md
    assert "## Test expected calibration error" not in md  # no run carries it
    row = (tmp_path / "table.csv").read_text().splitlines()
    header, values = row[0].split(","), row[1].split(",")
    assert float(values[header.index("auroc_mean")]) == pytest.approx(0.8)
    assert float(values[header.index("auroc_ci_lo")]) == pytest.approx(lo) and values[header.index("ece_mean")] == ""
